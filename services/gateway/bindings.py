"""The browser's binding to its push login request: the `mycepa_push` cookie.

Only the browser that pressed "Stuur PUSH" may learn the outcome and receive the
session. The binding is a token the gateway signs (HMAC-SHA256 with a key kept in its
database, the same for every instance) naming the request, its user and its expiry, so
the gateway stores nothing per request: push owns the request, the browser carries the
proof that it is its own.
"""
import base64
import hashlib
import hmac
import json
import re
from datetime import datetime, timezone

_HEX_MAC = re.compile("[0-9a-f]{64}")


def binding_of(key, request_id, username, expires_at):
    payload = base64.urlsafe_b64encode(json.dumps(
        [request_id, username, int(expires_at.timestamp())], separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{payload}.{_mac(key, payload)}"


def bound_request(key, binding, request_id):
    """{request_id, username, expires_at} when `binding` is a signature of ours for
    `request_id`, else None (no cookie, a forged or altered one, another request's)."""
    payload, _, mac = (binding or "").partition(".")
    # The shape first: compare_digest raises on a str with non-ASCII characters, and
    # the cookie is the client's to choose.
    if not payload or len(binding) > 512 or not _HEX_MAC.fullmatch(mac) \
            or not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    bound_id, username, expires = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if bound_id != request_id:  # request ids are not secret: the signature is
        return None
    return {"request_id": bound_id, "username": username,
            "expires_at": datetime.fromtimestamp(expires, timezone.utc)}


def _mac(key, payload):
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
