"""Pydantic models of the native API: request bodies and query strings are validated with them,
and ``service.openapi`` builds the OpenAPI document from their JSON schemas (responses too)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, WithJsonSchema, model_validator

from shared.preprocess import json_type_name
from shared.registry import MAX_VERSION

NUMBER_ARRAY = {"type": "array", "items": {"type": "number"}, "minItems": 1}
BASE64_SCHEMA = {"type": "string", "minLength": 4, "contentEncoding": "base64",
                 "pattern": r"^(data:[^,]*;base64,)?[A-Za-z0-9+/_=\s-]+$",
                 "description": "An image file (PNG, JPEG, WEBP, BMP, GIF, TIFF) in base64."}
VECTORS_SCHEMA = {
    "description": ("One vector of numbers, or a batch: a list of vectors, each as long as the model's input. "
                    "An image model's vectors are its 28x28 field as pixels in [0, 1], light ink on dark."),
    "anyOf": [NUMBER_ARRAY, {"type": "array", "items": NUMBER_ARRAY, "minItems": 1}],
}


def json_schema_pattern(pattern: re.Pattern) -> str:
    """A pattern that ends in ``\\Z`` as JSON Schema writes it: ECMAScript has no ``\\Z``, and its ``$``
    matches only at the very end (Python's ``$`` also before a final newline)."""
    if not pattern.pattern.endswith(r"\Z"):
        raise ValueError(f"{pattern.pattern!r} does not end in \\Z")
    return pattern.pattern.removesuffix(r"\Z") + "$"


def no_default(schema: dict) -> None:
    schema.pop("default", None)  # absent means "not given", which null would not describe


def integral_number(value):
    """A JSON number that is a whole number, 3.0 as much as 3, as an int: JSON Schema (2020-12, the
    dialect of OpenAPI 3.1) counts 3.0 an integer, so the schemas this service publishes admit it."""
    return int(value) if type(value) is float and value.is_integer() else value


JsonInt = Annotated[StrictInt, BeforeValidator(integral_number)]  # 3 or 3.0; not "3", 3.5 or true


class Strict(BaseModel):
    """Request objects of the native API and the protocols alike: an unknown key is refused."""
    model_config = ConfigDict(extra="forbid")


# requests -----------------------------------------------------------------------------------


def whole_number_text(value):
    """Query strings and form fields are text: "3" is read as 3, and nothing looser. Python's int()
    and pydantic's lax mode would read "3_0" as 30 and "3.0" or "+3" as 3."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"a whole number from 0 to 1000 is expected, not {value!r}")
        if (digits := len(text.lstrip("0"))) > 9:  # int() refuses over 4,300 digits, in words for a programmer
            raise ValueError(f"must be at most 1000, not an integer of {digits} digits")  # as a JSON one is told
        return int(text)
    return value


def truth_text(value):
    """A query's true or false, in those words (pydantic's own refusal does not say which words it reads)."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false"):
            raise ValueError(f"true or false is expected, not {value!r}")
        return value.strip().lower() == "true"
    return value


class PredictQuery(Strict):
    # JSON bodies take integers only (PredictRequest).
    top_k: Annotated[int, BeforeValidator(whole_number_text)] = Field(
        None, ge=0, le=1000, description="How many of the most probable classes to list (default 3; 0 leaves the "
                                         "list out).")
    input_image: Annotated[bool, BeforeValidator(truth_text)] = Field(
        False, description="true: each prediction of an image model carries the picture the network read, as "
                           "input_image (default false).")


class PredictRequest(Strict):
    """A JSON prediction request: numeric ``inputs`` or base64 ``images``, not both."""

    # Exactly one of the two, said without oneOf or anyOf at the top: a code generator (openapi-python-client)
    # reads an object schema whose top is a union as an untyped value, and makes no request class of it.
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "not": {"required": ["inputs", "images"]},
        "if": {"not": {"required": ["inputs"]}}, "then": {"required": ["images"]}})

    # The numbers are checked by shared.preprocess.validate_vectors, which turns a large batch
    # into an array at NumPy speed and names the first bad value; the schema documents them.
    # Fields default to None when absent, but an explicit null is refused, as the schema says.
    inputs: Annotated[Any, WithJsonSchema(VECTORS_SCHEMA)] = Field(None, json_schema_extra=no_default)
    images: list[Annotated[str, WithJsonSchema(BASE64_SCHEMA)]] = Field(
        None, min_length=1, description="Base64 images (a data: URL is accepted).", json_schema_extra=no_default)
    top_k: JsonInt = Field(None, ge=0, le=1000, description="As the top_k query parameter.",
                             json_schema_extra=no_default)

    @model_validator(mode="after")
    def one_kind_of_input(self):
        given = [name for name in ("inputs", "images") if name in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("give either 'inputs' (numbers) or 'images' (base64), exactly one of them")
        if given == ["inputs"] and not isinstance(self.inputs, (list, dict)):  # an object is told to be a list later
            raise ValueError("'inputs' must be a vector or a list of vectors ([[...numbers...]]), not "
                             f"{json_type_name(self.inputs)}")
        first = self.inputs[0] if isinstance(self.inputs, list) and self.inputs else None
        if isinstance(first, str) and (len(first) >= 64 or first.startswith("data:")):  # no number is that text
            raise ValueError("'inputs' holds a picture's text, and takes numbers: send pictures as base64 under "
                             "'images' ({\"images\": [\"<base64>\"]})")
        return self


class LabelRequest(Strict):
    version: JsonInt = Field(ge=1, le=MAX_VERSION, description="The version the label points to.")


# responses ----------------------------------------------------------------------------------


class ErrorResponse(BaseModel):
    error: str = Field(description="One sentence saying what is wrong and how to fix it.")
    code: str = Field(description="A machine-readable code, e.g. invalid_input, model_not_found.")
    details: list[Any] = Field(description="Per-item detail, e.g. the field or image each problem is in.")


class ModelRef(BaseModel):
    name: str
    version: int


class TopKEntry(BaseModel):
    label: str
    probability: float


INPUT_IMAGE = Field(None, description="With input_image=true in the query: the picture the network read (its input "
                                     "field, dark on white), as a data: URL of a PNG.")


class ClassPrediction(BaseModel):
    label: str
    index: int
    confidence: float
    top_k: list[TopKEntry] | None = None
    input_image: str | None = INPUT_IMAGE


class ValuePrediction(BaseModel):
    value: float
    input_image: str | None = INPUT_IMAGE


class PredictResponse(BaseModel):
    model: ModelRef
    predictions: list[ClassPrediction | ValuePrediction]


class VersionSummary(BaseModel):
    version: int
    status: str = Field(description="available, loading, or 'failed: <reason>'.")
    served: bool
    pinned: bool
    labels: list[str]


class InputInfo(BaseModel):
    kind: Literal["image", "vector"]
    size: int


class ModelInfo(BaseModel):
    name: str
    ready: bool
    served_version: int | None
    pinned: int | None
    labels: dict[str, int] = Field(description="Serving labels and the version each points to.")
    versions: list[VersionSummary]
    problems: list[str]
    swaps: int = Field(description="Changes of the served version seen by the worker that answered (each worker "
                                   "counts its own; scratchnet_model_worker_swaps_total sums them).")
    unloaded: bool = Field(False, description="Taken out of service (V2 repository unload) until loaded again.")
    task: Literal["classification", "regression"] | None
    input: InputInfo | None
    classes: list[str] | None
    manifest: dict[str, Any] | None = Field(description="The served version's manifest (no parameter arrays).")


class ModelList(BaseModel):
    default_model: str
    models: list[ModelInfo]
    problems: list[str] = Field([], description="Why the registry's models cannot be listed (its folder is missing "
                                                "or cannot be read, or is a model's folder, not a registry).")


class VersionInfo(BaseModel):
    name: str
    version: int
    status: str
    served: bool
    pinned: bool
    labels: list[str]
    manifest: dict[str, Any] | None


class Health(BaseModel):
    status: Literal["ok"]


class ModelReadiness(BaseModel):
    ready: bool
    version: int | None
    unloaded: bool | None = Field(None, description="true: unloaded on purpose; does not make the service unready.")


class RegistryStatus(BaseModel):
    path: str
    ok: bool
    error: str | None
    unreadable_models: dict[str, str] = Field(
        description="Model folders this worker cannot list, with the reason: they are not served, "
                    "and do not make the service unready.")
    misnamed_folders: dict[str, str] = Field(
        description="Folders of versions that are not read as models (their names, or their versions' "
                    "names, are not valid), with what to rename.")


class DefaultModelReadiness(ModelReadiness):
    name: str
    reason: str | None = Field(
        None, description="Why POST /predict answers 404 (or 503): the default model is not one of the models "
                          "served, which readiness waits for (SCRATCHNET_MODELS, else the registry's).")


class Readiness(BaseModel):
    ready: bool
    models: dict[str, ModelReadiness]
    default_model: DefaultModelReadiness = Field(
        description="The model POST /predict answers with (SCRATCHNET_DEFAULT_MODEL). It makes the service unready "
                    "only as one of the models served: once it is not one of them, the others stay ready.")
    registry: RegistryStatus
    reason: str | None = None
