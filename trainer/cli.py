"""``python -m trainer`` (also ``scratchnet-train``): train, publish, evaluate, gradcheck, overfit,
summary.

Every ``train`` flag is a ``TrainConfig`` field; ``--config run.toml`` supplies defaults that
flags override. Components are named by strings: ``--activation "leaky_relu(alpha=0.1)"``,
``--init xavier_uniform``, ``--optimizer adamw``, ``--schedule "cosine(min_lr=1e-5)"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import re
import shlex
import signal
import sys
import threading
import tomllib
from pathlib import Path
from typing import Callable

import numpy as np

from shared.errors import ScratchnetError
from shared.registry import SERVING_FILE, RegistryError
from shared.text import closest, counted, did_you_mean, repeated, shortened

INSTALL_HINT = "install the trainer's extra (pip install -e '.[trainer]', which `make venv` does)"


def _print_while_read(stream, values) -> OSError | None:
    """``print`` to ``stream``; once its reader has gone, or it cannot be written (a full disk), to
    os.devnull (see ``say`` and ``warn``). Returns the error of a stream that could not be written;
    None for a reader gone, which is nobody's failure. A stream closed before the start (``2>&-``),
    which Python makes None, gets nothing."""
    if stream is None:
        return None
    try:
        print(*values, file=stream, flush=True)  # a failure is found here, not at exit (where Python exits 120)
    except OSError as e:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # what is still buffered goes there too
        os.close(devnull)
        return None if isinstance(e, BrokenPipeError) else e
    return None


try:
    from . import report, train
except ModuleNotFoundError as e:  # a Python without the trainer's extra: say so, not a traceback
    if e.name is None or e.name.split(".")[0] in ("trainer", "shared"):
        raise
    _print_while_read(sys.stderr, [f"error: the trainer needs {e.name}, which is not installed: {INSTALL_HINT}"])
    raise SystemExit(2) from None
from .datasets import DATASETS, DatasetError, unreadable
from .download import DownloadError, sha256_file
from .gradcheck import ROWS, SAMPLES, run_gradcheck
from .interface import NEW_INTERFACE_FLAG
from .interrupts import Terminated, raise_terminated

DEFAULT_REGISTRY = os.environ.get("SCRATCHNET_REGISTRY", "models")
DEFAULTS = train.TrainConfig()  # what --help says a flag left out gives
# --patience 0 turns off the early stopping a config file sets; --limit-train 0 trains on every row again: what 0 means
OFF_AT_ZERO = {"patience": "no early stopping", "clip_norm": "no clipping", "limit_train": "every row"}
# A config file's relative paths are read from its own folder, as a flag's are from the current one: the
# file and the data beside it work from wherever the run starts.
CONFIG_PATHS = ("data_path", "data_dir", "cache_dir")
# The environment that decides how many threads, and which kernel, BLAS runs: either changes a run's last bits, so
# the command a manifest records sets those the run had.
BLAS_ENVIRONMENT = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_CORETYPE")
# overfit's training steps unless --epochs says otherwise; it stops as soon as the subset is memorised.
OVERFIT_STEPS = 3000
NEW_INTERFACE_HELP = ("publish a version whose inputs, task or classes differ from the model's latest version "
                      "(refused without it: the model's clients must change too)")


class CommandError(Exception):
    """A command that cannot do what it was asked: ``main`` prints the message as one line and exits
    2, the status of every user error (argparse's for a bad flag too)."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def layer_size(text: str) -> int:
    """A --hidden size: a whole number; sizes written as a list (256,128 or [256, 128]) are told how they are given."""
    try:
        return int(text)
    except ValueError:
        sizes = [size for size in re.split(r"[\s,\[\]()]+", text) if size]
        if len(sizes) > 1 and all(size.isdigit() for size in sizes):
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}: give each size as an "
                                             f"argument of its own, --hidden {' '.join(sizes)}") from None
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def folder_name(text: str) -> str:
    """A folder flag's value: an empty one would otherwise mean the default (a temporary folder, the
    default registry, the download cache) or the current folder, none of which was asked for."""
    return _named(text, "a folder")


def file_name(text: str) -> Path:
    """A file flag's value: an empty one would be the current folder (Path(''))."""
    return Path(_named(text, "a file"))


def data_file_name(text: str) -> str:
    """--data-path's value: an empty one would be the current folder, or, for evaluate, the file the model
    was trained on, neither of which was asked for."""
    return _named(text, "a file")


def _named(text: str, what: str) -> str:
    if not text:  # an unset shell variable: --data-path "$DATA"
        raise argparse.ArgumentTypeError(f"expected {what}, got an empty name")
    return text


def say(*values) -> None:
    """``print`` for a command's output, whose reader may leave before the end (``| head``): from
    then on the output goes to os.devnull and the command carries on, so its exit status is the
    run's, not the reader's (a caller that retries a failure would publish a version twice). An
    output that cannot be written (stdout redirected to a full disk) stops the command with a
    CommandError, which ``main`` reports as it reports any error after a publish."""
    if error := _print_while_read(sys.stdout, values):
        raise CommandError(f"cannot write to stdout ({error.strerror or error})")


def warn(*values) -> None:
    """``print`` for notes, errors and 'interrupted', on stderr, whose reader may leave as well
    (``2>&1 | head``), or which may not be writable: as with ``say``, the command still ends with
    its own status (2, 130, 143), not 1 from a traceback nobody could read either."""
    _print_while_read(sys.stderr, values)


def add_data_flags(parser: argparse.ArgumentParser, dataset_default: str = f"default {DEFAULTS.dataset}",
                   scoring: bool = False) -> None:
    """The flags that name the data; ``scoring``: for evaluate, whose csv target and task default to the model's."""
    parser.add_argument("--dataset", help=f"mnist, fashion-mnist, wine-quality, csv or npz ({dataset_default})")
    parser.add_argument("--variant", help="wine-quality: red (default), white or both")
    parser.add_argument("--data-path", type=data_file_name, help="csv / npz: the data file")
    parser.add_argument("--target", help="csv: the column to predict" +
                        (" (default: the column the model was trained to predict)" if scoring else ""))
    parser.add_argument("--task", choices=["classification", "regression"],
                        help="what the target is; csv: " + ("default the model's" if scoring else "required") +
                             "; npz: default classification for integer, boolean or text y or a labels array, "
                             "regression for float y")
    parser.add_argument("--data-dir", type=folder_name,
                        help="read the dataset files from this folder instead of downloading (default: "
                             "$SCRATCHNET_DATA_DIR)")
    parser.add_argument("--cache-dir", type=folder_name,
                        help="download cache (default: $SCRATCHNET_CACHE or ~/.cache/scratchnet)")


def add_train_flags(parser: argparse.ArgumentParser, seed_help: str | None = None) -> None:
    """Every TrainConfig key as a flag, and --config; ``seed_help`` says what --seed seeds, for a
    command that draws other things than a training run does."""
    add_data_flags(parser)
    parser.add_argument("--image", choices=["digit", "garment"],
                        help="npz: x holds pictures (n, height, width) of digits or garments: train on what the "
                             "service makes of such a picture, so the model is served pictures")
    parser.add_argument("--config", type=file_name,
                        help="TOML file of the flags' values, named as the flags without -- (lr = 0.01, "
                             "batch_size = 64, hidden = [256, 128]), all but --config and where a run goes "
                             "(--publish, --registry, --output, --new-interface); flags given too override it")
    parser.add_argument("--name", help="model name in the registry (default: the dataset's)")
    parser.add_argument("--hidden", type=layer_size, nargs="*",
                        help="hidden layer sizes, e.g. --hidden 256 128; none: no hidden layer (softmax regression) "
                             f"(default {' '.join(map(str, DEFAULTS.hidden))})")
    parser.add_argument("--activation", help="relu, leaky_relu(alpha=0.01), tanh, sigmoid (default relu)")
    parser.add_argument("--init", help="he_normal, he_uniform, xavier_normal, xavier_uniform (glorot_* too), "
                                       "lecun_normal, normal(std=0.01), zeros (which leaves every unit of a layer "
                                       f"the same: a lesson, not a choice) (default {DEFAULTS.init})")
    parser.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None,
                        help="batch normalisation after each hidden dense layer (default off)")
    parser.add_argument("--fold-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                        help="fold batch norm into the dense weights in the exported file (default) "
                             "or keep it as explicit layers")
    parser.add_argument("--dropout", type=float, help="dropout rate after each hidden layer (default 0)")
    parser.add_argument("--augment", help="images: random distortion of every training batch, e.g. "
                        "affine(shift=2, rotate=10, scale=0.1) or stroke(widen=1); several joined by + run in turn")
    parser.add_argument("--optimizer", help=f"sgd, momentum, nesterov, adam, adamw (default {DEFAULTS.optimizer})")
    parser.add_argument("--lr", type=float, help=f"learning rate (default {DEFAULTS.lr:g})")
    parser.add_argument("--momentum", type=float, help="momentum and nesterov optimizers (default 0.9)")
    parser.add_argument("--weight-decay", type=float,
                        help="L2 penalty on the weights (sgd, momentum, nesterov, adam); decoupled decay "
                             "(adamw, default 0.01)")
    parser.add_argument("--clip-norm", type=float, help="clip gradients to this global norm (default, and 0: no "
                                                        "clipping, whatever --config says)")
    parser.add_argument("--schedule", help="constant, step(step_size=10, gamma=0.5), cosine(min_lr=1e-5), "
                                           f"warmup(epochs=5) (default {DEFAULTS.schedule})")
    parser.add_argument("--warmup-epochs", type=int,
                        help="linear learning-rate warm-up before any schedule (default 0)")
    parser.add_argument("--epochs", type=int, help=f"passes over the training data (default {DEFAULTS.epochs})")
    parser.add_argument("--batch-size", type=int, help=f"examples per step (default {DEFAULTS.batch_size})")
    parser.add_argument("--val-fraction", type=float, help="fraction of training data held out for validation "
                                                           f"(default {DEFAULTS.val_fraction:g})")
    parser.add_argument("--patience", type=int, help="early stopping: epochs without validation improvement "
                                                     "(default, and 0: no early stopping, whatever --config says)")
    parser.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                        help="after early stopping, retrain on training + validation data for the best epoch count, "
                             "at the learning rates of those epochs (default off)")
    parser.add_argument("--seed", type=int, help=seed_help or (
        "seeds the weights, the shuffling, dropout and augmentation, the validation split, and the held-out test "
        f"rows of a dataset without a test split of its own (a csv, an npz, wine-quality) (default {DEFAULTS.seed})"))
    parser.add_argument("--limit-train", type=int, help="train on the first N examples only (default, and 0: all, "
                                                         "whatever --config says)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (training and downloads); --no-progress: one line per epoch (default on "
                             "when stderr is a terminal)")


def add_shape_flags(parser: argparse.ArgumentParser) -> None:
    """The sizes a dataset would give the network, for a command that needs no data."""
    parser.add_argument("--inputs", type=positive_int, help="input size without a dataset (default 784)")
    parser.add_argument("--outputs", type=positive_int,
                        help="output size without a dataset (default 10; a regression network has 1)")
    parser.add_argument("--task-kind", choices=["classification", "regression"],
                        help="without a dataset (default: classification)")


def _build_mlp_arguments(args: argparse.Namespace, values: dict, config) -> dict:
    """``build_mlp``'s arguments (the seed aside) for the network a ``train`` run with these flags
    would build: its input and output sizes come from the dataset when one is named (flag or config
    file), else from --inputs/--outputs/--task-kind."""
    shape_flags = [f"--{flag}" for flag in ("inputs", "outputs", "task-kind")
                   if getattr(args, flag.replace("-", "_")) is not None]
    file_flags = [f"--{key.replace('_', '-')}" for key in ("data_path", "target") if values.get(key) is not None]
    if file_flags and "dataset" not in values:  # the file would be passed over for the default shape
        raise CommandError(f"{', '.join(file_flags)} {'describe' if len(file_flags) > 1 else 'describes'} a csv or "
                           "npz file: add --dataset csv or --dataset npz")
    if "dataset" in values:
        if shape_flags:
            flags = ", ".join(shape_flags)
            if getattr(args, "dataset", None) is None:  # the dataset a --config file names, which no flag showed
                raise CommandError(f"{flags} and the --config file's dataset ({values['dataset']}) both set the "
                                   f"network's shape: leave out {flags}, or take dataset out of the file")
            raise CommandError(f"{flags} and a dataset both set the network's shape: give one")
        return train.dataset_network_arguments(config, train.load_config_dataset(config))
    if args.task_kind == "regression":  # train predicts one target: its regression networks have one output
        if args.outputs not in (None, 1):
            raise CommandError(f"--outputs {args.outputs} with --task-kind regression: a regression network here has "
                               "one output, as train builds it; leave --outputs out")
        return train.network_arguments(config, args.inputs or 784, 1, "regression")
    if args.outputs == 1:  # a classifier's outputs are its classes' probabilities: one class is nothing to tell
        raise CommandError("--outputs 1: a classifier has one output per class, 2 or more: give --outputs 2 or more, "
                           "or --task-kind regression for a network of one output")
    return train.network_arguments(config, args.inputs or 784, args.outputs or 10, args.task_kind or "classification")


def config_values(args: argparse.Namespace, from_file: dict | None = None) -> dict:
    """The TrainConfig keys that the config file (``from_file``: read here when None) and the flags set
    (flags win)."""
    values = dict(config_file_values(args) if from_file is None else from_file)
    fields = {f.name for f in dataclasses.fields(train.TrainConfig)}
    for key, value in vars(args).items():
        if key in fields and value is not None:
            if key in OFF_AT_ZERO and value < 0:  # the config's own rule (1 or more) would hide that 0 is allowed
                raise CommandError(f"--{key.replace('_', '-')} {value:g}: must be 0 ({OFF_AT_ZERO[key]}) or more")
            values[key] = None if key in OFF_AT_ZERO and value == 0 else value
    return values


def config_file_values(args: argparse.Namespace) -> dict:
    """The keys the --config file sets (none without one), its relative paths joined to its folder."""
    values: dict = {}
    if getattr(args, "config", None):
        try:
            text = args.config.read_text(encoding="utf-8-sig")  # a BOM, as Notepad writes
            values = tomllib.loads(text)
        except OSError as e:
            raise CommandError(f"config {unreadable(args.config, e, 'TOML file', '--config')}") from None
        except UnicodeDecodeError as e:  # Notepad's "Unicode" is UTF-16
            line = e.object.count(b"\n", 0, e.start) + 1
            raise CommandError(f"cannot read config {args.config}, line {line}: byte 0x{e.object[e.start]:02x} is not "
                               "UTF-8, which a TOML file is written in: save it as UTF-8") from None
        except tomllib.TOMLDecodeError as e:
            if key_again := _key_set_again(e, text):
                raise CommandError(f"config {args.config} sets {key_again[0]} twice (again at line {key_again[1]}): "
                                   "keep one") from None
            hint = _unquoted_value(e, text)
            raise CommandError(f"cannot read config {args.config}: {e}{f': {hint}' if hint else ''}") from None
        keys = [k.replace("-", "_") for k in values]
        if twice := repeated(keys):
            raise CommandError(f"config {args.config} sets {', '.join(twice)} twice (written with - and with _): "
                               "keep one")
        values = dict(zip(keys, values.values()))
        if destination := [key for key in ("publish", "registry", "output", "new_interface") if key in values]:
            flags = ", ".join(f"--{key.replace('_', '-')}" for key in destination)
            raise CommandError(f"config {args.config} sets {', '.join(destination)}: where a run goes is given on the "
                               f"command line only ({flags}); take {'it' if len(destination) == 1 else 'them'} out "
                               "of the file")
        for key in CONFIG_PATHS:
            if values.get(key) == "":  # would be the file's own folder, as an empty flag would be the current one
                raise CommandError(f"config {args.config} sets {key} to an empty name: give "
                                   f"{'a file' if key == 'data_path' else 'a folder'}, or take {key} out of the file")
            if isinstance(values.get(key), str):
                values[key] = str(args.config.parent / Path(values[key]).expanduser())
    return values


def _unquoted_value(error: Exception, text: str) -> str | None:
    """How to write the value tomllib refused as "Invalid value (at line 3, column 14)" when it is one a flag
    takes as it is: text, which TOML quotes (activation = relu, schedule = cosine(min_lr=1e-5)), or a boolean
    written as Python writes it (True); None for any other error."""
    where = re.match(r"Invalid value \(at line (\d+), column (\d+)\)", str(error))
    lines = text.splitlines()
    if not where or int(where[1]) > len(lines):
        return None
    line, column = lines[int(where[1]) - 1], int(where[2]) - 1
    assigned = re.fullmatch(r"\s*([\w-]+)\s*=\s*", line[:column])  # the value of a key, not an item of a list
    if not assigned:
        return None
    key, value = assigned[1], line[column:].split("#")[0].strip()
    if value in ("True", "False"):
        return f"write {key} = {value.lower()}: TOML's true and false are in lower case"
    if value[:1].isalpha():
        return f'text is written in quotes in TOML: {key} = "{value}"'
    return None


def _key_set_again(error: Exception, text: str) -> tuple[str, int] | None:
    """The key a TOML file sets a second time, and its line, from tomllib's error, which names neither
    ("Cannot overwrite a value (at line 3, column 9)", the line where the value ends); None for any other error."""
    where = re.match(r"Cannot overwrite a value \(at line (\d+),", str(error))
    if not where:
        return None
    lines = text.splitlines()[:int(where[1])]
    for first in range(len(lines), 0, -1):  # the lines back to the key, for a value over several (hidden = [...])
        try:
            return next(iter(tomllib.loads("\n".join(lines[first - 1:])))), first
        except (tomllib.TOMLDecodeError, StopIteration):
            continue
    return None


def recorded_command(args: argparse.Namespace, from_file: dict) -> str:
    """The command line that reproduces a train run: the one given, with the --config file's settings
    (``from_file``) written in as the flags they stand for, so that editing the file later does not make
    the command train another network, after the BLAS settings of the environment (BLAS_ENVIRONMENT)."""
    argv = list(args.argv)
    if args.config:
        while at := [i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config=")]:
            del argv[at[0]: at[0] + (1 if "=" in argv[at[0]] else 2)]
        flags = []
        for key, value in from_file.items():
            if getattr(args, key) is not None:  # the flag given overrides the file's value
                continue
            flag = f"--{key.replace('_', '-')}"
            if isinstance(value, bool):
                flags.append(flag if value else f"--no-{flag[2:]}")
            elif isinstance(value, list):
                flags += [flag, *map(str, value)]
            else:  # a value that starts with - would be read as a flag: --target=-x
                flags += [f"{flag}={value}"] if str(value).startswith("-") else [flag, str(value)]
        argv[1:1] = flags  # after the command's name, train
    blas = [f"{name}={shlex.quote(os.environ[name])}" for name in BLAS_ENVIRONMENT if os.environ.get(name)]
    return " ".join([*blas, *(shlex.quote(a) for a in ["python", "-m", "trainer", *argv])])


def config_from_args(args: argparse.Namespace, values: dict | None = None) -> train.TrainConfig:
    try:
        return train.TrainConfig.from_dict(config_values(args) if values is None else values, _commands_taking_key)
    except ValueError as e:
        raise CommandError(str(e)) from None


def _commands_taking_key(key: str) -> str | None:
    """The commands that take config key ``key`` as a flag of their own (``OneLineErrors.commands_taking``), for
    a config file that sets one: the parser is built only then."""
    return make_parser().commands_taking(f"--{key.replace('_', '-')}")


def cmd_train(args) -> int:
    # Each destination flag belongs to one of the two ways a run ends; the other would ignore it.
    if args.publish and args.output:
        raise CommandError("--output writes a folder of your own and --publish a registry version: give one")
    if args.registry and not args.publish:
        raise CommandError("--registry is where --publish puts the new version: add --publish, or leave "
                           "--registry out (--output names a folder for a run that is not published)")
    if args.new_interface and not args.publish:
        raise CommandError(f"{NEW_INTERFACE_FLAG} lets --publish change a model's interface: add --publish, or leave "
                           f"{NEW_INTERFACE_FLAG} out")
    from_file = config_file_values(args)
    config = config_from_args(args, config_values(args, from_file))
    command = recorded_command(args, from_file)
    registry = args.registry or DEFAULT_REGISTRY
    result = train.run(config, publish_to=registry if args.publish else None, output_dir=args.output,
                       command=command, log=say, on_published=_recording_published(args, registry),
                       on_saved=_recording_saved(args), on_kept=_recording_kept(args), registry=registry,
                       new_interface=args.new_interface)
    if args.publish:
        _note_unserved(registry, result["name"], result["version"])
    return 0


def _recording_published(args: argparse.Namespace, registry: str):
    """The ``on_published`` that notes in ``args`` where the version went, for ``_stopped`` to tell."""
    def record(name: str, version: int) -> None:
        args.published = f"{name} v{version} in {Path(registry) / name / str(version)}"
    return record


def _recording_saved(args: argparse.Namespace):
    """The ``on_saved`` that notes in ``args`` where the model was written, for ``_stopped`` and ``_failed`` to
    tell."""
    def record(name: str, folder: Path) -> None:
        args.saved = f"{name} in {folder}"
    return record


def _recording_kept(args: argparse.Namespace):
    """The ``on_kept`` that notes in ``args`` what a stopped run kept of its finished epochs, and where,
    for ``_stopped`` to tell."""
    def record(folder: Path, rows: list[dict], files: list[str]) -> None:
        searched = len(train.searched_epochs(rows))
        epochs = f"the {counted(searched, 'finished epoch')}"
        if refit := len(rows) - searched:  # metrics.jsonl holds the retraining's too; the curves do not
            epochs += f" (and in metrics.jsonl {refit} of the refit)"
        args.kept = f"{' and '.join(files)} of {epochs} {'are' if len(files) > 1 else 'is'} kept in {folder}"
    return record


def cmd_publish(args) -> int:
    name, version = train.publish_saved(Path(args.folder), args.registry, args.name,
                                        _recording_published(args, args.registry), args.new_interface)
    say(f"published {name} v{version} in {Path(args.registry) / name / str(version)}")
    _note_unserved(args.registry, name, version)
    return 0


def _object(value) -> dict:
    """A manifest entry that should be an object, or {} when it is absent or is not one."""
    return value if isinstance(value, dict) else {}


def cmd_evaluate(args) -> int:
    from .datasets import TEST_FRACTION, dataset_key, load_dataset

    name, version, model = _model_to_score(args)
    what = f"{name} v{version}"
    training = _object(model.manifest.get("training"))
    config = _object(training.get("config"))
    recorded_dataset = _object(training.get("dataset"))
    trained_on = config.get("dataset") or recorded_dataset.get("name")
    dataset_name = args.dataset or trained_on
    if not dataset_name:
        raise CommandError(f"{what} does not record the dataset it was trained on: name one with --dataset")
    # The data options recorded with the model describe its own dataset, not another one: as named in any case
    # or by an alias (a classifier trained with --dataset CSV records its target column for --dataset csv).
    recorded = config if dataset_key(dataset_name) == dataset_key(trained_on) else {}
    path = args.data_path or recorded.get("data_path")
    key = dataset_key(dataset_name, path)
    if not args.dataset and key not in (*DATASETS, "csv", "npz"):
        # A file written by hand or by another framework names its data in words of its own ("wine-quality red").
        raise CommandError(f"{what} records its dataset as {dataset_name!r}, which is none the trainer reads "
                           f"({', '.join(DATASETS)}, csv, npz): name the data to score it on with --dataset (and "
                           "--data-path for a csv or npz)")
    if path is not None and not args.data_path and not Path(path).exists():
        raise CommandError(f"{what} was trained on {path}, which is not there from here "
                           f"({Path.cwd()}): give the file with --data-path")
    model_input = _object(model.manifest.get("input"))
    # A model trained on an npz's pictures is scored on what the service makes of them, as it was trained.
    image = _object(model_input.get("preprocessing")).get("fit") \
        if key == "npz" and model_input.get("kind") == "image" else None
    trained_files = _object(recorded_dataset.get("files"))
    # A file the model never saw: every row of it is a test row, not only the share a training run
    # would have held out of it (so a file of one row is scored too).
    unseen_file = bool(trained_files) and path is not None and not _is_trained_file(Path(path), trained_files)
    target, task = args.target or recorded.get("target"), args.task or recorded.get("task")
    if key == "csv":  # a csv scored by a model of another dataset: the model's own task, and a regressor's target
        task = task or model.task  # column, as its manifest names it
        target = target or (_object(model.manifest.get("output")).get("target") if model.task == "regression" else None)
    dataset = load_dataset(dataset_name, data_dir=args.data_dir, cache_dir=args.cache_dir,
                           variant=args.variant or recorded.get("variant") or
                           (recorded_dataset.get("variant") if recorded else None), path=path,
                           target=target, task=task,
                           seed=config.get("seed", 0), test_only=True, image=image,
                           test_fraction=None if unseen_file else TEST_FRACTION, model_task=model.task)
    dataset = _scored_rows(dataset, trained_files, recorded_dataset.get("name"), unseen_file, what)
    x_test = _columns_of(model, dataset, what)
    # An npz's task was read from its y's type (whole numbers: classes), not said by anyone.
    _refuse_other_kind_of_data(model, dataset, x_test, what,
                               task_read_from_y=key == "npz" and not (args.task or recorded.get("task")))
    y_test = dataset.y_test
    if model.task == "classification":
        y_test = _classes_of(model, dataset, what, known_dataset=key in DATASETS)
    metrics = train.score(model, x_test, y_test, dataset.split)
    say(f"{what} on {dataset.name} ({dataset.split})")
    say(report.format_metrics(metrics))
    return 0


def _model_to_score(args) -> tuple:
    """(name, version, model): the model ``evaluate`` scores, loaded and checked, ``--version`` of ``--model``
    or its latest version."""
    from shared.model_file import load_model
    from shared.registry import Registry

    registry = Registry(args.registry)
    if not registry.root.is_dir():
        raise CommandError(f"the registry {args.registry} "
                           f"{'is not a folder' if registry.root.exists() else 'does not exist'}: give the folder "
                           "the model was published into (--registry, or $SCRATCHNET_REGISTRY)")
    name = args.model
    misnamed: list[str] = []
    versions = registry.versions(name, misnamed)
    if not versions:
        raise CommandError(_no_versions(registry, name, misnamed, args.registry))
    version = args.version or versions[-1]
    listed = ", ".join(map(str, versions))
    if version not in versions:
        raise CommandError(f"{name} has no version {version} in {args.registry}; its versions: {listed}")
    try:
        model = load_model(registry.model_path(name, version), expect_name=name, expect_version=version)
    except ScratchnetError as e:
        if args.version or len(versions) == 1:
            raise
        raise CommandError(f"{e}; v{version} is {name}'s latest version: score another with --version "
                           f"(its versions: {listed})") from None
    if not args.version:
        _note_another_served(registry, name, version)
    _check_recorded(model, f"{name} v{version}")
    return name, version, model


def _refuse_other_kind_of_data(model, dataset, x_test, what: str, task_read_from_y: bool) -> None:
    """Refuse scoring ``model`` on data of another width or task than it was trained on."""
    if x_test.shape[1] != model.input_size:
        raise CommandError(f"{what} takes {model.input_size} features; {dataset.name} "
                           f"has {dataset.n_features}: score it on the kind of data it was trained on")
    if dataset.task != model.task:
        if task_read_from_y:
            raise CommandError(f"{what} is a {model.task} model; {dataset.name}'s y reads as a "
                               f"{dataset.task} target: give --task {model.task} if y holds what the model "
                               "predicts, or score it on the kind of data it was trained on")
        raise CommandError(f"{what} is a {model.task} model; {dataset.name} is a {dataset.task} "
                           "dataset: score it on the kind of data it was trained on")


def _no_versions(registry, name: str, misnamed: list[str], shown_as: str) -> str:
    """Why the registry has no version of ``name`` to score: its folder holds none (``misnamed``: the folders
    named like versions that are none, and what each should be), or there is no such model; then the models
    there are, and the one most like ``name`` (a typo's)."""
    if (registry.root / name).is_dir():
        return f"no versions of {name!r} in {shown_as}" + (f": {'; '.join(misnamed)}" if misnamed else "")
    models = registry.model_names()
    if not models:
        return f"no model {name!r} in {shown_as}, which holds no models: publish one with train --publish"
    return f"no model {name!r} in {shown_as}{did_you_mean(name, models)}; its models: {', '.join(models)}"


def _is_trained_file(path: Path, trained_files: dict) -> bool:
    """Whether the model trained on the file at ``path``: one of that name, or the same bytes under
    another name (a copy), by the SHA-256 its manifest records."""
    if path.name in trained_files:
        return True
    try:
        return sha256_file(path) in trained_files.values()
    except OSError:
        return False  # reading the dataset says what is wrong with it


def _scored_rows(dataset, trained_files: dict, trained_name, unseen_file: bool, what: str):
    """The dataset with the rows to score as its test split: every row of files the model never saw,
    the held-out rows of those it trained on. Files it trained on read together with others are
    refused: the split drawn from them all would hold rows it trained on. A file is the one it
    trained on by its name or by its bytes (a copy under another name)."""
    trained_name_of = {sha: file for file, sha in trained_files.items()}
    read, trained = {trained_name_of.get(sha, file) for file, sha in dataset.files.items()}, set(trained_files)
    drawn = len(dataset.x_train) > 0  # not an official test split read alone
    if trained and read and not read & trained and (drawn or unseen_file):
        return dataclasses.replace(
            dataset, x_test=np.concatenate([dataset.x_train, dataset.x_test]),
            y_test=np.concatenate([dataset.y_train, dataset.y_test]),
            split=f"every row of {', '.join(dataset.files)}, which {what} was not trained on")
    if drawn and read & trained and read != trained:
        raise CommandError(f"{what} was trained on {', '.join(sorted(trained))}; the data read here is "
                           f"{', '.join(sorted(read))}: a split drawn from it would score rows the model trained "
                           "on. Score it on the data it was trained on, or on a file it never saw")
    changed = sorted(f for f, sha in dataset.files.items() if f in trained_files and trained_files[f] != sha)
    if changed and dataset.name == trained_name:
        warn(f"note: {', '.join(changed)} differs from the file {what} was trained on (SHA-256 "
             "recorded in its manifest): the held-out rows scored here are not the split it was measured on, "
             "and may include rows it trained on")
    return dataset


def _is_seed(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_recorded(model, what: str) -> None:
    """Refuse a model whose manifest records what evaluate reads (its data options) as the wrong kind
    of value: the checksum covers the parameters, not these, which a hand edit can change."""
    manifest = model.manifest
    training = _object(manifest.get("training"))
    config, dataset = _object(training.get("config")), _object(training.get("dataset"))
    fields = [(f"training.config.{key}", config.get(key), lambda v: isinstance(v, str), "text")
              for key in ("dataset", "data_path", "variant", "target", "task")]
    fields += [(f"training.dataset.{key}", dataset.get(key), lambda v: isinstance(v, str), "text")
               for key in ("name", "variant")]
    fields += [("training.config.seed", config.get("seed"), _is_seed, "a whole number, 0 or more"),
               ("training.dataset.files", dataset.get("files"),
                lambda v: isinstance(v, dict) and all(isinstance(sha, str) for sha in v.values()),
                "an object of file names and their SHA-256")]  # input.feature_names: load_model checks them
    for field, value, fits, expected in fields:
        if value is not None and not fits(value):
            raise CommandError(f"{what}: its manifest's {field} must be {expected}, not {shortened(json.dumps(value))}")


def _columns_of(model, dataset, what: str):
    """The test rows with their columns in the order the model takes them. Columns with names
    (a CSV's header) are matched by name: a file that lists them in another order, or has more,
    is scored on the features the model was trained on, not on whichever sit at their places."""
    wanted = _object(model.manifest.get("input")).get("feature_names")
    have = dataset.feature_names
    if not wanted or not have or list(wanted) == list(have):
        return dataset.x_test
    missing = [column for column in wanted if column not in have]
    if missing:
        raise CommandError(f"{what} takes the columns {', '.join(wanted)}; {dataset.name} has no "
                           f"{', '.join(missing)}: score it on a file with the columns it was trained on")
    extra = [column for column in have if column not in wanted]
    if extra:
        warn(f"note: {dataset.name}'s columns {', '.join(extra)} are not among {what}'s features: left out")
    return np.ascontiguousarray(dataset.x_test[:, [have.index(column) for column in wanted]])


def _classes_of(model, dataset, what: str, *, known_dataset: bool = False):
    """The test targets as the model's class indices. Classes with names (a CSV's values, an
    npz's labels) are matched by name, so a file holding some of the model's classes, or sorting
    them otherwise, is scored against the right ones; an npz's bare indices are the model's own.
    ``known_dataset``: the data is one of the known datasets, whose classes have their own names."""
    labels = list(model.labels)
    named = dataset.labels is not None and not dataset.labels_are_indices
    known = [label in labels for label in dataset.labels] if named else []
    if known and all(known):
        return np.array([labels.index(label) for label in dataset.labels])[dataset.y_test]
    if any(known):
        unknown = [label for label, ok in zip(dataset.labels, known) if not ok]
        raise CommandError(f"{dataset.name} holds classes {what} does not know: {', '.join(unknown)} (its "
                           f"classes: {', '.join(labels)}): score it on the classes it was trained on")
    if named and known_dataset:  # none of the dataset's own class names is the model's: another dataset
        raise CommandError(f"{dataset.name}'s classes ({', '.join(dataset.labels[:4])}, ...) are none of {what}'s "
                           f"({', '.join(labels[:4])}, ...): score it on the dataset it was trained on")
    classes = len(dataset.labels) if dataset.labels is not None else int(dataset.y_test.max()) + 1
    if classes > len(labels) or int(dataset.y_test.max()) >= len(labels):
        raise CommandError(f"{what} tells {len(labels)} classes apart; {dataset.name} "
                           f"has {classes}: score it on the kind of data it was trained on")
    if named and list(dataset.labels) != labels[:len(dataset.labels)]:
        warn(f"note: {dataset.name}'s classes ({', '.join(dataset.labels[:4])}, ...) are not {what}'s "
             f"({', '.join(labels[:4])}, ...): each is scored as the model's class of the same index")
    return dataset.y_test


def cmd_gradcheck(args) -> int:
    """Every component on small random shapes; with ``train``'s flags or a config file, the network
    that run would build, in float64 at its real size, at --samples entries of each parameter array."""
    values = config_values(args)
    shape_given = any(getattr(args, flag) is not None for flag in ("inputs", "outputs", "task_kind"))
    if not shape_given and set(values) <= {"seed"}:
        if args.samples is not None:
            raise CommandError("--samples counts the entries checked of each parameter array of a network: describe "
                               "it with train's flags (--hidden 256 128, say) or --config")
        ok = run_gradcheck(verbose=True, seed=values.get("seed", 0), log=say)
    else:
        from .network import build_mlp

        config = config_from_args(args, values)
        network = build_mlp(**_build_mlp_arguments(args, values, config), seed=config.seed, dtype=np.float64)
        ok = run_gradcheck(verbose=True, seed=config.seed, network=network, samples=args.samples or SAMPLES,
                           log=say)
    say("all gradients match" if ok else "GRADIENT CHECK FAILED: see the rows marked FAIL")
    return 0 if ok else 1


def cmd_overfit(args) -> int:
    """Train on a tiny subset; a correct network must memorise it."""
    _refuse_flags_overfit_ignores(args)
    config, epochs, default_epochs = _overfit_config(args)
    dataset = train.load_config_dataset(config)
    if args.samples > len(dataset.x_train):
        raise CommandError(f"--samples {args.samples}: {dataset.name} has {len(dataset.x_train)} training examples; "
                           f"give --samples {len(dataset.x_train)} or fewer")
    prepared = train.prepare(dataset, config)
    prepared = _without_contradictions(prepared, dataset.task == "classification", config.batchnorm)
    network = train.build_network(config, dataset)
    examples = len(prepared.x_train)
    hint = ("Check the gradients (python -m trainer gradcheck), the optimiser's update, the learning rate "
            "and the labels.")
    x, y = train.network_data(prepared, prepared.x_train, prepared.y_train)

    def verdict() -> tuple[bool, float, float | None]:
        # Memorised means the trained network, in inference mode, gets the subset's own examples
        # right: the training-mode figures of an epoch carry dropout's and augmentation's noise
        # and would fail a network that has in fact memorised the subset.
        # Right by a whisker is not memorised (one example is "100 %" at chance's loss): the loss must
        # also be under half of chance's, ln(classes).
        loss, accuracy = train.evaluate_network(network, x, y, dataset.task)
        if dataset.task == "classification":
            return accuracy >= 0.99 and loss < 0.5 * math.log(max(dataset.n_classes, 2)), loss, accuracy
        return loss < 0.01, loss, accuracy

    try:
        history = train.fit(network, train.build_optimizer(config), train.build_schedule(config), prepared,
                            config, log=lambda *_: None, done=lambda: verdict()[0])
    except FloatingPointError as e:
        # On a tiny subset a correct network's loss falls; one that blows up is the verdict too
        # (an update of the wrong sign diverges at any learning rate).
        say(f"overfit: {counted(examples, 'example')}: {e}")
        say(f"something is wrong: training diverged instead of memorising a tiny subset. {hint}")
        return 1
    ok, loss, accuracy = verdict()
    if dataset.task == "classification":
        say(f"overfit: {counted(examples, 'example')}, {counted(len(history), 'epoch')}, "
            f"training accuracy {accuracy * 100:.1f}%, loss {loss:.5f}")
    else:
        say(f"overfit: {counted(examples, 'example')}, {counted(len(history), 'epoch')}, training loss {loss:.5f}")
    if not ok:
        say(_why_not_memorised(config, dataset, history, loss, y, epochs, default_epochs, hint))
        return 1
    say("ok: the network can memorise a tiny subset")
    return 0


def _refuse_flags_overfit_ignores(args) -> None:
    """Refuse the flags of a validation split and of the training split's size: overfit has neither."""
    unused = [flag for flag, given in (("--limit-train", args.limit_train is not None),
                                       ("--val-fraction", args.val_fraction not in (None, 0)),
                                       ("--patience", args.patience not in (None, 0)), ("--refit", args.refit))
              if given]
    if unused:
        raise CommandError(f"overfit trains on --samples examples without a validation split: "
                           f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply "
                           "(--samples N sets the subset's size)")


def _overfit_config(args) -> tuple:
    """(config, epochs, default epochs): the run on ``--samples`` examples as one batch at most, every one
    trained on, for ``--epochs`` or by default as many as take OVERFIT_STEPS updates (200 at least)."""
    values = config_values(args)
    # checked with the epochs below, warm-up included
    config = config_from_args(args, {**values, "warmup_epochs": 0, "schedule": "constant"})
    if config.batchnorm and args.samples < 2:  # the subset is the batch
        raise CommandError("batch norm normalises each feature over a batch: --samples must be 2 or more "
                           "with --batchnorm")
    batch_size = min(config.batch_size, args.samples)
    default_epochs = max(200, math.ceil(OVERFIT_STEPS / math.ceil(args.samples / batch_size)))
    epochs = args.epochs or default_epochs
    config = config_from_args(args, {**values, "limit_train": args.samples, "val_fraction": 0.0,
                                     "patience": None, "refit": False, "progress": False,
                                     "epochs": epochs, "batch_size": batch_size})
    return config, epochs, default_epochs


def _why_not_memorised(config, dataset, history: list[dict], loss: float, y: np.ndarray, epochs: int,
                       default_epochs: int, hint: str) -> str:
    """What a run that did not memorise the subset says: too short, too narrow, or what its losses point to."""
    regularisers = [flag for flag, on in (("--dropout", config.dropout), ("--augment", config.augment),
                                          ("--weight-decay", config.weight_decay)) if on]
    regularising = (f" This run also regularises ({', '.join(regularisers)}), which works against memorising: "
                    "try it without." if regularisers else "")
    if epochs < default_epochs:  # the run may simply have been too short to tell
        return (f"not memorised in the {counted(epochs, 'epoch')} given: leave --epochs out to "
                f"train until it is (up to {default_epochs} epochs). If it is not then, something is wrong. {hint}"
                + regularising)
    if narrow := _narrowest_below_classes(config, dataset):
        return (f"not memorised: the narrowest hidden layer has {counted(narrow, 'unit')}, fewer than "
                f"the {dataset.n_classes} classes, which may be too few to tell the examples apart; if a wider "
                f"network memorises the subset, nothing is wrong." + regularising)
    clue = _overfit_clue(history, loss, config, y, dataset.task == "classification")
    return f"something is wrong: a network this size should memorise a tiny subset.{clue} {hint}" + regularising


def _without_contradictions(prepared, classification: bool, batchnorm: bool):
    """``prepared`` without the subset's examples whose inputs another example shares with another target:
    no network can tell them apart, so kept they would fail a correct network (a csv of a few coarse
    columns has such rows). Left out with a note saying so; refused when too few examples remain."""
    x, y = prepared.x_train, prepared.y_train
    _, group = np.unique(x.reshape(len(x), -1), axis=0, return_inverse=True)
    group = group.ravel()
    order = np.lexsort((y, group))
    differs = (group[order][1:] == group[order][:-1]) & (y[order][1:] != y[order][:-1])
    contradicted = np.isin(group, group[order][1:][differs])
    if not contradicted.any():
        return prepared
    kept = ~contradicted
    what = "class" if classification else "target"
    if kept.sum() < (2 if batchnorm else 1):
        kinds = "classes" if classification else "targets"
        raise CommandError(f"{contradicted.sum()} of the {len(x)} examples share their inputs with an example of "
                           f"another {what}: no network can tell them apart, and too few others are left to check "
                           f"the network on: this data's inputs do not tell its {kinds} apart")
    say(f"note: {contradicted.sum()} of the {len(x)} examples share their inputs with an example of another {what}: "
        "no network can tell them apart, so the check leaves them out")
    return dataclasses.replace(prepared, x_train=x[kept], y_train=y[kept])


def _narrowest_below_classes(config, dataset) -> int | None:
    """The narrowest hidden layer's width when a classifier's is below its number of classes."""
    if dataset.task != "classification" or not config.hidden or min(config.hidden) >= dataset.n_classes:
        return None
    return min(config.hidden)


def _overfit_clue(history: list[dict], loss: float, config, y: np.ndarray, classification: bool) -> str:
    """What the losses of a run that did not memorise point to, in a sentence (or nothing). ``y``:
    the subset's class labels, or its regression targets as trained on (standardised)."""
    first = history[0]["train_loss"]
    if classification:  # the loss of answering every example with the labels' shares
        shares = np.bincount(y.astype(np.int64)) / len(y)
        constant, what = float(-(shares[shares > 0] * np.log(shares[shares > 0])).sum()), "the labels' entropy"
    else:  # the mean squared error of answering the targets' mean
        constant, what = float(np.var(y)), "the targets' variance"
    if abs(loss - constant) < 0.01 * max(constant, 1e-3):
        return (f" Its loss, {loss:.4f}, is {what}: it answers every example alike, as units that are dead or "
                "identical make it (a zeros init, weight decay crushing the weights, a ReLU layer whose units all "
                "output 0).")
    if loss > 1.5 * first:
        return f" The loss rose from {first:.4g} to {loss:.4g}: the learning rate ({config.lr:g}) is too high."
    if loss > 0.8 * first:
        return (f" The loss fell only from {first:.4g} to {loss:.4g} in {len(history)} epochs: the learning rate "
                f"({config.lr:g}) is too low, or the gradients do not reach the weights.")
    return ""


def cmd_summary(args) -> int:
    """The network a ``train`` run with these flags would build (see ``_build_mlp_arguments``)."""
    values = config_values(args)
    config = config_from_args(args, values)
    from .network import outline_mlp

    # Worked out from the sizes, not built: a network too large to train is shown as well.
    say(outline_mlp(**_build_mlp_arguments(args, values, config)).summary(config.batch_size))
    return 0


class OneLineErrors(argparse.ArgumentParser):
    """A mistyped flag or value is refused in one line, as every other error is, not after the
    whole usage block (``--help`` shows that). Subcommands' parsers are of the same class. A flag
    is taken only whole: argparse's prefixes read ``--epoch 5`` as --epochs and ``--pat`` as --patience,
    so a flag added later could change what an old command line means."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}  # make_parser's subcommands by name

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but a flag the command does not take is refused by the command's parser, whose
        --help lists the flags it does take (argparse has the top-level parser refuse it, whose --help
        lists none of them)."""
        argv = sys.argv[1:] if args is None else list(args)
        if self.commands and argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
            # argparse would take the flag's value for the command: "invalid choice: 'mnist'"
            before = list(itertools.takewhile(lambda arg: arg not in self.commands, argv))
            command = argv[len(before)] if len(before) < len(argv) else None
            example = f"{self.prog} {command or 'COMMAND'} {shlex.join(before)} ..."
            self.error(f"{argv[0]} comes before the command: give the command first, then its flags ({example}"
                       f"{'' if command else ', COMMAND one of ' + ', '.join(self.commands)})")
        namespace, unknown = self.parse_known_args(argv, namespace)
        if unknown:
            command = getattr(namespace, "command", None)
            hints = "; ".join(self._unknown_flag_hints(command, unknown, argv))
            self.commands.get(command, self).error(f"unrecognized arguments: {' '.join(unknown)}"
                                                   + (f" ({hints})" if hints else ""))
        return namespace

    def _unknown_flag_hints(self, command: str | None, unknown: list[str], argv: list[str]) -> list[str]:
        """For each flag ``command`` does not take: the commands that take it, or the flag of its own most like
        it (--actvation: --activation; --epoch: --epochs, as allow_abbrev=False no longer reads it as that); for a
        value given to a switch (--batchnorm true), that it takes none."""
        own = self.commands.get(command, self)._option_string_actions
        hints = []
        for arg in unknown:
            flag = arg.split("=")[0]
            switch = own.get(argv[argv.index(arg) - 1]) if argv.index(arg) else None
            if arg == "--" or not arg.startswith("--"):
                if switch is not None and switch.nargs == 0 and switch.option_strings[0].startswith("--"):
                    name = switch.option_strings[0]
                    off = f" or --no-{name[2:]}" if isinstance(switch, argparse.BooleanOptionalAction) else ""
                    hints.append(f"{name} takes no value: give {name}{off} alone")
            elif owners := self.commands_taking(flag):
                hints.append(f"{flag} is a flag of {owners}")
            elif meant := closest(flag, [option for option in own if option.startswith("--")]):
                hints.append(f"{flag}: did you mean {meant}?")
        return hints

    def commands_taking(self, flag: str) -> str | None:
        """The subcommands that take ``flag`` (--inputs) as words, in the order --help lists them ("gradcheck and
        summary"); None if none does. Every command takes --help, which names none of them."""
        owners = [name for name, parser in self.commands.items()
                  if flag in parser._option_string_actions and flag not in ("-h", "--help")]
        return f"{', '.join(owners[:-1])}{' and ' if owners[1:] else ''}{owners[-1]}" if owners else None

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_destination_flags(p: argparse.ArgumentParser, *, ignored: bool = False) -> None:
    """Where a train run goes. gradcheck takes them too and ignores them, so that a train command line,
    --publish and all, is checked as it is."""
    note = "train's; nothing is written here, so it changes nothing" if ignored else None
    p.add_argument("--publish", action="store_true", help=note or "publish as a new version into the registry")
    p.add_argument("--registry", type=folder_name,
                   help=note or "with --publish: registry folder (default: $SCRATCHNET_REGISTRY or models)")
    p.add_argument("--output", type=folder_name, help=note or "without --publish: folder to write model.npz and its "
                                                              "extras to (default: a new temporary folder)")
    p.add_argument(NEW_INTERFACE_FLAG, action="store_true", help=note or NEW_INTERFACE_HELP)


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="python -m trainer", description=__doc__.split("\n\n")[0].replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a network and save or publish it")
    add_train_flags(p)
    add_destination_flags(p)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("publish", help="publish a run saved with --output as a new registry version")
    p.add_argument("folder", type=folder_name, help="the run's folder (model.npz and its extras)")
    p.add_argument("--registry", type=folder_name, default=DEFAULT_REGISTRY,
                   help="registry folder (default: $SCRATCHNET_REGISTRY or models)")
    p.add_argument("--name", help="model name in the registry (default: the name the run recorded)")
    p.add_argument(NEW_INTERFACE_FLAG, action="store_true", help=NEW_INTERFACE_HELP)
    p.set_defaults(func=cmd_publish)

    p = commands.add_parser("evaluate", help="score a registry version on a dataset's test split")
    add_data_flags(p, dataset_default="default: the one the model was trained on", scoring=True)
    p.add_argument("--registry", type=folder_name, default=DEFAULT_REGISTRY,
                   help="registry folder (default: $SCRATCHNET_REGISTRY or models)")
    p.add_argument("--model", required=True, help="model name in the registry")
    p.add_argument("--version", type=positive_int, help="version to score (default: the latest)")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser(
        "gradcheck", help="compare analytic and numerical gradients of every component, or of your network",
        description="Without options: every layer type, activation and loss, and a few small networks, on random "
                    "shapes. With train's flags or --config: the network that train run would build, in float64 at "
                    "its real size, at --samples entries drawn at random from each parameter array, on a batch of "
                    f"{ROWS} random rows; the flags that do not shape the network (--lr, --epochs, ...) change "
                    "nothing, so a train command line can be checked as it is. The network's input and output sizes "
                    "come from the dataset when one is named (flag or config file), read as train reads it "
                    "(downloaded if it is not at hand), else from --inputs, --outputs and --task-kind.")
    add_train_flags(p, seed_help="seeds the random shapes and values checked; with a network, its weights (as train "
                                 "draws them), the batch and the entries checked (default 0, or the config file's)")
    add_shape_flags(p)
    add_destination_flags(p, ignored=True)
    p.add_argument("--samples", type=positive_int,
                   help=f"entries checked of each parameter array of your network (default {SAMPLES})")
    p.set_defaults(func=cmd_gradcheck)

    p = commands.add_parser("overfit", help="check that the network memorises a tiny subset")
    add_train_flags(p)
    p.add_argument("--samples", type=positive_int, default=64, help="training examples to memorise (default 64)")
    p.set_defaults(func=cmd_overfit)

    p = commands.add_parser("summary", help="print the network's layers, shapes and parameter counts")
    add_train_flags(p)
    add_shape_flags(p)
    p.set_defaults(func=cmd_summary)
    parser.commands = commands.choices
    return parser


def main(argv: list[str] | None = None, on_done: Callable[[], None] | None = None) -> int:
    """Run the command ``argv`` names; its exit status. ``on_done()``, if given, is called the moment the
    command has done all its work, within its handling of Ctrl-C and SIGTERM, and then has the handling of
    SIGTERM (``python -m trainer`` ignores both from then on); without it SIGTERM's handler is put back."""
    argv = sys.argv[1:] if argv is None else argv
    args = make_parser().parse_args(argv)
    args.argv = argv
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        status = args.func(args)
        if on_done is not None:  # a Ctrl-C that came before it is told below, with what the command published
            on_done()
        return status
    except Exception as e:
        stop = _stop_behind(e)
        if stop is not None:
            return _stopped(stop, args)
        if isinstance(e, MemoryError):  # what training takes (check_memory), or the array NumPy could not allocate
            return _failed(f"not enough memory: {e}: choose smaller --hidden sizes or a smaller --batch-size", args)
        if isinstance(e, (CommandError, DatasetError, DownloadError, FloatingPointError, ValueError,
                          ScratchnetError, RegistryError, OSError, ImportError)):
            return _failed(str(e), args)
        raise
    except (KeyboardInterrupt, Terminated) as stop:
        return _stopped(stop, args)
    finally:
        if in_main_thread and on_done is None:
            signal.signal(signal.SIGTERM, previous)


def _note_unserved(registry: str, name: str, version: int) -> None:
    """A note when serving.json keeps the service from the version just published: it pins another
    version, which the service keeps serving, or the model is unloaded (a V2 unload), and the
    service serves no version of it until it is loaded again."""
    from shared.registry import Registry

    target = Registry(registry)
    try:
        state = target.read_serving(name)
    except RegistryError:  # the service reports it; the version is published all the same
        return
    pinned = state["pinned"]
    if pinned is not None and pinned != version:
        warn(f"note: {target.root / name / SERVING_FILE} pins v{pinned}, so the service keeps serving it, "
             f"not v{version}: unpin {name} (POST /models/{name}/unpin) to serve the latest")
    if state.get("unloaded") is True:
        warn(f"note: {target.root / name / SERVING_FILE} says {name} is unloaded, so the service serves no version "
             f"of it, v{version} included: load it (POST /v2/repository/models/{name}/load) to serve it again")


def _note_another_served(registry, name: str, latest: int) -> None:
    """A note when the service serves another version than the latest, which evaluate scores by default."""
    try:
        pinned = registry.read_serving(name)["pinned"]
    except RegistryError:  # the service reports it; scoring the model does not depend on it
        return
    if pinned is not None and pinned != latest:
        warn(f"note: scoring v{latest}, {name}'s latest version; {registry.root / name / SERVING_FILE} pins "
             f"v{pinned} for the service (--version {pinned} scores it)")


def _stop_behind(error: BaseException) -> BaseException | None:
    """The Ctrl-C or SIGTERM that caused ``error``, if one did: landing while an extension module
    initialises (matplotlib's: ImportError 'initialization failed') or inside a class body
    (RuntimeError from __set_name__), the signal reaches here wrapped in another error."""
    while error is not None:
        if isinstance(error, (KeyboardInterrupt, Terminated)):
            return error
        error = error.__cause__ or error.__context__
    return None


def _failed(message: str, args: argparse.Namespace) -> int:
    """Say what failed; the exit status. An error after the version was published (writing the last
    lines of output to a full disk) says that it was, and does not make the run fail: as with a
    reader that leaves early, the status is the run's, which published, and a caller that retried a
    failure would publish the model again. One after the model was saved to its folder says that it was
    (the run still failed: it did not finish)."""
    if published := getattr(args, "published", None):
        warn(f"error: {message} after publishing {published}: the version is in the registry; do not run "
             "again to publish it")
        return 0
    if saved := getattr(args, "saved", None):  # the run failed, but its model need not be trained again
        warn(f"error: {message} {_after_saving(saved)}")
        return 2
    warn(f"error: {message}")
    return 2


def _after_saving(saved: str) -> str:
    """What a run that ends early once its model is saved (``args.saved``, "name in folder") says of it."""
    return f"after saving {saved}: its {train.MODEL_FILE} is complete"


def _stopped(stop: BaseException, args: argparse.Namespace) -> int:
    """Say that the command stopped (and, for one that was publishing, what it published: nothing, or a
    version already in place when the signal came; for a training run stopped once its model was written
    to its folder, where; for one stopped after an epoch before that, that it saved no model, and where the
    metrics of its finished epochs are); its exit status."""
    what, status = ("terminated", 128 + stop.signum) if isinstance(stop, Terminated) else ("interrupted", 130)
    publishing = args.command == "publish" or getattr(args, "publish", False)
    published = getattr(args, "published", None)
    if published:
        warn(f"{what} after publishing {published}")
    elif saved := getattr(args, "saved", None):  # written whole (write_output is atomic), only not yet scored
        warn(f"{what} {_after_saving(saved)}")
    elif kept := getattr(args, "kept", None):
        warn(f"{what}: {'nothing was published' if publishing else 'no model was saved'}; {kept}")
    else:
        warn(what + (": nothing was published" if publishing else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
