"""Optimisers: ``step(params, grads)`` updates every parameter in place.

``params`` and ``grads`` are dicts keyed by parameter name (``"dense1.weight"``); the state
(velocities, moments) is keyed the same way and allocated once, at the first step. All
hyperparameters are kept as Python floats so float32 arrays stay float32.

Before the update rule, ``step`` applies (in this order, modifying ``grads`` in place):

1. ``clip_norm``: if the global L2 norm of all gradients exceeds it, scale them all down to it.
2. ``weight_decay`` as L2 regularisation (SGD, Momentum, Adam): ``grad += weight_decay * param``,
   i.e. the gradient of ``weight_decay / 2 * ||w||^2``. AdamW instead decays the weights
   directly (decoupled, Loshchilov & Hutter 2019): ``param -= lr * weight_decay * param``, as
   ``torch.optim.AdamW`` does. The paper scales its decay by the schedule's multiplier alone, not
   by the learning rate: its lambda is this ``weight_decay`` times the base learning rate.

Either kind of decay applies to dense weights only (names ending in ``.weight``): decaying
biases or batch-norm ``gamma`` / ``beta`` only pulls the network towards a fixed offset or scale,
which is not a simpler function, so it is left out, as is common practice.

Moments that decay (a velocity, Adam's moments) are set to zero once they fall below
``SUBNORMAL_GUARD``. The weights of a unit that stops learning (a dead ReLU: its gradient is zero
from then on) have moments that decay geometrically through float32's subnormal range (below
1.2e-38), where the CPU does arithmetic in microcode: on some x86 CPUs every such number costs
about 20 times a normal one (an epoch of bench/train_speed.py on random data, where many units
die, went from 0.7 to 2.6 s). The guard runs every few steps, before a moment above it could
reach that range; a moment below 1e-30 moves no float32 weight.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from trainer.specs import build


SUBNORMAL_GUARD = 1e-30


@functools.lru_cache(maxsize=None)  # asked every step, for a decay that seldom changes
def guard_interval(decay: float) -> int | None:
    """How many steps a value at ``SUBNORMAL_GUARD`` shrinking by ``decay`` a step takes to reach
    float32's subnormal range (None: it does not shrink)."""
    if not 0 < decay < 1:
        return None
    tiny = float(np.finfo(np.float32).tiny)
    return max(1, int(math.log(SUBNORMAL_GUARD / tiny) / -math.log(decay)))


def decays(name: str) -> bool:
    """Whether weight decay applies to the parameter called ``name``."""
    return name.endswith(".weight")


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.
    Returns the norm before clipping.

    Raises FloatingPointError when a gradient is NaN or infinite: scaled by it, every gradient
    became zero (or stayed NaN) without a word, in the diverging runs clipping is there for."""
    norm = math.sqrt(sum(_squared_norm(g) for g in grads.values()))
    if not math.isfinite(norm):
        raise FloatingPointError(f"the gradients are not finite (global norm {norm}): training diverged; lower "
                                 "the learning rate")
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm


def _squared_norm(g: np.ndarray) -> float:
    """``sum(g * g)``, in float64 when float32 overflows (entries from about 1.8e19 on)."""
    squared = float(np.vdot(g, g))
    if math.isinf(squared) and np.isfinite(g).all():
        wide = g.astype(np.float64)
        squared = float(np.vdot(wide, wide))
    return squared


def _contiguous_span(arrays: list[np.ndarray]) -> np.ndarray | None:
    """A 1-D view covering ``arrays`` if they are C-contiguous views laid out back to back, in
    order, in one 1-D buffer; else None."""
    base = arrays[0].base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    start = expected = arrays[0].__array_interface__["data"][0]
    for a in arrays:
        if a.base is not base or a.dtype != base.dtype or not a.flags.c_contiguous \
                or a.__array_interface__["data"][0] != expected:
            return None
        expected += a.nbytes
    offset = (start - base.__array_interface__["data"][0]) // base.itemsize
    return base[offset:offset + (expected - start) // base.itemsize]


class FlatLayout(NamedTuple):
    """Every parameter, its gradient and its state as one 1-D array each, in the same order."""

    param: np.ndarray
    grad: np.ndarray
    state: dict[str, np.ndarray]


class Optimizer:
    """Base contract: subclasses implement ``_update(param, grad, state)``, the update rule for one
    array of parameters, its gradient and the state ``_init_state`` made for it (``param -= ...`` in
    place). The arrays may be a single parameter or, when the network packs them, every parameter
    flattened into one (see ``_flat_layout``): the rule is element-wise, so it is the same either way."""

    name = ""
    decoupled_weight_decay = False

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0, clip_norm: float | None = None):
        if lr < 0 or weight_decay < 0 or (clip_norm is not None and clip_norm <= 0):
            raise ValueError("lr and weight_decay must be >= 0 and clip_norm > 0")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.t = 0  # number of steps taken
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.last_grad_norm: float | None = None
        self._flat: tuple[tuple, FlatLayout] | None = None  # (the arrays laid out, their layout)

    def set_lr(self, lr: float) -> None:
        self.lr = float(lr)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update every array of ``params`` in place from ``grads``, keyed and shaped the same
        (``Network.params()`` and ``Network.grads()``): count the step in ``t``, clip, decay the
        weights (the module docstring says how; both may change ``grads``), apply the update rule,
        then zero the moments that became too small to matter."""
        self.t += 1
        grad_list = [grads[name] for name in params]
        if self.clip_norm is not None:
            self.last_grad_norm = clip_grad_norm(dict(zip(params, grad_list)), self.clip_norm)
        flat = self._prepare_state(params, grad_list)
        if self.weight_decay:
            self._apply_weight_decay(params, grad_list)
        self._update_all(params, grad_list, flat)
        self._flush_subnormal_moments(flat)

    def _prepare_state(self, params: dict, grad_list: list) -> FlatLayout | None:
        """The flat layout when the parameters allow one (see ``_flat_layout``); otherwise None,
        once every parameter new to this optimiser has its own state."""
        flat = self._flat_layout(params, grad_list)
        if flat is None:
            for name, param in params.items():
                if name not in self.state:
                    self.state[name] = self._init_state(param)
        return flat

    def _apply_weight_decay(self, params: dict, grad_list: list) -> None:
        """Decay the weights that ``decays``: directly when decoupled, else through their gradients."""
        for (name, param), grad in zip(params.items(), grad_list):
            if not decays(name):
                continue
            if self.decoupled_weight_decay:
                param *= 1 - self.lr * self.weight_decay
            else:
                scratch = self.state[name]["scratch"]
                np.multiply(param, self.weight_decay, out=scratch)
                grad += scratch

    def _update_all(self, params: dict, grad_list: list, flat: FlatLayout | None) -> None:
        if flat is not None:
            self._update(*flat)
            return
        for (name, param), grad in zip(params.items(), grad_list):
            self._update(param, grad, self.state[name])

    def _flush_subnormal_moments(self, flat: FlatLayout | None) -> None:
        """Zero the decaying moments below ``SUBNORMAL_GUARD``, on the steps their guard interval
        falls on (see the module docstring)."""
        for key, decay in self._decaying().items():
            interval = guard_interval(decay)
            if interval is None or self.t % interval != 0:
                continue
            moments = [flat.state[key]] if flat is not None else [state[key] for state in self.state.values()]
            for moment in moments:
                np.copyto(moment, 0, where=np.abs(moment) < SUBNORMAL_GUARD)

    def _decaying(self) -> dict[str, float]:
        """The state arrays that shrink by a constant factor each step, and that factor."""
        return {}

    def _flat_layout(self, params: dict, grad_list: list) -> FlatLayout | None:
        """When the parameters lie back to back in one buffer, and so do the gradients (as a
        :class:`~trainer.network.Network` allocates them), return them with state of the same
        layout, so the update runs as a few large array operations instead of a few per parameter.
        ``self.state[name]`` then holds views into the flat state."""
        arrays = (*params.values(), *grad_list)
        if self._flat is not None:
            laid_out, layout = self._flat
            if len(laid_out) == len(arrays) and all(a is b for a, b in zip(laid_out, arrays)):
                return layout
        if self.state or not params:  # state already allocated per parameter: keep using it
            return None
        flat_param, flat_grad = _contiguous_span(list(params.values())), _contiguous_span(grad_list)
        if flat_param is None or flat_grad is None or flat_param.dtype != flat_grad.dtype:
            return None
        flat_state = self._init_state(flat_param)
        offset = 0
        for name, param in params.items():
            self.state[name] = {k: v[offset:offset + param.size].reshape(param.shape) for k, v in flat_state.items()}
            offset += param.size
        layout = FlatLayout(flat_param, flat_grad, flat_state)
        self._flat = (arrays, layout)
        return layout

    def _init_state(self, param: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays kept for ``param``, each of its shape: ``scratch`` holds a step's intermediate
        values (the update, L2 decay's term) so that a step allocates nothing; subclasses add their
        moments."""
        return {"scratch": np.empty_like(param)}

    def arrays_per_parameter(self) -> int:
        """How many arrays the size of a parameter the optimiser keeps for it (scratch, moments)."""
        return len(self._init_state(np.empty(0, dtype=np.float32)))

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict) -> None:
        raise NotImplementedError

    def _describe(self) -> str:
        return f"lr={self.lr:g}"

    def __repr__(self) -> str:
        extra = f", weight_decay={self.weight_decay:g}" if self.weight_decay else ""
        extra += f", clip_norm={self.clip_norm:g}" if self.clip_norm is not None else ""
        return f"{type(self).__name__}({self._describe()}{extra})"


class SGD(Optimizer):
    """``param -= lr * grad``."""

    name = "sgd"

    def _update(self, param, grad, state):
        step = state["scratch"]
        np.multiply(grad, self.lr, out=step)
        param -= step


class Momentum(Optimizer):
    """Heavy-ball momentum: ``v = momentum * v + grad``, ``param -= lr * v``; with ``nesterov``
    the step looks ahead: ``param -= lr * (grad + momentum * v)``. (The learning rate multiplies
    the velocity rather than being folded into it, so changing ``lr`` takes effect at once.)"""

    name = "momentum"

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0,
                 clip_norm: float | None = None):
        super().__init__(lr, weight_decay, clip_norm)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:  # as torch.optim.SGD: a look-ahead needs a velocity to look along
            raise ValueError("nesterov needs a momentum above 0 (with 0 it is plain sgd)")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _init_state(self, param):
        return {"scratch": np.empty_like(param), "velocity": np.zeros_like(param)}

    def _decaying(self):
        return {"velocity": self.momentum}

    def _update(self, param, grad, state):
        velocity, step = state["velocity"], state["scratch"]
        velocity *= self.momentum
        velocity += grad
        if self.nesterov:
            np.multiply(velocity, self.momentum, out=step)
            step += grad
            step *= self.lr
        else:
            np.multiply(velocity, self.lr, out=step)
        param -= step

    def _describe(self):
        return f"lr={self.lr:g}, momentum={self.momentum:g}" + (", nesterov=True" if self.nesterov else "")


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015):
    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``param -= lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)``.

    For speed the moments are stored divided by ``(1 - b1)`` and ``(1 - b2)``, as the decayed sums
    ``M = b1 M + g`` and ``V = b2 V + g^2`` (the state's ``m_sum`` and ``v_sum``), so each moment
    update is two in-place passes, and all constants fold into one step size and one epsilon per
    step; the update is algebraically the one above.
    """

    name = "adam"

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip_norm: float | None = None):
        super().__init__(lr, weight_decay, clip_norm)
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1) or eps <= 0:
            raise ValueError("betas must be in [0, 1) and eps > 0")
        self.betas, self.eps = (b1, b2), float(eps)

    def _init_state(self, param):
        # M and V of the docstring: the decayed sums of the gradients and of their squares
        return {"scratch": np.empty_like(param), "m_sum": np.zeros_like(param), "v_sum": np.zeros_like(param)}

    def _decaying(self):
        return {"m_sum": self.betas[0], "v_sum": self.betas[1]}

    def step(self, params, grads):
        b1, b2 = self.betas
        t = self.t + 1
        # m_hat = (1-b1) M / (1-b1^t); sqrt(v_hat) = c sqrt(V) with c = sqrt((1-b2) / (1-b2^t)):
        # lr * m_hat / (sqrt(v_hat) + eps) = step_size * M / (sqrt(V) + eps / c).
        c = math.sqrt((1 - b2) / (1 - b2**t))
        self._step_size = self.lr * (1 - b1) / (1 - b1**t) / c
        self._eps_hat = self.eps / c
        super().step(params, grads)

    def _update(self, param, grad, state):
        b1, b2 = self.betas
        m_sum, v_sum, scratch = state["m_sum"], state["v_sum"], state["scratch"]
        m_sum *= b1
        m_sum += grad
        np.square(grad, out=scratch)  # 35 us against 67 us for grad * grad (MNIST MLP, 235k floats)
        v_sum *= b2
        v_sum += scratch
        np.sqrt(v_sum, out=scratch)
        scratch += self._eps_hat
        np.divide(m_sum, scratch, out=scratch)
        scratch *= self._step_size
        param -= scratch

    def _describe(self):
        return f"lr={self.lr:g}, betas=({self.betas[0]:g}, {self.betas[1]:g}), eps={self.eps:g}"


class AdamW(Adam):
    """Adam with decoupled weight decay: ``param -= lr * weight_decay * param`` before the Adam step
    (``torch.optim.AdamW``'s form; see the module docstring for the paper's)."""

    name = "adamw"
    decoupled_weight_decay = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, clip_norm: float | None = None):
        super().__init__(lr, betas, eps, weight_decay, clip_norm)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Momentum, "adam": Adam, "adamw": AdamW}


def get_optimizer(spec, **kwargs) -> Optimizer:
    """``get_optimizer("adamw", lr=1e-3, weight_decay=1e-2)``, ``get_optimizer("momentum(momentum=0.95)", lr=0.1)``.

    ``"nesterov"`` is momentum with ``nesterov=True``. Keyword arguments override the spec's."""
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str) and spec.strip().lower().startswith("nesterov"):
        kwargs.setdefault("nesterov", True)
    return build(OPTIMIZERS, spec, "optimizer", **kwargs)
