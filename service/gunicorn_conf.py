"""How the service runs in production::

    gunicorn -c service/gunicorn_conf.py "service.app:create_app()"

| variable                  | default        | meaning                                            |
| ------------------------- | -------------- | -------------------------------------------------- |
| SCRATCHNET_BIND           | 0.0.0.0:8000   | address to listen on                               |
| SCRATCHNET_WORKERS        | 2              | worker processes (one per core)                    |
| SCRATCHNET_THREADS        | 2              | threads per worker (gthread)                       |
| SCRATCHNET_TIMEOUT        | 30             | seconds a worker may stop reporting to the master (hung) before it is restarted; requests run in threads, so a slow request or client does not count |
| SCRATCHNET_GRACEFUL_TIMEOUT | 10           | seconds a stopping worker gets to finish its requests |
| SCRATCHNET_CLIENT_TIMEOUT | 10             | seconds a client may make no progress, sending its request or reading the answer, before it is dropped (408 while its body arrives); 0: no limit |
| SCRATCHNET_NUMPY_THREADS  | cores          | BLAS/OpenMP threads per worker (large batches)     |
| SCRATCHNET_MALLOC_ARENAS  | 2              | glibc malloc arenas per process (0: glibc's default) |
| SCRATCHNET_GUNICORN_LOG_LEVEL | info       | level of Gunicorn's own log (the app's: SCRATCHNET_LOG_LEVEL) |
| SCRATCHNET_CONTROL_SOCKET | 0              | 1: keep Gunicorn's control socket (one fixed path per user, off so services do not clash) |
| PROMETHEUS_MULTIPROC_DIR  | a new temp dir | where workers write their metrics (emptied at start) |

Each worker builds its own app after the fork (no ``preload_app``), so its registry watcher
thread is started in the worker itself; threads started in the master would not survive the
fork. The service settings (``SCRATCHNET_REGISTRY`` ...) are read by the app: see service/config.py.
"""

import ctypes
import json
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn import util as gunicorn_util

# Before any worker imports NumPy: as many BLAS threads as cores. OpenBLAS runs the small matrix
# products of ordinary requests (a few rows) on one thread whatever this says, so the extra
# threads only work on large batches, which then use every core: a 10,000-row batch is answered
# in ~60 % of the time one thread takes (docs/benchmarks.md).
_threads = os.environ.get("SCRATCHNET_NUMPY_THREADS", str(len(os.sched_getaffinity(0))))
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_name, _threads)

# glibc gives every thread that allocates its own malloc arena (up to 8 per core) and keeps what
# each one has freed: with threaded workers serving large requests, that was most of a worker's
# memory growth (docs/reliability.md). Set here, in the master, the limit holds in every worker.
_arenas = int(os.environ.get("SCRATCHNET_MALLOC_ARENAS", "2"))
if _arenas > 0:
    try:
        ctypes.CDLL(None).mallopt(-8, _arenas)  # -8 is M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to set
        pass

# Before any worker imports prometheus_client: it picks its multiprocess value class at import.
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="scratchnet-metrics-")
_metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

# Import the service's modules (NumPy, Pillow, Flask, pydantic ...) here, once, after the settings
# above: workers are forked with them loaded, so a worker that dies is replaced in a fraction of a
# second rather than the ~2 s its imports take on a busy machine. The app itself is still built in
# each worker. New code therefore takes a restart of the master, not a HUP.
import service.app  # noqa: E402,F401

bind = os.environ.get("SCRATCHNET_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("SCRATCHNET_WORKERS", "2"))
# Two threads per worker overlap one request's network I/O with another's computing; more only
# contend for the GIL (a canvas image cost 2.0 ms of CPU at 2 threads, 2.4-3.0 ms at 4, and p99
# latency rose with it). Slow clients are a buffering proxy's job (docs/reliability.md).
threads = int(os.environ.get("SCRATCHNET_THREADS", "2"))
worker_class = "service.worker.FairThreadWorker"  # gthread that leaves new connections to a free worker
timeout = int(os.environ.get("SCRATCHNET_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("SCRATCHNET_GRACEFUL_TIMEOUT", "10"))
keepalive = 5
preload_app = False
accesslog = None  # the app writes its own structured access log
errorlog = "-"
loglevel = os.environ.get("SCRATCHNET_GUNICORN_LOG_LEVEL", "info")
proc_name = "scratchnet"
# Gunicorn's control socket has one default path per user: several services (tests) would clash.
control_socket_disable = os.environ.get("SCRATCHNET_CONTROL_SOCKET", "0") != "1"


def _json_error(sock, status_int, reason, mesg):
    """Gunicorn answers a request it cannot parse (a request line or headers over its limits, a
    malformed chunk) itself, with an HTML page: answer in the API's JSON error format instead."""
    code = "internal_error" if status_int == 500 else reason.lower().replace(" ", "_")
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason, "code": code, "details": []}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn_util.write_error = _json_error  # workers are forked from this process and keep it


def on_starting(server):
    """Start from an empty metrics folder: old workers' files would be counted otherwise."""
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    for entry in _metrics_dir.iterdir():
        if entry.is_file() and entry.suffix == ".db":
            entry.unlink()


def child_exit(server, worker):
    """A dead worker's live gauges (served version, registry status) must stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir))


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
