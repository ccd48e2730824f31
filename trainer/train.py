"""The training run: configuration, the epoch loop, and turning the result into a model file.

``run(config)`` is what ``python -m trainer train`` does: load the data, build the network,
fit it with mini-batches (validation split, schedule, early stopping with restore-best),
export it through ``shared.model_file`` and score that file on the test split with the same
forward module the service uses, then save or publish it with its metrics and plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Literal

import numpy as np
from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as checked_dataclass

from shared.errors import ModelFileError
from shared.forward import Model, output_scaling, standardize
from shared.model_file import MANIFEST_KEY, load_model, parameters_sha256, read_manifest, save_model
from shared.registry import (HIGHEST_FILE, MODEL_FILE, SERVING_FILE, VERSION_PATTERN, Registry, RegistryError,
                             check_name, missing_folders, nearest_existing, removed_if_left_empty, try_writing,
                             unwritable)
from shared.text import closest, counted

from . import memory, report
from .activations import get_activation
from .augment import get_augmentation, image_side
from .datasets import (FLOAT32_MAX, IMAGE_SIDE, MISSING_VALUES, Dataset, DatasetError, dataset_key, load_dataset,
                       validation_split)
from .initializers import get_initializer
from .interface import NEW_INTERFACE_FLAG, check_interface, dataset_interface, interface
from .interrupts import stop_if_interrupted
from .layers import BatchNorm
from .network import build_mlp, outline_mlp
from .optimizers import get_optimizer
from .schedules import Warmup, get_schedule
from .specs import parse_spec

AtLeast1 = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
# What a run writes: the model file and its extras (the registry's version folder, or --output).
METRICS_FILE, CURVES_FILE, CONFUSION_FILE = "metrics.jsonl", "learning_curves.png", "confusion.png"
OUTPUT_FILES = (MODEL_FILE, METRICS_FILE, CURVES_FILE, CONFUSION_FILE)
# Hyperparameters that have their own key (and flag); a component spec must not repeat them,
# or one of the two values would be silently ignored.
OWN_KEYS = {"optimizer": ("lr", "weight_decay", "momentum", "clip_norm"),
            "schedule": ("lr", "warmup_epochs")}


@checked_dataclass(config=ConfigDict(strict=True, allow_inf_nan=False))
class TrainConfig:
    """Every knob of a run. Config files (TOML) and CLI flags use these names.

    Values are checked on construction (and by ``dataclasses.replace``): types strictly, so a
    TOML ``batchnorm = "false"`` is refused rather than read as true, and ranges (numbers finite),
    so a run that could only publish an untrained or unusable model never starts."""

    dataset: str = "mnist"
    variant: str | None = None           # wine-quality: red, white or both
    data_path: str | None = None         # csv / npz: the file
    target: str | None = None            # csv: the target column
    task: str | None = None              # csv: classification or regression
    image: Literal["digit", "garment"] | None = None  # npz: x holds pictures of digits or garments
    data_dir: str | None = None
    cache_dir: str | None = None
    name: str | None = None              # registry name; defaults to the dataset's
    hidden: list[AtLeast1] = field(default_factory=lambda: [256, 128])
    activation: str | None = None        # hidden layers; None: relu
    init: str = "he_normal"
    batchnorm: bool = False
    dropout: Fraction = 0.0
    augment: str | None = None           # images: e.g. "affine(shift=2, rotate=10, scale=0.1)"
    fold_batchnorm: bool = True
    optimizer: str = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    momentum: Fraction | None = None     # momentum and nesterov only; None: 0.9
    # L2 penalty (sgd, momentum, adam); decoupled decay (adamw). None: 0.01 for adamw (as in
    # PyTorch), else 0.
    weight_decay: Annotated[float, Field(ge=0)] | None = None
    clip_norm: Annotated[float, Field(gt=0)] | None = None
    schedule: str = "constant"
    warmup_epochs: Annotated[int, Field(ge=0)] = 0
    epochs: AtLeast1 = 10
    batch_size: AtLeast1 = 128
    val_fraction: Fraction = 0.1
    patience: AtLeast1 | None = None     # early stopping: epochs without improvement
    refit: bool = False                  # then retrain on train + validation for the best epoch count
    seed: Annotated[int, Field(ge=0)] = 0
    limit_train: AtLeast1 | None = None  # use the first N training examples (quick runs, tests)
    progress: bool = True

    def __post_init__(self):
        if self.name is not None:
            try:
                check_name(self.name)
            except RegistryError as exc:
                raise ValueError(str(exc)) from None
        optimizer = parse_spec(self.optimizer)
        if optimizer[1]:  # which parameter a value fills would change with the flags given (--momentum)
            raise ValueError(f"optimizer {self.optimizer!r} gives values without their names: name each (for example "
                             "momentum(nesterov=True) or adam(betas=[0.9, 0.99])); lr, momentum, weight_decay and "
                             "clip_norm have flags (and config keys) of their own")
        if (self.momentum is not None or "momentum" in optimizer[2]) and optimizer[0] not in ("momentum", "nesterov"):
            raise ValueError(f"momentum applies to the momentum and nesterov optimizers, not {optimizer[0]!r}: "
                             "leave it unset (take it out of the --config file, if it is set there) "
                             "or choose one of those")
        for key, own in OWN_KEYS.items():
            repeated = [k for k in parse_spec(getattr(self, key))[2] if k in own]
            if repeated:
                flags = ", ".join(f"--{k.replace('_', '-')}" for k in repeated)
                raise ValueError(f"{key} {getattr(self, key)!r} sets {', '.join(repeated)}: give "
                                 f"{'it' if len(repeated) == 1 else 'them'} with {flags} (or the "
                                 "config key of the same name) instead")
        if self.val_fraction == 0:
            if self.patience is not None:
                raise ValueError("early stopping (patience) watches the validation loss: "
                                 "set val_fraction above 0 or leave patience unset")
            if self.refit:
                raise ValueError("refit retrains for the epoch count validation picked: "
                                 "set val_fraction above 0")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} takes the whole run of {self.epochs} epochs: the "
                             "learning rate would never reach lr nor follow the schedule; give fewer than epochs")
        if not self.hidden:
            self._refuse_hidden_layer_options()
        elif self.activation is None:
            self.activation = "relu"
        if not self.fold_batchnorm and not self.batchnorm:
            raise ValueError("fold_batchnorm = false keeps batch-norm layers explicit in the model file, and this "
                             "network has none: leave it unset or set batchnorm")
        if self.batchnorm and self.batch_size < 2:
            raise ValueError("batch norm normalises each feature over a batch: batch_size must be 2 or more")
        if self.weight_decay is None:
            self.weight_decay = 0.01 if optimizer[0] == "adamw" else 0.0
        # Built once here so that a bad name or argument is refused before the data loads.
        build_optimizer(self)
        schedule = build_schedule(self)
        if isinstance(schedule, Warmup) and schedule.epochs >= self.epochs:
            raise ValueError(f"schedule {self.schedule!r} warms up for the whole run of {self.epochs} epochs: the "
                             "learning rate would never reach lr; give a warm-up shorter than epochs")
        if self.activation is not None:
            get_activation(self.activation)
        get_initializer(self.init)
        if self.augment:
            get_augmentation(self.augment, side=IMAGE_SIDE)

    def _refuse_hidden_layer_options(self) -> None:
        """A network without hidden layers has nothing for these keys to act on: refused, not ignored."""
        is_set = {"activation": self.activation is not None, "batchnorm": self.batchnorm, "dropout": self.dropout > 0}
        if given := [key for key, set_here in is_set.items() if set_here]:
            raise ValueError(f"hidden is empty, and these options act on hidden layers: {', '.join(given)}; leave them "
                             "unset (take them out of the --config file, if set there) or give hidden layer sizes")

    @classmethod
    def from_dict(cls, values: dict, commands_taking: Callable[[str], str | None] = lambda key: None
                  ) -> "TrainConfig":
        """The config of ``values``, refusing unknown keys. ``commands_taking(key)``: the commands that take a
        key as a flag of their own, in words ("gradcheck and overfit"), or None; the CLI's parser knows them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            described = "; ".join(_unknown_key(key, values[key], known, commands_taking) for key in unknown)
            raise ValueError(f"unknown config keys: {described}; known keys: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ValueError(config_error(exc)) from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_error(exc: ValidationError) -> str:
    """One line naming each bad config value and what is expected of it."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            key = ".".join(str(part) for part in error["loc"])
            hint = _toml_hint(key, error["input"], error["type"]) if len(error["loc"]) == 1 else ""
            problems.append(f"{key}: {message.lower()}, got {error['input']!r}{hint}")
        else:
            problems.append(message)
    return "invalid config: " + "; ".join(problems)


def _toml_hint(key: str, value, error_type: str) -> str:
    """How TOML writes what a config key was given in another type, where that is plain: a number or true/false
    in quotes (``lr = "1e-3"``, as a flag's value looks) without them, layer sizes as a list; '' otherwise."""
    if error_type == "list_type" and isinstance(value, (str, int)) and not isinstance(value, bool):
        sizes = str(value).replace(",", " ").split()
        if all(size.isdigit() for size in sizes):
            return f": write a list, {key} = [{', '.join(sizes)}]"
    if isinstance(value, str):
        try:
            unquoted = tomllib.loads(f"value = {value.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            return ""
        if not isinstance(unquoted, str) and not (isinstance(unquoted, float) and not math.isfinite(unquoted)):
            return f": write it without quotes, {key} = {value.strip()}"
    return ""


@dataclass
class Prepared:
    """The data as the network sees it, and what the manifest must record to reproduce that."""

    dataset: Dataset
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    normalization: dict
    target_scaling: dict | None
    coarse: list[str]  # the columns float32 holds too coarsely (coarse_columns), for coarse_note


def prepare(dataset: Dataset, config: TrainConfig) -> Prepared:
    """Split off validation data and compute the normalisation from the training part only."""
    check_learnable(dataset)
    x, y = dataset.x_train, dataset.y_train
    if config.limit_train:
        x, y = x[: config.limit_train], y[: config.limit_train]
    x_val = y_val = None
    if config.val_fraction > 0:
        # Tabular data can hold duplicate rows (Wine Quality does): keep each on one side.
        x, y, x_val, y_val = validation_split(x, y, config.val_fraction, config.seed,
                                              grouped=dataset.input_kind == "vector")
    coarse = []
    if dataset.input_kind == "image":
        # One mean and std for every pixel, as for the MNIST recipe's (x - 0.1307) / 0.3081. Pixels, 0 to 1,
        # are held finely enough.
        normalization = {"mean": [float(x.mean())], "std": [float(x.std())]}
    else:
        stats, columns = column_statistics(x), feature_columns(dataset)
        mean, std = column_scaling(stats, columns, dataset.name)
        normalization = {"mean": mean.tolist(), "std": std.tolist()}
        coarse = coarse_columns(stats, columns)
    target_scaling = None
    if dataset.task == "regression":
        stats, columns = column_statistics(y.reshape(-1, 1)), [target_column(dataset)]
        mean, std = column_scaling(stats, columns, dataset.name)
        target_scaling = {"mean": float(mean[0]), "std": float(std[0])}
        coarse += coarse_columns(stats, columns)
    return Prepared(dataset, x, y, x_val, y_val, normalization, target_scaling, coarse)


def check_learnable(dataset: Dataset) -> None:
    """Refuse ``dataset`` if its rows all have the same target: there is nothing to learn. Training's
    concern only: a file of one class can still be scored (evaluate) by a model that knows more."""
    if dataset.task == "classification" and dataset.labels is not None:
        # The classes the rows hold, not the labels: an npz's indices 1 and up name a class 0 no row has.
        present = np.unique(np.concatenate([dataset.y_train, dataset.y_test]))
        if len(present) < 2:
            raise DatasetError(f"{dataset.name}: the targets hold a single class "
                               f"({', '.join(dataset.labels[i] for i in present)}); a classifier needs at least 2")
    if dataset.task == "regression":
        targets = np.concatenate([dataset.y_train, dataset.y_test])
        if (targets == targets[0]).all():
            raise DatasetError(f"{dataset.name}: every row's target is {targets[0]:g}: there is nothing to learn; "
                               "a regressor needs targets that differ")


def feature_columns(dataset: Dataset) -> list[str]:
    """Each feature column of ``dataset`` as a message names it."""
    if dataset.feature_names:
        return [f"column {name!r}" for name in dataset.feature_names]
    return [f"column {i}" for i in range(dataset.n_features)]


def target_column(dataset: Dataset) -> str:
    """A regression ``dataset``'s target as a message names it."""
    return f"the target {dataset.target!r}"


# Rows are summed in float64 a block of about this many values at a time: a float64 copy of the whole
# training data would double its memory before check_memory has looked at it.
STATISTICS_BLOCK_VALUES = 1 << 20


@dataclass
class ColumnStatistics:
    """Of each column of values (n, d): its mean and std, computed in float64 (in float32 the square of a
    value past 1.8e19 overflows), and its lowest and highest value."""

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray


def column_statistics(values: np.ndarray) -> ColumnStatistics:
    """The ``ColumnStatistics`` of ``values`` (n, d), summed over blocks of rows: the memory they take
    beyond ``values`` is one block's float64 copy."""
    rows = max(1, STATISTICS_BLOCK_VALUES // values.shape[1])
    blocks = [values[start:start + rows] for start in range(0, len(values), rows)]
    mean = sum(block.sum(axis=0, dtype=np.float64) for block in blocks) / len(values)
    squares = np.zeros(values.shape[1])
    for block in blocks:
        deviations = block.astype(np.float64)
        deviations -= mean
        squares += np.square(deviations, out=deviations).sum(axis=0)
    return ColumnStatistics(mean, np.sqrt(squares / len(values)), values.min(axis=0), values.max(axis=0))


def column_scaling(stats: ColumnStatistics, columns: list[str], source: str) -> tuple[np.ndarray, np.ndarray]:
    """The float32 mean and std (1 for a constant column) that standardise each column of ``stats``. A
    column whose values lie further from their mean than float32 reaches, so that standardising them
    would overflow, is refused, named by ``columns``."""
    low, high = stats.low, stats.high
    beyond = np.maximum(high - stats.mean, stats.mean - low) > FLOAT32_MAX
    if beyond.any():
        i = int(np.argmax(beyond))
        raise DatasetError(f"{source}: {columns[i]} runs from {low[i]:.4g} to {high[i]:.4g}: centred on its mean, "
                           f"its values reach beyond float32's range (±{FLOAT32_MAX:.3g}), in which the network "
                           "computes: scale it down")
    std = stats.std.astype(np.float32)
    return stats.mean.astype(np.float32), np.where(std > 0, std, np.float32(1))


# float32 steps to a standard deviation, at a column's largest magnitude, under which its values are held too
# coarsely: MNIST's, Fashion-MNIST's and Wine Quality's columns have 16,000 or more (wine's density the fewest).
PRECISION_STEPS = 100


def coarse_columns(stats: ColumnStatistics, columns: list[str]) -> list[str]:
    """Those of ``columns`` (with their largest magnitude and its step) whose values float32 holds in
    steps coarse against their spread (``stats``): fewer than PRECISION_STEPS to a standard deviation,
    as for values far from zero (a time in seconds since 1970, 1e9 + t) that vary little. A column that
    float32 has made constant cannot be told from one that is."""
    largest = np.maximum(np.abs(stats.low), np.abs(stats.high))
    step = np.spacing(largest).astype(np.float64)
    coarse = (stats.std > 0) & (step * PRECISION_STEPS > stats.std)
    return [f"{columns[i]}, whose values reach {largest[i]:.3g}, in steps of {step[i]:.3g}"
            for i in np.flatnonzero(coarse)]


def coarse_note(prepared: Prepared) -> str | None:
    """A note naming the columns (and regression target) that float32, in which the network computes,
    holds too coarsely in the training rows of ``prepared`` (its ``coarse``), saying what to do; None
    if none."""
    if not prepared.coarse:
        return None
    return (f"note: float32, in which the network computes, holds {'; '.join(prepared.coarse)}: fewer than "
            f"{PRECISION_STEPS} steps to a standard deviation, which loses much of what tells the values apart; "
            "subtract an offset (the mean, say) or rescale such a column in the data before training")


NAMED_CLASSES = 10  # the most classes a note names


def untrained_notes(prepared: Prepared, config: TrainConfig) -> list[str]:
    """A note for each reason a classifier's classes have no training row, naming them: the output unit
    of such a class learns only "never", and each of its test rows is scored wrong."""
    dataset = prepared.dataset
    if dataset.labels is None:
        return []
    untrained = set(range(dataset.n_classes)) - set(np.unique(prepared.y_train).tolist())
    nowhere = untrained - set(np.unique(np.concatenate([dataset.y_train, dataset.y_test])).tolist())
    in_training_file = set(np.unique(dataset.y_train).tolist())
    cut = (untrained & in_training_file) - set(np.unique(dataset.y_train[: config.limit_train]).tolist())
    held_out = untrained - nowhere - cut

    def named(classes: set) -> str:  # the first few: a target of ids, a class a row, named thousands
        names = [dataset.labels[i] for i in sorted(classes)]
        more = len(names) - NAMED_CLASSES
        return f"class{'es' if len(names) > 1 else ''} " + ", ".join(names[:NAMED_CLASSES]) + (
            f" and {more:,} more ({len(names):,} of the {dataset.n_classes:,} classes)" if more > 0 else "")

    def it(classes: set, each: str = "them") -> str:
        return "it" if len(classes) == 1 else each

    notes = []
    if nowhere:
        hint = ""
        if dataset.labels_are_indices:
            hint = (" (y holds class indices, counted from 0: are its classes numbered from 1? store y - 1)"
                    if nowhere == {0} else
                    " (y holds class indices, counted from 0, one output each up to the largest: store the classes "
                    "as 0, 1, 2, ..., or their names in y)")
        notes.append(f"note: no row of the data is of {named(nowhere)}: the model has an output for "
                     f"{it(nowhere, 'each')} that no row teaches{hint}")
    if cut:
        notes.append(f"note: none of the first {config.limit_train:,} training rows that --limit-train keeps is of "
                     f"{named(cut)}: the model cannot learn to predict {it(cut)}")
    if held_out:
        notes.append(f"note: no training row of {named(held_out)}: the model cannot learn to predict {it(held_out)} "
                     f"({'its' if len(held_out) == 1 else 'their'} rows are all in the test or validation split)")
    return notes


def missing_class_notes(dataset: Dataset) -> list[str]:
    """A note for each class whose name is how spreadsheets, pandas and R write a missing value ('NA', 'N/A',
    'null', '?'): such rows are trained as a class of their own, which the model then answers."""
    if dataset.labels is None or dataset.labels_are_indices:
        return []
    counts = np.bincount(np.concatenate([dataset.y_train, dataset.y_test]), minlength=dataset.n_classes)
    return [f"note: the class {name!r} ({counts[i]:,} row{'' if counts[i] == 1 else 's'}) is how spreadsheets, "
            "pandas and R write a missing value: it is trained as a class of its own, which the model will answer; "
            "if those rows' classes are missing, fill them in or drop the rows" for i, name in enumerate(dataset.labels)
            if name.strip().lower() in MISSING_VALUES]


# A column's name as a row's number or identifier is written: id, ID, row, index, row_id, customer_id, PassengerId.
ROW_ID_NAME = re.compile(r"(?i:id|row|index|idx|rowid|.+[_ .-]id)|.*[a-z0-9](?:Id|ID)")


def row_id_columns(dataset: Dataset) -> list[str]:
    """The feature columns of ``dataset`` named as a row's identifier (ROW_ID_NAME) whose values are whole
    numbers, a different one in every row: both, so that a genuine feature is not taken for one."""
    if not dataset.feature_names:
        return []
    x = np.concatenate([dataset.x_train, dataset.x_test])
    return [name for i, name in enumerate(dataset.feature_names)
            if ROW_ID_NAME.fullmatch(name) and (x[:, i] == np.round(x[:, i])).all()
            and len(np.unique(x[:, i])) == len(x)]


def row_id_notes(dataset: Dataset) -> list[str]:
    """A note for each column that only identifies rows (``row_id_columns``): it is trained on as a feature,
    though it tells nothing of a new row, and gives the class away where the rows are in order of class."""
    return [f"note: the column {name!r} holds a different whole number in every row, as a row number or identifier "
            "does: it is trained on as a feature, though it tells nothing of a new row (and gives the class away "
            "when the rows are in order of class); drop the column from the file, since every column but the "
            "target is a feature" for name in row_id_columns(dataset)]


def rows_line(prepared: Prepared, config: TrainConfig) -> str:
    """How many rows train, validate and test: the dataset's line above names the whole file."""
    train = f"{len(prepared.x_train):,} to train"
    if config.limit_train and config.limit_train < len(prepared.dataset.x_train):
        train += f" (of the first {config.limit_train:,} of {len(prepared.dataset.x_train):,}: --limit-train)"
    validate = len(prepared.x_val) if prepared.x_val is not None else 0
    return f"rows: {train}, {validate:,} to validate, {len(prepared.dataset.x_test):,} to test"


def scale_target(y: np.ndarray, scaling: dict | None) -> np.ndarray:
    if scaling is None:
        return y
    return ((y - scaling["mean"]) / scaling["std"]).astype(np.float32).reshape(-1, 1)


def network_data(prepared: Prepared, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``x`` and targets ``y`` as the network trains on them: the rows standardised with
    ``prepared``'s normalisation, a regression target scaled with its target scaling."""
    return standardize(x, prepared.normalization), scale_target(y, prepared.target_scaling)


def load_config_dataset(config: TrainConfig) -> Dataset:
    """The dataset a run's config names, with its data options."""
    return load_dataset(config.dataset, data_dir=config.data_dir, cache_dir=config.cache_dir,
                        variant=config.variant, path=config.data_path, target=config.target,
                        task=config.task, seed=config.seed, progress=config.progress, image=config.image)


def network_arguments(config: TrainConfig, inputs: int, outputs: int, task: str) -> dict:
    """The arguments of ``build_mlp`` and ``outline_mlp`` (the seed aside) for a run of ``config``."""
    return {"sizes": [inputs, *config.hidden, outputs], "activation": config.activation, "init": config.init,
            "batchnorm": config.batchnorm, "dropout": config.dropout, "task": task}


def dataset_network_arguments(config: TrainConfig, dataset: Dataset) -> dict:
    outputs = len(dataset.labels) if dataset.task == "classification" else 1
    return network_arguments(config, dataset.x_train.shape[1], outputs, dataset.task)


def build_network(config: TrainConfig, dataset: Dataset):
    """The network a run of ``config`` trains on ``dataset``, once ``check_memory`` has found room for it."""
    arguments = dataset_network_arguments(config, dataset)
    check_memory(outline_mlp(**arguments), config, len(dataset.x_train))
    return build_mlp(**arguments, seed=config.seed)


def batch_rows(config: TrainConfig, rows: int) -> int:
    """The rows a training batch of ``config`` holds, from training data of ``rows`` rows: a batch size
    larger than the data makes each batch the whole of it."""
    return min(config.batch_size, rows)


def check_memory(outline, config: TrainConfig, rows: int) -> None:
    """Raise MemoryError now, before a weight is drawn, if training the network of ``outline`` on at most
    ``rows`` rows would take more memory than is available (the process would be killed without a word
    instead)."""
    available = memory.available_memory()
    needed = memory.training_bytes(outline, build_optimizer(config).arrays_per_parameter(),
                                   batch_rows(config, rows), keeps_best=config.patience is not None)
    if available is not None and needed > available:
        optimizer = parse_spec(config.optimizer)[0]
        raise MemoryError(f"training this network of {outline.num_params():,} parameters takes about "
                          f"{memory.size_text(needed)} (its weights, their gradients, {optimizer}'s state and a "
                          "batch's activations while it trains, then the copies that writing and scoring the model "
                          f"file hold), and {memory.size_text(available)} is available")


def build_optimizer(config: TrainConfig):
    kwargs = {"lr": config.lr, "clip_norm": config.clip_norm, "weight_decay": config.weight_decay}
    if config.momentum is not None:  # only momentum and nesterov take it (checked by TrainConfig)
        kwargs["momentum"] = config.momentum
    return get_optimizer(config.optimizer, **kwargs)


def build_schedule(config: TrainConfig):
    kwargs = {}
    name, args, named = parse_spec(config.schedule)
    if name == "cosine" and not args and "total_epochs" not in named:
        kwargs["total_epochs"] = config.epochs  # a cosine schedule spans the whole run unless told otherwise
    return get_schedule(config.schedule, lr=config.lr, warmup_epochs=config.warmup_epochs, **kwargs)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return 0


class EpochProgress:
    """A progress bar during an epoch: tqdm, when it is installed and wanted and stderr is a
    terminal (a log file would fill with the bar's redrawn frames) that reports a width (tqdm
    draws a bar 0 columns wide as nothing). It goes when the epoch ends, for the epoch's line:
    a bar's last frame, cut to the terminal's width, lost the validation figures."""

    def __init__(self, total: int, epoch: int, epochs: int, enabled: bool):
        self.bar = None
        if enabled and sys.stderr is not None and sys.stderr.isatty() and _terminal_width() > 0:  # None: 2>&-
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="ex",
                                unit_scale=True, leave=False, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int, loss: float, accuracy: float | None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            postfix = {"loss": report.figure(loss)}
            if accuracy is not None:
                postfix["acc"] = f"{accuracy:.4f}"
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate_network(network, x: np.ndarray, y: np.ndarray, task: str, batch_size: int = 2048) -> tuple[float, float | None]:
    """Mean loss and accuracy (None for regression) of ``network`` in eval mode."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = network.forward(xb, training=False)
        total_loss += network.loss.forward(out, yb) * len(xb)
        if task == "classification":
            correct += count_correct(out, yb)
    return total_loss / len(x), (correct / len(x) if task == "classification" else None)


def count_correct(out: np.ndarray, labels: np.ndarray) -> int:
    """How many rows of ``out`` (n, classes) score highest the class ``labels`` (n,) names."""
    return int((out.argmax(axis=1) == labels).sum())


def build_augmentation(config: TrainConfig, prepared: Prepared):
    """The training-batch augmentation, or None. Its fill is blank paper after normalisation."""
    if not config.augment:
        return None
    if prepared.dataset.input_kind != "image":
        hint = (": an npz's pictures, x of shape (n, height, width), are read as vectors unless --image digit or "
                "--image garment says what they show, which makes the model an image model that --augment applies "
                "to" if dataset_key(config.dataset, config.data_path) == "npz" else "")
        raise ValueError(f"--augment applies to image datasets; {prepared.dataset.name} has vector inputs{hint}")
    blank = standardize(np.zeros((1, 1), dtype=np.float32), prepared.normalization)
    return get_augmentation(config.augment, side=image_side(prepared.x_train.shape[1]), fill=float(blank[0, 0]))


@dataclass
class EarlyStopping:
    """Early stopping with restore-best. ``should_stop`` keeps the epoch of lowest validation loss so
    far, with a copy of the network's state after it, and says when ``patience`` epochs have passed
    without a lower one; ``restore_best`` puts that epoch's state back."""

    patience: int
    val_loss: float = math.inf
    state: dict[str, np.ndarray] | None = None
    epoch: int = 0

    def should_stop(self, epoch: int, val_loss: float, network) -> bool:
        if val_loss < self.val_loss:
            self.val_loss, self.state, self.epoch = val_loss, network.state(), epoch
            return False
        return epoch - self.epoch >= self.patience

    def restore_best(self, network, last_epoch: int, log=print) -> None:
        """Load the best epoch's state into ``network`` unless ``last_epoch``, where the run ended, is that epoch."""
        if self.state is not None and self.epoch != last_epoch:
            log(f"restoring epoch {self.epoch}, the best on validation (val_loss {report.figure(self.val_loss)})")
            network.load_state(self.state)


# A diverging run overflows on its way to NaN: the checks of the loss and the weights below say so in
# one line, with advice, rather than after a screenful of NumPy's warnings.
@np.errstate(over="ignore", invalid="ignore", divide="ignore")
def fit(network, optimizer, schedule, prepared: Prepared, config: TrainConfig, log=print,
        done: Callable[[], bool] = lambda: False, on_epoch: Callable[[dict], None] = lambda row: None) -> list[dict]:
    """Train with mini-batches; return one dict of metrics per epoch, each also handed to
    ``on_epoch`` as its epoch ends, before its line is logged (an epoch shown is one recorded).

    With ``patience``, stops when validation loss has not improved for that many epochs and
    restores the parameters of the best epoch. Stops too after an epoch at whose end ``done()`` says so.
    """
    task = prepared.dataset.task
    x_train, y_train = network_data(prepared, prepared.x_train, prepared.y_train)
    x_val = y_val = None
    if prepared.x_val is not None and len(prepared.x_val):
        x_val, y_val = network_data(prepared, prepared.x_val, prepared.y_val)
    rng = np.random.default_rng(config.seed + 1)  # shuffles and augments; weights and dropout draw from the seed
    augment = build_augmentation(config, prepared)
    rows = _rows_per_epoch(network, len(x_train), config.batch_size)
    history: list[dict] = []
    stopping = EarlyStopping(config.patience) if config.patience is not None and x_val is not None else None
    order = np.arange(len(x_train))
    xb_buf = np.empty((batch_rows(config, len(x_train)), x_train.shape[1]), dtype=np.float32)
    for epoch in range(1, config.epochs + 1):
        lr = schedule(epoch - 1)
        optimizer.set_lr(lr)
        rng.shuffle(order)
        progress = EpochProgress(rows, epoch, config.epochs, config.progress)
        batches = _minibatches(x_train, y_train, order[:rows], xb_buf, augment, rng)
        row = _train_epoch(network, optimizer, batches, task, progress, epoch, lr)
        if x_val is not None:
            row.update(_validation_metrics(network, x_val, y_val, task, prepared.target_scaling))
        _check_finite(network, row, epoch, lr)
        history.append(row)
        on_epoch(row)
        progress.close()
        log(epoch_line(row, config.epochs))
        if stopping is not None and stopping.should_stop(epoch, row["val_loss"], network):
            log(f"early stopping: no validation improvement for {counted(config.patience, 'epoch')}")
            break
        if done():
            break
    if stopping is not None:  # however the run ended
        stopping.restore_best(network, history[-1]["epoch"], log)
    return history


def epoch_line(row: dict, epochs: int) -> str:
    """An epoch's line of the log, from its row of the history: learning rate, figures, time."""
    figures = "  ".join(f"{k}={report.figure(v)}" for k, v in row.items() if k.startswith(("train_", "val_")))
    return f"epoch {row['epoch']}/{epochs}  lr={row['lr']:.3g}  {figures}  ({row['seconds']:.2f}s)"


def _rows_per_epoch(network, rows: int, batch_size: int) -> int:
    """How many of the ``rows`` training rows an epoch trains on: all of them, unless batch norm
    would have to normalise a last batch of one row. Each epoch then leaves its last shuffled
    example out instead (a different one every epoch)."""
    if rows % batch_size != 1 or not any(isinstance(layer, BatchNorm) for layer in network.layers):
        return rows
    if rows == 1:
        raise ValueError("batch norm needs at least 2 training examples")
    return rows - 1


def _validation_metrics(network, x_val: np.ndarray, y_val: np.ndarray, task: str,
                        target_scaling: dict | None) -> dict:
    """The validation part of an epoch's row: the loss, and the accuracy (classification) or the
    RMSE in the target's own units (a scaled regression target)."""
    val_loss, val_accuracy = evaluate_network(network, x_val, y_val, task)
    metrics = {"val_loss": val_loss}
    if val_accuracy is not None:
        metrics["val_accuracy"] = val_accuracy
    if target_scaling is not None:  # the loss is the standardised target's: this is the target's
        metrics["val_rmse"] = math.sqrt(val_loss) * target_scaling["std"]
    return metrics


def _check_finite(network, row: dict, epoch: int, lr: float) -> None:
    """Raise FloatingPointError if the validation loss or any weight is NaN or infinite. The last
    step of an epoch can overflow the weights after its own loss was computed: say so here, not as
    an unsavable model file at the end of the run."""
    if not (math.isfinite(row.get("val_loss", 0.0))
            and all(np.isfinite(p).all() for p in network.params().values())):
        raise FloatingPointError(f"the weights overflowed to NaN or infinity in epoch {epoch}: lower the "
                                 f"learning rate (now {lr:g}) or enable gradient clipping (--clip-norm)")


def _minibatches(x: np.ndarray, y: np.ndarray, order: np.ndarray, buffer: np.ndarray, augment, rng):
    """The rows ``order`` lists, in that order, as ``(inputs, targets)`` batches of ``len(buffer)``
    rows (the last may be shorter). The inputs are copied into ``buffer``, then augmented."""
    for start in range(0, len(order), len(buffer)):
        index = order[start:start + len(buffer)]
        xb = np.take(x, index, axis=0, out=buffer[: len(index)])
        if augment is not None:
            xb = augment(xb, rng)
        yield xb, y[index]


# What a config key is called elsewhere (PyTorch, Keras, a first guess), for the error that refuses it.
KEY_ALIASES = {"learning_rate": "lr", "hidden_layers": "hidden", "hidden_sizes": "hidden", "layers": "hidden",
               "epoch": "epochs", "batch": "batch_size", "weight_decay_rate": "weight_decay",
               "clip_grad_norm": "clip_norm", "max_grad_norm": "clip_norm", "early_stopping": "patience"}


def _unknown_key(key: str, value, known: set[str], commands_taking: Callable[[str], str | None]) -> str:
    """A config key TrainConfig does not have, with the key most likely meant, or the commands that take it as a
    flag of their own (``commands_taking``), which describes no training run, so no config file holds it."""
    if isinstance(value, dict):
        return f"{key!r} is a table: write its keys at the top of the file, without the [{key}] line"
    if owners := commands_taking(key):  # else told the nearest config key: 'inputs' (did you mean 'init'?)
        return (f"{key!r} is a flag of {owners}, not a setting of the run: give it on the command line "
                f"(--{key.replace('_', '-')})")
    names = {**{name: name for name in known}, **KEY_ALIASES}
    meant = closest(key, names)
    return f"{key!r} (did you mean {names[meant]!r}?)" if meant else repr(key)


def _train_epoch(network, optimizer, batches, task: str, progress: EpochProgress, epoch: int, lr: float) -> dict:
    """One training step per batch of ``batches``; returns the epoch's row of the history: its mean
    training loss (and accuracy) over the rows seen, and its speed."""
    network.train()
    started = time.perf_counter()
    seen, loss_sum, correct = 0, 0.0, 0
    for xb, yb in batches:
        try:
            loss, out = network.train_step(xb, yb, optimizer)
        except FloatingPointError as e:  # gradient clipping's: the gradients are not finite
            raise FloatingPointError(f"{e} (epoch {epoch}, learning rate {lr:g})") from None
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} in epoch {epoch}: lower the learning rate "
                                     f"(now {lr:g}) or enable gradient clipping (--clip-norm)")
        seen += len(xb)
        loss_sum += loss * len(xb)
        if task == "classification":
            correct += count_correct(out, yb)
        progress.update(len(xb), loss_sum / seen, correct / seen if task == "classification" else None)
    seconds = time.perf_counter() - started
    row = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / seen, "seconds": round(seconds, 3),
           "examples_per_second": round(seen / seconds)}
    if task == "classification":
        row["train_accuracy"] = correct / seen
    return row


def refit(config: TrainConfig, prepared: Prepared, history: list[dict], log=print,
          on_epoch: Callable[[dict], None] = lambda row: None):
    """Train a fresh network on the training and validation rows together, for as many epochs
    as validation picked, at the learning rates the searched run had in those epochs: the run
    validation judged, replayed, whether the schedule's length comes from ``--epochs`` (cosine) or
    is spelled out (``cosine(total_epochs=20)``). The normalisation stays the one measured on
    the training rows, so the recorded history remains comparable. Returns the new network and
    the history followed by the retraining's rows, each marked ``"refit": true`` by the time
    ``on_epoch`` has it."""
    best_epoch = min(history, key=lambda row: row["val_loss"])["epoch"]
    log(f"refit: retraining on training + validation data ({len(prepared.x_train) + len(prepared.x_val)} "
        f"examples) for {counted(best_epoch, 'epoch')}")
    merged = dataclasses.replace(
        prepared, x_train=np.concatenate([prepared.x_train, prepared.x_val]),
        y_train=np.concatenate([prepared.y_train, prepared.y_val]), x_val=None, y_val=None)
    # The schedule, warm-up included, is the searched run's (build_schedule(config) below): the
    # shorter run's own warm-up setting is not checked against its few epochs.
    again = dataclasses.replace(config, epochs=best_epoch, patience=None, warmup_epochs=0, schedule="constant")
    network = build_network(again, prepared.dataset)

    def refitted(row: dict) -> None:
        row["refit"] = True
        on_epoch(row)

    refit_history = fit(network, build_optimizer(again), build_schedule(config), merged, again, log=log,
                        on_epoch=refitted)
    return network, history + refit_history


def make_manifest(name: str, config: TrainConfig, prepared: Prepared, history: list[dict],
                  layers: list[dict], command: str | None) -> dict:
    dataset = prepared.dataset
    output = ({"labels": list(dataset.labels)} if dataset.task == "classification"
              else {"target": dataset.target, "scaling": prepared.target_scaling})
    searched = searched_epochs(history)
    best_epoch = min(searched, key=lambda r: r.get("val_loss", math.inf))["epoch"] if searched else 0
    return {
        "name": name,
        "version": 0,  # set when published
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "task": dataset.task,
        "input": {
            "kind": dataset.input_kind,
            "shape": [int(dataset.x_train.shape[1])],
            "dtype": "float32",
            "preprocessing": dataset.preprocessing,
            "normalization": prepared.normalization,
            "feature_names": dataset.feature_names,
        },
        "output": output,
        "layers": layers,
        "training": {
            "command": command,
            "config": config.to_dict(),
            "seed": config.seed,
            "epochs_run": len(searched),
            "refit_epochs": len(history) - len(searched),
            # The epoch whose weights were kept (early stopping restores the best one), or with
            # refit the epoch count validation picked for the retraining.
            "best_epoch": best_epoch if config.patience is not None or len(history) > len(searched) else len(searched),
            "train_examples": int(len(prepared.x_train)),
            "val_examples": int(len(prepared.x_val)) if prepared.x_val is not None else 0,
            # With refit the exported network trained on both: train_examples + val_examples.
            "refit_examples": (int(len(prepared.x_train) + len(prepared.x_val))
                               if len(history) > len(searched) else 0),
            "dataset": {"name": dataset.name, "variant": dataset.variant, "split": dataset.split,
                        "files": dataset.files},
            "numpy": np.__version__,
        },
        "metrics": {"split": dataset.split},  # the scores follow, measured on the written file
    }


def restored_epoch(training: dict) -> int | None:
    """The epoch whose weights early stopping restored, as a manifest's ``training`` records it; None
    when the model holds its last epoch's weights (no early stopping, or the best epoch was the last)
    or the weights refit trained afresh."""
    restored = training["config"]["patience"] is not None and not training["refit_epochs"]
    return training["best_epoch"] if restored and training["best_epoch"] != training["epochs_run"] else None


def score(model: Model, x: np.ndarray, y: np.ndarray, split: str) -> dict:
    """Metrics of a loaded model file on raw inputs, through the forward module the service uses."""
    if model.task == "classification":
        metrics = report.classification_metrics(y, model.predict(x), model.labels)
    else:
        metrics = report.regression_metrics(y, model.predict(x), output_scaling(model.manifest)["mean"])
    return {"split": split, **metrics}


def write_version(folder: Path, version: int, arrays: dict, manifest: dict, prepared: Prepared,
                  history: list[dict], make_plots: bool = True, *, published: bool = True) -> dict:
    """Write model.npz (with test metrics measured on the written file) and its extras. The plots
    name the version only when it is ``published``: a run saved in a folder is numbered when
    ``publish`` puts it into a registry, and its plots go with it."""
    manifest = {**manifest, "version": version}
    model_path = folder / MODEL_FILE
    save_model(model_path, arrays, manifest)
    dataset = prepared.dataset
    metrics = score(load_model(model_path), dataset.x_test, dataset.y_test, dataset.split)
    manifest["metrics"] = {k: v for k, v in metrics.items()
                           if k not in ("confusion", "confusion_cells", "per_class")}
    save_model(model_path, arrays, manifest)
    report.write_metrics(folder / METRICS_FILE, history, metrics)
    if make_plots and history:
        title = f"{manifest['name']} v{version}" if published else manifest["name"]
        report.plot_learning_curves(folder / CURVES_FILE, searched_epochs(history), title,
                                    restored_epoch(manifest["training"]))
        if "accuracy" in metrics:
            scored = f"{title}, accuracy {metrics['accuracy']:.2%}\n{metrics['split']}, n={metrics['n']:,}"
            report.plot_confusion(folder / CONFUSION_FILE, metrics, dataset.labels, scored)
    return metrics


EXTRAS_BYTES = 1_000_000  # metrics.jsonl and the PNG plots, with room to spare


def check_space(folder: Path, network, what: str) -> None:
    """Raise ValueError now if the disk of ``folder`` (or of its nearest existing parent) has too
    little free space for the model and its extras, rather than after the training. The model
    file is compressed float32, so its parameter bytes bound its size."""
    needed = 4 * network.num_params() + EXTRAS_BYTES
    existing = nearest_existing(folder)
    try:
        free = shutil.disk_usage(existing).free
    except OSError:  # a file system that does not say: writing will tell
        return
    if free < needed:
        raise ValueError(f"cannot {what}: the disk of {existing} has {free / 1e6:.1f} MB free, and this model "
                         f"with its metrics and plots needs about {needed / 1e6:.1f} MB; free some space "
                         "before training")


def check_output_folder(folder: Path, registry: str | Path | None = None) -> None:
    """Raise ValueError now if ``folder`` could not be made or written, or is or lies in a registry's
    version folder (published, which is never changed, or to come, which publishing alone writes),
    rather than after training. ``registry`` is the one the trainer publishes into by default."""
    root = Path(registry).resolve() if registry is not None else None
    if version := _registry_version_of(folder.resolve(), root):
        raise ValueError(f"cannot write the model into {folder}: it is in {version}, version {version.name} of "
                         f"{version.parent.name} in a registry, whose versions publishing alone writes, and never "
                         "changes: choose another folder, or publish the run (--publish)")
    existing, error = try_writing(folder)
    if not existing.is_dir():
        raise ValueError(f"cannot write the model into {folder}: {existing} is not a folder")
    if error is not None:
        raise ValueError(f"cannot write the model into {folder}: {unwritable(existing, error)}; choose a folder on a "
                         "disk you can write to (--output), such as one in your working or home folder")


def _registry_version_of(folder: Path, registry: Path | None) -> Path | None:
    """The registry version folder that ``folder`` is or lies in, if any, whether it exists yet or
    not: a folder named by a number in a registry's model folder, or one holding a version of its
    own (which an earlier run saved with --output in a folder named after its model holds too)."""
    for path in (folder, *folder.parents):
        if VERSION_PATTERN.match(path.name) and (_is_published_version(path)
                                                 or _is_model_folder(path.parent, registry)):
            return path
    return None


def _is_model_folder(folder: Path, registry: Path | None) -> bool:
    """Whether ``folder`` is a model's folder in a registry: a folder of ``registry``, or one holding
    the serving.json or the record of the highest version that only a registry's model folder holds,
    or a version past 1. (A folder of numbered runs saved with --output holds none of these: each
    such run records version 1, as the version is numbered when it is published.)"""
    if registry is not None and folder.parent == registry:
        return True
    if (folder / SERVING_FILE).exists() or (folder / HIGHEST_FILE).exists():
        return True
    try:
        return any(int(path.name) > 1 and _is_published_version(path)
                   for path in folder.iterdir() if VERSION_PATTERN.match(path.name))
    except OSError:  # not a folder, or one that cannot be listed
        return False


def _is_published_version(folder: Path) -> bool:
    """Whether ``folder`` holds a registry's version: a model.npz that records the folder's number as
    its version and, as its name, the folder above."""
    try:
        manifest = read_manifest(folder / MODEL_FILE)
    except (ModelFileError, OSError):  # no model a registry would serve
        return False
    return manifest.get("version") == int(folder.name) and manifest.get("name") == folder.parent.name


def write_output(folder: Path, arrays: dict, manifest: dict, prepared: Prepared, history: list[dict],
                 on_saved: Callable[[], None] = lambda: None) -> dict:
    """``write_version`` into ``folder`` (a run that is not published), replacing the files an earlier
    run left there (all of them: an earlier classifier's confusion.png goes too). The new files are
    written into a folder inside it first; the earlier ones are moved aside, not deleted, until every
    new one is in place, and a run stopped or failing on the way puts them back: the folder holds the
    earlier run's files or the new run's, never a mix. Folders it made are removed if left empty.
    ``on_saved()`` is called as soon as the new files are in place, before the clean-up, which a stop
    may cut short: the caller knows the model was saved."""
    with removed_if_left_empty(missing_folders(folder)):
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".scratchnet-writing-", dir=folder))
        new, earlier = work / "new", work / "earlier"
        earlier_kept = False
        try:
            new.mkdir()
            earlier.mkdir()
            metrics = write_version(new, 1, arrays, manifest, prepared, history, published=False)
            _swap_in(folder, new, earlier)
        except OSError as e:  # a disk that filled during the training, say
            raise ValueError(f"cannot write the model into {folder}: {e.strerror or e}; "
                             "what the folder held before is unchanged") from None
        except NotRestored as e:
            earlier_kept = True
            raise ValueError(f"cannot write the model into {folder}: {e}: they are in {earlier}") from None
        else:
            on_saved()
        finally:
            if not earlier_kept:
                shutil.rmtree(work, ignore_errors=True)
    return metrics


class NotRestored(Exception):
    """Replacing an output folder's files failed, and so did putting the earlier ones back."""


def _swap_in(folder: Path, new: Path, earlier: Path) -> None:
    """Move ``folder``'s output files into ``earlier``, then those of ``new`` into ``folder`` (the
    model last). If that fails or is stopped, what was there is put back before the error goes on."""
    moved_aside, moved_in = [], []
    try:
        for name in OUTPUT_FILES:
            if _is_file_or_link(folder / name):  # a folder of that name is no run's: it stays (and blocks)
                os.rename(folder / name, earlier / name)
                moved_aside.append(name)
        for name in sorted(os.listdir(new), key=lambda n: n == MODEL_FILE):
            os.rename(new / name, folder / name)
            moved_in.append(name)
    except BaseException as e:
        try:
            for name in moved_in:
                (folder / name).unlink()
            for name in moved_aside:
                os.rename(earlier / name, folder / name)
        except OSError as again:
            reason = (e.strerror or e) if isinstance(e, OSError) else "stopped"
            raise NotRestored(f"{reason}; the earlier run's files could not all be put back "
                              f"({again.strerror or again})") from None
        raise


def _is_file_or_link(path: Path) -> bool:
    try:
        return not stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def keep_unpublished(name: str, registry: str, arrays: dict, manifest: dict, prepared: Prepared,
                     history: list[dict], new_interface: bool = False) -> str:
    """Write a run that could not be published into a new temporary folder; say where, and how
    to publish it from there (or that it could not be kept either)."""
    folder = temporary_folder(name)
    try:
        write_output(folder, arrays, manifest, prepared, history)
    except (OSError, ValueError) as e:
        shutil.rmtree(folder, ignore_errors=True)
        return f"the trained model could not be kept either ({e})"
    flag = f" {NEW_INTERFACE_FLAG}" if new_interface else ""
    return (f"the trained model is kept in {folder}: publish it from there with "
            f"python -m trainer publish {folder} --registry {registry}{flag}")


def temporary_folder(name: str) -> Path:
    """A new folder for model ``name`` in the system's temporary directory ($TMPDIR)."""
    return Path(tempfile.mkdtemp(prefix=f"scratchnet-{name}-"))


def searched_epochs(history: list[dict]) -> list[dict]:
    """The rows of the epochs that searched with a validation split, without refit's retraining."""
    return [row for row in history if not row.get("refit")]


@dataclass
class EpochsKept:
    """What ``kept_if_stopped`` yields: ``record(row)`` adds a finished epoch's line, and ``saved()`` says
    the model is in place (written or published), so that a stop from then on keeps nothing."""
    record: Callable[[dict], None]
    saved: Callable[[], None]


@contextlib.contextmanager
def kept_if_stopped(name: str, on_kept: Callable[[Path, list[dict], list[str]], None], log=print):
    """Around the training and the saving of its model: yields ``EpochsKept``, whose ``record(row)`` adds
    each finished epoch's line to the metrics.jsonl of a new temporary folder. A run stopped by Ctrl-C
    or SIGTERM (which are not Exceptions) before its model is saved, during the training or while the
    model is scored and written, keeps that folder with the learning curves of those epochs:
    ``on_kept(folder, rows, files)`` says what it holds. Otherwise it is removed: the files of a run
    that saved its model go where the model goes, and a run that failed leaves no folder behind.
    Keeping them is a courtesy, not the run's work: a temporary directory that is full or cannot be
    written to gets a note and no more lines, and the training goes on."""

    def unkept(reason: str) -> None:
        log(f"note: {reason}; a run stopped from now on keeps no metrics of its epochs, and this one trains on")

    try:
        folder: Path | None = temporary_folder(name)
    except OSError as e:
        folder = None
        unkept(f"cannot make a folder for the epochs' metrics in {tempfile.gettempdir()} ({e.strerror or e})")

    def discard() -> None:
        nonlocal folder
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            folder = None

    def record(row: dict) -> None:
        if folder is None:
            return
        try:
            report.append_epoch(folder / METRICS_FILE, row)
        except OSError as e:
            unkept(f"cannot write the epochs' metrics into {folder} ({e.strerror or e})")
            discard()

    try:
        yield EpochsKept(record, discard)
    except Exception:
        discard()
        raise
    except BaseException:
        # The file, not a list kept beside it, says which epochs are kept: a stop between the two
        # would have named an epoch the file does not hold.
        rows = _epochs_kept(folder)
        if folder is None or not rows:
            discard()
            raise
        try:
            _plot_stopped(folder, name, rows)
        finally:  # a second stop cuts the plot short, and still says where the metrics are
            on_kept(folder, rows, [file for file in (METRICS_FILE, CURVES_FILE) if (folder / file).is_file()])
        raise
    discard()


def _epochs_kept(folder: Path | None) -> list[dict]:
    """The epochs a stopped run's folder holds (none: no folder, no line written yet, or a file that
    cannot be read back)."""
    try:
        return report.epochs_written(folder / METRICS_FILE) if folder is not None else []
    except (OSError, ValueError):
        return []


def _plot_stopped(folder: Path, name: str, rows: list[dict]) -> None:
    """The learning curves of a stopped run's finished epochs, drawn under a hidden name and then
    renamed: a second Ctrl-C while it is drawn leaves no half-written PNG."""
    partial = folder / f".{CURVES_FILE}"
    try:
        report.plot_learning_curves(partial, searched_epochs(rows), f"{name}, stopped before its model was saved")
        os.replace(partial, folder / CURVES_FILE)
    finally:
        partial.unlink(missing_ok=True)


def publish_saved(folder: Path, registry: str, name: str | None = None,
                  on_published: Callable[[str, int], None] = lambda name, version: None,
                  new_interface: bool = False) -> tuple[str, int]:
    """Publish a run written to a folder (``--output``, or kept after a failed publish): its
    model.npz, renumbered as the registry's next version, and its extras. ``(name, version)``;
    ``on_published(name, version)`` as ``Registry.publish`` calls it. A model whose interface
    differs from the latest version's is refused unless ``new_interface`` (``trainer.interface``)."""
    run_folder = f"give the folder a run was saved into (train --output DIR), which holds its {MODEL_FILE}"
    if not folder.is_dir():
        wanted = f"give the folder that holds it, {folder.parent}" if folder.name == MODEL_FILE else run_folder
        raise ValueError(f"cannot publish {folder}: {'it is not a folder' if folder.exists() else 'it does not exist'}"
                         f": {wanted}")
    model_path = folder / MODEL_FILE
    if not model_path.exists():  # a model's folder in a registry, say, which holds its versions' folders
        raise ValueError(f"cannot publish {folder}: it holds no {MODEL_FILE}: {run_folder}")
    manifest = load_model(model_path).manifest  # validated, as the service would load it
    with np.load(model_path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files if key != MANIFEST_KEY}
    name = name or manifest["name"]
    target = Registry(registry)
    target.check_publishable(name)
    if not new_interface:
        check_interface(target, name, interface(manifest), str(folder))

    def build(version_folder: Path, version: int) -> None:
        save_model(version_folder / MODEL_FILE, arrays, {**manifest, "name": name, "version": version})
        for extra in OUTPUT_FILES[1:]:
            if (folder / extra).is_file():
                shutil.copyfile(folder / extra, version_folder / extra)
        stop_if_interrupted()

    return name, target.publish(name, build, functools.partial(on_published, name))


def run(config: TrainConfig, *, publish_to: str | None = None, output_dir: str | None = None,
        command: str | None = None, log=print,
        on_published: Callable[[str, int], None] = lambda name, version: None,
        on_saved: Callable[[str, Path], None] = lambda name, folder: None,
        on_kept: Callable[[Path, list[dict], list[str]], None] = lambda folder, rows, files: None,
        registry: str | Path | None = None, new_interface: bool = False) -> dict:
    """Train, export, score and save (``output_dir``, which must not be a version folder of
    ``registry`` or of any other registry; then ``on_saved(name, folder)`` as ``write_output`` calls it)
    or publish (``publish_to`` registry; then ``on_published(name, version)`` as ``Registry.publish``
    calls it). A run stopped by Ctrl-C or SIGTERM before its model is saved (training, or scoring and
    writing it) saves nothing, but keeps the metrics and plot of its finished epochs (``kept_if_stopped``,
    which calls ``on_kept``). A model whose interface differs from the latest published version's is
    refused before training, unless ``new_interface`` (``trainer.interface``)."""
    dataset = load_config_dataset(config)
    log(f"data: {dataset!r}")  # an npz's task follows y's dtype: say which one this run trains for
    name = config.name or dataset.name
    _check_destination(name, dataset, config, publish_to, output_dir, registry, new_interface)
    report.require_plotting()
    prepared = prepare(dataset, config)
    build_augmentation(config, prepared)  # an --augment that cannot apply is refused here, before the summary
    log(rows_line(prepared, config))
    if note := coarse_note(prepared):
        log(note)
    for note in [*row_id_notes(dataset), *missing_class_notes(dataset), *untrained_notes(prepared, config)]:
        log(note)
    network = build_network(config, dataset)
    if publish_to:
        check_space(Path(publish_to) / name, network, f"publish {name} into {publish_to}")
    else:
        check_space(Path(output_dir or tempfile.gettempdir()), network, "write the model")
    log(network.summary(batch_rows(config, len(prepared.x_train))))
    with kept_if_stopped(name, on_kept, log) as epochs:
        history = fit(network, build_optimizer(config), build_schedule(config), prepared, config, log=log,
                      on_epoch=epochs.record)
        if config.refit and prepared.x_val is not None:
            del network  # the refit trains a new one: both at once would take twice the memory checked for
            network, history = refit(config, prepared, history, log, on_epoch=epochs.record)
        layers, arrays = network.export(fold_batchnorm=config.fold_batchnorm)
        manifest = make_manifest(name, config, prepared, history, layers, command)
        result = {"name": name}
        if publish_to:
            def build(folder: Path, version: int) -> None:
                if not new_interface:  # a version published while this one trained
                    check_interface(Registry(publish_to), name, interface(manifest), f"a model of {dataset.name}")
                result["metrics"] = write_version(folder, version, arrays, manifest, prepared, history)
                stop_if_interrupted()  # a Ctrl-C a library swallowed, in the run or in writing it: nothing is published

            def published(version: int) -> None:
                epochs.saved()
                on_published(name, version)

            try:
                result["version"] = Registry(publish_to).publish(name, build, published)
            except (RegistryError, OSError) as e:  # a disk that filled during the training, say: keep what it trained
                reason = e if isinstance(e, RegistryError) else f"cannot publish {name} into {publish_to}: {e}"
                kept = keep_unpublished(name, publish_to, arrays, manifest, prepared, history, new_interface)
                raise RegistryError(f"{reason}; {kept}") from None
            result["path"] = str(Path(publish_to) / name / str(result["version"]))
        else:
            folder = Path(output_dir) if output_dir else temporary_folder(name)

            def saved() -> None:
                epochs.saved()
                on_saved(name, folder)

            with removed_if_left_empty([] if output_dir else [folder]):  # the temporary folder made here
                result["metrics"] = write_output(folder, arrays, manifest, prepared, history, saved)
            result["path"] = str(folder)
    result["history"] = history
    _report_saved(result, name, prepared, arrays, log)
    return result


def _check_destination(name: str, dataset, config: TrainConfig, publish_to: str | None, output_dir: str | None,
                       registry: str | Path | None, new_interface: bool) -> None:
    """Where the result of ``run`` goes, and what writing it needs, checked before the training, not after."""
    if publish_to:
        if not config.name:  # then the name is a data file's, which no one chose as a model name
            try:
                check_name(name)
            except RegistryError as e:
                raise RegistryError(f"{e}; the name comes from the data file: give one with --name") from None
        Registry(publish_to).check_publishable(name)
        if not new_interface:
            check_interface(Registry(publish_to), name, dataset_interface(dataset), f"a model of {dataset.name}")
    elif output_dir:
        check_output_folder(Path(output_dir), registry)


def _report_saved(result: dict, name: str, prepared, arrays: dict[str, np.ndarray], log) -> None:
    """Log what ``run`` saved: its test metrics, its parameters' hash and where it is."""
    log(f"on the {len(prepared.dataset.y_test):,} test rows:")
    log(report.format_metrics(result["metrics"], Path(result["path"]) / METRICS_FILE))
    if note := report.learned_nothing(result["metrics"]):
        log(note)
    log(f"parameters sha256 {parameters_sha256(arrays)} (the same seed and data give the same on this machine; "
        "model.npz itself differs, as it records when it was made)")
    log(f"saved {name}" + (f" v{result['version']}" if "version" in result else "") + f" in {result['path']}")
