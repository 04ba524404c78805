"""What the otp service's RPC entrypoints accept and return.

The gateway validates HTTP input with its own schemas; these check again at the service
boundary, because RPC callers are not only the gateway.
"""
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from shared.device_keys import load_public_key
from shared.fields import PLATFORMS, OtpCode, StrictString, Username
from shared.validation import StrictSchema


class UsernameArgs(StrictSchema):
    username = Username(required=True)


class SourceArgs(StrictSchema):
    """Where the login came from (the gateway's view), for the events it causes."""
    ip = StrictString(required=True, validate=validate.Length(max=64))
    user_agent = StrictString(required=True, validate=validate.Length(max=512))


# The admin credential's name, for the events of what an administrator does.
_actor = StrictString(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))


class ActorArgs(UsernameArgs):
    actor = _actor


class VerifyArgs(StrictSchema):
    username = Username(required=True)
    code = OtpCode(required=True)
    attempt_id = StrictString(load_default=None, allow_none=True, validate=validate.Regexp(r"^[0-9a-f]{32}\Z"))
    source = fields.Nested(SourceArgs, load_default=None, allow_none=True)


class ActivateArgs(StrictSchema):
    activation_code = StrictString(required=True, validate=validate.Length(min=1, max=64))
    public_key = StrictString(required=True, validate=validate.Length(max=1024))
    platform = StrictString(required=True, validate=validate.OneOf(PLATFORMS))
    push_token = StrictString(load_default=None, allow_none=True, validate=validate.Length(min=1, max=4096))
    device_name = StrictString(required=True, validate=validate.Length(min=1, max=64))

    @validates_schema
    def check_key_and_token(self, data, **kwargs):
        try:
            load_public_key(data.get("public_key", ""))
        except ValueError as error:
            raise ValidationError(str(error), "public_key") from None
        if data.get("platform") in ("ios", "android") and not data.get("push_token"):
            raise ValidationError("required for platform ios and android", "push_token")


class DeviceIdArgs(StrictSchema):
    device_id = StrictString(required=True, validate=validate.Length(min=1, max=64))
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
