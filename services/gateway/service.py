"""The gateway: the only HTTP surface. Browser login, device activation, admin, operations."""
import hmac
import re
from datetime import timedelta
from urllib.parse import urlencode

import eventlet
import segno
from nameko.timer import timer
from werkzeug.wrappers import Response

from shared.clock import utcnow
from shared.errors import (
    InvalidCredentials, Locked, Unauthenticated, ValidationFailed,
)
from shared.mongo import MongoStorage
from services.gateway import metrics, schemas
from services.gateway.dependencies import BrokerCheck, GatewayConfig, ServiceRpc
from services.gateway.entrypoints import ROUTES, json_response, load_body, route
from services.gateway.openapi import build_spec
from services.gateway.storage import GatewayStorage

SESSION_COOKIE = "mycepa_session"
ACTIVATION_CODE = re.compile(r"^[A-Za-z0-9-]{4,64}\Z")


class GatewayService:
    name = "gateway"

    config = GatewayConfig()
    storage = MongoStorage(GatewayStorage)
    otp = ServiceRpc("otp")
    push = ServiceRpc("push")
    broker_reachable = BrokerCheck()

    # -- browser: code login and session -------------------------------------------

    @route("POST", "/api/login", "Log in with the werkboeknummer and a 10-digit OTP code", "browser",
           body=schemas.LoginRequest, responses={200: schemas.LoginResponse}, errors=(400, 401, 423, 503))
    def login(self, request):
        credentials = load_body(request, schemas.LoginRequest, self.config["max_body_bytes"])
        try:
            verified = self.otp.verify(credentials["username"], credentials["password"])
        except (InvalidCredentials, Locked) as refusal:
            metrics.LOGINS.labels("code", refusal.code).inc()
            raise
        now = utcnow()
        token = self.storage.create_session(
            verified["username"], verified["device_id"], now,
            now + timedelta(seconds=self.config["session_ttl_seconds"]))
        metrics.LOGINS.labels("code", "ok").inc()
        response = json_response({"username": verified["username"], "offer_remember": True})
        self._set_cookie(response, SESSION_COOKIE, token, self.config["session_ttl_seconds"])
        return response

    @route("GET", "/api/me", "The logged-in user", "browser", responses={200: schemas.MeResponse},
           errors=(401,), auth="session")
    def me(self, request):
        return json_response({"username": self._session(request)["username"]})

    @route("POST", "/api/logout", "Log out: the session is revoked", "browser", responses={204: None},
           auth="session")
    def logout(self, request):
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            self.storage.delete_session(token)
        response = Response(status=204)
        response.delete_cookie(SESSION_COOKIE, path="/", samesite="Strict", httponly=True,
                               secure=self._secure_cookies)
        return response

    # -- device (the OTP app) --------------------------------------------------------

    @route("POST", "/api/devices/activate", "Activate the OTP app with an activation code", "device",
           body=schemas.ActivateRequest, responses={201: schemas.ActivateResponse},
           errors=(400, 401, 410, 423, 503))
    def activate_device(self, request):
        device = load_body(request, schemas.ActivateRequest, self.config["max_body_bytes"])
        return json_response(self.otp.activate_device(**device), 201)

    # -- admin -----------------------------------------------------------------------

    @route("POST", "/api/admin/activations", "Create an activation code for a werkboeknummer", "admin",
           body=schemas.CreateActivationRequest, responses={201: schemas.ActivationResponse},
           errors=(400, 401, 503), auth="admin")
    def create_activation(self, request):
        self._require_admin(request)
        body = load_body(request, schemas.CreateActivationRequest, self.config["max_body_bytes"])
        activation = self.otp.create_activation(body["username"])
        activation["activation_uri"] = self._activation_uri(activation["activation_code"])
        return json_response(activation, 201)

    @route("GET", "/api/admin/activations/{code}/qr.svg", "The activation URI as a QR code", "admin",
           responses={200: None}, errors=(400, 401), auth="admin", content_type="image/svg+xml")
    def activation_qr(self, request, code):
        self._require_admin(request)
        if not ACTIVATION_CODE.match(code):
            raise ValidationFailed("Invalid request", fields={"code": ["not an activation code"]})
        svg = segno.make(self._activation_uri(code), error="m").svg_inline(scale=6, title="MyCepa activation")
        return Response(svg, status=200, mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})

    @route("GET", "/api/admin/users/{username}/devices", "A user's devices", "admin",
           responses={200: schemas.DeviceList}, errors=(400, 401, 503), auth="admin")
    def list_devices(self, request, username):
        self._require_admin(request)
        return json_response({"username": username, "devices": self.otp.list_devices(username)})

    @route("DELETE", "/api/admin/devices/{device_id}", "Revoke a device", "admin",
           responses={200: schemas.Device}, errors=(400, 401, 404, 503), auth="admin")
    def revoke_device(self, request, device_id):
        self._require_admin(request)
        return json_response(self.otp.revoke_device(device_id, "admin"))

    @route("POST", "/api/admin/users/{username}/unlock", "Unlock a locked account", "admin",
           responses={200: schemas.UnlockResponse}, errors=(400, 401, 503), auth="admin")
    def unlock(self, request, username):
        self._require_admin(request)
        return json_response(self.otp.unlock(username))

    # -- operations ------------------------------------------------------------------

    @route("GET", "/healthz", "The gateway process is up", "operations", responses={200: None})
    def healthz(self, request):
        return json_response({"status": "ok"})

    @route("GET", "/readyz", "RabbitMQ, the gateway's database, otp and push all answer", "operations",
           responses={200: schemas.Readiness, 503: schemas.Readiness})
    def readyz(self, request):
        checks = {"rabbitmq": self.broker_reachable, "database": self.storage.ping,
                  "otp": lambda: _answers(self.otp.ping), "push": lambda: _answers(self.push.ping)}
        pool = eventlet.GreenPool(len(checks))
        results = dict(zip(checks, pool.imap(lambda check: check(), checks.values())))
        ready = all(results.values())
        return json_response({"ready": ready, "checks": results}, 200 if ready else 503)

    @route("GET", "/metrics", "Prometheus metrics", "operations", responses={200: None},
           content_type="text/plain")
    def metrics(self, request):
        body, content_type = metrics.exposition()
        return Response(body, status=200, content_type=content_type)

    @route("GET", "/openapi.json", "This API's OpenAPI document", "operations", responses={200: None})
    def openapi(self, request):
        return json_response(build_spec(ROUTES, self.config["public_url"]))

    @timer(interval=300)
    def purge_expired(self):
        self.storage.purge_expired(utcnow())

    # -- helpers ---------------------------------------------------------------------

    @property
    def _secure_cookies(self):
        return self.config["environment"] != "dev"

    def _set_cookie(self, response, name, value, max_age):
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="Strict",
                            secure=self._secure_cookies)

    def _session(self, request):
        token = request.cookies.get(SESSION_COOKIE)
        session = self.storage.find_session(token, utcnow()) if token else None
        if session is None:
            raise Unauthenticated("Not logged in")
        return session

    def _require_admin(self, request):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self.config["admin_token"].encode()):
            raise Unauthenticated("A valid admin bearer token is required")

    def _activation_uri(self, code):
        return "mycepa://activate?" + urlencode({"code": code, "server": self.config["public_url"]})


def _answers(ping):
    try:
        ping()
        return True
    except Exception:  # any failure means "not ready"; the reason is in that service's log
        return False
