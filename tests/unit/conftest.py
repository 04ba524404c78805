"""Helpers for the unit layer: no RabbitMQ, no database, every dependency a mock.

The root conftest (tests/conftest.py) has already patched eventlet and put the test
settings (OTP_FREE_FAILURES=3, OTP_LOCK_BASE_SECONDS=1, OTP_LOCK_MAX_SECONDS=4,
OTP_HARD_LOCK_FAILURES=6, ...) into os.environ; the otp settings here are loaded from it
through an explicit mapping, so nothing is cached between tests.
"""
import os
from types import SimpleNamespace
from unittest.mock import Mock

import pytest
from nameko.testing.services import worker_factory

from shared.config import load_settings
from services.otp.config import OtpSettings
from services.otp.secrets import SecretBox
from services.otp.service import OtpService


def otp_settings(**overrides):
    """OtpSettings from the test environment, with `overrides` as environment values."""
    environ = {**os.environ, **{key: str(value) for key, value in overrides.items()}}
    return load_settings(OtpSettings, environ=environ)


def otp_config(**overrides):
    """What the OtpConfig dependency hands a worker: `.settings` and `.box`, both real."""
    settings = otp_settings(**overrides)
    return SimpleNamespace(settings=settings, box=SecretBox(settings["encryption_keys"]))


def otp_storage():
    """A storage mock that behaves like a clean database: no lock, no authenticator."""
    storage = Mock(name="storage")
    storage.lockout.return_value = {"failures": 0, "locked_until": None, "hard_locked": False}
    storage.active_authenticators.return_value = []
    storage.advance_last_step.return_value = True
    storage.count_failure.return_value = 1
    storage.claim_activation_code.return_value = True
    storage.unlock.return_value = None
    return storage


@pytest.fixture
def make_otp_worker():
    """make_otp_worker(**setting_overrides) -> an OtpService worker with mocked storage and
    dispatcher and a real config (settings and SecretBox)."""

    def make(**overrides):
        return worker_factory(OtpService, storage=otp_storage(), config=otp_config(**overrides),
                              dispatch=Mock(name="dispatch"))

    return make
