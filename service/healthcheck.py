"""The image's HEALTHCHECK: ``python -m service.healthcheck`` asks ``GET /healthz`` of the service
on the first address of ``SCRATCHNET_BIND`` it can reach from inside the container, and exits 0
when the answer is 200, else 1 with one line saying why (Docker keeps it in the health log).
``python -m service.healthcheck /readyz`` asks readiness instead (docker-compose.yml), and its line
says why the service is not ready: a traceback ending in "HTTP Error 503" did not.

Any address Gunicorn listens on can be checked: ``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` alone
(port 8000), ``unix:PATH`` (HTTP over the unix socket); a wildcard host is reached through the
loopback address of its family."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys

from service.binds import DEFAULT, BindError, bind_addresses, parse
from shared.text import shortened

LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # what reaches a wildcard bind
TIMEOUT = 2.0  # seconds; Docker's own limit (--timeout) is 3
PATHS = ("/healthz", "/readyz")


def probe_target(address: str) -> tuple[str, int] | str | None:
    """Where a client on the same host reaches a server listening on ``address``: ``(host, port)``,
    a unix socket's path, or None when nothing can be reached from outside the server (``fd://``,
    a descriptor it inherited; port 0, one the kernel picks)."""
    parsed = parse(address)
    if isinstance(parsed, int):
        return None
    if isinstance(parsed, str):
        return parsed
    host, port = parsed
    return (LOOPBACK.get(host, host), port) if port else None


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def health_status(target: tuple[str, int] | str, timeout: float = TIMEOUT, path: str = "/healthz") -> tuple[int, str]:
    """The status of ``GET path`` at ``target`` (a ``probe_target``), and the reason its JSON answer gives
    ("reason" of /readyz, "error" of another; empty when it gives none)."""
    if isinstance(target, str):
        connection = UnixConnection(target, timeout)
    else:
        connection = http.client.HTTPConnection(*target, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        try:
            answer = json.loads(response.read(65536))
        except ValueError:
            answer = None
        reason = (answer.get("reason") or answer.get("error")) if isinstance(answer, dict) else None
        return response.status, " ".join(reason.split()) if isinstance(reason, str) else ""
    finally:
        connection.close()


def shown(target: tuple[str, int] | str) -> str:
    if isinstance(target, str):
        return f"unix:{target}"
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(args: list[str]) -> int:
    if len(args) > 1 or (args and args[0] not in PATHS):
        print(f"unhealthy: usage: python -m service.healthcheck [{' | '.join(PATHS)}], not {' '.join(args)!r}")
        return 1
    path = args[0] if args else "/healthz"
    try:
        targets = [probe_target(address) for address in bind_addresses(os.environ.get("SCRATCHNET_BIND", DEFAULT))]
    except BindError as error:
        print(f"unhealthy: SCRATCHNET_BIND: {error}")
        return 1
    target = next((target for target in targets if target is not None), None)
    if target is None:
        print("healthy as far as can be told: SCRATCHNET_BIND has no address to connect to (only fd:// or port 0)")
        return 0
    try:
        status, reason = health_status(target, path=path)
    except (OSError, http.client.HTTPException) as error:
        print(f"unhealthy: GET {path} on {shown(target)}: {error or type(error).__name__}")
        return 1
    if status != 200:
        print(f"unhealthy: GET {path} on {shown(target)} answered {status}" + (f": {shortened(reason, 1000)}"
                                                                              if reason else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
