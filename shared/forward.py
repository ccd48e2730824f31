"""The forward-only network: what a validated ``model.npz`` becomes in memory.

A ``Model`` is immutable once built; the service swaps whole ``Model`` objects, so a request
keeps the one it started with. Everything runs in float32 on whole batches, never per sample.
"""

from __future__ import annotations

import functools
from dataclasses import InitVar, dataclass, field
from pathlib import Path

import numpy as np


# Activations, any shape, in place: each writes f(x) into ``out``, which may be ``x`` itself, and
# returns it, in x's dtype (float32; the trainer's gradient checks use float64). softmax takes rows,
# shape (n, k). Loading a model binds leaky_relu's alpha (shared.model_file); the trainer's
# activations call these and write each derivative beside them (trainer/activations.py).

def relu(x: np.ndarray, *, out: np.ndarray, zeros=0) -> np.ndarray:
    """``max(x, 0)``. ``zeros`` may be an array of zeros of ``x``'s shape and dtype, which a caller
    that repeats one shape keeps: NumPy's vectorised loop needs both operands contiguous, and on a
    128x256 batch that makes it 6x faster than the scalar 0 (2.5 us against 16 us, about 1 % of
    an MNIST training step)."""
    return np.maximum(x, zeros, out=out)


def leaky_relu(x: np.ndarray, alpha: float, *, out: np.ndarray) -> np.ndarray:
    # For 0 <= alpha < 1, max(x, alpha * x) is x where x > 0 and alpha * x elsewhere.
    return np.maximum(x, x * alpha, out=out)


def sigmoid(x: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    # 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below, through e = e^-|x|: never overflows
    # and keeps full relative precision on the negative tail, where 1 + e^-x would round e^x's
    # small value away.
    e = np.exp(-np.abs(x))
    numerator = np.where(x >= 0, x.dtype.type(1), e)
    e += 1
    return np.divide(numerator, e, out=out)


def tanh(x: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    return np.tanh(x, out=out)


# Rows of up to this many classes have their maximum taken a column at a time; beyond it one
# strided pass per class costs more than the row-wise walk (10,000 rows of 100 classes: 0.87 ms
# against 0.57; of 1,000 classes: 38 ms against 1.6).
COLUMNWISE_MAX_CLASSES = 32


def row_max(x: np.ndarray) -> np.ndarray:
    """The largest value of each row of ``x`` (n, k), as shape (n, 1), NaN where a row holds one.
    For a few classes it is taken a column at a time: ``x.max(axis=1)`` walks each short row on
    its own, 20x slower on 10,000 rows of 10 classes (1.0 ms against 0.05)."""
    if x.shape[1] > COLUMNWISE_MAX_CLASSES:
        return x.max(axis=1, keepdims=True)
    return functools.reduce(np.maximum, x.T)[:, np.newaxis]


def softmax(x: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``x`` of shape (n, k), stable for large logits."""
    np.subtract(x, row_max(x), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


ACTIVATIONS = {"relu": relu, "leaky_relu": leaky_relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax}

# The input normalisation is folded into the first dense layer only while every feature's
# |mean / std| is at most this: the fold computes x @ (W / std) - (mean / std) @ W, two terms that
# cancel, and its float32 rounding grows with that ratio (a wine's density, mean 0.997 and std
# 0.002, would lose 40x the trainer's precision). Beyond it the input is standardised first.
FOLD_LIMIT = 4.0


# The fold reads the first layer's weight this many values at a time: whole, its float64 copies
# took four times the layer's own size (a 121 MB layer took a worker from 55 MB to 670 MB).
FOLD_BLOCK_VALUES = 1 << 16  # 512 kB of float64


def fold_normalization(weight: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                       inv_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(W / std[:, None], b - (mean / std) @ W)`` in float32 for a dense layer's ``weight`` (in, out)
    and ``bias`` (out,), computed in float64 a block of input rows at a time."""
    folded = np.empty_like(weight, dtype=np.float32)
    shift = bias.astype(np.float64)
    step = max(1, FOLD_BLOCK_VALUES // max(1, weight.shape[1]))
    for start in range(0, len(weight), step):
        rows = slice(start, start + step)
        block = weight[rows].astype(np.float64)
        shift -= (mean[rows] * inv_std[rows]) @ block
        block *= inv_std[rows, None]
        folded[rows] = block
    return folded, shift.astype(np.float32)


def input_normalization(manifest: dict) -> dict:
    """The manifest's ``input.normalization`` (its ``mean`` and ``std``; shared.model_file requires it)."""
    return manifest["input"]["normalization"]


def standardize(x: np.ndarray, normalization: dict) -> np.ndarray:
    """``(x - mean) / std`` of rows ``x`` of shape (n, d) as a new C-ordered float32 array, with
    ``normalization``'s ``mean`` and ``std`` (shape (d,) or (1,)) in float32; computed without a
    temporary of ``x``'s size (MNIST's training images are 170 MB)."""
    mean = np.asarray(normalization["mean"], dtype=np.float32)
    std = np.asarray(normalization["std"], dtype=np.float32)
    out = np.subtract(x, mean, dtype=np.float32, order="C")
    out /= std
    return out


def output_scaling(manifest: dict) -> dict:
    """The manifest's ``output.scaling`` of a regressor's target (shared.model_file requires it)."""
    return manifest["output"]["scaling"]


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded, validated model. Build it with ``shared.model_file.load_model``.

    ``layers``, the file's network, is a list of ``(kind, name, values)`` steps:
    ``("dense", name, (W, b))``, ``("affine", name, (scale, shift))`` for inference-mode batch
    norm and ``("activation", name, function)``, ``function(h, out=h)`` with any alpha bound. The model
    keeps only the steps ``forward`` runs, planned from them (``_plan``), so a first layer with
    the input normalisation folded in is not held twice; where that fold would lose precision,
    a ``("standardize", name, {"mean", "std"})`` step comes first instead.
    """

    manifest: dict
    layers: InitVar[list]
    path: Path | None = None
    _steps: list = field(init=False, repr=False)

    def __post_init__(self, layers: list):
        object.__setattr__(self, "_steps", self._plan(layers))

    def _plan(self, layers: list) -> list:
        """The steps ``forward`` runs: ``layers`` with the input normalisation folded in.

        ``((x - mean) / std) @ W + b`` equals ``x @ (W / std[:, None]) + (b - (mean / std) @ W)``,
        so when the first layer is dense the network reads raw input rows directly and a large
        batch is not copied and rescaled first. The fold is computed in float64, and made only
        where it keeps float32's precision (FOLD_LIMIT); otherwise the first step standardises.
        """
        norm = input_normalization(self.manifest)
        size = self.input_size
        mean = np.broadcast_to(np.asarray(norm["mean"], dtype=np.float64), (size,))
        std = np.broadcast_to(np.asarray(norm["std"], dtype=np.float64), (size,))
        inv_std = 1.0 / std
        steps = list(layers)
        if steps and steps[0][0] == "dense" and np.abs(mean * inv_std).max() <= FOLD_LIMIT:
            _, name, (weight, bias) = steps[0]
            steps[0] = ("dense", name, fold_normalization(weight, bias, mean, inv_std))
        else:
            steps.insert(0, ("standardize", "normalization", {"mean": mean.astype(np.float32),
                                                               "std": std.astype(np.float32)}))
        return steps

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> int:
        return self.manifest["version"]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def input_size(self) -> int:
        return self.manifest["input"]["shape"][0]

    @property
    def input_kind(self) -> str:
        return self.manifest["input"]["kind"]

    @property
    def preprocessing(self) -> dict | None:
        return self.manifest["input"].get("preprocessing")

    @property
    def labels(self) -> list[str] | None:
        return self.manifest["output"].get("labels")

    def __repr__(self) -> str:
        steps = " -> ".join(_step_text(kind, name, values) for kind, name, values in self._steps
                            if kind != "standardize")
        return f"Model({self.name} v{self.version}: {steps})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Raw input rows of shape (n, input_size) -> network output of shape (n, k).

        Classification outputs are probabilities (the softmax layer); regression outputs
        are in the network's standardised target units (see ``predict``).
        """
        h = np.asarray(x, dtype=np.float32)
        for kind, name, values in self._steps:
            if kind == "dense":
                weight, bias = values
                h = h @ weight
                h += bias
            elif kind == "affine":  # batch norm: scale = gamma / sqrt(var + eps), shift = beta - mean * scale
                scale, shift = values
                h = h * scale  # a new array: never scale the caller's input in place
                h += shift
            elif kind == "standardize":
                h = standardize(h, values)
            else:  # "activation"
                activation = values
                h = activation(h, out=h)
        return h

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of shape (n, classes) for raw input rows (classification only)."""
        if self.task != "classification":
            raise TypeError(f"model {self.name} is a regression model; use predict()")
        return self.forward(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices of shape (n,) for classification; target values of shape (n,) for regression."""
        out = self.forward(x)
        if self.task == "classification":
            return out.argmax(axis=1)
        scaling = output_scaling(self.manifest)
        return out[:, 0] * np.float32(scaling["std"]) + np.float32(scaling["mean"])


def _step_text(kind: str, name: str, values) -> str:
    """A step as ``repr(Model)`` shows it: a dense layer by its weight's (in x out), batch norm by
    its width, an activation by its name."""
    if kind == "dense":
        weight, _ = values
        return f"dense({weight.shape[0]}x{weight.shape[1]})"
    if kind == "affine":
        scale, _ = values
        return f"batchnorm({scale.shape[0]})"
    return name
