"""The login page: its files (services/gateway/web/), read once at import, and how they are served.

Every asset comes from the gateway itself (no CDN) and only from the fixed list below,
so no request path ever reaches the file system. The page links its script and style as
`/static/<name>?v=<hash of the file>`: a browser may keep such a URL for a year, since a
changed file gets a new URL; without the current hash the answer must be revalidated.
The page allows scripts, styles and requests from this origin only (no inline script).
"""
import hashlib
from dataclasses import dataclass
from pathlib import Path

from werkzeug.wrappers import Response

WEB_DIR = Path(__file__).resolve().parent / "web"

# name -> Content-Type: the only files /static/ serves.
STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
REVALIDATE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str        # a hash of the body: the ETag, and the `v` of the versioned URL


def _asset(body, content_type):
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])


def _load():
    assets = {name: _asset((WEB_DIR / name).read_bytes(), content_type)
              for name, content_type in STATIC_TYPES.items()}
    html = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    for name, asset in assets.items():
        reference = f'"/static/{name}"'
        if reference not in html:
            raise RuntimeError(f"index.html does not link {reference}")
        html = html.replace(reference, f'"/static/{name}?v={asset.version}"')
    return _asset(html.encode("utf-8"), "text/html; charset=utf-8"), assets


PAGE, ASSETS = _load()


def respond(request, asset, cache_control):
    """`asset` with the security headers; 304 when the browser's copy is current."""
    response = Response(asset.body, status=200, content_type=asset.content_type,
                        headers={**SECURITY_HEADERS, "Cache-Control": cache_control})
    response.set_etag(asset.version)
    return response.make_conditional(request)


def page_response(request):
    return respond(request, PAGE, REVALIDATE)


def asset_response(request, asset):
    versioned = request.args.get("v") == asset.version
    return respond(request, asset, IMMUTABLE if versioned else REVALIDATE)
