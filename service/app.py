"""The application factory: ``create_app(config=None)`` builds one app with its own settings,
model store, predictor and metrics. Run it with Gunicorn::

    gunicorn -c service/gunicorn_conf.py "service.app:create_app()"

Every request gets an id (``X-Request-ID`` from the client when it is sane, else a new one),
echoed in the response together with ``X-Worker-PID``, and one access-log line. A response
from a model version, an error included, names it in ``X-Model-Name`` and ``X-Model-Version``.
Every response says ``X-Content-Type-Options: nosniff``, and the two pages (``/`` and ``/docs``)
carry a Content-Security-Policy that allows only what they load.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import os
import re
import time
import uuid
from urllib.parse import unquote

from flask import Flask, g, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import parse_range_header

from shared.registry import Registry
from shared.text import shortened

from . import api, cors, ops, protocols
from .budget import LargeParses
from .config import load_settings
from .context import EXTENSION, Service
from .errors import BadRequest, ServerStopping, error_response, precondition_failed, register_error_handlers
from .logs import access_logged, configure_logging, log_access, logfmt_value, without_surrogates
from .metrics import Metrics
from .predictor import Predictor
from .store import ModelStore

# The drawing page runs only its own script and style sheet and asks only this service; a picture
# given to it is shown from a blob: URL, and its icon is an empty data: URL.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src data: blob:; connect-src 'self'; "
               "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


def _inline_styles_policy(page: str) -> str:
    """A policy for a page that loads nothing and has only inline ``<style>`` blocks: each allowed by its hash."""
    sources = " ".join("'sha256-%s'" % base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
                       for css in re.findall(r"<style>(.*?)</style>", page, re.S))
    return f"default-src 'none'; style-src {sources}; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"


CONTENT_POLICIES = {"ops.index": PAGE_POLICY, "ops.docs": _inline_styles_policy(ops.DOCS_PAGE)}
REQUEST_ID_TEXT = r"[A-Za-z0-9._:-]{1,128}"  # a client's X-Request-ID that is taken as it is
REQUEST_ID = re.compile(rf"^{REQUEST_ID_TEXT}\Z")
UNMATCHED = "<unmatched>"  # the route label of a request no route matched
# The routes that decode a compressed body (read_body(compressed=True)): their 501 for a transfer
# coding says to send Content-Encoding instead.
DECODING_ENDPOINTS = frozenset({"v1.predict", "v1.classify_or_regress", "v2.infer"})
# In a request's environ: called with the bytes sent when the client does not take the answer
# whole (service.worker.WatchedAnswer), to log and count it with the request's id and route, and
# with whether the worker's quick stop shut the connection instead (service.errors.SHUT_BY_STOP).
ANSWER_CUT = "scratchnet.answer_cut"
CONVERTER = re.compile(r"<[^<>:]*(?:\([^)]*\))?:")  # "<segment:" of <segment:name>, "<any(a, b):" of <any(a, b):verb>
log = logging.getLogger("scratchnet.service")


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, keys in the order written, and with a path that is not UTF-8 shown as text
    (``lat\\xe9n``) rather than as a lone surrogate escape (``lat\\udce9n``), which strict JSON
    parsers refuse. The text is built twice only when it holds a ``\\ud`` escape at all."""
    sort_keys = False

    def dumps(self, obj, **kwargs) -> str:
        text = super().dumps(obj, **kwargs)
        return super().dumps(without_surrogates(obj), **kwargs) if "\\ud" in text else text


class App(Flask):
    def make_default_options_response(self):
        """An OPTIONS request answered 204 with the route's methods in ``Allow`` and nothing else:
        Flask's own answer was an empty 200 labelled text/html, which looks like a page."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def create_app(config: dict | None = None) -> Flask:
    """Build the app. ``config`` overrides settings by their lower-case names (see service.config)."""
    settings = load_settings(config)
    configure_logging(settings.log_format, settings.log_level)
    app = App(__name__, static_folder="static", template_folder="templates")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.url_map.merge_slashes = False  # /models//mnist is no route (404), not a redirect with an HTML body
    app.json = JSONProvider(app)

    registry = Registry(settings.registry)
    metrics = Metrics()
    store = ModelStore(registry, models=settings.models, poll_interval=settings.poll_interval,
                       cached_versions=settings.cached_versions, max_model_bytes=settings.max_model_bytes,
                       events=metrics)
    store.refresh(validate_all=False)  # ready to serve before the first request
    if settings.watch:
        store.start()
    # Gunicorn's workers share the metrics folder, which holds their turns at large JSON parses and decodes.
    large_parses = LargeParses(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    predictor = Predictor(store, settings, before_decode=api.hold_for_decode)
    app.extensions[EXTENSION] = Service(settings, registry, store, predictor, metrics, large_parses)

    register_error_handlers(app)
    cors.init_app(app, settings.cors_origins)  # before the request hooks: its headers go on their final answer
    _register_request_hooks(app)
    app.register_blueprint(api.predict_bp)
    app.register_blueprint(api.models_bp)
    ops.init_app(app)
    protocols.init_app(app)
    log.info("service started: registry %s, models %s", settings.registry,
             ", ".join(store.names()) or "none")
    if misplaced := store.misplaced_registry():
        log.warning("%s", misplaced)
    # A misspelt name would otherwise show only as 404s; a registry that cannot be read has
    # already been reported, and its models are unknown, not missing.
    if settings.models is not None and settings.default_model not in settings.models:
        log.warning("the default model %r (SCRATCHNET_DEFAULT_MODEL) is not one of the models served "
                    "(SCRATCHNET_MODELS: %s); POST /predict answers 404: add it to SCRATCHNET_MODELS or choose "
                    "one of those", settings.default_model, ", ".join(settings.models))
    elif settings.default_model not in store.names() and store.registry_error is None:
        log.warning("the default model %r (SCRATCHNET_DEFAULT_MODEL) is not in the registry; POST /predict "
                    "answers 404 until it is", settings.default_model)
    return app


def _route(app: Flask, req) -> str:
    """The route label of a request's metrics and access line."""
    return route_template(req.url_rule.rule) if req.url_rule is not None else _unmatched_route(app, req)


def _unmatched_route(app: Flask, req) -> str:
    """The route template of a request that matched no route: for a 405 the template its path
    matched under another method (so the route's own series count it), else UNMATCHED,
    which keeps unknown paths from growing the metrics' series."""
    if isinstance(req.routing_exception, MethodNotAllowed) and req.routing_exception.valid_methods:
        adapter = app.url_map.bind_to_environ(req.environ)
        with contextlib.suppress(HTTPException):
            rule, _ = adapter.match(method=req.routing_exception.valid_methods[0], return_rule=True)
            return route_template(rule.rule)
    return UNMATCHED


@functools.lru_cache(maxsize=None)  # one entry per route of the app
def route_template(rule: str) -> str:
    """A route as metrics and logs name it: its variables without their converters, so that
    ``/v1/models/<segment:name>:predict`` reads ``/v1/models/<name>:predict`` as the native
    ``/models/<name>/predict`` does."""
    return CONVERTER.sub("<", rule)


def _register_request_hooks(app: Flask) -> None:
    svc: Service = app.extensions[EXTENSION]

    # The begin, finish and end hooks run on every request: each reads the request and ``g`` through Flask's context
    # proxies once, into locals.
    @app.before_request
    def begin():
        state, req = g._get_current_object(), request._get_current_object()
        environ = req.environ
        state.started = time.perf_counter()
        state.route = _route(app, req)
        state.in_flight = svc.metrics.request_started(state.route)
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        state.request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        _check_host(environ)
        if "HTTP_RANGE" in environ and not _one_byte_range(environ["HTTP_RANGE"]):
            # werkzeug refuses several ranges, or a Range it cannot read, with a 416; a server may
            # ignore them and answer with the whole file (RFC 9110 section 14.2), as browsers expect.
            del environ["HTTP_RANGE"]
        if svc.settings.watch:
            svc.store.start()  # a no-op unless this process was forked after create_app
        if "HTTP_TRANSFER_ENCODING" in environ:  # on every route, those that read no body too
            api.refuse_transfer_codings(compressed=req.endpoint in DECODING_ENDPOINTS)
        if req.method == "OPTIONS" and environ.get("RAW_URI", environ.get("REQUEST_URI")) == "*":
            return _options_for_the_server(app)

    @app.teardown_request
    def end(_error):
        # A teardown runs however the request ended: an answer, an error, an exception no handler took.
        state = g._get_current_object()
        try:
            if "in_flight" in state:
                state.pop("in_flight").dec()
        finally:
            if "large_turn" in state:  # service.api.hold_for_json, hold_for_decode
                svc.large_parses.end_turn(state.pop("large_turn"))

    @app.after_request
    def finish(response):
        now = time.perf_counter()
        # g.get, not getattr: an attribute a request did not set (error_code, on every answer but an error)
        # raised and caught an AttributeError.
        state, req = g._get_current_object(), request._get_current_object()
        if response.status_code in (200, 206, 304, 412) and _precondition_failed(req, response):
            problem = precondition_failed(response)
            response.close()  # the file it would have sent
            response = error_response(problem)
        seconds = now - state.get("started", now)
        request_id = state.get("request_id") or uuid.uuid4().hex
        status = response.status_code
        model, version = state.get("model"), state.get("version")
        response.headers.extend(_own_headers(response, req.endpoint, request_id, model, version))
        if status >= 400 and model is not None and state.get("inference", False):
            svc.metrics.observe_failed_prediction(model, version, seconds)
        route = state.get("route") or _route(app, req)
        # the model the URL names when no version of it answered (admin, reports, a 404); /predict's, the default one
        named = model if model is not None else (req.view_args or {}).get("name")
        if named is None and route == "/predict":
            named = svc.settings.default_model
        code = state.get("error_code")
        _record(svc, req.method, req.path, route, status, seconds, code, request_id, named, version,
                remote_addr=req.environ.get("REMOTE_ADDR"))
        req.environ[ANSWER_CUT] = functools.partial(_answer_cut, svc, request_id, req.method, req.path, route, status,
                                                    code)
        return response


def _own_headers(response, endpoint: str | None, request_id: str, model: str | None,
                 version: int | None) -> list[tuple[str, str]]:
    """The headers the service adds to every answer. No answer carries them before (files carry their own
    Cache-Control), so they are added at the end in one go rather than set one by one, each a search of the
    headers for one to replace."""
    own = [("X-Request-ID", request_id), ("X-Worker-PID", str(os.getpid())), ("X-Content-Type-Options", "nosniff")]
    if "Cache-Control" not in response.headers:  # files say their own; the rest change with every swap
        own.append(("Cache-Control", "no-store"))
    if endpoint in CONTENT_POLICIES:
        own.append(("Content-Security-Policy", CONTENT_POLICIES[endpoint]))
    if model is not None:  # the version the request resolved, whether it answered or refused
        own += [("X-Model-Name", model), ("X-Model-Version", str(version))]
    return own


def _options_for_the_server(app: Flask):
    """RFC 9110 section 9.3.7: ``OPTIONS *`` asks about the server, not a resource, and is answered with the
    methods the server takes. (Gunicorn passes the path ``*``, which no route can match; werkzeug reads it as
    ``/*``, a path too: the request line's own target tells them apart.)"""
    response = app.response_class(status=204)
    del response.headers["Content-Type"]
    response.allow.update(server_methods(app))
    return response


@functools.lru_cache(maxsize=None)  # one entry per app, whose routes are all added by create_app
def server_methods(app: Flask) -> tuple[str, ...]:
    """Every method some route of ``app`` takes."""
    return tuple(sorted({method for rule in app.url_map.iter_rules() for method in rule.methods or ()}))


def _check_host(environ: dict) -> None:
    """RFC 9112 section 3.2: a server must answer 400 to an HTTP/1.1 request without a Host header
    (Gunicorn itself refuses one with two)."""
    if "HTTP_HOST" not in environ and environ.get("SERVER_PROTOCOL") == "HTTP/1.1":
        raise BadRequest("An HTTP/1.1 request must carry a Host header: add 'Host: <host>:<port>', the address "
                         "the request is sent to.", code="missing_host")


def _one_byte_range(value: str) -> bool:
    """Whether a Range header asks for one range of bytes, the only kind served."""
    asked = parse_range_header(value)
    return asked is not None and asked.units == "bytes" and len(asked.ranges) == 1


def _precondition_failed(req, response) -> bool:
    """Whether a file's answer must be a 412 (RFC 9110 section 13.2.2): werkzeug's own (If-Match),
    or one werkzeug misses, since it reads a range, or If-None-Match, before these conditions:
    If-Match on a part of the file (206), and If-Unmodified-Since, which it leaves unchecked."""
    if response.status_code == 412:
        return True
    environ = req.environ
    if "HTTP_IF_MATCH" not in environ and "HTTP_IF_UNMODIFIED_SINCE" not in environ:
        return False
    etag = response.get_etag()[0]
    if etag is None:  # not a file: the API's answers carry no validators
        return False
    if "HTTP_IF_MATCH" in environ:  # it decides alone when given (section 13.1.4)
        return not req.if_match.contains(etag)
    since, modified = req.if_unmodified_since, response.last_modified
    return since is not None and modified is not None and modified > since


def record_unrouted(app: Flask, method: str | None, path: str | None, status: int, code: str,
                    seconds: float, request_id: str, *, routed: bool = False, timed: bool = True,
                    client=None) -> None:
    """Count and log a request that Gunicorn answered itself, before the app saw it (a request
    line or headers over its limits, a malformed request): the same access line and metrics as
    any other request, under the route ``<unmatched>``, with the request id its answer gave.
    ``routed``: its request line and headers were sound (its body stopped arriving), so it counts
    under the route they match, naming the model (``/predict``'s, the default one). ``timed``: its
    ``seconds`` go into the latency histogram, whose span is a thread's work on a request. ``client``:
    the connection's peer address as Gunicorn gives it. Another app run under this Gunicorn
    configuration (bench/floor_app.py) is left alone."""
    svc = getattr(app, "extensions", {}).get(EXTENSION)
    if svc is not None:
        route, model = _route_of(app, method, path) if routed else (UNMATCHED, None)
        if route == "/predict":
            model = svc.settings.default_model
        remote_addr = str(client[0]) if isinstance(client, (tuple, list)) and client else None  # None: a unix socket
        _record(svc, method, path, route, status, seconds, code, request_id, model, timed=timed,
                remote_addr=remote_addr)


def _route_of(app: Flask, method: str | None, path: str | None) -> tuple[str, str | None]:
    """The route template a request line's method and path match, and the model the path names;
    UNMATCHED and None when they match none (or are unknown)."""
    if not method or not path:
        return UNMATCHED, None
    try:
        rule, values = app.url_map.bind("localhost").match(unquote(path.partition("?")[0]), method,
                                                            return_rule=True)
    except HTTPException:  # no such route, another method's, or a redirect
        return UNMATCHED, None
    return route_template(rule.rule), values.get("name")


def _answer_cut(svc: Service, request_id: str, method: str, path: str, route: str, status: int, code: str | None,
                sent: int, stopped: bool = False) -> None:
    """The client of a request logged as answered took ``sent`` bytes of the answer and no more: it
    closed the connection, or read nothing of it for SCRATCHNET_CLIENT_TIMEOUT. ``stopped``: the
    worker's quick stop (Ctrl-C, SIGQUIT) shut the connection instead, which is no fault of the
    client's and not counted as one; a request the stop cut off before its answer (503
    ``server_stopping``) has said so in its access line."""
    if stopped:
        if code != ServerStopping.code:
            log.warning("the service stopped and closed the connection after %s bytes of the answer to request %s "
                        "(%s %s, %d)", f"{sent:,}", request_id, method, shortened(logfmt_value(path), 120), status,
                        extra={"request_id": request_id, "route": route, "status": status, "bytes_sent": sent})
        return
    svc.metrics.answer_cut(route)
    log.info("the client took %s bytes of the answer to request %s (%s %s, %d) and no more: connection closed",
             f"{sent:,}", request_id, method, shortened(logfmt_value(path), 120), status,
             extra={"request_id": request_id, "route": route, "status": status, "bytes_sent": sent})


def _record(svc: Service, method: str | None, path: str | None, route: str, status: int, seconds: float,
            code: str | None, request_id: str, model: str | None = None, version: int | None = None, *,
            timed: bool = True, remote_addr: str | None = None) -> None:
    """One request's metrics and access line; the method and path are None when unknown, and so is
    ``remote_addr``, the client's address (a unix socket's peer has none)."""
    # The model labels only the errors' series (service.metrics), and only a model the registry holds.
    known_model = model if code and model is not None and svc.store.knows(model) else ""
    svc.metrics.observe_request(method or "", route, status, seconds if timed else None, code, known_model)
    if not access_logged(status):
        return
    log_access(f"{method or '-'} {logfmt_value(path) if path is not None else '-'} {status} {seconds * 1000:.1f}ms",
               {"request_id": request_id, "remote_addr": remote_addr or None, "method": method, "path": path,
                "route": route, "model": model,
                "version": version, "status": status, "latency_ms": round(seconds * 1000, 2), "code": code})
