"""How close to the floor could any image route get? The floor (bench/floor_app.py: read the
body, answer a constant) against a route doing only an image prediction's own work
(``create_image_work_app``: the shared preprocessing, the forward pass, a JSON answer; none of
the service's validation, hooks, metrics or logging) and the service itself, all under the
service's Gunicorn configuration, with bench/serve.py's image bodies and ``wrk``.

    python bench/image_work.py                    # 8 clients, 3 interleaved runs of 6 s
    python bench/image_work.py --repeats 5
    python bench/image_work.py --no-docs          # leave docs/benchmarks.md as it is

Writes bench/results/image_work.json and its section of docs/benchmarks.md.

If the image work alone stays below 60 % of the floor's requests/s, no service doing it in
Python can reach that goal; the gap between it and the service is what the service adds.
Two more routes stop earlier (``stage`` in bench/floor_app.py) and show what the parts cost:
"forward only" answers every request with the forward pass of a fixed input, "decode" first
decodes the image to grey (Pillow's open and load, luminance) and then does the same.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import markdown_table, replace_section, stop_cleanly_on_sigterm, write_json  # noqa: E402
from bench.serve import (FLOOR_APP, SERVICE_APP, Server, payloads, require_wrk, run_wrk,  # noqa: E402
                         start_servers, write_scripts)

APPS = {"floor": FLOOR_APP,
        "forward only": "bench.floor_app:create_image_work_app(stage='forward')",
        "decode": "bench.floor_app:create_image_work_app(stage='decode')",
        "image work": "bench.floor_app:create_image_work_app()",
        "service": SERVICE_APP}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    stop_cleanly_on_sigterm()
    require_wrk()

    cases = [p for p in payloads() if p.name.startswith("image")]
    servers = {name: Server(app, args.registry) for name, app in APPS.items()}
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-image-work-") as tmp:
        scripts = write_scripts(cases, Path(tmp))
        try:
            start_servers(servers, cases, scripts, args.model)
            for repeat in range(args.repeats):
                for payload in cases:
                    order = list(servers) if repeat % 2 == 0 else list(reversed(servers))
                    for target in order:
                        url = f"{servers[target].url}/models/{args.model}/predict"
                        result = run_wrk(servers[target], url, scripts[payload.name], args.clients, args.duration)
                        results.setdefault((target, payload.name), []).append(result)
                        print(f"  run {repeat + 1}  {target:12s} {payload.name:7s} {result['rps']:7.0f} req/s  "
                              f"cpu {result['cpu_ms_per_request']:5.2f} ms/req  errors {result['errors']}", flush=True)
        finally:
            for server in servers.values():
                server.stop()

    print(f"\n{args.clients} clients, median of {args.repeats} runs of {args.duration:g} s")
    print(f"{'request':8s} {'server':12s} {'req/s':>7s} {'share of floor':>15s} {'CPU ms/req':>11s}")
    medians = {}
    for payload in cases:
        floor = statistics.median(r["rps"] for r in results[("floor", payload.name)])
        for target in servers:
            runs = results[(target, payload.name)]
            rps = statistics.median(r["rps"] for r in runs)
            cpu = statistics.median(r["cpu_ms_per_request"] for r in runs)
            medians.setdefault(payload.name, {})[target] = {"rps": rps, "share_of_floor": rps / floor, "cpu_ms": cpu}
            print(f"{payload.name:8s} {target:12s} {rps:7.0f} {rps / floor:15.0%} {cpu:11.2f}")
    payload = {"clients": args.clients, "duration_s": args.duration, "repeats": args.repeats,
               "requests": {p.name: p.description for p in cases}, "medians": medians,
               "runs": {f"{target} {name}": runs for (target, name), runs in results.items()}}
    write_json("image_work", payload)
    if not args.no_docs:
        replace_section("image-work", image_work_markdown(payload, list(servers)))
    return 0


def image_work_markdown(payload: dict, servers: list[str]) -> str:
    rows = []
    for name, by_server in payload["medians"].items():
        cells = [f"{by_server[s]['rps']:,.0f}, {by_server[s]['cpu_ms']:.2f} ms" if s == "floor" else
                 f"{by_server[s]['rps']:,.0f} ({by_server[s]['share_of_floor']:.0%}), {by_server[s]['cpu_ms']:.2f} ms"
                 for s in servers]
        rows.append([f"**{name}**: {payload['requests'][name]}", *cells])
    table = markdown_table(["request", *servers], rows, "l" + "r" * len(servers))
    return (f"## The image work alone\n\n`python bench/image_work.py`: the floor, the service and three routes "
            f"between them (bench/floor_app.py) under the service's Gunicorn configuration, `wrk` with "
            f"{payload['clients']} clients, median of {payload['repeats']} interleaved runs of "
            f"{payload['duration_s']:g} s; requests/s (share of the floor's), CPU time per request. \"forward only\" "
            "answers every request with the forward pass of a fixed input and its JSON; \"decode\" first decodes "
            "the body to grey (Pillow's open and load, the luminance array); \"image work\" does the whole shared "
            "preprocessing, the forward pass and the JSON answer, and none of the service's validation, metrics "
            f"or logging.\n\n{table}\n")


if __name__ == "__main__":
    raise SystemExit(main())
