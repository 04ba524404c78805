"""The gateway's push-login room: "Stuur PUSH" and the browser waiting for its outcome.

Push owns the request (docs/architecture.md §2); the gateway keeps the browser's binding
(services/gateway/bindings.py) and hands out the session."""
import re
import time

from nameko.events import BROADCAST

from shared import events
from shared.clock import parse_time, utcnow
from shared.errors import NotFound, ValidationFailed
from services.gateway import metrics, schemas
from services.gateway.entrypoints import LONG_POLL_ROUND, json_response, route
from services.gateway.bindings import binding_of, bound_request
from services.gateway.common import PUSH_COOKIE, REMEMBER_COOKIE, parse_event_or_none


def _wait_seconds(request):
    raw = request.args.get("wait", "0")
    if not re.fullmatch(r"[0-9]{1,2}", raw) or int(raw) > 25:
        raise ValidationFailed("Invalid request", fields={"wait": ["must be a whole number of seconds, 0 to 25"]})
    return int(raw)


class PushLogin:
    """Routes and handlers of the browser's push login (a part of GatewayService)."""

    @route("GET", "/api/login/push", "The saved username of this browser", "browser",
           responses={200: schemas.RememberedUser}, errors=(404, 503))
    def remembered_user(self, request):
        remembered = self._remembered(request)
        if remembered is None:
            raise NotFound("This browser has no saved username")
        if self.push.push_state(remembered["username"])["active_devices"] == 0:
            self._forget_unreachable(request)
        return json_response({"username": remembered["username"]})

    @route("POST", "/api/login/push", "'Stuur PUSH': ask the user's phone to confirm this login", "browser",
           responses={202: schemas.PushRequestCreated}, errors=(403, 404, 429, 503))
    def request_push(self, request):
        """The push service owns the request (its device, fraud block, limit, number and
        expiry: architecture.md §2); this browser gets the binding that alone may learn
        its outcome. A locked code login does not stop push: the phone proves possession
        (architecture.md §5)."""
        remembered = self._remembered(request)
        if remembered is None:
            raise NotFound("This browser has no saved username")
        try:
            created = self.push.request_login(remembered["username"], self._source(request))
        except NotFound:
            self._forget_unreachable(request)
        metrics.LOGINS.labels("push", "requested").inc()
        response = json_response(created, 202)
        expires_at = parse_time(created["expires_at"])
        binding = binding_of(self.storage.binding_key(), created["request_id"], remembered["username"], expires_at)
        # Outlives the request, so the browser can still learn that it expired.
        self._set_cookie(response, PUSH_COOKIE, binding, int((expires_at - utcnow()).total_seconds()) + 600)
        return response

    @route("GET", "/api/login/push/{request_id}", "The state of a push login (`?wait=` seconds to wait for "
           "the answer, at most 25); approved sets the session", "browser",
           responses={200: schemas.PushRequestStatus}, errors=(400, 404, 503), long_poll=True)
    def push_status(self, request, request_id):
        wait = _wait_seconds(request)
        binding = bound_request(self.storage.binding_key(), self._cookie_of(request, PUSH_COOKIE), request_id)
        if binding is None:
            # Someone else's request id looks exactly like an unknown one.
            raise NotFound("No such login request for this browser")
        # An answer this instance heard (every instance hears them), else push's word;
        # a browser that will wait first waits for the answer's broadcast (push is asked
        # when the wait ends without one: a broadcast lost while the broker was away).
        outcome = self.waiters.outcome(request_id)
        if outcome is None and wait and not request.environ.get(LONG_POLL_ROUND) \
                and binding["expires_at"] > utcnow():
            outcome = {"status": "pending"}
        outcome = outcome or self.push.login_status(binding["username"], request_id)
        response = json_response({"status": outcome["status"]})
        if outcome["status"] == "pending":
            if wait:
                # Wait (outside this worker, entrypoints.LongPoll) for the answer's
                # broadcast, at most `wait` seconds and not past the request's expiry.
                until_expiry = (binding["expires_at"] - utcnow()).total_seconds() + 0.05
                response.wait_for = (request_id, time.monotonic() + min(wait, until_expiry))
            return response
        if outcome["status"] == "approved" and self.storage.claim_session_for(request_id, utcnow()):
            self._start_session(response, binding["username"], "push", outcome["device_id"], self._source(request))
            self._delete_cookie(response, PUSH_COOKIE)
            metrics.LOGINS.labels("push", "ok").inc()
        return response

    # Every instance hears the answers (broadcast, not durable) and keeps them a while:
    # a browser waiting here is woken at once, and one asking later is answered without
    # asking push. Push keeps the outcome; a missed broadcast only means push is asked.
    @events.handles(events.AccessConfirmed, handler_type=BROADCAST, reliable_delivery=False)
    def hear_access_confirmed(self, payload):
        self._hear(events.AccessConfirmed, payload, "approved")

    @events.handles(events.AccessDenied, handler_type=BROADCAST, reliable_delivery=False)
    def hear_access_denied(self, payload):
        self._hear(events.AccessDenied, payload, "denied")

    @events.handles(events.LoginExpired, handler_type=BROADCAST, reliable_delivery=False)
    def hear_login_expired(self, payload):
        self._hear(events.LoginExpired, payload, "expired")

    def _hear(self, event_cls, payload, status):
        event = parse_event_or_none(event_cls, payload)
        if event is not None:
            self.waiters.settle(event["request_id"], {"status": status, "device_id": event.get("device_id")})

    def _forget_unreachable(self, request):
        """The saved user has no active device: this browser forgets them (404)."""
        self.storage.forget(self._cookie_of(request, REMEMBER_COOKIE))
        raise NotFound("The saved user has no active device any more; log in with a code")

