"""The gateway's HTTP entrypoint: JSON in, JSON out, one error mapping for everything.

`route(...)` declares a route once: the nameko HTTP entrypoint, and the entry the OpenAPI
document is generated from. Every exception becomes the JSON error shape of DESIGN §4:
our own errors carry their status and code; werkzeug's (unknown path, wrong method,
malformed request) keep their status; anything else is a logged 500 without details.
"""
import json
import logging
import time
from dataclasses import dataclass, field

from marshmallow import RAISE, ValidationError
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Request, Response

from shared.errors import EXPECTED_ERRORS, MycepaError, ValidationFailed
from services.gateway import metrics

log = logging.getLogger(__name__)

_HTTP_ERROR_CODES = {400: "validation_error", 401: "unauthenticated", 403: "forbidden",
                     404: "not_found", 405: "method_not_allowed", 409: "conflict", 410: "expired",
                     413: "validation_error", 415: "validation_error", 423: "locked",
                     429: "too_many_requests", 503: "unavailable"}


def json_response(payload, status=200, headers=None):
    return Response(json.dumps(payload, separators=(",", ":")), status=status, headers=headers,
                    mimetype="application/json")


def error_response(exc):
    if isinstance(exc, RequestRedirect):
        # werkzeug redirects "//" in a path to the merged path; no route of ours
        # lives at such a URL, so it is simply not found.
        exc = NotFound()
    if isinstance(exc, MycepaError):
        headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
        return json_response(exc.to_dict(), exc.status, headers)
    if isinstance(exc, HTTPException) and exc.code and exc.code < 500:
        # 405 and 415 are not in DESIGN's list; they stay truthful statuses with a code
        # a client can branch on.
        code = _HTTP_ERROR_CODES.get(exc.code, "validation_error")
        response = json_response({"error": code, "message": exc.description or exc.name, "fields": {}}, exc.code)
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
    log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
    return json_response({"error": "internal", "message": "Internal error", "fields": {}}, 500)


class JsonWsgiApp(WsgiApp):
    """nameko's WSGI app, answering unrouted requests (404, 405) with JSON too."""

    def __call__(self, environ, start_response):
        request = Request(environ, shallow=True)
        try:
            provider, values = self.url_map.bind_to_environ(environ).match()
            request.path_values = values
            response = provider.handle_request(request)
        except HTTPException as exc:
            response = error_response(exc)
        return response(environ, start_response)


class JsonWebServer(WebServer):
    def get_wsgi_app(self):
        return JsonWsgiApp(self)


@dataclass
class RouteDoc:
    """What the OpenAPI document says of a route."""
    method: str
    path: str
    summary: str
    tag: str
    body: type = None
    responses: dict = field(default_factory=dict)   # {status: schema class or None}
    errors: tuple = ()
    auth: str = None                                # None, "session", "admin"
    content_type: str = "application/json"


ROUTES = []


class JsonHttp(HttpRequestHandler):
    server = JsonWebServer()

    def __init__(self, method, url, doc=None, **kwargs):
        self.doc = doc
        super().__init__(method, url, **kwargs)

    def handle_request(self, request):
        started = time.perf_counter()
        response = super().handle_request(request)
        metrics.observe_request(self.doc.path if self.doc else self.url, request.method,
                                response.status_code, time.perf_counter() - started)
        return response

    def response_from_exception(self, exc):
        return error_response(exc)


def route(method, path, summary, tag, body=None, responses=None, errors=(), auth=None,
          content_type="application/json"):
    """Declare an HTTP route: `path` in OpenAPI form (`/a/{b}`), turned into werkzeug's."""
    doc = RouteDoc(method, path, summary, tag, body, responses or {}, errors, auth, content_type)
    ROUTES.append(doc)
    werkzeug_path = path.replace("{", "<string:").replace("}", ">")
    return JsonHttp.decorator(method, werkzeug_path, doc=doc, expected_exceptions=EXPECTED_ERRORS)


def load_body(request, schema_cls, max_bytes):
    """The request's JSON body loaded through `schema_cls`, or ValidationFailed saying why."""
    if request.mimetype != "application/json":
        raise ValidationFailed("Content-Type must be application/json")
    if request.content_length is None or request.content_length > max_bytes:
        raise ValidationFailed(f"The request body must be JSON of at most {max_bytes} bytes with a Content-Length")
    raw = request.get_data(cache=False)
    if len(raw) > max_bytes:
        raise ValidationFailed(f"The request body must be at most {max_bytes} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a few KB of "[[[[..." nest deeper than the parser goes.
        raise ValidationFailed("The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationFailed("The request body must be a JSON object")
    try:
        return schema_cls(unknown=RAISE).load(data)
    except ValidationError as error:
        raise ValidationFailed("Invalid request", fields=error.messages) from None
