"""Load that tells whether logins were lost: real users logging in over HTTP, with every
outcome recorded per code, for the fault tests and `make chaos`.

A code login that did not answer 200 (503, a dropped connection, a timeout) is tried
again with the same code until it is answered 200 or refused: refused means the failed
attempt consumed the code (a lost login). A code that was answered 200 after trouble is
tried once more, which must be refused (else it was accepted twice: a double login).
"""
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPException

import requests

from clients.device import Device, answer_challenge, create_activation, pending_challenges, GatewayError

CODE_TIMEOUT = 10.0   # an HTTP answer slower than this counts as a hang


def poll_device(base_url, admin_token, username):
    """An activated poll device of `username` (a fresh werkboeknummer)."""
    device = Device.new(base_url)
    device.activate(create_activation(base_url, admin_token, username)["activation_code"])
    return device


def make_users(base_url, admin_token, count, prefix, threads=8, make=poll_device, within=None, on_made=None):
    """`count` users `prefix00000`, ... made by `make(base_url, admin_token, username)`
    (an activated poll device), `threads` at a time, for at most `within` seconds:
    (what was made, {failure: count}); `on_made(made, failures)` after each."""
    made, failures, lock = [], Counter(), threading.Lock()
    deadline = None if within is None else time.monotonic() + within

    def one(index):
        if deadline is not None and time.monotonic() > deadline:
            return
        try:
            thing = make(base_url, admin_token, f"{prefix}{index:05d}")
        except GatewayError as error:
            failure = f"http_{error.status}"
        except (OSError, HTTPException) as error:
            failure = type(error).__name__
        else:
            failure = None
        with lock:
            if failure:
                failures[failure] += 1
            else:
                made.append(thing)
            if on_made:
                on_made(made, failures)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    return made, dict(failures)


def outcome_of(call):
    """The HTTP status of `call()`, or a word for what happened instead."""
    try:
        return call().status_code
    except requests.ConnectionError:
        return "connection"
    except requests.Timeout:
        return "timeout"


@dataclass
class CodeAttempt:
    username: str
    code: str
    outcomes: list = field(default_factory=list)   # [(monotonic time, status or word), ...]

    @property
    def answered_ok(self):
        return sum(1 for _, outcome in self.outcomes if outcome == 200)

    @property
    def troubled(self):
        return any(outcome != 200 for _, outcome in self.outcomes)


class CodeLogins:
    """`clients` threads, each logging in its own users one after another with the code
    of the step after the current one (valid for the next minute and more, long enough to
    retry it after a fault), at most `rate` logins a second in all. A user logs in at
    most once per 30-second step, so `rate` needs about 30 x rate users."""

    def __init__(self, base_url, users, clients=8, rate=None):
        self.base_url = base_url
        self.groups = [users[index::clients] for index in range(clients)]
        self.interval = clients / rate if rate else 0.0
        self.attempts = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []

    def start(self):
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._client, args=(group,), daemon=True) for group in self.groups]
        for thread in self.threads:
            thread.start()
        return self

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def _client(self, users):
        session = requests.Session()
        while not self.stopping.is_set():
            step = int(time.time()) // 30
            # Kept on the device, so runs one after another never reuse a code.
            ready = [device for device in users if getattr(device, "last_login_step", -1) < step]
            if not ready:
                time.sleep(0.2)
                continue
            for device in ready:
                if self.stopping.is_set():
                    return
                started = time.monotonic()
                device.last_login_step = step
                # The code of the step after `step` (not after "now", which may already be
                # the next step: two logins would then share a code).
                attempt = CodeAttempt(device.username, device.code(at=(step + 1) * 30 + 1))
                with self.lock:
                    self.attempts.append(attempt)
                self.try_code(session, attempt)
                self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def try_code(self, session, attempt):
        outcome = outcome_of(lambda: session.post(f"{self.base_url}/api/login", timeout=CODE_TIMEOUT,
                                                  json={"username": attempt.username, "password": attempt.code}))
        attempt.outcomes.append((time.monotonic(), outcome))
        return outcome

    def settle(self, within=60.0):
        """Retry every code that was not answered 200, until it is answered or refused;
        probe every code answered 200 after trouble once more (must be refused)."""
        session = requests.Session()
        deadline = time.monotonic() + within
        for attempt in self.attempts:
            if attempt.answered_ok:
                if attempt.troubled:
                    self.try_code(session, attempt)
                continue
            while time.monotonic() < deadline:
                if self.try_code(session, attempt) in (200, 401, 423):
                    break
                time.sleep(0.5)

    def summary(self):
        statuses = Counter(outcome for attempt in self.attempts for _, outcome in attempt.outcomes)
        lost = [a for a in self.attempts if not a.answered_ok]
        double = [a for a in self.attempts if a.answered_ok > 1]
        return {"logins": len(self.attempts), "requests": sum(statuses.values()), "statuses": dict(statuses),
                "5xx": sum(count for status, count in statuses.items() if isinstance(status, int) and status >= 500
                           and status != 503),
                "503": statuses.get(503, 0), "lost": len(lost), "double": len(double),
                "lost_codes": [(a.username, [(round(t - self.started, 1), o) for t, o in a.outcomes])
                               for a in lost][:5]}

    def first_ok_after(self, moment):
        """The first monotonic time after `moment` at which a login was answered 200."""
        times = [t for attempt in self.attempts for t, outcome in attempt.outcomes if outcome == 200 and t >= moment]
        return min(times) if times else None


def remember_browser(base_url, device):
    """A browser that logged in with a code and saved the username: it can use push."""
    browser = requests.Session()
    answer = browser.post(f"{base_url}/api/login", json={"username": device.username, "password": device.code()},
                          timeout=CODE_TIMEOUT)
    answer.raise_for_status()
    browser.post(f"{base_url}/api/remember", timeout=CODE_TIMEOUT).raise_for_status()
    browser.post(f"{base_url}/api/logout", timeout=CODE_TIMEOUT)
    return browser


def another_tab(browser):
    """A browser with the same saved username (cookies) but a push request of its own:
    each push request is bound to the browser that made it by a cookie of its own."""
    tab = requests.Session()
    tab.cookies.update(browser.cookies)
    return tab


@dataclass
class PushAttempt:
    username: str
    request_id: str = None
    outcome: str = None            # approved | denied | expired | failed: why
    troubles: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)


def push_login(base_url, device, browser, on_requested=None, give_up_after=60.0):
    """One whole push login as a person does it, retrying what a fault interrupts: the
    browser presses "Stuur PUSH", the phone finds the request and approves the number,
    the browser sees approved and is logged in."""
    attempt = PushAttempt(device.username)
    deadline = time.monotonic() + give_up_after

    def retrying(what, call):
        while time.monotonic() < deadline:
            try:
                response = call()
            except (requests.ConnectionError, requests.Timeout):
                attempt.troubles[f"{what}: connection"] += 1
            else:
                if response.status_code < 500:
                    return response
                attempt.troubles[f"{what}: {response.status_code}"] += 1
            time.sleep(0.3)
        return None

    started = retrying("request", lambda: browser.post(f"{base_url}/api/login/push", timeout=CODE_TIMEOUT))
    if started is None or started.status_code != 202:
        attempt.outcome = f"failed: request answered {getattr(started, 'status_code', 'nothing')}"
        return attempt
    request = started.json()
    attempt.request_id = request["request_id"]
    if on_requested:
        on_requested(attempt)
    challenge = None
    while challenge is None and time.monotonic() < deadline:
        try:
            challenge = next((c for c in pending_challenges(device)
                              if request["number"] in c["number_choices"]), None)
        except (GatewayError, OSError) as error:
            attempt.troubles[f"poll: {getattr(error, 'status', 'connection')}"] += 1
        if challenge is None:
            time.sleep(0.2)
    if challenge is None:
        attempt.outcome = "failed: the phone never saw the request"
        return attempt
    while time.monotonic() < deadline:
        try:
            answer_challenge(device, challenge, "approve", request["number"])
            break
        except GatewayError as error:
            if error.status < 500:
                attempt.troubles[f"answer: {error.status}"] += 1
                break
            attempt.troubles[f"answer: {error.status}"] += 1
        except OSError:
            attempt.troubles["answer: connection"] += 1
        time.sleep(0.3)
    while time.monotonic() < deadline:
        status = retrying("status", lambda: browser.get(
            f"{base_url}/api/login/push/{request['request_id']}?wait=5", timeout=CODE_TIMEOUT))
        if status is None:
            break
        state = status.json().get("status")
        if state != "pending":
            attempt.outcome = state
            if state == "approved":
                me = retrying("me", lambda: browser.get(f"{base_url}/api/me", timeout=CODE_TIMEOUT))
                if me is None or me.status_code != 200:
                    attempt.outcome = "failed: approved without a session"
            return attempt
    attempt.outcome = attempt.outcome or "failed: never settled"
    return attempt


def audit_caught_up(base_url, within=300.0):
    """Wait until the audit service's queue is empty (after a set-up burst of
    activations, say); the seconds it took, or None if it was still busy after `within`."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            backlog = requests.get(f"{base_url}/readyz", timeout=5).json()["detail"]["audit"]["backlog"]
        except (requests.RequestException, ValueError, KeyError):
            backlog = None
        if backlog == 0:
            return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return None
