"""Soak: sustained mixed traffic against the service as the README runs it, with a new model
version published every ``--swap-every`` seconds, to show that nothing degrades over time.

The service is ``gunicorn -c service/gunicorn_conf.py "service.app:create_app()"`` with its
default workers, threads and 1 s registry poll (only the address is 127.0.0.1 on a free port),
on a copy of the registry in a temporary folder (the committed models are never touched; when
the registry has no ``mnist`` and ``iris`` models, small generated ones stand in). ``--clients``
threads send requests back to back, as fast as the service answers, from this mix:

- ``image``: a 280x280 RGBA canvas drawing as ``image/png`` (a canvas sent whole; the drawing page halves it)
- ``upload``: a photo of a digit on paper, as a multipart form file (JPEG)
- ``base64``: two 28x28 digits as base64 strings in JSON
- ``vector``: one vector as JSON, to the vector model
- ``batch``: 64 vectors as JSON, and 256 rows as ``application/x-npy``
- ``bad``: requests the service must refuse with a given status (NaN, wrong length, a
  truncated PNG, an unknown model, malformed JSON, a wrong Content-Type)

Every valid request must succeed and name a published version; every bad one must get its
status. The RSS of the Gunicorn master and workers is sampled every second, latency is kept per
window, and the convergence of every swap is measured from the versions the answers name.

    python bench/soak.py --minutes 30                       # the full run (~35 minutes)
    python bench/soak.py --minutes 0.5 --swap-every 5       # a quick look

Writes bench/results/soak.json, docs/soak-rss.png and the "soak" section of docs/reliability.md.
``tests/test_faults.py`` runs a 25-second version of ``soak()`` and checks ``problems()``
without the performance goals (memory, latency, how fast a swap converges).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # tests/server.py imports its neighbours as pytest runs it: by bare name

from bench.report import machine, replace_section, stop_cleanly_on_sigterm, write_json  # noqa: E402
from tests.images import encode, paper, render_user_digit, synthetic_digit  # noqa: E402
from tests.modelgen import publish_model  # noqa: E402
from tests.server import ServiceProcess  # noqa: E402
from shared.model_file import read_manifest  # noqa: E402
from shared.registry import Registry  # noqa: E402

RELIABILITY_DOC = ROOT / "docs" / "reliability.md"
RSS_PLOT = ROOT / "docs" / "soak-rss.png"
IMAGE_MODEL, VECTOR_MODEL = "mnist", "iris"
GOAL_RSS_GROWTH = 0.05     # after warm-up
GOAL_P99_RATIO = 2.0       # p99 of the second half after warm-up against the first half's


@dataclass(frozen=True)
class Call:
    """One kind of request and the status it must get."""
    kind: str
    path: str
    body: bytes = b""
    content_type: str | None = None
    files: dict | None = None
    status: int = 200

    @property
    def valid(self) -> bool:
        return self.status == 200


def vector_size(registry: Path, model: str) -> int:
    latest = max(Registry(registry).versions(model))
    return read_manifest(Registry(registry).model_path(model, latest))["input"]["shape"][0]


def traffic(registry: Path) -> list[tuple[float, Call]]:
    """``(weight, call)`` pairs: the mix the clients draw from."""
    size = vector_size(registry, VECTOR_MODEL)
    rng = np.random.default_rng(0)
    digits = [synthetic_digit(seed) for seed in range(4)]
    canvas = render_user_digit(digits[1], "canvas_png")
    photo = render_user_digit(digits[2], "photo_jpeg")
    small = [base64.b64encode(encode(paper(d, 28), "PNG")).decode() for d in digits[:2]]
    vector = json.dumps({"inputs": rng.normal(0, 1, size).round(4).tolist()}).encode()
    batch = json.dumps({"inputs": rng.normal(0, 1, (64, size)).round(4).tolist(), "top_k": 2}).encode()
    npy = io.BytesIO()
    np.save(npy, rng.random((256, 784), dtype=np.float32))
    image_path, vector_path = f"/models/{IMAGE_MODEL}/predict", f"/models/{VECTOR_MODEL}/predict"
    bad_vector = json.dumps({"inputs": [float("nan")] + [0.0] * (size - 1)}).encode()
    return [
        (30, Call("image", image_path, canvas, "image/png")),
        (8, Call("upload", image_path, files={"file": ("photo.jpg", photo, "image/jpeg")})),
        (7, Call("base64", image_path, json.dumps({"images": small}).encode(), "application/json")),
        (25, Call("vector", vector_path, vector, "application/json")),
        (8, Call("batch", vector_path, batch, "application/json")),
        (7, Call("batch", image_path, npy.getvalue(), "application/x-npy")),
        (3, Call("bad", vector_path, bad_vector, "application/json", status=422)),
        (3, Call("bad", vector_path, b'{"inputs": [1, 2]}', "application/json", status=422)),
        (3, Call("bad", image_path, canvas[:len(canvas) // 3], "image/png", status=415)),
        (2, Call("bad", "/models/nope/predict", vector, "application/json", status=404)),
        (2, Call("bad", vector_path, b'{"inputs": [1, 2', "application/json", status=400)),
        (2, Call("bad", vector_path, vector, "text/csv", status=415)),
    ]


@dataclass
class Window:
    """What happened in one second of the run."""
    requests: Counter = field(default_factory=Counter)     # (kind, status) -> count
    latencies: list = field(default_factory=list)          # seconds, valid requests only
    rss: int = 0


class Recorder:
    def __init__(self, started: float):
        self.started = started
        self.lock = threading.Lock()
        self.windows: dict[int, Window] = {}
        self.failures: list[str] = []       # valid requests that did not succeed
        self.wrong: list[str] = []          # bad requests with another status than expected
        self.versions: list[tuple[float, float, int]] = []  # (sent, answered, version) of image-model answers

    def window(self, at: float) -> Window:
        second = int(at - self.started)
        if second not in self.windows:
            self.windows[second] = Window()
        return self.windows[second]

    def record(self, call: Call, sent: float, answered: float, status: int | None, version: int | None,
               problem: str | None) -> None:
        with self.lock:
            window = self.window(answered)
            window.requests[(call.kind, status)] += 1
            if call.valid:
                if problem:
                    self.failures.append(f"{call.kind} at {sent - self.started:.1f}s: {problem}")
                else:
                    window.latencies.append(answered - sent)
                    if call.path.startswith(f"/models/{IMAGE_MODEL}/"):
                        self.versions.append((sent, answered, version))
            elif problem:
                self.wrong.append(f"{call.kind} at {sent - self.started:.1f}s: {problem}")


def client(url: str, calls: list[tuple[float, Call]], seed: int, recorder: Recorder, stop: threading.Event) -> None:
    rng = random.Random(seed)
    weights = [w for w, _ in calls]
    with requests.Session() as session:
        while not stop.is_set():
            call = rng.choices(calls, weights)[0][1]
            headers = {"Content-Type": call.content_type} if call.content_type else {}
            sent = time.monotonic()
            status = version = problem = None
            try:
                response = session.post(url + call.path, data=call.body if not call.files else None,
                                        files=call.files, headers=headers, timeout=30)
                status = response.status_code
                if status != call.status:
                    problem = f"status {status}, expected {call.status}: {response.text[:200]}"
                elif call.valid:
                    version = int(response.headers["X-Model-Version"])
                    if response.json()["model"]["version"] != version:
                        problem = "X-Model-Version differs from the body"
            except (requests.RequestException, ValueError, KeyError) as e:
                problem = repr(e)
            recorder.record(call, sent, time.monotonic(), status, version, problem)


def service_rss(server: ServiceProcess) -> int:
    master = psutil.Process(server.process.pid)
    total = 0
    for process in [master, *master.children()]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def prepare_registry(source: Path | None, into: Path) -> Path:
    """A copy of ``source`` (or generated models) with ``mnist`` and ``iris`` in it."""
    registry = into / "registry"
    if source is not None and source.is_dir():
        shutil.copytree(source, registry, ignore=shutil.ignore_patterns(".tmp-*"))
    registry.mkdir(parents=True, exist_ok=True)
    if not (registry / IMAGE_MODEL).is_dir():
        publish_model(registry, IMAGE_MODEL, seed=0, hidden=128)
    if not (registry / VECTOR_MODEL).is_dir():
        publish_model(registry, VECTOR_MODEL, kind="vector")
    return registry


def soak(registry: Path, *, duration: float, swap_every: float, clients: int = 8, warmup: float | None = None,
         workers: int | None = None, log=print) -> dict:
    """Run the soak on ``registry`` (which it publishes new versions of ``mnist`` into) and
    return the summary (see ``problems`` for the pass/fail reading of it)."""
    warmup = min(60.0, duration * 0.2) if warmup is None else warmup
    calls = traffic(registry)
    with ServiceProcess(registry, workers=workers or 2, threads=None, poll_interval=1.0) as server:
        started = time.monotonic()
        recorder = Recorder(started)
        stop = threading.Event()
        published = [(started, v) for v in Registry(registry).versions(IMAGE_MODEL)]
        threads = [threading.Thread(target=client, args=(server.url, calls, seed, recorder, stop), daemon=True)
                   for seed in range(clients)]
        for thread in threads:
            thread.start()
        next_swap = started + swap_every
        next_report = started + 60
        try:
            while (now := time.monotonic()) < started + duration:
                with recorder.lock:
                    recorder.window(now).rss = service_rss(server)
                if now >= next_swap:
                    version = publish_model(registry, IMAGE_MODEL, seed=len(published), hidden=128)
                    published.append((time.monotonic(), version))
                    next_swap += swap_every
                if now >= next_report:
                    served = sum(sum(w.requests.values()) for w in recorder.windows.values())
                    log(f"{now - started:5.0f} s: {served} requests, RSS {service_rss(server) / 2**20:.0f} MiB, "
                        f"{len(recorder.failures)} failed, v{published[-1][1]} published")
                    next_report += 60
                time.sleep(1.0 - (time.monotonic() - started) % 1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=35)
        workers_now = len(server.worker_pids())
    return summarise(recorder, published, started, duration, warmup, swap_every, clients, workers or 2, workers_now)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(recorder: Recorder, published, started: float, duration: float, warmup: float,
              swap_every: float, clients: int, workers: int, workers_now: int) -> dict:
    seconds = sorted(s for s in recorder.windows if s < duration)
    totals: Counter = Counter()
    for window in recorder.windows.values():
        totals.update(window.requests)
    by_status: Counter = Counter()
    by_kind: Counter = Counter()
    for (kind, status), count in totals.items():
        by_status[str(status)] += count
        by_kind[kind] += count
    rss = [(s, recorder.windows[s].rss) for s in seconds if recorder.windows[s].rss]
    after = [r for s, r in rss if s >= warmup]
    # Memory after warm-up: the median of the first third of the samples against the last third's
    # (a single sample swings by the size of the requests in flight).
    span = max(1, len(after) // 3)
    rss_start, rss_end = statistics.median(after[:span]), statistics.median(after[-span:])
    # Latency by windows of 10 s (or 60 s for long runs), valid requests only.
    width = 60 if duration >= 600 else 10
    windows = []
    for begin in range(int(warmup), int(duration) - width + 1, width):  # whole windows only
        latencies = [x for s in seconds if begin <= s < begin + width for x in recorder.windows[s].latencies]
        if len(latencies) >= 20:
            windows.append({"start_s": begin, "requests": len(latencies), "p50_ms": 1000 * percentile(latencies, 50),
                            "p99_ms": 1000 * percentile(latencies, 99)})
    all_latencies = [x for s in seconds if s >= warmup for x in recorder.windows[s].latencies]
    middle = (warmup + duration) / 2
    first_half = [x for s in seconds if warmup <= s < middle for x in recorder.windows[s].latencies]
    second_half = [x for s in seconds if s >= middle for x in recorder.windows[s].latencies]
    # Swap convergence: from publication to the last answer by an older version.
    convergence, not_served = [], []
    for (when, version), following in zip(published, published[1:] + [(float("inf"), None)]):
        if when <= started:
            continue
        older = [answered for sent, answered, v in recorder.versions if v is not None and v < version
                 and sent >= when and answered < following[0]]
        newest = [answered for sent, answered, v in recorder.versions if v == version]
        if newest:
            convergence.append(max([0.0] + [a - when for a in older]))
        else:
            not_served.append(version)
    # Checked here, not as answers come: a worker may serve a new version before the publishing
    # thread, waiting for the GIL behind the clients, has noted it as published.
    known = {v for _, v in published}
    recorder.failures += [f"{IMAGE_MODEL} at {sent - started:.1f}s: answered by v{v}, which was never published"
                          for sent, _, v in recorder.versions if v not in known]
    served = sum(totals.values())
    return {
        "duration_s": duration, "warmup_s": warmup, "swap_every_s": swap_every, "clients": clients,
        "workers": workers, "workers_at_end": workers_now, "machine": machine(),
        "requests": served, "requests_per_s": served / duration,
        "by_status": dict(sorted(by_status.items())), "by_kind": dict(sorted(by_kind.items())),
        "valid_failed": len(recorder.failures), "failures": recorder.failures[:20],
        "bad_wrong_status": len(recorder.wrong), "wrong": recorder.wrong[:20],
        "versions_published": len(published) - 1,
        "swap_convergence_max_s": max(convergence) if convergence else None,
        "versions_not_served": not_served,
        "rss_mib": [(s, r / 2**20) for s, r in rss],
        "rss_after_warmup_mib": rss_start / 2**20, "rss_end_mib": rss_end / 2**20,
        "rss_growth": rss_end / rss_start - 1,
        "p50_ms": 1000 * percentile(all_latencies, 50), "p99_ms": 1000 * percentile(all_latencies, 99),
        "p99_first_half_ms": 1000 * percentile(first_half, 99), "p99_second_half_ms": 1000 * percentile(second_half, 99),
        "latency_windows": windows,
        "swaps_at_s": [when - started for when, _ in published if when > started],
    }


def problems(summary: dict, *, performance: bool = True) -> list[str]:
    """What breaks the soak's goals; empty when it passed. ``performance=False`` leaves out the
    goals that are measurements (RSS growth, p99 slowdown, how fast a swap converges)."""
    found = []
    if summary["valid_failed"]:
        found.append(f"{summary['valid_failed']} valid requests failed: {summary['failures'][:3]}")
    if summary["bad_wrong_status"]:
        found.append(f"{summary['bad_wrong_status']} bad requests got another status: {summary['wrong'][:3]}")
    if summary["workers_at_end"] != summary["workers"]:
        found.append(f"{summary['workers_at_end']} workers at the end, not {summary['workers']}")
    if summary["versions_not_served"]:
        found.append(f"versions published during the run and never served: {summary['versions_not_served']}")
    elif summary["swap_convergence_max_s"] is None:
        found.append("no version was published during the run")
    if not performance:
        return found
    if summary["rss_growth"] > GOAL_RSS_GROWTH:
        found.append(f"RSS grew {summary['rss_growth']:.1%} after warm-up "
                     f"({summary['rss_after_warmup_mib']:.0f} -> {summary['rss_end_mib']:.0f} MiB)")
    first, second = summary["p99_first_half_ms"], summary["p99_second_half_ms"]
    if second > GOAL_P99_RATIO * first + 10:
        found.append(f"p99 rose from {first:.0f} ms in the first half to {second:.0f} ms in the second")
    if summary["swap_convergence_max_s"] is not None and summary["swap_convergence_max_s"] > 3.0:
        found.append(f"a swap took {summary['swap_convergence_max_s']} s to reach every worker")
    return found


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = summary["duration_s"] >= 600
    scale = 60 if minutes else 1
    xs = [s / scale for s, _ in summary["rss_mib"]]
    ys = [r for _, r in summary["rss_mib"]]
    fig, ax = plt.subplots(figsize=(7, 2.8), dpi=90)
    ax.plot(xs, ys, color="#1f5fa8", linewidth=1.2, label="RSS, master + workers")
    for swap in summary["swaps_at_s"]:
        ax.axvline(swap / scale, color="#bbbbbb", linewidth=0.6, zorder=0)
    ax.axvspan(0, summary["warmup_s"] / scale, color="#f2f2f2", zorder=-1, label="warm-up")
    ax.set_xlabel("minutes" if minutes else "seconds")
    ax.set_ylabel("MiB")
    ax.set_ylim(0, max(ys) * 1.15)
    ax.set_title(f"{summary['requests']:,} requests, a new model version every {summary['swap_every_s']:.0f} s "
                 "(grey lines)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def swap_text(summary: dict) -> str:
    """How long the slowest swap took, or why there is no figure (a run shorter than ``--swap-every``)."""
    if summary["swap_convergence_max_s"] is None:
        return f"none published during the run (one every {summary['swap_every_s']:g} s)"
    return f"{summary['swap_convergence_max_s']:.2f} s"


def markdown(summary: dict) -> str:
    statuses = ", ".join(f"{status}: {count:,}" for status, count in summary["by_status"].items())
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in summary["by_kind"].items())
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {summary['machine']}, 2 shared cores; "
        f"{summary['duration_s'] / 60:.0f} minutes, {summary['clients']} client threads on the same cores, "
        f"Gunicorn with {summary['workers']} workers and the configuration's default threads, a new `mnist` version every "
        f"{summary['swap_every_s']:.0f} s ({summary['versions_published']} swaps).",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| requests served | {summary['requests']:,} ({summary['requests_per_s']:.0f}/s) |",
        f"| by kind | {kinds} |",
        f"| by status | {statuses} |",
        f"| valid requests that failed | {summary['valid_failed']} |",
        f"| bad requests with an unexpected status | {summary['bad_wrong_status']} |",
        f"| RSS after warm-up -> end | {summary['rss_after_warmup_mib']:.0f} MiB -> {summary['rss_end_mib']:.0f} MiB "
        f"({summary['rss_growth']:+.1%}) |",
        f"| latency p50 / p99 (valid requests, after warm-up) | {summary['p50_ms']:.1f} ms / {summary['p99_ms']:.1f} ms |",
        f"| p99, first half -> second half after warm-up | {summary['p99_first_half_ms']:.0f} ms -> "
        f"{summary['p99_second_half_ms']:.0f} ms |",
        f"| slowest swap to reach every worker | {swap_text(summary)} |",
        "",
        "p99 by window: " + ", ".join(f"{w['start_s'] // 60 if summary['duration_s'] >= 600 else w['start_s']}"
                                      f"{'m' if summary['duration_s'] >= 600 else 's'} {w['p99_ms']:.0f} ms"
                                      for w in summary["latency_windows"]) + ".",
        "",
        "![RSS over the soak](soak-rss.png)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--swap-every", type=float, default=30.0, help="seconds between two published versions")
    parser.add_argument("--clients", type=int, default=8, help="client threads sending back to back")
    parser.add_argument("--registry", type=Path, default=ROOT / "models", help="copied, never written")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/reliability.md and the plot")
    args = parser.parse_args(argv)
    stop_cleanly_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="scratchnet-soak-") as tmp:
        registry = prepare_registry(args.registry, Path(tmp))
        summary = soak(registry, duration=args.minutes * 60, swap_every=args.swap_every, clients=args.clients)
    found = problems(summary)
    summary["problems"] = found
    write_json("soak", summary)
    if not args.no_docs:
        plot(summary, RSS_PLOT)
        replace_section("soak", markdown(summary), doc=RELIABILITY_DOC)
    print(markdown(summary))
    print("\n".join(["", "PROBLEMS:", *found]) if found else "\nall goals met")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
