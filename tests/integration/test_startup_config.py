"""A service started with a missing or malformed setting stops with a message naming it."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def run_service(service, **overrides):
    env = {**os.environ, **overrides}
    env = {key: value for key, value in env.items() if value is not None}
    return subprocess.run(
        [sys.executable, "-m", "shared.run", "--config", "config/nameko.yaml", f"services.{service}.service"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("service, variable, value, expected", [
    ("otp", "OTP_ENCRYPTION_KEYS", None, "OTP_ENCRYPTION_KEYS"),
    ("otp", "OTP_ENCRYPTION_KEYS", "too-short", "OTP_ENCRYPTION_KEYS"),
    ("otp", "OTP_HARD_LOCK_FAILURES", "500", "OTP_HARD_LOCK_FAILURES"),
    ("gateway", "MYCEPA_ADMIN_TOKEN", None, "MYCEPA_ADMIN_TOKEN"),
    ("gateway", "RPC_TIMEOUT_SECONDS", "30", "RPC_TIMEOUT_SECONDS"),
    ("push", "MONGO_URL", "http://not-mongo", "MONGO_URL"),
])
def test_a_bad_setting_stops_the_service_with_a_clear_message(service, variable, value, expected, broker_vhost):
    overrides = {variable: value, "AMQP_URI": broker_vhost, "GATEWAY_BIND": "127.0.0.1:0"}
    if value is None:
        overrides[variable] = None
    finished = run_service(service, **overrides)
    assert finished.returncode != 0
    assert "invalid configuration" in finished.stderr and expected in finished.stderr
    # The message never echoes a secret value back.
    assert os.environ["MYCEPA_ADMIN_TOKEN"] not in finished.stderr
