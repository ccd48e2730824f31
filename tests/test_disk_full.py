"""A disk that is full, or fills up, under the trainer, the download cache and the service.

Each test gets a small tmpfs of its own: a real file system that answers ENOSPC. Mounting one
needs root (as the tests run in CI and in the Docker-less container); elsewhere the tests skip
and say why, unless ``CI`` is set.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from modelgen import model_parts, publish_model
from server import ServiceProcess
from service.app import create_app
from shared.model_file import load_model, save_model
from shared.registry import MODEL_FILE, TMP_PREFIX, Registry, RegistryError
from skips import unavailable
from test_download import PAYLOAD, PAYLOAD_SHA, FileServer
from trainer import cli, train
from trainer.download import DownloadError, fetch

TOKEN = "disk-full-admin"


@pytest.fixture
def disk(tmp_path):
    """A 4 MiB file system of its own, mounted at ``tmp_path / "disk"``."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True).returncode == 0
    if not mounted:
        unavailable("mounting a small tmpfs needs root (and a container allowed to mount)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk, leave: int = 0) -> None:
    """Take all the free space of ``disk`` but ``leave`` bytes."""
    with open(disk / "filler", "ab", buffering=0) as f:
        try:
            os.posix_fallocate(f.fileno(), f.tell(), shutil.disk_usage(disk).free - leave)
            while not leave:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    if not leave:
        assert shutil.disk_usage(disk).free < 4096


def leftovers(folder) -> list[str]:
    """What a failed write left in a model's folder: temporary files and folders (a version's, or
    serving.json's and .highest_version's before their rename)."""
    return [name for name in os.listdir(folder) if name.startswith(TMP_PREFIX)]


def write_csv(path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    # The columns named as publish_model names a model's: its versions and this csv's runs are one interface.
    rows = ["x0,x1,x2,x3,y"] + [",".join(f"{v:.4f}" for v in (*row, row @ [1, -2, 0.5, 3])) for row in x]
    path.write_text("\n".join(rows) + "\n")


def train_args(tmp_path, *where) -> list[str]:
    data = tmp_path / "data.csv"
    write_csv(data)
    return ["train", "--dataset", "csv", "--data-path", str(data), "--target", "y", "--task", "regression",
            "--name", "lines", "--hidden", "16", "--epochs", "3", "--no-progress", *map(str, where)]


def config(tmp_path) -> train.TrainConfig:
    data = tmp_path / "data.csv"
    write_csv(data)
    return train.TrainConfig(dataset="csv", data_path=str(data), target="y", task="regression", name="lines",
                             hidden=[16], epochs=3, progress=False)


def test_training_does_not_start_when_the_disk_has_no_room_for_the_model(disk, tmp_path, capsys):
    registry = disk / "models"
    publish_model(registry, "lines", kind="regression", input_size=4)  # the csv's 4 columns
    fill(disk)
    for where in (["--publish", "--registry", registry], ["--output", disk / "run"]):
        assert cli.main(train_args(tmp_path, *where)) == 2
        err = capsys.readouterr().err
        assert "MB free" in err and "free some space before training" in err, err
        assert "epoch 1/" not in capsys.readouterr().out  # refused before the training, not after
    assert Registry(registry).versions("lines") == [1] and leftovers(registry / "lines") == []
    assert not (disk / "run").exists()


def test_a_disk_that_fills_during_the_training_loses_nothing_and_says_so(disk, tmp_path):
    registry = disk / "models"
    publish_model(registry, "lines", kind="regression", input_size=4)
    output = disk / "run"
    output.mkdir()
    (output / "model.npz").write_bytes(b"an earlier run's model")

    def log(line: str) -> None:  # the disk fills while the network trains
        if line.startswith("epoch 1/"):
            fill(disk)

    with pytest.raises(RegistryError, match=r"cannot publish lines v2 into .*: No space left on device; "
                                            r"nothing was published; the trained model is kept in ") as raised:
        train.run(config(tmp_path), publish_to=str(registry), log=log)
    assert Registry(registry).versions("lines") == [1] and leftovers(registry / "lines") == []
    (disk / "filler").unlink()
    # The training is not lost: the message says where it is kept and how to publish it from there.
    command = str(raised.value).split("publish it from there with python -m trainer ")[1].split()
    kept = Path(command[1])
    try:
        assert command[0] == "publish" and command[2:] == ["--registry", str(registry)]
        assert cli.main(command) == 0
        published = load_model(registry / "lines" / "2" / "model.npz")
        rows = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
        np.testing.assert_array_equal(published.predict(rows), load_model(kept / "model.npz").predict(rows))
        assert published.manifest["version"] == 2 and (registry / "lines" / "2" / "metrics.jsonl").is_file()
    finally:
        shutil.rmtree(kept)
    with pytest.raises(ValueError, match=r"cannot write the model into .*/run: No space left on device; "
                                         r"what the folder held before is unchanged"):
        train.run(config(tmp_path), output_dir=str(output), log=log)
    assert os.listdir(output) == ["model.npz"] and (output / "model.npz").read_bytes() == b"an earlier run's model"


def test_a_version_whose_number_cannot_be_recorded_is_not_published(disk):
    """The disk fills between the model file and the record of the version numbers given: publishing
    the version anyway would let a later publish give its number again once it is deleted."""
    registry = Registry(disk / "models")
    publish_model(registry.root, "lines", kind="regression")

    def build(folder, version):
        save_model(folder / MODEL_FILE, *model_parts("lines", version, kind="regression"))
        fill(disk)

    with pytest.raises(RegistryError, match=r"cannot publish lines v2 into .*: No space left on device; "
                                            r"nothing was published"):
        registry.publish("lines", build)
    assert registry.versions("lines") == [1] and leftovers(registry.root / "lines") == []
    (disk / "filler").unlink()
    assert publish_model(registry.root, "lines", kind="regression") == 2


def test_a_download_into_a_full_cache_names_the_cache_and_keeps_the_partial_file(disk):
    server = FileServer()
    try:
        server.files["/data.bin"] = PAYLOAD
        mirrors = [server.url + "/data.bin", server.url + "/data.bin?again"]
        fill(disk, leave=100_000)  # a third of the file fits
        with pytest.raises(DownloadError, match=r"into .*/cache: No space left on device; free some space, or give "
                                                r"another cache folder with --cache-dir") as raised:
            fetch(mirrors, "data.bin", PAYLOAD_SHA, disk / "cache", progress=False)
        assert "again" not in str(raised.value) and len(server.requests) == 1  # no other mirror tried
        kept = (disk / "cache" / "data.bin.part").stat().st_size
        assert 0 < kept < len(PAYLOAD)
        (disk / "filler").unlink()
        path = fetch(mirrors, "data.bin", PAYLOAD_SHA, disk / "cache", progress=False)
        assert path.read_bytes() == PAYLOAD and server.requests[-1][1] == f"bytes={kept}-"  # resumed
    finally:
        server.close()


def test_a_resume_answered_from_byte_zero_needs_room_for_the_rest_of_the_file_only(disk):
    """A mirror that ignores Range sends the whole file again: its start, the bytes already kept, is
    not written a second time, so a cache with room for the rest of the file is enough."""
    server = FileServer()
    try:
        server.files["/data.bin"] = PAYLOAD
        server.honour_range = False
        (disk / "cache").mkdir()
        (disk / "cache" / "data.bin.part").write_bytes(PAYLOAD[:200_000])
        fill(disk, leave=150_000)  # the last 100,000 bytes fit; another copy of the file does not
        path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, disk / "cache", progress=False)
        assert path.read_bytes() == PAYLOAD and server.requests == [("/data.bin", "bytes=200000-")]
        assert sorted(os.listdir(disk / "cache")) == ["data.bin", "data.bin.lock"]
    finally:
        server.close()


def test_admin_changes_on_a_full_disk_are_refused_and_serving_goes_on(disk):
    registry = disk / "models"
    publish_model(registry, "mnist", seed=1)
    publish_model(registry, "mnist", seed=2, favour=7)
    with ServiceProcess(registry, workers=2, admin_token=TOKEN) as server:
        server.wait_until_served("mnist", 2)
        fill(disk)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for method, path, body in (("POST", "/models/mnist/versions/1/activate", None),
                                   ("PUT", "/models/mnist/labels/stable", {"version": 1}),
                                   ("POST", "/models/mnist/rollback", None)):
            response = requests.request(method, server.url + path, json=body, headers=auth, timeout=10)
            assert response.status_code == 503, response.text
            answer = response.json()
            assert answer["code"] == "registry_unavailable" and "No space left on device" in answer["error"], answer
        assert leftovers(registry / "mnist") == [] and not (registry / "mnist" / "serving.json").exists()
        predicted = requests.post(server.url + "/models/mnist/predict", json={"inputs": [0.5] * 784}, timeout=10)
        assert predicted.status_code == 200 and predicted.headers["X-Model-Version"] == "2"
        # Room again: the same call works.
        (disk / "filler").unlink()
        response = requests.post(server.url + "/models/mnist/versions/1/activate", headers=auth, timeout=10)
        assert response.status_code == 200, response.text
        assert json.loads((registry / "mnist" / "serving.json").read_text())["pinned"] == 1
        server.wait_until_served("mnist", 1)


def test_a_log_on_a_full_disk_loses_its_lines_but_fails_no_request(disk, tmp_path, monkeypatch):
    """With stderr a file on a disk that filled up (``2>>/var/log/scratchnet.log``), every request,
    /healthz included, was answered 500: the access line's write raised, where the logging module
    reports a line it cannot write and goes on."""
    registry = tmp_path / "models"
    publish_model(registry, "wine", kind="regression")
    app = create_app({"registry": registry, "watch": False})
    client = app.test_client()
    log = open(disk / "scratchnet.log", "w")
    fill(disk)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stderr", log)
            for _ in range(20):
                assert client.get("/healthz").status_code == 200
            predicted = client.post("/models/wine/predict", json={"inputs": [[0.5] * 11]})
            assert predicted.status_code == 200, predicted.get_json()
    finally:
        with contextlib.suppress(OSError):  # what is still buffered cannot be written either
            log.close()
