"""mycepa-app and mycepa-admin, run as the installed commands against the real stack.

Admin creates an activation (code, URI, QR) -> the app activates with a PIN -> its keystore
is 0600 and sealed -> the code it shows logs in -> wrong PINs are counted and then delayed.
Push: a browser saves the username and asks for a push -> inbox shows who, from where and
the three numbers -> approve with the browser's number logs the browser in; deny --fraud
blocks push until mycepa-admin clears it; watch answers from stdin. Admin: devices, revoke,
unlock, a missing or wrong token.
"""
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from clients.device import create_activation
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.e2e

PIN = "246810"
CODE = re.compile(r"\b(\d{5}) (\d{5})\b")
ACTIVATION_CODE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b")


def command(name):
    """The installed console script, or the module when the scripts are not installed."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", "clients." + name.split("-", 1)[1]]


class Cli:
    def __init__(self, stack, home):
        self.stack, self.home = stack, home
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("MYCEPA_APP_", "MYCEPA_URL"))}
        self.env.update({"MYCEPA_APP_HOME": str(home), "MYCEPA_URL": stack.base_url,
                         "MYCEPA_ADMIN_TOKEN": TEST_ENV["MYCEPA_ADMIN_TOKEN"], "PYTHONUNBUFFERED": "1"})

    def run(self, name, *args, stdin="", env=None, expect=0):
        done = subprocess.run([*command(name), *args], input=stdin, capture_output=True, text=True, timeout=30,
                              env={**self.env, **(env or {})})
        if expect is not None:
            assert done.returncode == expect, f"{name} {args} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def app(self, *args, **kwargs):
        return self.run("mycepa-app", *args, **kwargs)

    def admin(self, *args, **kwargs):
        return self.run("mycepa-admin", *args, **kwargs)

    def activated_user(self, pin=PIN):
        """A fresh werkboeknummer whose device is this app (profile default)."""
        username = f"W{secrets.randbelow(10**9):09d}"
        activation = create_activation(self.stack.base_url, TEST_ENV["MYCEPA_ADMIN_TOKEN"], username)
        self.app("activate", activation["activation_uri"], "--pin", pin, "--name", "CLI phone")
        return username

    def code(self, pin=PIN):
        out = self.app("code", "--pin", pin).stdout
        match = CODE.search(out)
        assert match, out
        return "".join(match.groups())

    def keystore(self):
        return json.loads((self.home / "default.json").read_text())


@pytest.fixture
def cli(stack, tmp_path):
    return Cli(stack, tmp_path / "mycepa-app")


def login(base_url, username, code, session=None):
    return (session or requests).post(f"{base_url}/api/login", json={"username": username, "password": code},
                                      timeout=10)


def remembered_browser(cli, username):
    """A browser that logged in with the app's code, saved the username and logged out."""
    browser = requests.Session()
    base = cli.stack.base_url
    assert login(base, username, cli.code(), browser).status_code == 200
    assert browser.post(f"{base}/api/remember", timeout=10).status_code == 204
    assert browser.post(f"{base}/api/logout", timeout=10).status_code == 204
    return browser


def push(cli, browser):
    answer = browser.post(f"{cli.stack.base_url}/api/login/push", timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()


def push_status(cli, browser, request_id, wait=5):
    return browser.get(f"{cli.stack.base_url}/api/login/push/{request_id}", params={"wait": wait} if wait else None,
                       timeout=wait + 10).json()["status"]


def test_activation_keystore_and_code_login(cli):
    username = f"W{secrets.randbelow(10**9):09d}"
    created = cli.admin("activation", "create", username).stdout
    code = ACTIVATION_CODE.search(created).group(0)
    uri = re.search(r"mycepa://activate\?\S+", created).group(0)
    assert f"code={code}" in uri and "server=" in uri and username in created
    assert any(block in created for block in "█▀▄"), "no QR code in the terminal"
    assert "█" not in cli.admin("activation", "create", username, "--no-qr").stdout

    activated = cli.app("activate", uri, "--pin", PIN, "--name", "CLI phone").stdout
    assert f"Activated for {username}" in activated

    keystore_file = cli.home / "default.json"
    assert stat.S_IMODE(keystore_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.home.stat().st_mode) == 0o700
    text = keystore_file.read_text()
    record = json.loads(text)
    assert record["username"] == username and record["server"] == cli.stack.base_url
    assert "BEGIN" not in text and "PRIVATE" not in text and PIN not in text
    assert set(record["sealed"]) >= {"kdf", "nonce", "ciphertext"} and "secret" not in text.replace("sealed", "")

    # A second activation of the same profile is refused; the code was used already anyway.
    again = cli.app("activate", uri, "--pin", PIN, expect=1)
    assert "activated already" in again.stderr

    shown = cli.app("code", "--pin", PIN).stdout
    assert re.search(rf"Code for {username}: \d{{5}} \d{{5}}", shown), shown
    assert 1 <= int(re.search(r"Valid for (\d+) more s", shown).group(1)) <= 30
    assert PIN not in shown
    answer = login(cli.stack.base_url, username, "".join(CODE.search(shown).groups()))
    assert answer.status_code == 200 and answer.json()["username"] == username

    plain = cli.app("code", "--plain", env={"MYCEPA_APP_PIN": PIN}).stdout
    assert re.fullmatch(r"\d{10}\n", plain)
    copied = cli.app("code", "--copy", "--pin", PIN, env={"PATH": "/nonexistent", "DISPLAY": ""})
    assert "No clipboard" in copied.stdout

    info = cli.app("info").stdout
    assert username in info and record["device_id"] in info and "BEGIN" not in info

    listed = cli.admin("devices", "list", username).stdout
    assert "DEVICE ID" in listed and record["device_id"] in listed and "CLI phone" in listed and "active" in listed


def test_activation_errors_are_plain(cli):
    refused = cli.app("activate", "AAAA-BBBB-CCCC-DDDD", "--server", cli.stack.base_url, "--pin", PIN, expect=1)
    assert refused.stderr.startswith("Error: ") and "HTTP 4" in refused.stderr
    assert not (cli.home / "default.json").exists()
    assert "4 to 12 digits" in cli.app("activate", "AAAA-BBBB-CCCC-DDDD", "--server", cli.stack.base_url,
                                       "--pin", "12ab", expect=2).stderr
    assert "--server" in cli.app("activate", "AAAA-BBBB-CCCC-DDDD", "--pin", PIN, expect=2).stderr
    # No PIN and no terminal to ask on: a clear refusal, never a hang.
    cli.activated_user()
    assert "A PIN is needed" in cli.app("code", expect=2).stderr


def test_wrong_pins_are_counted_then_delayed(cli):
    cli.activated_user()
    delay = {"MYCEPA_APP_PIN_DELAY_BASE": "1.5"}
    first = cli.app("code", "--pin", "1111", env=delay, expect=3)
    assert "Wrong PIN" in first.stderr and "2 more tries" in first.stderr and not CODE.search(first.stdout)
    cli.app("code", "--pin", "2222", env=delay, expect=3)
    third = cli.app("code", "--pin", "3333", env=delay, expect=3)
    assert "Wrong PIN" in third.stderr and "wait 1.5 s" in third.stderr
    assert cli.keystore()["pin"]["failures"] == 3

    # Even the right PIN waits, in a new process: the moment is in the keystore.
    waiting = cli.app("code", "--pin", PIN, env=delay, expect=4)
    assert "Too many wrong PINs: try again in" in waiting.stderr and not CODE.search(waiting.stdout)
    time.sleep(1.6)
    fourth = cli.app("code", "--pin", "4444", env=delay, expect=3)
    assert "wait 3.0 s" in fourth.stderr  # doubles
    record = cli.keystore()
    record["pin"]["retry_after"] = time.time() - 1  # skip the 3 s wait in this test only
    (cli.home / "default.json").write_text(json.dumps(record))
    assert CODE.search(cli.app("code", "--pin", PIN, env=delay).stdout)
    assert cli.keystore()["pin"] == {"failures": 0, "retry_after": None}


def test_push_login_approved_from_inbox(cli):
    username = cli.activated_user()
    browser = remembered_browser(cli, username)
    assert "No login requests waiting" in cli.app("inbox", "--pin", PIN).stdout
    request = push(cli, browser)

    inbox = cli.app("inbox", "--wait", "3", "--pin", PIN).stdout
    choices = re.search(r"Numbers:\s+(\d\d)\s+(\d\d)\s+(\d\d)", inbox).groups()
    assert username in inbox and request["number"] in choices
    assert "127.0.0.1" in inbox and "python-requests" in inbox and re.search(r"Expires:\s+in \d+ s", inbox)
    assert re.search(r"When:\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", inbox)
    challenge_id = re.search(r"Login request (\S+)", inbox).group(1)

    approved = cli.app("approve", "--challenge", challenge_id, "--number", request["number"], "--pin", PIN)
    assert "Approved" in approved.stdout

    assert push_status(cli, browser, request["request_id"]) == "approved"
    assert browser.get(f"{cli.stack.base_url}/api/me", timeout=10).json()["username"] == username
    again = cli.app("approve", "--challenge", challenge_id, "--number", request["number"], "--pin", PIN, expect=1)
    assert "No pending login request" in again.stderr

    # A number the phone offers but the browser does not show approves nothing: it denies
    # the request (architecture.md §5), and the app says so.
    assert browser.post(f"{cli.stack.base_url}/api/logout", timeout=10).status_code == 204
    request = push(cli, browser)
    inbox = cli.app("inbox", "--json", "--wait", "3", "--pin", PIN).stdout
    [pending] = json.loads(inbox)
    assert "nonce" not in pending and request["number"] in pending["number_choices"]
    wrong = next(number for number in pending["number_choices"] if number != request["number"])
    refused = cli.app("approve", "--number", wrong, "--pin", PIN, expect=1)
    assert "not the number the browser shows" in refused.stderr and "denied" in refused.stderr
    assert push_status(cli, browser, request["request_id"]) == "denied"
    assert browser.get(f"{cli.stack.base_url}/api/me", timeout=10).status_code == 401


def test_push_denied_as_fraud_and_cleared_by_admin(cli):
    username = cli.activated_user()
    browser = remembered_browser(cli, username)
    request = push(cli, browser)
    denied = cli.app("deny", "--fraud", "--wait", "3", "--pin", PIN).stdout
    assert "Denied" in denied and "fraud" in denied
    assert push_status(cli, browser, request["request_id"]) == "denied"

    assert "is blocked" in cli.admin("push-block", "show", username).stdout
    assert browser.post(f"{cli.stack.base_url}/api/login/push", timeout=10).status_code == 403
    assert "cleared" in cli.admin("push-block", "clear", username).stdout
    assert "not blocked" in cli.admin("push-block", "show", username).stdout
    assert "was not blocked" in cli.admin("push-block", "clear", username).stdout


def test_watch_answers_from_stdin(cli):
    username = cli.activated_user()
    browser = remembered_browser(cli, username)
    request = push(cli, browser)
    watched = cli.app("watch", "--once", "--interval", "0.3", "--timeout", "4", stdin=f"{request['number']}\ny\n",
                      env={"MYCEPA_APP_PIN": PIN})
    assert username in watched.stdout and request["number"] in watched.stdout
    assert "Which number does the browser show?" in watched.stdout and "Approved" in watched.stdout
    assert push_status(cli, browser, request["request_id"]) == "approved"

    # 'n' denies; without a fraud report push stays open.
    request = push(cli, browser)
    watched = cli.app("watch", "--once", "--interval", "0.3", "--timeout", "4", stdin="n\nn\n",
                      env={"MYCEPA_APP_PIN": PIN})
    assert "Denied." in watched.stdout
    assert push_status(cli, browser, request["request_id"]) == "denied"
    assert "not blocked" in cli.admin("push-block", "show", username).stdout

    quiet = cli.app("watch", "--once", "--interval", "0.3", "--timeout", "0.5", env={"MYCEPA_APP_PIN": PIN},
                    expect=1)
    assert "No login requests within" in quiet.stdout


def test_admin_unlock_revoke_and_token(cli):
    username = cli.activated_user()
    base = cli.stack.base_url
    for _ in range(4):
        login(base, username, "0123456789")
    assert login(base, username, cli.code()).status_code == 423
    assert f"{username} unlocked." in cli.admin("unlock", username).stdout
    assert f"{username} was not locked." in cli.admin("unlock", username).stdout
    assert login(base, username, cli.code()).status_code in (200, 401)  # 401 only if that step was used
    # The app tells of the lock on its next look (a security notice, once).
    deadline, told = time.monotonic() + 5, ""
    while "vergrendeld" not in told and time.monotonic() < deadline:
        told = cli.app("inbox", "--pin", PIN).stderr
    assert "Let op: Je account werd vergrendeld na 4 foute codes vanaf 127.0.0.1" in told
    assert "vergrendeld" not in cli.app("inbox", "--pin", PIN).stderr

    device_id = cli.keystore()["device_id"]
    revoked = cli.admin("devices", "revoke", device_id).stdout
    assert f"Revoked device {device_id}" in revoked and username in revoked
    assert "revoked" in cli.admin("devices", "list", username).stdout
    listing = json.loads(cli.admin("devices", "list", username, "--json").stdout)
    assert listing["devices"][0]["status"] == "revoked"
    refused = cli.app("inbox", "--pin", PIN, expect=1)
    assert refused.stderr.startswith("Error: ") and "HTTP 4" in refused.stderr
    assert cli.admin("devices", "revoke", "nonexistent", expect=1).stderr.startswith("Error: ")

    missing = cli.admin("unlock", username, env={"MYCEPA_ADMIN_TOKEN": ""}, expect=1)
    assert "No admin token" in missing.stderr
    wrong = cli.admin("--token", "x" * 32, "unlock", username, expect=1)
    assert "refused the admin token" in wrong.stderr
    assert "at least 24" in cli.admin("--token", "short", "unlock", username, expect=2).stderr
    env_file = cli.home.parent / "mycepa.env"
    env_file.write_text(f"MYCEPA_ADMIN_TOKEN={TEST_ENV['MYCEPA_ADMIN_TOKEN']}\n")
    assert "not locked" in cli.admin("--env-file", str(env_file), "unlock", username,
                                     env={"MYCEPA_ADMIN_TOKEN": ""}).stdout


def test_admin_credentials_and_the_audit_table(cli):
    name = f"cli-{secrets.token_hex(3)}"
    created = cli.admin("credentials", "create", name).stdout
    token = re.search(r"^  (\S{40,})$", created, re.M).group(1)
    assert f"Credential {name} created" in created
    username = f"W{secrets.randbelow(10**9):09d}"
    cli.admin("--token", token, "activation", "create", username, "--no-qr")
    assert login(cli.stack.base_url, username, "0123456789").status_code == 401

    def table():
        return cli.admin("audit", username).stdout

    deadline = time.monotonic() + 10
    while "OtpRejected" not in (shown := table()) and time.monotonic() < deadline:
        time.sleep(0.2)
    header, rule, *rows = shown.splitlines()
    assert header.split() == ["WHEN", "EVENT", "USER", "REASON", "ACTOR", "DEVICE", "FROM"]
    assert set(rule.replace(" ", "")) == {"-"}
    rejected = next(row for row in rows if "OtpRejected" in row)
    assert "invalid" in rejected and "127.0.0.1" in rejected
    assert name in next(row for row in rows if "ActivationCreated" in row)
    only = cli.admin("audit", username, "--type", "ActivationCreated").stdout
    assert "OtpRejected" not in only and "ActivationCreated" in only
    assert "No audit entries match." in cli.admin("audit", username, "--until", "2000-01-01T00:00:00Z").stdout
    assert "unknown event types" in cli.admin("audit", username, "--type", "Nope", expect=1).stderr

    assert name in cli.admin("credentials", "list").stdout
    assert f"Credential {name} revoked." in cli.admin("credentials", "revoke", name).stdout
    refused = cli.admin("--token", token, "devices", "list", username, expect=1)
    assert "refused the admin token" in refused.stderr
