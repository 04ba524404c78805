"""Validation of RPC arguments at a service's boundary, one way for every service."""
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


def load_args(schema_cls, **arguments):
    """The validated arguments, or ValidationFailed naming each bad field."""
    try:
        return schema_cls().load(arguments)
    except ValidationError as error:
        raise ValidationFailed("Invalid request", fields=error.messages) from None
