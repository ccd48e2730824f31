"""Errors as exception classes that carry their HTTP status, and the one handler that turns any
error into ``{"error": "<one clear sentence>", "code": "<machine_code>", "details": [...]}``.

The predictor raises these (or ``shared.errors`` ones) without knowing about HTTP; the views
let them propagate; ``register_error_handlers`` answers every failure, including Flask's own
(unknown route, wrong method, body too large), as JSON. Unexpected exceptions are logged with
the request id and answered with a 500 that carries no traceback.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import pydantic
from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from shared import errors as shared_errors
from shared.preprocess import json_type_name
from shared.text import counted, shortened

try:
    from gunicorn.http.errors import NoMoreData, ParseException
except ImportError:  # not running under Gunicorn
    NoMoreData = ParseException = None

log = logging.getLogger("scratchnet.service")


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: list | None = None, code: str | None = None,
                 headers: dict | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = headers or {}


class ClientWentAway(ConnectionError):
    """The client's connection was reset or closed while its request was read (service.worker's
    sockets raise it): the client's failure, never the server's."""


class BadRequest(ServiceError):
    """The request cannot be parsed: malformed JSON, base64, multipart or .npy."""
    status, code = 400, "bad_request"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str, **kwargs):
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="scratchnet admin"'}, **kwargs)


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class Conflict(ServiceError):
    """The request is valid but the registry's state does not allow it (pin a broken version)."""
    status, code = 409, "conflict"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(ServiceError):
    """Well-formed but unusable: wrong length, NaN, unknown field, top_k out of range."""
    status, code = 422, "invalid_input"


class RequestTimeout(ServiceError):
    """The client stopped sending its request (service/worker.py gives each read a time limit)."""
    status, code = 408, "request_timeout"


class NotImplementedHere(ServiceError):
    """A part of HTTP the service does not take, such as a transfer coding other than chunked."""
    status, code = 501, "not_implemented"


class NotReady(ServiceError):
    """No servable version (yet): the model is loading, or every version failed to load."""
    status, code = 503, "not_ready"


class ServerStopping(ServiceError):
    """The worker quit (Ctrl-C, SIGQUIT), or its graceful stop's wait ran out, while the request's body was arriving:
    the stop's fault, not the client's."""
    status, code = 503, "server_stopping"


BODY_TIMEOUT_MESSAGE = "The request body stopped arriving before its end; send it again."
SERVER_STOPPING_MESSAGE = ("The service stopped while the request body was arriving, and closed the connection; "
                           "send the request again.")
# A quitting worker (service.worker) shuts down the connections its threads hold, and first sets this attribute
# of each one's socket, the WSGI environ's ``gunicorn.socket``, to True: a body whose read then failed was cut
# off by the stop, not by the client. Under another WSGI server, or Flask's test client, no socket carries it.
SHUT_BY_STOP = "scratchnet_shut_by_stop"
# The codes of a body whose reading failed, which blame the client unless the stop shut its connection.
BODY_CUT_CODES = frozenset({"truncated_body", "malformed_body", "request_timeout"})


def access_advice(access: str) -> str:
    """What to do about a registry folder the service's user may not ``access`` ("read", "write"):
    the usual cause is a folder that another user owns (a registry written on the host, used in a
    container)."""
    return (f"give the service's user (uid {os.getuid()}) {access} access to it (with Docker: "
            "SCRATCHNET_UID and SCRATCHNET_GID, docs/docker.md)")


# shared.errors classes raised by preprocessing and loading -> HTTP status.
SHARED_STATUS = {
    shared_errors.InvalidInput: 422,
    shared_errors.UnsupportedImage: 415,
    shared_errors.ImageTooLarge: 413,
}

# Flask/werkzeug errors -> our codes (status codes are kept).
HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "request_timeout", 411: "length_required", 412: "precondition_failed",
    413: "payload_too_large", 415: "unsupported_media_type", 416: "range_not_satisfiable", 422: "invalid_input",
    429: "too_many_requests", 500: "internal_error", 501: "not_implemented", 503: "not_ready",
}
HTTP_MESSAGES = {
    404: "There is no such route: see GET /openapi.json for the API.",
    413: "The request body is larger than the limit of {limit}: {advice}.",
    416: "The Range asks for bytes past the end of the file; ask for a range within its {length:,} bytes.",
}


def byte_count(n: int) -> str:
    """``n`` bytes as a person reads a limit: "64 MiB (67,108,864 bytes)", "4,000,000 bytes"."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def send_less(mimetype: str) -> str:
    """What a client does about a body over the size limit, by what the body holds: pictures, or a batch."""
    if mimetype.startswith("image/") or mimetype == "multipart/form-data":
        return "send a smaller picture (fewer pixels, or saved as JPEG)"
    return "send fewer inputs in one request, splitting the batch across requests"


def fewer_vectors(settings, vector_length: int, noun: str = "vector") -> str:
    """What a client does about a batch of more numbers than one request may hold (``settings``: the service's
    limits): requests of as many vectors as both limits allow (V1 calls its vectors instances)."""
    most = max(1, min(settings.max_batch, settings.max_vector_values // vector_length))
    return f"split the batch into requests of at most {counted(most, noun)}"


def as_sentence(clause: str) -> str:
    """A message of shared/'s as the one sentence a client reads (SPEC section 5): shared/ words its errors as
    clauses ("the image is blank: ...") because the trainer prints them inside its own lines. The first letter is
    capitalised unless the message begins with a literal that keeps its case (``model.npz``, ``top_k``,
    ``instances[0]``, ``/models/...``, ``'x'``) or names a tensor as the request does (``input 'image' element 1``);
    a full stop closes it unless it ends as a sentence already."""
    text = clause.rstrip()
    if not text:
        return clause
    words = text.split(maxsplit=2)
    if starts_with_a_plain_word(words):
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else f"{text}."


def starts_with_a_plain_word(words: list[str]) -> bool:
    """Whether a message's first ``words`` begin it with a lower-case word of prose, not with a name or a literal."""
    first = words[0].rstrip(",;:")
    named = len(words) > 1 and words[1][:1] in "'\""  # input 'image': a tensor named as the request names it
    return first[:1].isalpha() and first.replace("-", "").replace("'", "").isalpha() and first.islower() and not named


def error_body(message: str, code: str, details: list | None = None) -> dict:
    return {"error": message, "code": code, "details": details or []}


def integer_in_words(value: int) -> str:
    """A large integer as a person reads it: 1e+23 (it came in as 99999999999999991611392), or its number
    of digits when it is beyond a float's range (a JSON integer of 400 digits)."""
    try:
        return f"{value:.3g}"
    except OverflowError:
        return f"{'a negative' if value < 0 else 'an'} integer of {len(str(abs(value)))} digits"


# A JSON schema's types as a message names what to send.
JSON_KINDS = {"integer": "an integer such as 3", "number": "a number", "string": "a string", "boolean": "true or false",
              "array": "a list ([...])", "object": "a JSON object"}


def _schema_node(root: dict, node: dict) -> dict:
    """``node`` of the JSON schema ``root`` with its reference followed and a null alternative dropped."""
    if "$ref" in node:
        return _schema_node(root, root.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[-1], {}))
    options = [option for option in node.get("anyOf", []) if option.get("type") != "null"]
    return _schema_node(root, options[0]) if len(options) == 1 else node


def schema_at(root: dict, loc) -> dict:
    """What the JSON schema ``root`` says of the value at ``loc`` (pydantic's path: names and list positions);
    empty where it does not say."""
    node = root
    for part in loc:
        node = _schema_node(root, node)
        node = node.get("items") if isinstance(part, int) else node.get("properties", {}).get(part)
        if not isinstance(node, dict):
            return {}
    return _schema_node(root, node)


@functools.cache
def json_schema(schema: type[pydantic.BaseModel]) -> dict:
    """``schema``'s JSON schema, built once: pydantic builds it anew on each call (0.2-0.3 ms), and every
    refused request reads it."""
    return schema.model_json_schema()


def pydantic_details(error: pydantic.ValidationError, schema: type[pydantic.BaseModel] | None = None) -> list[dict]:
    """Each problem as ``{"field": "top_k", "message": "..."}``, without pydantic's URLs. ``schema``: the model
    validated, whose JSON schema names the fields an unknown one sits among (``{"image": ...}`` meant ``images``)
    and what a missing one takes."""
    root = json_schema(schema) if schema is not None else {}
    details = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        if item["type"] == "extra_forbidden" and (fields := schema_at(root, item["loc"][:-1]).get("properties")):
            message = f"unknown field; the fields are {', '.join(fields)}"
        elif item["type"] == "extra_forbidden":
            message = "unknown field; remove it"
        elif item["type"] == "missing":  # "Field required"
            kind = JSON_KINDS.get(schema_at(root, item["loc"]).get("type"))
            message = f"missing; add it, as {kind}" if kind else "missing; add it"
        elif item["type"] in ("model_type", "dict_type"):  # "... instance of InferRequest", "a valid dictionary"
            message = f"must be a JSON object, not {json_type_name(item['input'])}"
        elif item["type"] in ("bool_type", "bool_parsing"):  # "Input should be a valid boolean"
            message = f"must be true or false, not {json_type_name(item['input'])}"
        elif item["type"] in ("list_type", "string_type"):  # "Input should be a valid list": of what, then?
            wanted = "a list ([...])" if item["type"] == "list_type" else "a string"
            message = f"must be {wanted}, not {json_type_name(item['input'])}"
        elif item["type"] == "too_short" and isinstance(item["input"], list):  # "... after validation, not 0"
            least = item["ctx"]["min_length"]
            message = f"must hold at least {counted(least, 'item')}, not {len(item['input'])}"
        elif item["type"] in ("int_type", "int_parsing", "int_from_float"):  # "Input should be a valid integer"
            value = item["input"]
            given = repr(value) if type(value) is float else json_type_name(value)
            if type(value) is float and math.isfinite(value) and value.is_integer() and abs(value) >= 2 ** 64:
                given = f"a number this large ({value:.3g})"  # the JSON parser keeps whole numbers past 64 bits as floats
            message = f"must be an integer such as 3, not {given}"
        elif item["type"] in ("less_than_equal", "greater_than_equal") and isinstance(item["input"], int):
            value = item["input"]
            given = str(value) if abs(value) < 10 ** 6 else integer_in_words(value)
            bound = (f"at most {item['ctx']['le']}" if item["type"] == "less_than_equal"
                     else f"at least {item['ctx']['ge']}")
            message = f"must be {bound}, not {given}"
        else:
            message = item["msg"].removeprefix("Value error, ")
        details.append({"field": field, "message": message})
    return details


def describe_validation_error(error: pydantic.ValidationError, what: str = "the request",
                              schema: type[pydantic.BaseModel] | None = None) -> InvalidInput:
    details = pydantic_details(error, schema)
    first = details[0]
    others = len(details) - 1
    more = f" (and {counted(others, 'more problem')})" if others else ""
    where = f"In {what}, {first['field']}" if first["field"] != "body" else f"In {what}"
    return InvalidInput(f"{where}: {first['message']}{more}.", details=details)


def _respond(status: int, message: str, code: str, details=None, headers=None):
    body = error_body(message, code, details)
    shape = g.get("error_shape")  # set by the standard protocols' routes: their clients' error style
    if shape is not None:
        status, body = shape(status, body)
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    g.error_code = code
    return response


def error_response(error: ServiceError):
    """The JSON answer of ``error``: the one handler's, and that of a failure found after a view answered."""
    return _respond(error.status, error.message, error.code, error.details, error.headers)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Exception)  # werkzeug's HTTP errors included
    def answer_error(error: Exception):
        problem = as_service_error(error, app)
        if problem.code in BODY_CUT_CODES and getattr(request.environ.get("gunicorn.socket"), SHUT_BY_STOP, False):
            problem = ServerStopping(SERVER_STOPPING_MESSAGE)
        return error_response(problem)


def as_service_error(error: Exception, app: Flask) -> ServiceError:
    """Any failure of a request as the ServiceError it is answered with: the service's own as they
    are; shared/'s (the image decoder's, the vector checks', the model file's) made sentences; Gunicorn's
    chunked-body errors, a client's timeout, pydantic's and werkzeug's in the service's words (a client that
    goes away mid-body is its 400, not a server fault); anything else, a ConnectionError of the server's own
    included, an internal error, logged with the request id."""
    if isinstance(error, ServiceError):
        return error
    if isinstance(error, shared_errors.ScratchnetError):
        status = next((s for cls, s in SHARED_STATUS.items() if isinstance(error, cls)), None)
        if status is None:  # a model file error reaching a view is a server-side problem
            log.error("model file error while serving: %s", error, extra={"request_id": g.get("request_id")})
            status = 503
        return ServiceError(as_sentence(error.message), details=error.details, code=error.code, status=status)
    # Gunicorn parses a chunked body as the view reads it (read_body, or werkzeug's form parser),
    # and raises these from wsgi.input for a malformed chunk or a body cut off before its end.
    if NoMoreData is not None and isinstance(error, NoMoreData):
        return BadRequest("The body ended before its last chunk.", code="truncated_body")
    if ParseException is not None and isinstance(error, ParseException):
        return BadRequest(f"The chunked body is malformed or cut off: {error}.", code="malformed_body")
    if isinstance(error, TimeoutError):
        return RequestTimeout(BODY_TIMEOUT_MESSAGE)
    if isinstance(error, ClientWentAway):
        return BadRequest("The connection was closed before the body's end arrived; send it again.",
                          code="truncated_body")
    if isinstance(error, pydantic.ValidationError):
        return describe_validation_error(error)
    if isinstance(error, HTTPException):
        return _http_error(error, app)
    # The request's fields, as its access line has them: filtered by model or route, the traceback comes too.
    log.exception("unexpected error", extra={"request_id": g.get("request_id"), "method": request.method,
                                             "path": request.path, "route": g.get("route"), "model": g.get("model"),
                                             "version": g.get("version")})
    return ServiceError("Internal server error; the request id in X-Request-ID identifies it in the logs.")


def _http_error(error: HTTPException, app: Flask) -> ServiceError:
    """Flask's and werkzeug's errors (no route, wrong method, body too large), their status kept."""
    status = error.code or 500
    message = HTTP_MESSAGES.get(status, error.description or error.name)
    if status == 413:
        message = message.format(limit=byte_count(app.config.get("MAX_CONTENT_LENGTH")),
                                 advice=send_less(request.mimetype))
    headers = {}
    if status == 404 and (route := _route_without_trailing_slash(app)):
        message = f"There is no such route; without the trailing slash, {route} is one."
    if status == 416 and getattr(error, "length", None) is not None:
        headers["Content-Range"] = f"bytes */{error.length}"  # RFC 9110 section 15.5.17: the file's length
        message = message.format(length=error.length)
    if status == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
        usable = sorted(set(error.valid_methods) - {"HEAD", "OPTIONS"}) or sorted(error.valid_methods)
        message = f"Method {request.method} is not allowed here; use {' or '.join(usable)}."
    return ServiceError(message, code=HTTP_CODES.get(status, "http_error"), status=status, headers=headers)


def _route_without_trailing_slash(app: Flask) -> str | None:
    """The request's path without its trailing slash, when that path is a route of the app."""
    path = request.path
    if len(path) < 2 or not path.endswith("/"):
        return None
    try:
        app.url_map.bind_to_environ(request.environ).match(path.rstrip("/"), method=request.method)
    except HTTPException as refused:
        if refused.code != 405:  # a route, under other methods, is still the route meant
            return None
    return shortened(request.script_root + path.rstrip("/"), 120)  # as the client addresses it behind a prefix


def precondition_failed(response) -> ServiceError:
    """The 412 of a file (the drawing page, a static file) whose condition failed, as JSON: werkzeug
    sets the status but leaves the file's whole content as the body."""
    if request.if_match:
        told = f"If-Match names none of its current ETags ({response.headers.get('ETag', 'none')})"
    else:
        told = f"it was modified since If-Unmodified-Since (last modified {response.headers.get('Last-Modified')})"
    return ServiceError(f"The file has changed: {told}; fetch it again without the condition.",
                        code="precondition_failed", status=412)
