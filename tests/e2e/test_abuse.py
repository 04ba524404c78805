"""Abuse resistance end to end (architecture.md §5), on the real services, RabbitMQ and FerretDB:
wrong codes lock code login only, one source over the failure limit is throttled and no
other, and sessions end with the device that made them or when an admin says so.

The per-source throttle runs on a gateway of its own in this stack (`guarded`): every
test request comes from 127.0.0.1, so the shared gateway runs without it; this one trusts
127.0.0.1 as a proxy, and each test is a source of its own through X-Forwarded-For.
"""
import itertools
import time

import pytest
import requests

from harness.load import push_login, remember_browser
from harness.waiting import eventually
from tests.conftest import service_db

pytestmark = pytest.mark.e2e

TIMEOUT = 10
LIMIT = 50   # the production default: 50 failures in 5 minutes
_sources = (f"198.51.100.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def guarded(stack):
    """The base URL of a gateway counting failed logins per source."""
    name, base_url = stack.add_gateway(SOURCE_FAILURE_LIMIT=str(LIMIT), SOURCE_FAILURE_WINDOW_SECONDS="300",
                                       TRUSTED_PROXIES="127.0.0.1")
    yield base_url
    stack.stop_process(name)


def from_source(source=None):
    """A client whose requests come, through the trusted proxy, from `source`."""
    client = requests.Session()
    client.headers["X-Forwarded-For"] = source or next(_sources)
    return client


def login(client, base_url, username, code):
    return client.post(f"{base_url}/api/login", json={"username": username, "password": code}, timeout=TIMEOUT)


def me_status(browser, base_url):
    return browser.get(f"{base_url}/api/me", timeout=TIMEOUT).status_code


def test_wrong_codes_lock_code_login_only_and_push_login_still_works(stack, guarded, make_user):
    device = make_user()
    spare = make_user(username=device.username)
    browser = remember_browser(guarded, device)          # saved the username, logged out
    session = requests.Session()
    assert login(session, guarded, device.username, device.code(step_offset=1)).status_code == 200

    # 12 wrong codes from one source, waiting out each temporary lock as a patient attacker
    # would: 3 free failures, 1 s, 2 s, then the hard lock at 6 (tests/conftest.py).
    attacker = from_source()
    answers = []
    for _ in range(12):
        answer = login(attacker, guarded, device.username, "0000000000")
        answers.append((answer.status_code, answer.headers.get("Retry-After")))
        if answer.headers.get("Retry-After"):
            time.sleep(int(answer.headers["Retry-After"]))
    assert [status for status, _ in answers[:3]] == [401, 401, 401]
    assert (423, None) in answers                         # a hard lock: no Retry-After
    assert all(status in (401, 423) for status, _ in answers), answers   # 12 < 50: not throttled

    # The right code is refused now, and the session made before the lock has ended.
    refused = login(attacker, guarded, device.username, device.code(step_offset=1))
    assert refused.status_code == 423 and "push" in refused.json()["message"].lower()
    assert eventually(lambda: me_status(session, guarded), 401) == 401

    # The phone proves possession: push login from the saved browser works.
    attempt = push_login(guarded, device, browser, give_up_after=15)
    assert attempt.outcome == "approved", attempt
    assert me_status(browser, guarded) == 200

    # A successful login resets the count: code login works again (with the user's other
    # phone: this one's codes of these steps are spent, and a replay counts as a failure).
    relogin = lambda: login(requests.Session(), guarded, device.username, spare.code()).status_code
    assert eventually(relogin, 200) == 200


def test_one_source_over_the_limit_is_throttled_and_no_other(stack, guarded, make_user):
    flooder = from_source()
    answers = [login(flooder, guarded, f"W{900000000 + n}", "0000000000") for n in range(150)]
    throttled = [answer for answer in answers if answer.status_code == 429]
    assert len(throttled) >= 100, [answer.status_code for answer in answers]
    assert all(answer.status_code == 401 for answer in answers[:LIMIT])   # made-up users: just wrong
    for answer in throttled:
        assert answer.json()["error"] == "too_many_requests"
        assert 1 <= int(answer.headers["Retry-After"]) <= 300

    # Another source logs in normally, and its own wrong code is only wrong.
    device = make_user()
    neighbour = from_source()
    assert login(neighbour, guarded, device.username, device.code()).status_code == 200
    assert login(neighbour, guarded, device.username, "0000000000").status_code == 401
    # The flooding source is refused even with a right code: the refusal does not tell.
    assert login(flooder, guarded, device.username, device.code(step_offset=1)).status_code == 429
    # X-Forwarded-For is believed only from a trusted proxy: the shared gateway does not
    # trust 127.0.0.1, so this header changes nothing there.
    assert login(from_source("198.51.100.250"), stack.base_url, device.username,
                 device.code(step_offset=1)).status_code == 200


def test_revoking_a_device_ends_the_sessions_it_made(stack, make_user, admin_headers, mongo_client):
    first = make_user()
    second = make_user(username=first.username)
    by_first, by_second, saved = requests.Session(), requests.Session(), requests.Session()
    assert login(by_first, stack.base_url, first.username, first.code()).status_code == 200
    # `saved` saves the username, then logs in with a push the second device approves.
    assert login(saved, stack.base_url, second.username, second.code()).status_code == 200
    assert saved.post(f"{stack.base_url}/api/remember", timeout=TIMEOUT).status_code == 204
    assert saved.post(f"{stack.base_url}/api/logout", timeout=TIMEOUT).status_code == 204
    assert login(by_second, stack.base_url, second.username, second.code(step_offset=1)).status_code == 200
    assert push_login(stack.base_url, second, saved, give_up_after=15).outcome == "approved"
    sessions = service_db(mongo_client, "gateway").sessions
    assert {s["method"] for s in sessions.find({"username": first.username})} == {"code", "push"}

    revoke = lambda device: requests.delete(f"{stack.base_url}/api/admin/devices/{device.device_id}",
                                            headers=admin_headers, timeout=TIMEOUT)
    assert revoke(first).status_code == 200
    assert eventually(lambda: me_status(by_first, stack.base_url), 401) == 401
    assert me_status(by_second, stack.base_url) == 200 and me_status(saved, stack.base_url) == 200
    # The user still has a device: the saved browser may still ask for a push.
    assert saved.get(f"{stack.base_url}/api/login/push", timeout=TIMEOUT).status_code == 200

    assert revoke(second).status_code == 200
    assert eventually(lambda: me_status(by_second, stack.base_url), 401) == 401
    assert eventually(lambda: me_status(saved, stack.base_url), 401) == 401
    # No device left: no browser keeps the saved username.
    remembered = service_db(mongo_client, "gateway").remembered
    assert eventually(lambda: remembered.count_documents({"username": first.username}), 0) == 0


def test_an_admin_ends_every_session_of_a_user(stack, make_user, admin_headers):
    device, other = make_user(), make_user()
    tabs = [requests.Session() for _ in range(2)]
    for tab, offset in zip(tabs, (0, 1)):
        assert login(tab, stack.base_url, device.username, device.code(step_offset=offset)).status_code == 200
    bystander = requests.Session()
    assert login(bystander, stack.base_url, other.username, other.code()).status_code == 200
    url = f"{stack.base_url}/api/admin/users/{device.username}/sessions"

    assert requests.delete(url, timeout=TIMEOUT).status_code == 401
    assert all(me_status(tab, stack.base_url) == 200 for tab in tabs)
    ended = requests.delete(url, headers=admin_headers, timeout=TIMEOUT)
    assert ended.status_code == 200 and ended.json() == {"username": device.username, "ended": 2}
    assert [me_status(tab, stack.base_url) for tab in tabs] == [401, 401]
    assert me_status(bystander, stack.base_url) == 200
    again = requests.delete(url, headers=admin_headers, timeout=TIMEOUT)
    assert again.json()["ended"] == 0
    bad = requests.delete(f"{stack.base_url}/api/admin/users/W%20x/sessions", headers=admin_headers,
                          timeout=TIMEOUT)
    assert bad.status_code == 400 and bad.json()["error"] == "validation_error"
