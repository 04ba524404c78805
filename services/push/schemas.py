"""What the push service's RPC entrypoints accept (the gateway checks HTTP input too,
with fields of the same types: shared/fields.py)."""
from marshmallow.fields import Nested

from shared.fields import (Decision, PickedNumber, PushToken, RecordId, Signature, StrictBoolean, UnixSeconds,
                           Username)
from shared.validation import LoginSource, StrictSchema


class PollArgs(StrictSchema):
    device_id = RecordId(required=True)
    timestamp = UnixSeconds(required=True)
    signature = Signature(required=True)


class TokenArgs(PollArgs):
    push_token = PushToken(required=True)


class ResponseArgs(StrictSchema):
    challenge_id = RecordId(required=True)
    device_id = RecordId(required=True)
    decision = Decision(required=True)
    number = PickedNumber(required=True)
    signature = Signature(required=True)
    fraud = StrictBoolean(load_default=False)


class LoginRequestArgs(StrictSchema):
    username = Username(required=True)
    context = Nested(LoginSource, required=True)


class RevokeArgs(StrictSchema):
    device_id = RecordId(required=True)
    username = Username(required=True)


class StatusArgs(StrictSchema):
    username = Username(required=True)
    request_id = RecordId(required=True)
