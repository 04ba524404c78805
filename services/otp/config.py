"""The otp service's settings, read once from the environment."""
from marshmallow import fields, validate, validates_schema, ValidationError

from shared.config import CommaList, Settings
from services.otp.totp import SecretBox


DAY = 24 * 3600


class OtpSettings(Settings):
    # Comma-separated AES-256 keys (urlsafe base64 of 32 bytes); the first encrypts,
    # all decrypt, so keys can be rotated without re-enrolling devices.
    encryption_keys = CommaList(data_key="OTP_ENCRYPTION_KEYS", required=True, validate=lambda keys: _key_ring(keys))
    issuer = fields.String(data_key="OTP_ISSUER", load_default="MyCepa",
                           validate=validate.Regexp(r"^[A-Za-z0-9 ._-]{1,32}$"))
    activation_ttl_seconds = fields.Integer(data_key="OTP_ACTIVATION_TTL_SECONDS", load_default=7 * DAY,
                                            validate=validate.Range(min=60, max=90 * DAY))   # storage.MAX_ACTIVATION_TTL_DAYS
    activation_max_tries = fields.Integer(data_key="OTP_ACTIVATION_MAX_TRIES", load_default=5,
                                          validate=validate.Range(min=1, max=20))
    # Lockout of code login (services/otp/lockout.py): this many failures are free, then
    # each further one locks code login for lock_base * 2^k seconds, capped at 15 minutes
    # (architecture.md §5), and hard_lock_failures in a row lock it until an admin unlocks it
    # (at most 100, NIST 800-63B's ceiling).
    free_failures = fields.Integer(data_key="OTP_FREE_FAILURES", load_default=5,
                                   validate=validate.Range(min=0, max=50))
    lock_base_seconds = fields.Integer(data_key="OTP_LOCK_BASE_SECONDS", load_default=30,
                                       validate=validate.Range(min=1, max=900))
    lock_max_seconds = fields.Integer(data_key="OTP_LOCK_MAX_SECONDS", load_default=900,
                                      validate=validate.Range(min=1, max=900))
    hard_lock_failures = fields.Integer(data_key="OTP_HARD_LOCK_FAILURES", load_default=100,
                                        validate=validate.Range(min=2, max=100))

    @validates_schema
    def check_lockout(self, data, **kwargs):
        if data.get("free_failures", 0) >= data.get("hard_lock_failures", 10):
            raise ValidationError("must be below OTP_HARD_LOCK_FAILURES", "OTP_FREE_FAILURES")


def _key_ring(keys):
    try:
        SecretBox(keys)
    except ValueError as error:
        raise ValidationError(str(error)) from None
