"""The gateway's HTTP request and response bodies (DESIGN §4); OpenAPI is generated from them."""
from marshmallow import Schema, fields, validate

from shared.fields import PLATFORMS, OtpCode, StrictBoolean, StrictInteger, StrictString, Username


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


class MeResponse(Schema):
    username = fields.String(required=True)


class ActivateRequest(Schema):
    activation_code = StrictString(required=True, validate=validate.Length(min=1, max=64))
    public_key = StrictString(required=True, validate=validate.Length(max=1024),
                              metadata={"description": "PEM SubjectPublicKeyInfo of an EC P-256 key"})
    platform = StrictString(required=True, validate=validate.OneOf(PLATFORMS))
    push_token = StrictString(load_default=None, allow_none=True, validate=validate.Length(min=1, max=4096),
                              metadata={"description": "required for ios and android"})
    device_name = StrictString(required=True, validate=validate.Length(min=1, max=64))


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


class RememberedUser(Schema):
    username = fields.String(required=True)


class PushRequestCreated(Schema):
    request_id = fields.String(required=True)
    number = fields.String(required=True, metadata={"description": "the number to pick on the phone"})
    expires_at = fields.String(required=True, metadata={"format": "date-time"})


class PushRequestStatus(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["pending", "approved", "denied", "expired"]))


class SignedPoll(Schema):
    timestamp = StrictInteger(required=True, validate=validate.Range(min=0, max=2 ** 40),
                              metadata={"description": "unix seconds, ±60 s"})
    signature = StrictString(required=True, validate=validate.Length(min=1, max=256),
                             metadata={"description": "base64 DER ECDSA over mycepa-poll-v1|device_id|timestamp"})


class PushTokenUpdate(SignedPoll):
    push_token = StrictString(required=True, validate=validate.Length(min=1, max=4096),
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


class DeviceChallenges(Schema):
    challenges = fields.List(fields.Nested(DeviceChallenge), required=True)


class ChallengeAnswer(Schema):
    device_id = StrictString(required=True, validate=validate.Length(min=1, max=64))
    decision = StrictString(required=True, validate=validate.OneOf(["approve", "deny"]))
    number = StrictString(required=True, validate=validate.Regexp(r"^([0-9]{2})?\Z"),
                          metadata={"description": "the number picked on the phone ('' for deny)"})
    signature = StrictString(required=True, validate=validate.Length(min=1, max=256),
                             metadata={"description": "base64 DER ECDSA over "
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
