"""What the otp service's RPC entrypoints accept and return.

The gateway validates HTTP input with its own schemas; these check again at the service
boundary, because RPC callers are not only the gateway.
"""
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared.device_keys import load_public_key
from shared.fields import (ActivationCode, DeviceName, OtpCode, Platform, PublicKeyPem, PushToken, RecordId,
                           StrictString, Username)
from shared.validation import LoginSource, StrictSchema, UsernameArgs


# The admin credential's name, for the events of what an administrator does.
_actor = StrictString(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))


class ActorArgs(UsernameArgs):
    actor = _actor


class VerifyArgs(StrictSchema):
    username = Username(required=True)
    code = OtpCode(required=True)
    attempt_id = StrictString(load_default=None, allow_none=True, validate=validate.Regexp(r"^[0-9a-f]{32}\Z"))
    source = fields.Nested(LoginSource, load_default=None, allow_none=True)


class ActivateArgs(StrictSchema):
    activation_code = ActivationCode(required=True)
    public_key = PublicKeyPem(required=True)
    platform = Platform(required=True)
    push_token = PushToken(load_default=None, allow_none=True)
    device_name = DeviceName(required=True)

    @validates_schema
    def check_key_and_token(self, data, **kwargs):
        try:
            load_public_key(data.get("public_key", ""))
        except ValueError as error:
            raise ValidationError(str(error), "public_key") from None
        if data.get("platform") in ("ios", "android") and not data.get("push_token"):
            raise ValidationError("required for platform ios and android", "push_token")


class DeviceIdArgs(StrictSchema):
    device_id = RecordId(required=True)
    reason = StrictString(load_default="admin", validate=validate.OneOf(["admin", "user", "replaced"]))
    actor = _actor


class DeviceView(Schema):
    device_id = fields.String(attribute="_id")
    username = fields.String()
    platform = fields.String()
    device_name = fields.String()
    status = fields.String()
    created_at = fields.AwareDateTime(format="iso")
    last_used_at = fields.AwareDateTime(format="iso", allow_none=True)
    revoked_at = fields.AwareDateTime(format="iso", allow_none=True)
