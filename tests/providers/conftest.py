"""Fixtures of the provider tests: test keys, the local APNs/FCM servers, providers aimed at them.

The servers run in one process for the whole session (`harness/providers.py`); each test starts
from a clean slate (no scripts, no recorded requests, no issued access tokens).
"""
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.push.providers import APNsProvider, FCMProvider, PushMessage, RetryPolicy
from harness.providers import APNS_TOPIC, FCM_PROJECT, ProviderServers, make_tls, pem_private, pem_public

APNS_KEY_ID = "ABC123DEFG"
APNS_TEAM_ID = "DEF123GHIJ"
FCM_CLIENT_EMAIL = f"firebase-adminsdk@{FCM_PROJECT}.iam.gserviceaccount.com"
FCM_KEY_ID = "0123456789abcdef0123456789abcdef01234567"

# Small backoff so retries take milliseconds; four attempts as in production.
FAST_RETRY = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.5)


@pytest.fixture(scope="session")
def apns_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def fcm_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def provider_servers(tmp_path_factory, apns_key, fcm_key):
    directory = tmp_path_factory.mktemp("provider-servers")
    tls = make_tls(directory)
    servers = ProviderServers(
        directory, tls,
        apns_keys={APNS_KEY_ID: {"team_id": APNS_TEAM_ID, "public_key_pem": pem_public(apns_key)}},
        fcm_accounts={FCM_CLIENT_EMAIL: {"key_id": FCM_KEY_ID, "public_key_pem": pem_public(fcm_key)}})
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def servers(provider_servers):
    provider_servers.reset()
    return provider_servers


@pytest.fixture(scope="session")
def service_account_info(fcm_key):
    """A service-account file as the Firebase console hands it out, minus the token_uri."""
    return {
        "type": "service_account", "project_id": FCM_PROJECT, "private_key_id": FCM_KEY_ID,
        "private_key": pem_private(fcm_key), "client_email": FCM_CLIENT_EMAIL, "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": "https://oauth2.googleapis.com/token",
    }


class FakeClock:
    """Unix seconds that move only when a test moves them."""

    def __init__(self, start=None):
        self.now = time.time() if start is None else start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class RecordingSleep:
    def __init__(self):
        self.calls = []

    def __call__(self, seconds):
        self.calls.append(seconds)
        time.sleep(min(seconds, 0.05))


@pytest.fixture
def sleeps():
    return RecordingSleep()


@pytest.fixture
def make_apns(servers, apns_key, sleeps):
    made = []

    def make(**overrides):
        options = {"key_pem": pem_private(apns_key), "key_id": APNS_KEY_ID, "team_id": APNS_TEAM_ID,
                   "topic": APNS_TOPIC, "base_url": servers.url("apns"), "verify": servers.tls.ca,
                   "retry": FAST_RETRY, "sleep": sleeps, "timeout": 5.0, **overrides}
        provider = APNsProvider(**options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture
def make_fcm(servers, service_account_info, sleeps):
    made = []

    def make(cls=FCMProvider, **overrides):
        options = {"service_account_info": json.dumps(service_account_info), "project_id": FCM_PROJECT,
                   "base_url": servers.url("fcm"), "token_uri": servers.fcm_token_uri, "verify": servers.tls.ca,
                   "retry": FAST_RETRY, "sleep": sleeps, "timeout": 5.0, **overrides}
        provider = cls(**options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture
def make_message():
    def make(challenge_id="ch_0123456789abcdef0123456789abcdef", username="W1234567", ttl_seconds=120,
             locale="nl", expires_at=None):
        expires_at = expires_at or datetime.now(timezone.utc) + timedelta(seconds=ttl_seconds)
        return PushMessage(challenge_id=challenge_id, username=username, expires_at=expires_at,
                           ttl_seconds=ttl_seconds, locale=locale)
    return make
