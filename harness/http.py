"""The benchmark's HTTP client: one kept-alive HTTP/1.1 connection, optionally TLS.

http.client rather than requests: the load generator shares the two cores with the
system it measures, and requests costs several times the CPU per call.
"""
import http.client
import json
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

# What a broken or refused connection raises; a caller counts it, it is not a bug.
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


@dataclass
class Answer:
    status: int
    body: object      # the JSON body, or None
    seconds: float    # from sending to the whole answer read


class KeepAlive:
    """One connection to `base_url`, reopened when the server closed it.

    `source`: the local address to connect from (any of 127.0.0.0/8: the gateway then
    sees another client). `ca_file`: trust this CA for https:// (the local APNs server).
    """

    def __init__(self, base_url, timeout=10.0, source=None, ca_file=None):
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.https else 80)
        self.timeout, self.source = timeout, source
        self.context = ssl.create_default_context(cafile=ca_file) if self.https else None
        self.conn = None

    def move_to(self, source):
        """Connect from `source` from the next request on."""
        if source != self.source:
            self.close()
            self.source = source

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, jar=None, timeout=None):
        """The Answer; `jar` ({name: value}) sends its cookies and takes the Set-Cookies.
        Raises one of CONNECTION_ERRORS when there is no answer."""
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Connection": "keep-alive"}
        if method != "GET":
            headers["Content-Length"] = str(len(payload or b""))
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if jar:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in jar.items())
        started = time.perf_counter()
        for attempt in (1, 2):
            reused = self.conn is not None
            try:
                if self.conn is None:
                    self.conn = self._connect(timeout or self.timeout)
                elif self.conn.sock is not None:   # this request's timeout, not the last one's
                    self.conn.sock.settimeout(timeout or self.timeout)
                self.conn.request(method, path, payload, headers)
                response = self.conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 1 and reused:
                    continue   # the server closed the idle kept-alive connection: send once more
                raise
            except CONNECTION_ERRORS:
                self.close()
                raise
            if response.will_close:
                self.close()
            if jar is not None:
                _take_cookies(jar, response.headers.get_all("Set-Cookie") or [])
            is_json = response.headers.get("Content-Type", "").startswith("application/json")
            return Answer(response.status, json.loads(raw) if raw and is_json else None,
                          time.perf_counter() - started)
        raise AssertionError("unreachable")

    def _connect(self, timeout):
        source = (self.source, 0) if self.source else None
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context,
                                               source_address=source)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout, source_address=source)


def _take_cookies(jar, set_cookie_headers):
    """Apply Set-Cookie headers to the jar (a deleted cookie has Max-Age=0)."""
    for header in set_cookie_headers:
        pair, _, attributes = header.partition(";")
        name, _, value = pair.strip().partition("=")
        if not value or "max-age=0" in attributes.lower().replace(" ", ""):
            jar.pop(name, None)
        else:
            jar[name] = value
