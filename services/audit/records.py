"""What the audit trail keeps of an event: one record shape for every event of architecture.md §3.

`{event_id, type, occurred_at, username, actor, device_id, reason, source: {ip,
user_agent}, details}`, where `reason` is the event's own word for what happened (a
refusal's reason, how a session ended, the provider of a notification...) and `details`
the few other facts an investigator needs. Events carry no secret and no code
(shared/events.py); nothing else is copied, so nothing else can leak.
"""
from shared import events

# Fields copied into `details` when an event has them.
DETAILS = ("request_id", "challenge_id", "consecutive_failures", "hard", "until", "fraud", "permanent",
           "platform", "device_name", "method", "failures", "window_seconds", "retry_after", "action",
           "target", "outcome", "status", "expires_at", "active_devices_left", "by", "attempt_id")
# Where each event keeps what `reason` means for it.
REASON_FIELD = {
    events.OtpRejected.name: "reason", events.DeviceRevoked.name: "reason", events.PushFailed.name: "reason",
    events.AccessDenied.name: "reason", events.LoginAbandoned.name: "reason", events.SessionEnded.name: "reason",
    events.PushDispatched.name: "provider", events.AdminAction.name: "action", events.AccountUnlocked.name: "by",
    events.SessionStarted.name: "method",
}
BY_NAME = {event.name: event for event in events.ALL_EVENTS}


def record_of(event_type, payload):
    """The audit record of an event, or ValidationError if it is not one of ours."""
    event_cls = BY_NAME.get(event_type)
    if event_cls is None:
        raise events.ValidationError({"type": [f"unknown event {event_type!r}"]})
    event = events.parse_event(event_cls, payload)
    source = event.get("source")
    if source is None and event.get("context"):      # LoginRequested: the browser's context
        source = {"ip": event["context"]["ip"], "user_agent": event["context"]["user_agent"]}
    if source is None and event.get("ip"):           # LoginThrottled: the throttled address
        source = {"ip": event["ip"], "user_agent": ""}
    reason_field = REASON_FIELD.get(event_type)
    return {
        "_id": str(event["event_id"]), "type": event_type, "occurred_at": event["occurred_at"],
        "username": event.get("username"), "actor": event.get("actor"), "device_id": event.get("device_id"),
        "reason": event.get(reason_field) if reason_field else None,
        "source": source,
        "details": {key: event[key] for key in DETAILS if event.get(key) is not None and key != reason_field},
    }
