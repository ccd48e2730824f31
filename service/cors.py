"""Cross-origin requests (CORS): a page served from another origin (a team's front-end, a notebook)
may call the API from a browser when SCRATCHNET_CORS_ORIGINS names its origin (``*``: any origin).

Every route but the admin ones answers such an origin: a preflight (OPTIONS with
``Access-Control-Request-Method``) with the methods and request headers a page may use, and every
other answer, errors included, with ``Access-Control-Allow-Origin`` and the response headers a page
may read (which version answered). Another origin gets no CORS headers, and the browser keeps the
answer from its page. Credentials (cookies) are never allowed: no route reads them.

Written here rather than with flask-cors, which sends ``Vary: Origin`` only for two origins or
more, reads an IPv6 origin (``http://[::1]:8080``) as a regular expression, and would need a path
pattern repeating every admin route to leave those out.
"""

from __future__ import annotations

from urllib.parse import unquote

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from .context import EXTENSION

ALLOW_METHODS = "GET, HEAD, POST"  # the admin API's PUT and DELETE stay out of a page's reach
ALLOW_HEADERS = "Content-Type, Content-Encoding, Authorization, X-Request-ID, Inference-Header-Content-Length"
EXPOSE_HEADERS = "X-Model-Name, X-Model-Version, X-Request-ID, X-Worker-PID, Inference-Header-Content-Length"
MAX_AGE = "600"  # seconds a browser may keep a preflight's answer


def headers_for(origins: tuple[str, ...] | None, origin: str | None, *, preflight: bool = False
                ) -> list[tuple[str, str]]:
    """The CORS headers of an answer to a request from ``origin`` (None: it sent no Origin header) when
    ``origins`` are allowed: ``Vary: Origin`` unless any origin is, and the headers that let the page read
    the answer when its origin is allowed (``preflight``: an OPTIONS asking which methods a page may use)."""
    if not origins:
        return []
    any_origin = origins == ("*",)
    headers = [] if any_origin else [("Vary", "Origin")]  # the answer differs by origin, for any cache that keeps it
    if origin is None or not (any_origin or origin in origins):
        return headers
    headers.append(("Access-Control-Allow-Origin", "*" if any_origin else origin))
    if preflight:
        headers += [("Access-Control-Allow-Methods", ALLOW_METHODS), ("Access-Control-Allow-Headers", ALLOW_HEADERS),
                    ("Access-Control-Max-Age", MAX_AGE)]
    else:
        headers.append(("Access-Control-Expose-Headers", EXPOSE_HEADERS))
    return headers


def headers_for_path(app: Flask, method: str | None, path: str | None, origin: str | None) -> list[tuple[str, str]]:
    """The CORS headers of an answer the worker writes itself (service/worker.py: a body that stopped arriving,
    a stop), before or without the app, to ``method path`` from ``origin``: those the app's answer would carry."""
    svc = getattr(app, "extensions", {}).get(EXTENSION)
    if svc is None or not svc.settings.cors_origins:
        return []
    try:
        endpoint, _ = app.url_map.bind("localhost").match(unquote((path or "/").partition("?")[0]), method or "GET")
    except HTTPException:  # no such route, or another method's: the app's 404 or 405 carries them too
        endpoint = None
    if getattr(app.view_functions.get(endpoint), "admin", False):
        return []
    return headers_for(svc.settings.cors_origins, origin)


def init_app(app: Flask, origins: tuple[str, ...] | None) -> None:
    """Answer ``origins`` (None: no CORS at all; ``("*",)``: any origin) on every route but the admin ones."""
    if not origins:
        return

    @app.after_request
    def allow_origin(response):
        if getattr(app.view_functions.get(request.endpoint), "admin", False):
            return response
        preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        for name, value in headers_for(origins, request.headers.get("Origin"), preflight=preflight):
            if name == "Vary" and "Vary" in response.headers:
                response.vary.add(value)
            else:  # a first Vary as a plain header: response.vary would parse it and write the set back
                response.headers[name] = value
        return response
