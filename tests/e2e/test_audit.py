"""The audit trail end to end (architecture.md §3, §4, §6): real services, broker and database,
asked over HTTP as an administrator and as the user."""
import secrets
import time

import pytest
import requests

from clients.device import Device, GatewayError, create_activation, poll
from harness.load import push_login
from harness.waiting import eventually

pytestmark = pytest.mark.e2e

TIMEOUT = 10


def admin(token):
    return {"Authorization": f"Bearer {token}"}


def trail(stack, username, **query):
    answer = requests.get(f"{stack.base_url}/api/admin/audit", params={"username": username, **query},
                          headers=admin(stack.admin_token), timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def test_every_decision_about_a_user_is_in_the_trail_with_time_source_and_actor(stack):
    created = requests.post(f"{stack.base_url}/api/admin/credentials", json={"name": f"ops-{secrets.token_hex(3)}"},
                            headers=admin(stack.admin_token), timeout=TIMEOUT)
    assert created.status_code == 201, created.text
    operator = created.json()
    username = f"W{secrets.randbelow(10**9):09d}"
    device = Device.new(stack.base_url)
    device.activate(create_activation(stack.base_url, operator["token"], username)["activation_code"])

    browser = requests.Session()
    browser.headers["User-Agent"] = "Trail test browser"
    assert browser.post(f"{stack.base_url}/api/login", json={"username": username, "password": "0000000000"},
                        timeout=TIMEOUT).status_code == 401
    for offset in (0, 1):
        assert browser.post(f"{stack.base_url}/api/login", timeout=TIMEOUT,
                            json={"username": username, "password": device.code(step_offset=offset)}).status_code == 200
    saved = browser
    assert saved.post(f"{stack.base_url}/api/remember", timeout=TIMEOUT).status_code == 204
    assert saved.post(f"{stack.base_url}/api/logout", timeout=TIMEOUT).status_code == 204
    assert push_login(stack.base_url, device, saved, give_up_after=15).outcome == "approved"

    wanted = ["ActivationCreated", "DeviceActivated", "OtpRejected", "OtpVerified", "OtpVerified", "LoginRequested",
              "PushDispatched", "AccessConfirmed", "SessionStarted"]
    entries = eventually(lambda: trail(stack, username),
                         lambda found: all(found_type in [e["type"] for e in found] for found_type in wanted)
                         and [e["type"] for e in found].count("SessionStarted") == 3, timeout=10)
    types = [entry["type"] for entry in entries]
    for event_type in set(wanted):
        assert types.count(event_type) >= wanted.count(event_type), (event_type, types)
    by_type = {}
    for entry in entries:
        by_type.setdefault(entry["type"], []).append(entry)
    assert by_type["ActivationCreated"][0]["actor"] == operator["name"]
    assert by_type["OtpRejected"][0]["reason"] == "invalid"
    for entry in by_type["OtpRejected"] + by_type["OtpVerified"] + by_type["LoginRequested"]:
        assert entry["source"] == {"ip": "127.0.0.1", "user_agent": "Trail test browser"}, entry
    assert [s["reason"] for s in by_type["SessionStarted"]] == ["push", "code", "code"]   # newest first
    assert by_type["SessionEnded"][0]["reason"] == "logout"
    times = [entry["occurred_at"] for entry in entries]
    assert times == sorted(times, reverse=True)
    # Never a secret or a code: not the TOTP secret, not a code of any nearby step.
    text = str(entries)
    for secret in [device.secret] + [device.code(step_offset=k) for k in range(-3, 4)]:
        assert secret not in text

    # The user sees their previous login (the second code login) and their own activity.
    me = saved.get(f"{stack.base_url}/api/me", timeout=TIMEOUT).json()
    assert me["previous_login"]["method"] == "code" and me["previous_login"]["ip"] == "127.0.0.1"
    assert me["previous_login"]["user_agent"] == "Trail test browser"
    activity = saved.get(f"{stack.base_url}/api/me/activity", timeout=TIMEOUT).json()["events"]
    assert {e["type"] for e in activity} >= {"SessionStarted", "OtpRejected", "DeviceActivated"}
    assert {e["type"] for e in activity} <= {"SessionStarted", "OtpRejected", "AccessDenied", "AccountLocked",
                                             "AccountUnlocked", "DeviceActivated", "DeviceRevoked"}


def test_a_revoked_credential_is_refused_at_once_and_the_refusal_audited(stack):
    name = f"temp-{secrets.token_hex(3)}"
    token = requests.post(f"{stack.base_url}/api/admin/credentials", json={"name": name},
                          headers=admin(stack.admin_token), timeout=TIMEOUT).json()["token"]
    username = f"W{secrets.randbelow(10**9):09d}"
    devices_url = f"{stack.base_url}/api/admin/users/{username}/devices"
    assert requests.get(devices_url, headers=admin(token), timeout=TIMEOUT).status_code == 200
    listed = requests.get(f"{stack.base_url}/api/admin/credentials", headers=admin(stack.admin_token),
                          timeout=TIMEOUT).json()["credentials"]
    assert {"bootstrap", name} <= {c["name"] for c in listed} and all("token" not in c for c in listed)

    revoked = requests.delete(f"{stack.base_url}/api/admin/credentials/{name}", headers=admin(stack.admin_token),
                              timeout=TIMEOUT)
    assert revoked.json() == {"name": name, "revoked": True}
    refused = requests.get(devices_url, headers=admin(token), timeout=TIMEOUT)
    assert refused.status_code == 401 and refused.json()["error"] == "unauthenticated"
    # Named once: a revoked name is not given out again.
    again = requests.post(f"{stack.base_url}/api/admin/credentials", json={"name": name},
                          headers=admin(stack.admin_token), timeout=TIMEOUT)
    assert again.status_code == 409

    # (Each look at the trail is itself an admin request on this user: audit_query.)
    listings = lambda: [a for a in trail(stack, username, type="AdminAction") if a["reason"] == "list_devices"]  # noqa: E731
    actions = eventually(listings, lambda found: len(found) >= 2, timeout=10)
    assert [(a["actor"], a["details"]["outcome"], a["details"]["status"]) for a in actions] == [
        ("unknown", "refused", 401), (name, "allowed", 200)]


def test_the_audit_query_refuses_bad_filters(stack):
    url = f"{stack.base_url}/api/admin/audit"
    for params in ({"type": "NoSuchEvent"}, {"since": "yesterday"}, {"limit": "0"}, {"limit": "x"},
                   {"cursor": "not-a-cursor"}, {"username": "W 1"}, {"color": "red"}):
        answer = requests.get(url, params=params, headers=admin(stack.admin_token), timeout=TIMEOUT)
        assert answer.status_code == 400 and answer.json()["error"] == "validation_error", (params, answer.text)
    assert requests.get(url, timeout=TIMEOUT).status_code == 401


def test_a_lock_and_a_new_device_reach_every_device_of_the_user_once(stack, make_user):
    phone = make_user()
    assert polled(phone)["notices"] == []
    tablet = make_user(username=phone.username, device_name="Tablet")
    # The phone hears of the tablet; the tablet is not told of itself.
    activated = eventually(lambda: poll(phone)["notices"], bool, timeout=10)
    assert [(n["kind"], n["context"]["device_name"]) for n in activated] == [("device_activated", "Tablet")]
    for _ in range(4):   # three free failures, the fourth locks code login (test settings)
        requests.post(f"{stack.base_url}/api/login", json={"username": phone.username, "password": "0000000000"},
                      timeout=TIMEOUT)

    for device in (phone, tablet):
        notices = eventually(lambda: polled(device)["notices"], bool, timeout=10)
        assert [n["kind"] for n in notices] == ["account_locked"], notices
        assert notices[0]["context"]["consecutive_failures"] == 4 and notices[0]["context"]["ip"] == "127.0.0.1"
        assert poll(device)["notices"] == []   # once per device


def polled(device, timeout=5.0):
    """The device's poll, once push has registered it (DeviceActivated is an event)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return poll(device)
        except GatewayError as error:
            if error.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
