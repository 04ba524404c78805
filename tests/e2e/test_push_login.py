"""Push login end to end over HTTP, on the real services, RabbitMQ and FerretDB:
code login -> "Bewaar je gebruikersnaam" -> "Stuur PUSH" -> the device polls, finds the
browser's number among its choices, approves -> the browser gets the session.
Then every refusal, with its status, and the login request staying as it should."""
import base64
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from clients.device import Device, GatewayError, answer_challenge, call, pending_challenges
from harness.waiting import eventually
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.e2e

TTL = int(TEST_ENV["PUSH_REQUEST_TTL_SECONDS"])


def remembered_browser(stack, device, step_offset=0):
    """A browser that logged in with a code, saved the username and then logged out.
    (A second browser of the same device uses the next step's code: codes are single use.)"""
    browser = requests.Session()
    login = browser.post(f"{stack.base_url}/api/login",
                         json={"username": device.username, "password": device.code(step_offset=step_offset)},
                         timeout=10)
    assert login.status_code == 200, login.text
    assert login.json()["offer_remember"] is True
    saved = browser.post(f"{stack.base_url}/api/remember", timeout=10)
    assert saved.status_code == 204 and "mycepa_remember=" in saved.headers["Set-Cookie"]
    assert "HttpOnly" in saved.headers["Set-Cookie"] and "SameSite=Strict" in saved.headers["Set-Cookie"]
    assert browser.post(f"{stack.base_url}/api/logout", timeout=10).status_code == 204
    return browser


def send_push(stack, browser):
    answer = browser.post(f"{stack.base_url}/api/login/push", timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()


def status_of(stack, browser, request_id):
    return browser.get(f"{stack.base_url}/api/login/push/{request_id}", timeout=10)


def the_challenge(device, request, timeout=5.0):
    """The device's challenge for `request`, polled until the event flow delivered it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for challenge in pending_challenges(device):
            if request["number"] in challenge["number_choices"]:
                return challenge
        time.sleep(0.05)
    raise AssertionError("the challenge never reached the device")


def audit_trail(stack, username, event_type):
    """The audit trail's entries of `event_type` about `username`, newest first."""
    answer = requests.get(f"{stack.base_url}/api/admin/audit", params={"username": username, "type": event_type},
                          headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def refusal(call_it):
    with pytest.raises(GatewayError) as refused:
        call_it()
    return refused.value.status, refused.value.body["error"]


def test_the_push_login_of_the_guide(stack, make_user):
    device = make_user()
    browser = remembered_browser(stack, device)
    assert browser.get(f"{stack.base_url}/api/me", timeout=10).status_code == 401
    assert browser.get(f"{stack.base_url}/api/login/push", timeout=10).json() == {"username": device.username}

    asked = browser.post(f"{stack.base_url}/api/login/push", timeout=10)
    assert asked.status_code == 202, asked.text
    request = asked.json()
    assert len(request["number"]) == 2 and request["number"].isdigit()
    # The browser that asked now holds the cookie that binds the request to it, out of
    # reach of scripts and of other sites.
    binding = asked.headers["Set-Cookie"]
    assert binding.startswith("mycepa_push=") and "HttpOnly" in binding and "SameSite=Strict" in binding
    assert browser.cookies.get("mycepa_push")
    assert status_of(stack, browser, request["request_id"]).json() == {"status": "pending"}

    challenge = the_challenge(device, request)
    assert challenge["username"] == device.username
    assert len(set(challenge["number_choices"])) == 3
    assert all(len(n) == 2 and n.isdigit() for n in challenge["number_choices"])
    assert challenge["context"]["ip"] == "127.0.0.1" and challenge["context"]["user_agent"]
    assert answer_challenge(device, challenge, "approve", request["number"])["status"] == "approved"

    assert eventually(lambda: status_of(stack, browser, request["request_id"]).json()["status"], "approved") \
        == "approved"
    assert browser.get(f"{stack.base_url}/api/me", timeout=10).json()["username"] == device.username
    # The session replaced the binding cookie: it bound a request that is over.
    assert "mycepa_push" not in browser.cookies
    # A code login in a browser that already saved this user offers nothing more.
    again = browser.post(f"{stack.base_url}/api/login",
                         json={"username": device.username, "password": device.code(step_offset=1)}, timeout=10)
    assert again.status_code == 200 and again.json()["offer_remember"] is False
    # The answered challenge left the device's inbox.
    assert pending_challenges(device) == []


def test_only_the_browser_that_asked_gets_the_outcome_and_the_session(stack, make_user):
    device = make_user()
    browser = remembered_browser(stack, device)
    request = send_push(stack, browser)
    stranger = requests.Session()
    assert status_of(stack, stranger, request["request_id"]).status_code == 404
    # Even with the same saved username, another browser has no binding cookie.
    other = remembered_browser(stack, device, step_offset=1)
    assert status_of(stack, other, request["request_id"]).status_code == 404
    answer_challenge(device, the_challenge(device, request), "approve", request["number"])
    eventually(lambda: status_of(stack, browser, request["request_id"]).json()["status"], "approved")
    assert status_of(stack, other, request["request_id"]).status_code == 404
    assert other.get(f"{stack.base_url}/api/me", timeout=10).status_code == 401
    assert browser.get(f"{stack.base_url}/api/me", timeout=10).status_code == 200


def test_answers_that_prove_nothing_are_refused_and_leave_the_request_pending(stack, make_user):
    device = make_user()
    browser = remembered_browser(stack, device)
    request = send_push(stack, browser)
    challenge = the_challenge(device, request)

    # A forged signature: a different key signs for this device id.
    forger = Device.new(stack.base_url)
    forger.device_id = device.device_id
    assert refusal(lambda: answer_challenge(forger, challenge, "approve", request["number"])) \
        == (401, "invalid_credentials")
    # Another user's device, with a valid signature of its own.
    intruder = make_user()
    assert refusal(lambda: answer_challenge(intruder, challenge, "approve", request["number"])) \
        == (403, "forbidden")
    assert status_of(stack, browser, request["request_id"]).json() == {"status": "pending"}

    # The right answer works, once.
    answer_challenge(device, challenge, "approve", request["number"])
    assert refusal(lambda: answer_challenge(device, challenge, "approve", request["number"])) == (409, "conflict")
    assert eventually(lambda: status_of(stack, browser, request["request_id"]).json()["status"], "approved") \
        == "approved"


def test_a_wrong_number_denies_the_request(stack, make_user):
    # architecture.md §5: a user who guesses among the choices, or taps through a push they did
    # not ask for, gets no second try on the same request.
    device = make_user()
    browser = remembered_browser(stack, device)
    request = send_push(stack, browser)
    challenge = the_challenge(device, request)
    wrong_number = next(n for n in challenge["number_choices"] if n != request["number"])

    answered = answer_challenge(device, challenge, "approve", wrong_number)
    assert answered == {"challenge_id": challenge["challenge_id"], "status": "denied", "reason": "wrong_number"}
    assert eventually(lambda: status_of(stack, browser, request["request_id"]).json()["status"], "denied") \
        == "denied"
    assert refusal(lambda: answer_challenge(device, challenge, "approve", request["number"])) == (409, "conflict")
    assert browser.get(f"{stack.base_url}/api/me", timeout=10).status_code == 401
    assert pending_challenges(device) == []
    # Not a fraud report: the user may start a new request at once.
    send_push(stack, browser)


def test_nobody_answering_in_time_expires_the_request(stack, make_user):
    device = make_user()
    browser = remembered_browser(stack, device)
    request = send_push(stack, browser)
    challenge = the_challenge(device, request)
    time.sleep(TTL + 0.5)
    assert eventually(lambda: status_of(stack, browser, request["request_id"]).json()["status"], "expired") \
        == "expired"
    assert refusal(lambda: answer_challenge(device, challenge, "approve", request["number"])) == (410, "expired")
    assert browser.get(f"{stack.base_url}/api/me", timeout=10).status_code == 401
    # The status, the 410 and the device's poll all compare the expiry with the clock,
    # so they hold even if push never expired anything. What says it did: push
    # announced the expiry, once (LoginExpired, in the audit trail).
    expired = eventually(lambda: audit_trail(stack, device.username, "LoginExpired"), lambda found: found,
                         timeout=10)
    assert [entry["details"]["request_id"] for entry in expired] == [request["request_id"]]


def test_a_deny_reported_as_fraud_blocks_push_until_an_admin_clears_it(stack, make_user, admin_headers):
    device = make_user()
    browser = remembered_browser(stack, device)
    request = send_push(stack, browser)
    challenge = the_challenge(device, request)
    assert answer_challenge(device, challenge, "deny", "", fraud=True)["status"] == "denied"
    assert eventually(lambda: status_of(stack, browser, request["request_id"]).json()["status"], "denied") \
        == "denied"
    assert browser.get(f"{stack.base_url}/api/me", timeout=10).status_code == 401

    blocked = browser.post(f"{stack.base_url}/api/login/push", timeout=10)
    assert blocked.status_code == 403 and blocked.json()["error"] == "forbidden"
    block_url = f"{stack.base_url}/api/admin/users/{device.username}/push-block"
    assert requests.get(block_url, headers=admin_headers, timeout=10).json()["blocked"] is True
    cleared = requests.delete(block_url, headers=admin_headers, timeout=10)
    assert cleared.json() == {"username": device.username, "was_blocked": True}
    assert requests.get(block_url, headers=admin_headers, timeout=10).json()["blocked"] is False
    send_push(stack, browser)


def test_push_requests_are_rate_limited_per_user(stack, make_user):
    device = make_user()
    browser = remembered_browser(stack, device)
    for _ in range(3):
        send_push(stack, browser)
    fourth = browser.post(f"{stack.base_url}/api/login/push", timeout=10)
    assert fourth.status_code == 429 and fourth.json()["error"] == "too_many_requests"
    assert 1 <= int(fourth.headers["Retry-After"]) <= 300
    # The phone got three challenges, not four.
    assert len(pending_challenges(device)) == 3


def test_a_revoked_device_cannot_answer_and_the_saved_username_goes(stack, make_user, admin_headers):
    device = make_user()
    browser = remembered_browser(stack, device)
    request = send_push(stack, browser)
    challenge = the_challenge(device, request)
    revoked = requests.delete(f"{stack.base_url}/api/admin/devices/{device.device_id}", headers=admin_headers,
                              timeout=10)
    assert revoked.status_code == 200

    def answer():
        try:
            answer_challenge(device, challenge, "approve", request["number"])
            return 200
        except GatewayError as refused:
            return refused.status

    assert answer() == 403     # at once: the admin's 200 came once push had it, not when its event comes
    assert status_of(stack, browser, request["request_id"]).json() == {"status": "pending"}
    # The user has no device left: the browser is told plainly and forgets the username.
    assert browser.get(f"{stack.base_url}/api/login/push", timeout=10).status_code == 404
    assert browser.post(f"{stack.base_url}/api/login/push", timeout=10).status_code == 404


def test_a_code_locked_account_still_gets_its_push(stack, make_user):
    device = make_user()
    browser = remembered_browser(stack, device)
    for _ in range(4):   # three free failures, the fourth locks code login (test settings)
        requests.post(f"{stack.base_url}/api/login", json={"username": device.username, "password": "0000000000"},
                      timeout=10)
    locked = requests.post(f"{stack.base_url}/api/login",
                           json={"username": device.username, "password": device.code(step_offset=1)}, timeout=10)
    assert locked.status_code == 423
    request = send_push(stack, browser)     # the phone proves possession (architecture.md §5)
    answer_challenge(device, the_challenge(device, request), "approve", request["number"])
    assert eventually(lambda: status_of(stack, browser, request["request_id"]).json()["status"], "approved") \
        == "approved"


def test_a_signed_poll_or_token_update_is_accepted_once(stack, make_user):
    device = make_user()
    path = f"/api/devices/{device.device_id}/challenges"
    timestamp = int(time.time())
    signed = {"timestamp": timestamp, "signature": device.sign("mycepa-poll-v1", device.device_id, timestamp)}
    assert call(stack.base_url, "POST", path, signed)[0] == 200
    # Replayed as it was, and as the other valid encoding of the same ECDSA signature.
    assert refusal(lambda: call(stack.base_url, "POST", path, signed)) == (401, "invalid_credentials")
    assert refusal(lambda: call(stack.base_url, "POST", path, {**signed, "signature": malleated(signed["signature"])})) \
        == (401, "invalid_credentials")
    # A fresh signature of the same second is a new request (ECDSA signatures are random).
    assert pending_challenges(device, timestamp=timestamp) == []

    token_path = f"/api/devices/{device.device_id}/push-token"
    token = {"timestamp": timestamp, "push_token": "a" * 64,
             "signature": device.sign("mycepa-token-v1", device.device_id, timestamp, "a" * 64)}
    assert call(stack.base_url, "POST", token_path, token)[0] == 200
    assert refusal(lambda: call(stack.base_url, "POST", token_path, token)) == (401, "invalid_credentials")


def malleated(signature_b64):
    """The same ECDSA signature as (r, n - s): valid too, and different bytes."""
    r, s = decode_dss_signature(base64.b64decode(signature_b64))
    return base64.b64encode(encode_dss_signature(r, P256_ORDER - s)).decode()


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def test_a_device_poll_needs_a_fresh_signature_of_its_own_key(stack, make_user):
    device = make_user()
    old = int(time.time()) - 120
    assert refusal(lambda: pending_challenges(device, timestamp=old)) == (401, "invalid_credentials")
    forger = Device.new(stack.base_url)
    forger.device_id = device.device_id
    assert refusal(lambda: pending_challenges(forger)) == (401, "invalid_credentials")
    assert refusal(lambda: call(stack.base_url, "POST", "/api/devices/dev_unknown/challenges",
                                {"timestamp": int(time.time()), "signature": device.sign("x")})) \
        == (403, "forbidden")


def test_a_browser_can_wait_for_the_answer_instead_of_polling(stack, make_user):
    device = make_user()
    browser = remembered_browser(stack, device)
    request = send_push(stack, browser)
    challenge = the_challenge(device, request)
    url = f"{stack.base_url}/api/login/push/{request['request_id']}"

    # Nobody answers within the wait: still pending, after about the time asked for.
    started = time.monotonic()
    assert browser.get(url, params={"wait": 1}, timeout=10).json() == {"status": "pending"}
    assert 0.9 <= time.monotonic() - started < 3

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: browser.get(url, params={"wait": 10}, timeout=15))
        time.sleep(0.3)
        approved_at = time.monotonic()
        answer_challenge(device, challenge, "approve", request["number"])
        answer = waiting.result()
    # Woken by the answer's broadcast, not by the safety-net look (LongPoll.RECHECK_SECONDS,
    # 5 s after the wait began, 4.7 s after the approval) nor the end of the wait (10 s).
    # The bound leaves room for the device's own round trip on a busy CI machine.
    assert answer.json() == {"status": "approved"} and time.monotonic() - approved_at < 3
    assert "mycepa_session=" in answer.headers["Set-Cookie"]
    assert browser.get(f"{stack.base_url}/api/me", timeout=10).json()["username"] == device.username

    for bad in ("26", "-1", "1.5", "soon"):
        refused = browser.get(url, params={"wait": bad}, timeout=10)
        assert refused.status_code == 400 and refused.json()["fields"] == {
            "wait": ["must be a whole number of seconds, 0 to 25"]}
