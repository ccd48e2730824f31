"""How the service runs in production::

    gunicorn -c service/gunicorn_conf.py "service.app:create_app()"

| variable                  | default        | meaning                                            |
| ------------------------- | -------------- | -------------------------------------------------- |
| SCRATCHNET_BIND           | 0.0.0.0:8000   | addresses to listen on, separated by commas or spaces |
| SCRATCHNET_WORKERS        | 2              | worker processes (one per core)                    |
| SCRATCHNET_THREADS        | 2              | threads per worker (gthread)                       |
| SCRATCHNET_TIMEOUT        | 30             | seconds a worker may stop reporting to the master (hung) before it is restarted; requests run in threads, so a slow request or client does not count |
| SCRATCHNET_GRACEFUL_TIMEOUT | 10           | seconds a stopping worker gets to finish its requests |
| SCRATCHNET_CLIENT_TIMEOUT | 10             | seconds a client may make no progress, sending its request or reading the answer, before it is dropped (408 while its body arrives); 0: no limit |
| SCRATCHNET_NUMPY_THREADS  | cores          | BLAS/OpenMP threads per worker (large batches); overrides OMP_NUM_THREADS and the like |
| SCRATCHNET_MALLOC_ARENAS  | 2              | glibc malloc arenas per process (0: glibc's default) |
| SCRATCHNET_GUNICORN_LOG_LEVEL | info       | level of Gunicorn's own log (the app's: SCRATCHNET_LOG_LEVEL) |
| SCRATCHNET_CONTROL_SOCKET | 0              | 1: keep Gunicorn's control socket (one fixed path per user, off so services do not clash) |
| PROMETHEUS_MULTIPROC_DIR  | new, in TMPDIR | where workers write their metrics (emptied at start) |

Each worker builds its own app after the fork (no ``preload_app``), so its registry watcher
thread is started in the worker itself; threads started in the master would not survive the
fork. The service settings (``SCRATCHNET_REGISTRY`` ...) are read by the app: see service/config.py.
"""

import atexit
import ctypes
import errno
import fcntl
import json
import logging
import math
import os
import resource
import shutil
import socket
import stat
import struct
import sys
import tempfile
import threading
from pathlib import Path
from typing import NoReturn

from gunicorn import util as gunicorn_util

from service.binds import DEFAULT as DEFAULT_BIND
from service.binds import BindError, bind_addresses
from service.binds import parse as parse_bind
from service.logs import JsonFormatter, TextFormatter
from shared.registry import try_writing

# Every SCRATCHNET_* variable something in the project reads: any other is a misspelling, which
# would otherwise be ignored without a word (SCRATCHNET_ADMIN_TOKN=... leaves the admin API off).
KNOWN_VARIABLES = {
    "BIND", "WORKERS", "THREADS", "TIMEOUT", "GRACEFUL_TIMEOUT", "CLIENT_TIMEOUT", "NUMPY_THREADS",
    "MALLOC_ARENAS", "GUNICORN_LOG_LEVEL", "CONTROL_SOCKET", "OWN_METRICS_DIR",  # this file
    "REGISTRY", "DEFAULT_MODEL", "MODELS", "POLL_INTERVAL", "MAX_BODY_BYTES", "MAX_IMAGE_PIXELS",
    "MAX_REQUEST_PIXELS", "MAX_BATCH", "MAX_VECTOR_VALUES", "MAX_MODEL_BYTES", "CACHED_VERSIONS", "ADMIN_TOKEN",
    "CORS_ORIGINS", "LOG_FORMAT", "LOG_LEVEL", "WATCH",  # service/config.py
    "DATA_DIR", "CACHE", "MIRROR",  # the trainer
    "UID", "GID", "PORT", "HOST", "MODELS_DIR", "API_CPUS", "IMAGE_PREFIX",  # docker compose
    "DATASETS", "DOCKER_ENGINE_SCRIPT", "PYTHON_IMAGE", "KSERVE_PYTHON",  # the tests
}


def _number(name: str, default: str, minimum: float, kind=int, maximum: float | None = None):
    """``SCRATCHNET_<name>`` as a number of at least ``minimum`` (and at most ``maximum``), or exit with
    one line saying so (a traceback from the middle of Gunicorn's start-up named the worker class instead)."""
    text = os.environ.get(f"SCRATCHNET_{name}", default)
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        what = "a whole number" if kind is int else "a finite number"
        bounds = f"of at least {minimum:g}" if maximum is None else f"from {minimum:g} to {maximum:.0f}"
        _fatal(f"SCRATCHNET_{name}={text!r}: expected {what} {bounds}")
    return value


METRICS_DIR_PREFIX = "scratchnet-metrics-"
# In a folder this master made: locked (flock) by it for as long as it or a worker forked from it lives.
OWNER_LOCK = ".owner.lock"


def _new_metrics_dir() -> str:
    """A new folder in TMPDIR, or where Python's tempfile would make one when it is unset, or exit
    with one line saying what to do: a read-only root file system has no writable /tmp (tempfile's
    own error was a traceback), and a TMPDIR that is set but not writable is named rather than
    passed over for /tmp without a word."""
    tmpdir = os.environ.get("TMPDIR")
    try:
        folder = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX, dir=tmpdir or None)
    except OSError as error:
        where = f"TMPDIR={tmpdir}" if tmpdir else "TMPDIR unset"
        _fatal(f"no folder for the workers' metrics: {where}: {error.strerror}; mount a tmpfs at /tmp "
               "(docker run --tmpfs /tmp, compose: tmpfs: /tmp), point TMPDIR at a writable folder, or set "
               "PROMETHEUS_MULTIPROC_DIR to one")
    _lock_for_life(folder)
    return folder


def _lock_for_life(folder: str) -> None:
    """Lock ``folder``'s OWNER_LOCK for good: the descriptor is never closed, and the workers forked from
    this master hold it too (os.open's descriptors are not passed to programs started with exec), so the
    lock is released only once no process of this service is left, however it ended (kill -9 included).
    The file takes its name only once locked, so no other master can lock it first. Without it (no room
    for a file), the folder is left alone by other masters, as one made by an earlier version is."""
    locking = os.path.join(folder, OWNER_LOCK + ".new")
    try:
        descriptor = os.open(locking, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.rename(locking, os.path.join(folder, OWNER_LOCK))
    except OSError:
        pass


def _remove_stale_metrics_dirs(own: Path) -> int:
    """Remove the folders beside ``own`` that earlier masters made and could not remove, killed with
    kill -9 (systemd's stop timeout, the OOM killer): those whose OWNER_LOCK no process holds any more
    (flock, which holds across PID namespaces where a process number would not). A folder without that
    file (made by an earlier version, or by a master about to lock it), or one that cannot be read, locked
    or removed, is left as it is. Returns how many were removed."""
    removed = 0
    try:
        entries = [entry for entry in os.scandir(own.parent)
                   if entry.name.startswith(METRICS_DIR_PREFIX) and entry.name != own.name]
    except OSError:
        return 0
    for entry in entries:
        try:  # not through a link; O_NONBLOCK: a FIFO put there would block the start otherwise
            descriptor = os.open(os.path.join(entry.path, OWNER_LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if entry.is_dir(follow_symlinks=False) and stat.S_ISREG(os.fstat(descriptor).st_mode):
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: in use
                shutil.rmtree(entry.path)
                removed += 1
        except OSError:
            pass
        finally:
            os.close(descriptor)
    return removed


def _cannot_write(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` (made if missing), or None when one can (tried, as
    shared.registry.try_writing does: for root, a read-only mount says no where a folder's mode does not)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return error.strerror
    _, error = try_writing(folder)
    return error.strerror if error is not None else None


def _log_level(name: str, default: str) -> str:
    level = os.environ.get(f"SCRATCHNET_{name}", default)
    if level.lower() not in LOG_LEVELS:
        _fatal(f"SCRATCHNET_{name}={level!r}: expected one of {', '.join(LOG_LEVELS)}")
    return level.lower()


def _warn(message: str, level: int = logging.WARNING) -> None:
    """``message`` as a line of the service's log (a warning), which the service goes on to write: in its
    format (SCRATCHNET_LOG_FORMAT, checked later), since a line of plain text is not JSON."""
    formatter = TextFormatter() if os.environ.get("SCRATCHNET_LOG_FORMAT") == "text" else JsonFormatter()
    print(formatter.format(logging.LogRecord("scratchnet.config", level, __file__, 0, message, None, None)),
          file=sys.stderr)


def _fatal(message: str) -> NoReturn:
    """Exit with ``message`` as a critical line of the service's log (see _warn): printed as plain text in
    a JSON log, the one line saying why the service did not start was no event to a collector parsing it."""
    _warn(message, logging.CRITICAL)
    sys.exit(1)


for _variable in sorted(os.environ):
    if _variable.startswith("SCRATCHNET_") and _variable.removeprefix("SCRATCHNET_") not in KNOWN_VARIABLES:
        _warn(f"{_variable} is not a setting of scratchnet and is ignored (a misspelling?); the settings are "
              "listed in service/gunicorn_conf.py and service/config.py")

# Before any worker imports NumPy: as many BLAS threads as cores. OpenBLAS runs the small matrix
# products of ordinary requests (a few rows) on one thread whatever this says, so the extra
# threads only work on large batches, which then use every core: a 10,000-row batch is answered
# in ~60 % of the time one thread takes (docs/benchmarks.md). SCRATCHNET_NUMPY_THREADS, when set,
# holds for every library; unset, a library variable the environment sets (OMP_NUM_THREADS=1, as
# many images and orchestrators give) is left to the libraries, which read it as their fallback.
# Filling only the variables missing had OpenBLAS read its own, not the OMP_NUM_THREADS=1 given, and
# an OPENBLAS_NUM_THREADS in the environment overrule SCRATCHNET_NUMPY_THREADS.
_BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                 "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_threads = str(_number("NUMPY_THREADS", str(len(os.sched_getaffinity(0))), 1))
if "SCRATCHNET_NUMPY_THREADS" in os.environ or not any(_name in os.environ for _name in _BLAS_THREADS):
    os.environ.update(dict.fromkeys(_BLAS_THREADS, _threads))

# glibc gives every thread that allocates its own malloc arena (up to 8 per core) and keeps what
# each one has freed: with threaded workers serving large requests, that was most of a worker's
# memory growth (docs/reliability.md). Set here, in the master, the limit holds in every worker.
_arenas = _number("MALLOC_ARENAS", "2", 0, maximum=2**31 - 1)  # mallopt takes a C int
if _arenas > 0:
    try:
        ctypes.CDLL(None).mallopt(-8, _arenas)  # -8 is M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to set
        pass

# Before any worker imports prometheus_client: it picks its multiprocess value class at import.
# A folder made here is this master's to remove: SCRATCHNET_OWN_METRICS_DIR remembers that across
# a reload (HUP reads this file again, with PROMETHEUS_MULTIPROC_DIR already set).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["SCRATCHNET_OWN_METRICS_DIR"] = _new_metrics_dir()
_metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
if _reason := _cannot_write(_metrics_dir):  # else every worker failed at its first request, or at boot
    _fatal(f"PROMETHEUS_MULTIPROC_DIR={_metrics_dir}: {_reason}; point it at a writable folder (a tmpfs), "
           "or leave it unset for a new one in TMPDIR")
_own_metrics_dir = os.environ.get("SCRATCHNET_OWN_METRICS_DIR") == str(_metrics_dir)
_master_pid = os.getpid()


def _remove_own_metrics_dir() -> None:
    """The master's last act, however it ends (a failed bind included); workers leave it alone."""
    if _own_metrics_dir and os.getpid() == _master_pid:
        shutil.rmtree(_metrics_dir, ignore_errors=True)


atexit.register(_remove_own_metrics_dir)

# Import the service's modules (NumPy, Pillow, Flask, pydantic ...) here, once, after the settings
# above: workers are forked with them loaded, so a worker that dies is replaced in a fraction of a
# second rather than the ~2 s its imports take on a busy machine. The app itself is still built in
# each worker. New code therefore takes a restart of the master, not a HUP.
import service.app  # noqa: E402,F401
from gunicorn.glogging import Logger as GunicornLogger  # noqa: E402

from service.config import LOG_LEVELS, ConfigError, load_settings  # noqa: E402


class ServiceFormatLogger(GunicornLogger):
    """Gunicorn's own log (start, listening address, workers booted, stopped or timed out), logger
    ``gunicorn.error``, in the service's format (``formatter``), so that every line on stderr reads
    the same way. Its "Starting gunicorn" line waits for on_starting's checks, which need the settings
    Gunicorn applies after this file (the workers' number, the addresses): a refusal there is then the
    one line of the log, as a refusal of this file is, not a line after a start that never happened."""

    formatter: type[logging.Formatter]
    held_start: tuple | None = None

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            if getattr(handler, "_gunicorn", False):
                handler.setFormatter(self.formatter())

    def info(self, msg, *args, **kwargs):
        if isinstance(msg, str) and msg.startswith("Starting gunicorn"):
            self.held_start = (msg, args, kwargs)
        else:
            super().info(msg, *args, **kwargs)

    def release_start(self) -> None:
        """Write the held "Starting gunicorn" line: the checks have passed."""
        if self.held_start is not None:
            msg, args, kwargs = self.held_start
            self.held_start = None
            super().info(msg, *args, **kwargs)


class JsonGunicornLogger(ServiceFormatLogger):
    """SCRATCHNET_LOG_FORMAT=json: every line one JSON object."""

    formatter = JsonFormatter


class TextGunicornLogger(ServiceFormatLogger):
    """SCRATCHNET_LOG_FORMAT=text: one layout, UTC time, level, logger, pid, for every line."""

    formatter = TextFormatter


try:  # every service setting checked once, here, rather than in each worker after binding
    _settings = load_settings()
except ConfigError as _error:
    _fatal(str(_error))

_bind = os.environ.get("SCRATCHNET_BIND", DEFAULT_BIND)
try:  # Gunicorn's own answer to a bad address: five failed binds, or a line not in the log's format
    bind = bind_addresses(_bind)
except BindError as _error:
    _fatal(f"SCRATCHNET_BIND={_bind!r}: {_error}")
workers = _number("WORKERS", "2", 1)
# Two threads per worker overlap one request's network I/O with another's computing; more only
# contend for the GIL (a canvas image cost 2.0 ms of CPU at 2 threads, 2.4-3.0 ms at 4, and p99
# latency rose with it). Slow clients are a buffering proxy's job (docs/reliability.md).
threads = _number("THREADS", "2", 1)
worker_class = "service.worker.FairThreadWorker"  # gthread that leaves new connections to a free worker
timeout = _number("TIMEOUT", "30", 1)
graceful_timeout = _number("GRACEFUL_TIMEOUT", "10", 0)
# Read by service/worker.py. A socket refuses a longer timeout: every request failed with a 500.
_number("CLIENT_TIMEOUT", "10", 0, float, maximum=threading.TIMEOUT_MAX)
# Each connection is a file descriptor, besides the ~20 a worker holds itself (its listening sockets,
# heartbeat file, metrics files, a model file being read): past RLIMIT_NOFILE, accept() fails
# (EMFILE). Connections beyond this many wait in the listen queue, for this worker or another. An
# explicit --worker-connections that cannot fit is refused when the master starts (on_starting).
_open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
if _open_files != resource.RLIM_INFINITY:
    worker_connections = min(1000, max(_open_files // 2, _open_files - 100))  # 1000: Gunicorn's default
keepalive = 5
preload_app = False
accesslog = None  # the app writes its own structured access log
errorlog = "-"
# Gunicorn's own lines in the service's format too (above)
logger_class = JsonGunicornLogger if _settings.log_format == "json" else TextGunicornLogger
loglevel = _log_level("GUNICORN_LOG_LEVEL", "info")
proc_name = "scratchnet"
# Each worker's heartbeat file, which Gunicorn makes in TMPDIR otherwise: in memory, and found on a
# read-only root file system (where Docker still mounts a tmpfs at /dev/shm).
worker_tmp_dir = "/dev/shm" if _cannot_write(Path("/dev/shm")) is None else str(_metrics_dir)
# Gunicorn's control socket has one default path per user: several services (tests) would clash.
_control_socket = os.environ.get("SCRATCHNET_CONTROL_SOCKET", "0")
if _control_socket not in ("0", "1"):  # "true" read as off without a word
    _fatal(f"SCRATCHNET_CONTROL_SOCKET={_control_socket!r}: expected 0 or 1")
control_socket_disable = _control_socket != "1"


# Imported only now: service/worker.py reads SCRATCHNET_CLIENT_TIMEOUT, checked above.
from service.worker import json_error  # noqa: E402

gunicorn_util.write_error = json_error  # workers are forked from this process and keep it


def _check_worker_connections(connections: int) -> None:
    """Exit with one line when Gunicorn's ``--worker-connections`` (or GUNICORN_CMD_ARGS), which it
    applies after reading this file, is not below the open-files limit: a worker runs out of files
    before it holds that many, and then cannot accept a connection or open a model file."""
    if _open_files != resource.RLIM_INFINITY and connections >= _open_files:
        _fatal(f"--worker-connections {connections} is not below the open-files limit of {_open_files} "
               "(ulimit -n): every connection is an open file, besides the ~20 a worker holds itself; leave it "
               f"out (the default here is {worker_connections}) or raise the limit")


def _check_addresses_free(addresses: list[str], reuse_port: bool) -> None:
    """Exit with one line naming the address when one it is to listen on cannot be had: Gunicorn
    itself tries five times over five seconds and then says only "Can't connect". Sockets handed
    down (a USR2 re-exec, systemd) are already listening, by this service; with ``--reuse-port``
    a port may be shared on purpose."""
    if os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS") or reuse_port:
        return
    for address in addresses:
        parsed = parse_bind(address)
        if not isinstance(parsed, tuple) or parsed[1] == 0:
            continue
        host, port = parsed
        ipv6 = gunicorn_util.is_ipv6(host)
        try:
            with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Gunicorn binds
                probe.bind(parsed)
        except OSError as error:
            other = f"[{host}]" if ipv6 else host or "0.0.0.0"
            hint = {errno.EADDRINUSE: f": another program listens there (a scratchnet already running?); stop it, or "
                                      f"serve on another port, e.g. SCRATCHNET_BIND={other}:{port + 1 if port < 65535 else 8000}",
                    errno.EACCES: ": ports below 1024 need root; use a higher one such as 8000",
                    errno.EADDRNOTAVAIL: ": no interface of this machine has that address; use 127.0.0.1 (this machine "
                                         "only) or 0.0.0.0 (every interface)"}
            _fatal(f"cannot listen on {address}: {error.strerror or error}{hint.get(error.errno, '')}")


def _unwatched_workers(workers: int) -> str | None:
    """Each worker's watcher is what brings the others along after an admin call (a pin, unpin,
    rollback or label change): without it the change reached only the worker that answered, which
    said 200 while the others served on as before, for good. Why ``workers`` cannot run, or None."""
    if not _settings.watch and _settings.admin_enabled and workers > 1:
        return (f"SCRATCHNET_WATCH is off with {workers} workers and the admin API on: a pin, unpin, rollback or "
                "label change would reach only the worker that answers it")
    return None


def _check_watcher(workers: int) -> None:
    if problem := _unwatched_workers(workers):
        _fatal(f"{problem}. Turn the watcher on, run one worker (SCRATCHNET_WORKERS=1), or leave "
               "SCRATCHNET_ADMIN_TOKEN unset")


def nworkers_changed(server, new_value, old_value):
    """A worker more (SIGTTIN) is refused where on_starting refuses that many: Gunicorn keeps the
    workers it has and its log says why."""
    if old_value is not None and new_value > old_value and (problem := _unwatched_workers(new_value)):
        server._num_workers = old_value  # the property's setter would call this hook again
        server.log.error("not adding a worker: %s. Turn the watcher on to run more than one", problem)


def on_starting(server):
    """Refuse connections the open-files limit cannot hold and addresses that cannot be had
    (above) before the log says Gunicorn starts (ServiceFormatLogger), then start from an empty metrics
    folder: old workers' files would be counted otherwise.
    A folder of its own is made beside those of killed masters, which it removes."""
    _check_worker_connections(server.cfg.worker_connections)
    _check_watcher(server.cfg.workers)
    _check_addresses_free(server.cfg.bind, server.cfg.reuse_port)
    if release_start := getattr(server.log, "release_start", None):  # absent under another --logger-class
        release_start()
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    if _own_metrics_dir and (server.cfg.uid, server.cfg.gid) != (os.geteuid(), os.getegid()):
        os.chown(_metrics_dir, server.cfg.uid, server.cfg.gid)  # --user/--group: the workers write its files
    for entry in _metrics_dir.iterdir():
        if entry.is_file() and entry.suffix == ".db":
            entry.unlink()
    if _own_metrics_dir and (removed := _remove_stale_metrics_dirs(_metrics_dir)):
        server.log.info("removed %d stale metrics folder%s from %s, left by masters killed with kill -9 (or out of "
                        "memory)", removed, "" if removed == 1 else "s", _metrics_dir.parent)


def child_exit(server, worker):
    """A dead worker's live gauges (served version, registry status) must stop counting, and its
    counts, times and last-prediction times join the totals of the exited workers (service/metrics.py),
    with those of the workers whose files a scrape kept from being folded when they exited."""
    from prometheus_client import multiprocess

    from service.metrics import fold_exited_process

    _report_unanswered(server, worker.pid)
    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir))
    # Kept on the arbiter, which outlives a reload (HUP runs this file again). Only the workers this
    # master reaped: the folder may hold another master's live ones (a USR2 upgrade sharing it).
    unfolded = server.__dict__.setdefault("scratchnet_unfolded", set())
    unfolded.add(worker.pid)
    for pid in sorted(unfolded):
        if pid in server.WORKERS:  # the number was given to a new worker, which now owns the files
            unfolded.discard(pid)
            continue
        try:
            folded = fold_exited_process(_metrics_dir, pid)
        except Exception:  # an exception here would stop the master: the files stay, still counted
            server.log.exception("could not fold the metrics files of worker %s", pid)
            folded = True
        if not folded:  # scrapes hold the files: the next worker to exit folds it too
            break
        unfolded.discard(pid)


def _requests_in_flight(pid: int) -> int:
    """The requests worker ``pid``'s app had started on and not answered (``scratchnet_requests_in_flight``,
    from its live gauges' file, which its exit leaves as it was)."""
    from prometheus_client.mmap_dict import MmapedDict

    try:
        values = MmapedDict.read_all_values_from_file(str(_metrics_dir / f"gauge_livesum_{pid}.db"))
        return round(sum(value for key, value, *_ in values if json.loads(key)[0] == "scratchnet_requests_in_flight"))
    except (OSError, ValueError, struct.error):  # no file (no request yet), or one still being sized
        return 0


def _report_unanswered(server, pid: int) -> None:
    """A worker that ended with requests in flight (killed, or cut off by the graceful timeout of a stop)
    left their clients without an answer: Gunicorn's log said nothing of them, and a stop that cut them
    read as a clean one."""
    if count := _requests_in_flight(pid):
        stopping = not server.LISTENERS  # the master closes them when it stops, not on a reload
        wait = server.cfg.graceful_timeout
        why = (f": the stop cut them off (SIGTERM waits SCRATCHNET_GRACEFUL_TIMEOUT, {wait:g} s, for them; SIGINT "
               "and SIGQUIT do not)") if stopping else ""
        server.log.warning("worker %s ended with %d request%s in flight, unanswered%s", pid, count,
                           "" if count == 1 else "s", why)


def on_exit(server):
    """The workers still running when a stop's graceful timeout ended were killed, unreaped."""
    for pid in list(server.WORKERS):
        _report_unanswered(server, pid)
    _remove_own_metrics_dir()


def pre_exec(server):
    """USR2 starts a new master from the environment Gunicorn saved, which after a reload (HUP)
    holds this master's metrics folder: the new master must make its own, not share this one and
    lose it when this master exits. It runs the command line this master was started with, which for
    ``python -m gunicorn`` Gunicorn saved as the path of its ``__main__.py``: run that way, the
    package's folder comes first on the module path, and its ``http`` hid the standard library's
    (the new master exited with "No module named 'http.server'"). Run as a module again, it does not."""
    args = server.START_CTX["args"]
    if len(args) > 1 and Path(args[1]).name == "__main__.py" and Path(args[1]).parent.name == "gunicorn":
        args[1:2] = ["-m", "gunicorn"]
    env = server.cfg.env_orig
    if env.get("SCRATCHNET_OWN_METRICS_DIR") and env.get("PROMETHEUS_MULTIPROC_DIR") == env["SCRATCHNET_OWN_METRICS_DIR"]:
        del env["PROMETHEUS_MULTIPROC_DIR"], env["SCRATCHNET_OWN_METRICS_DIR"]
