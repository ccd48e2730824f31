"""The model file: round trip, and every way a file is refused (docs/model-format.md)."""

import errno
import gc
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import re
import shutil
import stat
import tempfile
import tracemalloc
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from allocations import traced_peak
from shared.errors import ModelFileError
from shared.model_file import describe_arrays, load_model, parameters_sha256, read_manifest, save_model
from shared.registry import LABEL_PATTERN, Registry, RegistryError, check_name
from users import run_as


def tiny_model(task="classification", batchnorm=False, seed=0):
    """A 6-4-3 classifier (or 6-4-1 regressor) with its manifest, as the trainer would write it."""
    rng = np.random.default_rng(seed)
    out = 3 if task == "classification" else 1
    arrays = {
        "dense1.weight": rng.normal(size=(6, 4)).astype(np.float32),
        "dense1.bias": rng.normal(size=4).astype(np.float32),
        "dense2.weight": rng.normal(size=(4, out)).astype(np.float32),
        "dense2.bias": rng.normal(size=out).astype(np.float32),
    }
    layers = [{"type": "dense", "name": "dense1", "in_features": 6, "out_features": 4}]
    if batchnorm:
        arrays.update({"bn1.gamma": rng.uniform(0.5, 2, 4).astype(np.float32),
                       "bn1.beta": rng.normal(size=4).astype(np.float32),
                       "bn1.running_mean": rng.normal(size=4).astype(np.float32),
                       "bn1.running_var": rng.uniform(0.5, 2, 4).astype(np.float32)})
        layers.append({"type": "batchnorm", "name": "bn1", "features": 4, "eps": 1e-5})
    layers += [{"type": "activation", "name": "tanh"},
               {"type": "dense", "name": "dense2", "in_features": 4, "out_features": out}]
    if task == "classification":
        layers.append({"type": "activation", "name": "softmax"})
        output = {"labels": ["a", "b", "c"]}
    else:
        output = {"target": "y", "scaling": {"mean": 5.0, "std": 2.0}}
    manifest = {
        "name": "tiny", "version": 1, "created_at": "2026-01-01T00:00:00+00:00", "task": task,
        "input": {"kind": "vector", "shape": [6], "dtype": "float32",
                  "normalization": {"mean": [0.5] * 6, "std": [2.0] * 6}},
        "output": output, "layers": layers,
        "training": {"config": {}, "seed": 0, "epochs_run": 0, "dataset": {"name": "random", "files": {}}},
        "metrics": {"split": "none"},
    }
    return arrays, manifest


def reference_forward(arrays, manifest, x):
    """The forward pass written out plainly in float64, independent of shared.forward."""
    norm = manifest["input"]["normalization"]
    h = (x.astype(np.float64) - np.array(norm["mean"])) / np.array(norm["std"])
    h = h @ arrays["dense1.weight"] + arrays["dense1.bias"]
    if "bn1.gamma" in arrays:
        h = (arrays["bn1.gamma"] * (h - arrays["bn1.running_mean"])
             / np.sqrt(arrays["bn1.running_var"] + 1e-5) + arrays["bn1.beta"])
    h = np.tanh(h) @ arrays["dense2.weight"] + arrays["dense2.bias"]
    if manifest["task"] == "classification":
        e = np.exp(h - h.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return h[:, 0] * 2.0 + 5.0


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_round_trip_gives_the_reference_forward_pass(tmp_path, task, batchnorm):
    arrays, manifest = tiny_model(task, batchnorm)
    save_model(tmp_path / "model.npz", arrays, manifest)
    model = load_model(tmp_path / "model.npz")
    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    expected = reference_forward(arrays, manifest, x)
    got = model.predict_proba(x) if task == "classification" else model.predict(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert model.manifest["parameters"]["sha256"] == documented_sha256(arrays)
    assert read_manifest(tmp_path / "model.npz")["name"] == "tiny"


def wide_model(tmp_path) -> tuple[dict, dict]:
    """A model whose first layer (2000 x 1000, 8 MB) is most of it, saved in tmp_path: its arrays and manifest."""
    rng = np.random.default_rng(0)
    arrays = {"dense1.weight": rng.normal(size=(2000, 1000)).astype(np.float32),
              "dense1.bias": np.zeros(1000, dtype=np.float32),
              "dense2.weight": rng.normal(size=(1000, 3)).astype(np.float32),
              "dense2.bias": np.zeros(3, dtype=np.float32)}
    _, manifest = tiny_model()
    manifest["input"] = {"kind": "vector", "shape": [2000], "dtype": "float32",
                         "normalization": {"mean": [0.5] * 2000, "std": [2.0] * 2000}}
    manifest["layers"][0]["in_features"] = 2000
    manifest["layers"][0]["out_features"] = manifest["layers"][2]["in_features"] = 1000
    save_model(tmp_path / "model.npz", arrays, manifest)
    return arrays, manifest


def test_a_loaded_model_holds_its_weights_once(tmp_path):
    # The input normalisation is folded into the first layer's weights when the model loads; the
    # file's own copy of them (8 MB here) must not stay in memory beside the folded one.
    arrays, manifest = wide_model(tmp_path)
    weights = sum(a.nbytes for a in arrays.values())
    gc.collect()
    tracemalloc.start()
    try:
        model = load_model(tmp_path / "model.npz")
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert weights <= held < 1.25 * weights
    x = np.random.default_rng(1).normal(size=(4, 2000)).astype(np.float32)
    np.testing.assert_allclose(model.predict_proba(x), reference_forward(arrays, manifest, x), rtol=1e-4, atol=1e-6)
    assert repr(model) == "Model(tiny v1: dense(2000x1000) -> tanh -> dense(1000x3) -> softmax)"


def test_loading_a_model_takes_little_more_than_its_file_and_weights(tmp_path):
    """Folding the normalisation into the first layer made float64 copies of it whole: loading took
    five times the weights (a 112 MB model took a worker from 55 MB to 670, and two workers under
    compose's 1 GiB were killed). Now the file's bytes and the arrays read from them, then the
    arrays and their folded copy, are what a load holds at most."""
    arrays, _ = wide_model(tmp_path)
    weights = sum(a.nbytes for a in arrays.values())
    gc.collect()
    _, peak = traced_peak(load_model, tmp_path / "model.npz")
    assert peak < 2.5 * weights


def documented_sha256(arrays: dict) -> str:
    """The parameter checksum as docs/model-format.md defines it, written out independently."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode("utf-8"))
        digest.update(b"\0")
        digest.update(np.asarray(arrays[name], dtype="<f4").tobytes(order="C"))
    return digest.hexdigest()


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "wine-quality"])
def test_the_committed_models_load_and_match_their_checksum(name):
    registry = Registry(Path(__file__).parent.parent / "models")
    assert registry.versions(name), f"no committed version of {name}"
    for version in registry.versions(name):
        path = registry.model_path(name, version)
        model = load_model(path, expect_name=name, expect_version=version)
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files if key != "manifest"}
        assert model.manifest["parameters"]["sha256"] == documented_sha256(arrays)


def rewrite(path, arrays, manifest):
    """Write an npz by hand, bypassing save_model's checks, as a hostile or buggy writer would."""
    members = dict(arrays)
    members["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(path, **members)


def saved(tmp_path, **kw):
    arrays, manifest = tiny_model(**kw)
    save_model(tmp_path / "model.npz", arrays, manifest)
    return arrays, read_manifest(tmp_path / "model.npz")


def refused(path, match, **kw):
    with pytest.raises(ModelFileError, match=match) as info:
        load_model(path, **kw)
    assert str(path) in str(info.value)
    return info.value


def test_pickled_object_array_is_refused_without_running_it(tmp_path):
    arrays, manifest = saved(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    members = dict(arrays, manifest=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8))
    members["dense1.bias"] = np.array([Exploit()], dtype=object)
    np.savez(tmp_path / "model.npz", **members)
    assert b"pwned" in pickle.dumps(Exploit())  # the payload really is in the file format
    refused(tmp_path / "model.npz", "pickle")
    assert not marker.exists()


def test_truncated_file_is_refused(tmp_path):
    saved(tmp_path)
    data = (tmp_path / "model.npz").read_bytes()
    (tmp_path / "model.npz").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "model.npz", "truncated|damaged|zip")


def test_not_an_npz_is_refused(tmp_path):
    (tmp_path / "model.npz").write_bytes(b"hello, I am text")
    refused(tmp_path / "model.npz", "not an .npz")


def test_missing_file_is_refused_naming_it(tmp_path):
    refused(tmp_path / "model.npz", "the folder holds no model.npz")


def test_wrong_checksum_is_refused(tmp_path):
    arrays, manifest = saved(tmp_path)
    arrays["dense1.bias"] = arrays["dense1.bias"] + np.float32(1e-3)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", "checksum mismatch")


def test_shapes_that_do_not_chain_are_refused(tmp_path):
    arrays, manifest = saved(tmp_path)
    arrays["dense2.weight"] = np.ones((5, 3), np.float32)
    manifest["parameters"]["arrays"]["dense2.weight"]["shape"] = [5, 3]
    manifest["parameters"]["sha256"] = parameters_sha256(arrays)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", "do not chain")


def test_a_weight_in_pytorchs_out_in_layout_is_refused_saying_to_transpose_it(tmp_path):
    """nn.Linear stores its weight as (out, in); the file's is (in, out). Saved as it is, the
    message said only that shapes do not chain, not which way round the file wants it."""
    arrays, manifest = tiny_model()
    arrays["dense1.weight"] = np.ascontiguousarray(arrays["dense1.weight"].T)  # (4, 6), as torch holds it
    for layer in manifest["layers"]:
        layer.pop("in_features", None), layer.pop("out_features", None)
    manifest.update(format="scratchnet.mlp", format_version=1, parameters=describe_arrays(arrays))
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", re.escape("a dense weight is (in, out), [6, 4] here, and PyTorch's "
                                              "nn.Linear.weight is (out, in): write its transpose (weight.T)"))


@pytest.mark.parametrize("shape", [(1,), (1, 4)])
def test_a_bias_that_would_broadcast_over_its_layer_is_refused(tmp_path, shape):
    """A bias of one value, or of one row, on a 4-wide layer would broadcast, and the model would
    answer with a bias no training learnt and no error: the loader refuses it, naming the layer and
    both shapes."""
    arrays, manifest = saved(tmp_path)
    arrays["dense1.bias"] = np.ones(shape, np.float32)
    manifest["parameters"]["arrays"]["dense1.bias"]["shape"] = list(shape)
    manifest["parameters"]["sha256"] = parameters_sha256(arrays)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", re.escape(f"layer 0 (dense1) bias has shape {list(shape)}, expected [4]"))


def test_a_layer_without_units_is_refused(tmp_path):
    """A dense layer of width 0 chains (6x0, then 0x1), but nothing passes through it: every answer
    would be the last bias, whatever the input, so the version must never serve."""
    arrays, manifest = saved(tmp_path, task="regression")
    arrays.update({"dense1.weight": np.zeros((6, 0), np.float32), "dense1.bias": np.zeros(0, np.float32),
                   "dense2.weight": np.zeros((0, 1), np.float32)})
    manifest["layers"][0]["out_features"], manifest["layers"][2]["in_features"] = 0, 0
    for key in ("dense1.weight", "dense1.bias", "dense2.weight"):
        manifest["parameters"]["arrays"][key]["shape"] = list(arrays[key].shape)
    manifest["parameters"]["sha256"] = parameters_sha256(arrays)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", re.escape("layer 0 (dense1) has no units (weight shape [6, 0])"))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_weights_that_are_not_finite_are_refused(tmp_path, value):
    arrays, manifest = saved(tmp_path)
    arrays["dense1.weight"][0, 0] = value
    manifest["parameters"]["sha256"] = parameters_sha256(arrays)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", "NaN or infinite")


def test_float64_arrays_are_refused(tmp_path):
    arrays, manifest = saved(tmp_path)
    arrays["dense1.bias"] = arrays["dense1.bias"].astype(np.float64)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", "float64, expected float32")


def test_manifest_that_lies_about_the_input_size_is_refused(tmp_path):
    arrays, manifest = saved(tmp_path)
    manifest["input"]["shape"] = [7]
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", "receives 7 features")


def test_label_count_must_match_outputs(tmp_path):
    arrays, manifest = saved(tmp_path)
    manifest["output"]["labels"] = ["a", "b"]
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", "3 outputs but output.labels names 2")


def test_a_classifier_of_one_class_is_refused(tmp_path):
    """One label, one output: the softmax answers it with probability 1 for every input, a version
    that must never replace a working one (the trainer refuses data of one class likewise)."""
    arrays, manifest = saved(tmp_path)
    arrays["dense2.weight"], arrays["dense2.bias"] = arrays["dense2.weight"][:, :1], arrays["dense2.bias"][:1]
    manifest["layers"][2]["out_features"] = 1
    manifest["output"]["labels"] = ["a"]
    for key in ("dense2.weight", "dense2.bias"):
        manifest["parameters"]["arrays"][key]["shape"] = list(arrays[key].shape)
    manifest["parameters"]["sha256"] = parameters_sha256(arrays)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", re.escape("output.labels names one class ('a'); a classifier needs at least 2"))


def test_unknown_activation_is_refused(tmp_path):
    arrays, manifest = saved(tmp_path)
    manifest["layers"][1]["name"] = "swish"
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", "unknown activation 'swish'")


def _image_manifest_change(manifest, **preprocessing):
    manifest["input"].update(kind="image", shape=[784],
                             preprocessing={"type": "image", "size": [28, 28], "fit": "digit",
                                            "polarity": "light_on_dark", **preprocessing})


@pytest.mark.parametrize("task, change, match", [
    ("regression", lambda m: m["output"].update(scaling=[1, 2]), "output.scaling of a regression must be an object"),
    ("regression", lambda m: m["output"].update(scaling={"mean": float("nan"), "std": 1.0}), "output.scaling needs"),
    ("regression", lambda m: m["output"].update(scaling={"mean": 5.0, "std": 0.0}), "output.scaling needs"),
    ("regression", lambda m: m["output"].update(scaling={"mean": 5.0, "std": -2.0}), "output.scaling needs"),
    ("regression", lambda m: m["output"].update(scaling={"mean": 5.0, "std": 1e-46}),
     "output.scaling.std 1e-46 is 0 in float32"),
    ("classification", lambda m: m["input"].update(normalization=[0.5, 2.0]), "input.normalization must be an object"),
    ("classification", lambda m: m["input"].update(normalization={"mean": [True], "std": [1.0]}),
     "input.normalization.mean must be"),
    ("classification", lambda m: m["input"].update(shape=[True]), "input.shape .* must be a list of one positive"),
    ("classification", lambda m: m["layers"][0].update(in_features=5), "says in_features 5 but its weight"),
    ("classification", lambda m: m["layers"][0].update(out_features=9), "says out_features 9 but its weight"),
    ("classification", lambda m: m["layers"][1].update(name=["tanh"]), "unknown activation"),
    ("classification", lambda m: m["output"].update(labels=["a", "b", "a"]), "names a class more than once: 'a'"),
])
def test_manifest_values_the_forward_pass_cannot_use_are_refused(tmp_path, task, change, match):
    """Each of these once loaded (and then predicted NaN, a constant, or raised a bare Python
    error in the loader): a bad file must give one ModelFileError naming it."""
    arrays, manifest = saved(tmp_path, task=task)
    change(manifest)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", match)


@pytest.mark.parametrize("task, change, match", [
    ("classification", lambda m: m["input"].pop("normalization"), r"input.normalization must be an object .*\[0.0\]"),
    ("classification", lambda m: m["input"].update(normalization={}), "input.normalization.mean must be a list"),
    ("regression", lambda m: m["output"].update(scaling={}), "output.scaling needs a finite mean"),
    ("regression", lambda m: m["output"].pop("scaling"), "output.scaling of a regression must be an object"),
    ("regression", lambda m: m["output"].pop("target"), "output.target must name the regression's target"),
    ("classification", lambda m: m["input"].update(dtype="float64"), "input.dtype is 'float64'"),
    ("classification", lambda m: m["input"].pop("dtype"), "input.dtype is None"),
    ("classification", lambda m: m.pop("created_at"), "created_at' is missing"),
    ("classification", lambda m: m.update(created_at="yesterday"), "created_at 'yesterday' is not an ISO 8601"),
    ("classification", lambda m: m.pop("training"), "training' is missing"),
    ("classification", lambda m: m["training"].pop("config"), "training.config must be an object"),
    ("classification", lambda m: m["training"].update(dataset={"files": {}}), "training.dataset must be an object naming"),
    ("classification", lambda m: m.update(metrics=[]), "metrics' is missing or not a dict"),
    ("classification", lambda m: m["metrics"].pop("split"), "metrics.split must say which split"),
])
def test_a_manifest_without_what_the_format_requires_is_refused(tmp_path, task, change, match):
    """SPEC §3's manifest: without its input normalisation or a regression's output scaling the
    answers would be silently wrong; without its date, training record and metrics' split, where the
    model came from and how good it is could not be told."""
    arrays, manifest = saved(tmp_path, task=task)
    change(manifest)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", match)


@pytest.mark.parametrize("names", [[1, 2, 3, 4, 5, 6], [None] * 6, "a,b,c,d,e,f", ["a"], {"a": 0}, list("abcdea")])
def test_feature_names_that_are_not_the_inputs_column_names_are_refused(tmp_path, names):
    """A file written by hand with column names that are not strings made the service answer a vector
    sent by name with a 500 (and publish end in a traceback); a string was read a character a column;
    a name given twice would leave a vector sent by name with two places for one value."""
    arrays, manifest = saved(tmp_path)
    manifest["input"]["feature_names"] = names
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", r"input.feature_names must be null or a list of 6 distinct strings")
    manifest["input"]["feature_names"] = list("abcdef")
    rewrite(tmp_path / "model.npz", arrays, manifest)
    assert load_model(tmp_path / "model.npz").manifest["input"]["feature_names"] == list("abcdef")


def test_batchnorm_eps_must_be_finite(tmp_path):
    arrays, manifest = saved(tmp_path, batchnorm=True)
    manifest["layers"][1]["eps"] = float("nan")
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", "eps must be a positive number")


@pytest.mark.parametrize("preprocessing, match", [
    ({"size": [20, 20]}, r"preprocessing.size \[20, 20\] gives 400 inputs; the model takes 784"),
    ({"size": [28]}, r"preprocessing: preprocessing size must be \[height, width\]"),
    ({"fit": "cat"}, "preprocessing fit must be one of digit, garment, got 'cat'"),
    ({"polarity": "dark_on_light"}, "preprocessing polarity must be 'light_on_dark'"),
    ({"type": "audio"}, "not an image preprocessing spec"),
])
def test_an_image_model_must_carry_preprocessing_the_service_can_apply(tmp_path, preprocessing, match):
    """Found at load time, not on the first request."""
    rng = np.random.default_rng(0)
    arrays = {"dense1.weight": rng.normal(size=(784, 3)).astype(np.float32),
              "dense1.bias": np.zeros(3, np.float32)}
    _, manifest = tiny_model()
    manifest["layers"] = [{"type": "dense", "name": "dense1", "in_features": 784, "out_features": 3},
                          {"type": "activation", "name": "softmax"}]
    manifest["input"]["normalization"] = {"mean": [0.1], "std": [0.3]}
    _image_manifest_change(manifest)
    save_model(tmp_path / "model.npz", arrays, manifest)  # the valid one loads
    manifest = read_manifest(tmp_path / "model.npz")
    manifest["input"]["preprocessing"].update(preprocessing)
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", match)


def test_extra_and_missing_arrays_are_refused(tmp_path):
    arrays, manifest = saved(tmp_path)
    rewrite(tmp_path / "model.npz", dict(arrays, stowaway=np.zeros(3, np.float32)), manifest)
    refused(tmp_path / "model.npz", "unexpected \\['stowaway'\\]")


def test_malformed_manifest_is_refused(tmp_path):
    arrays, _ = saved(tmp_path)
    np.savez(tmp_path / "model.npz", **arrays, manifest=np.frombuffer(b"{not json", dtype=np.uint8))
    refused(tmp_path / "model.npz", "not valid UTF-8 JSON")
    np.savez(tmp_path / "model.npz", **arrays)
    refused(tmp_path / "model.npz", "no 'manifest'")


@pytest.mark.parametrize("text, reason", [
    ('{"n": ' + "1" * 5000 + "}", "it holds an integer of over 4300 digits, too long to read)"),
    ("[" * 100_000 + "]" * 100_000, "it is nested over about 1000 levels deep)"),
])
def test_a_manifest_python_cannot_parse_is_refused_with_its_reason(tmp_path, text, reason):
    arrays, _ = saved(tmp_path)
    np.savez(tmp_path / "model.npz", **arrays, manifest=np.frombuffer(text.encode(), dtype=np.uint8))
    error = refused(tmp_path / "model.npz", re.escape(f"the manifest is not valid UTF-8 JSON ({reason}"))
    assert "sys." not in str(error)  # no advice to change the interpreter's settings
    with pytest.raises(ModelFileError):
        read_manifest(tmp_path / "model.npz")


@pytest.mark.parametrize("key, value, match", [
    ("format_version", 99, "format_version 99 is not supported"),
    ("format", "onnx", "format is 'onnx', expected 'scratchnet.mlp'"),
    ("format", None, "format is None, expected 'scratchnet.mlp'"),
    ("task", "clustering", "task 'clustering' is not one of classification, regression"),
    ("task", None, "task None is not one of classification, regression"),
])
def test_wrong_format_or_task_is_refused(tmp_path, key, value, match):
    arrays, manifest = saved(tmp_path)
    if value is None:
        del manifest[key]
    else:
        manifest[key] = value
    rewrite(tmp_path / "model.npz", arrays, manifest)
    refused(tmp_path / "model.npz", re.escape(match))


def test_manifest_must_match_its_registry_folder(tmp_path):
    saved(tmp_path)
    refused(tmp_path / "model.npz", "folder 'other'", expect_name="other")
    refused(tmp_path / "model.npz", "in folder 2", expect_version=2)


def test_a_version_copied_in_under_another_number_or_name_says_how_to_add_it(tmp_path):
    """A version folder copied in by hand (cp -r stage/tiny/1 models/tiny/7), as TF Serving and
    Triton take one, was refused with what was wrong and no word of how to add it. Publishing it
    writes a copy: the advice goes on to the folder left behind, which otherwise stays listed as
    failed in /models for good."""
    saved(tmp_path)
    removal = ("then remove this folder from the registry (or move it out): the published copy serves, and this "
               "one is listed as failed while it stays")
    error = refused(tmp_path / "model.npz", "in folder 7", expect_version=7)
    assert error.reason.endswith("; to add a copied version, publish its folder with 'python -m trainer publish "
                                 f"<folder>', which gives it the next number, {removal}")
    error = refused(tmp_path / "model.npz", "folder 'other'", expect_name="other")
    assert error.reason.endswith("; to serve it as other, publish its folder with 'python -m trainer publish "
                                 f"<folder> --name other', {removal}")


def test_size_limit(tmp_path):
    saved(tmp_path)
    refused(tmp_path / "model.npz", "over the limit", max_bytes=100)


def test_the_manifest_alone_of_a_file_over_the_limit_is_not_read_either(tmp_path):
    # The service reads a manifest for a version not loaded yet (GET /models/<m>/versions/<v>): a 3 GB
    # file in the registry was read whole into memory, once per request.
    huge = tmp_path / "model.npz"
    with open(huge, "wb") as f:
        f.truncate(3 << 30)  # sparse: no disk space
    with pytest.raises(ModelFileError, match=r"the file is 3221225472 bytes, over the limit of 1000"):
        read_manifest(huge, max_bytes=1000)
    saved(tmp_path)
    assert read_manifest(tmp_path / "model.npz", max_bytes=1 << 20)["name"]


def test_save_model_never_leaves_an_invalid_file(tmp_path):
    arrays, manifest = tiny_model()
    manifest["output"]["labels"] = ["only-one"]
    with pytest.raises(ModelFileError):
        save_model(tmp_path / "model.npz", arrays, manifest)
    assert not (tmp_path / "model.npz").exists()


def test_a_damaged_member_is_refused(tmp_path):
    saved(tmp_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(tmp_path / "model.npz") as src, zipfile.ZipFile(buffer, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "dense1.weight.npy":
                data = data[:-10]
            dst.writestr(item, data)
    (tmp_path / "model.npz").write_bytes(buffer.getvalue())
    refused(tmp_path / "model.npz", "dense1.weight")


@pytest.mark.parametrize("first, last", [("dense1.weight.npy", "dense1.weight.npy"),
                                         ("dense1.weight.npy", "dense1.weight"),
                                         ("manifest.npy", "manifest.npy")])
def test_an_archive_holding_an_array_twice_is_refused(tmp_path, first, last):
    """A zip may hold two members of one name (NumPy reads the last, unzip the first), or both
    'x.npy' and 'x' (NumPy reads 'x'): a file whose other copy differs shows one set of weights to
    the tools and serves another."""
    saved(tmp_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(tmp_path / "model.npz") as src, zipfile.ZipFile(buffer, "w") as dst:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
            dst.writestr(first, src.read(first))
            for item in src.infolist():
                dst.writestr(last if item.filename == first else item.filename, src.read(item.filename))
    (tmp_path / "model.npz").write_bytes(buffer.getvalue())
    array = first.removesuffix(".npy")
    refused(tmp_path / "model.npz", f"more than one member for the array '{array}'")
    with pytest.raises(ModelFileError, match="more than one member"):
        read_manifest(tmp_path / "model.npz")


# The registry ---------------------------------------------------------------------------------

def publish_tiny(registry, name="tiny"):
    arrays, manifest = tiny_model()

    def build(folder, version):
        save_model(folder / "model.npz", arrays, dict(manifest, name=name, version=version))

    return registry.publish(name, build)


def test_publish_numbers_versions_and_leaves_no_temporaries(tmp_path):
    registry = Registry(tmp_path)
    assert [publish_tiny(registry) for _ in range(3)] == [1, 2, 3]
    assert registry.versions("tiny") == [1, 2, 3]
    assert registry.model_names() == ["tiny"]
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [".highest_version", "1", "2", "3"]
    model = load_model(registry.model_path("tiny", 3), expect_name="tiny", expect_version=3)
    assert model.version == 3


def test_a_failed_build_publishes_nothing(tmp_path):
    registry = Registry(tmp_path)

    def build(folder, version):
        (folder / "model.npz").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        registry.publish("tiny", build)
    assert registry.versions("tiny") == []
    assert list(tmp_path.iterdir()) == []  # nor the model's folder, made for this version


def test_a_build_that_writes_no_model_file_publishes_nothing(tmp_path):
    """A build that returns without writing model.npz (a trainer that skipped its save) is an error,
    not an empty version that would become the highest and leave its model with nothing to serve;
    the number it was given is not used up."""
    registry = Registry(tmp_path)
    publish_tiny(registry)
    record = (tmp_path / "tiny" / ".highest_version").read_bytes()
    for name in ("tiny", "other"):
        with pytest.raises(RegistryError, match=rf"publishing {name} v\d+ wrote no model.npz"):
            registry.publish(name, lambda folder, version: None)
    assert registry.versions("tiny") == [1] and registry.model_names() == ["tiny"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [".highest_version", "1"]
    assert (tmp_path / "tiny" / ".highest_version").read_bytes() == record
    assert publish_tiny(registry) == 2


def test_a_first_publish_survives_a_concurrent_one_removing_the_new_models_folder(tmp_path, monkeypatch):
    """Two first publishes of a model: the one that fails removes the model's folder it made, which
    the other already found there; the other makes it again rather than failing."""
    registry = Registry(tmp_path)
    clean = Registry.remove_stale_temporaries

    def failed_publisher_cleans_up(self, name, *args):
        clean(self, name, *args)
        (tmp_path / name).rmdir()  # just before this publisher makes its temporary folder there

    monkeypatch.setattr(Registry, "remove_stale_temporaries", failed_publisher_cleans_up)
    assert publish_tiny(registry) == 1
    assert registry.versions("tiny") == [1]


def test_a_deleted_versions_number_is_never_given_again(tmp_path):
    registry = Registry(tmp_path)
    for _ in range(3):
        publish_tiny(registry)
    registry.write_serving("tiny", {"pinned": 3, "labels": {"stable": 3}})
    shutil.rmtree(tmp_path / "tiny" / "3")  # the pin and the label now name nothing
    assert publish_tiny(registry) == 4
    shutil.rmtree(tmp_path / "tiny" / "4")
    shutil.rmtree(tmp_path / "tiny" / "2")
    assert publish_tiny(registry) == 5
    assert registry.versions("tiny") == [1, 5] and registry.highest_published("tiny") == 5


def test_a_registry_without_the_record_stays_above_what_serving_json_names(tmp_path):
    registry = Registry(tmp_path)
    publish_tiny(registry)
    (tmp_path / "tiny" / ".highest_version").unlink(missing_ok=True)  # as in a registry made before the record
    registry.write_serving("tiny", {"pinned": 4, "labels": {"canary": 6, "stable": 4}})
    assert publish_tiny(registry) == 7
    (tmp_path / "tiny" / "serving.json").write_text("{not json")  # the record still holds
    assert publish_tiny(registry) == 8


def publish_tiny_into(root: str) -> int:
    return publish_tiny(Registry(Path(root)))


def test_concurrent_publishers_get_distinct_numbers_and_the_record_the_highest(tmp_path):
    # Separate processes, as two trainers are: a lock that held only within one process would not do.
    with ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("fork")) as pool:
        versions = list(pool.map(publish_tiny_into, [str(tmp_path)] * 12))
    registry = Registry(tmp_path)
    assert sorted(versions) == registry.versions("tiny") == list(range(1, 13))
    assert registry.highest_published("tiny") == 12


def test_a_damaged_record_is_refused_before_training(tmp_path):
    registry = Registry(tmp_path)
    publish_tiny(registry)
    (tmp_path / "tiny" / ".highest_version").write_text("lots\n")
    with pytest.raises(RegistryError, match="highest version published"):
        registry.check_publishable("tiny")
    assert registry.versions("tiny") == [1]  # readers ignore the record


def test_a_model_folder_another_user_owns_is_refused_with_what_to_do():
    """A registry folder made on the host by another user than the publisher's (docker compose
    runs the trainer as uid 1000): refused before training, saying how to publish into it."""
    root = Path(tempfile.mkdtemp())
    root.chmod(0o755)
    registry = Registry(root)
    publish_tiny(registry)

    def check():
        with pytest.raises(RegistryError, match=r"/tiny is not writable by uid \d+ \(Permission denied\); give uid \d+ "
                                                r"write access to it, or publish as its owner \(with Docker: "
                                                r"SCRATCHNET_UID and SCRATCHNET_GID, docs/docker.md\)$"):
            registry.check_publishable("tiny")

    (root / "tiny").chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anywhere: check as another user
            run_as(65534, 65534, check)
        else:
            check()
    finally:
        (root / "tiny").chmod(0o755)
        shutil.rmtree(root)


def test_stray_folders_are_not_versions(tmp_path):
    registry = Registry(tmp_path)
    publish_tiny(registry)
    # '²' passes str.isdigit but int() refuses it; int() reads '١' and '１' as 1.
    for stray in (".tmp-2-abc", "007", "latest", "0", "²", "١", "１", "1000000000"):
        (tmp_path / "tiny" / stray).mkdir()
    assert registry.versions("tiny") == [1]


def test_serving_state_round_trip_and_validation(tmp_path):
    registry = Registry(tmp_path)
    publish_tiny(registry)
    assert registry.read_serving("tiny") == {"pinned": None, "labels": {}}
    registry.write_serving("tiny", {"pinned": 1, "labels": {"stable": 1}})
    assert registry.read_serving("tiny") == {"pinned": 1, "labels": {"stable": 1}}
    assert [p.name for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".tmp")] == []
    (tmp_path / "tiny" / "serving.json").write_text('{"pinned": "three"}')
    with pytest.raises(RegistryError, match="positive integer"):
        registry.read_serving("tiny")
    (tmp_path / "tiny" / "serving.json").write_text('{"pinned": null, "labels": {"stable\\n": 1}}')
    with pytest.raises(RegistryError, match="label names"):
        registry.read_serving("tiny")


def test_a_serving_change_is_on_disk_when_the_write_returns(tmp_path, monkeypatch):
    """The file and the folder that names it are both synced: a pin answered just before a power
    cut is still the pin after it."""
    registry = Registry(tmp_path)
    publish_tiny(registry)
    synced, fsync = [], os.fsync

    def recording(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    registry.write_serving("tiny", {"pinned": 1, "labels": {}})
    assert synced[-1] == str(tmp_path / "tiny")
    assert any(Path(path).parent == tmp_path / "tiny" and Path(path).name.startswith(".tmp") for path in synced)


def test_a_serving_change_on_a_file_system_that_cannot_sync_folders_still_succeeds(tmp_path, monkeypatch):
    """Some network and FUSE file systems refuse fsync on a folder (EINVAL): the change is made by
    then, and every worker follows it, so the call that made it must not say it failed."""
    registry = Registry(tmp_path)
    publish_tiny(registry)
    fsync = os.fsync

    def no_folder_sync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", no_folder_sync)
    registry.write_serving("tiny", {"pinned": 1, "labels": {}})
    assert registry.read_serving("tiny")["pinned"] == 1


def test_a_serving_change_racing_the_removal_of_its_model_does_not_bring_the_model_back(tmp_path):
    registry = Registry(tmp_path)
    publish_tiny(registry)

    def removed_meanwhile(state):  # `rm -rf <registry>/tiny` finishing while an admin call computes its change
        shutil.rmtree(tmp_path / "tiny")
        return {**state, "pinned": None}

    with pytest.raises(FileNotFoundError):
        registry.update_serving("tiny", removed_meanwhile)
    assert not (tmp_path / "tiny").exists() and registry.model_names() == []


def test_symlink_out_of_the_registry_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    registry = Registry(tmp_path / "registry")
    (tmp_path / "registry" / "tiny").mkdir(parents=True)
    (tmp_path / "registry" / "tiny" / "1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RegistryError, match="outside the registry"):
        registry.model_path("tiny", 1)


def test_invalid_model_names_are_refused(tmp_path):
    with pytest.raises(RegistryError, match="not valid"):
        Registry(tmp_path).versions("../etc")
    with pytest.raises(RegistryError, match="not valid"):
        check_name("mnist\n")  # $ would match before the final newline
    assert not LABEL_PATTERN.match("stable\n") and LABEL_PATTERN.match("stable")
