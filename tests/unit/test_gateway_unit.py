"""The gateway without a network: error mapping, body loading, routing, OpenAPI, handlers.

HTTP requests are werkzeug test requests; the otp and push RPC proxies and the storage
are mocks (nameko's worker_factory), so nothing here needs RabbitMQ or a database.
"""
import json
import re
from types import SimpleNamespace
from unittest.mock import Mock

import pytest
from marshmallow import Schema, fields
from nameko.exceptions import deserialize, serialize
from nameko.testing.services import worker_factory
from werkzeug.exceptions import BadRequest, InternalServerError, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Response

from shared import events
from shared.config import load_settings
from shared.errors import (
    InvalidCredentials, Locked, TooManyRequests, Unauthenticated, Unavailable, ValidationFailed,
)
from services.gateway import schemas, webpage
from services.gateway import service as gateway_service   # registers every route in ROUTES
from services.gateway.config import GatewaySettings
from services.gateway.entrypoints import ROUTES, JsonHttp, JsonWsgiApp, error_response, load_body
from services.gateway.openapi import build_spec
from services.gateway.sources import parse_networks, source_address

MAX = 1024
ADMIN_TOKEN = "t" * 32


def body_of(response):
    assert response.mimetype == "application/json"
    return json.loads(response.get_data(as_text=True))


def json_request(data, content_type="application/json", method="POST", path="/api/login", **kwargs):
    """A werkzeug Request; `data` is sent as is (str or bytes), dicts as JSON."""
    if isinstance(data, (dict, list)):
        data = json.dumps(data)
    return EnvironBuilder(method=method, path=path, data=data, content_type=content_type, **kwargs).get_request()


# -- error_response ----------------------------------------------------------------------

def test_our_error_becomes_its_status_and_the_public_shape():
    response = error_response(ValidationFailed("Invalid request", fields={"username": ["required"]}))
    assert response.status_code == 400
    assert body_of(response) == {"error": "validation_error", "message": "Invalid request",
                                 "fields": {"username": ["required"]}}
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize("error, status", [
    (Locked("Too many failed attempts; try again in 30 seconds", retry_after=30), 423),
    (TooManyRequests("Slow down", retry_after=5), 429),
])
def test_retry_after_becomes_a_header(error, status):
    response = error_response(error)
    assert response.status_code == status
    assert response.headers["Retry-After"] == str(error.retry_after)
    assert body_of(response)["error"] == error.code


def test_a_hard_lock_has_no_retry_after():
    response = error_response(Locked("an administrator must unlock it"))
    assert response.status_code == 423
    assert "Retry-After" not in response.headers


def test_an_error_received_over_rpc_keeps_its_status_and_retry_after():
    # What the gateway really gets from otp: the error after nameko's (de)serialization.
    received = deserialize(json.loads(json.dumps(serialize(Locked("locked", retry_after=4)))))
    response = error_response(received)
    assert (response.status_code, response.headers["Retry-After"]) == (423, "4")


@pytest.mark.parametrize("error, status, code", [
    (InvalidCredentials("Unknown username or wrong code"), 401, "invalid_credentials"),
    (Unauthenticated("Not logged in"), 401, "unauthenticated"),
    (Unavailable("otp did not answer"), 503, "unavailable"),
])
def test_each_error_keeps_its_own_code(error, status, code):
    response = error_response(error)
    assert response.status_code == status
    assert body_of(response) == {"error": code, "message": error.message, "fields": {}}


def test_werkzeug_not_found_is_json_404():
    response = error_response(NotFound())
    assert response.status_code == 404
    body = body_of(response)
    assert body["error"] == "not_found" and body["fields"] == {} and body["message"]


def test_method_not_allowed_is_json_405_with_allow():
    response = error_response(MethodNotAllowed(valid_methods=["GET", "HEAD"]))
    assert response.status_code == 405
    assert body_of(response)["error"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("exc, status", [(BadRequest(), 400), (RequestEntityTooLarge(), 413)])
def test_malformed_requests_are_validation_errors(exc, status):
    response = error_response(exc)
    assert response.status_code == status
    assert body_of(response)["error"] == "validation_error"


@pytest.mark.parametrize("exc", [RuntimeError("mongodb://admin:hunter2@db failed"), KeyError("secret"),
                                 InternalServerError("boom at line 42")])
def test_unexpected_exception_is_a_500_without_details(exc, caplog):
    response = error_response(exc)
    assert response.status_code == 500
    assert body_of(response) == {"error": "internal", "message": "Internal error", "fields": {}}
    text = response.get_data(as_text=True)
    for leak in ("hunter2", "secret", "boom", "Traceback", type(exc).__name__):
        assert leak not in text
    assert any(record.levelname == "ERROR" for record in caplog.records)   # logged, not swallowed


def test_the_http_entrypoint_maps_exceptions_with_error_response():
    # nameko's own handler would answer 400/500 with "Error: Locked: ..." as text.
    entrypoint = JsonHttp("POST", "/x")
    response = entrypoint.response_from_exception(Locked("locked", retry_after=2))
    assert (response.status_code, response.headers["Retry-After"]) == (423, "2")
    assert body_of(response)["error"] == "locked"


# -- JsonWsgiApp: requests that match no route ----------------------------------------

def wsgi_client():
    provider = Mock()
    provider.handle_request.return_value = Response("ok", status=200)
    server = SimpleNamespace(public_host="portal.example:8443", make_url_map=lambda: Map([
        Rule("/api/me", endpoint=provider, methods=["GET"]),
        Rule("/api/logout", endpoint=provider, methods=["POST"])]))
    return Client(JsonWsgiApp(server)), provider


def test_unknown_path_is_json_404():
    client, provider = wsgi_client()
    response = client.get("/no/such/path")
    assert response.status_code == 404
    assert json.loads(response.get_data(as_text=True))["error"] == "not_found"
    provider.handle_request.assert_not_called()


def test_wrong_method_is_json_405():
    client, _ = wsgi_client()
    response = client.delete("/api/me")
    assert response.status_code == 405
    assert json.loads(response.get_data(as_text=True))["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_a_routed_request_reaches_its_provider():
    client, provider = wsgi_client()
    assert client.get("/api/me").status_code == 200
    provider.handle_request.assert_called_once()


def test_every_response_is_not_cached_unless_it_says_so():
    client, provider = wsgi_client()
    assert client.get("/api/me").headers["Cache-Control"] == "no-store"
    assert client.get("/no/such/path").headers["Cache-Control"] == "no-store"
    provider.handle_request.return_value = Response("ok", headers={"Cache-Control": "public, max-age=60"})
    assert client.get("/api/me").headers["Cache-Control"] == "public, max-age=60"


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://portal.example:8443.evil.example",
                                    "file://", "https://portal.example"])
def test_a_state_changing_request_from_a_foreign_origin_is_refused(origin):
    client, provider = wsgi_client()
    response = client.post("/api/logout", headers={"Origin": origin})
    assert response.status_code == 403
    assert json.loads(response.get_data(as_text=True))["error"] == "forbidden"
    provider.handle_request.assert_not_called()


@pytest.mark.parametrize("headers", [
    {},                                                       # a device, the CLI
    {"Origin": "https://portal.example:8443"},                # our public URL
    {"Origin": "http://localhost", "Host": "localhost"},      # the Host it was asked at
])
def test_a_state_changing_request_from_our_own_page_or_without_origin_passes(headers):
    client, provider = wsgi_client()
    assert client.post("/api/logout", headers=headers).status_code == 200
    provider.handle_request.assert_called_once()


def test_a_read_from_a_foreign_origin_is_not_refused_here():
    # Reads change nothing; what they may show is the cookies' and CORS's business.
    client, _ = wsgi_client()
    assert client.get("/api/me", headers={"Origin": "https://evil.example"}).status_code == 200


# -- load_body -----------------------------------------------------------------------

def test_load_body_returns_the_validated_body():
    request = json_request({"username": "W123", "password": "0123456789"})
    assert load_body(request, schemas.LoginRequest, MAX) == {"username": "W123", "password": "0123456789"}


def test_load_body_accepts_a_charset_parameter():
    request = json_request({"username": "W123", "password": "0123456789"}, content_type="application/json; charset=utf-8")
    assert load_body(request, schemas.LoginRequest, MAX)["username"] == "W123"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
def test_load_body_refuses_another_content_type(content_type):
    request = json_request({"username": "W123", "password": "0123456789"}, content_type=content_type)
    with pytest.raises(ValidationFailed, match="Content-Type"):
        load_body(request, schemas.LoginRequest, MAX)


@pytest.mark.parametrize("raw", ["{", "{'username': 'W1'}", " ", b"\xff\xfe{}", "{\"username\": }"])
def test_load_body_refuses_invalid_json(raw):
    with pytest.raises(ValidationFailed, match="not valid JSON"):
        load_body(json_request(raw), schemas.LoginRequest, MAX)


def test_load_body_refuses_an_empty_body():
    # What a client sends for an empty POST: Content-Length: 0.
    builder = EnvironBuilder(method="POST", path="/api/login", data=b"", content_type="application/json")
    environ = {**builder.get_environ(), "CONTENT_LENGTH": "0"}
    request = builder.request_class(environ)
    with pytest.raises(ValidationFailed, match="not valid JSON"):
        load_body(request, schemas.LoginRequest, MAX)


@pytest.mark.parametrize("raw", ["[]", "\"W1\"", "42", "null", "true"])
def test_load_body_refuses_json_that_is_not_an_object(raw):
    with pytest.raises(ValidationFailed, match="JSON object"):
        load_body(json_request(raw), schemas.LoginRequest, MAX)


def test_load_body_refuses_a_body_over_the_limit():
    request = json_request({"username": "W123", "password": "0123456789", "pad": "x" * MAX})
    with pytest.raises(ValidationFailed, match=f"at most {MAX} bytes"):
        load_body(request, schemas.LoginRequest, MAX)


def test_load_body_takes_a_body_of_exactly_the_limit():
    body = json.dumps({"username": "W123", "password": "0123456789"})
    body = body[:-1] + " " * (MAX - len(body)) + "}"
    assert len(body) == MAX
    assert load_body(json_request(body), schemas.LoginRequest, MAX)["username"] == "W123"


def test_load_body_requires_a_content_length():
    # Without one (chunked upload) the size cannot be checked before reading.
    builder = EnvironBuilder(method="POST", path="/api/login", data=b'{"username": "W1"}',
                             content_type="application/json")
    environ = builder.get_environ()
    del environ["CONTENT_LENGTH"]
    request = builder.request_class(environ)
    with pytest.raises(ValidationFailed, match="Content-Length"):
        load_body(request, schemas.LoginRequest, MAX)


def test_load_body_refuses_unknown_fields():
    request = json_request({"username": "W123", "password": "0123456789", "admin": True})
    with pytest.raises(ValidationFailed) as refused:
        load_body(request, schemas.LoginRequest, MAX)
    assert list(refused.value.fields) == ["admin"]


def test_load_body_names_each_invalid_field():
    request = json_request({"username": {"$ne": None}, "password": "123"})
    with pytest.raises(ValidationFailed) as refused:
        load_body(request, schemas.LoginRequest, MAX)
    assert set(refused.value.fields) == {"username", "password"}
    assert refused.value.message == "Invalid request"


def test_load_body_refuses_deeply_nested_json_as_bad_input():
    # BUG (reported): json.loads raises RecursionError on deep nesting, which load_body
    # does not catch; error_response then answers 500 for bad input (architecture.md §4 forbids it).
    raw = "[" * 5000 + "]" * 5000
    with pytest.raises(ValidationFailed):
        load_body(json_request(raw), schemas.LoginRequest, 16 * 1024)


def test_load_body_works_with_any_schema():
    class Example(Schema):
        count = fields.Integer(required=True)

    assert load_body(json_request({"count": 3}), Example, MAX) == {"count": 3}


# -- routes and the OpenAPI document ---------------------------------------------------------

# (method, path) of architecture.md §4; routes not built yet are simply not in ROUTES.
DESIGN_ROUTES = {
    ("GET", "/"), ("POST", "/api/login"), ("POST", "/api/remember"), ("DELETE", "/api/remember"),
    ("GET", "/api/login/push"), ("POST", "/api/login/push"), ("GET", "/api/login/push/{request_id}"),
    ("GET", "/api/me"), ("POST", "/api/logout"), ("POST", "/api/devices/activate"),
    ("POST", "/api/devices/{device_id}/challenges"), ("POST", "/api/push/challenges/{challenge_id}/response"),
    ("POST", "/api/admin/activations"), ("GET", "/api/admin/activations/{code}/qr.svg"),
    ("GET", "/api/admin/users/{username}/devices"), ("DELETE", "/api/admin/devices/{device_id}"),
    ("POST", "/api/admin/users/{username}/unlock"),
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
}


@pytest.fixture(scope="module")
def spec():
    return build_spec(ROUTES, "http://127.0.0.1:8000")


def test_spec_is_an_openapi_3_json_document(spec):
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]
    assert spec["servers"] == [{"url": "http://127.0.0.1:8000"}]
    json.dumps(spec)


def test_login_request_body_references_the_login_schema(spec):
    login = spec["paths"]["/api/login"]["post"]
    assert login["requestBody"]["required"] is True
    assert login["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LoginRequest"}
    schema = spec["components"]["schemas"]["LoginRequest"]
    assert set(schema["properties"]) == {"username", "password"}
    assert set(schema["required"]) == {"username", "password"}
    assert login["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LoginResponse"}
    assert login["responses"]["423"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_every_design_route_that_exists_is_documented(spec):
    implemented = {(route.method, route.path) for route in ROUTES}
    documented = implemented & DESIGN_ROUTES
    # The routes the gateway has had from the start, so this test cannot pass vacuously.
    assert {("POST", "/api/login"), ("GET", "/api/me"), ("POST", "/api/devices/activate"),
            ("POST", "/api/admin/activations"), ("GET", "/openapi.json")} <= documented
    for method, path in documented:
        assert method.lower() in spec["paths"][path], (method, path)


def test_every_route_is_in_the_spec_once(spec):
    pairs = [(route.method, route.path) for route in ROUTES]
    assert len(pairs) == len(set(pairs))
    for method, path in pairs:
        operation = spec["paths"][path][method.lower()]
        assert operation["summary"] and operation["responses"]


def test_the_error_schema_is_the_public_error_shape(spec):
    error = spec["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"error", "message", "fields"}


def test_protected_routes_declare_their_security(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes["admin"] == {"type": "http", "scheme": "bearer"}
    assert schemes["session"]["in"] == "cookie" and schemes["session"]["name"] == "mycepa_session"
    assert spec["paths"]["/api/admin/activations"]["post"]["security"] == [{"admin": []}]
    assert spec["paths"]["/api/me"]["get"]["security"] == [{"session": []}]
    assert "security" not in spec["paths"]["/api/login"]["post"]


def test_path_parameters_are_declared_with_the_formats_the_server_enforces(spec):
    unlock = spec["paths"]["/api/admin/users/{username}/unlock"]["post"]
    (parameter,) = unlock["parameters"]
    assert (parameter["in"], parameter["name"], parameter["required"]) == ("path", "username", True)
    pattern = re.compile(parameter["schema"]["pattern"])
    assert pattern.match("W123456") and not pattern.match("W 1") and not pattern.match("x" * 65)
    qr = spec["paths"]["/api/admin/activations/{code}/qr.svg"]["get"]["parameters"][0]["schema"]
    assert re.match(qr["pattern"], "K7Q2-9XMB-4TNR-HW3C") and not re.match(qr["pattern"], "<script>")
    assert spec["paths"]["/static/{name}"]["get"]["parameters"][0]["schema"]["enum"] == sorted(webpage.ASSETS)
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            for declared in operation.get("parameters", []):
                assert set(declared["schema"]) - {"type"}, (path, declared["name"])   # a format, not just "string"


def test_route_paths_become_werkzeug_rules():
    (entrypoint,) = gateway_service.GatewayService.unlock.nameko_entrypoints
    assert isinstance(entrypoint, JsonHttp)
    assert (entrypoint.method, entrypoint.url) == ("POST", "/api/admin/users/<string:username>/unlock")
    assert entrypoint.doc.path == "/api/admin/users/{username}/unlock"


# -- GatewayService handlers with mocked RPC and storage -------------------------------

def gateway_worker(environment="prod"):
    settings = load_settings(GatewaySettings, environ={"MYCEPA_ADMIN_TOKEN": ADMIN_TOKEN, "MYCEPA_ENV": environment})
    worker = worker_factory(gateway_service.GatewayService, config=settings)
    worker.storage.source_failures.return_value = (0, 0)   # a source with no failed login
    worker.storage.admin_name_of.return_value = None        # no named admin credential
    return worker


def login_request(username="W123", password="0123456789"):
    return json_request({"username": username, "password": password})


def test_login_creates_a_session_and_sets_a_strict_cookie():
    worker = gateway_worker()
    worker.otp.verify.return_value = {"username": "W123", "device_id": "dev_1"}
    worker.storage.create_session.return_value = "session-token"

    response = worker.login(login_request())

    assert response.status_code == 200
    assert body_of(response) == {"username": "W123", "offer_remember": True}
    (username, code, attempt_id, source), _ = worker.otp.verify.call_args
    assert (username, code) == ("W123", "0123456789") and len(attempt_id) == 32
    assert set(source) == {"ip", "user_agent"}   # for OtpVerified / OtpRejected (the audit trail)
    (announced,), payload = worker.announce.call_args   # SessionStarted, not LoginAbandoned
    assert announced is events.SessionStarted and (payload["method"], payload["device_id"]) == ("code", "dev_1")
    username, method, device_id, now, expires_at = worker.storage.create_session.call_args.args
    assert (username, method, device_id) == ("W123", "code", "dev_1")
    assert (expires_at - now).total_seconds() == 8 * 3600
    cookie = response.headers["Set-Cookie"]
    # Outside dev the __Host- prefix: no subdomain and no plain-HTTP page can set it.
    assert cookie.startswith("__Host-mycepa_session=session-token;")
    assert "Domain" not in cookie
    for flag in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/"):
        assert flag in cookie


def test_a_login_otp_did_not_answer_in_time_gives_its_code_back():
    # otp may have accepted the code with its answer lost: LoginAbandoned frees it.
    worker = gateway_worker()
    worker.otp.verify.side_effect = Unavailable("The otp service did not answer in time")

    with pytest.raises(Unavailable):
        worker.login(login_request())

    (_, _, attempt_id, _), _ = worker.otp.verify.call_args
    worker.announce.assert_called_once_with(events.LoginAbandoned, username="W123", attempt_id=attempt_id,
                                            reason="unavailable")
    worker.storage.create_session.assert_not_called()


def test_a_session_that_cannot_be_stored_is_a_503_and_gives_the_code_back():
    from pymongo.errors import ServerSelectionTimeoutError
    worker = gateway_worker()
    worker.otp.verify.return_value = {"username": "W123", "device_id": "dev_1"}
    worker.storage.create_session.side_effect = ServerSelectionTimeoutError("no server")

    with pytest.raises(Unavailable):
        worker.login(login_request())

    (_, _, attempt_id, _), _ = worker.otp.verify.call_args
    worker.announce.assert_called_once_with(events.LoginAbandoned, username="W123", attempt_id=attempt_id,
                                            reason="session_not_stored")


def test_a_refused_code_is_not_abandoned():
    worker = gateway_worker()
    worker.otp.verify.side_effect = InvalidCredentials("Unknown username or wrong code")
    with pytest.raises(InvalidCredentials):
        worker.login(login_request())
    worker.announce.assert_not_called()


def test_login_cookie_is_not_secure_in_dev():
    worker = gateway_worker(environment="dev")
    worker.otp.verify.return_value = {"username": "W123", "device_id": "dev_1"}
    worker.storage.create_session.return_value = "session-token"
    cookie = worker.login(login_request()).headers["Set-Cookie"]
    assert "Secure" not in cookie and cookie.startswith("mycepa_session=")   # no __Host- over plain HTTP


def test_login_refusal_is_passed_on_without_a_session():
    worker = gateway_worker()
    worker.otp.verify.side_effect = Locked("locked", retry_after=2)

    with pytest.raises(Locked):
        worker.login(login_request())
    worker.storage.create_session.assert_not_called()


def test_a_refused_code_counts_against_its_source_address():
    worker = gateway_worker()
    worker.otp.verify.side_effect = InvalidCredentials("Unknown username or wrong code")
    request = json_request({"username": "W123", "password": "0123456789"},
                           environ_overrides={"REMOTE_ADDR": "203.0.113.7"})
    with pytest.raises(InvalidCredentials):
        worker.login(request)
    (source, _, window), _ = worker.storage.count_source_failure.call_args
    assert (source, window) == ("203.0.113.7", 300)


def test_a_source_over_the_limit_gets_429_before_otp_is_asked():
    worker = gateway_worker()
    worker.storage.source_failures.return_value = (50, 42)
    with pytest.raises(TooManyRequests) as refused:
        worker.login(login_request())
    assert refused.value.retry_after == 42
    worker.otp.verify.assert_not_called()


def test_login_validates_before_calling_otp():
    worker = gateway_worker()
    with pytest.raises(ValidationFailed):
        worker.login(login_request(password="123"))
    worker.otp.verify.assert_not_called()


def admin_request(method="POST", path="/api/admin/users/W123/unlock", token=ADMIN_TOKEN, data=None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return EnvironBuilder(method=method, path=path, headers=headers, data=data,
                          content_type="application/json" if data else None).get_request()


@pytest.mark.parametrize("token", [None, "", "wrong-token-wrong-token-wrong", ADMIN_TOKEN[:-1]])
def test_admin_routes_refuse_a_missing_or_wrong_token(token):
    worker = gateway_worker()
    with pytest.raises(Unauthenticated):
        worker.unlock(admin_request(token=token), "W123")
    worker.otp.unlock.assert_not_called()


def test_admin_unlock_with_the_token():
    worker = gateway_worker()
    worker.otp.unlock.return_value = {"username": "W123", "was_locked": True}
    response = worker.unlock(admin_request(), "W123")
    assert body_of(response) == {"username": "W123", "was_locked": True}
    worker.otp.unlock.assert_called_once_with("W123", "bootstrap")   # the actor: the bootstrap credential


def test_create_activation_adds_the_activation_uri():
    worker = gateway_worker()
    worker.otp.create_activation.return_value = {"activation_code": "K7Q2-9XMB-4TNR-HW3C", "username": "W123",
                                                 "expires_at": "2030-01-01T00:00:00.000Z"}
    response = worker.create_activation(admin_request(path="/api/admin/activations",
                                                       data=json.dumps({"username": "W123"})))
    assert response.status_code == 201
    assert body_of(response)["activation_uri"] == (
        "mycepa://activate?code=K7Q2-9XMB-4TNR-HW3C&server=http%3A%2F%2F127.0.0.1%3A8000")


def test_activation_qr_refuses_what_is_not_a_code():
    worker = gateway_worker()
    with pytest.raises(ValidationFailed):
        worker.activation_qr(admin_request(method="GET", path="/x"), "<script>")


def test_me_without_a_session_is_unauthenticated():
    worker = gateway_worker()
    with pytest.raises(Unauthenticated):
        worker.me(EnvironBuilder(method="GET", path="/api/me").get_request())
    worker.storage.find_session.assert_not_called()


# -- the source address that throttling counts -------------------------------------------

PROXIES = parse_networks(["10.0.0.5", "10.1.0.0/16"])


@pytest.mark.parametrize("peer, forwarded_for, source", [
    ("203.0.113.7", None, "203.0.113.7"),                           # no proxy: the peer
    ("203.0.113.7", "198.51.100.1", "203.0.113.7"),                 # an untrusted peer's header is ignored
    ("10.0.0.5", "198.51.100.1", "198.51.100.1"),                   # through the trusted proxy
    ("10.0.0.5", "1.2.3.4, 198.51.100.1", "198.51.100.1"),          # the client made up 1.2.3.4
    ("10.0.0.5", "198.51.100.1, 10.1.4.4", "198.51.100.1"),         # two trusted hops
    ("10.0.0.5", "junk, 198.51.100.1", "198.51.100.1"),             # junk left of the first untrusted hop
    ("10.0.0.5", "198.51.100.1, junk", "10.0.0.5"),                 # a malformed hop: stop at the peer
    ("10.0.0.5", None, "10.0.0.5"),
    ("10.0.0.5", "10.1.0.9", "10.1.0.9"),                           # only trusted hops: the first
    ("2001:db8::1", None, "2001:db8::1"),
    ("not an address", None, "unknown"),
])
def test_the_source_is_the_right_most_untrusted_hop(peer, forwarded_for, source):
    assert source_address(peer, forwarded_for, PROXIES) == source


def test_refused_admin_tokens_are_throttled_per_source_and_audited():
    worker = gateway_worker()
    worker.storage.source_failures.return_value = (50, 30)   # this source is over the limit
    with pytest.raises(TooManyRequests):
        worker.unlock(admin_request(token="wrong-token-wrong-token-wrong"), "W123")
    worker.otp.unlock.assert_not_called()
    (announced,), payload = worker.announce.call_args
    assert announced is events.AdminAction
    assert (payload["actor"], payload["outcome"], payload["status"], payload["username"]) == (
        "unknown", "refused", 401, "W123")


def test_a_named_credential_is_the_actor_of_what_it_does():
    worker = gateway_worker()
    worker.storage.admin_name_of.return_value = "alice"
    worker.otp.unlock.return_value = {"username": "W123", "was_locked": False}
    worker.unlock(admin_request(token="a-named-token-of-alice-1234567"), "W123")
    worker.otp.unlock.assert_called_once_with("W123", "alice")
    (announced,), payload = worker.announce.call_args   # nothing was locked: no event of its own
    assert announced is events.AdminAction and (payload["actor"], payload["outcome"]) == ("alice", "allowed")


@pytest.mark.parametrize("push_answers", [True, False])
def test_an_admins_revocation_reaches_push_at_once_and_is_answered_when_push_is_away(push_answers):
    """Push takes it before the admin's 200; when push is away the revocation in otp and
    its queued event stand, so the answer is still 200 (a 503 would make the admin retry
    into a 404), and push applies it from the event."""
    worker = gateway_worker()
    worker.otp.revoke_device.return_value = {"device_id": "dev_1", "username": "W123", "status": "revoked"}
    if not push_answers:
        worker.push.revoke_device.side_effect = Unavailable("The push service is not running")
    response = worker.revoke_device(admin_request(method="DELETE", path="/api/admin/devices/dev_1"), "dev_1")
    assert response.status_code == 200 and body_of(response)["status"] == "revoked"
    worker.push.revoke_device.assert_called_once_with("dev_1", "W123")


def test_a_binding_cookie_that_is_not_ours_binds_nothing_even_in_other_scripts():
    """The cookie and the id in the path are the client's to choose: a non-ASCII one is
    refused like a forged one (hmac.compare_digest raises on such text: found by the fuzz)."""
    from datetime import datetime, timedelta, timezone
    from services.gateway.bindings import binding_of, bound_request
    key, request_id = b"k" * 32, "lr_3_" + "a" * 32
    binding = binding_of(key, request_id, "W123", datetime.now(timezone.utc) + timedelta(minutes=2))
    assert bound_request(key, binding, request_id)["username"] == "W123"
    payload = binding.partition(".")[0]
    for cookie, asked in ((binding, "lr_٣_" + "a" * 32), (payload + ".é" + "0" * 63, request_id),
                          (binding, "lr_4_" + "a" * 32), (binding.replace(payload[:4], "AAAA"), request_id)):
        assert bound_request(key, cookie, asked) is None


def test_an_id_in_another_script_carries_no_request_number():
    from services.push.challenges import ids_for, number_in
    request_id, challenge_id = ids_for(7)
    assert number_in(request_id, "lr") == 7 and number_in(challenge_id, "ch") == 7
    for other in ("lr_٣_" + "a" * 32, "lr_7", request_id.upper(), challenge_id, request_id + "x", ""):
        assert number_in(other, "lr") is None
