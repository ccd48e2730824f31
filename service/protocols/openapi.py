"""The standard protocols' routes in the OpenAPI document: ``paths()`` and the schemas of
``SCHEMA_MODELS`` are merged into ``service.openapi.openapi_document`` beside the native API's."""

from __future__ import annotations

from pydantic import BaseModel

from ..openapi_parts import (ADMIN_SECURITY, BINARY, LABEL_PARAM, NAME_PARAM, SHARED_MEANINGS, error_response,
                             operation_id, ref, with_405)
from . import schemas
from .binary import HEADER_LENGTH

VERSION_PARAM = {"name": "version", "in": "path", "required": True, "description": "Version number.",
                 "schema": {"type": "string", "pattern": schemas.VERSION_TEXT}}
V2_TAG, V1_TAG = "KServe V2 (Open Inference Protocol)", "TF Serving / KServe V1"

MEANINGS = {
    **SHARED_MEANINGS,
    400: "The request cannot be used: malformed JSON or binary data, an unknown input or output, a wrong shape, "
         "datatype or value.",
    409: "The version cannot be served.",
    413: "Too large: body (also once inflated), image pixels, batch or number of values.",
    503: "Not ready: no servable version, the model is unloaded, or the registry is unavailable.",
}
INFER_ERRORS = (400, 404, 408, 413, 503)
ADMIN_ERRORS = (400, 401, 403, 404, 408, 409, 413, 503)


def _json(model: type[BaseModel] | dict) -> dict:
    return {"application/json": {"schema": model if isinstance(model, dict) else ref(model)}}


def _operation(method: str, path: str, summary: str, tag: str, response, *, parameters=(), errors=(),
               body: dict | None = None, admin: bool = False, not_ready=None, binary_response=False) -> tuple:
    ok = {"description": "Success.", "content": _json(response)}
    if binary_response:
        ok["content"]["application/octet-stream"] = {"schema": BINARY}
        ok["headers"] = {HEADER_LENGTH: {"description": "Length of the JSON part when binary outputs follow it.",
                                         "schema": {"type": "integer"}}}
    responses = {"200": ok}
    for status in with_405(path, errors):
        responses[str(status)] = error_response(status, MEANINGS, schemas.ProtocolError)
    if not_ready is not None:
        responses["503"] = {"description": "Not ready.", "content": _json(not_ready)}
    operation = {"summary": summary, "operationId": operation_id(method, path), "tags": [tag],
                 "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    if body:
        operation["requestBody"] = body
    if admin:
        operation["security"] = ADMIN_SECURITY
    return path, method, operation


INFER_BODY = {
    "required": True,
    "description": "JSON, or the binary tensor data extension: the JSON header, then the binary tensors (the "
                   f"{HEADER_LENGTH} header gives the JSON length). Content-Encoding gzip or deflate is accepted.",
    "content": {**_json(schemas.InferRequest), "application/octet-stream": {"schema": BINARY}},
}
INFER_HEADERS = [
    {"name": HEADER_LENGTH, "in": "header", "required": False, "schema": {"type": "integer", "minimum": 1},
     "description": "Length in bytes of the JSON part of a binary request (0, which Triton reads as a raw binary "
                    "request, is refused); without it the whole body is JSON."},
]
V1_BODY = {"required": True, "content": _json(schemas.V1PredictRequest)}


def _optional(model: type[BaseModel]) -> dict:
    return {"required": False, "content": _json(model)}


def _operations() -> list[tuple]:
    ops = [
        _operation("get", "/v2", "Server metadata: name, version, extensions.", V2_TAG, schemas.ServerMetadata),
        _operation("get", "/v2/health/live", "Liveness.", V2_TAG, schemas.Live),
        _operation("get", "/v2/health/ready", "Readiness: every model that is not unloaded can serve.", V2_TAG,
                   schemas.Ready, not_ready=schemas.Ready),
        _operation("get", "/v2/models/stats", "Triton's statistics of every version of every model that can answer "
                   "or has.", V2_TAG, schemas.ModelStatistics),
    ]
    for prefix, params, which, stats_of in (
            ("/v2/models/{name}", [NAME_PARAM], "the served version",
             "every version of the model that can answer or has"),
            ("/v2/models/{name}/versions/{version}", [NAME_PARAM, VERSION_PARAM], "one version", "one version")):
        ops += [
            _operation("get", prefix, f"Model metadata of {which}: versions, platform, input and output tensors.",
                       V2_TAG, schemas.ModelMetadata, parameters=params, errors=(404, 503)),
            _operation("get", prefix + "/config", f"Triton's model configuration of {which}: batch limit, "
                       "input and output tensors.", V2_TAG, schemas.ModelConfig, parameters=params, errors=(404, 503)),
            _operation("get", prefix + "/stats", f"Triton's statistics of {stats_of}.", V2_TAG,
                       schemas.ModelStatistics, parameters=params, errors=(404, 503)),
            _operation("get", prefix + "/ready", f"Whether {which} can serve (200) or not (503).", V2_TAG,
                       schemas.ModelReady, parameters=params, errors=(404,), not_ready=schemas.ModelReady),
            _operation("post", prefix + "/infer", f"Inference with {which}.", V2_TAG, schemas.InferResponse,
                       parameters=params + INFER_HEADERS, errors=INFER_ERRORS, body=INFER_BODY, binary_response=True),
        ]
        ops += [_unserved("post", f"{prefix}/{verb}", f"Not supported: Triton's {verb} extension maps text onto "
                          "a language model's tensors, and no model here takes text; the answer is always an error "
                          "saying to use /infer.", V2_TAG, params, (400, 404, 503))
                for verb in ("generate", "generate_stream")]
    for path in ("/v2/trace/setting", "/v2/models/{name}/trace/setting"):
        ops += [_unserved(method, path, "Not supported: Triton's trace extension; the answer is always an error "
                          "saying where request times are.", V2_TAG, [NAME_PARAM] if "{name}" in path else [], (400,))
                for method in ("get", "post")]
    ops += [_unserved(method, "/v2/logging", "Not supported: Triton's logging extension; the answer is always an "
                      "error naming the settings to change instead.", V2_TAG, [], (400,)) for method in ("get", "post")]
    ops += [
        _operation("post", "/v2/repository/index", "Every version of every model: READY, UNAVAILABLE or LOADING.",
                   V2_TAG, {"type": "array", "items": ref(schemas.RepositoryEntry)}, errors=(400, 401, 403, 408, 413),
                   body=_optional(schemas.RepositoryIndexRequest), admin=True),
        _operation("post", "/v2/repository/models/{name}/load", "Load a model (back into service); "
                   "parameters.version pins a version.", V2_TAG, schemas.RepositoryResult, parameters=[NAME_PARAM],
                   errors=ADMIN_ERRORS, body=_optional(schemas.LoadRequest), admin=True),
        _operation("post", "/v2/repository/models/{name}/unload", "Take a model out of service on every worker.",
                   V2_TAG, schemas.RepositoryResult, parameters=[NAME_PARAM], errors=ADMIN_ERRORS,
                   body=_optional(schemas.UnloadRequest), admin=True),
        _operation("get", "/v1/models", "The models' names.", V1_TAG, schemas.ModelNames),
    ]
    # Without a version, TF Serving's status lists every version of the model, not the served one.
    for path, params, which, status_of in (
            ("/v1/models/{name}", [NAME_PARAM], "the served version", "every version"),
            ("/v1/models/{name}/versions/{version}", [NAME_PARAM, VERSION_PARAM], "one version", "one version"),
            ("/v1/models/{name}/labels/{label}", [NAME_PARAM, LABEL_PARAM], "the version a label points to",
             "the version a label points to")):
        ops += [
            _operation("get", path, f"Status of {status_of} (model_version_status).", V1_TAG, schemas.ModelStatus,
                       parameters=params, errors=(404, 503)),
            _operation("get", path + "/metadata", f"The serving_default signature of {which}: input and output "
                       "tensors with TensorFlow's type names.", V1_TAG, schemas.V1ModelMetadata, parameters=params,
                       errors=(404, 503)),
            _operation("post", path + ":predict", f"Predict with {which}: instances (rows) or inputs (columns); "
                       "Content-Encoding gzip or deflate is accepted.",
                       V1_TAG, schemas.V1PredictResponse, parameters=params, errors=INFER_ERRORS, body=V1_BODY),
        ]
        ops += [_unserved("post", f"{path}:{verb}", f"Not supported: TF Serving's {verb} takes tf.Example inputs, "
                          "which no model here reads; the answer is always an error saying to use :predict.", V1_TAG,
                          params, (400, 404, 503)) for verb in ("classify", "regress")]
        ops.append(_unserved("post", f"{path}:explain", "Not supported: KServe V1's explain needs an explainer beside "
                             "the model, which this service does not run; the answer is always an error saying to "
                             "use :predict.", V1_TAG, params, (400, 404, 503)))
    return ops


def _unserved(method: str, path: str, summary: str, tag: str, params: list, errors: tuple[int, ...]) -> tuple:
    """A standard route the service answers only with an error that says what to use instead."""
    route, method, operation = _operation(method, path, summary, tag, schemas.ProtocolError, parameters=params,
                                          errors=errors)
    del operation["responses"]["200"]
    return route, method, operation


def paths() -> dict:
    result: dict = {}
    for path, method, operation in _operations():
        result.setdefault(path, {})[method] = operation
    return result


SCHEMA_MODELS = [schemas.ServerMetadata, schemas.Live, schemas.Ready, schemas.ModelMetadata, schemas.ModelConfig,
                 schemas.ModelStatistics, schemas.ModelReady, schemas.InferRequest, schemas.InferResponse,
                 schemas.RepositoryIndexRequest, schemas.RepositoryEntry, schemas.LoadRequest, schemas.UnloadRequest,
                 schemas.RepositoryResult, schemas.V1PredictRequest, schemas.V1PredictResponse, schemas.ModelStatus,
                 schemas.ModelNames, schemas.V1ModelMetadata, schemas.ProtocolError]

