"""Peak memory of the trainer: the README's MNIST training commands, run as a user runs them.

Each command runs for a couple of epochs in a process of its own, publishing into a temporary
registry (plots and model file included), and the figure is that process's peak resident set
(``ru_maxrss`` of the child): the datasets in memory, their normalised copies, the network, the
optimiser's state and the evaluation, everything a run holds at once. Memory does not grow with
the number of epochs (each epoch reuses the same buffers), so a short run peaks as high as a
full one. Goal: <= 1 GB.

    SCRATCHNET_DATASETS=/path/to/datasets python bench/train_memory.py

Reads the datasets from $SCRATCHNET_DATASETS (else the trainer downloads them into its cache).
Prints a table and writes bench/results/train_memory.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import text_table, write_json  # noqa: E402

GOAL_MB = 1000.0
# The README's commands for the committed image models (mnist v2, mnist v1, fashion-mnist v1).
COMMANDS = {
    "mnist 784-128-64-10, affine augmentation": [
        "--dataset", "mnist", "--hidden", "128", "64", "--dropout", "0.05",
        "--augment", "affine(shift=2, rotate=10, scale=0.1)", "--optimizer", "adamw", "--weight-decay", "0.01",
        "--lr", "0.001", "--schedule", "cosine", "--batch-size", "128", "--val-fraction", "0.0833", "--seed", "0"],
    "mnist 784-1024-1024-10, dropout 0.5": [
        "--dataset", "mnist", "--hidden", "1024", "1024", "--dropout", "0.5", "--optimizer", "adamw",
        "--weight-decay", "0.01", "--lr", "0.001", "--schedule", "cosine", "--batch-size", "128",
        "--val-fraction", "0.0833", "--seed", "0"],
    "fashion-mnist 784-1024-1024-10, dropout 0.3": [
        "--dataset", "fashion-mnist", "--hidden", "1024", "1024", "--dropout", "0.3", "--optimizer", "adamw",
        "--weight-decay", "0.01", "--lr", "0.001", "--schedule", "cosine", "--batch-size", "128",
        "--val-fraction", "0.0833", "--seed", "0"],
}


def peak_of(arguments: list[str], env: dict) -> tuple[float, float]:
    """(peak resident set in MB, seconds) of one trainer run in a child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: the child never blocks on it
        process = subprocess.Popen([sys.executable, "-m", "trainer", "train", *arguments], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=errors, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise SystemExit(f"the trainer failed: {' '.join(arguments)}\n{errors.read()[-2000:]}")
    return usage.ru_maxrss * 1024 / 1e6, seconds  # Linux reports kibibytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    datasets = os.environ.get("SCRATCHNET_DATASETS")
    rows, results = [], []
    with tempfile.TemporaryDirectory() as registry:
        for what, arguments in COMMANDS.items():
            run = [*arguments, "--epochs", str(args.epochs), "--publish", "--registry", registry, "--no-progress"]
            if datasets:
                run += ["--data-dir", str(Path(datasets) / arguments[1])]
            peak, seconds = peak_of(run, env)
            results.append({"run": what, "epochs": args.epochs, "peak_rss_mb": round(peak, 1),
                            "seconds": round(seconds, 1)})
            rows.append([what, f"{peak:.0f} MB", f"{seconds:.0f} s", "met" if peak <= GOAL_MB else "MISSED"])
    print(text_table(["run (python -m trainer train ... --publish)", "peak RSS", "time", f"<= {GOAL_MB:g} MB"], rows))
    path = write_json("train_memory", {"benchmark": "train_memory", "goal_mb": GOAL_MB, "results": results})
    print(f"wrote {path}")
    return 0 if all(r["peak_rss_mb"] <= GOAL_MB for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
