"""Gradient check: analytic gradients (backward) against central differences, in float64.

Each check builds its component in float64, projects the output onto a fixed random direction
``R`` (so the scalar checked is ``f = sum(y * R)`` and ``df/dy = R``), and compares every
parameter's gradient and the input gradient with ``(f(p + h) - f(p - h)) / 2h``. The error
reported is ``max|analytic - numeric| / max(max|analytic|, max|numeric|, 1e-3)`` per array. Random
shapes and values come from one seeded generator, so a run is reproducible.

A network at its real size (784-256-128-10 has 235,146 parameters, each two forward passes) is
checked as cs231n's sparse gradient check does: a random sample of each parameter array's entries.

``python -m trainer gradcheck`` calls :func:`run_gradcheck`.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from trainer.activations import ACTIVATIONS, LeakyReLU, ReLU
from trainer.layers import Activation, BatchNorm, Dense, Dropout, Layer
from trainer.losses import MSE, Loss, SoftmaxCrossEntropy
from trainer.network import Network, build_mlp

TOLERANCE = 1e-6
H = 1e-5  # the step of the central differences
# Gradients that are exactly zero (a dense bias followed by batch norm) make a purely relative
# error meaningless: the numeric side is rounding noise (~1e-10). Below this magnitude the
# error is measured against the floor instead.
ABSOLUTE_FLOOR = 1e-3
SAMPLES = 20  # entries checked of each parameter array of a network at its real size
ROWS = 8  # the batch such a network is checked on


@dataclass
class Row:
    """One compared array: ``component`` (what was checked) and ``param`` (which gradient)."""

    component: str
    param: str
    shape: tuple
    rel_error: float
    passed: bool
    error: str = ""  # set when the component raised instead of producing gradients
    kinked: int = 0  # sampled entries left out: their central difference crossed a ReLU's kink


def _relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0), ABSOLUTE_FLOOR)
    return float(np.abs(analytic - numeric).max(initial=0.0) / scale)


def _numeric_grad(f: Callable[[], float], array: np.ndarray, h: float,
                  indices: np.ndarray | None = None) -> np.ndarray:
    """Central differences of ``f`` with respect to every element of ``array`` (perturbed in place),
    shaped as ``array``; given flat ``indices``, with respect to those elements only, in their order."""
    flat = array.reshape(-1)
    grad = np.zeros(flat.size if indices is None else indices.size, dtype=np.float64)
    for k, i in enumerate(range(flat.size) if indices is None else indices):
        saved = flat[i]
        flat[i] = saved + h
        f_plus = f()
        flat[i] = saved - h
        f_minus = f()
        flat[i] = saved
        grad[k] = (f_plus - f_minus) / (2 * h)
    return grad.reshape(array.shape) if indices is None else grad


def _row(component: str, param: str, shape: tuple, analytic: np.ndarray, numeric: np.ndarray, tol: float) -> Row:
    err = _relative_error(analytic, numeric)
    return Row(component, param, tuple(shape), err, bool(err < tol))


def _rows(component: str, pairs: dict[str, tuple[np.ndarray, np.ndarray]], tol: float) -> list[Row]:
    return [_row(component, param, analytic.shape, analytic, numeric, tol)
            for param, (analytic, numeric) in pairs.items()]


def check_layer(layer: Layer, x: np.ndarray, training: bool = True, label: str | None = None,
                reset: Callable[[], None] | None = None, h: float = H, tol: float = TOLERANCE,
                seed: int = 0) -> list[Row]:
    """Check ``layer`` (built with ``dtype=np.float64``) on input ``x`` of shape (n, features):
    every parameter gradient and the input gradient. ``reset`` runs before each forward (e.g. to
    reseed dropout so every evaluation draws the same mask)."""
    if layer.dtype != np.float64:
        raise ValueError("gradient checks need a float64 layer (pass dtype=np.float64)")
    x = np.array(x, dtype=np.float64)
    reset = reset or (lambda: None)
    reset()
    direction = np.random.default_rng(seed).standard_normal(layer.forward(x, training).shape)

    def f() -> float:
        reset()
        return float(np.sum(layer.forward(x, training) * direction))

    reset()
    layer.zero_grad()
    layer.forward(x, training)
    grad_in = layer.backward(direction.copy())
    pairs = {name: (layer.grads[name].copy(), _numeric_grad(f, p, h)) for name, p in layer.params.items()}
    pairs["input"] = (np.array(grad_in, dtype=np.float64), _numeric_grad(f, x, h))
    return _rows(label or repr(layer), pairs, tol)


def check_loss(loss: Loss, output: np.ndarray, target: np.ndarray, label: str | None = None,
               h: float = H, tol: float = TOLERANCE) -> list[Row]:
    """Check ``loss.backward()`` against central differences of ``loss.forward(output, target)``."""
    output = np.array(output, dtype=np.float64)
    loss.forward(output, target)
    analytic = loss.backward().copy()
    numeric = _numeric_grad(lambda: loss.forward(output, target), output, h)
    return _rows(label or repr(loss), {"output": (analytic, numeric)}, tol)


def check_network(network: Network, x: np.ndarray, y: np.ndarray, label: str | None = None,
                  seed: int = 0, h: float = H, tol: float = TOLERANCE, samples: int | None = None) -> list[Row]:
    """Check every parameter gradient of a float64 ``network`` on the batch ``(x, y)`` in
    training mode: all of each array's entries, or ``samples`` of them drawn at random (all of a
    smaller array). Dropout layers are reseeded before each forward so the mask stays fixed.
    Each row is named ``label``, or by the layer that holds the array."""
    dropouts = [layer for layer in network.layers if isinstance(layer, Dropout)]

    def reset():
        for i, layer in enumerate(dropouts):
            layer.rng = np.random.default_rng([seed, i])

    def f() -> float:
        reset()
        return network.loss.forward(network.forward(x, training=True), y)

    # A ReLU's derivative jumps at 0: an entry whose steps of +-h move a unit's input across it has a
    # central difference that is no derivative at all (cs231n's "kinks"). Such entries are left out.
    kinked = [layer for layer in network.layers
              if isinstance(layer, Activation) and isinstance(layer.fn, (ReLU, LeakyReLU))]

    def sides() -> np.ndarray:
        return np.concatenate([(layer._y > 0).ravel() for layer in kinked]) if kinked else np.zeros(0, bool)

    network.zero_grad()
    f()
    network.backward()
    rng = np.random.default_rng(seed)
    rows = []
    for layer in network.layers:
        for key, param in layer.params.items():
            indices = np.arange(param.size) if samples is None else \
                rng.choice(param.size, min(samples, param.size), replace=False)
            analytic = layer.grads[key].reshape(-1)[indices]
            numeric, smooth = _numeric_grad_off_kinks(f, sides, param, h, indices)
            row = _row(label or repr(layer), f"{layer.name}.{key}", param.shape, analytic[smooth], numeric[smooth], tol)
            row.kinked = int((~smooth).sum())
            rows.append(row)
    return rows


def _numeric_grad_off_kinks(f: Callable[[], float], sides: Callable[[], np.ndarray], array: np.ndarray, h: float,
                            indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_numeric_grad`` at the flat ``indices`` of ``array``, and for each entry whether ``sides()``
    (which side of its kink each ReLU unit is on) stayed the same from ``+h`` to ``-h``."""
    seen = []  # sides() after each evaluation: at +h, then at -h, entry by entry

    def f_noting_sides() -> float:
        value = f()
        seen.append(sides())
        return value

    grad = _numeric_grad(f_noting_sides, array, h, indices)
    smooth = np.array([np.array_equal(plus, minus) for plus, minus in zip(seen[::2], seen[1::2])], dtype=bool)
    return grad, smooth


def check_sampled(network: Network, samples: int = SAMPLES, seed: int = 0) -> list[Row]:
    """cs231n's sparse gradient check of a float64 ``network`` at its real size: ``samples`` entries
    of each parameter array, on a batch of ``ROWS`` random rows with random labels or targets.
    Batch norm's gamma and beta are drawn at random first: at 1 and 0, as built, they would hide a
    backward that leaves them out. A forward or backward that raises gives one failed row."""
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, BatchNorm):
            _draw_gamma_and_beta(layer, rng)
    x, y = rng.standard_normal((ROWS, network.in_features)), _random_targets(network, ROWS, rng)
    return _guarded("network", lambda: check_network(network, x, y, seed=seed, samples=samples))


def gradcheck(target, x: np.ndarray | None = None, y: np.ndarray | None = None, *, seed: int = 0,
              training: bool = True, label: str | None = None, tol: float = TOLERANCE) -> list[Row]:
    """Check a layer, a loss, or a network factory ``factory(dtype) -> Network``.

    Missing inputs are drawn at random from ``np.random.default_rng(seed)``: ``x`` of shape
    (n, features) with 2 <= n <= 6, integer labels or regression targets for ``y``.
    Returns one :class:`Row` per compared array."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    if isinstance(target, Loss):
        if x is None:
            x = rng.standard_normal((n, int(rng.integers(2, 6))))
        if y is None:
            y = rng.integers(0, x.shape[1], n) if isinstance(target, SoftmaxCrossEntropy) else rng.standard_normal(x.shape)
        return check_loss(target, x, y, label, tol=tol)
    if isinstance(target, Layer):
        if x is None:
            features = getattr(target, "in_features", None) or getattr(target, "features", None) or int(rng.integers(2, 8))
            x = rng.standard_normal((n, features))
        reset = None
        if isinstance(target, Dropout):
            def reset():
                target.rng = np.random.default_rng(seed)
        return check_layer(target, x, training, label, reset, tol=tol, seed=seed)
    network = target(np.float64)
    if x is None:
        x = rng.standard_normal((n, network.in_features))
    if y is None:
        y = _random_targets(network, n, rng)
    return check_network(network, x, y, label or "network", seed=seed, tol=tol)


def _random_targets(network: Network, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random class labels for a classifier, or targets of shape (n, outputs) for a regression."""
    out_features = network.layers[-1].output_features(0) if isinstance(network.layers[-1], Dense) else None
    if network.task == "classification":
        return rng.integers(0, out_features, n)
    return rng.standard_normal((n, out_features))


def _draw_gamma_and_beta(bn: BatchNorm, rng: np.random.Generator) -> None:
    """Give ``bn`` a random gamma of either sign, away from 0, and a random beta."""
    bn.params["gamma"][...] = rng.uniform(0.5, 2.0, bn.features) * rng.choice([-1.0, 1.0], bn.features)
    bn.params["beta"][...] = rng.standard_normal(bn.features)


def _guarded(label: str, run: Callable[[], list[Row]]) -> list[Row]:
    """The rows of ``run()``, or one failed row for ``label`` if it raises (a shape mismatch from a
    missing transpose), naming the error and the line that raised."""
    try:
        return run()
    except Exception as e:  # noqa: BLE001 - any error in a component is that component's failure
        return [Row(label, "-", (), float("inf"), False, f"{type(e).__name__}: {e}{_where(e)}")]


def default_checks(seed: int = 0) -> list[Row]:
    """Every layer type, every activation, both losses, batch norm (train and eval mode),
    dropout, and whole networks built by :func:`build_mlp`, on random shapes. A component whose
    forward or backward raises (a shape mismatch from a missing transpose) gives one failed row
    naming it, and the other checks still run."""
    rng = np.random.default_rng(seed)
    f64 = np.float64

    def size() -> int:
        return int(rng.integers(2, 8))

    def batchnorm() -> BatchNorm:
        # A fresh layer's gamma = 1 and beta = 0 would hide a backward that leaves gamma out.
        bn = BatchNorm(size(), dtype=f64)
        _draw_gamma_and_beta(bn, rng)
        return bn

    def batchnorm_eval() -> BatchNorm:
        bn = batchnorm()
        bn.buffers["running_mean"][...] = rng.standard_normal(bn.features)
        bn.buffers["running_var"][...] = rng.uniform(0.5, 2.0, bn.features)
        return bn

    rows: list[Row] = []

    def check(label: str, run: Callable[..., list[Row]], *args, **kwargs) -> None:
        rows.extend(_guarded(label, lambda: run(*args, label=label, **kwargs)))

    check("Dense", gradcheck, Dense(size(), size(), rng=rng, dtype=f64, name="dense"), seed=seed)
    for name in ACTIVATIONS:
        spec = "leaky_relu(alpha=0.1)" if name == "leaky_relu" else name
        check(f"Activation({spec})", gradcheck, Activation(spec, dtype=f64), seed=seed)
    check("BatchNorm (train)", gradcheck, batchnorm(), seed=seed, training=True)
    check("BatchNorm (eval)", gradcheck, batchnorm_eval(), seed=seed, training=False)
    check("Dropout(0.5)", gradcheck, Dropout(0.5, dtype=f64), seed=seed)
    check("SoftmaxCrossEntropy (labels)", gradcheck, SoftmaxCrossEntropy(), seed=seed)
    logits = rng.standard_normal((4, 5)) * 10  # large logits: the stable path
    # Rows of any mass (a label weighted, or smoothed into several): the gradient scales with it.
    soft = rng.dirichlet(np.ones(5), size=4) * rng.uniform(0.5, 2.0, size=(4, 1))
    check("SoftmaxCrossEntropy (soft targets)", check_loss, SoftmaxCrossEntropy(), logits, soft)
    check("MSE", gradcheck, MSE(), seed=seed)
    sizes = [size(), size(), size(), 3]
    check(f"mlp {sizes} bn+dropout", gradcheck, lambda dtype: build_mlp(
        sizes, "leaky_relu(alpha=0.1)", batchnorm=True, dropout=0.3, seed=seed, dtype=dtype), seed=seed)
    regression = [size(), size(), size(), 2]
    check("mlp regression tanh", gradcheck, lambda dtype: build_mlp(
        regression, "tanh", init="xavier_normal", task="regression", seed=seed, dtype=dtype), seed=seed)
    sigmoid = [size(), size(), 4]
    check("mlp sigmoid", gradcheck, lambda dtype: build_mlp(
        sigmoid, "sigmoid", init="xavier_uniform", seed=seed, dtype=dtype), seed=seed)
    return rows


def _where(error: BaseException) -> str:
    """`` (in backward, layers.py:124)``: the line that raised, the last frame outside NumPy."""
    numpy_dir = Path(np.__file__).parent
    frames = [f for f in traceback.extract_tb(error.__traceback__) if numpy_dir not in Path(f.filename).parents]
    return f" (in {frames[-1].name}, {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""


def method_line(seed: int, samples: int | None = None) -> str:
    """What the table compares, in words, for the line above it: ``samples`` entries of each array
    of a network at its real size, or (None) every entry of small random components."""
    where, over = "on random shapes and values", "per array"
    if samples is not None:
        where = (f"at {samples} entries sampled at random from each parameter array (all of a smaller one), on a batch "
                 f"of {ROWS} random rows in training mode, any dropout mask held fixed")
        over = "over each array's sampled entries"
    return (f"Each gradient of backward() against central differences (f(x+h) - f(x-h)) / 2h, h = {H:g}, in "
            f"float64, {where} (seed {seed}). The error is max|analytic - numeric| / "
            f"max(max|analytic|, max|numeric|, {ABSOLUTE_FLOOR:g}) {over}: a correct backward gives about 1e-7 or "
            f"less, a wrong one 1e-2 or more; the tolerance is {TOLERANCE:.0e}.")


def format_table(rows: list[Row]) -> str:
    """A printable table of gradient-check rows, with a verdict line."""
    header = ("component", "gradient", "shape", "rel. error", "result")
    body = [(r.component, r.param, "x".join(map(str, r.shape)), "raised" if r.error else f"{r.rel_error:.2e}",
             "ok" if r.passed else "FAIL") for r in rows]
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = sum(not r.passed for r in rows)
    worst = max((r.rel_error for r in rows), default=0.0)
    lines.append(f"{len(rows) - failed}/{len(rows)} gradients match (worst relative error {worst:.1e}, "
                 f"tolerance {TOLERANCE:.0e})" + (f"; {failed} FAILED" if failed else ""))
    lines += [f"{r.component} raised {r.error}" for r in rows if r.error]
    if kinked := sum(r.kinked for r in rows):
        lines.append(f"{kinked} sampled entr{'ies' if kinked > 1 else 'y'} left out: the steps of +-h moved a ReLU's "
                     "input across 0, where its derivative jumps, so the central difference there is not a derivative")
    return "\n".join(lines)


def run_gradcheck(verbose: bool = True, seed: int = 0, network: Network | None = None,
                  samples: int = SAMPLES, log=print) -> bool:
    """Run :func:`default_checks`, or :func:`check_sampled` on a float64 ``network``; ``log`` the
    table when ``verbose`` (below the network, if one is checked). True when every gradient matches."""
    rows = default_checks(seed) if network is None else check_sampled(network, samples, seed)
    if verbose:
        above = [method_line(seed)] if network is None else [method_line(seed, samples), repr(network)]
        log("\n\n".join([*above, format_table(rows)]))
    return all(r.passed for r in rows)
