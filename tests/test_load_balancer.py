"""docker/nginx.conf, the load balancer of `docker compose -f docker-compose.yml -f docker/compose.scale.yml`,
run by the nginx found on this machine in front of a real Gunicorn: what nginx answers itself. The
container's address of `api`, its resolver and its paths are replaced by local ones; nothing else is.
Without nginx here the test skips (`make system-deps` installs Debian's nginx-light; under CI it fails)."""

import shutil
import socket
import subprocess
import time

import pytest
import requests

from modelgen import publish_model
from server import REPO, ServiceProcess, raw_exchange
from skips import unavailable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local_config(folder, upstream: str, port: int) -> str:
    text = (REPO / "docker" / "nginx.conf").read_text()
    for old, new in [("resolver 127.0.0.11 valid=5s ipv6=off;", ""), ("http://api:8000", f"http://{upstream}"),
                     ("listen 8080;", f"listen 127.0.0.1:{port};"), ("/tmp/nginx.pid", f"{folder}/nginx.pid"),
                     ("/var/cache/scratchnet-lb", str(folder)), ("/tmp/nginx-", f"{folder}/")]:
        assert old in text, f"docker/nginx.conf no longer has {old!r}: update this test"
        text = text.replace(old, new)
    return text


@pytest.fixture
def balancer(tmp_path):
    """Start nginx with docker/nginx.conf in front of ``upstream``; yields a function that does so and
    returns the balancer's URL."""
    nginx = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if nginx is None:
        unavailable("no nginx here: install Debian's nginx-light (make system-deps)",
                    ", and make system-deps installs it")
    started = []

    def start(upstream: str) -> str:
        folder = tmp_path / f"nginx{len(started)}"
        folder.mkdir()
        port = _free_port()
        (folder / "nginx.conf").write_text(_local_config(folder, upstream, port))
        process = subprocess.Popen([nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", "stderr",
                                    "-g", "daemon off;"], stderr=subprocess.DEVNULL)
        started.append(process)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return f"http://127.0.0.1:{port}"
            assert process.poll() is None and time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def test_the_load_balancer_names_no_version_and_answers_its_own_errors_in_json(balancer, tmp_path):
    """nginx said "Server: nginx/1.22.1" on every answer and gave its HTML page, version and all,
    when no replica answered (502) or a request was one it would not pass on (400, 414, a header
    over its buffers): the SPEC's errors are always JSON, never an HTML page."""
    publish_model(tmp_path / "registry", "mnist", seed=1)
    with ServiceProcess(tmp_path / "registry", workers=1) as server:
        url = balancer(server.url.removeprefix("http://"))
        answer = requests.get(url + "/healthz", timeout=10)
        assert answer.status_code == 200 and answer.headers["Server"] == "nginx", answer.headers
        refusals = {
            "no replica": (requests.get(balancer(f"127.0.0.1:{_free_port()}") + "/models", timeout=10),
                           502, "bad_gateway"),
            "header too large": (requests.get(url + "/healthz", headers={"X-Big": "a" * 9000}, timeout=10),
                                 431, "request_header_fields_too_large"),
            "request line too long": (requests.get(url + "/" + "a" * 9000, timeout=10), 414, "uri_too_long"),
            "an error page asked for": (requests.get(url + "/lb-errors/502", timeout=10), 404, "not_found"),
        }
        for name, (answer, status, code) in refusals.items():
            assert answer.status_code == status, (name, answer.text)
            assert answer.headers["Content-Type"] == "application/json", (name, answer.headers)
            assert answer.json()["code"] == code and answer.json()["error"], (name, answer.text)
            assert "nginx/" not in answer.headers["Server"] + answer.text, (name, answer.headers, answer.text)
            assert answer.headers["Cache-Control"] == "no-store", (name, answer.headers)  # as the service's errors
            assert answer.headers["X-Content-Type-Options"] == "nosniff", (name, answer.headers)
        for request in (b"GARBAGE\r\n\r\n", b"GET /healthz HTTP/1.1\r\n\r\n"):
            head, body = raw_exchange(url, request, timeout=10)
            assert head.startswith(b"HTTP/1.1 400 ") and b"\r\nContent-Type: application/json" in head, head
            assert b"nginx/" not in head + body and b'"code": "bad_request"' in body, (head, body)
            assert b"\r\nCache-Control: no-store\r\n" in head and b"\r\nX-Content-Type-Options: nosniff" in head, head
