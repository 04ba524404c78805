"""Property-based fuzzing of every operation of the gateway's HTTP API (schemathesis).

The OpenAPI document the running gateway serves (`/openapi.json`) is the source of the
requests: schemathesis generates valid and invalid path parameters, bodies and
credentials for each operation, and each answer must be no 5xx, a status the document
lists for the operation, the content type it lists, and, for any error, JSON of
architecture.md §4's shape `{"error": str, "message": str, "fields": {...}}`.

Every operation is fuzzed as a stranger calls it (no credentials, or generated wrong
ones); the admin routes again with the admin token; the browser routes again as a
logged-in browser that saved its username (session, remember and, once asked for, push
cookies). A fuzzed request may end that browser's state (logout, "Andere gebruiker"): it
is restored before the next one.

schemathesis' own pytest entry (`schemathesis.pytest.from_fixture`, the way to fuzz a
server that a fixture starts) does not run on pytest 9.2: it sets `Node._nodeid`, which
pytest 9.2 replaced. So each operation's test is built by the builder behind that entry,
one subtest per operation, and its cases are sent and checked by schemathesis
(`Case.call`, `Case.validate_response`).

Short and reproducible: a fixed seed, no shrinking, no example database,
and every request bounded by REQUEST_TIMEOUT (the long poll waits at most 25 s).
"""

import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import load_all_checks, not_a_server_error
from schemathesis.generation.feedback import FeedbackSources
# The builder behind schemathesis' own pytest entry (private, hence the exact pin in
# pyproject.toml): its coverage cases, then valid and invalid generated ones.
from schemathesis.pytest._test_builder import build_operation_test
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 25          # per operation and way of calling it
REQUEST_TIMEOUT = 30       # seconds: above the long poll's longest wait (25 s)
TIMEOUT = 10               # the test's own requests
SEED = 20240611


def error_shape(ctx, response, case):
    """An error answer is JSON of architecture.md §4's shape, whatever its status."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.split(";")[0].strip() == "application/json", \
        f"{response.status_code} error answer is not JSON: Content-Type {content_type!r}"
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} error answer is not JSON: {response.content[:200]!r}") from None
    assert isinstance(body, dict) and set(body) == {"error", "message", "fields"}, \
        f"{response.status_code} error answer is not the error shape: {body!r}"[:500]
    assert isinstance(body["error"], str) and isinstance(body["message"], str), body
    assert isinstance(body["fields"], dict), body
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, error_shape]


class Browser:
    """A logged-in browser that saved its username: it holds the session and remember
    cookies (and a push cookie once it asked for a push login)."""

    def __init__(self, stack):
        self.stack = stack
        self.base_url = stack.base_url
        self.http = requests.Session()
        self.request_ids = []    # the push login requests it started
        self.login()

    def login(self):
        device = self.stack.make_user()
        self.http.cookies.clear()
        login = self.http.post(self.base_url + "/api/login", timeout=TIMEOUT,
                               json={"username": device.username, "password": device.code()})
        assert login.status_code == 200, login.text
        self.remember()

    def remember(self):
        remember = self.http.post(self.base_url + "/api/remember", timeout=TIMEOUT)
        assert remember.status_code == 204, remember.text

    def call(self, case):
        # The generated cookies (a made-up session) give way to the browser's own.
        response = case.call(session=self.http, cookies=self.http.cookies.get_dict(), timeout=REQUEST_TIMEOUT)
        self.after(case, response)
        return response

    def after(self, case, response):
        """Keep what a request gave; undo what it ended."""
        if (case.method, case.path, response.status_code) == ("POST", "/api/login/push", 202):
            self.request_ids.append(response.json()["request_id"])
        elif (case.method, case.path, response.status_code) == ("POST", "/api/logout", 204):
            self.login()
        elif (case.method, case.path, response.status_code) == ("DELETE", "/api/remember", 204):
            self.remember()


@pytest.fixture(scope="module")
def browser(stack):
    browser = Browser(stack)
    yield browser
    browser.http.close()


@pytest.fixture(scope="module")
def api_schema(stack, browser):
    config = schemathesis.Config.from_dict({
        "seed": SEED, "base-url": stack.base_url, "request-timeout": REQUEST_TIMEOUT,
        "suppress-health-check": ["all"], "cache": {"enabled": False},
        "generation": {"max-examples": MAX_EXAMPLES, "no-shrink": True, "database": "none"},
        "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False}},
        "analysis": {"constants": {"enabled": False}},
    })
    document = requests.get(stack.base_url + "/openapi.json", timeout=TIMEOUT)
    assert document.status_code == 200, document.text
    # From the document, not its URL: loaded from a URL, schemathesis leaves out the
    # operation that serves it (GET /openapi.json).
    schema = schemathesis.openapi.from_dict(document.json(), config=config)

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        # Now and then the push login request the browser really started: its pending state.
        if context.operation.path == "/api/login/push/{request_id}" and browser.request_ids:
            return st.sampled_from([path_parameters, {**path_parameters, "request_id": browser.request_ids[-1]}])
        return st.just(path_parameters)

    @schema.hook
    def map_query(context, query):
        # Should the document come to declare `?wait=`, a valid wait stays short.
        wait = (query or {}).get("wait")
        if isinstance(wait, str) and wait.isascii() and wait.isdigit() and int(wait) > 1:
            query = {**query, "wait": "1"}
        return query

    return schema


def operations(schema, tag=None):
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()     # a malformed operation in the document fails here
        if tag is None or tag in operation.tags:
            found.append(operation)
    assert found, f"no operation tagged {tag!r} in the document"
    return found


def fuzz(subtests, schema, name, tag, send):
    """Each operation (of `tag`) fuzzed as schemathesis' pytest entry does it (its coverage
    cases, then valid and invalid generated ones), each request made by `send(case)`."""
    load_all_checks()
    for operation in operations(schema, tag):
        def check(case):
            case.validate_response(send(case), checks=CHECKS)

        test = build_operation_test(config=schema.config, operation=operation, test_func=check,
                                    given_kwargs={}, feedback=FeedbackSources())
        with subtests.test(msg=f"{name}: {operation.label}"):
            test()


def test_every_operation_without_credentials(subtests, api_schema):
    documented = {(method.upper(), path) for path, item in api_schema.raw_schema["paths"].items()
                  for method in item if method in ("get", "put", "post", "delete", "patch", "head", "options")}
    assert {(op.method.upper(), op.path) for op in operations(api_schema)} == documented
    fuzz(subtests, api_schema, "anonymous", None, lambda case: case.call(timeout=REQUEST_TIMEOUT))


def test_admin_operations_with_the_admin_token(subtests, api_schema, stack):
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    fuzz(subtests, api_schema, "admin", "admin", lambda case: case.call(headers=admin, timeout=REQUEST_TIMEOUT))


def test_browser_operations_as_a_logged_in_browser(subtests, api_schema, browser):
    fuzz(subtests, api_schema, "browser", "browser", browser.call)
