"""Field types of the public contracts that more than one service validates."""
from marshmallow import fields, validate

# A werkboeknummer: letters, digits and . _ - ; no spaces, no Mongo operators.
# \Z, not $: "$" also matches before a trailing newline.
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"
OTP_CODE_PATTERN = r"^[0-9]{10}\Z"
# What may be an activation code in a URL (its own checks are otp's: activation_codes.py).
ACTIVATION_CODE_PATTERN = r"^[A-Za-z0-9-]{4,64}\Z"
PLATFORMS = ("ios", "android", "poll")


class Username(fields.String):
    def __init__(self, **kwargs):
        super().__init__(validate=validate.Regexp(USERNAME_PATTERN, error="must be a werkboeknummer: "
                                                  "1-64 letters, digits, '.', '_' or '-'"), **kwargs)


class OtpCode(fields.String):
    def __init__(self, **kwargs):
        super().__init__(validate=validate.Regexp(OTP_CODE_PATTERN, error="must be exactly 10 digits"), **kwargs)


class StrictString(fields.String):
    """A string that is really text: not bytes (which marshmallow's String would accept),
    and no lone surrogates, which JSON can carry but UTF-8, BSON and Mongo cannot."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.make_error("invalid_utf8") from None
        return super()._deserialize(value, attr, data, **kwargs)


class StrictInteger(fields.Integer):
    """An integer that is really one: not a float, a numeric string or a boolean (which
    Python counts as an int)."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """true or false, not 1, "yes" or "on" (and not 0: `0 in {False}` is true in Python)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value
