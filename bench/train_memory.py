"""Peak memory of the trainer: docs/training.md's MNIST training commands, run as a user runs them,
side by side with the same training in PyTorch.

Each command runs for a couple of epochs in a process of its own, publishing into a temporary
registry (plots and model file included), and the figure is that process's peak resident set
(``ru_maxrss`` of the child): the datasets in memory, their normalised copies, the network, the
optimiser's state and the evaluation, everything a run holds at once. Memory does not grow with
the number of epochs (each epoch reuses the same buffers), so a short run peaks as high as a
full one. Goal: <= 1 GB.

The reference is the same run in PyTorch 2.13 (CPU, the same threads), also in a process of its
own: the dataset read by the same loader, normalised, split into training and validation rows as
the trainer does, the same network (Linear, ReLU, Dropout), AdamW with a cosine schedule, the
same batches and epochs, then the validation and test splits scored and the weights saved. It
leaves out the affine augmentation of the first command (PyTorch has none without torchvision),
which holds one batch at a time. The ratio is of the medians of ``--repeats`` runs a side.

    SCRATCHNET_DATASETS=/path/to/datasets python bench/train_memory.py [--repeats 3] [--no-torch]

Reads the datasets from $SCRATCHNET_DATASETS (else the trainer downloads them into its cache).
Prints a table and writes bench/results/train_memory.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import text_table, write_json  # noqa: E402

GOAL_MB = 1000.0
# docs/training.md's commands for the committed image models (mnist v2, mnist v1, fashion-mnist v1).
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


def peak_of(command: list[str], env: dict, what: str) -> tuple[float, float]:
    """(peak resident set in MB, seconds) of ``command`` run in a child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: the child never blocks on it
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise SystemExit(f"{what} failed: {' '.join(command[1:])}\n{errors.read()[-2000:]}")
    return usage.ru_maxrss * 1024 / 1e6, seconds  # Linux reports kibibytes


def option(arguments: list[str], flag: str, count: int = 1) -> list[str]:
    """The ``count`` values after ``flag`` in a trainer command line."""
    at = arguments.index(flag)
    return arguments[at + 1:at + 1 + count]


def torch_run(spec: dict) -> None:
    """The reference: ``spec``'s training in PyTorch, in this process (see the module docstring)."""
    import numpy as np
    import torch

    from trainer.datasets import load_dataset

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    data = load_dataset(spec["dataset"], data_dir=spec["data_dir"], progress=False)
    mean, std = float(data.x_train.mean()), float(data.x_train.std())
    x_all = torch.from_numpy((data.x_train - mean) / std)
    x_test = torch.from_numpy((data.x_test - mean) / std)
    y_all, y_test = torch.from_numpy(data.y_train), torch.from_numpy(data.y_test)
    n_val = round(len(x_all) * spec["val_fraction"])
    order = torch.randperm(len(x_all))
    x_val, y_val = x_all[order[:n_val]], y_all[order[:n_val]]
    x_train, y_train = x_all[order[n_val:]], y_all[order[n_val:]]
    layers, width = [], x_train.shape[1]
    for hidden in spec["hidden"]:
        layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Dropout(spec["dropout"])]
        width = hidden
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, len(data.labels)))
    steps = -(-len(x_train) // spec["batch_size"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec["epochs"] * steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(spec["epochs"]):
        model.train()
        for batch in torch.randperm(len(x_train)).split(spec["batch_size"]):
            optimizer.zero_grad()
            loss_fn(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    with tempfile.TemporaryDirectory() as folder:
        torch.save(model.state_dict(), Path(folder) / "model.pt")
    print(json.dumps({"test_accuracy": accuracy, "numpy": np.__version__, "torch": torch.__version__}))


def torch_spec(arguments: list[str], epochs: int, datasets: str | None) -> dict:
    """What ``torch_run`` needs of a trainer command line."""
    return {"dataset": option(arguments, "--dataset")[0], "hidden": [int(h) for h in option(arguments, "--hidden", 2)],
            "dropout": float(option(arguments, "--dropout")[0]), "lr": float(option(arguments, "--lr")[0]),
            "weight_decay": float(option(arguments, "--weight-decay")[0]),
            "batch_size": int(option(arguments, "--batch-size")[0]),
            "val_fraction": float(option(arguments, "--val-fraction")[0]), "epochs": epochs,
            "data_dir": str(Path(datasets) / arguments[1]) if datasets else None, "threads": 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs a side; the medians are compared")
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch reference")
    parser.add_argument("--torch-run", help=argparse.SUPPRESS)  # a reference run's child process
    args = parser.parse_args(argv)
    if args.torch_run:
        torch_run(json.loads(args.torch_run))
        return 0
    if not args.no_torch and importlib.util.find_spec("torch") is None:
        raise SystemExit("torch is not installed, which the reference runs on: pip install torch==2.13.0 "
                         "(the 'bench' extra), or pass --no-torch to measure the trainer alone")
    env = dict(os.environ)
    datasets = os.environ.get("SCRATCHNET_DATASETS")
    rows, results = [], []
    with tempfile.TemporaryDirectory() as registry:
        for what, arguments in COMMANDS.items():
            run = [*arguments, "--epochs", str(args.epochs), "--publish", "--registry", registry, "--no-progress"]
            if datasets:
                run += ["--data-dir", str(Path(datasets) / arguments[1])]
            ours, reference = [], []
            for _ in range(args.repeats):  # interleaved, so a change in the host hits both sides alike
                ours.append(peak_of([sys.executable, "-m", "trainer", "train", *run], env, "the trainer"))
                if not args.no_torch:
                    spec = json.dumps(torch_spec(arguments, args.epochs, datasets))
                    reference.append(peak_of([sys.executable, __file__, "--torch-run", spec], env,
                                             "the PyTorch reference"))
            peak = statistics.median(p for p, _ in ours)
            seconds = statistics.median(t for _, t in ours)
            result = {"run": what, "epochs": args.epochs, "repeats": args.repeats, "peak_rss_mb": round(peak, 1),
                      "peak_rss_runs_mb": [round(p, 1) for p, _ in ours], "seconds": round(seconds, 1)}
            row = [what, f"{peak:.0f} MB", f"{seconds:.0f} s"]
            if reference:
                torch_peak = statistics.median(p for p, _ in reference)
                result.update(torch_peak_rss_mb=round(torch_peak, 1),
                              torch_peak_rss_runs_mb=[round(p, 1) for p, _ in reference],
                              torch_seconds=round(statistics.median(t for _, t in reference), 1),
                              ratio=round(peak / torch_peak, 2))
                row += [f"{torch_peak:.0f} MB", f"{peak / torch_peak:.2f}x"]
            results.append(result)
            rows.append([*row, "met" if peak <= GOAL_MB else "MISSED"])
    header = ["run (python -m trainer train ... --publish)", "peak RSS", "time"]
    if not args.no_torch:
        header += ["PyTorch", "ratio"]
    print(f"median of {args.repeats} runs a side, {args.epochs} epochs each")
    print(text_table([*header, f"<= {GOAL_MB:g} MB"], rows))
    path = write_json("train_memory", {"benchmark": "train_memory", "goal_mb": GOAL_MB, "results": results})
    print(f"wrote {path}")
    return 0 if all(r["peak_rss_mb"] <= GOAL_MB for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
