"""KServe V2 / Open Inference Protocol over REST: a thin skin over ``Predictor`` and ``ModelStore``.

Routes: ``/v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/<m>[/versions/<v>]`` (metadata), ``.../ready``, ``.../infer``, Triton's model
configuration extension (``.../config``) and statistics extension
(``/v2/models[/<m>[/versions/<v>]]/stats``), and the model repository extension:
``/v2/repository/index``, ``/v2/repository/models/<m>/load`` and ``.../unload`` (all three admin). The
model's tensors are described in ``service.protocols.signature``; the binary tensor data
extension and compression in ``service.protocols.binary``.

Errors carry ``"error": "..."`` (beside the service's ``code`` and ``details``) with the messages
Triton gives where there is one (``unexpected inference input 'x' for model 'mnist'``); wrong input
is 400. A model or version the registry lacks is a 404 that starts as Triton's does (``Request for
unknown model: 'mnist' version 9 is not found``) and goes on with the service's sentence naming the
models or versions there are.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import time

import numpy as np
from flask import Blueprint, current_app, g, jsonify, request

from shared.forward import Model
from shared.preprocess import TEXT_AND_TRUTH, holds_any, json_type_name
from shared.registry import MAX_VERSION, VERSION_PATTERN
from shared.text import counted, read_json

from ..api import (RAW_CONTROL, STRUCTURE_COMMAS, UNCHANGED, admin, admit_json_numbers, in_digits,
                   not_found_in_words, other_protocols_body, parse_json, read_body, resolve_from_url, set_serving,
                   validate)
from ..context import service
from ..errors import BadRequest, Conflict, NotReady
from ..inputs import decode_base64_image
from ..store import AVAILABLE, failure_reason
from . import binary, signature
from .schemas import InferRequest, LoadRequest, RepositoryIndexRequest, RequestInput, UnloadRequest

v2_bp = Blueprint("v2", __name__)

PLATFORM = "scratchnet_numpy"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository", "statistics"]
IMAGE_TENSOR = (f'the BYTES input \'{signature.IMAGE}\': {{"inputs": [{{"name": "{signature.IMAGE}", "shape": [1], '
                '"datatype": "BYTES", "data": ["<base64>"]}]}')


def vector_tensor(model: Model) -> str:
    """The input a model that reads vectors takes, as a message names it."""
    return f"the input '{signature.INPUT}', a FP32 tensor of shape [n, {model.input_size}]"


def server_version() -> str:
    try:
        return importlib.metadata.version("scratchnet")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def tritons_words(name: str, version: str | None = None) -> dict[str, str]:
    """Triton's words for a missing model, and for a missing version the URL names; a version that is
    no number keeps the service's explanation alone."""
    unknown = f"Request for unknown model: '{name}'"
    words = {"model_not_found": f"{unknown} is not found"}
    if version is not None and in_digits(version):
        words["version_not_found"] = f"{unknown} version {int(version)} is not found"
    return words


def resolve_model(name: str, version: str | None = None) -> Model:
    """The model a V2 URL names (404 in Triton's words when there is none)."""
    with not_found_in_words(tritons_words(name, version)):
        return resolve_from_url(name, version)


# server ------------------------------------------------------------------------------------------


@v2_bp.get("/v2")
def server_metadata():
    return {"name": "scratchnet", "version": server_version(), "extensions": EXTENSIONS}


@v2_bp.get("/v2/health/live")
def live():
    return {"live": True}


@v2_bp.get("/v2/health/ready")
def ready():
    is_ready, report = service().store.readiness()
    if is_ready:
        return {"ready": True}
    g.error_code = "not_ready"
    return jsonify({"ready": False, "reason": report.get("reason", "")}), 503


# models ------------------------------------------------------------------------------------------


@v2_bp.get("/v2/models/<name>")
@v2_bp.get("/v2/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None):
    model = resolve_model(name, version)
    if version is None:
        info = service().store.describe(name)
        versions = [str(v["version"]) for v in info["versions"] if v["status"] == AVAILABLE]
    else:
        versions = [str(model.version)]
    return {"name": name, "versions": versions, "platform": PLATFORM,
            "inputs": [spec.metadata() for spec in signature.input_specs(model)],
            "outputs": [spec.metadata() for spec in signature.output_specs(model)]}


@v2_bp.get("/v2/models/<name>/config")
@v2_bp.get("/v2/models/<name>/versions/<version>/config")
def model_config(name: str, version: str | None = None):
    """Triton's model configuration extension: the model as Triton's ``ModelConfig`` (the JSON of
    model_config.proto), which Triton's clients read for the batch limit and the tensors' dims."""
    return config_of(name, resolve_model(name, version))


def config_of(name: str, model: Model) -> dict:
    svc = service()
    pinned = svc.store.slot(name).pinned
    inputs = signature.input_specs(model)
    return {"name": name, "platform": PLATFORM, "backend": "scratchnet",
            "version_policy": {"specific": {"versions": [pinned]}} if pinned else {"latest": {"num_versions": 1}},
            "max_batch_size": svc.settings.max_batch,
            "input": [signature.config_entry(spec, optional=len(inputs) > 1) for spec in inputs],
            "output": [signature.config_entry(spec) for spec in signature.output_specs(model)]}


@v2_bp.get("/v2/models/<name>/ready")
@v2_bp.get("/v2/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    try:
        resolve_model(name, version)  # 404 for an unknown model or version
    except NotReady:
        g.error_code = "not_ready"
        return jsonify({"name": name, "ready": False}), 503
    return {"name": name, "ready": True}


@v2_bp.get("/v2/models/stats")
@v2_bp.get("/v2/models/<name>/stats")
@v2_bp.get("/v2/models/<name>/versions/<version>/stats")
def model_statistics(name: str | None = None, version: str | None = None):
    """Triton's statistics extension: per model version that can answer or has, the predictions
    of every protocol and every worker since the service started (``Metrics.statistics``); the
    versions of a model that is unloaded are left out. There is no queue before a
    model here (a request runs on the thread that read it), so ``queue`` counts every request
    with no time; no cache, so ``cache_hit`` and ``cache_miss`` are zero; ``batch_stats`` is
    empty, as the counts are not kept per batch size."""
    svc = service()
    totals = svc.metrics.statistics(svc.store.versions_held())
    if version is not None:
        wanted = {name: [resolve_model(name, version).version]}
    else:
        wanted = {}
        for model_name in svc.store.names() if name is None else [resolve_model(name).name]:
            info = svc.store.describe(model_name)
            if not info["unloaded"]:  # the versions that can answer, and those that have
                wanted[model_name] = sorted({v["version"] for v in info["versions"] if v["status"] == AVAILABLE}
                                            | {v for n, v in totals if n == model_name})
    return {"model_stats": [version_statistics(model_name, v, totals.get((model_name, v), {}))
                            for model_name, versions in wanted.items() for v in versions]}


def version_statistics(name: str, version: int, totals: dict[str, float]) -> dict:
    executions = int(totals.get("executions", 0))

    def duration(seconds_key: str | None, count: int = executions) -> dict:
        return {"count": count, "ns": round(totals.get(seconds_key, 0.0) * 1e9) if seconds_key else 0}

    return {"name": name, "version": str(version), "last_inference": round(totals.get("last", 0.0) * 1000),
            "inference_count": int(totals.get("rows", 0)), "execution_count": executions,
            "inference_stats": {"success": duration("seconds"),
                                "fail": duration("failure_seconds", int(totals.get("failures", 0))),
                                "queue": duration(None),
                                "compute_input": duration("input_seconds"),
                                "compute_infer": duration("infer_seconds"),
                                "compute_output": duration("output_seconds"),
                                "cache_hit": duration(None, 0), "cache_miss": duration(None, 0)},
            "batch_stats": []}


# inference ---------------------------------------------------------------------------------------


@v2_bp.post("/v2/models/<name>/infer")
@v2_bp.post("/v2/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None):
    svc = service()
    g.inference = True  # a refusal once the model is chosen counts in its statistics (service.metrics)
    # The body first: Gunicorn drains at most 64 KiB of a body left unread and then drops the
    # connection it has just answered "keep-alive" on, so a client's next request on it would fail.
    raw = read_body(compressed=True)
    started = time.perf_counter()  # once the body is in: the inference histogram leaves out the client's upload
    model = resolve_model(name, version)
    body = binary.decompress(raw, request.headers.get("Content-Encoding"), svc.settings.max_body_bytes)
    header_length = request.headers.get(binary.HEADER_LENGTH)
    header, rest = binary.split_body(body, header_length)
    header = bytes(header)
    # Each tensor's other members (name, shape, datatype, parameters) add a few commas of their own.
    admit_json_numbers(header, STRUCTURE_COMMAS * svc.settings.max_batch, model.input_size)
    try:
        document = parse_json(header)
    except BadRequest as e:
        if e.code != "malformed_json" or RAW_CONTROL in e.message:  # a fault in the JSON's text: no length's
            raise
        if header_length is None and (hint := signature.not_json_hint(model, header, request.mimetype, IMAGE_TENSOR,
                                                                      vector_tensor(model))):
            raise BadRequest(hint, code=e.code) from None
        if header_length is None:  # most often: binary tensors, but no header length
            raise BadRequest(f"{e.message.removesuffix('.')}; if binary tensors follow the JSON, send its length in "
                             f"the {binary.HEADER_LENGTH} header.", code=e.code) from None
        # most often a length in characters, or of another JSON text than the one sent
        raise BadRequest(f"{e.message.removesuffix('.')}; the JSON part is read as the first {len(header)} bytes of "
                         f"the body, as {binary.HEADER_LENGTH} says: it must be the length in bytes of the JSON "
                         "exactly as sent (UTF-8), before the binary tensors.", code=e.code) from None
    if other := other_protocols_body(document, model.name, "v2"):
        raise BadRequest(f'The body is {other}; this route takes {{"inputs": [{{"name": ..., "shape": [...], '
                         '"datatype": ..., "data": [...]}]}.', code="invalid_request")
    infer_request = validate(InferRequest, document, "the inference request")
    check_named_model(infer_request, model, version)
    chunks = binary.BinaryChunks(rest, None if header_length is None else len(header))
    input_name, payload = read_input(model, infer_request.inputs, chunks)
    chunks.check_used()
    requested = requested_outputs(model, infer_request)
    result = signature.predict(svc.predictor, model, input_name, payload, f"input '{input_name}' element {{}}")
    response = infer_response(result, infer_request, requested)
    svc.metrics.observe_prediction(result, started)
    return response


def check_named_model(infer_request: InferRequest, model: Model, version: str | None) -> None:
    """A 400 for a body whose ``model_name`` or ``model_version`` (which the URL decides; KServe's client sends the
    name) is not the model or version that answers: answered anyway, a client that names a version in the body
    alone would take the served version's answer for that version's."""
    name, wanted = infer_request.model_name or None, infer_request.model_version or None  # "": not set, in protobuf
    if name is not None and name != model.name:
        raise BadRequest(f"The request's model_name '{name}' is not the model the URL names, '{model.name}': send it "
                         f"to /v2/models/{name}/infer, or leave model_name out.", code="model_mismatch")
    if wanted is not None and not (in_digits(wanted) and int(wanted) == model.version):
        answering = f"version {model.version}" + (", the served one" if version is None else "")
        raise BadRequest(f"The request's model_version '{wanted}' is not the version the URL names ({answering}): "
                         f"name it in the URL, /v2/models/{model.name}/versions/{wanted}/infer, or leave "
                         "model_version out.", code="model_mismatch")


def read_input(model: Model, inputs: list[RequestInput], chunks: binary.BinaryChunks) -> tuple[str, object]:
    """The one input of the request, checked against the model's inputs, as the payload
    ``signature.predict`` takes."""
    specs = {spec.name: spec for spec in signature.input_specs(model)}
    for tensor in inputs:
        if tensor.name not in specs:
            hint = signature.unexpected_input_hint(model, [tensor.name for tensor in inputs], vector_tensor(model))
            raise BadRequest(f"unexpected inference input '{tensor.name}' for model '{model.name}'{hint}",
                             code="unexpected_input")
    if len(inputs) != 1:
        names = ", ".join(f"'{n}'" for n in specs)
        raise BadRequest(f"expected 1 input but got {len(inputs)} inputs for model '{model.name}': give exactly "
                         f"one of {names}", code="wrong_input_count")
    tensor = inputs[0]
    spec = specs[tensor.name]
    if tensor.datatype not in spec.accepts:
        hint = " (raw 0-255 pixels go in the input 'pixels')" if tensor.name == signature.INPUT and \
            tensor.datatype.startswith(("UINT", "INT")) else ""
        raise BadRequest(f"inference input '{tensor.name}' data-type is '{tensor.datatype}', but model "
                         f"'{model.name}' expects '{spec.datatype}'{hint}", code="unexpected_datatype")
    check_shape(model, spec, tensor.shape)
    # Before the elements are read and decoded: millions of tiny images took 20 s and 1 GB to be refused.
    service().predictor.check_batch_size(tensor.shape[0], signature.BATCH_ITEMS[tensor.name])
    values = tensor_values(tensor, chunks)
    if tensor.name == signature.IMAGE:  # JSON strings are base64, binary elements the image files
        values = [decode_base64_image(item, i, f"input '{tensor.name}' element {i}") if isinstance(item, str) else item
                  for i, item in enumerate(values)]
    return tensor.name, values


def check_shape(model: Model, spec: signature.TensorSpec, shape: list[int]) -> None:
    if spec.name == signature.INPUT:
        fits = len(shape) == 2 and shape[1] == spec.shape[1]
    elif spec.name == signature.IMAGE:
        fits = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    else:  # pixels: [n, h*w], [n, h, w] or [n, h, w, channels]
        fits = 2 <= len(shape) <= 4
    if not fits:
        raise BadRequest(f"unexpected shape for input '{spec.name}' for model '{model.name}'. Expected "
                         f"{shape_text(spec.shape)}, got {shape_text(shape)}{shape_hint(model, spec, shape)}",
                         code="unexpected_shape")


def shape_hint(model: Model, spec: signature.TensorSpec, shape: list[int]) -> str:
    """What a refused shape most often means: the batch dimension left out (one vector sent as [784]), or a
    picture's pixels sent to the input that takes vectors."""
    if spec.name != signature.INPUT:
        return ""
    if shape == [spec.shape[1]]:
        return f" (the first dimension is the batch: send one vector as shape [1,{spec.shape[1]}])"
    if model.input_kind == "image" and len(shape) in (3, 4) and math.prod(shape[1:]) == spec.shape[1]:
        return (f" (pixels as [n, height, width] go in the input '{signature.PIXELS}'; or send each picture as "
                f"one row of {spec.shape[1]} values in [0, 1])")
    return ""


def tensor_values(tensor: RequestInput, chunks: binary.BinaryChunks):
    """The tensor's elements: an ndarray of its shape, or for BYTES a flat list of ``bytes``
    (binary) or ``str`` (JSON)."""
    count = math.prod(tensor.shape)
    what = f"input '{tensor.name}'"
    if count == 0:  # nothing to predict on; and a zero next to huge dimensions is a shape NumPy cannot make
        raise BadRequest(f"{what} has shape {shape_text(tensor.shape)}, which holds no elements: there is no input "
                         "to predict on; send at least one.", code="no_input")
    refuse_shared_memory(tensor.parameters, f"for {what}", "send its data in the request: JSON 'data', or binary "
                         "data after the JSON (binary_data_size)")
    size = tensor.parameters.binary_data_size if tensor.parameters is not None else None
    if size is not None:
        if tensor.data is not None:
            raise BadRequest(f"{what} has both 'data' and a binary_data_size; send its data one way.",
                             code="malformed_tensor")
        raw = chunks.take(size, what)
        if tensor.datatype == "BYTES":
            items = binary.decode_bytes(raw, what, count)
            require_count(what, len(items), tensor, count, "element")
            return items
        dtype = binary.DTYPES[tensor.datatype]
        if size != count * dtype.itemsize:
            raise BadRequest(f"unexpected size {size} for {what}, expecting {count * dtype.itemsize} bytes for "
                             f"shape {shape_text(tensor.shape)} of {tensor.datatype}", code="unexpected_size")
        return np.frombuffer(raw, dtype=dtype).reshape(tensor.shape)
    if tensor.data is None:
        raise BadRequest(f"{what} has no 'data' and no binary_data_size.", code="malformed_tensor")
    if tensor.datatype == "BYTES":
        items = flatten_strings(tensor.data, what)
        require_count(what, len(items), tensor, count, "element")
        return items
    return json_numbers(tensor, count)


def refuse_shared_memory(parameters, where: str, instead: str) -> None:
    """A 400 for a tensor whose parameters name a shared memory region (tritonclient's ``set_shared_memory``):
    no region can be registered here, and ignored, the client would read an output region nothing wrote.
    The message begins as Triton's for a region it does not know."""
    extra = (parameters.model_extra or {}) if parameters is not None else {}
    if not any(key.startswith("shared_memory_") for key in extra):
        return
    region = extra.get("shared_memory_region")
    raise BadRequest(f"Unable to find system shared memory region: '{region}' {where}: this server has no shared "
                     f"memory (the shared memory extensions are not served); {instead}.",
                     code="unsupported_parameter")


def require_count(what: str, held: int, tensor: RequestInput, count: int, unit: str) -> None:
    """A 400 unless the tensor holds the ``count`` items its shape needs."""
    if held != count:
        raise BadRequest(f"{what} holds {counted(held, unit)}; its shape {shape_text(tensor.shape)} "
                         f"needs {count}.", code="unexpected_size")


def flatten_strings(data, what: str) -> list[str]:
    items = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            items.append(item)
        else:
            raise BadRequest(f"The data of {what} must be strings (BYTES), not {json_type_name(item)}.",
                             code="unexpected_datatype")
    return items


def json_numbers(tensor: RequestInput, count: int) -> np.ndarray:
    """JSON ``data`` (flat or nested) -> an array of the tensor's datatype and shape."""
    what = f"input '{tensor.name}'"
    dtype = binary.DTYPES[tensor.datatype]
    if isinstance(tensor.data, list) and holds_any(tensor.data, TEXT_AND_TRUTH):  # before NumPy reads it
        raise BadRequest(f"The data of {what} must be numbers of type {tensor.datatype}.", code="unexpected_datatype")
    try:
        array = np.asarray(tensor.data)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"The data of {what} is not a regular array of numbers.", code="malformed_tensor") from None
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    out_of_range = info and BadRequest(f"The data of {what} is out of the range of {tensor.datatype} "
                                       f"({info.min}..{info.max}).", code="unexpected_datatype")
    # NumPy holds an integer below INT64's range, or above UINT64's, as an object (floats beside it too)
    if array.dtype == object and info is not None and all(type(v) is int for v in array.flat):
        raise out_of_range
    if array.dtype == object and info is None and all(type(v) in (int, float) for v in array.flat):
        largest = float(np.finfo(dtype).max)
        digits = max(len(str(abs(v))) for v in array.flat if type(v) is int)
        raise BadRequest(f"The data of {what} is out of the range of {tensor.datatype} ({-largest:g}..{largest:g}): "
                         f"an integer of {digits} digits.", code="unexpected_datatype")
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "b") != (dtype.kind == "b"):
        raise BadRequest(f"The data of {what} must be numbers of type {tensor.datatype}.", code="unexpected_datatype")
    require_count(what, array.size, tensor, count, "value")
    if info is not None:
        if array.dtype.kind == "f":
            if not np.all(np.mod(array, 1) == 0):
                raise BadRequest(f"The data of {what} must be integers ({tensor.datatype}).",
                                 code="unexpected_datatype")
            if dtype == np.int64 and np.any(array == float(info.min)):
                raise out_of_range  # the JSON parser rounds an integer below INT64's range to -2**63
            # NumPy also holds a list with an integer beyond INT64 (a valid UINT64 such as 2**64 - 1)
            # as float64, which rounds it, and the cast below would wrap around without a word:
            # built from the JSON numbers straight into the datatype, each value is exact, and
            # one out of its range raises.
            try:
                return np.asarray(tensor.data, dtype=dtype).reshape(tensor.shape)
            except OverflowError:
                raise out_of_range from None
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise out_of_range
    with np.errstate(over="ignore"):
        converted = array.astype(dtype).reshape(tensor.shape)
    if not np.isfinite(converted).all():  # NaN and Infinity sent as such are refused later, by position
        overflow = np.isinf(converted).ravel() & np.isfinite(array).ravel()
        if overflow.any():
            largest = float(np.finfo(dtype).max)
            raise BadRequest(f"The data of {what} is out of the range of {tensor.datatype} "
                             f"({-largest:g}..{largest:g}): {array.ravel()[overflow.argmax()]:g}.",
                             code="unexpected_datatype")
    return converted


# outputs -----------------------------------------------------------------------------------------


def requested_outputs(model: Model, infer_request: InferRequest) -> list[tuple[str, bool, int]]:
    """``(name, binary, classes)`` for each output to return: those asked for, else all of them.
    ``classes`` > 0 asks for the top classes instead of the tensor (classification extension)."""
    specs = {spec.name: spec for spec in signature.output_specs(model)}
    params = infer_request.parameters
    default_binary = bool(params and params.binary_data_output)
    if not infer_request.outputs:
        return [(name, default_binary, 0) for name in specs]
    chosen = []
    for output in infer_request.outputs:
        if output.name not in specs:
            raise BadRequest(f"unexpected inference output '{output.name}' for model '{model.name}' (ask for "
                             f"{signature.one_of(list(specs.values()))}, or leave outputs out for all of them)",
                             code="unexpected_output")
        if any(name == output.name for name, _, _ in chosen):  # as Triton: a response names each output once
            raise BadRequest(f"output '{output.name}' already requested", code="duplicate_output")
        p = output.parameters
        refuse_shared_memory(p, f"for output '{output.name}'", "leave out the output's shared memory parameters, and "
                             "it comes in the response")
        as_binary = default_binary if p is None or p.binary_data is None else p.binary_data
        classes = (p.classification or 0) if p is not None else 0
        if classes and specs[output.name].datatype == "BYTES":
            raise BadRequest(f"class result not available for output '{output.name}' of model '{model.name}' "
                             "due to its type BYTES; ask for classification on a numeric output "
                             "such as 'probabilities'", code="unexpected_output")
        chosen.append((output.name, as_binary, classes))
    return chosen


def infer_response(result, infer_request: InferRequest, requested: list[tuple[str, bool, int]]):
    model = result.model
    tensors = signature.output_tensors(result)
    specs = {spec.name: spec for spec in signature.output_specs(model)}
    n = len(result)
    outputs, chunks = [], []
    for name, as_binary, classes in requested:
        if classes:  # the classification extension: the top elements of this output, row by row
            labels = model.labels if name == "probabilities" else None
            rows = signature.top_values(np.asarray(tensors[name]), classes, labels)
            values = [item for row in rows for item in row]
            datatype, shape = "BYTES", [n, len(rows[0])]
        else:
            values = tensors[name]
            datatype, shape = specs[name].datatype, [n, *specs[name].shape[1:]]
        output = {"name": name, "datatype": datatype, "shape": shape}
        if as_binary:
            raw = binary.encode_bytes([v.encode("utf-8") for v in values]) if datatype == "BYTES" else \
                np.ascontiguousarray(values, dtype=binary.DTYPES[datatype]).tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            output["data"] = values if datatype == "BYTES" else values.ravel().tolist()
        outputs.append(output)
    document = {"model_name": model.name, "model_version": str(model.version)}
    if infer_request.id:  # an empty id is left out, as Triton leaves it
        document["id"] = infer_request.id
    document["outputs"] = outputs
    try:
        header = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # an id holding a lone surrogate escape ("\ud800"): echoed as the escape it came as
        header = json.dumps(document, separators=(",", ":")).encode("ascii")
    # Made with its content type, and given Vary as a header: a content type set afterwards replaced a default
    # one made first, and the parsed header set behind response.vary cost more than the rest of the response.
    response = current_app.response_class(b"".join([header, *chunks]),
                                          content_type="application/octet-stream" if chunks else "application/json")
    if chunks:
        response.headers[binary.HEADER_LENGTH] = str(len(header))
    # The client's most wanted coding; identity among them, first on a tie ("*"), as Triton chooses.
    encoding = request.accept_encodings.best_match(("identity", *binary.ENCODINGS))
    if encoding in binary.ENCODINGS:
        response.set_data(binary.compress(response.get_data(), encoding))
        response.headers["Content-Encoding"] = encoding
    response.headers["Vary"] = "Accept-Encoding"  # compressed or not, the answer depends on it
    return response


# extensions not served ---------------------------------------------------------------------------


@v2_bp.post("/v2/models/<name>/<any(generate, generate_stream):verb>")
@v2_bp.post("/v2/models/<name>/versions/<version>/<any(generate, generate_stream):verb>")
def generate(name: str, verb: str, version: str | None = None):
    """Triton's generate extension maps text onto a language model's tensors; no model here takes text."""
    read_body(compressed=True)  # read, not used: a body left unread can cost the connection (see infer)
    model = resolve_model(name, version)
    raise BadRequest(f"The {verb} extension (text generation) is not served: model '{model.name}' takes "
                     f"tensors; POST {{\"inputs\": [...]}} to /v2/models/{model.name}/infer instead.",
                     code="unsupported_api")


@v2_bp.route("/v2/trace/setting", methods=["GET", "POST"])
@v2_bp.route("/v2/models/<name>/trace/setting", methods=["GET", "POST"])
def trace_setting(name: str | None = None):
    """Triton's trace extension; Triton built without tracing answers 400 in these first words."""
    read_body()
    raise BadRequest("the server does not support tracing (Triton's trace extension): each request's time is in "
                     "GET /metrics (scratchnet_request_duration_seconds) and each model version's, by stage, in "
                     "GET /v2/models/<name>/stats; the logs name each request by its X-Request-ID.",
                     code="unsupported_api")


@v2_bp.route("/v2/logging", methods=["GET", "POST"])
def logging_setting():
    """Triton's logging extension; Triton built without it answers 400 in these first words."""
    read_body()
    raise BadRequest("the server does not support dynamic logging (Triton's logging extension): set "
                     "SCRATCHNET_LOG_LEVEL and SCRATCHNET_LOG_FORMAT in the service's environment and restart it.",
                     code="unsupported_api")


# model repository extension ----------------------------------------------------------------------


def optional_json(body: bytes):
    """The JSON of a body a client may leave out: no body at all reads as ``{}``. Whitespace alone
    is no JSON value, and is refused as malformed like any other text that is not JSON."""
    return parse_json(body) if body else {}


@v2_bp.post("/v2/repository/index")
@admin
def repository_index():
    body = read_body()
    query = validate(RepositoryIndexRequest, optional_json(body), "the index request")
    entries = [entry for name in service().store.names() for entry in repository_entries(name)]
    if query.ready:
        entries = [entry for entry in entries if entry["state"] == "READY"]
    return jsonify(entries)


def repository_entries(name: str) -> list[dict]:
    info = service().store.describe(name)
    if not info["versions"]:
        return [{"name": name, "state": "UNAVAILABLE", "reason": "the registry has no version of this model"}]
    entries = []
    for v in info["versions"]:
        status = v["status"]
        if info.get("unloaded"):
            state, reason = "UNAVAILABLE", "unloaded"
        elif status == AVAILABLE:
            state, reason = "READY", ""
        elif (failure := failure_reason(status)) is not None:
            state, reason = "UNAVAILABLE", failure
        else:
            state, reason = "LOADING", ""
        entries.append({"name": name, "version": str(v["version"]), "state": state, "reason": reason})
    return entries


@v2_bp.post("/v2/repository/models/<name>/load")
@admin
def repository_load(name: str):
    with not_found_in_words(tritons_words(name)):  # 404 for an unknown model, before looking at the body
        service().store.found(name)
    body = read_body()
    load = validate(LoadRequest, optional_json(body), "the load request")
    pin = requested_pin(name, load)
    # A load that cannot serve writes nothing, so an unloaded model stays out of service (and
    # /readyz ready); a version to pin is checked before it is written anyway.
    check = None if isinstance(pin, int) else (lambda: can_answer(name, unpinned=pin is None))
    set_serving(name, pinned=pin, loaded=True, check=check)
    can_answer(name)
    return {"name": name, "load": True}


def can_answer(name: str, *, unpinned: bool = False) -> None:
    """As Triton: a load succeeds only once the model can answer, so a client can infer right after it.
    ``unpinned``: asked before the pin is removed, when the highest servable version would serve."""
    if unpinned and service().store.lower_servable(name, MAX_VERSION + 1) is not None:
        return
    try:
        service().store.served(name)
    except NotReady as e:
        raise Conflict(f"Model {name} cannot be loaded: {e.message}", code="model_not_servable") from None


def requested_pin(name: str, load: LoadRequest):
    """The version to pin, None to remove the pin, or ``UNCHANGED`` to leave it as it is.

    A version comes as ``parameters.version``, or Triton's way: ``parameters.config`` holding
    ``{"version_policy": {"specific": {"versions": [3]}}}`` (``latest`` or ``all``: unpin). The
    config's other members may come too, as ``GET .../config`` shows them: a client edits the
    version policy of the config it read and sends the whole back."""
    params = load.parameters
    if params is None:
        return UNCHANGED
    extra = [key for key in (params.model_extra or {}) if key.startswith("file:")]
    if extra:
        raise BadRequest("Models are loaded from the registry only: publish a version with the trainer instead of "
                         "sending files.", code="unsupported_parameter")
    pin = int(params.version) if params.version is not None else UNCHANGED
    if params.config is not None:
        if pin is not UNCHANGED:
            raise BadRequest("Give the version once: in parameters.version or in the config's version_policy.",
                             code="invalid_request")
        pin = pin_from_config(name, params.config)
    return pin


def pin_from_config(name: str, text: str):
    try:
        config = read_json(text)
    except ValueError as e:
        raise BadRequest(f"parameters.config is not valid JSON: {e}.", code="invalid_request") from None
    if not isinstance(config, dict):
        raise BadRequest("parameters.config must be a JSON object.", code="invalid_request")
    if set(config) - {"version_policy"}:
        check_config_unchanged(name, config)
    policy = config.get("version_policy")
    if policy is None:
        return UNCHANGED
    if isinstance(policy, dict) and len(policy) == 1 and ("latest" in policy or "all" in policy):
        return None
    specific = policy.get("specific") if isinstance(policy, dict) else None
    versions = specific.get("versions") if isinstance(specific, dict) else None
    version = str(versions[0]) if isinstance(versions, list) and len(versions) == 1 else ""
    if not VERSION_PATTERN.match(version):  # a version as a number or, as protobuf's JSON writes int64, a string
        raise BadRequest('version_policy must be {"specific": {"versions": [<one version>]}}, {"latest": {}} '
                         'or {"all": {}}.', code="invalid_request")
    return int(version)


def check_config_unchanged(name: str, config: dict) -> None:
    """Refuse a config whose members other than ``version_policy`` differ from the model's own (as
    ``GET .../config`` shows them for the version served now): a load changes the version policy
    alone, and the rest is the model's."""
    try:
        current = config_of(name, service().store.served(name))
    except NotReady:
        current = {"name": name}  # no version served: nothing to compare the rest with
    for key in sorted(set(config) - {"version_policy"}):
        if key not in current or config[key] != current[key]:
            shown = f"GET /v2/models/{name}/config shows the model's own" if key in current else \
                "a model's config holds no such member"
            raise BadRequest(f"parameters.config may change only 'version_policy', and its {key!r} is not the "
                             f"model's ({shown}): remove it, or send it as that shows it.",
                             code="unsupported_parameter")


@v2_bp.post("/v2/repository/models/<name>/unload")
@admin
def repository_unload(name: str):
    with not_found_in_words(tritons_words(name)):
        service().store.found(name)
    body = read_body()
    unload = validate(UnloadRequest, optional_json(body), "the unload request")
    if unload.parameters and "version" in unload.parameters:  # not one version: the whole model would go
        raise BadRequest(f"Unload takes every version of {name} out of service and has no parameters.version. To "
                         f"stop serving one version, pin another (POST /v2/repository/models/{name}/load with "
                         '{"parameters": {"version": N}}); to take the model out, unload it without a version.',
                         code="unsupported_parameter")
    set_serving(name, loaded=False)
    return {"name": name, "unload": True}
