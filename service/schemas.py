"""Pydantic models of the native API: request bodies and query strings are validated with them,
and ``service.openapi`` builds the OpenAPI document from their JSON schemas (responses too)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

NUMBER_ARRAY = {"type": "array", "items": {"type": "number"}, "minItems": 1}
VECTORS_SCHEMA = {
    "description": "One vector of numbers, or a batch: a list of vectors, each as long as the model's input.",
    "anyOf": [NUMBER_ARRAY, {"type": "array", "items": NUMBER_ARRAY, "minItems": 1}],
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# requests -----------------------------------------------------------------------------------


class PredictQuery(Strict):
    top_k: int | None = Field(None, ge=0, le=1000, description="How many of the most probable classes to list "
                                                                "(default 3; 0 leaves the list out).")


class PredictRequest(Strict):
    """A JSON prediction request: numeric ``inputs`` or base64 ``images``, not both."""

    # The numbers are checked by shared.preprocess.validate_vectors, which turns a large batch
    # into an array at NumPy speed and names the first bad value; the schema documents them.
    inputs: Annotated[Any, WithJsonSchema(VECTORS_SCHEMA)] = None
    images: list[str] | None = Field(None, min_length=1, description="Base64 images (a data: URL is accepted).")
    top_k: int | None = Field(None, ge=0, le=1000, description="As the top_k query parameter.")

    @model_validator(mode="after")
    def one_kind_of_input(self):
        if (self.inputs is None) == (self.images is None):
            raise ValueError("give either 'inputs' (numbers) or 'images' (base64), exactly one of them")
        return self


class LabelRequest(Strict):
    version: int = Field(ge=1, description="The version the label points to.")


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


class ClassPrediction(BaseModel):
    label: str
    index: int
    confidence: float
    top_k: list[TopKEntry] | None = None


class ValuePrediction(BaseModel):
    value: float


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
    swaps: int
    unloaded: bool = Field(False, description="Taken out of service (V2 repository unload) until loaded again.")
    task: Literal["classification", "regression"] | None
    input: InputInfo | None
    classes: list[str] | None
    manifest: dict[str, Any] | None = Field(description="The served version's manifest (no parameter arrays).")


class ModelList(BaseModel):
    default_model: str
    models: list[ModelInfo]


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


class Readiness(BaseModel):
    ready: bool
    models: dict[str, ModelReadiness]
    registry: RegistryStatus
    reason: str | None = None
