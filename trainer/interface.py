"""What a model's clients rely on: the inputs it takes and the answers it gives (its interface).

A new version of a model serves its clients as soon as it is published, so publishing refuses one
whose interface differs from the model's latest version that loads (a mistyped ``--name`` would
otherwise put an image classifier where a regression on 11 values was served); ``--new-interface``
publishes it all the same, when the change is meant and the clients change with it.
"""

from __future__ import annotations

from shared.errors import ScratchnetError
from shared.model_file import load_model
from shared.registry import Registry, RegistryError
from shared.text import shortened

NEW_INTERFACE_FLAG = "--new-interface"
# The parts of an interface, in the order a refusal names them; a part a model lacks reads 'none'.
PARTS = ("task", "input kind", "input size", "input columns", "image preprocessing", "classes")
# The parts that name a list, and its key in the interface, where it is kept whole (the part's text is shortened).
LISTS = {"input columns": "feature_names", "classes": "labels"}


def interface(manifest: dict) -> dict:
    """The interface a model file's manifest (or a run's, as ``trainer.train.make_manifest`` gives it) describes."""
    model_input = manifest["input"]
    parts = {"task": manifest["task"], "input kind": model_input["kind"],
             "input size": f"{model_input['shape'][0]} values"}
    if names := model_input.get("feature_names"):  # a csv's columns: a client sends its values in this order
        parts["input columns"] = _listed(names)
        parts["feature_names"] = list(names)  # compared whole, as labels are
    if model_input["kind"] == "image":
        parts["image preprocessing"] = f"fit {model_input['preprocessing']['fit']}"
    if manifest["task"] == "classification":
        labels = [str(label) for label in manifest["output"]["labels"]]
        parts["classes"] = f"{len(labels)} {_listed(labels)}"
        parts["labels"] = labels  # compared whole; the text above may be shortened
    return parts


def dataset_interface(dataset) -> dict:
    """The interface of a model trained on ``dataset`` (a ``trainer.datasets.Dataset``), known before training."""
    output = {"labels": list(dataset.labels)} if dataset.task == "classification" else {}
    return interface({"task": dataset.task, "output": output,
                      "input": {"kind": dataset.input_kind, "shape": [dataset.x_train.shape[1]],
                                "preprocessing": dataset.preprocessing, "feature_names": dataset.feature_names}})


def latest_interface(registry: Registry, name: str) -> tuple[int, dict] | None:
    """The version and interface of ``name``'s latest version that loads; None when it has none."""
    for version in reversed(registry.versions(name)):
        try:
            model = load_model(registry.model_path(name, version), expect_name=name, expect_version=version)
        except (ScratchnetError, RegistryError, OSError):  # not served either: its interface binds no client
            continue
        return version, interface(model.manifest)
    return None


def check_interface(registry: Registry, name: str, new: dict, what: str = "this model") -> None:
    """Raise RegistryError when ``new`` differs from the interface of ``name``'s latest version that
    loads, naming each difference and how to go on."""
    latest = latest_interface(registry, name)
    if latest is None:
        return
    version, old = latest
    differences = [f"{part}: v{version} {_shown(part, old, new)}, new {_shown(part, new, old)}"
                   for part in PARTS if _differs(part, old, new)]
    if differences:
        raise RegistryError(
            f"cannot publish {what} as a new version of {name}: its interface differs from {name} v{version}'s, the "
            f"latest version that loads, whose clients it would break ({'; '.join(differences)}). Publish it under "
            f"another name (--name), or add {NEW_INTERFACE_FLAG} if the change is meant (every client of {name} must "
            "change too)")


def _listed(names: list[str], start: int = 0) -> str:
    """Names as a part's text shows them, from ``start`` on ("..." for those before it), cut to a readable length."""
    return f"({'..., ' if start else ''}{shortened(', '.join(names[start:]), 80)})"


def _shown(part: str, parts: dict, other: dict) -> str:
    """``part``'s text in interface ``parts``, as a refusal names it beside ``other``'s. A list (columns, classes)
    is shown from the name before the first that differs, which a text cut after 80 characters may not reach:
    two lists of long column names that differ in the last read the same there."""
    names, other_names = parts.get(LISTS.get(part)), other.get(LISTS.get(part))
    if names is None or other_names is None:
        return parts.get(part, "none")
    first = next((i for i, (a, b) in enumerate(zip(names, other_names)) if a != b), min(len(names), len(other_names)))
    listed = _listed(names, max(first - 1, 0))
    return f"{len(names)} {listed}" if part == "classes" else listed


def _differs(part: str, old: dict, new: dict) -> bool:
    """Whether interfaces ``old`` and ``new`` differ in ``part``. Columns are compared only where both models
    name them: data without names (an npz) may hold the same columns in the same order."""
    if part == "input columns":
        return None not in (old.get("feature_names"), new.get("feature_names")) and (
            old["feature_names"] != new["feature_names"])
    if part == "classes" and old.get("labels") != new.get("labels"):
        return True
    return old.get(part) != new.get(part)
