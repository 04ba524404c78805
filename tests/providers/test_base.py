"""The shared parts: the settings factory, messages, retry timing, token hints."""
import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from cryptography.hazmat.primitives import serialization

from services.push.providers import (APNsProvider, FCMProvider, PushMessage, RetryPolicy,
                                     providers_from_settings)
from services.push.providers.base import parse_retry_after, token_hint
from tests.providers.conftest import APNS_KEY_ID, APNS_TEAM_ID
from harness.providers import APNS_TOPIC, FCM_PROJECT


@pytest.fixture
def settings(servers, apns_key, service_account_info):
    return {
        "apns_key_pem": apns_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()).decode(),
        "apns_key_id": APNS_KEY_ID, "apns_team_id": APNS_TEAM_ID, "apns_topic": APNS_TOPIC,
        "apns_url": servers.url("apns"),
        "fcm_project": None, "fcm_service_account_json": json.dumps(service_account_info),
        "fcm_url": servers.url("fcm"), "fcm_token_uri": servers.fcm_token_uri,
        "push_ca_file": servers.tls.ca, "push_max_attempts": "2", "push_timeout_seconds": "3",
    }


def test_the_factory_builds_both_providers_that_deliver(settings, make_message):
    providers = providers_from_settings(settings)
    try:
        ios, android = providers["ios"], providers["android"]
        assert isinstance(ios, APNsProvider) and isinstance(android, FCMProvider)
        assert android.project_id == FCM_PROJECT  # from the service account when not set
        assert ios.retry.max_attempts == android.retry.max_attempts == 2
        assert ios.send("ab" * 32, make_message()).ok
        assert android.send("fcm-token-" + "x" * 40, make_message()).ok
    finally:
        for provider in providers.values():
            provider.close()


def test_unconfigured_providers_are_none_and_half_configured_ones_refused(settings):
    assert providers_from_settings({}) == {"ios": None, "android": None}
    assert providers_from_settings({key: None for key in settings}) == {"ios": None, "android": None}
    with pytest.raises(ValueError, match="apns_team_id"):
        providers_from_settings({**settings, "apns_team_id": ""})
    with pytest.raises(ValueError, match="fcm_service_account_json"):
        providers_from_settings({"fcm_project": "p"})


def test_the_factory_uses_the_production_endpoints_by_default(settings):
    defaults = {key: value for key, value in settings.items()
                if key not in ("apns_url", "fcm_url", "fcm_token_uri", "push_ca_file")}
    providers = providers_from_settings(defaults)
    try:
        assert providers["ios"].base_url == "https://api.push.apple.com"
        assert providers["android"].send_url == f"https://fcm.googleapis.com/v1/projects/{FCM_PROJECT}/messages:send"
        assert providers["android"]._credentials._token_uri == "https://oauth2.googleapis.com/token"
    finally:
        for provider in providers.values():
            provider.close()


def test_alert_text_by_locale():
    def message(locale):
        return PushMessage("ch_1", "W1234567", datetime.now(timezone.utc), 60, locale)

    assert message("nl").alert() == ("Bevestig toegang", "Iemand wil inloggen op MyCepa als W1234567")
    assert message("nl-BE").alert()[0] == "Bevestig toegang"
    assert message("en_US").alert() == ("Confirm access", "Someone wants to log in to MyCepa as W1234567")
    assert message("fr").alert()[0] == "Bevestig toegang"  # Dutch first
    assert message(None).alert()[0] == "Bevestig toegang"


def test_expiry_in_unix_seconds_for_aware_and_naive_utc():
    moment = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert PushMessage("c", "u", moment, 1).expires_at_unix() == int(moment.timestamp())
    assert PushMessage("c", "u", moment.replace(tzinfo=None), 1).expires_at_unix() == int(moment.timestamp())


def test_retry_after_as_seconds_or_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 25 <= parse_retry_after(format_datetime(later, usegmt=True)) <= 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_backoff_grows_is_capped_and_retry_after_wins_up_to_its_cap():
    policy = RetryPolicy(max_attempts=6, backoff_base=1.0, backoff_max=4.0, retry_after_max=10.0)
    for failed, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (2, 4), (2, 4)], start=1):
        assert low <= policy.delay(failed) <= high
    assert policy.delay(1, retry_after=7) == 7
    assert policy.delay(1, retry_after=700) == 10
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_token_hints_never_hold_a_token():
    assert token_hint("0123456789abcdef" * 4) == "012345…(64)"
    assert token_hint("short") == "[redacted]" and token_hint(None) == "[redacted]"


def test_a_failure_inside_the_provider_is_a_result_not_an_exception(make_apns, make_message, caplog):
    token = "ab" * 32

    class Broken(APNsProvider):
        def payload(self, message):
            raise RuntimeError(f"cannot build the payload for {token}")

    provider = make_apns()
    provider.__class__ = Broken
    result = provider.send(token, make_message())

    assert (result.ok, result.reason, result.permanent, result.attempts) == (
        False, "internal_error: RuntimeError", False, 1)
    assert "RuntimeError" in caplog.text and token not in caplog.text
