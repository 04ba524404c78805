"""The audit service's settings, read once from the environment."""
from marshmallow import fields, validate

from shared.config import Settings


class AuditSettings(Settings):
    # How long the audit trail is kept (architecture.md §6: 400 days by default, so a year-on-year
    # question can still be answered).
    retention_days = fields.Integer(data_key="AUDIT_RETENTION_DAYS", load_default=400,
                                    validate=validate.Range(min=1, max=3650))
