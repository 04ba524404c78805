"""Security notices for the user's devices (architecture.md §4): what happened to their account
that they should know of, told to every active device once.

Each event below becomes a notice `{notice_id, kind, occurred_at, context}`: the
`notice_id` is the event's id (a redelivered event makes no second notice), the context
only what the user can act on (never a secret or a code).
"""
from shared import events

# The events notices come from, and the kind of notice each makes.
KINDS = {
    events.AccountLocked: "account_locked",
    events.OtpRejected: "code_replayed",        # only reason "replayed"
    events.DeviceActivated: "device_activated",
    events.DeviceRevoked: "device_revoked",
    events.AccessDenied: "push_denied",         # "fraud_reported" when reported
}
SOURCES = tuple(KINDS)
SOURCES_BY_NAME = {event_cls.name: event_cls for event_cls in SOURCES}
# Notices a device is shown at most, newest first.
SHOWN = 20
# How long APNs / FCM keep trying to deliver a notice's alert to a phone that is off.
ALERT_TTL_SECONDS = 24 * 3600
# The alert a push device gets (the app shows the same notice from its next poll).
ALERT_TITLE = "MyCepa: let op"
ALERT_BODY = {
    "account_locked": "Aanmelden met een code is vergrendeld na {consecutive_failures} foute codes{from_ip}.",
    "code_replayed": "Een code van je app werd opnieuw gebruikt{from_ip}.",
    "device_activated": "Een nieuwe OTP-app werd geactiveerd op je account: {device_name}.",
    "device_revoked": "Een OTP-app werd van je account verwijderd.",
    "push_denied": "Een PUSH-aanmelding werd geweigerd.",
    "fraud_reported": "Een PUSH-aanmelding werd als fraude gemeld: PUSH is geblokkeerd tot een beheerder het vrijgeeft.",
}


def notice_of(event_cls, event):
    """The notice an event makes, or None (an event that is no notice)."""
    kind = KINDS[event_cls]
    if event_cls is events.OtpRejected and event["reason"] != "replayed":
        return None
    if event_cls is events.AccessDenied and event["fraud"]:
        kind = "fraud_reported"
    source = event.get("source") or {}
    context = {key: value for key, value in {
        "ip": source.get("ip"),
        "consecutive_failures": event.get("consecutive_failures"),
        "hard": event.get("hard"), "until": event.get("until"),
        "device_name": event.get("device_name"), "platform": event.get("platform"),
        "reason": event.get("reason") if event_cls in (events.DeviceRevoked, events.AccessDenied) else None,
    }.items() if value is not None}
    return {"_id": str(event["event_id"]), "username": event["username"], "kind": kind,
            "occurred_at": event["occurred_at"], "device_id": event.get("device_id"), "context": context}


def alert_of(notice):
    """(title, body) of a notice's plain alert."""
    context = notice["context"]
    fields = {"consecutive_failures": context.get("consecutive_failures", "?"),
              "device_name": context.get("device_name", "?"),
              "from_ip": f" vanaf {context['ip']}" if context.get("ip") else ""}
    return ALERT_TITLE, ALERT_BODY[notice["kind"]].format(**fields)
