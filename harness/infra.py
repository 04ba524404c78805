"""A private RabbitMQ node and FerretDB server, on free ports, that a run may stop and
start at will (the fault tests, `make chaos`) without touching the `make up` servers.

Started and stopped through scripts/infra.sh, the same script operators use, with its
state under `data_dir`.
"""
import os
import re
import subprocess
import time
from pathlib import Path

import requests

from harness.net import free_port, listening

ROOT = Path(__file__).resolve().parent.parent


class Infra:
    def __init__(self, data_dir, name="mycepa-private"):
        self.data_dir = Path(data_dir)
        self.rabbit_port, self.mgmt_port, self.dist_port, self.mongo_port, self.mongo_debug_port = (
            free_port() for _ in range(5))
        environ = {key: value for key, value in os.environ.items() if key not in ("AMQP_URI", "MONGO_URL")}
        self.env = {**environ, "MYCEPA_DATA": str(self.data_dir), "RABBITMQ_NODENAME": f"{name}@localhost",
                    "RABBIT_PORT": str(self.rabbit_port), "RABBIT_MGMT_PORT": str(self.mgmt_port),
                    "RABBIT_DIST_PORT": str(self.dist_port), "MONGO_PORT": str(self.mongo_port),
                    "MONGO_DEBUG_PORT": str(self.mongo_debug_port)}
        self.amqp_uri = f"pyamqp://guest:guest@127.0.0.1:{self.rabbit_port}/"
        self.mongo_url = f"mongodb://127.0.0.1:{self.mongo_port}/"
        self.management_api = f"http://guest:guest@127.0.0.1:{self.mgmt_port}"

    def _script(self, *args, timeout=180):
        subprocess.run([str(ROOT / "scripts" / "infra.sh"), *args], env=self.env, check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up(self):
        self._script("up")
        return self

    def down(self):
        self._script("down")

    def stop(self, server):
        """Stop "rabbitmq" or "mongo"; returns once it no longer answers."""
        self._script("stop", server)
        port = self.rabbit_port if server == "rabbitmq" else self.mongo_port
        while listening(port):
            time.sleep(0.05)

    def start(self, server):
        """Start "rabbitmq" or "mongo"; returns once it answers."""
        self._script("start", server)

    def pids(self):
        """{"rabbitmq": pid, "ferretdb": pid} of the servers running now."""
        pids = {}
        for server in ("rabbitmq", "ferretdb"):
            try:
                pids[server] = int((self.data_dir / "run" / f"{server}.pid").read_text().strip())
            except (OSError, ValueError):
                pass
        return pids

    def storage_commands(self):
        """{command: count} of the data commands FerretDB has served so far (find, insert,
        update, delete, findAndModify, aggregate, ...; not the handshakes and pings)."""
        text = requests.get(f"http://127.0.0.1:{self.mongo_debug_port}/debug/metrics", timeout=5).text
        return {command: int(float(count)) for command, count in _FERRETDB_REQUESTS.findall(text)
                if command not in _NOT_STORAGE}


_FERRETDB_REQUESTS = re.compile(r'^ferretdb_client_requests_total\{command="([^"]+)",opcode="OP_MSG"\} (\S+)$', re.M)
_NOT_STORAGE = {"hello", "ismaster", "isMaster", "ping", "buildInfo", "buildinfo", "endSessions", "saslStart",
                "saslContinue", "getParameter", "listDatabases", "createIndexes", "dropDatabase", "unknown"}
