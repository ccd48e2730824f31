"""A multilayer perceptron as a list of layers plus a loss, trained by backpropagation.

Scope: fully connected networks on flat feature vectors (images arrive flattened), for
classification (softmax cross-entropy) or regression (MSE); no convolutions, no recurrence.
The architecture is data: ``build_mlp(sizes=[784, 256, 128, 10])`` is a two-hidden-layer net.

Index convention: ``layers[0]`` sees the input ``x`` of shape (n, sizes[0]); the forward pass
runs the list in order and the backward pass runs it in reverse, each layer turning
d(loss)/d(its output) into d(loss)/d(its input).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from shared.forward import softmax
from shared.text import repeated
from trainer.layers import Activation, BatchNorm, Dense, Dropout, Layer
from trainer.losses import Loss, get_loss
from trainer.memory import size_text


class Network:
    """``Network(layers, loss)``.

    Parameters, gradients and buffers are exposed as dicts keyed ``"<layer>.<param>"``
    (``"dense1.weight"``), the names of docs/model-format.md. Unnamed layers are named by kind
    and position (``dense1``, ``bn1``, ``act1``, ``dropout1``). A first layer that is dense skips
    computing d(loss)/d(input), which nothing needs in training; ``backward()`` then returns None.
    """

    def __init__(self, layers: list[Layer], loss: Loss | str):
        self.layers = list(layers)
        self.loss = get_loss(loss)
        self.training = True
        self._name_layers()
        self._mark_inplace()
        if self.layers and isinstance(self.layers[0], Dense):
            self.layers[0].needs_input_grad = False
        # The parameters, and apart from them the gradients, move into one flat buffer of which the
        # layers keep views: the optimiser finds them back to back and updates them all at once.
        _pack([layer.params for layer in self.layers])
        self._flat_grads = _pack([layer.grads for layer in self.layers])

    def _name_layers(self) -> None:
        """Name each unnamed layer by its kind and its position among layers of that kind; refuse
        a network whose names repeat."""
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            if layer.name is None:
                layer.name = f"{layer.kind}{counts[layer.kind]}"
        if duplicates := repeated(layer.name for layer in self.layers):
            raise ValueError(f"layer names must be unique; repeated: {', '.join(duplicates)}")

    def _mark_inplace(self) -> None:
        """Let a layer overwrite its input (and grad_out) when the input is the previous layer's
        scratch output that the previous layer does not read back in its backward pass. Dropout
        in eval mode passes its input through, so look past it to the real producer."""
        for i, layer in enumerate(self.layers):
            producer = i - 1
            while producer >= 0 and isinstance(self.layers[producer], Dropout):
                producer -= 1
            layer.inplace = producer >= 0 and not self.layers[producer].caches_output

    # --- training -------------------------------------------------------------------------

    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        """``x`` : ndarray of shape (n, in_features) -> output of shape (n, out_features), a new array.

        ``training`` defaults to the mode set by ``train()`` / ``eval()``."""
        if training is None:
            training = self.training
        for layer in self.layers:
            x = layer.forward(x, training)
        return x.copy()

    def backward(self) -> np.ndarray | None:
        """Backpropagate the loss of the last ``loss.forward`` call into ``grads()``: the first backward
        after ``zero_grad()`` writes them, later ones add to them. Returns d(loss)/d(x) of shape
        (n, in_features), or None when the first layer is dense (it skips that product)."""
        grad = self.loss.backward()
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:
                return None
        return grad

    def zero_grad(self) -> None:
        """Set every gradient to zero, so that backward passes from here on add up (``train_step``
        does not need it: its backward writes the gradients afresh)."""
        if self._flat_grads is None:
            for layer in self.layers:
                layer.zero_grad()
            return
        self._flat_grads.fill(0)
        self._begin_gradients()

    def _begin_gradients(self) -> None:
        """Make the next backward pass write every gradient instead of adding to it."""
        for layer in self.layers:
            layer.begin_gradients()

    def train_step(self, x: np.ndarray, y: np.ndarray, optimizer) -> tuple[float, np.ndarray]:
        """One minibatch: forward in training mode, backward, optimiser step. Returns the
        batch's mean loss and the network's output for it (computed before the step).

        The gradients are not zeroed first: the backward pass writes each one (every layer
        with parameters writes its first gradient rather than adding it to zeros), which spares
        a pass over all of them per step, ~2 % of an MNIST epoch."""
        self._begin_gradients()
        output = self.forward(x, training=True)
        loss = self.loss.forward(output, y)
        self.backward()
        optimizer.step(self.params(), self.grads())
        return loss, output

    def train(self) -> "Network":
        self.training = True
        return self

    def eval(self) -> "Network":
        self.training = False
        return self

    # --- inference ------------------------------------------------------------------------

    def predict_logits(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Eval-mode output of shape (n, out_features), computed in chunks of ``batch_size``.
        Do not call between a training forward and its backward: layers reuse their caches."""
        x = np.asarray(x)
        if x.shape[0] <= batch_size:
            return self.forward(x, training=False)
        return np.concatenate([self.forward(x[i:i + batch_size], training=False)
                               for i in range(0, x.shape[0], batch_size)])

    def predict_proba(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities of shape (n, classes) (classification only)."""
        if self.loss.output_activation != "softmax":
            raise ValueError("predict_proba needs a classification network")
        logits = self.predict_logits(x, batch_size)
        return softmax(logits, out=logits)  # in place: the logits are a new array

    def predict(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class indices of shape (n,) for classification; for regression the raw outputs (n, k), in
        the standardised target units the network trains on (``shared.forward.Model.predict``, which
        serves the exported model, undoes that scaling and returns shape (n,))."""
        out = self.predict_logits(x, batch_size)
        return out.argmax(axis=1) if self.loss.output_activation == "softmax" else out

    # --- parameters -----------------------------------------------------------------------

    def params(self) -> dict[str, np.ndarray]:
        """The live parameter arrays (updated in place by the optimiser)."""
        return {f"{layer.name}.{k}": v for layer in self.layers for k, v in layer.params.items()}

    def grads(self) -> dict[str, np.ndarray]:
        """d(loss)/d(param) for each parameter, keyed and shaped as ``params()``."""
        return {f"{layer.name}.{k}": v for layer in self.layers for k, v in layer.grads.items()}

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trained state (batch-norm running statistics)."""
        return {f"{layer.name}.{k}": v for layer in self.layers for k, v in layer.buffers.items()}

    def state(self) -> dict[str, np.ndarray]:
        """A copy of every parameter and buffer, e.g. to keep the best epoch for early stopping."""
        return {k: v.copy() for k, v in {**self.params(), **self.buffers()}.items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays from ``state`` (same keys and shapes as ``state()``) into the network."""
        own = {**self.params(), **self.buffers()}
        missing, unknown = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unknown:
            raise ValueError(f"state does not match the network: missing {missing}, unknown {unknown}")
        for key, target in own.items():
            if np.shape(state[key]) != target.shape:
                raise ValueError(f"{key}: expected shape {target.shape}, got {np.shape(state[key])}")
            np.copyto(target, state[key])

    def num_params(self) -> int:
        return sum(layer.num_params() for layer in self.layers)

    @property
    def task(self) -> str:
        return self.loss.task

    @property
    def in_features(self) -> int:
        """The width of the input rows, ``sizes[0]``: what the first dense or batch-norm layer takes."""
        for layer in self.layers:
            if isinstance(layer, Dense):
                return layer.in_features
            if isinstance(layer, BatchNorm):
                return layer.features
        raise ValueError("the network has no dense or batch-norm layer to fix its input size")

    # --- export ---------------------------------------------------------------------------

    def export(self, fold_batchnorm: bool = True) -> tuple[list[dict], dict[str, np.ndarray]]:
        """The ``layers`` list and float32 arrays of docs/model-format.md.

        Dropout is omitted (identity at inference). A batch-norm layer directly after a dense
        layer is folded into that layer's weight and bias when ``fold_batchnorm`` (the dense
        entry then says ``"batchnorm": "folded"``); any other batch-norm layer is exported
        explicitly with its running statistics. A classifier ends with a softmax activation.
        """
        layers = [layer for layer in self.layers if not isinstance(layer, Dropout)]
        spec: list[dict] = []
        arrays: dict[str, np.ndarray] = {}
        folded = None  # the batch-norm layer folded into the dense layer before it: not exported again
        for layer, following in zip(layers, [*layers[1:], None]):
            if layer is folded:
                continue
            if isinstance(layer, Dense):
                folded = following if fold_batchnorm and _can_fold(layer, following) else None
                entry, layer_arrays = _export_dense(layer, folded)
            elif isinstance(layer, BatchNorm):
                entry = {"type": "batchnorm", "name": layer.name, "features": layer.features, "eps": layer.eps}
                layer_arrays = {f"{layer.name}.{key}": _float32(value)
                                for key, value in {**layer.params, **layer.buffers}.items()}
            elif isinstance(layer, Activation):
                entry, layer_arrays = layer.fn.spec(), {}
            else:
                raise ValueError(f"cannot export layer {layer.name} of type {type(layer).__name__}")
            spec.append(entry)
            arrays.update(layer_arrays)
        if self.loss.output_activation:
            spec.append({"type": "activation", "name": self.loss.output_activation})
        return spec, arrays

    # --- display --------------------------------------------------------------------------

    def __repr__(self) -> str:
        lines = [f"  ({layer.name}): {layer!r}" for layer in self.layers]
        lines.append(f"  loss: {self.loss!r}")
        return "Network(\n" + "\n".join(lines) + "\n)"

    def outline(self) -> "Outline":
        """The network as its summary shows it. The output sizes are the ones the forward pass
        produces: a two-row batch runs through copies of the layers in inference mode, so that
        what the layers hold for the next backward pass is left as it was (a summary may be printed
        between a forward and its backward), and a layer whose forward fails or returns another
        shape than it declares raises a ValueError naming it."""
        features = self.in_features
        probe = np.zeros((2, features), dtype=self.layers[0].dtype if self.layers else np.float32)
        layers = []
        for layer in self.layers:
            features = layer.output_features(features)
            probe = _probe(layer, probe, features)
            layers.append((layer.name, repr(layer), features, layer.num_params()))
        itemsize = self.layers[0].dtype.itemsize if self.layers else 4
        return Outline(self.in_features, layers, repr(self.loss), itemsize)

    def summary(self, batch_size: int = 1) -> str:
        """``Outline.summary`` of this network (see ``outline``)."""
        return self.outline().summary(batch_size)


@dataclass(frozen=True)
class Outline:
    """A network as its summary shows it, without its arrays: the input size, each layer's name,
    description, output size and parameter count, and the loss. ``outline_mlp`` works it out from
    build_mlp's arguments alone, so a network too large to build can still be shown and its memory
    priced."""

    in_features: int
    layers: list[tuple[str, str, int, int]]  # (name, description, output features, parameters)
    loss: str
    itemsize: int = 4  # bytes of a value (float32)

    def num_params(self) -> int:
        return sum(params for *_, params in self.layers)

    def activations(self, batch_size: int) -> int:
        """The values a forward pass of ``batch_size`` rows holds: the input and every layer's output."""
        return batch_size * (self.in_features + sum(features for _, _, features, _ in self.layers))

    def summary(self, batch_size: int = 1) -> str:
        """A printable table: each layer's output shape for a batch of ``batch_size`` and its
        parameter count, then the totals and the bytes of parameters and activations."""
        rows = [("layer", "type", "output shape", "params"), ("input", "", str((batch_size, self.in_features)), "")]
        rows += [(name, description, str((batch_size, features)), f"{params:,}")
                 for name, description, features, params in self.layers]
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        rule = "  ".join("-" * w for w in widths)

        def fmt(row):
            return "  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                              row[2].ljust(widths[2]), row[3].rjust(widths[3])])

        total, activations = self.num_params(), self.activations(batch_size)
        lines = [fmt(rows[0]), rule, *map(fmt, rows[1:]), rule,
                 f"total parameters: {total:,} ({size_text(total * self.itemsize)})",
                 f"activations per batch of {batch_size}: {activations:,} values "
                 f"({size_text(activations * self.itemsize)})",
                 f"loss: {self.loss}"]
        return "\n".join(lines)


def _probe(layer: Layer, x: np.ndarray, features: int) -> np.ndarray:
    """``layer``'s inference-mode output for ``x``, checked to have the ``features`` it declares. The
    forward runs on a shallow copy with scratch arrays of its own: it shares the parameters, but
    what it keeps for a backward pass (its input, dropout's mask, batch norm's statistics) and the
    outputs it writes are the copy's, not the layer's."""
    probe = copy.copy(layer)
    probe._scratch = {}
    try:
        y = probe.forward(x.copy(), training=False)
    except (ValueError, IndexError) as e:
        raise ValueError(f"{layer.name}: forward fails on input of shape {x.shape}: {e}") from None
    if y.shape != (x.shape[0], features):
        raise ValueError(f"{layer.name}: forward returns shape {y.shape}, but the layer declares "
                         f"{(x.shape[0], features)} ({layer!r})")
    return y.copy()


def _pack(dicts: list[dict[str, np.ndarray]]) -> np.ndarray | None:
    """Move the arrays of ``dicts`` into one flat buffer, in order, replacing each with a view of
    it; the optimiser then updates all parameters with a few large operations. Returns the
    buffer (None when there is nothing to pack or dtypes differ). Each array is freed once moved
    (nothing else holds it), so packing takes the memory of the buffer and of one array, not
    twice the buffer's."""
    dtypes = {a.dtype for d in dicts for a in d.values()}
    if len(dtypes) != 1:
        return None
    flat = np.empty(sum(a.size for d in dicts for a in d.values()), dtype=dtypes.pop())
    offset = 0
    for d in dicts:
        for key, a in d.items():
            view = flat[offset:offset + a.size].reshape(a.shape)
            view[...] = a
            d[key] = view
            offset += a.size
    return flat


def _can_fold(dense: Dense, following: Layer | None) -> bool:
    """Whether ``following`` is a batch-norm layer over ``dense``'s outputs, which export can fold."""
    return isinstance(following, BatchNorm) and following.features == dense.out_features


def _export_dense(dense: Dense, bn: BatchNorm | None) -> tuple[dict, dict[str, np.ndarray]]:
    """The model-file entry and float32 arrays of ``dense``, with the batch-norm layer ``bn`` that
    follows it folded into its weight and bias when one is given."""
    entry = {"type": "dense", "name": dense.name, "in_features": dense.in_features, "out_features": dense.out_features}
    weight, bias = dense.params["weight"].astype(np.float64), dense.params["bias"].astype(np.float64)
    if bn is not None:
        weight, bias = _fold(weight, bias, bn)
        entry["batchnorm"] = "folded"
    return entry, {f"{dense.name}.weight": _float32(weight), f"{dense.name}.bias": _float32(bias)}


def _fold(weight: np.ndarray, bias: np.ndarray, bn: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference-mode batch norm ``gamma * (z - mean) / sqrt(var + eps) + beta`` applied to
    ``z = x @ weight + bias`` into new (weight, bias), computed in float64."""
    gamma, beta = bn.params["gamma"].astype(np.float64), bn.params["beta"].astype(np.float64)
    mean, var = bn.buffers["running_mean"].astype(np.float64), bn.buffers["running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + bn.eps)
    return weight * scale, (bias - mean) * scale + beta


def _float32(a: np.ndarray) -> np.ndarray:
    return np.array(a, dtype=np.float32, order="C", copy=True)


def build_mlp(sizes=(784, 256, 128, 10), activation="relu", init="he_normal", batchnorm: bool = False,
              dropout: float = 0.0, task: str = "classification", seed: int | None = 0,
              dtype=np.float32, bn_momentum: float = 0.9, bn_eps: float = 1e-5) -> Network:
    """A multilayer perceptron with ``len(sizes) - 1`` dense layers.

    Each hidden block is ``Dense -> [BatchNorm] -> Activation -> [Dropout]``, named ``dense{i}``,
    ``bn{i}``, ``act{i}``, ``dropout{i}``; the last dense layer has no activation (softmax is
    fused into the cross-entropy loss for ``task="classification"``; ``"regression"`` uses MSE).
    All randomness (weights, dropout masks) comes from ``np.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    make = {
        "dense": lambda name, n_in, n_out: Dense(n_in, n_out, init=init, name=name, rng=rng, dtype=dtype),
        "bn": lambda name, n_in, n_out: BatchNorm(n_out, momentum=bn_momentum, eps=bn_eps, name=name, dtype=dtype),
        "act": lambda name, n_in, n_out: Activation(activation, name=name, dtype=dtype),
        "dropout": lambda name, n_in, n_out: Dropout(dropout, name=name, rng=rng, dtype=dtype),
    }
    layout = _mlp_layout(sizes, batchnorm, dropout, task)
    return Network([make[kind](name, n_in, n_out) for kind, name, n_in, n_out in layout], _mlp_loss(task))


def outline_mlp(sizes=(784, 256, 128, 10), activation="relu", init="he_normal", batchnorm: bool = False,
                dropout: float = 0.0, task: str = "classification", dtype=np.float32, bn_momentum: float = 0.9,
                bn_eps: float = 1e-5) -> Outline:
    """The outline of ``build_mlp``'s network for these arguments (the seed aside), worked out from
    them alone: nothing is allocated, so it answers at once however large the network."""
    describe = {  # (description, parameters)
        "dense": lambda n_in, n_out: (Dense.describe(n_in, n_out, init), n_in * n_out + n_out),
        "bn": lambda n_in, n_out: (BatchNorm.describe(n_out, bn_momentum, bn_eps), 2 * n_out),
        "act": lambda n_in, n_out: (repr(Activation(activation)), 0),
        "dropout": lambda n_in, n_out: (repr(Dropout(dropout)), 0),
    }
    layers = []
    for kind, name, n_in, n_out in _mlp_layout(sizes, batchnorm, dropout, task):
        description, params = describe[kind](n_in, n_out)
        layers.append((name, description, n_out, params))
    return Outline(int(sizes[0]), layers, repr(get_loss(_mlp_loss(task))), np.dtype(dtype).itemsize)


def _mlp_layout(sizes, batchnorm: bool, dropout: float, task: str) -> list[tuple[str, str, int, int]]:
    """The layers of build_mlp's network, in order, as (kind, name, in features, out features)."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least an input and an output size, all >= 1; got {sizes}")
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if task == "classification" and sizes[-1] < 2:
        raise ValueError("a classifier needs at least 2 outputs")
    layout = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), start=1):
        layout.append(("dense", f"dense{i}", n_in, n_out))
        if i == len(sizes) - 1:
            break
        if batchnorm:
            layout.append(("bn", f"bn{i}", n_out, n_out))
        layout.append(("act", f"act{i}", n_out, n_out))
        if dropout:
            layout.append(("dropout", f"dropout{i}", n_out, n_out))
    return layout


def _mlp_loss(task: str) -> str:
    return "softmax_cross_entropy" if task == "classification" else "mse"
