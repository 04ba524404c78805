"""Bad input on every public endpoint, end to end over HTTP against the three real services.

architecture.md §4: errors are `{"error", "message", "fields"}` with a fitting 4xx status, never a
stack trace and never a 500 for bad input. Here every JSON-body endpoint gets malformed,
mistyped, oversized, operator-laden and otherwise odd bodies; every path parameter odd
values; every admin route a missing or wrong token (checked before the body is read);
unknown paths and wrong methods. Each answer must be a 4xx in the JSON error shape that
echoes no submitted secret, and nothing may be half-written: no activation code, device,
failure count or session appears, a malformed login is not a failed login and a
malformed activation neither uses up nor counts against the activation code.
"""
import json
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPResponse
from types import SimpleNamespace

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clients.device import Device
from tests.conftest import TEST_ENV, service_db

pytestmark = pytest.mark.e2e

MAX_BODY = 16 * 1024            # MAX_BODY_BYTES default of the gateway
ADMIN_TOKEN = TEST_ENV["MYCEPA_ADMIN_TOKEN"]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAKE_CODE = "ZZZZ-ZZZZ-ZZZZ-ZZZZ"    # shaped like an activation code; never issued in practice
FAKE_PASSWORD = "3141592653"        # shaped like a 10-digit OTP code
TIMEOUT = 10


# The error codes each status may carry (architecture.md §4; 405, 413 and 415 as the gateway maps them).
ERROR_CODES = {400: {"validation_error"}, 401: {"unauthenticated", "invalid_credentials"}, 403: {"forbidden"},
               404: {"not_found"}, 405: {"method_not_allowed"}, 413: {"validation_error"},
               414: {"validation_error"}, 415: {"validation_error"}, 431: {"validation_error"}}


def _pem(public_key):
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


_P256_PRIVATE = ec.generate_private_key(ec.SECP256R1())
P256_PEM = _pem(_P256_PRIVATE.public_key())
P384_PEM = _pem(ec.generate_private_key(ec.SECP384R1()).public_key())
RSA_PEM = _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())
PRIVATE_PEM = _P256_PRIVATE.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()


# -- checking one answer ---------------------------------------------------------------

def describe(response):
    request = response.request
    url = request.url if len(request.url) < 300 else request.url[:300] + "..."
    return f"{request.method} {url} -> {response.status_code} {response.headers.get('Content-Type')} " \
           f"{response.text[:600]!r}"


def assert_error(response, statuses, hidden=()):
    """`response` is one of `statuses` (all 4xx) in the JSON error shape, and safe to show."""
    statuses = (statuses,) if isinstance(statuses, int) else tuple(statuses)
    assert response.status_code < 500, "server error for bad input: " + describe(response)
    assert response.status_code in statuses, f"expected {statuses}: " + describe(response)
    content_type = response.headers.get("Content-Type", "")
    assert content_type.split(";")[0].strip() == "application/json", "not JSON: " + describe(response)
    try:
        body = response.json()
    except ValueError:
        pytest.fail("body is not JSON: " + describe(response))
    assert isinstance(body, dict) and set(body) == {"error", "message", "fields"}, \
        "not the error shape: " + describe(response)
    assert body["error"] in ERROR_CODES[response.status_code], "wrong error code: " + describe(response)
    assert isinstance(body["message"], str) and body["message"], describe(response)
    assert isinstance(body["fields"], dict), describe(response)
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, "stack trace in the answer: " + describe(response)
    for secret in hidden:
        assert secret not in text, f"the submitted secret {secret[:40]!r} is echoed: " + describe(response)
    return body


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


# What a request could write if bad input got through: {probe: (service, collection, filter)}.
PROBES = {
    "activation codes": ("otp", "activation_codes", {}),
    "devices": ("otp", "authenticators", {}),
    "revoked devices": ("otp", "authenticators", {"status": "revoked"}),
    "failure counts": ("otp", "lockouts", {}),
    "sessions": ("gateway", "sessions", {}),
}


@contextmanager
def nothing_written(mongo_client, *probes):
    """Asserts that the requests made inside add or remove no record the probes count.

    Each endpoint names only what it could write, which keeps the check cheap on a busy
    FerretDB: a login a failure count or a session, an activation a device, and so on.
    """
    def snapshot():
        return {probe: service_db(mongo_client, PROBES[probe][0])[PROBES[probe][1]].count_documents(PROBES[probe][2])
                for probe in probes}

    before = snapshot()
    yield
    assert snapshot() == before, "bad input changed the databases"


# -- the JSON-body endpoints -----------------------------------------------------------

@dataclass(frozen=True)
class BodyEndpoint:
    name: str
    path: str
    body: dict                       # well-formed: every field present with a plausible value
    required: tuple
    headers: dict = field(default_factory=dict)
    secret_fields: tuple = ()        # their values must never come back in an answer
    # Fields whose odd-but-string values may pass the schema and be refused by the service
    # instead (an unknown activation code is 401), with their maximum length.
    service_checked: dict = field(default_factory=dict)
    writes: tuple = ()               # PROBES of what the endpoint writes when it succeeds
    # How the service refuses a well-typed value it cannot accept (an unknown activation
    # code is 401; a device or challenge that does not exist is 403 or 404).
    service_statuses: tuple = (400, 401)

    def hidden(self, body=None):
        values = [self.body.get(name) for name in self.secret_fields]
        if isinstance(body, dict):
            values += [body.get(name) for name in self.secret_fields]
        return tuple({v for v in values if isinstance(v, str) and len(v.strip()) >= 6})


LOGIN = BodyEndpoint("login", "/api/login", {"username": "W000000001", "password": FAKE_PASSWORD},
                     required=("username", "password"), secret_fields=("password",),
                     writes=("failure counts", "sessions"))
ACTIVATE = BodyEndpoint(
    "activate", "/api/devices/activate",
    {"activation_code": FAKE_CODE, "public_key": P256_PEM, "platform": "poll", "push_token": None,
     "device_name": "Test phone"},
    required=("activation_code", "public_key", "platform", "device_name"),
    secret_fields=("activation_code",),
    service_checked={"activation_code": 64, "push_token": 4096, "device_name": 64},
    writes=("devices",))
CREATE_ACTIVATION = BodyEndpoint("create_activation", "/api/admin/activations", {"username": "W000000002"},
                                 required=("username",), headers=ADMIN, writes=("activation codes",))
# The device endpoints of push login, aimed at a device and a challenge that do not exist:
# a well-formed body reaches the push service and is refused there (403 / 404), never 5xx.
SIGNATURE = "MEUCIQDcLCZ7bIfv6uUh+fC3Mg2/5Ho2n1Y0b7P0TQqaq8j5fgIgEsRVd8ZuY5XH1l3d2nyD0t6pDfAtDuq5fKxq0XVjGvM="
POLL = BodyEndpoint("poll", "/api/devices/dev_unknown/challenges", {"timestamp": 1_700_000_000,
                                                                     "signature": SIGNATURE},
                    required=("timestamp", "signature"), service_checked={"signature": 256},
                    service_statuses=(400, 403))
ANSWER = BodyEndpoint("answer", "/api/push/challenges/ch_unknown/response",
                      {"device_id": "dev_unknown", "decision": "approve", "number": "42", "signature": SIGNATURE,
                       "fraud": False},
                      required=("device_id", "decision", "number", "signature"),
                      service_checked={"device_id": 64, "signature": 256}, service_statuses=(400, 404))
PUSH_TOKEN = BodyEndpoint("push_token", "/api/devices/dev_unknown/push-token",
                          {"push_token": "a" * 64, "timestamp": 1_700_000_000, "signature": SIGNATURE},
                          required=("push_token", "timestamp", "signature"),
                          service_checked={"push_token": 4096, "signature": 256}, service_statuses=(400, 403))
BODY_ENDPOINTS = (LOGIN, ACTIVATE, CREATE_ACTIVATION, POLL, ANSWER, PUSH_TOKEN)


def raw(data, content_type="application/json"):
    return {"data": data, "headers": {} if content_type is None else {"Content-Type": content_type}}


def as_json(value, ensure_ascii=True):
    return raw(json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8"))


def _nested(depth):
    return b'{"a":' * depth + b"1" + b"}" * depth


def shape_cases(ep):
    """{case id: (requests kwargs, allowed statuses)} of bodies that are wrong as a whole."""
    body = json.dumps(ep.body).encode()
    first = ep.required[0]
    bad = (400,)
    too_big = (400, 413)
    padding = MAX_BODY + 1 - len(body)
    cases = {
        # malformed JSON
        "malformed-truncated": (raw(body[:-1]), bad),
        "malformed-single-quotes": (raw(body.replace(b'"', b"'")), bad),
        "malformed-open-brace": (raw(b"{"), bad),
        "malformed-close-brace": (raw(b"}"), bad),
        "malformed-bare-word": (raw(b"nul"), bad),
        "malformed-trailing-comma": (raw(body[:-1] + b",}"), bad),
        "malformed-two-objects": (raw(body + body), bad),
        "malformed-trailing-garbage": (raw(body + b" x"), bad),
        "malformed-raw-nul-in-string": (raw(b'{"%s": "W1\x00"}' % first.encode()), bad),
        "malformed-raw-newline-in-string": (raw(b'{"%s": "W1\n"}' % first.encode()), bad),
        "malformed-invalid-utf8": (raw(b'{"%s": "\xff\xfe"}' % first.encode()), bad),
        "malformed-utf8-encoded-surrogate": (raw('{"%s": "\ud800"}'.replace("%s", first)
                                                 .encode("utf-8", "surrogatepass")), bad),
        "malformed-latin1": (raw('{"%s": "Wé"}'.replace("%s", first).encode("latin-1")), bad),
        "deeply-nested-arrays": (raw(b'{"%s": ' % first.encode() + b"[" * 5000 + b"]" * 5000 + b"}"), bad),
        "deeply-nested-objects": (raw(_nested(1500)), bad),
        "nan": (raw(b'{"%s": NaN}' % first.encode()), bad),
        "infinity": (raw(b'{"%s": -Infinity}' % first.encode()), bad),
        "number-5000-digits": (raw(b'{"%s": 1%s}' % (first.encode(), b"0" * 5000)), bad),
        # empty and not an object
        "empty-body": (raw(b""), bad),
        "whitespace-body": (raw(b" \r\n\t "), bad),
        "list-empty": (as_json([]), bad),
        "list-of-the-body": (as_json([ep.body]), bad),
        "string": (as_json("W000000001"), bad),
        "number": (as_json(42), bad),
        "float": (as_json(1.5), bad),
        "null": (as_json(None), bad),
        "true": (as_json(True), bad),
        "false": (as_json(False), bad),
        "empty-object": (as_json({}), bad),
        # unknown extra fields, Mongo operators among them
        "extra-field": (as_json({**ep.body, "extra": "x"}), bad),
        "extra-field-null": (as_json({**ep.body, "remember": None}), bad),
        "extra-where": (as_json({**ep.body, "$where": "function() { return true; }"}), bad),
        "extra-or": (as_json({**ep.body, "$or": [{first: {"$ne": None}}]}), bad),
        "extra-dotted-operator": (as_json({**ep.body, f"{first}.$ne": None}), bad),
        "extra-empty-name": (as_json({**ep.body, "": "x"}), bad),
        "extra-proto": (as_json({**ep.body, "__proto__": {"admin": True}}), bad),
        "extra-unicode-name": (as_json({**ep.body, "naïve\u0000": "x"}), bad),
        # not JSON by content type
        "text-plain": (raw(body, "text/plain"), bad),
        "form-urlencoded": ({"data": {k: str(v) for k, v in ep.body.items() if v is not None}}, bad),
        "multipart-form-data": ({"files": {k: (None, str(v)) for k, v in ep.body.items() if v is not None}}, bad),
        "multipart-with-json-part": ({"files": {"body": ("body.json", body, "application/json")}}, bad),
        "no-content-type": (raw(body, None), bad),
        "xml": (raw(b"<request/>", "application/xml"), bad),
        "json-suffix-type": (raw(body, "application/merge-patch+json"), bad),
        "json-lookalike-type": (raw(body, "application/jsonp"), bad),
        "garbage-content-type": (raw(body, ";;; =="), bad),
        "json-content-type-form-body": (raw(b"username=W1&password=1234567890"), bad),
        # too big, or no length
        "body-one-byte-over-limit": (raw(body + b" " * padding), too_big),
        "body-100k": (as_json({**ep.body, first: "A" * 100_000}), too_big),
        "chunked-without-length": ({"data": iter([body]), "headers": {"Content-Type": "application/json"}}, bad),
    }
    return cases


# Values that are not strings: every field of every endpoint must refuse them.
WRONG_TYPES = {
    "int": 1234567890, "zero": 0, "negative": -1, "float": 3.5, "huge-float": 1e308, "true": True,
    "false": False, "null": None, "empty-list": [], "list": ["W000000001"], "empty-object": {},
    "object": {"value": "W000000001"}, "op-ne-null": {"$ne": None}, "op-gt-empty": {"$gt": ""},
    "op-regex": {"$regex": ".*"}, "op-where": {"$where": "sleep(1000) || true"}, "op-exists": {"$exists": True},
    "op-in": {"$in": ["W000000001"]}, "list-of-operators": [{"$ne": None}],
    "huge-int": 10 ** 400,   # a float() of it overflows
}
# Strings no field of these endpoints should accept as they are (a few may reach the
# service for the fields in `service_checked` and be refused there).
ODD_STRINGS = {
    "empty": "", "space": " ", "where-js": "'; return true; var x='", "where-this": "this.password != ''",
    "dollar-ne": "$ne", "json-operator": '{"$ne": null}', "dotted-operator": "a.$ne",
    "nul": "\x00", "nul-inside": "W1234\x0056789", "digits-nul": FAKE_PASSWORD + "\x00",
    "newline-end": "W123456789\n", "digits-newline-end": FAKE_PASSWORD + "\n", "crlf": "W1\r\n",
    "newline-start": "\nW123456789", "tab": "\t", "ansi-escape": "\x1b[31mW1", "del": "W\x7f1",
    "rtl-override": "\u202eW123", "bom": "\ufeffW123", "zero-width-space": "W\u200b123", "accented": "Wé123",
    "astral": "\U0001d54e123", "emoji": "\U0001f44d", "lone-surrogate": "\ud800",
    "arabic-digits": "٣١٤١٥٩٢٦٥٣", "fullwidth-digits": "３１４１５９２６５３",
    "digits-space-start": " " + FAKE_PASSWORD, "digits-9": FAKE_PASSWORD[:9], "digits-11": FAKE_PASSWORD + "0",
    "long-1100": "W" * 1100, "long-15k": "1" * 15_000, "huge-100k": "A" * 100_000,
}


# Odd strings that are fine for some fields: a werkboeknummer may be all digits.
VALID_FOR = {"username": ("digits-9", "digits-11"),
             # well-typed unix times: they pass validation and the unknown device is refused
             "timestamp": ("int", "zero", "negative"),
             "number": ("empty",),              # what a deny sends
             "fraud": ("true", "false")}


def field_cases(ep):
    """{case id: (requests kwargs, allowed statuses)} of bodies with one bad field."""
    cases = {}
    for name in ep.required:
        cases[f"missing-{name}"] = (as_json({k: v for k, v in ep.body.items() if k != name}), (400,))
    for name in ep.body:
        for label, value in {**WRONG_TYPES, **ODD_STRINGS}.items():
            if value is None and name not in ep.required:
                continue        # null is what an optional field means by absent
            if label in VALID_FOR.get(name, ()):
                continue
            body = {**ep.body, name: value}
            statuses = (400,)
            limit = ep.service_checked.get(name)
            if limit and isinstance(value, str) and 1 <= len(value) <= limit:
                statuses = ep.service_statuses
            if len(json.dumps(body)) > MAX_BODY:
                statuses = (400, 413)
            cases[f"{name}={label}"] = (as_json(body), statuses)
        # The same odd unicode sent as raw UTF-8 rather than \u escapes.
        cases[f"{name}=raw-utf8-unicode"] = (as_json({**ep.body, name: "W\u202e\U0001d54eé"}, ensure_ascii=False),
                                             ep.service_statuses if name in ep.service_checked else (400,))
    return cases


def body_params():
    params = []
    for ep in BODY_ENDPOINTS:
        for case, (kwargs, statuses) in {**shape_cases(ep), **field_cases(ep)}.items():
            params.append(pytest.param(ep, kwargs, statuses, id=f"{ep.name}-{case}"))
    return params


@pytest.mark.parametrize("endpoint, kwargs, statuses", body_params())
def test_bad_json_bodies_are_refused_with_the_error_shape(stack, http, mongo_client, endpoint, kwargs, statuses):
    headers = {**endpoint.headers, **kwargs.get("headers", {})}
    body = kwargs.get("data")
    submitted = None
    if isinstance(body, bytes):
        try:
            submitted = json.loads(body)
        except (ValueError, RecursionError):
            pass
    with nothing_written(mongo_client, *endpoint.writes):
        response = http.post(stack.base_url + endpoint.path, **{**kwargs, "headers": headers}, timeout=TIMEOUT)
        assert_error(response, statuses, hidden=endpoint.hidden(submitted))


# -- admin authentication comes first ---------------------------------------------------

# {route: (method, path, PROBES of what it writes)}
ADMIN_ROUTES = {
    "create_activation": ("POST", "/api/admin/activations", ("activation codes",)),
    "activation_qr": ("GET", f"/api/admin/activations/{FAKE_CODE}/qr.svg", ()),
    "list_devices": ("GET", "/api/admin/users/W000000003/devices", ()),
    "revoke_device": ("DELETE", "/api/admin/devices/dev_0123456789abcdef", ("revoked devices",)),
    "unlock": ("POST", "/api/admin/users/W000000003/unlock", ("failure counts",)),
}
AUTH_VARIANTS = {
    "no-header": None,
    "empty-header": "",
    "bearer-only": "Bearer",
    "bearer-empty": "Bearer ",
    "wrong-token": "Bearer " + secrets.token_urlsafe(32),
    "token-prefix": "Bearer " + ADMIN_TOKEN[:-1],
    "token-plus-char": "Bearer " + ADMIN_TOKEN + "x",
    "token-without-scheme": ADMIN_TOKEN,
    "basic-scheme": "Basic " + ADMIN_TOKEN,
    "double-space": "Bearer  " + ADMIN_TOKEN,
    "latin1-token": "Bearer \xe9\xe8",
    "operator-token": 'Bearer {"$ne": null}',
    "huge-token": "Bearer " + "A" * 6000,
}
BAD_ADMIN_BODIES = {
    "malformed-json": raw(b'{"username": '),
    "not-an-object": as_json(["W000000003"]),
    "text-plain": raw(b"username=W000000003", "text/plain"),
    "operator": as_json({"username": {"$ne": None}}),
    "body-100k": as_json({"username": "A" * 100_000}),
}


@pytest.mark.parametrize("route", list(ADMIN_ROUTES))
@pytest.mark.parametrize("auth", list(AUTH_VARIANTS))
def test_admin_routes_refuse_a_missing_or_wrong_token_before_reading_the_body(stack, http, mongo_client,
                                                                               route, auth):
    method, path, writes = ADMIN_ROUTES[route]
    with nothing_written(mongo_client, *writes):
        for label, kwargs in BAD_ADMIN_BODIES.items():
            headers = dict(kwargs["headers"])
            if AUTH_VARIANTS[auth] is not None:
                headers["Authorization"] = AUTH_VARIANTS[auth]
            response = http.request(method, stack.base_url + path, data=kwargs["data"], headers=headers,
                                    timeout=TIMEOUT)
            body = assert_error(response, 401, hidden=(ADMIN_TOKEN, FAKE_CODE))
            assert body["error"] == "unauthenticated", f"{label}: " + describe(response)


# -- odd path parameters ---------------------------------------------------------------

# Path segments as sent on the wire (already percent-encoded where needed).
PATH_VALUES = {
    "long-3000": "W" * 3000,
    "percent-encoded-slash": "W1%2FW2",
    "percent-encoded-slash-only": "%2F",
    "dollar-ne": "$ne",
    "encoded-dollar-ne": "%24ne",
    "encoded-json-operator": "%7B%22%24ne%22%3Anull%7D",
    "where-js": "%27%3B%20return%20true%3B%20var%20x%3D%27",
    "accented": "W%C3%A9123",
    "astral": "%F0%9D%95%8E123",
    "emoji": "%F0%9F%91%8D",
    "rtl-override": "%E2%80%AEW123",
    "nul": "%00",
    "nul-inside": "W123%0045",
    "newline-end": "W123456789%0A",
    "crlf-end": "W123456789%0D%0A",
    "tab": "%09",
    "space": "%20",
    "invalid-utf8": "%FF%FE",
    "lone-surrogate-utf8": "%ED%A0%80",
    "dot-dot-encoded": "%2E%2E",
    "percent-sign": "%25",
    "semicolon-params": "W1%3Bx%3D1",
    "question-mark-encoded": "W1%3Fx%3D1",
    "hash-encoded": "W1%23x",
}
# {route: (method, path template, statuses for a value that stays one segment)}
PATH_ROUTES = {
    "activation_qr": ("GET", "/api/admin/activations/{}/qr.svg", (400,)),
    "list_devices": ("GET", "/api/admin/users/{}/devices", (400,)),
    "revoke_device": ("DELETE", "/api/admin/devices/{}", (400, 404)),
    "unlock": ("POST", "/api/admin/users/{}/unlock", (400,)),
}
PATH_ROUTE_WRITES = {"revoke_device": ("revoked devices",), "unlock": ("failure counts",)}


@pytest.mark.parametrize("value", list(PATH_VALUES))
@pytest.mark.parametrize("route", list(PATH_ROUTES))
def test_odd_path_parameters_are_refused_with_the_error_shape(stack, http, mongo_client, route, value):
    method, template, statuses = PATH_ROUTES[route]
    url = stack.base_url + template.format(PATH_VALUES[value])
    if "slash" in value:
        statuses = (404,)       # a decoded slash makes it another path: not routed
    hidden = (PATH_VALUES[value],) if route == "activation_qr" and len(PATH_VALUES[value]) >= 6 else ()
    with nothing_written(mongo_client, *PATH_ROUTE_WRITES.get(route, ())):
        answer = http.request(method, url, headers=ADMIN, timeout=TIMEOUT)
        assert_error(answer, statuses, hidden=hidden)
        # Without the token the answer is 401 whatever the parameter (unless it is not routed).
        anonymous = http.request(method, url, timeout=TIMEOUT)
        assert_error(anonymous, 404 if "slash" in value else 401, hidden=hidden)


@pytest.mark.parametrize("where", ["url", "header", "headers"])
def test_a_request_line_or_header_over_the_server_limit_gets_a_json_4xx(stack, http, where):
    url = stack.base_url + "/api/admin/users/{}/devices".format("W" * 9000 if where == "url" else "W1")
    headers = {**ADMIN, "X-Padding": "x" * 9000} if where == "header" else ADMIN
    if where == "headers":    # each line short, 80 KiB in all
        headers = {**ADMIN, **{f"X-Padding-{n}": "x" * 4000 for n in range(20)}}
    assert_error(http.get(url, headers=headers, timeout=TIMEOUT), 414 if where == "url" else 431)


NOT_HTTP = {   # {case: (the bytes sent, the status expected)}
    "garbage-request-line": (b"HELLO\r\n\r\n", 400),
    "unknown-version": (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    "too-many-headers": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: y\r\n" % n for n in range(150)) + b"\r\n", 431),
    "negative-length": (b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    "length-not-a-number": (b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", 400),
    "length-and-chunked": (b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", list(NOT_HTTP))
def test_a_request_the_server_cannot_parse_gets_a_json_4xx(stack, case):
    """What eventlet and http.server refuse before any route sees it: a 4xx in the JSON
    error shape, never their bodiless or HTML answers, never a 5xx (HTTP/2.0 is not 505)."""
    sent, status = NOT_HTTP[case]
    assert_error(raw_exchange(stack.base_url, sent), status)


@dataclass
class RawResponse:
    """What `assert_error` reads of a response, parsed from the bytes the server sent."""
    status_code: int
    headers: dict
    text: str
    request: object

    def json(self):
        return json.loads(self.text)


def raw_exchange(base_url, request_bytes):
    host, port = base_url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(request_bytes)
        response = HTTPResponse(sock)
        response.begin()
        sent = SimpleNamespace(method="(raw)", url=request_bytes.split(b"\r\n")[0].decode(errors="replace"))
        return RawResponse(response.status, dict(response.getheaders()), response.read().decode(), sent)


# -- the session endpoints -------------------------------------------------------------

ODD_COOKIES = {
    "no-cookie": None,
    "empty": "mycepa_session=",
    "random": "mycepa_session=" + secrets.token_urlsafe(32),
    "long-4000": "mycepa_session=" + "A" * 4000,
    "json-operator": 'mycepa_session={"$ne": null}',
    "quoted-operator": 'mycepa_session="{\\"$ne\\": null}"',
    "dollar-ne": "mycepa_session=$ne",
    "percent-encoded-unicode": "mycepa_session=%C3%A9%F0%9F%91%8D",
    "latin1-bytes": "mycepa_session=\xe9\xe8",
    "octal-escaped-surrogate": 'mycepa_session="\\355\\240\\200"',
    "octal-escaped-nul": 'mycepa_session="\\000"',
    "twice": "mycepa_session=a; mycepa_session=b",
    "garbage-syntax": ";;; = ;=;mycepa_session",
}


@pytest.mark.parametrize("cookie", list(ODD_COOKIES))
def test_me_and_logout_with_odd_cookies_and_bodies(stack, http, mongo_client, cookie):
    headers = {} if ODD_COOKIES[cookie] is None else {"Cookie": ODD_COOKIES[cookie]}
    with nothing_written(mongo_client, "sessions"):
        for kwargs in (raw(b""), raw(b'{"username": '), as_json({"username": {"$ne": None}}),
                       as_json({"x": "A" * 100_000}), raw(b"a=b", "text/plain")):
            all_headers = {**kwargs["headers"], **headers}
            me = http.get(stack.base_url + "/api/me", data=kwargs["data"], headers=all_headers, timeout=TIMEOUT)
            assert_error(me, 401)
            assert me.json()["error"] == "unauthenticated"
            # Without a live session there is nothing to log out of: 401, never a crash.
            logout = http.post(stack.base_url + "/api/logout", data=kwargs["data"], headers=all_headers,
                               timeout=TIMEOUT)
            assert_error(logout, 401)
            assert logout.json()["error"] == "unauthenticated"


def test_odd_logouts_do_not_end_a_real_session(stack, make_user):
    device = make_user()
    browser = requests.Session()
    assert browser.post(stack.base_url + "/api/login", json={"username": device.username,
                                                             "password": device.code()},
                        timeout=TIMEOUT).status_code == 200
    token = browser.cookies["mycepa_session"]
    for cookie in ODD_COOKIES.values():
        stranger = requests.post(stack.base_url + "/api/logout", headers={"Cookie": cookie} if cookie else {},
                                 timeout=TIMEOUT)
        assert stranger.status_code == 401, describe(stranger)
        assert token not in stranger.text
    me = browser.get(stack.base_url + "/api/me", timeout=TIMEOUT)
    assert me.status_code == 200 and me.json()["username"] == device.username, describe(me)


ODD_HEADERS = {
    "nameko-call-id-stack-string": {"nameko-call_id_stack": "x"},
    "nameko-call-id-stack-json": {"nameko-call_id_stack": '["a", {"$ne": null}]'},
    "nameko-language": {"nameko-language": "\xe9" * 100},
    "nameko-user-id": {"nameko-user_id": "admin"},
    "accept-xml": {"Accept": "application/xml"},
}


@pytest.mark.parametrize("header", list(ODD_HEADERS))
def test_odd_request_headers_never_crash(stack, http, mongo_client, header):
    body = json.dumps({"username": "W000000004", "password": FAKE_PASSWORD + "x"}).encode()
    with nothing_written(mongo_client, "failure counts", "sessions"):
        for method, path, statuses in (("GET", "/api/me", 401), ("POST", "/api/login", 400),
                                       ("GET", "/api/admin/users/W0%0A/devices", 401)):
            answer = http.request(method, stack.base_url + path, data=body, timeout=TIMEOUT,
                                  headers={"Content-Type": "application/json", **ODD_HEADERS[header]})
            assert_error(answer, statuses, hidden=(FAKE_PASSWORD,))


# -- unknown paths and wrong methods ---------------------------------------------------

UNKNOWN_PATHS = {
    "api-nope": ("GET", "/api/nope"),
    "api-root": ("GET", "/api"),
    "api-slash": ("GET", "/api/"),
    "login-trailing-slash": ("POST", "/api/login/"),
    "login-upper-case": ("POST", "/API/LOGIN"),
    "admin-root": ("GET", "/api/admin"),
    "empty-username": ("GET", "/api/admin/users//devices"),
    "empty-device-id": ("DELETE", "/api/admin/devices/"),
    "empty-code": ("GET", "/api/admin/activations//qr.svg"),
    "qr-png": ("GET", f"/api/admin/activations/{FAKE_CODE}/qr.png"),
    "devices-extra-segment": ("GET", "/api/admin/users/W1/devices/extra"),
    "nul": ("GET", "/%00"),
    "encoded-unicode": ("GET", "/api/%F0%9F%92%A9"),
    "invalid-utf8": ("POST", "/api/%FF"),
    "long-3000": ("GET", "/api/" + "x" * 3000),
}
# Paths with an empty segment inside: not routes. A JSON API answers 404 (a real redirect,
# 308 with a Location, would do too).
EMPTY_SEGMENT_PATHS = {
    "me": ("GET", "/api//me"),
    "revoke": ("DELETE", "/api/admin//devices/dev_x"),
    "unlock": ("POST", "/api/admin/users//W1/unlock"),
    "devices": ("GET", "/api/admin/users/W1//devices"),
}


def _unknown(http, stack, method, path):
    return http.request(method, stack.base_url + path, data=b'{"a": 1}', allow_redirects=False,
                        headers={"Content-Type": "application/json", **ADMIN}, timeout=TIMEOUT)


@pytest.mark.parametrize("case", list(UNKNOWN_PATHS))
def test_unknown_paths_are_a_json_404(stack, http, case):
    body = assert_error(_unknown(http, stack, *UNKNOWN_PATHS[case]), 404, hidden=(ADMIN_TOKEN,))
    assert body["error"] == "not_found"


@pytest.mark.parametrize("case", list(EMPTY_SEGMENT_PATHS))
def test_paths_with_an_empty_segment_are_a_json_404(stack, http, case):
    answer = _unknown(http, stack, *EMPTY_SEGMENT_PATHS[case])
    assert assert_error(answer, 404, hidden=(ADMIN_TOKEN,))["error"] == "not_found"


def test_paths_the_server_decodes_to_a_route_are_served_as_that_route(stack, http):
    """WSGI decodes %2F in PATH_INFO and the server folds a leading '//': these reach a route."""
    assert_error(_unknown(http, stack, "POST", "/api%2Flogin"), 400)
    assert_error(_unknown(http, stack, "GET", "//api/me"), 401)


WRONG_METHODS = {
    "get-login": ("GET", "/api/login", "POST"),
    "put-login": ("PUT", "/api/login", "POST"),
    "delete-login": ("DELETE", "/api/login", "POST"),
    "options-login": ("OPTIONS", "/api/login", "POST"),
    "post-me": ("POST", "/api/me", "GET"),
    "delete-me": ("DELETE", "/api/me", "GET"),
    "get-logout": ("GET", "/api/logout", "POST"),
    "get-activate": ("GET", "/api/devices/activate", "POST"),
    "patch-activate": ("PATCH", "/api/devices/activate", "POST"),
    "get-activations": ("GET", "/api/admin/activations", "POST"),
    "post-qr": ("POST", f"/api/admin/activations/{FAKE_CODE}/qr.svg", "GET"),
    "post-devices": ("POST", "/api/admin/users/W1/devices", "GET"),
    "get-device": ("GET", "/api/admin/devices/dev_x", "DELETE"),
    "put-device": ("PUT", "/api/admin/devices/dev_x", "DELETE"),
    "get-unlock": ("GET", "/api/admin/users/W1/unlock", "POST"),
    "made-up-method": ("FROB", "/api/login", "POST"),
}


@pytest.mark.parametrize("case", list(WRONG_METHODS))
def test_wrong_methods_are_a_json_405(stack, http, case):
    method, path, allowed = WRONG_METHODS[case]
    for headers in ({}, ADMIN):
        answer = http.request(method, stack.base_url + path, data=b"{",
                              headers={"Content-Type": "application/json", **headers}, timeout=TIMEOUT)
        body = assert_error(answer, 405, hidden=(ADMIN_TOKEN,))
        assert body["error"] == "method_not_allowed"
        assert allowed in answer.headers.get("Allow", ""), describe(answer)


# -- nothing half-written --------------------------------------------------------------

def test_malformed_logins_do_not_count_as_failed_logins(stack, make_user, mongo_client):
    device = make_user()
    user, code = device.username, device.code()
    creds = {"username": user, "password": code}
    creds_bytes = json.dumps(creds).encode()
    attempts = [
        as_json({**creds, "password": int(code)}),
        as_json({**creds, "password": code + "\n"}),
        as_json({**creds, "password": code + "\x00"}),
        as_json({**creds, "password": " " + code}),
        as_json({**creds, "password": code[:9]}),
        as_json({**creds, "password": code + "0"}),
        as_json({**creds, "password": [code]}),
        as_json({**creds, "password": {"$ne": None}}),
        as_json({**creds, "password": {"$gt": ""}}),
        as_json({**creds, "password": None}),
        as_json({"username": user}),
        as_json({**creds, "username": {"$ne": None}}),
        as_json({**creds, "username": [user]}),
        as_json({**creds, "username": user + "\x00"}),
        as_json({**creds, "username": user + "\n"}),
        as_json({**creds, "remember": True}),
        as_json({**creds, "$where": "true"}),
        as_json([creds]),
        raw(creds_bytes, "text/plain"),
        raw(creds_bytes, None),
        {"data": creds},
        {"files": {k: (None, v) for k, v in creds.items()}},
        raw(creds_bytes[:-1]),
        raw(creds_bytes + b" " * MAX_BODY),
        {"data": iter([creds_bytes]), "headers": {"Content-Type": "application/json"}},
    ]
    # Enough to lock the account (3 free failures, hard lock at 6) if any of them counted.
    with requests.Session() as http:
        for _ in range(2):
            for kwargs in attempts:
                answer = http.post(stack.base_url + "/api/login", **kwargs, timeout=TIMEOUT)
                assert_error(answer, 400, hidden=(code,))
                assert "Set-Cookie" not in answer.headers, describe(answer)
    assert service_db(mongo_client, "otp").lockouts.find_one({"_id": user}) is None, "a failure was counted"
    assert service_db(mongo_client, "gateway").sessions.count_documents({"username": user}) == 0

    login = requests.post(stack.base_url + "/api/login", json={"username": user, "password": device.code()},
                          timeout=TIMEOUT)
    assert login.status_code == 200, describe(login)
    assert login.json() == {"username": user, "offer_remember": True}


def _activation(base_url, username):
    answer = requests.post(base_url + "/api/admin/activations", json={"username": username}, headers=ADMIN,
                           timeout=TIMEOUT)
    assert answer.status_code == 201, describe(answer)
    return answer.json()["activation_code"]


def _code_record(mongo_client, code):
    code_id = code.replace("-", "").upper()[:4]
    return service_db(mongo_client, "otp").activation_codes.find_one({"_id": code_id})


def test_malformed_activations_leave_the_activation_code_usable(stack, mongo_client):
    username = f"W{secrets.randbelow(10**9):09d}"
    code = _activation(stack.base_url, username)
    good = {"activation_code": code, "public_key": Device.new(stack.base_url).public_key_pem,
            "platform": "poll", "push_token": None, "device_name": "Phone"}
    good_bytes = json.dumps(good).encode()
    bodies = [
        {**good, "public_key": "not a key"},
        {**good, "public_key": ""},
        {**good, "public_key": P384_PEM},
        {**good, "public_key": RSA_PEM},
        {**good, "public_key": PRIVATE_PEM},
        {**good, "public_key": good["public_key"][:-40]},
        {**good, "public_key": good["public_key"].replace("A", "*")},
        {**good, "public_key": good["public_key"] * 8},
        {**good, "public_key": "A" * 100_000},
        {**good, "public_key": {"$ne": None}},
        {**good, "public_key": None},
        {**good, "public_key": "é" + good["public_key"]},
        {**good, "public_key": good["public_key"].replace("\n", "\x00")},
        {**good, "platform": "ios"},
        {**good, "platform": "ios", "push_token": ""},
        {k: v for k, v in {**good, "platform": "android"}.items() if k != "push_token"},
        {**good, "platform": "IOS"},
        {**good, "platform": "windows"},
        {**good, "platform": None},
        {**good, "platform": ["poll"]},
        {**good, "push_token": "x" * 4097},
        {**good, "push_token": 12},
        {**good, "device_name": ""},
        {**good, "device_name": "x" * 65},
        {**good, "device_name": None},
        {**good, "device_name": {"$gt": ""}},
        {k: v for k, v in good.items() if k != "device_name"},
        {**good, "username": "W000000005"},
        {**good, "$where": "true"},
        [good],
    ]
    attempts = [as_json(body) for body in bodies] + [
        raw(good_bytes, "text/plain"),
        raw(good_bytes, None),
        {"files": {k: (None, v) for k, v in good.items() if v is not None}},
        {"data": {k: v for k, v in good.items() if v is not None}},
        raw(good_bytes[:-1]),
        raw(good_bytes + b" " * MAX_BODY),
        {"data": iter([good_bytes]), "headers": {"Content-Type": "application/json"}},
    ]
    with requests.Session() as http:
        for kwargs in attempts:
            answer = http.post(stack.base_url + "/api/devices/activate", **kwargs, timeout=TIMEOUT)
            assert_error(answer, 400, hidden=(code,))

    record = _code_record(mongo_client, code)
    assert record["failed_tries"] == 0 and record["used_at"] is None, record
    assert service_db(mongo_client, "otp").authenticators.count_documents({"username": username}) == 0

    activated = Device.new(stack.base_url).activate(code)
    assert activated["username"] == username
    devices = requests.get(f"{stack.base_url}/api/admin/users/{username}/devices", headers=ADMIN, timeout=TIMEOUT)
    assert devices.status_code == 200 and len(devices.json()["devices"]) == 1, describe(devices)


# Odd but JSON-valid strings sent with a real activation code: {case: (field, value, platform)}.
ODD_WITH_A_REAL_CODE = {
    "device_name-nul": ("device_name", "\x00", "poll"),
    "device_name-nul-inside": ("device_name", "Pixel\x00van Jan", "poll"),
    "device_name-ansi-escape": ("device_name", "\x1b[2J\x1b[31mPixel", "poll"),
    "device_name-rtl-override": ("device_name", "\u202eliF", "poll"),
    "device_name-emoji": ("device_name", "Pixel \U0001f44d", "poll"),
    "device_name-lone-surrogate": ("device_name", "\ud800", "poll"),
    "push_token-nul-inside": ("push_token", "tok\x00en", "android"),
    "push_token-emoji": ("push_token", "\U0001f44d", "ios"),
    "push_token-lone-surrogate": ("push_token", "\ud800", "android"),
}


def _eventually(probe, seconds=3.0):
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("case", list(ODD_WITH_A_REAL_CODE))
def test_odd_strings_with_a_real_code_are_accepted_whole_or_refused_cleanly(stack, mongo_client, case):
    """201 with the device in otp and in push, or a 4xx leaving the code as it was."""
    name, value, platform = ODD_WITH_A_REAL_CODE[case]
    username = f"W{secrets.randbelow(10**9):09d}"
    code = _activation(stack.base_url, username)
    body = {"activation_code": code, "public_key": Device.new(stack.base_url).public_key_pem,
            "platform": platform, "push_token": "token-1" if platform != "poll" else None,
            "device_name": "Phone", name: value}
    answer = requests.post(stack.base_url + "/api/devices/activate", json=body, timeout=TIMEOUT)
    if answer.status_code == 201:
        device_id = answer.json()["device_id"]
        devices = requests.get(f"{stack.base_url}/api/admin/users/{username}/devices", headers=ADMIN,
                               timeout=TIMEOUT)
        assert devices.status_code == 200, describe(devices)
        assert [d["device_id"] for d in devices.json()["devices"]] == [device_id]
        if name == "device_name":
            assert devices.json()["devices"][0]["device_name"] == value
        push = service_db(mongo_client, "push").devices
        registered = _eventually(lambda: push.find_one({"_id": device_id}))
        assert registered is not None, "activated in otp but never registered in push"
        assert registered[name] == value
        return
    # Refused: first that nothing was half-written, then that the refusal is a clean 4xx.
    record = _code_record(mongo_client, code)
    assert record["failed_tries"] == 0 and record["used_at"] is None, record
    assert service_db(mongo_client, "otp").authenticators.count_documents({"username": username}) == 0
    assert_error(answer, 400, hidden=(code,))
    assert Device.new(stack.base_url).activate(code)["username"] == username


@pytest.mark.parametrize("wait", ["\u00b2", "\u0663", "5" * 5000, "-1", "26", "1.5", "", "0x1"])
def test_odd_long_poll_waits_are_a_400(stack, http, wait):
    # "²" and "٣" pass str.isdigit() but not int(): a check must be of ASCII digits.
    answer = http.get(f"{stack.base_url}/api/login/push/lr_unknown", params={"wait": wait}, timeout=TIMEOUT)
    assert_error(answer, 400)
    assert "wait" in answer.json()["fields"]


STATE_CHANGING = [("POST", "/api/login"), ("POST", "/api/logout"), ("POST", "/api/remember"),
                  ("DELETE", "/api/remember"), ("POST", "/api/login/push"), ("POST", "/api/devices/activate"),
                  ("POST", "/api/admin/activations")]


@pytest.mark.parametrize("method, path", STATE_CHANGING)
def test_state_changing_requests_from_a_foreign_page_are_refused(stack, http, mongo_client, method, path):
    with nothing_written(mongo_client, "sessions", "failure counts", "activation codes"):
        answer = http.request(method, stack.base_url + path, headers={**ADMIN, "Origin": "https://evil.example"},
                              json={"username": "W000000001", "password": FAKE_PASSWORD}, timeout=TIMEOUT)
    assert_error(answer, 403)
    assert answer.json()["error"] == "forbidden"


def test_our_own_page_passes_the_origin_check(stack, http):
    answer = http.post(stack.base_url + "/api/login", headers={"Origin": stack.base_url},
                       json={"username": "W000000001", "password": FAKE_PASSWORD}, timeout=TIMEOUT)
    assert answer.status_code == 401    # reached otp: the code is wrong, the origin fine


def test_api_answers_are_never_cached(stack, http, make_user):
    device = make_user()
    login = http.post(stack.base_url + "/api/login", json={"username": device.username, "password": device.code()},
                      timeout=TIMEOUT)
    code = requests.post(stack.base_url + "/api/admin/activations", json={"username": device.username},
                         headers=ADMIN, timeout=TIMEOUT)
    activated = requests.post(stack.base_url + "/api/devices/activate", timeout=TIMEOUT, json={
        "activation_code": code.json()["activation_code"], "public_key": Device.new(stack.base_url).public_key_pem,
        "platform": "poll", "device_name": "Phone"})
    me = http.get(stack.base_url + "/api/me", timeout=TIMEOUT)
    for answer, status in ((login, 200), (code, 201), (activated, 201), (me, 200)):
        assert answer.status_code == status, describe(answer)
        assert answer.headers["Cache-Control"] == "no-store", answer.url   # the activation holds a TOTP secret
