"""How the gateway serves the login page over HTTP: the page and its files from the gateway
itself, from a fixed list, with the security headers; nothing external, no inline script.
"""
import http.client
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = pytest.mark.e2e

WEB = Path(__file__).resolve().parents[2] / "services" / "gateway" / "web"
STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
                "favicon.svg": "image/svg+xml"}


class PageParts(HTMLParser):
    """The page's linked URLs, its scripts, inline handlers and styles, and its i18n texts."""

    def __init__(self):
        super().__init__()
        self.urls, self.scripts, self.inline, self.texts = [], [], [], {}
        self._open, self._text = [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "action"):
            if name in attrs:
                self.urls.append(attrs[name])
        if tag == "script":
            self.scripts.append(attrs)
        self.inline += [name for name in attrs if name.startswith("on") or name == "style"]
        if "data-i18n" in attrs:
            self._open.append([attrs["data-i18n"], tag, ""])

    def handle_data(self, data):
        for item in self._open:
            item[2] += data

    def handle_endtag(self, tag):
        if self._open and self._open[-1][1] == tag:
            key, _, text = self._open.pop()
            self.texts[key] = " ".join(text.split())


def parse_page(body):
    parts = PageParts()
    parts.feed(body)
    return parts


def i18n_tables():
    """{lang: {key: plain string or None for a function}} from app.js."""
    source = (WEB / "app.js").read_text(encoding="utf-8")
    nl_block = source[source.index("    nl: {"):source.index("    en: {")]
    en_block = source[source.index("    en: {"):source.index("\n  };")]
    tables = {}
    for lang, block in (("nl", nl_block), ("en", en_block)):
        tables[lang] = {}
        for match in re.finditer(r'^\s*"([\w.]+)": (?:"((?:[^"\\]|\\.)*)"|function)', block, re.M):
            tables[lang][match.group(1)] = match.group(2)
    return tables


def test_the_page_is_served_with_its_security_headers(stack):
    page = requests.get(stack.base_url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = page.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'self';")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-cache"
    # A browser's current copy is confirmed with a 304, not sent again.
    again = requests.get(stack.base_url + "/", headers={"If-None-Match": page.headers["ETag"]}, timeout=10)
    assert again.status_code == 304 and again.content == b""


def test_the_page_links_only_its_own_files_and_has_no_inline_script_or_style(stack):
    body = requests.get(stack.base_url + "/", timeout=10).text
    parts = parse_page(body)
    assert parts.inline == []
    assert parts.scripts and all(set(script) >= {"src"} for script in parts.scripts)
    assert not re.search(r"<script[^>]*>[^<]+</script>", body)
    assert not re.search(r"<style", body)
    for url in parts.urls:
        assert url.startswith("/static/") or url.startswith("#"), url
    # Nothing from elsewhere in the script and style either (no CDN, no font service).
    for name in STATIC_TYPES:
        content = (WEB / name).read_text(encoding="utf-8").replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", content), name


def test_each_linked_file_is_served_with_its_type_and_cached_by_version(stack):
    parts = parse_page(requests.get(stack.base_url + "/", timeout=10).text)
    linked = [url for url in parts.urls if url.startswith("/static/")]
    assert {urlsplit(url).path.rsplit("/", 1)[1] for url in linked} == set(STATIC_TYPES)
    for url in linked:
        name = urlsplit(url).path.rsplit("/", 1)[1]
        versioned = requests.get(stack.base_url + url, timeout=10)
        assert versioned.status_code == 200
        assert versioned.headers["Content-Type"] == STATIC_TYPES[name]
        assert versioned.headers["X-Content-Type-Options"] == "nosniff"
        assert versioned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert versioned.content == (WEB / name).read_bytes()
        plain = requests.get(f"{stack.base_url}/static/{name}", timeout=10)
        assert plain.status_code == 200 and plain.headers["Cache-Control"] == "no-cache"
        stale = requests.get(f"{stack.base_url}/static/{name}?v=0", timeout=10)
        assert stale.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("path", [
    "/static/nope.js", "/static/index.html", "/static/app.js.map", "/static/APP.JS", "/static/..",
    "/static/%2e%2e", "/static/..%2fservice.py", "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/static/../service.py", "/static/web/app.js", "/static/", "/static", "/index.html", "/app.js",
    "/static/app.js%00", "/static/%00",
])
def test_anything_else_under_static_is_a_json_404(stack, path):
    # http.client sends the path exactly as written: no client normalises the dots away.
    address = urlsplit(stack.base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 404, (path, response.status, body[:200])
    assert response.getheader("Content-Type") == "application/json"
    assert b'"error":"not_found"' in body


def test_the_page_and_its_files_are_in_the_openapi_document(stack):
    spec = requests.get(stack.base_url + "/openapi.json", timeout=10).json()
    assert spec["paths"]["/"]["get"]["tags"] == ["browser"]
    static = spec["paths"]["/static/{name}"]["get"]
    assert static["tags"] == ["browser"] and "404" in static["responses"]


def test_every_text_exists_in_dutch_and_english_and_the_page_starts_in_dutch():
    tables = i18n_tables()
    assert tables["nl"].keys() == tables["en"].keys()
    texts = parse_page((WEB / "index.html").read_text(encoding="utf-8")).texts
    assert texts, "index.html has no translatable text"
    for key, shown in texts.items():
        assert key in tables["nl"], key
        assert shown == tables["nl"][key], (key, shown, tables["nl"][key])
    # The words of the guide and the issue.
    assert [tables["nl"][key] for key in ("field.username", "field.password", "button.login", "button.save",
                                          "button.sendPush", "button.notNow", "button.useCode",
                                          "button.otherUser", "button.logout")] == [
        "Gebruikersnaam", "Wachtwoord", "Aanmelden", "Bewaren", "Stuur PUSH", "Niet nu", "Inloggen met code",
        "Andere gebruiker", "Afmelden"]
    assert [tables["en"][key] for key in ("field.username", "field.password", "button.login", "button.save",
                                          "button.sendPush")] == ["Username", "Password", "Log in", "Save",
                                                                  "Send PUSH"]
