"""What the audit trail keeps of each event (services/audit/records.py): one record shape
for all of architecture.md §3, with the source where a person acted and the actor where an admin
did, and nothing an event does not carry."""
from datetime import datetime, timedelta, timezone

import pytest

from shared import events
from services.audit.records import BY_NAME, record_of

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
SOURCE = {"ip": "203.0.113.7", "user_agent": "Firefox"}
# A valid payload of every event, as its producer builds it.
PAYLOADS = {
    "LoginRequested": dict(request_id="lr_1", username="W1", number="42", expires_at=NOW,
                           context={**SOURCE, "requested_at": NOW}),
    "PushDispatched": dict(request_id="lr_1", challenge_id="ch_1", username="W1", device_id="dev_1", provider="apns"),
    "PushFailed": dict(request_id="lr_1", challenge_id="ch_1", username="W1", device_id="dev_1", provider="fcm",
                       reason="Unregistered", permanent=True),
    "AccessConfirmed": dict(request_id="lr_1", challenge_id="ch_1", username="W1", device_id="dev_1"),
    "AccessDenied": dict(request_id="lr_1", challenge_id="ch_1", username="W1", device_id="dev_1", fraud=False,
                         reason="wrong_number"),
    "LoginExpired": dict(request_id="lr_1", username="W1"),
    "OtpVerified": dict(username="W1", device_id="dev_1", source=SOURCE),
    "OtpRejected": dict(username="W1", reason="invalid", consecutive_failures=4, source=SOURCE),
    "AccountLocked": dict(username="W1", consecutive_failures=6, hard=False, until=NOW + timedelta(seconds=30)),
    "AccountUnlocked": dict(username="W1", by="admin", actor="alice"),
    "DeviceActivated": dict(device_id="dev_1", username="W1", platform="ios", push_token="token",
                            public_key="-----BEGIN PUBLIC KEY-----", device_name="Phone"),
    "DeviceRevoked": dict(device_id="dev_1", username="W1", reason="admin", active_devices_left=0, actor="alice"),
    "LoginAbandoned": dict(username="W1", attempt_id="0" * 32, reason="unavailable"),
    "LoginThrottled": dict(ip="203.0.113.7", failures=50, window_seconds=300, retry_after=42),
    "ActivationCreated": dict(username="W1", actor="alice", expires_at=NOW),
    "SessionStarted": dict(username="W1", method="push", device_id="dev_1", source=SOURCE),
    "SessionEnded": dict(username="W1", method="code", device_id="dev_1", reason="admin", actor="alice"),
    "AdminAction": dict(actor="unknown", action="unlock", username="W1", outcome="refused", status=401,
                        source=SOURCE),
}


def test_every_event_has_a_payload_here():
    assert set(PAYLOADS) == set(events.EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(PAYLOADS))
def test_every_event_becomes_one_record_shape(event_type):
    event = events.build_event(BY_NAME[event_type], **PAYLOADS[event_type])
    record = record_of(event_type, event)
    assert set(record) == {"_id", "type", "occurred_at", "username", "actor", "device_id", "reason", "source",
                           "details"}
    assert record["_id"] == event["event_id"] and record["type"] == event_type
    assert record["occurred_at"].tzinfo is not None
    assert record["username"] == PAYLOADS[event_type].get("username")
    # Nothing the event does not carry, and never a key or a token (architecture.md §5).
    assert "public_key" not in record["details"] and "push_token" not in record["details"]
    assert "number" not in record["details"]


@pytest.mark.parametrize("event_type, reason, source_ip, actor", [
    ("OtpRejected", "invalid", "203.0.113.7", None),
    ("LoginRequested", None, "203.0.113.7", None),       # the browser's context is the source
    ("LoginThrottled", None, "203.0.113.7", None),       # the throttled address is
    ("SessionStarted", "push", "203.0.113.7", None),
    ("AccessDenied", "wrong_number", None, None),
    ("DeviceRevoked", "admin", None, "alice"),
    ("AdminAction", "unlock", "203.0.113.7", "unknown"),
    ("AccountUnlocked", "admin", None, "alice"),
])
def test_reason_source_and_actor_say_what_happened_who_did_it_and_from_where(event_type, reason, source_ip, actor):
    record = record_of(event_type, events.build_event(BY_NAME[event_type], **PAYLOADS[event_type]))
    assert record["reason"] == reason and record["actor"] == actor
    assert (record["source"] or {}).get("ip") == source_ip


def test_an_unknown_or_malformed_event_is_refused():
    with pytest.raises(events.ValidationError):
        record_of("SomethingElse", {})
    with pytest.raises(events.ValidationError):
        record_of("OtpVerified", {"username": "W1"})
