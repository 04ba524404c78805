"""Every event of architecture.md §3: its name, its source service and its schema, defined once.

Producers build payloads with `build_event` (validated against the schema, so a producer
cannot emit what consumers would refuse); consumers read them with `parse_event`
(unknown fields excluded, so a newer producer does not break an older consumer).
Nothing here may carry a secret, an OTP code, a nonce or a token hash.
"""
import uuid

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from shared.clock import isoformat, utcnow
from shared.messaging import event_handler
from shared.validation import schema_of

OTP, PUSH, GATEWAY = "otp", "push", "gateway"


class Event(Schema):
    """Envelope fields every event carries."""

    class Meta:
        unknown = EXCLUDE

    name = None      # the nameko event type, e.g. "OtpVerified"
    service = None   # the nameko service that dispatches it
    version = 1

    event_id = fields.UUID(required=True)
    occurred_at = fields.AwareDateTime(required=True, format="iso")
    version_ = fields.Integer(data_key="version", attribute="version", required=True)


class BrowserContext(Schema):
    class Meta:
        unknown = EXCLUDE  # marshmallow does not pass `unknown` down to nested schemas

    ip = fields.String(required=True, validate=validate.Length(max=64))
    user_agent = fields.String(required=True, validate=validate.Length(max=512))
    requested_at = fields.AwareDateTime(required=True, format="iso")


class Source(Schema):
    """Where a person's action came from: the address the gateway counts (the peer, or a
    trusted proxy's X-Forwarded-For) and the browser's User-Agent."""

    class Meta:
        unknown = EXCLUDE

    ip = fields.String(required=True, validate=validate.Length(max=64))
    user_agent = fields.String(required=True, validate=validate.Length(max=512))


def _event(name, service, **schema_fields):
    return type(name, (Event,), {"name": name, "service": service, **schema_fields})


_username = fields.String(required=True, validate=validate.Length(min=1, max=64))
_device_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
_request_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
_challenge_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
# Optional, so an older producer's events still load: a person's action carries its
# source, an administrator's its actor (the admin credential's name).
_source = fields.Nested(Source, load_default=None, allow_none=True)
_actor = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))

LoginRequested = _event(
    "LoginRequested", PUSH,
    request_id=_request_id, username=_username,
    number=fields.String(required=True, validate=validate.Regexp(r"^\d{2}$")),
    context=fields.Nested(BrowserContext, required=True),
    expires_at=fields.AwareDateTime(required=True, format="iso"),
)
PushDispatched = _event(
    "PushDispatched", PUSH,
    request_id=_request_id, challenge_id=_challenge_id, username=_username, device_id=_device_id,
    provider=fields.String(required=True, validate=validate.OneOf(["apns", "fcm", "poll"])),
)
PushFailed = _event(
    "PushFailed", PUSH,
    request_id=_request_id, challenge_id=_challenge_id, username=_username, device_id=_device_id,
    provider=fields.String(required=True, validate=validate.OneOf(["apns", "fcm"])),
    reason=fields.String(required=True, validate=validate.Length(max=200)),
    permanent=fields.Boolean(required=True),
)
AccessConfirmed = _event(
    "AccessConfirmed", PUSH,
    request_id=_request_id, challenge_id=_challenge_id, username=_username, device_id=_device_id,
)
AccessDenied = _event(
    "AccessDenied", PUSH,
    request_id=_request_id, challenge_id=_challenge_id, username=_username, device_id=_device_id,
    fraud=fields.Boolean(required=True),
    # user: the user tapped deny; wrong_number: the number picked was not the browser's
    # (architecture.md §5: a wrong number denies, the user starts a new request).
    reason=fields.String(load_default="user", validate=validate.OneOf(["user", "wrong_number"])),
)
LoginExpired = _event(
    "LoginExpired", PUSH,
    request_id=_request_id, username=_username,
    challenge_id=fields.String(load_default=None, allow_none=True),
)
OtpVerified = _event("OtpVerified", OTP, username=_username, device_id=_device_id, source=_source)
OtpRejected = _event(
    "OtpRejected", OTP,
    username=_username, source=_source,
    reason=fields.String(required=True, validate=validate.OneOf(["invalid", "replayed", "locked"])),
    consecutive_failures=fields.Integer(required=True),
)
AccountLocked = _event(
    "AccountLocked", OTP,
    username=_username,
    consecutive_failures=fields.Integer(required=True),
    # hard: only an admin unlock ends it; otherwise the lock ends at `until`.
    hard=fields.Boolean(required=True),
    until=fields.AwareDateTime(load_default=None, allow_none=True, format="iso"),
    source=_source,   # where the failure that locked it came from
)
AccountUnlocked = _event(
    "AccountUnlocked", OTP,
    username=_username,
    by=fields.String(required=True, validate=validate.OneOf(["admin", "expiry"])),
    actor=_actor,
)
DeviceActivated = _event(
    "DeviceActivated", OTP,
    device_id=_device_id, username=_username,
    platform=fields.String(required=True, validate=validate.OneOf(["ios", "android", "poll"])),
    push_token=fields.String(load_default=None, allow_none=True, validate=validate.Length(max=4096)),
    public_key=fields.String(required=True, validate=validate.Length(max=1024)),
    device_name=fields.String(required=True, validate=validate.Length(max=64)),
)
# A code login whose code otp accepted did not end in a session (the answer came too late,
# or the session could not be stored): otp frees the code, so the user's retry works.
LoginAbandoned = _event(
    "LoginAbandoned", GATEWAY,
    username=_username,
    attempt_id=fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{32}\Z")),
    reason=fields.String(required=True, validate=validate.OneOf(["unavailable", "session_not_stored"])),
)
DeviceRevoked = _event(
    "DeviceRevoked", OTP,
    device_id=_device_id, username=_username,
    reason=fields.String(required=True, validate=validate.OneOf(["admin", "user", "replaced"])),
    # The user's devices still active after this one: at 0 no browser keeps their saved
    # username (push login could not work).
    active_devices_left=fields.Integer(required=True, validate=validate.Range(min=0)),
    actor=_actor,
)
ActivationCreated = _event(
    "ActivationCreated", OTP,
    username=_username, actor=_actor,
    expires_at=fields.AwareDateTime(required=True, format="iso"),
)
_METHOD = validate.OneOf(["code", "push"])
SessionStarted = _event(
    "SessionStarted", GATEWAY,
    username=_username, method=fields.String(required=True, validate=_METHOD),
    device_id=fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64)),
    source=_source,
)
SessionEnded = _event(
    "SessionEnded", GATEWAY,
    username=_username,
    method=fields.String(load_default=None, allow_none=True, validate=_METHOD),
    device_id=fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64)),
    # logout; idle or expired (noticed when the browser came back); the device that made
    # it was revoked; the code login was hard-locked; an administrator ended it.
    reason=fields.String(required=True, validate=validate.OneOf(
        ["logout", "idle", "expired", "device_revoked", "locked", "admin"])),
    actor=_actor, source=_source,
)
# An administrator's request that has no event of its own, allowed or refused.
AdminAction = _event(
    "AdminAction", GATEWAY,
    actor=fields.String(required=True, validate=validate.Length(min=1, max=64)),
    action=fields.String(required=True, validate=validate.Length(min=1, max=64)),
    target=fields.String(load_default=None, allow_none=True, validate=validate.Length(max=128)),
    username=fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64)),
    outcome=fields.String(required=True, validate=validate.OneOf(["allowed", "refused"])),
    status=fields.Integer(required=True),
    source=_source,
)
# A source address went over the failed-login limit and is refused with 429 (announced
# once a minute per source while it lasts).
LoginThrottled = _event(
    "LoginThrottled", GATEWAY,
    ip=fields.String(required=True, validate=validate.Length(max=64)),
    failures=fields.Integer(required=True),
    window_seconds=fields.Integer(required=True),
    retry_after=fields.Integer(required=True),
)

ALL_EVENTS = (
    LoginRequested, PushDispatched, PushFailed, AccessConfirmed, AccessDenied, LoginExpired,
    OtpVerified, OtpRejected, AccountLocked, AccountUnlocked, DeviceActivated, DeviceRevoked, LoginAbandoned,
    LoginThrottled, ActivationCreated, SessionStarted, SessionEnded, AdminAction,
)


EVENT_TYPES = tuple(sorted(event.name for event in ALL_EVENTS))


def build_event(event_cls, **payload):
    """A JSON-ready payload of `event_cls` with a fresh envelope; raises if it breaks the schema."""
    schema = schema_of(event_cls)
    envelope = {"event_id": str(uuid.uuid4()), "occurred_at": isoformat(utcnow()),
                "version": event_cls.version}
    document = {**envelope, **_jsonable(payload)}
    return schema.dump(schema.load(document))


def parse_event(event_cls, payload):
    """The payload as `event_cls` describes it (unknown fields dropped); ValidationError if malformed."""
    return schema_of(event_cls).load(payload)


def dispatch_event(dispatcher, event_cls, **payload):
    """Send `event_cls` through a nameko EventDispatcher; returns the payload sent."""
    event = build_event(event_cls, **payload)
    dispatcher(event_cls.name, event)
    return event


def handles(event_cls, **options):
    """`@event_handler` bound to the event's own source and name, never typed twice."""
    return event_handler(event_cls.service, event_cls.name, **options)


def _jsonable(value):
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if hasattr(value, "isoformat"):
        return isoformat(value)
    return value


__all__ = ["ALL_EVENTS", "EVENT_TYPES", "ValidationError", "build_event", "dispatch_event", "handles", "parse_event"] + [
    event.name for event in ALL_EVENTS
]
