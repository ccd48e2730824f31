"""The OpenAPI 3.1 document of the native API, built from the pydantic schemas.

``OPERATIONS`` lists every route with its parameters, request bodies and responses;
``tests/test_service_api.py`` checks that it names exactly the routes the app serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from shared.registry import MAX_VERSION

from . import schemas
from .openapi_parts import (ADMIN_SECURITY, BINARY, LABEL_PARAM, NAME_PARAM, REF, SHARED_MEANINGS, error_response,
                            operation_id, ref, with_405)
from .protocols import openapi as protocols_openapi

VERSION_PARAM = {"name": "version", "in": "path", "required": True, "description": "Version number.",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}}
TOP_K_PARAM = {"name": "top_k", "in": "query", "required": False,
               "description": "How many of the most probable classes to list (default 3; 0 leaves the list out).",
               "schema": {"type": "integer", "minimum": 0, "maximum": 1000}}
INPUT_IMAGE_PARAM = {"name": "input_image", "in": "query", "required": False,
                     "description": schemas.PredictQuery.model_fields["input_image"].description,
                     "schema": {"type": "boolean", "default": False}}
PREDICT_BODY = {
    "required": True,
    "description": "An image, several images as a form, numbers as JSON, or a batch as a .npy array. "
                   "application/octet-stream is an image's bytes or a .npy file's, told apart by their first bytes; "
                   "application/npy is application/x-npy. In a form, every file is an image, whatever its field name "
                   "(file, repeated for several images, as curl -F file=@a.png -F file=@b.png sends them).",
    "content": {
        "application/json": {"schema": ref(schemas.PredictRequest)},
        "image/*": {"schema": BINARY},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "array", "items": BINARY, "minItems": 1}, "top_k": TOP_K_PARAM["schema"]},
        }, "encoding": {"file": {"contentType": "image/*"}}},
        "application/x-npy": {"schema": BINARY},
        "application/npy": {"schema": BINARY},
        "application/octet-stream": {"schema": BINARY},
    },
}
LABEL_BODY = {"required": True, "content": {"application/json": {"schema": ref(schemas.LabelRequest)}}}

ERROR_MEANINGS = {
    **SHARED_MEANINGS,
    400: "Malformed request: JSON, base64, multipart or .npy that cannot be parsed, or an empty body.",
    409: "The version cannot be served, or there is nothing to roll back to.",
    413: "Too large: body, image pixels, batch or number of values.",
    415: "Unsupported Content-Type or image format.",
    422: "Well-formed but invalid: wrong vector length, NaN, unknown field, bad top_k.",
    503: "No servable version (loading, or every version failed), or the registry is unavailable.",
}
PREDICT_ERRORS = (400, 404, 408, 413, 415, 422, 503)
ADMIN_ERRORS = (401, 403, 404, 409, 503)


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    response: type[BaseModel] | None
    errors: tuple[int, ...] = ()
    parameters: list = field(default_factory=list)
    body: dict | None = None
    admin: bool = False
    tag: str = "models"
    content_type: str = "application/json"
    response_headers: dict | None = None


PREDICT_HEADERS = {
    "X-Model-Version": {"description": "The version that answered.", "schema": {"type": "integer"}},
    "X-Model-Name": {"description": "The model that answered.", "schema": {"type": "string"}},
}


def _predict(path: str, summary: str, parameters: list) -> Operation:
    return Operation("post", path, summary, schemas.PredictResponse, PREDICT_ERRORS,
                     parameters + [TOP_K_PARAM, INPUT_IMAGE_PARAM], PREDICT_BODY, tag="predict",
                     response_headers=PREDICT_HEADERS)


OPERATIONS = [
    _predict("/predict", "Predict with the default model's served version.", []),
    _predict("/models/{name}/predict", "Predict with a model's served version.", [NAME_PARAM]),
    _predict("/models/{name}/versions/{version}/predict", "Predict with one version.", [NAME_PARAM, VERSION_PARAM]),
    _predict("/models/{name}/labels/{label}/predict", "Predict with the version a label points to.",
             [NAME_PARAM, LABEL_PARAM]),
    Operation("get", "/models", "Every model: served version, pin, labels, versions and their status.",
              schemas.ModelList),
    Operation("get", "/models/{name}", "One model: served version, pin, labels, versions, manifest.",
              schemas.ModelInfo, (404, 503), [NAME_PARAM]),
    Operation("get", "/models/{name}/versions/{version}", "One version: status and manifest.",
              schemas.VersionInfo, (404, 503), [NAME_PARAM, VERSION_PARAM]),
    Operation("get", "/models/{name}/labels/{label}", "The version a label points to: status and manifest.",
              schemas.VersionInfo, (404, 503), [NAME_PARAM, LABEL_PARAM]),
    Operation("post", "/models/{name}/versions/{version}/activate", "Pin a version (it must load).",
              schemas.ModelInfo, ADMIN_ERRORS, [NAME_PARAM, VERSION_PARAM], admin=True, tag="admin"),
    Operation("post", "/models/{name}/unpin", "Remove the pin: serve the highest version that loads.",
              schemas.ModelInfo, ADMIN_ERRORS, [NAME_PARAM], admin=True, tag="admin"),
    Operation("post", "/models/{name}/rollback", "Pin the highest servable version below the served one.",
              schemas.ModelInfo, ADMIN_ERRORS, [NAME_PARAM], admin=True, tag="admin"),
    Operation("put", "/models/{name}/labels/{label}", "Point a label at a version (it must load).",
              schemas.ModelInfo, (400,) + ADMIN_ERRORS + (408, 413, 415, 422), [NAME_PARAM, LABEL_PARAM], LABEL_BODY,
              admin=True, tag="admin"),
    Operation("delete", "/models/{name}/labels/{label}", "Remove a label.",
              schemas.ModelInfo, ADMIN_ERRORS + (422,), [NAME_PARAM, LABEL_PARAM], admin=True, tag="admin"),
    Operation("get", "/healthz", "Liveness: the process answers.", schemas.Health, tag="operations"),
    Operation("get", "/readyz", "Readiness: every configured model has a servable version.",
              schemas.Readiness, (503,), tag="operations"),
    Operation("get", "/metrics", "Prometheus metrics, summed over all workers.", None, tag="operations",
              content_type="text/plain"),
    Operation("get", "/openapi.json", "This document.", None, tag="operations"),
    Operation("get", "/docs", "This document as a web page.", None, tag="operations", content_type="text/html"),
    Operation("get", "/", "The drawing page (draw a digit or upload a picture) for a browser; KServe V1's "
              "server liveness, {\"status\": \"alive\"}, for a client whose Accept does not name HTML.", None,
              tag="operations", content_type="text/html"),
]

SCHEMA_MODELS = [schemas.PredictRequest, schemas.LabelRequest, schemas.ErrorResponse, schemas.PredictResponse,
                 schemas.ModelList, schemas.ModelInfo, schemas.VersionInfo, schemas.Health, schemas.Readiness]


def _components(models: list[type[BaseModel]]) -> dict:
    """JSON Schemas of ``models`` and of every model they refer to, keyed by class name."""
    components = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components


def _operation(op: Operation) -> dict:
    ok: dict = {"description": "Success."}
    if op.response is not None:
        ok["content"] = {"application/json": {"schema": ref(op.response)}}
    elif op.path == "/openapi.json":
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif op.path == "/":
        ok["content"] = {"text/html": {"schema": {"type": "string"}},
                         "application/json": {"schema": {"type": "object", "required": ["status"],
                                                         "properties": {"status": {"const": "alive"}}}}}
    else:
        ok["content"] = {op.content_type: {"schema": {"type": "string"}}}
    if op.response_headers:
        ok["headers"] = op.response_headers
    responses = {"200": ok}
    for status in with_405(op.path, op.errors):
        if status == 503 and op.path == "/readyz":
            responses["503"] = {"description": "Not ready; the reason says why.",
                                "content": {"application/json": {"schema": ref(schemas.Readiness)}}}
            continue
        responses[str(status)] = error_response(status, ERROR_MEANINGS, schemas.ErrorResponse)
    operation = {"summary": op.summary, "operationId": operation_id(op.method, op.path), "tags": [op.tag],
                 "responses": responses}
    if op.parameters:
        operation["parameters"] = op.parameters
    if op.body:
        operation["requestBody"] = op.body
    if op.admin:
        operation["security"] = ADMIN_SECURITY
    return operation


def openapi_document(version: str = "0.1.0") -> dict:
    paths: dict = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    paths.update(protocols_openapi.paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "scratchnet", "version": version,
                 "description": "Predictions from NumPy-from-scratch networks: images and numeric vectors. "
                                "Every error is JSON: {\"error\", \"code\", \"details\"} "
                                "(on the /v1 and /v2 protocol routes, \"error\" in the words Triton's and TF Serving's "
                                "clients know). "
                                "A method a path does not take is answered 405, with the methods it takes in Allow."},
        "paths": paths,
        "components": {
            "schemas": _components(SCHEMA_MODELS + protocols_openapi.SCHEMA_MODELS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "The SCRATCHNET_ADMIN_TOKEN of the service."}},
        },
    }
