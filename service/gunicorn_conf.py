"""How the service runs in production::

    gunicorn -c service/gunicorn_conf.py "service.app:create_app()"

| variable                  | default        | meaning                                            |
| ------------------------- | -------------- | -------------------------------------------------- |
| SCRATCHNET_BIND           | 0.0.0.0:8000   | address to listen on                               |
| SCRATCHNET_WORKERS        | 2              | worker processes (one per core)                    |
| SCRATCHNET_THREADS        | 4              | threads per worker (gthread)                       |
| SCRATCHNET_TIMEOUT        | 30             | seconds a request may take before its worker is restarted |
| SCRATCHNET_NUMPY_THREADS  | 1              | BLAS/OpenMP threads per worker                     |
| PROMETHEUS_MULTIPROC_DIR  | a new temp dir | where workers write their metrics (emptied at start) |

Each worker builds its own app after the fork (no ``preload_app``), so its registry watcher
thread is started in the worker itself; threads started in the master would not survive the
fork. The service settings (``SCRATCHNET_REGISTRY`` ...) are read by the app: see service/config.py.
"""

import os
import shutil
import tempfile
from pathlib import Path

# Before any worker imports NumPy: one BLAS thread per worker, so that N workers on N cores do
# not each start N threads and fight over the cores.
_threads = os.environ.get("SCRATCHNET_NUMPY_THREADS", "1")
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_name, _threads)

# Before any worker imports prometheus_client: it picks its multiprocess value class at import.
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="scratchnet-metrics-")
_metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

bind = os.environ.get("SCRATCHNET_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("SCRATCHNET_WORKERS", "2"))
threads = int(os.environ.get("SCRATCHNET_THREADS", "4"))
worker_class = "gthread"
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
