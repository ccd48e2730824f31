"""Element-wise activation functions, each with its derivative written beside it.

Every forward is the served one from ``shared.forward``: applied to an array ``x`` of any shape,
it writes into ``out`` (which may be ``x`` itself: all of them work in place). The derivative is
expressed through the *output* ``y = f(x)``, so the layer only needs to cache ``y`` for the
backward pass. Softmax is not here: it is fused into :class:`trainer.losses.SoftmaxCrossEntropy`
for training, appended as the output activation at export, and ``Network.predict_proba`` applies
the served model's (``shared.forward.softmax``).
"""

from __future__ import annotations

import numpy as np

from shared.forward import leaky_relu, relu, sigmoid, tanh
from trainer.specs import build


class ActivationFunction:
    """Base contract: ``forward(x, out) -> out`` and ``backward(y, grad, out) -> out``.

    ``backward`` returns ``grad * f'(x)`` given ``y = f(x)``; ``out`` may alias ``grad``."""

    name = ""

    def forward(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, y: np.ndarray, grad: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x, np.empty_like(x))

    def spec(self) -> dict:
        """The ``layers`` entry of docs/model-format.md."""
        return {"type": "activation", "name": self.name}

    def __repr__(self) -> str:
        return self.name


class ReLU(ActivationFunction):
    """``y = max(x, 0)``; ``dy/dx = 1`` where ``y > 0``, else 0 (0 at ``x = 0`` too). Keeps zeros
    of the batch's shape, which make ``shared.forward.relu`` fast."""

    name = "relu"

    def __init__(self):
        self._zeros = np.zeros(0, np.float32)

    def forward(self, x, out):
        return relu(x, out=out, zeros=self._zeros_like(x))

    def backward(self, y, grad, out):
        return np.multiply(grad, y > 0, out=out)

    def _zeros_like(self, x: np.ndarray) -> np.ndarray:
        """Zeros of ``x``'s shape and dtype, made again only when those change (an epoch's last
        batch, evaluation, float64 gradient checks)."""
        if self._zeros.shape != x.shape or self._zeros.dtype != x.dtype:
            self._zeros = np.zeros(x.shape, x.dtype)
        return self._zeros


class LeakyReLU(ActivationFunction):
    """``y = x`` for ``x > 0``, else ``alpha * x``; ``dy/dx = 1`` where ``y > 0``, else ``alpha``.
    ``0 <= alpha < 1`` keeps the sign, so ``y > 0`` iff ``x > 0`` (what ``backward`` reads), and is
    what the model file accepts."""

    name = "leaky_relu"

    def __init__(self, alpha: float = 0.01):
        if not 0 <= alpha < 1:
            raise ValueError(f"leaky_relu alpha must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x, out):
        return leaky_relu(x, self.alpha, out=out)

    def backward(self, y, grad, out):
        return np.multiply(grad, np.where(y > 0, 1, y.dtype.type(self.alpha)), out=out)

    def spec(self):
        return {"type": "activation", "name": self.name, "alpha": self.alpha}

    def __repr__(self):
        return f"leaky_relu(alpha={self.alpha:g})"


class Sigmoid(ActivationFunction):
    """``y = 1 / (1 + exp(-x))``; ``dy/dx = y (1 - y)``."""

    name = "sigmoid"

    def forward(self, x, out):
        return sigmoid(x, out=out)

    def backward(self, y, grad, out):
        slope = 1 - y
        slope *= y
        return np.multiply(grad, slope, out=out)


class Tanh(ActivationFunction):
    """``y = tanh(x)``; ``dy/dx = 1 - y^2``."""

    name = "tanh"

    def forward(self, x, out):
        return tanh(x, out=out)

    def backward(self, y, grad, out):
        slope = y * y
        np.subtract(1, slope, out=slope)
        return np.multiply(grad, slope, out=out)


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def get_activation(spec) -> ActivationFunction:
    """``get_activation("relu")``, ``get_activation("leaky_relu(alpha=0.2)")``; instances pass through."""
    if isinstance(spec, ActivationFunction):
        return spec
    return build(ACTIVATIONS, spec, "activation")
