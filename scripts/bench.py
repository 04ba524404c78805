#!/usr/bin/env python3
"""Login benchmark (a benchmark, not a test): one JSON report of what a login costs.

    make bench
    make bench BENCH_ARGS="--duration 5 --code-root /work/before"   # another commit's services
    make bench BENCH_ARGS="--before 54a68ad"   # that commit, then this checkout: ratios

It brings its own system, so nothing of a `make up` stack is touched or counted: a
private RabbitMQ and FerretDB (harness.infra, as `make chaos`), the local APNs server
(harness.providers) with a throwaway key, and the four services as processes
(harness.stack, as the tests start them), from this checkout or from --code-root: the
same harness and load then measure before and after on one machine in one sitting.

Scenarios, each --duration seconds after --warmup seconds that are not counted:

  successful_logins  POST /api/login with a valid code (200). A code is accepted once
                     per 30-second step, so users are activated beforehand through the
                     public API and each logs in once; the scenario ends early when the
                     --users run out (the report says so).
  failed_logins      wrong codes (401), half for existing users and half for unknown
                     usernames, each username below the lockout threshold and each source
                     address (any of 127.0.0.0/8) below the per-source limit.
  throttled_source   the same wrong codes from one address: after SOURCE_FAILURE_LIMIT
                     failures the gateway answers 429 without asking otp.
  push_round_trip    "Stuur PUSH" (202) -> push -> APNs (TLS + HTTP/2 to the local server)
                     -> the phone, woken by its push channel, fetches the challenge and
                     approves the browser's number -> the browser's long poll answers
                     approved with the session. --push-clients browser+phone pairs.

Per scenario: logins per second, latency, CPU-ms per login of every process from /proc
(harness.cpu; the system's sum is the services, RabbitMQ and FerretDB, without the load
generator and the APNs stand-in), and the storage commands per login (FerretDB's own
counters). The report goes to stdout and .data/bench.json, progress to stderr.

With --before REV, that commit of this repository is measured first, then this
checkout, in one sitting with the same harness and load; the report holds both and the
ratios, judged against issue 10's targets read as ratios (RATIO_TARGETS): figures
measured on a shared machine drift within the hour, and only a pair measured together
compares two versions of the code.

Exit status: 0 when the benchmark ran (whatever the figures), 1 when it could not.
"""
import argparse
import base64
import json
import math
import os
import platform
import queue
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clients.device import Device, GatewayError, answer_challenge, create_activation, pending_challenges  # noqa: E402
from harness import cpu  # noqa: E402
from harness.http import CONNECTION_ERRORS, KeepAlive  # noqa: E402
from harness.infra import Infra  # noqa: E402
from harness.load import make_users, poll_device  # noqa: E402
from harness.providers import APNS_TOPIC, ProviderServers, make_tls, pem_private, pem_public  # noqa: E402
from harness.stack import Stack  # noqa: E402

SCENARIOS = ("successful_logins", "failed_logins", "throttled_source", "push_round_trip")
# What the system is, for its CPU per login: the load generator and the APNs stand-in are not.
SYSTEM = ("otp", "push", "audit", "gateway", "rabbitmq", "ferretdb")
# Targets (issue 10 and before): CPU and storage per login, latency on a quiet machine.
TARGETS = {"code_login_system_cpu_ms": 5.0, "push_login_system_cpu_ms": 25.0, "push_login_storage_commands": 15,
           "push_round_trip_p99_ms": 100.0, "code_login_p99_ms": 50.0}
# The same targets read as ratios to the code before issue 10 (its figures were 8 -> 5 ms,
# 55 -> 25 ms, 35 -> 15 commands on a quiet machine, and the p99 a quarter of before's):
# what --before judges.
RATIO_TARGETS = {"code_login_system_cpu_ms": 8 / 5, "push_login_system_cpu_ms": 55 / 25,
                 "push_login_storage_commands": 35 / 15, "push_round_trip_p99_ms": 4.0}
FAILURES_PER_SOURCE = 40   # under SOURCE_FAILURE_LIMIT's default 50
# Push logins per user and run: PUSH_RATE_LIMIT's default (3 in 5 minutes), as people
# log in. A user far above it would make each poll of their phone walk many live requests.
PUSH_LOGINS_PER_USER = 3
APNS_KEY_ID, APNS_TEAM_ID = "BENCH12345", "BENCHTEAM1"
REPORT_PATH = ROOT / ".data" / "bench.json"
LOG_DIR = ROOT / ".data" / "logs" / "bench"


def say(text, end="\n"):
    sys.stderr.write(f"[bench] {text}{end}")
    sys.stderr.flush()


class Progress:
    """A single-line counter on stderr, redrawn in place."""

    def __init__(self, label, total=None):
        self.label, self.total, self.started = label, total, time.perf_counter()

    def show(self, done, extra=""):
        elapsed = time.perf_counter() - self.started
        of = f"/{self.total}" if self.total is not None else ""
        rate = done / elapsed if elapsed > 0 else 0.0
        say(f"{self.label}: {done}{of}  {elapsed:5.1f} s  {rate:7.1f}/s {extra}  ", end="\r")

    @staticmethod
    def end():
        sys.stderr.write("\n")


# -- the system under test --------------------------------------------------------------

class System:
    """Private RabbitMQ + FerretDB, the APNs server and the services; a context manager
    that leaves nothing behind (also after a failure or Ctrl-C)."""

    def __init__(self, workdir, log_dir, code_root, otp_instances):
        self.workdir, self.log_dir, self.code_root = Path(workdir), Path(log_dir), Path(code_root)
        self.otp_instances = otp_instances
        self.infra = self.servers = self.stack = None

    def __enter__(self):
        try:
            say("starting a private RabbitMQ and FerretDB...")
            self.infra = Infra(self.workdir / "infra", name=f"mycepa-bench-{secrets.token_hex(2)}").up()
            apns_key = _ec_key()
            key_file = self.workdir / "apns.p8"
            key_file.write_text(pem_private(apns_key))
            key_file.chmod(0o600)
            self.servers = ProviderServers(self.workdir, make_tls(self.workdir), fcm_accounts={},
                                           apns_keys={APNS_KEY_ID: {"team_id": APNS_TEAM_ID,
                                                                    "public_key_pem": pem_public(apns_key)}}).start()
            env = {"AMQP_URI": self.infra.amqp_uri, "MONGO_URL": self.infra.mongo_url, "MONGO_DB_PREFIX": "bench_",
                   "MYCEPA_ADMIN_TOKEN": secrets.token_urlsafe(32), "MYCEPA_ENV": "dev",
                   "OTP_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="),
                   "APNS_KEY_FILE": str(key_file), "APNS_KEY_ID": APNS_KEY_ID, "APNS_TEAM_ID": APNS_TEAM_ID,
                   "APNS_TOPIC": APNS_TOPIC, "APNS_URL": self.servers.url("apns"), "PUSH_CA_FILE": self.servers.tls.ca}
            say(f"starting the services of {self.code_root}...")
            self.stack = Stack(env, self.log_dir, otp_instances=self.otp_instances, root=self.code_root)
            self.stack.start()   # assigned first: a stack that fails to start is still stopped
            return self
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *_):
        for what, step in (("services", lambda: self.stack and self.stack.stop()),
                           ("APNs server", lambda: self.servers and self.servers.stop()),
                           ("RabbitMQ and FerretDB", lambda: self.infra and self.infra.down())):
            try:
                step()
            except Exception as error:  # noqa: BLE001 - the rest is still cleaned up
                say(f"could not stop the {what}: {error}")

    @property
    def url(self):
        return self.stack.base_url

    def observe(self):
        """CPU so far of every process group, and FerretDB's commands so far."""
        groups = {}
        for name, pid in {**self.stack.pids(), **self.infra.pids(), "apns_server": self.servers.process.pid}.items():
            groups.setdefault(name.split("-")[0], []).append(pid)
        return {"cpu": cpu.snapshot(groups), "storage": self.infra.storage_commands()}

    def wait_quiet(self, within=120.0, cores=0.15):
        """Until the system's processes together use less than `cores` for a second (the
        audit trail has written what came before, say): the next window then counts only
        its own logins, whatever the code under test reports about its backlog. The
        seconds it took, or None when it was still busy after `within`."""
        started, quiet_since, last = time.monotonic(), None, self.observe()["cpu"]
        while time.monotonic() - started < within:
            time.sleep(0.25)
            now = self.observe()["cpu"]
            busy = sum(cpu.usage(last, now, None, SYSTEM)["cores"].get(group, 0.0) for group in SYSTEM)
            last = now
            quiet_since = (quiet_since or time.monotonic()) if busy < cores else None
            if quiet_since and time.monotonic() - quiet_since >= 1.0:
                return round(time.monotonic() - started, 1)
        return None

    def spent(self, before, after, logins):
        """CPU and storage commands per login between two observations."""
        commands = {command: count - before["storage"].get(command, 0) for command, count in after["storage"].items()}
        commands = {command: count for command, count in commands.items() if count}
        return {"cpu": cpu.usage(before["cpu"], after["cpu"], logins, SYSTEM),
                "storage_commands_per_login": {
                    "total": round(sum(commands.values()) / logins, 2) if logins else None,
                    **{command: round(count / logins, 2) for command, count in sorted(commands.items()) if logins}}}


def _ec_key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())   # throwaway: only our APNs server knows it


# -- driving load: --clients threads, measured after the warmup ---------------------------

def drive(name, system, clients, duration, warmup, open_client, one):
    """`clients` threads, each running `one(state) -> sample or None` on its own
    `open_client(index)` state until the end (None: its input ran out). Counted: the
    samples that ended in the measured window, with what the system spent meanwhile."""
    samples = [[] for _ in range(clients)]
    stop, exhausted = threading.Event(), threading.Event()
    barrier = threading.Barrier(clients + 1)

    def client(index):
        state = open_client(index)
        try:
            barrier.wait()
            while not stop.is_set():
                sample = one(state)
                if sample is None:
                    exhausted.set()
                    break
                samples[index].append(sample)
        finally:
            state["close"]()

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    time.sleep(warmup)
    before, window_start, window_from = system.observe(), time.perf_counter(), time.time()
    progress = Progress(name)
    while (elapsed := time.perf_counter() - window_start) < duration and not exhausted.is_set():
        time.sleep(min(0.25, duration - elapsed))
        progress.show(sum(1 for own in samples for s in own if s["ended"] >= window_start),
                      f"logins ({elapsed:4.1f}/{duration:g} s)")
    window_end = time.perf_counter()
    after = system.observe()
    progress.end()
    stop.set()
    for thread in threads:
        thread.join()
    measured = [s for own in samples for s in own if window_start <= s["ended"] <= window_end]
    report = {"scenario": name, "clients": clients, "warmup_s": warmup,
              # Wall-clock bounds, to find the window in the services' logs.
              "window_unix": [round(window_from, 3), round(window_from + window_end - window_start, 3)],
              "measured_s": round(window_end - window_start, 2), "stopped_early": exhausted.is_set(),
              "logins": len(measured)}
    return measured, report, system.spent(before, after, len(measured))


def latency(values):
    values = sorted(values)
    if not values:
        return None

    def at(p):
        return round(1000 * values[max(1, math.ceil(p / 100 * len(values))) - 1], 1)
    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": round(1000 * values[-1], 1),
            "mean": round(1000 * sum(values) / len(values), 1)}


def outcome_report(measured, report, spent, expected):
    outcomes = Counter(str(s["outcome"]) for s in measured)
    good = [s for s in measured if s["outcome"] == expected]
    report.update(expected=expected, outcomes=dict(sorted(outcomes.items())),
                  unexpected=sum(n for outcome, n in outcomes.items() if outcome != str(expected)),
                  expected_per_s=round(len(good) / report["measured_s"], 1) if report["measured_s"] else None,
                  latency_ms=latency([s["ended"] - s["started"] for s in good]), **spent)
    return report


# -- code logins --------------------------------------------------------------------------

def activate_users(url, admin_token, count, workers, time_limit, prefix, make=poll_device):
    """`count` users through the public API (harness.load.make_users), with progress."""
    progress = Progress(f"activating {prefix} users", count)

    def show(made, failures):
        if len(made) % 10 == 0:
            progress.show(len(made), f"failed {sum(failures.values())}")
    made, failures = make_users(url, admin_token, count, f"{prefix}-", threads=workers, make=make,
                                within=time_limit, on_made=show)
    progress.show(len(made), f"failed {sum(failures.values())}")
    progress.end()
    return made, failures


def _client_for(url, timeout):
    def open_client(index):
        client = KeepAlive(url, timeout)
        return {"client": client, "rng": random.Random(), "close": client.close}
    return open_client


def _login(state, body):
    started = time.perf_counter()
    try:
        outcome = state["client"].request("POST", "/api/login", body).status
    except CONNECTION_ERRORS as error:
        outcome = f"connection:{type(error).__name__}"
    return {"started": started, "ended": time.perf_counter(), "outcome": outcome}


def successful_logins(pool):
    def one(state):
        try:
            device = pool.popleft()   # each user once: a code is accepted once per step
        except IndexError:
            return None
        return _login(state, {"username": device.username, "password": device.code()})
    return one


def loopback_sources():
    """Distinct random loopback addresses (random: a rerun within the window does not meet
    the last run's failures)."""
    seen = set()
    while True:
        address = f"127.{random.randrange(10, 250)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        if address not in seen:
            seen.add(address)
            yield address


def failed_logins(known_devices, attempts_per_username, sources, per_source=FAILURES_PER_SOURCE):
    """Wrong codes, alternating between existing users and unknown usernames, from a new
    source address every `per_source` failures (None: always the first one)."""
    known, lock = deque(known_devices), threading.Lock()

    def wrong_code(rng, device=None):
        valid = {device.code(at=time.time(), step_offset=offset) for offset in (-1, 0, 1)} if device else set()
        while (code := f"{rng.randrange(10 ** 10):010d}") in valid:
            pass
        return code

    def one(state):
        rng = state["rng"]
        state["turn"] = turn = state.get("turn", 0) + 1
        if turn == 1 or (per_source and turn % per_source == 1):
            with lock:
                state["client"].move_to(next(sources))
        if turn % 2 == 0:
            if not state.get("known_left"):
                with lock:
                    state["known"] = known.popleft() if known else None
                state["known_left"] = attempts_per_username
            if state["known"] is not None:
                state["known_left"] -= 1
                return _login(state, {"username": state["known"].username,
                                      "password": wrong_code(rng, state["known"])})
        if not state.get("unknown_left"):
            state["unknown"] = "X" + "".join(rng.choice("0123456789") for _ in range(12))
            state["unknown_left"] = attempts_per_username
        state["unknown_left"] -= 1
        return _login(state, {"username": state["unknown"], "password": wrong_code(rng)})
    return one


# -- push logins --------------------------------------------------------------------------

@dataclass
class PushUser:
    device: Device
    push_token: str
    jar: dict                  # the remembered browser's cookies
    logins: int = 0
    retired: bool = False      # after a failed login: a late notification must not confuse the next


def _push_user(url, admin_token, username):
    """An iPhone with a push token of its own, and a browser that logged in with a code
    and pressed "Bewaren" (then logged out, as a returning user would be)."""
    push_token = secrets.token_hex(32)
    device = Device.new(url)
    device.activate(create_activation(url, admin_token, username)["activation_code"], platform="ios",
                    push_token=push_token, device_name="bench iPhone")
    browser, jar = KeepAlive(url), {}
    try:
        for method, path, body, expected in (("POST", "/api/login", {"username": username, "password": device.code()},
                                              200), ("POST", "/api/remember", None, 204),
                                             ("POST", "/api/logout", None, 204)):
            answer = browser.request(method, path, body, jar)
            if answer.status != expected:
                raise GatewayError(answer.status, answer.body)
    finally:
        browser.close()
    return PushUser(device, push_token, jar)


@dataclass
class PhoneJob:
    """What the phone needs for one login: whose notification to wait for, the number."""
    user: PushUser
    number: str
    notified: float = None
    answered: float = None
    failure: str = None
    done: threading.Event = field(default_factory=threading.Event)


def phone(channel, jobs, timeout):
    """A phone that waits on its push channel (the APNs server's /__control/wait) and
    approves each login with the browser's number at once."""
    while (job := jobs.get()) is not None:
        try:
            record = channel.request("GET", "/__control/wait?" + urlencode({"token": job.user.push_token,
                                                                             "timeout": timeout}),
                                     timeout=timeout + 5).body
            job.notified = time.perf_counter()
            if record is None:
                job.failure = "phone: no notification"
                continue
            challenge_id = record["headers"].get("apns-collapse-id")
            challenge = next((c for c in pending_challenges(job.user.device) if c["challenge_id"] == challenge_id),
                             None)
            if challenge is None or job.number not in challenge["number_choices"]:
                job.failure = "phone: no such challenge or number"
            else:
                answer_challenge(job.user.device, challenge, "approve", job.number)
                job.answered = time.perf_counter()
        except GatewayError as error:
            job.failure = f"phone: {error.status}"
        except (*CONNECTION_ERRORS, ValueError, KeyError) as error:
            job.failure = f"phone: {type(error).__name__}"
        finally:
            job.done.set()


def push_round_trips(system, users, clients, wait, timeout):
    """open_client and one for drive(): a browser with its phone, rotating over its users
    (a user is in one login at a time)."""
    def open_client(index):
        jobs, channel = queue.Queue(), KeepAlive(system.servers.url("apns"), ca_file=system.servers.tls.ca)
        thread = threading.Thread(target=phone, args=(channel, jobs, timeout), daemon=True)
        thread.start()
        browser = KeepAlive(system.url, timeout + wait)

        def close():
            jobs.put(None)
            thread.join(timeout + 5)
            browser.close()
            channel.close()
        return {"browser": browser, "jobs": jobs, "users": users[index::clients], "turn": 0, "close": close}

    def one(state):
        live = [user for user in state["users"] if not user.retired and user.logins < PUSH_LOGINS_PER_USER]
        if not live:
            return None
        user = live[state["turn"] % len(live)]
        state["turn"] += 1
        user.logins += 1
        sample = push_login(state["browser"], user, state["jobs"], wait, timeout)
        user.retired = sample["outcome"] != "approved"
        return sample
    return open_client, one


def push_login(browser, user, phone_jobs, wait, timeout):
    """POST /api/login/push, the phone approves, the browser long-polls until approved."""
    sample = {"started": time.perf_counter(), "outcome": None}
    try:
        created = browser.request("POST", "/api/login/push", jar=user.jar)
        sample["accepted"] = time.perf_counter()
        if created.status != 202:
            sample.update(outcome=f"push request {created.status}", ended=time.perf_counter())
            return sample
        job = PhoneJob(user, created.body["number"])
        phone_jobs.put(job)
        path, deadline = f"/api/login/push/{created.body['request_id']}?wait={wait}", sample["started"] + timeout
        while sample["outcome"] is None:
            status = browser.request("GET", path, jar=user.jar)
            state = (status.body or {}).get("status")
            if status.status != 200:
                sample["outcome"] = f"status {status.status}"
            elif state == "approved":
                # The session comes with the first approved answer: a login without it failed.
                sample["outcome"] = "approved" if user.jar.pop("mycepa_session", None) else "approved without session"
            elif state != "pending":
                sample["outcome"] = state
            elif job.failure or time.perf_counter() > deadline:
                sample["outcome"] = job.failure or "timeout"
        sample["ended"] = time.perf_counter()
        job.done.wait(timeout)   # the phone is free for this browser's next login
        sample.update(notified=job.notified, answered=job.answered)
    except CONNECTION_ERRORS as error:
        sample.update(outcome=f"connection:{type(error).__name__}", ended=time.perf_counter())
    return sample


STAGES = {"push_request": ("started", "accepted"), "request_to_notification": ("started", "notified"),
          "notification_to_answered": ("notified", "answered"), "answered_to_browser_approved": ("answered", "ended")}


# -- the run --------------------------------------------------------------------------------

def machine_facts():
    facts = {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
             "loadavg": [round(v, 2) for v in os.getloadavg()]}
    with open("/proc/cpuinfo") as handle:
        facts["cpu_model"] = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                                  None)
    return facts


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds run first and not counted")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients of the code-login scenarios")
    parser.add_argument("--users", type=int, default=2500,
                        help="users of successful_logins, each logs in once (needs about rate x duration)")
    parser.add_argument("--push-clients", type=int, default=20, help="concurrent push logins (browser + phone)")
    parser.add_argument("--push-users-per-client", type=int, default=12,
                        help=f"users each push client rotates over, each logging in at most {PUSH_LOGINS_PER_USER} "
                             "times (the scenario ends early when they are used up)")
    parser.add_argument("--wait", type=int, default=10, help="seconds the browser's status request waits (long poll)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one request or push login may take")
    parser.add_argument("--attempts-per-username", type=int, default=3,
                        help="wrong codes per username in failed_logins (at most OTP_FREE_FAILURES: no lockout)")
    parser.add_argument("--activation-workers", type=int, default=16, help="concurrency while activating users")
    parser.add_argument("--activation-timeout", type=float, default=240.0,
                        help="stop activating after this many seconds and run with the users made so far")
    parser.add_argument("--otp-instances", type=int, default=2, help="otp processes, as `make up` runs them")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated scenarios to run")
    parser.add_argument("--code-root", default=str(ROOT),
                        help="the checkout whose services run (another commit's: before/after with one harness)")
    parser.add_argument("--before", metavar="REV",
                        help="measure this commit of the repository first, then --code-root, and compare")
    parser.add_argument("--output", default=str(REPORT_PATH), help="where the JSON report is written too")
    parser.add_argument("--log-dir", default=str(LOG_DIR), help="logs of the benchmark's services")
    args = parser.parse_args(argv)
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios {sorted(set(args.scenarios) - set(SCENARIOS))}; choose from {SCENARIOS}")
    if min(args.clients, args.push_clients, args.push_users_per_client, args.activation_workers) < 1 \
            or args.duration <= 0 or args.warmup < 0 or args.users < 0:
        parser.error("counts must be >= 1, --duration > 0, --warmup and --users >= 0")
    return args


def run(system, args, report):
    url, admin_token = system.url, system.stack.admin_token
    code_wanted = {"successful_logins", "failed_logins", "throttled_source"} & set(args.scenarios)
    devices = []
    if code_wanted and args.users:
        devices, failed = activate_users(url, admin_token, args.users, args.activation_workers,
                                         args.activation_timeout, "bench")
        report["activation"] = {"users": len(devices), "failed": failed}
    push_users = []
    if "push_round_trip" in args.scenarios:
        push_users, failed = activate_users(url, admin_token, args.push_clients * args.push_users_per_client,
                                            args.activation_workers, args.activation_timeout, "bench-push",
                                            make=_push_user)
        report["activation_push"] = {"users": len(push_users), "failed": failed}

    def settle():
        # What came before (the audit trail writing the activations, say) would land in
        # the next window.
        report.setdefault("quiet_before_s", []).append(system.wait_quiet())

    scenarios = report["scenarios"]
    open_client = _client_for(url, args.timeout)
    if "successful_logins" in args.scenarios and devices:
        settle()
        say(f"successful_logins: {len(devices)} users, {args.clients} clients")
        scenarios.append(outcome_report(*drive("successful_logins", system, args.clients, args.duration, args.warmup,
                                               open_client, successful_logins(deque(devices))), 200))
    if "failed_logins" in args.scenarios:
        settle()
        scenarios.append(outcome_report(*drive(
            "failed_logins", system, args.clients, args.duration, args.warmup, open_client,
            failed_logins(devices[::2], args.attempts_per_username, loopback_sources())), 401))
    if "throttled_source" in args.scenarios:
        settle()
        flooder = next(loopback_sources())
        scenarios.append(outcome_report(*drive(
            "throttled_source", system, args.clients, args.duration, args.warmup, open_client,
            failed_logins(devices[1::2], args.attempts_per_username, iter(lambda: flooder, None),
                          per_source=None)), 429))
        scenarios[-1]["note"] = "the first SOURCE_FAILURE_LIMIT failures of the one source are 401 by design"
    if "push_round_trip" in args.scenarios and len(push_users) >= args.push_clients:
        settle()
        measured, scenario, spent = drive("push_round_trip", system, args.push_clients, args.duration, args.warmup,
                                          *push_round_trips(system, push_users, args.push_clients, args.wait,
                                                            args.timeout))
        scenario = outcome_report(measured, scenario, spent, "approved")
        approved = [s for s in measured if s["outcome"] == "approved" and s["notified"] and s["answered"]]
        scenario["stages_ms"] = {name: latency([s[end] - s[start] for s in approved])
                                 for name, (start, end) in STAGES.items()}
        scenarios.append(scenario)


def verdicts(report):
    """The targets, each with what was measured."""
    by_name = {s["scenario"]: s for s in report["scenarios"]}

    def figure(scenario, *path):
        value = by_name.get(scenario)
        for key in path:
            value = (value or {}).get(key)
        return value
    measured = {
        "code_login_system_cpu_ms": figure("successful_logins", "cpu", "system_ms_per_login"),
        "push_login_system_cpu_ms": figure("push_round_trip", "cpu", "system_ms_per_login"),
        "push_login_storage_commands": figure("push_round_trip", "storage_commands_per_login", "total"),
        "push_round_trip_p99_ms": figure("push_round_trip", "latency_ms", "p99"),
        "code_login_p99_ms": figure("successful_logins", "latency_ms", "p99"),
    }
    return {name: {"at_most": TARGETS[name], "measured": value, "met": value is not None and value <= TARGETS[name]}
            for name, value in measured.items()}


# Settings a shell (`source <(scripts/stack.sh env)`) or the tests may have exported: the
# benchmark's system runs on the defaults, as production does, plus the few set above.
INHERITED_SETTINGS = ("MYCEPA_", "OTP_", "PUSH_", "SOURCE_", "RPC_", "GATEWAY_", "AUDIT_", "SESSION_", "REMEMBER_",
                      "LONG_POLL_", "APNS_", "FCM_", "AMQP_URI", "MONGO_", "MAX_BODY_BYTES", "TRUSTED_PROXIES",
                      "MAX_WORKERS")


def measure(args, code_root):
    """(report, exit status) of every scenario on the services of `code_root`."""
    report = {"code_root": str(code_root), "scenarios": []}
    status = 0
    with tempfile.TemporaryDirectory(prefix="mycepa-bench-") as workdir:
        try:
            with System(workdir, args.log_dir, code_root, args.otp_instances) as system:
                run(system, args, report)
        except (RuntimeError, OSError, GatewayError, *CONNECTION_ERRORS) as error:
            report["error"] = f"{type(error).__name__}: {error}"
            say(f"failed: {report['error']} (logs in {args.log_dir})")
            status = 1
    report["targets"] = verdicts(report)
    others = [s["cpu"]["other_work_cores"] for s in report["scenarios"]]
    if others and max(others) > 0.3:
        report["note"] = (f"the machine did other work meanwhile (up to {max(others)} cores): latency and rates are "
                          "depressed; CPU per login is not")
    return report, status


def measure_before(args, rev):
    """measure() of commit `rev` of this repository, from a copy of its tree."""
    with tempfile.TemporaryDirectory(prefix="mycepa-bench-before-") as checkout:
        say(f"checking out {rev} (the code before)...")
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], capture_output=True)
        if archive.returncode != 0:
            raise SystemExit(f"[bench] --before {rev}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", checkout], input=archive.stdout, check=True)
        report, status = measure(args, checkout)
        report["code_root"] = f"{rev} (git archive)"
        return report, status


def ratio_verdicts(before, after):
    """RATIO_TARGETS judged on two reports: how many times smaller after's figure is."""
    measured_before, measured_after = verdicts(before), verdicts(after)
    judged = {}
    for name, wanted in RATIO_TARGETS.items():
        old, new = measured_before[name]["measured"], measured_after[name]["measured"]
        ratio = round(old / new, 2) if old and new else None
        judged[name] = {"before": old, "after": new, "divided_by": ratio, "at_least": round(wanted, 2),
                        "met": ratio is not None and ratio >= wanted}
    return judged


def show_ratios(judged):
    say(f"{'':30} {'before':>9} {'after':>9} {'ratio':>7} {'asked':>7}")
    for name, figure in judged.items():
        ratio = f"÷{figure['divided_by']}" if figure["divided_by"] else "-"
        say(f"{name:30} {figure['before'] or '-':>9} {figure['after'] or '-':>9} {ratio:>7} "
            f"{'÷' + str(figure['at_least']):>7}  {'met' if figure['met'] else 'NOT MET'}")


def main(argv=None):
    args = parse_args(argv)
    for name in [name for name in os.environ if name.startswith(INHERITED_SETTINGS)]:
        del os.environ[name]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # `kill` cleans up as Ctrl-C does
    header = {"benchmark": "mycepa login: code and push, CPU and storage per login",
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_facts(),
              "settings": {key: value for key, value in vars(args).items() if key not in ("output", "log_dir")}}
    if args.before:
        before, before_status = measure_before(args, args.before)
        after, after_status = measure(args, args.code_root)
        report, status = {**header, "before": before, "after": after}, before_status or after_status
        report["ratios"] = ratio_verdicts(before, after)
    else:
        measured, status = measure(args, args.code_root)
        report = {**header, **measured}
    text = json.dumps(report, indent=2)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n")
    if args.before:
        show_ratios(report["ratios"])
    say(f"report written to {args.output}")
    return status


if __name__ == "__main__":
    sys.exit(main())
