"""The code login of the guide, end to end over HTTP against the three real services.

Admin creates an activation -> a device activates -> login with the current code ->
/api/me -> the same code again is refused -> wrong codes -> throttled -> locked ->
admin unlock -> login works. Then concurrency, multiple devices and a hung otp service.
"""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from clients.device import Device, create_activation
from shared import events
from tests.conftest import TEST_ENV, service_db

pytestmark = pytest.mark.e2e

WRONG = "0123456789"


def login(session, base_url, username, code):
    return session.post(f"{base_url}/api/login", json={"username": username, "password": code}, timeout=10)


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and isinstance(body["message"], str) and isinstance(body["fields"], dict)
    return body


def test_the_whole_code_login_journey(stack, admin_headers, mongo_client):
    base = stack.base_url
    # 1. The admin creates an activation for a werkboeknummer.
    answer = requests.post(f"{base}/api/admin/activations", json={"username": "W1000001"},
                           headers=admin_headers, timeout=10)
    assert answer.status_code == 201, answer.text
    activation = answer.json()
    assert activation["username"] == "W1000001"
    assert activation["activation_uri"].startswith("mycepa://activate?code=")
    qr = requests.get(f"{base}/api/admin/activations/{activation['activation_code']}/qr.svg",
                      headers=admin_headers, timeout=10)
    assert qr.status_code == 200 and qr.headers["Content-Type"].startswith("image/svg+xml")
    assert "<svg" in qr.text

    # 2. The OTP app activates with it and receives a 10-digit TOTP secret.
    device = Device.new(base)
    activated = device.activate(activation["activation_code"], device_name="Pixel van Jan")
    assert activated["username"] == "W1000001"
    assert activated["otp"]["digits"] == 10 and activated["otp"]["period"] == 30
    assert len(activated["otp"]["secret"]) >= 32   # base32: >= 160 bits
    assert activated["otpauth_uri"].startswith("otpauth://totp/") and "digits=10" in activated["otpauth_uri"]
    # The code works once only.
    again = requests.post(f"{base}/api/devices/activate", timeout=10, json={
        "activation_code": activation["activation_code"], "public_key": device.public_key_pem,
        "platform": "poll", "device_name": "second"})
    assert_error(again, 410, "expired")
    # At rest the secret is encrypted: the plain secret is nowhere in the otp database.
    stored = service_db(mongo_client, "otp").authenticators.find_one({"_id": device.device_id})
    assert stored is not None and activated["otp"]["secret"].encode() not in bytes(stored["secret"])
    assert activated["otp"]["secret"] not in str(stored)

    # 3. Log in with the current code; the session cookie is HttpOnly and SameSite=Strict.
    browser = requests.Session()
    code = device.code()
    response = login(browser, base, "W1000001", code)
    assert response.status_code == 200, response.text
    assert response.json() == {"username": "W1000001", "offer_remember": True}
    cookie = response.headers["Set-Cookie"]
    assert "mycepa_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert browser.get(f"{base}/api/me", timeout=10).json()["username"] == "W1000001"
    # Sessions are stored by hash: the cookie value is not in the gateway database.
    token = browser.cookies["mycepa_session"]
    assert service_db(mongo_client, "gateway").sessions.find_one({"_id": token}) is None

    # 4. The same code again is refused, in the same words as a wrong code.
    replay = assert_error(login(requests.Session(), base, "W1000001", code), 401, "invalid_credentials")
    wrong = assert_error(login(requests.Session(), base, "W1000001", WRONG), 401, "invalid_credentials")
    unknown = assert_error(login(requests.Session(), base, "W9999999", WRONG), 401, "invalid_credentials")
    assert replay["message"] == wrong["message"] == unknown["message"]

    # 5. Logout revokes the session server-side.
    assert browser.post(f"{base}/api/logout", timeout=10).status_code == 204
    assert requests.get(f"{base}/api/me", cookies={"mycepa_session": token}, timeout=10).status_code == 401

    # 6. Wrong codes: the replay and the wrong code above were failures 1 and 2 (free: 3).
    assert_error(login(requests.Session(), base, "W1000001", WRONG), 401, "invalid_credentials")
    locked = login(requests.Session(), base, "W1000001", WRONG)       # failure 4: locked 1 s
    assert_error(locked, 423, "locked")
    assert int(locked.headers["Retry-After"]) >= 1
    # While locked even the right code is refused, and the refusal says how long to wait.
    during = login(requests.Session(), base, "W1000001", device.code(step_offset=1))
    assert_error(during, 423, "locked")
    assert "Retry-After" in during.headers
    time.sleep(int(during.headers["Retry-After"]) + 0.2)
    assert_error(login(requests.Session(), base, "W1000001", WRONG), 423, "locked")   # failure 5: 2 s
    time.sleep(2.2)
    hard = login(requests.Session(), base, "W1000001", WRONG)                        # failure 6: hard lock
    assert_error(hard, 423, "locked")
    assert "Retry-After" not in hard.headers and "administrator" in hard.json()["message"]
    time.sleep(0.1)
    assert_error(login(requests.Session(), base, "W1000001", device.code(step_offset=1)), 423, "locked")

    # 7. The admin unlocks; the next code logs in.
    unlocked = requests.post(f"{base}/api/admin/users/W1000001/unlock", headers=admin_headers, timeout=10)
    assert unlocked.status_code == 200 and unlocked.json() == {"username": "W1000001", "was_locked": True}
    assert login(requests.Session(), base, "W1000001", device.code(step_offset=1)).status_code == 200

    # 8. The admin sees the device and revokes it. (That its codes stop working needs a
    # code it has not used, newer than the step just used: test_a_revoked_devices_fresh_
    # code_is_refused below; every code in the window now is used or older.)
    devices = requests.get(f"{base}/api/admin/users/W1000001/devices", headers=admin_headers, timeout=10).json()
    assert [d["device_id"] for d in devices["devices"]] == [device.device_id]
    assert devices["devices"][0]["device_name"] == "Pixel van Jan" and devices["devices"][0]["status"] == "active"
    assert devices["devices"][0]["last_used_at"] is not None
    revoked = requests.delete(f"{base}/api/admin/devices/{device.device_id}", headers=admin_headers, timeout=10)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert requests.delete(f"{base}/api/admin/devices/{device.device_id}", headers=admin_headers,
                           timeout=10).status_code == 404
    devices = requests.get(f"{base}/api/admin/users/W1000001/devices", headers=admin_headers, timeout=10).json()
    assert [(d["device_id"], d["status"]) for d in devices["devices"]] == [(device.device_id, "revoked")]

    # Nothing secret reached the logs: not the OTP secret, not a code that was used.
    logs = stack.logs()
    assert activated["otp"]["secret"] not in logs
    assert code not in logs and activation["activation_code"] not in logs


def test_a_revoked_devices_fresh_code_is_refused(stack, make_user, admin_headers):
    device = make_user()
    # A second device of the same user, never revoked: the control.
    control = Device.new(stack.base_url)
    control.activate(create_activation(stack.base_url, TEST_ENV["MYCEPA_ADMIN_TOKEN"], device.username)
                     ["activation_code"], device_name="Control")
    assert login(requests.Session(), stack.base_url, device.username, device.code()).status_code == 200
    revoked = requests.delete(f"{stack.base_url}/api/admin/devices/{device.device_id}", headers=admin_headers,
                              timeout=10)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"

    # The next step's code: never presented, newer than the one step this device used,
    # inside the window (now ±1 step), and the account has no failure counted. Only the
    # revocation is left to refuse it.
    fresh = device.code(step_offset=1)
    assert_error(login(requests.Session(), stack.base_url, device.username, fresh), 401, "invalid_credentials")
    # The same step's code of the device that was not revoked logs the same user in at
    # the same moment (one failure counted: below the lock), so the step and the window
    # were not what refused the revoked device's code.
    assert login(requests.Session(), stack.base_url, device.username,
                 control.code(step_offset=1)).status_code == 200


def test_the_same_code_from_ten_clients_at_once_is_accepted_once(stack, make_user):
    device = make_user()
    code = device.code()

    def attempt(_):
        return login(requests.Session(), stack.base_url, device.username, code).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(attempt, range(10)))
    assert statuses.count(200) == 1, statuses
    # The others are refused as replays, which count as failed attempts and so soon lock.
    assert set(statuses) - {200} <= {401, 423}, statuses


def test_each_device_of_a_user_has_its_own_secret(stack, make_user):
    first = make_user()
    activation = create_activation(stack.base_url, TEST_ENV["MYCEPA_ADMIN_TOKEN"], first.username)
    second = Device.new(stack.base_url)
    second.activate(activation["activation_code"], device_name="Tablet")
    assert second.secret != first.secret
    assert login(requests.Session(), stack.base_url, first.username, second.code()).status_code == 200
    # The first device's code is single-use per device, independent of the second.
    assert login(requests.Session(), stack.base_url, first.username, first.code()).status_code == 200


def test_an_activation_code_locks_after_a_few_wrong_tries(stack, admin_headers):
    activation = create_activation(stack.base_url, TEST_ENV["MYCEPA_ADMIN_TOKEN"], "W1000002")
    real = activation["activation_code"]
    # Same first group (the code's id), wrong secret part: counts against this code.
    forged = real[:5] + ("2222-2222-2222" if real[5:] != "2222-2222-2222" else "3333-3333-3333")
    device = Device.new(stack.base_url)
    body = {"public_key": device.public_key_pem, "platform": "poll", "device_name": "x"}
    for _ in range(4):
        answer = requests.post(f"{stack.base_url}/api/devices/activate", json={**body, "activation_code": forged},
                               timeout=10)
        assert_error(answer, 401, "invalid_credentials")
    fifth = requests.post(f"{stack.base_url}/api/devices/activate", json={**body, "activation_code": forged},
                          timeout=10)
    assert_error(fifth, 423, "locked")
    # Locked for good: even the real code no longer activates.
    real_try = requests.post(f"{stack.base_url}/api/devices/activate", json={**body, "activation_code": real},
                             timeout=10)
    assert_error(real_try, 423, "locked")


def test_login_answers_503_within_the_bound_when_otp_hangs(stack, make_user):
    device = make_user()
    code = device.code()
    stack.pause("otp")
    try:
        started = time.monotonic()
        response = login(requests.Session(), stack.base_url, device.username, code)
        elapsed = time.monotonic() - started
        ready = requests.get(f"{stack.base_url}/readyz", timeout=10)
    finally:
        stack.resume("otp")
    assert_error(response, 503, "unavailable")
    assert elapsed < 5.0, elapsed
    assert ready.status_code == 503 and ready.json()["checks"]["otp"] is False and ready.json()["down"] == ["otp"]
    assert ready.json()["checks"]["database"] is True and ready.json()["checks"]["rabbitmq"] is True
    # The call the gateway gave up on expired in RabbitMQ: when otp wakes up it is not
    # processed, so the code was not consumed and the user can still log in with it:
    # the SAME code, still inside its window (a consumed one would be refused as a
    # replay; a fresh one would prove nothing).
    time.sleep(1.0)
    stack.wait_ready()
    assert login(requests.Session(), stack.base_url, device.username, code).status_code == 200


def test_operations_endpoints(stack):
    assert requests.get(f"{stack.base_url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{stack.base_url}/readyz", timeout=10)
    assert ready.status_code == 200
    body = ready.json()
    assert {key: body[key] for key in ("ready", "checks", "down")} == {
        "ready": True, "checks": {"rabbitmq": True, "database": True, "otp": True, "push": True}, "down": []}
    # The audit trail is detail: logins do not wait for it.
    audit = body["detail"]["audit"]
    assert audit["answering"] is True and isinstance(audit["backlog"], int)
    assert set(audit["recorded"]) == set(events.EVENT_TYPES)
    scraped = requests.get(f"{stack.base_url}/metrics", timeout=10).text
    assert 'mycepa_audit_events_recorded{type="OtpVerified"}' in scraped
    assert "mycepa_audit_backlog_events " in scraped and "mycepa_audit_answering 1.0" in scraped
    spec = requests.get(f"{stack.base_url}/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.")
    assert "LoginRequest" in spec["components"]["schemas"]
    for path in ("/api/login", "/api/me", "/api/logout", "/api/devices/activate", "/api/admin/activations",
                 "/api/admin/users/{username}/devices", "/api/admin/devices/{device_id}",
                 "/api/admin/users/{username}/unlock", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    metrics = requests.get(f"{stack.base_url}/metrics", timeout=10)
    assert metrics.status_code == 200 and "mycepa_http_requests_total" in metrics.text
