"""mycepa-app: the reference OTP app, on the command line.

It speaks only the public device protocol of architecture.md §4 (through clients/device.py), so it
is the model for the mobile apps: activate with an activation code or URI, show the
10-digit code, and confirm push logins by polling (inbox, approve, deny, watch).

The device's EC P-256 key and OTP secret live in a local keystore sealed by a PIN
(clients/keystore.py): one file per profile in $MYCEPA_APP_HOME or ~/.config/mycepa-app/.
The PIN is asked on the terminal; scripts pass --pin or set MYCEPA_APP_PIN.

Exit codes: 0 done, 1 refused or failed (the gateway's message is printed), 2 bad usage,
3 wrong PIN, 4 waiting after too many wrong PINs.
"""
import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
from contextlib import contextmanager
from datetime import datetime, timezone

import click
import pyotp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clients import keystore
from clients.device import Device, GatewayError, answer_challenge, poll, update_push_token

EXIT_FAILED, EXIT_WRONG_PIN, EXIT_PIN_DELAY = 1, 3, 4
DIGESTS = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
CLIPBOARD_TOOLS = (  # (program, arguments, needs): the first one present whose display is there
    ("wl-copy", [], "WAYLAND_DISPLAY"),
    ("xclip", ["-selection", "clipboard"], "DISPLAY"),
    ("xsel", ["--clipboard", "--input"], "DISPLAY"),
    ("pbcopy", [], None),
)


class Failed(click.ClickException):
    """Printed as 'Error: <message>' on stderr; the exit code says what kind of failure."""

    def __init__(self, message, exit_code=EXIT_FAILED, status=None):
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status  # the gateway's HTTP status, when it refused


# -- the unlocked app --------------------------------------------------------------------

class App:
    def __init__(self, profile):
        self.profile = profile
        try:
            self.path = keystore.profile_path(profile)
        except keystore.KeystoreError as error:
            raise click.BadParameter(str(error), param_hint="--profile") from None
        self.record = None
        self.device = None

    def unlock(self, pin):
        """The Device of this profile, its secrets opened with the PIN."""
        try:
            keystore.read(self.path)  # a missing profile is said before a PIN is asked
            pin = ask_pin(pin)
            self.record, secrets = keystore.unlock(self.path, pin)
        except keystore.WrongPin as error:
            raise Failed(str(error), EXIT_WRONG_PIN) from None
        except keystore.PinDelay as error:
            raise Failed(str(error), EXIT_PIN_DELAY) from None
        except keystore.BadPin as error:
            raise Failed(f"{error} Wrong PIN.", EXIT_WRONG_PIN) from None
        except keystore.KeystoreError as error:
            raise Failed(str(error)) from None
        key = serialization.load_pem_private_key(secrets["private_key"].encode("ascii"), password=None)
        otp = self.record["otp"]
        self.device = Device(self.record["server"], key, device_id=self.record["device_id"],
                             username=self.record["username"], secret=secrets["otp_secret"],
                             digits=otp["digits"], period=otp["period"])
        return self.device

    def code(self, at=None):
        """(code, seconds it stays valid) at unix time `at` (now)."""
        otp = self.record["otp"]
        digest = getattr(hashlib, DIGESTS.get(str(otp.get("algorithm", "SHA1")).upper(), "sha1"))
        moment = time.time() if at is None else at
        totp = pyotp.TOTP(self.device.secret, digits=otp["digits"], interval=otp["period"], digest=digest)
        return totp.at(moment), otp["period"] - int(moment) % otp["period"]


def ask_pin(given, confirm=False):
    """The PIN from --pin / MYCEPA_APP_PIN, else asked on the terminal (twice when `confirm`)."""
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise Failed("A PIN is needed: pass --pin or set MYCEPA_APP_PIN (there is no terminal to ask on).", 2)
    pin = getpass.getpass("PIN: " if not confirm else "Choose a PIN (4-12 digits): ")
    if confirm:
        try:
            keystore.check_pin(pin)
        except keystore.BadPin as error:
            raise Failed(str(error), 2) from None
        if getpass.getpass("The same PIN again: ") != pin:
            raise Failed("The two PINs differ; nothing was changed.", 2)
    return pin


@contextmanager
def talking_to(server):
    """Gateway refusals and network trouble as one plain line and exit code 1."""
    try:
        yield
    except GatewayError as error:
        raise Failed(gateway_message(error), status=error.status) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise Failed(f"Cannot reach the server {server}: {reason}") from None


def gateway_message(error):
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") or (error.body if isinstance(error.body, str) and error.body else "refused")
    details = "; ".join(f"{name}: {' '.join(map(str, problems)) if isinstance(problems, list) else problems}"
                        for name, problems in (body.get("fields") or {}).items())
    code = body.get("error", "error")
    return f"{message}{f' ({details})' if details else ''} [{code}, HTTP {error.status}]"


# -- showing a login request ---------------------------------------------------------------

def local_time(value):
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def seconds_left(value):
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0, round(moment.timestamp() - time.time()))


def describe(challenge):
    context = challenge.get("context") or {}
    left = seconds_left(challenge.get("expires_at"))
    return "\n".join([
        f"Login request {challenge['challenge_id']}",
        f"  Who:      {challenge.get('username')}",
        f"  From:     {context.get('ip', '?')}, {context.get('user_agent') or 'unknown browser'}",
        f"  When:     {local_time(context.get('requested_at'))}",
        f"  Expires:  {'in %d s' % left if left is not None else challenge.get('expires_at')}",
        f"  Numbers:  {'   '.join(challenge.get('number_choices') or []) or 'type the number the browser shows'}",
    ])


NOTICES = {
    "account_locked": lambda c: ("Je account werd vergrendeld na {consecutive_failures} foute codes".format(**c)
                                 + (f" vanaf {c['ip']}" if c.get("ip") else "")
                                 + (": een beheerder moet het ontgrendelen" if c.get("hard") else "")),
    "code_replayed": lambda c: "Een code van je app werd opnieuw gebruikt" + (f" vanaf {c['ip']}" if c.get("ip") else ""),
    "device_activated": lambda c: f"Een nieuwe OTP-app werd geactiveerd: {c.get('device_name', '?')}",
    "device_revoked": lambda c: "Een OTP-app werd van je account verwijderd",
    "push_denied": lambda c: "Een PUSH-aanmelding werd geweigerd"
                             + (" (fout getal gekozen)" if c.get("reason") == "wrong_number" else ""),
    "fraud_reported": lambda c: "Een PUSH-aanmelding werd als fraude gemeld: PUSH is geblokkeerd tot een "
                                "beheerder het vrijgeeft",
}


def notice_text(notice):
    """A security notice as the user reads it, with when it happened."""
    say = NOTICES.get(notice["kind"])
    try:
        text = say(notice.get("context") or {}) if say else notice["kind"]
    except (KeyError, ValueError):
        text = notice["kind"]
    return f"Let op: {text} ({local_time(notice.get('occurred_at'))})."


def fetch(device, wait=0.0, interval=0.5):
    """The pending challenges; with `wait`, polled until there is one or `wait` seconds
    passed. Security notices that come with a poll are shown (on stderr) as they come:
    each reaches this device once."""
    deadline = time.monotonic() + wait
    with talking_to(device.base_url):
        while True:
            answer = poll(device)
            for notice in answer.get("notices", []):
                click.echo(notice_text(notice), err=True)
            if answer["challenges"] or time.monotonic() >= deadline:
                return answer["challenges"]
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def pick(challenges, challenge_id=None, number=None):
    """The one challenge the user means, or Failed saying how to name it."""
    if challenge_id:
        for challenge in challenges:
            if challenge["challenge_id"] == challenge_id:
                return challenge
        raise Failed(f"No pending login request {challenge_id} (answered, expired, or never sent to this device).")
    if not challenges:
        raise Failed("No login requests waiting.")
    if number is not None:
        matching = [challenge for challenge in challenges if number in challenge.get("number_choices", [])]
        if len(matching) == 1:
            return matching[0]
        challenges = matching or challenges
    if len(challenges) == 1:
        return challenges[0]
    if not sys.stdin.isatty():
        raise Failed(f"{len(challenges)} login requests are waiting: name one with --challenge ID (see inbox).")
    for index, challenge in enumerate(challenges, 1):
        click.echo(f"[{index}] {describe(challenge)}\n")
    index = click.prompt("Which request", type=click.IntRange(1, len(challenges)))
    return challenges[index - 1]


TWO_DIGITS = re.compile(r"[0-9]{2}")


def ask_number(challenge):
    """The number the user picks among the choices, or types when there are none
    (PUSH_NUMBER_ENTRY=type)."""
    choices = challenge["number_choices"]
    if not choices:
        return click.prompt("Type the number the browser shows", value_proc=typed_number)
    return click.prompt("Which number does the browser show?", type=click.Choice(choices), show_choices=True)


def typed_number(text):
    if not TWO_DIGITS.fullmatch(text.strip()):
        raise click.BadParameter("type the two digits the browser shows")
    return text.strip()


def answer(device, challenge, decision, number="", fraud=False):
    with talking_to(device.base_url):
        try:
            answered = answer_challenge(device, challenge, decision, number, fraud=fraud)
        except GatewayError as error:
            if error.status == 410:
                raise Failed("This login request has expired.") from None
            if error.status == 409:
                raise Failed("This login request was answered already.") from None
            raise
    if answered.get("reason") == "wrong_number":
        raise Failed(f"{number} is not the number the browser shows: the login request is denied. "
                     "If it was you, send a new PUSH from the browser.")
    return answered


# -- commands ----------------------------------------------------------------------------

pin_option = click.option("--pin", envvar="MYCEPA_APP_PIN", metavar="PIN",
                          help="The PIN, for scripts (else it is asked; env MYCEPA_APP_PIN).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--profile", envvar="MYCEPA_APP_PROFILE", default="default", show_default=True,
              help="Which activated device to use (one keystore file each; env MYCEPA_APP_PROFILE).")
@click.pass_context
def cli(ctx, profile):
    """MyCepa OTP app: 10-digit login codes and push login confirmation.

    Keystores live in $MYCEPA_APP_HOME, else in the user's config directory
    (~/.config/mycepa-app on Linux).
    """
    ctx.obj = App(profile)


def parse_activation(code_or_uri, server):
    """(activation code, server URL) from a code or a mycepa://activate?code=...&server=... URI."""
    value = code_or_uri.strip()
    if value.lower().startswith("mycepa:"):
        parts = urllib.parse.urlsplit(value)
        if parts.netloc != "activate" and parts.path.strip("/") != "activate":
            raise click.BadParameter("not a mycepa://activate URI", param_hint="CODE_OR_URI")
        query = urllib.parse.parse_qs(parts.query)
        code = (query.get("code") or [""])[0]
        server = server or (query.get("server") or [None])[0]
        if not code:
            raise click.BadParameter("the activation URI has no code", param_hint="CODE_OR_URI")
    else:
        code = value
    if not server:
        raise click.UsageError("Which server? Pass --server URL, or the activation URI (it carries the server).")
    if not server.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http(s) URL", param_hint="--server")
    return code, server.rstrip("/")


@cli.command()
@click.argument("code_or_uri")
@click.option("--server", metavar="URL", envvar="MYCEPA_APP_SERVER",
              help="The MyCepa server (taken from the activation URI when given one).")
@click.option("--platform", type=click.Choice(["poll", "ios", "android"]), default="poll", show_default=True,
              help="How login requests reach this device: it polls, or APNs / FCM with --push-token.")
@click.option("--push-token", metavar="TOKEN", help="The APNs / FCM token (ios and android).")
@click.option("--name", "device_name", metavar="NAME", help="The device's name, as admins see it.")
@click.option("--force", is_flag=True, help="Replace this profile's keystore if there is one.")
@pin_option
@click.pass_obj
def activate(app, code_or_uri, server, platform, push_token, device_name, force, pin):
    """Activate this app with an activation code or the activation URI."""
    code, server = parse_activation(code_or_uri, server)
    if platform != "poll" and not push_token:
        raise click.UsageError(f"--platform {platform} needs --push-token")
    if app.path.exists() and not force:
        try:
            existing = keystore.read(app.path)
            whose = f" (user {existing.get('username')}, device {existing.get('device_id')})"
        except keystore.KeystoreError:
            whose = ""
        raise Failed(f"Profile '{app.profile}' is activated already{whose}: "
                     f"use --profile NAME for another, or --force to replace it.")
    # The PIN first: the activation code works once, so nothing may fail after it is used.
    pin = ask_pin(pin, confirm=True)
    try:
        keystore.check_pin(pin)
    except keystore.BadPin as error:
        raise Failed(str(error), 2) from None
    try:
        app.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(app.path.parent, os.W_OK):
            raise PermissionError(f"{app.path.parent} is not writable")
    except OSError as error:
        raise Failed(f"Cannot keep a keystore in {app.path.parent}: {error}") from None
    device_name = device_name or f"mycepa-app on {socket.gethostname()}"[:64]
    device = Device(server, ec.generate_private_key(ec.SECP256R1()))
    with talking_to(server):
        activation = device.activate(code, platform=platform, push_token=push_token if platform != "poll" else None,
                                     device_name=device_name, until_served=False)
    record = keystore.new_record(app.profile, server, activation["device_id"], activation["username"],
                                 device_name, platform, activation["otp"])
    private_pem = device.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()).decode("ascii")
    try:
        keystore.create(app.path, record, {"private_key": private_pem, "otp_secret": activation["otp"]["secret"]},
                        pin, overwrite=True)
    except (OSError, keystore.KeystoreError) as error:
        raise Failed(f"Device {activation['device_id']} was activated, but its keystore could not be written "
                     f"({error}): ask an administrator to revoke it and to create a new activation.") from None
    device.until_served()   # after the keystore: the activation code is used up already
    click.echo(f"Activated for {activation['username']} on {server}.")
    click.echo(f"Device id: {activation['device_id']}")
    click.echo(f"Keystore:  {app.path} (sealed with your PIN)")
    if platform == "poll":
        click.echo("Login requests reach this app by polling: use 'mycepa-app watch' or 'mycepa-app inbox'.")


def group_digits(code):
    middle = len(code) // 2
    return f"{code[:middle]} {code[middle:]}"


def copy_to_clipboard(text):
    """The tool that took `text`, or None when there is no clipboard here."""
    for program, arguments, needs in CLIPBOARD_TOOLS:
        path = shutil.which(program)
        if not path or (needs and not os.environ.get(needs)):
            continue
        try:
            subprocess.run([path, *arguments], input=text.encode(), check=True, timeout=5,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return program
        except (OSError, subprocess.SubprocessError):
            continue
    return None


@cli.command()
@click.option("--copy", is_flag=True, help="Also copy the code to the clipboard (wl-copy, xclip, xsel, pbcopy).")
@click.option("--plain", is_flag=True, help="Print the digits alone, for scripts.")
@pin_option
@click.pass_obj
def code(app, copy, plain, pin):
    """Unlock with the PIN and show the 10-digit login code."""
    app.unlock(pin)
    value, left = app.code()
    if plain:
        click.echo(value)
    else:
        click.echo(f"Code for {app.record['username']}: {group_digits(value)}")
        click.echo(f"Valid for {left} more s.")
    if copy:
        tool = copy_to_clipboard(value)
        message = (f"Copied to the clipboard ({tool})." if tool else
                   "No clipboard here (wl-copy, xclip, xsel or pbcopy with a display): type the code instead.")
        click.echo(message, err=plain)


@cli.command()
@click.option("--wait", type=click.FloatRange(0, 120), default=0, metavar="S",
              help="Wait up to S seconds for a login request when none is waiting.")
@click.option("--json", "as_json", is_flag=True, help="The pending requests as JSON (no nonce), for scripts.")
@pin_option
@click.pass_obj
def inbox(app, wait, as_json, pin):
    """The login requests waiting for this device: who, from where, when, the numbers."""
    device = app.unlock(pin)
    challenges = fetch(device, wait)
    if as_json:
        shown = [{key: value for key, value in challenge.items() if key != "nonce"} for challenge in challenges]
        click.echo(json.dumps(shown, indent=2))
        return
    if not challenges:
        click.echo("No login requests waiting.")
        return
    click.echo(f"{len(challenges)} login request{'s' if len(challenges) > 1 else ''} waiting:\n")
    click.echo("\n\n".join(describe(challenge) for challenge in challenges))


@cli.command()
@click.option("--challenge", "challenge_id", metavar="ID", help="Which request (see inbox); needed when several wait.")
@click.option("--number", metavar="NN", help="The number the browser shows (else it is asked).")
@click.option("--wait", type=click.FloatRange(0, 120), default=0, metavar="S",
              help="Wait up to S seconds for a login request when none is waiting.")
@pin_option
@click.pass_obj
def approve(app, challenge_id, number, wait, pin):
    """Confirm a login ("Bevestig toegang") with the number the browser shows."""
    device = app.unlock(pin)
    challenge = pick(fetch(device, wait), challenge_id, number)
    if number is None:
        click.echo(describe(challenge))
        number = ask_number(challenge)
    elif challenge["number_choices"] and number not in challenge["number_choices"]:
        raise Failed(f"{number} is not one of this request's numbers "
                     f"({', '.join(challenge['number_choices'])}): not approved.")
    answer(device, challenge, "approve", number)
    click.echo(f"Approved: {challenge['username']} is logged in on that browser.")


@cli.command()
@click.option("--challenge", "challenge_id", metavar="ID", help="Which request (see inbox); needed when several wait.")
@click.option("--fraud", is_flag=True,
              help="You did not ask to log in: report it; push login stays blocked until an admin clears it.")
@click.option("--wait", type=click.FloatRange(0, 120), default=0, metavar="S",
              help="Wait up to S seconds for a login request when none is waiting.")
@pin_option
@click.pass_obj
def deny(app, challenge_id, fraud, wait, pin):
    """Refuse a login request."""
    device = app.unlock(pin)
    challenge = pick(fetch(device, wait), challenge_id)
    answer(device, challenge, "deny", "", fraud=fraud)
    click.echo(f"Denied the login request for {challenge['username']}.")
    if fraud:
        click.echo("Reported as fraud: push login is blocked for this account until an administrator clears it.")


def handle(device, challenge):
    """Show one request and ask what to do; True when it was answered."""
    click.echo("\n" + describe(challenge))
    choices = challenge["number_choices"]
    if choices:
        reply = click.prompt(f"Which number does the browser show? ({', '.join(choices)}; "
                             f"'n' if you did not ask to log in)", type=click.Choice([*choices, "n"]),
                             show_choices=False)
    else:
        reply = click.prompt("Type the number the browser shows ('n' if you did not ask to log in)",
                             value_proc=lambda text: "n" if text.strip() == "n" else typed_number(text))
    try:
        if reply == "n":
            fraud = click.confirm("Report it as fraud (push login stays blocked until an admin clears it)?",
                                  default=False)
            answer(device, challenge, "deny", "", fraud=fraud)
            click.echo("Denied" + (" and reported as fraud." if fraud else "."))
        elif click.confirm(f"Confirm access for {challenge['username']} (Bevestig toegang)?", default=False):
            answer(device, challenge, "approve", reply)
            click.echo(f"Approved: {challenge['username']} is logged in on that browser.")
        else:
            answer(device, challenge, "deny", "")
            click.echo("Not confirmed: denied.")
    except Failed as error:
        click.echo(f"Error: {error.message}", err=True)
        return False
    return True


@cli.command()
@click.option("--interval", type=click.FloatRange(0.2, 600), default=2.0, show_default=True, metavar="S",
              help="Seconds between polls.")
@click.option("--once", is_flag=True, help="Stop after the first login request.")
@click.option("--timeout", type=click.FloatRange(0), metavar="S", help="Stop after S seconds.")
@pin_option
@click.pass_obj
def watch(app, interval, once, timeout, pin):
    """Wait for login requests and ask about each (approve with the browser's number, or deny)."""
    device = app.unlock(pin)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = set()
    click.echo(f"Waiting for login requests for {device.username} (Ctrl-C stops)...")
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                challenges = fetch(device)
            except Failed as error:
                if error.status in (400, 401, 403, 404):  # revoked, or a key the server refuses: no use polling
                    raise
                click.echo(f"Error: {error.message} (trying again)", err=True)
                challenges = []
            for challenge in challenges:
                if challenge["challenge_id"] in seen:
                    continue
                seen.add(challenge["challenge_id"])
                answered = handle(device, challenge)
                if once:
                    if not answered:
                        sys.exit(EXIT_FAILED)
                    return
            pause = interval if deadline is None else min(interval, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
    except (KeyboardInterrupt, click.Abort, EOFError):
        click.echo("\nStopped.")
        sys.exit(130 if not once else EXIT_FAILED)
    click.echo(f"No {'more ' if seen else ''}login requests within {timeout:g} s.")
    if once:
        sys.exit(EXIT_FAILED)


@cli.command("push-token")
@click.argument("token")
@pin_option
@click.pass_obj
def push_token(app, token, pin):
    """Tell the server this device's new APNs / FCM push token (signed)."""
    device = app.unlock(pin)
    with talking_to(device.base_url):
        update_push_token(device, token)
    click.echo("Push token updated.")


@cli.command()
@click.pass_obj
def info(app):
    """The profile (server, user, device): no PIN needed, nothing secret shown."""
    try:
        record = keystore.read(app.path)
    except keystore.KeystoreError as error:
        raise Failed(str(error)) from None
    failures = (record.get("pin") or {}).get("failures") or 0
    for label, value in (("Profile", app.profile), ("Keystore", app.path), ("Server", record["server"]),
                         ("User", record["username"]), ("Device id", record["device_id"]),
                         ("Device name", record.get("device_name")), ("Platform", record.get("platform")),
                         ("Activated", local_time(record.get("activated_at"))),
                         ("Wrong PINs", failures)):
        click.echo(f"{label + ':':13}{value}")


@cli.command("change-pin")
@click.option("--pin", envvar="MYCEPA_APP_PIN", metavar="PIN", help="The current PIN (else it is asked).")
@click.option("--new-pin", envvar="MYCEPA_APP_NEW_PIN", metavar="PIN", help="The new PIN (else it is asked twice).")
@click.pass_obj
def change_pin(app, pin, new_pin):
    """Seal the keystore under a new PIN."""
    try:
        keystore.read(app.path)
        old = ask_pin(pin)
        new = ask_pin(new_pin, confirm=True)
        keystore.reseal(app.path, old, new)
    except keystore.WrongPin as error:
        raise Failed(str(error), EXIT_WRONG_PIN) from None
    except keystore.PinDelay as error:
        raise Failed(str(error), EXIT_PIN_DELAY) from None
    except keystore.KeystoreError as error:
        raise Failed(str(error)) from None
    click.echo("PIN changed.")


def main():
    cli(prog_name="mycepa-app")


if __name__ == "__main__":
    main()
