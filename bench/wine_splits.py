"""Wine quality: choosing a configuration without the test rows, and how much a test figure
depends on the split.

    python bench/wine_splits.py --data-dir DIR cv [--set base|singles|ensembles|white|ordinal]
                                                  [--only NAME ...] [--folds 5] [--fold-seeds 0 1 2 3]
    python bench/wine_splits.py --data-dir DIR test [--method NAME]
    python bench/wine_splits.py --data-dir DIR seeds [--split-seeds 0 1 ... 9]

``cv`` scores trainer configurations by grouped k-fold cross-validation inside the training
portion of the red-wine split (seed 0): identical rows stay in one fold, and the test rows are
never read, so a configuration is chosen without looking at the figure it is reported by.
``test`` then trains the one method cross-validation chose on all the training rows and scores
it on the seed-0 test split, once.
``seeds`` trains fixed methods (the committed v1 configuration, the configuration ``cv``
ranks first, and a random forest when scikit-learn is installed) on the 20 % grouped split
drawn with other seeds, and prints the spread of their test RMSE and MAE: the context of any
single-split number.
Both use the trainer's own code (``trainer.train.prepare`` and ``fit``), not a re-implementation.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.datasets import Dataset, load_dataset  # noqa: E402
from trainer.train import (TrainConfig, build_network, build_optimizer, build_schedule, fit, normalize,  # noqa: E402
                           prepare, refit)


@dataclasses.dataclass(frozen=True)
class Bagged:
    """``members`` networks of ``config``, each trained on its own resample of the training rows
    ("bootstrap": n rows drawn with replacement; "half": n/2 rows without; "folds": all but
    the member's own grouped fold; "all": every row, so only the seed differs) and averaged.
    The normalisation is measured once on all the rows."""

    config: TrainConfig
    members: int
    sample: str = "bootstrap"


@dataclasses.dataclass(frozen=True)
class Log1p:
    """``method`` trained and applied on log(1 + x) of the skewed ``columns`` (feature names).
    The model file has no such preprocessing: this only measures whether it would pay."""

    method: object
    columns: tuple[str, ...] = ("residual sugar", "chlorides", "free sulfur dioxide",
                                "total sulfur dioxide", "sulphates")


@dataclasses.dataclass(frozen=True)
class WithWhite:
    """``config`` trained on the red training rows plus all 4,898 white-wine rows (red is still
    what is scored): ``indicator`` adds an is_red input (1 red, 0 white), ``red_copies`` repeats
    the red rows, and ``finetune``, when given, then trains the same network on the red rows
    alone with that configuration (the normalisation stays the pooled one)."""

    config: TrainConfig
    indicator: bool = True
    red_copies: int = 1
    finetune: TrainConfig | None = None


@dataclasses.dataclass(frozen=True)
class Ordinal:
    """``config`` trained as a classifier over the quality grades seen in training (softmax
    cross-entropy), predicting the expected grade ``sum_k p_k * grade_k``. The model file's
    classification output has no such reading: this only measures whether it would pay."""

    config: TrainConfig


DATA_DIR: str | None = None  # --data-dir, for the white rows


@functools.cache
def white_rows() -> tuple[np.ndarray, np.ndarray]:
    white = load_dataset("wine-quality", data_dir=DATA_DIR, variant="white", seed=0, progress=False)
    return np.concatenate([white.x_train, white.x_test]), np.concatenate([white.y_train, white.y_test])


# The committed v1 (models/wine-quality/1/model.npz records its command), and the configuration
# grouped cross-validation ranks first: strong decoupled weight decay, fixed cosine schedule.
CONFIGS = {
    "v1": TrainConfig(dataset="wine-quality", variant="red", hidden=[32, 32], optimizer="adamw",
                      weight_decay=0.05, batch_size=16, val_fraction=0.15, patience=40, refit=True,
                      epochs=500, progress=False),
    "decay 1.0, cosine 60": TrainConfig(dataset="wine-quality", variant="red", hidden=[32, 32], optimizer="adamw",
                      weight_decay=1.0, batch_size=16, val_fraction=0.0, schedule="cosine",
                      epochs=60, progress=False),
}
# Its neighbours, compared by ``cv`` (one knob changed each).
_BEST = CONFIGS["decay 1.0, cosine 60"]
CANDIDATES = {
    "decay 0.2, cosine 60": dataclasses.replace(_BEST, weight_decay=0.2),
    "decay 0.5, cosine 60": dataclasses.replace(_BEST, weight_decay=0.5),
    "decay 1.5, cosine 60": dataclasses.replace(_BEST, weight_decay=1.5),
    "decay 1.0, cosine 100": dataclasses.replace(_BEST, epochs=100),
    "decay 1.0, 64-64": dataclasses.replace(_BEST, hidden=[64, 64]),
}
# More single networks around it (``cv --set singles``): batch size, learning rate, depth and
# width, activation, SGD with momentum, and log1p of the skewed inputs (which the model file
# cannot express yet: measured only to know whether it would pay).
_R = dataclasses.replace
SINGLES = {
    "single (decay 1.0, cosine 60)": _BEST,
    "batch 8": _R(_BEST, batch_size=8),
    "batch 32": _R(_BEST, batch_size=32),
    "batch 64": _R(_BEST, batch_size=64),
    "batch 32, decay 2.0": _R(_BEST, batch_size=32, weight_decay=2.0),
    "batch 32, cosine 120": _R(_BEST, batch_size=32, epochs=120),
    "lr 3e-3": _R(_BEST, lr=3e-3),
    "lr 3e-4, cosine 200": _R(_BEST, lr=3e-4, epochs=200),
    "32-32-32": _R(_BEST, hidden=[32, 32, 32]),
    "64-64-64, decay 2.0": _R(_BEST, hidden=[64, 64, 64], weight_decay=2.0),
    "128-128, decay 2.0": _R(_BEST, hidden=[128, 128], weight_decay=2.0),
    "16-16": _R(_BEST, hidden=[16, 16]),
    "tanh": _R(_BEST, activation="tanh", init="xavier_normal"),
    "momentum lr 0.01, L2 1e-3": _R(_BEST, optimizer="momentum", lr=0.01, weight_decay=1e-3),
    "momentum lr 0.01, L2 1e-2": _R(_BEST, optimizer="momentum", lr=0.01, weight_decay=1e-2),
    "momentum lr 0.01, L2 5e-2": _R(_BEST, optimizer="momentum", lr=0.01, weight_decay=5e-2),
    "momentum lr 0.01, L2 1e-1": _R(_BEST, optimizer="momentum", lr=0.01, weight_decay=1e-1),
    "momentum lr 0.03, L2 1e-2": _R(_BEST, optimizer="momentum", lr=0.03, weight_decay=1e-2),
    "momentum lr 0.03, L2 5e-2": _R(_BEST, optimizer="momentum", lr=0.03, weight_decay=5e-2),
    "log1p inputs": Log1p(_BEST),
    "log1p inputs, batch 32": Log1p(_R(_BEST, batch_size=32)),
}
# Averages of several networks (``cv --set ensembles``). A k-member ensemble of equal MLPs is
# itself one MLP (block-diagonal hidden layers, output weights divided by k), so the model file
# could hold it as it is.
_B32 = _R(_BEST, batch_size=32)
ENSEMBLES = {
    "bag 5 bootstrap": Bagged(_BEST, 5),
    "bag 10 bootstrap": Bagged(_BEST, 10),
    "bag 10 half": Bagged(_BEST, 10, "half"),
    "bag 10 folds": Bagged(_BEST, 10, "folds"),
    "bag 10 all rows": Bagged(_BEST, 10, "all"),
    "bag 20 all rows": Bagged(_BEST, 20, "all"),
    "bag 10 bootstrap, decay 0.5": Bagged(_R(_BEST, weight_decay=0.5), 10),
    "bag 10 bootstrap, 64-64": Bagged(_R(_BEST, hidden=[64, 64]), 10),
    "bag 10 bootstrap, 128-128 decay 2.0": Bagged(_R(_BEST, hidden=[128, 128], weight_decay=2.0), 10),
    "bag 10 bootstrap, 64-64 decay 0.1 cos 100": Bagged(_R(_BEST, hidden=[64, 64], weight_decay=0.1, epochs=100), 10),
    "bag 10 all rows, momentum L2 5e-2": Bagged(_R(_BEST, optimizer="momentum", lr=0.01, weight_decay=5e-2), 10, "all"),
    "bag 10 bootstrap, batch 32": Bagged(_B32, 10),
    "bag 10 all rows, batch 32": Bagged(_B32, 10, "all"),
    "bag 10 folds, batch 32": Bagged(_B32, 10, "folds"),
    "bag 10 folds, batch 32, decay 0.5": Bagged(_R(_B32, weight_decay=0.5), 10, "folds"),
    "bag 10 folds, batch 32, decay 2.0": Bagged(_R(_B32, weight_decay=2.0), 10, "folds"),
    "bag 10 folds, batch 32, cosine 90": Bagged(_R(_B32, epochs=90), 10, "folds"),
    "bag 10 folds, batch 32, 64-64": Bagged(_R(_B32, hidden=[64, 64]), 10, "folds"),
}
# Red wine helped by the white rows (``cv --set white``): pooled, with an is_red input, red
# weighted 3x, or pre-trained on both and then fine-tuned on red (lr 3e-4, cosine 20 epochs).
_TUNE = {"lr": 3e-4, "epochs": 20}
WHITE = {
    "red only, batch 32": _B32,
    "+ white": WithWhite(_B32, indicator=False),
    "+ white, is_red": WithWhite(_B32),
    "+ white, is_red, red 3x": WithWhite(_B32, red_copies=3),
    "+ white, is_red, then red": WithWhite(_B32, finetune=_R(_B32, **_TUNE)),
    "64-64 cosine 10 + white, is_red, then red": WithWhite(_R(_B32, hidden=[64, 64], epochs=10),
                                                          finetune=_R(_B32, hidden=[64, 64], **_TUNE)),
    "128-128 decay 2.0": _R(_B32, hidden=[128, 128], weight_decay=2.0),
    "128-128 decay 2.0 + white, then red": WithWhite(
        _R(_B32, hidden=[128, 128], weight_decay=2.0), finetune=_R(_B32, hidden=[128, 128], weight_decay=2.0, **_TUNE)),
}
# The grades as classes (``cv --set ordinal``), scored by the expected grade.
ORDINAL = {
    "red only, batch 32": _B32,
    "classes, batch 32": Ordinal(_B32),
    "classes, batch 32, decay 0.2": Ordinal(_R(_B32, weight_decay=0.2)),
    "classes, batch 32, 64-64": Ordinal(_R(_B32, hidden=[64, 64])),
}
# What the sets' cross-validation ranks first among the methods a model file can hold, scored
# once on the test split by ``test`` (RMSE 0.658 / MAE 0.499: no better than v1).
CV_CHOICE = "bag 10 folds, batch 32"
SETS = {"base": {**CONFIGS, **CANDIDATES}, "singles": SINGLES, "ensembles": ENSEMBLES, "white": WHITE,
        "ordinal": ORDINAL}
METHODS = {name: method for methods in SETS.values() for name, method in methods.items()}


def quiet(*_) -> None:
    """A ``log`` for the trainer that prints nothing."""


def fit_quietly(network, config: TrainConfig, prepared) -> list[dict]:
    """``fit`` with ``config``'s own optimiser and schedule, silently; returns the history."""
    return fit(network, build_optimizer(config), build_schedule(config), prepared, config, log=quiet)


def train_network(config: TrainConfig, dataset: Dataset):
    """``(network, prepared, history)``: a network built and trained on ``dataset`` by ``config``,
    silently, without the refit."""
    prepared = prepare(dataset, config)
    network = build_network(config, dataset)
    return network, prepared, fit_quietly(network, config, prepared)


def fit_members(bagged: Bagged, prepared) -> list:
    """The member networks of ``bagged`` trained on ``prepared`` (no validation split)."""
    rng = np.random.default_rng(bagged.config.seed)
    n = len(prepared.x_train)
    if bagged.sample == "folds":
        fold = grouped_folds(prepared.x_train, bagged.members, bagged.config.seed)
    networks = []
    for i in range(bagged.members):
        if bagged.sample == "bootstrap":
            rows = rng.integers(0, n, n)
        elif bagged.sample == "half":
            rows = rng.permutation(n)[: n // 2]
        elif bagged.sample == "folds":
            rows = np.flatnonzero(fold != i)
        else:
            rows = np.arange(n)
        config = dataclasses.replace(bagged.config, seed=bagged.config.seed + i)
        part = dataclasses.replace(prepared, x_train=prepared.x_train[rows], y_train=prepared.y_train[rows])
        network = build_network(config, prepared.dataset)
        fit_quietly(network, config, part)
        networks.append(network)
    return networks


def errors(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    diff = predicted - actual
    return float(np.sqrt(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


def train_and_predict(method: TrainConfig | Bagged | Log1p | WithWhite | Ordinal, dataset: Dataset) -> np.ndarray:
    """Train as ``python -m trainer train`` would on ``dataset`` (validation split, early
    stopping and refit included); return the predictions on ``dataset.x_test``."""
    if isinstance(method, Log1p):
        index = [dataset.feature_names.index(name) for name in method.columns]
        x_train, x_test = dataset.x_train.copy(), dataset.x_test.copy()
        x_train[:, index] = np.log1p(x_train[:, index])
        x_test[:, index] = np.log1p(x_test[:, index])
        return train_and_predict(method.method, dataclasses.replace(dataset, x_train=x_train, x_test=x_test))
    if isinstance(method, WithWhite):
        return _train_with_white(method, dataset)
    if isinstance(method, Ordinal):
        return _train_ordinal(method, dataset)
    if isinstance(method, Bagged):
        prepared = prepare(dataset, dataclasses.replace(method.config, val_fraction=0.0))
        networks = fit_members(method, prepared)
    else:
        network, prepared, history = train_network(method, dataset)
        if method.refit and prepared.x_val is not None:
            network, _ = refit(method, prepared, history, quiet)
        networks = [network]
    return predict_rows(networks, prepared, dataset.x_test)


def predict_rows(networks: list, prepared, x: np.ndarray) -> np.ndarray:
    """The average prediction of ``networks`` on raw rows ``x``, in quality units."""
    x = normalize(x, prepared.normalization)
    scaling = prepared.target_scaling
    raw = np.mean([network.predict(x)[:, 0] for network in networks], axis=0)
    return raw * scaling["std"] + scaling["mean"]


def _train_with_white(method: WithWhite, dataset: Dataset) -> np.ndarray:
    white_x, white_y = white_rows()
    red_x, test_x, names = dataset.x_train, dataset.x_test, dataset.feature_names
    if method.indicator:
        red_x, white_x, test_x = (np.column_stack([x, np.full(len(x), flag, dtype=np.float32)])
                                  for x, flag in ((red_x, 1), (white_x, 0), (test_x, 1)))
        names = [*names, "is_red"]
    pooled = dataclasses.replace(dataset, x_train=np.concatenate([red_x] * method.red_copies + [white_x]),
                                 y_train=np.concatenate([dataset.y_train] * method.red_copies + [white_y]),
                                 x_test=test_x, feature_names=names)
    if method.finetune is None:
        return train_and_predict(method.config, pooled)
    network, prepared, _ = train_network(method.config, pooled)
    red_only = dataclasses.replace(prepared, x_train=prepared.x_train[:len(red_x)],
                                   y_train=prepared.y_train[:len(red_x)])
    fit_quietly(network, method.finetune, red_only)
    return predict_rows([network], prepared, test_x)


def _train_ordinal(method: Ordinal, dataset: Dataset) -> np.ndarray:
    grades, classes = np.unique(dataset.y_train, return_inverse=True)
    as_classes = dataclasses.replace(dataset, task="classification", labels=[f"{g:g}" for g in grades],
                                     y_train=classes, y_test=np.zeros(len(dataset.x_test), dtype=np.int64))
    network, prepared, _ = train_network(method.config, as_classes)
    return network.predict_proba(normalize(dataset.x_test, prepared.normalization)) @ grades


def grouped_folds(x: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index (0 .. folds-1) of each row of ``x``; identical rows share a fold."""
    _, group = np.unique(x, axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.random.default_rng(seed).permutation(group.max() + 1)
    filled = np.cumsum(np.bincount(group)[order])
    fold_of_group = np.empty(len(order), dtype=int)
    fold_of_group[order] = np.minimum((filled - 1) * folds // len(x), folds - 1)
    return fold_of_group[group]


def cross_validate(config: TrainConfig, data: Dataset, folds: int, fold_seed: int) -> tuple[float, float]:
    """Pooled out-of-fold RMSE and MAE of ``config`` on ``data``'s training rows."""
    fold = grouped_folds(data.x_train, folds, fold_seed)
    predicted = np.empty(len(data.y_train))
    for k in range(folds):
        inside, held = fold != k, fold == k
        part = dataclasses.replace(data, x_train=data.x_train[inside], y_train=data.y_train[inside],
                                   x_test=data.x_train[held], y_test=data.y_train[held])
        predicted[held] = train_and_predict(config, part)
    return errors(predicted, data.y_train)


def cmd_cv(args) -> None:
    data = load_dataset("wine-quality", data_dir=args.data_dir, variant="red", seed=0, progress=False)
    print(f"grouped {args.folds}-fold cross-validation on the {len(data.x_train)} training rows of "
          f"{data.split}; fold seeds {args.fold_seeds}\n")
    print(f"{'configuration':<42}{'RMSE':>8}{'MAE':>8}   RMSE per fold seed")
    methods = SETS[args.set]
    if args.only:
        methods = {name: METHODS[name] for name in args.only}
    for name, config in methods.items():
        started = time.perf_counter()
        scores = np.array([cross_validate(config, data, args.folds, s) for s in args.fold_seeds])
        per_seed = " ".join(f"{r:.4f}" for r in scores[:, 0])
        print(f"{name:<42}{scores[:, 0].mean():>8.4f}{scores[:, 1].mean():>8.4f}   {per_seed}"
              f"   ({time.perf_counter() - started:.0f} s)", flush=True)


def cmd_test(args) -> None:
    data = load_dataset("wine-quality", data_dir=args.data_dir, variant="red", seed=0, progress=False)
    rmse, mae = errors(train_and_predict(METHODS[args.method], data), data.y_test)
    print(f"{args.method}: trained on the {len(data.x_train)} training rows, scored on {data.split} "
          f"({len(data.x_test)} rows): RMSE {rmse:.4f}, MAE {mae:.4f}")


def cmd_seeds(args) -> None:
    try:
        from sklearn.ensemble import RandomForestRegressor
    except ImportError:
        RandomForestRegressor = None
        print("scikit-learn is not installed: the random forest is left out\n")
    results: dict[str, list[tuple[float, float]]] = {}
    for seed in args.split_seeds:
        data = load_dataset("wine-quality", data_dir=args.data_dir, variant="red", seed=seed, progress=False)
        row = {}
        for name, config in CONFIGS.items():  # as `--seed S` on the command line: split and init
            row[f"MLP {name}"] = errors(train_and_predict(dataclasses.replace(config, seed=seed), data),
                                               data.y_test)
        if RandomForestRegressor is not None:
            forest = RandomForestRegressor(300, random_state=0, n_jobs=1).fit(data.x_train, data.y_train)
            row["random forest (300 trees)"] = errors(forest.predict(data.x_test), data.y_test)
        row["predict the training mean"] = errors(np.full(len(data.y_test), data.y_train.mean()), data.y_test)
        print(f"split seed {seed}: " + "  ".join(f"{k} {r:.4f}/{m:.4f}" for k, (r, m) in row.items()), flush=True)
        for name, value in row.items():
            results.setdefault(name, []).append(value)
    print(f"\ntest RMSE / MAE over {len(args.split_seeds)} grouped 20 % split seeds {args.split_seeds}\n")
    print(f"{'method':<28}{'RMSE mean':>10}{'min':>8}{'max':>8}{'MAE mean':>10}{'min':>8}{'max':>8}")
    for name, values in results.items():
        a = np.array(values)
        print(f"{name:<28}{a[:, 0].mean():>10.4f}{a[:, 0].min():>8.4f}{a[:, 0].max():>8.4f}"
              f"{a[:, 1].mean():>10.4f}{a[:, 1].min():>8.4f}{a[:, 1].max():>8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="local dataset folder (default: download into the cache)")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("cv", help="grouped k-fold CV of the configurations on the training rows")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--set", choices=list(SETS), default="base", help="which methods to compare")
    p.add_argument("--only", nargs="+", help="names of the methods to run (default: all of the set)")
    p.set_defaults(func=cmd_cv)
    p = commands.add_parser("test", help="the seed-0 test figures of one method (the one cv chose)")
    p.add_argument("--method", default=CV_CHOICE, choices=list(METHODS), metavar="NAME")
    p.set_defaults(func=cmd_test)
    p = commands.add_parser("seeds", help="test figures of fixed methods over several split seeds")
    p.add_argument("--split-seeds", type=int, nargs="+", default=list(range(10)))
    p.set_defaults(func=cmd_seeds)
    args = parser.parse_args()
    global DATA_DIR
    DATA_DIR = args.data_dir
    args.func(args)


if __name__ == "__main__":
    main()
