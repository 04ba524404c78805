"""The gateway's HTTP request and response bodies (architecture.md §4); OpenAPI is generated from them."""
from marshmallow import Schema, ValidationError, fields, validate

from shared.events import EVENT_TYPES
from shared.fields import (ActivationCode, Decision, DeviceName, OtpCode, PickedNumber, Platform, PublicKeyPem,
                           PushToken, RecordId, Signature, StrictBoolean, StrictString, UnixSeconds, Username)


class ErrorBody(Schema):
    error = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields", required=True)


class LoginRequest(Schema):
    username = Username(required=True, metadata={"description": "the werkboeknummer"})
    password = OtpCode(required=True, metadata={"description": "the 10-digit code from the OTP app"})


class LoginResponse(Schema):
    username = fields.String(required=True)
    offer_remember = fields.Boolean(required=True)


class PreviousLogin(Schema):
    at = fields.String(required=True, metadata={"format": "date-time"})
    method = fields.String(required=True, validate=validate.OneOf(["code", "push"]))
    ip = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)


class MeResponse(Schema):
    username = fields.String(required=True)
    previous_login = fields.Nested(PreviousLogin, allow_none=True, required=True,
                                   metadata={"description": "the login before this one; null for the first"})


class AuditSource(Schema):
    ip = fields.String()
    user_agent = fields.String()


class AuditEntry(Schema):
    event_id = fields.String(required=True)
    type = fields.String(required=True)
    occurred_at = fields.String(required=True, metadata={"format": "date-time"})
    username = fields.String(allow_none=True)
    actor = fields.String(allow_none=True, metadata={"description": "the admin credential's name"})
    device_id = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    source = fields.Nested(AuditSource, allow_none=True)
    details = fields.Dict()


class Activity(Schema):
    events = fields.List(fields.Nested(AuditEntry), required=True)


class AuditPage(Activity):
    next = fields.String(allow_none=True, required=True, metadata={"description": "the cursor of the next page"})


class EventTypes(fields.Field):
    """`type=` of the audit query: one event type or several, comma-separated."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid")
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - set(EVENT_TYPES))
        if not names or unknown:
            raise ValidationError(f"unknown event types {unknown}; one of {', '.join(EVENT_TYPES)}")
        return names


class AuditQuery(Schema):
    username = Username()
    type = EventTypes(metadata={"description": "event types, comma-separated"})
    since = fields.AwareDateTime(format="iso")
    until = fields.AwareDateTime(format="iso")
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = StrictString(validate=validate.Length(min=1, max=256))


ADMIN_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}\Z"


class CredentialRequest(Schema):
    name = StrictString(required=True, validate=validate.Regexp(
        ADMIN_NAME, error="1-64 lower-case letters, digits, '.', '_' or '-'"))


class CredentialCreated(Schema):
    name = fields.String(required=True)
    token = fields.String(required=True, metadata={"description": "shown once; only its hash is stored"})


class Credential(Schema):
    name = fields.String(required=True)
    created_at = fields.String(allow_none=True)
    revoked_at = fields.String(allow_none=True)


class CredentialList(Schema):
    credentials = fields.List(fields.Nested(Credential), required=True)


class CredentialRevoked(Schema):
    name = fields.String(required=True)
    revoked = fields.Boolean(required=True)


class ActivateRequest(Schema):
    activation_code = ActivationCode(required=True)
    public_key = PublicKeyPem(required=True, metadata={"description": "PEM SubjectPublicKeyInfo of an EC P-256 key"})
    platform = Platform(required=True)
    push_token = PushToken(load_default=None, allow_none=True, metadata={"description": "required for ios and android"})
    device_name = DeviceName(required=True)


class OtpParameters(Schema):
    secret = fields.String(required=True, metadata={"description": "base32, at least 160 bits"})
    digits = fields.Integer(required=True, metadata={"example": 10})
    period = fields.Integer(required=True, metadata={"example": 30})
    algorithm = fields.String(required=True, metadata={"example": "SHA1"})


class ActivateResponse(Schema):
    device_id = fields.String(required=True)
    username = fields.String(required=True)
    otp = fields.Nested(OtpParameters, required=True)
    otpauth_uri = fields.String(required=True)


class CreateActivationRequest(Schema):
    username = Username(required=True)


class ActivationResponse(Schema):
    activation_code = fields.String(required=True)
    username = fields.String(required=True)
    expires_at = fields.String(required=True, metadata={"format": "date-time"})
    activation_uri = fields.String(required=True)


class Device(Schema):
    device_id = fields.String(required=True)
    username = fields.String(required=True)
    platform = fields.String(required=True)
    device_name = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["active", "revoked"]))
    created_at = fields.String(required=True)
    last_used_at = fields.String(allow_none=True)
    revoked_at = fields.String(allow_none=True)


class DeviceList(Schema):
    username = fields.String(required=True)
    devices = fields.List(fields.Nested(Device), required=True)


class UsernamePath(Schema):
    username = Username(required=True)


class SessionsEnded(Schema):
    username = fields.String(required=True)
    ended = fields.Integer(required=True, metadata={"description": "how many sessions were ended"})


class UnlockResponse(Schema):
    username = fields.String(required=True)
    was_locked = fields.Boolean(required=True)


class Readiness(Schema):
    ready = fields.Boolean(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.Boolean(), required=True)
    down = fields.List(fields.String(), required=True)   # what is not answering, by name
    # {audit: {answering, backlog, recorded}}: what readiness does not depend on
    detail = fields.Dict(required=True)


class RememberedUser(Schema):
    username = fields.String(required=True)


class PushRequestCreated(Schema):
    request_id = fields.String(required=True)
    number = fields.String(required=True, metadata={"description": "the number to pick on the phone"})
    expires_at = fields.String(required=True, metadata={"format": "date-time"})


class PushRequestStatus(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["pending", "approved", "denied", "expired"]))


class SignedPoll(Schema):
    timestamp = UnixSeconds(required=True, metadata={"description": "unix seconds, ±60 s"})
    signature = Signature(required=True,
                          metadata={"description": "base64 DER ECDSA over mycepa-poll-v1|device_id|timestamp"})


class PushTokenUpdate(SignedPoll):
    push_token = PushToken(required=True,
                           metadata={"description": "signature over mycepa-token-v1|device_id|timestamp|push_token"})


class ChallengeContext(Schema):
    ip = fields.String(required=True)
    user_agent = fields.String(required=True)
    requested_at = fields.String(required=True)


class DeviceChallenge(Schema):
    challenge_id = fields.String(required=True)
    nonce = fields.String(required=True)
    username = fields.String(required=True)
    expires_at = fields.String(required=True)
    context = fields.Nested(ChallengeContext, required=True)
    number_choices = fields.List(fields.String(), required=True, metadata={
        "description": "three numbers to pick the browser's among; empty when the user types it"})


class Notice(Schema):
    notice_id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(
        ["account_locked", "code_replayed", "device_activated", "device_revoked", "push_denied", "fraud_reported"]))
    occurred_at = fields.String(required=True, metadata={"format": "date-time"})
    context = fields.Dict(required=True, metadata={"description": "ip, consecutive_failures, device_name, ..."})


class DeviceChallenges(Schema):
    challenges = fields.List(fields.Nested(DeviceChallenge), required=True)
    notices = fields.List(fields.Nested(Notice), required=True,
                          metadata={"description": "security notices this device has not been shown, newest first"})


class ChallengeAnswer(Schema):
    device_id = RecordId(required=True)
    decision = Decision(required=True)
    number = PickedNumber(required=True, metadata={"description": "the number picked on the phone ('' for deny)"})
    signature = Signature(required=True, metadata={"description": "base64 DER ECDSA over "
                                                                  "mycepa-push-v1|challenge_id|nonce|decision|number"})
    fraud = StrictBoolean(load_default=False, metadata={"description": "deny and report as fraud"})


class ChallengeAnswered(Schema):
    challenge_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["approved", "denied"]))
    reason = fields.String(validate=validate.OneOf(["wrong_number"]),
                           metadata={"description": "present when a wrong number denied the request"})


class DeviceUpdated(Schema):
    device_id = fields.String(required=True)


class PushBlock(Schema):
    username = fields.String(required=True)
    blocked = fields.Boolean(required=True)
    since = fields.String(allow_none=True)


class PushBlockCleared(Schema):
    username = fields.String(required=True)
    was_blocked = fields.Boolean(required=True)
