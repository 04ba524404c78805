"""The FCM provider against the local FCM server (TLS + HTTP/2, OAuth2 service account)."""
import json
import logging
import time

import eventlet
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.push.providers import FCMProvider
from tests.providers.conftest import FCM_CLIENT_EMAIL, FCM_KEY_ID, FakeClock
from harness.providers import FCM_PROJECT, FCM_SCOPE, GOOGLE_TOKEN_AUDIENCE

TOKEN = "dXk3bV9mY21fdG9rZW4:APA91bH" + "x" * 120  # the shape of an FCM registration token


def sends(servers):
    return servers.requests("fcm", "send")


def token_requests(servers):
    return servers.requests("fcm", "token")


def test_a_message_is_sent_with_an_oauth_token_over_http2(servers, make_fcm, make_message):
    message = make_message(ttl_seconds=90)
    result = make_fcm().send(TOKEN, message)

    assert result.ok and result.status == 200 and result.reason == "accepted" and result.attempts == 1
    assert result.message_id.startswith(f"projects/{FCM_PROJECT}/messages/")
    [grant] = token_requests(servers)
    assert grant["http_version"] == "2" and grant["answer"]["status"] == 200
    assert grant["assertion"]["header"]["alg"] == "RS256" and grant["assertion"]["header"]["kid"] == FCM_KEY_ID
    claims = grant["assertion"]["claims"]
    assert claims["iss"] == FCM_CLIENT_EMAIL and claims["aud"] == GOOGLE_TOKEN_AUDIENCE
    assert claims["scope"] == FCM_SCOPE
    [send] = sends(servers)
    assert send["http_version"] == "2"
    assert send["path"] == f"/v1/projects/{FCM_PROJECT}/messages:send"
    assert send["access_token"] == grant["issued"]
    assert send["body"] == {"message": {
        "token": TOKEN,
        "notification": {"title": "Bevestig toegang", "body": "Iemand wil inloggen op MyCepa als W1234567"},
        "data": {"challenge_id": message.challenge_id},
        "android": {"priority": "HIGH", "ttl": "90s", "collapse_key": message.challenge_id},
    }}
    text = json.dumps(send["body"]).lower()
    assert "nonce" not in text and "secret" not in text


def test_english_text_by_locale(servers, make_fcm, make_message):
    make_fcm().send(TOKEN, make_message(locale="en"))
    assert sends(servers)[0]["body"]["message"]["notification"] == {
        "title": "Confirm access", "body": "Someone wants to log in to MyCepa as W1234567"}


@pytest.mark.parametrize("status, code, token_dead", [
    (404, "UNREGISTERED", True),
    (403, "SENDER_ID_MISMATCH", True),
    (400, "INVALID_ARGUMENT", False),
    (401, "THIRD_PARTY_AUTH_ERROR", False),
])
def test_refusals_are_permanent_and_say_whether_the_token_is_dead(servers, make_fcm, make_message, status, code,
                                                                  token_dead):
    servers.script("fcm", TOKEN, [{"status": status, "reason": code}])
    result = make_fcm().send(TOKEN, make_message())

    assert (result.ok, result.status, result.reason) == (False, status, code)
    assert result.permanent and result.token_dead is token_dead and result.attempts == 1
    [send] = sends(servers)
    assert send["answer"]["error_code"] == code


def test_a_message_fcm_finds_malformed_is_a_permanent_invalid_argument(servers, make_fcm, make_message):
    class Sloppy(FCMProvider):
        def body(self, push_token, message):
            body = super().body(push_token, message)
            body["message"]["android"]["priority"] = "URGENT"
            return body

    result = make_fcm(cls=Sloppy).send(TOKEN, make_message())

    assert (result.ok, result.status, result.reason, result.permanent) == (False, 400, "INVALID_ARGUMENT", True)
    assert not result.token_dead
    assert sends(servers)[-1]["answer"]["status_text"] == "INVALID_ARGUMENT"


def test_quota_and_server_errors_are_retried_honouring_retry_after(servers, make_fcm, make_message, sleeps):
    servers.script("fcm", TOKEN, [{"status": 429, "reason": "QUOTA_EXCEEDED", "retry_after": "0.2"},
                                  {"status": 503, "reason": "UNAVAILABLE"},
                                  {"status": 500, "reason": "INTERNAL"}])
    result = make_fcm().send(TOKEN, make_message())

    assert result.ok and result.attempts == 4
    assert [r["answer"]["status"] for r in sends(servers)] == [429, 503, 500, 200]
    assert sleeps.calls[0] == 0.2 and len(sleeps.calls) == 3
    assert sleeps.calls[1] <= sleeps.calls[2] <= 0.05
    assert len(token_requests(servers)) == 1  # the access token outlives the retries


def test_when_retries_run_out_the_failure_is_reported_not_permanent(servers, make_fcm, make_message):
    servers.script("fcm", TOKEN, [{"status": 503, "reason": "UNAVAILABLE"}] * 4)
    result = make_fcm().send(TOKEN, make_message())

    assert (result.ok, result.status, result.reason) == (False, 503, "UNAVAILABLE")
    assert not result.permanent and not result.token_dead and result.attempts == 4


def test_the_access_token_is_cached_and_renewed_before_it_expires(servers, make_fcm, make_message):
    clock = FakeClock()
    provider = make_fcm(clock=clock)

    for _ in range(3):
        assert provider.send(TOKEN, make_message()).ok
    assert len(token_requests(servers)) == 1
    clock.advance(3250)  # the token lives 3599 s and is renewed 300 s early: not yet
    assert provider.send(TOKEN, make_message()).ok
    clock.advance(60)
    assert provider.send(TOKEN, make_message()).ok
    clock.advance(60)
    assert provider.send(TOKEN, make_message()).ok

    grants = token_requests(servers)
    assert len(grants) == 2
    used = [send["access_token"] for send in sends(servers)]
    assert used == [grants[0]["issued"]] * 4 + [grants[1]["issued"]] * 2


def test_a_revoked_access_token_is_replaced_and_the_send_tried_once_more(servers, make_fcm, make_message):
    provider = make_fcm()
    assert provider.send(TOKEN, make_message()).ok
    servers.revoke_access_tokens()
    result = provider.send(TOKEN, make_message())

    assert result.ok and result.attempts == 2
    assert [s["answer"]["status"] for s in sends(servers)] == [200, 401, 200]
    assert len(token_requests(servers)) == 2


def test_concurrent_sends_refused_alike_renew_the_access_token_once(servers, make_fcm, make_message):
    provider = make_fcm()
    assert provider.send(TOKEN, make_message()).ok
    servers.revoke_access_tokens()
    threads = [eventlet.spawn(provider.send, f"{TOKEN}{n}", make_message()) for n in range(4)]

    assert all(thread.wait().ok for thread in threads)
    assert len(token_requests(servers)) == 2


def test_a_service_account_google_refuses_is_a_permanent_auth_failure(servers, make_fcm, make_message,
                                                                      service_account_info):
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = {**service_account_info, "private_key": impostor.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()}
    result = make_fcm(service_account_info=info).send(TOKEN, make_message())

    assert (result.ok, result.status, result.reason) == (False, None, "auth_failed: invalid_grant")
    assert result.permanent and not result.token_dead and result.attempts == 1
    assert token_requests(servers)[0]["answer"] == {"status": 400, "error": "invalid_grant"}
    assert sends(servers) == []


def test_a_token_endpoint_outage_is_retried(servers, make_fcm, make_message, monkeypatch):
    # google-auth retries the token endpoint itself (3 tries, 1 s apart): make its waits short.
    from google.auth import _exponential_backoff

    original = _exponential_backoff.ExponentialBackoff.__init__
    monkeypatch.setattr(_exponential_backoff.ExponentialBackoff, "__init__",
                        lambda self, *a, **kw: original(self, initial_wait_seconds=0.01, randomization_factor=0.0))
    servers.script("fcm", "__token_endpoint__", [{"status": 503, "error": "temporarily_unavailable"}] * 3)
    result = make_fcm().send(TOKEN, make_message())

    assert result.ok and result.attempts == 2
    assert [g["answer"]["status"] for g in token_requests(servers)] == [503, 503, 503, 200]


def test_concurrent_sends_from_green_threads(servers, make_fcm, make_message):
    provider = make_fcm()
    provider.send(TOKEN, make_message())
    tokens = [f"{TOKEN}{n}" for n in range(6)]
    for token in tokens:
        servers.script("fcm", token, [{"status": 200, "delay": 0.4}])

    started = time.monotonic()
    results = [thread.wait() for thread in [eventlet.spawn(provider.send, t, make_message()) for t in tokens]]

    assert all(result.ok for result in results)
    assert time.monotonic() - started < 1.5  # one after the other would take 2.4 s
    assert len(token_requests(servers)) == 1
    assert {r["http_version"] for r in sends(servers)} == {"2"}


def test_no_log_line_holds_the_device_token_the_access_token_or_the_key(servers, make_fcm, make_message, caplog,
                                                                        service_account_info):
    caplog.set_level(logging.DEBUG)
    provider = make_fcm()
    servers.script("fcm", TOKEN, [{"status": 500, "reason": "INTERNAL"}])
    assert provider.send(TOKEN, make_message()).ok
    servers.script("fcm", TOKEN, [{"status": 404, "reason": "UNREGISTERED"}])
    result = provider.send(TOKEN, make_message())
    assert result.token_dead

    access_token = token_requests(servers)[0]["issued"]
    text = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert "dXk3bV…" in text  # the provider did log, with a hint
    assert TOKEN not in text and access_token not in text
    key_line = service_account_info["private_key"].splitlines()[1]
    assert key_line not in text
    assert TOKEN not in repr(result)


def test_settings_that_cannot_work_are_refused_at_construction(service_account_info):
    with pytest.raises(ValueError, match="not valid JSON"):
        FCMProvider(service_account_info="{not json")
    with pytest.raises(ValueError, match="private_key"):
        FCMProvider(service_account_info={**service_account_info, "private_key": ""})
    with pytest.raises(ValueError, match="cannot be used") as refused:
        FCMProvider(service_account_info={**service_account_info, "private_key": "-----BEGIN PRIVATE KEY-----\nx"})
    assert "BEGIN" not in str(refused.value)
    with pytest.raises(ValueError, match="project"):
        FCMProvider(service_account_info={**service_account_info, "project_id": None})
