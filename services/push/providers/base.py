"""What every push provider shares: the message, the result, retries, the HTTP/2 client.

A provider turns one `PushMessage` for one device token into one `DeliveryResult`. It
never raises for anything APNs or FCM answers (nor for a network failure): the caller
always gets a result to report as PushDispatched or PushFailed, and decides from
`token_dead` whether to stop using the token.

Secrets kept out of logs and results: the push token (only a short hint is logged), the
provider JWT, the OAuth access token and the private keys.
"""
import email.utils
import logging
import random
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx

log = logging.getLogger("services.push.providers")

# What the notification says, by locale; the body names the account being logged in to.
ALERT_TEXT = {
    "nl": ("Bevestig toegang", "Iemand wil inloggen op MyCepa als {username}"),
    "en": ("Confirm access", "Someone wants to log in to MyCepa as {username}"),
}
DEFAULT_LOCALE = "nl"


@dataclass(frozen=True)
class PushMessage:
    """One login challenge to announce on one device. No nonce, no secret: the app fetches
    the challenge itself (signed poll) and signs its answer with its own key."""
    challenge_id: str
    username: str
    expires_at: datetime  # timezone-aware
    ttl_seconds: int
    locale: str = DEFAULT_LOCALE

    def alert(self):
        """(title, body) in the message's locale, Dutch when the locale is unknown."""
        language = (self.locale or DEFAULT_LOCALE).split("-")[0].split("_")[0].lower()
        title, body = ALERT_TEXT.get(language, ALERT_TEXT[DEFAULT_LOCALE])
        return title, body.format(username=self.username)

    @property
    def collapse_id(self):
        """What a newer notification of the same thing replaces on the phone."""
        return self.challenge_id

    def data(self):
        """The fields the app reads from the notification, besides its text."""
        return {"challenge_id": self.challenge_id}

    def expires_at_unix(self):
        return _unix(self.expires_at)


@dataclass(frozen=True)
class NoticeMessage:
    """A security notice (services/push/notices.py) as a plain alert: its text, and its id
    for the app, which shows it from its next poll too."""
    notice_id: str
    kind: str
    title: str
    body: str
    expires_at: datetime
    ttl_seconds: int

    @property
    def collapse_id(self):
        return self.notice_id[:64]

    def alert(self):
        return self.title, self.body

    def data(self):
        return {"notice_id": self.notice_id, "kind": self.kind}

    def expires_at_unix(self):
        return _unix(self.expires_at)


def _unix(moment):
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one notification.

    ok: the provider accepted it. permanent: sending the same again will not help.
    token_dead: the device token is gone or unusable; the caller must not use it again.
    status: the provider's last HTTP status (None when it was never reached).
    reason: the provider's own reason ("BadDeviceToken", "UNREGISTERED", ...), "accepted",
    or one of ours ("connection_error", "auth_failed: ...").
    attempts: HTTP requests made for this notification. message_id: apns-id / FCM name.
    """
    ok: bool
    provider: str
    status: int | None
    reason: str
    permanent: bool
    token_dead: bool
    attempts: int
    message_id: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for 429, 5xx and network failures: exponential backoff with
    jitter, or the provider's Retry-After when it gives one (capped)."""
    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 30.0

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.retry_after_max < 0:
            raise ValueError("backoff times cannot be negative")

    def delay(self, failed_attempts, retry_after=None):
        """Seconds to wait after `failed_attempts` (1, 2, ...) failures."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        backoff = min(self.backoff_max, self.backoff_base * 2 ** (failed_attempts - 1))
        return backoff * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class Outcome:
    """One provider answer, classified. `retry` answers are tried again while attempts
    and the challenge's lifetime allow; `reauth` ones once more with fresh credentials."""
    ok: bool
    status: int | None
    reason: str
    permanent: bool = False
    token_dead: bool = False
    retry: bool = False
    reauth: bool = False
    retry_after: float | None = None
    message_id: str | None = None
    credential: str | None = field(default=None, repr=False)  # the JWT / access token the request used


class Provider:
    """A push provider: `send(push_token, message) -> DeliveryResult`, never raising."""
    name = "provider"

    def __init__(self, *, retry=None, timeout=10.0, verify=True, clock=time.time, sleep=time.sleep, http2_only=False):
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._http = make_http_client(verify=verify, timeout=timeout, http2_only=http2_only)

    def close(self):
        self._http.close()

    def send(self, push_token, message):
        hint = token_hint(push_token)
        attempts, reauthed, outcome = 0, False, None
        deadline = message.expires_at_unix()
        while True:
            attempts += 1
            outcome = self._attempt_safely(push_token, message)
            if outcome.reauth and not reauthed:
                # Our credential was refused (expired JWT, revoked access token): make a
                # fresh one and try once more straight away.
                reauthed = True
                self._invalidate_credentials(outcome.credential)
                log.info("%s: credentials refused (%s), retrying with fresh ones",
                         self.name, outcome.reason, extra=_log_extra(message, hint))
                continue
            if not outcome.retry or attempts >= self.retry.max_attempts:
                break
            delay = self.retry.delay(attempts, outcome.retry_after)
            if self._clock() + delay >= deadline:
                log.info("%s: not retrying %s, the challenge expires first", self.name, outcome.reason,
                         extra=_log_extra(message, hint))
                break
            log.info("%s: attempt %d failed (%s %s), retrying in %.2fs", self.name, attempts, outcome.status,
                     outcome.reason, delay, extra=_log_extra(message, hint))
            self._sleep(delay)
        result = DeliveryResult(ok=outcome.ok, provider=self.name, status=outcome.status, reason=outcome.reason,
                                permanent=outcome.permanent, token_dead=outcome.token_dead, attempts=attempts,
                                message_id=outcome.message_id)
        level = logging.INFO if result.ok else logging.WARNING
        log.log(level, "%s: %s for %s to device token %s: %s %s after %d attempt(s)%s", self.name,
                "delivered" if result.ok else "not delivered", message.collapse_id, hint, result.status,
                result.reason, attempts, " (token dead)" if result.token_dead else "",
                extra=_log_extra(message, hint))
        return result

    def _attempt_safely(self, push_token, message):
        try:
            return self._attempt(push_token, message)
        except httpx.TransportError as exc:
            # Connection refused or reset, TLS failure, timeout: the provider may be
            # briefly unreachable, so this is retried like a 503.
            return Outcome(ok=False, status=None, reason=f"connection_error: {type(exc).__name__}", retry=True)
        except Exception as exc:  # noqa: BLE001 — a result is owed to the caller, whatever broke
            log.error("%s: unexpected %s while sending: %s", self.name, type(exc).__name__,
                      self._scrub(str(exc), push_token), extra=_log_extra(message, token_hint(push_token)))
            return Outcome(ok=False, status=None, reason=f"internal_error: {type(exc).__name__}")

    def _attempt(self, push_token, message):
        """One request to the provider, classified. Subclasses implement it."""
        raise NotImplementedError

    def _invalidate_credentials(self, refused):
        """Forget the cached JWT / access token if it is the `refused` one, so the next
        attempt makes a new one (and concurrent sends refused alike renew it only once)."""

    def _secrets(self):
        """Strings that must never reach a log line (current JWT, access token)."""
        return ()

    def _scrub(self, text, push_token):
        for secret in (push_token, *self._secrets()):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


def token_hint(push_token):
    """Enough of a device token to tell tokens apart in logs, never the token itself."""
    if not push_token or len(push_token) < 16:
        return "[redacted]"
    return f"{push_token[:6]}…({len(push_token)})"


def _log_extra(message, hint):
    return {**message.data(), "push_token_hint": hint}


def parse_retry_after(value):
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def ssl_context(verify):
    """An SSL context from True (the system's and certifi's CAs), a CA bundle path or a context."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    if verify is True:
        return httpx.create_ssl_context()  # certifi's CA bundle, as httpx does by default
    raise ValueError("TLS verification cannot be switched off for push providers")


def make_http_client(*, verify=True, timeout=10.0, http2_only=False):
    """The one HTTP client of the providers: httpx over h2, connections kept and reused.

    `http2_only` offers only "h2" in ALPN (APNs speaks nothing else); otherwise h2 is
    preferred and HTTP/1.1 accepted.
    """
    return httpx.Client(http1=not http2_only, http2=True, verify=ssl_context(verify),
                        timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
                        limits=httpx.Limits(max_connections=10, max_keepalive_connections=2))


class _TransportLogGuard(logging.Filter):
    """Keeps the transport libraries from logging what the providers must not.

    httpx logs each request's URL at INFO, and an APNs URL ends in the device token;
    hpack logs decoded header values (the bearer JWT or access token) at DEBUG.
    """
    _DEVICE_PATH = re.compile(r"(/3/device/)[^\s\"'?/]+")

    def filter(self, record):
        if record.name.startswith("hpack"):
            return False
        message = record.getMessage()
        cleaned = self._DEVICE_PATH.sub(r"\1[redacted]", message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_guard_lock = threading.Lock()
_guard_installed = False


def guard_transport_logs():
    global _guard_installed
    with _guard_lock:
        if _guard_installed:
            return
        guard = _TransportLogGuard()
        for name in ("httpx", "hpack.hpack", "hpack.table", "hpack"):
            logging.getLogger(name).addFilter(guard)
        _guard_installed = True


guard_transport_logs()
