"""mycepa-admin: the operator's command line over the gateway's admin API (architecture.md §4).

It reads the same configuration as the services: the bearer token from
MYCEPA_ADMIN_TOKEN, the gateway from MYCEPA_URL, else MYCEPA_PUBLIC_URL, else
http://127.0.0.1:8000. `--env-file .data/mycepa.env` reads the file `make up` generated
(the environment still wins); --url and --token override everything.

Exit codes: 0 done, 1 refused or failed (the gateway's message is printed), 2 bad usage.
"""
import json
import os
import sys
import urllib.error
import urllib.parse
from pathlib import Path

import click

from clients.app import gateway_message, local_time
from clients.device import GatewayError, call

DEFAULT_URL = "http://127.0.0.1:8000"
MIN_TOKEN_LENGTH = 24  # what the gateway itself requires of MYCEPA_ADMIN_TOKEN


class Failed(click.ClickException):
    exit_code = 1


class Admin:
    def __init__(self, url, token):
        self.url, self.token = url.rstrip("/"), token

    def request(self, method, path, body=None):
        if not self.token:
            raise Failed("No admin token: set MYCEPA_ADMIN_TOKEN (as the services have it), "
                         "pass --env-file .data/mycepa.env, or --token.")
        try:
            _, answer = call(self.url, method, path, body, headers={"Authorization": f"Bearer {self.token}"})
            return answer
        except GatewayError as error:
            if error.status == 401:
                raise Failed(f"The gateway at {self.url} refused the admin token: check MYCEPA_ADMIN_TOKEN "
                             f"({gateway_message(error)}).") from None
            raise Failed(gateway_message(error)) from None
        except (urllib.error.URLError, OSError) as error:
            raise Failed(f"Cannot reach the gateway at {self.url}: {getattr(error, 'reason', error)}") from None


def quoted(value):
    return urllib.parse.quote(value, safe="")


def read_env_file(path):
    """KEY=VALUE lines (as `make up` writes .data/mycepa.env); '#' comments and blank lines skipped."""
    values = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="--env-file") from None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        values[key] = value.strip().strip("'\"")
    return values


def table(rows, headers):
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in (headers, ["-" * width for width in widths], *rows)]
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help="The gateway (default: MYCEPA_URL, MYCEPA_PUBLIC_URL, "
                                           f"{DEFAULT_URL}).")
@click.option("--token", metavar="TOKEN", help="The admin bearer token (default: MYCEPA_ADMIN_TOKEN).")
@click.option("--env-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Read settings from FILE too (KEY=VALUE lines, e.g. .data/mycepa.env); the environment wins.")
@click.pass_context
def cli(ctx, url, token, env_file):
    """MyCepa administration: activations, devices, locked accounts, fraud blocks, the audit
    trail and admin credentials."""
    # As the services: the environment, then the file; a variable set empty counts as unset.
    settings = {**(read_env_file(env_file) if env_file else {}),
                **{key: value for key, value in os.environ.items() if value}}
    url = url or settings.get("MYCEPA_URL") or settings.get("MYCEPA_PUBLIC_URL") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--url / MYCEPA_URL")
    token = token or settings.get("MYCEPA_ADMIN_TOKEN") or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise click.BadParameter(f"the admin token is at least {MIN_TOKEN_LENGTH} characters",
                                 param_hint="--token / MYCEPA_ADMIN_TOKEN")
    ctx.obj = Admin(url, token)


@cli.group()
def activation():
    """Activation codes for the OTP app."""


@activation.command("create")
@click.argument("username")
@click.option("--no-qr", is_flag=True, help="Do not draw the QR code.")
@click.option("--json", "as_json", is_flag=True, help="The gateway's answer as JSON, for scripts.")
@click.pass_obj
def create_activation(admin, username, no_qr, as_json):
    """Create an activation code for USERNAME (a werkboeknummer): code, URI and QR code."""
    answer = admin.request("POST", "/api/admin/activations", {"username": username})
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"Activation code: {answer['activation_code']}")
    click.echo(f"User:            {answer.get('username', username)}")
    click.echo(f"Expires:         {local_time(answer['expires_at'])}")
    click.echo(f"Activation URI:  {answer['activation_uri']}")
    if not no_qr:
        import segno
        click.echo()
        qr = segno.make(answer["activation_uri"], error="m")
        try:
            "█▀▄".encode(sys.stdout.encoding or "ascii")
            compact = True
        except (LookupError, UnicodeEncodeError):
            compact = False  # no block characters in this terminal's encoding: ANSI colours instead
        sys.stdout.flush()
        qr.terminal(out=sys.stdout, compact=compact)
        sys.stdout.flush()
    click.echo("\nScan the QR code with the OTP app, or enter the code: it works once, until it expires.")


@cli.group()
def devices():
    """A user's devices."""


@devices.command("list")
@click.argument("username")
@click.option("--json", "as_json", is_flag=True, help="The gateway's answer as JSON, for scripts.")
@click.pass_obj
def list_devices(admin, username, as_json):
    """The devices of USERNAME, active and revoked."""
    answer = admin.request("GET", f"/api/admin/users/{quoted(username)}/devices")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    found = answer.get("devices") or []
    if not found:
        click.echo(f"{username} has no devices.")
        return
    rows = [[device["device_id"], device.get("device_name") or "", device.get("platform") or "", device["status"],
             local_time(device.get("created_at")),
             local_time(device["last_used_at"]) if device.get("last_used_at") else "-"] for device in found]
    click.echo(table(rows, ["DEVICE ID", "NAME", "PLATFORM", "STATUS", "CREATED", "LAST USED"]))


@devices.command("revoke")
@click.argument("device_id")
@click.pass_obj
def revoke_device(admin, device_id):
    """Revoke DEVICE_ID: its codes stop working and it no longer confirms push logins."""
    device = admin.request("DELETE", f"/api/admin/devices/{quoted(device_id)}")
    click.echo(f"Revoked device {device['device_id']} ({device.get('device_name')}) of {device.get('username')}.")


@cli.command()
@click.argument("username")
@click.pass_obj
def unlock(admin, username):
    """Unlock USERNAME after too many wrong codes."""
    answer = admin.request("POST", f"/api/admin/users/{quoted(username)}/unlock")
    click.echo(f"{username} unlocked." if answer.get("was_locked") else f"{username} was not locked.")


@cli.group("push-block")
def push_block():
    """The push block a fraud report sets."""


@push_block.command("show")
@click.argument("username")
@click.pass_obj
def show_push_block(admin, username):
    """Whether push login of USERNAME is blocked after a fraud report."""
    answer = admin.request("GET", f"/api/admin/users/{quoted(username)}/push-block")
    if answer.get("blocked"):
        since = f" since {local_time(answer['since'])}" if answer.get("since") else ""
        click.echo(f"Push login for {username} is blocked{since} (a login request was reported as fraud).")
        click.echo(f"Clear it with: mycepa-admin push-block clear {username}")
    else:
        click.echo(f"Push login for {username} is not blocked.")


@push_block.command("clear")
@click.argument("username")
@click.pass_obj
def clear_push_block(admin, username):
    """Allow push login of USERNAME again after a fraud report."""
    answer = admin.request("DELETE", f"/api/admin/users/{quoted(username)}/push-block")
    click.echo(f"Push block of {username} cleared." if answer.get("was_blocked")
               else f"Push login for {username} was not blocked.")


@cli.command()
@click.argument("username", required=False)
@click.option("--type", "types", metavar="TYPE[,TYPE]", help="Only these event types (e.g. OtpRejected,AccountLocked).")
@click.option("--since", metavar="TIME", help="From this ISO-8601 time on (e.g. 2026-12-01T00:00:00Z).")
@click.option("--until", metavar="TIME", help="Up to this ISO-8601 time.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True, help="Entries per page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow the cursor to the last page.")
@click.option("--json", "as_json", is_flag=True, help="The gateway's answer as JSON, for scripts.")
@click.pass_obj
def audit(admin, username, types, since, until, limit, all_pages, as_json):
    """The audit trail of USERNAME (or of everyone), newest first: who logged in, when,
    from where, with which device, and who was refused."""
    query = {key: value for key, value in (("username", username), ("type", types), ("since", since),
                                           ("until", until), ("limit", limit)) if value}
    entries, cursor = [], None
    while True:
        page = admin.request("GET", "/api/admin/audit?" + urllib.parse.urlencode(
            {**query, **({"cursor": cursor} if cursor else {})}))
        entries += page["events"]
        cursor = page.get("next")
        if not (all_pages and cursor):
            break
    if as_json:
        click.echo(json.dumps({"events": entries, "next": cursor}, indent=2))
        return
    if not entries:
        click.echo("No audit entries match.")
        return
    rows = [[local_time(entry["occurred_at"]), entry["type"], entry.get("username") or "-",
             entry.get("reason") or "", entry.get("actor") or "", entry.get("device_id") or "",
             (entry.get("source") or {}).get("ip") or ""] for entry in entries]
    click.echo(table(rows, ["WHEN", "EVENT", "USER", "REASON", "ACTOR", "DEVICE", "FROM"]))
    if cursor:
        click.echo(f"\nMore entries: add --all, or ask the API with cursor={cursor}")


@cli.group()
def credentials():
    """Named admin credentials: each admin request is audited with the credential's name."""


@credentials.command("create")
@click.argument("name")
@click.pass_obj
def create_credential(admin, name):
    """A credential NAME; its token is shown once (only its hash is kept)."""
    answer = admin.request("POST", "/api/admin/credentials", {"name": name})
    click.echo(f"Credential {answer['name']} created. Its token, shown once:\n\n  {answer['token']}\n")
    click.echo("Use it as MYCEPA_ADMIN_TOKEN (or --token); revoke it with: "
               f"mycepa-admin credentials revoke {answer['name']}")


@credentials.command("list")
@click.pass_obj
def list_credentials(admin):
    """The credentials, with when they were made and revoked (never their tokens)."""
    answer = admin.request("GET", "/api/admin/credentials")
    rows = [[c["name"], local_time(c["created_at"]) if c.get("created_at") else "(MYCEPA_ADMIN_TOKEN)",
             local_time(c["revoked_at"]) if c.get("revoked_at") else "-"] for c in answer["credentials"]]
    click.echo(table(rows, ["NAME", "CREATED", "REVOKED"]))


@credentials.command("revoke")
@click.argument("name")
@click.pass_obj
def revoke_credential(admin, name):
    """Revoke credential NAME: its token is refused from now on."""
    admin.request("DELETE", f"/api/admin/credentials/{quoted(name)}")
    click.echo(f"Credential {name} revoked.")


def main():
    cli(prog_name="mycepa-admin")


if __name__ == "__main__":
    main()
