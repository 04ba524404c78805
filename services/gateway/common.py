"""What every room of the gateway uses: cookies, the session, the request's source, throttling."""
import logging
from datetime import timedelta

from werkzeug.wrappers import Response

from shared import events
from shared.clock import utcnow
from shared.errors import TooManyRequests, Unauthenticated
from services.gateway import metrics
from services.gateway.sources import source_address

log = logging.getLogger(__name__)

# Cookie names; outside dev each carries the __Host- prefix (Secure, Path=/, no Domain:
# no other site and no subdomain can set or overwrite them).
SESSION_COOKIE = "mycepa_session"
REMEMBER_COOKIE = "mycepa_remember"
# Binds a push login request to the browser that started it: only that browser, holding
# this cookie, can see the outcome and receive the session (services/gateway/bindings.py).
PUSH_COOKIE = "mycepa_push"


def parse_event_or_none(event_cls, payload):
    try:
        return events.parse_event(event_cls, payload)
    except events.ValidationError:
        log.error("dropping malformed %s event", event_cls.name)
        return None


class Common:
    """Helpers of every room (a part of GatewayService)."""

    # -- helpers ---------------------------------------------------------------------

    @property
    def _secure_cookies(self):
        return self.config["environment"] != "dev"

    def _cookie_name(self, name):
        return f"__Host-{name}" if self._secure_cookies else name

    def _cookie_of(self, request, name):
        return request.cookies.get(self._cookie_name(name))

    def _set_cookie(self, response, name, value, max_age):
        response.set_cookie(self._cookie_name(name), value, max_age=max_age, path="/", httponly=True,
                            samesite="Strict", secure=self._secure_cookies)

    def _revoke_cookie(self, request, name, revoke):
        """204 that clears cookie `name`, after revoking its token server-side."""
        token = self._cookie_of(request, name)
        if token:
            revoke(token)
        response = Response(status=204)
        self._delete_cookie(response, name)
        return response

    def _delete_cookie(self, response, name):
        response.delete_cookie(self._cookie_name(name), path="/", samesite="Strict", httponly=True,
                               secure=self._secure_cookies)

    def _remembered(self, request):
        token = self._cookie_of(request, REMEMBER_COOKIE)
        return self.storage.find_remembered(token, utcnow()) if token else None

    def _session(self, request):
        token = self._cookie_of(request, SESSION_COOKIE)
        session, ended = (self.storage.find_session(token, utcnow(), self.config["session_idle_seconds"])
                          if token else (None, None))
        if ended is not None:
            self._announce_ended([ended["session"]], ended["reason"], source=self._source(request))
        if session is None:
            raise Unauthenticated("Not logged in")
        return session

    def _start_session(self, response, username, method, device_id, source):
        """A session for `response` (its cookie), and its SessionStarted."""
        now, ttl = utcnow(), self.config["session_ttl_seconds"]
        token = self.storage.create_session(username, method, device_id, now, now + timedelta(seconds=ttl))
        self._set_cookie(response, SESSION_COOKIE, token, ttl)
        self.announce(events.SessionStarted, username=username, method=method, device_id=device_id, source=source)

    def _announce_ended(self, sessions, reason, actor=None, source=None):
        for session in sessions:
            self.announce(events.SessionEnded, username=session["username"], method=session.get("method"),
                          device_id=session.get("device_id"), reason=reason, actor=actor, source=source)

    def _source(self, request):
        """{ip, user_agent} of the request: the address throttling counts (sources.py)."""
        return {"ip": source_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                                     self.config["trusted_proxies"]),
                "user_agent": request.headers.get("User-Agent", "")[:512]}

    def _count_failure_of(self, ip, now):
        if self.config["source_failure_limit"]:
            self.storage.count_source_failure(ip, now, self.config["source_failure_window_seconds"])

    def _refuse_if_throttled(self, source, now):
        """429 for a source over SOURCE_FAILURE_LIMIT failed logins in the window; other
        sources are not affected. Announced once a minute per source (LoginThrottled)."""
        limit, window = self.config["source_failure_limit"], self.config["source_failure_window_seconds"]
        if not limit:
            return
        failures, retry_after = self.storage.source_failures(source, now, window)
        if failures < limit:
            return
        metrics.LOGINS.labels("code", "throttled").inc()
        if self.storage.first_throttle_in_bucket(source, now):
            events.dispatch_event(self.dispatch, events.LoginThrottled, ip=source, failures=failures,
                                  window_seconds=window, retry_after=retry_after)
        raise TooManyRequests(f"Too many failed logins from this address; try again in {retry_after} seconds",
                              retry_after=retry_after)

