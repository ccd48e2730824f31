"""Pydantic models of the standard protocols' JSON: requests are validated with them and
``service.protocols.openapi`` documents both directions from their JSON schemas."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator,
                      model_validator)

from shared.registry import MAX_VERSION, VERSION_PATTERN
from shared.text import shortened

from ..schemas import ErrorResponse, JsonInt, Strict, integral_number, json_schema_pattern, no_default
from .binary import DATATYPES

VERSION_TEXT = json_schema_pattern(VERSION_PATTERN)  # a version's digits in a JSON schema
TENSOR_DATA = {"description": "The elements in row-major order, flat or nested as the shape; BYTES elements "
                              "are strings (base64 for images).",
               "type": "array", "items": {}}


class Open(BaseModel):
    """Parameter objects: the documented keys are checked, others are accepted and ignored."""
    model_config = ConfigDict(extra="allow")


# KServe V2 / Open Inference Protocol -----------------------------------------------------------


class TensorParameters(Open):
    binary_data_size: Annotated[JsonInt, Field(ge=0)] | None = Field(
        None, description="The tensor's data is this many bytes of the binary part of the body.")


class RequestInput(Strict):
    name: str
    shape: list[Annotated[JsonInt, Field(ge=0)]]
    datatype: str = Field(description="One of " + ", ".join(DATATYPES) + ".")
    parameters: TensorParameters | None = None
    data: Annotated[Any, WithJsonSchema(TENSOR_DATA)] = Field(None, json_schema_extra=no_default)


class OutputParameters(Open):
    binary_data: StrictBool | None = Field(None, description="Return this output in the binary part of the body.")
    classification: Annotated[JsonInt, Field(ge=0)] | None = Field(
        None, description="Return, per row, this output's k highest elements as BYTES '<value>:<position>' "
                          "(with ':<label>' on 'probabilities': the k most probable classes).")


class RequestOutput(Strict):
    name: str
    parameters: OutputParameters | None = None


class RequestParameters(Open):
    binary_data_output: StrictBool | None = Field(None, description="Default of every output's binary_data.")


class InferRequest(Strict):
    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None
    # Sent by some clients (KServe's); the URL names the model.
    model_name: str | None = Field(None, description="When given, the model the URL names (else 400).")
    model_version: str | None = Field(None, description="When given, the version that answers (else 400): the "
                                                        "URL's, or without one the served version.")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Annotated[Any, WithJsonSchema(TENSOR_DATA)] = Field(None, json_schema_extra=no_default)


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size (the batch).")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata] = Field(description="A request gives exactly one of these.")
    outputs: list[TensorMetadata]


class ConfigTensor(BaseModel):
    name: str
    data_type: str = Field(description="TYPE_FP32, TYPE_INT64, TYPE_UINT8 or TYPE_STRING (BYTES).")
    dims: list[int] = Field(description="Without the batch dimension.")
    reshape: dict[str, list[int]] | None = Field(None, description="{\"shape\": []}: one value per batch item.")
    optional: bool | None = Field(None, description="true: a request gives one of the optional inputs.")


class ModelConfig(BaseModel):
    name: str
    platform: str
    backend: str
    version_policy: dict[str, Any] = Field(description='{"specific": {"versions": [<pinned>]}} or {"latest": ...}.')
    max_batch_size: int = Field(description="Most inputs in one request (SCRATCHNET_MAX_BATCH).")
    input: list[ConfigTensor]
    output: list[ConfigTensor]


class DurationStat(BaseModel):
    count: int
    ns: int = Field(description="Their total time in nanoseconds.")


class InferenceStats(BaseModel):
    success: DurationStat = Field(description="Predictions answered: from the body read to the answer encoded.")
    fail: DurationStat = Field(description="Prediction requests refused once their version was chosen (bad input).")
    queue: DurationStat = Field(description="No queue: a request runs on the thread that reads it (0 ns).")
    compute_input: DurationStat = Field(description="Reading, validating and preprocessing the inputs.")
    compute_infer: DurationStat = Field(description="The forward pass.")
    compute_output: DurationStat = Field(description="Encoding the answer.")
    cache_hit: DurationStat = Field(description="No response cache: always 0.")
    cache_miss: DurationStat = Field(description="No response cache: always 0.")


class ModelStat(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="When the version last answered, in ms since the epoch (0: never).")
    inference_count: int = Field(description="Inputs predicted (each row of a batch counts).")
    execution_count: int = Field(description="Forward passes (one per request).")
    inference_stats: InferenceStats
    batch_stats: list[dict[str, Any]] = Field(description="Always empty: nothing is kept per batch size.")


class ModelStatistics(BaseModel):
    model_stats: list[ModelStat] = Field(description="Of every protocol and worker since the service started.")


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool
    reason: str | None = None


class ModelReady(BaseModel):
    name: str
    ready: bool


class RepositoryIndexRequest(Strict):
    ready: StrictBool | None = Field(None, description="true: list only the versions ready to serve.")


class RepositoryEntry(BaseModel):
    name: str
    version: str | None = None
    state: Literal["READY", "UNAVAILABLE", "LOADING"]
    reason: str


class LoadParameters(Open):
    version: Annotated[int | str | None, WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}, {"type": "string", "pattern": VERSION_TEXT},
        {"type": "null"}]})] = Field(
        None, description="Pin this version (it must load).")
    config: str | None = Field(None, description="Triton-style model config as JSON; only version_policy is used.")

    @field_validator("version", mode="before")
    @classmethod
    def a_version(cls, value):
        """One message for every wrong kind of value, rather than one per member of a union."""
        value = integral_number(value)
        if value is None or (type(value) is int and 1 <= value <= MAX_VERSION):
            return value
        if type(value) is str and VERSION_PATTERN.match(value):
            return value
        if type(value) is int and value > MAX_VERSION:  # a JSON integer past 64 bits arrives as a float's value
            raise ValueError(f"a version is at most {MAX_VERSION:,}, not a number of {len(str(value))} digits")
        raise ValueError(f"{shortened(json.dumps(value), 20)} is not a version: give a positive integer, such as 3, "
                         'or its digits as a string ("3")')


class LoadRequest(Strict):
    parameters: LoadParameters | None = None


class UnloadRequest(Strict):
    parameters: dict[str, Any] | None = None


class RepositoryResult(BaseModel):
    name: str
    load: bool | None = None
    unload: bool | None = None


# TF Serving / KServe V1 ------------------------------------------------------------------------


class V1PredictRequest(Strict):
    signature_name: str | None = Field(None, description='Only "serving_default" (or empty or absent: the default).')
    # items: {} (any item) changes nothing for a validator, but a generator that finds no items drops the schema,
    # and the :predict operations with it (openapi-python-client).
    instances: Annotated[Any, WithJsonSchema({"type": "array", "items": {}, "minItems": 1, "description":
                                               'Row format: one item per input (a list of numbers, or {"b64": ...} '
                                               '(or [{"b64": ...}]) for an image, or an object naming the '
                                               'input).'})] = Field(
        None, json_schema_extra=no_default)
    inputs: Annotated[Any, WithJsonSchema({"description": "Columnar format: the batch of one input, or an object "
                                                          "naming the input."})] = None
    parameters: dict[str, Any] | None = Field(None, description="Accepted and ignored: Vertex AI sends it beside "
                                                                "instances; no model here takes parameters.")

    @model_validator(mode="after")
    def one_format(self):
        if (self.instances is None) == (self.inputs is None):
            raise ValueError("give either 'instances' (row format) or 'inputs' (columnar format), exactly one of them")
        return self


class V1PredictResponse(BaseModel):
    predictions: list[Any] | None = Field(None, description="Row format answer, one item per instance.")
    outputs: Any = Field(None, description="Columnar format answer.")


class VersionErrorStatus(BaseModel):
    error_code: str = Field(description='"OK", or a canonical error code such as "UNKNOWN".')
    error_message: str


class ModelVersionStatus(BaseModel):
    version: str
    state: Literal["AVAILABLE", "LOADING", "END"]
    status: VersionErrorStatus


class ModelStatus(BaseModel):
    model_version_status: list[ModelVersionStatus]
    name: str
    ready: bool = Field(description="KServe V1: the model can serve (unversioned requests).")


class ModelNames(BaseModel):
    models: list[str]


class TensorInfo(BaseModel):
    dtype: str = Field(description='TensorFlow\'s element type: "DT_FLOAT", "DT_STRING", "DT_UINT8" or "DT_INT64".')
    tensor_shape: dict = Field(description='{"dim": [{"size": "-1", "name": ""}, ...], "unknown_rank": false}; '
                                           '-1 is any size.')
    name: str


class SignatureDef(BaseModel):
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str = Field(description='"tensorflow/serving/predict".')


class ModelSpec(BaseModel):
    name: str
    signature_name: str
    version: str


class SignatureDefMap(BaseModel):
    signature_def: dict[str, SignatureDef] = Field(description='One signature, "serving_default".')


class ModelSignatureMetadata(BaseModel):
    signature_def: SignatureDefMap


class V1ModelMetadata(BaseModel):
    model_spec: ModelSpec
    metadata: ModelSignatureMetadata


class ProtocolError(ErrorResponse):
    """The service's error shape, its ``error`` the member Triton's and TF Serving's clients read."""

    error: str = Field(description="What is wrong, in the style of Triton and TF Serving; their clients read it.")
