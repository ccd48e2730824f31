"""Learning-rate schedules: ``schedule(epoch) -> lr`` for epochs counted from 0.

The training loop calls ``optimizer.set_lr(schedule(epoch))`` at the start of each epoch.

- ``constant``: ``lr``.
- ``step(step_size, gamma=0.1)``: ``lr * gamma ** (epoch // step_size)``.
- ``cosine(total_epochs, min_lr=0)``: ``min_lr + (lr - min_lr) * (1 + cos(pi * epoch / total_epochs)) / 2``,
  then ``min_lr`` from ``total_epochs`` on.
- ``warmup(epochs)``: a linear ramp ``lr * (epoch + 1) / (epochs + 1)`` for the first ``epochs``
  epochs, then the wrapped schedule run from its own epoch 0. Any schedule takes
  ``warmup_epochs=...`` to get one; a cosine schedule then spans the epochs after the warm-up,
  so it still ends at ``total_epochs``.
"""

from __future__ import annotations

import math

from trainer.specs import build, parse_spec


class Schedule:
    """Base contract: ``__call__(epoch) -> float``; ``lr`` is the base learning rate."""

    def __init__(self, lr: float):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        self.lr = float(lr)

    def __call__(self, epoch: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr:g})"


class Constant(Schedule):
    """``lr`` at every epoch."""

    def __call__(self, epoch):
        return self.lr


class Step(Schedule):
    """``lr * gamma ** (epoch // step_size)``: the rate is multiplied by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, lr: float, step_size: int = 10, gamma: float = 0.1):
        super().__init__(lr)
        if step_size < 1 or step_size != int(step_size):  # epochs are counted whole: 1.5 would be read as 1
            raise ValueError(f"step_size must be a whole number of epochs >= 1, got {step_size}")
        if not gamma > 0:  # a negative factor would flip the learning rate's sign every other step
            raise ValueError(f"step gamma must be > 0, got {gamma}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def __call__(self, epoch):
        return self.lr * self.gamma ** (epoch // self.step_size)

    def __repr__(self):
        return f"Step(lr={self.lr:g}, step_size={self.step_size}, gamma={self.gamma:g})"


class Cosine(Schedule):
    """``min_lr + (lr - min_lr) * (1 + cos(pi * epoch / total_epochs)) / 2``: from ``lr`` at epoch 0
    down to ``min_lr`` at ``total_epochs``, and ``min_lr`` from then on."""

    def __init__(self, lr: float, total_epochs: int, min_lr: float = 0.0):
        super().__init__(lr)
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        if not 0 <= min_lr <= lr:  # below 0 the run would end climbing the loss
            raise ValueError(f"cosine min_lr must be between 0 and the learning rate {lr:g}, got {min_lr}")
        self.total_epochs, self.min_lr = int(total_epochs), float(min_lr)

    def __call__(self, epoch):
        progress = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2

    def __repr__(self):
        return f"Cosine(lr={self.lr:g}, total_epochs={self.total_epochs}, min_lr={self.min_lr:g})"


class Warmup(Schedule):
    """``lr * (epoch + 1) / (epochs + 1)`` for the first ``epochs`` epochs, then ``after`` from its own
    epoch 0; ``lr`` is ``after``'s."""

    def __init__(self, after: Schedule, epochs: int):
        super().__init__(after.lr)
        if epochs < 0:
            raise ValueError(f"warm-up epochs must be >= 0, got {epochs}")
        self.after, self.epochs = after, int(epochs)

    def __call__(self, epoch):
        if epoch < self.epochs:
            return self.lr * (epoch + 1) / (self.epochs + 1)
        return self.after(epoch - self.epochs)

    def __repr__(self):
        return f"Warmup(epochs={self.epochs}, then {self.after!r})"


def _warmup(epochs: int, **kwargs) -> Warmup:
    return Warmup(Constant(**kwargs), epochs)


# warmup(epochs=5) is a warm-up, then constant; warmup_epochs=... puts one before any of the others.
SCHEDULES = {"constant": Constant, "step": Step, "cosine": Cosine, "warmup": _warmup}


def get_schedule(spec="constant", lr: float | None = None, warmup_epochs: int = 0, **kwargs) -> Schedule:
    """``get_schedule("cosine", lr=0.01, total_epochs=30, warmup_epochs=3)``,
    ``get_schedule("step(step_size=10, gamma=0.5)", lr=0.1)``, ``get_schedule("warmup(epochs=5)", lr=0.1)``
    (warm-up, then constant). Keyword arguments override the spec's."""
    if isinstance(spec, Schedule):
        schedule = spec
    else:
        if isinstance(spec, str) and parse_spec(spec)[0] == "warmup" and warmup_epochs:
            raise ValueError(f"{spec.strip()} sets the warm-up's length and so does warmup_epochs={warmup_epochs}: "
                             "give one (--warmup-epochs N works with any schedule)")
        if lr is not None:
            kwargs["lr"] = lr
        schedule = build(SCHEDULES, spec, "schedule", **kwargs)
    if not warmup_epochs:
        return schedule
    if isinstance(schedule, Cosine):  # the cosine spans the epochs left after the warm-up
        schedule = Cosine(schedule.lr, max(schedule.total_epochs - warmup_epochs, 1), schedule.min_lr)
    return Warmup(schedule, warmup_epochs)
