"""The datasets the trainer learns from: MNIST, Fashion-MNIST, Wine Quality, and any CSV or NPZ.

``load_dataset(name, ...)`` returns a ``Dataset``: float32 C-contiguous features of shape
(n, n_features), int64 class indices or float32 targets, and what the model file needs to
describe them (labels, preprocessing, the SHA-256 of every file read, how the test split was
made). The known datasets' files are checked against their published SHA-256, whether they are
downloaded into the cache or read from a local folder (``data_dir``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import ScratchnetError
from shared.model_file import npz_problem
from shared.preprocess import FITS, FLOAT32_MAX, arrays_to_batch
from shared.text import counted, did_you_mean, repeated, shortened
from trainer.download import ChecksumMismatch, DownloadError, default_cache_dir, fetch, mirror_urls, sha256_file

DATA_DIR_ENV = "SCRATCHNET_DATA_DIR"
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, cols)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)
TEST_FRACTION = 0.2
# The arrays a data .npz holds, as errors name them.
NPZ_ARRAYS = "arrays x_train, y_train, x_test, y_test (or x, y), and optionally labels"
MAX_CLASSES = 10_000  # a csv's or an npz's classes (an npz's indices: one output unit each up to the highest)


class DatasetError(ValueError):
    """A dataset that cannot be loaded: the message names the file and what is wrong."""


@dataclass(repr=False)
class Dataset:
    """Features and targets of a train/test split, and what a model file needs to know of them.

    x_train : ndarray of shape (n_train, n_features), float32, C-contiguous
    y_train : ndarray of shape (n_train,), int64 class indices (classification) or float32
    x_test, y_test : the same for the test split
    """

    name: str
    task: str  # "classification" | "regression"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str] | None = None  # class names, classification only
    # The labels are only the class indices written out (an npz without a labels array): a
    # model's class of the same index is the same class, whatever the model calls it.
    labels_are_indices: bool = False
    target: str | None = None  # target column, regression only
    feature_names: list[str] | None = None
    input_kind: str = "vector"  # "image" | "vector"
    preprocessing: dict | None = None  # the model file's input.preprocessing, images only
    files: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 of the files read
    split: str = ""  # how the test split was made
    variant: str | None = None  # wine-quality: "red", "white" or "both"

    def __post_init__(self):
        if self.task not in ("classification", "regression"):
            raise DatasetError(f"{self.name}: task must be 'classification' or 'regression', not {self.task!r}")
        y_dtype = np.int64 if self.task == "classification" else np.float32
        for part in ("train", "test"):
            # Each loader has refused NaN, infinity and values beyond float32's range, naming them in the file.
            x = np.ascontiguousarray(getattr(self, f"x_{part}"), dtype=np.float32)
            y = np.ascontiguousarray(getattr(self, f"y_{part}"), dtype=y_dtype)
            if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
                raise DatasetError(f"{self.name}: x_{part} {x.shape} and y_{part} {y.shape} do not match: "
                                   "expected (n, n_features) and (n,)")
            setattr(self, f"x_{part}", x)
            setattr(self, f"y_{part}", y)
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise DatasetError(f"{self.name}: train has {self.x_train.shape[1]} features, "
                               f"test has {self.x_test.shape[1]}")

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int | None:
        return len(self.labels) if self.labels is not None else None

    def describe(self) -> dict:
        """What a model's manifest records about its training data (JSON-ready)."""
        return {"name": self.name, "variant": self.variant, "files": dict(self.files), "split": self.split,
                "n_train": len(self.x_train), "n_test": len(self.x_test)}

    def __repr__(self) -> str:
        what = f"{self.n_classes} classes" if self.task == "classification" else f"target {self.target!r}"
        return (f"Dataset({self.name!r}, {self.task}, {what}, train {self.x_train.shape}, "
                f"test {self.x_test.shape}, split: {self.split})")


# ---------------------------------------------------------------------------------------------
# Known datasets: where they are published and their SHA-256

@dataclass(frozen=True)
class KnownFile:
    name: str  # as published on the mirrors
    sha256: str
    raw_sha256: str | None = None  # of the decompressed file, accepted from a data folder as `name` minus .gz


@dataclass(frozen=True)
class KnownDataset:
    name: str
    mirrors: tuple[str, ...]  # base URLs; a file is at <base><file name>
    files: tuple[KnownFile, ...]

    def file(self, name: str) -> KnownFile:
        return next(f for f in self.files if f.name == name)


DATASETS = {
    "mnist": KnownDataset(
        "mnist",
        ("https://storage.googleapis.com/cvdf-datasets/mnist/",
         "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        (KnownFile("train-images-idx3-ubyte.gz",
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                   "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
         KnownFile("train-labels-idx1-ubyte.gz",
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                   "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
         KnownFile("t10k-images-idx3-ubyte.gz",
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                   "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
         KnownFile("t10k-labels-idx1-ubyte.gz",
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                   "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2")),
    ),
    "fashion-mnist": KnownDataset(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        (KnownFile("train-images-idx3-ubyte.gz",
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                   "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
         KnownFile("train-labels-idx1-ubyte.gz",
                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                   "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
         KnownFile("t10k-images-idx3-ubyte.gz",
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                   "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
         KnownFile("t10k-labels-idx1-ubyte.gz",
                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                   "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")),
    ),
    "wine-quality": KnownDataset(
        "wine-quality",
        ("https://archive.ics.uci.edu/ml/machine-learning-databases/wine-quality/",),
        (KnownFile("winequality-red.csv", "4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e"),
         KnownFile("winequality-white.csv", "76c3f809815c17c07212622f776311faeb31e87610d52c26d87d6e361b169836")),
    ),
}


def _known_file_of(sha256: str) -> tuple[str, str] | None:
    """(dataset, file name) of the known file, packed or not, whose SHA-256 this is; None for any other file."""
    return next(((dataset.name, known.name) for dataset in DATASETS.values() for known in dataset.files
                 if sha256 in (known.sha256, known.raw_sha256)), None)


MNIST_LABELS = [str(digit) for digit in range(10)]
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
WINE_VARIANTS = ("red", "white", "both")
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "wine": "wine-quality", "wine_quality": "wine-quality"}


def _quantity_way_out(training: str, model_task: str | None) -> str:
    """What to do about a classification target that holds no classes (a quantity): ``training``, the advice
    to a training run, unless the data is read to score a model of ``model_task`` (evaluate), whose task is
    the model's: then --task regression for a regression model, and for a classifier, data of its classes."""
    if model_task is None:
        return training
    if model_task == "regression":
        return "if it is the quantity the model predicts, give --task regression to score it as one"
    return ("the model is a classifier, and --task regression cannot score it: score it on data whose target "
            "holds the classes it was trained on")


# The suffixes of the data files a --dataset of a path meant, and the dataset that reads them.
FILE_KINDS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".npz": "npz"}


def load_dataset(name: str, *, data_dir: Path | str | None = None, cache_dir: Path | str | None = None,
                 variant: str | None = None, seed: int = 0, download: bool = True, progress: bool = True,
                 path: Path | str | None = None, target: str | None = None, task: str | None = None,
                 test_path: Path | str | None = None, test_fraction: float | None = TEST_FRACTION,
                 test_only: bool = False, image: str | None = None, model_task: str | None = None) -> Dataset:
    """Load a dataset by name: ``mnist``, ``fashion-mnist``, ``wine-quality``, ``csv`` or ``npz``.

    Known datasets are read from ``data_dir`` (or ``$SCRATCHNET_DATA_DIR``): the folder itself
    or its subfolder named like the dataset; otherwise they are downloaded into ``cache_dir``
    (``$SCRATCHNET_CACHE``, ``~/.cache/scratchnet``) unless ``download`` is False. Either way
    each file's SHA-256 is checked.

    ``csv`` reads ``path`` (a header row naming the columns; delimiter ``,``, ``;`` or tab) with
    ``target`` as the column to predict and ``task`` "classification" or "regression";
    ``npz`` reads arrays x_train, y_train, x_test, y_test (and optionally labels) from ``path``.
    Any other name with a ``path`` reads that file by its suffix (the name such a dataset is
    recorded under is the file's stem).
    Without a test split (no ``test_path`` for CSV, only x and y in an NPZ) ``test_fraction``
    of the rows is held out, identical feature rows kept on one side, chosen by ``seed``; with
    ``test_fraction`` None (csv and npz only) every row is a test row and the training split is empty.

    ``test_only`` (scoring a model): a dataset with an official test split (MNIST, Fashion-MNIST)
    reads its test files only, and its training split is empty. Any other needs every row to
    draw its split, so all are read as usual. ``image`` (npz only): see ``load_npz``. ``model_task`` (csv and
    npz): the task of the model the data is read to score (evaluate), whose way out an error gives
    (``_quantity_way_out``).
    """
    key = dataset_key(name, path)
    if key in ("csv", "npz"):
        _refuse_file_dataset_options(key, path, variant=variant, data_dir=data_dir, target=target, image=image)
        if key == "csv":
            return load_csv(path, target=target, task=task, test_path=test_path, seed=seed,
                            test_fraction=test_fraction, model_task=model_task)
        return load_npz(path, task=task, seed=seed, test_fraction=test_fraction, image=image, scoring=test_only,
                        model_task=model_task)
    if image is not None:
        raise DatasetError(f"--image is for pictures in an npz; {name} is a known dataset, with its own preprocessing")
    if key not in DATASETS:
        known = [*DATASETS, "csv", "npz"]
        if (kind := FILE_KINDS.get(Path(name).suffix.lower())) and path is None:  # a file's path given as the dataset
            raise DatasetError(f"unknown dataset {name!r}: to read a data file, give --dataset {kind} --data-path "
                               f"{name}")
        raise DatasetError(f"unknown dataset {name!r}{did_you_mean(key, known)}: choose one of {', '.join(known)}")
    _refuse_known_dataset_options(key, variant=variant, path=path, target=target, task=task, test_path=test_path)
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir = os.environ[DATA_DIR_ENV]
    source = _FileSource(DATASETS[key], data_dir, cache_dir, download, progress, scoring=test_only)
    if key == "wine-quality":
        return _load_wine(source, ("red" if variant is None else variant).lower(), seed, test_fraction)  # any case
    labels = MNIST_LABELS if key == "mnist" else FASHION_MNIST_LABELS
    fit = "digit" if key == "mnist" else "garment"
    return _load_idx_dataset(source, labels, fit, test_only)


def _refuse_file_dataset_options(key: str, path, *, variant, data_dir, target, image) -> None:
    """Refuse a csv or npz dataset (``key``) without a file, or with options it has no use for (not ignore them)."""
    if path is None:
        raise DatasetError(f"the {key} dataset needs a file: give its path (--data-path)")
    for flag, value in (("--variant", variant), ("--data-dir", data_dir)):
        if value is not None:
            raise DatasetError(f"{flag} applies to the known datasets ({', '.join(DATASETS)}); "
                               f"the {key} dataset is read from --data-path {path}: leave {flag} out "
                               f"{_out_of_config(flag)}")
    if key == "npz" and target is not None:
        raise DatasetError(f"{path}: --target names a csv column; an npz's target is its y array "
                           "(y_train and y_test): leave --target out (take target out of the --config file, "
                           "if it is set there)")
    if key == "csv" and image is not None:
        raise DatasetError(f"{path}: --image reads pictures from an npz's x; a csv holds one value per column")


def _refuse_known_dataset_options(key: str, *, variant, path, target, task, test_path) -> None:
    """Refuse options known dataset ``key`` has no use for: another's variant, and those of csv and npz files."""
    if variant is not None and key != "wine-quality":
        raise DatasetError(f"{key} has no variants (got variant={variant!r}): --variant is wine-quality's; leave it "
                           f"out {_out_of_config('--variant')}")
    native_task = "regression" if key == "wine-quality" else "classification"
    ignored = [flag for flag, value in (("--data-path", path), ("--target", target), ("test_path", test_path))
               if value is not None]
    if task not in (None, native_task):
        ignored.append(f"--task {task}")
    if ignored:
        # A --config file of a csv run, reused with --dataset mnist, sets them too: what to take out is named there.
        flags = [flag for flag in ignored if flag != "test_path"]
        raise DatasetError(f"{key} is a known dataset ({native_task}" +
                           (", target quality" if key == "wine-quality" else "") +
                           f"): {', '.join(ignored)} {'apply' if len(ignored) > 1 else 'applies'} to csv and npz files "
                           f"only: add --dataset csv or --dataset npz, or leave {'them' if len(ignored) > 1 else 'it'} "
                           f"out to train on {key}" + (f" {_out_of_config(*flags)}" if flags else ""))


def _out_of_config(*flags: str) -> str:
    """Where else the settings of ``flags`` may come from: a --config file written for another dataset."""
    keys = ", ".join(flag.split()[0].removeprefix("--").replace("-", "_") for flag in flags)
    return f"(take {keys} out of the --config file, if set there)"


def dataset_key(name: str, path: Path | str | None = None) -> str:
    """What ``load_dataset(name, path=path)`` reads: a known dataset's key, ``csv`` or ``npz``.
    The type a name says wins over the file's suffix (a valid npz may be called data.dat); any
    other name with a ``path`` (e.g. the name a CSV dataset was recorded under) is read by the
    file's suffix."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in (*DATASETS, "csv", "npz") and path is not None:
        key = "npz" if Path(path).suffix.lower() == ".npz" else "csv"
    return key


class _FileSource:
    """Finds a known dataset's files in a data folder or the cache, and reads them verified."""

    def __init__(self, spec: KnownDataset, data_dir, cache_dir, download: bool, progress: bool,
                 scoring: bool = False):
        self.spec = spec
        self.scoring = scoring  # read to score a model (evaluate), which an error's advice says instead of training
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.download = download
        self.progress = progress
        self.files_read: dict[str, str] = {}

    def read(self, name: str) -> tuple[Path, bytes]:
        """The verified bytes of one of the dataset's files (as published, or decompressed)."""
        known = self.spec.file(name)
        if self.data_dir is not None:
            path, sha = self._in_data_dir(known)
        else:
            path, sha = self.cached(known), known.sha256
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha and b"\r\n" in data:
            # The published text with Windows line ends (git's autocrlf, an editor on Windows): the same data.
            unix = data.replace(b"\r\n", b"\n")
            if hashlib.sha256(unix).hexdigest() == sha:
                data, actual = unix, sha
        if actual != sha:
            if other := _known_file_of(actual):  # the data folder of another dataset: MNIST's and Fashion-MNIST's alike
                # A model is scored on the data it was trained on: the other dataset's classes are not its own.
                instead = "" if self.scoring else f", or train on {other[0]} with --dataset {other[0]}"
                raise DatasetError(f"{path} is {other[0]}'s {other[1]}, not {self.spec.name}'s: give the folder that "
                                   f"holds the {self.spec.name} files (--data-dir or ${DATA_DIR_ENV}){instead}")
            doing = "score the model on" if self.scoring else "train on"
            own = (f"; to {doing} a copy you changed, give it with --dataset csv --data-path {path} "
                   "--target quality --task regression" if path.suffix == ".csv" else "")
            raise DatasetError(f"{path}: checksum mismatch: expected SHA-256 {sha}, got {actual}; "
                               f"the file is corrupted or is not the published {self.spec.name} file: put the "
                               f"published file there, or leave out --data-dir (and ${DATA_DIR_ENV}) to download "
                               f"it{own}")
        self.files_read[path.name] = actual
        return path, data

    def _in_data_dir(self, known: KnownFile) -> tuple[Path, str]:
        folders = [self.data_dir / self.spec.name, self.data_dir]
        candidates = [(known.name, known.sha256)]
        if known.raw_sha256 and known.name.endswith(".gz"):
            raw = known.name[:-3]
            # Windows unpackers (and Kaggle's copy of MNIST) name train-images-idx3-ubyte train-images.idx3-ubyte.
            candidates += [(raw, known.raw_sha256), (raw.replace("-idx", ".idx"), known.raw_sha256)]
        for folder in folders:
            for filename, sha in candidates:
                if (folder / filename).is_file():
                    return folder / filename, sha
        if not self.data_dir.is_dir():
            raise DatasetError(f"the data folder {self.data_dir} (--data-dir or ${DATA_DIR_ENV}) is not a folder "
                               f"that exists: give the folder that holds the {self.spec.name} files")
        raise DatasetError(f"{self.spec.name}: {known.name} not found in {folders[0]} or {folders[1]}: put the "
                           f"published file there{' (gzip-compressed or not)' if len(candidates) > 1 else ''}, "
                           f"or leave out --data-dir (and ${DATA_DIR_ENV}) to download it")

    @property
    def cache_dir(self) -> Path:
        """Looked up only when a file comes from the cache: a data folder needs no home folder."""
        return (self._cache_dir or default_cache_dir()) / self.spec.name

    def cached(self, known: KnownFile) -> Path:
        path = self.cache_dir / known.name
        if not self.download:
            if not path.is_file():
                raise DatasetError(f"{self.spec.name}: {known.name} is not in the cache {self.cache_dir}; "
                                   "allow the download or give a data folder")
            return path
        urls = mirror_urls([base + known.name for base in self.spec.mirrors], f"{self.spec.name}/{known.name}")
        try:
            return fetch(urls, known.name, known.sha256, self.cache_dir, progress=self.progress)
        except ChecksumMismatch:
            raise
        except DownloadError as e:  # no mirror answered
            raise DownloadError(f"{e}; to read files you already have instead, give their folder with "
                                f"--data-dir (or ${DATA_DIR_ENV})") from None


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

def unreadable(path: Path, error: OSError, what: str, flag: str) -> str:
    """What to tell a user whose ``flag`` names ``path``, a ``what`` ("csv file") that cannot be read
    (``error``): a path that leads nowhere says where it was looked for, one that leads to a folder names
    the files of that kind in it, and both say to give the file's own path."""
    suffix = what.split()[0].lower()
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):  # a/b.csv where a is a file: no such file
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        return f"{path}: no such file{where}: give the path of the {what} to read ({flag})"
    if isinstance(error, IsADirectoryError):
        try:
            held = sorted(p.name for p in path.iterdir() if p.suffix.lower() == f".{suffix}" and p.is_file())
        except OSError:
            held = []
        holds = f" (it holds {shortened(', '.join(held), 120)})" if held else ""
        return f"{path} is a folder{holds}: give the path of the {what} to read, not its folder ({flag})"
    return f"{path}: cannot read: {error.strerror or error}"


def read_idx(path: Path | str, expected_magic: int) -> np.ndarray:
    """The uint8 array in an IDX file (gzip-compressed or raw), after checking its header.

    expected_magic : IDX_IMAGES_MAGIC (returns shape (n, rows, cols)) or IDX_LABELS_MAGIC ((n,))
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(unreadable(path, exc, "IDX file", "--data-dir")) from exc
    return parse_idx(data, path, expected_magic)


def parse_idx(data: bytes, source: Path | str, expected_magic: int) -> np.ndarray:
    """Parse IDX bytes (gzip-compressed or raw); ``source`` names the file in errors."""
    data = _gunzip(data, source)
    kind = {IDX_IMAGES_MAGIC: "image", IDX_LABELS_MAGIC: "label"}[expected_magic]
    if len(data) < 4:
        raise DatasetError(f"{source}: too short to be an IDX {kind} file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DatasetError(f"{source}: not an IDX {kind} file: magic number {magic} (0x{magic:08x}), "
                           f"expected {expected_magic}")
    ndim = magic & 0xFF
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise DatasetError(f"{source}: truncated header: {len(data)} bytes, an IDX {kind} header has {header_bytes}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    what = f"{dims[0]} images of {dims[1]}x{dims[2]}" if kind == "image" else f"{dims[0]} labels"
    if 0 in dims:
        raise DatasetError(f"{source}: the header declares {what}: nothing to read")
    body_bytes = math.prod(dims)
    if len(data) < header_bytes + body_bytes:
        raise DatasetError(f"{source}: truncated: the header declares {what} ({body_bytes} bytes) "
                           f"but only {len(data) - header_bytes} follow it")
    if len(data) > header_bytes + body_bytes:
        raise DatasetError(f"{source}: {len(data) - header_bytes - body_bytes} unexpected bytes after "
                           f"the {what} its header declares")
    return np.frombuffer(data, np.uint8, count=body_bytes, offset=header_bytes).reshape(dims)


def idx_to_xy(images: np.ndarray, labels: np.ndarray, images_source, labels_source,
              n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, rows, cols) uint8 and labels (n,) -> x (n, rows*cols) float32 in [0, 1], y int64."""
    if len(images) != len(labels):
        raise DatasetError(f"{labels_source}: holds {len(labels)} labels but {images_source} "
                           f"holds {len(images)} images")
    if labels.max() >= n_classes:
        bad = int(np.argmax(labels >= n_classes))
        raise DatasetError(f"{labels_source}: label {labels[bad]} at index {bad} is outside 0-{n_classes - 1}")
    x = np.divide(images.reshape(len(images), -1), np.float32(255), dtype=np.float32)
    return x, labels.astype(np.int64)


def _gunzip(data: bytes, source) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    chunks = []
    try:
        while data[:2] == b"\x1f\x8b":  # a gzip file may hold several members
            decompressor = zlib.decompressobj(wbits=31)
            chunks.append(decompressor.decompress(data))
            if not decompressor.eof:
                raise DatasetError(f"{source}: truncated gzip data: the compressed stream ends early")
            data = decompressor.unused_data
    except zlib.error as exc:
        raise DatasetError(f"{source}: corrupt gzip data: {exc}") from exc
    if data.strip(b"\0"):
        raise DatasetError(f"{source}: {len(data)} bytes of unexpected data after the gzip stream")
    return b"".join(chunks) if len(chunks) > 1 else chunks[0]


IMAGE_SIDE = 28  # every image dataset is of 28x28 fields, as MNIST and Fashion-MNIST are


def image_preprocessing(fit: str) -> dict:
    """The model file's ``input.preprocessing`` for 28x28 pictures of a ``digit`` or a ``garment``."""
    return {"type": "image", "size": [IMAGE_SIDE, IMAGE_SIDE], "fit": fit, "polarity": "light_on_dark"}


def _load_idx_dataset(source: _FileSource, labels: list[str], fit: str, test_only: bool = False) -> Dataset:
    arrays = {"train": (np.empty((0, 28 * 28), dtype=np.float32), np.empty(0, dtype=np.int64))}
    for part, prefix in (("train", "train"), ("test", "t10k"))[1 if test_only else 0:]:
        images_path, images_data = source.read(f"{prefix}-images-idx3-ubyte.gz")
        labels_path, labels_data = source.read(f"{prefix}-labels-idx1-ubyte.gz")
        images = parse_idx(images_data, images_path, IDX_IMAGES_MAGIC)
        if images.shape[1:] != (28, 28):
            raise DatasetError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
        arrays[part] = idx_to_xy(images, parse_idx(labels_data, labels_path, IDX_LABELS_MAGIC),
                                 images_path, labels_path, len(labels))
    name = source.spec.name
    return Dataset(
        name=name, task="classification",
        x_train=arrays["train"][0], y_train=arrays["train"][1],
        x_test=arrays["test"][0], y_test=arrays["test"][1],
        labels=list(labels), input_kind="image",
        preprocessing=image_preprocessing(fit),
        files=dict(source.files_read), split=f"official {len(arrays['test'][0])} test set",
    )


# ---------------------------------------------------------------------------------------------
# Wine Quality

def _load_wine(source: _FileSource, variant: str, seed: int, test_fraction: float) -> Dataset:
    if variant not in WINE_VARIANTS:
        raise DatasetError(f"wine-quality variant must be one of {', '.join(WINE_VARIANTS)}, not {variant!r}")
    colours = ["red", "white"] if variant == "both" else [variant]
    tables = []
    for colour in colours:
        path, data = source.read(f"winequality-{colour}.csv")
        header, rows = _parse_csv_text(data.decode("utf-8-sig"), path)
        tables.append(_numeric_table(header, rows, path, target="quality", task="regression"))
    feature_names = tables[0][0]
    x = np.concatenate([t[1] for t in tables])
    y = np.concatenate([t[2] for t in tables])
    if variant == "both":
        is_red = np.concatenate([np.full(len(t[1]), float(c == "red")) for t, c in zip(tables, colours)])
        x = np.column_stack([x, is_red])
        feature_names = [*feature_names, "is_red"]
    train, test = grouped_holdout(x, test_fraction, seed)
    return Dataset(
        name="wine-quality", task="regression",
        x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test],
        target="quality", feature_names=feature_names, input_kind="vector",
        files=dict(source.files_read), variant=variant,
        split=f"wine {variant}: {test_fraction:.0%} held out, grouped by duplicate rows, seed {seed}",
    )


# ---------------------------------------------------------------------------------------------
# Splits

HOLDOUT_FIX = {  # what to do when rows are too few to split, by the split's name
    "test": "give more rows, or an npz with its own x_test and y_test",
    "validation": "give more rows, or train without a validation split (--val-fraction 0)",
}


def grouped_holdout(x: np.ndarray, fraction: float, seed: int, what: str = "test"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held out) holding out about ``fraction`` of the rows of ``x`` (n, d).

    Identical rows form a group and a group goes wholly to one side, so a duplicated example
    never sits in both splits. Groups are drawn in a random order fixed by ``seed`` until the
    held-out side reaches its share; a group that would take it past half as much again stays on
    the training side (70 copies of one row would make a 20 % split most of the rows), unless
    every group is that large. ``what`` names that side in error messages.
    """
    if not 0 < fraction < 1:
        raise DatasetError(f"the {what} fraction must be between 0 and 1, not {fraction}")
    fix = HOLDOUT_FIX.get(what, "give more rows")
    if len(x) < 2:
        raise DatasetError(f"cannot hold out a {what} split from {counted(len(x), 'row')}: {fix}")
    _, group = np.unique(x, axis=0, return_inverse=True)
    group = group.reshape(-1)
    sizes = np.bincount(group)
    order = np.random.default_rng(seed).permutation(len(sizes))
    wanted = max(1, round(fraction * len(x)))
    limit, held, taken = max(wanted + 1, math.ceil(1.5 * wanted)), 0, []
    for g in order.tolist():
        if held >= wanted:
            break
        if held + sizes[g] <= limit:
            taken.append(g)
            held += int(sizes[g])
    if not taken:  # every group is larger than that: the first that reaches the share
        taken = order[:int(np.searchsorted(np.cumsum(sizes[order]), wanted)) + 1]
    is_test = np.isin(group, taken)
    if not is_test.any() or is_test.all():
        raise DatasetError(f"cannot hold out a {what} split of about {wanted} of the {len(x)} rows: a row and its "
                           f"copies stay on one side, and {sizes.max()} of them are one row: {fix}")
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _test_split(x: np.ndarray, fraction: float | None, seed: int, file_name: str
                ) -> tuple[np.ndarray, np.ndarray, str]:
    """Indices (train, test) of a file's rows (``grouped_holdout``) and how they were drawn; with
    ``fraction`` None every row is a test row (scoring a model on a file it never saw)."""
    if fraction is None:
        return np.arange(0), np.arange(len(x)), f"every row of {file_name}"
    train, test = grouped_holdout(x, fraction, seed)
    return train, test, f"{fraction:.0%} of {file_name} held out, grouped by duplicate rows, seed {seed}"


def validation_split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int, *, grouped: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val): a random ``fraction`` of the rows for validation.

    Deterministic given ``seed``; rows keep their original order on each side. With ``grouped``,
    identical rows stay on one side (``grouped_holdout``), so validation never scores an example
    the network trained on and early stopping is not fooled by duplicates.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must be between 0 and 1, not {fraction}")
    if grouped:
        train, val = grouped_holdout(x, fraction, seed, what="validation")
        return x[train], y[train], x[val], y[val]
    n_val = max(1, round(fraction * len(x)))
    if n_val >= len(x):
        raise ValueError(f"cannot take a validation split of {fraction} from {len(x)} rows")
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return x[train], y[train], x[val], y[val]


# ---------------------------------------------------------------------------------------------
# Generic CSV and NPZ

def load_csv(path: Path | str, *, target: str | None, task: str | None, test_path: Path | str | None = None,
             seed: int = 0, test_fraction: float | None = TEST_FRACTION, model_task: str | None = None) -> Dataset:
    """A dataset from a CSV file with a header row; every column but ``target`` is a numeric feature.

    For classification the target may hold names or numbers; the classes are its distinct
    values, sorted (numerically when they are numbers). ``model_task``: see ``load_dataset``.
    """
    if task not in ("classification", "regression"):
        raise DatasetError(f"{path}: say what the target is with --task classification or --task regression"
                           + ("" if task is None else f", not {task!r}"))
    path = Path(path)
    feature_names, x, y_raw = _read_csv_file(path, target, task, model_task)
    files = {path.name: sha256_file(path)}
    if test_path is not None:
        test_path = Path(test_path)
        test_features, x_test, y_test_raw = _read_csv_file(test_path, target, task, model_task)
        if test_features != feature_names:
            raise DatasetError(f"{test_path}: its columns {test_features} differ from {path.name}'s {feature_names}")
        files[test_path.name] = sha256_file(test_path)
        split = f"test file {test_path.name}"
    else:
        train, test, split = _test_split(x, test_fraction, seed, path.name)
        x, x_test = x[train], x[test]
        y_raw, y_test_raw = [y_raw[i] for i in train], [y_raw[i] for i in test]

    labels = None
    if task == "classification":
        files_of_parts = (path.name, test_path.name) if test_path is not None else None
        labels, (y, y_test) = _class_indices([y_raw, y_test_raw], path, files_of_parts, model_task)
    else:
        y, y_test = np.asarray(y_raw, np.float32), np.asarray(y_test_raw, np.float32)
    return Dataset(name=path.stem, task=task, x_train=x, y_train=y, x_test=x_test, y_test=y_test,
                   labels=labels, target=target if task == "regression" else None,
                   feature_names=feature_names, files=files, split=split)


def load_npz(path: Path | str, *, task: str | None = None, seed: int = 0,
             test_fraction: float | None = TEST_FRACTION, image: str | None = None, scoring: bool = False,
             model_task: str | None = None) -> Dataset:
    """A dataset from an .npz holding x_train, y_train, x_test, y_test (or only x and y) and
    optionally labels. Loaded without pickle. ``task`` defaults to classification for integer
    targets, or any a labels array names, and regression for float ones; features of more than 2
    dimensions are flattened.

    ``image`` (``digit`` or ``garment``): x holds pictures, (n, height, width) or (n, height, width,
    channels), which become what the service makes of such a picture (``shared.preprocess``, that
    fit), so the model is served pictures, and trained on exactly what it will be given. ``scoring``: the
    pictures are read to score an image model (evaluate), which an error's advice says instead of training.
    ``model_task``: see ``load_dataset``."""
    path = Path(path)
    preprocessing = None
    if image is not None:
        if image not in FITS:
            raise DatasetError(f"image must be one of {', '.join(FITS)}, not {image!r}")
        preprocessing = image_preprocessing(image)
    arrays = _read_npz_arrays(path)
    x, y, x_test, y_test, split = _npz_parts(arrays, path)
    task = _npz_task(task, y, "labels" in arrays, path, model_task)
    class_names = arrays.get("labels")
    if class_names is None and y.dtype.kind == "b" and (y_test is None or y_test.dtype.kind == "b"):
        class_names = np.array(["False", "True"])  # a boolean's own names, as a CSV's True/False column gives

    # Every check of the training part comes before those of x_test/y_test, pictures before all:
    # a file with several problems is told the first of them, the same one every time.
    x_key, y_key = ("x_train", "y_train") if x_test is not None else ("x", "y")
    if preprocessing is not None:
        x = _npz_pictures(x, x_key, path, preprocessing, scoring)
        x_test = x_test if x_test is None else _npz_pictures(x_test, "x_test", path, preprocessing, scoring)
    x, y = _npz_features(x, x_key, path), _npz_targets(y, y_key, path, task, model_task)
    if len(x) != len(y):
        raise DatasetError(f"{path}: {len(x)} feature rows but {len(y)} targets")
    if x_test is None:
        train, test, split = _test_split(x, test_fraction, seed, path.name)
        x, y, x_test, y_test = x[train], y[train], x[test], y[test]
    else:
        x_test, y_test = _npz_test_part(x_test, y_test, x.shape[1], path, task, model_task)

    labels, labels_are_indices = None, False
    if task == "classification":
        labels_are_indices = y.dtype.kind != "U" and class_names is None
        labels, y, y_test = _npz_classes(y, y_test, class_names, path, model_task)
    return Dataset(name=path.stem, task=task, x_train=x, y_train=y, x_test=x_test, y_test=y_test,
                   labels=labels, labels_are_indices=labels_are_indices,
                   target="y" if task == "regression" else None, files={path.name: sha256_file(path)}, split=split,
                   input_kind="vector" if preprocessing is None else "image", preprocessing=preprocessing)


def _npz_task(task: str | None, y: np.ndarray, has_labels: bool, path: Path, model_task: str | None = None) -> str:
    """The task of an npz whose training targets are ``y``: ``task`` if given, else classification for whole
    numbers, booleans and names, or for any y whose classes a labels array names (``has_labels``); regression for
    other floats. A labels array with a regression target, which has no classes, is refused; scoring a
    regression model (``model_task``), only dropping the array helps."""
    if task == "regression" and has_labels:
        fix = "drop the labels array to score it" if model_task == "regression" else \
            "train with --task classification, or drop the labels array"
        raise DatasetError(f"{path}: a labels array names classes, and a regression target has none: {fix}")
    if task is not None:
        return task
    return "classification" if y.dtype.kind in "biuUS" or has_labels else "regression"


def _read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at ``path`` by name, read without pickle; a missing, damaged or
    foreign file, or a member that is no .npy of numbers or strings, is a ``DatasetError``."""
    try:
        with open(path, "rb") as file:
            is_zip = npz_problem(file) is None
            empty = not is_zip and _is_empty_zip(file)
            file.seek(0)
            head = file.read(TEXT_SAMPLE_BYTES)
    except OSError as exc:
        raise DatasetError(unreadable(path, exc, "npz file", "--data-path")) from exc
    if empty:  # numpy.savez(path) with no arrays writes a zip of no members, which begins with no member's header
        raise DatasetError(f"{path}: holds no arrays: expected {NPZ_ARRAYS}; save them with numpy.savez(path, "
                           "x_train=..., y_train=..., ...)")
    if not is_zip:
        what = (": it reads as text, as a csv does: use --dataset csv (with --target and --task)" if _is_text(head)
                else ", or a truncated one")
        raise DatasetError(f"{path}: cannot read as .npz: not an .npz archive (a zip of .npy arrays){what}")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                    if not isinstance(arrays[key], np.ndarray):  # numpy hands a member that is no .npy as bytes
                        raise DatasetError(f"{path}: the member {key!r} is not a .npy array: an .npz holds arrays "
                                           "saved with numpy.savez")
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise DatasetError(f"{path}: array {key!r} holds Python objects (pickle); refused: "
                                           "store numbers (and labels as a string array)") from exc
                    raise
    except DatasetError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy raise several types for a damaged archive
        raise DatasetError(f"{path}: cannot read as .npz: damaged archive ({type(exc).__name__}: {exc})") from exc
    return arrays


TEXT_SAMPLE_BYTES = 4096  # the first bytes of a file that tell text (a csv given as an npz) from binary data


def _is_text(head: bytes) -> bool:
    """Whether ``head``, a file's first bytes, is UTF-8 text, as a csv is: no NUL byte, and nothing that is not
    UTF-8 but a character ``head`` cut in two at its end."""
    if b"\0" in head or not head.strip():
        return False
    try:
        head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _is_empty_zip(file) -> bool:
    """Whether ``file`` (open, at any place) is a whole zip archive of no members."""
    file.seek(0)
    try:
        with zipfile.ZipFile(file) as archive:
            return not archive.infolist()
    except (zipfile.BadZipFile, ValueError):
        return False


def _npz_parts(arrays: dict[str, np.ndarray], path: Path
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, str | None]:
    """(x, y, x_test, y_test, split) as stored: the test arrays and split are None where the file
    holds only x and y, and its test rows are still to be drawn."""
    split_keys = sorted({"x_train", "y_train", "x_test", "y_test"} & arrays.keys())
    if {"x", "y"} <= arrays.keys() and split_keys:  # which set would be trained and tested on is a guess
        rename = "" if {"x_train", "y_train"} & arrays.keys() else (
            " (rename x and y to x_train and y_train to test on x_test and y_test)")
        raise DatasetError(f"{path}: holds x and y and also {', '.join(split_keys)}: an npz holds x and y, from "
                           f"which the test rows are drawn, or x_train, y_train, x_test and y_test; keep one "
                           f"set{rename}")
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x, y, x_test, y_test = (arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        return x, y, x_test, y_test, f"x_test/y_test of {path.name}"
    if {"x", "y"} <= arrays.keys():
        return arrays["x"], arrays["y"], None, None, None
    raise DatasetError(f"{path}: expected {NPZ_ARRAYS}; found {', '.join(sorted(arrays)) or 'none'}")


def _npz_features(a: np.ndarray, key: str, path: Path) -> np.ndarray:
    """The npz array ``key`` as features, of shape (n, n_features): finite numbers within float32's
    range, at least one row and one feature; more than 2 dimensions are flattened."""
    if a.dtype.kind not in "biuf":  # booleans are 0/1 features (pandas' get_dummies writes them)
        raise DatasetError(f"{path}: {key} has dtype {a.dtype}, expected numbers")
    if a.ndim == 0:
        raise DatasetError(f"{path}: {key} holds a single value (shape ()); expected one row per example, "
                           "of shape (n, n_features)")
    if len(a) == 0:
        raise DatasetError(f"{path}: {key} holds no rows: a model needs examples to train on and to be "
                           "scored on")
    if a.size == 0:
        raise DatasetError(f"{path}: {key} has no features (shape {a.shape}): each row needs at least one value")
    _check_finite(a, key, path, "every feature needs one; fill in the missing values or drop those rows")
    _check_float32_range(a, key, path)
    a = a.reshape(len(a), -1) if a.ndim != 2 else a
    _refuse_erased_columns(a, [f"{key}[:, {i}]" for i in range(a.shape[1])], path)
    return a


ROUNDING_NOISE = 1e-12  # a relative spread below this is float64 arithmetic's, far below float32's step (6e-8)


def _refuse_erased_columns(x: np.ndarray, names: list[str], source) -> None:
    """Refuse a column (of ``x`` (n, d), named by ``names``) whose values differ in the file but that
    float32, in which the network computes, holds as one value (1e9 + t, t a few seconds): training would lose
    it without a word, as the coarse columns' note (train.coarse_columns) cannot tell it from a constant one."""
    if x.dtype in (np.float32, np.float16) or (x.dtype.kind in "biu" and x.dtype.itemsize <= 2):
        return  # held exactly
    if x.size == 0:
        return  # nothing to erase: the caller refuses an empty array, naming the count that does not match
    low, high = x.min(axis=0), x.max(axis=0)
    # Differences float64's own rounding makes (0.30000000000000004 beside 0.3) leave a column constant.
    spread = (high - low) > ROUNDING_NOISE * np.maximum(np.abs(low), np.abs(high))
    erased = spread & (low.astype(np.float32) == high.astype(np.float32))
    if erased.any():
        i = int(np.argmax(erased))
        raise DatasetError(f"{source}: {names[i]} varies from {low[i]:.12g} to {high[i]:.12g}, but float32, in which "
                           f"the network computes, holds every one of its values as {np.float32(low[i]):.10g}: "
                           "subtract an offset (its mean, say) or rescale it in the data first")


def _check_float32_range(a: np.ndarray, key: str, path: Path) -> None:
    """Refuse a value of the npz array ``key`` beyond float32's range, naming it by its index in the file (the
    rows are drawn into the splits later, which renumbers them). Only wider floats reach that far."""
    if a.dtype.kind != "f" or a.dtype.itemsize <= 4:
        return
    beyond = np.abs(a) > FLOAT32_MAX
    if beyond.any():
        where = _first(beyond)
        raise DatasetError(f"{path}: {key}[{', '.join(map(str, where))}] is {a[where]:.4g}, beyond float32's range "
                           f"(±{FLOAT32_MAX:.3g}), in which the network computes: scale the data down, or drop "
                           "that row")


def _check_finite(a: np.ndarray, key: str, path: Path, missing_advice: str) -> None:
    """Refuse a NaN (a missing value: ``missing_advice`` says what to do) or an infinity in the npz array ``key``,
    naming the first by its index in the file, as ``_check_float32_range`` does."""
    if a.dtype.kind != "f":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        where = _first(bad)
        place = f"{path}: {key}[{', '.join(map(str, where))}]"
        if np.isnan(a[where]):
            raise DatasetError(f"{place} is NaN, a missing value: {missing_advice}")
        raise DatasetError(f"{place} is {a[where]}, not finite: replace it with a finite number or drop that row")


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """The index of ``mask``'s first True, in the order the array is stored."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _npz_pictures(a: np.ndarray, key: str, path: Path, preprocessing: dict, scoring: bool = False) -> np.ndarray:
    """The pictures in the npz array ``key``, (n, height, width[, channels]), made into what the
    service makes of each (``preprocessing``): one row of features a picture. ``scoring``: see ``load_npz``."""
    if a.dtype.kind not in "uif" or not (a.ndim == 3 or (a.ndim == 4 and 1 <= a.shape[3] <= 4)):
        whose = "an image model" if scoring else "--image"
        raise DatasetError(f"{path}: {key} has shape {a.shape} ({a.dtype}); pictures for {whose} are numbers of "
                           "shape (n, height, width), or (n, height, width, channels) with 1 to 4 channels")
    try:
        return arrays_to_batch(list(a), preprocessing, item_name=f"{key}[{{}}]")
    except ScratchnetError as e:
        way_out = ("remove it from the file to score the others" if scoring
                   else "remove it, or train on the raw values without --image")
        raise DatasetError(f"{path}: {e.message.rstrip('.')}; every picture must be one the service would "
                           f"take: {way_out}") from None


def _npz_targets(a: np.ndarray, key: str, path: Path, task: str, model_task: str | None = None) -> np.ndarray:
    """The npz array ``key`` as targets of shape (n,): finite numbers (class indices for
    classification), or class names as a str array."""
    a = a.reshape(-1) if a.ndim == 2 and a.shape[1] == 1 else a
    if a.ndim != 1:
        one_hot = a.ndim == 2 and a.dtype.kind in "biuf" and np.isin(a, (0, 1)).all() and (a.sum(axis=1) == 1).all()
        raise DatasetError(f"{path}: {key} must hold one target per row (shape (n,)), got shape {a.shape}" +
                           (f": its rows are one-hot, so store the class indices, {key}.argmax(axis=1)"
                            if one_hot else ""))
    if a.dtype.kind in "US":
        if task == "regression":
            raise DatasetError(f"{path}: {key} holds text ({a.dtype}); a regression target must be numbers")
        return _text(a, key, path)  # class names: numbered with the other part's in _npz_classes
    a = a.astype(np.int64) if a.dtype.kind == "b" else a
    if a.dtype.kind not in "iuf":
        raise DatasetError(f"{path}: {key} has dtype {a.dtype}; expected numbers, or class names as strings")
    _check_finite(a, key, path, "every row needs a target; fill in the missing targets or drop those rows")
    _check_float32_range(a, key, path)
    if task == "regression":
        _refuse_erased_columns(a.reshape(-1, 1), [key], path)
    if task == "classification":  # floats too, which a labels array makes classes (0.0, 1.0)
        not_index = (a < 0) | (a != np.round(a))
        if not_index.any():
            i = int(np.argmax(not_index))
            way = _quantity_way_out(f"store those, or train with --task regression, without a labels array, to "
                                    f"predict {key} as a quantity", model_task)
            raise DatasetError(f"{path}: {key}[{i}] is {a[i]:g}, not a class index: classification takes class "
                               f"indices 0, 1, 2, ... (or class names) in {key}; {way}")
    return a


def _text(a: np.ndarray, key: str, path: Path) -> np.ndarray:
    """The str or bytes (ASCII) array ``key`` of an npz as a str array."""
    try:
        return a.astype(str)
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: {key} holds bytes that are not ASCII text: store the class names "
                           "as a str array") from None


def _npz_test_part(x_test: np.ndarray, y_test: np.ndarray, n_features: int, path: Path, task: str,
                   model_task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The npz's own x_test and y_test, checked as the training part is, and against its width."""
    x_test, y_test = _npz_features(x_test, "x_test", path), _npz_targets(y_test, "y_test", path, task, model_task)
    if len(x_test) != len(y_test):
        raise DatasetError(f"{path}: {len(x_test)} test feature rows but {len(y_test)} test targets")
    if x_test.shape[1] != n_features:
        raise DatasetError(f"{path}: x_train has {n_features} features, x_test has {x_test.shape[1]}")
    return x_test, y_test


def _npz_classes(y: np.ndarray, y_test: np.ndarray, labels: np.ndarray | None, path: Path,
                 model_task: str | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(class names, y, y_test as class indices) of a classification npz. Targets that are names
    are numbered as a CSV's target column is (sorted); targets that are indices are named by the
    npz's ``labels`` array, or by their numbers where it has none."""
    named = y.dtype.kind == "U"
    if named != (y_test.dtype.kind == "U"):
        raise DatasetError(f"{path}: one of y_train and y_test holds class names, the other class indices: "
                           "give both the same way")
    if named:
        if labels is not None:
            raise DatasetError(f"{path}: y holds class names and a labels array names the classes too: keep "
                               "one (the names in y, or class indices 0, 1, ... in y with labels)")
        names = [[str(v).strip() for v in part] for part in (y, y_test)]
        if any(not v for part in names for v in part):
            raise DatasetError(f"{path}: y holds an empty class name")
        class_names, (y, y_test) = _class_indices(names, path, model_task=model_task)
        return class_names, y, y_test
    n_classes = int(np.concatenate([y, y_test]).max()) + 1
    if n_classes > MAX_CLASSES:
        way = _quantity_way_out("if the target is a quantity, train with --task regression", model_task)
        raise DatasetError(f"{path}: the targets hold class index {n_classes - 1}, but a classifier here has "
                           f"at most {MAX_CLASSES} classes (indices 0 to {MAX_CLASSES - 1}); {way}")
    if labels is None:
        return [str(i) for i in range(n_classes)], y, y_test
    class_names = _class_names(labels, path)
    if len(class_names) < n_classes:
        named = f"{len(class_names)} class{'' if len(class_names) == 1 else 'es'}"
        raise DatasetError(f"{path}: labels names {named}, but the targets go up to class index {n_classes - 1}: "
                           f"give labels one name for each class index, 0 to {n_classes - 1}, in their order")
    return class_names, y, y_test


def _class_names(labels: np.ndarray, path: Path) -> list[str]:
    """An npz's ``labels`` array as the class names: one dimension, each name given once and not empty."""
    if labels.ndim != 1:
        raise DatasetError(f"{path}: labels has shape {labels.shape}; expected one name per class, shape (n_classes,)")
    names = _text(labels, "labels", path).tolist()
    if empty := [i for i, name in enumerate(names) if not name.strip()]:
        raise DatasetError(f"{path}: labels holds an empty class name (index {empty[0]})")
    if twice := repeated(names):
        raise DatasetError(f"{path}: labels names the class{'es' if len(twice) > 1 else ''} {', '.join(twice)} "
                           "more than once: give each class one name")
    return names


def _read_csv_file(path: Path, target: str | None, task: str, model_task: str | None = None
                   ) -> tuple[list[str], np.ndarray, list]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(unreadable(path, exc, "csv file", "--data-path")) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if data.startswith(b"PK\x03\x04"):
            raise DatasetError(f"{path}: cannot read as UTF-8 text: {exc} (it is a zip archive, as an .npz is: use "
                               "--dataset npz)") from exc
        undecoded = exc.object  # the bytes after a BOM, to which exc.start points
        line = undecoded.count(b"\n", 0, exc.start) + 1
        raise DatasetError(f"{path}, line {line}: cannot read as UTF-8 text: byte 0x{undecoded[exc.start]:02x} is not "
                           "UTF-8 (a spreadsheet saves its own code page, Windows-1252 say, or UTF-16 unless told "
                           "otherwise): save the file as UTF-8 ('CSV UTF-8' in Excel)") from exc
    header, rows = _parse_csv_text(text, path)
    if target is None:  # read first, to name the columns to choose from
        columns = "" if any(_is_number(h) for h in header) else f"; the columns are: {', '.join(header)}"
        raise DatasetError(f"{path}: name the column to predict (--target){columns}")
    return _numeric_table(header, rows, path, target, task, model_task)


def _parse_csv_text(text: str, source) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows of CSV text; the delimiter is , ; or tab."""
    if "\r" in text and "\n" not in text:  # a classic Mac spreadsheet's line ends
        text = text.replace("\r", "\n")
    # Excel writes, and reads, a first line "sep=;" naming the delimiter: it is no header.
    sep_line = SEP_LINE.match(text)
    delimiter = sep_line[1] if sep_line else _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    end = 0  # the line the record before ended on
    try:
        for fields in _within_field_limit(reader, len(text)):
            start, end = end + 1, reader.line_num
            if not fields or all(not f.strip() for f in fields) or (sep_line and start == 1):
                continue
            if header is None:
                header, header_line = [f.strip() for f in fields], start
                continue
            if len(fields) != len(header):
                if len(fields) < len(header) and any("\n" in f for f in fields):  # a quote left open: one field
                    raise DatasetError(f"{source}, line {start}: a quoted field opened on this line runs on to line "
                                       f"{end}, taking the lines between into one field: close its quote")
                raise DatasetError(f"{source}, line {reader.line_num}: {len(fields)} fields, but the header has "
                                   f"{len(header)}{_ragged_hint(fields, header, header_line, delimiter)}")
            rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise DatasetError(f"{source}, line {reader.line_num}: malformed CSV: {exc}") from exc
    if header is None:
        raise DatasetError(f"{source}: empty file: a header row naming the columns is required")
    if all(_is_number(h) for h in header):
        raise DatasetError(f"{source}: the first row holds only numbers: a header row naming the columns is required")
    if "" in header:
        column = header.index("") + 1
        raise DatasetError(f"{source}, line {header_line}: column {column} of the header has no name: name it, or drop "
                           "the column (a delimiter at the end of every line makes an empty last column, and pandas' "
                           "to_csv writes the row index as a first column without a name unless given index=False)")
    if duplicates := repeated(header):
        raise DatasetError(f"{source}: duplicate column names in the header: {', '.join(duplicates)}")
    if not rows:
        raise DatasetError(f"{source}: no data rows after the header")
    return header, rows


def _ragged_hint(fields: list[str], header: list[str], header_line: int, delimiter: str) -> str:
    """What a row of ``fields`` not matching the ``header`` most likely means, to add to the message."""
    if len(fields) == len(header) + 1 and not fields[-1].strip():
        return (": its last field is empty, after a delimiter ending the line: remove the delimiter at the end of "
                "the lines")
    if len(header) == 1:
        name = {"\t": "tab"}.get(delimiter, repr(delimiter))
        return (f", line {header_line}, {shortened(header[0], 80)!r}, which holds no {name}: the first line that is "
                "not blank is the header naming the columns: remove the lines above it")
    return ""


def _within_field_limit(reader, size: int):
    """``reader``'s rows, with the csv module's limit on a field's length (128 KiB, which the
    whole line of a wide file is, read with another delimiter) raised to ``size``, the text's."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, size))
    try:
        yield from reader
    finally:
        csv.field_size_limit(limit)


def _sniff_delimiter(text: str) -> str:
    """The one of , ; tab that splits most of the first lines into the same number (>1) of fields, the most
    fields where several do: a line above the header (a title) or a ragged row, reported later, does not decide."""
    sample = [line for line in text.splitlines()[:20] if line.strip()]
    best, best_key = ",", (0, 1)  # (lines, fields)
    for delimiter in (",", ";", "\t"):
        counts = Counter(len(fields) for fields in _within_field_limit(csv.reader(sample, delimiter=delimiter),
                                                                        len(text)))
        fields, lines = max(counts.items(), key=lambda item: (item[1], item[0]), default=(1, 0))
        if fields > 1 and (lines, fields) > best_key:
            best, best_key = delimiter, (lines, fields)
    if best_key[1] == 1 and sample:  # no delimiter splits the lines: go by the header; ragged rows are reported later
        best = max((",", ";", "\t"), key=lambda d: sample[0].count(d))
    return best


def _numeric_table(header, rows, source, target: str, task: str, model_task: str | None = None
                   ) -> tuple[list[str], np.ndarray, list]:
    """(feature names, features (n, d) float32, target values): floats, or strings for classification.
    ``model_task``: see ``load_dataset``."""
    if target not in header:
        raise _absent_target_error(header, source, target)
    t = header.index(target)
    feature_names = [h for i, h in enumerate(header) if i != t]
    if not feature_names:
        raise DatasetError(f"{source}: no feature columns besides the target {target!r}")
    x = _feature_matrix(rows, [fields[:t] + fields[t + 1:] for _, fields in rows], feature_names, source)
    y = [fields[t].strip() for _, fields in rows]
    if task == "regression":
        y = _regression_targets(rows, y, source, target)
    else:
        _check_classes(rows, y, source, target, model_task)
    _refuse_erased_columns(x, [f"column {name!r}" for name in feature_names], source)
    return feature_names, x.astype(np.float32), y


def _absent_target_error(header: list[str], source, target: str) -> DatasetError:
    """The error for a ``target`` that names none of the ``header``'s columns, with what the header does name."""
    if len(header) == 1 and any(c in header[0] for c in " |"):  # fields separated by spaces or '|', read as one
        return DatasetError(f"{source}: no column named {target!r}; the file reads as one column, "
                            f"{shortened(header[0], 80)!r}, as its header holds no ',' ';' or tab: separate the "
                            "fields with one of those")
    headerless = any(_is_number(h) for h in header)  # the names read off a first row of data
    meant = "" if headerless else did_you_mean(target, header)
    if headerless:
        way_out = (": names read off the first row, which holds numbers; if it is data, add a header row naming "
                   "the columns above it")
    else:  # a typo is named by did_you_mean; a target the file lacks needs one it holds, or a file that holds it
        way_out = "" if meant else ": name the column that holds the values to predict (--target)"
    return DatasetError(f"{source}: no column named {target!r}{meant}; the columns are: {', '.join(header)}{way_out}")


def _feature_matrix(rows, cells: list[list[str]], feature_names: list[str], source) -> np.ndarray:
    """The feature ``cells`` of ``rows`` as a float64 matrix, refusing the first cell that is not a float32 number."""
    x = None
    # NumPy reads each cell as float() does, which also takes '1_2' and the digits of other scripts
    # ('١٢', '１２') as 12: text holding either is read cell by cell below, which names the cell.
    text = "".join(map("".join, cells))
    if text.isascii() and "_" not in text:
        try:
            x = np.array(cells, dtype=np.float64)
        except ValueError:
            pass
    if x is None or not (np.abs(x) <= FLOAT32_MAX).all():  # NaN, infinite, or beyond float32
        for (line, fields), row in zip(rows, cells):
            for name, cell in zip(feature_names, row):
                _check_feature_cell(f"{source}, line {line}, column {name!r}: {cell!r}", cell)
        try:  # every cell is a number: the text was not ASCII for the whitespace around some
            x = np.array(cells, dtype=np.float64)
        except ValueError:
            raise DatasetError(f"{source}: the feature columns could not be read as numbers") from None
    return x


def _check_feature_cell(where: str, cell: str) -> None:
    """Refuse a feature ``cell`` that is not a finite number within float32's range; ``where``: which cell."""
    if _is_missing(cell):
        raise DatasetError(f"{where} is a missing value: every feature needs one; "
                           "fill in the missing values or drop those rows")
    if reading := _comma_reading(cell):
        raise DatasetError(f"{where} {reading}, as the CSV reader reads numbers")
    if _is_python_number(cell) and not _is_number(cell):
        raise DatasetError(f"{where} is not a number as the CSV reader reads numbers: write it with "
                           "the digits 0-9, a point for decimals and no separators (0.5, 1000)")
    if not _is_number(cell):
        raise DatasetError(f"{where} is not a number: every column but the target is a numeric "
                           "feature; encode categories as numbers (one 0/1 column per category) or "
                           "drop the column")
    if not math.isfinite(float(cell)):
        raise DatasetError(f"{where} is not finite: replace it with a finite number or drop the row")
    if abs(float(cell)) > FLOAT32_MAX:
        raise DatasetError(f"{where} is beyond float32's range (±{FLOAT32_MAX:.3g}), in which the network "
                           "computes: scale the column down, or drop the row")


def _regression_targets(rows, y: list[str], source, target: str) -> list[float]:
    """The target column's texts ``y`` as floats, refusing the first that is not a finite float32 number."""
    for (line, _), value in zip(rows, y):
        if not _is_number(value) or not math.isfinite(float(value)):
            where = f"{source}, line {line}, column {target!r}: {value!r}"
            if reading := _comma_reading(value):
                raise DatasetError(f"{where} {reading}, as the CSV reader reads numbers")
            if _is_missing(value):
                raise DatasetError(f"{where} is a missing target: every row needs one; fill in the missing "
                                   "targets or drop those rows")
            hint = "" if _is_python_number(value) else "; class names are trained with --task classification"
            raise DatasetError(f"{where} is not a finite number{hint}")
        if abs(float(value)) > FLOAT32_MAX:
            raise DatasetError(f"{source}, line {line}, column {target!r}: {value!r} is beyond float32's range "
                               f"(±{FLOAT32_MAX:.3g}), in which the network computes: scale the target down")
    values = [float(v) for v in y]
    _refuse_erased_columns(np.array(values).reshape(-1, 1), [f"the target {target!r}"], source)
    return values


def _check_classes(rows, y: list[str], source, target: str, model_task: str | None) -> None:
    """Refuse a missing class, and classes written as numbers that are not whole or one class written two ways."""
    for (line, _), value in zip(rows, y):
        if not value:
            raise DatasetError(f"{source}, line {line}, column {target!r}: the class is missing: every row "
                               "needs one; fill in the missing classes or drop those rows")
        if _is_number(value) and not math.isfinite(float(value)):
            raise DatasetError(f"{source}, line {line}, column {target!r}: {value!r} is a missing or "
                               "infinite value, not a class")
    # Numbers with fractions are a measured quantity: as classes, each distinct value would be
    # one (200 classes from 200 rows), where an npz with the same targets is refused.
    if all(_is_number(value) for value in y):
        spellings = {}  # each class's number -> how and on which line it was first written
        for (line, _), value in zip(rows, y):
            if not float(value).is_integer():
                way = _quantity_way_out("a measured quantity is predicted with --task regression", model_task)
                raise DatasetError(f"{source}, line {line}, column {target!r}: {value!r} is not a whole "
                                   f"number, so not a class: {way}")
            first, first_line = spellings.setdefault(_number_text(float(value)), (value, line))
            if value != first:
                raise DatasetError(f"{source}, line {line}, column {target!r}: {value!r} is the class {first!r} "
                                   f"of line {first_line} written another way: write each class one way")


def _class_indices(parts: list[list[str]], source, files_of_parts: tuple[str, ...] | None = None,
                   model_task: str | None = None) -> tuple[list[str], list[np.ndarray]]:
    """Class names (sorted; numerically if they are all numbers) and each part as indices.
    ``files_of_parts``: the file each part was read from, when they are several."""
    values = sorted({v for part in parts for v in part})
    if len(values) > MAX_CLASSES:  # as an npz's class indices are: a confusion matrix alone would take gigabytes
        raise DatasetError(f"{source}: the target holds {len(values):,} different values, but a classifier here has "
                           f"at most {MAX_CLASSES:,} classes: a target with a value of its own for nearly every row "
                           "(an id) has no classes to learn; "
                           f"{_quantity_way_out('if it is a quantity, train with --task regression', model_task)}")
    if all(_is_number(v) for v in values):
        by_number = {v: float(v) for v in values}
        values = sorted(values, key=by_number.__getitem__)
        canonical = {v: _number_text(by_number[v]) for v in values}
        if len(set(canonical.values())) == len(values):
            labels = [canonical[v] for v in values]
        else:
            twice = set(repeated(canonical.values()))
            same = [v for v in values if canonical[v] in twice]
            spellings = ", ".join(map(repr, same))
            if files_of_parts is not None:  # say which file holds which spelling
                source = ", ".join(files_of_parts)
                holding = {v: " and ".join(f for f, part in zip(files_of_parts, parts) if v in part) for v in same}
                spellings = ", ".join(f"{v!r} (in {holding[v]})" for v in same)
            raise DatasetError(f"{source}: class values {spellings} name the same number in different ways: write "
                               "each class one way")
    else:
        labels = values
    index = {v: i for i, v in enumerate(values)}
    return labels, [np.array([index[v] for v in part], dtype=np.int64) for part in parts]


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


# A number as the CSV reader reads one: ASCII digits, a sign, a point and an exponent, or the words
# for infinity and NaN. Whitespace around it is stripped first, as float() strips it (a no-break
# space from a spreadsheet too).
NUMBER = re.compile(r"[-+]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[-+]?[0-9]+)?|inf|infinity|nan)",
                    re.ASCII | re.IGNORECASE)
DECIMAL_COMMA = re.compile(r"\s*[-+]?[0-9]+,[0-9]+\s*", re.ASCII)  # "0,5": how spreadsheets write 0.5 in many locales
THOUSANDS = re.compile(r"\s*[-+]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?\s*", re.ASCII)  # "1,000", "12,345.6"
SEP_LINE = re.compile(r"sep=([,;\t])[ \t]*\r?(?:\n|$)", re.IGNORECASE)  # Excel's line naming the delimiter
# How spreadsheets, pandas and R write a missing cell.
MISSING_VALUES = {"", "?", "-", "na", "n/a", "nan", "null", "none", "nil", "missing", "#n/a"}


def _is_missing(text: str) -> bool:
    return text.strip().lower() in MISSING_VALUES


def _is_number(text: str) -> bool:
    """ASCII decimal notation, with whitespace around it that float() strips (str.strip() strips
    the separators \x1c-\x1f as well, which float() refuses)."""
    return NUMBER.fullmatch(text.strip()) is not None and _is_python_number(text)


def _is_python_number(text: str) -> bool:
    """Whether float() reads ``text``: also '1_000', and digits of any script ('١٢', '１２')."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _comma_reading(text: str) -> str | None:
    """What a number written with a comma could mean, as a message says it ("is ... : write it ..."),
    or None when ``text`` is no such number. "0,5" has a decimal comma and "12,345,678" thousands
    separators, but "1,000" could be either, 1.000 or 1000: the message names both."""
    decimal, grouped = DECIMAL_COMMA.fullmatch(text), THOUSANDS.fullmatch(text)
    number = text.strip()
    if decimal and grouped:
        return (f"is either {number.replace(',', '.')}, written with a decimal comma, or {number.replace(',', '')}, "
                "written with a thousands separator: write it with a point for decimals and no separator (0.5, 1000)")
    if decimal:
        return "is a number written with a decimal comma: write it with a point (0.5, not 0,5)"
    if grouped:
        return (f"is {number.replace(',', '')} written with thousands separators: write it without them "
                "(1000, not 1,000)")
    return None
