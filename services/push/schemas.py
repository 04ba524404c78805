"""What the push service's RPC entrypoints accept (the gateway checks HTTP input too)."""
from marshmallow import validate
from marshmallow.fields import Nested

from shared.fields import StrictBoolean, StrictInteger, StrictString, Username
from shared.validation import StrictSchema

_id = StrictString(required=True, validate=validate.Length(min=1, max=64))
_signature = StrictString(required=True, validate=validate.Length(min=1, max=256))


class UsernameArgs(StrictSchema):
    username = Username(required=True)


class PollArgs(StrictSchema):
    device_id = _id
    # Unix seconds; bounded so no arithmetic on it can overflow.
    timestamp = StrictInteger(required=True, validate=validate.Range(min=0, max=2 ** 40))
    signature = _signature


class TokenArgs(PollArgs):
    push_token = StrictString(required=True, validate=validate.Length(min=1, max=4096))


class ResponseArgs(StrictSchema):
    challenge_id = _id
    device_id = _id
    decision = StrictString(required=True, validate=validate.OneOf(["approve", "deny"]))
    number = StrictString(required=True, validate=validate.Regexp(r"^([0-9]{2})?\Z"))
    signature = _signature
    fraud = StrictBoolean(load_default=False)


class BrowserSource(StrictSchema):
    ip = StrictString(required=True, validate=validate.Length(max=64))
    user_agent = StrictString(required=True, validate=validate.Length(max=512))


class LoginRequestArgs(StrictSchema):
    username = Username(required=True)
    context = Nested(BrowserSource, required=True)


class StatusArgs(StrictSchema):
    username = Username(required=True)
    request_id = _id
