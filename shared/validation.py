"""Validation of RPC arguments at a service's boundary, one way for every service."""
from functools import cache

from marshmallow import RAISE, Schema, ValidationError, validate

from shared.errors import ValidationFailed
from shared.fields import StrictString, Username


class StrictSchema(Schema):
    """Arguments of an RPC entrypoint: unknown ones are an error, not ignored."""

    class Meta:
        unknown = RAISE


class UsernameArgs(StrictSchema):
    username = Username(required=True)


class LoginSource(StrictSchema):
    """Where a login came from (the gateway's view), for the events it causes."""
    ip = StrictString(required=True, validate=validate.Length(max=64))
    user_agent = StrictString(required=True, validate=validate.Length(max=512))


@cache
def schema_of(schema_cls, **options):
    """The one instance of `schema_cls` (with `options`) that every load and dump uses.

    Making a marshmallow schema deep-copies each of its declared fields, and a fresh one
    per request, argument list or event was a twentieth of the gateway's CPU per login
    (py-spy). An instance holds no state between loads (marshmallow 4 has no context)."""
    return schema_cls(**options)


def load_args(schema_cls, **arguments):
    """The validated arguments, or ValidationFailed naming each bad field."""
    try:
        return schema_of(schema_cls).load(arguments)
    except ValidationError as error:
        raise ValidationFailed("Invalid request", fields=error.messages) from None
