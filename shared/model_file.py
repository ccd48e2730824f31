"""Write, read and validate ``model.npz`` (docs/model-format.md), and build from it the ``Model``
that runs its forward pass (shared.forward).

This is the only code that touches the file format. Loading validates everything before a
``Model`` exists, so a ``Model`` in hand is always servable; a bad file raises one
``ModelFileError`` naming the file and the reason.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import zipfile
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import ModelFileError
from .forward import ACTIVATIONS, Model, input_normalization, output_scaling
from .preprocess import parse_image_spec
from .registry import NotRegularFile, open_regular_file
from .text import read_json, repeated, shortened

FORMAT = "scratchnet.mlp"
FORMAT_VERSION = 1
MANIFEST_KEY = "manifest"
ZIP_HEADER = b"PK\x03\x04"  # a zip's first local file header, where numpy.savez starts
ZIP_DIRECTORY_ENTRY = b"PK\x01\x02"  # the start of each entry of a zip's central directory
MAX_ZIP_ENTRIES = 4096
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a manifest is a few kB of JSON
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
TASKS = ("classification", "regression")
# The end of the advice for a version copied into the wrong folder: `publish` leaves that folder where it is.
REMOVE_COPY = ("remove this folder from the registry (or move it out): the published copy serves, and this "
               "one is listed as failed while it stays")
LAYER_PARAMS = {
    "dense": ("weight", "bias"),
    "batchnorm": ("gamma", "beta", "running_mean", "running_var"),
}


def parameters_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays in sorted name order: name, a zero byte, little-endian float32 bytes."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(np.ascontiguousarray(arrays[name], dtype="<f4"))  # hashed in place, without a copy
    return digest.hexdigest()


def describe_arrays(arrays: dict[str, np.ndarray]) -> dict:
    """The manifest's ``parameters`` entry for these arrays."""
    return {
        "sha256": parameters_sha256(arrays),
        "arrays": {name: {"shape": list(a.shape), "dtype": "float32"} for name, a in sorted(arrays.items())},
    }


def save_model(path: str | os.PathLike, arrays: dict[str, np.ndarray], manifest: dict) -> Path:
    """Write ``arrays`` and ``manifest`` to ``path`` and return it.

    Fills in ``format``, ``format_version`` and ``parameters`` (names, shapes, checksum), then
    loads the written file back so a file that would be refused is never left behind.
    """
    path = Path(path)
    arrays = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}
    if MANIFEST_KEY in arrays:
        raise ValueError(f"a parameter may not be called {MANIFEST_KEY!r}")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest,
                "parameters": describe_arrays(arrays)}
    encoded = np.frombuffer(json.dumps(manifest, indent=1).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays, **{MANIFEST_KEY: encoded})
    try:
        load_model(path)
    except ModelFileError:
        path.unlink(missing_ok=True)
        raise
    return path


def _read_error(e: OSError, path: Path) -> str:
    """Why a model file cannot be read; a refusal names the user, since the usual cause is a file
    that another user owns (a registry written on the host, read in a container)."""
    if e.errno == errno.ENOENT:  # a version folder made by hand, without its file
        return f"the folder holds no {path.name}"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"cannot read the file as uid {os.getuid()} ({e.strerror})"
    return f"cannot read the file ({e.strerror})"


def read_manifest(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict:
    """The manifest alone, validated as JSON but without loading the arrays; a file over
    ``max_bytes`` is refused before it is read, as ``load_model`` refuses it."""
    path = Path(path)
    _check_size(path, max_bytes)
    with _open_npz(path) as npz:
        manifest = _decode_manifest(path, npz)
    _check_sendable(path, manifest)
    return manifest


def _check_size(path: Path, max_bytes: int | None) -> None:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ModelFileError(path, _read_error(e, path)) from None
    if max_bytes is not None and size > max_bytes:
        raise ModelFileError(path, f"the file is {size} bytes, over the limit of {max_bytes}")


def load_model(path: str | os.PathLike, *, expect_name: str | None = None,
               expect_version: int | None = None, max_bytes: int | None = None) -> Model:
    """Load and validate ``path``; ``expect_*`` are the registry folder's name and version."""
    path = Path(path)
    _check_size(path, max_bytes)
    with _open_npz(path) as npz:
        expanded = sum(info.file_size for info in npz.zip.infolist())
        if max_bytes is not None and expanded > max_bytes:
            raise ModelFileError(path, f"the archive expands to {expanded} bytes, over the limit of {max_bytes}")
        manifest = _decode_manifest(path, npz)
        _check_manifest(path, manifest, expect_name, expect_version)
        arrays = _read_arrays(path, npz, manifest)
    layers = _check_layers(path, manifest, arrays)
    _check_sendable(path, manifest)  # last: a field the checks above read is refused with their own reason
    model = Model(manifest=manifest, layers=layers, path=path)
    _check_answers(path, model, arrays)
    return model


def _check_answers(path: Path, model: Model, arrays: dict[str, np.ndarray]) -> None:
    """Refuse a network whose weights, finite but huge, overflow float32 on ordinary inputs: every
    feature at its normalisation mean, or one standard deviation above or below it. Served, such a
    version would replace a working one and answer every request with an error about its input."""
    norm = input_normalization(model.manifest)
    mean, std = (np.broadcast_to(np.asarray(norm[k], dtype=np.float32), (model.input_size,)) for k in ("mean", "std"))
    rows = np.stack([mean, mean + std, mean - std])
    with np.errstate(all="ignore"):
        outputs = model.forward(rows) if model.task == "classification" else model.predict(rows)
    if not np.isfinite(outputs).all():
        largest = max(float(np.abs(a).max(initial=0)) for a in arrays.values())
        raise ModelFileError(path, "the network's output is not finite for an input at the normalisation mean or "
                                   "one standard deviation from it: its weights overflow float32 (the largest is "
                                   f"{largest:.3g})")


def _read_regular_file(path: Path) -> bytes:
    """The bytes of ``path``, which must be a regular file (see ``open_regular_file``)."""
    try:
        with open_regular_file(path) as f:
            return f.read()
    except NotRegularFile as e:
        raise ModelFileError(path, f"not a regular file ({e.kind})") from None
    except OSError as e:
        raise ModelFileError(path, _read_error(e, path)) from None


def npz_problem(file: BinaryIO) -> str | None:
    """Why the file open in ``file`` (at its start) is not an .npz archive NumPy can read as one,
    or None. numpy.load picks its reader by the first bytes, not by what zipfile finds at the end:
    a zip whose header is damaged (or a .npy file holding a zip) would be read as a pickle, refused
    with advice to allow pickles, or returned as a bare array."""
    if file.read(len(ZIP_HEADER)) != ZIP_HEADER:
        return "it does not begin with a zip header: damaged, or another kind of file"
    if not zipfile.is_zipfile(file):
        return "truncated or not a zip file"
    return None


def _open_npz(path: Path):
    raw = _read_regular_file(path)
    problem = npz_problem(io.BytesIO(raw))
    if problem is not None:
        raise ModelFileError(path, f"not an .npz archive ({problem})")
    # zipfile builds an object (~750 bytes) per entry of the archive's directory before anything can
    # be checked: a 100 MB file of a million empty entries would take 750 MB in every worker. Each
    # entry begins with this signature, so counting it bounds them, whatever the end record says.
    if (entries := _count(raw, ZIP_DIRECTORY_ENTRY)) > MAX_ZIP_ENTRIES:
        raise ModelFileError(path, f"the archive has {entries} entries, over the {MAX_ZIP_ENTRIES} a model may have "
                                   "(a few per layer): refused before reading them")
    try:
        npz = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as e:  # numpy raises several types for damaged archives
        raise ModelFileError(path, f"damaged .npz archive ({e})") from None
    # Of two members of one name NumPy reads the last (unzip and other tools the first), and of 'x' and
    # 'x.npy' the first: either way the weights a user inspects could differ from those served.
    if twice := repeated(npz.files):
        npz.close()
        raise ModelFileError(path, f"the archive holds more than one member for the array "
                                   f"{', '.join(map(repr, twice))}, so readers differ on which is the array; "
                                   "write the file again with numpy.savez_compressed (or publish it with the trainer)")
    return npz


def _count(data: bytes, signature: bytes, block: int = 1 << 22) -> int:
    """``data.count(signature)``, a block at a time: one call over a large model's bytes holds the
    GIL for tens of milliseconds, during which a worker's requests wait. Each occurrence is counted
    in the block where it starts."""
    return sum(data.count(signature, start, start + block + len(signature) - 1)
               for start in range(0, len(data), block))


def _check_member(path: Path, npz, key: str, max_bytes: int | None = None) -> None:
    """Read an array's .npy header before NumPy does: NumPy allocates the shape a header declares
    before it reads any data, so a few bytes could claim gigabytes; and a member that is not a
    .npy file would come back as raw bytes. The data must fill the member exactly, and the zip
    reader never returns more than the member's declared size, so memory stays bounded by it."""
    name = key if key in npz.zip.namelist() else key + ".npy"
    info = npz.zip.getinfo(name)
    if max_bytes is not None and info.file_size > max_bytes:
        raise ModelFileError(path, f"array {key!r} expands to {info.file_size} bytes, over the limit of {max_bytes}")
    try:
        with npz.zip.open(info) as member:
            read_header = NPY_HEADERS.get(np.lib.format.read_magic(member))
            if read_header is None:
                raise ValueError("unsupported .npy format version")
            shape, _, dtype = read_header(member)
            offset = member.tell()
    except Exception as e:  # zipfile and numpy raise several types for damaged or foreign data
        raise ModelFileError(path, f"array {key!r} is not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise ModelFileError(path, f"array {key!r} holds Python objects (pickle); refused")
    declared = math.prod(shape) * dtype.itemsize
    if offset + declared != info.file_size:
        raise ModelFileError(path, f"array {key!r} declares shape {list(shape)} ({declared} bytes of data) but "
                                   f"its archive member holds {info.file_size - offset}")


def _load_array(path: Path, npz, key: str, max_bytes: int | None = None) -> np.ndarray:
    _check_member(path, npz, key, max_bytes)
    try:
        return npz[key]
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise ModelFileError(path, f"array {key!r} holds Python objects (pickle); refused") from None
        raise ModelFileError(path, f"array {key!r} cannot be read ({e})") from None
    except Exception as e:  # zlib/zip/format errors in a damaged member
        raise ModelFileError(path, f"array {key!r} is damaged ({type(e).__name__}: {e})") from None


def _decode_manifest(path: Path, npz) -> dict:
    if MANIFEST_KEY not in npz.files:
        raise ModelFileError(path, "no 'manifest' array: not a scratchnet model file")
    raw = _load_array(path, npz, MANIFEST_KEY, MAX_MANIFEST_BYTES)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(path, "the manifest must be a 1-D uint8 array of UTF-8 JSON")
    try:
        manifest = read_json(raw.tobytes().decode("utf-8"))
    except ValueError as e:
        raise ModelFileError(path, f"the manifest is not valid UTF-8 JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(path, "the manifest must be a JSON object")
    return manifest


def _check_sendable(path: Path, manifest: dict) -> None:
    """Refuse a manifest that no JSON response can carry: a string (or key) with a lone surrogate,
    which a ``\\ud800`` escape reads as and UTF-8 cannot encode, would fail every response naming
    it (a label: every prediction); NaN or Infinity (or 1e400, read as infinity), which Python
    reads but JSON lacks, would make ``/models/<name>`` a document browsers refuse. Checked by the
    C encoder, quick on a 16 MB manifest; only a refused one is walked, in Python, to say where."""
    try:
        json.dumps(manifest, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except RecursionError:
        raise ModelFileError(path, "the manifest is nested over about 1000 levels deep") from None
    except ValueError:  # a UnicodeEncodeError too
        raise ModelFileError(path, f"the manifest {_unsendable(manifest)}") from None


def _unsendable(manifest: dict, budget: int = 100_000) -> str:
    """What the manifest holds that JSON cannot carry, and where: the first such value among the
    first ``budget`` (a walk in Python takes seconds over millions), else what such values are."""
    stack = [("manifest", manifest)]
    while stack and budget > 0:
        where, value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if (budget := budget - 1) < 0:
                break
            inner = f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]"
            if not _is_unicode(key):
                inner = f"a key of {where}"  # not the key itself: the message could not be sent either
            if not (_is_unicode(key) and _is_unicode(item)):
                return (f"holds a lone surrogate escape (\\ud800 to \\udfff) in {shortened(inner, 80)}, "
                        "which is not text: write the character itself, or a pair of escapes")
            if isinstance(item, float) and not math.isfinite(item):
                return (f"holds {json.dumps(item)} in {shortened(inner, 80)}, which JSON does not allow (strict "
                        "readers such as a browser's refuse the whole document): write null or a finite number")
            stack.append((inner, item))
    return ("holds NaN, Infinity or a lone surrogate escape (\\ud800 to \\udfff), which JSON responses "
            "cannot carry: write null or a finite number, and characters themselves or pairs of escapes")


def _is_unicode(value) -> bool:
    """False for a string that UTF-8 cannot encode (one holding a lone surrogate); True otherwise."""
    if not isinstance(value, str):
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require(path: Path, manifest: dict, key: str, kind: type | tuple[type, ...]):
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ModelFileError(path, f"manifest field {key!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _check_manifest(path: Path, manifest: dict, expect_name, expect_version) -> None:
    if manifest.get("format") != FORMAT:
        raise ModelFileError(path, f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(path, f"format_version {manifest.get('format_version')!r} is not supported "
                                   f"(this build reads {FORMAT_VERSION})")
    name = _require(path, manifest, "name", str)
    version = _require(path, manifest, "version", int)
    # A version copied in by hand (cp -r, as other model servers take one) under another name or number:
    # the file keeps the ones it was published with, and `publish` is what gives it new ones.
    if expect_name is not None and name != expect_name:
        raise ModelFileError(path, f"manifest names model {name!r} but the file is in the registry folder "
                                   f"{expect_name!r}; to serve it as {expect_name}, publish its folder with "
                                   f"'python -m trainer publish <folder> --name {expect_name}', then {REMOVE_COPY}")
    if expect_version is not None and version != expect_version:
        raise ModelFileError(path, f"manifest says version {version} but the file is in folder {expect_version}; "
                                   "to add a copied version, publish its folder with 'python -m trainer publish "
                                   f"<folder>', which gives it the next number, then {REMOVE_COPY}")
    if manifest.get("task") not in TASKS:
        raise ModelFileError(path, f"task {manifest.get('task')!r} is not one of {', '.join(TASKS)}")
    for key in ("input", "output", "parameters", "training", "metrics"):
        _require(path, manifest, key, dict)
    _require(path, manifest, "layers", list)
    _check_provenance(path, manifest)
    shape = manifest["input"].get("shape")
    if not (isinstance(shape, list) and len(shape) == 1 and _is_int(shape[0]) and shape[0] > 0):
        raise ModelFileError(path, f"input.shape {shape!r} must be a list of one positive integer")
    if manifest["input"].get("kind") not in ("image", "vector"):
        raise ModelFileError(path, "input.kind must be 'image' or 'vector'")
    if manifest["input"]["kind"] == "image":
        if shape[0] != 784:
            raise ModelFileError(path, f"an image model takes 784 inputs (28x28), the manifest says {shape[0]}")
        _check_image_preprocessing(path, manifest["input"].get("preprocessing"), shape[0])
    if manifest["input"].get("dtype") != "float32":
        raise ModelFileError(path, f"input.dtype is {manifest['input'].get('dtype')!r}; the network takes 'float32'")
    # The service names these columns to a client that sends its values by name, and publish compares them.
    names = manifest["input"].get("feature_names")
    if names is not None and not (isinstance(names, list) and len(names) == shape[0]
                                  and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)):
        raise ModelFileError(path, f"input.feature_names must be null or a list of {shape[0]} distinct strings, the "
                                   f"names of the input's columns in order; it is {shortened(json.dumps(names), 80)}")
    # Without them the inputs or outputs would be used unscaled, and every answer silently wrong.
    if not isinstance(manifest["input"].get("normalization"), dict):
        raise ModelFileError(path, "input.normalization must be an object with mean and std "
                                   "([0.0] and [1.0] for inputs the network takes as they are)")
    if manifest["task"] == "regression":
        if not isinstance(manifest["output"].get("scaling"), dict):
            raise ModelFileError(path, "output.scaling of a regression must be an object with the target's mean "
                                       "and std (0.0 and 1.0 for outputs that are the target as it is)")
        if not isinstance(manifest["output"].get("target"), str):
            raise ModelFileError(path, "output.target must name the regression's target")


def _check_provenance(path: Path, manifest: dict) -> None:
    """What the model was made from and how well it did (SPEC §3): when, the training run's config
    and dataset, and the split its metrics were measured on."""
    created = _require(path, manifest, "created_at", str)
    try:
        datetime.fromisoformat(created)
    except ValueError:
        raise ModelFileError(path, f"created_at {shortened(created, 40)!r} is not an ISO 8601 date and time") from None
    training = manifest["training"]
    if not isinstance(training.get("config"), dict):
        raise ModelFileError(path, "training.config must be an object: the trainer's settings")
    dataset = training.get("dataset")
    if not (isinstance(dataset, dict) and isinstance(dataset.get("name"), str)):
        raise ModelFileError(path, "training.dataset must be an object naming the dataset (name)")
    if not isinstance(manifest["metrics"].get("split"), str):
        raise ModelFileError(path, "metrics.split must say which split the metrics were measured on")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_image_preprocessing(path: Path, spec, size: int) -> None:
    """An image model's input.preprocessing must be one the service can apply (shared.preprocess)
    and must produce the model's input size: a bad one would otherwise fail only at request time."""
    try:
        (height, width), _ = parse_image_spec(spec)
    except ValueError as err:
        raise ModelFileError(path, f"input.preprocessing: {err}") from None
    if height * width != size:
        raise ModelFileError(path, f"input.preprocessing.size [{height}, {width}] gives {height * width} inputs; "
                                   f"the model takes {size}")


def _read_arrays(path: Path, npz, manifest: dict) -> dict[str, np.ndarray]:
    declared = manifest["parameters"].get("arrays")
    if not isinstance(declared, dict):
        raise ModelFileError(path, "manifest field parameters.arrays is missing")
    present = set(npz.files) - {MANIFEST_KEY}
    if present != set(declared):
        missing, extra = sorted(set(declared) - present), sorted(present - set(declared))
        raise ModelFileError(path, f"arrays differ from the manifest (missing {missing}, unexpected {extra})")
    arrays = {}
    for name in sorted(present):
        array = _load_array(path, npz, name)
        if array.dtype != np.float32:
            raise ModelFileError(path, f"array {name!r} is {array.dtype}, expected float32")
        if list(array.shape) != declared[name].get("shape"):
            raise ModelFileError(path, f"array {name!r} has shape {list(array.shape)}, "
                                       f"the manifest says {declared[name].get('shape')}")
        if not np.isfinite(array).all():
            raise ModelFileError(path, f"array {name!r} holds NaN or infinite values")
        arrays[name] = np.ascontiguousarray(array)
    checksum = parameters_sha256(arrays)
    if checksum != manifest["parameters"].get("sha256"):
        raise ModelFileError(path, f"parameter checksum mismatch: the manifest says "
                                   f"{manifest['parameters'].get('sha256')}, the arrays hash to {checksum}")
    return arrays


def _check_layers(path: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> list[tuple]:
    """Check the architecture chains and turn it into ``(kind, name, values)`` steps for ``Model``."""
    width = manifest["input"]["shape"][0]
    steps: list[tuple] = []
    used: set[str] = set()
    specs = manifest["layers"]
    for i, spec in enumerate(specs):
        where = f"layer {i}"
        if not isinstance(spec, dict):
            raise ModelFileError(path, f"{where} is not an object")
        kind, name = spec.get("type"), spec.get("name")
        if kind in LAYER_PARAMS:
            keys = [f"{name}.{p}" for p in LAYER_PARAMS[kind]]
            absent = [k for k in keys if k not in arrays]
            if absent:
                raise ModelFileError(path, f"{where} ({kind} {name!r}) has no arrays {absent}")
            used.update(keys)
            values = [arrays[k] for k in keys]
            if kind == "dense":
                steps.append(_dense_step(path, where, spec, values, width))
                width = values[0].shape[1]
            else:
                steps.append(_batchnorm_step(path, where, spec, values, width))
        elif kind == "activation":
            steps.append(_activation_step(path, where, spec, last=i == len(specs) - 1))
        else:
            raise ModelFileError(path, f"{where}: unknown layer type {kind!r} (known: dense, batchnorm, activation)")
    unused = sorted(set(arrays) - used)
    if unused:
        raise ModelFileError(path, f"arrays {unused} belong to no layer")
    _check_output(path, manifest, specs, width)
    return steps


def _dense_step(path: Path, where: str, spec: dict, values: list[np.ndarray], width: int) -> tuple:
    """The step of a dense layer whose ``values`` (weight, bias) take ``width`` features, checked."""
    name = spec.get("name")
    weight, bias = values
    if weight.ndim != 2 or weight.shape[0] != width:
        transposed = weight.ndim == 2 and weight.shape[1] == width
        raise ModelFileError(path, f"{where} ({name}) weight has shape {list(weight.shape)} but "
                                   f"receives {width} features: shapes do not chain" + (
                                       f"; a dense weight is (in, out), [{width}, {weight.shape[0]}] "
                                       "here, and PyTorch's nn.Linear.weight is (out, in): write its "
                                       "transpose (weight.T)" if transposed else ""))
    for key, actual in (("in_features", weight.shape[0]), ("out_features", weight.shape[1])):
        if key in spec and spec[key] != actual:
            raise ModelFileError(path, f"{where} ({name}) says {key} {spec[key]!r} but its weight "
                                       f"has shape {list(weight.shape)}")
    if weight.shape[1] == 0:
        raise ModelFileError(path, f"{where} ({name}) has no units (weight shape {list(weight.shape)}): "
                                   "nothing reaches the layers after it, and every answer would be the "
                                   "same whatever the input")
    if bias.shape != (weight.shape[1],):
        raise ModelFileError(path, f"{where} ({name}) bias has shape {list(bias.shape)}, "
                                   f"expected [{weight.shape[1]}]")
    return "dense", name, (weight, bias)


def _batchnorm_step(path: Path, where: str, spec: dict, values: list[np.ndarray], width: int) -> tuple:
    """The step of a batch norm layer over ``width`` features, checked: in inference mode an affine map."""
    name = spec.get("name")
    if any(v.shape != (width,) for v in values):
        raise ModelFileError(path, f"{where} (batchnorm {name}) arrays must have shape [{width}]")
    eps = spec.get("eps", 1e-5)
    if not _is_finite_number(eps) or eps <= 0:
        raise ModelFileError(path, f"{where} (batchnorm {name}) eps must be a positive number")
    gamma, beta, mean, var = values
    if (var < 0).any():
        raise ModelFileError(path, f"{where} (batchnorm {name}) has a negative running variance")
    # Inference-mode batch norm is an affine map: precompute its scale and shift.
    scale = (gamma / np.sqrt(var + np.float32(eps))).astype(np.float32)
    return "affine", name, (scale, (beta - mean * scale).astype(np.float32))


def _activation_step(path: Path, where: str, spec: dict, last: bool) -> tuple:
    """The step of an activation layer, checked; ``last``: whether it is the network's last layer."""
    name = spec.get("name")
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ModelFileError(path, f"{where}: unknown activation {name!r} "
                                   f"(known: {', '.join(sorted(ACTIVATIONS))})")
    if name == "softmax" and not last:
        raise ModelFileError(path, f"{where}: softmax is allowed only as the last layer")
    alpha = spec.get("alpha", 0.01)
    if not _is_finite_number(alpha) or not 0 <= alpha < 1:
        raise ModelFileError(path, f"{where}: alpha must be a number in [0, 1)")
    function = ACTIVATIONS[name]
    if name == "leaky_relu":
        function = partial(function, alpha=np.float32(alpha))
    return "activation", name, function


def _check_output(path: Path, manifest: dict, specs: list, width: int) -> None:
    ends_in_softmax = bool(specs) and specs[-1].get("type") == "activation" and specs[-1].get("name") == "softmax"
    if manifest["task"] == "classification":
        labels = manifest["output"].get("labels")
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise ModelFileError(path, "output.labels must be a non-empty list of strings")
        if len(labels) < 2:  # the trainer refuses data of one class for the same reason
            raise ModelFileError(path, f"output.labels names one class ({labels[0]!r}); a classifier needs at least "
                                       "2: its softmax would answer that class with probability 1 whatever the input")
        if len(labels) != width:
            raise ModelFileError(path, f"the network has {width} outputs but output.labels names {len(labels)}")
        if twice := repeated(labels):
            raise ModelFileError(path, f"output.labels names a class more than once: {', '.join(map(repr, twice))}")
        if not ends_in_softmax:
            raise ModelFileError(path, "a classification model must end with a softmax activation")
    else:
        if width != 1:
            raise ModelFileError(path, f"a regression model must have 1 output, this one has {width}")
        if ends_in_softmax:
            raise ModelFileError(path, "a regression model cannot end with softmax")
        scaling = output_scaling(manifest)
        if not all(_is_finite_number(scaling.get(k)) for k in ("mean", "std")) or scaling["std"] <= 0:
            raise ModelFileError(path, "output.scaling needs a finite mean and a finite, positive std")
        if np.float32(scaling["std"]) == 0:  # the forward pass scales in float32: every answer would be the mean
            raise ModelFileError(path, f"output.scaling.std {scaling['std']!r} is 0 in float32, which the network "
                                       "computes in: every answer would be the mean")
    norm = input_normalization(manifest)
    size = manifest["input"]["shape"][0]
    for key in ("mean", "std"):
        values = norm.get(key)
        if not (isinstance(values, list) and len(values) in (1, size)
                and all(_is_finite_number(v) for v in values)):
            raise ModelFileError(path, f"input.normalization.{key} must be a list of 1 or {size} finite numbers")
    if any(v <= 0 for v in norm["std"]):
        raise ModelFileError(path, "input.normalization.std must be positive")
