"""A model as named tensors, the way the standard protocols see it.

Inputs, of which a request gives exactly one:

- ``input``  (FP32 ``[-1, input_size]``): the network's input vectors, what the native API takes as
  JSON ``inputs``. For an image model: the 28x28 field as 784 floats in [0, 1], light ink on dark.
- ``image``  (BYTES ``[-1]``, image models): encoded images (PNG, JPEG, ...), preprocessed like an
  upload to the native API.
- ``pixels`` (UINT8 ``[-1, 28, 28]``, image models): raw pixel arrays of any size (``[n, h, w]``,
  ``[n, h, w, channels]`` or ``[n, 784]``) through the same preprocessing as an image.

Outputs: ``probabilities`` (FP32 ``[-1, classes]``), ``label`` (BYTES ``[-1]``) and ``index``
(INT64 ``[-1]``) for a classifier; ``value`` (FP32 ``[-1]``, in target units) for a regressor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.forward import Model
from shared.preprocess import format_by_signature, parse_image_spec

from ..api import NPY_MAGIC
from ..predictor import Predictor, PredictionBatch, columns_hint, images_refused

INPUT, IMAGE, PIXELS = "input", "image", "pixels"
BATCH_ITEMS = {INPUT: "vectors", IMAGE: "images", PIXELS: "pixel arrays"}  # what a batch of each input holds
FLOATS = ("FP32", "FP64", "FP16")
NUMBERS = FLOATS + ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str              # what metadata announces
    shape: tuple[int, ...]     # -1: any size (the batch dimension)
    accepts: tuple[str, ...] = ()  # datatypes a request may send (converted on the way in)

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def config_entry(spec: TensorSpec, *, optional: bool = False) -> dict:
    """``spec`` as an input or output of Triton's ``ModelConfig``: its type as ``TYPE_<datatype>``
    (BYTES is ``TYPE_STRING``) and its dims without the batch dimension; a tensor of one value
    per batch item is ``[1]`` reshaped to ``[]``, as Triton writes it."""
    dims = list(spec.shape[1:])
    entry = {"name": spec.name, "data_type": "TYPE_" + ("STRING" if spec.datatype == "BYTES" else spec.datatype),
             "dims": dims or [1]}
    if not dims:
        entry["reshape"] = {"shape": []}
    if optional:
        entry["optional"] = True
    return entry


def field_size(model: Model) -> tuple[int, int]:
    """The (height, width) field an image model's preprocessing fills."""
    return parse_image_spec(model.preprocessing)[0]


def input_specs(model: Model) -> list[TensorSpec]:
    if model.input_kind != "image":
        return [TensorSpec(INPUT, "FP32", (-1, model.input_size), NUMBERS)]
    return [TensorSpec(INPUT, "FP32", (-1, model.input_size), FLOATS),
            TensorSpec(IMAGE, "BYTES", (-1,), ("BYTES",)),
            TensorSpec(PIXELS, "UINT8", (-1, *field_size(model)), ("UINT8", "UINT16") + FLOATS)]


def unexpected_input_hint(model: Model, names, vectors: str) -> str:
    """What a protocol's message adds when the input ``names`` a request gives are not ``model``'s: for images or
    pixel arrays sent to a model that reads vectors, the ``vectors`` to send instead, as the protocol writes a batch
    of them; for the columns the model was trained on, that they are not its inputs."""
    names = list(names)
    if model.input_kind != "image" and names in ([IMAGE], [PIXELS]):
        return f" ({images_refused(model, BATCH_ITEMS[names[0]], vectors)})"
    return columns_hint(model, names) or f" (name it {one_of(input_specs(model))})"


def one_of(specs: list[TensorSpec]) -> str:
    """The tensors' names as a message offers them: 'input', 'image' or 'pixels'."""
    names = [f"'{spec.name}'" for spec in specs]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def not_json_hint(model: Model, body: bytes, mimetype: str, as_json: str, vectors: str) -> str | None:
    """What a protocol's refusal of a body that is not JSON says when the body is one the native API takes:
    a picture file sent whole (``curl --data-binary @digit.png``) or a form of them (``curl -F``), which this
    protocol's JSON carries as ``as_json``, or a ``.npy`` array, whose rows go as ``vectors``, as do a vector
    model's inputs. None for any other body."""
    if body[:len(NPY_MAGIC)] == NPY_MAGIC:
        return f"The body is a .npy array, not the JSON this route reads: send its rows as {vectors}."
    picture = format_by_signature(body)
    form = mimetype == "multipart/form-data"
    if picture is None and not form:
        return None
    said = f"The body is {f'a {picture} image' if picture else 'a multipart form'}, not the JSON this route reads"
    if model.input_kind != "image":
        return f"{said}: {images_refused(model, 'images', vectors)}."
    return f"{said}: send {'the file' if picture else 'each picture file'}'s bytes in base64 as {as_json}."


def output_specs(model: Model) -> list[TensorSpec]:
    if model.task != "classification":
        return [TensorSpec("value", "FP32", (-1,))]
    return [TensorSpec("probabilities", "FP32", (-1, len(model.labels))),
            TensorSpec("label", "BYTES", (-1,)),
            TensorSpec("index", "INT64", (-1,))]


def predict(predictor: Predictor, model: Model, name: str, payload, item_name: str) -> PredictionBatch:
    """One forward pass on the input called ``name``: ``payload`` is a list of encoded images for
    ``image``, an array (or nested lists) of vectors for ``input``, of pixel arrays for ``pixels``.
    An image or pixel array that cannot be used is named ``item_name.format(index)``, the way the
    protocol's request names it."""
    if name == IMAGE:
        return predictor.predict_images(model, payload, top_k=0, item_name=item_name)
    if name == PIXELS:
        return predictor.predict_pixels(model, payload, top_k=0, item_name=item_name)
    return predictor.predict_vectors(model, payload, top_k=0)


def output_tensors(result: PredictionBatch) -> dict[str, np.ndarray]:
    """Every output of ``result`` by name. BYTES outputs are lists of ``str``."""
    if not result.classification:
        return {"value": result.outputs.astype(np.float32, copy=False)}
    indices = result.indices
    labels = result.model.labels
    return {"probabilities": result.outputs.astype(np.float32, copy=False),
            "label": [labels[i] for i in indices.tolist()],
            "index": indices.astype(np.int64)}


def top_values(values: np.ndarray, k: int, labels: list[str] | None = None) -> list[list[str]]:
    """Triton's classification extension on one numeric output: per row, its ``k`` highest
    elements (all of them if the row is shorter) as ``"<value>:<position>"``, plus ``":<label>"``
    when the positions are classes (``probabilities``), highest first. Floats are written with
    six decimals, integers as they are, as Triton does."""
    rows = values.reshape(len(values), -1)
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    text = (lambda v: f"{v:.6f}") if rows.dtype.kind == "f" else str
    suffix = (lambda i: f":{labels[i]}") if labels else (lambda i: "")
    return [[f"{text(row[i])}:{i}{suffix(i)}" for i in ranks] for row, ranks in zip(rows.tolist(), order.tolist())]
