"""The trainer end to end: CLI, config files, publishing, evaluation, determinism, real data."""

import contextlib
import dataclasses
import errno
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from allocations import traced_peak
from shared.forward import standardize
from shared.model_file import load_model, read_manifest, save_model
from shared.registry import Registry, RegistryError
from trainer import cli, memory, report, train
from trainer.datasets import load_dataset
from trainer.optimizers import AdamW
from users import ctrl_c_at_its_default


@pytest.fixture
def wine_csv(tmp_path):
    """A small regression CSV with a known linear target."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = 2 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] + 5
    path = tmp_path / "data.csv"
    lines = ["a,b,c,score"] + [f"{a:.5f},{b:.5f},{c:.5f},{t:.5f}" for (a, b, c), t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def blobs_npz(tmp_path):
    """Three well-separated Gaussian blobs in 5-D, as a generic NPZ classification dataset."""
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=4, size=(3, 5))
    y = rng.integers(0, 3, size=600)
    x = (centres[y] + rng.normal(size=(600, 5))).astype(np.float32)
    path = tmp_path / "blobs.npz"
    np.savez(path, x_train=x[:500], y_train=y[:500], x_test=x[500:], y_test=y[500:])
    return path


@pytest.fixture
def own_tmpdir(tmp_path_factory, monkeypatch) -> Path:
    """A temporary directory of the test's own ($TMPDIR, here and in the trainers it starts), where a run
    stopped before its model is saved keeps its epochs' metrics."""
    folder = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def run_cli(*args) -> int:
    return cli.main([str(a) for a in args])


def refused(capsys, *args) -> str:
    """What a command refused as a user error says: it exits 2 with one line on stderr."""
    capsys.readouterr()
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err.removeprefix("error: ").rstrip("\n")


def test_train_publishes_a_version_with_metrics_and_plots(tmp_path, blobs_npz, capsys):
    registry = tmp_path / "models"
    args = ["train", "--dataset", "npz", "--data-path", blobs_npz, "--name", "blobs", "--hidden", "16",
            "--epochs", "15", "--batch-size", "32", "--no-progress", "--publish", "--registry", registry]
    assert run_cli(*args) == 0
    assert run_cli(*args) == 0
    assert Registry(registry).versions("blobs") == [1, 2]
    folder = registry / "blobs" / "2"
    assert sorted(p.name for p in folder.iterdir()) == [
        "confusion.png", "learning_curves.png", "metrics.jsonl", "model.npz"]
    for png in ("confusion.png", "learning_curves.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = read_manifest(folder / "model.npz")
    assert manifest["version"] == 2 and manifest["name"] == "blobs"
    assert manifest["metrics"]["accuracy"] > 0.95
    assert manifest["training"]["config"]["hidden"] == [16]
    assert manifest["training"]["epochs_run"] == 15
    assert "--publish" in manifest["training"]["command"]
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in lines[:-1]] == list(range(1, 16))
    assert lines[-1]["event"] == "final" and lines[-1]["accuracy"] == manifest["metrics"]["accuracy"]

    capsys.readouterr()
    assert run_cli("evaluate", "--registry", registry, "--model", "blobs", "--version", 1,
                   "--data-path", blobs_npz) == 0
    out = capsys.readouterr().out
    assert "blobs v1 on blobs (x_test/y_test of blobs.npz)" in out and "accuracy" in out and "precision" in out


def test_regression_from_csv_learns_the_target_and_records_its_scaling(tmp_path, wine_csv):
    config = train.TrainConfig(dataset="csv", data_path=str(wine_csv), target="score", task="regression",
                               hidden=[32], epochs=60, lr=0.01, batch_size=32, progress=False)
    result = train.run(config, output_dir=str(tmp_path / "out"), log=lambda *_: None)
    assert result["metrics"]["rmse"] < 0.25 * result["metrics"]["rmse_of_mean_predictor"]
    model = load_model(tmp_path / "out" / "model.npz")
    assert model.manifest["output"]["target"] == "score"
    assert model.manifest["input"]["feature_names"] == ["a", "b", "c"]
    assert model.predict(np.array([[0, 0, 0]], np.float32))[0] == pytest.approx(5, abs=0.5)


def test_the_mean_baseline_predicts_the_training_mean_not_the_scored_one(tmp_path, wine_csv):
    """The RMSE beside a regressor's is that of always predicting the mean the model was trained
    on; the scored rows' own mean would be their standard deviation, a baseline that knows the
    answers' average."""
    config = train.TrainConfig(dataset="csv", data_path=str(wine_csv), target="score", task="regression",
                               hidden=[8], epochs=2, progress=False)
    result = train.run(config, output_dir=str(tmp_path / "out"), log=lambda *_: None)
    model = load_model(tmp_path / "out" / "model.npz")
    dataset = load_dataset("csv", path=wine_csv, target="score", task="regression")
    training_mean = model.manifest["output"]["scaling"]["mean"]
    y = dataset.y_test.astype(np.float64)
    assert abs(training_mean - y.mean()) > 1e-3  # else the two baselines would agree
    assert result["metrics"]["rmse_of_mean_predictor"] == pytest.approx(np.sqrt(np.mean((y - training_mean) ** 2)))
    assert result["metrics"]["mean_predictor"] == "training targets"
    assert "predicting the training mean: RMSE" in report.format_metrics(result["metrics"])


def test_config_file_with_flag_overrides(tmp_path, blobs_npz):
    config_file = tmp_path / "run.toml"
    config_file.write_text(f'dataset = "npz"\ndata_path = "{blobs_npz}"\nhidden = [8, 8]\n'
                           'activation = "leaky_relu(alpha=0.1)"\noptimizer = "nesterov"\nlr = 0.05\n'
                           'schedule = "step(step_size=2, gamma=0.5)"\nepochs = 4\nbatchnorm = true\n')
    args = cli.make_parser().parse_args(["train", "--config", str(config_file), "--epochs", "3"])
    config = cli.config_from_args(args)
    assert (config.hidden, config.epochs, config.optimizer, config.batchnorm) == ([8, 8], 3, "nesterov", True)
    result = train.run(config, output_dir=str(tmp_path / "out"), log=lambda *_: None)
    assert [round(row["lr"], 6) for row in result["history"]] == [0.05, 0.05, 0.025]
    layers = read_manifest(tmp_path / "out" / "model.npz")["layers"]
    assert layers[0]["batchnorm"] == "folded"
    assert layers[1] == {"type": "activation", "name": "leaky_relu", "alpha": 0.1}


def test_a_config_files_relative_paths_are_read_from_its_own_folder(tmp_path, blobs_npz, monkeypatch, capsys):
    """A config file beside its data runs from any folder: its data_path is the file next to it, not one
    of that name in the folder the run starts in; a flag's path stays relative to the current folder."""
    (tmp_path / "run.toml").write_text(f'dataset = "npz"\ndata_path = "{blobs_npz.name}"\nhidden = [4]\nepochs = 1\n'
                                       'progress = false\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_cli("train", "--config", "../run.toml", "--output", "out") == 0, capsys.readouterr().err
    assert read_manifest(elsewhere / "out" / "model.npz")["training"]["dataset"]["name"] == "blobs"
    shutil.copy(blobs_npz, elsewhere / "other.npz")
    assert run_cli("train", "--config", "../run.toml", "--data-path", "other.npz", "--output", "out") == 0
    assert read_manifest(elsewhere / "out" / "model.npz")["training"]["dataset"]["name"] == "other"


def test_the_recorded_command_of_a_config_file_run_reproduces_it_after_the_file_changes(
        tmp_path, blobs_npz, monkeypatch, capsys):
    """The manifest's command is the run's recipe: a config file edited (or deleted) after the run must not
    change what it trains, so the file's settings are in the command, with the flags that overrode them."""
    (tmp_path / "run.toml").write_text(f'dataset = "npz"\ndata_path = "{blobs_npz.name}"\nhidden = [8, 4]\n'
                                       'optimizer = "momentum"\nmomentum = 0.5\nlr = 0.05\nepochs = 4\n'
                                       'batchnorm = true\nfold-batchnorm = false\nseed = 3\nprogress = false\n')
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", "--config", "run.toml", "--epochs", 2, "--output", "first") == 0, capsys.readouterr().err
    first = read_manifest(tmp_path / "first" / "model.npz")
    (tmp_path / "run.toml").write_text('dataset = "mnist"\nhidden = [512]\n')  # the file, reused for another run
    command = shlex.split(first["training"]["command"])
    assert command[:4] == ["python", "-m", "trainer", "train"] and "--config" not in command
    command[command.index("--output") + 1] = "again"
    assert run_cli(*command[3:]) == 0, capsys.readouterr().err
    again = read_manifest(tmp_path / "again" / "model.npz")
    assert again["training"]["config"] == first["training"]["config"]
    assert again["training"]["epochs_run"] == 2
    assert again["parameters"]["sha256"] == first["parameters"]["sha256"]


def test_the_recorded_command_sets_the_blas_threads_the_run_had(tmp_path):
    """BLAS's thread count changes a run's last bits: a run made with OPENBLAS_NUM_THREADS=1, its recorded command
    run in a shell that says 2, gives the same parameters (products large enough for OpenBLAS to split them)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 256)).astype(np.float32)
    np.savez(tmp_path / "wide.npz", x_train=x[:500], y_train=(x[:500, 0] > 0).astype(np.int64), x_test=x[500:],
             y_test=(x[500:, 0] > 0).astype(np.int64))
    path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]))
    blas = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")
    env = {name: value for name, value in os.environ.items() if name not in blas}
    env["PYTHONPATH"] = path
    done = subprocess.run([sys.executable, "-m", "trainer", "train", "--dataset", "npz", "--data-path", "wide.npz",
                           "--hidden", "512", "512", "--batch-size", "500", "--val-fraction", "0", "--epochs", "1",
                           "--no-progress", "--output", "first"], cwd=tmp_path, capture_output=True, text=True,
                          env={**env, "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    first = read_manifest(tmp_path / "first" / "model.npz")
    command = first["training"]["command"]
    assert command.startswith("OPENBLAS_NUM_THREADS=1 python -m trainer train ")
    command = command.replace("python -m trainer", f"{shlex.quote(sys.executable)} -m trainer", 1)
    command = command.replace("--output first", "--output again")
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                          env={**env, "OPENBLAS_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    assert read_manifest(tmp_path / "again" / "model.npz")["parameters"]["sha256"] == first["parameters"]["sha256"]


def test_a_diverging_run_with_clipping_names_its_epoch_and_learning_rate(blobs_npz, capsys):
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--optimizer", "sgd", "--lr", 1e30,
                   "--clip-norm", 1e30, "--epochs", 2, "--no-progress") == 2
    assert "the gradients are not finite (global norm " in (err := capsys.readouterr().err)
    assert "training diverged; lower the learning rate (epoch 1, learning rate 1e+30)" in err


def test_a_flag_of_0_turns_off_the_early_stopping_and_clipping_a_config_file_sets(tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text("patience = 3\nclip_norm = 5.0\n")
    args = cli.make_parser().parse_args(["train", "--config", str(config_file)])
    assert (cli.config_from_args(args).patience, cli.config_from_args(args).clip_norm) == (3, 5.0)
    args = cli.make_parser().parse_args(["train", "--config", str(config_file), "--patience", "0", "--clip-norm", "0"])
    assert (cli.config_from_args(args).patience, cli.config_from_args(args).clip_norm) == (None, None)


def test_a_limit_train_of_0_trains_on_every_row_whatever_the_config_file_says(tmp_path, blobs_npz, capsys):
    """A config file of quick runs (limit_train = 100) serves the full run too: --limit-train 0, as --help says."""
    config_file = tmp_path / "run.toml"
    config_file.write_text(f'dataset = "npz"\ndata_path = "{blobs_npz}"\nhidden = [4]\nepochs = 1\n'
                           'val_fraction = 0.0\nlimit_train = 100\nprogress = false\n')
    assert run_cli("train", "--config", config_file, "--output", tmp_path / "quick") == 0
    assert read_manifest(tmp_path / "quick" / "model.npz")["training"]["train_examples"] == 100
    capsys.readouterr()
    assert run_cli("train", "--config", config_file, "--limit-train", 0, "--output", tmp_path / "full") == 0, \
        capsys.readouterr().err
    training = read_manifest(tmp_path / "full" / "model.npz")["training"]
    assert (training["train_examples"], training["config"]["limit_train"]) == (500, None)


def test_a_config_key_set_twice_is_named(tmp_path, capsys):
    """TOML refuses a key given twice, saying only "Cannot overwrite a value": the error names the key."""
    config_file = tmp_path / "run.toml"
    config_file.write_text('lr = 0.1\nepochs = 2\n"lr" = 0.2\n')
    message = refused(capsys, "train", "--config", config_file)
    assert message == f"config {config_file} sets lr twice (again at line 3): keep one"


def test_a_config_key_set_twice_over_several_lines_is_named(tmp_path, capsys):
    """A list written over several lines, as TOML files often hold hidden = [...], set twice: tomllib names the line
    where the second value ends, which holds no key, and its own words ('Cannot overwrite a value') were shown."""
    config_file = tmp_path / "run.toml"
    config_file.write_text("hidden = [64]\nepochs = 2\nhidden = [\n  256,\n  128,\n]\n")
    message = refused(capsys, "train", "--config", config_file)
    assert message == f"config {config_file} sets hidden twice (again at line 3): keep one"


def test_unknown_config_key_is_a_clear_error_naming_the_key_meant(tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text("epochz = 3\nlerning_rate = 0.01\nzzz = 1\n[train]\nlr = 0.1\n")
    args = cli.make_parser().parse_args(["train", "--config", str(config_file)])
    with pytest.raises(cli.CommandError) as refused:
        cli.config_from_args(args)
    assert str(refused.value).startswith(
        "unknown config keys: 'epochz' (did you mean 'epochs'?); 'lerning_rate' (did you mean 'lr'?); 'train' is a "
        "table: write its keys at the top of the file, without the [train] line; 'zzz'; known keys: activation, ")


def test_a_csv_runs_config_file_reused_for_a_known_dataset_is_told_what_to_take_out_of_it(tmp_path, capsys):
    """The only way out named was "add --dataset csv or --dataset npz", the opposite of what --dataset mnist asked."""
    config_file = tmp_path / "run.toml"
    config_file.write_text('dataset = "csv"\ndata_path = "pets.csv"\ntarget = "kind"\ntask = "classification"\n')
    assert refused(capsys, "train", "--config", config_file, "--dataset", "mnist", "--no-progress") == (
        "mnist is a known dataset (classification): --data-path, --target apply to csv and npz files only: add "
        "--dataset csv or --dataset npz, or leave them out to train on mnist (take data_path, target out of the "
        "--config file, if set there)")


@pytest.mark.parametrize("config, flags, message", [
    ('dataset = "wine-quality"\nvariant = "white"\n', ["--dataset", "mnist"],
     "mnist has no variants (got variant='white'): --variant is wine-quality's; leave it out (take variant out of "
     "the --config file, if set there)"),
    ('dataset = "mnist"\ndata_dir = "mnist-files"\n', ["--dataset", "csv", "--data-path", "pets.csv"],
     "--data-dir applies to the known datasets (mnist, fashion-mnist, wine-quality); the csv dataset is read from "
     "--data-path pets.csv: leave --data-dir out (take data_dir out of the --config file, if set there)"),
])
def test_a_known_datasets_config_file_reused_for_another_is_told_what_to_take_out(tmp_path, capsys, config, flags,
                                                                                  message):
    """A setting of another dataset was refused without a way out; from a config file, not even the flag's."""
    config_file = tmp_path / "run.toml"
    config_file.write_text(config)
    assert refused(capsys, "train", "--config", config_file, *flags, "--target", "kind", "--task", "classification",
                   "--no-progress") == message


@pytest.mark.parametrize("line, hint", [
    ('activation = relu',
     'Invalid value (at line 2, column 14): text is written in quotes in TOML: activation = "relu"'),
    ('schedule = cosine(min_lr=1e-5)  # to 0', 'schedule = "cosine(min_lr=1e-5)"'),
    ('batchnorm = True', "write batchnorm = true: TOML's true and false are in lower case"),
])
def test_a_config_value_written_as_on_the_command_line_is_told_how_toml_writes_it(tmp_path, capsys, line, hint):
    """A flag's value copied into the file as it is was refused as "Invalid value (at line 2, column 14)" alone."""
    config_file = tmp_path / "run.toml"
    config_file.write_text(f"epochs = 3\n{line}\n")
    assert refused(capsys, "summary", "--config", config_file).endswith(hint)


def test_a_commands_own_flag_in_a_config_file_is_told_to_go_on_the_command_line(tmp_path, capsys):
    """'inputs' was told "did you mean 'init'?", a key of another meaning, and 'samples' nothing."""
    config_file = tmp_path / "net.toml"
    config_file.write_text("hidden = [16]\ninputs = 20\nsamples = 5\n")
    assert refused(capsys, "summary", "--config", config_file).startswith(
        "unknown config keys: 'inputs' is a flag of gradcheck and summary, not a setting of the run: give it on the "
        "command line (--inputs); 'samples' is a flag of gradcheck and overfit, not a setting of the run: give it on "
        "the command line (--samples); known keys: ")


def test_every_commands_own_flag_in_a_config_file_is_told_the_commands_that_take_it(tmp_path, capsys):
    """The commands that take each flag were written out by hand beside the parser that defines them: evaluate's
    --model and --version, in a config file, were told "did you mean 'init'?" or nothing, as any flag added
    later would have been. Every flag of every command that is no config key nor where a run goes is told the
    commands that take it, as the parser has them."""
    parser = cli.make_parser()
    keys = {f.name for f in dataclasses.fields(train.TrainConfig)} | {"publish", "registry", "output", "new_interface"}
    flags = {flag for command in parser.commands.values() for flag in command._option_string_actions
             if flag.startswith("--") and flag != "--help" and flag[2:].replace("-", "_") not in keys
             and not flag.startswith("--no-")}
    assert {"--inputs", "--samples", "--config", "--model", "--version"} <= flags
    config_file = tmp_path / "run.toml"
    for flag in sorted(flags):
        config_file.write_text(f"{flag[2:].replace('-', '_')} = 1\n")
        owners = [name for name, command in parser.commands.items() if flag in command._option_string_actions]
        said = f"{', '.join(owners[:-1])} and {owners[-1]}" if len(owners) > 1 else owners[0]
        assert refused(capsys, "summary", "--config", config_file).startswith(
            f"unknown config keys: '{flag[2:].replace('-', '_')}' is a flag of {said}, not a setting of the run: give "
            f"it on the command line ({flag}); known keys: ")
    config_file.write_text("version = 2\n")
    assert "'version' is a flag of evaluate, not a setting" in refused(capsys, "train", "--config", config_file)


def test_a_run_that_learned_nothing_says_so_and_every_run_names_its_parameters_checksum(tmp_path, blobs_npz, capsys):
    """A zero-initialised network answers one class for every input: the run still saves it, so its
    output says what the scores mean; and the checksum a learner compares across two runs is the
    parameters', which the manifest records (model.npz records when it was made, so it differs)."""
    data = ["--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress", "--seed", 0]
    capsys.readouterr()
    assert run_cli("train", *data, "--init", "zeros", "--output", tmp_path / "zeros") == 0
    out = capsys.readouterr().out
    assert "on the 100 test rows:\naccuracy " in out
    assert "note: it answers one class for 100% of the test rows: the network learned nothing useful." in out
    assert "trainer overfit" in out
    assert run_cli("train", *data, "--output", tmp_path / "he") == 0
    out = capsys.readouterr().out
    assert "learned nothing" not in out
    recorded = read_manifest(tmp_path / "he" / "model.npz")["parameters"]["sha256"]
    assert f"parameters sha256 {recorded} (the same seed and data give the same" in out
    # A model that learned, scored on a test split where one class is the majority, is not told otherwise.
    confusion = [[85, 15], [2, 8]]  # 84 % right, though 90 % of the rows are of the first class
    assert report.learned_nothing({"accuracy": 0.84, "confusion": confusion, "per_class": []}) is None
    assert report.learned_nothing({"rmse": 0.9, "mae": 0.7, "rmse_of_mean_predictor": 0.8,
                                   "mean_predictor": "training targets"}).startswith(
        "note: RMSE 0.9000 is no better than predicting the training mean: the network learned nothing useful.")


@pytest.mark.parametrize("value, shown", [
    (0.0, "0.0000"), (0.5, "0.5000"), (0.01, "0.0100"), (0.0099999, "0.0100"), (0.0002205, "0.0002205"),
    (-0.0002205, "-0.0002205"), (99999.99999, "1e+05"), (1234.5, "1234.5000"), (float("nan"), "nan"),
])
def test_a_figure_is_shown_in_one_form_either_side_of_where_its_rounding_lands(value, shown):
    """0.0099999 read "0.01" beside 0.01's "0.0100", and 99999.99999 "100000.0000" beside 1e5's "1e+05"."""
    assert report.figure(value) == shown


def test_errors_of_a_target_in_small_units_are_shown_not_rounded_to_zero(tmp_path, wine_csv, capsys):
    """A regression target measured in small units (a concentration of 0.0002, say) was scored "RMSE 0.0000
    MAE 0.0000 (predicting the training mean: RMSE 0.0000)": the figures said nothing, in train and evaluate."""
    lines = wine_csv.read_text().splitlines()
    small = tmp_path / "small.csv"
    small.write_text("\n".join([lines[0]] + [f"{line.rsplit(',', 1)[0]},{float(line.rsplit(',', 1)[1]) * 1e-5:.6g}"
                                              for line in lines[1:]]) + "\n")
    capsys.readouterr()
    assert run_cli("train", "--dataset", "csv", "--data-path", small, "--target", "score", "--task", "regression",
                   "--hidden", 8, "--epochs", 2, "--no-progress", "--output", tmp_path / "run") == 0
    out = capsys.readouterr().out
    metrics = read_manifest(tmp_path / "run" / "model.npz")["metrics"]
    assert f"RMSE {metrics['rmse']:.4g}   MAE {metrics['mae']:.4g}   (predicting the training mean: RMSE " \
           f"{metrics['rmse_of_mean_predictor']:.4g})" in out
    assert "0.0000" not in out
    assert report.format_metrics({"rmse": 0.6392, "mae": 0.4877, "rmse_of_mean_predictor": 0.8, "n": 9}) == (
        "RMSE 0.6392   MAE 0.4877   (predicting their own mean: RMSE 0.8000)   n=9")  # as before, in larger units


def test_same_seed_gives_bit_identical_models(tmp_path, blobs_npz):
    def weights(out):
        config = train.TrainConfig(dataset="npz", data_path=str(blobs_npz), hidden=[16], epochs=3,
                                   dropout=0.2, batchnorm=True, progress=False, seed=7)
        train.run(config, output_dir=str(tmp_path / out), log=lambda *_: None)
        return read_manifest(tmp_path / out / "model.npz")["parameters"]["sha256"]

    assert weights("a") == weights("b")


def test_early_stopping_restores_the_best_epoch(tmp_path):
    """The saved model is the best epoch's, not the last one's: its loss on the validation rows is
    the best val_loss the history records, whether patience or the epoch count ended the run."""
    # Labels that are pure noise: the network memorises the training part and validation loss
    # climbs within a few epochs.
    rng = np.random.default_rng(2)
    noise = tmp_path / "noise.npz"
    np.savez(noise, x_train=rng.normal(size=(300, 20)), y_train=rng.integers(0, 3, 300),
             x_test=rng.normal(size=(50, 20)), y_test=rng.integers(0, 3, 50))
    config = train.TrainConfig(dataset="npz", data_path=str(noise), hidden=[128], epochs=200, lr=0.01,
                               patience=3, progress=False, val_fraction=0.3)
    prepared = train.prepare(load_dataset("npz", path=noise), config)

    def saved_val_loss(out):
        probabilities = load_model(tmp_path / out / "model.npz").predict_proba(prepared.x_val)
        return float(-np.log(probabilities[np.arange(len(prepared.y_val)), prepared.y_val]).mean())

    lines = []
    result = train.run(config, output_dir=str(tmp_path / "out"), log=lines.append)
    history = result["history"]
    assert len(history) < 200
    best = min(history, key=lambda row: row["val_loss"])
    assert len(history) == best["epoch"] + 3
    assert read_manifest(tmp_path / "out" / "model.npz")["training"]["best_epoch"] == best["epoch"]
    assert "early stopping: no validation improvement for 3 epochs" in lines
    assert f"restoring epoch {best['epoch']}, the best on validation (val_loss {best['val_loss']:.4f})" in lines
    assert saved_val_loss("out") == pytest.approx(best["val_loss"], rel=1e-4)
    assert history[-1]["val_loss"] > best["val_loss"] * 1.001  # else any epoch's weights would pass

    # A run that ends before its patience runs out restores the best epoch too, and says so: the
    # scores that follow are that epoch's, not the last one's.
    lines.clear()
    config = dataclasses.replace(config, epochs=best["epoch"] + 2, patience=50)
    result = train.run(config, output_dir=str(tmp_path / "short"), log=lines.append)
    assert len(result["history"]) == best["epoch"] + 2
    assert not any(line.startswith("early stopping") for line in lines)
    assert f"restoring epoch {best['epoch']}, the best on validation (val_loss {best['val_loss']:.4f})" in lines
    assert read_manifest(tmp_path / "short" / "model.npz")["training"]["best_epoch"] == best["epoch"]
    assert saved_val_loss("short") == pytest.approx(best["val_loss"], rel=1e-4)


def test_trainer_and_file_predict_the_same(tmp_path, blobs_npz):
    """The exported file, run by the forward module the service uses, reproduces the trainer's
    own eval-mode network (batch norm folded at export)."""
    config = train.TrainConfig(dataset="npz", data_path=str(blobs_npz), hidden=[16, 16], epochs=5,
                               batchnorm=True, dropout=0.1, progress=False)
    dataset = load_dataset("npz", path=blobs_npz)
    prepared = train.prepare(dataset, config)
    network = train.build_network(config, dataset)
    train.fit(network, train.build_optimizer(config), train.build_schedule(config), prepared, config,
              log=lambda *_: None)
    x = dataset.x_test
    expected = network.predict_proba(standardize(x, prepared.normalization))
    for fold in (True, False):
        layers, arrays = network.export(fold_batchnorm=fold)
        manifest = train.make_manifest("blobs", config, prepared, [], layers, "test")
        train.write_version(tmp_path, 1, arrays, manifest, prepared, [], make_plots=False)
        model = load_model(tmp_path / "model.npz")
        np.testing.assert_allclose(model.predict_proba(x), expected, rtol=1e-4, atol=1e-5)
        assert (model.predict(x) == expected.argmax(axis=1)).all()


def test_served_model_keeps_precision_when_features_sit_far_from_zero(tmp_path):
    """A feature like a wine's density (mean ~1, std ~0.002) must not lose float32 precision in the
    served model: folding the normalisation into the first layer would cancel large terms."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4))
    y = x @ [1.0, -2.0, 0.5, 0.3] + 5
    x = (x * [0.002, 0.1, 1.0, 30.0] + [0.997, 1000.0, 0.0, -50.0]).astype(np.float32)
    data = tmp_path / "offset.npz"
    np.savez(data, x=x, y=y.astype(np.float32))
    config = train.TrainConfig(dataset="npz", data_path=str(data), hidden=[16], epochs=20, lr=0.01,
                               val_fraction=0.0, progress=False)
    dataset = load_dataset("npz", path=data)
    prepared = train.prepare(dataset, config)
    network = train.build_network(config, dataset)
    train.fit(network, train.build_optimizer(config), train.build_schedule(config), prepared, config,
              log=lambda *_: None)
    expected = network.forward(standardize(dataset.x_test, prepared.normalization), training=False)[:, 0]
    layers, arrays = network.export()
    train.write_version(tmp_path, 1, arrays, train.make_manifest("offset", config, prepared, [], layers, "test"),
                        prepared, [], make_plots=False)
    served = load_model(tmp_path / "model.npz").forward(dataset.x_test)[:, 0]
    np.testing.assert_allclose(served, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_batchnorm_training_leaves_out_a_lone_last_example(tmp_path):
    """33 rows in batches of 32 would end each epoch on a batch of one, which batch norm cannot
    normalise; the epoch leaves that (shuffled) example out instead of failing."""
    rng = np.random.default_rng(4)
    data = tmp_path / "odd.npz"
    np.savez(data, x_train=rng.normal(size=(33, 5)).astype(np.float32), y_train=np.arange(33) % 2,
             x_test=rng.normal(size=(8, 5)).astype(np.float32), y_test=np.arange(8) % 2)
    config = train.TrainConfig(dataset="npz", data_path=str(data), hidden=[8], epochs=3, batch_size=32,
                               batchnorm=True, val_fraction=0.0, progress=False)
    result = train.run(config, output_dir=str(tmp_path / "out"), log=lambda *_: None)
    assert len(result["history"]) == 3 and all(math.isfinite(row["train_loss"]) for row in result["history"])


def test_without_a_terminal_each_epoch_is_one_line(tmp_path, blobs_npz, capsys):
    """Progress bars only where stderr is a terminal: a log file gets one line per epoch, not the
    bar's redrawn frames."""
    lines = []
    config = train.TrainConfig(dataset="npz", data_path=str(blobs_npz), hidden=[8], epochs=2)  # progress on
    train.run(config, output_dir=str(tmp_path / "out"), log=lines.append)
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert "\r" not in capsys.readouterr().err


def test_overfit_command_memorises_a_tiny_subset(blobs_npz, capsys):
    assert run_cli("overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 32,
                   "--hidden", 32, "--epochs", 100) == 0
    assert "ok: the network can memorise a tiny subset" in capsys.readouterr().out


def test_overfit_counts_one_example_in_the_singular(tmp_path, capsys):
    path = tmp_path / "one.csv"
    path.write_text("a,b,kind\n" + "".join(f"{i / 10},{-i / 5},{i % 3}\n" for i in range(20)))
    flags = ["--dataset", "csv", "--data-path", path, "--target", "kind", "--task", "classification"]
    assert run_cli("overfit", *flags, "--samples", 1, "--hidden", 4, "--epochs", 1) == 1
    out = capsys.readouterr().out
    assert "overfit: 1 example, 1 epoch, training accuracy" in out and "in the 1 epoch given" in out, out


def test_overfit_leaves_out_examples_no_network_can_tell_apart(tmp_path, capsys):
    """A csv of a few coarse columns holds rows with the same inputs and different classes: kept in the
    subset, they failed a correct network ("something is wrong", exit 1) after 3,000 epochs."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, size=(300, 3))
    y = (x.sum(axis=1) + rng.integers(0, 3, 300) > 7).astype(int)
    path = tmp_path / "coarse.csv"
    path.write_text("a,b,c,label\n" + "".join(f"{a},{b},{c},{label}\n" for (a, b, c), label in zip(x, y)))
    flags = ["--dataset", "csv", "--data-path", path, "--target", "label", "--task", "classification"]
    assert run_cli("overfit", *flags, "--hidden", 32, 32) == 0
    out = capsys.readouterr().out
    assert ("note: 2 of the 64 examples share their inputs with an example of another class: no network can tell "
            "them apart, so the check leaves them out") in out
    assert "overfit: 62 examples" in out and "ok: the network can memorise a tiny subset" in out
    path.write_text("a,label\n" + "".join(f"{i % 2},{i % 3 % 2}\n" for i in range(40)))
    assert "this data's inputs do not tell its classes apart" in refused(capsys, "overfit", *flags, "--samples", 16)


def test_overfit_command_says_something_is_wrong(blobs_npz, capsys):
    # A learning rate this small cannot learn anything in 5 epochs: the check must say so.
    assert run_cli("overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 32,
                   "--hidden", 32, "--epochs", 5, "--lr", 1e-12) == 1
    assert "something is wrong" in capsys.readouterr().out


@pytest.mark.parametrize("flags, clue", [
    (["--init", "zeros"], "is the labels' entropy: it answers every example alike, as units that are dead or "
                          "identical make it (a zeros init"),
    (["--lr", 1e-9], "The loss fell only from "),
    (["--hidden", 1, "--activation", "tanh"], "not memorised: the narrowest hidden layer has 1 unit, fewer than the "
                                              "3 classes"),
])
def test_overfit_says_what_the_losses_of_a_failed_run_point_to(blobs_npz, capsys, flags, clue):
    """"Something is wrong" alone sent a learner to look everywhere; a zeros init, a learning rate far
    off and a layer narrower than the classes each leave their mark on the losses or the shape."""
    assert run_cli("overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 32, "--hidden", 8,
                   *flags) == 1
    assert clue in capsys.readouterr().out
    rising = cli._overfit_clue([{"train_loss": 2.0}], 40.0, train.TrainConfig(lr=5.0), np.zeros(4), False)
    assert rising == " The loss rose from 2 to 40: the learning rate (5) is too high."
    # a regression that answers the mean of its standardised targets: dead units, not the learning rate
    flat = cli._overfit_clue([{"train_loss": 1.0}], 1.0, train.TrainConfig(), np.array([-1.0, 1.0, -1.0, 1.0]), False)
    assert flat.startswith(" Its loss, 1.0000, is the targets' variance: it answers every example alike")


def test_overfit_judges_the_memorised_subset_in_inference_mode(blobs_npz, capsys):
    """Dropout's noise in the last training epoch is not a failure to memorise: the verdict
    comes from the trained network's predictions on the subset, as inference makes them."""
    assert run_cli("overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 32,
                   "--hidden", 32, "--epochs", 100, "--dropout", 0.5) == 0
    assert "ok: the network can memorise a tiny subset" in capsys.readouterr().out


def test_overfit_is_not_fooled_by_one_example_right_at_chances_loss(blobs_npz, capsys):
    """One example "memorised" after an epoch at a loss near ln(3) passed, and a run cut short by the
    user's --epochs was told "something is wrong"."""
    assert run_cli("overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 1, "--hidden", 8) == 0
    loss = float(re.search(r"loss ([0-9.]+)", capsys.readouterr().out)[1])
    assert loss < 0.5 * math.log(3)
    assert run_cli("overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 32, "--hidden", 8,
                   "--epochs", 1, "--lr", 1e-6) == 1
    out = capsys.readouterr().out
    assert "not memorised in the 1 epoch given: leave --epochs out to train until it is" in out


def test_overfit_failure_names_the_regularisation_working_against_it(blobs_npz, capsys):
    assert run_cli("overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 32,
                   "--hidden", 32, "--epochs", 5, "--lr", 1e-12, "--dropout", 0.5) == 1
    out = capsys.readouterr().out
    assert "something is wrong" in out and "This run also regularises (--dropout)" in out


@pytest.mark.parametrize("flags, message", [
    (["--activation", "foo"], "unknown activation 'foo'"),
    (["--init", "bar"], "unknown initializer 'bar'"),
    (["--augment", "warp(strength=2)"], "unknown augmentation 'warp'"),
    (["--augment", "affine(shift=2) + warp"], "unknown augmentation 'warp'"),
    (["--augment", "affine(shift=1) + stroke(width=1)"], "no argument 'width' (its arguments: widen, thin)"),
    (["--augment", "stroke(widen=2)"], "widen <= 1"),
    (["--augment", "affine(shift=14)"], "shift < 14 (half the 28-pixel field)"),
    (["--schedule", "exp"], "unknown schedule 'exp'"),
    (["--optimizer", "adam(x={[1]: 2})"], "arguments must be literal"),
    (["--optimizer=" + "-" * 100_000 + "1"], "cannot parse '-----"),
    (["--optimizer", "adam(x=" + "[" * 500 + "]" * 500 + ")"], "cannot parse"),
    (["--optimizer", "adam(betas=0.1)"], "betas must be a list of 2 finite numbers, got 0.1"),
    (["--optimizer", "adam(0.1)"], "optimizer 'adam(0.1)' gives values without their names"),
    (["--optimizer", "adam(betas=(0.9,))"], "betas must be a list of 2 finite numbers"),
    (["--optimizer", "adam(beta1=2)"], "no argument 'beta1' (its arguments: betas, eps)"),
    (["--optimizer", "adam(eps=1e999)"], "eps must be a finite number, got inf"),
    (["--activation", 'leaky_relu(alpha="x")'], "alpha must be a finite number, got 'x'"),
    (["--schedule", "step(step_size=True)"], "step_size must be a finite whole number, got True"),
    (["--optimizer", "momentum(nesterov=1)"], "nesterov must be True or False, got 1"),
])
def test_a_bad_component_is_refused_before_the_data_is_read(tmp_path, capsys, flags, message):
    """The data file does not exist: the component's error must come first, as it would before
    a download or a long load."""
    assert message in refused(capsys, "train", "--dataset", "csv", "--data-path", tmp_path / "absent.csv",
                              "--target", "y", "--task", "regression", "--no-progress", *flags)


@pytest.mark.parametrize("flags, message", [
    (["--activation", "relux"], "unknown activation 'relux' (did you mean 'relu'?); known: leaky_relu, relu, "),
    (["--init", "he_norml"], "unknown initializer 'he_norml' (did you mean 'he_normal'?); known: "),
    (["--optimizer", "adm"], "unknown optimizer 'adm' (did you mean 'adam'?); known: "),
    (["--schedule", "cosin(min_lr=1e-5)"], "unknown schedule 'cosin' (did you mean 'cosine'?); known: "),
    (["--augment", "afine(shift=2)"], "unknown augmentation 'afine' (did you mean 'affine'?); known: "),
    (["--activation", "swish"], "unknown activation 'swish'; known: "),
    (["--dataset", "mnst"], "unknown dataset 'mnst' (did you mean 'mnist'?): choose one of "),
])
def test_a_mistyped_component_or_dataset_name_is_told_the_name_meant(capsys, flags, message):
    assert message in refused(capsys, "summary", *flags)


@pytest.mark.parametrize("command", ["train", "summary", "evaluate"])
def test_a_data_files_path_given_as_the_dataset_is_told_the_flags_that_read_it(capsys, command):
    """--dataset wines.csv, the path where the dataset's kind belongs, was told "unknown dataset 'wines.csv':
    choose one of mnist, fashion-mnist, wine-quality, csv, npz", with no word of --data-path."""
    flags = ["--model", "mnist", "--registry", Path(__file__).resolve().parents[1] / "models"] \
        if command == "evaluate" else []
    assert refused(capsys, command, *flags, "--dataset", "data/wines.csv") == (
        "unknown dataset 'data/wines.csv': to read a data file, give --dataset csv --data-path data/wines.csv")
    assert refused(capsys, command, *flags, "--dataset", "blobs.NPZ") == (
        "unknown dataset 'blobs.NPZ': to read a data file, give --dataset npz --data-path blobs.NPZ")


def test_momentum_for_an_optimizer_without_it_is_refused():
    """It would be silently ignored by adam, adamw and sgd; given inside the optimizer's own spec,
    the message once sent the user to --momentum, which was then refused for that optimizer."""
    for optimizer in ("adam", "adamw", "sgd"):
        for values in ({"optimizer": optimizer, "momentum": 0.5}, {"optimizer": f"{optimizer}(momentum=0.9)"}):
            with pytest.raises(ValueError, match=f"momentum applies to the momentum and nesterov optimizers, "
                                                 f"not '{optimizer}'"):
                train.TrainConfig.from_dict(values)
    assert train.build_optimizer(train.TrainConfig(optimizer="nesterov", momentum=0.5)).momentum == 0.5
    assert train.build_optimizer(train.TrainConfig(optimizer="momentum")).momentum == 0.9


@pytest.mark.parametrize("epochs", [1, 3])
def test_diverging_training_stops_with_advice_not_an_unsavable_model(tmp_path, epochs, capsys):
    """A learning rate far too large: the loss (or, after an epoch's last step, the weights) turns
    infinite. The run says so in one line, whatever epoch it happens in, and writes nothing."""
    rng = np.random.default_rng(0)
    data = tmp_path / "big.npz"
    np.savez(data, x=(rng.normal(size=(64, 4)) * 1e3).astype(np.float32), y=rng.normal(size=64).astype(np.float32))
    with np.errstate(all="ignore"):
        code = run_cli("train", "--dataset", "npz", "--data-path", data, "--hidden", 8, "--epochs", epochs,
                       "--batch-size", 64, "--optimizer", "sgd", "--lr", 1e20, "--no-progress",
                       "--output", tmp_path / "out")
    assert code == 2
    err = capsys.readouterr().err
    assert "lower the learning rate" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "model.npz").exists()


def test_summary_and_gradcheck_commands():
    out = subprocess.run([sys.executable, "-m", "trainer", "summary", "--hidden", "256", "128"],
                         capture_output=True, text=True, check=True).stdout
    assert "total parameters: 235,146" in out
    done = subprocess.run([sys.executable, "-m", "trainer", "gradcheck"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all gradients match" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "abc"], "argument --epochs: invalid int value: 'abc' (see python -m trainer train --help)"),
    (["evaluate", "--version", "x"], "argument --version: expected a whole number, got 'x'"),
    # Written as a Python list or a config file's, the sizes were an "invalid int value" alone.
    (["summary", "--hidden", "256,128"], "argument --hidden: expected a whole number, got '256,128': give each size "
                                         "as an argument of its own, --hidden 256 128 (see python -m trainer summary"),
    (["train", "--hidden", "[64, 32]"], "got '[64, 32]': give each size as an argument of its own, --hidden 64 32"),
    (["train", "--hidden", "64", "x"], "argument --hidden: expected a whole number, got 'x' (see"),
    (["evalute"], "invalid choice: 'evalute'"),
    # Sent to the top-level --help, which lists none of the command's flags.
    (["overfit", "--publish"], "unrecognized arguments: --publish (--publish is a flag of train and gradcheck) "
                               "(see python -m trainer overfit --help)"),
    # No suggestion was made, and allow_abbrev=False no longer reads --epoch as --epochs.
    (["summary", "--actvation", "tanh"], "unrecognized arguments: --actvation tanh (--actvation: did you mean "
                                         "--activation?) (see python -m trainer summary --help)"),
    (["train", "--epoch=5", "--batchsize", "3"], "(--epoch: did you mean --epochs?; --batchsize: did you mean "
                                                 "--batch-size?)"),
    (["evaluate", "--model", "m", "--epochs", "5"], "(--epochs is a flag of train, gradcheck, overfit and summary)"),
    (["summary", "--batchnorm", "true"], "unrecognized arguments: true (--batchnorm takes no value: give --batchnorm "
                                         "or --no-batchnorm alone) (see"),
    (["train", "--publish", "yes"], "(--publish takes no value: give --publish alone)"),
    (["train", "--", "x"], "unrecognized arguments: -- x (see"),
    (["train", "--epochs", "1", "5"], "unrecognized arguments: 5 (see python -m trainer train --help)"),
    # argparse took the flag's value for the command: "invalid choice: 'mnist'".
    (["--dataset", "mnist", "train", "--epochs", "1"],
     "--dataset comes before the command: give the command first, then its flags (python -m trainer train --dataset "
     "mnist ...)"),
    (["--epochs", "5"], "(python -m trainer COMMAND --epochs 5 ..., COMMAND one of train, publish, evaluate, "),
])
def test_a_mistyped_flag_is_refused_in_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        run_cli(*args)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err


def test_a_setting_given_twice_is_refused_not_left_to_the_last(tmp_path, blobs_npz, capsys):
    """leaky_relu(alpha=0.2, alpha=0.3) trained with 0.3, and a config file's batch-size and
    batch_size both set gave the second, without a word."""
    assert "alpha is given more than once" in refused(
        capsys, "train", "--activation", "leaky_relu(alpha=0.2, alpha=0.3)", "--output", tmp_path / "a")
    config = tmp_path / "run.toml"
    config.write_text("batch-size = 7\nbatch_size = 9\n")
    assert refused(capsys, "train", "--config", config, "--output", tmp_path / "b") == (
        f"config {config} sets batch_size twice (written with - and with _): keep one")
    # summary, given a data file without its kind, printed the default network as if it had none
    assert refused(capsys, "summary", "--data-path", blobs_npz) == (
        "--data-path describes a csv or npz file: add --dataset csv or --dataset npz")


def test_the_plots_of_a_run_saved_in_a_folder_name_no_version(tmp_path, blobs_npz, monkeypatch):
    """Saved with --output, a run's plots said "blobs v1", a version it did not have (publish numbers it,
    v2 or v5, and copies the plots as they are): they name the model alone."""
    titles = []
    plot = report.plot_learning_curves
    monkeypatch.setattr(report, "plot_learning_curves", lambda path, history, title, *kept: (
        titles.append(title), plot(path, history, title, *kept)))
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   "--output", tmp_path / "run") == 0
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   "--publish", "--registry", tmp_path / "models") == 0
    assert titles == ["blobs", "blobs v1"]


def test_a_regression_reports_its_validation_error_in_the_targets_units(tmp_path, capsys):
    """Its losses are the standardised target's (0.1 beside a test RMSE of 0.8 looked like a bug):
    each epoch also gives the validation RMSE in the target's own units, as the test score is."""
    path = tmp_path / "prices.npz"
    x = np.random.default_rng(0).normal(size=(400, 3))
    np.savez(path, x=x, y=100 + 30 * x[:, 0] + np.random.default_rng(1).normal(scale=5, size=400))
    assert run_cli("train", "--dataset", "npz", "--data-path", path, "--epochs", 3, "--no-progress",
                   "--val-fraction", 0.2, "--output", tmp_path / "run") == 0
    assert "val_rmse=" in capsys.readouterr().out
    std = load_model(tmp_path / "run" / "model.npz").manifest["output"]["scaling"]["std"]
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][:-1]
    assert [row["val_rmse"] for row in epochs] == pytest.approx([math.sqrt(row["val_loss"]) * std for row in epochs])


@pytest.mark.parametrize("warm_up", [("--warmup-epochs", "{n}"), ("--schedule", "warmup({n})")],
                         ids=["--warmup-epochs", "warmup schedule"])
def test_a_warm_up_longer_than_the_epochs_refit_picks_does_not_end_the_run(tmp_path, capsys, warm_up):
    """Refit retrains for the epoch validation picked, on the searched run's schedule: checked as
    a run of its own, its warm-up took "the whole run" and the trained model was lost. overfit's
    warm-up was checked against 10 epochs, not the hundreds it trains for."""
    path = tmp_path / "noise.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(300, 4)), y=rng.integers(0, 2, 300))
    flag, value = warm_up
    assert run_cli("train", "--dataset", "npz", "--data-path", path, "--epochs", 40, flag, value.format(n=3),
                   "--patience", 3, "--refit", "--lr", 0.05, "--hidden", 64, 64, "--no-progress",
                   "--output", tmp_path / "run") == 0
    assert "for 1 epoch\n" in capsys.readouterr().out  # validation picked the first epoch, within the warm-up
    assert (tmp_path / "run" / "model.npz").exists()
    assert run_cli("overfit", "--dataset", "npz", "--data-path", path, "--samples", 16, flag, value.format(n=20)) == 0


def test_early_stopping_with_a_patience_of_one_says_one_epoch(tmp_path, capsys):
    """--patience 1 stopped the run with 'no validation improvement for 1 epochs'."""
    path = tmp_path / "noise.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(300, 4)), y=rng.integers(0, 2, 300))
    assert run_cli("train", "--dataset", "npz", "--data-path", path, "--epochs", 40, "--patience", 1, "--lr", 0.05,
                   "--hidden", 64, 64, "--no-progress", "--output", tmp_path / "run") == 0
    assert "early stopping: no validation improvement for 1 epoch\n" in capsys.readouterr().out


def test_the_restored_epochs_validation_loss_reads_as_its_epoch_line_shows_it(tmp_path, capsys):
    """A small validation loss (a target that the columns give exactly) was shown in four digits by the epoch lines
    and in four decimals where the best epoch was restored: 'val_loss=0.0002205' then 'val_loss 0.0002'."""
    rows = np.random.default_rng(3).uniform(-1, 1, size=(500, 2)).round(4)
    lines = ["a,b,y", *(f"{a},{b},{a + 2 * b:.5f}" for a, b in rows)]
    (tmp_path / "lin.csv").write_text("\n".join(lines) + "\n")
    assert run_cli("train", "--dataset", "csv", "--data-path", tmp_path / "lin.csv", "--target", "y", "--task",
                   "regression", "--hidden", 16, "--lr", 0.03, "--epochs", 300, "--patience", 5, "--no-progress",
                   "--output", tmp_path / "run") == 0
    out = capsys.readouterr().out
    restored = re.search(r"^restoring epoch (\d+), the best on validation \(val_loss (\S+)\)$", out, re.M)
    assert restored, out
    epoch_line = re.search(rf"^epoch {restored[1]}/300 .* val_loss=(\S+) ", out, re.M)
    assert float(epoch_line[1]) < 0.01 and restored[2] == epoch_line[1], out


def test_bad_flags_are_clear_errors(tmp_path, capsys):
    assert run_cli("train", "--dataset", "nonsense", "--output", tmp_path) == 2
    assert "unknown dataset 'nonsense'" in capsys.readouterr().err
    assert run_cli("train", "--dataset", "npz", "--data-path", tmp_path / "absent.npz") == 2


@pytest.mark.parametrize("flag, value, message", [
    ("--limit-train", -1, "--limit-train -1: must be 0 (every row) or more"),
    ("--patience", -2, "--patience -2: must be 0 (no early stopping) or more"),
    ("--clip-norm", -0.5, "--clip-norm -0.5: must be 0 (no clipping) or more"),
])
def test_a_negative_flag_that_zero_turns_off_is_refused_with_its_real_rule(blobs_npz, capsys, flag, value, message):
    """0 is allowed for these flags (it undoes a config file's value), so the config's own rule, 1 or
    more, would send the user away from the value that does what they want."""
    assert refused(capsys, "train", "--dataset", "npz", "--data-path", blobs_npz, flag, value) == message


@pytest.mark.parametrize("toml, message", [
    ("epochs = 0", "epochs: input should be greater than or equal to 1, got 0"),
    ('epochs = "2"', "epochs: input should be a valid integer, got '2'"),
    ("epochs = 2.5", "epochs: input should be a valid integer, got 2.5"),
    ('batchnorm = "false"', "batchnorm: input should be a valid boolean, got 'false'"),
    ("hidden = 8", "hidden: input should be a valid list"),
    ("hidden = [8.5]", "hidden.0: input should be a valid integer, got 8.5"),
    ("batch_size = 0", "batch_size: input should be greater than or equal to 1"),
    ("val_fraction = -0.1", "val_fraction: input should be greater than or equal to 0"),
    ("limit_train = 0", "limit_train: input should be greater than or equal to 1"),
    ("patience = true", "patience: input should be a valid integer, got True"),
    ("patience = 3\nval_fraction = 0.0", "early stopping (patience) watches the validation loss"),
    ("refit = true\nval_fraction = 0.0", "refit retrains for the epoch count validation picked"),
    ("batchnorm = true\nbatch_size = 1", "batch norm normalises each feature over a batch: batch_size must be 2"),
    ("warmup_epochs = 6\nepochs = 6", "warmup_epochs 6 takes the whole run of 6 epochs"),
    ('schedule = "warmup(5)"\nepochs = 3', "schedule 'warmup(5)' warms up for the whole run of 3 epochs"),
    ('optimizer = "momentum(0.5)"', "optimizer 'momentum(0.5)' gives values without their names"),
    ("fold_batchnorm = false", "fold_batchnorm = false keeps batch-norm layers explicit"),
    ('optimizer = "sgd(lr=0.5)"', "sets lr: give it with --lr"),
    ('optimizer = "adamw(weight_decay=0.5)"', "sets weight_decay: give it with --weight-decay"),
    ('schedule = "cosine(lr=0.1)"', "sets lr: give it with --lr"),
    ('name = "../evil"', "model name '../evil' is not valid"),
    ("seed = -1", "seed: input should be greater than or equal to 0"),
])
def test_config_values_are_checked_before_training(tmp_path, toml, message):
    """A value of the wrong type or range is refused with its key named, never coerced (a TOML
    "false" string read as true) nor left to fail or do nothing mid-run."""
    config_file = tmp_path / "run.toml"
    config_file.write_text(toml + "\n")
    args = cli.make_parser().parse_args(["train", "--config", str(config_file)])
    with pytest.raises(cli.CommandError) as raised:
        cli.config_from_args(args)
    assert str(raised.value).startswith("invalid config: ")
    assert message in str(raised.value)


@pytest.mark.parametrize("toml, message", [
    ('lr = "1e-3"', "lr: input should be a valid number, got '1e-3': write it without quotes, lr = 1e-3"),
    ('batchnorm = "false"', "batchnorm: input should be a valid boolean, got 'false': write it without quotes, "
                            "batchnorm = false"),
    ('hidden = "256 128"', "hidden: input should be a valid list, got '256 128': write a list, hidden = [256, 128]"),
    ("hidden = 64", "hidden: input should be a valid list, got 64: write a list, hidden = [64]"),
    ('patience = "five"', "patience: input should be a valid integer, got 'five'"),
    ('lr = "inf"', "lr: input should be a valid number, got 'inf'"),
])
def test_a_config_value_of_the_wrong_type_is_told_how_toml_writes_it(tmp_path, capsys, toml, message):
    """A value copied into the file as the command line writes it, lr = "1e-3" or hidden = "256 128", was told
    only that it "should be a valid number" (or list), not that the quotes make it text or how a list is written."""
    config_file = tmp_path / "run.toml"
    config_file.write_text(toml + "\n")
    assert refused(capsys, "summary", "--config", config_file) == f"invalid config: {message}"


def test_every_config_file_setting_has_a_flag_that_overrides_it(tmp_path):
    """Flags win over the file: a file's progress = false, or its hidden layers, could not be undone."""
    config_file = tmp_path / "run.toml"
    config_file.write_text('dataset = "mnist"\nprogress = false\nhidden = [32]\n')
    args = cli.make_parser().parse_args(["train", "--config", str(config_file), "--progress", "--hidden"])
    config = cli.config_from_args(args)
    assert config.progress is True and config.hidden == []
    args = cli.make_parser().parse_args(["train", "--config", str(config_file), "--no-progress", "--hidden", "8", "4"])
    config = cli.config_from_args(args)
    assert config.progress is False and config.hidden == [8, 4]


def test_zero_epochs_publish_nothing(tmp_path, blobs_npz, capsys):
    registry = tmp_path / "models"
    assert "epochs: input should be greater than or equal to 1" in refused(
        capsys, "train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 0, "--publish",
        "--registry", registry)
    assert Registry(registry).versions("blobs") == []


def test_adamw_decays_weights_by_default_and_explicit_zero_is_kept():
    assert train.TrainConfig(optimizer="adamw").weight_decay == 0.01  # PyTorch's AdamW default
    assert train.TrainConfig(optimizer="adam").weight_decay == 0.0
    optimizer = train.build_optimizer(train.TrainConfig(optimizer="adamw"))
    assert isinstance(optimizer, AdamW) and optimizer.weight_decay == 0.01
    assert train.build_optimizer(train.TrainConfig(optimizer="adamw", weight_decay=0.0)).weight_decay == 0.0


def test_where_to_publish_is_checked_before_training(tmp_path, blobs_npz, capsys):
    not_a_folder = tmp_path / "registry-file"
    not_a_folder.write_text("")
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--no-progress",
                   "--publish", "--registry", not_a_folder) == 2
    captured = capsys.readouterr()
    assert f"cannot publish into {not_a_folder}: it is not a folder" in captured.err
    assert "epoch 1/" not in captured.out  # refused before the first epoch
    # A file on the way to the registry was told it was "not writable by uid 0 (Not a directory)".
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--no-progress",
                   "--publish", "--registry", not_a_folder / "models") == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: cannot publish into {not_a_folder / 'models'}: {not_a_folder} is not a folder\n"
    assert "epoch 1/" not in captured.out
    # A folder no one may write in, root included (os.access would say yes to root).
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--no-progress",
                   "--publish", "--registry", "/proc/scratchnet-models") == 2
    captured = capsys.readouterr()
    assert captured.err == ("error: cannot publish blobs into /proc/scratchnet-models: no file or folder can be "
                            "made in /proc: it is a file system the kernel makes up, not storage; choose a registry "
                            "folder on a disk you can write to (--registry, or $SCRATCHNET_REGISTRY)\n")
    assert "epoch 1/" not in captured.out


def test_a_run_without_matplotlib_is_refused_before_training(tmp_path, blobs_npz, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--no-progress",
                   "--output", tmp_path / "out") == 2
    captured = capsys.readouterr()
    assert "matplotlib, which is not installed: install the trainer's extra" in captured.err
    assert "epoch 1/" not in captured.out and not (tmp_path / "out").exists()


def test_sigterm_while_publishing_removes_the_temporary_version(tmp_path, blobs_npz, monkeypatch, capsys, own_tmpdir):
    """``docker stop`` sends SIGTERM: like Ctrl-C it must unwind through the publisher's clean-up."""
    registry = tmp_path / "models"
    write_version = train.write_version

    def write_then_terminated(folder, *args, **kwargs):
        metrics = write_version(folder, *args, **kwargs)
        assert (folder / "model.npz").is_file()  # a whole file sits in the temporary folder
        os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    monkeypatch.setattr(train, "write_version", write_then_terminated)
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   "--publish", "--registry", registry) == 128 + signal.SIGTERM
    assert "terminated: nothing was published" in capsys.readouterr().err
    assert not registry.exists()  # nor the folders publishing made for it
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was only the command's


def test_sigterm_during_training_exits_143_and_publishes_nothing(tmp_path, blobs_npz):
    registry = tmp_path / "models"
    process = subprocess.Popen([sys.executable, "-m", "trainer", "train", "--dataset", "npz", "--data-path",
                                str(blobs_npz), "--epochs", "100000", "--no-progress", "--publish",
                                "--registry", str(registry)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})  # where it keeps its epochs' metrics
    try:
        assert process.stdout.readline()  # the summary is printed once training starts
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert "terminated: nothing was published" in err and "Traceback" not in err
    assert Registry(registry).versions("blobs") == []


def test_evaluate_errors_are_one_clear_line(tmp_path, blobs_npz, capsys):
    registry = tmp_path / "models"
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   "--publish", "--registry", registry) == 0
    capsys.readouterr()
    assert re.fullmatch("blobs has no version 7 in .*; its versions: 1",
                        refused(capsys, "evaluate", "--registry", registry, "--model", "blobs", "--version", 7))
    with pytest.raises(SystemExit) as raised:
        run_cli("evaluate", "--registry", registry, "--model", "blobs", "--version", 0)
    assert raised.value.code == 2 and "--version: must be 1 or more, got 0" in capsys.readouterr().err
    assert run_cli("evaluate", "--registry", registry, "--model", "../x") == 2
    assert "model name '../x' is not valid" in capsys.readouterr().err
    other = tmp_path / "other.npz"
    np.savez(other, x=np.random.default_rng(0).normal(size=(50, 7)), y=np.arange(50) % 2)
    assert "blobs v1 takes 5 features; other has 7" in refused(
        capsys, "evaluate", "--registry", registry, "--model", "blobs", "--dataset", "npz", "--data-path", other)
    rng = np.random.default_rng(0)
    np.savez(other, x=rng.normal(size=(50, 5)), y=np.arange(50) % 6)
    assert "blobs v1 tells 3 classes apart; other has 6" in refused(
        capsys, "evaluate", "--registry", registry, "--model", "blobs", "--dataset", "npz", "--data-path", other)
    np.savez(other, x=rng.normal(size=(50, 5)), y=rng.normal(size=50))
    assert "blobs v1 is a classification model; other's y reads as a regression target" in refused(
        capsys, "evaluate", "--registry", registry, "--model", "blobs", "--dataset", "npz", "--data-path", other)
    model_file = registry / "blobs" / "1" / "model.npz"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    assert run_cli("evaluate", "--registry", registry, "--model", "blobs") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {model_file}: ") and "Traceback" not in err


def test_evaluate_of_a_model_not_in_the_registry_names_the_models_there(tmp_path, blobs_npz, capsys):
    """It said "no versions of 'blbos'" and no more: not the model meant, nor which the registry holds."""
    registry = tmp_path / "models"
    registry.mkdir()
    assert refused(capsys, "evaluate", "--registry", registry, "--model", "blobs") == (
        f"no model 'blobs' in {registry}, which holds no models: publish one with train --publish")
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   "--publish", "--registry", registry) == 0
    (registry / "spirals" / "v1").mkdir(parents=True)
    capsys.readouterr()
    assert refused(capsys, "evaluate", "--registry", registry, "--model", "blbos") == (
        f"no model 'blbos' in {registry} (did you mean 'blobs'?); its models: blobs")
    assert refused(capsys, "evaluate", "--registry", registry, "--model", "mnist") == (
        f"no model 'mnist' in {registry}; its models: blobs")
    assert refused(capsys, "evaluate", "--registry", registry, "--model", "spirals") == (
        f"no versions of 'spirals' in {registry}: the folder v1 is not read as a version: rename it 1 (the number "
        "alone)")


def publish_hand_written_regressor(tmp_path) -> Path:
    """A regressor of the columns a, b, c to the target "score", written with save_model as docs/model-format.md
    shows for another framework's network, its dataset named in words of its own; published as score-net v1 into
    the registry returned."""
    rng = np.random.default_rng(0)
    arrays = {"dense1.weight": rng.normal(size=(3, 4)), "dense1.bias": np.zeros(4),
              "dense2.weight": rng.normal(size=(4, 1)), "dense2.bias": np.zeros(1)}
    manifest = {
        "name": "score-net", "version": 1, "created_at": "2026-01-10T12:00:00+00:00", "task": "regression",
        "input": {"kind": "vector", "shape": [3], "dtype": "float32", "preprocessing": None,
                  "normalization": {"mean": [0.0], "std": [1.0]}, "feature_names": None},
        "output": {"target": "score", "scaling": {"mean": 5.0, "std": 2.0}},
        "layers": [{"type": "dense", "name": "dense1", "in_features": 3, "out_features": 4},
                   {"type": "activation", "name": "relu"},
                   {"type": "dense", "name": "dense2", "in_features": 4, "out_features": 1}],
        "training": {"config": {"framework": "pytorch"}, "dataset": {"name": "scores, first batch"}},
        "metrics": {"split": "20 % held out", "rmse": 0.66},
    }
    (tmp_path / "run").mkdir()
    save_model(tmp_path / "run" / "model.npz", arrays, manifest)
    registry = tmp_path / "models"
    assert run_cli("publish", tmp_path / "run", "--registry", registry) == 0
    return registry


def test_evaluate_of_a_file_written_elsewhere_says_its_recorded_dataset_is_not_one_to_read(tmp_path, wine_csv, capsys):
    """A model written by another framework, its dataset named in words of its own ("wine-quality red"), was
    refused as "unknown dataset 'wine-quality red'", a name the user never gave."""
    registry = publish_hand_written_regressor(tmp_path)
    assert refused(capsys, "evaluate", "--registry", registry, "--model", "score-net") == (
        "score-net v1 records its dataset as 'scores, first batch', which is none the trainer reads (mnist, "
        "fashion-mnist, wine-quality, csv, npz): name the data to score it on with --dataset (and --data-path for a "
        "csv or npz)")
    assert run_cli("evaluate", "--registry", registry, "--model", "score-net", "--dataset", "csv", "--data-path",
                   wine_csv, "--target", "score", "--task", "regression") == 0
    assert capsys.readouterr().out.startswith("score-net v1 on data (")


def test_evaluate_on_a_csv_takes_a_regressors_task_and_target_from_the_model(tmp_path, wine_csv, capsys):
    """A model trained on another dataset (wine-quality's own files, or another framework's data) and scored on
    a csv was told to "say what the target is with --task", though the model is a regressor of a column it names."""
    registry = publish_hand_written_regressor(tmp_path)
    evaluate = ["evaluate", "--registry", registry, "--model", "score-net", "--dataset", "csv", "--data-path", wine_csv]
    capsys.readouterr()
    assert run_cli(*evaluate, "--target", "score", "--task", "regression") == 0
    told = capsys.readouterr().out
    assert run_cli(*evaluate) == 0
    assert capsys.readouterr().out == told


def test_evaluate_by_default_names_another_version_to_score_and_the_pinned_one(tmp_path, blobs_npz, capsys):
    """Without --version evaluate scores the latest version; when that one cannot be loaded the error
    says how to score another, and when serving.json pins another one a note says so."""
    registry = tmp_path / "models"
    for _ in range(2):
        assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                       "--publish", "--registry", registry) == 0
    (registry / "blobs" / "serving.json").write_text('{"pinned": 1}')
    capsys.readouterr()
    assert run_cli("evaluate", "--registry", registry, "--model", "blobs") == 0
    assert re.search(r"note: scoring v2, blobs's latest version; .*serving\.json pins v1 for the service "
                     r"\(--version 1 scores it\)", capsys.readouterr().err)
    model_file = registry / "blobs" / "2" / "model.npz"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    message = refused(capsys, "evaluate", "--registry", registry, "--model", "blobs")
    assert message.startswith(f"{model_file}: ")
    assert message.endswith("; v2 is blobs's latest version: score another with --version (its versions: 1, 2)")
    assert run_cli("evaluate", "--registry", registry, "--model", "blobs", "--version", 1) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize("serving, note", [
    ('{"pinned": 1}', "pins v1, so the service keeps serving it, not v{v}: unpin blobs (POST /models/blobs/unpin) to "
                      "serve the latest"),
    ('{"pinned": null, "unloaded": true}', "says blobs is unloaded, so the service serves no version of it, v{v} "
                                           "included: load it (POST /v2/repository/models/blobs/load) to serve it "
                                           "again"),
], ids=["pinned", "unloaded"])
def test_publish_the_service_will_not_serve_says_so(tmp_path, blobs_npz, capsys, serving, note):
    """A version published while serving.json pins another one, or while the model is unloaded (the
    service's V2 unload), is not served: train --publish and publish say so, and how to serve it;
    without either nothing is said."""
    registry = tmp_path / "models"
    serving_file = registry / "blobs" / "serving.json"
    train = ("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress")
    assert run_cli(*train, "--publish", "--registry", registry) == 0
    assert "note:" not in capsys.readouterr().err
    serving_file.write_text(serving)
    assert run_cli(*train, "--publish", "--registry", registry) == 0
    assert f"note: {serving_file} {note.format(v=2)}" in capsys.readouterr().err
    assert run_cli(*train, "--output", tmp_path / "run") == 0
    capsys.readouterr()
    assert run_cli("publish", tmp_path / "run", "--registry", registry) == 0
    assert f"note: {serving_file} {note.format(v=3)}" in capsys.readouterr().err
    serving_file.write_text('{"pinned": null}')
    assert run_cli("publish", tmp_path / "run", "--registry", registry) == 0
    assert "note:" not in capsys.readouterr().err


def test_evaluate_a_csv_model_from_elsewhere_and_on_a_changed_file(tmp_path, wine_csv, capsys, monkeypatch):
    """The recorded --data-path is what was typed: from another folder a relative one is not
    there, and a file that changed since training gives a different held-out split."""
    registry = tmp_path / "models"
    monkeypatch.chdir(wine_csv.parent)
    assert run_cli("train", "--dataset", "csv", "--data-path", wine_csv.name, "--target", "score", "--task",
                   "regression", "--epochs", 1, "--no-progress", "--publish", "--registry", registry) == 0
    assert run_cli("evaluate", "--registry", registry, "--model", "data") == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert re.match("data v1 was trained on data.csv, which is not there from here.*--data-path",
                    refused(capsys, "evaluate", "--registry", registry, "--model", "data"))
    changed = elsewhere / "data.csv"
    changed.write_text(wine_csv.read_text().replace("\n", "\n0,0,0,5\n", 1))
    assert run_cli("evaluate", "--registry", registry, "--model", "data", "--data-path", changed) == 0
    assert "data.csv differs from the file data v1 was trained on" in capsys.readouterr().err
    assert run_cli("evaluate", "--registry", registry, "--model", "data", "--data-path", wine_csv) == 0
    assert "differs" not in capsys.readouterr().err


def test_a_config_file_that_says_where_the_run_goes_is_told_those_are_flags(tmp_path, capsys):
    """output, publish and registry are flags, not config keys: the file was refused as holding unknown
    keys, beside a list of the known ones, as if they were misspelt."""
    config = tmp_path / "run.toml"
    config.write_text('epochs = 1\noutput = "runs/a"\npublish = true\n')
    assert refused(capsys, "train", "--config", config) == (
        f"config {config} sets publish, output: where a run goes is given on the command line only (--publish, "
        "--output); take them out of the file")


def test_every_train_flag_that_has_a_default_says_it_in_its_help(capsys):
    """A flag left out takes a value: --help named none for --dataset, --seed, --refit, --progress and
    --limit-train, and --config spoke of "TrainConfig keys", a class name a user of the command never sees."""
    train_parser = cli.make_parser()._subparsers._group_actions[0].choices["train"]
    helps = {action.option_strings[0]: action.help for action in train_parser._actions}
    for flag in ("--dataset", "--seed", "--refit", "--progress", "--limit-train"):
        assert "default" in helps[flag], (flag, helps[flag])
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "mnist, fashion-mnist, wine-quality, csv or npz (default mnist)" in text
    assert "TrainConfig" not in text and "lr = 0.01" in text
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    assert "(default: the one the model was trained on)" in " ".join(capsys.readouterr().out.split())


def test_summary_takes_its_shape_from_a_named_dataset(blobs_npz, capsys):
    assert run_cli("summary", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 8) == 0
    out = capsys.readouterr().out
    assert "Dense(5 -> 8" in out and "Dense(8 -> 3" in out
    assert "--inputs and a dataset both set the network's shape" in refused(
        capsys, "summary", "--dataset", "npz", "--data-path", blobs_npz, "--inputs", 4)


def test_a_shape_flag_beside_a_config_files_dataset_is_told_where_the_dataset_comes_from(tmp_path, blobs_npz,
                                                                                        capsys):
    """gradcheck --config run.toml --inputs 784 (to check the network without reading the data) was told that
    "--inputs and a dataset both set the network's shape: give one", naming no dataset: the one given was in
    the file."""
    config_file = tmp_path / "run.toml"
    config_file.write_text(f'dataset = "npz"\ndata_path = "{blobs_npz.name}"\nhidden = [8]\n')
    for command in ("gradcheck", "summary"):
        assert refused(capsys, command, "--config", config_file, "--inputs", 5, "--outputs", 3) == (
            "--inputs, --outputs and the --config file's dataset (npz) both set the network's shape: leave out "
            "--inputs, --outputs, or take dataset out of the file")


def test_dataset_problems_name_the_cause(tmp_path, capsys):
    one_class = tmp_path / "one.npz"
    np.savez(one_class, x=np.random.default_rng(0).normal(size=(40, 3)), y=np.zeros(40, dtype=np.int64))
    assert run_cli("train", "--dataset", "npz", "--data-path", one_class, "--no-progress") == 2
    assert "the targets hold a single class (0); a classifier needs at least 2" in capsys.readouterr().err
    not_zip = tmp_path / "garbage.npz"
    not_zip.write_bytes(b"this is not a zip archive at all")
    assert run_cli("train", "--dataset", "npz", "--data-path", not_zip, "--no-progress") == 2
    err = capsys.readouterr().err
    assert "not an .npz archive" in err and "allow_pickle" not in err
    assert run_cli("train", "--dataset", "csv", "--no-progress") == 2
    assert "give its path (--data-path)" in capsys.readouterr().err


def test_an_npz_whose_rows_hold_one_class_is_refused_whatever_its_indices(tmp_path, capsys):
    # Class indices 1 (and a labels array of names) make more than one class that no row may have:
    # a file whose every row is of one class trains nothing, as a csv of one class is refused.
    x = np.random.default_rng(0).normal(size=(40, 3))
    ones, named = tmp_path / "ones.npz", tmp_path / "named.npz"
    np.savez(ones, x=x, y=np.ones(40, dtype=np.int64))
    np.savez(named, x=x, y=np.zeros(40, dtype=np.int64), labels=np.array(["cat", "dog", "bird"]))
    for path, cls in ((ones, "1"), (named, "cat")):
        assert run_cli("train", "--dataset", "npz", "--data-path", path, "--hidden", 4, "--epochs", 1,
                       "--output", tmp_path / "out", "--no-progress") == 2
        assert f"the targets hold a single class ({cls}); a classifier needs at least 2" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_the_config_file_in_the_training_doc_is_its_first_command(tmp_path):
    """docs/training.md showed ``--config run.toml`` without a file to copy: its run.toml sets what the
    first command's flags set, so that both train the same network."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    config = tmp_path / "run.toml"
    config.write_text(re.search(r"```toml\n(.*?)```", doc, re.S)[1])
    first = shlex.split(re.search(r"```sh\n(python -m trainer train .*?)#", doc, re.S)[1].replace("\\\n", " "))

    def trained(argv: list[str]) -> dict:
        return dataclasses.asdict(cli.config_from_args(cli.make_parser().parse_args(argv)))

    assert trained(["train", "--config", str(config)]) == trained(first[3:])


@pytest.mark.slow
def test_short_real_mnist_run(tmp_path, datasets_dir, capsys):
    """A real-data run on an MNIST subset learns, and the published file scores the same through
    ``evaluate`` as the trainer reported, which is its accuracy on the 10,000 test digits; scoring
    needs the test files only."""
    registry = tmp_path / "models"
    config = train.TrainConfig(dataset="mnist", data_dir=str(datasets_dir / "mnist"), hidden=[64], epochs=3,
                               limit_train=6000, progress=False)
    result = train.run(config, publish_to=str(registry), log=lambda *_: None)
    assert result["version"] == 1
    assert result["metrics"]["accuracy"] > 0.90
    manifest = read_manifest(registry / "mnist" / "1" / "model.npz")
    assert manifest["training"]["dataset"]["files"]["t10k-images-idx3-ubyte.gz"] == (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6")
    assert manifest["metrics"]["accuracy"] == result["metrics"]["accuracy"]
    capsys.readouterr()
    test_files = tmp_path / "test-files-only"
    test_files.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (test_files / name).symlink_to(datasets_dir / "mnist" / name)
    assert run_cli("evaluate", "--registry", registry, "--model", "mnist", "--data-dir", test_files,
                   "--cache-dir", tmp_path / "empty-cache") == 0
    printed = float(re.search(r"accuracy ([0-9.]+)%  \(n=10000\)", capsys.readouterr().out)[1]) / 100
    test = load_dataset("mnist", data_dir=datasets_dir / "mnist", download=False, progress=False)
    model = load_model(registry / "mnist" / "1" / "model.npz")
    accuracy = float((model.predict(test.x_test) == test.y_test).mean())
    assert printed == pytest.approx(accuracy, abs=5e-5) and result["metrics"]["accuracy"] == pytest.approx(accuracy)


def test_refit_retrains_on_all_rows_for_the_best_epoch_count(tmp_path, blobs_npz):
    config = train.TrainConfig(dataset="npz", data_path=str(blobs_npz), hidden=[16], epochs=30, lr=0.01,
                               patience=3, refit=True, progress=False, val_fraction=0.2)
    result = train.run(config, output_dir=str(tmp_path / "out"), log=lambda *_: None)
    searched = [row for row in result["history"] if not row.get("refit")]
    refitted = [row for row in result["history"] if row.get("refit")]
    best = min(searched, key=lambda row: row["val_loss"])["epoch"]
    assert len(refitted) == best
    training = read_manifest(tmp_path / "out" / "model.npz")["training"]
    assert (training["best_epoch"], training["refit_epochs"]) == (best, best)
    assert training["refit_examples"] == training["train_examples"] + training["val_examples"] == 500
    assert result["metrics"]["accuracy"] > 0.95


@pytest.mark.parametrize("schedule, ends_at", [("cosine", 30), ("cosine(20)", 20), ("cosine(20, 0.0001)", 20),
                                               ("cosine(total_epochs=20)", 20), ("cosine(min_lr=0.0001)", 30)])
def test_a_cosine_schedule_spans_the_run_unless_its_length_is_given_by_name_or_position(schedule, ends_at):
    """``cosine(20)``, the form schedules.py documents (``cosine(total_epochs, min_lr=0)``), was
    read as min_lr=20 and refused: the run's length was added unless the text said total_epochs."""
    config = train.TrainConfig(dataset="mnist", epochs=30, lr=0.001, schedule=schedule)
    lrs = [train.build_schedule(config)(epoch) for epoch in range(31)]
    floor = 0.0001 if "0.0001" in schedule else 0.0
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[ends_at] == pytest.approx(floor) and lrs[ends_at - 1] > floor


@pytest.mark.parametrize("schedule, warmup", [("cosine", 0), ("cosine(total_epochs=12)", 0), ("cosine", 2),
                                              ("step(step_size=3, gamma=0.5)", 0)])
def test_refit_replays_the_learning_rates_of_the_epochs_it_retrains_for(tmp_path, blobs_npz, schedule, warmup):
    """The refit squeezed a schedule whose length came from --epochs into the best epoch count
    (a cosine then ended at the floor the searched run never reached), yet replayed one spelled
    out with total_epochs: the same schedule gave two different refits."""
    config = train.TrainConfig(dataset="npz", data_path=str(blobs_npz), hidden=[8], epochs=12, lr=0.05,
                               schedule=schedule, warmup_epochs=warmup, refit=True, progress=False,
                               val_fraction=0.2)
    prepared = train.prepare(train.load_config_dataset(config), config)
    searched = train.fit(train.build_network(config, prepared.dataset), train.build_optimizer(config),
                         train.build_schedule(config), prepared, config, log=lambda *_: None)
    for row in searched:  # as if validation had picked epoch 5 of 12
        row["val_loss"] = abs(row["epoch"] - 5) + 1.0
    _, history = train.refit(config, prepared, searched, log=lambda *_: None)
    refitted = [row["lr"] for row in history if row.get("refit")]
    assert refitted == [row["lr"] for row in searched[:5]]


def test_refit_without_early_stopping_records_the_epoch_count_it_retrained_for(tmp_path, blobs_npz):
    """best_epoch once counted the refit epochs too (searched + refit)."""
    config = train.TrainConfig(dataset="npz", data_path=str(blobs_npz), hidden=[8], epochs=4, refit=True,
                               progress=False)
    result = train.run(config, output_dir=str(tmp_path / "out"), log=lambda *_: None)
    searched = [row for row in result["history"] if not row.get("refit")]
    best = min(searched, key=lambda row: row["val_loss"])["epoch"]
    training = read_manifest(tmp_path / "out" / "model.npz")["training"]
    assert (training["epochs_run"], training["best_epoch"], training["refit_epochs"]) == (4, best, best)


@pytest.mark.parametrize("flags, message", [
    (["--limit-train", 100], "--limit-train"),
    (["--patience", 3], "--patience"),
    (["--val-fraction", 0.2], "--val-fraction"),
    (["--refit"], "--refit"),
])
def test_overfit_refuses_the_flags_it_would_not_use(blobs_npz, capsys, flags, message):
    """overfit trains on --samples examples without validation: a subset size or an early
    stopping given as a flag would otherwise do nothing while the check reports success."""
    capsys.readouterr()
    assert run_cli("overfit", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 8, "--epochs", 2, *flags) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: overfit trains on --samples examples without a validation "
                                   f"split: {message} does not apply")
    assert "overfit:" not in captured.out  # refused before any training


@pytest.mark.parametrize("flags, message", [
    (["--publish", "--output", "out"], "--output writes a folder of your own and --publish a registry version"),
    (["--registry", "models"], "--registry is where --publish puts the new version"),
])
def test_train_refuses_destination_flags_that_would_be_ignored(tmp_path, blobs_npz, monkeypatch, capsys,
                                                               flags, message):
    """Without these checks the model went to the registry and not the --output folder, or to a
    temporary folder and not the --registry named."""
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress", *flags) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "epoch 1/" not in captured.out
    assert list(tmp_path.iterdir()) == [blobs_npz]


@pytest.mark.parametrize("toml, message", [
    ("lr = inf", "lr: input should be a finite number, got inf"),
    ("weight_decay = inf", "weight_decay: input should be a finite number, got inf"),
    ("clip_norm = inf", "clip_norm: input should be a finite number, got inf"),
])
def test_infinite_hyperparameters_are_refused_before_training(tmp_path, toml, message, capsys):
    """An infinite learning rate or decay turns the first step's weights into NaN, and an
    infinite clip norm would be written into the manifest as the non-JSON token Infinity."""
    config_file = tmp_path / "run.toml"
    config_file.write_text(toml + "\n")
    args = cli.make_parser().parse_args(["train", "--config", str(config_file)])
    with pytest.raises(cli.CommandError, match=f"invalid config: {message}"):
        cli.config_from_args(args)
    assert refused(capsys, "train", "--" + toml.split()[0].replace("_", "-"), "inf").startswith(
        f"invalid config: {message}")


def test_a_warmup_schedule_and_warmup_epochs_together_are_refused(blobs_npz, capsys):
    """The schedule's own warm-up length won and --warmup-epochs was silently dropped."""
    assert re.search("warmup.*--warmup-epochs", refused(capsys, "train", "--dataset", "npz", "--data-path", blobs_npz,
                                                       "--schedule", "warmup(epochs=2)", "--warmup-epochs", 3,
                                                       "--no-progress"))


def test_a_network_too_big_for_memory_is_refused_before_it_is_built(tmp_path, blobs_npz, capsys):
    """A network whose training takes more memory than there is got the process killed (exit 137, not
    a word) once its weights were drawn, unless one array alone was larger than the machine: it is
    refused before a weight is drawn, saying what it takes and what there is. (These sizes are refused
    at once by the code before too, by NumPy, which does not say what there is.)"""
    for command in ("train", "overfit"):
        message = refused(capsys, command, "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 3_000_000,
                          3_000_000, "--no-progress")
        assert re.fullmatch(r"not enough memory: training this network of 9,000,030,000,003 parameters takes "
                            r"about \d+\.\d\d TB \(its weights, their gradients, adam's state and a batch's "
                            r"activations while it trains, then the copies that writing and scoring the model file "
                            r"hold\), and [\d.]+ [MGT]B is available: choose smaller --hidden sizes or a smaller "
                            r"--batch-size", message), message


def test_a_run_is_refused_when_less_memory_is_available_than_training_takes(tmp_path, blobs_npz, monkeypatch,
                                                                           capsys):
    """Below the size NumPy refuses outright, the run went ahead and was killed once the memory ran out."""
    # 5-2000-3 trained by momentum: 18,003 parameters, their gradients, velocity and scratch, and a batch of
    # one row's 4,008 activations forward and backward (320 KB); then the seven copies of the parameters
    # that writing the model file holds (504 KB), the larger.
    monkeypatch.setattr(memory, "available_memory", lambda: 450_000)
    flags = ["--dataset", "npz", "--data-path", blobs_npz, "--hidden", 2000, "--optimizer", "momentum",
             "--batch-size", 1, "--no-progress"]
    assert refused(capsys, "train", *flags, "--output", tmp_path / "out") == (
        "not enough memory: training this network of 18,003 parameters takes about 0.50 MB (its weights, "
        "their gradients, momentum's state and a batch's activations while it trains, then the copies that "
        "writing and scoring the model file hold), and 0.45 MB is available: choose smaller --hidden sizes or a "
        "smaller --batch-size")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(memory, "available_memory", lambda: 510_000)
    assert run_cli("train", *flags, "--epochs", 1, "--output", tmp_path / "out") == 0
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # nothing to go by: not checked
    assert run_cli("train", *flags, "--epochs", 1, "--output", tmp_path / "out") == 0


def test_the_memory_available_is_the_least_of_the_systems_and_the_cgroups(tmp_path, monkeypatch):
    meminfo, limit, usage = tmp_path / "meminfo", tmp_path / "memory.max", tmp_path / "memory.current"
    stat = tmp_path / "memory.stat"
    meminfo.write_text("MemTotal:       24684084 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", meminfo)
    absent = tmp_path / "absent"
    monkeypatch.setattr(memory, "CGROUP_FILES", [(limit, usage, stat), (absent, absent, absent)])
    assert memory.available_memory() == 8_192_000_000  # no cgroup limit set
    limit.write_text("max\n")
    assert memory.available_memory() == 8_192_000_000
    limit.write_text("3000000000\n")
    usage.write_text("1000000000\n")
    assert memory.available_memory() == 2_000_000_000
    # File cache the cgroup has read (a large dataset) counts in its usage, and the kernel takes it back
    # before it kills anything: it is not used up.
    stat.write_text("anon 300000000\nfile 700000000\nactive_file 100000000\ninactive_file 600000000\n")
    assert memory.available_memory() == 2_600_000_000
    # cgroup v1: its own count, and the one with the cgroups below it, which its usage includes
    stat.write_text("cache 700000000\ninactive_file 100000000\ntotal_inactive_file 500000000\n")
    assert memory.available_memory() == 2_500_000_000
    stat.unlink()
    meminfo.unlink()
    assert memory.available_memory() == 2_000_000_000
    limit.unlink()
    assert memory.available_memory() is None


def test_summary_shows_a_network_too_big_to_build(capsys):
    """summary built the network to print its shapes: one too big for memory was an error (or the
    process was killed), where the table is what would have shown it."""
    assert run_cli("summary", "--inputs", 4, "--hidden", 3_000_000, 3_000_000, "--outputs", 2) == 0
    out = capsys.readouterr().out
    assert "dense2  Dense(3000000 -> 3000000, init=he_normal)  (128, 3000000)  9,000,003,000,000" in out
    assert "total parameters: 9,000,024,000,002 (36.00 TB)" in out


def test_an_output_folder_reused_holds_only_the_new_runs_files(tmp_path, blobs_npz, wine_csv):
    """A regression run into the folder of an earlier classifier left that classifier's
    confusion.png beside the new model, as if it were the new model's."""
    out = tmp_path / "out"
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   "--output", out) == 0
    assert (out / "confusion.png").is_file()
    assert run_cli("train", "--dataset", "csv", "--data-path", wine_csv, "--target", "score", "--task",
                   "regression", "--epochs", 1, "--no-progress", "--output", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["learning_curves.png", "metrics.jsonl", "model.npz"]
    assert read_manifest(out / "model.npz")["task"] == "regression"


def test_a_run_stopped_while_writing_its_output_leaves_the_folder_as_it_was(tmp_path, blobs_npz, wine_csv,
                                                                            monkeypatch, capsys, own_tmpdir):
    """SIGTERM while the files are written: the earlier run's files stay whole and alone, not
    a new model.npz beside the old plots, and no temporary folder remains."""
    out = tmp_path / "out"
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   "--output", out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def terminated(*args, **kwargs):
        raise cli.Terminated(signal.SIGTERM)

    monkeypatch.setattr(train.report, "plot_learning_curves", terminated)
    assert run_cli("train", "--dataset", "csv", "--data-path", wine_csv, "--target", "score", "--task",
                   "regression", "--epochs", 1, "--no-progress", "--output", out) == 128 + signal.SIGTERM
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_output_folder_that_cannot_be_made_is_refused_before_training(tmp_path, blobs_npz, capsys):
    """A folder in /proc was "not writable (No such file or directory)", the kernel's word for a file system
    that takes no new files, which named neither what is wrong nor what to do."""
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--no-progress",
                   "--output", "/proc/scratchnet-out") == 2
    captured = capsys.readouterr()
    assert captured.err == ("error: cannot write the model into /proc/scratchnet-out: no file or folder can be "
                            "made in /proc: it is a file system the kernel makes up, not storage; choose a folder on a "
                            "disk you can write to (--output), such as one in your working or home folder\n")
    assert "epoch 1/" not in captured.out


@pytest.mark.parametrize("wrapper", [ImportError, RuntimeError])
def test_a_signal_wrapped_by_an_import_still_reads_as_terminated(tmp_path, blobs_npz, monkeypatch, capsys, wrapper):
    """SIGTERM that lands while matplotlib loads its extension modules reaches the command
    wrapped in their ImportError('initialization failed'), or in the RuntimeError Python wraps
    around an error raised by __set_name__ in a class body; it is still a stop, not a failure."""
    def loading_plots():
        try:
            raise cli.Terminated(signal.SIGTERM)
        except cli.Terminated as e:
            raise wrapper("initialization failed") from e

    monkeypatch.setattr(train.report, "require_plotting", loading_plots)
    code = run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--no-progress",
                   "--publish", "--registry", tmp_path / "models")
    assert code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "terminated: nothing was published\n"


def test_a_terminal_that_reports_no_width_gets_one_line_per_epoch(tmp_path, blobs_npz):
    """A pseudo-terminal whose size was never set (0 columns: `script`, some container and CI
    runners) drew tqdm's bar at width 0, which is nothing at all, and the epoch lines a bar
    replaces were left out too: the run showed no progress whatever."""
    epochs = _epoch_lines_on_a_terminal(tmp_path, blobs_npz, columns=None)
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]


def test_a_terminal_shows_each_epochs_validation_figures_beside_its_bar(tmp_path, blobs_npz):
    """The bar's last frame held the epoch's figures, cut to the terminal's width: at 80 columns
    the validation loss and accuracy never showed. Each epoch now ends in its own line."""
    epochs = _epoch_lines_on_a_terminal(tmp_path, blobs_npz, columns=80)
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all("val_loss=" in line and "val_accuracy=" in line for line in epochs), epochs


def _epoch_lines_on_a_terminal(tmp_path, blobs_npz, columns: int | None) -> list[str]:
    """The epoch lines a two-epoch run prints with its stderr on a pseudo-terminal ``columns``
    wide (None: its size never set, 0 x 0, as a new one is)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    if columns is not None:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    drained = threading.Thread(target=lambda: _drain(leader), daemon=True)
    drained.start()
    try:
        done = subprocess.run([sys.executable, "-m", "trainer", "train", "--dataset", "npz", "--data-path",
                               blobs_npz, "--hidden", "8", "--epochs", "2", "--output", tmp_path / "out"],
                              stdout=subprocess.PIPE, stderr=follower, text=True, timeout=120,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    finally:
        os.close(follower)
    drained.join(10)
    os.close(leader)
    assert done.returncode == 0
    return [line for line in done.stdout.splitlines() if line.startswith("epoch ")]


def _drain(fd: int) -> None:
    """Read a pseudo-terminal's output until it closes, so that a writer never waits on it."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # EIO: the other end closed
        pass


def test_a_file_name_that_is_no_model_name_asks_for_name(tmp_path, wine_csv, capsys):
    """The registry name defaults to the data file's stem, which the user did not choose as one."""
    data = tmp_path / "my data.csv"
    data.write_text(wine_csv.read_text())
    assert run_cli("train", "--dataset", "csv", "--data-path", data, "--target", "score", "--task", "regression",
                   "--no-progress", "--publish", "--registry", tmp_path / "models") == 2
    captured = capsys.readouterr()
    assert "model name 'my data' is not valid" in captured.err
    assert "the name comes from the data file: give one with --name" in captured.err
    assert "epoch 1/" not in captured.out


def test_overfit_with_batchnorm_on_one_sample_is_one_clear_line(blobs_npz, capsys):
    """Its batch is the subset: pydantic's three-line report of a batch size the user never gave."""
    assert refused(capsys, "overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 1, "--batchnorm") == (
        "batch norm normalises each feature over a batch: --samples must be 2 or more with --batchnorm")


def write_animals_csv(path, classes, columns=("x1", "x2", "kind"), seed=0, rows=150):
    """Three well-separated classes in 2-D, named, with the rows' columns in the order given."""
    rng = np.random.default_rng(seed)
    centres = {"ant": (-3, 0), "bee": (0, 3), "cat": (3, 0)}
    lines = [",".join(columns)]
    for i in range(rows):
        kind = classes[i % len(classes)]
        values = {"x1": f"{centres[kind][0] + rng.normal(scale=0.3):.4f}",
                  "x2": f"{centres[kind][1] + rng.normal(scale=0.3):.4f}", "kind": kind}
        lines.append(",".join(values[column] for column in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def animals_model(tmp_path):
    registry = tmp_path / "models"
    data = write_animals_csv(tmp_path / "animals.csv", ["ant", "bee", "cat"])
    assert run_cli("train", "--dataset", "csv", "--data-path", data, "--target", "kind", "--task", "classification",
                   "--hidden", 16, "--epochs", 60, "--batch-size", 16, "--no-progress", "--publish",
                   "--registry", registry) == 0
    return registry


@pytest.mark.parametrize("trained, scored", [("csv", "CSV"), ("CSV", "csv")])
def test_evaluate_on_a_csv_takes_a_classifiers_target_from_its_training_however_csv_is_spelt(tmp_path, capsys,
                                                                                            trained, scored):
    """A classifier trained on a csv records its target column with its training's settings, and evaluate on
    another csv takes it from there; but only when --dataset was spelt as at training: `--dataset CSV` on
    one side and `csv` on the other, both read as a csv, was told to name the column to predict (--target)."""
    registry = tmp_path / "models"
    data = write_animals_csv(tmp_path / "animals.csv", ["ant", "bee", "cat"])
    assert run_cli("train", "--dataset", trained, "--data-path", data, "--target", "kind", "--task",
                   "classification", "--epochs", 5, "--no-progress", "--publish", "--registry", registry) == 0
    new = write_animals_csv(tmp_path / "new.csv", ["ant", "bee", "cat"], seed=1)
    evaluate = ["evaluate", "--registry", registry, "--model", "animals", "--dataset", scored, "--data-path", new]
    capsys.readouterr()
    assert run_cli(*evaluate, "--target", "kind") == 0
    told = capsys.readouterr().out
    assert run_cli(*evaluate) == 0
    assert capsys.readouterr().out == told


def test_a_csv_named_like_a_known_dataset_is_not_taken_for_it(tmp_path, animals_model, capsys):
    """A file's classes that are none of the model's are scored by index with a note, whatever the
    file is called: only the known datasets themselves are refused for it."""
    capsys.readouterr()
    other = tmp_path / "mnist.csv"
    other.write_text("x1,x2,kind\n-3,0,dog\n0,3,eel\n3,0,dog\n0,3,eel\n")
    assert run_cli("evaluate", "--registry", animals_model, "--model", "animals", "--dataset", "csv",
                   "--data-path", other, "--target", "kind") == 0
    assert "each is scored as the model's class of the same index" in capsys.readouterr().err


def test_evaluate_says_to_give_the_task_when_an_npz_of_whole_number_targets_reads_as_classes(tmp_path, capsys):
    """A regression model trained on an npz of float targets, scored on one whose y is stored as whole
    numbers (a score, a count), was told to score it on the kind of data it was trained on, which it is."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ [2.0, -1.0, 0.5] + 10
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "counts.npz", x=x, y=np.rint(y).astype(np.int64))
    registry = tmp_path / "models"
    assert run_cli("train", "--dataset", "npz", "--data-path", tmp_path / "train.npz", "--name", "amount",
                   "--hidden", 4, "--epochs", 1, "--no-progress", "--publish", "--registry", registry) == 0
    capsys.readouterr()
    scoring = ["evaluate", "--registry", registry, "--model", "amount", "--data-path", tmp_path / "counts.npz"]
    assert run_cli(*scoring) == 2
    assert "give --task regression if y holds what the model predicts" in capsys.readouterr().err
    assert run_cli(*scoring, "--task", "regression") == 0
    assert "RMSE" in capsys.readouterr().out


def test_evaluate_of_a_target_of_quantities_says_what_helps_the_model_scored(tmp_path, blobs_npz, capsys):
    """evaluate scores data as the model's task. A classifier scored on a target of quantities was told to train
    with --task regression (or that a quantity is predicted with it), and given that flag evaluate refused the
    data as a regression dataset: what helps a classifier is data of its classes, and --task regression helps
    only a model that predicts a quantity."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    np.savez(tmp_path / "amounts.npz", x=x, y=rng.normal(size=200))
    np.savez(tmp_path / "ids.npz", x=x, y=rng.integers(0, 10**6, size=200))
    (tmp_path / "kinds.csv").write_text("a,kind\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    (tmp_path / "sizes.csv").write_text("a,kind\n" + "".join(f"{i},{i / 3:.3f}\n" for i in range(40)))
    registry = tmp_path / "models"
    for name, data in (("blobs", ["npz", blobs_npz]), ("amount", ["npz", tmp_path / "amounts.npz"]),
                       ("kinds", ["csv", tmp_path / "kinds.csv", "--target", "kind", "--task", "classification"])):
        assert run_cli("train", "--dataset", *data[:1], "--data-path", *data[1:], "--name", name, "--hidden", 4,
                       "--epochs", 1, "--no-progress", "--publish", "--registry", registry) == 0
    classifier_way = ("the model is a classifier, and --task regression cannot score it: score it on data whose "
                      "target holds the classes it was trained on")
    for model, data, flags in (("blobs", tmp_path / "amounts.npz", ["--task", "classification"]),
                               ("blobs", tmp_path / "ids.npz", []), ("kinds", tmp_path / "sizes.csv", [])):
        scoring = ["evaluate", "--registry", registry, "--model", model, "--data-path", data]
        assert refused(capsys, *scoring, *flags).endswith(classifier_way)
        assert "is a classification model" in refused(capsys, *scoring, "--task", "regression")  # as it says
    scoring = ["evaluate", "--registry", registry, "--model", "amount", "--data-path", tmp_path / "ids.npz"]
    assert refused(capsys, *scoring).endswith("; if it is the quantity the model predicts, give --task regression "
                                              "to score it as one")
    assert run_cli(*scoring, "--task", "regression") == 0


def test_evaluate_knows_the_file_it_trained_on_under_another_name(tmp_path, animals_model, capsys):
    """A copy of the training file, renamed, was scored whole as a file the model never saw: its
    training rows counted, and the figure was inflated. It is the same file by its SHA-256."""
    capsys.readouterr()
    assert run_cli("evaluate", "--registry", animals_model, "--model", "animals") == 0
    held_out = capsys.readouterr().out
    copy = tmp_path / "copy.csv"
    copy.write_bytes((tmp_path / "animals.csv").read_bytes())
    assert run_cli("evaluate", "--registry", animals_model, "--model", "animals", "--data-path", copy) == 0
    out = capsys.readouterr().out
    assert "not trained on" not in out
    assert re.search(r"\(n=\d+\)", out)[0] == re.search(r"\(n=\d+\)", held_out)[0]  # the same held-out rows


def test_evaluate_matches_a_files_classes_to_the_models_by_name(tmp_path, animals_model, capsys):
    """A labelled file holding only some of the classes was scored as if its first class were the
    model's first: a perfect model scored 0% on a file of bees and cats (bee read as ant)."""
    capsys.readouterr()
    bees_and_cats = write_animals_csv(tmp_path / "new.csv", ["bee", "cat"], seed=1)
    assert run_cli("evaluate", "--registry", animals_model, "--model", "animals", "--data-path", bees_and_cats) == 0
    out = capsys.readouterr().out
    # a file the model never saw is scored whole, not only the 20 % a training run would hold out of it
    assert "accuracy 100.00%  (n=150)" in out and "(every row of new.csv, which animals v1 was not trained on)" in out
    assert re.search(r"^ant .* 0$", out, re.M) and re.search(r"^bee .* 1\.0000 +1\.0000 +1\.0000 +75$", out, re.M)
    # A file of one class (the bees a user collected since) is scored too: only training needs two.
    bees = write_animals_csv(tmp_path / "bees.csv", ["bee"], seed=2)
    assert run_cli("evaluate", "--registry", animals_model, "--model", "animals", "--data-path", bees) == 0
    assert "accuracy 100.00%  (n=150)" in capsys.readouterr().out
    # Nor does a file of one row, or of identical rows, need a split: each of them is scored.
    for rows in (1, 3):
        one_bee = tmp_path / f"bee{rows}.csv"
        one_bee.write_text("x1,x2,kind\n" + "0.1,2.9,bee\n" * rows)
        assert run_cli("evaluate", "--registry", animals_model, "--model", "animals", "--data-path", one_bee) == 0
        assert f"accuracy 100.00%  (n={rows})" in capsys.readouterr().out
    with_a_dog = tmp_path / "dogs.csv"
    with_a_dog.write_text(bees_and_cats.read_text().replace(",cat\n", ",dog\n", 1))
    assert refused(capsys, "evaluate", "--registry", animals_model, "--model", "animals", "--data-path",
                   with_a_dog).startswith("dogs holds classes animals v1 does not know: dog (its classes: ant, bee, "
                                          "cat)")


def test_evaluate_reads_a_csvs_columns_by_name(tmp_path, animals_model, capsys):
    """A file listing the same columns in another order was scored on the wrong features, silently."""
    capsys.readouterr()
    reordered = write_animals_csv(tmp_path / "new.csv", ["ant", "bee", "cat"], columns=("kind", "x2", "x1"), seed=1)
    assert run_cli("evaluate", "--registry", animals_model, "--model", "animals", "--data-path", reordered) == 0
    assert "accuracy 100.00%" in capsys.readouterr().out
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(reordered.read_text().replace("kind,x2,x1", "kind,x2,width", 1))
    assert refused(capsys, "evaluate", "--registry", animals_model, "--model", "animals", "--data-path", renamed) == (
        "animals v1 takes the columns x1, x2; renamed has no x1: score it on a file with the columns it was trained on")


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # the diverging weights overflow on the way
def test_overfit_says_something_is_wrong_when_training_diverges(blobs_npz, monkeypatch, capsys):
    """An update of the wrong sign climbs the loss until it overflows: that is the check's verdict
    (exit 1, "something is wrong"), not an error telling the learner to lower the learning rate."""
    from trainer.optimizers import SGD

    def ascent(self, param, grad, state):
        np.multiply(grad, self.lr, out=state["scratch"])
        param += state["scratch"]  # should be -=

    monkeypatch.setattr(SGD, "_update", ascent)
    assert run_cli("overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 32, "--hidden", 32,
                   "--epochs", 50, "--optimizer", "sgd", "--lr", 10) == 1
    out = capsys.readouterr().out
    assert "the loss became inf" in out
    assert "something is wrong: training diverged" in out and "the optimiser's update" in out


def test_a_run_says_which_task_an_npz_target_gave(tmp_path, capsys):
    """An npz's y of 0.0 and 1.0 (a float column) trains a regression: the run says so first."""
    path = tmp_path / "flags.npz"
    x = np.random.default_rng(0).normal(size=(60, 3))
    np.savez(path, x=x, y=(x[:, 0] > 0).astype(np.float64))
    assert run_cli("train", "--dataset", "npz", "--data-path", path, "--epochs", 1, "--no-progress",
                   "--output", tmp_path / "out") == 0
    assert capsys.readouterr().out.startswith("data: Dataset('flags', regression, target 'y', train (48, 3)")


def test_a_run_says_how_many_rows_it_trains_on(tmp_path, capsys):
    """The dataset's line names the whole file; the next says what --limit-train and the validation
    split left to train on."""
    path = tmp_path / "flags.npz"
    x = np.random.default_rng(0).normal(size=(60, 3))
    np.savez(path, x=x, y=(x[:, 0] > 0).astype(np.int64))
    assert run_cli("train", "--dataset", "npz", "--data-path", path, "--epochs", 1, "--no-progress",
                   "--limit-train", 40, "--val-fraction", 0.25, "--output", tmp_path / "out") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "rows: 30 to train (of the first 40 of 48: --limit-train), 10 to validate, 12 to test"


@pytest.mark.parametrize("batchnorm", ["off", "folded", "explicit"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu(alpha=0.3)"])
def test_the_service_answers_what_the_trainer_computes(tmp_path, blobs_npz, wine_csv, monkeypatch, capsys,
                                                       activation, batchnorm):
    """Every form a published network takes (each activation, batch norm folded or explicit,
    dropout, a classifier, a regressor with standardised inputs and a scaled target) is served as
    the trainer's own network computes it in inference mode: on the test rows and on rows far
    outside the training range, the service's probabilities and values are the trainer's up to
    float32 rounding and the JSON's digits, its classes exactly; and evaluate reports the
    metrics the manifest records."""
    from service.app import create_app
    from shared.forward import softmax
    from trainer.report import format_metrics

    built = []  # the networks the runs train, as the trainer holds them
    build_network = train.build_network

    def keep(config, data):
        built.append(build_network(config, data))
        return built[-1]

    monkeypatch.setattr(train, "build_network", keep)
    registry = tmp_path / "models"
    flags = ["--activation", activation, "--hidden", 12, 12, "--dropout", 0.2, "--epochs", 3, "--batch-size", 32,
             "--lr", 0.01, "--no-progress", "--publish", "--registry", registry]
    flags += {"off": [], "folded": ["--batchnorm"], "explicit": ["--batchnorm", "--no-fold-batchnorm"]}[batchnorm]
    runs = {"blobs": (["--dataset", "npz", "--data-path", blobs_npz], load_dataset("npz", path=blobs_npz)),
            "scores": (["--dataset", "csv", "--data-path", wine_csv, "--target", "score", "--task", "regression"],
                       load_dataset("csv", path=wine_csv, target="score", task="regression"))}
    networks = {}
    for name, (data_flags, _) in runs.items():
        assert run_cli("train", *data_flags, *flags, "--name", name) == 0
        networks[name] = built[-1]
    client = create_app({"registry": str(registry), "watch": False, "default_model": "blobs"}).test_client()
    for name, (_, dataset) in runs.items():
        manifest = read_manifest(registry / name / "1" / "model.npz")
        layers = [layer["type"] + ("/" + layer["batchnorm"] if "batchnorm" in layer else "")
                  for layer in manifest["layers"]]
        assert layers.count({"off": "dense", "folded": "dense/folded", "explicit": "batchnorm"}[batchnorm]) >= 2
        x = dataset.x_test
        low, high = x.min(axis=0), x.max(axis=0)
        span = high - low
        rows = np.concatenate([x, [high + 10 * span, low - 10 * span], -50 * x[:3]]).astype(np.float32)
        # Far out the hidden units are large and the output their small difference, so float32
        # rounding (the trainer's own, and the service's in another order) grows with the terms.
        tolerance = np.where(np.arange(len(rows)) < len(x), 1.0, 25.0)
        out = networks[name].forward(standardize(rows, manifest["input"]["normalization"]), training=False)
        answer = client.post(f"/models/{name}/predict", json={"inputs": rows.tolist(), "top_k": 3})
        assert answer.status_code == 200, answer.get_json()
        predictions = answer.get_json()["predictions"]
        if dataset.task == "classification":
            expected = softmax(out, out=out)
            labels = manifest["output"]["labels"]
            served = np.zeros_like(expected)
            for row, prediction in zip(served, predictions):
                for entry in prediction["top_k"]:
                    row[labels.index(entry["label"])] = entry["probability"]
            assert [p["index"] for p in predictions] == expected.argmax(axis=1).tolist()
            assert (np.abs(served - expected) <= 2e-6 * tolerance[:, None]).all()  # 6 decimals in the JSON
        else:
            scaling = manifest["output"]["scaling"]
            expected = out[:, 0].astype(np.float64) * scaling["std"] + scaling["mean"]
            served = np.array([p["value"] for p in predictions])
            assert (np.abs(served - expected) <= 4e-6 * tolerance * np.maximum(np.abs(expected), scaling["std"])).all()
        capsys.readouterr()
        assert run_cli("evaluate", "--registry", registry, "--model", name) == 0
        assert format_metrics({"per_class": [], **manifest["metrics"]}).split("\n")[0] in capsys.readouterr().out


# The service image holds shared/ and service/ only: neither the trainer's code nor its extras.
WITHOUT_THE_TRAINER = """
import importlib.abc, json, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("trainer", "matplotlib", "tqdm"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
sys.path.insert(0, sys.argv[1])
from service.app import create_app

client = create_app({"registry": sys.argv[2], "watch": False, "default_model": "blobs"}).test_client()
answer = client.post("/models/blobs/predict", json={"inputs": json.loads(sys.argv[3])})
print(json.dumps({"status": answer.status_code, "body": answer.get_json(),
                  "shared": sys.modules["shared"].__file__}))
"""


def test_a_published_model_is_served_without_the_trainer(tmp_path, blobs_npz):
    """A model the trainer published loads and answers where only shared/ and service/ exist,
    as in the service image: nothing on the serving path imports the trainer."""
    registry = tmp_path / "models"
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 2, "--no-progress",
                   "--publish", "--registry", registry) == 0
    image = tmp_path / "image"
    for package in ("shared", "service"):
        shutil.copytree(Path(__file__).resolve().parents[1] / package, image / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    rows = load_dataset("npz", path=blobs_npz).x_test[:5]
    done = subprocess.run([sys.executable, "-I", "-c", WITHOUT_THE_TRAINER, str(image), str(registry),
                           json.dumps(rows.tolist())], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["shared"] == str(image / "shared" / "__init__.py")
    assert answer["status"] == 200, answer["body"]
    expected = load_model(registry / "blobs" / "1" / "model.npz").predict(rows)
    assert [p["index"] for p in answer["body"]["predictions"]] == expected.tolist()


def test_a_class_with_no_training_row_is_named(tmp_path, capsys):
    """A class seen only in the held-out rows got an output unit that never learned, without a word."""
    path = tmp_path / "rare.npz"
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = np.array([0, 1] * 20)
    np.savez(path, x_train=x, y_train=y, x_test=x[:4], y_test=np.array([0, 1, 2, 2]),
             labels=np.array(["ant", "bee", "cat"]))
    assert run_cli("train", "--dataset", "npz", "--data-path", path, "--epochs", 1, "--no-progress",
                   "--output", tmp_path / "out") == 0
    assert "note: no training row of class cat: the model cannot learn to predict it" in capsys.readouterr().out


def test_a_note_names_the_first_few_of_many_classes_without_training_rows(tmp_path, capsys):
    """A csv whose target was an identifier, a class a row, printed a note naming every held-out row's id:
    thousands of names on one line, the rest of the output lost in it."""
    rng = np.random.default_rng(0)
    path = tmp_path / "customers.csv"
    path.write_text("a,b,customer\n" + "".join(f"{a:.3f},{b:.3f},C{i:04d}\n"
                                               for i, (a, b) in enumerate(rng.normal(size=(500, 2)))))
    assert run_cli("train", "--dataset", "csv", "--data-path", path, "--target", "customer", "--task",
                   "classification", "--hidden", 4, "--epochs", 1, "--no-progress", "--output", tmp_path / "out") == 0
    note = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("note: no training row"))
    assert re.fullmatch(r"note: no training row of classes (C\d{4}, ){9}C\d{4} and \d+ more \(\d+ of the 500 "
                        r"classes\): the model cannot learn to predict them \(their rows are all in the test or "
                        r"validation split\)", note), note


def test_a_class_without_training_rows_is_named_with_the_reason_that_holds(tmp_path, capsys):
    """Indices 1..N give a class 0 that no row has, and --limit-train can leave a class out: the note said
    the class's rows were all held out for testing or validation, which sent the reader looking there."""
    x = np.random.default_rng(0).normal(size=(40, 3))
    from_one = tmp_path / "from_one.npz"
    np.savez(from_one, x=x, y=np.array([1, 2] * 20))
    assert run_cli("train", "--dataset", "npz", "--data-path", from_one, "--hidden", 4, "--epochs", 1,
                   "--no-progress", "--output", tmp_path / "out1") == 0
    out = capsys.readouterr().out
    assert ("note: no row of the data is of class 0: the model has an output for it that no row teaches (y holds "
            "class indices, counted from 0: are its classes numbered from 1? store y - 1)") in out
    assert "test or validation split" not in out
    apart = tmp_path / "apart.npz"  # classes coded 10 and 20: not numbered from 1, as the advice had it
    np.savez(apart, x=x, y=np.array([10, 20] * 20))
    assert run_cli("train", "--dataset", "npz", "--data-path", apart, "--hidden", 4, "--epochs", 1,
                   "--no-progress", "--output", tmp_path / "out3") == 0
    out = capsys.readouterr().out
    assert ("note: no row of the data is of classes 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 9 more (19 of the 21 classes): "
            "the model has an output for each that no row teaches (y holds class indices, counted from 0, one output "
            "each up to the largest: store the classes as 0, 1, 2, ..., or their names in y)") in out
    later = tmp_path / "later.npz"
    np.savez(later, x_train=x, y_train=np.array([0] * 10 + [0, 1] * 15), x_test=x[:4], y_test=np.array([0, 1, 0, 1]))
    assert run_cli("train", "--dataset", "npz", "--data-path", later, "--hidden", 4, "--epochs", 1,
                   "--limit-train", 8, "--no-progress", "--output", tmp_path / "out2") == 0
    out = capsys.readouterr().out
    assert ("note: none of the first 8 training rows that --limit-train keeps is of class 1: the model cannot "
            "learn to predict it") in out
    assert "test or validation split" not in out


def test_a_class_named_as_a_missing_value_is_noted(tmp_path, capsys):
    """A class column exported by R or a spreadsheet writes 'NA' where the class is missing: where every
    feature's 'NA' is refused as a missing value, the target's became a class of its own without a word, and
    the published model answered "NA" to its clients."""
    rng = np.random.default_rng(0)
    kinds = ["cat", "dog", "NA", "dog"] * 25
    path = tmp_path / "pets.csv"
    rows = zip(rng.normal(size=(100, 2)), kinds)
    path.write_text("a,b,kind\n" + "".join(f"{a:.3f},{b:.3f},{kind}\n" for (a, b), kind in rows))
    assert run_cli("train", "--dataset", "csv", "--data-path", path, "--target", "kind", "--task", "classification",
                   "--hidden", 4, "--epochs", 1, "--no-progress", "--output", tmp_path / "out") == 0
    out = capsys.readouterr().out
    assert ("note: the class 'NA' (25 rows) is how spreadsheets, pandas and R write a missing value: it is trained as "
            "a class of its own, which the model will answer; if those rows' classes are missing, fill them in or "
            "drop the rows") in out
    assert out.count("missing value") == 1  # 'cat' and 'dog' are classes


def test_a_column_that_only_numbers_the_rows_is_noted(tmp_path, capsys):
    """A csv exported with its row numbers, an 'id' column, was trained on as a feature without a word: it tells
    nothing of a new row, and with the rows in order of class it gave the class away."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 100))
    path = tmp_path / "ordered.csv"
    flags = ["--dataset", "csv", "--data-path", path, "--target", "label", "--task", "classification", "--hidden", 4,
             "--epochs", 1, "--no-progress"]
    path.write_text("id,a,customer_id,b,label\n" + "".join(f"{i},{a[i]:.3f},{7000 + 3 * i},{b[i]:.3f},{int(i >= 50)}\n"
                                                          for i in range(100)))
    assert run_cli("train", *flags, "--output", tmp_path / "out") == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "identifier" in line]
    assert notes == [f"note: the column {name!r} holds a different whole number in every row, as a row number or "
                     "identifier does: it is trained on as a feature, though it tells nothing of a new row (and gives "
                     "the class away when the rows are in order of class); drop the column from the file, since every "
                     "column but the target is a feature" for name in ("id", "customer_id")]
    # A genuine feature is not one: named as an identifier but repeating a value, whole numbers not so named, or
    # an identifier's name on fractions.
    path.write_text("id,count,row,label\n" + "".join(f"{i // 2},{i},{i + 0.5},{int(i >= 50)}\n" for i in range(100)))
    assert run_cli("train", *flags, "--output", tmp_path / "out2") == 0
    assert "identifier" not in capsys.readouterr().out


def test_a_class_named_as_a_missing_value_counts_its_one_row(tmp_path, capsys):
    """The note said '(1 rows)' of a class with a single row."""
    kinds = ["cat", "dog"] * 20 + ["NA"]
    path = tmp_path / "pets.csv"
    path.write_text("a,b,kind\n" + "".join(f"{i},{i % 7},{kind}\n" for i, kind in enumerate(kinds)))
    assert run_cli("train", "--dataset", "csv", "--data-path", path, "--target", "kind", "--task", "classification",
                   "--hidden", 4, "--epochs", 1, "--no-progress", "--output", tmp_path / "out") == 0
    assert "note: the class 'NA' (1 row) is how spreadsheets" in capsys.readouterr().out


# pictures in an npz ------------------------------------------------------------------------------


def bar_pictures(n: int, seed: int, side: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Photos-like pictures (n, side, side), dark ink on white, of a horizontal (class 0) or vertical
    (class 1) bar of random length, thickness, darkness and place."""
    rng = np.random.default_rng(seed)
    x = np.full((n, side, side), 255, np.uint8)
    y = rng.integers(0, 2, n)
    for i in range(n):
        long, thick = rng.integers(side // 3, side * 3 // 4), rng.integers(3, 6)
        h, w = (thick, long) if y[i] == 0 else (long, thick)
        top, left = rng.integers(0, side - h), rng.integers(0, side - w)
        x[i, top:top + h, left:left + w] = rng.integers(0, 60)
    return x, y


@pytest.fixture
def bars_npz(tmp_path):
    (x, y), (x_test, y_test) = bar_pictures(600, 0), bar_pictures(200, 1)
    path = tmp_path / "bars.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x_test, y_test=y_test, labels=np.array(["horizontal", "vertical"]))
    return path


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB" if fmt == "JPEG" else "L").save(buffer, fmt)
    return buffer.getvalue()


def test_an_npz_of_pictures_trains_a_model_served_pictures_as_it_was_trained(tmp_path, bars_npz, capsys):
    """A Keras-style npz of pictures (x of shape (n, h, w)) trained a model of h*w raw values: the
    service took only vectors for it, and a picture of another size or polarity could not be sent."""
    from service.app import create_app
    from shared.preprocess import arrays_to_batch

    registry = tmp_path / "models"
    assert run_cli("train", "--dataset", "npz", "--data-path", bars_npz, "--image", "digit", "--hidden", 32,
                   "--epochs", 10, "--no-progress", "--publish", "--registry", registry) == 0
    model = load_model(registry / "bars" / "1" / "model.npz")
    assert model.manifest["input"]["kind"] == "image" and model.manifest["input"]["preprocessing"]["fit"] == "digit"
    assert model.manifest["metrics"]["accuracy"] >= 0.97
    capsys.readouterr()
    assert run_cli("evaluate", "--registry", registry, "--model", "bars") == 0  # through the same pipeline
    assert f"accuracy {model.manifest['metrics']['accuracy']:.2%}" in capsys.readouterr().out

    app = create_app({"registry": registry, "watch": False, "default_model": "bars"})
    app.extensions["scratchnet"].store.refresh()
    client = app.test_client()
    x_test = np.load(bars_npz)["x_test"][:20]
    expected = model.predict_proba(arrays_to_batch(list(x_test), model.manifest["input"]["preprocessing"]))
    for pixels, probabilities in zip(x_test, expected):  # the picture itself: what the model was scored on
        answer = client.post("/predict?top_k=2", data=encoded(pixels, "PNG"), headers={"Content-Type": "image/png"})
        served = {row["label"]: row["probability"] for row in answer.get_json()["predictions"][0]["top_k"]}
        np.testing.assert_allclose([served["horizontal"], served["vertical"]], probabilities, atol=1e-6)
    # Photos of other sizes, as JPEG: the service fits them as it fitted the training pictures.
    photos, truth = bar_pictures(40, 7, side=96)
    right = sum(client.post("/predict", data=encoded(photo, "JPEG"), headers={"Content-Type": "image/jpeg"})
                .get_json()["predictions"][0]["index"] == label for photo, label in zip(photos, truth))
    assert right >= 38, right


def test_an_npz_of_pictures_without_image_still_trains_on_the_raw_values(tmp_path, bars_npz):
    output = tmp_path / "run"
    assert run_cli("train", "--dataset", "npz", "--data-path", bars_npz, "--hidden", 8, "--epochs", 1,
                   "--no-progress", "--output", output) == 0
    manifest = read_manifest(output / "model.npz")
    assert manifest["input"]["kind"] == "vector" and manifest["input"]["shape"] == [1600]


def test_pictures_that_cannot_be_used_are_named(tmp_path, bars_npz, capsys):
    vectors = tmp_path / "vectors.npz"
    np.savez(vectors, x=np.zeros((50, 5)), y=np.arange(50) % 2)
    blank = tmp_path / "blank.npz"
    x, y = bar_pictures(50, 0)
    x[17] = 255
    np.savez(blank, x=x, y=y)
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n" + "".join(f"{i},{i % 2}\n" for i in range(50)))
    cases = [
        (["--dataset", "npz", "--data-path", vectors], "x has shape (50, 5) (float64); pictures for --image are numbers "
                                                       "of shape (n, height, width)"),
        (["--dataset", "npz", "--data-path", blank], "x[17]: the image is blank"),
        (["--dataset", "csv", "--data-path", csv, "--target", "b", "--task", "classification"],
         "--image reads pictures from an npz's x"),
        (["--dataset", "mnist"], "--image is for pictures in an npz; mnist is a known dataset"),
    ]
    for args, message in cases:
        assert run_cli("train", *args, "--image", "digit", "--epochs", 1, "--no-progress",
                       "--output", tmp_path / "out") == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert "epoch 1/" not in capsys.readouterr().out


def test_a_picture_that_cannot_be_scored_is_named_with_a_way_out_for_evaluate(tmp_path, bars_npz, capsys):
    """Scoring an image model on an npz with a blank picture told the user to train without --image."""
    registry = tmp_path / "models"
    assert run_cli("train", "--dataset", "npz", "--data-path", bars_npz, "--image", "digit", "--hidden", 8,
                   "--epochs", 1, "--no-progress", "--publish", "--registry", registry) == 0
    blank = tmp_path / "with_blank.npz"
    x, y = bar_pictures(50, 3)
    x[4] = 255
    np.savez(blank, x=x, y=y)
    capsys.readouterr()
    assert run_cli("evaluate", "--registry", registry, "--model", "bars", "--data-path", blank) == 2
    err = capsys.readouterr().err
    assert "x[4]: the image is blank" in err and "remove it from the file to score the others" in err, err
    assert "--image" not in err, err


def test_a_run_saved_to_a_folder_is_published_later_as_the_next_version(tmp_path, blobs_npz, capsys):
    """Train to a folder, look at it, then publish it: the file is renumbered, the extras go along."""
    run_folder, registry = tmp_path / "run", tmp_path / "models"
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--name", "blobs", "--hidden", 8,
                   "--epochs", 3, "--no-progress", "--output", run_folder) == 0
    for expected in (1, 2):
        assert run_cli("publish", run_folder, "--registry", registry) == 0
        assert f"published blobs v{expected} in {registry / 'blobs' / str(expected)}" in capsys.readouterr().out
    assert run_cli("publish", run_folder, "--registry", registry, "--name", "blobs-b") == 0
    saved = load_model(run_folder / "model.npz")
    for name, version in (("blobs", 2), ("blobs-b", 1)):
        folder = registry / name / str(version)
        published = load_model(folder / "model.npz", expect_name=name, expect_version=version)
        rows = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
        np.testing.assert_array_equal(published.predict_proba(rows), saved.predict_proba(rows))
        assert sorted(p.name for p in folder.iterdir()) == ["confusion.png", "learning_curves.png", "metrics.jsonl",
                                                           "model.npz"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "nothing").mkdir()
    (tmp_path / "broken" / "model.npz").write_bytes(b"not a model")
    for folder, message in ((tmp_path / "nothing", f"cannot publish {tmp_path / 'nothing'}: it holds no model.npz: "
                                                   "give the folder a run was saved into (train --output DIR), which "
                                                   "holds its model.npz"),
                            (tmp_path / "broken", "not an .npz archive"),
                            (tmp_path / "absent", f"cannot publish {tmp_path / 'absent'}: it does not exist: give the "
                                                  "folder a run was saved into (train --output DIR), which holds its "
                                                  "model.npz"),
                            (run_folder / "model.npz", f"cannot publish {run_folder / 'model.npz'}: it is not a "
                                                       f"folder: give the folder that holds it, {run_folder}")):
        assert run_cli("publish", folder, "--registry", registry) == 2
        assert message in capsys.readouterr().err
    assert Registry(registry).versions("blobs") == [1, 2]


def trainer_process(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainer", *map(str, args)], **kwargs)


def with_sitecustomize(tmp_path, code: str) -> dict:
    """An environment whose Pythons run ``code`` at start-up, before the command's own modules load."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


def test_a_reader_that_leaves_early_does_not_fail_a_published_run(tmp_path, blobs_npz):
    """``python -m trainer train ... --publish | head -c 1``: the output written after the reader had
    gone failed the run (exit 2, 'Broken pipe'), after the version was published if that came first,
    so a caller retrying the failure published twice. The exit status is the run's, not the reader's."""
    registry = tmp_path / "models"
    # Many more lines than a pipe holds (64 KiB), so the run goes on writing after the reader has gone.
    with trainer_process("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 4, "--epochs", 2000,
                         "--batch-size", 500, "--no-progress", "--publish", "--registry", registry,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout.read(1)
        process.stdout.close()
        err = process.stderr.read()
    assert process.returncode == 0, err
    assert err == ""
    assert Registry(registry).versions("blobs") == [1]


STDOUT_FULL_ONCE_PUBLISHED = """
import os
from shared import registry

publish = registry.Registry.publish

def publish_then_fill_stdouts_disk(self, *args, **kwargs):
    version = publish(self, *args, **kwargs)
    full = os.open("/dev/full", os.O_WRONLY)  # every write fails: No space left on device
    os.dup2(full, 1)
    os.close(full)
    return version

registry.Registry.publish = publish_then_fill_stdouts_disk
"""


def test_an_output_that_cannot_be_written_after_publishing_says_the_version_was_published(tmp_path, blobs_npz):
    """A run whose stdout filled its disk once the version was in place (its metrics and "saved" lines)
    failed with exit 2 and "[Errno 28] No space left on device", as if nothing was published: a caller
    retrying the failure published the model twice. As with a reader that leaves early, the status is
    the run's; the one line on stderr says the version is in the registry."""
    registry = tmp_path / "models"
    train_flags = ["--dataset", "npz", "--data-path", blobs_npz, "--hidden", 4, "--epochs", 1, "--no-progress"]

    def published(version: int) -> str:
        return (f"error: cannot write to stdout (No space left on device) after publishing blobs v{version} in "
                f"{registry / 'blobs' / str(version)}: the version is in the registry; do not run again to "
                "publish it\n")

    done = subprocess.run([sys.executable, "-m", "trainer", "train", *map(str, train_flags), "--publish",
                           "--registry", str(registry)], capture_output=True, text=True,
                          env=with_sitecustomize(tmp_path, STDOUT_FULL_ONCE_PUBLISHED))
    assert (done.returncode, done.stderr) == (0, published(1))
    assert Registry(registry).versions("blobs") == [1]

    assert run_cli("train", *train_flags, "--output", tmp_path / "run") == 0
    with open("/dev/full", "w") as full:  # publish's one line comes after the version is in place
        done = subprocess.run([sys.executable, "-m", "trainer", "publish", str(tmp_path / "run"), "--registry",
                               str(registry)], stdout=full, stderr=subprocess.PIPE, text=True)
    assert (done.returncode, done.stderr) == (0, published(2))
    assert Registry(registry).versions("blobs") == [1, 2]

    with open("/dev/full", "w") as full:  # a run's first line comes before: it stops, having published nothing
        done = subprocess.run([sys.executable, "-m", "trainer", "train", *map(str, train_flags), "--publish",
                               "--registry", str(registry)], stdout=full, stderr=subprocess.PIPE, text=True)
    assert (done.returncode, done.stderr) == (2, "error: cannot write to stdout (No space left on device)\n")
    assert Registry(registry).versions("blobs") == [1, 2]


STDOUT_FULL_ONCE_SAVED = """
import os
from trainer import train

write_output = train.write_output

def write_output_then_fill_stdouts_disk(*args, **kwargs):
    metrics = write_output(*args, **kwargs)
    full = os.open("/dev/full", os.O_WRONLY)  # every write fails: No space left on device
    os.dup2(full, 1)
    os.close(full)
    return metrics

train.write_output = write_output_then_fill_stdouts_disk
"""


def test_an_output_that_cannot_be_written_after_saving_says_the_model_was_saved(tmp_path, blobs_npz):
    """A run whose stdout filled its disk once its model was in its --output folder said only "[Errno 28]
    No space left on device": its user could not tell the model from a half-written one, and trained it
    again. The run still fails (its last lines are lost), but says the folder's model.npz is complete."""
    folder = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "trainer", "train", "--dataset", "npz", "--data-path", blobs_npz,
                           "--hidden", "4", "--epochs", "1", "--no-progress", "--output", str(folder)],
                          capture_output=True, text=True, env=with_sitecustomize(tmp_path, STDOUT_FULL_ONCE_SAVED))
    assert (done.returncode, done.stderr) == (
        2, f"error: cannot write to stdout (No space left on device) after saving blobs in {folder}: its "
           "model.npz is complete\n")
    assert load_model(folder / "model.npz").name == "blobs"


@contextlib.contextmanager
def pipe_without_reader():
    """The writing end of a pipe whose reader has already gone (``2>&1 | head -c 0``)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        yield writer
    finally:
        os.close(writer)


def signal_on_import(module: str, signum: int) -> str:
    """sitecustomize code by which a Python sends itself ``signum`` as ``module`` first begins to import (once,
    as a key is pressed once: importing it again, as a stopped run drawing its curves does, goes on)."""
    return f"""
import os, sys

class Signal:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), {int(signum)})

sys.meta_path.insert(0, Signal())
"""


SIGTERM_WHILE_PUBLISHING = signal_on_import("matplotlib.pyplot", signal.SIGTERM)  # loaded for the version's plots


@pytest.mark.parametrize("flags, site, status, versions", [
    ([], "", 0, [1]),
    (["--lr", "1e30"], "", 2, []),  # error: the loss became nan
    ([], SIGTERM_WHILE_PUBLISHING, 128 + signal.SIGTERM, []),  # terminated: nothing was published
], ids=["published", "error", "terminated while publishing"])
def test_a_stderr_reader_that_leaves_early_does_not_change_the_runs_status(tmp_path, blobs_npz, flags, site,
                                                                          status, versions, own_tmpdir):
    """``python -m trainer train ... --publish 2>&1 | head -1``: the error, or 'terminated', written to
    stderr after the reader had gone raised BrokenPipeError, and the run exited 1 with a traceback
    instead of its own status. Here the reader of stdout and stderr has left before the run writes."""
    registry = tmp_path / "models"
    with pipe_without_reader() as gone, trainer_process(
            "train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 4, "--epochs", 2, "--no-progress",
            "--publish", "--registry", registry, *flags, stdout=gone, stderr=gone,
            env=with_sitecustomize(tmp_path, site)) as process:
        pass
    assert process.returncode == status
    assert Registry(registry).versions("blobs") == versions


@pytest.mark.parametrize("args", [["gradcheck"], ["gradcheck", "--hidden", "4"], ["evaluate", "--model", "blobs"]],
                         ids=["gradcheck", "gradcheck of a network", "evaluate's note on a pinned version"])
def test_a_reader_that_leaves_before_a_check_or_a_score_does_not_change_its_status(tmp_path, blobs_npz, args):
    """``python -m trainer gradcheck | head -2`` exited 2 with 'error: [Errno 32] Broken pipe' when head had
    gone before the table was written (its print bypassed the reader-gone handling), as did evaluate's
    note on stderr that the service serves a pinned version (``2>&1 | head -1``)."""
    registry = tmp_path / "models"
    for _ in range(2):
        assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                       "--publish", "--registry", registry) == 0
    (registry / "blobs" / "serving.json").write_text('{"pinned": 1}')
    data = ["--registry", str(registry), "--dataset", "npz", "--data-path", str(blobs_npz)]
    extra = data if args[0] == "evaluate" else []
    with pipe_without_reader() as gone:
        done = subprocess.run([sys.executable, "-m", "trainer", *args, *extra], stdout=gone, stderr=gone, timeout=120)
    assert done.returncode == 0


SIGINT_ON_IMPORT = signal_on_import("trainer.train", signal.SIGINT)  # Ctrl-C pressed while the trainer loads


def entry_point_call() -> list[str]:
    """Python's arguments for what the installed ``scratchnet-train`` script does: call pyproject's entry point."""
    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        module, function = tomllib.load(f)["project"]["scripts"]["scratchnet-train"].split(":")
    return ["-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


@pytest.mark.parametrize("command", [["-m", "trainer"], entry_point_call()], ids=["python -m trainer", "script"])
def test_ctrl_c_while_the_trainer_loads_is_one_line(tmp_path, command):
    """The CLI was imported outside the handling of Ctrl-C: one pressed in the first moment (NumPy,
    pydantic and matplotlib loading) printed a traceback."""
    done = subprocess.run([sys.executable, *command, "summary"], env=with_sitecustomize(tmp_path, SIGINT_ON_IMPORT),
                          capture_output=True, text=True, timeout=60, preexec_fn=ctrl_c_at_its_default)
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", "")


def test_sigterm_while_the_trainer_loads_is_one_line_and_exits_143(tmp_path):
    """``docker stop`` in the first moment (NumPy, pydantic and matplotlib loading) killed the trainer with
    SIGTERM's default action, before its handler was installed: no 'terminated' line, where a Ctrl-C then
    says 'interrupted', and a parent that runs it (Python's subprocess) saw -15, not the 143 it documents."""
    done = subprocess.run([sys.executable, "-m", "trainer", "summary"],
                          env=with_sitecustomize(tmp_path, signal_on_import("trainer.train", signal.SIGTERM)),
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr, done.stdout) == (143, "terminated\n", "")


CTRL_C_AT_EXIT = {
    # In the last moment, as Python frees its modules, after it has set the signals it handled back to their default.
    "as Python exits": """
import os, signal

class CtrlC:
    def __del__(self, kill=os.kill, pid=os.getpid()):
        kill(pid, signal.SIGINT)

pressed_as_python_exits = CtrlC()
""",
    # Python code still runs, the command done.
    "at exit": "import atexit, os, signal\natexit.register(os.kill, os.getpid(), signal.SIGINT)\n",
}


@pytest.mark.parametrize("moment", CTRL_C_AT_EXIT)
def test_a_ctrl_c_once_the_run_has_published_and_said_so_changes_nothing(tmp_path, blobs_npz, moment):
    """A Ctrl-C in the half second after 'saved blobs v1', while Python exits, killed the trainer: exit 130 and
    no word after a complete publish, or a traceback ('Exception ignored in atexit callback'), as if the run had
    been stopped. The command has done all it does by then: the signal is ignored and its status stands."""
    registry = tmp_path / "models"
    done = subprocess.run([sys.executable, "-m", "trainer", "train", "--dataset", "npz", "--data-path", blobs_npz,
                           "--hidden", "4", "--epochs", "1", "--no-progress", "--publish", "--registry", registry],
                          env=with_sitecustomize(tmp_path, CTRL_C_AT_EXIT[moment]), capture_output=True, text=True,
                          timeout=120, preexec_fn=ctrl_c_at_its_default)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[-1] == f"saved blobs v1 in {registry / 'blobs' / '1'}"
    assert Registry(registry).versions("blobs") == [1]


def swallowed_signal_on_import(module: str, signum: int) -> str:
    """sitecustomize code by which a Python sends itself ``signum`` as ``module`` begins to import, and
    ignores what that raises, as a library importing an optional dependency ignores an ImportError."""
    return f"""
import os, sys

class Signal:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            try:
                os.kill(os.getpid(), {int(signum)})
            except BaseException:
                pass

sys.meta_path.insert(0, Signal())
"""


@pytest.mark.parametrize("module", ["trainer.train", "matplotlib.pyplot"], ids=["loading", "publishing"])
def test_a_ctrl_c_a_library_swallowed_still_stops_the_run_before_it_publishes(tmp_path, blobs_npz, module,
                                                                              own_tmpdir):
    """A Ctrl-C landing while a C extension initialises comes out as an ImportError, which a library's
    optional import ignores: the run went on and published a version, which the service swapped to."""
    registry = tmp_path / "models"
    done = subprocess.run([sys.executable, "-m", "trainer", "train", "--dataset", "npz", "--data-path", blobs_npz,
                           "--hidden", "4", "--epochs", "2", "--no-progress", "--publish", "--registry", registry],
                          env=with_sitecustomize(tmp_path, swallowed_signal_on_import(module, signal.SIGINT)),
                          capture_output=True, text=True, timeout=120, preexec_fn=ctrl_c_at_its_default)
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines()[-1].startswith("interrupted"), done.stderr
    assert not (registry / "blobs").exists() or Registry(registry).versions("blobs") == []


def test_ctrl_c_while_the_trainer_loads_exits_130_when_no_one_reads_stderr(tmp_path):
    """'interrupted' written to a pipe whose reader had gone raised BrokenPipeError: exit 1, not 130."""
    with pipe_without_reader() as gone:
        done = subprocess.run([sys.executable, "-m", "trainer", "summary"], stdout=gone, stderr=gone,
                              env=with_sitecustomize(tmp_path, SIGINT_ON_IMPORT), timeout=60,
                              preexec_fn=ctrl_c_at_its_default)
    assert done.returncode == 130


@pytest.mark.parametrize("signum, what, destination, unsaved", [
    (signal.SIGINT, "interrupted", ["--publish", "--registry", "models"], "nothing was published"),
    (signal.SIGTERM, "terminated", ["--output", "out"], "no model was saved"),
], ids=["ctrl-c while publishing", "sigterm while saving to a folder"])
def test_a_run_stopped_during_training_keeps_its_finished_epochs_metrics_and_curves(tmp_path, blobs_npz, signum, what,
                                                                                    destination, unsaved):
    """Ctrl-C or SIGTERM after some epochs discarded them all: no metrics, no plot. Each epoch's line is
    written as it ends, and a stopped run keeps them with their learning curves in a new temporary
    folder, which its last line names, saving or publishing no model."""
    with trainer_process("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 8, "--epochs", 100000,
                         "--no-progress", *destination, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "TMPDIR": str(tmp_path)}, preexec_fn=ctrl_c_at_its_default,
                         ) as process:
        try:
            next(line for line in process.stdout if line.startswith("epoch "))
            process.send_signal(signum)
            _, err = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 128 + signum, err
    kept = re.fullmatch(rf"{what}: {unsaved}; metrics.jsonl and learning_curves.png of the (\d+) finished epochs? "
                        rf"(?:is|are) kept in ({re.escape(str(tmp_path))}/scratchnet-blobs-\w+)\n", err)
    assert kept, err
    epochs, folder = int(kept[1]), Path(kept[2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([blobs_npz.name, folder.name])  # no model, no folder
    assert sorted(os.listdir(folder)) == ["learning_curves.png", "metrics.jsonl"]
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [(line["event"], line["epoch"]) for line in lines] == [("epoch", epoch) for epoch in range(1, epochs + 1)]
    assert (folder / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("signum, what, destination, unsaved", [
    (signal.SIGINT, "interrupted", ["--publish", "--registry", "models"], "nothing was published"),
    (signal.SIGTERM, "terminated", ["--output", "out"], "no model was saved"),
], ids=["ctrl-c while publishing", "sigterm while saving to a folder"])
def test_a_run_stopped_while_its_model_is_written_keeps_its_epochs_metrics_and_curves(tmp_path, blobs_npz, signum, what,
                                                                                      destination, unsaved, own_tmpdir):
    """Ctrl-C or SIGTERM after the last epoch, as the model is scored and written (here as the plots
    begin to load), said only 'interrupted' and kept none of the epochs' metrics, which a stop during the
    training keeps: a long run stopped at its very end lost them all. It keeps them as that stop does."""
    status, out, err = signalled_run(tmp_path, blobs_npz, signal_on_import("matplotlib.pyplot", signum), *destination)
    assert status == 128 + signum, err
    assert "epoch 3/3" in out
    (folder,) = own_tmpdir.iterdir()
    assert err == (f"{what}: {unsaved}; metrics.jsonl and learning_curves.png of the 3 finished epochs are kept in "
                   f"{folder}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([blobs_npz.name, "site"])  # no model, no folder
    assert sorted(os.listdir(folder)) == ["learning_curves.png", "metrics.jsonl"]
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [(line["event"], line["epoch"]) for line in lines] == [("epoch", 1), ("epoch", 2), ("epoch", 3)]
    assert (folder / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def signalled_run(tmp_path, blobs_npz, site: str, *destination) -> tuple[int, str, str]:
    """``python -m trainer train`` of ``blobs_npz`` for 3 epochs to ``destination``, in ``tmp_path``, whose
    Python runs ``site`` at start-up (to send itself a signal), Ctrl-C at its default: status, stdout, stderr."""
    with trainer_process("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 8, "--epochs", 3,
                         "--no-progress", *destination, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=with_sitecustomize(tmp_path, site),
                         preexec_fn=ctrl_c_at_its_default) as process:
        try:
            out, err = process.communicate(timeout=120)
        finally:
            process.kill()
    return process.returncode, out, err


def signal_on_output(text: str, signum: int) -> str:
    """sitecustomize code by which a Python sends itself ``signum`` as it is about to write ``text``, the
    start of a line, to stdout (once, before the line is written)."""
    return f"""
import os, sys

class Signal:
    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        if text.startswith({text!r}) and sys.stdout is self:
            sys.stdout = self.stream
            os.kill(os.getpid(), {int(signum)})
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)

sys.stdout = Signal(sys.stdout)
"""


@pytest.mark.parametrize("signum, what", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_a_run_stopped_after_its_model_is_saved_to_a_folder_says_it_was_saved(tmp_path, blobs_npz, signum, what,
                                                                              own_tmpdir):
    """Ctrl-C or SIGTERM once the model is written into --output, before the run prints its test scores,
    said only 'terminated', so the model in the folder, whole, read as one a stop had cut short."""
    status, out, err = signalled_run(tmp_path, blobs_npz, signal_on_output("on the ", signum), "--output", "out")
    assert status == 128 + signum, err
    assert "epoch 3/3" in out and "test rows" not in out
    assert err == f"{what} after saving blobs in out: its model.npz is complete\n"
    assert load_model(tmp_path / "out" / "model.npz").manifest["name"] == "blobs"
    assert sorted(os.listdir(tmp_path / "out")) == ["confusion.png", "learning_curves.png", "metrics.jsonl",
                                                    "model.npz"]
    assert list(own_tmpdir.iterdir()) == []  # the epochs' metrics are in the folder, with the model


def test_a_second_ctrl_c_while_the_curves_are_drawn_stops_at_once_keeping_the_metrics(tmp_path, blobs_npz,
                                                                                     monkeypatch, capsys):
    """Ctrl-C pressed again while a stopped run draws its learning curves ends the run there, leaving
    the metrics of its finished epochs and no half-written PNG."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    train_epoch, drawn = train._train_epoch, []

    def ctrl_c_in_epoch_3(*args, **kwargs):
        row = train_epoch(*args, **kwargs)
        if row["epoch"] == 3:
            raise KeyboardInterrupt
        return row

    def ctrl_c_while_drawing(path, history, title):
        drawn.append([row["epoch"] for row in history])
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")  # the start of the picture
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_train_epoch", ctrl_c_in_epoch_3)
    monkeypatch.setattr(train.report, "plot_learning_curves", ctrl_c_while_drawing)
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 8, "--epochs", 10,
                   "--no-progress", "--output", tmp_path / "out") == 130
    err, kept = capsys.readouterr().err, list((tmp_path / "tmp").iterdir())
    assert len(kept) == 1, err
    folder = kept[0]
    assert err == f"interrupted: no model was saved; metrics.jsonl of the 2 finished epochs is kept in {folder}\n"
    assert drawn == [[1, 2]] and os.listdir(folder) == ["metrics.jsonl"]
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (tmp_path / "out").exists()


def test_a_run_stopped_in_its_refit_counts_the_epochs_its_curves_show(tmp_path, blobs_npz, monkeypatch, capsys):
    """The stop's line counted refit's retraining epochs with the validation run's ("7 finished
    epochs" of a 5-epoch run whose curves show 5): it names the refit's apart."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    train_epoch, calls = train._train_epoch, []

    def ctrl_c_in_the_refits_third_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5 + 3:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "_train_epoch", ctrl_c_in_the_refits_third_epoch)
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 8, "--epochs", 5,
                   "--val-fraction", 0.2, "--refit", "--no-progress", "--output", tmp_path / "out") == 130
    err, (folder,) = capsys.readouterr().err, list((tmp_path / "tmp").iterdir())
    assert err.endswith("interrupted: no model was saved; metrics.jsonl and learning_curves.png of the 5 finished "
                        f"epochs (and in metrics.jsonl 2 of the refit) are kept in {folder}\n"), err
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [(line["epoch"], line.get("refit", False)) for line in lines] == [
        (1, False), (2, False), (3, False), (4, False), (5, False), (1, True), (2, True)]


def test_a_temporary_directory_that_cannot_be_used_costs_the_kept_metrics_not_the_run(tmp_path, blobs_npz, monkeypatch,
                                                                                    capsys):
    """The epochs' lines kept for a stopped run went to $TMPDIR, and a full one failed the run after
    its epoch (exit 2, nothing published), a run that before wrote nothing there. Keeping them is
    given up with a note instead, and the run publishes."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    append_epoch = train.report.append_epoch

    def full_after_two_epochs(path, row):
        if row["epoch"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        append_epoch(path, row)

    monkeypatch.setattr(train.report, "append_epoch", full_after_two_epochs)
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 8, "--epochs", 4,
                   "--no-progress", "--publish", "--registry", tmp_path / "models") == 0
    out, err = capsys.readouterr()
    assert re.search(r"note: cannot write the epochs' metrics into \S+/tmp/scratchnet-blobs-\w+ \(No space left on "
                     r"device\); a run stopped from now on keeps no metrics of its epochs, and this one trains on\n",
                     out + err), out + err
    assert list((tmp_path / "tmp").iterdir()) == []
    assert [json.loads(line)["epoch"] for line in (tmp_path / "models/blobs/1/metrics.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "epoch"] == [1, 2, 3, 4]

    monkeypatch.setattr(train.report, "append_epoch", append_epoch)
    monkeypatch.setattr(tempfile, "tempdir", str(blobs_npz))  # a file: no folder can be made in it
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 8, "--epochs", 2,
                   "--no-progress", "--publish", "--registry", tmp_path / "models") == 0
    out, err = capsys.readouterr()
    assert f"note: cannot make a folder for the epochs' metrics in {blobs_npz} (Not a directory)" in out + err
    assert (tmp_path / "models/blobs/2/model.npz").is_file()


def folder_contents(folder: Path) -> dict:
    """Each path in ``folder``: "folder", or its file's SHA-256 (a failing comparison of the bytes takes minutes)."""
    return {str(p.relative_to(folder)): "folder" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*")}


def test_an_output_folder_whose_files_cannot_all_be_replaced_is_left_as_it_was(tmp_path, blobs_npz, capsys):
    """The earlier files were deleted and replaced one by one: a replacement that failed part way
    left the new run's metrics and plots beside the earlier model, and the message said the folder
    was unchanged. Here a folder stands where the new model.npz must go."""
    out = tmp_path / "out"
    args = ["train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 4, "--epochs", 2, "--no-progress"]
    assert run_cli(*args, "--output", out) == 0
    (out / "model.npz").unlink()
    (out / "model.npz").mkdir()
    (out / "model.npz" / "notes.txt").write_text("mine")
    before = folder_contents(out)
    capsys.readouterr()
    assert run_cli(*args, "--seed", 1, "--output", out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write the model into {out}: Is a directory; what the folder held before "
                          "is unchanged"), err
    assert folder_contents(out) == before


def test_evaluate_says_when_the_registry_is_not_a_folder(tmp_path, capsys):
    """It said 'no versions of ...', sending the user to look for a model in a registry that is not there;
    then only that the registry does not exist, not what to give instead."""
    way_out = "give the folder the model was published into (--registry, or $SCRATCHNET_REGISTRY)"
    assert refused(capsys, "evaluate", "--registry", tmp_path / "modles", "--model", "blobs") == (
        f"the registry {tmp_path / 'modles'} does not exist: {way_out}")
    (tmp_path / "file").write_text("")
    assert refused(capsys, "evaluate", "--registry", tmp_path / "file", "--model", "blobs") == (
        f"the registry {tmp_path / 'file'} is not a folder: {way_out}")


BLOCK_PYDANTIC = """
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pydantic":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
"""


@pytest.mark.parametrize("args, site, message", [
    (["train", "--publish", "--output", "out"], "", "--output writes a folder of your own and --publish a registry"),
    (["overfit", "--limit-train", "5"], "", "overfit trains on --samples examples without a validation split"),
    (["train", "--epochs", "0"], "", "invalid config: epochs"),
    (["train", "--epochs", "none"], "", "argument --epochs: invalid int value"),  # argparse's, as before
    (["summary"], BLOCK_PYDANTIC, "the trainer needs pydantic, which is not installed"),
])
def test_every_user_error_exits_2(tmp_path, args, site, message):
    """Some refusals exited 1 (SystemExit with a message) and others 2, so a script could not tell a
    user error from a failed check (gradcheck, overfit: 1)."""
    done = subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=60,
                          env=with_sitecustomize(tmp_path, site), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr.splitlines()[-1], done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_extra_exits_2_when_no_one_reads_stderr(tmp_path):
    """The 'not installed' line is written before the rest of the CLI loads: to a pipe whose reader
    had gone, it raised BrokenPipeError and the command exited 1, not 2."""
    with pipe_without_reader() as gone:
        done = subprocess.run([sys.executable, "-m", "trainer", "summary"], stdout=gone, stderr=gone, timeout=60,
                              env=with_sitecustomize(tmp_path, BLOCK_PYDANTIC))
    assert done.returncode == 2


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors start a UTF-8 file with a BOM, which TOML does not allow: the file was refused."""
    config_file = tmp_path / "run.toml"
    config_file.write_text('epochs = 3\noptimizer = "sgd"\n', encoding="utf-8-sig")
    config = cli.config_from_args(cli.make_parser().parse_args(["train", "--config", str(config_file)]))
    assert (config.epochs, config.optimizer) == (3, "sgd")


def test_a_config_file_that_cannot_be_read_says_why_in_words(tmp_path, capsys):
    """Python's own words came through: "'utf-8' codec can't decode byte 0xff in position 0: invalid start
    byte" for a file Notepad saved as "Unicode", "[Errno 2] No such file or directory: '...'" repeating the path."""
    config_file = tmp_path / "run.toml"
    config_file.write_text('epochs = 3\noptimizer = "sgd"\n', encoding="utf-16")
    assert refused(capsys, "summary", "--config", config_file) == (
        f"cannot read config {config_file}, line 1: byte 0xff is not UTF-8, which a TOML file is written in: save it "
        "as UTF-8")
    config_file.write_bytes(b'epochs = 3\nname = "caf\xe9"\n')  # Windows-1252
    assert f"{config_file}, line 2: byte 0xe9 is not UTF-8" in refused(capsys, "summary", "--config", config_file)
    assert refused(capsys, "summary", "--config", tmp_path / "absent.toml") == (
        f"config {tmp_path / 'absent.toml'}: no such file: give the path of the TOML file to read (--config)")


def test_a_data_file_or_config_that_is_not_there_says_where_it_was_looked_for_and_what_to_give(
        tmp_path, blobs_npz, monkeypatch, capsys):
    """A mistyped --data-path or --config was told "cannot read: No such file or directory", and the folder
    of the data "cannot read: Is a directory": what to give instead was left to be guessed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "small.toml").write_text("epochs = 1\n")
    assert refused(capsys, "train", "--dataset", "npz", "--data-path", "blob.npz") == (
        f"blob.npz: no such file (relative to {tmp_path}): give the path of the npz file to read (--data-path)")
    assert refused(capsys, "train", "--dataset", "npz", "--data-path", ".") == (
        ". is a folder (it holds blobs.npz): give the path of the npz file to read, not its folder (--data-path)")
    assert refused(capsys, "train", "--dataset", "csv", "--data-path", "blobs.npz/data.csv", "--target", "y",
                   "--task", "regression") == (
        f"blobs.npz/data.csv: no such file (relative to {tmp_path}): give the path of the csv file to read "
        "(--data-path)")
    assert refused(capsys, "train", "--config", "runs") == (
        "config runs is a folder (it holds small.toml): give the path of the TOML file to read, not its folder "
        "(--config)")


def test_a_command_that_publishes_nothing_does_not_say_nothing_was_published(blobs_npz, monkeypatch, capsys):
    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "dataset_network_arguments", pressed)
    assert run_cli("summary", "--dataset", "npz", "--data-path", blobs_npz) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("destination", [["--output", "runs/first"], ["--publish", "--registry", "models"]],
                         ids=["output", "publish"])
def test_a_stopped_run_leaves_no_folder_it_made(tmp_path, blobs_npz, monkeypatch, capsys, destination, own_tmpdir):
    """SIGTERM while the files are written left the --output folder, or the registry's folder for the
    model, made for them and empty. Only the epochs' metrics are kept, in the temporary directory."""
    monkeypatch.chdir(tmp_path)

    def terminated(*args, **kwargs):
        raise cli.Terminated(signal.SIGTERM)

    monkeypatch.setattr(train.report, "plot_learning_curves", terminated)
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   *destination) == 128 + signal.SIGTERM
    (kept,) = own_tmpdir.iterdir()
    unsaved = "nothing was published" if "--publish" in destination else "no model was saved"
    kept_line = f"metrics.jsonl of the 1 finished epoch is kept in {kept}"  # its plot, stopped too, is not
    assert capsys.readouterr().err == f"terminated: {unsaved}; {kept_line}\n"
    assert list(tmp_path.iterdir()) == [blobs_npz]


def test_a_diverging_run_says_so_without_numpy_warnings(tmp_path, blobs_npz):
    """NumPy's overflow warnings (file, line, code) came before the one line that says what to do."""
    with trainer_process("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 4, "--epochs", 2,
                         "--lr", "1e30", "--no-progress", "--output", tmp_path / "out", stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True) as process:
        err = process.stderr.read()
    assert process.returncode == 2
    assert err.startswith("error: the loss became nan in epoch 1: lower the learning rate")
    assert len(err.splitlines()) == 1, err


def test_overfit_refuses_more_samples_than_the_training_split_holds(blobs_npz, capsys):
    """It trained on the 500 there were and reported them as if --samples had been honoured."""
    assert refused(capsys, "overfit", "--dataset", "npz", "--data-path", blobs_npz, "--samples", 1000000) == (
        "--samples 1000000: blobs has 500 training examples; give --samples 500 or fewer")


@pytest.mark.parametrize("args", [["train", "--output", ""], ["train", "--publish", "--registry", ""],
                                  ["evaluate", "--model", "blobs", "--registry", ""],
                                  ["publish", "run", "--registry", ""], ["publish", ""],
                                  ["train", "--data-dir", ""], ["train", "--cache-dir", ""],
                                  ["evaluate", "--model", "blobs", "--data-path", ""]])
def test_an_empty_folder_name_is_refused(tmp_path, blobs_npz, monkeypatch, capsys, args):
    """An empty --output trained into a temporary folder, and an empty --registry used the default
    one, or the current folder: neither was asked for. Nor was the current folder by publish's own
    empty folder name, which published a run saved there, by --data-dir (read from), by --cache-dir
    (downloaded into), nor, for evaluate, the file the model was trained on by --data-path."""
    monkeypatch.chdir(tmp_path)
    expected = "expected a file" if args[-2] == "--data-path" else "expected a folder"
    if args[0] == "train":
        args += ["--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress"]
    with pytest.raises(SystemExit) as raised:
        run_cli(*args)
    assert raised.value.code == 2
    assert f"{expected}, got an empty name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [blobs_npz]


@pytest.mark.parametrize("key, what", [("data_path", "a file"), ("data_dir", "a folder"), ("cache_dir", "a folder")])
def test_an_empty_path_in_a_config_file_is_refused(tmp_path, capsys, key, what):
    """It was read as the config file's own folder: ".: cannot read: Is a directory", or MNIST looked for there."""
    config_file = tmp_path / "run.toml"
    config_file.write_text(f'dataset = "csv"\ntarget = "kind"\ntask = "classification"\n{key} = ""\n')
    assert refused(capsys, "train", "--config", config_file) == (
        f"config {config_file} sets {key} to an empty name: give {what}, or take {key} out of the file")


def test_the_plots_say_what_was_scored_and_number_whole_epochs(tmp_path, blobs_npz, monkeypatch):
    """The confusion matrix names its split, size and accuracy, its colour bar what it counts, and a
    short run's learning curves have no epoch 1.5."""
    import matplotlib.figure

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, path, **kwargs: saved.append(figure))
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 4, "--epochs", 3,
                   "--no-progress", "--output", tmp_path / "run") == 0
    curves, confusion = saved
    accuracy = read_manifest(tmp_path / "run" / "model.npz")["metrics"]["accuracy"]
    assert confusion.axes[0].get_title() == f"blobs, accuracy {accuracy:.2%}\nx_test/y_test of blobs.npz, n=100"
    assert confusion.axes[1].get_ylabel() == "examples"
    assert all(tick == int(tick) for ax in curves.axes for tick in ax.get_xticks())


def test_the_learning_curves_mark_the_epoch_early_stopping_restored(tmp_path, monkeypatch):
    """The curves of a model whose weights early stopping took from an earlier epoch run on past it,
    and nothing said which epoch the model is: a dashed line on each panel marks it, "kept: epoch N".
    A model with its last epoch's weights, or refit's new ones, has no such line."""
    import matplotlib.figure

    rng = np.random.default_rng(2)
    noise = tmp_path / "noise.npz"  # labels that are pure noise: validation loss climbs within a few epochs
    np.savez(noise, x_train=rng.normal(size=(300, 20)), y_train=rng.integers(0, 3, 300),
             x_test=rng.normal(size=(50, 20)), y_test=rng.integers(0, 3, 50))
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, path, **kwargs: saved.append(figure))

    def marks(**settings) -> tuple[dict, list[list[tuple]], list[list[str]]]:
        """What a run's manifest records of its training, and its learning curves' dashed lines and legend
        texts, panel by panel."""
        saved.clear()
        config = train.TrainConfig(dataset="npz", data_path=str(noise), hidden=[128], lr=0.01, val_fraction=0.3,
                                   progress=False, **settings)
        train.run(config, output_dir=str(tmp_path / "out"), log=lambda *_: None)
        curves = saved[0]
        assert curves.axes[0].get_xlabel() == "epoch"
        dashed = [[(line.get_label(), list(line.get_xdata())) for line in ax.get_lines()
                   if line.get_linestyle() == "--"] for ax in curves.axes]
        legends = [[text.get_text() for text in ax.get_legend().get_texts()] for ax in curves.axes]
        return read_manifest(tmp_path / "out" / "model.npz")["training"], dashed, legends

    training, dashed, legends = marks(epochs=200, patience=3)
    best = training["best_epoch"]
    assert training["epochs_run"] == best + 3  # stopped early, back to the best epoch
    assert dashed == [[(f"kept: epoch {best}", [best, best])]] * 2
    assert legends == [["train", "validation", f"kept: epoch {best}"]] * 2
    unmarked = ([[]] * 2, [["train", "validation"]] * 2)
    assert marks(epochs=best + 2)[1:] == unmarked  # no early stopping: the last epoch's weights
    assert marks(epochs=1, patience=3)[1:] == unmarked  # the best epoch was the last: nothing restored
    assert marks(epochs=200, patience=3, refit=True)[1:] == unmarked  # new weights, trained for the best count


def test_a_confusion_plot_of_many_classes_writes_no_text_per_cell(tmp_path, monkeypatch):
    """A count per cell is a text object each: 300 classes took 46 s to plot, 1,000 ran out of memory."""
    import matplotlib.axes

    texts = []
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, *args, **kwargs: texts.append(args))
    data = tmp_path / "many.csv"
    data.write_text("a,y\n" + "".join(f"{i},{i}\n" for i in range(300)))
    assert run_cli("train", "--dataset", "csv", "--data-path", data, "--target", "y", "--task", "classification",
                   "--hidden", 4, "--epochs", 1, "--no-progress", "--output", tmp_path / "run") == 0
    assert (tmp_path / "run" / "confusion.png").is_file() and texts == []


def test_a_confusion_plot_of_thousands_of_classes_sums_blocks_of_them(tmp_path):
    """matplotlib coloured each of the 144 million cells of 12,000 classes in float64 first: 10 GB and 16 s, more
    memory than the run's check before training allows for, to draw a plot some 500 pixels wide."""
    import matplotlib.image

    classes = 3000
    cm = np.zeros((classes, classes), dtype=np.int64)
    cm[np.arange(classes), np.arange(classes)] = 1
    cm[:1500, 2000] += 1
    _, peak = traced_peak(report.plot_confusion, tmp_path / "confusion.png", {"confusion": cm},
                          [f"id{i}" for i in range(classes)], "ids")
    assert peak < 2 * cm.nbytes  # a cell in RGBA float64 is 32 bytes, four times its count's 8
    picture = matplotlib.image.imread(tmp_path / "confusion.png")
    assert picture.shape[:2] == (600, 700)


def test_the_metrics_of_many_classes_hold_the_confusion_cells_that_count_rows(tmp_path):
    """A column of ids taken as the target, 12,000 classes, wrote a confusion matrix of 144 million cells into
    metrics.jsonl: 433 MB, nearly all zeros, in every version published, past the 1 MB the disk check allows."""
    data = tmp_path / "ids.csv"
    data.write_text("a,y\n" + "".join(f"{i % 7},id{i}\n" for i in range(600)))
    assert run_cli("train", "--dataset", "csv", "--data-path", data, "--target", "y", "--task", "classification",
                   "--hidden", 4, "--epochs", 1, "--no-progress", "--output", tmp_path / "run") == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    final = json.loads(metrics.read_text().splitlines()[-1])
    assert "confusion" not in final and metrics.stat().st_size < 100_000
    cells = np.array(final["confusion_cells"])
    assert cells[:, 2].sum() == final["n"] and (cells[:, 2] > 0).all() and cells[:, :2].max() < 600
    # Each row's true class and the class answered, as the per-class table counts them.
    support = np.bincount(cells[:, 0], weights=cells[:, 2], minlength=600)
    assert support.tolist() == [row["support"] for row in final["per_class"]]
    right = cells[cells[:, 0] == cells[:, 1], 2].sum()
    assert right == round(final["accuracy"] * final["n"])


def test_ten_thousand_classes_are_scored_without_their_dense_matrix_and_tabled_in_brief(tmp_path, capsys):
    """A target of 10,000 classes scored a few hundred rows through a 10,000 x 10,000 confusion matrix, 800 MB
    that the memory check before training knows nothing of, in train and in evaluate; and each printed all
    10,000 rows of the per-class table, which scrolled the accuracy out of sight."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10_000, size=1000)
    y[:2] = [0, 9999]
    np.savez(tmp_path / "ids.npz", x=rng.normal(size=(1000, 4)).astype(np.float32), y=y)
    registry = tmp_path / "models"
    train_run = ["train", "--dataset", "npz", "--data-path", tmp_path / "ids.npz", "--name", "ids", "--hidden", 4,
                 "--epochs", 1, "--no-progress", "--publish", "--registry", registry]
    evaluate = ["evaluate", "--registry", registry, "--model", "ids"]
    version = registry / "ids" / "1"
    left_out = "(9,960 of the 10,000 classes left out"
    full_table = f"; every class's row: per_class in the last line of {version / 'metrics.jsonl'}"
    for command, where in ((train_run, full_table), (evaluate, "")):
        capsys.readouterr()
        status, peak = traced_peak(run_cli, *command)
        assert status == 0 and peak < 200e6, peak
        out = capsys.readouterr().out
        table = out[out.index("\nclass "):].splitlines()[2:]
        assert table[0] == "the 20 of lowest f1:" and table[21] == "the 20 of highest f1:"
        assert table[42] == f"{left_out}{where})"
    final = json.loads((version / "metrics.jsonl").read_text().splitlines()[-1])
    assert len(final["per_class"]) == 10_000 and np.array(final["confusion_cells"])[:, 2].sum() == final["n"]


def edit_manifest(model_file: Path, change) -> None:
    """Rewrite a model file's manifest as a hand edit would: the parameters' checksum still holds."""
    with np.load(model_file, allow_pickle=False) as archive:
        members = {key: archive[key] for key in archive.files}
    manifest = json.loads(members["manifest"].tobytes())
    change(manifest)
    members["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    np.savez(model_file, **members)


@pytest.mark.parametrize("field, value, message", [
    ("training.config.dataset", ["x"], 'training.config.dataset must be text, not ["x"]'),
    ("training.config.data_path", 5, "training.config.data_path must be text, not 5"),
    ("training.config.variant", 5, "training.config.variant must be text, not 5"),
    ("training.config.seed", "x", 'training.config.seed must be a whole number, 0 or more, not "x"'),
    ("training.dataset.files", {"data.csv": 5}, "training.dataset.files must be an object of file names"),
])
def test_evaluate_refuses_recorded_fields_of_the_wrong_kind_naming_them(tmp_path, wine_csv, capsys, field, value,
                                                                        message):
    """The checksum covers the parameters, not the manifest's data options or columns: an edited
    one gave a traceback, or scored the wrong columns (11 copies of one) without a word."""
    registry = tmp_path / "models"
    assert run_cli("train", "--dataset", "csv", "--data-path", wine_csv, "--target", "score", "--task",
                   "regression", "--epochs", 1, "--no-progress", "--publish", "--registry", registry) == 0
    *parents, key = field.split(".")

    def change(manifest):
        section = manifest
        for part in parents:
            section = section[part]
        section[key] = value

    edit_manifest(registry / "data" / "1" / "model.npz", change)
    assert f"data v1: its manifest's {message}" in refused(capsys, "evaluate", "--registry", registry, "--model", "data")


@pytest.mark.parametrize("names", [5, ["a", "b"], ["a", "a", "c"]])
def test_evaluate_refuses_column_names_that_are_not_one_per_input(tmp_path, wine_csv, capsys, names):
    """Edited column names scored the wrong columns (three copies of one) without a word; the model
    file's own check refuses them, naming the file."""
    registry = tmp_path / "models"
    assert run_cli("train", "--dataset", "csv", "--data-path", wine_csv, "--target", "score", "--task",
                   "regression", "--epochs", 1, "--no-progress", "--publish", "--registry", registry) == 0
    edit_manifest(registry / "data" / "1" / "model.npz", lambda manifest: manifest["input"].update(feature_names=names))
    error = refused(capsys, "evaluate", "--registry", registry, "--model", "data")
    assert "data/1/model.npz: input.feature_names must be null or a list of 3 distinct strings" in error


@pytest.mark.parametrize("moment", ["the rename returns", "the folder is synced"])
@pytest.mark.parametrize("command", ["train", "publish"])
def test_a_signal_just_after_the_version_is_in_place_says_it_was_published(tmp_path, blobs_npz, monkeypatch,
                                                                           capsys, moment, command):
    """The version is renamed into place, then SIGTERM comes: 'nothing was published' would be false."""
    import shared.registry

    registry, saved = tmp_path / "models", tmp_path / "saved"
    data = ["--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress"]
    if command == "publish":
        assert run_cli("train", *data, "--output", saved) == 0
    rename, fsync_dir = os.rename, shared.registry._fsync_dir

    def rename_then_terminated(source, target):
        rename(source, target)
        if moment == "the rename returns" and Path(source).name.startswith(".tmp-"):
            os.kill(os.getpid(), signal.SIGTERM)

    def fsync_then_terminated(folder):
        fsync_dir(folder)
        if moment == "the folder is synced" and folder == registry / "blobs" and (folder / "1").is_dir():
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(shared.registry.os, "rename", rename_then_terminated)
    monkeypatch.setattr(shared.registry, "_fsync_dir", fsync_then_terminated)
    args = ["publish", saved, "--registry", registry] if command == "publish" else ["train", *data, "--publish",
                                                                                    "--registry", registry]
    capsys.readouterr()
    assert run_cli(*args) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == f"terminated after publishing blobs v1 in {registry / 'blobs' / '1'}\n"
    assert Registry(registry).versions("blobs") == [1]


@pytest.mark.parametrize("link", ["the registry", "the model folder"])
def test_a_dangling_link_where_the_version_would_go_is_refused_before_training(tmp_path, blobs_npz, capsys, link):
    registry = tmp_path / "models"
    if link == "the model folder":
        registry.mkdir()
    linked = registry if link == "the registry" else registry / "blobs"
    linked.symlink_to(tmp_path / "gone")
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--no-progress", "--publish",
                   "--registry", registry) == 2
    captured = capsys.readouterr()
    assert f"cannot publish into {linked}: it is a link to {tmp_path / 'gone'}, which does not exist" in captured.err
    assert "epoch 1/" not in captured.out


def test_an_os_error_while_publishing_keeps_the_trained_model(tmp_path, blobs_npz, monkeypatch, capsys):
    """A link that dangles once the training is over: mkdir raised 'File exists' and the model was lost."""
    registry = tmp_path / "models"
    monkeypatch.setattr(Registry, "check_publishable", lambda self, name: None)
    registry.symlink_to(tmp_path / "gone")
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   "--publish", "--registry", registry) == 2
    err = capsys.readouterr().err
    kept = re.search(r"the trained model is kept in (\S+): publish it from there", err)
    assert err.startswith(f"error: cannot publish blobs into {registry}: ") and kept, err
    assert (Path(kept[1]) / "model.npz").is_file()
    shutil.rmtree(kept[1])


@pytest.mark.parametrize("command", ["train", "publish"])
def test_a_model_folder_leading_outside_the_registry_is_refused_before_publishing(tmp_path, blobs_npz, capsys,
                                                                                 command):
    """Published through such a link, the version was then refused by evaluate and the service."""
    registry, outside, saved = tmp_path / "models", tmp_path / "outside", tmp_path / "saved"
    data = ["--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress"]
    if command == "publish":
        assert run_cli("train", *data, "--output", saved) == 0
    outside.mkdir()
    registry.mkdir()
    (registry / "blobs").symlink_to(outside)
    args = ["publish", saved, "--registry", registry] if command == "publish" else ["train", *data, "--publish",
                                                                                    "--registry", registry]
    assert "the folder blobs leads outside the registry (a link)" in refused(capsys, *args)
    assert list(outside.iterdir()) == []


def test_a_run_with_stderr_closed_trains_and_writes_its_outputs(tmp_path, blobs_npz):
    """``2>&-``: Python's sys.stderr is None, and the progress bar's check of it crashed the run."""
    done = subprocess.run([sys.executable, "-m", "trainer", "train", "--dataset", "npz", "--data-path", blobs_npz,
                           "--epochs", "1", "--output", tmp_path / "run"], stdout=subprocess.PIPE, text=True,
                          preexec_fn=lambda: os.close(2), timeout=120)
    assert done.returncode == 0 and "saved blobs in" in done.stdout
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "confusion.png", "learning_curves.png", "metrics.jsonl", "model.npz"]


def test_evaluate_refuses_data_whose_split_would_hold_rows_the_model_trained_on(tmp_path, wine_csv, capsys):
    """A model trained on two files, scored on one of them: the split drawn from it alone is not its
    held-out split, so rows it trained on would be scored as if it had never seen them."""
    registry = tmp_path / "models"
    assert run_cli("train", "--dataset", "csv", "--data-path", wine_csv, "--target", "score", "--task",
                   "regression", "--epochs", 1, "--no-progress", "--publish", "--registry", registry) == 0
    edit_manifest(registry / "data" / "1" / "model.npz",
                  lambda manifest: manifest["training"]["dataset"]["files"].update({"more.csv": "0" * 64}))
    assert refused(capsys, "evaluate", "--registry", registry, "--model", "data").startswith(
        "data v1 was trained on data.csv, more.csv; the data read here is data.csv: a split drawn from it would "
        "score rows the model trained on")


def test_evaluate_refuses_both_wines_for_the_red_wine_model(datasets_dir, capsys):
    registry = Path(__file__).resolve().parents[1] / "models"
    assert "a split drawn from it would score rows the model trained on" in refused(
        capsys, "evaluate", "--registry", registry, "--model", "wine-quality", "--version", 1, "--variant", "both",
        "--data-dir", datasets_dir / "wine-quality")
    assert run_cli("evaluate", "--registry", registry, "--model", "wine-quality", "--version", 1, "--variant", "white",
                   "--data-dir", datasets_dir / "wine-quality") == 0
    assert "every row of winequality-white.csv, which wine-quality v1 was not trained on" in capsys.readouterr().out


def test_evaluate_refuses_a_known_dataset_of_other_classes(datasets_dir, capsys):
    """mnist v2 on fashion-mnist scored each garment as the digit of its index: 8.84 %, exit 0."""
    registry = Path(__file__).resolve().parents[1] / "models"
    assert "fashion-mnist's classes (T-shirt/top, Trouser, Pullover, Dress, ...) are none of mnist v2's" in refused(
        capsys, "evaluate", "--registry", registry, "--model", "mnist", "--version", 2, "--dataset", "fashion-mnist",
        "--data-dir", datasets_dir / "fashion-mnist")


def test_evaluate_on_the_other_image_datasets_folder_is_not_told_to_train_on_it(datasets_dir, tmp_path, capsys):
    """mnist's model scored with --data-dir naming Fashion-MNIST's folder was told "or train on fashion-mnist with
    --dataset fashion-mnist", advice for train, which evaluate then refuses (the classes differ); and a changed
    copy of the red wines was told how "to train on" it."""
    registry = Path(__file__).resolve().parents[1] / "models"
    fashion = datasets_dir / "fashion-mnist"
    assert refused(capsys, "evaluate", "--registry", registry, "--model", "mnist", "--version", 2,
                   "--data-dir", fashion) == (
        f"{fashion / 't10k-images-idx3-ubyte.gz'} is fashion-mnist's t10k-images-idx3-ubyte.gz, not mnist's: give the "
        "folder that holds the mnist files (--data-dir or $SCRATCHNET_DATA_DIR)")
    changed = tmp_path / "winequality-red.csv"
    changed.write_bytes((datasets_dir / "wine-quality" / "winequality-red.csv").read_bytes().replace(b";", b","))
    way_out = (f"to score the model on a copy you changed, give it with --dataset csv --data-path {changed} --target "
               "quality --task regression")
    assert refused(capsys, "evaluate", "--registry", registry, "--model", "wine-quality", "--version", 1,
                   "--data-dir", tmp_path).endswith(way_out)
    assert run_cli("evaluate", "--registry", registry, "--model", "wine-quality", "--version", 1,
                   *way_out.split(" give it with ")[1].split()) == 0  # the way out scores it


def test_overfit_trains_for_enough_steps_when_the_subset_is_one_batch(wine_csv, capsys):
    """16 examples are one batch, one step an epoch: 200 epochs were 200 steps, too few for a correct
    network, which was reported as broken. It trains for a step budget, stopping once it has memorised."""
    task = ["--dataset", "csv", "--data-path", wine_csv, "--target", "score", "--task", "regression"]
    assert run_cli("overfit", *task, "--samples", 16, "--hidden", 16) == 0
    out = capsys.readouterr().out
    assert "ok: the network can memorise a tiny subset" in out
    assert int(re.search(r"16 examples, (\d+) epochs", out)[1]) < 3000  # it stopped once the subset was memorised
    assert run_cli("overfit", *task, "--samples", 16, "--hidden", 16, "--lr", 1e-12) == 1  # a broken one still fails
    assert "something is wrong" in capsys.readouterr().out


def test_an_empty_config_file_name_is_refused(capsys):
    """``--config ''`` was the current folder: 'cannot read config .: Is a directory'."""
    with pytest.raises(SystemExit) as raised:
        run_cli("train", "--config", "")
    assert raised.value.code == 2 and "expected a file, got an empty name" in capsys.readouterr().err


def test_an_output_folder_in_a_registry_version_is_refused_before_training(tmp_path, blobs_npz, capsys):
    """A published version is never changed: --output models/blobs/1 replaced its files."""
    registry = tmp_path / "models"
    data = ["--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress"]
    assert run_cli("train", *data, "--publish", "--registry", registry) == 0
    version = registry / "blobs" / "1"
    before = folder_contents(version)
    for output in (version, version / "more"):
        assert f"it is in {version.resolve()}, version 1 of blobs in a registry" in refused(
            capsys, "train", *data, "--output", output)
    assert folder_contents(version) == before
    assert run_cli("train", *data, "--output", tmp_path / "runs" / "1") == 0  # a folder merely named by a number
    assert run_cli("train", *data, "--output", tmp_path / "runs" / "1") == 0


def test_an_output_folder_where_a_registry_version_would_go_is_refused_before_training(tmp_path, blobs_npz, capsys):
    """--output models/blobs/3 beside versions 1 and 2 wrote a model into what the registry then took for
    its version 3: named and numbered as a run saved in a folder is, written in place rather than renamed
    into it, reported failed by the service, and its number used up."""
    registry = tmp_path / "models"
    data = ["--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress"]
    for _ in range(2):
        assert run_cli("train", *data, "--publish", "--registry", registry) == 0
    model = registry / "blobs"
    for output, version in ((model / "3", "3"), (model / "3" / "more", "3"), (model / "12", "12")):
        assert f"it is in {(model / version).resolve()}, version {version} of blobs in a registry" in refused(
            capsys, "train", *data, "--output", output)
    assert sorted(p.name for p in model.iterdir()) == [".highest_version", "1", "2"]
    # A model folder is known by its serving.json or its record of the highest version too, once its
    # versions are gone.
    shutil.rmtree(model / "1")
    shutil.rmtree(model / "2")
    assert "version 3 of blobs in a registry" in refused(capsys, "train", *data, "--output", model / "3")
    (model / ".highest_version").unlink()
    (model / "serving.json").write_text('{"pinned": null, "labels": {}}\n')
    assert "version 3 of blobs in a registry" in refused(capsys, "train", *data, "--output", model / "3")
    assert sorted(p.name for p in model.iterdir()) == ["serving.json"]
    # Numbered runs saved with --output are no registry, even in a folder named after their model:
    # each records version 1, as a run is numbered when it is published.
    runs = tmp_path / "runs" / "blobs"
    for run in ("1", "2", "3"):
        assert run_cli("train", *data, "--output", runs / run) == 0
    assert (runs / "3" / "model.npz").is_file()


def test_an_output_folder_in_the_trainers_registry_is_refused_without_its_records(tmp_path, blobs_npz, capsys,
                                                                                   monkeypatch):
    """A clone's committed registry has no record of the highest version (git leaves it out), and a
    model of one version is numbered as a run saved with --output is: the registry the trainer
    publishes into is known by its place."""
    registry = tmp_path / "models"
    data = ["--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress"]
    assert run_cli("train", *data, "--publish", "--registry", registry) == 0
    (registry / "blobs" / ".highest_version").unlink()
    monkeypatch.setattr(cli, "DEFAULT_REGISTRY", str(registry))
    for version in ("1", "2"):
        assert f"version {version} of blobs in a registry" in refused(
            capsys, "train", *data, "--output", registry / "blobs" / version)
    assert sorted(p.name for p in (registry / "blobs").iterdir()) == ["1"]
    # Another registry, known by none of that: a published version is still known by its own file.
    monkeypatch.setattr(cli, "DEFAULT_REGISTRY", str(tmp_path / "elsewhere"))
    assert "version 1 of blobs in a registry" in refused(capsys, "train", *data, "--output", registry / "blobs" / "1")


def test_a_target_left_in_the_config_file_is_named_there_for_an_npz(tmp_path, blobs_npz, capsys):
    """The flag that made the dataset an npz was given; --target was not, but the message said to leave it out."""
    config = tmp_path / "run.toml"
    config.write_text('dataset = "csv"\ntarget = "kind"\ntask = "classification"\n')
    message = refused(capsys, "train", "--config", config, "--dataset", "npz", "--data-path", blobs_npz,
                      "--task", "classification", "--no-progress", "--output", tmp_path / "run")
    assert message.endswith("--target names a csv column; an npz's target is its y array (y_train and y_test): "
                            "leave --target out (take target out of the --config file, if it is set there)")
    assert not (tmp_path / "run").exists()


def test_a_batch_size_beyond_the_training_rows_trains_on_them_all_at_once(tmp_path, blobs_npz, monkeypatch, capsys):
    """A batch holds at most the training rows: 300,000,000 was priced as a batch of that many rows (about 58 GB
    for this network) and refused for lack of memory."""
    monkeypatch.setattr(memory, "available_memory", lambda: 100_000_000)
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--hidden", 16, "--batch-size", 300_000_000,
                   "--epochs", 2, "--no-progress", "--output", tmp_path / "run") == 0
    assert "activations per batch of 450: " in capsys.readouterr().out  # 500 rows, 50 of them to validate
    assert read_manifest(tmp_path / "run" / "model.npz")["training"]["config"]["batch_size"] == 300_000_000


def test_features_and_targets_past_1e19_are_standardised_in_float64(tmp_path, capsys):
    """In float32 the square of a value past 1.8e19 overflows: such a column's std was infinite, the run trained
    on garbage, and the model file was refused once written, naming a temporary file."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    data = tmp_path / "big.npz"
    flags = ["--dataset", "npz", "--data-path", data, "--hidden", 16, "--epochs", 40, "--lr", 0.01, "--no-progress"]
    np.savez(data, x=x * [1e20, 1, 1], y=(x[:, 0] > 0).astype(np.int64))
    assert run_cli("train", *flags, "--output", tmp_path / "classes") == 0
    manifest = read_manifest(tmp_path / "classes" / "model.npz")
    assert 5e19 < manifest["input"]["normalization"]["std"][0] < 2e20 and manifest["metrics"]["accuracy"] > 0.9
    np.savez(data, x=x, y=x[:, 0] * 1e20)
    assert run_cli("train", *flags, "--output", tmp_path / "quantity") == 0
    manifest = read_manifest(tmp_path / "quantity" / "model.npz")
    assert 5e19 < manifest["output"]["scaling"]["std"] < 2e20
    assert manifest["metrics"]["rmse"] < 0.5 * manifest["metrics"]["rmse_of_mean_predictor"]
    far = np.where(np.arange(300) % 10 == 0, -3e38, 3e38)  # mean 2.4e38: the first is 5.4e38 from it
    for arrays, what in (({"x": np.column_stack([x, far]), "y": x[:, 0]}, "column 3"),
                         ({"x": x, "y": far}, "the target 'y'")):
        np.savez(data, **arrays)
        assert refused(capsys, "train", *flags, "--output", tmp_path / "run") == (
            f"big: {what} runs from -3e+38 to 3e+38: centred on its mean, its values reach beyond float32's range "
            "(±3.4e+38), in which the network computes: scale it down")
        assert not (tmp_path / "run").exists()


def test_column_statistics_take_one_block_of_memory_not_a_float64_copy(monkeypatch):
    """Each call of values.std(axis=0, dtype=np.float64) made a float64 copy of the training features, twice
    their size (359 MiB for 60,000 rows of 784), before check_memory could refuse a run too large for the
    machine; the statistics, summed a block of rows at a time, are numpy's all the same."""
    monkeypatch.setattr(train, "STATISTICS_BLOCK_VALUES", 10_000)  # blocks of 50 rows: 101 of them, the last of 1
    rng = np.random.default_rng(0)
    values = (rng.normal(size=(5_001, 200)) * np.geomspace(1e-3, 1e20, 200) + 1e6).astype(np.float32)
    stats, peak = traced_peak(train.column_statistics, values)
    assert peak < values.nbytes / 10
    np.testing.assert_allclose(stats.mean, values.mean(axis=0, dtype=np.float64), rtol=1e-12)
    np.testing.assert_allclose(stats.std, values.std(axis=0, dtype=np.float64), rtol=1e-9)
    assert (stats.low == values.min(axis=0)).all() and (stats.high == values.max(axis=0)).all()


def test_a_column_far_from_zero_for_its_spread_is_noted_naming_it(tmp_path, capsys):
    """float32 holds 1e9 + 10 x in steps of 64: 400 distinct values became 2, and the classifier that the same
    column without its offset gets 95 % right scored 49 %, without a word."""
    rng = np.random.default_rng(0)
    x, b = rng.normal(size=400), rng.normal(size=400)
    data = tmp_path / "times.csv"
    flags = ["--dataset", "csv", "--data-path", data, "--hidden", 8, "--epochs", 1, "--no-progress"]
    note = ("note: float32, in which the network computes, holds column 't', whose values reach 1e+09, in steps of "
            "64: fewer than 100 steps to a standard deviation, which loses much of what tells the values apart; "
            "subtract an offset (the mean, say) or rescale such a column in the data before training")
    for offset, notes in ((1e9, [note]), (0, [])):
        data.write_text("t,b,label\n" + "".join(f"{offset + 100 * t:.3f},{u:.5f},{int(t > 0)}\n" for t, u in zip(x, b)))
        assert run_cli("train", *flags, "--target", "label", "--task", "classification", "--output", tmp_path) == 0
        assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")] == notes
    data.write_text("t,b,label\n" + "".join(f"{1e9 + 100 * t:.3f},{u:.5f},{int(t > 0)}\n" for t, u in zip(x, b)))
    assert run_cli("train", *flags, "--target", "t", "--task", "regression", "--output", tmp_path / "r") == 0
    assert "holds the target 't', whose values reach 1e+09, in steps of 64: " in capsys.readouterr().out


def test_a_column_float32_holds_as_one_value_is_refused_naming_it(tmp_path, capsys):
    """Seconds since 1970 over half a minute: float32 holds every 1e9 + t as 1e9, so the column that decides the
    class was erased, and the note on coarse columns, which cannot tell it from a constant one, said nothing."""
    rng = np.random.default_rng(0)
    t, u = rng.uniform(0, 30, 400), rng.random(400)
    data = tmp_path / "seconds.csv"
    data.write_text("t,u,label\n" + "".join(f"{1e9 + s:.3f},{v:.5f},{int(s > 15)}\n" for s, v in zip(t, u)))
    flags = ["--target", "label", "--task", "classification", "--hidden", 8, "--epochs", 1, "--no-progress"]
    said = ("varies from 1000000000.01 to 1000000029.92, but float32, in which the network computes, holds every one "
            "of its values as 1000000000: subtract an offset (its mean, say) or rescale it in the data first")
    assert refused(capsys, "train", "--dataset", "csv", "--data-path", data, *flags,
                   "--output", tmp_path / "run") == f"{data}: column 't' {said}"
    npz = tmp_path / "seconds.npz"
    np.savez(npz, x=np.stack([(1_000_000_000 + t).astype(np.int64), u], axis=1), y=(t > 15).astype(np.int64))
    assert "x[:, 0] varies from 1000000000 to 1000000029, but float32" in refused(
        capsys, "train", "--dataset", "npz", "--data-path", npz, "--epochs", 1, "--output", tmp_path / "run")
    # as a regression target it was refused as one that does not differ
    assert refused(capsys, "train", "--dataset", "csv", "--data-path", data, "--target", "t", "--task", "regression",
                   "--epochs", 1, "--output", tmp_path / "run") == f"{data}: the target 't' {said}"
    assert not (tmp_path / "run").exists()
    # A column whose values differ only by float64's rounding (0.1 + 0.2 beside 0.3) is a constant one, kept.
    noisy = tmp_path / "noisy.csv"
    noisy.write_text("c,u,label\n" + "".join(f"{0.1 + 0.2 if i % 2 else 0.3!r},{v:.5f},{i % 2}\n"
                                             for i, v in enumerate(u)))
    assert run_cli("train", "--dataset", "csv", "--data-path", noisy, *flags, "--output", tmp_path / "run") == 0


@pytest.mark.slow
@pytest.mark.parametrize("name, variant", [("mnist", None), ("fashion-mnist", None), ("wine-quality", "red"),
                                           ("wine-quality", "white"), ("wine-quality", "both")])
def test_no_column_of_the_known_datasets_is_held_too_coarsely(datasets_dir, name, variant):
    """Their pixels read as a vector's columns too, 0 to 1 or 0 to 255 as an npz would hold them."""
    dataset = load_dataset(name, data_dir=datasets_dir, variant=variant)
    columns = train.feature_columns(dataset)
    for x in (dataset.x_train, dataset.x_test, np.round(dataset.x_train * 255)):
        assert train.coarse_columns(train.column_statistics(x), columns) == []
    assert train.coarse_note(train.prepare(dataset, train.TrainConfig(dataset=name, variant=variant))) is None


def test_a_constant_regression_target_is_refused_as_a_single_class_is(tmp_path, capsys):
    """Its std, 0, was taken for 1: the run trained and published a model of a constant, where a file of one class
    is refused."""
    data = tmp_path / "flat.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(100, 3)), y=np.full(100, 3.5))
    assert refused(capsys, "train", "--dataset", "npz", "--data-path", data, "--no-progress", "--publish",
                   "--registry", tmp_path / "models") == ("flat: every row's target is 3.5: there is nothing to learn; "
                                                          "a regressor needs targets that differ")
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("toml, flags, keys", [
    ("hidden = []\nbatchnorm = true\n", [], "batchnorm"),
    ("hidden = []\n", ["--dropout", 0.2, "--activation", "relu"], "activation, dropout"),
    ('hidden = []\nactivation = "tanh"\n', [], "activation"),
    ("hidden = []\nbatchnorm = true\ndropout = 0.5\n", ["--activation", "tanh"], "activation, batchnorm, dropout"),
])
def test_hidden_layer_options_without_hidden_layers_are_refused(tmp_path, blobs_npz, capsys, toml, flags, keys):
    """They were accepted and ignored, and the manifest recorded batchnorm: true for a network without it."""
    config = tmp_path / "run.toml"
    config.write_text(toml)
    for command in ("train", "overfit", "summary", "gradcheck"):
        assert refused(capsys, command, "--config", config, "--dataset", "npz", "--data-path", blobs_npz, *flags,
                       "--no-progress", *(["--output", tmp_path / "run"] if command == "train" else [])) == (
            f"invalid config: hidden is empty, and these options act on hidden layers: {keys}; leave them unset (take "
            "them out of the --config file, if set there) or give hidden layer sizes")
    assert not (tmp_path / "run").exists()
    config.write_text("hidden = []\nbatchnorm = false\ndropout = 0.0\n")  # nothing to ignore
    assert run_cli("train", "--config", config, "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1,
                   "--no-progress", "--output", tmp_path / "run") == 0
    assert [layer["type"] for layer in read_manifest(tmp_path / "run" / "model.npz")["layers"]] == [
        "dense", "activation"]
    assert train.TrainConfig(hidden=[8]).activation == "relu"


def test_a_model_of_another_interface_is_not_published_over_a_served_one(tmp_path, blobs_npz, wine_csv, capsys):
    """A mistyped --name put a classifier of 5 values where a regression on 3 was served, and every
    client of the model then failed; it is refused, at once for publish and before training for train,
    naming each difference and the two ways on, and publishes nothing."""
    registry = tmp_path / "models"
    wine = ["--dataset", "csv", "--data-path", wine_csv, "--target", "score", "--task", "regression",
            "--hidden", 8, "--epochs", 2, "--no-progress"]
    assert run_cli("train", *wine, "--name", "wine", "--publish", "--registry", registry) == 0
    assert run_cli("train", *wine, "--name", "wine", "--publish", "--registry", registry) == 0  # the same: fine
    blobs = ["--dataset", "npz", "--data-path", blobs_npz, "--hidden", 8, "--epochs", 2, "--no-progress"]
    assert run_cli("train", *blobs, "--output", tmp_path / "run") == 0
    capsys.readouterr()
    for command in (["publish", tmp_path / "run", "--registry", registry, "--name", "wine"],
                    ["train", *blobs, "--name", "wine", "--publish", "--registry", registry]):
        assert run_cli(*command) == 2
        captured = capsys.readouterr()
        assert "epoch 1/" not in captured.out  # refused before the training
        assert ("as a new version of wine: its interface differs from wine v2's, the latest version that loads, "
                "whose clients it would break") in captured.err
        assert ("(task: v2 regression, new classification; input size: v2 3 values, new 5 values; "
                "classes: v2 none, new 3 (0, 1, 2)). Publish it under another name (--name), or add "
                "--new-interface if the change is meant (every client of wine must change too)") in captured.err
        assert sorted(p.name for p in (registry / "wine").iterdir()) == [".highest_version", "1", "2"]
    assert run_cli("publish", tmp_path / "run", "--registry", registry, "--name", "wine", "--new-interface") == 0
    assert load_model(registry / "wine" / "3" / "model.npz").task == "classification"
    assert run_cli("train", *blobs, "--name", "wine", "--publish", "--registry", registry) == 0  # v3's interface
    assert "--new-interface lets --publish change" in refused(capsys, "train", *blobs, "--new-interface")


def test_a_csv_model_whose_columns_come_in_another_order_is_not_published_over_a_served_one(tmp_path, wine_csv,
                                                                                           capsys):
    """A csv with the same columns in another order was published as the next version: the same number of
    values, so every client's vector went on being answered, its values read as other columns. It is refused,
    naming both orders; the same columns in the same order, or an npz that names none, publish as before."""
    registry = tmp_path / "models"
    lines = wine_csv.read_text().splitlines()
    reordered = tmp_path / "reordered.csv"
    reordered.write_text("\n".join(",".join(line.split(",")[i] for i in (2, 0, 1, 3)) for line in lines) + "\n")
    wine = ["--target", "score", "--task", "regression", "--hidden", 8, "--epochs", 2, "--no-progress",
            "--name", "wine", "--publish", "--registry", registry]
    assert run_cli("train", "--dataset", "csv", "--data-path", wine_csv, *wine) == 0
    assert refused(capsys, "train", "--dataset", "csv", "--data-path", reordered, *wine).startswith(
        "cannot publish a model of reordered as a new version of wine: its interface differs from wine v1's, the "
        "latest version that loads, whose clients it would break (input columns: v1 (a, b, c), new (c, a, b)).")
    assert Registry(registry).versions("wine") == [1]
    assert run_cli("train", "--dataset", "csv", "--data-path", wine_csv, *wine) == 0
    x = np.loadtxt(wine_csv, delimiter=",", skiprows=1, dtype=np.float32)
    np.savez(tmp_path / "wine.npz", x=x[:, :3], y=x[:, 3])
    assert run_cli("train", "--dataset", "npz", "--data-path", tmp_path / "wine.npz", *wine[4:]) == 0
    assert Registry(registry).versions("wine") == [1, 2, 3]


def test_a_refusal_of_columns_in_another_order_shows_where_they_differ(tmp_path, capsys):
    """Long column names that differ only near the end (the last two of winequality-red.csv swapped) were
    named in a refusal cut after 80 characters, the same text for both versions: it now shows each list from
    the column before the first that differs."""
    registry = tmp_path / "models"
    names = ["fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides", "pH", "sulphates",
             "alcohol"]
    rows = np.random.default_rng(0).normal(size=(60, len(names) + 1)).round(3)
    for path, order in (("wine.csv", names), ("swapped.csv", [*names[:-2], names[-1], names[-2]])):
        columns = [names.index(name) for name in order] + [len(names)]
        lines = [",".join([*order, "quality"]), *(",".join(map(str, row[columns])) for row in rows)]
        (tmp_path / path).write_text("\n".join(lines) + "\n")
    wine = ["--dataset", "csv", "--target", "quality", "--task", "regression", "--hidden", 4, "--epochs", 1,
            "--no-progress", "--name", "wine", "--publish", "--registry", registry]
    assert run_cli("train", "--data-path", tmp_path / "wine.csv", *wine) == 0
    assert "(input columns: v1 (..., pH, sulphates, alcohol), new (..., pH, alcohol, sulphates))." in refused(
        capsys, "train", "--data-path", tmp_path / "swapped.csv", *wine)
    assert Registry(registry).versions("wine") == [1]


def test_a_model_of_another_interface_published_during_training_is_not_replaced(tmp_path, blobs_npz, capsys):
    """The interface is that of the latest version when the trained model is published: one of another
    kind published meanwhile refuses it, and the trained model is kept, with the command that publishes it."""
    registry = tmp_path / "models"
    x = np.random.default_rng(0).normal(size=(200, 7)).astype(np.float32)
    np.savez(tmp_path / "seven.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    assert run_cli("train", "--dataset", "npz", "--data-path", blobs_npz, "--epochs", 1, "--no-progress",
                   "--publish", "--registry", registry) == 0

    def log(line, *_):
        if str(line).startswith("epoch 1/"):  # another publisher's model of 7 inputs, while this one trains
            assert run_cli("train", "--dataset", "npz", "--data-path", tmp_path / "seven.npz", "--name", "blobs",
                           "--epochs", 1, "--no-progress", "--publish", "--registry", registry,
                           "--new-interface") == 0

    config = train.TrainConfig.from_dict({"dataset": "npz", "data_path": str(blobs_npz), "epochs": 2,
                                          "progress": False})
    with pytest.raises(RegistryError) as error:
        train.run(config, publish_to=str(registry), log=log)
    assert "its interface differs from blobs v2's" in str(error.value)
    assert "input size: v2 7 values, new 5 values" in str(error.value)
    kept = re.search(r"the trained model is kept in (\S+): publish it from there", str(error.value))
    assert kept and (Path(kept[1]) / "model.npz").is_file()
    shutil.rmtree(kept[1])
    assert Registry(registry).versions("blobs") == [1, 2]
    assert not [p for p in (registry / "blobs").iterdir() if p.name.startswith(".tmp-")]
