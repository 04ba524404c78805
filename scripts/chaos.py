"""`make chaos`: the faults a production login meets, injected one after another into a
running stack under load, with a table of what users saw.

A stack of its own (2 otp, push, audit, gateway, started by scripts/stack.sh as operators start
it) on a RabbitMQ node and a FerretDB of its own (scripts/infra.sh on other ports), so
the `make up` stack is not touched. Under a load of code logins (distinct users, valid
codes) and push logins (a phone approving), it injects:

  rabbitmq      RabbitMQ stopped for 10 s, then started
  database      the database stopped for 6 s, then started
  otp kill -9   one of two otp instances killed, restarted by `stack.sh up`
  push kill -9  push killed the moment a LoginRequested is on its way, restarted
  gateway TERM  SIGTERM to the gateway under load, `stack.sh up` at once
  long polls    200 browsers waiting on GET /api/login/push/{id}?wait=25

For each: requests, statuses, 5xx other than 503, lost logins (a code that was not
answered 200 and then refused: consumed without a session), double logins (a code
answered 200 twice), and seconds from the dependency's return to the next successful
login. Exits 1 when any is off target: 0 x 5xx, 0 lost, 0 double, recovery <= 5 s,
every push login approved, /healthz and a code login under 100 ms beside the long polls.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.infra import Infra  # noqa: E402
from harness.load import CodeLogins, another_tab, audit_caught_up, make_users, push_login, remember_browser  # noqa: E402
from harness.net import free_port  # noqa: E402
from harness.stack import running  # noqa: E402

RECOVERY_TARGET = 5.0
LATENCY_TARGET = 0.100


def say(text):
    print(f"[chaos] {text}", flush=True)


class ChaosStack:
    """The services of this run, driven through scripts/stack.sh like an operator does."""

    def __init__(self, data_dir, infra, otp_instances=2):
        self.data = data_dir / "stack"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MYCEPA_", "OTP_", "PUSH_"))},
                    "MYCEPA_DATA": str(self.data), "AMQP_URI": infra.amqp_uri, "MONGO_URL": infra.mongo_url,
                    "GATEWAY_BIND": f"127.0.0.1:{self.port}", "MYCEPA_PUBLIC_URL": self.base_url,
                    "MONGO_DB_PREFIX": "chaos_", "OTP_INSTANCES": str(otp_instances),
                    # Each push user asks many times a minute here; people do not.
                    "PUSH_RATE_LIMIT": "100", "PUSH_RATE_WINDOW_SECONDS": "60"}

    def script(self, *args):
        done = subprocess.run([str(ROOT / "scripts" / "stack.sh"), *args], env=self.env, capture_output=True,
                              text=True, timeout=180)
        if done.returncode:
            raise RuntimeError(f"scripts/stack.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def up(self):
        self.script("up")
        settings = dict(line.split("=", 1) for line in (self.data / "mycepa.env").read_text().splitlines() if line)
        self.admin_token = settings["MYCEPA_ADMIN_TOKEN"]
        return self

    def pid(self, name):
        path = self.data / "run" / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def signal(self, name, signum):
        os.kill(self.pid(name), signum)

    def alive(self):
        """{name: pid} of the instances whose pid file names a running process."""
        alive = {}
        for path in (self.data / "run").glob("*-[0-9].pid"):
            try:
                pid = int(path.read_text())
            except (OSError, ValueError):
                continue
            if running(pid):
                alive[path.stem] = pid
        return alive

    def ready(self):
        try:
            return requests.get(self.base_url + "/readyz", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def down(self):
        self.script("stop-services")


class PushLoad:
    """Push logins one after another per user, each to its end (approved, or why not).
    The browsers save their usernames once; each fault starts and stops the load."""

    def __init__(self, base_url, users):
        self.base_url = base_url
        self.pairs = [(device, remember_browser(base_url, device)) for device in users]

    def start(self):
        self.attempts = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=pair, daemon=True) for pair in self.pairs]
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, device, browser):
        # A second apart at least: a person does not ask more often, and the push rate
        # limit (here 100 a minute per user) stays out of the way.
        while not self.stopping.is_set():
            started = time.monotonic()
            self.attempts.append(push_login(self.base_url, device, browser))
            self.stopping.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def summary(self):
        outcomes = [attempt.outcome for attempt in self.attempts]
        return {"push": len(outcomes), "push_failed": [o for o in outcomes if o != "approved"]}


def run_fault(name, stack, code_users, push_load, inject, clients, rate, settle_seconds=3.0):
    """Load, inject, load on, then settle every code; one row of the table."""
    say(f"{name}: load on, injecting...")
    code_load = CodeLogins(stack.base_url, code_users, clients=clients, rate=rate).start()
    push_load.start()
    time.sleep(2.0)
    extra = {}
    returned = inject(stack, extra)
    time.sleep(settle_seconds)
    code_load.stop()
    push_load.stop()
    code_load.settle()
    row = {"fault": name, **code_load.summary(), **push_load.summary(), **extra}
    row["lost_history"] = {a.username: [(round(t - code_load.started, 2), o) for t, o in a.outcomes]
                           for a in code_load.attempts if not a.answered_ok}
    first_ok = code_load.first_ok_after(returned) if returned is not None else None
    row["recovery"] = row.pop("recovery", None) if returned is None else (
        round(first_ok - returned, 2) if first_ok else float("inf"))
    row["exited"] = sorted(set(EXPECTED) - set(stack.alive()))
    return row


EXPECTED = ("otp-1", "otp-2", "push-1", "audit-1", "gateway-1")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=40, help="code logins a second, at most")
    parser.add_argument("--clients", type=int, default=8, help="code-login clients")
    parser.add_argument("--push-users", type=int, default=3)
    parser.add_argument("--only", help="comma-separated faults to run, by the first word of their name "
                                       "(rabbitmq, database, otp-2, push, gateway, 200)")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()

    data = ROOT / ".data" / "chaos"
    shutil.rmtree(data, ignore_errors=True)
    say("starting a RabbitMQ node and a FerretDB of this run's own...")
    infra = Infra(data / "infra", name="mycepa-chaos").up()
    stack = None
    try:
        say("starting otp x2, push, audit, gateway with scripts/stack.sh...")
        stack = ChaosStack(data, infra).up()
        # A user logs in once per 30-second step: 30 users per login a second, and more.
        code_count = int(args.rate * 32)
        say(f"activating {code_count + args.push_users + 24} users...")
        users, failed = make_users(stack.base_url, stack.admin_token, code_count + args.push_users + 24, prefix="C")
        if failed:
            raise RuntimeError(f"activating the users failed: {failed}")
        code_users, push_users, probe_users = (users[:code_count], users[code_count:code_count + args.push_users],
                                               users[code_count + args.push_users:])
        # The activations are set-up, a burst no port sees: the faults start once the
        # audit trail has written them, so the figures are those of a system at work.
        waited = audit_caught_up(stack.base_url)
        say(f"the audit trail caught up with the activations in {waited} s" if waited is not None
            else "the audit trail is still busy with the activations: the figures are depressed")
        push_load = PushLoad(stack.base_url, push_users)
        chosen = args.only.split(",") if args.only else None
        rows = [run_fault(name, stack, code_users, push_load, inject, args.clients, args.rate)
                for name, inject in faults(infra, probe_users) if chosen is None or name.split()[0] in chosen]
    finally:
        if stack:
            stack.down()
        infra.down()
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    failures = verdicts(rows)
    for failure in failures:
        say(f"OFF TARGET: {failure}")
    sys.exit(1 if failures else 0)


def faults(infra, probe_users):
    def broker(stack, extra):
        infra.stop("rabbitmq")
        time.sleep(10)
        infra.start("rabbitmq")
        return time.monotonic()

    def database(stack, extra):
        infra.stop("mongo")
        time.sleep(6)
        infra.start("mongo")
        return time.monotonic()

    def kill_otp(stack, extra):
        stack.signal("otp-2", signal.SIGKILL)
        time.sleep(3)
        stack.script("up")
        return None

    def kill_push(stack, extra):
        # Three push logins, push killed the moment each one's LoginRequested is sent.
        kills = []

        def kill_now(attempt):
            os.kill(stack.pid("push-1"), signal.SIGKILL)
            kills.append(attempt.request_id)
            stack.script("up")

        device = probe_users[0]
        browser = remember_browser(stack.base_url, device)
        outcomes = [push_login(stack.base_url, device, browser, on_requested=kill_now).outcome for _ in range(3)]
        extra["push_killed"] = outcomes
        return None

    def sigterm_gateway(stack, extra):
        old = stack.pid("gateway-1")
        stopping = time.monotonic()
        os.kill(old, signal.SIGTERM)
        stack.script("up")   # must start the successor, not wait on the one that is exiting
        # Recovery here: from SIGTERM until the successor answers /readyz (new connections
        # are refused in between; the requests in flight are finished by the old one).
        extra["recovery"] = round(time.monotonic() - stopping, 2)
        while running(old):
            time.sleep(0.05)
        extra["old_gateway_stopped_s"] = round(time.monotonic() - stopping, 2)
        return None

    def probe(stack, devices):
        """Worst /healthz and code-login answer times (ms) over `devices`' logins."""
        health, login = [], []
        for device in devices:
            started = time.monotonic()
            requests.get(f"{stack.base_url}/healthz", timeout=5)
            health.append(time.monotonic() - started)
            started = time.monotonic()
            answer = requests.post(f"{stack.base_url}/api/login", timeout=5,
                                   json={"username": device.username, "password": device.code()})
            login.append(time.monotonic() - started if answer.status_code == 200 else float("inf"))
            time.sleep(0.2)
        return round(max(health) * 1000, 1), round(max(login) * 1000, 1)

    def long_polls(stack, extra):
        extra["before_healthz_ms"], extra["before_login_ms"] = probe(stack, probe_users[4:14])
        browsers = [remember_browser(stack.base_url, device) for device in probe_users[1:4]]
        waiting = []
        for index in range(200):
            browser = another_tab(browsers[index % len(browsers)])
            answer = browser.post(f"{stack.base_url}/api/login/push", timeout=10)
            if answer.status_code == 202:
                waiting.append((browser, answer.json()["request_id"]))
        threads = [threading.Thread(target=lambda b=b, r=r: b.get(f"{stack.base_url}/api/login/push/{r}?wait=25",
                                                                   timeout=40), daemon=True) for b, r in waiting]
        for thread in threads:
            thread.start()
        time.sleep(2)
        extra["waiting"] = len(waiting)
        extra["healthz_max_ms"], extra["login_max_ms"] = probe(stack, probe_users[14:24])
        for thread in threads:
            thread.join()
        return None

    return [("rabbitmq stop 10 s", broker), ("database stop 6 s", database), ("otp-2 kill -9", kill_otp),
            ("push kill -9", kill_push), ("gateway SIGTERM", sigterm_gateway), ("200 long polls", long_polls)]


def verdicts(rows):
    failures = []
    for row in rows:
        name = row["fault"]
        for key in ("5xx", "lost", "double"):
            if row[key]:
                failures.append(f"{name}: {key} = {row[key]} {row.get('lost_codes') if key == 'lost' else ''}")
        if row["recovery"] is not None and row["recovery"] > RECOVERY_TARGET:
            failures.append(f"{name}: recovered after {row['recovery']} s")
        if row["push_failed"]:
            failures.append(f"{name}: push logins not approved: {dict(Counter(row['push_failed']))}")
        if row["exited"]:
            failures.append(f"{name}: not running afterwards: {row['exited']}")
        if [o for o in row.get("push_killed", []) if o != "approved"]:
            failures.append(f"{name}: push logins across a kill: {row['push_killed']}")
        for key in ("healthz_max_ms", "login_max_ms"):
            if key in row and row[key] > LATENCY_TARGET * 1000:
                failures.append(f"{name}: {key} = {row[key]}")
    return failures


def print_table(rows):
    header = ["fault", "requests", "200", "401/423", "503", "no answer", "5xx", "lost", "double", "push ok",
              "recovery s", "notes"]
    lines = []
    for row in rows:
        statuses = row["statuses"]
        notes = []
        for key in ("push_killed", "old_gateway_stopped_s", "waiting", "before_healthz_ms", "before_login_ms",
                    "healthz_max_ms", "login_max_ms"):
            if key in row:
                notes.append(f"{key}={row[key]}")
        lines.append([row["fault"], row["requests"], statuses.get(200, 0), statuses.get(401, 0) + statuses.get(423, 0),
                      statuses.get(503, 0), statuses.get("connection", 0) + statuses.get("timeout", 0), row["5xx"],
                      row["lost"], row["double"], f"{row['push'] - len(row['push_failed'])}/{row['push']}",
                      "-" if row["recovery"] is None else row["recovery"], " ".join(notes)])
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    print()
    print(" | ".join(str(cell).ljust(width) for cell, width in zip(header, widths)))
    print("-|-".join("-" * width for width in widths))
    for line in lines:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(line, widths)))
    print()


if __name__ == "__main__":
    main()
