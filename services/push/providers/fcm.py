"""Firebase Cloud Messaging, HTTP v1: `POST /v1/projects/{project}/messages:send`.

Authorisation is an OAuth2 access token for the service account, obtained by google-auth
with the JWT-bearer grant (an RS256 assertion signed with the account's key, sent to
the account's `token_uri`, which tests point at their own server). The access token is
cached and renewed `token_refresh_margin` seconds before it expires.

The message: android priority HIGH and a TTL equal to the challenge's remaining lifetime
(a notification delivered after the challenge expired is useless), the localized
notification text, and `data.challenge_id` (or, for a security notice, `data.notice_id`
and `data.kind`), nothing else.

Answers (`{"error": {"code", "message", "status", "details": [FcmError{errorCode}]}}`):
200 -> accepted (`name` kept); UNREGISTERED (404) and SENDER_ID_MISMATCH (403) ->
permanent, token dead; INVALID_ARGUMENT (400) and other 4xx -> permanent; 401
UNAUTHENTICATED -> a fresh access token and one more try; QUOTA_EXCEEDED (429),
UNAVAILABLE (503), INTERNAL (500) -> retried, honouring Retry-After.
"""
import json
import threading
import urllib.parse
from dataclasses import replace
from datetime import datetime, timezone

import httpx
from google.auth import exceptions as google_exceptions
from google.auth import transport as google_transport
from google.oauth2 import service_account

from services.push.providers.base import Outcome, Provider, parse_retry_after

PRODUCTION_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
MAX_TTL_SECONDS = 28 * 24 * 3600  # FCM's limit

DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
RETRY_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED"})


def load_service_account(info, token_uri=None):
    """google-auth credentials for FCM from a service-account JSON (text or mapping)."""
    if isinstance(info, (str, bytes)):
        try:
            info = json.loads(info)
        except ValueError as exc:
            raise ValueError("the FCM service account is not valid JSON") from exc
    if not isinstance(info, dict):
        raise ValueError("the FCM service account must be a JSON object")
    info = dict(info)
    if token_uri:
        info["token_uri"] = token_uri
    missing = [key for key in ("client_email", "private_key", "token_uri") if not info.get(key)]
    if missing:
        raise ValueError(f"the FCM service account lacks {', '.join(missing)}")
    try:
        credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    except (ValueError, google_exceptions.GoogleAuthError) as exc:
        # The message could quote the key; name the problem only.
        raise ValueError(f"the FCM service account cannot be used ({type(exc).__name__})") from None
    return credentials, info


class FCMProvider(Provider):
    name = "fcm"

    def __init__(self, *, service_account_info, project_id=None, base_url=PRODUCTION_URL, token_uri=None,
                 token_refresh_margin=300, **options):
        credentials, info = load_service_account(service_account_info, token_uri)
        project_id = project_id or info.get("project_id")
        if not project_id:
            raise ValueError("the FCM project id is required")
        if not base_url:
            raise ValueError("base_url is required")
        super().__init__(**options)
        self.project_id = project_id
        self.base_url = base_url.rstrip("/")
        self.token_refresh_margin = token_refresh_margin
        self._credentials = credentials
        self._auth_transport = _GoogleAuthTransport(self._http)
        self._token = None
        self._token_expires_at = 0.0
        self._token_lock = threading.Lock()

    @property
    def send_url(self):
        return f"{self.base_url}/v1/projects/{urllib.parse.quote(self.project_id, safe='')}/messages:send"

    def access_token(self):
        """The cached OAuth2 access token, renewed shortly before it expires."""
        with self._token_lock:
            now = self._clock()
            if self._token is None or now >= self._token_expires_at - self.token_refresh_margin:
                self._credentials.refresh(self._auth_transport)
                expiry = self._credentials.expiry  # naive UTC, as google-auth keeps it
                if expiry is not None:
                    lifetime = (expiry - datetime.now(timezone.utc).replace(tzinfo=None)).total_seconds()
                else:
                    lifetime = 3600.0
                self._token, self._token_expires_at = self._credentials.token, now + lifetime
            return self._token

    def _invalidate_credentials(self, refused):
        with self._token_lock:
            if self._token == refused:
                self._token = None

    def _secrets(self):
        return (self._token,) if self._token else ()

    def body(self, push_token, message):
        title, text = message.alert()
        ttl = min(max(int(message.ttl_seconds), 0), MAX_TTL_SECONDS)
        return {"message": {
            "token": push_token,
            "notification": {"title": title, "body": text},
            "data": message.data(),
            "android": {"priority": "HIGH", "ttl": f"{ttl}s", "collapse_key": message.collapse_id},
        }}

    def _attempt(self, push_token, message):
        try:
            token = self.access_token()
        except google_exceptions.TransportError as exc:
            return Outcome(ok=False, status=None, reason=f"connection_error: token endpoint ({exc})", retry=True)
        except google_exceptions.RefreshError as exc:
            # The token endpoint refused the service account (or kept failing).
            retryable = bool(getattr(exc, "retryable", False))
            return Outcome(ok=False, status=None, reason=f"auth_failed: {_refresh_error(exc)}", retry=retryable,
                           permanent=not retryable)
        response = self._http.post(self.send_url, json=self.body(push_token, message),
                                   headers={"authorization": f"Bearer {token}"})
        return replace(classify(response), credential=token)


def classify(response):
    status = response.status_code
    if status == 200:
        try:
            name = response.json().get("name")
        except (ValueError, AttributeError):
            name = None
        return Outcome(ok=True, status=status, reason="accepted", message_id=name)
    code = _error_code(response)
    common = {"ok": False, "status": status, "reason": code}
    if code in DEAD_TOKEN_CODES:
        return Outcome(permanent=True, token_dead=True, **common)
    if status == 401 and code == "UNAUTHENTICATED":
        return Outcome(reauth=True, **common)
    if status == 429 or status >= 500 or code in RETRY_CODES:
        return Outcome(retry=True, retry_after=parse_retry_after(response.headers.get("retry-after")), **common)
    return Outcome(permanent=True, **common)


def _error_code(response):
    """FcmError.errorCode when given, else the google.rpc status, else the HTTP status."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE and detail.get("errorCode"):
            return str(detail["errorCode"])[:100]
    if error.get("status"):
        return str(error["status"])[:100]
    return f"HTTP {response.status_code}"


def _refresh_error(exc):
    """The OAuth error code of a RefreshError ("invalid_grant"), without the rest."""
    data = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])[:60]
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.split(":", 1)[0][:60]


class _GoogleAuthTransport(google_transport.Request):
    """google-auth's transport interface over the provider's httpx client, so the token
    endpoint is reached with the same TLS settings and connection pool as FCM itself."""

    def __init__(self, http):
        self._http = http

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        try:
            response = self._http.request(method, url, content=body, headers=headers,
                                          timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise google_exceptions.TransportError(type(exc).__name__) from None
        return _GoogleAuthResponse(response)


class _GoogleAuthResponse(google_transport.Response):
    def __init__(self, response):
        self._response = response

    @property
    def status(self):
        return self._response.status_code

    @property
    def headers(self):
        return self._response.headers

    @property
    def data(self):
        return self._response.content
