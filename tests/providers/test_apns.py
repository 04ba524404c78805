"""The APNs provider against the local APNs server (TLS + HTTP/2, ES256 provider tokens)."""
import json
import logging
import socket
import time

import eventlet
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.push.providers import APNsProvider, RetryPolicy
from tests.providers.conftest import APNS_KEY_ID, APNS_TEAM_ID, FakeClock
from harness.providers import APNS_TOPIC

TOKEN = "a1b2c3d4e5f6" + "0" * 52  # 64 hex digits, the shape of a device token


def sends(servers):
    return servers.requests("apns", "send")


def test_a_notification_is_accepted_and_arrives_over_http2_with_apples_headers(servers, make_apns, make_message):
    message = make_message()
    result = make_apns().send(TOKEN, message)

    assert result.ok and result.status == 200 and result.reason == "accepted"
    assert not result.permanent and not result.token_dead and result.attempts == 1
    assert result.message_id  # the apns-id of Apple's answer
    [request] = sends(servers)
    assert request["http_version"] == "2"
    assert request["path"] == f"/3/device/{TOKEN}"
    headers = request["headers"]
    assert headers["apns-topic"] == APNS_TOPIC
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-expiration"] == str(int(message.expires_at.timestamp()))
    assert headers["apns-collapse-id"] == message.challenge_id
    assert headers["authorization"].startswith("bearer ")
    assert request["jwt"]["header"] == {"alg": "ES256", "kid": APNS_KEY_ID, "typ": "JWT"}
    assert request["jwt"]["claims"]["iss"] == APNS_TEAM_ID
    assert abs(request["jwt"]["claims"]["iat"] - time.time()) < 5
    assert request["answer"] == {"status": 200, "reason": None}


def test_the_payload_is_the_localized_alert_and_the_challenge_id_only(servers, make_apns, make_message):
    provider = make_apns()
    provider.send(TOKEN, make_message(username="W7654321"))
    provider.send(TOKEN, make_message(username="W7654321", locale="en-GB"))

    dutch, english = (request["payload"] for request in sends(servers))
    assert dutch == {"aps": {"alert": {"title": "Bevestig toegang",
                                       "body": "Iemand wil inloggen op MyCepa als W7654321"},
                             "sound": "default"},
                     "challenge_id": "ch_0123456789abcdef0123456789abcdef"}
    assert english["aps"]["alert"] == {"title": "Confirm access",
                                       "body": "Someone wants to log in to MyCepa as W7654321"}
    for payload in (dutch, english):
        text = json.dumps(payload).lower()
        assert "nonce" not in text and "secret" not in text and "number" not in text


@pytest.mark.parametrize("status, reason, token_dead", [
    (400, "BadDeviceToken", True),
    (400, "DeviceTokenNotForTopic", True),
    (410, "Unregistered", True),
    (410, "ExpiredToken", True),
    (400, "BadExpirationDate", False),
    (403, "InvalidProviderToken", False),
    (413, "PayloadTooLarge", False),
])
def test_refusals_are_permanent_and_say_whether_the_token_is_dead(servers, make_apns, make_message, status,
                                                                  reason, token_dead):
    servers.script("apns", TOKEN, [{"status": status, "reason": reason}])
    result = make_apns().send(TOKEN, make_message())

    assert (result.ok, result.status, result.reason) == (False, status, reason)
    assert result.permanent and result.token_dead is token_dead
    assert result.attempts == 1 and len(sends(servers)) == 1


def test_429_and_5xx_are_retried_with_growing_backoff_until_accepted(servers, make_apns, make_message, sleeps):
    servers.script("apns", TOKEN, [{"status": 429, "reason": "TooManyRequests"},
                                   {"status": 503, "reason": "ServiceUnavailable"},
                                   {"status": 500, "reason": "InternalServerError"}])
    result = make_apns().send(TOKEN, make_message())

    assert result.ok and result.attempts == 4
    assert [r["answer"]["status"] for r in sends(servers)] == [429, 503, 500, 200]
    assert len(sleeps.calls) == 3 and sleeps.calls == sorted(sleeps.calls)
    assert all(0 < delay <= 0.05 for delay in sleeps.calls)


def test_retry_after_is_honoured_and_capped(servers, make_apns, make_message, sleeps):
    servers.script("apns", TOKEN, [{"status": 429, "reason": "TooManyRequests", "retry_after": "0.2"},
                                   {"status": 503, "reason": "ServiceUnavailable", "retry_after": "3600"}])
    result = make_apns().send(TOKEN, make_message())

    assert result.ok and result.attempts == 3
    assert sleeps.calls == [0.2, 0.5]  # 3600 s capped at the policy's retry_after_max


def test_when_retries_run_out_the_failure_is_reported_not_permanent(servers, make_apns, make_message):
    servers.script("apns", TOKEN, [{"status": 503, "reason": "ServiceUnavailable"}] * 5)
    result = make_apns().send(TOKEN, make_message())

    assert (result.ok, result.status, result.reason) == (False, 503, "ServiceUnavailable")
    assert not result.permanent and not result.token_dead and result.attempts == 4
    assert len(sends(servers)) == 4


def test_no_retry_is_made_that_would_land_after_the_challenge_expired(servers, make_apns, make_message, sleeps):
    servers.script("apns", TOKEN, [{"status": 429, "reason": "TooManyRequests", "retry_after": "5"}])
    provider = make_apns(retry=RetryPolicy(max_attempts=4, retry_after_max=10))
    result = provider.send(TOKEN, make_message(ttl_seconds=2))

    assert not result.ok and result.reason == "TooManyRequests" and result.attempts == 1
    assert sleeps.calls == []


def test_an_unreachable_apns_is_retried_then_reported(make_apns, make_message):
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = make_apns(base_url=f"https://127.0.0.1:{port}").send(TOKEN, make_message())

    assert not result.ok and result.status is None and result.reason.startswith("connection_error")
    assert not result.permanent and not result.token_dead and result.attempts == 4


def test_a_server_certificate_that_does_not_verify_is_a_connection_error(servers, make_apns, make_message):
    result = make_apns(verify=True, retry=RetryPolicy(max_attempts=1)).send(TOKEN, make_message())

    assert not result.ok and result.reason.startswith("connection_error") and sends(servers) == []


def test_the_jwt_is_reused_and_renewed_after_its_lifetime(servers, make_apns, make_message):
    clock = FakeClock(start=time.time() - 3000)  # still under Apple's hour when first made
    provider = make_apns(clock=clock, token_lifetime=45 * 60)

    provider.send(TOKEN, make_message())
    clock.advance(1000)
    provider.send(TOKEN, make_message())
    clock.advance(1800)  # 2800 s after the first: past the 45-minute lifetime
    provider.send(TOKEN, make_message())
    provider.send(TOKEN, make_message())

    requests = sends(servers)
    assert [r["answer"]["status"] for r in requests] == [200] * 4
    tokens = [r["jwt"]["token"] for r in requests]
    assert tokens[0] == tokens[1] != tokens[2] == tokens[3]
    assert requests[2]["jwt"]["claims"]["iat"] - requests[0]["jwt"]["claims"]["iat"] == 2800


def test_expired_provider_token_gets_a_fresh_jwt_and_one_more_try(servers, make_apns, make_message):
    servers.script("apns", TOKEN, [{"status": 403, "reason": "ExpiredProviderToken"}])
    result = make_apns().send(TOKEN, make_message())

    assert result.ok and result.attempts == 2
    first, second = sends(servers)
    assert first["jwt"]["token"] != second["jwt"]["token"]


def test_a_jwt_apple_finds_too_old_is_renewed_once_then_reported(servers, make_apns, make_message):
    provider = make_apns(clock=FakeClock(start=time.time() - 4000))  # a badly wrong clock
    result = provider.send(TOKEN, make_message(expires_at=None))

    assert (result.ok, result.status, result.reason) == (False, 403, "ExpiredProviderToken")
    assert not result.permanent and not result.token_dead and result.attempts == 2


def test_a_token_apns_could_not_have_issued_is_refused_without_a_request(servers, make_apns, make_message):
    result = make_apns().send("../../3/device/x?", make_message())

    assert (result.ok, result.reason, result.permanent, result.token_dead) == (False, "BadDeviceToken", True, True)
    assert sends(servers) == []


def test_concurrent_sends_from_green_threads_share_one_http2_connection(servers, make_apns, make_message):
    provider = make_apns()
    provider.send(TOKEN, make_message())  # opens the connection
    tokens = [f"{n:02d}" + "f" * 62 for n in range(6)]
    for token in tokens:
        servers.script("apns", token, [{"status": 200, "delay": 0.4}])

    started = time.monotonic()
    threads = [eventlet.spawn(provider.send, token, make_message()) for token in tokens]
    results = [thread.wait() for thread in threads]
    elapsed = time.monotonic() - started

    assert all(result.ok for result in results)
    assert elapsed < 1.5  # one after the other would take 2.4 s
    requests = sends(servers)
    assert {tuple(r["client"]) for r in requests} == {tuple(requests[0]["client"])}
    assert {r["http_version"] for r in requests} == {"2"}


def test_no_log_line_holds_the_device_token_or_the_jwt(servers, make_apns, make_message, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make_apns()
    servers.script("apns", TOKEN, [{"status": 503, "reason": "ServiceUnavailable"}])
    assert provider.send(TOKEN, make_message()).ok
    servers.script("apns", TOKEN, [{"status": 410, "reason": "Unregistered"}])
    result = provider.send(TOKEN, make_message())

    jwt_token = sends(servers)[0]["jwt"]["token"]
    text = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert "a1b2c3…(64)" in text  # the hint is there, so the provider did log
    assert TOKEN not in text and jwt_token not in text
    assert TOKEN not in repr(result)


def test_settings_that_cannot_work_are_refused_at_construction(apns_key):
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="EC P-256") as refused:
        APNsProvider(key_pem=rsa_pem, key_id=APNS_KEY_ID, team_id=APNS_TEAM_ID, topic=APNS_TOPIC)
    assert "PRIVATE KEY" not in str(refused.value)
    ec_pem = apns_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="token_lifetime"):
        APNsProvider(key_pem=ec_pem, key_id=APNS_KEY_ID, team_id=APNS_TEAM_ID, topic=APNS_TOPIC,
                     token_lifetime=600)  # Apple refuses renewals more often than every 20 minutes
    with pytest.raises(ValueError, match="topic"):
        APNsProvider(key_pem=ec_pem, key_id=APNS_KEY_ID, team_id=APNS_TEAM_ID, topic="")


def test_the_jwt_verifies_with_the_teams_public_key(servers, make_apns, make_message, apns_key):
    make_apns().send(TOKEN, make_message())
    token = sends(servers)[0]["jwt"]["token"]
    claims = jwt.decode(token, apns_key.public_key(), algorithms=["ES256"])
    assert set(claims) == {"iss", "iat"}
