"""The native HTTP API (SPEC §5): thin views over ``Predictor`` and ``ModelStore``.

Blueprints: ``predict`` (the four prediction routes), ``models`` (model and version reports,
and the admin routes that pin, roll back and label versions).

Admin routes need ``Authorization: Bearer <SCRATCHNET_ADMIN_TOKEN>``: no or malformed header
-> 401, wrong token -> 403, and when no token is configured the admin API is disabled: 403
with code ``admin_disabled``. They write ``serving.json`` (atomically, under a file lock so
concurrent admin calls on different workers do not lose each other's change, and check the
version they name under that lock too: see ``current_store``); every worker's watcher then
converges on it, and the worker that handled the call refreshes at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hmac
import json
import os
import time
from pathlib import Path
from typing import Callable

import orjson
import pydantic
from flask import Blueprint, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import get_content_length

from shared.errors import UnsupportedImage
from shared.forward import Model
from shared.preprocess import FLOAT32_MAX, format_by_signature
from shared.registry import SERVING_FILE, VERSION_PATTERN, RegistryError, check_name

from .budget import is_large
from .context import service
from .errors import (BadRequest, Conflict, Forbidden, InvalidInput, NotFound, NotImplementedHere, NotReady,
                     PayloadTooLarge, Unauthorized, UnsupportedMediaType, access_advice, as_service_error,
                     describe_validation_error, error_response, fewer_vectors)
from .fastbody import numpy_buffer, read_from_socket
from .inputs import decode_base64_image, read_form, read_npy
from .schemas import LabelRequest, PredictQuery, PredictRequest
from .store import ModelStore, dangling_label

predict_bp = Blueprint("predict", __name__)
models_bp = Blueprint("models", __name__)

NPY_MAGIC = b"\x93NUMPY"
NO_QUERY = PredictQuery()
ACCEPTED_TYPES = "image/*, multipart/form-data, application/json or application/x-npy"


# helpers --------------------------------------------------------------------------------------


def validate(schema: type[pydantic.BaseModel], data, what: str):
    try:
        return schema.model_validate(data)
    except pydantic.ValidationError as e:
        raise describe_validation_error(e, what, schema) from None


def in_digits(text: str) -> bool:
    """Whether ``text`` is ASCII digits alone: a number, though not always a version (0, 01, ten digits).
    str.isdigit alone also takes '²' and '١', which int() refuses or reads as another number."""
    return text.isascii() and text.isdigit()


def version_number(text: str) -> int:
    """A version from the URL: a positive integer (VERSION_PATTERN), else 404 (there is no such version).
    Leading zeros are read past, as Triton and TF Serving read a URL's version: ``01`` is version 1."""
    number = text.lstrip("0") if in_digits(text) else text
    if VERSION_PATTERN.match(number):
        return int(number)
    if in_digits(number):
        raise NotFound(f"Version {text} does not exist: version numbers have at most 9 digits.",
                       code="version_not_found")
    raise NotFound(f"Version {text!r} does not exist: versions are positive integers.", code="version_not_found")


def resolve(name: str | None, version: int | None = None, label: str | None = None) -> Model:
    """The model a request names (the default model for ``name`` None), recorded in ``g`` for the
    access log and metrics."""
    model = service().predictor.resolve(name, version=version, label=label)
    state = g._get_current_object()  # one look through Flask's proxy, not one per attribute
    state.model, state.version = model.name, model.version
    return model


def resolve_from_url(name: str, version: str | None = None, label: str | None = None) -> Model:
    """:func:`resolve` for a protocol route, whose ``version`` is the URL's text."""
    return resolve(name, None if version is None else version_number(version), label)


@contextlib.contextmanager
def not_found_in_words(words: dict[str, str]):
    """Refuse a missing model or version in a protocol's own words, which its clients and their users
    look for: a NotFound whose code ``words`` names is raised again as ``words[code]`` followed by
    the service's sentence, which says what there is to ask for instead; any other as it is."""
    try:
        yield
    except NotFound as e:
        if e.code not in words:
            raise
        raise NotFound(f"{words[e.code]}. {e.message}", code=e.code) from None


def query_params() -> dict:
    """The query string as a dict; a repeated parameter is refused (422)."""
    params = {}
    for key, values in request.args.lists():
        if len(values) > 1:
            raise InvalidInput(f"The query parameter {key} is given {len(values)} times; give it once.",
                               details=[{"field": key, "message": "repeated"}])
        params[key] = values[0]
    return params


def refuse_compressed_body() -> None:
    """415 for a body with a Content-Encoding: only the V1 predict and V2 infer routes decode one."""
    encoding = (request.environ.get("HTTP_CONTENT_ENCODING") or "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding} is not supported here; send the body uncompressed.",
                                   code="unsupported_encoding", headers={"Accept-Encoding": "identity"})


def refuse_transfer_codings(compressed: bool) -> None:
    """501 for a body sent with a transfer coding besides chunked (``gzip, chunked``): Gunicorn takes
    the chunks apart but leaves the gzip on, and those bytes were read as the body itself. Called
    before every route (service.app), ``compressed`` for those that decode a Content-Encoding."""
    codings = [c.strip().lower() for c in request.headers.get("Transfer-Encoding", "").split(",") if c.strip()]
    if others := [c for c in codings if c != "chunked"]:
        instead = ("to send the body compressed, say Content-Encoding: gzip (or deflate) instead" if compressed
                   else "send the body uncompressed")
        raise NotImplementedHere(f"Transfer-Encoding {', '.join(others)} is not supported, only chunked; {instead}.",
                                 code="unsupported_transfer_coding")


def read_body(*, compressed: bool = False, array: bool = False) -> bytes | bytearray | memoryview:
    """The whole body, within MAX_CONTENT_LENGTH (413 beyond it, chunked bodies included).
    ``compressed``: the body may be compressed and the caller decodes its Content-Encoding;
    otherwise a Content-Encoding is refused (415). (A transfer coding other than chunked was refused,
    501, before the route: ``refuse_transfer_codings``.) ``array``: the caller reads the body only as
    a buffer (``np.frombuffer``), so a large one may come as a memoryview of NumPy's memory, which
    is faster to fill (``fastbody.numpy_buffer``)."""
    if not compressed:
        refuse_compressed_body()
    environ = request.environ
    # As request.content_length reads it (None for a chunked body), without looking for a Transfer-Encoding
    # header through werkzeug's headers view, whose miss raised and caught a KeyError on nearly every request.
    length = get_content_length(environ)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    source = environ["wsgi.input"]
    if length is None:
        # Chunked: read until the end, one byte past the limit at most. (werkzeug's stream
        # would stop at the limit without saying that more was sent.) Without a length, only
        # a server that marks the end of the body lets us read it at all.
        if not environ.get("wsgi.input_terminated"):
            return b""
        parts, total = [], 0
        while part := source.read(1 << 20 if limit is None else min(1 << 20, limit + 1 - total)):
            parts.append(part)
            total += len(part)
            if limit is not None and total > limit:
                raise RequestEntityTooLarge()
        return b"".join(parts)
    if limit is not None and length > limit:
        raise RequestEntityTooLarge()
    try:
        fast = read_from_socket(environ, length, numpy_buffer if array else bytearray)
    except MemoryError:  # a body limit set above this machine's memory: the client's fault as much as a 413
        raise PayloadTooLarge(f"The body of {length:,} bytes is more than this server can hold in memory; send it "
                              "in smaller requests.") from None
    if fast is not None:
        if len(fast) < length:
            raise BadRequest(f"The body ended after {len(fast)} of the {length} bytes announced.", code="truncated_body")
        return fast
    # A known length is read from the server's input in large reads: werkzeug's stream reads
    # 64 KiB at a time and copies several times, which costs ~5x more on a 30 MB batch.
    parts = []
    received = 0
    while received < length:
        part = source.read(length - received)
        if not part:
            raise BadRequest(f"The body ended after {received} of the {length} bytes announced.", code="truncated_body")
        parts.append(part)
        received += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def json_integer(text: str) -> int:
    """A JSON integer; one with more digits than int() converts (4300) is refused as too large."""
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"The JSON body holds a number too large to use, an integer of {len(text)} digits; send "
                           f"values within float32's range (±{FLOAT32_MAX:.3g}).") from None


def parse_json(body: bytes, example: str = '{"inputs": [...]}'):
    """The JSON body; ``example`` is the object an empty body is told to send."""
    if not body:
        raise BadRequest(f"The body is empty; send a JSON object such as {example}.", code="empty_body")
    try:
        return orjson.loads(body)  # ~8x faster than json on a vector of numbers
    except orjson.JSONDecodeError:
        # What orjson refuses (NaN, integers beyond a double's range, deep nesting) gets the standard
        # parser's answer. (Integers beyond 64 bits within a double's range come back as floats.)
        pass
    try:
        return json.loads(body, parse_int=json_integer)
    except RecursionError:
        raise BadRequest("The JSON body is nested too deeply to parse (arrays or objects over about 1000 levels "
                         "deep).", code="malformed_json") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"The body is not valid JSON: {e}{raw_control_advice(e)}.", code="malformed_json") from None


RAW_CONTROL = "which JSON takes only escaped"  # in the message of a string holding a raw control character
RAW_CONTROLS = {"\n": ("line break", "\\n"), "\r": ("carriage return", "\\r"), "\t": ("tab", "\\t")}


def raw_control_advice(error: Exception) -> str:
    """What to do about a JSON string holding a raw line break (or other control character): most often base64
    as ``base64`` writes it, in lines of 76, pasted into a string (``"$(base64 digit.png)"``)."""
    if not (isinstance(error, json.JSONDecodeError) and error.msg.startswith("Invalid control character")):
        return ""
    char = error.doc[error.pos]
    name, escape = RAW_CONTROLS.get(char, (f"control character U+{ord(char):04X}", f"\\u{ord(char):04x}"))
    advice = f": a string holds a raw {name}, {RAW_CONTROL} ({escape})"
    if char in "\r\n":
        advice += "; write base64 on one line (base64 -w0 digit.png, or Python's base64.b64encode)"
    return advice


def other_protocols_body(payload, model: str, here: str) -> str | None:
    """What ``payload`` is when it is the body of another of the service's APIs than ``here`` (``native``,
    ``v1``, ``v2``), and where to send it; None when it looks like none of them. A client that moves between the
    APIs sends one's body to another's route, which refused it by a field it did not know."""
    if not isinstance(payload, dict):
        return None
    inputs = payload.get("inputs")
    if here != "v2" and isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) \
            and {"datatype", "shape"} & set(inputs[0]):
        return f"a KServe V2 inference request (named tensors): POST it to /v2/models/{model}/infer"
    if here != "v1" and "instances" in payload:
        return f"a TF Serving predict request ('instances'): POST it to /v1/models/{model}:predict"
    if here != "native" and "images" in payload:
        return f"a request of the native API ('images'): POST it to /models/{model}/predict"
    return None


STRUCTURE_COMMAS = 8  # the most commas a protocol request's structure adds per instance or tensor, beside its numbers
# Arrays and objects a request's data needs per value, at most: a [28][28][1] pixel array, as TF Serving's clients
# send an image, has 1.04. Each costs as much memory as two numbers, or more, and holds no comma when nested alone.
CONTAINERS_PER_VALUE = 1.25
FREE_CONTAINERS = 200_000  # ~13 MB of empty lists: a body nested too deeply for the parser is told so by it


def hold_for_json(numbers: int) -> None:
    """Before a JSON body of ``numbers`` values is parsed: see _hold_large_turn."""
    _hold_large_turn(numbers, service().settings.max_vector_values)


def hold_for_decode(pixels: int) -> None:
    """Before an image is decoded to ``pixels`` pixels: see _hold_large_turn."""
    _hold_large_turn(pixels, service().settings.max_image_pixels)


def _hold_large_turn(amount: int, limit: int) -> None:
    """Take this request's turn among large JSON parses and image decodes (service.budget) when
    ``amount`` is a large share of its ``limit``, and hold it until the request ends."""
    if is_large(amount, limit) and "large_turn" not in g:
        g.large_turn = service().large_parses.take_turn()


def admit_json_numbers(body: bytes, other_commas: int, vector_length: int, noun: str = "vector") -> None:
    """Before parsing a JSON body, once it is read: refuse one that the value limit would refuse
    after parsing, and wait for its turn among large parses (service.budget) if it is one.
    Parsing costs ~33 bytes of Python objects per number, and twice that or more per array or object.
    Counting commas is cheap: N numbers are separated by N - 1 of them, and the request's other members
    add at most ``other_commas``; so is counting the brackets and braces that open arrays and objects.
    ``vector_length`` (the model's) and ``noun`` (what the request calls a vector) say what a refused one sends."""
    settings = service().settings
    limit = settings.max_vector_values
    commas = body.count(b",")
    if commas >= limit + other_commas:
        raise PayloadTooLarge(f"The JSON body holds more than {limit} numbers, the limit per request; "
                              f"{fewer_vectors(settings, vector_length, noun)}.",
                              code="too_many_values")
    # Arrays nested around little or nothing ([[[[]]]] ...) hold no commas: 59 MiB of them took 3 GB to parse.
    braces = body.count(b"{")
    containers = body.count(b"[") + braces
    if containers > FREE_CONTAINERS + other_commas + CONTAINERS_PER_VALUE * (commas + 1):
        raise PayloadTooLarge(f"The JSON body holds {containers:,} arrays and objects for about {commas + 1:,} values "
                              "in them: nest arrays only as deep as the data's shape.", code="too_many_values")
    # A string or an object costs several numbers' memory (a {"b64": ...} instance ~240 bytes), and a request needs
    # only a few of each per input: 4 million tiny instances took 1.4 GB to parse before the batch was counted.
    allowed = FREE_CONTAINERS + STRUCTURE_COMMAS * settings.max_batch
    if (items := body.count(b'"') // 2 + braces) > allowed:
        raise PayloadTooLarge(f"The JSON body holds {items:,} strings and objects, more than the {allowed:,} a request "
                              f"of at most {settings.max_batch:,} inputs needs; send fewer inputs per request.",
                              code="too_many_values")
    hold_for_json(commas + 1 + 2 * containers)


# prediction ----------------------------------------------------------------------------------


def read_inputs(model: Model) -> tuple[str, object, int | None]:
    """``(kind, payload, top_k from the body)`` from the request for ``model``: kind is ``images`` (list of
    bytes), ``vectors`` (nested lists) or ``array`` (an ndarray from a .npy body)."""
    mimetype = request.mimetype
    settings = service().settings
    if mimetype == "application/json" or mimetype.endswith("+json"):
        raw = read_body()
        sent_as = format_by_signature(raw)
        if sent_as is not None:  # a picture sent with the content type of the JSON route
            raise BadRequest(f"The body is a {sent_as} image, not JSON: send it as it is with Content-Type: "
                             f'image/{sent_as.lower()}, or base64 in {{"images": ["<base64>"]}}.',
                             code="malformed_json")
        admit_json_numbers(raw, len(PredictRequest.model_fields) - 1, model.input_size)
        payload = parse_json(raw)
        if not isinstance(payload, dict):
            raise InvalidInput('The JSON body must be an object: {"inputs": [...]} or {"images": ["<base64>"]}.')
        if other := other_protocols_body(payload, g.model, "native"):
            raise InvalidInput(f'The JSON body is {other}; this route takes {{"inputs": [[...numbers...]]}} or '
                               '{"images": ["<base64>"]}.')
        body = validate(PredictRequest, payload, "the JSON body")
        if body.images is not None:
            # Before decoding them: millions of tiny ones took 21 s and 1 GB to be refused for their number.
            service().predictor.check_batch_size(len(body.images), "images")
            return "images", [decode_base64_image(text, i) for i, text in enumerate(body.images)], body.top_k
        return "vectors", body.inputs, body.top_k
    if mimetype in ("application/x-npy", "application/npy"):
        body = read_body(array=True)
        if not body:
            raise BadRequest("The body is empty; send an array as numpy.save writes it.", code="empty_body")
        return "array", read_npy(body, settings), None
    if mimetype == "multipart/form-data":
        return read_multipart()
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        body = read_body()
        if not body:
            raise BadRequest("The body is empty; send the image's bytes.", code="empty_body")
        if body[:6] == NPY_MAGIC:
            return "array", read_npy(body, settings), None
        return "images", [bytes(body)], None
    # curl --data-binary @digit.png without -H sends application/x-www-form-urlencoded, other clients no type:
    # their body is read to say what to send it as. Any other type is refused from the headers alone.
    body = read_body() if mimetype in ("", "application/x-www-form-urlencoded") else b""
    sent_as = format_by_signature(body)
    if sent_as:
        send = (f"its body is a {sent_as} image: send it with Content-Type: image/{sent_as.lower()} "
                f"(curl: -H 'Content-Type: image/{sent_as.lower()}')")
    elif bytes(body[:4096]).lstrip()[:1] in (b"{", b"["):  # curl -d '{"inputs": ...}' says it is a form
        send = ("its body looks like JSON: send it with Content-Type: application/json (curl -d sends "
                "application/x-www-form-urlencoded unless told: add -H 'Content-Type: application/json')")
    else:
        send = f"send {ACCEPTED_TYPES}"
    if not mimetype:
        if not body:
            raise BadRequest(f"The body is empty; send an image or numbers ({ACCEPTED_TYPES}).", code="empty_body")
        raise UnsupportedMediaType(f"The request has no Content-Type; {send}.", code="missing_content_type")
    raise UnsupportedMediaType(f"Content-Type {mimetype} is not accepted; {send}.")


@predict_bp.errorhandler(UnsupportedImage)
def unsupported_body(error: UnsupportedImage):
    """An image that cannot be read; sent as application/octet-stream, it may have been meant as numbers,
    which that type also reads (a .npy array, by its first bytes): the refusal says how they are sent."""
    if request.mimetype == "application/octet-stream":
        error = UnsupportedImage(f"{error.message}; an application/octet-stream body is read as an image, or as a "
                                 "batch of numbers when it begins as numpy.save writes a .npy file: send images as "
                                 "image/* and .npy batches as application/x-npy", error.details)
    return error_response(as_service_error(error, current_app))


def read_multipart() -> tuple[str, list[bytes], int | None]:
    refuse_compressed_body()
    boundary = request.mimetype_params.get("boundary")
    if not boundary:
        raise BadRequest("Content-Type multipart/form-data has no boundary parameter; send the form as an HTTP "
                         "client builds it (curl -F file=@digit.png).", code="malformed_multipart")
    config = current_app.config
    images, form = read_form(read_body(), boundary, max_parts=config["MAX_FORM_PARTS"],
                             max_field_bytes=config["MAX_FORM_MEMORY_SIZE"])
    unknown = [key for key in form if key != "top_k"]
    if unknown:
        raise InvalidInput(f"Unknown form field {unknown[0]!r}: send images as files (with a file name or an image "
                           "Content-Type), and top_k as the only field.",
                           details=[{"field": key, "message": "unknown field"} for key in unknown])
    top_k = None
    if "top_k" in form:
        values = form["top_k"]
        if len(values) > 1:  # as in the query string: which one was meant is anyone's guess
            raise InvalidInput(f"The form field top_k is given {len(values)} times; give it once.",
                               details=[{"field": "top_k", "message": "repeated"}])
        top_k = validate(PredictQuery, {"top_k": values[0]}, "the form").top_k
    if not images:
        raise InvalidInput("The form holds no file: attach one or more images.", code="no_files")
    return "images", images, top_k


def predict(name: str | None = None, *, version: int | None = None, label: str | None = None):
    svc = service()
    g.inference = True  # a refusal once the model is chosen counts in its statistics (service.metrics)
    model = resolve(name, version, label)  # first: a refusal below names the version, as every refusal does
    query = validate(PredictQuery, query_params(), "the query string") if request.query_string else NO_QUERY
    kind, payload, body_top_k = read_inputs(model)
    # After the body is in: the inference histogram measures the service's work, not the client's upload.
    started = time.perf_counter()
    if query.top_k is not None and body_top_k is not None:
        raise InvalidInput("top_k is given twice, in the query string and in the body; give it once.")
    top_k = query.top_k if query.top_k is not None else body_top_k
    if query.input_image and model.input_kind != "image":
        raise InvalidInput(f"input_image=true shows the picture an image model reads, and model {model.name} reads "
                           "numbers: leave input_image out.",
                           details=[{"field": "input_image", "message": "not an image model"}])
    if kind == "images":
        result = svc.predictor.predict_images(model, payload, top_k=top_k)
    elif kind == "array":
        result = svc.predictor.predict_array(model, payload, top_k=top_k)
    else:
        result = svc.predictor.predict_vectors(model, payload, top_k=top_k)
    response = current_app.response_class(result.to_json(query.input_image), mimetype="application/json")
    svc.metrics.observe_prediction(result, started)
    return response


@predict_bp.post("/predict")
def predict_default():
    return predict()


@predict_bp.post("/models/<name>/predict")
def predict_served(name: str):
    return predict(name)


@predict_bp.post("/models/<name>/versions/<version>/predict")
def predict_version(name: str, version: str):
    return predict(name, version=version_number(version))


@predict_bp.post("/models/<name>/labels/<label>/predict")
def predict_label(name: str, label: str):
    return predict(name, label=label)


# model reports -------------------------------------------------------------------------------


@models_bp.get("/models")
def list_models():
    svc = service()
    models = []
    for name in svc.store.names():
        try:
            models.append(svc.store.describe(name))
        except NotFound:  # its folder went, and the watcher with it, since the names were read
            continue
    # An empty list alone read as a registry without models, when it is missing or cannot be read
    problems = [svc.store.registry_error] if svc.store.registry_error else []
    if not models and (misplaced := svc.store.misplaced_registry()):
        problems.append(misplaced)
    return {"default_model": svc.settings.default_model, "models": models, "problems": problems}


@models_bp.get("/models/<name>")
def model_info(name: str):
    return service().store.describe(name)


@models_bp.get("/models/<name>/versions/<version>")
def version_info(name: str, version: str):
    return service().store.describe_version(name, version_number(version))


@models_bp.get("/models/<name>/labels/<label>")
def label_info(name: str, label: str):
    """The version a label points to, as ``version_info`` reports it: what a client predicting
    through the label gets, before it predicts."""
    store = service().store
    number = store.label_version(name, label)  # a name no label can have is not found (404), as on predict
    try:
        return store.describe_version(name, number)
    except NotFound:
        raise dangling_label(name, label, number) from None


# admin ---------------------------------------------------------------------------------------


def admin(view: Callable) -> Callable:
    @functools.wraps(view)
    def checked(*args, **kwargs):
        settings = service().settings
        if not settings.admin_enabled:
            raise Forbidden("The admin API is disabled: start the service with SCRATCHNET_ADMIN_TOKEN set.",
                            code="admin_disabled")
        header = request.headers.get("Authorization")
        if not header:
            raise Unauthorized("This route needs an 'Authorization: Bearer <token>' header.", code="missing_token")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Unauthorized("The Authorization header must be 'Bearer <token>'.", code="malformed_authorization")
        if not hmac.compare_digest(given.strip().encode(), settings.admin_token.encode()):
            raise Forbidden("The admin token is wrong.", code="wrong_token")
        return view(*args, **kwargs)
    checked.admin = True  # for operators, not pages: service.cors leaves it out
    return checked


SERVING_LOCK = ".serving.lock"


@contextlib.contextmanager
def serving_lock(folder: Path):
    """Hold the lock every change of ``folder``'s serving.json takes, so that two workers, or two
    services sharing the registry, change it one at a time. flock needs only a read-only
    descriptor, so the lock file serves every user who can read it, whoever created it; a new one
    is readable by all (it holds nothing) whatever the umask. A lock file that cannot be created
    means serving.json cannot be written either: the change goes on unlocked, so that the request
    is checked (a 404 for a missing label) before the write fails and says why."""
    path = folder / SERVING_LOCK
    fd = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.fchmod(fd, 0o644)
    except FileExistsError:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def change_serving(name: str, change: Callable[[dict], dict]) -> dict:
    """Apply ``change`` to serving.json under the serving lock, refresh this worker, report."""
    svc = service()
    svc.store.found(name)  # 404 for an unknown model
    try:
        folder = svc.registry.model_folder(name)
    except RegistryError as e:
        raise Conflict(f"The serving state of {name} cannot be changed: {e}.", code="model_outside_registry") from None
    try:
        with serving_lock(folder):
            svc.registry.update_serving(name, change)
    except RegistryError as e:
        raise Conflict(f"The serving state cannot be changed: {e}. The admin API does not overwrite it, as it may "
                       f"hold the labels: correct {SERVING_FILE} by hand, or delete it (no pin, no labels), then "
                       "try again.", code="serving_state_invalid") from None
    except FileNotFoundError:
        if not svc.registry.root.is_dir():  # the whole registry went (an unmounted volume), not this model
            raise NotReady(f"The registry folder {svc.registry.root} does not exist; the serving state of {name} "
                           "cannot be changed until it is back.", code="registry_unavailable") from None
        # a model SCRATCHNET_MODELS names before its first publish, or one whose folder went just now
        raise NotFound(f"The registry has no folder for model {name!r}: publish a version of it first (python -m "
                       "trainer ... --publish), then change how it serves.", code="model_not_found") from None
    except OSError as e:
        if e.errno == errno.EROFS:
            raise Conflict(f"The registry folder {folder} is on a read-only file system, so the serving state of "
                           f"{name} cannot be changed here: mount the registry read-write, or change serving.json "
                           "where it is writable (every worker follows it).", code="registry_read_only") from None
        denied = e.errno in (errno.EACCES, errno.EPERM)
        unreadable = next((path for path in (svc.registry.root, folder) if denied and not listable(path)), None)
        if unreadable is not None:  # chmod 000 of the registry, or of the model's folder: write access is not it
            raise NotReady(f"The registry folder {unreadable} cannot be read ({e.strerror}): {access_advice('read')}; "
                           f"the serving state of {name} cannot be changed until it can.",
                           code="registry_unavailable") from None
        advice = ": " + access_advice("write") if denied else ""
        raise NotReady(f"The registry folder {folder} cannot be written ({e.strerror}){advice}.",
                       code="registry_unavailable") from None
    svc.store.refresh([name], validate_all=False)
    return svc.store.describe(name)


def listable(folder: Path) -> bool:
    """Whether this process can list ``folder`` (tried, not asked: os.access says yes to root)."""
    try:
        os.listdir(folder)
    except OSError:
        return False
    return True


def current_store(name: str) -> ModelStore:
    """This worker's store after a look at the registry for ``name``. A change calls it under the
    serving lock, so that what it checks (the version to pin or label, the one to roll back to) is
    the registry as it is now, not as this worker last polled it: a version deleted since then
    is not pinned or labelled."""
    store = service().store
    store.refresh([name], validate_all=False)
    return store


UNCHANGED = object()


def set_serving(name: str, *, pinned=UNCHANGED, loaded: bool | None = None,
                check: Callable[[], None] | None = None) -> dict:
    """Pin a version (it must load) or remove the pin (``pinned=None``), and take the model out of
    service (``loaded=False``: ``"unloaded": true`` in serving.json, which every worker honours)
    or back in, in one write. The admin routes and the V2 model repository extension use it.
    ``check`` raises to refuse the change, before anything is written, on the registry as it is then."""

    def change(state: dict) -> dict:
        if pinned is not UNCHANGED and pinned is not None:
            current_store(name).servable(name, pinned)
        if check is not None:
            current_store(name)  # so that it checks the registry as it is now
            check()
        if pinned is not UNCHANGED:
            state = {**state, "pinned": pinned}
        if loaded is not None:
            state = {key: value for key, value in state.items() if key != "unloaded"}
            if not loaded:
                state["unloaded"] = True
        return state

    return change_serving(name, change)


@models_bp.post("/models/<name>/versions/<version>/activate")
@admin
def activate(name: str, version: str):
    return set_serving(name, pinned=version_number(version))


@models_bp.post("/models/<name>/unpin")
@admin
def unpin(name: str):
    return set_serving(name, pinned=None)


@models_bp.post("/models/<name>/rollback")
@admin
def rollback(name: str):
    """Pin the highest servable version below the one the registry serves now, or below the pinned
    version when that one cannot serve (deleted, or its file fails to load)."""

    def pin_lower(state: dict) -> dict:
        store = current_store(name)
        try:
            current = store.served(name).version
        except NotReady:
            if state["pinned"] is None:
                raise
            current = state["pinned"]
        target = store.lower_servable(name, current)
        if target is None:
            raise Conflict(f"There is no servable version of {name} below v{current} to roll back to.",
                           code="nothing_to_roll_back_to")
        return {**state, "pinned": target.version}

    return change_serving(name, pin_lower)


def label_name(label: str) -> str:
    """The label an admin route sets or deletes, which the registry's naming rule must allow (else 422 in its
    words). A route that only reads a label answers a name no label can have as a label it lacks (404)."""
    try:
        return check_name(label, "label")
    except RegistryError as e:
        reason = str(e)
        raise InvalidInput(f"{reason[:1].upper()}{reason[1:]}.", code="invalid_label") from None


@models_bp.put("/models/<name>/labels/<label>")
@admin
def set_label(name: str, label: str):
    label = label_name(label)
    if not (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        sent = f"Content-Type {request.mimetype}" if request.mimetype else "no Content-Type"
        raise UnsupportedMediaType(f'The label came with {sent}; send it as JSON, {{"version": 3}}, with Content-Type: '
                                   "application/json (curl -d sends application/x-www-form-urlencoded unless told).")
    payload = parse_json(read_body(), example='{"version": 3}')
    body = validate(LabelRequest, payload, "the JSON body")

    def add(state: dict) -> dict:
        current_store(name).servable(name, body.version, f"labelled {label!r}")
        return {**state, "labels": {**state["labels"], label: body.version}}

    return change_serving(name, add)


@models_bp.delete("/models/<name>/labels/<label>")
@admin
def delete_label(name: str, label: str):
    label = label_name(label)

    def remove(state: dict) -> dict:
        if label not in state["labels"]:
            raise NotFound(f"Model {name} has no label {label!r}.", code="label_not_found")
        return {**state, "labels": {k: v for k, v in state["labels"].items() if k != label}}

    return change_serving(name, remove)
