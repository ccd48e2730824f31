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

from flask import Flask, request

ALLOW_METHODS = "GET, HEAD, POST"  # the admin API's PUT and DELETE stay out of a page's reach
ALLOW_HEADERS = "Content-Type, Content-Encoding, Authorization, X-Request-ID, Inference-Header-Content-Length"
EXPOSE_HEADERS = "X-Model-Name, X-Model-Version, X-Request-ID, X-Worker-PID, Inference-Header-Content-Length"
MAX_AGE = "600"  # seconds a browser may keep a preflight's answer


def init_app(app: Flask, origins: tuple[str, ...] | None) -> None:
    """Answer ``origins`` (None: no CORS at all; ``("*",)``: any origin) on every route but the admin ones."""
    if not origins:
        return
    any_origin = origins == ("*",)

    @app.after_request
    def allow_origin(response):
        if getattr(app.view_functions.get(request.endpoint), "admin", False):
            return response
        if not any_origin:
            response.vary.add("Origin")  # the answer differs by origin, for any cache that keeps it
        origin = request.headers.get("Origin")
        if origin is None or not (any_origin or origin in origins):
            return response
        headers = response.headers
        headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            headers["Access-Control-Max-Age"] = MAX_AGE
        else:
            headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response
