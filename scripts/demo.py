"""The guided demo of `make run`: the guide "Inloggen op MyCepa met de OTP-app", step by step.

Talks to the running stack only through its public interfaces: the HTTP API as the admin
and the browser, and the reference OTP app `mycepa-app` (run as a command, with its
keystore in .data/demo-app) as the phone. Non-interactive; prints each step.
"""
import http.cookiejar
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import segno

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clients.device import Device, GatewayError, call, create_activation  # noqa: E402

BASE_URL = "http://" + os.environ.get("GATEWAY_BIND", "127.0.0.1:8000")
ADMIN_TOKEN = os.environ["MYCEPA_ADMIN_TOKEN"]
# A fresh werkboeknummer each run: reruns start clean (no push rate limit carried over),
# and the end of the tour names the user and the phone to go on with.
DEMO_USER = os.environ.get("DEMO_USERNAME") or f"W{secrets.randbelow(9 * 10**6) + 10**6}"
ROOT = Path(__file__).resolve().parent.parent
# The demo phone: the reference app with its own keystore, so a person can go on using it.
APP_HOME = ROOT / ".data" / "demo-app"
APP_PIN = "2468"
STEPS = 10
BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() \
    else ("", "", "", "", "")


def step(number, title):
    bar = "■" * number + "□" * (STEPS - number)
    print(f"\n{BOLD}{bar} {number}/{STEPS}  {title}{RESET}")


def app(*arguments):
    """Run the reference OTP app as a person would, PIN given for the demo; its output."""
    finished = subprocess.run([sys.executable, "-m", "clients.app", *arguments], cwd=ROOT, capture_output=True,
                              text=True, timeout=60,
                              env={**os.environ, "MYCEPA_APP_HOME": str(APP_HOME), "MYCEPA_APP_PIN": APP_PIN})
    if finished.returncode != 0:
        print(f"{RED}mycepa-app {' '.join(arguments)} failed: {finished.stderr.strip() or finished.stdout.strip()}"
              f"{RESET}")
        sys.exit(1)
    return finished.stdout


def show(label, value):
    print(f"  {label}: {value}")


def outcome(ok, text):
    print(f"  {GREEN + '✔' if ok else RED + '✘'} {text}{RESET}")
    if not ok:
        sys.exit(1)


class Browser:
    """A browser: a cookie jar and JSON requests."""

    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(BASE_URL + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self.opener.open(request, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None, dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null"), dict(error.headers)


def main():
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    print(f"{BOLD}MyCepa login — guided demo of 'Inloggen op MyCepa met de OTP-app'{RESET}")
    print(f"{DIM}gateway {BASE_URL}, werkboeknummer {DEMO_USER}{RESET}")

    step(1, "The stack is ready")
    _, ready, _ = Browser().request("GET", "/readyz")
    show("checks", ", ".join(f"{name}={'ok' if ok else 'DOWN'}" for name, ok in ready["checks"].items()))
    outcome(ready["ready"], "RabbitMQ, the gateway's database, otp and push all answer")

    step(2, "The admin creates an activation code for the werkboeknummer")
    activation = create_activation(BASE_URL, ADMIN_TOKEN, DEMO_USER)
    show("activation code", activation["activation_code"])
    show("valid until", activation["expires_at"])
    show("activation URI", activation["activation_uri"])
    print("  the same as a QR code, to scan with the OTP app:")
    segno.make(activation["activation_uri"], error="m").terminal(compact=True, border=2)

    step(3, "De OTP-app activeren: mycepa-app registers its EC P-256 key and receives its secret")
    replaced = _replace_demo_phone(admin)
    if replaced:
        show("earlier demo phone", f"{replaced} revoked (this run activates a new one)")
    show("$ mycepa-app activate", "'<activation URI>' --name 'Demo phone'   (PIN-sealed keystore in .data/demo-app)")
    for line in app("activate", activation["activation_uri"], "--name", "Demo phone", "--force").splitlines():
        if line.strip():
            print(f"    {line}")

    step(4, "Inloggen: werkboeknummer + the 10-digit code the app shows")
    browser = Browser()
    code = app("code", "--plain").strip()
    show("$ mycepa-app code", code)
    status, body, headers = browser.request("POST", "/api/login", {"username": DEMO_USER, "password": code})
    show("POST /api/login", f"{status} {body}")
    cookie = headers.get("Set-Cookie", "")
    show("session cookie", "mycepa_session=…; " + "; ".join(part.strip() for part in cookie.split(";")[1:]))
    outcome(status == 200, "logged in")
    status, body, _ = browser.request("GET", "/api/me")
    show("GET /api/me", f"{status} {body}")
    outcome(status == 200 and body["username"] == DEMO_USER, "the browser has a session")

    step(5, "A code works once: the same code again is refused")
    status, body, _ = Browser().request("POST", "/api/login", {"username": DEMO_USER, "password": code})
    show("POST /api/login (same code)", f"{status} {body['error']}: {body['message']}")
    outcome(status == 401, "replay refused, in the same words as a wrong code")

    trial_user = f"W9{secrets.randbelow(10**6):06d}"
    step(6, f"Wrong codes slow down and then lock code login (a second user, {trial_user})")
    trial = Device.new(BASE_URL)
    trial.activate(create_activation(BASE_URL, ADMIN_TOKEN, trial_user)["activation_code"], device_name="Trial")
    for attempt in range(1, 12):   # OTP_FREE_FAILURES (5 by default) are free
        status, body, headers = Browser().request("POST", "/api/login", {"username": trial_user,
                                                                         "password": "0000000000"})
        wait = f" (Retry-After: {headers['Retry-After']} s)" if "Retry-After" in headers else ""
        show(f"wrong code #{attempt}", f"{status} {body['error']}{wait}")
        if status == 423:
            break
    outcome(status == 423, "locked, with the time to wait")
    status, body, _ = Browser().request("POST", "/api/login", {"username": trial_user, "password": trial.code()})
    show("the right code while locked", f"{status} {body['error']}")
    outcome(status == 423, "even the right code waits until the lock ends")

    step(7, "The admin unlocks the account; the next code logs in")
    _, unlocked = call(BASE_URL, "POST", f"/api/admin/users/{trial_user}/unlock", headers=admin)
    show("POST /api/admin/users/…/unlock", unlocked)
    status, body, _ = Browser().request("POST", "/api/login", {"username": trial_user, "password": trial.code()})
    show("POST /api/login", f"{status} {body}")
    outcome(status == 200, "unlocked and logged in")

    step(8, "Bewaar je gebruikersnaam: the browser saves the username for push login")
    status, _, headers = browser.request("POST", "/api/remember")
    show("POST /api/remember", status)
    outcome(status == 204 and "mycepa_remember=" in headers.get("Set-Cookie", ""), "username saved in this browser")
    status, _, _ = browser.request("POST", "/api/logout")
    show("POST /api/logout", f"{status} (the session ends; the saved username stays)")
    status, body, _ = browser.request("GET", "/api/me")
    outcome(status == 401, "logged out")

    step(9, "Stuur PUSH: the browser asks the phone to confirm")
    status, body, _ = browser.request("GET", "/api/login/push")
    show("GET /api/login/push", f"{status} {body}")
    status, pushed, headers = browser.request("POST", "/api/login/push")
    show("POST /api/login/push", f"{status} {pushed}")
    if status == 429:
        # The push-bombing limit counts the demo's earlier runs too.
        print(f"  {DIM}{DEMO_USER} asked for push 3 times in 5 minutes (earlier runs with DEMO_USERNAME): "
              f"run it again in {headers.get('Retry-After', '?')} s, or with another DEMO_USERNAME{RESET}")
        sys.exit(1)
    outcome(status == 202, f"the browser shows the number {pushed['number']}")
    show("$ mycepa-app inbox", "")
    for line in app("inbox", "--wait", "10").splitlines():
        if line.strip():
            print(f"    {line}")

    step(10, "Bevestig toegang: the user picks the browser's number and unlocks with the PIN")
    show(f"$ mycepa-app approve --number {pushed['number']}", "")
    for line in app("approve", "--number", pushed["number"], "--wait", "10").splitlines():
        if line.strip():
            print(f"    {line}")
    for _ in range(50):
        status, body, _ = browser.request("GET", f"/api/login/push/{pushed['request_id']}")
        if body.get("status") != "pending":
            break
        time.sleep(0.1)
    show("GET /api/login/push/…", f"{status} {body}")
    status, me, _ = browser.request("GET", "/api/me")
    show("GET /api/me", f"{status} {me}")
    outcome(body.get("status") == "approved" and status == 200, "logged in with push")

    _, devices = call(BASE_URL, "GET", f"/api/admin/users/{DEMO_USER}/devices", headers=admin)
    print(f"\n{BOLD}The stack keeps running. Try it yourself:{RESET}")
    print(f"  login page       {BASE_URL}/")
    active = sum(device["status"] == "active" for device in devices["devices"])
    print(f"  demo user        {DEMO_USER} ({active} active device(s)); the demo phone's PIN is {APP_PIN}")
    print("  the phone        export MYCEPA_APP_HOME=.data/demo-app")
    print("                   .venv/bin/mycepa-app code      # the 10-digit code for the page")
    print("                   .venv/bin/mycepa-app watch     # then press Stuur PUSH on the page")
    print("  admin            .venv/bin/mycepa-admin --env-file .data/mycepa.env activation create W7654321")
    print(f"  API and docs     {BASE_URL}/openapi.json   health {BASE_URL}/readyz   metrics {BASE_URL}/metrics")
    print("  logs             .data/logs/   stop everything with: make down")


def _replace_demo_phone(admin):
    """Revoke the device of an earlier run's demo phone, so reruns do not pile devices up."""
    for line in app("info").splitlines() if (APP_HOME / "default.json").exists() else ():
        label, _, value = line.partition(":")
        if label.strip() == "Device id":
            try:
                call(BASE_URL, "DELETE", f"/api/admin/devices/{value.strip()}", headers=admin)
                return value.strip()
            except GatewayError:
                return None  # already revoked, or of another stack
    return None


if __name__ == "__main__":
    try:
        main()
    except GatewayError as error:
        print(f"\n{RED}the gateway answered {error.status}: {error.body}{RESET}")
        sys.exit(1)
    except OSError as error:
        print(f"\n{RED}cannot reach the gateway at {BASE_URL}: {error}{RESET}")
        sys.exit(1)
