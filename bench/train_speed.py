"""Training speed: one epoch of our NumPy engine against the same network in PyTorch (CPU).

Both sides train 784-256-128-10 ReLU with softmax cross-entropy and Adam on the same 60,000
samples (real MNIST from the datasets folder in $SCRATCHNET_DATASETS or $SCRATCHNET_DATA_DIR, or
from the trainer's download cache; else random data of the same shape), in the same order and
batch size, each in its own process with the same number of threads. Epochs alternate between
the two sides (A B B A ...) with a pause between them, so background load hits both alike, and
each side reports the median of its timed epochs. The ratio is given twice: of the two medians,
and as the median of each round's own ratio (a round's two epochs run back to back, so a slow
spell of the host mostly slows both).

    python bench/train_speed.py                    # 5 timed epochs per side, 2 threads
    python bench/train_speed.py --epochs 9 --threads 1 --no-torch

Prints a table and writes JSON to bench/results/. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, when
set, change which OpenBLAS kernel NumPy runs (often a slower one): the report names the kernel,
and fair numbers need both unset. PyTorch comes from the ``bench`` extra (torch==2.13.0).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SIZES = (784, 256, 128, 10)
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def epoch_flops(n_samples: int) -> float:
    """Matmul FLOPs one epoch computes: 2*n*in*out per dense layer for the forward pass, as much
    again for the weight gradient, and again for the input gradient of every layer but the first
    (neither side computes the gradient of the data: PyTorch's input does not require one)."""
    layers = [2 * n_samples * a * b for a, b in zip(SIZES, SIZES[1:])]
    return 2 * sum(layers) + sum(layers[1:])


def nominal_epoch_flops(n_samples: int) -> float:
    """The customary 3 x forward, which counts the first layer's input gradient as well."""
    return 3 * sum(2 * n_samples * a * b for a, b in zip(SIZES, SIZES[1:]))


def load_data(seed: int = 0):
    """(x, y, description): 60,000 float32 rows of 784 features, normalised like MNIST, in a
    seeded shuffled order."""
    import numpy as np

    from trainer.datasets import DatasetError, load_dataset

    try:  # the trainer's own look-up: the folder given (else $SCRATCHNET_DATA_DIR), else its cache
        data = load_dataset("mnist", data_dir=os.environ.get("SCRATCHNET_DATASETS") or None, download=False,
                            progress=False)
        x, y, what = data.x_train, data.y_train, f"MNIST train ({len(data.x_train)} samples)"
    except DatasetError as e:
        rng = np.random.default_rng(seed)
        x = rng.random((60000, SIZES[0]), dtype=np.float32)
        y = rng.integers(0, SIZES[-1], 60000)
        what = (f"random data of MNIST's shape (60000 x 784), for want of MNIST ({e}); for real MNIST set "
                "SCRATCHNET_DATA_DIR to a folder holding its files, or train on it once so the trainer downloads it")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    x -= 0.1307
    x /= 0.3081
    return x, y, what


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB (Linux /proc; peak since the
    last :func:`reset_peak_rss`)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1e3, int(fields["VmHWM"].split()[0]) / 1e3
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        return peak, peak


def reset_peak_rss() -> None:
    """Restart the peak-RSS count, so it measures training rather than loading the data."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def numpy_blas() -> dict:
    """Which BLAS NumPy runs: threadpoolctl's view when installed, else OpenBLAS asked directly."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            p = pools[0]
            return {"library": p.get("internal_api"), "version": p.get("version"),
                    "kernel": p.get("architecture"), "threads": p.get("num_threads"), "source": "threadpoolctl"}
    except ImportError:
        pass
    info = {"library": None, "version": None, "kernel": None, "threads": None, "source": "numpy config"}
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    info["library"], info["version"] = blas.get("name"), blas.get("version")
    info["config"] = blas.get("openblas configuration")
    try:
        import ctypes

        libs = sorted((Path(np.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas*.so*"))
        if libs:
            lib = ctypes.CDLL(str(libs[0]))
            lib.scipy_openblas_get_corename64_.restype = ctypes.c_char_p
            info["kernel"] = lib.scipy_openblas_get_corename64_().decode()
            info["threads"] = lib.scipy_openblas_get_num_threads64_()
            info["source"] = "OpenBLAS"
    except (OSError, AttributeError):
        pass
    return info


# --- the two sides, each run in its own process ---------------------------------------------

def numpy_side(batch_size: int, seed: int):
    import numpy as np

    from trainer.network import build_mlp
    from trainer.optimizers import get_optimizer

    net = build_mlp(SIZES, activation="relu", init="he_normal", seed=seed)
    opt = get_optimizer("adam", lr=1e-3)

    def epoch(x, y):
        total = 0.0
        for i in range(0, len(x), batch_size):
            total += net.train_step(x[i:i + batch_size], y[i:i + batch_size], opt)[0] * len(x[i:i + batch_size])
        return total / len(x)

    return epoch, {"blas": numpy_blas(), "numpy": np.__version__}


def torch_side(batch_size: int, seed: int):
    import torch

    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(SIZES, SIZES[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(x, y):
        xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype("int64"))
        total = 0.0
        for i in range(0, len(xt), batch_size):
            xb, yb = xt[i:i + batch_size], yt[i:i + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        return total / len(xt)

    config = torch.__config__.show()
    blas = "MKL" if "BLAS_INFO=mkl" in config else ("OpenBLAS" if "openblas" in config.lower() else "unknown")
    return epoch, {"blas": {"library": blas, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "threads": torch.get_num_threads()}, "torch": torch.__version__}


def worker(conn, side: str, batch_size: int, threads: int, seed: int) -> None:
    """Serve 'epoch' requests over ``conn`` until 'done'; reply with seconds and mean loss."""
    if side == "torch":
        import torch

        torch.set_num_threads(threads)
    x, y, data_description = load_data(seed)
    epoch, info = (numpy_side if side == "numpy" else torch_side)(batch_size, seed)
    baseline_rss, _ = rss_mb()
    reset_peak_rss()
    conn.send({**info, "data": data_description})
    while conn.recv() == "epoch":
        start = time.perf_counter()
        loss = epoch(x, y)
        conn.send((time.perf_counter() - start, loss))
    current, peak = rss_mb()
    conn.send({"rss_before_training_mb": baseline_rss, "peak_rss_mb": peak, "rss_mb": current})


# --- driver ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per side (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per side first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="BLAS / intra-op threads on each side")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between epochs (idle threads settle)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true", help="time our engine only")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)

    env_before = {k: os.environ.get(k) for k in BLAS_ENV}
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # inherited by the workers before they import NumPy

    sides = ["numpy"] if args.no_torch else ["numpy", "torch"]
    if "torch" in sides and importlib.util.find_spec("torch") is None:
        print("torch is not installed (pip install torch==2.13.0, the 'bench' extra); timing our engine only",
              file=sys.stderr)
        sides = ["numpy"]

    ctx = multiprocessing.get_context("spawn")
    pipes, procs, info = {}, {}, {}
    for side in sides:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, side, args.batch_size, args.threads, args.seed), daemon=True)
        proc.start()
        pipes[side], procs[side] = parent, proc
        info[side] = parent.recv()
    data_description = info["numpy"].pop("data")
    info.get("torch", {}).pop("data", None)

    times: dict[str, list[float]] = {s: [] for s in sides}
    losses: dict[str, list[float]] = {s: [] for s in sides}
    for round_ in range(args.warmup + args.epochs):
        order = sides if round_ % 2 == 0 else sides[::-1]  # A B, B A, ...: neither side always goes first
        for side in order:
            time.sleep(args.pause)
            pipes[side].send("epoch")
            seconds, loss = pipes[side].recv()
            losses[side].append(loss)
            if round_ >= args.warmup:
                times[side].append(seconds)
            print(f"  {side:5s} epoch {round_ + 1}: {seconds:.3f} s, loss {loss:.4f}"
                  + ("  (warm-up)" if round_ < args.warmup else ""), flush=True)
    memory = {}
    for side in sides:
        pipes[side].send("done")
        memory[side] = pipes[side].recv()
        procs[side].join()

    flops = epoch_flops(60000)
    results = {}
    for side in sides:
        median = statistics.median(times[side])
        results[side] = {"seconds_per_epoch": median, "min": min(times[side]), "max": max(times[side]),
                         "epochs": times[side], "gflops": flops / median / 1e9, "final_loss": losses[side][-1],
                         **memory[side], **info[side]}
    ratio = round_ratio = None
    round_ratios = []
    if "torch" in results:
        ratio = results["numpy"]["seconds_per_epoch"] / results["torch"]["seconds_per_epoch"]
        # Each round runs one epoch a side back to back, so a slow spell of the host (seconds
        # long) usually covers both: the median of the rounds' own ratios is the steadier figure.
        round_ratios = [a / b for a, b in zip(times["numpy"], times["torch"])]
        round_ratio = statistics.median(round_ratios)

    print()
    print(f"{'side':6s}  {'s/epoch':>8s}  {'min':>6s}  {'max':>6s}  {'GFLOP/s':>7s}  {'peak RSS':>9s}  BLAS")
    for side, r in results.items():
        blas = r["blas"]
        kernel = blas.get("kernel") or blas.get("cpu_capability")
        print(f"{side:6s}  {r['seconds_per_epoch']:8.3f}  {r['min']:6.3f}  {r['max']:6.3f}  {r['gflops']:7.1f}  "
              f"{r['peak_rss_mb']:6.0f} MB  {blas.get('library')} {kernel}, threads: {blas.get('threads')}")
    if ratio is not None:
        print(f"ratio numpy / torch: {ratio:.2f} of the medians, {round_ratio:.2f} median of the rounds "
              f"({', '.join(f'{r:.2f}' for r in round_ratios)}) (target <= 0.75)")
    print("peak RSS: during the timed epochs, including the dataset held in memory")
    print(f"data: {data_description}; batch {args.batch_size}; Adam; threads per side: {args.threads}; "
          f"median of {args.epochs} epochs; {flops / 1e9:.1f} GFLOP per epoch computed "
          f"({nominal_epoch_flops(60000) / 1e9:.1f} nominal, 3 x forward)")
    set_vars = {k: v for k, v in env_before.items() if v is not None and k.startswith("OPENBLAS_") and
                k != "OPENBLAS_NUM_THREADS"}
    if set_vars:
        print(f"note: {', '.join(f'{k}={v}' for k, v in set_vars.items())} set: NumPy may run a slower kernel; "
              "unset them for fair numbers")

    report = {"benchmark": "train_speed", "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "architecture": list(SIZES), "batch_size": args.batch_size, "optimizer": "adam", "threads": args.threads,
              "data": data_description, "gflop_per_epoch": flops / 1e9,
              "gflop_per_epoch_nominal": nominal_epoch_flops(60000) / 1e9, "ratio_numpy_over_torch": ratio,
              "round_ratios": round_ratios, "median_round_ratio": round_ratio,
              "results": results, "env": env_before, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                                 "python": platform.python_version()}}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"train_speed-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
