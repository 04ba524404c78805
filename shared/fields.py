"""Field types of the public contracts that more than one service validates.

The gateway checks a device's HTTP body and the service it calls checks the RPC's
arguments again (RPC callers are not only the gateway), with fields of the same types
from here, so the two never disagree on what a well-formed value is. A schema adds its
own `metadata` (the OpenAPI description) and `required` / defaults.
"""
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


class _CheckedString(StrictString):
    """A StrictString with the check its type names (`check`, a marshmallow validator)."""
    check = None

    def __init__(self, **kwargs):
        super().__init__(validate=self.check, **kwargs)


class RecordId(_CheckedString):
    """A device, challenge or request id (the gateway's openapi.py documents the same
    bounds for such ids in a path)."""
    check = validate.Length(min=1, max=64)


class Signature(_CheckedString):
    """A device's base64 DER ECDSA signature (shared/device_keys.py checks it)."""
    check = validate.Length(min=1, max=256)


class PushToken(_CheckedString):
    """An APNs or FCM registration token."""
    check = validate.Length(min=1, max=4096)


class Decision(_CheckedString):
    check = validate.OneOf(["approve", "deny"])


class PickedNumber(_CheckedString):
    """The two-digit number picked or typed on the phone ('' with a deny)."""
    check = validate.Regexp(r"^([0-9]{2})?\Z")


class ActivationCode(_CheckedString):
    """An activation code as a device sends it (its own checks are otp's: activation_codes.py)."""
    check = validate.Length(min=1, max=64)


class PublicKeyPem(_CheckedString):
    """A device's public key, PEM (shared/device_keys.py `load_public_key` checks it)."""
    check = validate.Length(max=1024)


class Platform(_CheckedString):
    check = validate.OneOf(PLATFORMS)


class DeviceName(_CheckedString):
    check = validate.Length(min=1, max=64)


class UnixSeconds(StrictInteger):
    """A device's clock reading, unix seconds; bounded so no arithmetic on it can overflow."""

    def __init__(self, **kwargs):
        super().__init__(validate=validate.Range(min=0, max=2 ** 40), **kwargs)
