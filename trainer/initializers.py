"""Weight initialisers: ``init(shape, rng, dtype) -> ndarray`` for a weight of shape (fan_in, fan_out).

Values are drawn in float64 from the given ``np.random.Generator`` and then cast, so a float64
twin of a float32 network (used by the gradient check) starts from the same draw: the float32
weights are the twin's, rounded. They are drawn a block at a time into the weight itself, so
drawing takes no more memory than the weight (a float64 draw of the whole weight would take twice
as much again); the values are the same as one draw of the whole.

- ``he_normal`` / ``he_uniform``: variance ``2 / fan_in`` (He et al. 2015), for ReLU-like units.
- ``xavier_normal`` / ``xavier_uniform`` (aliases ``glorot_*``): variance ``2 / (fan_in + fan_out)``
  (Glorot & Bengio 2010), for tanh and sigmoid.
- ``lecun_normal``: variance ``1 / fan_in``.
- ``normal(std=0.01)``, ``zeros``.
"""

from __future__ import annotations

import math

import numpy as np

from trainer.specs import build

DRAW_BLOCK = 1 << 20  # values drawn at a time: 8 MB of float64


class Initializer:
    """Base contract: ``__call__(shape, rng, dtype) -> ndarray``; subclasses give ``std(fan_in, fan_out)``."""

    name = ""
    distribution = "normal"

    def std(self, fan_in: int, fan_out: int) -> float:
        raise NotImplementedError

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
        fan_in, fan_out = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[0])
        std = self.std(fan_in, fan_out)
        limit = math.sqrt(3.0) * std  # U(-a, a) has variance a^2 / 3
        weight = np.empty(shape, dtype=dtype)
        flat = weight.reshape(-1)
        for start in range(0, flat.size, DRAW_BLOCK):
            size = min(DRAW_BLOCK, flat.size - start)
            if self.distribution == "uniform":
                flat[start:start + size] = rng.uniform(-limit, limit, size=size)
            else:
                flat[start:start + size] = rng.standard_normal(size=size) * std
        return weight

    def __repr__(self) -> str:
        return self.name


class HeNormal(Initializer):
    name = "he_normal"

    def std(self, fan_in, fan_out):
        return math.sqrt(2.0 / fan_in)


class HeUniform(HeNormal):
    name = "he_uniform"
    distribution = "uniform"


class XavierNormal(Initializer):
    name = "xavier_normal"

    def std(self, fan_in, fan_out):
        return math.sqrt(2.0 / (fan_in + fan_out))


class XavierUniform(XavierNormal):
    name = "xavier_uniform"
    distribution = "uniform"


class LecunNormal(Initializer):
    name = "lecun_normal"

    def std(self, fan_in, fan_out):
        return math.sqrt(1.0 / fan_in)


class Normal(Initializer):
    name = "normal"

    def __init__(self, std: float = 0.01):
        if not std > 0:
            raise ValueError(f"normal std must be > 0, got {std}")
        self._std = float(std)

    def std(self, fan_in, fan_out):
        return self._std

    def __repr__(self):
        return f"normal(std={self._std:g})"


class Zeros(Initializer):
    name = "zeros"

    def __call__(self, shape, rng, dtype=np.float32):
        return np.zeros(shape, dtype=dtype)


INITIALIZERS = {
    "he_normal": HeNormal,
    "he_uniform": HeUniform,
    "xavier_normal": XavierNormal,
    "xavier_uniform": XavierUniform,
    "glorot_normal": XavierNormal,
    "glorot_uniform": XavierUniform,
    "lecun_normal": LecunNormal,
    "normal": Normal,
    "zeros": Zeros,
}


def get_initializer(spec) -> Initializer:
    """``get_initializer("he_normal")``, ``get_initializer("normal(std=0.05)")``; instances pass through."""
    if isinstance(spec, Initializer):
        return spec
    return build(INITIALIZERS, spec, "initializer")
