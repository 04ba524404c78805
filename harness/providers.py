"""Local APNs and FCM servers speaking the providers' protocols over TLS + HTTP/2.

The servers run in their own process (`python -m harness.providers CONFIG`):
hypercorn serves two small ASGI apps on 127.0.0.1, each on a socket bound to port 0, and
prints `{"apns": port, "fcm": port}` once they listen. A process of its own keeps their
asyncio loop away from the eventlet-patched test process.

APNs (`POST /3/device/<token>`): checks the provider JWT (ES256 signature with the test
team's public key, `kid`, `iss`, `iat` younger than an hour), the headers apns-topic,
apns-push-type, apns-priority, apns-expiration, apns-collapse-id, and the payload;
answers 200 with `apns-id`, or Apple's `{"reason": ...}` errors.

FCM: `POST /token` is an OAuth2 token endpoint for the JWT-bearer grant (checks the
service account's RS256 assertion: `kid`, `iss`, `aud`, `scope`, lifetime) and issues
access tokens; `POST /v1/projects/<project>/messages:send` checks the bearer token and
the message (token, notification, data.challenge_id, android priority HIGH and ttl) and
answers `{"name": ...}` or FCM's `{"error": {code, message, status, details}}`.

Both can be scripted per device token (`script(token, [{"status": 429, "reason":
"TooManyRequests", "retry_after": 0.1}, ...])`; answers are used in order, then
success), and record every request they get. The control endpoints live under
`/__control/` on each server.

A phone's push channel: `GET /__control/wait?token=<t>&timeout=<s>` blocks until a
notification the server accepted (200) for that device token is there, then answers 200
with its record (headers such as apns-collapse-id, payload / body, received_at); 204
when `timeout` seconds (default 10, at most 60) pass first. Each accepted notification
is handed out once, in order, also when it arrived before anyone waited, so a waiting
client never misses one. It sleeps on an asyncio.Event per token: no polling.

The test-side half (`make_tls`, `ProviderServers`) only needs `cryptography` and
`requests`; hypercorn is imported by the server process alone.
"""
import collections
import datetime
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

APNS_TOPIC = "nl.cepa.mycepa.otp"
FCM_PROJECT = "mycepa-test"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # what google-auth puts in `aud`
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


# --- test side: certificates and the server process -----------------------------------

@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str
    key: str


def make_tls(directory):
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    directory = Path(directory)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MyCepa test provider CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(ca=str(directory / "ca.pem"), cert=str(directory / "server.pem"),
                     key=str(directory / "server-key.pem"))
    Path(files.ca).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    Path(files.cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(files.key).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    os.chmod(files.key, 0o600)
    return files


def pem_private(key):
    """A test key's private half as PEM (PKCS#8): what the push service is given."""
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def pem_public(key):
    """Its public half as PEM: what these servers check signatures with."""
    from cryptography.hazmat.primitives import serialization
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class ProviderServers:
    """The server process, started with the public halves of the test keys."""

    def __init__(self, directory, tls, apns_keys, fcm_accounts):
        """apns_keys: {kid: {"team_id", "public_key_pem"}}; fcm_accounts: {client_email:
        {"key_id", "public_key_pem"}}."""
        self.directory = Path(directory)
        self.tls = tls
        self.config = {"cert": tls.cert, "key": tls.key,
                       "apns": {"keys": apns_keys, "topic": APNS_TOPIC},
                       "fcm": {"project": FCM_PROJECT, "accounts": fcm_accounts}}
        self.process = None
        self.ports = None
        self._control = None

    def start(self, timeout=15):
        import requests

        config_path = self.directory / "servers.json"
        config_path.write_text(json.dumps(self.config))
        self.log_path = self.directory / "servers.log"
        log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen([sys.executable, "-m", "harness.providers", str(config_path)],
                                        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log)
        log.close()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout)
            raise RuntimeError(f"provider servers did not start:\n{self.log_path.read_text()[-3000:]}")
        self.ports = json.loads(line)
        self._control = requests.Session()
        self._control.trust_env = False  # no proxies, and REQUESTS_CA_BUNDLE would replace our CA
        self._control.verify = self.tls.ca
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("apns", "GET", "requests")
                self._call("fcm", "GET", "requests")
                return self
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        if self._control is not None:
            self._control.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None and self.process.stdout:
            self.process.stdout.close()

    def url(self, which):
        return f"https://127.0.0.1:{self.ports[which]}"

    @property
    def fcm_token_uri(self):
        return f"{self.url('fcm')}/token"

    def _call(self, which, method, action, payload=None):
        response = self._control.request(method, f"{self.url(which)}/__control/{action}", json=payload, timeout=5,
                                         verify=self.tls.ca)
        response.raise_for_status()
        return response.json()

    def reset(self):
        self._call("apns", "POST", "reset")
        self._call("fcm", "POST", "reset")

    def script(self, which, token, answers):
        """Answers for the next requests to `token`, in order; then success."""
        self._call(which, "POST", "script", {"token": token, "answers": answers})

    def options(self, which, **options):
        self._call(which, "POST", "options", options)

    def revoke_access_tokens(self):
        self._call("fcm", "POST", "revoke")

    def requests(self, which, kind=None):
        records = self._call(which, "GET", "requests")
        return [record for record in records if kind is None or record["kind"] == kind]

    def wait_for(self, which, token, timeout=5.0):
        """The next accepted notification for `token` (its record), or None after `timeout` s."""
        response = self._control.get(f"{self.url(which)}/__control/wait", params={"token": token, "timeout": timeout},
                                     timeout=timeout + 5, verify=self.tls.ca)
        response.raise_for_status()
        return response.json() if response.status_code == 200 else None


# --- server side: the ASGI apps ---------------------------------------------------------

class App:
    """A tiny ASGI app with scripted answers, recorded requests and a control API."""

    def __init__(self, config):
        self.config = config
        self.reset()

    def reset(self):
        self.scripts = {}
        self.records = []
        self.options = {}
        # Accepted notifications not yet handed to a waiting phone, and the events the
        # waiters sleep on, per device token.
        self.inboxes = collections.defaultdict(collections.deque)
        self.arrivals = collections.defaultdict(_new_event)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        request = Request(scope, body)
        if request.path == "/__control/wait":
            status, headers, payload = await self.wait(request)
        elif request.path.startswith("/__control/"):
            status, headers, payload = self.control(request)
        else:
            status, headers, payload = await self.handle(request)
        data = b"" if payload is None else json.dumps(payload).encode()
        raw_headers = [(name.encode(), str(value).encode()) for name, value in headers.items()]
        if payload is not None:
            raw_headers.append((b"content-type", b"application/json; charset=UTF-8"))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": data})

    def control(self, request):
        action = request.path[len("/__control/"):]
        if action == "reset":
            self.reset()
        elif action == "script":
            spec = request.json()
            self.scripts.setdefault(spec["token"], []).extend(spec["answers"])
        elif action == "options":
            self.options.update(request.json())
        elif action == "revoke":
            self.revoke()
        elif action == "requests":
            return 200, {}, self.records
        else:
            return 404, {}, {"error": "unknown control action"}
        return 200, {}, {"ok": True}

    def revoke(self):
        pass

    def deliver(self, token, entry):
        """An accepted notification reaches the device: wake whoever waits for `token`."""
        self.inboxes[token].append(entry)
        self.arrivals[token].set()

    async def wait(self, request):
        import asyncio

        token = request.query.get("token")
        if not token:
            return 400, {}, {"error": "token is required"}
        try:
            timeout = min(max(float(request.query.get("timeout", 10)), 0.0), 60.0)
        except ValueError:
            return 400, {}, {"error": "timeout must be a number of seconds"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            inbox = self.inboxes.get(token)
            if inbox:
                return 200, {}, inbox.popleft()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return 204, {}, None
            # Cleared only while the inbox is empty, between awaits: deliver() appends
            # before it sets, so no arrival can slip between the check and the sleep.
            arrived = self.arrivals[token]
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def next_answer(self, token):
        answers = self.scripts.get(token)
        return answers.pop(0) if answers else None

    async def scripted_refusal(self, token):
        """(the next answer scripted for `token` after its delay, its headers) when that
        answer is a refusal; None when it is a success or nothing was scripted."""
        import asyncio

        scripted = self.next_answer(token)
        if not scripted:
            return None
        await asyncio.sleep(scripted.get("delay", 0))
        if scripted["status"] == 200:
            return None
        retry_after = scripted.get("retry_after")
        return scripted, ({} if retry_after is None else {"retry-after": retry_after})

    def record(self, request, kind, **fields):
        entry = {"kind": kind, "http_version": request.http_version, "method": request.method,
                 "path": request.path, "headers": request.headers,
                 "client": request.client, "received_at": time.time(), **fields}
        self.records.append(entry)
        return entry


def _new_event():
    import asyncio
    return asyncio.Event()


class Request:
    def __init__(self, scope, body):
        import urllib.parse

        self.method = scope["method"]
        self.path = scope["path"]
        self.query = {key: values[0] for key, values in
                      urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        self.http_version = scope["http_version"]
        self.scheme = scope["scheme"]
        self.client = list(scope.get("client") or ())
        self.headers = {}
        for name, value in scope["headers"]:
            # A header sent twice is kept as a list: APNs refuses duplicates.
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            if key in self.headers:
                previous = self.headers[key]
                self.headers[key] = (previous if isinstance(previous, list) else [previous]) + [text]
            else:
                self.headers[key] = text
        self.body = body

    def json(self):
        return json.loads(self.body or b"null")


def _bearer(request, scheme):
    value = request.headers.get("authorization")
    if not isinstance(value, str):
        return None
    prefix = f"{scheme} "
    return value[len(prefix):] if value.lower().startswith(prefix.lower()) else None


class ApnsApp(App):
    """Apple's provider API, as documented in "Sending notification requests to APNs"."""

    async def handle(self, request):
        import jwt

        apns_id = str(uuid.uuid4()).upper()
        token = request.path.rsplit("/", 1)[-1] if request.path.startswith("/3/device/") else None
        entry = self.record(request, "send", token=token, payload=None, jwt=None)

        def answer(status, reason=None, **extra):
            entry["answer"] = {"status": status, "reason": reason}
            if status == 200:
                self.deliver(token, entry)
            headers = {"apns-id": apns_id, **extra.pop("headers", {})}
            if reason is None:
                return status, headers, None
            return status, headers, {"reason": reason, **extra}

        if request.method != "POST":
            return answer(405, "MethodNotAllowed")
        if not token or not request.path.startswith("/3/device/"):
            return answer(404, "BadPath")
        if any(isinstance(value, list) for value in request.headers.values()):
            return answer(400, "DuplicateHeaders")

        bearer = _bearer(request, "bearer")
        if bearer is None:
            return answer(403, "MissingProviderToken")
        try:
            header = jwt.get_unverified_header(bearer)
            key = self.config["keys"].get(header.get("kid"))
            if header.get("alg") != "ES256" or key is None:
                return answer(403, "InvalidProviderToken")
            claims = jwt.decode(bearer, key["public_key_pem"], algorithms=["ES256"],
                                options={"verify_iat": False, "verify_exp": False, "verify_nbf": False,
                                         "verify_aud": False})
        except jwt.PyJWTError:
            return answer(403, "InvalidProviderToken")
        entry["jwt"] = {"header": header, "claims": claims, "token": bearer}
        if claims.get("iss") != key["team_id"] or not isinstance(claims.get("iat"), int):
            return answer(403, "InvalidProviderToken")
        if claims["iat"] > time.time() + 60:
            return answer(403, "InvalidProviderToken")
        if claims["iat"] < time.time() - 3600:
            return answer(403, "ExpiredProviderToken")

        topic = request.headers.get("apns-topic")
        if not topic:
            return answer(400, "MissingTopic")
        if topic != self.config["topic"]:
            return answer(400, "DeviceTokenNotForTopic" if topic.startswith("nl.cepa.") else "TopicDisallowed")
        if request.headers.get("apns-push-type") != "alert":
            return answer(400, "InvalidPushType")
        if request.headers.get("apns-priority", "10") not in ("5", "10"):
            return answer(400, "BadPriority")
        if not request.headers.get("apns-expiration", "0").isdigit():
            return answer(400, "BadExpirationDate")
        if len(request.headers.get("apns-collapse-id", "").encode()) > 64:
            return answer(400, "BadCollapseId")
        if not all(c in "0123456789abcdefABCDEF" for c in token) or len(token) < 16:
            return answer(400, "BadDeviceToken")
        if not request.body:
            return answer(400, "PayloadEmpty")
        if len(request.body) > 4096:
            return answer(413, "PayloadTooLarge")
        try:
            payload = request.json()
        except ValueError:
            return answer(400, "BadPayload")  # not a documented reason: Apple drops such requests
        entry["payload"] = payload
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict) \
                or "alert" not in payload["aps"]:
            return answer(400, "PayloadEmpty")

        refusal = await self.scripted_refusal(token)
        if refusal:
            scripted, headers = refusal
            extra = {"headers": headers}
            if scripted["status"] == 410:
                extra["timestamp"] = int(time.time() * 1000)
            return answer(scripted["status"], scripted["reason"], **extra)
        return answer(200)


FCM_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
              429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
FCM_MESSAGES = {
    "UNREGISTERED": "Requested entity was not found.",
    "INVALID_ARGUMENT": "The registration token is not a valid FCM registration token",
    "QUOTA_EXCEEDED": "Quota exceeded for quota metric 'Send requests' of service 'fcm.googleapis.com'.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "INTERNAL": "Internal error encountered.",
    "SENDER_ID_MISMATCH": "SenderId mismatch",
    "THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
}


def fcm_error(status, error_code=None, message=None, extra_details=()):
    """FCM HTTP v1's error body: google.rpc.Status with an FcmError detail."""
    details = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}] if error_code else []
    return {"error": {"code": status, "message": message or FCM_MESSAGES.get(error_code, "Error"),
                      "status": FCM_STATUS.get(status, "UNKNOWN"), "details": details + list(extra_details)}}


class FcmApp(App):
    """FCM HTTP v1 plus Google's OAuth2 token endpoint for service accounts."""

    def reset(self):
        super().reset()
        self.access_tokens = {}  # token -> expires at (unix seconds)
        self.token_answers = []

    def revoke(self):
        self.access_tokens.clear()

    def control(self, request):
        if request.path == "/__control/script" and request.json().get("token") == "__token_endpoint__":
            self.token_answers.extend(request.json()["answers"])
            return 200, {}, {"ok": True}
        return super().control(request)

    async def handle(self, request):
        if request.path == "/token":
            return self.token_endpoint(request)
        prefix = f"/v1/projects/{self.config['project']}/messages:send"
        if request.path.startswith("/v1/projects/") and request.path.endswith("/messages:send"):
            return await self.send(request, wrong_project=request.path != prefix)
        self.record(request, "other", answer={"status": 404})
        return 404, {}, fcm_error(404, message="Not found")

    def token_endpoint(self, request):
        import urllib.parse

        import jwt

        entry = self.record(request, "token", assertion=None)

        def answer(status, payload):
            entry["answer"] = {"status": status, **({"error": payload["error"]} if "error" in payload else {})}
            return status, {"cache-control": "no-store"}, payload

        def refuse(error, description, status=400):
            return answer(status, {"error": error, "error_description": description})

        if request.method != "POST":
            return refuse("invalid_request", "POST required")
        if not str(request.headers.get("content-type", "")).startswith("application/x-www-form-urlencoded"):
            return refuse("invalid_request", "form body required")
        form = {key: values[0] for key, values in urllib.parse.parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return refuse("unsupported_grant_type", "Invalid grant_type")
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            account = self.config["accounts"].get(unverified.get("iss"))
            if account is None or header.get("alg") != "RS256" or header.get("kid") != account["key_id"]:
                return refuse("invalid_grant", "Invalid JWT Signature.")
            claims = jwt.decode(assertion, account["public_key_pem"], algorithms=["RS256"],
                                audience=GOOGLE_TOKEN_AUDIENCE, options={"verify_iat": False})
        except jwt.ExpiredSignatureError:
            return refuse("invalid_grant", "Invalid JWT: Token must be a short-lived token")
        except jwt.PyJWTError:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        entry["assertion"] = {"header": header, "claims": claims}
        now = time.time()
        if not (now - 300 <= claims.get("iat", 0) <= now + 300) or claims["exp"] - claims["iat"] > 3600:
            return refuse("invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe")
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            return refuse("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        if self.token_answers:
            scripted = self.token_answers.pop(0)
            if scripted["status"] != 200:
                return refuse(scripted.get("error", "invalid_grant"), scripted.get("description", "refused"),
                              scripted["status"])
        expires_in = int(self.options.get("token_expires_in", 3599))
        access_token = "ya29.test-" + uuid.uuid4().hex
        self.access_tokens[access_token] = now + expires_in
        entry["issued"] = access_token
        return answer(200, {"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"})

    async def send(self, request, wrong_project):
        entry = self.record(request, "send", token=None, body=None, access_token=None)

        def answer(status, payload, headers=None):
            entry["answer"] = {"status": status}
            if status == 200:
                self.deliver(entry["token"], entry)
            else:
                error = payload["error"]
                codes = [d.get("errorCode") for d in error.get("details", []) if d.get("@type") == FCM_ERROR_TYPE]
                entry["answer"].update(status_text=error["status"], error_code=(codes or [None])[0])
            return status, headers or {}, payload

        if request.method != "POST":
            return answer(405, fcm_error(405, message="Method not allowed"))
        bearer = _bearer(request, "Bearer")
        entry["access_token"] = bearer
        if bearer is None or self.access_tokens.get(bearer, 0) < time.time():
            return answer(401, {"error": {
                "code": 401, "status": "UNAUTHENTICATED",
                "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                           "login cookie or other valid authentication credential."}})
        if wrong_project:
            return answer(403, fcm_error(403, message="Permission 'cloudmessaging.messages.create' denied"))
        try:
            body = request.json()
        except ValueError:
            return answer(400, fcm_error(400, message="Invalid JSON payload received."))
        entry["body"] = body
        problems = self.message_problems(body)
        if problems:
            violations = [{"field": field, "description": text} for field, text in problems]
            return answer(400, fcm_error(400, "INVALID_ARGUMENT", problems[0][1], extra_details=[
                {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}]))
        token = body["message"]["token"]
        entry["token"] = token
        refusal = await self.scripted_refusal(token)
        if refusal:
            scripted, headers = refusal
            return answer(scripted["status"], fcm_error(scripted["status"], scripted["reason"]), headers)
        name = f"projects/{self.config['project']}/messages/0:{int(time.time() * 1000)}%{uuid.uuid4().hex[:16]}"
        return answer(200, {"name": name})

    @staticmethod
    def message_problems(body):
        """What FCM would refuse in a message (as (field, description)), for the parts we use."""
        import re

        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return [("message", "Required")]
        problems = []
        targets = [key for key in ("token", "topic", "condition") if key in message]
        if targets != ["token"] or not isinstance(message.get("token"), str) or not message["token"]:
            problems.append(("message.token", "exactly one target: a registration token"))
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            problems.append(("message.data", "values must be strings"))
        notification = message.get("notification")
        if not isinstance(notification, dict) or not notification.get("title") or not notification.get("body"):
            problems.append(("message.notification", "title and body expected"))
        android = message.get("android")
        if not isinstance(android, dict):
            problems.append(("message.android", "android config expected"))
        else:
            if android.get("priority") not in ("HIGH", "NORMAL"):
                problems.append(("message.android.priority", "Invalid value"))
            if not re.fullmatch(r"\d+(\.\d{1,9})?s", str(android.get("ttl", ""))):
                problems.append(("message.android.ttl", "Invalid duration"))
        return problems


def main(config_path):
    import asyncio
    import signal
    import socket

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = json.loads(Path(config_path).read_text())
    apps = {"apns": ApnsApp(config["apns"]), "fcm": FcmApp(config["fcm"])}
    sockets, ports = {}, {}
    for name in apps:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sockets[name], ports[name] = sock, sock.getsockname()[1]

    async def run():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        servers = []
        for name, app in apps.items():
            hyper = Config()
            hyper.bind = [f"fd://{sockets[name].fileno()}"]
            hyper.certfile, hyper.keyfile = config["cert"], config["key"]
            hyper.alpn_protocols = ["h2", "http/1.1"]
            hyper.keep_alive_timeout = 30
            hyper.accesslog = None
            servers.append(serve(app, hyper, shutdown_trigger=stop.wait))
        print(json.dumps(ports), flush=True)
        await asyncio.gather(*servers)

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1])
