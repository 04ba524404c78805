"""Validation of RPC arguments at a service's boundary, one way for every service."""
from marshmallow import RAISE, Schema, ValidationError

from shared.errors import ValidationFailed


class StrictSchema(Schema):
    """Arguments of an RPC entrypoint: unknown ones are an error, not ignored."""

    class Meta:
        unknown = RAISE


def load_args(schema_cls, **arguments):
    """The validated arguments, or ValidationFailed naming each bad field."""
    try:
        return schema_cls().load(arguments)
    except ValidationError as error:
        raise ValidationFailed("Invalid request", fields=error.messages) from None
