"""Layers: ``forward(x, training) -> y`` caches what ``backward(grad_out) -> grad_in`` needs.

Shapes: every layer maps ``x`` of shape (n, in_features) to ``y`` of shape (n, out_features).
``params`` and ``grads`` are dicts keyed by the short parameter name (``"weight"``); the network
prefixes the layer name (``"dense1.weight"``), the key used by the optimiser and the model file.
Gradients live in preallocated arrays: the first backward after ``zero_grad()`` (or
``begin_gradients()``) writes the gradients, later ones add to them. A backward puts each of its
parameter gradients through ``_accumulate``, which keeps that rule.

Outputs and input gradients are scratch arrays owned by the layer and reused by the next call of
the same batch size, so a result is valid until the layer runs again (``buffers`` are something
else: state the model file keeps, batch norm's running statistics). A network may set
``layer.inplace = True`` when the layer's input and ``grad_out`` are scratch that nothing else
reads: the layer then overwrites them instead of writing into its own scratch arrays.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from trainer.activations import get_activation
from trainer.initializers import get_initializer


class Layer:
    """Base contract. ``kind`` names the layer type (and its default name prefix)."""

    kind = "layer"
    caches_output = False  # backward reads this layer's own output (so a successor must not overwrite it)

    def __init__(self, name: str | None = None, dtype=np.float32):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.inplace = False
        self._scratch: dict[tuple, np.ndarray] = {}
        self._written: set[str] = set()  # gradients written since begin_gradients(): later ones add

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """``x`` (n, in_features) -> ``y`` (n, out_features); ``training`` selects batch statistics
        and dropout masks over their inference-mode counterparts."""
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """``grad_out`` = d(loss)/d(y) (n, out_features) -> ``grad_in`` = d(loss)/d(x) (n, in_features),
        and this batch's d(loss)/d(param) into ``grads``; each subclass states its own rule here."""
        raise NotImplementedError

    def _zero_grads(self) -> dict[str, np.ndarray]:
        """A gradient of zeros for each parameter, keyed, shaped and typed as ``params``."""
        # np.zeros, not zeros_like: the kernel hands over its pages as they are first written (the
        # network moves the gradients into one buffer), where zeros_like writes them all here.
        return {k: np.zeros(v.shape, v.dtype) for k, v in self.params.items()}

    def zero_grad(self) -> None:
        for grad in self.grads.values():
            grad.fill(0)
        self.begin_gradients()

    def begin_gradients(self) -> None:
        """Make the next backward write the gradients instead of adding to them (no pass over them)."""
        self._written.clear()

    def _accumulate(self, key: str, op: Callable[..., np.ndarray], *operands, **options) -> np.ndarray:
        """Put this batch's gradient of ``key``, ``op(*operands, **options)``, into ``grads[key]`` and
        return it (to read only).

        The first call for ``key`` after ``begin_gradients()`` computes it straight into ``grads[key]``
        (``op(..., out=grads[key])``), later calls add it there. Each gradient records its own first
        write, so there is no flag to reset."""
        grad = self.grads[key]
        if key not in self._written:
            self._written.add(key)
            return op(*operands, **options, out=grad)
        batch_grad = op(*operands, **options)
        grad += batch_grad
        return batch_grad

    def output_features(self, in_features: int) -> int:
        return in_features

    def num_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def _scratch_array(self, key: str, shape: tuple, fill: float | None = None) -> np.ndarray:
        """A preallocated array for ``key`` and this shape, reused across calls; with ``fill``, a
        constant array holding that value (filled once, when it is made)."""
        buf = self._scratch.get((key, shape))
        if buf is None:
            if len(self._scratch) > 32:  # many batch sizes seen (e.g. evaluation): start afresh
                self._scratch.clear()
            buf = self._scratch[(key, shape)] = np.empty(shape, dtype=self.dtype)
            if fill is not None:
                buf.fill(fill)
        return buf

    def _as_input(self, x: np.ndarray, features: int | None) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if x.ndim != 2 or (features is not None and x.shape[1] != features):
            want = f"(n, {features})" if features is not None else "(n, features)"
            raise ValueError(f"{self.name or self.kind}: expected input of shape {want}, got {x.shape}")
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Dense(Layer):
    """Fully connected layer ``y = x @ weight + bias``.

    ``x`` : ndarray of shape (n, in_features); ``weight`` (in_features, out_features);
    ``bias`` (out_features,); ``y`` (n, out_features). ``rng`` is a ``np.random.Generator`` or a
    seed for the initialiser. With ``needs_input_grad = False`` (the network sets it on its first
    layer) ``backward`` skips ``grad_out @ weight.T`` and returns None.
    """

    kind = "dense"

    def __init__(self, in_features: int, out_features: int, init="he_normal", name: str | None = None,
                 rng=None, dtype=np.float32):
        super().__init__(name, dtype)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.init = get_initializer(init)
        rng = np.random.default_rng(rng)
        self.params = {
            "weight": self.init((self.in_features, self.out_features), rng, self.dtype),
            "bias": np.zeros(self.out_features, dtype=self.dtype),
        }
        self.grads = self._zero_grads()
        self.needs_input_grad = True

    def forward(self, x, training=True):
        x = self._as_input(x, self.in_features)
        y = self._scratch_array("y", (x.shape[0], self.out_features))
        np.matmul(x, self.params["weight"], out=y)
        y += self.params["bias"]
        self._x = x
        return y

    def backward(self, grad_out):
        """With ``g = grad_out`` (n, out_features) and ``x`` the input that forward cached
        (n, in_features): ``dweight = x.T @ g`` (in_features, out_features), ``dbias = g`` summed
        over the batch (out_features,), ``grad_in = g @ weight.T`` (n, in_features)."""
        x = self._x
        # The sum over the batch is taken as ones @ g: BLAS does that 2-4x faster than NumPy's
        # reduction over the batch axis (2 us against 7 us, 128x256).
        ones = self._scratch_array("ones", (grad_out.shape[0],), fill=1)
        self._accumulate("weight", np.matmul, x.T, grad_out)  # dweight = x.T @ g
        self._accumulate("bias", np.matmul, ones, grad_out)  # dbias = ones @ g
        if not self.needs_input_grad:
            return None
        grad_in = self._scratch_array("grad_in", x.shape)
        return np.matmul(grad_out, self.params["weight"].T, out=grad_in)

    def output_features(self, in_features):
        return self.out_features

    @staticmethod
    def describe(in_features: int, out_features: int, init) -> str:
        """The repr of a Dense layer of these arguments, without making one (its weight may not fit)."""
        return f"Dense({in_features} -> {out_features}, init={get_initializer(init)!r})"

    def __repr__(self):
        return self.describe(self.in_features, self.out_features, self.init)


class Activation(Layer):
    """Element-wise activation ``y = f(x)``; ``x`` and ``y`` of shape (n, features).

    ``fn``: a spec for :func:`trainer.activations.get_activation` (``"relu"``,
    ``"leaky_relu(alpha=0.01)"``, ``"sigmoid"``, ``"tanh"``). Caches ``y``: every derivative
    here is written in terms of the output.
    """

    kind = "act"
    caches_output = True

    def __init__(self, fn="relu", name: str | None = None, dtype=np.float32):
        super().__init__(name, dtype)
        self.fn = get_activation(fn)

    def forward(self, x, training=True):
        x = self._as_input(x, None)
        y = x if self.inplace else self._scratch_array("y", x.shape)
        self._y = self.fn.forward(x, y)
        return y

    def backward(self, grad_out):
        """``grad_in = grad_out * f'(x)``, (n, features), with ``f'`` written through the output
        ``y = f(x)`` that forward cached (each function's rule is in trainer/activations.py)."""
        grad_in = grad_out if self.inplace else self._scratch_array("grad_in", grad_out.shape)
        return self.fn.backward(self._y, grad_out, grad_in)

    def __repr__(self):
        return f"Activation({self.fn!r})"


class BatchNorm(Layer):
    """Batch normalisation over the batch axis (Ioffe & Szegedy 2015).

    ``x`` : ndarray of shape (n, features). ``y = gamma * x_hat + beta`` with
    ``x_hat = (x - mean) / sqrt(var + eps)``, ``y`` and ``x_hat`` (n, features). Training mode
    takes ``mean`` and ``var`` from the batch (the biased variance) and updates the running
    statistics ``running = momentum * running + (1 - momentum) * batch`` (the running variance
    takes the unbiased batch variance); eval mode uses ``running_mean`` and ``running_var``.
    Parameters ``gamma``, ``beta``; buffers ``running_mean``, ``running_var``; all (features,).
    """

    kind = "bn"

    def __init__(self, features: int, momentum: float = 0.9, eps: float = 1e-5, name: str | None = None,
                 dtype=np.float32):
        super().__init__(name, dtype)
        if not 0 <= momentum < 1:
            raise ValueError(f"batchnorm momentum must be in [0, 1), got {momentum}")
        self.features, self.momentum, self.eps = int(features), float(momentum), float(eps)
        self.params = {"gamma": np.ones(self.features, self.dtype), "beta": np.zeros(self.features, self.dtype)}
        self.grads = self._zero_grads()
        self.buffers = {"running_mean": np.zeros(self.features, self.dtype),
                        "running_var": np.ones(self.features, self.dtype)}

    def forward(self, x, training=True):
        x = self._as_input(x, self.features)
        gamma, beta = self.params["gamma"], self.params["beta"]
        x_hat = self._scratch_array("x_hat", x.shape)
        if training:
            n = x.shape[0]
            if n < 2:  # one row is its own mean: it would be erased, and its variance says nothing
                raise ValueError(f"{self.name or self.kind}: batch norm needs at least 2 rows per batch in training, "
                                 f"got {n}")
            mean, var = x.mean(axis=0), x.var(axis=0)
            inv_std = 1 / np.sqrt(var + self.eps)
            self._update_running_statistics(mean, var, n)
        else:
            mean, inv_std = self.buffers["running_mean"], 1 / np.sqrt(self.buffers["running_var"] + self.eps)
        np.subtract(x, mean, out=x_hat)
        x_hat *= inv_std
        y = self._scratch_array("y", x.shape)
        np.multiply(x_hat, gamma, out=y)
        y += beta
        self._x_hat, self._inv_std, self._used_batch_statistics = x_hat, inv_std, training
        return y

    def backward(self, grad_out):
        """With ``g = grad_out`` (n, features): ``dbeta = sum(g)`` and ``dgamma = sum(g * x_hat)``,
        sums over the batch, (features,). In training mode the mean and variance are the batch's own,
        so they vary with ``x`` too and ``grad_in = gamma * inv_std * (g - mean(g) - x_hat * mean(g * x_hat))``,
        whose two means are ``dbeta / n`` and ``dgamma / n``; in eval mode they are constants and
        ``grad_in = gamma * inv_std * g``. ``grad_in`` : (n, features)."""
        x_hat, inv_std, gamma = self._x_hat, self._inv_std, self.params["gamma"]
        n = grad_out.shape[0]
        dbeta = self._accumulate("beta", np.sum, grad_out, axis=0)
        dgamma = self._accumulate("gamma", np.einsum, "ij,ij->j", grad_out, x_hat)
        grad_in = grad_out if self.inplace else self._scratch_array("grad_in", grad_out.shape)
        if self._used_batch_statistics:
            mean_g, mean_g_x_hat = dbeta / n, dgamma / n
            np.subtract(grad_out, x_hat * mean_g_x_hat, out=grad_in)
            grad_in -= mean_g
            grad_in *= gamma * inv_std
        else:
            np.multiply(grad_out, gamma * inv_std, out=grad_in)
        return grad_in

    def _update_running_statistics(self, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        """``running = momentum * running + (1 - momentum) * batch``, in place, for the batch's
        ``mean`` and (biased) ``var`` of ``n`` rows; the running variance takes the unbiased one."""
        running_mean, running_var = self.buffers["running_mean"], self.buffers["running_var"]
        running_mean *= self.momentum
        running_mean += (1 - self.momentum) * mean
        running_var *= self.momentum
        running_var += (1 - self.momentum) * var * (n / max(n - 1, 1))

    @staticmethod
    def describe(features: int, momentum: float, eps: float) -> str:
        """The repr of a BatchNorm layer of these arguments, without making one."""
        return f"BatchNorm({features}, momentum={momentum:g}, eps={eps:g})"

    def __repr__(self):
        return self.describe(self.features, self.momentum, self.eps)


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``rate`` and scale the rest
    by ``1 / (1 - rate)``, so a unit's expected output is its input; identity in eval mode.
    ``y = x * mask`` and ``grad_in = grad_out * mask`` with ``mask = (u >= rate) / (1 - rate)``,
    ``u`` uniform in [0, 1); ``x``, ``y``, ``mask`` of shape (n, features).

    The mask is drawn from ``rng`` (a ``np.random.Generator`` or a seed), so a seeded network
    drops the same units every run.
    """

    kind = "dropout"

    def __init__(self, rate: float, name: str | None = None, rng=None, dtype=np.float32):
        super().__init__(name, dtype)
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = np.random.default_rng(rng)
        self._mask = None

    def forward(self, x, training=True):
        x = self._as_input(x, None)
        if not training or self.rate == 0:
            self._mask = None
            return x
        mask = self._scratch_array("mask", x.shape)
        self.rng.random(dtype=self.dtype, out=mask)  # u
        np.greater_equal(mask, self.rate, out=mask)  # 1.0 where the unit is kept, else 0.0
        mask *= 1 / (1 - self.rate)
        y = x if self.inplace else self._scratch_array("y", x.shape)
        self._mask = mask
        return np.multiply(x, mask, out=y)

    def backward(self, grad_out):
        """``grad_in = grad_out * mask``, (n, features), with the mask forward drew; ``grad_out``
        itself when forward dropped nothing (eval mode, rate 0)."""
        if self._mask is None:
            return grad_out
        grad_in = grad_out if self.inplace else self._scratch_array("grad_in", grad_out.shape)
        return np.multiply(grad_out, self._mask, out=grad_in)

    def __repr__(self):
        return f"Dropout(rate={self.rate:g})"
