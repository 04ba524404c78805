"""The guided demo of `make run`: the guide "Inloggen op MyCepa met de OTP-app", step by step.

Talks to the running stack only through its public HTTP API, as the admin and as the
OTP app (clients/device.py) would. Non-interactive; prints what happens at each step.
"""
import http.cookiejar
import json
import os
import secrets
import sys
import time
import urllib.request

import segno

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clients.device import (  # noqa: E402
    Device, GatewayError, answer_challenge, call, create_activation, pending_challenges,
)

BASE_URL = "http://" + os.environ.get("GATEWAY_BIND", "127.0.0.1:8000")
ADMIN_TOKEN = os.environ["MYCEPA_ADMIN_TOKEN"]
DEMO_USER = os.environ.get("DEMO_USERNAME", "W1234567")
STEPS = 10
BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() \
    else ("", "", "", "", "")


def step(number, title):
    print(f"\n{BOLD}[{number}/{STEPS}] {title}{RESET}")


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

    step(3, "De OTP-app activeren: the app registers its EC P-256 key and receives its secret")
    device = Device.new(BASE_URL)
    activated = device.activate(activation["activation_code"], device_name="Demo phone")
    show("device", activated["device_id"])
    show("codes", f"{activated['otp']['digits']} digits every {activated['otp']['period']} s "
                  f"({activated['otp']['algorithm']}); the secret stays on the phone and, encrypted, in otp")

    step(4, "Inloggen: werkboeknummer + the 10-digit code the app shows")
    browser = Browser()
    code = device.code()
    show("code on the phone", code)
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
    step(6, f"Wrong codes slow down and then lock the account (a second user, {trial_user})")
    trial = Device.new(BASE_URL)
    trial.activate(create_activation(BASE_URL, ADMIN_TOKEN, trial_user)["activation_code"], device_name="Trial")
    for attempt in range(1, 6):
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
        print(f"  {DIM}{DEMO_USER} asked for push 3 times in 5 minutes (earlier runs of this demo): "
              f"run it again in {headers.get('Retry-After', '?')} s, or with DEMO_USERNAME=W7654321{RESET}")
        sys.exit(1)
    outcome(status == 202, f"the browser shows the number {pushed['number']}")
    challenge = None
    for _ in range(50):
        found = [c for c in pending_challenges(device) if pushed["number"] in c["number_choices"]]
        if found:
            challenge = found[0]
            break
        time.sleep(0.1)
    outcome(challenge is not None, "the phone received the login request")
    show("the phone shows", f"{challenge['username']} from {challenge['context']['ip']}, "
                            f"pick one of {', '.join(challenge['number_choices'])}")

    step(10, "Bevestig toegang: the user picks the browser's number and confirms with Face ID / PIN")
    answer = answer_challenge(device, challenge, "approve", pushed["number"])
    show("POST /api/push/challenges/…/response", answer)
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
    print(f"\n{BOLD}The stack keeps running.{RESET}")
    print(f"  API and docs     {BASE_URL}/openapi.json   health {BASE_URL}/readyz   metrics {BASE_URL}/metrics")
    print(f"  demo user        {DEMO_USER} with {len(devices['devices'])} device(s)")
    print("  admin token      in .data/mycepa.env (MYCEPA_ADMIN_TOKEN)")
    print("  logs             .data/logs/   stop everything with: make down")


if __name__ == "__main__":
    try:
        main()
    except GatewayError as error:
        print(f"\n{RED}the gateway answered {error.status}: {error.body}{RESET}")
        sys.exit(1)
    except OSError as error:
        print(f"\n{RED}cannot reach the gateway at {BASE_URL}: {error}{RESET}")
        sys.exit(1)
