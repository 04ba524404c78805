"""The services as real processes (`python -m shared.run`, as `make up` runs them), and
RabbitMQ vhosts made through the management API, for the tests and the tools."""
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import requests

from harness.net import free_port

ROOT = Path(__file__).resolve().parent.parent


def running(pid):
    """The process exists and is not a zombie (killed, not yet reaped by its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def vhost_uri(broker_uri, vhost):
    parts = urllib.parse.urlsplit(broker_uri)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, safe="")))


class BrokerAdmin:
    """Vhosts made and removed through RabbitMQ's management API."""

    def __init__(self, api_uri, broker_uri):
        api = urllib.parse.urlsplit(api_uri.rstrip("/"))
        self.broker_uri = broker_uri
        self.session = requests.Session()
        self.session.auth = (api.username or "guest", api.password or "guest")
        self.base = urllib.parse.urlunsplit(api._replace(netloc=api.hostname + (f":{api.port}" if api.port else "")))

    def create_vhost(self, vhost):
        name = urllib.parse.quote(vhost, safe="")
        self.session.put(f"{self.base}/api/vhosts/{name}", timeout=10).raise_for_status()
        self.session.put(f"{self.base}/api/permissions/{name}/{self.session.auth[0]}", timeout=10,
                         json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        return vhost_uri(self.broker_uri, vhost)

    def delete_vhost(self, vhost):
        self.session.delete(f"{self.base}/api/vhosts/{urllib.parse.quote(vhost, safe='')}", timeout=10)


class Stack:
    """otp (N instances), push, audit and gateway as processes on their own port and settings.

    `env` holds the services' settings (database prefix, broker URI, secrets, ...). A
    process is named `service-index` (otp-1, otp-2, push-1, audit-1, gateway-1) and logs to
    `log_dir/name.log`. `root` is the checkout whose services run (another commit's, to
    measure before and after with one harness: `scripts/bench.py --code-root`).
    """

    def __init__(self, env, log_dir, otp_instances=2, push_instances=1, root=ROOT):
        self.root = Path(root)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_token = env["MYCEPA_ADMIN_TOKEN"]
        self.env = {**os.environ, **env, "GATEWAY_BIND": f"127.0.0.1:{self.port}",
                    "MYCEPA_PUBLIC_URL": f"http://127.0.0.1:{self.port}", "PYTHONUNBUFFERED": "1"}
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes = {}
        self.names = ([f"otp-{i}" for i in range(1, otp_instances + 1)]
                      + [f"push-{i}" for i in range(1, push_instances + 1)] + ["audit-1", "gateway-1"])

    def start(self):
        for name in self.names:
            self.start_process(name)
        self.wait_ready()
        return self

    def start_process(self, name, env=None):
        service = name.split("-")[0]
        env = env or self.env
        if service == "audit":   # as scripts/stack.sh starts it
            env = {**env, "MAX_WORKERS": env.get("AUDIT_MAX_WORKERS", "64")}
        log = open(self.log_dir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "shared.run", "--config", "config/nameko.yaml", f"services.{service}.service"],
            cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)

    def add_gateway(self, **settings):
        """One more gateway instance of this stack, on a port of its own and with
        `settings` over the stack's: (its name, its base URL) once it is ready."""
        name, port = f"gateway-{sum(n.startswith('gateway-') for n in self.names) + 1}", free_port()
        base_url = f"http://127.0.0.1:{port}"
        self.names.append(name)
        self.start_process(name, {**self.env, "GATEWAY_BIND": f"127.0.0.1:{port}", "MYCEPA_PUBLIC_URL": base_url,
                                  **settings})
        self.wait_ready(base_url=base_url)
        return name, base_url

    def stop_process(self, name):
        """Stop one process for good (it no longer counts as part of the running stack)."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()

    def ready(self, base_url=None):
        try:
            return requests.get((base_url or self.base_url) + "/readyz", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout=60, base_url=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited: see {self.log_dir / (name + '.log')}")
            if self.ready(base_url):
                return
            time.sleep(0.3)
        raise RuntimeError(f"stack not ready in {timeout}s; logs in {self.log_dir}")

    def pids(self):
        """{name: pid} of the processes running now."""
        return {name: process.pid for name, process in self.processes.items() if process.poll() is None}

    def exited(self):
        """{name: exit code} of the processes that are no longer running."""
        return {name: process.returncode for name, process in self.processes.items() if process.poll() is not None}

    def signal(self, prefix, signum):
        for name, process in self.processes.items():
            if name.startswith(prefix) and process.poll() is None:
                process.send_signal(signum)

    def pause(self, prefix):
        """Freeze the processes whose name starts with `prefix` (a hung service)."""
        self.signal(prefix, signal.SIGSTOP)

    def resume(self, prefix):
        self.signal(prefix, signal.SIGCONT)

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for name in list(self.processes):
            self.stop_process(name)

    def logs(self):
        return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace") for name in self.names)

    def make_user(self, username=None, platform="poll", push_token=None, device_name="Test phone"):
        """An activated Device of a fresh werkboeknummer."""
        from clients.device import Device, create_activation
        username = username or f"W{secrets.randbelow(10**9):09d}"
        activation = create_activation(self.base_url, self.admin_token, username)
        device = Device.new(self.base_url)
        device.activate(activation["activation_code"], platform=platform, push_token=push_token,
                        device_name=device_name)
        return device
