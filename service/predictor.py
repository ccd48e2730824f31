"""The prediction core, free of HTTP: the native API's views and the standard-protocol views all
call it, and tests can too.

    predictor = Predictor(store, settings)
    model = predictor.resolve("mnist")                       # or version=3, or label="stable"
    batch = predictor.predict_images(model, [png_bytes], top_k=3)
    batch.to_dicts()      # [{"label": "7", "index": 7, "confidence": 0.99, "top_k": [...]}]
    batch.to_json()       # the native response body, bytes

Each call turns its inputs into one float32 batch with ``shared.preprocess``, runs the forward
pass once on it, and returns a ``PredictionBatch``. The ``Model`` is taken once at the start,
so a request finishes on the version it began with even if the store swaps meanwhile. Errors
are ``service.errors`` / ``shared.errors`` exceptions carrying their HTTP status.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
from PIL import Image

from shared.forward import Model
from shared.preprocess import arrays_to_batch, float32_within, images_to_batch, parse_image_spec, validate_vectors
from shared.text import shortened

from .config import Settings
from .encoding import classification_rows, prediction_response, regression_rows
from .errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType, fewer_vectors
from .store import ModelStore

DEFAULT_TOP_K = 3
# Up to this many rows, orjson on the row dicts is faster than the column encoder, whose
# fixed cost (~0.2 ms) pays off only on large batches. Both write the same values.
SMALL_BATCH_ROWS = 32
# An image model's vectors are pixels scaled to [0, 1]; a value this far outside is not one (0..255
# pixels, or pixels normalised already), and would be answered without a word, and wrongly.
PIXEL_SLACK = 0.01


@dataclass(frozen=True)
class PredictionBatch:
    """The answer to one batch: ``outputs`` are probabilities (n, classes) for classification,
    values (n,) in target units for regression. ``forward_started`` (``time.perf_counter()``)
    and ``forward_seconds`` time the forward pass, for the statistics of ``service.metrics``."""

    model: Model
    outputs: np.ndarray
    top_k: int
    forward_started: float = 0.0
    forward_seconds: float = 0.0
    inputs: np.ndarray | None = None  # what the network read, (n, input_size): for ``input_images``

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def classification(self) -> bool:
        return self.model.task == "classification"

    @property
    def indices(self) -> np.ndarray:
        return self.outputs.argmax(axis=1)

    def to_dicts(self, input_images: bool = False) -> list[dict]:
        """The predictions as Python objects (same content as ``to_json``); ``input_images``: each with the
        picture its image model read, as ``input_image``."""
        if input_images:
            return [{**row, "input_image": input_picture(self.model, vector)}
                    for row, vector in zip(self.to_dicts(), self.inputs)]
        if not self.classification:
            # 9 significant digits read back as the float32 the model computed, as regression_rows writes it.
            return [{"value": float(f"{v:.9g}")} for v in self.outputs.tolist()]
        labels = self.model.labels
        orders = np.argsort(-self.outputs, axis=1, kind="stable")[:, :max(self.top_k, 1)].tolist()
        rows = []
        for p, order in zip(self.outputs.tolist(), orders):
            row = {"label": labels[order[0]], "index": order[0], "confidence": round(p[order[0]], 6)}
            if self.top_k:
                row["top_k"] = [{"label": labels[i], "probability": round(p[i], 6)} for i in order]
            rows.append(row)
        return rows

    def to_json(self, input_images: bool = False) -> bytes:
        """``{"model": {"name", "version"}, "predictions": [...]}`` as JSON bytes, built without a
        Python object per row so large batches stay fast; ``input_images`` as ``to_dicts``."""
        if len(self) <= SMALL_BATCH_ROWS or input_images:
            body = {"model": {"name": self.model.name, "version": self.model.version},
                    "predictions": self.to_dicts(input_images)}
            return orjson.dumps(body)
        if self.classification:
            rows = classification_rows(self.outputs, self.model.labels, self.top_k)
        else:
            rows = regression_rows(self.outputs)
        return prediction_response(self.model.name, self.model.version, rows)


def input_picture(model: Model, vector: np.ndarray) -> str:
    """An image model's input ``vector`` as the picture the network reads, dark on white as it was most
    likely drawn: a data: URL of a PNG (a few hundred bytes for 28x28) that a browser shows whatever the
    format the picture came in (a TIFF, which no browser shows)."""
    (height, width), _ = parse_image_spec(model.preprocessing)
    grey = np.round(255 * (1 - np.clip(vector, 0, 1))).astype(np.uint8).reshape(height, width)
    encoded = io.BytesIO()
    Image.fromarray(grey, "L").save(encoded, "PNG")
    return "data:image/png;base64," + base64.b64encode(encoded.getvalue()).decode("ascii")


def describe(model: Model) -> str:
    return f"model {model.name} v{model.version}"


def vector_order(model: Model) -> str:
    """How a client sends ``model`` a vector: its values in a list, in the order of the columns it was trained on
    where it names them (a csv's header), which a client that sent them by name needs."""
    vector = f"send each vector as a list of {model.input_size} numbers"
    if not (columns := trained_columns(model)):
        return vector
    return f"{vector}, in the order of the columns {describe(model)} was trained on: {columns}"


def trained_columns(model: Model) -> str | None:
    """The columns ``model`` was trained on, in order, as a message names them; None where its manifest
    names none (an image model, an npz's)."""
    columns = model.manifest["input"].get("feature_names")
    return shortened(", ".join(columns), 400) if columns else None


def numbers_batch(key: str, model: Model) -> str:
    """A batch of ``model``'s vectors under ``key`` as a JSON body writes it, for a message to show."""
    return f'"{key}": [[...{model.input_size} numbers...]]'


def images_refused(model: Model, what: str, vectors: str) -> str:
    """Why ``model``, which reads vectors, refuses ``what`` (images, pixel arrays), and what to send instead:
    ``vectors``, a batch of them as the request's protocol writes it."""
    text = f"{describe(model)} reads vectors of {model.input_size} numbers, not {what}: send {vectors}"
    if columns := trained_columns(model):
        text += f", each vector's numbers in the order of the columns it was trained on: {columns}"
    return text


def columns_hint(model: Model, names) -> str:
    """What a protocol's message adds when the input ``names`` a request gives are the columns ``model`` was
    trained on, which are not its inputs."""
    columns = model.manifest["input"].get("feature_names") or []
    if not names or not set(names) <= set(columns):
        return ""
    return f" (its columns are not inputs: {vector_order(model)}, as 'input')"


def _check_pixel_range(model: Model, batch: np.ndarray) -> None:
    """Refuse an image model's vectors that are not pixels in [0, 1], saying what they look like."""
    low, high = batch.min(), batch.max()
    if low >= -PIXEL_SLACK and high <= 1 + PIXEL_SLACK:
        return
    # The hint goes by the whole batch (pixels normalised already reach 2.8 as well as -0.4), and the
    # value named is the first that shows it.
    if low < -PIXEL_SLACK:
        outside = batch < -PIXEL_SLACK
        hint = ("negative values are pixels normalised already: send the pixels before normalisation, which the "
                "model does itself")
    elif high > 2:
        outside = batch > 2
        hint = "values above 2 are pixels of 0..255: divide the pixels by 255"
    else:
        outside = batch > 1 + PIXEL_SLACK
        hint = "clip the values to [0, 1]"
    row, col = np.argwhere(outside)[0]
    where = f"position {col}" if len(batch) == 1 else f"vector {row}, position {col}"
    raise InvalidInput(f"The value at {where} is {batch[row, col]:.6g}; {describe(model)} takes pixels scaled to "
                       f"[0, 1], light ink on dark ({hint}), or the picture itself as an image.",
                       code="input_out_of_range")


class Predictor:
    def __init__(self, store: ModelStore, settings: Settings, before_decode: Callable[[int], None] | None = None):
        """``before_decode``: called with the pixels an image's decode is about to make (see
        shared.preprocess.images_to_batch)."""
        self.store = store
        self.settings = settings
        self.before_decode = before_decode

    # which model -------------------------------------------------------------------------

    def resolve(self, name: str | None = None, *, version: int | None = None, label: str | None = None) -> Model:
        """The model to answer with: a version, a labelled version, or the served one."""
        if not name:  # POST /predict: its client named no model, so a missing one is said to be the default
            try:
                return self.resolve(self.settings.default_model, version=version, label=label)
            except NotFound as e:
                if e.code != "model_not_found":
                    raise
                raise NotFound(f"POST /predict answers with the default model (SCRATCHNET_DEFAULT_MODEL), and "
                               f"{e.message[:1].lower()}{e.message[1:]} Name the model in the URL instead: POST "
                               "/models/<name>/predict.", code=e.code) from None
        self.store.require_loaded(name)
        if version is not None:
            return self.store.version(name, version)
        if label is not None:
            return self.store.labelled(name, label)
        return self.store.served(name)

    # inputs -> batch -----------------------------------------------------------------------

    def check_batch_size(self, n: int, what: str) -> None:
        """413 for more than ``max_batch`` inputs; the views call it before decoding each of them."""
        if n > self.settings.max_batch:
            limit = self.settings.max_batch
            raise PayloadTooLarge(f"The request holds {n} {what}; the limit is {limit} per request: split them into "
                                  f"requests of at most {limit}.", code="batch_too_large")

    def _check_values(self, model: Model, count: int) -> None:
        limit = self.settings.max_vector_values
        if count > limit:
            raise PayloadTooLarge(f"The request holds {count} numbers; the limit is {limit} per request: "
                                  f"{fewer_vectors(self.settings, model.input_size)}.", code="too_many_values")

    def _require_images(self, model: Model, what: str) -> None:
        if model.input_kind != "image":
            text = images_refused(model, what, f"JSON {{{numbers_batch('inputs', model)}}}")
            raise UnsupportedMediaType(f"{text[:1].upper()}{text[1:]}.", code="model_takes_vectors")

    def images_batch(self, model: Model, images: list[bytes], item_name: str = "image {}") -> np.ndarray:
        """Encoded images -> (n, 784) float32 through the model's preprocessing. An error in one of
        several images names it ``item_name.format(index)``."""
        self._require_images(model, "images")
        if not images:
            raise InvalidInput("No image given: send at least one.", code="no_input")
        self.check_batch_size(len(images), "images")
        return images_to_batch(images, model.preprocessing, max_pixels=self.settings.max_image_pixels,
                               max_total_pixels=self.settings.max_request_pixels, item_name=item_name,
                               before_decode=self.before_decode)

    def vectors_batch(self, model: Model, values) -> np.ndarray:
        """One vector or a batch (nested lists or an array) -> (n, input_size) float32, validated."""
        if isinstance(values, dict) or isinstance(values, list) and values and isinstance(values[0], dict):
            raise InvalidInput(f"Values named in an object are not read: {vector_order(model)}.")
        if isinstance(values, np.ndarray):
            n = values.shape[0] if values.ndim > 1 else 1
            count = values.size
        elif isinstance(values, (list, tuple)) and values and isinstance(values[0], (list, tuple)):
            n = len(values)
            count = sum(len(row) if isinstance(row, (list, tuple)) else 1 for row in values)
        else:
            n = 1
            count = len(values) if isinstance(values, (list, tuple)) else 1
        self.check_batch_size(n, "vectors")
        self._check_values(model, count)
        # An image model's float32 pixels are checked finite and in range in one pass (31 MB for a
        # 10,000-row batch: four passes took ~8 ms); anything else is checked in full.
        pixels = model.input_kind == "image"
        in_range = pixels and float32_within(values, 1 + PIXEL_SLACK)
        batch = validate_vectors(values, model.input_size, what=describe(model), max_batch=self.settings.max_batch,
                                 known_finite=in_range)
        if pixels and not in_range:
            _check_pixel_range(model, batch)
        return batch

    def array_batch(self, model: Model, array: np.ndarray) -> np.ndarray:
        """An ``.npy`` body's array: one vector (k,) or a batch (n, k). An image model's vectors are
        pixels scaled to [0, 1], so integers (0..255 as stored) are refused: read as they are, they
        would be answered without a word, and wrongly."""
        k = model.input_size
        if array.ndim not in (1, 2):
            raise InvalidInput(f"The .npy array has shape {list(array.shape)}; send one vector ({k},) or a batch "
                               f"(n, {k}).", code="invalid_npy_shape")
        if model.input_kind == "image" and array.dtype.kind in "iu":
            raise InvalidInput(f"The .npy array holds {array.dtype}; {describe(model)} takes floats in [0, 1] (pixels "
                               "/ 255, light ink on dark): send float32, or the picture itself as an image.",
                               code="invalid_npy_dtype")
        return self.vectors_batch(model, array)

    def pixels_batch(self, model: Model, arrays: list, item_name: str = "pixel array {}") -> np.ndarray:
        """Raw pixel arrays (each [h, w], [h, w, c] or flat) -> (n, 784) float32. An error in one of
        several arrays names it ``item_name.format(index)``, as ``images_batch`` does."""
        self._require_images(model, "pixel arrays")
        if not len(arrays):
            raise InvalidInput("No pixel array given: send at least one.", code="no_input")
        self.check_batch_size(len(arrays), "pixel arrays")
        return arrays_to_batch(arrays, model.preprocessing, max_pixels=self.settings.max_image_pixels,
                               max_total_pixels=self.settings.max_request_pixels, item_name=item_name)

    # the forward pass ----------------------------------------------------------------------

    def run(self, model: Model, batch: np.ndarray, *, top_k: int | None = None) -> PredictionBatch:
        """One forward pass over ``batch`` (n, input_size)."""
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):  # checked below
            outputs = model.predict_proba(batch) if model.task == "classification" else model.predict(batch)
        seconds = time.perf_counter() - started
        if not np.isfinite(outputs).all():
            raise InvalidInput(f"The input drives {describe(model)} out of float32 range (the output is not finite); "
                               "check the scale of the values.", code="output_not_finite")
        return PredictionBatch(model, outputs, self.top_k(model, top_k), started, seconds, batch)

    def top_k(self, model: Model, requested: int | None) -> int:
        if model.task != "classification":
            return 0
        classes = len(model.labels)
        return min(classes, DEFAULT_TOP_K if requested is None else requested)

    # what the views call: the batch, then the forward pass ------------------------------

    def predict_images(self, model: Model, images: list[bytes], *, top_k: int | None = None,
                       item_name: str = "image {}") -> PredictionBatch:
        return self.run(model, self.images_batch(model, images, item_name), top_k=top_k)

    def predict_vectors(self, model: Model, values, *, top_k: int | None = None) -> PredictionBatch:
        return self.run(model, self.vectors_batch(model, values), top_k=top_k)

    def predict_array(self, model: Model, array: np.ndarray, *, top_k: int | None = None) -> PredictionBatch:
        return self.run(model, self.array_batch(model, array), top_k=top_k)

    def predict_pixels(self, model: Model, arrays: list, *, top_k: int | None = None,
                       item_name: str = "pixel array {}") -> PredictionBatch:
        return self.run(model, self.pixels_batch(model, arrays, item_name), top_k=top_k)
