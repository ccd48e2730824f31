"""The benchmarks start as the README and `make bench` run them: ``python bench/<script>.py``, with
nothing but the script's own folder on the path (pytest's path tricks do not reach them)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(path.name for path in BENCH.glob("*.py") if path.name not in ("floor_app.py", "report.py"))


def test_every_script_is_checked():
    assert {"serve.py", "soak.py", "train_speed.py", "user_images.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_starts_from_a_plain_python(tmp_path, script):
    """bench/soak.py borrowed the tests' server helper, whose import of a neighbour resolved only
    under pytest: the soak benchmark failed at its first line."""
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def test_a_soak_shorter_than_a_swap_reports_instead_of_crashing():
    """`bench/soak.py --minutes 0.25` (a quick look, the swaps 30 s apart) publishes no version: its
    report ended in a TypeError on the missing swap time instead of the table and the problem."""
    soak = load_script("soak")
    recorder = soak.Recorder(started=0.0)
    for second in range(15):
        window = recorder.window(second + 0.5)
        window.rss, window.latencies = 200 * 2**20, [0.01] * 30
        window.requests[("image", 200)] += 30
    recorder.versions.append((1.0, 1.01, 2))
    summary = soak.summarise(recorder, [(0.0, 2)], 0.0, 15.0, 3.0, 30.0, 8, 2, 2)
    table = soak.markdown(summary)
    assert "| slowest swap to reach every worker | none published during the run (one every 30 s) |" in table
    assert soak.problems(summary) == ["no version was published during the run"]


def test_a_serving_setting_without_its_value_is_named():
    """`bench/serve.py --set SCRATCHNET_THREADS` (no `=1`) ended in a ValueError traceback about a
    dictionary update sequence, after the request bodies had been rendered."""
    done = subprocess.run([sys.executable, str(BENCH / "serve.py"), "--set", "SCRATCHNET_THREADS"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "'SCRATCHNET_THREADS': give a variable and its value, VAR=VALUE" in done.stderr


def test_an_unknown_wine_method_is_named_before_the_data_is_read():
    """`bench/wine_splits.py cv --only NAME` with a name it does not know (a typo) ended in a bare
    KeyError traceback once the dataset was read; `test --method` and `seeds --method` named the choices."""
    done = subprocess.run([sys.executable, str(BENCH / "wine_splits.py"), "cv", "--only", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "argument --only: invalid choice: 'nope' (choose from 'v1'," in done.stderr


def test_the_memory_benchmark_without_torch_says_what_to_do(tmp_path):
    """Without PyTorch, `bench/train_memory.py` trained the first model and then failed with the
    reference's ModuleNotFoundError traceback, naming neither the bench extra nor --no-torch."""
    (tmp_path / "sitecustomize.py").write_text('import sys\nsys.modules["torch"] = None  # as if not installed\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(BENCH / "train_memory.py"), "--epochs", "1", "--repeats", "1"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "torch is not installed" in done.stderr and "--no-torch" in done.stderr


def test_the_training_benchmark_reads_mnist_where_the_trainer_does(monkeypatch, datasets_dir):
    """`bench/train_speed.py` found MNIST only through $SCRATCHNET_DATASETS, the tests' variable: with the
    trainer's own $SCRATCHNET_DATA_DIR (or its download cache) it timed random data, and the README's
    figure is for real MNIST."""
    monkeypatch.delenv("SCRATCHNET_DATASETS")
    monkeypatch.setenv("SCRATCHNET_DATA_DIR", str(datasets_dir))
    x, y, what = load_script("train_speed").load_data()
    assert what == "MNIST train (60000 samples)"
    assert x.shape == (60000, 784) and set(y.tolist()) == set(range(10))


def test_the_wine_anchors_run_from_any_folder(tmp_path, datasets_dir):
    """`python bench/wine_anchors.py` looked for the committed model in models/ under the current
    folder: run from anywhere but the checkout, it fitted every reference and then ended in a
    ModelFileError traceback. Without scikit-learn (the bench extra) it stops after reading the model,
    saying what to install."""
    done = subprocess.run([sys.executable, str(BENCH / "wine_anchors.py"), "--data-dir", str(datasets_dir)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    if importlib.util.find_spec("sklearn") is None:
        assert done.returncode == 1 and done.stderr.strip() == (
            "bench/wine_anchors.py needs scikit-learn, from the bench extra: pip install -e '.[bench]'"), done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert "scratchnet wine-quality v1" in done.stdout
