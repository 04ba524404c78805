"""The gateway's admin room: activations, devices, sessions, locks, fraud blocks, the audit
trail and the named admin credentials, every request audited."""
import hmac
import logging
import re
from contextlib import contextmanager
from urllib.parse import urlencode

import segno
from werkzeug.wrappers import Response

from shared import events
from shared.clock import isoformat, utcnow
from shared.errors import Conflict, MycepaError, NotFound, Unauthenticated, Unavailable, ValidationFailed
from shared.fields import ACTIVATION_CODE_PATTERN, USERNAME_PATTERN
from shared.validation import load_args
from services.gateway import schemas
from services.gateway.entrypoints import json_response, load_body, route

log = logging.getLogger(__name__)


ACTIVATION_CODE = re.compile(ACTIVATION_CODE_PATTERN)
# The admin credential of MYCEPA_ADMIN_TOKEN, and the actor of a refused admin request:
# no named credential may take these names.
BOOTSTRAP = "bootstrap"
RESERVED_ADMIN_NAMES = (BOOTSTRAP, "unknown")


def _bounded(target):
    """A target as an audit entry may hold it (whatever a request put in its path)."""
    return None if target is None else str(target)[:128]


def _username_or_none(text):
    """`text` if it is a werkboeknummer (what an audit entry may be filed under)."""
    return text if isinstance(text, str) and re.match(USERNAME_PATTERN, text) else None


class AdminApi:
    """Routes of administrators (a part of GatewayService)."""

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
            try:
                # At once, not only when push hears DeviceRevoked (services/push/service.py).
                self.push.revoke_device(device_id, revoked["username"])
            except Unavailable:
                # Revoked in otp, and its event is queued for push: answering 503 would
                # only make the admin retry into a 404. Push applies it when it is back.
                log.warning("push did not take the revocation at once; it follows from DeviceRevoked")
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

