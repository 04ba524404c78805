"""The push service's settings, read once from the environment."""
from marshmallow import fields, validate

from shared.config import Settings


class PushSettings(Settings):
    # How far a device's clock may be from ours when it signs a poll (DESIGN §4: ±60 s).
    poll_clock_skew_seconds = fields.Integer(data_key="PUSH_POLL_CLOCK_SKEW_SECONDS", load_default=60,
                                             validate=validate.Range(min=5, max=600))
