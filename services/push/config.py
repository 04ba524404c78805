"""The push service's settings, read once from the environment."""
from marshmallow import fields, validate

from shared.config import Settings


class PushSettings(Settings):
    # How far a device's clock may be from ours when it signs a poll (architecture.md §4: ±60 s).
    poll_clock_skew_seconds = fields.Integer(data_key="PUSH_POLL_CLOCK_SKEW_SECONDS", load_default=60,
                                             validate=validate.Range(min=5, max=600))
    # How long a push login request may be answered ("Stuur PUSH" to its expiry).
    request_ttl_seconds = fields.Integer(data_key="PUSH_REQUEST_TTL_SECONDS", load_default=120,
                                         validate=validate.Range(min=2, max=600))
    # Against push bombing: at most this many push requests per user in any window.
    rate_limit = fields.Integer(data_key="PUSH_RATE_LIMIT", load_default=3, validate=validate.Range(min=1, max=100))
    rate_window_seconds = fields.Integer(data_key="PUSH_RATE_WINDOW_SECONDS", load_default=300,
                                         validate=validate.Range(min=10, max=3600))
    # How the user matches the browser's number on the phone: pick it among three
    # (`choose`), or type it (`type`: `number_choices` is empty; the stronger choice, as
    # nothing can be tapped through).
    number_entry = fields.String(data_key="PUSH_NUMBER_ENTRY", load_default="choose",
                                 validate=validate.OneOf(["choose", "type"]))
    # APNs (iOS): the .p8 key file, its key id, the team id and the app's bundle id.
    apns_key_file = fields.String(data_key="APNS_KEY_FILE", load_default=None)
    apns_key_id = fields.String(data_key="APNS_KEY_ID", load_default=None)
    apns_team_id = fields.String(data_key="APNS_TEAM_ID", load_default=None)
    apns_topic = fields.String(data_key="APNS_TOPIC", load_default=None)
    apns_url = fields.String(data_key="APNS_URL", load_default=None, validate=validate.Regexp(r"^https://"))
    # FCM (Android): the service account JSON file; project, endpoints default from it.
    fcm_service_account_file = fields.String(data_key="FCM_SERVICE_ACCOUNT_FILE", load_default=None)
    fcm_project = fields.String(data_key="FCM_PROJECT", load_default=None)
    fcm_url = fields.String(data_key="FCM_URL", load_default=None, validate=validate.Regexp(r"^https://"))
    fcm_token_uri = fields.String(data_key="FCM_TOKEN_URI", load_default=None, validate=validate.Regexp(r"^https://"))
    # A CA bundle to trust instead of the system's (the local provider servers of tests).
    push_ca_file = fields.String(data_key="PUSH_CA_FILE", load_default=None)
    push_max_attempts = fields.Integer(data_key="PUSH_MAX_ATTEMPTS", load_default=4,
                                       validate=validate.Range(min=1, max=10))
    push_timeout_seconds = fields.Float(data_key="PUSH_TIMEOUT_SECONDS", load_default=10.0,
                                        validate=validate.Range(min=0.5, max=60))
