"""The benchmarks start as the README and `make bench` run them: ``python bench/<script>.py``, with
nothing but the script's own folder on the path (pytest's path tricks do not reach them)."""

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
