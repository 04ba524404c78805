"""Apple Push Notification service: the provider API over HTTP/2 with token-based auth.

Each request carries `authorization: bearer <JWT>`: ES256, header `kid` = the key id of
the .p8 signing key, claims `iss` = team id and `iat`. Apple refuses a token older than
an hour (403 ExpiredProviderToken) and one renewed more often than every 20 minutes
(429 TooManyProviderTokenUpdates), so one JWT is shared by every send and renewed after
`token_lifetime` seconds (45 minutes by default, 20-55 allowed).

Answers (Apple's documented reasons, body `{"reason": "..."}`):
200 -> accepted (`apns-id` kept); 400 BadDeviceToken / DeviceTokenNotForTopic and
410 Unregistered / ExpiredToken -> permanent, token dead; other 4xx -> permanent;
403 ExpiredProviderToken -> a fresh JWT and one more try; 429 and 5xx -> retried.
"""
import json
import re
import threading
from dataclasses import replace

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from services.push.providers.base import Outcome, Provider, parse_retry_after

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"

MIN_TOKEN_LIFETIME = 20 * 60
MAX_TOKEN_LIFETIME = 55 * 60

# Reasons after which the token must not be used again.
DEAD_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"})
_DEVICE_TOKEN = re.compile(r"[0-9A-Fa-f]{16,400}")


def load_signing_key(key_pem):
    """The EC P-256 private key of a .p8 file (PEM), or ValueError without its content."""
    data = key_pem.encode() if isinstance(key_pem, str) else key_pem
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("the APNs signing key is not a PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("the APNs signing key must be an EC P-256 key (.p8)")
    return key


class APNsProvider(Provider):
    name = "apns"

    def __init__(self, *, key_pem, key_id, team_id, topic, base_url=PRODUCTION_URL, token_lifetime=45 * 60,
                 priority=10, **options):
        if not (MIN_TOKEN_LIFETIME <= token_lifetime <= MAX_TOKEN_LIFETIME):
            raise ValueError(f"token_lifetime must be {MIN_TOKEN_LIFETIME}-{MAX_TOKEN_LIFETIME} s (Apple's window)")
        if priority not in (5, 10):
            raise ValueError("priority must be 5 or 10")
        for label, value in (("key_id", key_id), ("team_id", team_id), ("topic", topic), ("base_url", base_url)):
            if not value:
                raise ValueError(f"{label} is required")
        super().__init__(http2_only=True, **options)
        self._key = load_signing_key(key_pem)
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.base_url = base_url.rstrip("/")
        self.token_lifetime = token_lifetime
        self.priority = priority
        self._jwt = None  # (issued_at, token)
        self._jwt_lock = threading.Lock()

    def provider_token(self):
        """The current JWT, made when there is none or it is `token_lifetime` old."""
        with self._jwt_lock:
            now = self._clock()
            if self._jwt is None or now - self._jwt[0] >= self.token_lifetime:
                issued_at = int(now)
                token = jwt.encode({"iss": self.team_id, "iat": issued_at}, self._key, algorithm="ES256",
                                   headers={"kid": self.key_id})
                self._jwt = (issued_at, token)
            return self._jwt[1]

    def _invalidate_credentials(self, refused):
        with self._jwt_lock:
            if self._jwt is not None and self._jwt[1] == refused:
                self._jwt = None

    def _secrets(self):
        current = self._jwt
        return (current[1],) if current else ()

    def payload(self, message):
        title, body = message.alert()
        return {"aps": {"alert": {"title": title, "body": body}, "sound": "default"}, **message.data()}

    def headers(self, message, provider_token):
        return {
            "authorization": f"bearer {provider_token}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": str(self.priority),
            "apns-expiration": str(message.expires_at_unix()),
            "apns-collapse-id": message.collapse_id,
            "content-type": "application/json",
        }

    def _attempt(self, push_token, message):
        if not _DEVICE_TOKEN.fullmatch(push_token or ""):
            # Not a token APNs could have issued; sending it would only earn a 400.
            return Outcome(ok=False, status=None, reason="BadDeviceToken", permanent=True, token_dead=True)
        body = json.dumps(self.payload(message), ensure_ascii=False, separators=(",", ":")).encode()
        provider_token = self.provider_token()
        response = self._http.post(f"{self.base_url}/3/device/{push_token}", content=body,
                                   headers=self.headers(message, provider_token))
        return replace(classify(response), credential=provider_token)


def classify(response):
    status = response.status_code
    message_id = response.headers.get("apns-id")
    if status == 200:
        return Outcome(ok=True, status=status, reason="accepted", message_id=message_id)
    reason = _reason(response)
    common = {"ok": False, "status": status, "reason": reason, "message_id": message_id}
    if reason in DEAD_TOKEN_REASONS or status == 410:
        return Outcome(permanent=True, token_dead=True, **common)
    if status == 403 and reason == "ExpiredProviderToken":
        return Outcome(reauth=True, **common)
    if status == 429 or status >= 500:
        return Outcome(retry=True, retry_after=parse_retry_after(response.headers.get("retry-after")), **common)
    return Outcome(permanent=True, **common)


def _reason(response):
    try:
        reason = response.json().get("reason")
    except (ValueError, AttributeError):
        reason = None
    return str(reason)[:100] if reason else f"HTTP {response.status_code}"
