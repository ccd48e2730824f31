"""TF Serving / KServe V1 REST: a thin skin over ``Predictor`` and ``ModelStore``.

``POST /v1/models/<m>[/versions/<v>|/labels/<l>]:predict`` takes ``{"instances": [...]}`` (row
format, answered with ``{"predictions": [...]}``) or ``{"inputs": ...}`` (columnar, answered with
``{"outputs": ...}``). An item is a list of numbers (the model's input vector), ``{"b64": "..."}``
(an encoded image; also as ``[{"b64": "..."}]``, the way a ``[-1, 1]`` string input is sent), a
nested list of pixels (image models), or an object naming the input as in
``service.protocols.signature`` (``{"image": {"b64": ...}}``). A classifier answers each row
with ``{"probabilities": [...], "label": "7", "index": 7}``; a regressor with the value alone.

``GET /v1/models/<m>[/versions/<v>|/labels/<l>]`` reports ``model_version_status`` as TF Serving
does (plus KServe V1's ``name`` and ``ready``); ``.../metadata`` the ``serving_default`` signature
(the tensors of ``service.protocols.signature`` with TensorFlow's type names), as TF Serving's
GetModelMetadata renders it in JSON; ``GET /v1/models`` lists the models.

A model or version the registry lacks is refused (404) in TF Serving's words, which its clients
and their users look for: ``Servable not found for request: Specific(mnist, 9)`` (``Latest(mnist)``
without a version), and from the status route ``Could not find version 9 of model mnist`` (``Could
not find any versions of model mnist``), each followed by the service's sentence that names the
models or versions there are; so are digits no version can be (``Specific(mnist, 0)``), which TF Serving reads as
a number too. A version that is no number, and a label the model lacks, keep the service's words.
"""

from __future__ import annotations

import time

import numpy as np
from flask import Blueprint, current_app, g, request

from shared.forward import Model
from shared.preprocess import TEXT, holds_any

from ..api import (STRUCTURE_COMMAS, admit_json_numbers, in_digits, not_found_in_words, other_protocols_body,
                   parse_json, read_body, resolve_from_url, validate, version_number)
from ..context import service
from ..errors import BadRequest, NotFound
from ..inputs import decode_base64_image
from ..predictor import numbers_batch
from ..store import AVAILABLE, dangling_label, failure_reason
from . import binary, signature
from .schemas import V1PredictRequest

v1_bp = Blueprint("v1", __name__)

SIGNATURE = "serving_default"


# predict -----------------------------------------------------------------------------------------


@v1_bp.post("/v1/models/<segment:name>:predict")
@v1_bp.post("/v1/models/<segment:name>/versions/<segment:version>:predict")
@v1_bp.post("/v1/models/<segment:name>/labels/<segment:label>:predict")
def predict(name: str, version: str | None = None, label: str | None = None):
    svc = service()
    g.inference = True  # a refusal once the model is chosen counts in its statistics (service.metrics)
    raw = read_body(compressed=True)  # before any error: a body left unread can cost the connection (see v2.infer)
    started = time.perf_counter()  # once the body is in: the inference histogram leaves out the client's upload
    model = resolve_servable(name, version, label)
    # TF Serving inflates a gzip body (Content-Encoding: gzip), which its clients send for large b64 batches.
    raw = binary.decompress(raw, request.headers.get("Content-Encoding"), svc.settings.max_body_bytes)
    # An instance's named inputs add a few commas each: {"pixels": [...], "b64": ...}.
    admit_json_numbers(raw, STRUCTURE_COMMAS * svc.settings.max_batch, model.input_size, "instance")
    try:
        payload = parse_json(raw)
    except BadRequest as e:
        hint = signature.not_json_hint(model, raw, request.mimetype, '{"instances": [{"b64": "<base64>"}]}',
                                       numbers_batch("instances", model))
        if hint is None:
            raise
        raise BadRequest(hint, code=e.code) from None
    if other := other_protocols_body(payload, model.name, "v1"):
        raise BadRequest(f'The body is {other}; this route takes {{"instances": [...]}} or {{"inputs": ...}}.',
                         code="invalid_request")
    body = validate(V1PredictRequest, payload, "the predict request")
    if body.signature_name not in (None, "", SIGNATURE):  # empty means the default, as in TF Serving
        raise BadRequest(f"Serving signature name: '{body.signature_name}' not found in signature def; "
                         f"model '{model.name}' has only '{SIGNATURE}'.", code="unknown_signature")
    rows = body.instances is not None
    input_name, payload = read_rows(model, body.instances, "instances") if rows else read_columns(model, body.inputs)
    result = signature.predict(svc.predictor, model, input_name, payload, "instances[{}]" if rows else "inputs[{}]")
    outputs = signature.output_tensors(result)
    response = current_app.json.response(
        {"predictions": row_outputs(outputs)} if rows else {"outputs": column_outputs(outputs)})
    svc.metrics.observe_prediction(result, started)
    return response


def tf_serving_words(message: str, label: str | None) -> dict[str, str]:
    """TF Serving's ``message`` for a missing model, and for a missing version the URL names (a label
    the model lacks, or one naming a missing version, keeps the service's words)."""
    words = {"model_not_found": message}
    if label is None:
        words["version_not_found"] = message
    return words


def tf_serving_version(version: str | None) -> str | None:
    """The version number TF Serving reads from a URL's version (its digits, leading zeros read past), which its
    words name even where no version can have it (``0``, ten digits); None for a URL without a version. A version
    that is no number is refused here, in the service's words alone (404)."""
    if version is None:
        return None
    if not in_digits(version):
        version_number(version)  # raises
    return version.lstrip("0") or "0"


def resolve_servable(name: str, version: str | None, label: str | None) -> Model:
    """The model a V1 URL names; a version that is no number keeps the service's explanation."""
    number = tf_serving_version(version)
    servable = f"Latest({name})" if number is None else f"Specific({name}, {number})"
    with not_found_in_words(tf_serving_words(f"Servable not found for request: {servable}", label)):
        return resolve_from_url(name, version, label)


def read_rows(model: Model, items, where: str) -> tuple[str, object]:
    """A list of items, one per input -> ``(input name, payload for signature.predict)``."""
    if not isinstance(items, list) or not items:
        raise BadRequest(f"'{where}' must be a non-empty list, one item per input.", code="invalid_request")
    service().predictor.check_batch_size(len(items), where)  # before reading each: millions took a minute
    names, values = set(), []
    for i, item in enumerate(items):
        input_name, value = read_item(model, item, f"{where}[{i}]")
        names.add(input_name)
        values.append(value)
    if len(names) > 1:
        raise BadRequest(f"The items of '{where}' mix the inputs {', '.join(sorted(names))}; send one kind per "
                         "request.", code="invalid_request")
    input_name = names.pop()
    if input_name == signature.IMAGE:
        return input_name, [decode_base64_image(text, i, f"{where}[{i}]") for i, text in enumerate(values)]
    if input_name == signature.PIXELS:
        return input_name, [pixel_array(value, f"{where}[{i}]") for i, value in enumerate(values)]
    return input_name, values


def read_item(model: Model, item, where: str) -> tuple[str, object]:
    """One item -> ``(input name, value)``; an image's value is its base64 text."""
    names = [spec.name for spec in signature.input_specs(model)]
    item = unwrap_image(item)
    if is_b64(item):
        item = {signature.IMAGE: item}
    if isinstance(item, dict):
        if len(item) != 1 or next(iter(item)) not in names:
            root = where.partition("[")[0]  # 'instances' or 'inputs', which the request's vectors go under
            raise BadRequest(f"{where} names the inputs {', '.join(map(repr, item)) or 'none'}; model '{model.name}' "
                             f"takes exactly one of {', '.join(map(repr, names))}"
                             f"{signature.unexpected_input_hint(model, item, numbers_batch(root, model))}.",
                             code="unexpected_input")
        input_name, value = next(iter(item.items()))
        if input_name == signature.IMAGE:
            value = unwrap_image(value)
            if not (isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)):
                raise BadRequest(f'{where}: an image must be {{"b64": "<base64 of the file>"}}.', code="invalid_request")
            value = value["b64"]
        return input_name, value
    if isinstance(item, list):
        if item and isinstance(item[0], dict):  # (checking every element would cost a pass over large batches)
            images = sum(is_b64(element) for element in item)
            hint = f" holds {images} images; send each image as an item of its own" if images > 1 else \
                " mixes objects into a list; an image is {\"b64\": \"<base64>\"} and a vector a list of numbers"
            raise BadRequest(f"{where}{hint}.", code="invalid_request")
        nested = bool(item) and isinstance(item[0], list)
        if nested and signature.PIXELS in names:
            return signature.PIXELS, item
        return signature.INPUT, item
    if isinstance(item, str):
        raise BadRequest(f'{where} is a string; send an image as {{"b64": "<base64>"}} and numbers as a list.',
                         code="invalid_request")
    raise BadRequest(f"{where} must be a list of numbers, {{\"b64\": ...}} or an object naming the input.",
                     code="invalid_request")


def is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def unwrap_image(value):
    """``[{"b64": ...}]`` -> ``{"b64": ...}``: one image sent as a one-element string tensor, as
    TF Serving's clients send an input of shape ``[-1, 1]`` (V2 takes ``image`` as ``[n, 1]`` too)."""
    if isinstance(value, list) and len(value) == 1 and is_b64(value[0]):
        return value[0]
    return value


def pixel_array(value, where: str) -> np.ndarray:
    if isinstance(value, list) and holds_any(value, TEXT):  # before NumPy reads it (booleans are a mask's pixels)
        raise BadRequest(f"{where} must be an array of pixels: numbers, in rows of equal length.",
                         code="invalid_request")
    try:
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"{where} is not a regular array of pixels (rows of equal length).",
                         code="invalid_request") from None


def read_columns(model: Model, inputs) -> tuple[str, object]:
    """Columnar ``inputs``: the batch of the one input, bare or named (``{"image": [...]}``)."""
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        names = [spec.name for spec in signature.input_specs(model)]
        if len(inputs) != 1 or next(iter(inputs)) not in names:
            raise BadRequest(f"'inputs' names {', '.join(map(repr, inputs)) or 'no input'}; model '{model.name}' "
                             f"takes exactly one of {', '.join(map(repr, names))}"
                             f"{signature.unexpected_input_hint(model, inputs, numbers_batch('inputs', model))}.",
                             code="unexpected_input")
        input_name, batch = next(iter(inputs.items()))
        if not isinstance(batch, list):
            batch = [batch]
        if input_name == signature.IMAGE:
            items = batch
        elif input_name == signature.INPUT and batch and not isinstance(batch[0], list):
            items = [{input_name: batch}]  # one vector
        else:
            items = [{input_name: item} for item in batch]
        return read_rows(model, items, "inputs")
    if isinstance(inputs, dict):
        inputs = [inputs]  # one image
    if isinstance(inputs, list) and inputs and not isinstance(inputs[0], (list, dict)):
        inputs = [inputs]  # one vector
    return read_rows(model, inputs, "inputs")


def row_outputs(outputs: dict) -> list:
    if "value" in outputs:
        return outputs["value"].tolist()
    probabilities = outputs["probabilities"].tolist()
    return [{"probabilities": p, "label": label, "index": index}
            for p, label, index in zip(probabilities, outputs["label"], outputs["index"].tolist())]


def column_outputs(outputs: dict):
    if "value" in outputs:
        return outputs["value"].tolist()
    return {"probabilities": outputs["probabilities"].tolist(), "label": outputs["label"],
            "index": outputs["index"].tolist()}


@v1_bp.post("/v1/models/<segment:name>:<any(classify, regress, explain):verb>")
@v1_bp.post("/v1/models/<segment:name>/versions/<segment:version>:<any(classify, regress, explain):verb>")
@v1_bp.post("/v1/models/<segment:name>/labels/<segment:label>:<any(classify, regress, explain):verb>")
def classify_or_regress(name: str, verb: str, version: str | None = None, label: str | None = None):
    """TF Serving's other two verbs take tf.Example protos, which no scratchnet model reads; KServe V1's
    :explain needs an explainer beside the model (KServe answers 501 where there is none; here a 400, as for
    every request the service will not serve, so that no client's request gets a server error)."""
    read_body(compressed=True)  # read, not used: a body left unread can cost the connection (see v2.infer)
    model = resolve_servable(name, version, label)
    instead = "POST {\"instances\": [...]} or {\"inputs\": ...} to :predict instead"
    if verb == "explain":
        raise BadRequest(f"The explain API is not served: no explainer runs beside model '{model.name}'; "
                         f"for its predictions, {instead}.", code="unsupported_api")
    raise BadRequest(f"The {verb} API takes tf.Example inputs, which model '{model.name}' does not read: "
                     f"{instead}.", code="unsupported_api")


# status ------------------------------------------------------------------------------------------


@v1_bp.get("/v1/models")
def list_models():
    return {"models": service().store.names()}


@v1_bp.get("/v1/models/<segment:name>")
@v1_bp.get("/v1/models/<segment:name>/versions/<segment:version>")
@v1_bp.get("/v1/models/<segment:name>/labels/<segment:label>")
def status(name: str, version: str | None = None, label: str | None = None):
    store = service().store
    number = tf_serving_version(version)
    missing = (f"Could not find any versions of model {name}" if number is None
               else f"Could not find version {number} of model {name}")
    with not_found_in_words(tf_serving_words(missing, label)):
        number = None if version is None else version_number(version)  # 404 for 0 or ten digits, in the words above
        info = store.describe(name)
        if label is not None:
            number = store.label_version(name, label)
        unloaded = bool(info.get("unloaded"))
        if number is None and not info["versions"]:  # named in SCRATCHNET_MODELS, or a folder of serving.json alone
            raise NotFound(f"The registry has no version of {name}; it serves once one is published.",
                           code="version_not_found")
        if number is None:
            versions = [(v["version"], v["status"]) for v in info["versions"]]
            ready = info["ready"] and not unloaded
        else:
            try:
                entry = store.describe_version(name, number)  # 404 for an unknown version
            except NotFound:
                if label is None:
                    raise
                raise dangling_label(name, label, number) from None
            versions = [(entry["version"], entry["status"])]
            ready = entry["status"] == AVAILABLE and not unloaded
    return {"model_version_status": [version_status(v, status, unloaded) for v, status in reversed(versions)],
            "name": name, "ready": ready}


# TensorFlow's names for the element types of service.protocols.signature's tensors.
TF_DTYPES = {"FP32": "DT_FLOAT", "BYTES": "DT_STRING", "UINT8": "DT_UINT8", "INT64": "DT_INT64"}


@v1_bp.get("/v1/models/<segment:name>/metadata")
@v1_bp.get("/v1/models/<segment:name>/versions/<segment:version>/metadata")
@v1_bp.get("/v1/models/<segment:name>/labels/<segment:label>/metadata")
def metadata(name: str, version: str | None = None, label: str | None = None):
    model = resolve_servable(name, version, label)
    signature_def = {"inputs": tensor_infos(signature.input_specs(model)),
                     "outputs": tensor_infos(signature.output_specs(model)),
                     "method_name": "tensorflow/serving/predict"}
    return {"model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature_def}}}}


def tensor_infos(specs: list[signature.TensorSpec]) -> dict:
    """TensorFlow's TensorInfo of each tensor, by name."""
    return {spec.name: {"dtype": TF_DTYPES[spec.datatype],
                        "tensor_shape": {"dim": [{"size": str(size), "name": ""} for size in spec.shape],
                                         "unknown_rank": False},
                        "name": spec.name}
            for spec in specs}


def version_status(version: int, status: str, unloaded: bool) -> dict:
    """One version as TF Serving reports it: state AVAILABLE, LOADING or END (unloaded, or failed)."""
    reason = failure_reason(status)
    if reason is not None:
        state, code, message = "END", "UNKNOWN", reason
    elif unloaded:
        state, code, message = "END", "OK", ""
    elif status == AVAILABLE:
        state, code, message = "AVAILABLE", "OK", ""
    else:
        state, code, message = "LOADING", "OK", ""
    return {"version": str(version), "state": state, "status": {"error_code": code, "error_message": message}}
