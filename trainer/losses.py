"""Losses, averaged (cross-entropy over the batch, MSE over every element): ``forward(output, target) -> float``
then ``backward() -> grad``.

``backward`` returns d(loss)/d(output), shape (n, k), in the output's dtype. It reads what
``forward`` cached; the returned array is a scratch array owned by the loss, reused on the next call.
"""

from __future__ import annotations

import numpy as np

from shared.forward import row_max
from trainer.specs import build


class Loss:
    """Base contract. ``task`` says which kind of network the loss trains; ``output_activation``
    is what the exported model applies to the last layer ("softmax" or None)."""

    task = ""
    output_activation: str | None = None

    def __init__(self):
        self._scratch: dict[str, np.ndarray] = {}

    def _scratch_array(self, key: str, shape: tuple, dtype) -> np.ndarray:
        buf = self._scratch.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._scratch[key] = np.empty(shape, dtype=dtype)
        return buf

    def forward(self, output: np.ndarray, target: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, fused.

    ``logits`` z : ndarray of shape (n, k). ``target`` : int labels y of shape (n,), or
    probabilities t (e.g. one-hot) of shape (n, k). For labels the loss is
    ``mean_i [logsumexp(z_i) - z_i[y_i]]`` and its gradient ``(softmax(z) - onehot(y)) / n``; for
    probabilities, ``mean_i sum_j t_ij (logsumexp(z_i) - z_ij)`` and ``(softmax(z) * sum_j t_ij - t) / n``
    (the same when t is one-hot). Both are computed on ``z - max(z)``, which leaves them unchanged
    and keeps ``exp`` from overflowing, whatever the logits' magnitude.
    """

    task = "classification"
    output_activation = "softmax"

    def forward(self, logits, target):
        """The mean loss of ``logits`` (n, k) against ``target`` (n,) or (n, k), as a float."""
        target = self._as_target(target, logits)
        n = logits.shape[0]
        # probs becomes softmax(z) in place: z - max(z), then its exp, then that over its row sum.
        probs = self._scratch_array("probs", logits.shape, logits.dtype)
        np.subtract(logits, row_max(logits), out=probs)
        if target.ndim == 1:
            true_logit = probs[np.arange(n), target]  # z_i[y_i] - max(z_i)
        else:
            true_logit = (target * probs).sum(axis=1)  # sum_j t_ij (z_ij - max(z_i))
        np.exp(probs, out=probs)
        sums = probs.sum(axis=1)
        log_sums = np.log(sums)  # logsumexp(z_i) - max(z_i)
        if target.ndim == 2:
            log_sums *= target.sum(axis=1)
        probs /= sums[:, None]
        self._probs, self._target = probs, target
        return float((log_sums - true_logit).mean())

    @staticmethod
    def _as_target(target, logits: np.ndarray) -> np.ndarray:
        """``target`` as class indices y of shape (n,) (np.intp) or as probabilities t of the logits'
        shape and dtype; anything else is refused with what was expected."""
        n, k = logits.shape
        target = np.asarray(target)
        if target.ndim == 1:
            labels = target.astype(np.intp, copy=False)
            if target.dtype.kind not in "iu" and not np.array_equal(labels, target):  # 1.7 would be class 1
                raise ValueError(f"labels must be integers (class indices), got {target.dtype} values such as "
                                 f"{target[labels != target][0].item()!r}")
            if labels.shape[0] != n or (n and (labels.min() < 0 or labels.max() >= k)):
                raise ValueError(f"labels must be {n} integers in [0, {k}), got shape {target.shape}")
            return labels
        if target.shape == logits.shape:
            return target.astype(logits.dtype, copy=False)
        raise ValueError(f"target must have shape ({n},) or {logits.shape}, got {target.shape}")

    def backward(self):
        """d(loss)/d(logits), shape (n, k): ``(softmax(z) - onehot(y)) / n``, or
        ``(softmax(z) * sum_j t_ij - t) / n`` for probabilities (see the class docstring)."""
        probs, target = self._probs, self._target
        n = probs.shape[0]
        grad = self._scratch_array("grad", probs.shape, probs.dtype)
        if target.ndim == 1:
            np.copyto(grad, probs)
            grad[np.arange(n), target] -= 1
        else:
            np.multiply(probs, target.sum(axis=1, keepdims=True), out=grad)
            grad -= target
        grad *= 1.0 / n
        return grad


class MSE(Loss):
    """Mean squared error, averaged over every element: ``mean((output - target) ** 2)``.

    ``output`` : ndarray of shape (n, k); ``target`` of shape (n, k), or (n,) when k == 1.
    Gradient: ``2 * (output - target) / (n * k)``.
    """

    task = "regression"

    def forward(self, output, target):
        target = np.asarray(target)
        if target.shape != output.shape:
            if target.size != output.size or target.shape[:1] != output.shape[:1]:
                raise ValueError(f"target must have shape {output.shape}, got {target.shape}")
            target = target.reshape(output.shape)
        diff = self._scratch_array("diff", output.shape, output.dtype)
        np.subtract(output, target, out=diff)
        self._diff = diff
        return float(np.vdot(diff, diff)) / diff.size

    def backward(self):
        """d(loss)/d(output), shape (n, k): ``2 * (output - target) / (n * k)``."""
        grad = self._scratch_array("grad", self._diff.shape, self._diff.dtype)
        return np.multiply(self._diff, 2.0 / self._diff.size, out=grad)


LOSSES = {"softmax_cross_entropy": SoftmaxCrossEntropy, "cross_entropy": SoftmaxCrossEntropy, "mse": MSE}


def get_loss(spec) -> Loss:
    """``get_loss("cross_entropy")`` or ``get_loss("mse")``; instances pass through."""
    if isinstance(spec, Loss):
        return spec
    return build(LOSSES, spec, "loss")
