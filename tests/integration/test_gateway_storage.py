"""The gateway's storage rules that time decides, on the real MongoDB-wire server, with
the clock passed in: idle sessions, failures per source. (The sliding push limit is push's:
tests/integration/test_push_challenges.py.)"""
import secrets
from datetime import timedelta

import pytest

from shared.clock import utcnow
from shared.config import MongoSettings, load_settings
from shared.mongo import connect
from services.gateway.storage import GatewayStorage
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.integration

IDLE = 30 * 60   # SESSION_IDLE_SECONDS' default


@pytest.fixture(scope="module")
def gateway(mongo_client):
    client, storage = connect(GatewayStorage, load_settings(MongoSettings, environ=TEST_ENV))
    yield storage
    client.close()


def test_a_session_in_use_lives_on_and_an_idle_one_ends(gateway):
    start = utcnow()
    token = gateway.create_session("W1", "push", "dev_1", start, start + timedelta(hours=8))
    # Used every 20 minutes: never idle for 30, alive for hours.
    for minutes in range(20, 8 * 60, 20):
        session, ended = gateway.find_session(token, start + timedelta(minutes=minutes), IDLE)
        assert session is not None and ended is None, minutes
    # ...but not past its absolute expiry, however much it is used; the call that finds
    # it so says how it ended (for SessionEnded), once.
    session, ended = gateway.find_session(token, start + timedelta(hours=8, seconds=1), IDLE)
    assert session is None and ended["reason"] == "expired" and ended["session"]["device_id"] == "dev_1"
    assert gateway.find_session(token, start + timedelta(hours=8, seconds=2), IDLE) == (None, None)

    idle = gateway.create_session("W1", "code", "dev_1", start, start + timedelta(hours=8))
    assert gateway.find_session(idle, start + timedelta(minutes=29), IDLE)[0] is not None
    session, ended = gateway.find_session(idle, start + timedelta(minutes=29 + 31), IDLE)
    assert session is None and ended["reason"] == "idle" and ended["session"]["method"] == "code"


def test_failures_per_source_count_within_the_window_only(gateway):
    source, window = f"203.0.113.{secrets.randbelow(250)}-{secrets.token_hex(2)}", 300
    start = utcnow().replace(second=0, microsecond=0)
    for n in range(10):
        gateway.count_source_failure(source, start + timedelta(seconds=30 * n), window)   # 0 .. 270 s
    failures, retry_after = gateway.source_failures(source, start + timedelta(seconds=275), window)
    assert failures == 10 and 1 <= retry_after <= window
    # Past the window of the first minute, its failures no longer count.
    later, _ = gateway.source_failures(source, start + timedelta(seconds=window + 1), window)
    assert later == 8
    assert gateway.source_failures("198.51.100.99", start, window) == (0, 0)
