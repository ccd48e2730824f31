"""Hostile model files: what lands in the registry must never run code, never exhaust memory and
never replace a working version.

Each case is a version folder a user, a bug or an attacker could publish: pickled objects that
would run code when unpickled, a truncated file, a wrong checksum, shapes that do not chain, NaN
weights, a manifest that lies about the input size, links leading outside the registry, and
arrays too large to load (a file over the size limit, a header declaring 80 GB, a zip bomb).

First the loader alone: each file is refused with a clear reason, nothing ran, nothing large was
allocated. Then all of them are published, one after another, into the registry of a running
Gunicorn while a client keeps predicting: each version shows ``failed: <reason>`` in
``/models/mnist`` and in the load-failure metric, and the previous version keeps answering every
request.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import pickle
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import requests

from images import encode, paper, synthetic_digit
from modelgen import model_parts, publish_model
from server import ServiceProcess, metric_value
from shared.errors import ModelFileError
from shared.model_file import FORMAT, FORMAT_VERSION, MANIFEST_KEY, describe_arrays, load_model, save_model
from shared.registry import MODEL_FILE, Registry, RegistryError

MAX_MODEL_BYTES = 4 * 1024 * 1024
WORKERS = 3


class RunsCode:
    """Unpickling this creates ``marker``: proof that loading executed code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@dataclass
class Context:
    marker: Path    # must never come to exist
    outside: Path   # a folder outside the registry holding a valid model


def manifest_for(arrays: dict[str, np.ndarray], manifest: dict) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "parameters": describe_arrays(arrays)}


def encoded(manifest: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)


def write_npz(path: Path, members: dict[str, object]) -> None:
    """An .npz whose members are arrays (written as .npy, pickle allowed) or raw bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in members.items():
            if isinstance(value, bytes):
                archive.writestr(name, value)
            else:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=True)
                archive.writestr(name + ".npy", buffer.getvalue())


def consistent(version: int, change: Callable[[dict, dict], None] | None = None, **options) -> dict[str, object]:
    """The members of a valid model file, after ``change(arrays, manifest)``; the manifest's
    parameter list and checksum are computed afterwards, so they agree with the arrays."""
    arrays, manifest = model_parts("mnist", version, **options)
    if change is not None:
        change(arrays, manifest)
    return {**arrays, MANIFEST_KEY: encoded(manifest_for(arrays, manifest))}


def valid_file(path: Path, version: int, **options) -> None:
    arrays, manifest = model_parts("mnist", version, **options)
    save_model(path, arrays, manifest)


# the hostile files -----------------------------------------------------------------------------


def pickled_weights(folder: Path, version: int, ctx: Context) -> None:
    members = consistent(version)
    members["dense1.weight"] = np.array([RunsCode(ctx.marker)], dtype=object)
    write_npz(folder / MODEL_FILE, members)


def pickled_manifest(folder: Path, version: int, ctx: Context) -> None:
    members = consistent(version)
    members[MANIFEST_KEY] = np.array([RunsCode(ctx.marker)], dtype=object)
    write_npz(folder / MODEL_FILE, members)


def raw_pickle_member(folder: Path, version: int, ctx: Context) -> None:
    """A member that is a bare pickle, not a .npy file (NumPy would hand back its bytes)."""
    members = consistent(version)
    members[MANIFEST_KEY] = pickle.dumps(RunsCode(ctx.marker))
    write_npz(folder / MODEL_FILE, members)


def truncated(folder: Path, version: int, ctx: Context) -> None:
    valid_file(folder / MODEL_FILE, version)
    data = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(data[:len(data) * 2 // 3])


def damaged_zip_header(folder: Path, version: int, ctx: Context) -> None:
    """A valid file whose first bytes were overwritten: zipfile still finds the archive by its end,
    but NumPy, which goes by the first bytes, would take it for a pickle."""
    valid_file(folder / MODEL_FILE, version)
    with open(folder / MODEL_FILE, "r+b") as f:
        f.write(b"XXXX")


def npy_holding_an_npz(folder: Path, version: int, ctx: Context) -> None:
    """A .npy file (np.save) whose bytes are a valid model: NumPy would return a bare array."""
    valid_file(ctx.outside / f"inner-{version}.npz", version)
    with open(folder / MODEL_FILE, "wb") as f:
        np.save(f, np.frombuffer((ctx.outside / f"inner-{version}.npz").read_bytes(), dtype=np.uint8))


def wrong_checksum(folder: Path, version: int, ctx: Context) -> None:
    members = consistent(version)
    manifest = json.loads(members[MANIFEST_KEY].tobytes())
    manifest["parameters"]["sha256"] = "0" * 64
    members[MANIFEST_KEY] = encoded(manifest)
    write_npz(folder / MODEL_FILE, members)


def tampered_weights(folder: Path, version: int, ctx: Context) -> None:
    """One weight changed after the checksum was computed (a flipped bit on disk)."""
    members = consistent(version)
    members["dense2.weight"] = members["dense2.weight"].copy()
    members["dense2.weight"][0, 0] += 1
    write_npz(folder / MODEL_FILE, members)


def shapes_do_not_chain(folder: Path, version: int, ctx: Context) -> None:
    def change(arrays, manifest):
        arrays["dense2.weight"] = np.ones((12, 10), np.float32)  # dense1 gives 16 features
    write_npz(folder / MODEL_FILE, consistent(version, change))


def nan_weights(folder: Path, version: int, ctx: Context) -> None:
    def change(arrays, manifest):
        arrays["dense1.weight"][3, 5] = np.nan
    write_npz(folder / MODEL_FILE, consistent(version, change))


def overflowing_weights(folder: Path, version: int, ctx: Context) -> None:
    """Finite weights so large that any input but the exact mean overflows float32: served, this
    version replaced the working one and answered every request 422, blaming the input's scale."""
    def change(arrays, manifest):
        arrays["dense2.weight"] = np.full((16, 10), 3e38, np.float32)
    write_npz(folder / MODEL_FILE, consistent(version, change))


def lying_input_size(folder: Path, version: int, ctx: Context) -> None:
    """The manifest promises 784 inputs; the first layer takes 392."""
    def change(arrays, manifest):
        arrays["dense1.weight"] = arrays["dense1.weight"][:392].copy()
        manifest["layers"][0]["in_features"] = 392
    write_npz(folder / MODEL_FILE, consistent(version, change))


def no_normalization(folder: Path, version: int, ctx: Context) -> None:
    """A consistent file whose manifest lost its input normalisation: loaded, it would answer
    plausible labels from unnormalised inputs, every one of them wrong in scale."""
    def change(arrays, manifest):
        del manifest["input"]["normalization"]
    write_npz(folder / MODEL_FILE, consistent(version, change))


def lone_surrogate_label(folder: Path, version: int, ctx: Context) -> None:
    """A label written as the JSON escape \\ud800 alone: valid JSON, but not text; served, every
    prediction whose answer names it failed with a 500, since no response can encode it."""
    def change(arrays, manifest):
        manifest["output"]["labels"][7] = "\ud800"
    write_npz(folder / MODEL_FILE, consistent(version, change))


def nan_in_manifest(folder: Path, version: int, ctx: Context) -> None:
    """A metric written as NaN, which Python's JSON reads and writes but JSON lacks: served, the
    version's manifest in /models made a document that browsers (the drawing page) refuse."""
    def change(arrays, manifest):
        manifest["metrics"]["accuracy"] = float("nan")
    write_npz(folder / MODEL_FILE, consistent(version, change))


def wrong_name(folder: Path, version: int, ctx: Context) -> None:
    """A valid model of another name copied into this model's folder."""
    arrays, manifest = model_parts("fashion", version)
    save_model(folder / MODEL_FILE, arrays, manifest)


def link_outside(folder: Path, version: int, ctx: Context) -> None:
    """model.npz is a symlink to a (valid) model outside the registry."""
    target = ctx.outside / f"v{version}.npz"
    valid_file(target, version)
    (folder / MODEL_FILE).symlink_to(target)


def over_size_limit(folder: Path, version: int, ctx: Context) -> None:
    """A valid model whose file is larger than SCRATCHNET_MAX_MODEL_BYTES."""
    valid_file(folder / MODEL_FILE, version, hidden=1600)  # 784 x 1600 float32: 5 MB of noise


def declared_huge(folder: Path, version: int, ctx: Context) -> None:
    """A 2 kB file whose .npy header declares a 200,000 x 100,000 float32 weight (80 GB)."""
    members = consistent(version)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (200_000, 100_000)})
    members["dense1.weight"] = header.getvalue() + b"\0" * 1024
    write_npz(folder / MODEL_FILE, {k: v for k, v in members.items() if k != "dense1.weight"})
    with zipfile.ZipFile(folder / MODEL_FILE, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dense1.weight.npy", members["dense1.weight"])


BOMB_VALUES = 64 * 1024 * 1024  # 256 MB of float32 zeros, which deflate to about 250 kB


@functools.cache
def bomb_member() -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (BOMB_VALUES,)})
    return header.getvalue()


def zip_bomb(folder: Path, version: int, ctx: Context) -> None:
    """A small file whose one array really holds 256 MB of zeros, declared consistently."""
    def change(arrays, manifest):
        arrays["dense1.weight"] = np.zeros((784, 16), np.float32)
    members = consistent(version, change)
    del members["dense1.weight"]
    write_npz(folder / MODEL_FILE, members)
    with zipfile.ZipFile(folder / MODEL_FILE, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("dense1.weight.npy", "w", force_zip64=True) as member:
            member.write(bomb_member())
            zeros = bytes(1 << 22)
            for _ in range(BOMB_VALUES * 4 // len(zeros)):
                member.write(zeros)


def many_entries(folder: Path, version: int, ctx: Context) -> None:
    """A valid model with 20,000 empty archive members besides: zipfile makes an object of each
    entry before any check (a million took 750 MB in every worker)."""
    valid_file(folder / MODEL_FILE, version)
    with zipfile.ZipFile(folder / MODEL_FILE, "a") as archive:
        for i in range(20_000):
            archive.writestr(f"a{i}.npy", b"")


@dataclass(frozen=True)
class Hostile:
    name: str
    build: Callable[[Path, int, Context], None]
    reason: str  # in the refusal's reason


HOSTILE = [
    Hostile("pickled weights", pickled_weights, "holds Python objects (pickle); refused"),
    Hostile("pickled manifest", pickled_manifest, "holds Python objects (pickle); refused"),
    Hostile("bare pickle member", raw_pickle_member, "is not a readable .npy array"),
    Hostile("truncated file", truncated, "not an .npz archive"),
    Hostile("damaged zip header", damaged_zip_header, "it does not begin with a zip header"),
    Hostile(".npy file holding a model", npy_holding_an_npz, "it does not begin with a zip header"),
    Hostile("wrong checksum", wrong_checksum, "parameter checksum mismatch"),
    Hostile("weights changed after the checksum", tampered_weights, "parameter checksum mismatch"),
    Hostile("shapes that do not chain", shapes_do_not_chain, "shapes do not chain"),
    Hostile("NaN weights", nan_weights, "holds NaN or infinite values"),
    Hostile("weights that overflow float32", overflowing_weights,
            "its weights overflow float32 (the largest is 3e+38)"),
    Hostile("manifest lies about the input size", lying_input_size, "receives 784 features: shapes do not chain"),
    Hostile("manifest without its input normalisation", no_normalization, "input.normalization must be an object"),
    Hostile("a label that is a lone surrogate", lone_surrogate_label,
            "lone surrogate escape (\\ud800 to \\udfff) in manifest.output.labels[7]"),
    Hostile("NaN in the manifest", nan_in_manifest, "holds NaN in manifest.metrics.accuracy, which JSON does not"),
    Hostile("another model's file", wrong_name, "manifest names model 'fashion'"),
    Hostile("symlink outside the registry", link_outside, "outside the registry"),
    Hostile("file over the size limit", over_size_limit, f"over the limit of {MAX_MODEL_BYTES}"),
    Hostile("header declaring 80 GB", declared_huge, "declares shape [200000, 100000]"),
    Hostile("zip bomb", zip_bomb, "the archive expands to"),
    Hostile("20,000 archive entries", many_entries, "the archive has 20005 entries, over the 4096"),
]


@pytest.fixture
def context(tmp_path) -> Context:
    outside = tmp_path / "outside"
    outside.mkdir()
    return Context(marker=tmp_path / "code-ran", outside=outside)


# the loader alone ----------------------------------------------------------------------------------


@contextlib.contextmanager
def large_reads_refused():
    """NumPy's .npy reader (what ``npz[key]`` calls) made to refuse any array whose header declares
    more than MAX_MODEL_BYTES: such a member is listed in the yielded list instead of being read."""
    read_array = np.lib.format.read_array
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    listed = []

    def guarded(member, *args, **kwargs):
        shape, _, dtype = read_header[np.lib.format.read_magic(member)](member)
        member.seek(0)
        declared = math.prod(shape) * dtype.itemsize
        if declared > MAX_MODEL_BYTES:
            listed.append(f"{member.name}: {declared} bytes")
            raise AssertionError(f"read {member.name} ({declared} bytes)")
        return read_array(member, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np.lib.format, "read_array", guarded)
        yield listed


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
def test_loader_refuses_hostile_file_without_running_code_or_allocating_it(tmp_path, context, hostile):
    registry = Registry(tmp_path / "registry")
    version = registry.publish("mnist", lambda folder, v: hostile.build(folder, v, context))
    with large_reads_refused() as large_reads, pytest.raises((ModelFileError, RegistryError)) as refused:
        path = registry.model_path("mnist", version)  # as the service loads a version
        load_model(path, expect_name="mnist", expect_version=version, max_bytes=MAX_MODEL_BYTES)
    assert large_reads == [], "the loader read an array larger than the file limit"
    assert hostile.reason in str(refused.value)
    assert str(version) in str(refused.value)  # the message names the file
    assert not context.marker.exists(), "loading the file ran code from it"


def test_pickle_payloads_would_run_code_if_unpickled(tmp_path, context):
    """The marker proof above is only meaningful if the payload really runs when unpickled."""
    members = consistent(1)
    members["dense1.weight"] = np.array([RunsCode(context.marker)], dtype=object)
    write_npz(tmp_path / "model.npz", members)
    with np.load(tmp_path / "model.npz", allow_pickle=True) as npz:
        npz["dense1.weight"]
    assert context.marker.exists()


# a running service ------------------------------------------------------------------------------------


class PredictLoop:
    """Predict without pause on a thread; remember every status and every answering version."""

    def __init__(self, url: str):
        self.url = url
        self.image = encode(paper(synthetic_digit(1)), "PNG")
        self.statuses: dict[int, int] = {}
        self.versions: set[str] = set()
        self.failures: list[str] = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PredictLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def wait_for_answers(self, count: int, timeout: float = 20) -> None:
        """Wait until ``count`` requests in all have been answered."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            assert time.monotonic() < deadline, f"{self.count} of {count} requests answered:\n{self.failures[-3:]}"
            time.sleep(0.01)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    response = session.post(self.url + "/models/mnist/predict", data=self.image,
                                            headers={"Content-Type": "image/png"}, timeout=30)
                except requests.RequestException as e:
                    self.failures.append(repr(e))
                    continue
                self.count += 1
                self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
                self.versions.add(response.headers.get("X-Model-Version", "?"))
                if response.status_code != 200:
                    self.failures.append(response.text[:300])


def version_status(server: ServiceProcess, version: int) -> str:
    info = requests.get(server.url + "/models/mnist", timeout=10).json()
    return next((v["status"] for v in info["versions"] if v["version"] == version), "absent")


def wait_until_every_worker_refused(server: ServiceProcess, version: int, timeout: float = 20) -> None:
    """Each worker counts its own failed load: WORKERS of them means every worker has refused it."""
    deadline = time.monotonic() + timeout
    while metric_value(server.metrics(), "scratchnet_model_load_failures_total", model="mnist",
                       version=version) < WORKERS:
        assert time.monotonic() < deadline, f"not every worker tried v{version}:\n{server.log()[-3000:]}"
        time.sleep(0.05)


@pytest.mark.slow
def test_hostile_versions_are_refused_while_the_previous_one_keeps_serving(tmp_path, context):
    root = tmp_path / "registry"
    publish_model(root, "mnist", seed=5)
    env = {"SCRATCHNET_MAX_MODEL_BYTES": str(MAX_MODEL_BYTES)}
    registry = Registry(root)
    with ServiceProcess(root, workers=WORKERS, poll_interval=0.2, env=env) as server:
        with PredictLoop(server.url) as loop:
            loop.wait_for_answers(10)
            for hostile in HOSTILE:
                version = registry.publish("mnist", lambda folder, v: hostile.build(folder, v, context))
                wait_until_every_worker_refused(server, version)
                status = version_status(server, version)
                assert status.startswith("failed: ") and hostile.reason in status, (hostile.name, status)
                assert set(server.served_versions("mnist").values()) == {1}
                loop.wait_for_answers(loop.count + 10)  # requests go on being answered after the refusal
            # a version directory that is itself a link to a folder outside the registry
            link = root / "mnist" / str(version + 1)
            link.symlink_to(context.outside)
            valid_file(context.outside / MODEL_FILE, version + 1)
            wait_until_every_worker_refused(server, version + 1)
            assert "outside the registry" in version_status(server, version + 1)
            # and a good version after all that is served by every worker
            good = publish_model(root, "mnist", seed=6)
            server.wait_until_served("mnist", good)
            loop.wait_for_answers(loop.count + 10)
        metrics = server.metrics()
    assert loop.failures == [], loop.failures[:5]
    assert loop.statuses == {200: loop.count}
    assert loop.versions == {"1", str(good)}
    assert not context.marker.exists()
    assert metric_value(metrics, "scratchnet_model_version_failed", model="mnist", version=3) == 1
    # The 80 GB header and the 256 MB bomb were refused by the checks made before any array is
    # read (their reasons above say so); that those checks read nothing large is
    # test_loader_refuses_hostile_file_without_running_code_or_allocating_it.
