"""The gateway's browser room: the login page, code login, the session and its end, the saved username."""
import logging
import uuid
from datetime import timedelta

from werkzeug.wrappers import Response

from shared import events
from shared.clock import isoformat, utcnow
from shared.errors import InvalidCredentials, Locked, NotFound, Unavailable, unavailable_from
from services.gateway import metrics, schemas, webpage
from services.gateway.entrypoints import json_response, load_body, route
from services.gateway.common import REMEMBER_COOKIE, SESSION_COOKIE, parse_event_or_none

log = logging.getLogger(__name__)


class BrowserLogin:
    """Routes and handlers of the browser's code login and session (a part of GatewayService)."""

    # -- the login page --------------------------------------------------------------

    @route("GET", "/", "The login page (its script, style and icon come from /static/)", "browser",
           responses={200: None}, content_type="text/html")
    def login_page(self, request):
        return webpage.page_response(request)

    @route("GET", "/static/{name}", "A file of the login page, from a fixed list", "browser",
           responses={200: None}, errors=(404,), content_type="*/*")
    def static_file(self, request, name):
        asset = webpage.ASSETS.get(name)
        if asset is None:
            raise NotFound("No such file")
        return webpage.asset_response(request, asset)

    # -- browser: code login and session -------------------------------------------

    @route("POST", "/api/login", "Log in with the werkboeknummer and a 10-digit OTP code", "browser",
           body=schemas.LoginRequest, responses={200: schemas.LoginResponse}, errors=(400, 401, 423, 503))
    def login(self, request):
        """A code accepted by otp ends in a session, or is handed back (LoginAbandoned):
        a login answered with anything but 200 has not consumed its code."""
        credentials = load_body(request, schemas.LoginRequest, self.config["max_body_bytes"])
        username = credentials["username"]
        source = self._source(request)
        now = utcnow()
        self._refuse_if_throttled(source["ip"], now)
        # Read before the code is spent: after it, only the session may still fail.
        remembered = self._remembered(request)
        attempt_id = uuid.uuid4().hex
        try:
            verified = self.otp.verify(username, credentials["password"], attempt_id, source)
        except (InvalidCredentials, Locked) as refusal:
            metrics.LOGINS.labels("code", refusal.code).inc()
            self._count_failure_of(source["ip"], now)
            raise
        except Unavailable:
            # otp may have accepted the code and its answer not arrived in time.
            self.announce(events.LoginAbandoned, username=username, attempt_id=attempt_id, reason="unavailable")
            metrics.LOGINS.labels("code", "unavailable").inc()
            raise
        offer = remembered is None or remembered["username"] != verified["username"]
        response = json_response({"username": verified["username"], "offer_remember": offer})
        try:
            self._start_session(response, verified["username"], "code", verified["device_id"], source)
        except Exception as error:
            self.announce(events.LoginAbandoned, username=username, attempt_id=attempt_id,
                          reason="session_not_stored")
            metrics.LOGINS.labels("code", "unavailable").inc()
            raise unavailable_from(error) or error
        metrics.LOGINS.labels("code", "ok").inc()
        return response

    @route("GET", "/api/me", "The logged-in user, and their login before this one", "browser",
           responses={200: schemas.MeResponse}, errors=(401,), auth="session")
    def me(self, request):
        session = self._session(request)
        try:
            previous = self.audit.previous_login(session["username"], isoformat(session["created_at"]))
        except Unavailable:
            previous = None   # the audit trail is away: the user is still logged in
        return json_response({"username": session["username"], "previous_login": previous})

    @route("GET", "/api/me/activity", "The user's own last sign-ins, refusals, locks and device changes",
           "browser", responses={200: schemas.Activity}, errors=(401, 503), auth="session")
    def my_activity(self, request):
        return json_response(self.audit.activity(self._session(request)["username"]))

    @route("POST", "/api/logout", "Log out: the session is revoked", "browser", responses={204: None},
           errors=(401,), auth="session")
    def logout(self, request):
        self._session(request)   # without a live session there is nothing to log out of: 401
        ended = self.storage.delete_session(self._cookie_of(request, SESSION_COOKIE))
        if ended is not None:
            self._announce_ended([ended], "logout", source=self._source(request))
        response = Response(status=204)
        self._delete_cookie(response, SESSION_COOKIE)
        return response

    # -- browser: "Bewaar je gebruikersnaam" and push login ----------------------------

    @route("POST", "/api/remember", "Save the username: this browser may log in with push", "browser",
           responses={204: None}, errors=(401,), auth="session")
    def remember(self, request):
        session = self._session(request)
        now = utcnow()
        ttl = self.config["remember_ttl_seconds"]
        old = self._cookie_of(request, REMEMBER_COOKIE)
        if old:
            self.storage.forget(old)
        token = self.storage.remember(session["username"], now, now + timedelta(seconds=ttl))
        response = Response(status=204)
        self._set_cookie(response, REMEMBER_COOKIE, token, ttl)
        return response

    @route("DELETE", "/api/remember", "'Andere gebruiker': forget the saved username", "browser",
           responses={204: None})
    def forget(self, request):
        return self._revoke_cookie(request, REMEMBER_COOKIE, self.storage.forget)

    # -- sessions that end when they should -------------------------------------------

    @events.handles(events.DeviceRevoked, requeue_on_error=True)
    def on_device_revoked(self, payload):
        """A revoked device's sessions end; with no device left, no browser keeps the
        user's saved username either (push login could not work)."""
        event = parse_event_or_none(events.DeviceRevoked, payload)
        if event is None:
            return
        ended = self.storage.end_sessions(device_id=event["device_id"])
        self._announce_ended(ended, "device_revoked", actor=event.get("actor"))
        forgotten = self.storage.forget_user(event["username"]) if event["active_devices_left"] == 0 else 0
        log.info("device of %s revoked: %d session(s) ended, %d saved browser(s) forgotten",
                 event["username"], len(ended), forgotten)

    @events.handles(events.AccountLocked, requeue_on_error=True)
    def on_account_locked(self, payload):
        """After a hard lock (someone tried 100 codes) the user's sessions end too."""
        event = parse_event_or_none(events.AccountLocked, payload)
        if event is not None and event["hard"]:
            ended = self.storage.end_sessions(username=event["username"])
            self._announce_ended(ended, "locked")
            log.info("code login of %s hard-locked: %d session(s) ended", event["username"], len(ended))

