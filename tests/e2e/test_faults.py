"""Faults a production login meets, on real processes: RabbitMQ and the database stopped
and started under load, a gateway stopped with SIGTERM under load, a push process killed
with a login request in its hands, and browsers waiting in long polls.

These run on a RabbitMQ node and a FerretDB of their own (harness/infra.py, through
scripts/infra.sh), so stopping them touches nothing else.
"""
import signal
import threading
import time

import pytest
import requests

from harness.infra import Infra
from harness.load import CodeLogins, another_tab, audit_caught_up, make_users, push_login, remember_browser
from harness.stack import Stack
from tests.conftest import RUN_ID, TEST_ENV

pytestmark = pytest.mark.e2e

SERVICES = ("otp-1", "otp-2", "push-1", "gateway-1")


@pytest.fixture(scope="module")
def infra(tmp_path_factory):
    servers = Infra(tmp_path_factory.mktemp("fault-infra"), name=f"mycepa-fault-{RUN_ID}").up()
    yield servers
    servers.down()


@pytest.fixture(scope="module")
def faulty(infra, artifacts_dir):
    """otp x2, push, gateway on the private servers; the broker's own default vhost."""
    env = {**TEST_ENV, "AMQP_URI": infra.amqp_uri, "MONGO_URL": infra.mongo_url, "RPC_TIMEOUT_SECONDS": "3",
           "PUSH_REQUEST_TTL_SECONDS": "60", "PUSH_RATE_LIMIT": "100", "LONG_POLL_MAX": "40"}
    running = Stack(env, artifacts_dir / "logs" / "faults").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def users(faulty):
    """Three groups of 60 for code logins under load (4 a second for 15 s each), 6 for push."""
    users, failed = make_users(faulty.base_url, faulty.admin_token, 186, prefix=f"F{RUN_ID[:4]}")
    assert not failed
    return users


def all_alive(stack):
    assert stack.exited() == {}, f"exited: {stack.exited()}; logs in {stack.log_dir}"


def serving_again(stack, within):
    """Seconds until /readyz is 200 again; fails after `within`."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if stack.ready():
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"not ready {within} s after the fault ended; logs in {stack.log_dir}")


def assert_no_lost_logins(load):
    load.settle()
    summary = load.summary()
    assert summary["5xx"] == 0, summary
    assert summary["lost"] == 0, summary
    assert summary["double"] == 0, summary
    return summary


def test_a_broker_restart_with_calls_in_flight_leaves_every_service_serving(faulty, infra, users):
    load = CodeLogins(faulty.base_url, users[:60], clients=4, rate=4).start()
    try:
        time.sleep(1.5)
        infra.stop("rabbitmq")
        time.sleep(3)
        during = requests.post(f"{faulty.base_url}/api/login", timeout=10,
                               json={"username": users[0].username, "password": "0123456789"})
        ready = requests.get(f"{faulty.base_url}/readyz", timeout=10)
        infra.start("rabbitmq")
        back = time.monotonic()
        recovery = serving_again(faulty, within=15)
        time.sleep(2)
    finally:
        load.stop()
    assert during.status_code == 503 and during.json()["error"] == "unavailable"
    assert ready.status_code == 503 and "rabbitmq" in ready.json()["down"]
    all_alive(faulty)
    summary = assert_no_lost_logins(load)
    assert summary["503"] > 0, summary   # the load did meet the outage
    assert load.first_ok_after(back) is not None
    assert recovery <= 5, recovery


def test_a_login_in_flight_when_the_database_stops_keeps_its_code(faulty, infra, users):
    load = CodeLogins(faulty.base_url, users[60:120], clients=4, rate=4).start()
    try:
        time.sleep(1.5)
        infra.stop("mongo")
        time.sleep(3)
        ready = requests.get(f"{faulty.base_url}/readyz", timeout=10)
        infra.start("mongo")
        recovery = serving_again(faulty, within=15)
        time.sleep(2)
    finally:
        load.stop()
    assert ready.status_code == 503 and "database" in ready.json()["down"]
    all_alive(faulty)
    summary = assert_no_lost_logins(load)
    assert summary["503"] > 0, summary
    assert recovery <= 5, recovery


def test_sigterm_of_the_gateway_under_load_answers_no_5xx_and_loses_no_login(faulty, users):
    load = CodeLogins(faulty.base_url, users[120:180], clients=4, rate=6).start()
    try:
        time.sleep(1.5)
        gateway = faulty.processes["gateway-1"]
        stopping = time.monotonic()
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(timeout=15)
        stopped_after = time.monotonic() - stopping
        faulty.start_process("gateway-1")
        faulty.wait_ready()
        time.sleep(1.5)
    finally:
        load.stop()
    assert code == 0 and stopped_after <= 10.5, (code, stopped_after)
    logs = (faulty.log_dir / "gateway-1.log").read_text()
    assert "Cannot use MongoClient after close" not in logs
    summary = assert_no_lost_logins(load)
    assert set(summary["statuses"]) <= {200, 401, 503, "connection"}, summary


def test_a_push_login_whose_request_was_in_a_killed_push_process_completes(faulty, users):
    # kill -9 the moment the browser has its 202: LoginRequested is on its way to push or
    # in its hands (before, during or after its handler: each must end approved; the
    # half-done state itself is tested in tests/integration/test_push_challenges.py).
    device = users[-1]
    browser = remember_browser(faulty.base_url, device)

    def kill_push(attempt):
        faulty.processes["push-1"].kill()
        faulty.processes["push-1"].wait()
        faulty.start_process("push-1")

    for _ in range(3):
        attempt = push_login(faulty.base_url, device, browser, on_requested=kill_push, give_up_after=45)
        assert attempt.outcome == "approved", attempt
    faulty.wait_ready()


def test_waiting_browsers_do_not_hold_the_workers_of_logins_and_health_checks(faulty, users):
    # 60 browsers wait for an answer that does not come; 40 may wait (LONG_POLL_MAX), the
    # others get the current status at once. Meanwhile health checks and logins answer fast.
    waiting_users = users[180:183]
    browsers = [remember_browser(faulty.base_url, device) for device in waiting_users]
    # What is measured is the long polls, not the audit trail still writing the set-up's
    # activations on the same two cores.
    audit_caught_up(faulty.base_url, within=60)
    requests_made = []
    for index in range(60):
        browser = another_tab(browsers[index % len(browsers)])
        answer = browser.post(f"{faulty.base_url}/api/login/push", timeout=10)
        assert answer.status_code == 202, answer.text
        requests_made.append((browser, answer.json()["request_id"]))
    answered = []

    def wait_on(browser, request_id):
        started = time.monotonic()
        status = browser.get(f"{faulty.base_url}/api/login/push/{request_id}?wait=8", timeout=20)
        answered.append((time.monotonic() - started, status.status_code, status.json()["status"]))

    threads = [threading.Thread(target=wait_on, args=pair) for pair in requests_made]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    health, login = [], []
    for device in users[:8]:   # 200, or 401 for a code the load used: how fast it answers is what counts
        started = time.monotonic()
        assert requests.get(f"{faulty.base_url}/healthz", timeout=5).status_code == 200
        health.append(time.monotonic() - started)
        started = time.monotonic()
        assert requests.post(f"{faulty.base_url}/api/login", timeout=5, json={
            "username": device.username, "password": device.code(step_offset=-1)}).status_code in (200, 401)
        login.append(time.monotonic() - started)
    for thread in threads:
        thread.join()
    assert max(health) < 0.1 and max(login) < 0.1, (health, login)
    at_once = [seconds for seconds, _, _ in answered if seconds < 1.0]
    waited = [seconds for seconds, _, _ in answered if seconds >= 7.5]
    assert len(at_once) == 20 and len(waited) == 40, sorted(answered)
    assert {(status, state) for _, status, state in answered} == {(200, "pending")}
