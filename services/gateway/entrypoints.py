"""The gateway's HTTP entrypoint: JSON in, JSON out, one error mapping for everything.

`route(...)` declares a route once: the nameko HTTP entrypoint, and the entry the OpenAPI
document is generated from. Every exception becomes the JSON error shape of architecture.md §4:
our own errors carry their status and code; werkzeug's (unknown path, wrong method,
malformed request) keep their status; a dependency that is down is a 503; anything else
is a logged 500 without details.

The web server also gives every request a deadline (RPC_TIMEOUT_SECONDS plus the reply's
margin), which bounds its RPC calls and database operations, and stops gracefully: on
SIGTERM it stops accepting, serves what is in flight with `Connection: close`, wakes the
waiting browsers, and only then lets nameko stop the workers' dependencies.
"""
import json
import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urlsplit

import eventlet
import eventlet.event
import eventlet.greenio
from eventlet import wsgi
from marshmallow import RAISE, ValidationError
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Request, Response

from shared.config import settings_of
from shared.deadline import CONTEXT_KEY, REPLY_MARGIN_SECONDS
from shared.errors import EXPECTED_ERRORS, Forbidden, MycepaError, ValidationFailed, unavailable_from
from shared.validation import schema_of
from services.gateway import metrics
from services.gateway.config import GatewaySettings
from services.gateway.dependencies import LoginWaiters

log = logging.getLogger(__name__)

_HTTP_ERROR_CODES = {400: "validation_error", 401: "unauthenticated", 403: "forbidden",
                     404: "not_found", 405: "method_not_allowed", 409: "conflict", 410: "expired",
                     413: "validation_error", 415: "validation_error", 423: "locked",
                     429: "too_many_requests", 503: "unavailable"}


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def json_response(payload, status=200, headers=None):
    return Response(json.dumps(payload, separators=(",", ":")), status=status, headers=headers,
                    mimetype="application/json")


def error_response(exc):
    if isinstance(exc, RequestRedirect):
        # werkzeug redirects "//" in a path to the merged path; no route of ours
        # lives at such a URL, so it is simply not found.
        exc = NotFound()
    unavailable = unavailable_from(exc)
    if unavailable is not None and unavailable is not exc:
        log.warning("answered 503: %s", type(exc).__name__)
        exc = unavailable
    if isinstance(exc, MycepaError):
        headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
        return json_response(exc.to_dict(), exc.status, headers)
    if isinstance(exc, HTTPException) and exc.code and exc.code < 500:
        # 405 and 415 are not in architecture.md §4's list; they stay truthful statuses with a code
        # a client can branch on.
        code = _HTTP_ERROR_CODES.get(exc.code, "validation_error")
        response = json_response({"error": code, "message": exc.description or exc.name, "fields": {}}, exc.code)
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
    log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
    return json_response({"error": "internal", "message": "Internal error", "fields": {}}, 500)


def same_origin(request, public_host):
    """A request without Origin (devices, the CLIs) or from our own page: the one served
    at MYCEPA_PUBLIC_URL (`public_host`) or at the Host it asked for. (SameSite=Strict
    already keeps the cookies off a cross-site request; this is the second lock, for
    browsers that do not honour it and for the routes without cookies.)"""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    host = urlsplit(origin).netloc if origin.startswith(("http://", "https://")) else None
    return host is not None and host in (public_host, request.host)


class JsonWsgiApp(WsgiApp):
    """nameko's WSGI app, answering unrouted requests (404, 405) with JSON too, and
    keeping architecture.md §5's rules for every response: nothing is cached unless a route says
    so (an activation answer holds a TOTP secret), and a state-changing request from a
    foreign page is refused before any route sees it."""

    def __call__(self, environ, start_response):
        request = Request(environ, shallow=True)
        try:
            if request.method not in SAFE_METHODS and not same_origin(request, self.server.public_host):
                raise Forbidden("This request comes from a page of another site")
            provider, values = self.url_map.bind_to_environ(environ).match()
            request.path_values = values
            response = provider.handle_request(request)
        except (HTTPException, Forbidden) as exc:
            response = error_response(exc)
        response.headers.setdefault("Cache-Control", "no-store")
        return response(environ, start_response)


class JsonErrorProtocol(HttpOnlyProtocol):
    """eventlet's HTTP protocol, with the JSON error shape (architecture.md §4) also where
    the server answers before any app is called: a request line over 8 KiB (414), a
    header line over 8 KiB or headers over 64 KiB (431), a request the standard library
    cannot parse or a Content-Length that is not a length (400).

    eventlet writes those as fixed bytes with an empty body and no Content-Type, inside
    `handle_one_request`; the refusals are made here first, in the steps it calls (its
    `_read_request_line` is private: eventlet is pinned, and the e2e test of these cases
    guards an upgrade)."""

    def _read_request_line(self):
        line = super()._read_request_line()
        if len(line) >= self.server.url_length_limit:
            self._refuse(HTTPStatus.REQUEST_URI_TOO_LONG, "The request line is longer than the server accepts")
            return b""     # eventlet then closes the connection
        return line

    def parse_request(self):
        try:
            parsed = super().parse_request()
        except (wsgi.HeaderLineTooLong, wsgi.HeadersTooLarge):
            self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "The request headers are larger than the "
                                                                     "server accepts")
            return False
        if parsed and not _body_length_valid(self.headers):
            self._refuse(HTTPStatus.BAD_REQUEST, "Content-Length must be one non-negative number, "
                                                 "without Transfer-Encoding")
            return False
        return parsed

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, too many headers, an HTTP
        version it does not speak): bad input, so a 4xx, never a 5xx."""
        status = HTTPStatus(code) if code < 500 else HTTPStatus.BAD_REQUEST
        self._refuse(status, "The request is not valid HTTP/1.1" if status == HTTPStatus.BAD_REQUEST
                     else status.phrase)

    def _refuse(self, status, message):
        body = json.dumps({"error": _HTTP_ERROR_CODES.get(status, "validation_error"), "message": message,
                           "fields": {}}, separators=(",", ":")).encode()
        self.wfile.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Cache-Control: no-store\r\nConnection: close\r\n\r\n%s"
                         % (status.value, status.phrase.encode(), len(body), body))
        self.close_connection = 1


def _body_length_valid(headers):
    length = headers.get("content-length")
    if length is None:
        return True
    return length.strip().isdigit() and headers.get("transfer-encoding") is None


class JsonWebServer(WebServer):
    """nameko's web server with JSON errors, request deadlines and a graceful stop.

    nameko stops its web server last, after the dependencies: it kept accepting and
    routing requests to workers whose database client was already closed (measured: 500
    `Cannot use MongoClient after close`, and codes consumed without a session).
    """

    # Waiting for the requests in flight ends after this; nameko then stops the rest.
    DRAIN_SECONDS = 8.0
    # How long idle keep-alive connections may still bring a request once draining.
    IDLE_GRACE_SECONDS = 0.5

    def setup(self):
        settings = settings_of(self.container, GatewaySettings)
        self.request_seconds = settings["rpc_timeout_seconds"] + REPLY_MARGIN_SECONDS
        self.public_host = urlsplit(settings["public_url"]).netloc
        self.connections = {}
        self.drained = None

    def get_wsgi_app(self):
        return JsonWsgiApp(self)

    def get_wsgi_server(self, sock, wsgi_app, protocol=JsonErrorProtocol, debug=False):
        return super().get_wsgi_server(sock, wsgi_app, protocol=protocol, debug=debug)

    def context_data_from_headers(self, request):
        return {CONTEXT_KEY: time.time() + self.request_seconds}

    def process_request(self, sock, address):
        # The same as nameko's, with the connection's state kept where drain() sees it.
        state = [address, sock, wsgi.STATE_IDLE]
        self.connections[id(state)] = state
        try:
            self._serv.process_request(state)
        except OSError as exc:
            if "raw readinto() returned invalid length" not in str(exc):
                raise
        finally:
            self.connections.pop(id(state), None)

    def drain(self):
        """Stop taking connections, finish the requests in flight; once, however many
        entrypoints ask. Returns when done or after DRAIN_SECONDS."""
        if self.drained is not None:
            self.drained.wait()
            return
        self.drained = eventlet.event.Event()
        started = time.monotonic()
        self._is_accepting = False
        if self._gt is not None:
            self._gt.kill()
            self._sock.close()
        self._serv.keepalive = False   # every answer from now on closes its connection
        log.info("stopping: no new connections; %d open", len(self.connections))
        idle_since = None
        while time.monotonic() - started < self.DRAIN_SECONDS:
            busy = [state for state in self.connections.values() if state[2] != wsgi.STATE_IDLE]
            if busy:
                idle_since = None
            elif not self.connections:
                break
            else:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= self.IDLE_GRACE_SECONDS:
                    break
            eventlet.sleep(0.05)
        for state in list(self.connections.values()):
            if state[2] == wsgi.STATE_IDLE:
                state[2] = wsgi.STATE_CLOSE
                eventlet.greenio.shutdown_safe(state[1])
        log.info("stopped serving after %.1f s", time.monotonic() - started)
        self.drained.send(True)


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
        response = self.respond(request)
        metrics.observe_request(self.doc.path if self.doc else self.url, request.method,
                                response.status_code, time.perf_counter() - started)
        return response

    def respond(self, request):
        """The response of one worker for `request`."""
        return super().handle_request(request)

    def response_from_exception(self, exc):
        return error_response(exc)

    def stop(self):
        # Before nameko waits for the workers and stops the dependencies: the requests
        # in flight must end while the database and the broker are still there.
        self.server.drain()
        super().stop()


# How often the long poll has asked the handler again (absent: the first time).
LONG_POLL_ROUND = "mycepa.long_poll_round"


class LongPoll(JsonHttp):
    """A GET whose answer may wait for an event (a push login's answer).

    The waiting happens here, between short workers, never inside one: the workers are
    what logins, health checks and devices need (measured: 100 browsers waiting inside
    workers held all 64, and /healthz took 22 s). A worker that wants to wait returns
    its response with `wait_for = (key, until)` (monotonic seconds); this entrypoint
    then waits for `waiters.wake(key)` or the time, and asks a fresh worker again. Above
    LONG_POLL_MAX waiting browsers the first answer is given at once.
    """

    waiters = LoginWaiters()
    # A safety net for a wake-up that never came (a broadcast lost while the broker was
    # away): look again this often.
    RECHECK_SECONDS = 5.0

    def respond(self, request):
        response = super().respond(request)
        wait_for = getattr(response, "wait_for", None)
        if wait_for is None:
            return response
        if not self.waiters.admit():
            return self._again(request)   # no room to wait: the answer as it is now
        key, until = wait_for
        try:
            while True:
                self.waiters.wait(key, max(0.0, min(self.RECHECK_SECONDS, until - time.monotonic())))
                response = self._again(request)
                if (getattr(response, "wait_for", None) is None or self.waiters.stopping
                        or time.monotonic() >= until):
                    return response
        finally:
            self.waiters.leave()

    def _again(self, request):
        """The handler asked once more, knowing it is not the first time (it may have
        answered the first time without asking what it can wait to hear)."""
        request.environ[LONG_POLL_ROUND] = request.environ.get(LONG_POLL_ROUND, 0) + 1
        return super().respond(request)

    def stop(self):
        self.waiters.wake_all()   # waiting browsers answer with what they have, now
        super().stop()


def route(method, path, summary, tag, body=None, responses=None, errors=(), auth=None,
          content_type="application/json", long_poll=False):
    """Declare an HTTP route: `path` in OpenAPI form (`/a/{b}`), turned into werkzeug's."""
    doc = RouteDoc(method, path, summary, tag, body, responses or {}, errors, auth, content_type)
    ROUTES.append(doc)
    werkzeug_path = path.replace("{", "<string:").replace("}", ">")
    entrypoint = LongPoll if long_poll else JsonHttp
    return entrypoint.decorator(method, werkzeug_path, doc=doc, expected_exceptions=EXPECTED_ERRORS)


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
        return schema_of(schema_cls, unknown=RAISE).load(data)
    except ValidationError as error:
        raise ValidationFailed("Invalid request", fields=error.messages) from None
