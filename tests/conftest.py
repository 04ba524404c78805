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
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from pathlib import Path  # noqa: E402

import pymongo  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
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
}
os.environ.update(TEST_ENV)


def pytest_configure(config):
    # nameko's fixtures (rabbit_config, container_factory) read these options.
    config.option.AMQP_URI = BROKER_URI
    config.option.RABBIT_CTL_URI = BROKER_API


def vhost_uri(vhost):
    parts = urllib.parse.urlsplit(BROKER_URI)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, safe="")))


class BrokerAdmin:
    """Vhosts made and removed through RabbitMQ's management API."""

    def __init__(self):
        api = urllib.parse.urlsplit(BROKER_API.rstrip("/"))
        self.session = requests.Session()
        self.session.auth = (api.username or "guest", api.password or "guest")
        self.base = urllib.parse.urlunsplit(api._replace(netloc=api.hostname + (f":{api.port}" if api.port else "")))

    def create_vhost(self, vhost):
        name = urllib.parse.quote(vhost, safe="")
        self.session.put(f"{self.base}/api/vhosts/{name}", timeout=10).raise_for_status()
        self.session.put(f"{self.base}/api/permissions/{name}/{self.session.auth[0]}", timeout=10,
                         json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        return vhost_uri(vhost)

    def delete_vhost(self, vhost):
        self.session.delete(f"{self.base}/api/vhosts/{urllib.parse.quote(vhost, safe='')}", timeout=10)


@pytest.fixture(scope="session")
def broker_admin():
    return BrokerAdmin()


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


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """The three services as `nameko run` processes, as `make up` runs them."""

    def __init__(self, amqp_uri, log_dir, otp_instances=2, **extra_env):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **TEST_ENV, "AMQP_URI": amqp_uri, "GATEWAY_BIND": f"127.0.0.1:{self.port}",
                    "MYCEPA_PUBLIC_URL": f"http://127.0.0.1:{self.port}", "PYTHONUNBUFFERED": "1", **extra_env}
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes = {}
        self.names = [f"otp-{i}" for i in range(1, otp_instances + 1)] + ["push-1", "gateway-1"]

    def start(self):
        for name in self.names:
            self.start_process(name)
        self.wait_ready()

    def start_process(self, name):
        service = name.split("-")[0]
        log = open(self.log_dir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "nameko", "run", "--config", "config/nameko.yaml", f"services.{service}.service"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited: see {self.log_dir / (name + '.log')}")
            try:
                if requests.get(self.base_url + "/readyz", timeout=3).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"stack not ready in {timeout}s; logs in {self.log_dir}")

    def pause(self, prefix):
        """Freeze the processes whose name starts with `prefix` (a hung service)."""
        for name, process in self.processes.items():
            if name.startswith(prefix):
                process.send_signal(signal.SIGSTOP)

    def resume(self, prefix):
        for name, process in self.processes.items():
            if name.startswith(prefix):
                process.send_signal(signal.SIGCONT)

    def stop(self):
        for process in self.processes.values():
            process.send_signal(signal.SIGCONT)
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    def logs(self):
        return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace") for name in self.names)

    def make_user(self, username=None, platform="poll", push_token=None, device_name="Test phone"):
        """An activated Device of a fresh werkboeknummer."""
        from clients.device import Device, create_activation
        username = username or f"W{secrets.randbelow(10**9):09d}"
        activation = create_activation(self.base_url, TEST_ENV["MYCEPA_ADMIN_TOKEN"], username)
        device = Device.new(self.base_url)
        device.activate(activation["activation_code"], platform=platform, push_token=push_token,
                        device_name=device_name)
        return device


@pytest.fixture(scope="session")
def artifacts_dir():
    path = ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def stack(broker_vhost, mongo_client, artifacts_dir):
    log_dir = artifacts_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    running = Stack(broker_vhost, log_dir)
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
