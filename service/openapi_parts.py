"""What the native API's OpenAPI document (``service.openapi``) and the protocols' routes in it
(``service.protocols.openapi``) are built from alike: schema references, the path parameters that
name a model and a label, a binary body, the errors both answer in the same words and how each is
documented, and how an operation's id is made from its method and path."""

from __future__ import annotations

from pydantic import BaseModel

from shared.registry import LABEL_PATTERN, NAME_PATTERN

from .schemas import json_schema_pattern

REF = "#/components/schemas/{model}"
NAME_PARAM = {"name": "name", "in": "path", "required": True, "description": "Model name.",
              "schema": {"type": "string", "pattern": json_schema_pattern(NAME_PATTERN)}}
LABEL_PARAM = {"name": "label", "in": "path", "required": True, "description": "Serving label, e.g. stable.",
               "schema": {"type": "string", "pattern": json_schema_pattern(LABEL_PATTERN)}}
BINARY = {"type": "string", "format": "binary"}
ADMIN_SECURITY = [{"bearer": []}]
# The errors that mean the same on every route; each document adds its own words for the others.
SHARED_MEANINGS = {
    401: "No Authorization header, or not 'Bearer <token>'.",
    403: "Wrong token, or the admin API is disabled (no SCRATCHNET_ADMIN_TOKEN).",
    404: "Unknown model, version or label.",
    405: "The last path parameter holds a '/' (or, on /v1, a ':verb'), which makes the path another route's, "
         "one that does not take this method; Allow names the methods it takes.",
    408: "The body stopped arriving for longer than SCRATCHNET_CLIENT_TIMEOUT (under Gunicorn).",
}
ALLOW_HEADER = {"description": "The methods the path takes.", "schema": {"type": "string"}}


def ref(model: type[BaseModel]) -> dict:
    """A reference to ``model``'s schema among the document's components."""
    return {"$ref": REF.format(model=model.__name__)}


def with_405(path: str, errors: tuple[int, ...]) -> list[int]:
    """``errors``, and 405 for a path that ends in a parameter: a value of it holding a '/' (sent as %2F)
    or a TF Serving verb makes the path a longer route's, which may take other methods
    (``GET /models/x%2Fpredict`` is ``GET /models/x/predict``, a POST route)."""
    return sorted({*errors, 405} if path.endswith("}") else set(errors))


def error_response(status: int, meanings: dict[int, str], model: type[BaseModel]) -> dict:
    """The documented answer ``status``: what it means, the error body ``model``, and for a 405 its Allow header."""
    response = {"description": meanings[status], "content": {"application/json": {"schema": ref(model)}}}
    if status == 405:
        response["headers"] = {"Allow": ALLOW_HEADER}
    return response


def operation_id(method: str, path: str) -> str:
    """``get_models_name_versions_version`` for ``GET /models/{name}/versions/{version}``: the path's
    words, a TF Serving verb (``:predict``) and a file suffix (``.json``) among them; ``index`` for ``/``."""
    words = [w.strip("{}") for w in path.strip("/").replace(".", "_").replace(":", "/").split("/") if w] or ["index"]
    return method + "_" + "_".join(words)
