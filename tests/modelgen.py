"""Small, valid models for tests, built with random weights and published into a registry.

Until real baseline models exist, every service test builds its own registry from these::

    from tests.modelgen import publish_model, publish_corrupt
    publish_model(tmp_path, "mnist")                        # image classifier 784 -> 16 -> 10, labels "0".."9"
    publish_model(tmp_path, "iris", kind="vector")          # vector classifier 4 -> 8 -> 3
    publish_model(tmp_path, "wine", kind="regression")      # vector regression 11 -> 8 -> 1
    publish_model(tmp_path, "mnist", favour=7)              # predicts "7" for (almost) any input
    publish_corrupt(tmp_path, "mnist")                      # a version whose model.npz is damaged
    publish_standard_models(tmp_path)                       # the four versions most service tests use

``favour`` gives the chosen class a large output bias, so a test can tell versions apart by
what they predict as well as by the version they name.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.model_file import save_model
from shared.registry import MODEL_FILE, Registry

DIGITS = [str(d) for d in range(10)]
KINDS = {
    # kind: (input kind, input size, hidden width, task, default labels)
    "image": ("image", 784, 16, "classification", DIGITS),
    "vector": ("vector", 4, 8, "classification", ["setosa", "versicolor", "virginica"]),
    "regression": ("vector", 11, 8, "regression", None),
}
IMAGE_PREPROCESSING = {"type": "image", "size": [28, 28], "fit": "digit", "polarity": "light_on_dark"}


def model_parts(name: str, version: int, *, kind: str = "image", seed: int = 0, favour: int | None = None,
                labels: list[str] | None = None, input_size: int | None = None,
                fit: str = "digit", hidden: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, manifest)`` of a random two-layer network, ready for ``save_model``."""
    input_kind, default_size, default_hidden, task, default_labels = KINDS[kind]
    hidden = hidden or default_hidden
    size = input_size or default_size
    labels = labels or default_labels
    outputs = len(labels) if task == "classification" else 1
    rng = np.random.default_rng(seed)
    arrays = {
        "dense1.weight": rng.normal(0, 1 / np.sqrt(size), (size, hidden)),
        "dense1.bias": np.zeros(hidden),
        "dense2.weight": rng.normal(0, 1 / np.sqrt(hidden), (hidden, outputs)),
        "dense2.bias": np.zeros(outputs),
    }
    if favour is not None:
        arrays["dense2.bias"][favour] = 50.0
    layers = [
        {"type": "dense", "name": "dense1", "in_features": size, "out_features": hidden},
        {"type": "activation", "name": "relu"},
        {"type": "dense", "name": "dense2", "in_features": hidden, "out_features": outputs},
    ]
    if task == "classification":
        layers.append({"type": "activation", "name": "softmax"})
        output = {"labels": list(labels)}
    else:
        output = {"target": "quality", "scaling": {"mean": 5.6, "std": 0.8}}
    if input_kind == "image":
        inputs = {"kind": "image", "shape": [784], "dtype": "float32",
                  "preprocessing": {**IMAGE_PREPROCESSING, "fit": fit},
                  "normalization": {"mean": [0.1307], "std": [0.3081]}, "feature_names": None}
    else:
        inputs = {"kind": "vector", "shape": [size], "dtype": "float32", "preprocessing": None,
                  "normalization": {"mean": [0.0], "std": [1.0]},
                  "feature_names": [f"x{i}" for i in range(size)]}
    manifest = {
        "name": name, "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task, "input": inputs, "output": output, "layers": layers,
        "training": {"command": "tests.modelgen", "config": {"kind": kind}, "seed": seed, "epochs_run": 0,
                     "dataset": {"name": "random", "files": {}}},
        "metrics": {"split": "none", "n": 0},
    }
    return {k: v.astype(np.float32) for k, v in arrays.items()}, manifest


def publish_model(root: str | Path, name: str, **options) -> int:
    """Publish a new version of a random model (see ``model_parts``) and return its number."""
    def build(folder: Path, version: int) -> None:
        arrays, manifest = model_parts(name, version, **options)
        save_model(folder / MODEL_FILE, arrays, manifest)
    return Registry(root).publish(name, build)


def publish_standard_models(root: str | Path) -> Path:
    """``mnist`` v1 (random) and v2 (predicts "7"), ``iris`` (vector classifier) and ``wine``
    (regression): the registry the end-to-end and fuzz tests serve."""
    publish_model(root, "mnist", seed=1)
    publish_model(root, "mnist", seed=2, favour=7)
    publish_model(root, "iris", kind="vector")
    publish_model(root, "wine", kind="regression")
    return Path(root)


def publish_corrupt(root: str | Path, name: str, content: bytes = b"PK\x03\x04 this is not a model") -> int:
    """Publish a version whose ``model.npz`` cannot be loaded; returns its number."""
    def build(folder: Path, version: int) -> None:
        (folder / MODEL_FILE).write_bytes(content)
    return Registry(root).publish(name, build)
