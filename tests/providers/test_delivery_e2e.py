"""Push login delivered for real: the three services as processes, push configured with
APNs and FCM credentials aimed at the local provider servers (TLS + HTTP/2), a browser
pressing "Stuur PUSH" and phones that get notified, fetch the challenge and approve."""
import json
import secrets
import time

import pytest
import requests

from clients.device import Device, GatewayError, answer_challenge, pending_challenges, update_push_token
from tests.conftest import TEST_ENV, Stack
from harness.providers import APNS_TOPIC, pem_private
from tests.providers.conftest import APNS_KEY_ID, APNS_TEAM_ID

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def delivery(provider_servers, apns_key, service_account_info, broker_admin, mongo_client, artifacts_dir,
             tmp_path_factory):
    """A stack of its own (vhost, databases), delivering through the local providers."""
    directory = tmp_path_factory.mktemp("delivery")
    (directory / "apns.p8").write_text(pem_private(apns_key))
    (directory / "fcm.json").write_text(json.dumps(service_account_info))
    vhost = f"mycepa-test-{secrets.token_hex(4)}-delivery"
    stack = Stack({**TEST_ENV, "AMQP_URI": broker_admin.create_vhost(vhost),
                   "MONGO_DB_PREFIX": TEST_ENV["MONGO_DB_PREFIX"] + "d_",
                   "APNS_KEY_FILE": str(directory / "apns.p8"), "APNS_KEY_ID": APNS_KEY_ID,
                   "APNS_TEAM_ID": APNS_TEAM_ID, "APNS_TOPIC": APNS_TOPIC, "APNS_URL": provider_servers.url("apns"),
                   "FCM_SERVICE_ACCOUNT_FILE": str(directory / "fcm.json"), "FCM_URL": provider_servers.url("fcm"),
                   "FCM_TOKEN_URI": provider_servers.fcm_token_uri, "PUSH_CA_FILE": str(provider_servers.tls.ca),
                   "PUSH_MAX_ATTEMPTS": "2"},
                  artifacts_dir / "logs" / "delivery", otp_instances=1)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        broker_admin.delete_vhost(vhost)


def remembered_browser(stack, device):
    browser = requests.Session()
    assert browser.post(f"{stack.base_url}/api/login", timeout=10,
                        json={"username": device.username, "password": device.code()}).status_code == 200
    assert browser.post(f"{stack.base_url}/api/remember", timeout=10).status_code == 204
    assert browser.post(f"{stack.base_url}/api/logout", timeout=10).status_code == 204
    return browser


def sent_to(servers, which, token, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        # Only requests the server has answered (it records a request before its answer).
        found = [r for r in servers.requests(which, "send") if r.get("token") == token and "answer" in r]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def approve_from_notification(stack, device, browser, request, challenge_id):
    """What the app does when the notification arrives: fetch that challenge, approve it."""
    challenge = next(c for c in pending_challenges(device) if c["challenge_id"] == challenge_id)
    assert request["number"] in challenge["number_choices"]
    answer_challenge(device, challenge, "approve", request["number"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = browser.get(f"{stack.base_url}/api/login/push/{request['request_id']}", timeout=10).json()
        if status["status"] != "pending":
            break
        time.sleep(0.05)
    assert status == {"status": "approved"}
    assert browser.get(f"{stack.base_url}/api/me", timeout=10).json()["username"] == device.username


def test_an_iphone_is_notified_through_apns_and_confirms(delivery, provider_servers):
    provider_servers.reset()
    token = secrets.token_hex(32)
    device = delivery.make_user(platform="ios", push_token=token, device_name="iPhone")
    browser = remembered_browser(delivery, device)
    request = browser.post(f"{delivery.base_url}/api/login/push", timeout=10).json()

    [sent] = sent_to(provider_servers, "apns", token)
    assert sent["http_version"] == "2" and sent["answer"]["status"] == 200
    assert sent["headers"]["apns-topic"] == APNS_TOPIC and sent["headers"]["apns-push-type"] == "alert"
    assert sent["jwt"]["claims"]["iss"] == APNS_TEAM_ID and sent["jwt"]["header"]["kid"] == APNS_KEY_ID
    challenge_id = sent["headers"]["apns-collapse-id"]
    assert sent["payload"]["challenge_id"] == challenge_id
    assert "Bevestig toegang" in json.dumps(sent["payload"], ensure_ascii=False)
    approve_from_notification(delivery, device, browser, request, challenge_id)
    # The nonce the device signed never travelled through Apple.
    assert "nonce" not in json.dumps(sent["payload"])


def test_an_android_phone_is_notified_through_fcm_and_confirms(delivery, provider_servers):
    provider_servers.reset()
    token = "fcm-" + secrets.token_urlsafe(40)
    device = delivery.make_user(platform="android", push_token=token, device_name="Pixel")
    browser = remembered_browser(delivery, device)
    request = browser.post(f"{delivery.base_url}/api/login/push", timeout=10).json()

    [sent] = sent_to(provider_servers, "fcm", token)
    assert sent["http_version"] == "2" and sent["answer"]["status"] == 200
    message = sent["body"]["message"]
    assert message["android"]["priority"] == "HIGH"
    assert 1 <= int(message["android"]["ttl"].rstrip("s")) <= int(TEST_ENV["PUSH_REQUEST_TTL_SECONDS"])
    approve_from_notification(delivery, device, browser, request, message["data"]["challenge_id"])


def test_a_token_apns_calls_unregistered_is_not_used_again(delivery, provider_servers, mongo_client):
    provider_servers.reset()
    token = secrets.token_hex(32)
    provider_servers.script("apns", token, [{"status": 410, "reason": "Unregistered"}])
    device = delivery.make_user(platform="ios", push_token=token)
    browser = remembered_browser(delivery, device)
    first = browser.post(f"{delivery.base_url}/api/login/push", timeout=10).json()
    assert [r["answer"]["status"] for r in sent_to(provider_servers, "apns", token)] == [410]

    # Marked dead: the next push does not go to Apple, and the app can still answer by polling.
    stored = mongo_client[TEST_ENV["MONGO_DB_PREFIX"] + "d_push"].devices
    deadline = time.monotonic() + 5
    while not stored.find_one({"_id": device.device_id}).get("push_token_dead") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored.find_one({"_id": device.device_id})["push_token_dead"] is True
    second = browser.post(f"{delivery.base_url}/api/login/push", timeout=10).json()
    time.sleep(0.5)
    assert len(sent_to(provider_servers, "apns", token, timeout=0)) == 1
    challenge_ids = {c["challenge_id"] for c in pending_challenges(device)}
    assert len(challenge_ids) == 2
    assert first["request_id"] != second["request_id"]


def test_a_retryable_apns_error_is_retried_and_delivered(delivery, provider_servers):
    provider_servers.reset()
    token = secrets.token_hex(32)
    provider_servers.script("apns", token, [{"status": 503, "reason": "ServiceUnavailable"}])
    device = delivery.make_user(platform="ios", push_token=token)
    browser = remembered_browser(delivery, device)
    browser.post(f"{delivery.base_url}/api/login/push", timeout=10)
    deadline = time.monotonic() + 8
    while len(sent_to(provider_servers, "apns", token, timeout=0)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r["answer"]["status"] for r in sent_to(provider_servers, "apns", token)] == [503, 200]


def test_after_a_dead_token_the_app_sends_a_new_one_and_is_notified_again(delivery, provider_servers):
    provider_servers.reset()
    dead, fresh = secrets.token_hex(32), secrets.token_hex(32)
    provider_servers.script("apns", dead, [{"status": 410, "reason": "Unregistered"}])
    device = delivery.make_user(platform="ios", push_token=dead)
    browser = remembered_browser(delivery, device)
    browser.post(f"{delivery.base_url}/api/login/push", timeout=10)
    assert [r["answer"]["status"] for r in sent_to(provider_servers, "apns", dead)] == [410]

    # Only the device itself can change its token: a signature by another key is refused.
    forger = Device.new(delivery.base_url)
    forger.device_id = device.device_id
    with pytest.raises(GatewayError) as refused:
        update_push_token(forger, "attacker-token")
    assert refused.value.status == 401
    assert update_push_token(device, fresh) == {"device_id": device.device_id}

    request = browser.post(f"{delivery.base_url}/api/login/push", timeout=10).json()
    [sent] = sent_to(provider_servers, "apns", fresh)
    assert sent["answer"]["status"] == 200
    assert len(sent_to(provider_servers, "apns", dead, timeout=0)) == 1
    approve_from_notification(delivery, device, browser, request, sent["headers"]["apns-collapse-id"])


def test_a_lock_is_told_to_each_phone_as_a_plain_alert_once(delivery, provider_servers):
    provider_servers.reset()
    apns_token, fcm_token = secrets.token_hex(32), "fcm-" + secrets.token_urlsafe(40)
    iphone = delivery.make_user(platform="ios", push_token=apns_token, device_name="iPhone")
    delivery.make_user(username=iphone.username, platform="android", push_token=fcm_token, device_name="Pixel")
    for _ in range(4):   # three free failures, the fourth locks code login (test settings)
        requests.post(f"{delivery.base_url}/api/login", json={"username": iphone.username, "password": "0000000000"},
                      headers={"User-Agent": "attacker"}, timeout=10)

    def alerts(which, token, kind):
        found = sent_to(provider_servers, which, token)
        data = lambda sent: sent["payload"] if which == "apns" else sent["body"]["message"]["data"]   # noqa: E731
        return [sent for sent in found if data(sent).get("kind") == kind]

    deadline = time.monotonic() + 5
    while not (alerts("apns", apns_token, "account_locked") and alerts("fcm", fcm_token, "account_locked")) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    [apns] = alerts("apns", apns_token, "account_locked")
    assert apns["headers"]["apns-push-type"] == "alert" and "challenge_id" not in apns["payload"]
    assert "vergrendeld na 4 foute codes vanaf 127.0.0.1" in apns["payload"]["aps"]["alert"]["body"]
    [fcm] = alerts("fcm", fcm_token, "account_locked")
    assert fcm["body"]["message"]["notification"]["title"] == "MyCepa: let op"
    # The iPhone was told that the Pixel was activated; the Pixel is not told of itself.
    [activated] = alerts("apns", apns_token, "device_activated")
    assert "Pixel" in activated["payload"]["aps"]["alert"]["body"]
    assert alerts("fcm", fcm_token, "device_activated") == []
