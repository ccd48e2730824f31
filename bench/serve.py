"""Serving throughput and latency, side by side with the framework's floor.

The service runs exactly as the README runs it (``gunicorn -c service/gunicorn_conf.py
"service.app:create_app()"`` with its default workers and threads; only the address is
127.0.0.1 on a free port), and so does bench/floor_app.py, a Flask app that only reads the
body and answers a small JSON. ``wrk`` (Debian's ``wrk``) posts one request body over and over
for a bounded time at 1, 8 and 32 concurrent connections:

- image: a PNG digit drawn on a browser canvas and exported whole (280x280 RGBA, transparent
  background), ``Content-Type: image/png`` to ``/models/<model>/predict``
- image140: the same canvas as the drawing page sends it, halved to 140x140 (service/static/app.js)
- image28: the same digit as a 28x28 grey PNG, the smallest image a client can send
- vector: one 784-value vector as JSON ``{"inputs": [...]}``

Runs are interleaved (service and floor alternate for every case) and each figure is the
median of ``--repeats`` runs. Then a 10,000-row ``application/x-npy`` batch is posted several
times; the figure is the median round trip. Goals: image requests/s >= 60 % of the floor's,
p99 <= 25 ms at 8 clients, the 10,000-row batch in <= 50 ms.

    python bench/serve.py                          # models/, ~13 minutes
    python bench/serve.py --duration 3 --repeats 1 # a quick look

Writes bench/results/serve.json and its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import (RESULTS_DIR, markdown_table, replace_section, stop_cleanly_on_sigterm, text_table,  # noqa: E402
                          write_json)
from tests.images import render_user_digit, synthetic_digit  # noqa: E402

SERVICE_APP = "service.app:create_app()"
FLOOR_APP = "bench.floor_app:create_app()"
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
GOAL_FLOOR_SHARE = 0.60
GOAL_P99_MS = 25.0
GOAL_P99_CLIENTS = 8
GOAL_BATCH_MS = 50.0
BATCH_ROWS = 10_000

# wrk's Lua hooks: post the body file, print the summary as one JSON line at the end.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = assert(io.open("{body_path}", "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Server:
    """A Gunicorn started with the service's configuration file, on 127.0.0.1."""

    app: str
    registry: Path
    process: subprocess.Popen | None = None
    url: str = ""
    log_path: Path | None = None
    env: dict = field(default_factory=dict)

    def start(self, timeout: float = 90) -> "Server":
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCRATCHNET_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update({"SCRATCHNET_REGISTRY": str(self.registry), "SCRATCHNET_BIND": "127.0.0.1:0", **self.env})
        log = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py", self.app],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited with {self.process.returncode}:\n{self.log()}")
            match = LISTENING.search(self.log())
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                if self._answers():
                    return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.app} did not start in {timeout} s:\n{self.log()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the master and its workers have used so far."""
        master = psutil.Process(self.process.pid)
        total = 0.0
        for process in [master, *master.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def _answers(self) -> bool:
        try:
            requests.get(self.url + "/healthz", timeout=2)
            return True
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None


@dataclass(frozen=True)
class Payload:
    name: str
    content_type: str
    body: bytes
    description: str


def payloads() -> list[Payload]:
    digit = synthetic_digit(1)
    png = render_user_digit(digit, "canvas_png")
    page_png = render_user_digit(digit, "page_png")
    small_png = render_user_digit(digit, "inverted_mnist")
    vector = np.round(digit.reshape(-1) / 255, 4).tolist()
    return [
        Payload("image", "image/png", png,
                f"PNG digit, 280x280 RGBA: a browser canvas exported whole ({len(png):,} bytes)"),
        Payload("image140", "image/png", page_png,
                f"PNG digit, 140x140 RGBA as the drawing page sends it, its 280x280 pad halved "
                f"({len(page_png):,} bytes)"),
        Payload("image28", "image/png", small_png, f"PNG digit, 28x28 grey like an MNIST file ({len(small_png):,} bytes)"),
        Payload("vector", "application/json", json.dumps({"inputs": vector}).encode(),
                "one 784-value vector as JSON"),
    ]


def check_answers(url: str, model: str, payload: Payload, *, floor: bool) -> None:
    """One request by hand first: a benchmark of error responses would be worthless."""
    response = requests.post(f"{url}/models/{model}/predict", data=payload.body,
                             headers={"Content-Type": payload.content_type}, timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"{url}: {payload.name} request answered {response.status_code}: {response.text[:300]}")
    if not floor and "predictions" not in response.json():
        raise SystemExit(f"{url}: {payload.name} request answered without predictions: {response.text[:300]}")


def write_scripts(cases: list[Payload], folder: Path) -> dict[str, Path]:
    """One wrk script per payload (by name), posting the payload's body, written beside it."""
    scripts = {}
    for payload in cases:
        body_path = folder / f"{payload.name}.body"
        body_path.write_bytes(payload.body)
        scripts[payload.name] = folder / f"{payload.name}.lua"
        scripts[payload.name].write_text(WRK_SCRIPT.format(content_type=payload.content_type, body_path=body_path))
    return scripts


def start_servers(servers: dict[str, Server], cases: list[Payload], scripts: dict[str, Path], model: str) -> None:
    """Start each server, check that every payload gets a real answer, and warm each up with wrk
    (only the service's answers must hold predictions: "floor" answers a constant)."""
    for target, server in servers.items():
        server.start()
        for payload in cases:
            check_answers(server.url, model, payload, floor=target == "floor")
            run_wrk(server, f"{server.url}/models/{model}/predict", scripts[payload.name], 8, 2)


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (or make system-deps)")


def run_wrk(server: Server, url: str, script: Path, clients: int, duration: float) -> dict:
    """One wrk run. Besides wrk's figures, the CPU time the server used per request: unlike
    requests/s it hardly depends on what else the machine is doing. Requests/s and CPU time per
    request count answered requests only: wrk counts an error status (4xx, 5xx) as a completed
    request, and such answers are cheap (a run's errors are reported, and fail its goals)."""
    command = ["wrk", "-t1", f"-c{clients}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(script), url]
    load_before = os.getloadavg()[0]
    cpu_before = server.cpu_seconds()
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    cpu = server.cpu_seconds() - cpu_before
    line = next((l for l in out.stdout.splitlines() if l.startswith("WRK_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    result = json.loads(line[len("WRK_JSON "):])
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    answered = result["requests"] - result["status"]
    seconds = result["duration_us"] / 1e6
    return {"rps": answered / seconds, "p50_ms": result["p50_us"] / 1000, "p90_ms": result["p90_us"] / 1000,
            "p99_ms": result["p99_us"] / 1000, "max_ms": result["max_us"] / 1000, "requests": answered,
            "cpu_ms_per_request": 1000 * cpu / max(answered, 1),
            "errors": errors, "load_before": load_before}


def measure_batch(url: str, model: str, repeats: int, data_dir: str | None) -> dict:
    """Round trips of one 10,000-row x-npy batch (MNIST test digits when the data is at hand)."""
    rows = batch_rows(data_dir)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    body = buffer.getvalue()
    session = requests.Session()
    timings, sizes = [], []
    for i in range(repeats + 2):  # two warm-up requests (both workers) first
        started = time.perf_counter()
        response = session.post(f"{url}/models/{model}/predict", data=body,
                                headers={"Content-Type": "application/x-npy"}, timeout=60)
        content = response.content
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"batch request answered {response.status_code}: {content[:300]!r}")
        if i >= 2:
            timings.append(elapsed * 1000)
            sizes.append(len(content))
        time.sleep(0.2)
    answer = json.loads(content)
    assert len(answer["predictions"]) == BATCH_ROWS
    return {"rows": BATCH_ROWS, "request_bytes": len(body), "response_bytes": int(statistics.median(sizes)),
            "median_ms": statistics.median(timings), "min_ms": min(timings), "max_ms": max(timings),
            "runs_ms": [round(t, 1) for t in timings]}


def batch_rows(data_dir: str | None) -> np.ndarray:
    try:
        from trainer.datasets import load_dataset

        return load_dataset("mnist", data_dir=data_dir, download=False, progress=False).x_test[:BATCH_ROWS]
    except Exception:  # noqa: BLE001 - any digits will do for timing
        return np.random.default_rng(0).random((BATCH_ROWS, 784), dtype=np.float32)


def variable_setting(text: str) -> tuple[str, str]:
    """``--set``'s VAR=VALUE as (VAR, VALUE)."""
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: give a variable and its value, VAR=VALUE "
                                         "(e.g. SCRATCHNET_THREADS=1)")
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, default=ROOT / "models", help="registry to serve (default: models)")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the median is reported (default 3)")
    parser.add_argument("--batch-repeats", type=int, default=9)
    parser.add_argument("--data-dir", default=os.environ.get("SCRATCHNET_DATA_DIR") or os.environ.get("SCRATCHNET_DATASETS"))
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE", type=variable_setting,
                        help="an environment variable for both servers (e.g. SCRATCHNET_THREADS=1); repeatable")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: print and write docs/benchmarks.md from the last results")
    args = parser.parse_args(argv)
    stop_cleanly_on_sigterm()
    if args.report_only:
        return report(json.loads((RESULTS_DIR / "serve.json").read_text()), docs=not args.no_docs)
    require_wrk()

    cases = payloads()
    overrides = dict(args.set)
    servers = {"service": Server(SERVICE_APP, args.registry, env=overrides),
               "floor": Server(FLOOR_APP, args.registry, env=dict(overrides))}
    runs: dict[tuple[str, str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        scripts = write_scripts(cases, Path(tmp))
        try:
            start_servers(servers, cases, scripts, args.model)
            print(f"service {servers['service'].url}, floor {servers['floor'].url}; "
                  f"{os.cpu_count()} CPUs; {args.repeats} x {args.duration:g} s per case", flush=True)
            for repeat in range(args.repeats):
                for clients in args.clients:
                    for payload in cases:
                        for target in ("service", "floor") if repeat % 2 == 0 else ("floor", "service"):
                            url = f"{servers[target].url}/models/{args.model}/predict"
                            result = run_wrk(servers[target], url, scripts[payload.name], clients, args.duration)
                            runs.setdefault((target, payload.name, clients), []).append(result)
                            print(f"  run {repeat + 1}  {target:7s} {payload.name:6s} c={clients:<3d} "
                                  f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                                  f"p99 {result['p99_ms']:6.2f} ms  cpu {result['cpu_ms_per_request']:5.2f} ms/req  "
                                  f"errors {result['errors']}  "
                                  f"(load {result['load_before']:.1f})", flush=True)
            batch = measure_batch(servers["service"].url, args.model, args.batch_repeats, args.data_dir)
        finally:
            for server in servers.values():
                server.stop()

    summary = summarise(runs, cases, args.clients)
    loads = sorted(r["load_before"] for results in runs.values() for r in results)
    payload = {"model": describe_model(args.registry, args.model), "registry": str(args.registry),
               "cpus": os.cpu_count(), "duration_s": args.duration, "repeats": args.repeats,
               "load_average": {"min": loads[0], "median": statistics.median(loads), "max": loads[-1]},
               "gunicorn": gunicorn_settings(overrides), "overrides": overrides,
               "payloads": {p.name: p.description for p in cases},
               "summary": summary, "batch": batch, "goals": check_goals(summary, batch),
               "runs": [{"target": t, "payload": p, "clients": c, "runs": r} for (t, p, c), r in runs.items()]}
    print(f"\nwrote {write_json('serve', payload)}")
    return report(payload, docs=not args.no_docs)


def report(payload: dict, *, docs: bool) -> int:
    payload["goals"] = check_goals(payload["summary"], payload["batch"])
    header, rows = table(payload["summary"])
    batch = payload["batch"]
    print()
    print(text_table(header, rows))
    print(f"\n{BATCH_ROWS:,}-row x-npy batch ({batch['request_bytes'] / 1e6:.1f} MB in, "
          f"{batch['response_bytes'] / 1e6:.1f} MB out): median {batch['median_ms']:.1f} ms "
          f"(min {batch['min_ms']:.1f}, max {batch['max_ms']:.1f}; {len(batch['runs_ms'])} runs)")
    for goal in payload["goals"]:
        print(f"  {'met   ' if goal['met'] else 'MISSED'} {goal['goal']}: {goal['measured']}")
    if docs:
        replace_section("serving", serve_markdown(payload, header, rows))
        print("updated docs/benchmarks.md")
    return 0 if all(goal["met"] for goal in payload["goals"]) else 1


def table(summary: list[dict]) -> tuple[list[str], list[list]]:
    header = ["request", "clients", "service req/s", "floor req/s", "share of floor",
              "service p50 ms", "service p99 ms", "floor p50 ms", "floor p99 ms",
              "service CPU ms/req", "floor CPU ms/req"]
    rows = [[s["payload"], s["clients"], f"{s['service']['rps']:.0f}", f"{s['floor']['rps']:.0f}",
             f"{100 * s['share']:.0f}%", f"{s['service']['p50_ms']:.2f}", f"{s['service']['p99_ms']:.2f}",
             f"{s['floor']['p50_ms']:.2f}", f"{s['floor']['p99_ms']:.2f}",
             f"{s['service']['cpu_ms_per_request']:.2f}", f"{s['floor']['cpu_ms_per_request']:.2f}"] for s in summary]
    return header, rows


def describe_model(registry: Path, name: str) -> dict:
    """Name, served version and architecture of the model the benchmark posts to."""
    from shared.model_file import load_model
    from shared.registry import Registry

    reg = Registry(registry)
    versions = reg.versions(name)
    if not versions:
        return {"name": name}
    version = reg.read_serving(name).get("pinned") or versions[-1]
    return {"name": name, "version": version, "architecture": repr(load_model(reg.model_path(name, version)))}


def summarise(runs: dict, cases: list[Payload], clients_list: list[int]) -> list[dict]:
    summary = []
    for payload in cases:
        for clients in clients_list:
            entry = {"payload": payload.name, "clients": clients}
            for target in ("service", "floor"):
                results = runs[(target, payload.name, clients)]
                entry[target] = {key: statistics.median(r[key] for r in results)
                                 for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "cpu_ms_per_request")}
                entry[target]["errors"] = sum(r["errors"] for r in results)
            entry["share"] = entry["service"]["rps"] / entry["floor"]["rps"]
            entry["cpu_share"] = entry["floor"]["cpu_ms_per_request"] / entry["service"]["cpu_ms_per_request"]
            summary.append(entry)
    return summary


def check_goals(summary: list[dict], batch: dict) -> list[dict]:
    goals = []
    for s in summary:
        if s["payload"].startswith("image"):
            goals.append({"goal": f"{s['payload']} req/s >= {GOAL_FLOOR_SHARE:.0%} of the floor at {clients_text(s['clients'])}",
                          "measured": f"{s['share']:.0%} (by CPU time per request: {s['cpu_share']:.0%})",
                          "met": s["share"] >= GOAL_FLOOR_SHARE})
        if s["clients"] == GOAL_P99_CLIENTS:
            goals.append({"goal": f"{s['payload']} p99 <= {GOAL_P99_MS:g} ms at {clients_text(GOAL_P99_CLIENTS)}",
                          "measured": f"{s['service']['p99_ms']:.1f} ms", "met": s["service"]["p99_ms"] <= GOAL_P99_MS})
    goals.append({"goal": f"{BATCH_ROWS:,}-row x-npy batch <= {GOAL_BATCH_MS:g} ms (median)",
                  "measured": f"{batch['median_ms']:.1f} ms", "met": batch["median_ms"] <= GOAL_BATCH_MS})
    errors = sum(s[t]["errors"] for s in summary for t in ("service", "floor"))
    goals.append({"goal": "no failed requests", "measured": f"{errors} errors", "met": errors == 0})
    return goals


def gunicorn_settings(overrides: dict) -> dict:
    """The configuration file's settings as the benchmark ran them: its defaults, read by
    running the file in a clean environment (no SCRATCHNET_* variables but ``--set``'s)."""
    keys = ("workers", "threads", "worker_class", "keepalive", "preload_app", "timeout")
    code = ("import json, os, runpy; c = runpy.run_path('service/gunicorn_conf.py'); "
            f"print(json.dumps({{**{{k: c.get(k) for k in {keys!r}}}, 'blas_threads': os.environ.get('OPENBLAS_NUM_THREADS')}}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRATCHNET_")} | overrides
    with tempfile.TemporaryDirectory(prefix="bench-conf-") as metrics_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "unreadable"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def clients_text(n: int) -> str:
    return f"{n} client" if n == 1 else f"{n} clients"


def serve_markdown(payload: dict, header, rows) -> str:
    bodies = "\n".join(f"- **{name}**: {text}" for name, text in payload["payloads"].items())
    goal_rows = [[g["goal"], g["measured"], "met" if g["met"] else "**missed**"] for g in payload["goals"]]
    batch, model, load, conf = payload["batch"], payload["model"], payload["load_average"], payload["gunicorn"]
    return f"""## Serving throughput and latency

`python bench/serve.py`: `gunicorn -c service/gunicorn_conf.py "service.app:create_app()"` with the
configuration file's defaults ({conf.get('workers')} workers x {conf.get('threads')} threads, {conf.get('worker_class')},
{conf.get('blas_threads', '?')} BLAS threads per worker, used by large batches) serving `{model['name']}` v{model.get('version')} (`{model.get('architecture')}`), beside
`bench/floor_app.py` (a Flask route that reads the body and answers a small JSON) under the same
configuration. `wrk -t1 -c<clients>` for {payload['duration_s']:g} s per run on 127.0.0.1, service and floor
interleaved, median of {payload['repeats']} runs. The machine has {payload['cpus']} cores, shared by both
servers, `wrk` and other work: the load average before a run was {load['min']:.1f} to {load['max']:.1f}
(median {load['median']:.1f}). "CPU ms/req" is the CPU time the server's processes used per request,
which depends far less on that load than requests/s and latency do. Requests/s and CPU ms/req
count the requests answered without an error status (any error fails the last goal below).

{bodies}

{markdown_table(header, rows, "lrrrrrrrrrr")}

A {BATCH_ROWS:,}-row `application/x-npy` batch ({batch['request_bytes'] / 1e6:.1f} MB in,
{batch['response_bytes'] / 1e6:.1f} MB of JSON out, top 3 per row) to `/models/{model['name']}/predict`:
median round trip **{batch['median_ms']:.1f} ms** (min {batch['min_ms']:.1f}, max {batch['max_ms']:.1f},
{len(batch['runs_ms'])} runs, keep-alive).

{markdown_table(["goal", "measured", ""], goal_rows)}
"""


if __name__ == "__main__":
    sys.exit(main())
