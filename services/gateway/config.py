"""The gateway's settings, read once from the environment."""
from marshmallow import ValidationError, fields, validate

from shared.config import CommaList, RpcSettings
from services.gateway.sources import parse_networks


class Networks(CommaList):
    """Comma-separated addresses or networks ("10.0.0.5, 10.1.0.0/16"), parsed."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_networks(super()._deserialize(value, attr, data, **kwargs))
        except ValueError as error:
            raise ValidationError(f"not an address or network: {error}") from None


class GatewaySettings(RpcSettings):
    # (RpcSettings: RPC_TIMEOUT_SECONDS, also each request's deadline)
    # No built-in default on purpose: `make up` generates one into .data/ when unset.
    admin_token = fields.String(data_key="MYCEPA_ADMIN_TOKEN", required=True,
                                validate=validate.Length(min=24, error="must be at least 24 characters"))
    # dev: cookies without the Secure flag, so plain http://127.0.0.1 works.
    environment = fields.String(data_key="MYCEPA_ENV", load_default="prod",
                                validate=validate.OneOf(["dev", "prod"]))
    public_url = fields.String(data_key="MYCEPA_PUBLIC_URL", load_default="http://127.0.0.1:8000",
                               validate=validate.Regexp(r"^https?://[^\s/]+(/[^\s]*)?$"))
    # A session ends after this long in all (absolute), or this long unused (idle).
    session_ttl_seconds = fields.Integer(data_key="SESSION_TTL_SECONDS", load_default=8 * 3600,
                                         validate=validate.Range(min=60, max=30 * 24 * 3600))
    session_idle_seconds = fields.Integer(data_key="SESSION_IDLE_SECONDS", load_default=30 * 60,
                                          validate=validate.Range(min=60, max=30 * 24 * 3600))
    # Failed logins counted per source address across all usernames: over the limit in
    # the window, that source gets 429 (0 = no limit). The source is the peer, or
    # X-Forwarded-For's right-most untrusted hop when the peer is a trusted proxy.
    source_failure_limit = fields.Integer(data_key="SOURCE_FAILURE_LIMIT", load_default=50,
                                          validate=validate.Range(min=0, max=100000))
    source_failure_window_seconds = fields.Integer(data_key="SOURCE_FAILURE_WINDOW_SECONDS", load_default=300,
                                                   validate=validate.Range(min=60, max=24 * 3600))
    trusted_proxies = Networks(data_key="TRUSTED_PROXIES", load_default=())
    max_body_bytes = fields.Integer(data_key="MAX_BODY_BYTES", load_default=16 * 1024,
                                    validate=validate.Range(min=1024, max=1024 * 1024))
    remember_ttl_seconds = fields.Integer(data_key="REMEMBER_TTL_SECONDS", load_default=180 * 24 * 3600,
                                          validate=validate.Range(min=3600, max=400 * 24 * 3600))
    # Browsers waiting at once for a push login's answer (GET /api/login/push/{id}?wait=);
    # they wait outside the workers, and above this a status request answers at once.
    long_poll_max = fields.Integer(data_key="LONG_POLL_MAX", load_default=1000,
                                   validate=validate.Range(min=0, max=100000))
