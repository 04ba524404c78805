"""Reading the audit trail: the admin query (filters, newest first, a cursor), a user's
own activity and their previous login, each a walk down one timeline (storage.py)."""
import base64
import binascii
from dataclasses import dataclass

from shared.clock import isoformat
from shared.errors import ValidationFailed
from services.audit.storage import ALL, type_scope, user_scope

# Timeline tickets one page may look at: a filter that matches rarely answers with a
# cursor to go on from, never with a scan of the whole trail.
SCAN_BUDGET = 2000
# What "the user's own activity" shows (architecture.md §4): sign-ins, refusals, locks, device changes.
ACTIVITY_TYPES = frozenset({"SessionStarted", "OtpRejected", "AccessDenied", "AccountLocked", "AccountUnlocked",
                            "DeviceActivated", "DeviceRevoked"})


@dataclass(frozen=True)
class Query:
    username: str = None
    types: list = None
    since: object = None
    until: object = None
    limit: int = 50
    cursor: str = None

    @property
    def scope(self):
        if self.username:
            return user_scope(self.username)
        if self.types and len(self.types) == 1:
            return type_scope(self.types[0])
        return ALL


def page_of(storage, query):
    """{events: [...], next: cursor or None} for the admin audit query."""
    before = _position(query.cursor, query.scope)
    wanted = set(query.types or ())
    found, scanned = [], 0
    for number, ticket in storage.walk(query.scope, before=before, until=None if before else query.until):
        if query.since is not None and ticket["occurred_at"] < query.since:
            return {"events": _views(storage, found), "next": None}
        scanned += 1
        if (not wanted or ticket["type"] in wanted) and (query.until is None or ticket["occurred_at"] <= query.until):
            found.append(ticket["event_id"])
            if len(found) == query.limit:
                return {"events": _views(storage, found), "next": _cursor(query.scope, number)}
        if scanned >= SCAN_BUDGET:
            return {"events": _views(storage, found), "next": _cursor(query.scope, number)}
    return {"events": _views(storage, found), "next": None}


def activity_of(storage, username, limit):
    found = []
    for scanned, (_, ticket) in enumerate(storage.walk(user_scope(username)), 1):
        if ticket["type"] in ACTIVITY_TYPES:
            found.append(ticket["event_id"])
        if len(found) == limit or scanned >= SCAN_BUDGET:
            break
    return {"events": _views(storage, found)}


def previous_login_of(storage, username, before):
    """The newest sign-in that started before `before` (the current session's start):
    {at, method, ip, user_agent}, or None for a first login."""
    for scanned, (_, ticket) in enumerate(storage.walk(user_scope(username)), 1):
        if ticket["type"] == "SessionStarted" and ticket["occurred_at"] < before:
            (entry,) = storage.entries([ticket["event_id"]]) or (None,)
            if entry is None:
                return None
            source = entry.get("source") or {}
            return {"at": isoformat(entry["occurred_at"]), "method": entry["reason"],
                    "ip": source.get("ip"), "user_agent": source.get("user_agent")}
        if scanned >= SCAN_BUDGET:
            break
    return None


def view(entry):
    """An entry as the API shows it (architecture.md §4)."""
    return {"event_id": entry["_id"], "type": entry["type"], "occurred_at": isoformat(entry["occurred_at"]),
            "username": entry.get("username"), "actor": entry.get("actor"), "device_id": entry.get("device_id"),
            "reason": entry.get("reason"), "source": entry.get("source"),
            "details": {key: isoformat(value) if hasattr(value, "isoformat") else value
                        for key, value in (entry.get("details") or {}).items()}}


def _views(storage, event_ids):
    """The entries newest first. Timelines are in arrival order, and events of different
    services arrive a few milliseconds out of their order: within a page, time decides."""
    entries = sorted(storage.entries(event_ids), key=lambda entry: entry["occurred_at"], reverse=True)
    return [view(entry) for entry in entries]


def _cursor(scope, number):
    return base64.urlsafe_b64encode(f"{scope}|{number}".encode()).decode().rstrip("=")


def _position(cursor, scope):
    """The ticket number a cursor continues below; ValidationFailed for someone else's."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        cursor_scope, number = text.rsplit("|", 1)
        number = int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        cursor_scope, number = None, 0
    if cursor_scope != scope or not 0 < number < 2 ** 53:
        raise ValidationFailed("Invalid request", fields={"cursor": ["not a cursor of this query"]})
    return number
