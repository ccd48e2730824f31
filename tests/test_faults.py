"""Faults, against a real Gunicorn: a worker killed under load, the trainer killed while it
publishes, the registry folder taken away while serving, the admin routes' authentication, and
a short version of the soak benchmark (bench/soak.py).

The tests run as root, for whom ``chmod`` does not make a folder unreadable: the registry is
taken away by renaming it and by deleting it, which is what a failed mount or a careless clean-up
does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import psutil
import pytest
import requests

from images import encode, paper, synthetic_digit
from modelgen import publish_model
from server import REPO, ServiceProcess, metric_value, raw_exchange
from shared.registry import TMP_PREFIX, Registry

pytestmark = pytest.mark.slow

DIGIT = encode(paper(synthetic_digit(1)), "PNG")


def predict(url: str, session=None, headers: dict | None = None) -> requests.Response:
    poster = session or requests
    return poster.post(url + "/models/mnist/predict", data=DIGIT, headers={"Content-Type": "image/png", **(headers or {})},
                       timeout=30)


# a worker killed under load ------------------------------------------------------------------------


@dataclass
class Attempt:
    started: float
    ended: float
    ok: bool
    worker: int | None


def hammer(url: str, stop: threading.Event, attempts: list) -> None:
    """Predict back to back, one connection per request, so that a request is in flight on one
    worker only (a kept-alive connection would tie later requests to the worker that died)."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = predict(url, headers={"Connection": "close"})
            ok, worker = response.status_code == 200, int(response.headers["X-Worker-PID"])
        except requests.RequestException:
            ok, worker = False, None
        attempts.append(Attempt(started, time.monotonic(), ok, worker))


def when_dead(pid: int) -> float:
    """The moment ``pid`` has stopped running (a zombie or gone): SIGKILL is not instantaneous."""
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return time.monotonic()
        except psutil.NoSuchProcess:
            return time.monotonic()
        time.sleep(0.001)


def test_killed_worker_is_replaced_and_only_its_requests_in_flight_fail(tmp_path):
    publish_model(tmp_path, "mnist", seed=1)
    with ServiceProcess(tmp_path, workers=2, threads=4) as server:
        stop = threading.Event()
        attempts: list[Attempt] = []
        clients = [threading.Thread(target=hammer, args=(server.url, stop, attempts), daemon=True) for _ in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(1.5)
        before = server.worker_pids()
        victim = max(before, key=lambda pid: sum(a.worker == pid for a in attempts))
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        dead_at = when_dead(victim)
        replacement = None
        while replacement is None:
            new = server.worker_pids() - before
            replacement = new.pop() if new else None
            assert time.monotonic() - killed_at < 10, "the master did not replace the worker"
            time.sleep(0.01)
        while not any(a.worker == replacement for a in list(attempts)):
            assert time.monotonic() - killed_at < 10, "the new worker does not answer"
            time.sleep(0.01)
        back_at = min(a.ended for a in list(attempts) if a.worker == replacement)
        while sum(a.ok for a in list(attempts) if a.started > back_at) <= 20:  # load goes on after recovery
            assert time.monotonic() - killed_at < 20, "requests sent after the recovery are not answered"
            time.sleep(0.01)
        stop.set()
        for thread in clients:
            thread.join(timeout=35)
        assert len(server.worker_pids()) == 2
    failed = [a for a in attempts if not a.ok]
    in_flight = [a for a in attempts if a.started <= dead_at and a.ended > killed_at]
    # The kill happened under load, only requests in flight while the worker was dying failed,
    # and every request sent after it died was answered.
    assert in_flight, "no request was in flight when the worker was killed"
    assert all(a.started <= dead_at and a.ended > killed_at for a in failed), failed
    assert all(a.ok for a in attempts if a.started > dead_at)
    print(f"\nkill -9 of a worker under load: {len(failed)} of {len(in_flight)} requests in flight failed, "
          f"{len(attempts)} sent; the replacement answered {back_at - killed_at:.2f} s after the kill")


def stopped_log(server: ServiceProcess) -> str:
    """Everything ``server`` wrote, up to and including its master's last line."""
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=15)
    return server.log()


def test_json_logs_carry_gunicorns_own_lines_as_json_too(tmp_path):
    publish_model(tmp_path, "mnist", seed=1)
    with ServiceProcess(tmp_path, workers=2) as server:
        assert predict(server.url).status_code == 200
        os.kill(min(server.worker_pids()), signal.SIGKILL)  # the master logs it as an error
        deadline = time.monotonic() + 10
        while "SIGKILL" not in server.log() or server.log().count("service started") < 3:
            assert time.monotonic() < deadline, "no replacement worker:\n" + server.log()
            time.sleep(0.05)
        lines = stopped_log(server).splitlines()
    entries = [json.loads(line) for line in lines]  # every line, or this fails on the first that is not JSON
    assert all({"time", "level", "logger", "message", "pid"} <= set(entry) for entry in entries)
    gunicorn = [(entry["level"], entry["message"]) for entry in entries if entry["logger"] == "gunicorn.error"]
    messages = " | ".join(message for _, message in gunicorn)
    for said in ("Starting gunicorn", "Listening at: http://127.0.0.1:", "Booting worker", "Shutting down: Master"):
        assert said in messages
    assert any(level == "error" and "SIGKILL" in message for level, message in gunicorn)
    assert any(entry["logger"] == "scratchnet.access" for entry in entries)


TEXT_LINE = re.compile(r"^(\S+) (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (?:scratchnet|gunicorn)\.\S+ \[\d+\] \S")


def test_text_logs_put_gunicorns_own_lines_in_the_services_layout(tmp_path):
    """With SCRATCHNET_LOG_FORMAT=text, Gunicorn's lines ("[2026-12-03 06:03:40 +0000] [9165] [WARNING]")
    came between the service's ("2026-12-03T06:03:40.654Z INFO scratchnet.access [9161]"), in local
    time, so a reader needed two patterns."""
    publish_model(tmp_path, "mnist", seed=1)
    with ServiceProcess(tmp_path, workers=1, env={"SCRATCHNET_LOG_FORMAT": "text"}) as server:
        log = stopped_log(server)
    lines = log.splitlines()
    assert all(TEXT_LINE.match(line) for line in lines), [line for line in lines if not TEXT_LINE.match(line)]
    assert any(" INFO gunicorn.error " in line and "Starting gunicorn" in line for line in lines), lines


# A logfmt reader's view of a line: key=value pairs (a value bare or double-quoted), and quoted text it skips whole.
LOGFMT_TOKEN = re.compile(r'([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)|"(?:[^"\\]|\\.)*"|\S')


def test_text_logs_let_no_client_text_in_gunicorns_warning_read_as_fields(tmp_path):
    """Gunicorn's warning about a request line it refused quoted the client's text as Python does, in
    single quotes, which a logfmt reader does not take for quotes: its words read as fields of their own."""
    publish_model(tmp_path, "mnist", seed=1)
    with ServiceProcess(tmp_path, workers=1, env={"SCRATCHNET_LOG_FORMAT": "text"}) as server:
        head, _ = raw_exchange(server.url, b"GET /x request_id=forged status=200 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), head
        log = stopped_log(server)
    warnings = [line for line in log.splitlines() if " WARNING gunicorn.error " in line and "Invalid" in line]
    assert len(warnings) == 1 and "request_id=forged status=200" in warnings[0], log
    fields = [key for key, _ in LOGFMT_TOKEN.findall(warnings[0]) if key]
    assert "request_id" not in fields and "status" not in fields, warnings[0]


def test_text_logs_cut_gunicorns_warning_about_a_long_request_line_as_json_logs_do(tmp_path):
    """The JSON format cuts Gunicorn's warning to 250 characters; the text format kept the client's
    8 kB header name whole, a line longer than the 4,096 bytes a pipe writes whole."""
    publish_model(tmp_path, "mnist", seed=1)
    with ServiceProcess(tmp_path, workers=1, env={"SCRATCHNET_LOG_FORMAT": "text"}) as server:
        for request in (b"GET /x " + b"A" * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"B" * 8000 + b" C: 1\r\n\r\n"):
            head, _ = raw_exchange(server.url, request)
            assert head.startswith(b"HTTP/1.1 400 "), head
        log = stopped_log(server)
    warnings = [line for line in log.splitlines() if " WARNING gunicorn.error " in line and "Invalid" in line]
    assert len(warnings) == 2 and all(line.rstrip('"').endswith("...") for line in warnings), log
    assert all(len(line.encode()) < 1000 for line in warnings), [len(line) for line in warnings]


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_json_logs_stay_json_on_a_stderr_that_does_not_take_utf8(tmp_path, encoding):
    """With stderr in ASCII (PYTHONIOENCODING=ascii, a C locale before Python 3.7) or Latin-1, a
    character it cannot hold, or holds as a byte that is not UTF-8, is escaped as JSON escapes it."""
    registry = tmp_path / "modèles"  # in the service's own lines
    publish_model(registry, "mnist", seed=1)
    with ServiceProcess(registry, workers=1, env={"PYTHONIOENCODING": encoding}) as server:
        assert requests.get(server.url + "/models/café😀", timeout=10).status_code == 404  # in the access line
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=15)
        entries = [orjson.loads(line) for line in server.raw_log().splitlines()]  # UTF-8 JSON, every line
    assert any(entry.get("path") == "/models/café😀" for entry in entries)
    assert any(entry["message"].startswith(f"service started: registry {registry}") for entry in entries)


def test_a_worker_that_fails_to_boot_is_logged_in_json_lines_only(tmp_path):
    """Gunicorn printed a failed worker's error on stderr a second time, outside its log."""
    publish_model(tmp_path, "mnist", seed=1)
    server = ServiceProcess(tmp_path, workers=1, env={"GUNICORN_CMD_ARGS": "--threads 0"})  # a pool it cannot make
    status, log = server.failed_start()
    assert status == 3  # Gunicorn's "worker failed to boot"
    entries = [json.loads(line) for line in log.splitlines()]  # every line, or this fails on the first that is not
    failed = [entry for entry in entries if entry["message"] == "Exception in worker process"]
    assert failed and "max_workers must be greater than 0" in failed[0]["exception"]


def test_text_logs_are_in_utc(tmp_path):
    publish_model(tmp_path, "mnist", seed=1)
    with ServiceProcess(tmp_path, workers=1, env={"SCRATCHNET_LOG_FORMAT": "text", "TZ": "IST-5:30"}) as server:
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        log = stopped_log(server)
    times = [match[1] for match in map(TEXT_LINE.match, log.splitlines()) if match]  # Gunicorn's lines too
    assert len(times) >= 2
    for written in times:
        assert written.endswith("Z"), written
        logged_at = datetime.strptime(written, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert abs(logged_at.timestamp() - time.time()) < 60  # not 5 h 30 off


# a publisher killed while it publishes ----------------------------------------------------------------


def tiny_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    lines = ["a,b,c,d,label"] + [",".join(f"{v:.3f}" for v in row) + f",{label}" for row, label in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def train_command(csv: Path, registry: Path) -> list[str]:
    return [sys.executable, "-m", "trainer", "train", "--dataset", "csv", "--data-path", str(csv),
            "--target", "label", "--task", "classification", "--hidden", "8", "--epochs", "3",
            "--batch-size", "16", "--no-progress", "--publish", "--registry", str(registry), "--name", "tiny"]


def temporaries(registry: Path, name: str) -> list[Path]:
    folder = registry / name
    return sorted(folder.glob(TMP_PREFIX + "*")) if folder.is_dir() else []


# A publisher that stops inside Registry.publish, after writing a complete model.npz into its
# temporary folder and before the rename: killed there, deterministically.
STUCK_PUBLISHER = """
import sys, time
sys.path.insert(0, {tests!r})
from modelgen import model_parts
from shared.model_file import save_model
from shared.registry import Registry

def build(folder, version):
    arrays, manifest = model_parts("mnist", version, favour=3)
    save_model(folder / "model.npz", arrays, manifest)
    print("built", version, flush=True)
    time.sleep(600)

Registry({registry!r}).publish("mnist", build)
"""


def test_publisher_killed_mid_publish_leaves_no_partial_version(tmp_path):
    registry = tmp_path / "registry"
    publish_model(registry, "mnist", seed=1)
    with ServiceProcess(registry, workers=2) as server:
        # The trainer's CLI, killed once its model file is in the temporary folder.
        trainer = subprocess.Popen(train_command(tiny_csv(tmp_path / "tiny.csv"), registry), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not any((t / "model.npz").exists() for t in temporaries(registry, "tiny")):
            assert trainer.poll() is None, "the trainer finished before it could be killed"
            time.sleep(0.002)
        trainer.kill()
        trainer.wait()
        # A publisher stopped at a known point inside Registry.publish.
        code = STUCK_PUBLISHER.format(tests=str(REPO / "tests"), registry=str(registry))
        publisher = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert publisher.stdout.readline().split() == ["built", "2"]
        publisher.kill()
        publisher.wait()
        publisher.stdout.close()

        assert Registry(registry).versions("tiny") == [] and Registry(registry).versions("mnist") == [1]
        assert len(temporaries(registry, "tiny")) == 1 and len(temporaries(registry, "mnist")) == 1
        time.sleep(0.6)  # three polls: the service ignores the leftovers
        listing = requests.get(server.url + "/models", timeout=10).json()
        assert [m["name"] for m in listing["models"]] == ["mnist"]
        assert [v["version"] for v in listing["models"][0]["versions"]] == [1]
        assert predict(server.url).headers["X-Model-Version"] == "1"

        # The next publishes succeed, and the service picks them up.
        finished = subprocess.run(train_command(tmp_path / "tiny.csv", registry), cwd=REPO,
                                  capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr
        assert Registry(registry).versions("tiny") == [1]
        assert publish_model(registry, "mnist", seed=2) == 2
        server.wait_until_served("mnist", 2)
        server.wait_until_served("tiny", 1)


# the registry taken away ----------------------------------------------------------------------------


def registry_state(server: ServiceProcess) -> tuple[int, dict, float]:
    readyz = requests.get(server.url + "/readyz", timeout=10)
    return readyz.status_code, readyz.json(), metric_value(server.metrics(), "scratchnet_registry_up")


def wait_for(condition, timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_registry_taken_away_keeps_serving_from_memory_and_recovers(tmp_path):
    registry, away = tmp_path / "registry", tmp_path / "registry.away"
    publish_model(registry, "mnist", seed=1)
    with ServiceProcess(registry, workers=2) as server:
        answers: list[tuple[int, str]] = []
        stop = threading.Event()

        def client():
            with requests.Session() as session:
                while not stop.is_set():
                    response = predict(server.url, session)
                    answers.append((response.status_code, response.headers.get("X-Model-Version", "")))

        loop = threading.Thread(target=client, daemon=True)
        loop.start()
        try:
            # Renamed away (an unmounted volume): serving goes on from memory, readiness says why.
            registry.rename(away)
            wait_for(lambda: registry_state(server)[2] == 0, what="scratchnet_registry_up 0")
            time.sleep(0.6)  # the gauge is the lowest of the workers': let every worker poll
            status, report, _ = registry_state(server)
            assert status == 200 and report["models"]["mnist"] == {"ready": True, "version": 1}
            assert report["registry"]["ok"] is False and "does not exist" in report["registry"]["error"]
            assert "does not exist" in " ".join(requests.get(server.url + "/models/mnist", timeout=10).json()["problems"])
            publish_model(away, "mnist", seed=2)  # a retrain lands meanwhile
            time.sleep(0.5)
            assert predict(server.url).headers["X-Model-Version"] == "1"
            # Back: recovery is automatic, and the new version is picked up.
            away.rename(registry)
            wait_for(lambda: registry_state(server)[2] == 1, what="scratchnet_registry_up 1")
            server.wait_until_served("mnist", 2)
            assert registry_state(server)[1]["registry"] == {"path": str(registry), "ok": True, "error": None,
                                                             "unreadable_models": {}, "misnamed_folders": {}}
            # Deleted outright, then recreated with a new model: the same.
            for entry in sorted(registry.rglob("*"), reverse=True):
                entry.rmdir() if entry.is_dir() else entry.unlink()
            registry.rmdir()
            wait_for(lambda: registry_state(server)[2] == 0, what="scratchnet_registry_up 0 after deletion")
            state = registry_state(server)
            assert state[0] == 200, state
            publish_model(registry, "mnist", seed=3, favour=3)
            wait_for(lambda: registry_state(server)[2] == 1, what="scratchnet_registry_up 1 after re-creation")
            server.wait_until_served("mnist", 1)
            assert predict(server.url).json()["predictions"][0]["label"] == "3"
        finally:
            stop.set()
            loop.join(timeout=35)
    assert len(answers) > 30
    assert {status for status, _ in answers} == {200}, "a request failed while the registry was away"


def test_a_worker_started_while_the_registry_is_away_still_reports_every_series(tmp_path):
    """A worker started while the registry is away has never seen which models and versions it
    holds. The scrapes it answers must still report the predictions counted and the other
    worker's served version: they left out every model's series, so each one vanished from
    /metrics whenever that worker took the scrape and came back when the other did."""
    registry, away = tmp_path / "registry", tmp_path / "registry.away"
    publish_model(registry, "mnist", seed=1)
    with ServiceProcess(registry, workers=2) as server:
        for _ in range(5):
            assert predict(server.url).status_code == 200
        registry.rename(away)
        wait_for(lambda: registry_state(server)[2] == 0, what="scratchnet_registry_up 0")
        before = server.worker_pids()
        replaced = min(before)
        os.kill(replaced, signal.SIGTERM)
        wait_for(lambda: len(server.worker_pids() - before) == 1 and replaced not in server.worker_pids(),
                 what="a new worker")
        started = (server.worker_pids() - before).pop()
        survivor = (before - {replaced}).pop()
        answered_by_new: list[str] = []

        def scrape_from_new_worker() -> bool:
            response = requests.get(server.url + "/metrics", timeout=10)
            if response.headers["X-Worker-PID"] == str(started):
                answered_by_new.append(response.text)
            return bool(answered_by_new)

        wait_for(scrape_from_new_worker, timeout=30, what="a scrape answered by the new worker")
        text = answered_by_new[0]
        assert metric_value(text, "scratchnet_predictions_total", model="mnist", version=1) == 5, text
        assert metric_value(text, "scratchnet_model_served_version", model="mnist", pid=survivor) == 1, text


# admin authentication ----------------------------------------------------------------------------------


ADMIN_TOKEN = "Kx7-admin-token-for-tests"
ADMIN_ROUTES = [
    ("POST", "/models/mnist/versions/1/activate", None),
    ("POST", "/models/mnist/unpin", None),
    ("POST", "/models/mnist/rollback", None),
    ("PUT", "/models/mnist/labels/stable", {"version": 1}),
    ("DELETE", "/models/mnist/labels/stable", None),
    ("POST", "/v2/repository/models/mnist/unload", None),
    ("POST", "/v2/repository/models/mnist/load", None),
]


@pytest.fixture(scope="module")
def admin_registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("admin-registry")
    publish_model(root, "mnist", seed=1)
    publish_model(root, "mnist", seed=2)
    return root


def admin_call(server, method, path, body, authorization=None) -> tuple[int, str | None, requests.Response]:
    """``(status, error code, response)``; KServe V2 errors are ``{"error": ...}`` without a code."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = requests.request(method, server.url + path, json=body, headers=headers, timeout=10)
    code = response.json().get("code", None if path.startswith("/v2/") else "absent")
    return response.status_code, code, response


def test_admin_routes_need_the_right_bearer_token(admin_registry):
    refusals = {
        None: (401, "missing_token"),
        "": (401, "missing_token"),
        "Bearer": (401, "malformed_authorization"),
        "Bearer   ": (401, "malformed_authorization"),
        f"Basic {ADMIN_TOKEN}": (401, "malformed_authorization"),
        f"Token {ADMIN_TOKEN}": (401, "malformed_authorization"),
        "Bearer wrong": (403, "wrong_token"),
        f"Bearer {ADMIN_TOKEN[:-1]}": (403, "wrong_token"),
        f"Bearer {ADMIN_TOKEN}x": (403, "wrong_token"),
        f"Bearer {ADMIN_TOKEN.upper()}": (403, "wrong_token"),
        f"Bearer {ADMIN_TOKEN} {ADMIN_TOKEN}": (403, "wrong_token"),
    }
    with ServiceProcess(admin_registry, workers=2, admin_token=ADMIN_TOKEN) as server:
        for method, path, body in ADMIN_ROUTES:
            for authorization, (status, code) in refusals.items():
                got, got_code, response = admin_call(server, method, path, body, authorization)
                assert got == status and got_code in (code, None), (method, path, authorization, response.text)
                if status == 401:
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert Registry(admin_registry).read_serving("mnist") == {"pinned": None, "labels": {}}
        for method, path, body in ADMIN_ROUTES:
            status, _, response = admin_call(server, method, path, body, f"Bearer {ADMIN_TOKEN}")
            assert status == 200, (method, path, response.text)
            time.sleep(0.6)  # every worker converges on serving.json (0.2 s poll) before the next call
        # On routes that are not admin routes a token, right or wrong, changes nothing.
        for authorization in (f"Bearer {ADMIN_TOKEN}", "Bearer wrong", "Basic x"):
            headers = {"Authorization": authorization}
            assert requests.get(server.url + "/models", headers=headers, timeout=10).status_code == 200
            assert predict(server.url, headers=headers).status_code == 200
        assert ADMIN_TOKEN not in server.log()  # never logged


def test_a_malformed_authorization_line_does_not_put_the_token_in_the_log(admin_registry):
    """A header line without a colon ("Authorization Bearer <token>", a client that built its head by
    hand) was quoted whole in Gunicorn's warning, token and all; it is refused as malformed and the
    log does not show it, only the line's first word, so that the line can be found."""
    lines = [f"Authorization Bearer {ADMIN_TOKEN}", f"Authorization=Bearer {ADMIN_TOKEN}",
             f"authorization bearer {ADMIN_TOKEN.lower()}", "X-Trace on"]
    with ServiceProcess(admin_registry, workers=2, admin_token=ADMIN_TOKEN) as server:
        for line in lines:
            request = f"POST /models/mnist/unpin HTTP/1.1\r\nHost: x\r\n{line}\r\n\r\n".encode()
            head, body = raw_exchange(server.url, request)
            assert head.startswith(b"HTTP/1.1 400 "), (head + body)[:300]
            error = json.loads(body)
            assert error["code"] == "invalid_header" and "A header line is malformed" in error["error"], error
        wait_for(lambda: server.log().count("Invalid request from") == len(lines), what="Gunicorn's warnings")
        log = server.log()
        assert ADMIN_TOKEN not in log and ADMIN_TOKEN.lower() not in log
        shown = re.findall(r"a header line without a colon, starting '([^']*)' \(the rest not shown\)", log)
        assert sorted(shown) == ["Authorization", "Authorization", "X-Trace", "authorization"], log


def token_pieces_in(text: str, token: str, size: int = 4) -> set[str]:
    """The pieces of ``size`` characters of ``token`` that ``text`` shows, in any case."""
    return {token[i:i + size] for i in range(len(token) - size + 1) if token[i:i + size].lower() in text.lower()}


def test_no_piece_of_the_token_reaches_gunicorns_warning(admin_registry):
    """A token split by a line break ("Bearer ab:cd" CRLF "EFGHSECRET") left its second half on a line that
    Gunicorn quoted as a header name; a token with a colon on a line without one ("Authorization Bearer ab:cd...")
    was quoted up to that colon. Neither the warning nor the answer shows any of it now, and a harmless header
    name is still named."""
    token = "ab:cdEFGHSECRET/PA:RT"
    lines = ["Authorization: Bearer ab:cd\r\nEFGHSECRET/PA:RT", "Authorization: Bearer ab:cd\r\nEFGHSECRET",
             "Authorization: Bearer ab:cdefgh\r\nSECRET/pa: RT", f"Authorization Bearer {token}",
             f"authorization=bearer {token}", "X-HARMLESS"]
    with ServiceProcess(admin_registry, workers=1, admin_token=token) as server:
        for line in lines:
            head, body = raw_exchange(server.url, f"POST /models/mnist/unpin HTTP/1.1\r\nHost: x\r\n{line}\r\n\r\n"
                                      .encode())
            assert head.startswith(b"HTTP/1.1 400 "), (line, head, body)
            assert json.loads(body)["code"] == "invalid_header", body
            if "earer" in line:
                assert b"earer ab" not in body.lower(), body
        wait_for(lambda: server.log().count("Invalid request from") == len(lines), what="Gunicorn's warnings")
        log = server.log()
        assert not token_pieces_in(log, token) and "earer ab" not in log.lower(), log
        assert "Invalid HTTP Header: '(not shown)'" in log and "'Authorization (not shown)'" in log
        assert "Invalid HTTP Header: 'X-HARMLESS'" in log


def test_a_request_timed_out_before_a_thread_took_it_logs_its_path_without_the_query(admin_registry):
    """The access line of a request whose body stopped arriving before a thread took it logged the whole target,
    its query too ("?token=<admin token>"), where every other access line logs the path alone."""
    token = "Qz8vR2mX7kLp4Wn9"
    with ServiceProcess(admin_registry, workers=1, admin_token=token, env={"SCRATCHNET_CLIENT_TIMEOUT": "1"}) as server:
        assert requests.post(f"{server.url}/models/mnist/unpin?token={token}", timeout=10).status_code == 401
        head, _ = raw_exchange(server.url, f"POST /models/mnist/unpin?token={token} HTTP/1.1\r\nHost: x\r\n"
                               "Content-Length: 10\r\n\r\n".encode())
        assert head.startswith(b"HTTP/1.1 408 "), head
        wait_for(lambda: '"status":408' in server.log(), what="the 408's access line")
        lines = [json.loads(line) for line in server.log().splitlines() if '"path":' in line]
        assert [(line["path"], line["status"]) for line in lines] == [("/models/mnist/unpin", 401),
                                                                      ("/models/mnist/unpin", 408)], lines
        assert not token_pieces_in(server.log(), token)


def test_admin_routes_are_disabled_without_a_configured_token(admin_registry):
    with ServiceProcess(admin_registry, workers=1) as server:
        for method, path, body in ADMIN_ROUTES:
            for authorization in (None, "Bearer anything", "Bearer "):
                status, code, response = admin_call(server, method, path, body, authorization)
                assert status == 403 and code in ("admin_disabled", None), (method, path, response.text)
                assert "SCRATCHNET_ADMIN_TOKEN" in response.json()["error"]


def test_admin_token_is_compared_in_constant_time(tmp_path, monkeypatch):
    """The given token goes through hmac.compare_digest (whose time does not depend on where the
    first differing byte is), and its answer alone decides."""
    from service import api
    from service.app import create_app

    publish_model(tmp_path, "mnist", seed=1)
    app = create_app({"registry": tmp_path, "watch": False, "admin_token": ADMIN_TOKEN})
    app.extensions["scratchnet"].store.refresh()
    client = app.test_client()
    compare_digest = api.hmac.compare_digest
    compared = []

    def recording(given, token):
        compared.append((given, token))
        return compare_digest(given, token)

    monkeypatch.setattr(api.hmac, "compare_digest", recording)
    for given, status in ((ADMIN_TOKEN, 200), ("wrong", 403)):
        response = client.post("/models/mnist/unpin", headers={"Authorization": f"Bearer {given}"})
        assert response.status_code == status, response.get_data(as_text=True)
    assert compared == [(ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode()), (b"wrong", ADMIN_TOKEN.encode())]
    monkeypatch.setattr(api.hmac, "compare_digest", lambda given, token: False)
    response = client.post("/models/mnist/unpin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 403, "the token was accepted although compare_digest said it differs"
    assert response.get_json()["code"] == "wrong_token"


def test_a_version_deleted_since_the_last_poll_is_neither_pinned_nor_labelled(tmp_path):
    for favour in (1, 2, 3):
        publish_model(tmp_path, "mnist", favour=favour)
    # The worker polls again only in an hour: its records and memory are of before the deletion.
    with ServiceProcess(tmp_path, workers=1, poll_interval=3600, admin_token=ADMIN_TOKEN) as server:
        version_2 = requests.post(server.url + "/models/mnist/versions/2/predict", data=DIGIT,
                                  headers={"Content-Type": "image/png"}, timeout=10)
        assert version_2.status_code == 200  # now in the worker's memory
        shutil.rmtree(tmp_path / "mnist" / "2")
        for method, path, body in (("POST", "/models/mnist/versions/2/activate", None),
                                   ("PUT", "/models/mnist/labels/stable", {"version": 2}),
                                   ("POST", "/v2/repository/models/mnist/load", {"parameters": {"version": 2}})):
            status, _, response = admin_call(server, method, path, body, f"Bearer {ADMIN_TOKEN}")
            assert status == 404 and "no version 2" in response.json()["error"], (path, response.text)
        assert Registry(tmp_path).read_serving("mnist") == {"pinned": None, "labels": {}}
        status, _, response = admin_call(server, "POST", "/models/mnist/versions/1/activate", None,
                                         f"Bearer {ADMIN_TOKEN}")
        assert status == 200 and response.json()["served_version"] == 1


def test_a_deleted_pinned_version_gets_the_same_answer_from_every_worker_old_or_new(tmp_path):
    """The pinned version's folder deleted: the workers that had it answered from memory for good, a worker
    started since (here one replacing a killed one) answered 503; the answers alternated behind one address."""
    for favour in (1, 2):
        publish_model(tmp_path, "mnist", favour=favour)
    with ServiceProcess(tmp_path, workers=2, poll_interval=0.2, admin_token=ADMIN_TOKEN) as server:
        status, _, _ = admin_call(server, "POST", "/models/mnist/versions/1/activate", None, f"Bearer {ADMIN_TOKEN}")
        assert status == 200
        server.wait_until_served("mnist", 1)
        shutil.rmtree(tmp_path / "mnist" / "1")
        before = server.worker_pids()
        os.kill(min(before), signal.SIGKILL)
        wait_for(lambda: len(server.worker_pids() - before) == 1, what="a worker replacing the one killed")
        wait_for(lambda: "scratchnet_model_served_version" in server.metrics() and server.served_versions("mnist")
                 == {}, what="no worker serving the deleted pinned version")
        answers = {}
        for _ in range(200):  # new connections, until both workers have answered: which one accepts is the kernel's
            response = requests.post(server.url + "/models/mnist/predict", data=DIGIT,
                                     headers={"Content-Type": "image/png", "Connection": "close"}, timeout=10)
            answers.setdefault(response.headers["X-Worker-PID"], set()).add(
                (response.status_code, response.json().get("code")))
            if len(answers) == 2:
                break
        assert len(answers) == 2 and all(said == {(503, "model_not_ready")} for said in answers.values()), answers


# the soak, short -----------------------------------------------------------------------------------------


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", REPO / "bench" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def test_short_soak_has_no_failures():
    """15 s of mixed traffic with a new version every 3 s: every valid request is answered, every
    bad one gets its status, no worker is lost and every new version is served. (Memory, latency
    and how fast a swap converges are bench/soak.py's measurements, not asserted here.)"""
    soak = load_soak()
    with tempfile.TemporaryDirectory(prefix="scratchnet-soak-") as tmp:
        registry = soak.prepare_registry(None, Path(tmp))
        summary = soak.soak(registry, duration=15, swap_every=3, clients=6, warmup=4, log=lambda line: None)
    assert soak.problems(summary, performance=False) == []
    assert summary["versions_published"] >= 4
    assert set(summary["by_kind"]) == {"image", "upload", "base64", "vector", "batch", "bad"}
