"""A real Gunicorn running the service, for end-to-end tests.

    from server import ServiceProcess

    with ServiceProcess(registry_dir, workers=3, admin_token="secret-token") as server:
        response = requests.post(server.url + "/predict", json={"inputs": [...]})
        server.worker_pids()        # the live worker processes
        server.served_versions("mnist")   # {pid: version} from each worker's metrics gauge
        server.log()                # everything the service wrote (JSON lines)

It runs ``gunicorn -c service/gunicorn_conf.py "service.app:create_app()"`` exactly as
production does, bound to 127.0.0.1 on a port the kernel picks (no race for a free port),
and ``start()`` returns once every worker has built its app. Settings go through the
environment: ``poll_interval`` (default 0.2 s for tests), ``admin_token``, and any
``SCRATCHNET_*`` variable in ``env``; ``limits`` sets resource limits (``{resource.RLIMIT_NOFILE:
64}``, as ``ulimit -n 64`` would) and ``launcher`` is a command Gunicorn runs under (``unshare
...``). The pytest fixtures in tests/e2e/conftest.py wrap it.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from skips import needs_root

REPO = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
SERVED = re.compile(r'^scratchnet_model_served_version\{model="([^"]+)",pid="(\d+)"\} (\d+)\.0$', re.M)


class ServiceProcess:
    def __init__(self, registry: str | os.PathLike, *, workers: int = 3, threads: int | None = 4,
                 poll_interval: float = 0.2, admin_token: str | None = None, env: dict | None = None,
                 limits: dict[int, int] | None = None, launcher: list[str] | None = None):
        self.registry = Path(registry)
        self.limits = limits or {}
        self.launcher = launcher or []
        self.workers = workers
        self.environment = {
            "SCRATCHNET_REGISTRY": str(self.registry),
            "SCRATCHNET_BIND": "127.0.0.1:0",
            "SCRATCHNET_WORKERS": str(workers),
            **({"SCRATCHNET_THREADS": str(threads)} if threads is not None else {}),  # None: the configuration's default
            "SCRATCHNET_POLL_INTERVAL": str(poll_interval),
            "SCRATCHNET_GRACEFUL_TIMEOUT": "3",
            "SCRATCHNET_LOG_FORMAT": "json",
            **({"SCRATCHNET_ADMIN_TOKEN": admin_token} if admin_token else {}),
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.url = ""
        self._log_file = None

    # lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> "ServiceProcess":
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SCRATCHNET_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(self.environment)
        self._log_file = tempfile.NamedTemporaryFile(prefix="scratchnet-service-", suffix=".log", delete=False)
        command = [sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py", "service.app:create_app()"]
        self.process = subprocess.Popen(
            [*self.launcher, *command], cwd=REPO, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
            preexec_fn=self._set_limits if self.limits else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            log = self.log()
            match = LISTENING.search(log)
            if match and log.count("service started") >= self.workers:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"gunicorn did not start {self.workers} workers in {timeout} s:\n{self.log()}")

    def failed_start(self, timeout: float = 60) -> tuple[int, str]:
        """Start, expecting Gunicorn to stop by itself (as when a worker fails to boot): its exit
        status and everything it wrote."""
        try:
            self.start(timeout)
            raise AssertionError(f"gunicorn started:\n{self.log()}")
        except RuntimeError:
            return self.process.returncode, self.log()
        finally:
            self.stop()

    def _set_limits(self) -> None:  # in the child, before it runs Gunicorn
        for which, limit in self.limits.items():
            resource.setrlimit(which, (limit, limit))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_file is not None:
            self._log_file.close()
            Path(self._log_file.name).unlink(missing_ok=True)
            self._log_file = None

    def kill_master(self) -> None:
        """``kill -9`` the master, as systemd's stop timeout or the OOM killer does: it gets no exit to clean
        up in. Its workers exit by themselves within a second or so (``wait_until_ended``)."""
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # looking at it -----------------------------------------------------------------------------

    def log(self) -> str:
        return self.raw_log().decode("utf-8", errors="replace")

    def raw_log(self) -> bytes:
        """What the service wrote, as it wrote it (``log()`` replaces what is not UTF-8)."""
        return Path(self._log_file.name).read_bytes() if self._log_file is not None else b""

    def addresses(self) -> list[str]:
        """Every address Gunicorn listens on, as it logs them: ``http://127.0.0.1:PORT``, ``unix:PATH`` ..."""
        match = re.search(r"Listening at: (\S+) \(\d+\)", self.log())
        return match.group(1).split(",") if match else []

    def worker_pids(self) -> set[int]:
        return {child.pid for child in psutil.Process(self.process.pid).children()}

    def metrics(self) -> str:
        response = requests.get(self.url + "/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def served_versions(self, model: str) -> dict[int, int]:
        """``{worker pid: version}`` of ``model`` from each live worker's ``scratchnet_model_served_version``
        gauge (a worker that serves no version of it is left out)."""
        return {int(pid): int(version) for name, pid, version in SERVED.findall(self.metrics())
                if name == model and version != "0"}

    def wait_until_served(self, model: str, version: int, timeout: float = 10) -> float:
        """Wait until every worker serves ``version`` of ``model``; returns the seconds it took."""
        started = time.monotonic()
        while True:
            served = self.served_versions(model)
            pids = self.worker_pids()
            if pids and all(served.get(pid) == version for pid in pids):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"workers serve {served} of {model} (workers {pids}), not v{version}")
            time.sleep(0.02)


def wait_until_ended(processes: list[psutil.Process], timeout: float = 15) -> None:
    """Wait until every one of ``processes`` has exited (gone, or a zombie that no one has reaped yet)."""
    def running(process: psutil.Process) -> bool:
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while any(map(running, processes)):
        assert time.monotonic() < deadline, f"still running: {[p.pid for p in processes if running(p)]}"
        time.sleep(0.05)


def read_only(*folders: str | os.PathLike) -> list[str]:
    """A ``launcher`` whose command runs in a mount namespace of its own, where ``folders`` are
    read-only (as on a container's read-only root file system); nothing changes outside it."""
    needs_root("a read-only mount")
    mounts = " && ".join(f"mount --bind {path} {path} && mount -o remount,ro,bind {path}"
                         for path in map(shlex.quote, map(os.fspath, folders)))
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh"]


def metric_value(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in Prometheus text ``text``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            total += float(value)
    return total


def raw_exchange(url: str, request: bytes, *, close_after: bool = False, timeout: float = 30) -> tuple[bytes, bytes]:
    """Send ``request`` as raw bytes to the server at ``url`` (``http://host:port``), half-closing the
    connection after it when ``close_after``, and read the answer until the server closes: its head
    (status line and headers) and its body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        if close_after:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body
