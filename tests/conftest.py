"""Test harness: real RabbitMQ, real MongoDB-wire server, real processes.

eventlet is patched before anything else is imported (nameko's pytest plugin no longer
does it). The session gets its own RabbitMQ vhost and its own database prefix, so tests
never touch a running `make up` stack; both are removed at the end.
"""
import eventlet

eventlet.monkey_patch()

import base64  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402

import pymongo  # noqa: E402
import pytest  # noqa: E402

from harness.net import free_port  # noqa: E402,F401  (for the tests that start servers of their own)
from harness.stack import ROOT, BrokerAdmin, Stack, vhost_uri  # noqa: E402,F401

RUN_ID = secrets.token_hex(4)
BROKER_URI = os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/")
BROKER_API = os.environ.get("RABBIT_CTL_URI", "http://guest:guest@127.0.0.1:15672")
VHOST = f"mycepa-test-{RUN_ID}"

# Settings for every service started by the tests, in-process or as a process. Lockout
# is shortened so the tests can walk through delays and the hard lock in seconds.
TEST_ENV = {
    "MONGO_URL": os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/"),
    "MONGO_DB_PREFIX": f"test_{RUN_ID}_",
    "OTP_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="),
    "MYCEPA_ADMIN_TOKEN": secrets.token_urlsafe(32),
    "MYCEPA_ENV": "dev",
    "OTP_FREE_FAILURES": "3",
    "OTP_LOCK_BASE_SECONDS": "1",
    "OTP_LOCK_MAX_SECONDS": "4",
    "OTP_HARD_LOCK_FAILURES": "6",
    "RPC_TIMEOUT_SECONDS": "2",
    # Long enough for a device to poll and answer, short enough to watch one expire.
    "PUSH_REQUEST_TTL_SECONDS": "4",
    # Every test request comes from 127.0.0.1: per-source throttling would make the tests
    # depend on each other. It is tested on a gateway of its own (tests/e2e/test_abuse.py).
    "SOURCE_FAILURE_LIMIT": "0",
}
os.environ.update(TEST_ENV)


def pytest_configure(config):
    # nameko's fixtures (rabbit_config, container_factory) read these options.
    config.option.AMQP_URI = BROKER_URI
    config.option.RABBIT_CTL_URI = BROKER_API


@pytest.fixture(scope="session")
def broker_admin():
    return BrokerAdmin(BROKER_API, BROKER_URI)


@pytest.fixture(scope="session")
def broker_vhost(broker_admin):
    """A RabbitMQ vhost of this test session."""
    yield broker_admin.create_vhost(VHOST)
    broker_admin.delete_vhost(VHOST)


@pytest.fixture(scope="session")
def mongo_client():
    client = pymongo.MongoClient(TEST_ENV["MONGO_URL"], tz_aware=True, serverSelectionTimeoutMS=5000)
    yield client
    for name in client.list_database_names():
        if name.startswith(TEST_ENV["MONGO_DB_PREFIX"]):
            client.drop_database(name)
    client.close()


def service_db(client, service):
    return client[TEST_ENV["MONGO_DB_PREFIX"] + service]


def started_push(container):
    """Start an in-process push container and wait until its device registry has caught
    up with otp's events (services/push/dependencies.py `RegistryCatchUp`): until then a
    device is confirmed with otp, which most in-process tests do not run."""
    from harness.waiting import eventually
    from services.push.dependencies import RegistryCatchUp

    container.start()
    registry = next(dependency for dependency in container.dependencies if isinstance(dependency, RegistryCatchUp))
    assert eventually(lambda: registry.behind, False, timeout=15) is False, "the registry never caught up"
    return container


@pytest.fixture(scope="session")
def artifacts_dir():
    path = ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def stack(broker_vhost, mongo_client, artifacts_dir):
    log_dir = artifacts_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    running = Stack({**TEST_ENV, "AMQP_URI": broker_vhost}, log_dir)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def admin_headers():
    return {"Authorization": f"Bearer {TEST_ENV['MYCEPA_ADMIN_TOKEN']}"}


@pytest.fixture
def make_user(stack):
    """make_user(**overrides) -> an activated Device of a fresh werkboeknummer."""
    return stack.make_user
