"""The gateway: the only HTTP surface. Browser login, device activation, admin, operations."""
import hmac
import logging
import re
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import urlencode

import eventlet
import segno
from nameko.events import BROADCAST
from nameko.timer import timer
from werkzeug.wrappers import Response

from shared import events
from shared.clock import isoformat, parse_time, utcnow
from shared.config import SettingsProvider
from shared.errors import (
    Conflict, InvalidCredentials, Locked, MycepaError, NotFound, TooManyRequests, Unauthenticated,
    Unavailable, ValidationFailed, unavailable_from,
)
from shared.fields import ACTIVATION_CODE_PATTERN, USERNAME_PATTERN
from shared.messaging import EventDispatcher
from shared.mongo import MongoStorage
from shared.validation import load_args
from services.gateway import metrics, schemas, webpage
from services.gateway.config import GatewaySettings
from services.gateway.dependencies import Announcer, BrokerCheck, ServiceRpc, Waiters
from services.gateway.entrypoints import LONG_POLL_ROUND, ROUTES, json_response, load_body, route
from services.gateway.openapi import build_spec
from services.gateway.sources import source_address
from services.gateway.bindings import binding_of, bound_request
from services.gateway.storage import GatewayStorage

log = logging.getLogger(__name__)

# Cookie names; outside dev each carries the __Host- prefix (Secure, Path=/, no Domain:
# no other site and no subdomain can set or overwrite them).
SESSION_COOKIE = "mycepa_session"
REMEMBER_COOKIE = "mycepa_remember"
# Binds a push login request to the browser that started it: only that browser, holding
# this cookie, can see the outcome and receive the session.
PUSH_COOKIE = "mycepa_push"
ACTIVATION_CODE = re.compile(ACTIVATION_CODE_PATTERN)
# The admin credential of MYCEPA_ADMIN_TOKEN, and the actor of a refused admin request:
# no named credential may take these names.
BOOTSTRAP = "bootstrap"
RESERVED_ADMIN_NAMES = (BOOTSTRAP, "unknown")
# How long /readyz and /metrics wait for the audit service's figures.
AUDIT_CHECK_SECONDS = 0.5


class GatewayService:
    name = "gateway"

    config = SettingsProvider(GatewaySettings)
    storage = MongoStorage(GatewayStorage)
    otp = ServiceRpc("otp")
    push = ServiceRpc("push")
    audit = ServiceRpc("audit")
    broker_reachable = BrokerCheck()
    dispatch = EventDispatcher()
    announce = Announcer()
    waiters = Waiters()

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
        event = _parse(event_cls, payload)
        if event is not None:
            self.waiters.settle(event["request_id"], {"status": status, "device_id": event.get("device_id")})

    def _forget_unreachable(self, request):
        """The saved user has no active device: this browser forgets them (404)."""
        self.storage.forget(self._cookie_of(request, REMEMBER_COOKIE))
        raise NotFound("The saved user has no active device any more; log in with a code")

    # -- sessions that end when they should -------------------------------------------

    @events.handles(events.DeviceRevoked, requeue_on_error=True)
    def on_device_revoked(self, payload):
        """A revoked device's sessions end; with no device left, no browser keeps the
        user's saved username either (push login could not work)."""
        event = _parse(events.DeviceRevoked, payload)
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
        event = _parse(events.AccountLocked, payload)
        if event is not None and event["hard"]:
            ended = self.storage.end_sessions(username=event["username"])
            self._announce_ended(ended, "locked")
            log.info("code login of %s hard-locked: %d session(s) ended", event["username"], len(ended))

    # -- device (the OTP app) --------------------------------------------------------

    @route("POST", "/api/devices/activate", "Activate the OTP app with an activation code", "device",
           body=schemas.ActivateRequest, responses={201: schemas.ActivateResponse},
           errors=(400, 401, 410, 423, 503))
    def activate_device(self, request):
        device = load_body(request, schemas.ActivateRequest, self.config["max_body_bytes"])
        return json_response(self.otp.activate_device(**device), 201)


    @route("POST", "/api/devices/{device_id}/challenges", "A device's pending login requests and unseen security notices",
           "device", body=schemas.SignedPoll, responses={200: schemas.DeviceChallenges},
           errors=(400, 401, 403, 503))
    def device_challenges(self, request, device_id):
        poll = load_body(request, schemas.SignedPoll, self.config["max_body_bytes"])
        return json_response(self.push.pending_challenges(device_id, poll["timestamp"], poll["signature"]))

    @route("POST", "/api/push/challenges/{challenge_id}/response", "'Bevestig toegang': approve or deny",
           "device", body=schemas.ChallengeAnswer, responses={200: schemas.ChallengeAnswered},
           errors=(400, 401, 403, 404, 409, 410, 503))
    def answer_challenge(self, request, challenge_id):
        answer = load_body(request, schemas.ChallengeAnswer, self.config["max_body_bytes"])
        return json_response(self.push.respond(challenge_id, answer["device_id"], answer["decision"],
                                               answer["number"], answer["signature"], answer["fraud"]))

    @route("POST", "/api/devices/{device_id}/push-token", "A device's new push token (signed)", "device",
           body=schemas.PushTokenUpdate, responses={200: schemas.DeviceUpdated}, errors=(400, 401, 403, 503))
    def update_push_token(self, request, device_id):
        update = load_body(request, schemas.PushTokenUpdate, self.config["max_body_bytes"])
        return json_response(self.push.update_push_token(device_id, update["push_token"], update["timestamp"],
                                                         update["signature"]))

    # -- admin -----------------------------------------------------------------------
    # Every admin request is audited (architecture.md §4): refused ones, and allowed ones whose
    # own event does not carry the admin's name, as AdminAction (see `_admin`).

    @route("POST", "/api/admin/activations", "Create an activation code for a werkboeknummer", "admin",
           body=schemas.CreateActivationRequest, responses={201: schemas.ActivationResponse},
           errors=(400, 401, 429, 503), auth="admin")
    def create_activation(self, request):
        with self._admin(request, "create_activation") as admin:
            body = load_body(request, schemas.CreateActivationRequest, self.config["max_body_bytes"])
            admin.update(username=body["username"])
            activation = self.otp.create_activation(body["username"], admin["actor"])
            admin["own_event"] = True   # ActivationCreated
        activation["activation_uri"] = self._activation_uri(activation["activation_code"])
        return json_response(activation, 201)

    @route("GET", "/api/admin/activations/{code}/qr.svg", "The activation URI as a QR code", "admin",
           responses={200: None}, errors=(400, 401, 429), auth="admin", content_type="image/svg+xml")
    def activation_qr(self, request, code):
        with self._admin(request, "activation_qr"):
            if not ACTIVATION_CODE.match(code):
                raise ValidationFailed("Invalid request", fields={"code": ["not an activation code"]})
        svg = segno.make(self._activation_uri(code), error="m").svg_inline(scale=6, title="MyCepa activation")
        return Response(svg, status=200, mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})

    @route("GET", "/api/admin/users/{username}/devices", "A user's devices", "admin",
           responses={200: schemas.DeviceList}, errors=(400, 401, 429, 503), auth="admin")
    def list_devices(self, request, username):
        with self._admin(request, "list_devices", username=username):
            return json_response({"username": username, "devices": self.otp.list_devices(username)})

    @route("DELETE", "/api/admin/devices/{device_id}", "Revoke a device", "admin",
           responses={200: schemas.Device}, errors=(400, 401, 404, 429, 503), auth="admin")
    def revoke_device(self, request, device_id):
        with self._admin(request, "revoke_device", target=device_id) as admin:
            revoked = self.otp.revoke_device(device_id, "admin", admin["actor"])
            admin["own_event"] = True   # DeviceRevoked
            return json_response(revoked)

    @route("DELETE", "/api/admin/users/{username}/sessions", "End every session of a user", "admin",
           responses={200: schemas.SessionsEnded}, errors=(400, 401, 429, 503), auth="admin")
    def end_user_sessions(self, request, username):
        with self._admin(request, "end_sessions", username=username) as admin:
            username = load_args(schemas.UsernamePath, username=username)["username"]
            ended = self.storage.end_sessions(username=username)
            self._announce_ended(ended, "admin", actor=admin["actor"], source=self._source(request))
            admin["own_event"] = bool(ended)   # SessionEnded, one per session
            return json_response({"username": username, "ended": len(ended)})

    @route("POST", "/api/admin/users/{username}/unlock", "Unlock a locked account", "admin",
           responses={200: schemas.UnlockResponse}, errors=(400, 401, 429, 503), auth="admin")
    def unlock(self, request, username):
        with self._admin(request, "unlock", username=username) as admin:
            unlocked = self.otp.unlock(username, admin["actor"])
            admin["own_event"] = unlocked["was_locked"]   # AccountUnlocked
            return json_response(unlocked)

    @route("GET", "/api/admin/users/{username}/push-block", "Whether push is blocked after a fraud report",
           "admin", responses={200: schemas.PushBlock}, errors=(400, 401, 429, 503), auth="admin")
    def push_block(self, request, username):
        with self._admin(request, "show_push_block", username=username):
            return json_response(self.push.push_block(username))

    @route("DELETE", "/api/admin/users/{username}/push-block", "Clear a fraud block", "admin",
           responses={200: schemas.PushBlockCleared}, errors=(400, 401, 429, 503), auth="admin")
    def clear_push_block(self, request, username):
        with self._admin(request, "clear_push_block", username=username):
            return json_response(self.push.clear_push_block(username))

    @route("GET", "/api/admin/audit", "The audit trail, newest first: `?username=&type=&since=&until=&limit=&cursor=`",
           "admin", responses={200: schemas.AuditPage}, errors=(400, 401, 429, 503), auth="admin")
    def audit_trail(self, request):
        with self._admin(request, "audit_query", username=request.args.get("username")):
            query = load_args(schemas.AuditQuery, **request.args.to_dict())
            return json_response(self.audit.query(
                username=query.get("username"), types=query.get("type"), limit=query["limit"],
                since=isoformat(query["since"]) if query.get("since") else None,
                until=isoformat(query["until"]) if query.get("until") else None, cursor=query.get("cursor")))

    @route("POST", "/api/admin/credentials", "A named admin credential: its token is shown once", "admin",
           body=schemas.CredentialRequest, responses={201: schemas.CredentialCreated},
           errors=(400, 401, 409, 429, 503), auth="admin")
    def create_credential(self, request):
        with self._admin(request, "create_credential") as admin:
            name = load_body(request, schemas.CredentialRequest, self.config["max_body_bytes"])["name"]
            admin["target"] = name
            token = None if name in RESERVED_ADMIN_NAMES else self.storage.add_admin_credential(name, utcnow())
            if token is None:
                raise Conflict(f"The name {name!r} is taken; credentials are named once")
        return json_response({"name": name, "token": token}, 201)

    @route("GET", "/api/admin/credentials", "The admin credentials (names, never tokens)", "admin",
           responses={200: schemas.CredentialList}, errors=(401, 429, 503), auth="admin")
    def list_credentials(self, request):
        with self._admin(request, "list_credentials"):
            named = [{"name": c["_id"], "created_at": isoformat(c["created_at"]),
                      "revoked_at": isoformat(c["revoked_at"]) if c["revoked_at"] else None}
                     for c in self.storage.admin_credentials()]
            return json_response({"credentials": [{"name": BOOTSTRAP, "created_at": None, "revoked_at": None}]
                                  + named})

    @route("DELETE", "/api/admin/credentials/{credential}", "Revoke a named admin credential, at once", "admin",
           responses={200: schemas.CredentialRevoked}, errors=(400, 401, 404, 409, 429, 503), auth="admin")
    def revoke_credential(self, request, credential):
        with self._admin(request, "revoke_credential", target=credential):
            name = load_args(schemas.CredentialRequest, name=credential)["name"]
            if name == BOOTSTRAP:
                raise Conflict("The bootstrap credential is MYCEPA_ADMIN_TOKEN: change it in the environment")
            if not self.storage.revoke_admin_credential(name, utcnow()):
                raise NotFound("No live credential of that name")
            return json_response({"name": name, "revoked": True})

    # -- operations ------------------------------------------------------------------

    @route("GET", "/healthz", "The gateway process is up", "operations", responses={200: None})
    def healthz(self, request):
        return json_response({"status": "ok"})

    @route("GET", "/readyz", "RabbitMQ, the gateway's database, otp and push all answer", "operations",
           responses={200: schemas.Readiness, 503: schemas.Readiness})
    def readyz(self, request):
        checks = {"rabbitmq": self.broker_reachable, "database": self.storage.ping,
                  "otp": lambda: _answers(self.otp.ping), "push": lambda: _answers(self.push.ping),
                  "audit": self._audit_state}
        pool = eventlet.GreenPool(len(checks))
        results = dict(zip(checks, pool.imap(lambda check: check(), checks.values())))
        # Logins do not wait for the audit trail (its events queue up): it is detail, not
        # a condition of readiness.
        audit = results.pop("audit")
        down = [name for name, ok in results.items() if not ok]
        return json_response({"ready": not down, "checks": results, "down": down, "detail": {"audit": audit}},
                             503 if down else 200)

    def _audit_state(self):
        """{answering, backlog (events waiting in its queue), recorded (by type)}, within
        AUDIT_CHECK_SECONDS: a busy audit service must not slow readiness, which a
        restarting gateway is waited on by (measured: the full RPC bound, 4 s)."""
        try:
            with eventlet.Timeout(AUDIT_CHECK_SECONDS):
                return {"answering": True, **self.audit.stats()}
        except (Exception, eventlet.Timeout):   # not answering (in time); the reason is in its log
            return {"answering": False, "backlog": None, "recorded": {}}

    @route("GET", "/metrics", "Prometheus metrics", "operations", responses={200: None},
           content_type="text/plain")
    def metrics(self, request):
        metrics.observe_audit(self._audit_state())
        body, content_type = metrics.exposition()
        return Response(body, status=200, content_type=content_type)

    @route("GET", "/openapi.json", "This API's OpenAPI document", "operations", responses={200: None})
    def openapi(self, request):
        return json_response(build_spec(ROUTES, self.config["public_url"]))

    @timer(interval=300)
    def purge_expired(self):
        self.storage.purge_expired(utcnow(), self.config["source_failure_window_seconds"])

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

    @contextmanager
    def _admin(self, request, action, target=None, username=None):
        """An admin request as the credential it shows: yields {actor, own_event, ...}.

        A missing, unknown or revoked token is refused (401), counted against the
        request's source like a failed login (429 past the limit) and audited with
        actor `unknown`. An allowed request is audited as AdminAction with its outcome,
        unless it succeeded and its own event carries the actor (`own_event`)."""
        source = self._source(request)
        now = utcnow()
        actor = self._admin_name(request)
        if actor is None:
            self.announce(events.AdminAction, actor="unknown", action=action, target=_bounded(target),
                          username=_username_or_none(username), outcome="refused", status=401, source=source)
            self._refuse_if_throttled(source["ip"], now)
            self._count_failure_of(source["ip"], now)
            raise Unauthenticated("A valid admin bearer token is required")
        done = {"actor": actor, "own_event": False, "target": target, "username": username}
        status = 500
        try:
            yield done
            status = 200
        except MycepaError as error:
            status = error.status
            raise
        finally:
            if not (done["own_event"] and status == 200):
                self.announce(events.AdminAction, actor=actor, action=action, target=_bounded(done["target"]),
                              username=_username_or_none(done["username"]), outcome="allowed", status=status,
                              source=source)

    def _admin_name(self, request):
        """The name of the admin credential the request shows: `bootstrap` for
        MYCEPA_ADMIN_TOKEN, a named one's, or None."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > 256:
            return None
        if hmac.compare_digest(token.encode(), self.config["admin_token"].encode()):
            return BOOTSTRAP
        return self.storage.admin_name_of(token)

    def _activation_uri(self, code):
        return "mycepa://activate?" + urlencode({"code": code, "server": self.config["public_url"]})


def _bounded(target):
    """A target as an audit entry may hold it (whatever a request put in its path)."""
    return None if target is None else str(target)[:128]


def _username_or_none(text):
    """`text` if it is a werkboeknummer (what an audit entry may be filed under)."""
    return text if isinstance(text, str) and re.match(USERNAME_PATTERN, text) else None


def _parse(event_cls, payload):
    try:
        return events.parse_event(event_cls, payload)
    except events.ValidationError:
        log.error("dropping malformed %s event", event_cls.name)
        return None


def _answers(ping):
    try:
        ping()
        return True
    except Exception:  # any failure means "not ready"; the reason is in that service's log
        return False


def _wait_seconds(request):
    raw = request.args.get("wait", "0")
    if not re.fullmatch(r"[0-9]{1,2}", raw) or int(raw) > 25:
        raise ValidationFailed("Invalid request", fields={"wait": ["must be a whole number of seconds, 0 to 25"]})
    return int(raw)
