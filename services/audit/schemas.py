"""What the audit service's RPC entrypoints accept (the gateway checks HTTP input too)."""
from marshmallow import fields, validate

from shared.events import EVENT_TYPES
from shared.fields import StrictInteger, StrictString, Username
from shared.validation import StrictSchema

MAX_LIMIT = 200


class QueryArgs(StrictSchema):
    username = Username(load_default=None, allow_none=True)
    types = fields.List(StrictString(validate=validate.OneOf(EVENT_TYPES)), load_default=None, allow_none=True,
                        validate=validate.Length(max=len(EVENT_TYPES)))
    since = fields.AwareDateTime(load_default=None, allow_none=True, format="iso")
    until = fields.AwareDateTime(load_default=None, allow_none=True, format="iso")
    limit = StrictInteger(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = StrictString(load_default=None, allow_none=True, validate=validate.Length(max=256))


class ActivityArgs(StrictSchema):
    username = Username(required=True)
    limit = StrictInteger(load_default=20, validate=validate.Range(min=1, max=50))


class PreviousLoginArgs(StrictSchema):
    username = Username(required=True)
    before = fields.AwareDateTime(required=True, format="iso")
