#!/usr/bin/env python3
"""Login benchmark through the gateway (a benchmark, not a test).

    make bench BENCH_ARGS="--duration 5 --users 2500"

Two scenarios, each run for --duration seconds by --clients concurrent clients, every
client a thread with its own persistent keep-alive HTTP connection:

  successful_logins  POST /api/login with a valid code. An OTP code is accepted once per
                     30-second step per device, so users are provisioned beforehand through
                     the public API (admin activation code, then a device activates it), each
                     user is handed out once, and its code is computed right before sending.
                     Anything but 200 is an error. If the user pool runs out the scenario
                     stops early and the report says so.
  failed_logins      POST /api/login with a wrong code, half for usernames that exist and
                     half for random unknown ones. Each username is used at most
                     --attempts-per-username times (below the lockout threshold), and each
                     source address for fewer failures than the gateway's per-source limit
                     (every client connects from addresses of its own in 127.0.0.0/8), so
                     this measures the failed-verification path (401); anything else is
                     unexpected.
  throttled_source   the same wrong codes, all from one address: after SOURCE_FAILURE_LIMIT
                     failures (401) the gateway refuses that source (429) without asking otp;
                     this measures what a flooding source costs.
Successful logins are not failures: the throttle never touches successful_logins.

The JSON report goes to stdout and to .data/bench.json; progress goes to stderr. Besides
client-side latency it records, per scenario, the CPU each stack process used (from
/proc, via the pidfiles in .data/run/), the CPU used by everything else on the machine
(other people's test runs show up there) and the gateway's own handler time (/metrics).

Exit status: 0 when the benchmark ran (whatever the figures), 1 when the stack is unreachable.
"""
import argparse
import http.client
import itertools
import json
import math
import os
import platform
import random
import re
import secrets
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clients.device import Device, GatewayError, create_activation  # noqa: E402
from harness.load import audit_caught_up  # noqa: E402

# The product owner's target for this 2-core machine.
TARGET_RPS = 300.0
TARGET_P99_MS = 50.0

LOGIN_PATH = "/api/login"
SCENARIOS = ("successful_logins", "failed_logins", "throttled_source")
# Failures per source address in failed_logins: under SOURCE_FAILURE_LIMIT's default 50.
FAILURES_PER_SOURCE = 40
RUN_DIR = ROOT / ".data" / "run"
REPORT_PATH = ROOT / ".data" / "bench.json"


# -- HTTP: one persistent keep-alive connection per client thread -------------------------

class KeepAliveClient:
    """A persistent HTTP/1.1 connection; `post_json` returns (status, seconds, reconnected)."""

    def __init__(self, url, timeout, source=None):
        parts = urlsplit(url)
        self.source = source   # the local address to connect from (a loopback one)
        if parts.scheme not in ("http", ""):
            raise SystemExit(f"only http:// URLs are supported, not {url}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self.conn = None
        self.requests_on_conn = 0
        self.connects = 0

    def connect(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                                   source_address=(self.source, 0) if self.source else None)
            self.conn.connect()
            self.connects += 1
            self.requests_on_conn = 0

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def move_to(self, source):
        """Connect from `source` from the next request on (the gateway sees a new peer)."""
        if source != self.source:
            self.close()
            self.source = source

    def post_json(self, path, body):
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)),
                   "Connection": "keep-alive"}
        started = time.perf_counter()
        for attempt in (1, 2):
            reused = self.conn is not None and self.requests_on_conn > 0
            try:
                self.connect()
                self.conn.request("POST", path, payload, headers)
                response = self.conn.getresponse()
                response.read()
                self.requests_on_conn += 1
                if response.will_close:
                    self.close()
                return response.status, time.perf_counter() - started
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as error:
                self.close()
                # A kept-alive connection the server closed while idle: send once more.
                if attempt == 1 and reused:
                    continue
                return f"conn_error:{type(error).__name__}", time.perf_counter() - started
            except (OSError, http.client.HTTPException) as error:
                self.close()
                return f"conn_error:{type(error).__name__}", time.perf_counter() - started
        raise AssertionError("unreachable")


def get(url, path, timeout=5):
    """(status, body bytes) of one GET on a fresh connection; raises OSError when unreachable."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- observation: CPU per stack process, machine load, gateway handler time ----------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table():
    """{pid: (ppid, cpu_seconds)} of every process, from /proc (empty if unavailable)."""
    table = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is state (field 3); ppid is field 4, utime 14, stime 15
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def _stack_roots():
    """{group name: [root pid, ...]} from the stack's pidfiles (gateway-1.pid -> gateway)."""
    roots = {}
    for pidfile in sorted(Path(RUN_DIR).glob("*.pid")):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        group = re.sub(r"-\d+$", "", pidfile.stem)
        roots.setdefault(group, []).append(pid)
    return roots


def _machine_busy_seconds():
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def cpu_snapshot():
    table = _proc_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    groups = {}
    seen = set()
    for group, roots in _stack_roots().items():
        stack = [pid for pid in roots if pid in table]
        total = 0.0
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            total += table[pid][1]
            stack.extend(children.get(pid, ()))
        groups[group] = groups.get(group, 0.0) + total
    own = os.getpid()
    groups["bench_client"] = table[own][1] if own in table and own not in seen else 0.0
    return {"groups": groups, "machine": _machine_busy_seconds(), "at": time.perf_counter()}


def cpu_usage(before, after):
    """CPU used between two snapshots, in cores (1.0 = one core busy all the time)."""
    elapsed = after["at"] - before["at"]
    if elapsed <= 0 or not after["groups"]:
        return None
    by_process = {}
    for group, seconds in after["groups"].items():
        if group in before["groups"]:
            by_process[group] = round((seconds - before["groups"][group]) / elapsed, 3)
    usage = {"by_process_cores": by_process}
    if before["machine"] and after["machine"]:
        busy = after["machine"][0] - before["machine"][0]
        total = after["machine"][1] - before["machine"][1]
        usage["machine_busy_cores"] = round(busy / elapsed, 3)
        usage["machine_busy_pct"] = round(100 * busy / total, 1) if total > 0 else None
        # everything not in the stack nor this benchmark: other people's work, the OS
        usage["other_processes_cores"] = round(busy / elapsed - sum(by_process.values()), 3)
    return usage


_METRIC = re.compile(r'^mycepa_http_request_seconds_(sum|count)\{route="/api/login"\}\s+(\S+)$', re.M)


def gateway_login_metrics(url):
    """(sum seconds, count) of the gateway's own /api/login handler time, or None."""
    try:
        status, body = get(url, "/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    values = {kind: float(value) for kind, value in _METRIC.findall(body.decode(errors="replace"))}
    return (values.get("sum", 0.0), values.get("count", 0.0))


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# -- statistics --------------------------------------------------------------------------

def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 2)


# -- provisioning -----------------------------------------------------------------------

class Progress:
    """A single-line `\\r` counter on stderr, redrawn at most 10 times a second."""

    def __init__(self, label, total=None):
        self.label, self.total = label, total
        self.started = time.perf_counter()
        self.last = 0.0
        self.lock = threading.Lock()

    def show(self, done, extra="", force=False):
        now = time.perf_counter()
        with self.lock:
            if not force and now - self.last < 0.1:
                return
            self.last = now
        elapsed = now - self.started
        of = f"/{self.total}" if self.total is not None else ""
        rate = done / elapsed if elapsed > 0 else 0.0
        sys.stderr.write(f"\r[bench] {self.label}: {done}{of}  {elapsed:5.1f} s  {rate:7.1f}/s {extra}  ")
        sys.stderr.flush()

    def end(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


def provision_users(url, admin_token, count, workers, time_limit):
    """`count` activated devices, made through the public API concurrently; (devices, stats).

    Gives up after `time_limit` seconds and returns what it has: on a slow stack the
    scenarios then run with fewer users (and may stop early, which the report says).
    """
    run_id = secrets.token_hex(3)
    devices, failures = [], Counter()
    lock = threading.Lock()
    progress = Progress("provisioning users", count)

    given_up = threading.Event()

    def one(index):
        if given_up.is_set():
            return
        last_error = None
        for attempt in range(3):  # a 503 or a reset connection is retried; anything else is reported
            # A retry uses a fresh username: after a 503 the otp service may still have
            # activated the device, and a second device would make that user's logins dearer.
            username = f"bench-{run_id}-{index:05d}" + (f"-r{attempt}" if attempt else "")
            try:
                activation = create_activation(url, admin_token, username)
                device = Device.new(url)
                device.activate(activation["activation_code"], device_name="bench")
                with lock:
                    devices.append(device)
                return
            except GatewayError as error:
                last_error = f"http_{error.status}"
                if error.status == 401:
                    break  # a wrong admin token: retrying cannot help
                if error.status != 503:
                    break
            except OSError as error:
                last_error = type(error).__name__
            time.sleep(0.05)
        with lock:
            failures[last_error] += 1

    started = time.perf_counter()
    stopped = None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, index) for index in range(count)]
        while True:
            done = sum(future.done() for future in futures)
            elapsed = time.perf_counter() - started
            rate = len(devices) / elapsed if elapsed > 0 else 0
            eta = f"eta {(count - done) / rate:4.0f} s" if rate > 0 and done < count else ""
            progress.show(len(devices), f"failed {sum(failures.values())} {eta}", force=True)
            if done == count:
                break
            if failures.get("http_401", 0) and not devices and done >= min(count, workers):
                stopped = "the admin token was refused (401)"
            elif elapsed > time_limit:
                stopped = f"gave up after the --provision-timeout of {time_limit:g} s"
            if stopped:
                given_up.set()
                for future in futures:
                    future.cancel()
                break
            time.sleep(0.2)
    progress.end()
    elapsed = time.perf_counter() - started
    random.shuffle(devices)
    stats = {"requested": count, "provisioned": len(devices), "failed": dict(failures),
             "workers": workers, "seconds": round(elapsed, 2),
             "users_per_s": round(len(devices) / elapsed, 1) if elapsed > 0 else None}
    if stopped:
        stats["stopped"] = stopped
    return devices, stats


# -- scenarios --------------------------------------------------------------------------

def run_scenario(name, url, clients, duration, timeout, next_request, expected_status):
    """Run `next_request(worker_state) -> (path, body) or None` from `clients` threads.

    None from `next_request` means the input ran out: the scenario stops early.
    """
    results = [[] for _ in range(clients)]
    reconnects = [0] * clients
    finished_at = [0.0] * clients
    stop = threading.Event()
    exhausted = threading.Event()
    barrier = threading.Barrier(clients + 1)
    connect_errors = []
    counter = [0]  # approximate, for the progress line only

    def worker(index):
        client = KeepAliveClient(url, timeout)
        state = {"index": index, "rng": random.Random(), "client": client}
        try:
            client.connect()
        except OSError as error:
            connect_errors.append(repr(error))
        barrier.wait()
        own = results[index]
        while not stop.is_set():
            request = next_request(state)
            if request is None:
                exhausted.set()
                stop.set()
                break
            status, seconds = client.post_json(*request)
            own.append((status, seconds))
            counter[0] += 1
        finished_at[index] = time.perf_counter()
        reconnects[index] = client.connects - 1
        client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"{name}-{i}")
               for i in range(clients)]
    for thread in threads:
        thread.start()
    load_before = loadavg()
    metrics_before = gateway_login_metrics(url)
    cpu_before = cpu_snapshot()
    progress = Progress(name)
    barrier.wait()
    started = time.perf_counter()
    progress.started = started
    deadline = started + duration
    while not stop.is_set():
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        stop.wait(min(0.25, remaining))
        progress.show(counter[0], f"requests  ({time.perf_counter() - started:4.1f}/{duration} s)", force=True)
    stop_requested = time.perf_counter()
    stop.set()
    for thread in threads:
        thread.join()
    ended = max(finished_at)
    cpu_after = cpu_snapshot()
    metrics_after = gateway_login_metrics(url)
    progress.show(counter[0], "requests", force=True)
    progress.end()

    samples = [sample for own in results for sample in own]
    statuses = Counter(str(status) for status, _ in samples)
    latencies = sorted(seconds for _, seconds in samples)
    elapsed = ended - started
    expected = statuses.get(str(expected_status), 0)
    unexpected = {status: n for status, n in sorted(statuses.items()) if status != str(expected_status)}
    throughput = len(samples) / elapsed if elapsed > 0 else 0.0
    expected_rate = expected / elapsed if elapsed > 0 else 0.0
    p99 = percentile(latencies, 99)

    report = {
        "scenario": name,
        "clients": clients,
        "duration_s": duration,
        "elapsed_s": round(elapsed, 3),
        "stopped_early": exhausted.is_set(),
        "requests": len(samples),
        "expected_status": expected_status,
        "successes": expected,
        "errors": sum(unexpected.values()),
        "errors_by_status": unexpected,
        "status_histogram": dict(sorted(statuses.items())),
        "throughput_rps": round(throughput, 1),
        "successes_per_s": round(expected_rate, 1),
        "latency_ms": {
            "p50": ms(percentile(latencies, 50)),
            "p90": ms(percentile(latencies, 90)),
            "p99": ms(p99),
            "max": ms(latencies[-1] if latencies else None),
            "mean": ms(sum(latencies) / len(latencies) if latencies else None),
        },
        "reconnects": sum(reconnects),
        "drain_ms": round((ended - stop_requested) * 1000, 1) if not exhausted.is_set() else None,
    }
    if connect_errors:
        report["connect_errors"] = connect_errors[:5]
    if metrics_before and metrics_after and metrics_after[1] > metrics_before[1]:
        count = metrics_after[1] - metrics_before[1]
        report["gateway_handler_mean_ms"] = ms((metrics_after[0] - metrics_before[0]) / count)
    report["cpu"] = cpu_usage(cpu_before, cpu_after)
    report["loadavg_before_after"] = [load_before, loadavg()]

    checks = {
        f"rate_of_{expected_status}_ge_{TARGET_RPS:g}_per_s": expected_rate >= TARGET_RPS,
        f"p99_lt_{TARGET_P99_MS:g}_ms": p99 is not None and p99 * 1000 < TARGET_P99_MS,
        "no_errors": not unexpected,
    }
    report["target"] = {"min_rps": TARGET_RPS, "max_p99_ms": TARGET_P99_MS, "checks": checks}
    report["target_met"] = bool(samples) and all(checks.values())
    return report


def successful_logins(pool):
    def next_request(state):
        try:
            device = pool.popleft()  # each user once: a code is accepted once per 30 s step
        except IndexError:
            return None
        return LOGIN_PATH, {"username": device.username, "password": device.code()}
    return next_request


def loopback_sources():
    """Distinct random loopback addresses: Linux accepts any of 127.0.0.0/8 as a source,
    so one machine can be many clients to the gateway's per-source count (random, so a
    rerun within the window does not meet the failures of the last run)."""
    seen = set()
    while True:
        address = f"127.{random.randrange(10, 250)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        if address not in seen:
            seen.add(address)
            yield address


def failed_logins(known_devices, attempts_per_username, sources, per_source=FAILURES_PER_SOURCE):
    """Wrong codes, alternating between existing users and random unknown usernames, from a
    new source address (`sources`, shared by the clients) every `per_source` failures."""
    known = deque(known_devices)
    source_lock = threading.Lock()

    def wrong_code(rng, device=None):
        valid = set()
        if device is not None:
            now = time.time()
            valid = {device.code(at=now, step_offset=offset) for offset in (-1, 0, 1)}
        while True:
            code = f"{rng.randrange(10 ** 10):010d}"
            if code not in valid:
                return code

    def next_request(state):
        rng = state["rng"]
        state["turn"] = turn = state.get("turn", 0) + 1
        if turn == 1 or (per_source and turn % per_source == 1):
            with source_lock:
                state["client"].move_to(next(sources))
        if turn % 2 == 0 and (state.get("known_left") or known):
            if not state.get("known_left"):
                try:
                    state["known_device"] = known.popleft()
                except IndexError:
                    state["known_device"] = None
                state["known_left"] = attempts_per_username if state["known_device"] else 0
            device = state.get("known_device")
            if device is not None:
                state["known_left"] -= 1
                return LOGIN_PATH, {"username": device.username, "password": wrong_code(rng, device)}
        if not state.get("unknown_left"):
            state["unknown_name"] = "X" + "".join(rng.choice("0123456789") for _ in range(12))
            state["unknown_left"] = attempts_per_username
        state["unknown_left"] -= 1
        return LOGIN_PATH, {"username": state["unknown_name"], "password": wrong_code(rng)}
    return next_request


# -- main -------------------------------------------------------------------------------

def machine_facts():
    facts = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": loadavg(),
    }
    try:
        facts["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), None)
        if model:
            facts["cpu_model"] = model
    except OSError:
        pass
    return facts


def parse_args(argv):
    bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8000")
    free = os.environ.get("OTP_FREE_FAILURES", "3")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--url", default=f"http://{bind}", help="the gateway's base URL")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (threads)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--users", type=int, default=4000,
                        help="users provisioned for the successful-login scenario, each logs in once; "
                             "needs about rate x duration (0 skips that scenario)")
    parser.add_argument("--provision-workers", type=int, default=16, help="concurrency while provisioning")
    parser.add_argument("--provision-timeout", type=float, default=300.0,
                        help="stop provisioning after this many seconds and run with the users made so far")
    parser.add_argument("--attempts-per-username", type=int,
                        default=max(1, min(3, int(free) if free.isdigit() else 3)),
                        help="wrong codes per username in failed_logins; keep it <= OTP_FREE_FAILURES "
                             "so no account gets locked (423)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated scenarios to run")
    parser.add_argument("--output", default=str(REPORT_PATH), help="where the JSON report is written too")
    parser.add_argument("--pid-dir", default=str(RUN_DIR),
                        help="pidfiles of the stack's processes, for the CPU-per-process figures")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.users < 0 or args.provision_workers < 1:
        parser.error("--clients, --duration and --provision-workers must be positive, --users >= 0")
    unknown = {name.strip() for name in args.scenarios.split(",") if name.strip()} - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv=None):
    global RUN_DIR
    args = parse_args(argv)
    RUN_DIR = Path(args.pid_dir)
    url = args.url.rstrip("/")
    wanted = [name.strip() for name in args.scenarios.split(",") if name.strip()]

    try:
        status, body = get(url, "/readyz")
    except OSError as error:
        print(f"[bench] the gateway at {url} is unreachable ({error}); start the stack with `make up`",
              file=sys.stderr)
        return 1
    ready = status == 200
    if not ready:
        print(f"[bench] warning: {url}/readyz answered {status}: {body[:200]!r}", file=sys.stderr)

    report = {
        "benchmark": "mycepa login through the gateway",
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "url": url,
        "machine": machine_facts(),
        "stack_ready": ready,
        "settings": {"clients": args.clients, "duration_s": args.duration, "users": args.users,
                     "provision_workers": args.provision_workers,
                     "attempts_per_username": args.attempts_per_username, "timeout_s": args.timeout},
        "target": {"min_rps": TARGET_RPS, "max_p99_ms": TARGET_P99_MS,
                   "note": "met when the rate of expected answers >= min_rps, p99 < max_p99_ms "
                           "and there are no unexpected answers"},
        "scenarios": [],
        "notes": [],
    }
    print(f"[bench] {url}  clients={args.clients}  duration={args.duration:g}s  "
          f"cpus={os.cpu_count()}  load={loadavg()}", file=sys.stderr)

    devices = []
    if wanted:
        admin_token = os.environ.get("MYCEPA_ADMIN_TOKEN")
        if args.users and not admin_token:
            report["notes"].append("MYCEPA_ADMIN_TOKEN is not set: no users provisioned "
                                   "(run through `make bench`)")
            print("[bench] MYCEPA_ADMIN_TOKEN is not set: cannot provision users", file=sys.stderr)
        elif args.users:
            devices, report["provisioning"] = provision_users(url, admin_token, args.users,
                                                              args.provision_workers, args.provision_timeout)
            failed = report["provisioning"]["failed"]
            if failed:
                report["notes"].append(
                    f"provisioning failures: {failed} (a 503 is the gateway's RPC timeout; the otp "
                    "service may still have activated that device, which then stays unused)")
            if report["provisioning"].get("stopped"):
                report["notes"].append("provisioning stopped early: " + report["provisioning"]["stopped"])
            # The provisioning burst is set-up: the scenarios start once the audit trail
            # has written it, so they measure logins, not a backlog being caught up.
            print("[bench] waiting for the audit trail to write the provisioning...", file=sys.stderr)
            report["provisioning"]["audit_caught_up_s"] = audit_caught_up(url)

    if "successful_logins" in wanted:
        if not devices:
            report["scenarios"].append({"scenario": "successful_logins", "skipped": True,
                                        "reason": "no provisioned users", "target_met": False})
        else:
            pool = deque(devices)
            needed = TARGET_RPS * args.duration
            if len(devices) < needed:
                report["notes"].append(
                    f"successful_logins: {len(devices)} users cannot sustain {TARGET_RPS:g}/s for "
                    f"{args.duration:g} s (needs {needed:.0f}); the scenario may stop early")
            result = run_scenario("successful_logins", url, args.clients, args.duration, args.timeout,
                                  successful_logins(pool), 200)
            result["users_provisioned"] = len(devices)
            result["users_left"] = len(pool)
            if result["stopped_early"]:
                result["note"] = (f"the pool of {len(devices)} users ran out after {result['elapsed_s']} s; "
                                  "rerun with more --users")
            report["scenarios"].append(result)

    if "failed_logins" in wanted:
        # Users that just logged in are reused: wrong codes for them take the path of an
        # existing user with an authenticator (decrypt + compare) rather than the decoy.
        result = run_scenario("failed_logins", url, args.clients, args.duration, args.timeout,
                              failed_logins(devices, args.attempts_per_username, loopback_sources()), 401)
        result["usernames"] = ("half existing users, half random unknown 'X' + 12 digits; "
                               f"each used at most {args.attempts_per_username} times")
        result["sources"] = f"a loopback address per {FAILURES_PER_SOURCE} failures"
        report["scenarios"].append(result)

    if "throttled_source" in wanted:
        flooder = next(loopback_sources())
        result = run_scenario("throttled_source", url, args.clients, args.duration, args.timeout,
                              failed_logins(devices, args.attempts_per_username, itertools.repeat(flooder),
                                            per_source=None), 429)
        result["sources"] = (f"one address, {flooder}: its first SOURCE_FAILURE_LIMIT failures are 401 "
                             "by design (counted under errors_by_status), every later one 429")
        report["scenarios"].append(result)

    load = loadavg()
    report["machine"]["loadavg_end"] = load
    others = [s["cpu"]["other_processes_cores"] for s in report["scenarios"]
              if s.get("cpu") and s["cpu"].get("other_processes_cores") is not None]
    if (load and load[0] > (os.cpu_count() or 1) * 1.5) or (others and max(others) > 0.3):
        report["notes"].append(
            "the machine was busy with other work during the run (see loadavg and "
            "cpu.other_processes_cores): the figures are depressed")
    report["all_targets_met"] = bool(report["scenarios"]) and all(s.get("target_met") for s in report["scenarios"])

    emit_report(report, args.output, "bench")
    return 0


def emit_report(report, output, tag):
    """The JSON report on stdout and in the file `output` (kept for the README figures)."""
    text = json.dumps(report, indent=2)
    print(text)
    try:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"[{tag}] report written to {path}", file=sys.stderr)
    except OSError as error:
        print(f"[{tag}] could not write {output}: {error}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
