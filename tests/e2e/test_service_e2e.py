"""The service as it runs in production: Gunicorn with several workers on 127.0.0.1, real HTTP.

Hot swap, pins, rollbacks and labels are checked on every worker: each response names its
version and worker (``X-Model-Version``, ``X-Worker-PID``), and each worker's metrics gauge
says which version it serves.
"""

import base64
import fcntl
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from images import encode, paper, render_user_digit, synthetic_digit, to_mode
from modelgen import publish_corrupt, publish_model
from server import REPO, metric_value
from shared.model_file import load_model
from shared.registry import Registry

from .conftest import ADMIN_TOKEN, POLL_INTERVAL, WORKERS

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VECTOR = {"inputs": [0.5] * 784}
# A worker sees a new version within one poll; loading it and a busy 2-core machine add to that.
CONVERGENCE_SLACK = 2.0


def post(server, path, **kwargs):
    return requests.post(server.url + path, timeout=30, **kwargs)


def assert_error(response, status, code=None):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    if code:
        assert body["code"] == code, body
    return body


def wait_for(condition, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


# routes and bodies ---------------------------------------------------------------------------------


def test_every_read_route_answers(live_service):
    url = live_service.url
    assert requests.get(url + "/healthz").json() == {"status": "ok"}
    ready = requests.get(url + "/readyz")
    assert ready.status_code == 200 and ready.json()["models"]["mnist"] == {"ready": True, "version": 2}
    assert [m["name"] for m in requests.get(url + "/models").json()["models"]] == ["iris", "mnist", "wine"]
    assert requests.get(url + "/models/mnist").json()["served_version"] == 2
    # Versions besides the served one are checked by the watcher soon after start.
    wait_for(lambda: requests.get(url + "/models/mnist/versions/1").json()["status"] == "available")
    assert requests.get(url + "/openapi.json").json()["openapi"] == "3.1.0"
    assert requests.get(url + "/docs").headers["Content-Type"].startswith("text/html")
    assert requests.get(url + "/").status_code == 200
    assert "scratchnet_requests_total" in requests.get(url + "/metrics").text


@pytest.mark.parametrize("fmt,mode", [("PNG", "RGBA"), ("JPEG", "RGB"), ("WEBP", "RGB"), ("BMP", "L"),
                                      ("GIF", "P"), ("TIFF", "I;16")])
def test_images_of_several_formats(live_service, fmt, mode):
    data = encode(to_mode(paper(synthetic_digit(1)), mode), fmt)
    response = post(live_service, "/predict", data=data, headers={"Content-Type": f"image/{fmt.lower()}"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == "7"
    assert response.headers["X-Model-Version"] == "2"


def test_every_kind_of_body(live_service):
    png = render_user_digit(synthetic_digit(0), "canvas_png")
    multipart = post(live_service, "/models/mnist/predict?top_k=2",
                     files=[("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))])
    assert [len(p["top_k"]) for p in multipart.json()["predictions"]] == [2, 2]
    b64 = post(live_service, "/predict", json={"images": [base64.b64encode(png).decode()]})
    assert b64.json()["predictions"][0]["label"] == "7"
    vectors = post(live_service, "/models/mnist/versions/1/predict", json={"inputs": [[0.1] * 784, [0.9] * 784]})
    assert len(vectors.json()["predictions"]) == 2 and vectors.headers["X-Model-Version"] == "1"
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).random((500, 11), dtype=np.float32))
    npy = post(live_service, "/models/wine/predict", data=buffer.getvalue(),
               headers={"Content-Type": "application/x-npy"})
    assert npy.status_code == 200 and len(npy.json()["predictions"]) == 500
    assert "value" in npy.json()["predictions"][0]


def test_a_large_npy_batch(live_service, service_registry):
    """31 MB of rows, received straight into NumPy's memory and checked in one pass: every row's
    answer is the model's own, and the connection serves the next batch."""
    x = np.random.default_rng(0).random((10_000, 784), dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, x)
    body = buffer.getvalue()
    session = requests.Session()
    for _ in range(3):  # one after another on the same connection
        response = session.post(live_service.url + "/models/mnist/versions/1/predict", data=body,
                                headers={"Content-Type": "application/x-npy"}, timeout=30)
        assert response.status_code == 200
    predictions = response.json()["predictions"]
    expected = load_model(Registry(service_registry).model_path("mnist", 1)).predict_proba(x)
    assert [p["index"] for p in predictions] == expected.argmax(axis=1).tolist()
    assert np.allclose([p["confidence"] for p in predictions], expected.max(axis=1), atol=2e-6)
    # Its speed (a target of 50 ms) is measured by bench/serve.py, not asserted here.


def test_error_statuses_over_http(live_service):
    url = live_service.url
    assert_error(requests.get(url + "/nope"), 404, "not_found")
    assert_error(requests.get(url + "/predict"), 405, "method_not_allowed")
    assert_error(post(live_service, "/predict", data=b"{", headers={"Content-Type": "application/json"}),
                 400, "malformed_json")
    assert_error(post(live_service, "/predict", data=b"xx", headers={"Content-Type": "text/plain"}), 415)
    assert_error(post(live_service, "/predict", data=b"xx", headers={"Content-Type": "image/png"}), 415,
                 "unsupported_image")
    assert_error(post(live_service, "/predict", json={"inputs": [1.0] * 783}), 422, "invalid_input")
    assert_error(post(live_service, "/models/nope/predict", json=VECTOR), 404, "model_not_found")


def test_body_limits_with_and_without_content_length(start_service, service_registry):
    server = start_service(service_registry, workers=1, env={"SCRATCHNET_MAX_BODY_BYTES": "100000"})
    assert_error(post(server, "/predict", data=b"\0" * 200_000, headers={"Content-Type": "image/png"}),
                 413, "payload_too_large")

    def chunks():
        for _ in range(20):
            yield b"\0" * 10_000

    response = post(server, "/predict", data=chunks(), headers={"Content-Type": "image/png"})
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error(response, 413, "payload_too_large")
    assert post(server, "/predict", json=VECTOR).status_code == 200


def test_readyz_is_503_with_an_empty_registry_and_admin_is_off_without_a_token(start_service, tmp_path):
    server = start_service(tmp_path / "empty", workers=1)
    ready = requests.get(server.url + "/readyz")
    assert ready.status_code == 503 and "holds no models" in ready.json()["reason"]
    assert requests.get(server.url + "/healthz").status_code == 200
    assert_error(post(server, "/models/mnist/unpin", headers=AUTH), 403, "admin_disabled")
    # A model published later is picked up without a restart.
    publish_model(tmp_path / "empty", "mnist")
    wait_for(lambda: requests.get(server.url + "/readyz").status_code == 200)


# hot swap ------------------------------------------------------------------------------------------


def test_hot_swap_under_load_drops_nothing_and_every_worker_converges(live_service, service_registry):
    publish_model(service_registry, "swap", favour=1)
    live_service.wait_until_served("swap", 1)
    stop = threading.Event()
    answers = []  # (sent, received, status, worker pid, version, label)

    def client():
        session = requests.Session()
        while not stop.is_set():
            sent = time.monotonic()
            response = session.post(live_service.url + "/models/swap/predict", json=VECTOR, timeout=30,
                                    headers={"Connection": "close"})
            label = response.json()["predictions"][0]["label"] if response.status_code == 200 else None
            answers.append((sent, time.monotonic(), response.status_code, response.headers.get("X-Worker-PID"),
                            response.headers.get("X-Model-Version"), label))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    published = time.monotonic()
    publish_model(service_registry, "swap", favour=2)
    took = live_service.wait_until_served("swap", 2, timeout=POLL_INTERVAL + 10)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()

    assert took <= POLL_INTERVAL + CONVERGENCE_SLACK, f"workers took {took:.2f} s to converge"
    assert answers and all(status == 200 for _, _, status, *_ in answers)
    assert all((version, label) in (("1", "1"), ("2", "2")) for *_, version, label in answers)
    by_worker = {}
    for sent, received, _, pid, version, _ in answers:
        by_worker.setdefault(pid, []).append((sent, received, version))
    assert len(by_worker) >= 2, "the load reached only one worker"
    for pid, seen in by_worker.items():
        # Once a worker has answered with v2, it never starts a request on v1 again: a v1
        # answer that arrives later must be a request that was already in flight.
        first_v2 = min((received for _, received, v in seen if v == "2"), default=None)
        if first_v2 is not None:
            assert all(sent < first_v2 for sent, _, v in seen if v == "1"), f"worker {pid} went back to v1"
        late = [v for sent, _, v in seen if sent > published + POLL_INTERVAL + CONVERGENCE_SLACK]
        assert set(late) <= {"2"}, f"worker {pid} still answered v1 after convergence"
    text = live_service.metrics()
    assert metric_value(text, "scratchnet_model_worker_swaps_total", model="swap") == WORKERS  # one per worker


def test_a_corrupt_version_is_refused_and_the_old_one_keeps_serving(live_service, service_registry):
    publish_model(service_registry, "corrupt")
    live_service.wait_until_served("corrupt", 1)
    publish_corrupt(service_registry, "corrupt")

    def refused_everywhere():
        text = live_service.metrics()
        return metric_value(text, "scratchnet_model_load_failures_total", model="corrupt", version="2") == WORKERS

    wait_for(refused_everywhere, timeout=POLL_INTERVAL + CONVERGENCE_SLACK + 3)
    time.sleep(3 * POLL_INTERVAL)  # more polls: the bad file is not parsed again
    text = live_service.metrics()
    assert metric_value(text, "scratchnet_model_load_failures_total", model="corrupt", version="2") == WORKERS
    assert metric_value(text, "scratchnet_model_version_failed", model="corrupt", version="2") == 1
    info = requests.get(live_service.url + "/models/corrupt").json()
    assert info["served_version"] == 1
    (status,) = [v["status"] for v in info["versions"] if v["version"] == 2]
    assert status.startswith("failed: ") and "npz" in status
    for _ in range(6):
        assert post(live_service, "/models/corrupt/predict", json=VECTOR).headers["X-Model-Version"] == "1"
    assert requests.get(live_service.url + "/readyz").status_code == 200


def test_a_client_asking_for_a_damaged_version_is_told_in_one_sentence_why_and_what_to_do(start_service, tmp_path):
    """A client that names a version whose model.npz cannot load gets the API's 503, the same from the native
    and the V2 routes, in one sentence that names what is wrong with the file and what to do about it: it read
    "... cannot be served: failed: not an .npz archive (...)." and nothing of what to do."""
    registry = tmp_path / "registry"
    publish_model(registry, "damaged")
    publish_corrupt(registry, "damaged")
    publish_corrupt(registry, "lost")  # no version of it serves
    server = start_service(registry, workers=2, poll_interval=POLL_INTERVAL)

    def status(path: str) -> str:
        info = requests.get(server.url + path, timeout=10)
        assert info.status_code == 200, info.text
        return info.json()["status"]

    damaged = ("/models/damaged/versions/2", "/models/lost/versions/1")
    wait_for(lambda: all(status(path).startswith("failed: ") for path in damaged),
             timeout=10 * POLL_INTERVAL + CONVERGENCE_SLACK)
    assert status(damaged[0]) == "failed: not an .npz archive (truncated or not a zip file)"
    expected = ("Version 2 of damaged cannot be served: its model.npz failed to load: not an .npz archive (truncated "
                "or not a zip file); ask for damaged without a version or label, which v1 answers, or publish a "
                "model that loads as a new version.")
    tensor = {"name": "image", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784}
    for _ in range(4):  # each worker answers alike
        for response in (post(server, "/models/damaged/versions/2/predict", json=VECTOR),
                         post(server, "/v2/models/damaged/versions/2/infer", json={"inputs": [tensor]}),
                         requests.get(server.url + "/v2/models/damaged/versions/2", timeout=30)):
            body = assert_error(response, 503, "version_failed")
            assert body["error"] == expected, response.request.url
    assert post(server, "/models/damaged/predict", json=VECTOR).headers["X-Model-Version"] == "1"
    body = assert_error(post(server, "/models/lost/versions/1/predict", json=VECTOR), 503, "version_failed")
    assert body["error"] == ("Version 1 of lost cannot be served: its model.npz failed to load: not an .npz archive "
                             "(truncated or not a zip file); publish a model that loads as a new version.")


def test_a_version_copied_in_place_counts_no_failure_while_it_is_written(start_service, tmp_path):
    """``cp big.npz models/m/2/model.npz`` writes the file where the workers read it: each poll found it
    half written and counted a failed load (scratchnet_model_load_failures_total, a failed version in
    /models and scratchnet_model_version_failed, on which alerts fire) until the copy ended. A failure now
    counts once the file has stayed as it was for a poll interval; a copy under way, changing every poll, is
    loading."""
    registry = tmp_path / "models"
    publish_model(registry, "copied")
    publish_model(tmp_path / "source", "copied")
    publish_model(tmp_path / "source", "copied", favour=3)
    whole = (tmp_path / "source" / "copied" / "2" / "model.npz").read_bytes()
    poll = 1.0  # a copy pausing longer than this between two writes looks finished
    server = start_service(registry, workers=2, poll_interval=poll)
    server.wait_until_served("copied", 1)
    (registry / "copied" / "2").mkdir()
    statuses = set()
    with open(registry / "copied" / "2" / "model.npz", "wb") as copy:  # as cp writes it, piece by piece
        for i in range(40):  # over 3 polls
            copy.write(whole[i * len(whole) // 40:(i + 1) * len(whole) // 40])
            copy.flush()
            time.sleep(0.075)
            if i % 8 == 4:  # the file still half written (its last piece comes at i = 39)
                info = requests.get(server.url + "/models/copied", timeout=10).json()
                assert info["served_version"] == 1
                statuses.update(v["status"] for v in info["versions"] if v["version"] == 2)
    assert statuses <= {"loading"}, statuses
    server.wait_until_served("copied", 2, timeout=poll + CONVERGENCE_SLACK)
    text = server.metrics()
    assert metric_value(text, "scratchnet_model_load_failures_total", model="copied") == 0
    assert metric_value(text, "scratchnet_model_version_failed", model="copied") == 0
    assert "cannot be served" not in server.log()


def answers_by_worker(server, path, n=24) -> dict[str, set[int]]:
    """``{worker pid: statuses}`` of ``n`` predictions on fresh connections, spread over the workers."""
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: post(server, path, json=VECTOR, headers={"Connection": "close"}),
                                  range(n)))
    answers = {}
    for response in responses:
        answers.setdefault(response.headers["X-Worker-PID"], set()).add(response.status_code)
    return answers


def test_a_removed_model_is_no_longer_served_by_any_worker(live_service, service_registry):
    publish_model(service_registry, "removed")
    live_service.wait_until_served("removed", 1)
    shutil.rmtree(service_registry / "removed")

    def gone_everywhere():
        answers = answers_by_worker(live_service, "/models/removed/predict")
        return len(answers) == WORKERS and all(statuses == {404} for statuses in answers.values())

    wait_for(gone_everywhere, timeout=POLL_INTERVAL + CONVERGENCE_SLACK + 3)
    assert_error(post(live_service, "/models/removed/predict", json=VECTOR), 404, "model_not_found")
    ready = requests.get(live_service.url + "/readyz")
    assert ready.status_code == 200 and "removed" not in ready.json()["models"]
    assert 'model="removed"' not in live_service.metrics()


def test_model_metrics_stay_bounded_across_swaps_and_deletions(live_service, service_registry):
    folder = service_registry / "pruned"
    for _ in range(4):  # a new version, used, then the one before deleted: a registry that keeps one
        version = publish_model(service_registry, "pruned")
        live_service.wait_until_served("pruned", version)
        assert post(live_service, "/models/pruned/predict", json=VECTOR).status_code == 200
        shutil.rmtree(folder / str(version - 1), ignore_errors=True)
    broken = publish_corrupt(service_registry, "pruned")
    wait_for(lambda: metric_value(live_service.metrics(), "scratchnet_model_version_failed",
                                  model="pruned", version=broken) == 1)
    shutil.rmtree(folder / str(broken))

    def only_the_served_version_reported():
        lines = [line for line in live_service.metrics().splitlines() if 'model="pruned"' in line]
        versions = {v for line in lines for v in re.findall(r'version="(\d+)"', line)}
        served = [line for line in lines if line.startswith("scratchnet_model_served_version")]
        return versions == {str(version)} and len(served) == WORKERS

    wait_for(only_the_served_version_reported, timeout=POLL_INTERVAL + CONVERGENCE_SLACK + 3)
    assert live_service.served_versions("pruned") == {pid: version for pid in live_service.worker_pids()}


def test_many_swaps_each_reach_every_worker(live_service, service_registry):
    """Twenty versions in a row are each served by every worker, and the last one answers.
    (That old versions are released is tests/test_service_store.py's weakref test; the RSS across
    swaps is measured by bench/soak.py.)"""
    for _ in range(20):
        version = publish_model(service_registry, "growing", hidden=512)
        live_service.wait_until_served("growing", version)
    response = post(live_service, "/models/growing/predict", json=VECTOR)
    assert response.status_code == 200 and response.headers["X-Model-Version"] == str(version)


# admin ---------------------------------------------------------------------------------------------


def test_pin_rollback_and_labels_through_the_admin_api(live_service, service_registry):
    for favour in (1, 2, 3):
        publish_model(service_registry, "admin", favour=favour)
    live_service.wait_until_served("admin", 3)

    assert_error(post(live_service, "/models/admin/versions/1/activate"), 401, "missing_token")
    assert_error(post(live_service, "/models/admin/versions/1/activate", headers={"Authorization": "Bearer no"}),
                 403, "wrong_token")

    pinned = post(live_service, "/models/admin/versions/1/activate", headers=AUTH)
    assert pinned.status_code == 200 and pinned.json()["pinned"] == 1
    live_service.wait_until_served("admin", 1, timeout=POLL_INTERVAL + CONVERGENCE_SLACK)
    assert {post(live_service, "/models/admin/predict", json=VECTOR).headers["X-Model-Version"]
            for _ in range(6)} == {"1"}
    assert_error(post(live_service, "/models/admin/rollback", headers=AUTH), 409, "nothing_to_roll_back_to")

    assert post(live_service, "/models/admin/unpin", headers=AUTH).json()["served_version"] == 3
    live_service.wait_until_served("admin", 3, timeout=POLL_INTERVAL + CONVERGENCE_SLACK)
    rolled = post(live_service, "/models/admin/rollback", headers=AUTH)
    assert rolled.status_code == 200 and rolled.json()["pinned"] == 2
    live_service.wait_until_served("admin", 2, timeout=POLL_INTERVAL + CONVERGENCE_SLACK)

    publish_corrupt(service_registry, "admin")  # v4
    body = assert_error(post(live_service, "/models/admin/versions/4/activate", headers=AUTH), 409,
                        "version_not_servable")
    assert "npz" in body["error"]

    label = requests.put(live_service.url + "/models/admin/labels/stable", json={"version": 1}, headers=AUTH)
    assert label.status_code == 200 and label.json()["labels"] == {"stable": 1}

    def label_everywhere():
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: post(live_service, "/models/admin/labels/stable/predict",
                                                     json=VECTOR, headers={"Connection": "close"}), range(12)))
        return all(r.status_code == 200 and r.headers["X-Model-Version"] == "1" for r in responses)

    assert label_everywhere()  # at once: a worker that has not seen the label yet reads serving.json again
    assert requests.delete(live_service.url + "/models/admin/labels/stable", headers=AUTH).status_code == 200
    assert_error(requests.delete(live_service.url + "/models/admin/labels/stable", headers=AUTH), 404)


def test_admin_calls_from_many_clients_and_a_burst_of_publishes_leave_every_worker_agreeing(
        live_service, service_registry):
    """Six admin clients pin, unpin, roll back and label at random (on every worker) while versions,
    broken ones among them, are published in a burst and a client predicts: no call fails with a
    server error, no broken version ever answers, and every worker then serves what serving.json says."""
    import json
    import random
    for seed in (1, 2):
        publish_model(service_registry, "storm", seed=seed)
    live_service.wait_until_served("storm", 2)
    broken, stop, answers, failures = set(), threading.Event(), [], []

    def predict():
        with requests.Session() as session:
            while not stop.is_set():
                r = session.post(live_service.url + "/models/storm/predict", json=VECTOR, timeout=30)
                if r.status_code != 200 or r.headers["X-Model-Version"] != str(r.json()["model"]["version"]):
                    failures.append((r.status_code, r.text[:200]))
                else:
                    answers.append(r.json()["model"]["version"])

    def administer(seed):
        rnd, codes = random.Random(seed), []
        with requests.Session() as session:
            for _ in range(15):
                op = rnd.choice(["activate", "unpin", "rollback", "label"])
                version = rnd.randint(1, 6)
                if op == "label":
                    r = session.put(live_service.url + "/models/storm/labels/stable", json={"version": version},
                                    headers={**AUTH, "Connection": "close"}, timeout=30)
                else:
                    path = f"/versions/{version}/activate" if op == "activate" else f"/{op}"
                    r = session.post(live_service.url + "/models/storm" + path,
                                     headers={**AUTH, "Connection": "close"}, timeout=30)
                codes.append((op, r.status_code, r.json().get("code")))
        return codes

    client = threading.Thread(target=predict)
    client.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            calls = pool.map(administer, range(6))
            for i in range(6):
                if i in (1, 4):
                    broken.add(publish_corrupt(service_registry, "storm"))
                else:
                    publish_model(service_registry, "storm", seed=10 + i)
            codes = [code for batch in calls for code in batch]
    finally:
        stop.set()
        client.join()
    assert not failures
    assert broken and not broken & set(answers)
    assert all(status < 500 for _, status, _ in codes), [c for c in codes if c[1] >= 500]
    assert {code for _, status, code in codes if status != 200} <= {
        "version_not_found", "version_not_servable", "nothing_to_roll_back_to"}

    state = json.loads((service_registry / "storm" / "serving.json").read_text())
    expected = state.get("pinned") or max(set(range(1, 9)) - broken)
    live_service.wait_until_served("storm", expected, timeout=POLL_INTERVAL + CONVERGENCE_SLACK)
    assert requests.post(live_service.url + "/models/storm/unpin", headers=AUTH, timeout=30).status_code == 200
    live_service.wait_until_served("storm", max(set(range(1, 9)) - broken),
                                   timeout=POLL_INTERVAL + CONVERGENCE_SLACK)


def test_a_v2_load_with_a_config_nested_too_deeply_is_a_400_and_changes_nothing(live_service):
    before = requests.get(live_service.url + "/models/mnist", timeout=30).json()["pinned"]
    response = post(live_service, "/v2/repository/models/mnist/load", headers=AUTH,
                    json={"parameters": {"config": "[" * 100_000 + "]" * 100_000}})
    assert response.status_code == 400 and "parameters.config is not valid JSON" in response.json()["error"]
    assert requests.get(live_service.url + "/models/mnist", timeout=30).json()["pinned"] == before

def test_an_admin_token_read_from_a_file_works_and_a_blank_one_leaves_admin_disabled(start_service, tmp_path):
    registry = tmp_path / "models"
    publish_model(registry, "mnist")
    # A secret mounted as a file (Docker, Kubernetes) ends in a newline; clients send the token without it.
    server = start_service(registry, workers=1, admin_token="file-token\n")
    assert post(server, "/models/mnist/unpin", headers={"Authorization": "Bearer file-token"}).status_code == 200
    server.stop()
    blank = start_service(registry, workers=1, admin_token="  \n")
    for token in ("", "x"):
        assert_error(post(blank, "/models/mnist/unpin", headers={"Authorization": f"Bearer {token}"}), 403,
                     "admin_disabled")


def test_admin_calls_never_write_through_a_model_folder_linking_outside_the_registry(start_service, tmp_path):
    registry, outside = tmp_path / "models", tmp_path / "elsewhere"
    publish_model(registry, "mnist")
    publish_model(outside, "linked")
    (registry / "linked").symlink_to(outside / "linked")
    server = start_service(registry, workers=1, admin_token=ADMIN_TOKEN)
    assert requests.get(server.url + "/models/linked").json()["served_version"] is None  # its versions are refused
    files_before = sorted(p.name for p in (outside / "linked").iterdir())
    assert_error(post(server, "/models/linked/unpin", headers=AUTH), 409, "model_outside_registry")
    for path in ("/v2/repository/models/linked/unload", "/v2/repository/models/linked/load"):
        response = post(server, path, headers=AUTH)
        assert response.status_code == 409 and "leads outside the registry" in response.json()["error"], response.text
    assert sorted(p.name for p in (outside / "linked").iterdir()) == files_before
    assert post(server, "/models/mnist/unpin", headers=AUTH).status_code == 200


# metrics -------------------------------------------------------------------------------------------


def test_metrics_are_summed_across_workers(live_service, service_registry):
    publish_model(service_registry, "counted", kind="vector")
    live_service.wait_until_served("counted", 1)
    body = {"inputs": [[1.0, 2.0, 3.0, 4.0]] * 3}

    def one(_):
        response = post(live_service, "/models/counted/predict", json=body, headers={"Connection": "close"})
        assert response.status_code == 200
        return response.headers["X-Worker-PID"]

    with ThreadPoolExecutor(6) as pool:
        pids = set(pool.map(one, range(30)))
    assert len(pids) >= 2, "the requests reached only one worker"
    text = live_service.metrics()
    assert metric_value(text, "scratchnet_predictions_total", model="counted", version="1") == 90
    assert metric_value(text, "scratchnet_inference_duration_seconds_count", model="counted", version="1") == 30
    served = live_service.served_versions("counted")
    assert set(served) == live_service.worker_pids() and set(served.values()) == {1}


def test_metrics_report_the_memory_and_cpu_time_of_the_master_and_each_live_worker(start_service, service_registry):
    """Whichever worker answers the scrape, process_* has one series per process (pid label) for
    the master and every live worker, with its real memory; a killed worker's series goes and its
    replacement's comes."""
    server = start_service(service_registry, workers=2)

    def resident() -> dict[int, float]:
        text = requests.get(server.url + "/metrics", headers={"Connection": "close"}, timeout=10).text
        [family] = [f for f in text_string_to_metric_families(text) if f.name == "process_resident_memory_bytes"]
        return {int(sample.labels["pid"]): sample.value for sample in family.samples}

    processes = {server.process.pid} | server.worker_pids()
    for _ in range(6):  # answered by either worker
        reported = resident()
        assert set(reported) == processes
        for pid, value in reported.items():
            assert abs(value - psutil.Process(pid).memory_info().rss) < 0.2 * value, pid
    killed = min(server.worker_pids())
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: killed not in server.worker_pids() and len(server.worker_pids()) == 2)
    wait_for(lambda: set(resident()) == {server.process.pid} | server.worker_pids())


def test_requests_in_flight_are_summed_over_the_live_workers(start_service, service_registry):
    """With 2 workers, a request held in one worker's view (its chunked body still arriving) is 1
    in flight whichever worker answers the scrape, and 0 once it is answered, once its client
    resets the connection, and once the worker holding it is killed: its count dies with it."""
    server = start_service(service_registry, workers=2)
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps(VECTOR).encode()
    head = (b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body))

    def scrape(_=None) -> tuple[int, float]:
        response = requests.get(server.url + "/metrics", headers={"Connection": "close"}, timeout=10)
        value = metric_value(response.text, "scratchnet_requests_in_flight", route="/models/<name>/predict")
        return int(response.headers["X-Worker-PID"]), value

    def held() -> socket.socket:
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(head + body[:10])  # the view waits for the rest of the chunk
        wait_for(lambda: scrape()[1] == 1)
        return sock

    answered = held()
    seen = {}
    with ThreadPoolExecutor(8) as pool:
        wait_for(lambda: seen.update(pool.map(scrape, range(8))) or len(seen) == 2)  # both workers answered
    assert set(seen) == server.worker_pids() and set(seen.values()) == {1}
    answered.sendall(body[10:] + b"\r\n0\r\n\r\n")
    with answered, answered.makefile("rb") as answer:
        assert answer.readline().startswith(b"HTTP/1.1 200 ")
    assert scrape()[1] == 0

    reset = held()
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.close()  # with a RST: the worker's read of the body fails
    wait_for(lambda: scrape()[1] == 0)

    with held() as orphaned:
        local = orphaned.getsockname()[1]
        [holder] = [pid for pid in server.worker_pids()
                    if any(c.raddr and c.raddr.port == local for c in psutil.Process(pid).net_connections("tcp"))]
        os.kill(holder, signal.SIGKILL)
        wait_for(lambda: holder not in server.worker_pids() and len(server.worker_pids()) == 2)
        assert scrape()[1] == 0


def test_workers_replaced_again_and_again_keep_every_count_and_the_metrics_folder_small(start_service, tmp_path):
    """A worker killed after each request (a crash loop, or Gunicorn's max_requests): every
    prediction stays counted, the count never drops while a scrape reads it, and the metrics
    folder does not gain two files per dead worker that every scrape has to read."""
    registry, folder = tmp_path / "registry", tmp_path / "metrics"
    publish_model(registry, "folded", kind="vector")
    server = start_service(registry, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    counts, stop = [], threading.Event()

    def scrape():
        while not stop.is_set():
            try:
                counts.append(metric_value(server.metrics(), "scratchnet_predictions_total", model="folded"))
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                pass  # sent to the worker just killed

    scraper = threading.Thread(target=scrape)
    scraper.start()
    kills = 12
    try:
        for _ in range(kills):
            response = post(server, "/models/folded/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]] * 3},
                            headers={"Connection": "close"})
            assert response.status_code == 200
            killed = int(response.headers["X-Worker-PID"])
            os.kill(killed, signal.SIGKILL)
            wait_for(lambda: killed not in server.worker_pids() and len(server.worker_pids()) == 2)
    finally:
        stop.set()
        scraper.join()

    kinds = ("counter_", "histogram_", "summary_", "gauge_max_")  # values that outlive their worker

    def lasting_files():
        return [path.name for path in folder.glob("*.db") if path.name.startswith(kinds)]

    # at most: one file per kind for each live worker and one for the exited workers' totals
    wait_for(lambda: len(lasting_files()) <= len(kinds) * 3, timeout=5)
    assert metric_value(server.metrics(), "scratchnet_predictions_total", model="folded") == 3 * kills
    assert metric_value(server.metrics(), "scratchnet_requests_total", route="/models/<name>/predict",
                        status="200") == kills
    assert counts and all(later >= earlier for earlier, later in zip(counts, counts[1:])), counts


def test_a_worker_left_unfolded_by_a_scrape_is_folded_after_a_reload(start_service, tmp_path):
    """A worker that exits while a scrape reads the metrics files keeps its files until the next
    worker exits. A reload (HUP) in between runs the configuration file again: that must not forget
    it, or its files stay for good, read by every scrape. The files of a live process that is no
    worker of this master (another master's, sharing the folder in a USR2 upgrade) are never folded."""
    registry, folder = tmp_path / "registry", tmp_path / "metrics"
    publish_model(registry, "folded", kind="vector")
    server = start_service(registry, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    response = post(server, "/models/folded/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]},
                    headers={"Connection": "close"})
    first = int(response.headers["X-Worker-PID"])
    server.metrics()  # a scrape makes the lock file scrapes share
    with open(folder / "metrics.lock", "rb") as scrape:
        fcntl.flock(scrape, fcntl.LOCK_SH)  # a slow scrape: the master cannot fold for now
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: first not in server.worker_pids() and len(server.worker_pids()) == 2)
        time.sleep(0.5)  # past the master's wait for the scrape
        assert (folder / f"counter_{first}.db").exists()
    before = set(server.worker_pids())
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: len(set(server.worker_pids()) - before) == 2 and len(server.worker_pids()) == 2, timeout=30)
    foreign = folder / f"counter_{os.getpid()}.db"  # this process: alive, and no worker of this master
    foreign.touch()
    second = min(server.worker_pids())
    os.kill(second, signal.SIGKILL)
    # Replaced only once the master has reaped it and folded what it could.
    wait_for(lambda: second not in server.worker_pids() and len(server.worker_pids()) == 2)
    wait_for(lambda: not (folder / f"counter_{first}.db").exists(), timeout=10)  # folded, not forgotten
    assert foreign.exists()
    assert metric_value(server.metrics(), "scratchnet_predictions_total", model="folded") == 1


def test_a_usr2_upgrade_of_a_service_run_as_python_m_gunicorn_takes_over(start_service, tmp_path):
    """docs/serving.md's binary upgrade: USR2 starts a new master and its workers beside the old ones, then
    TERM stops the old master, and the new one serves on. Started as ``python -m gunicorn`` (as here),
    the new master failed to import the standard library's ``http.server`` and exited."""
    registry = tmp_path / "registry"
    publish_model(registry, "upgraded", kind="vector")
    server = start_service(registry, workers=1)
    old_master = psutil.Process(server.process.pid)
    old_workers = set(server.worker_pids())
    server.process.send_signal(signal.SIGUSR2)

    def new_master():
        try:
            masters = [child for child in old_master.children() if child.pid not in old_workers]
            return masters[0] if masters and masters[0].children() else None
        except psutil.NoSuchProcess:  # one that exited at once
            return None

    upgraded = None
    try:
        wait_for(lambda: new_master() is not None and server.log().count("service started") >= 2, timeout=30)
        upgraded = new_master()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=15)
        new_workers = {worker.pid for worker in upgraded.children()}
        for _ in range(5):
            response = post(server, "/models/upgraded/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]})
            assert response.status_code == 200, response.text
            assert int(response.headers["X-Worker-PID"]) in new_workers
        assert "No module named" not in server.log()
    finally:
        for process in [upgraded] if upgraded else [p for p in old_master.children() if p.pid not in old_workers]:
            process.terminate()
            process.wait(timeout=15)


def test_a_worker_added_by_sigttin_is_refused_where_the_watcher_is_off(start_service, tmp_path):
    """Started with one worker (SCRATCHNET_WATCH=0 and the admin API on, as allowed), the service
    kept a second one that SIGTTIN asked for: a pin answered by one worker never reached the other.
    SIGTTOU then SIGTTIN is still one worker; with the watcher on, SIGTTIN adds one."""
    registry = tmp_path / "registry"
    publish_model(registry, "solo", kind="vector")
    server = start_service(registry, workers=1, admin_token="secret-token", env={"SCRATCHNET_WATCH": "0"})
    first = server.worker_pids()
    server.process.send_signal(signal.SIGTTIN)
    wait_for(lambda: "not adding a worker" in server.log())
    time.sleep(1.5)  # past the master's next look at its workers (once a second)
    assert server.worker_pids() == first
    assert ("not adding a worker: SCRATCHNET_WATCH is off with 2 workers and the admin API on: a pin, unpin, "
            "rollback or label change would reach only the worker that answers it") in server.log()
    assert post(server, "/models/solo/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]}).status_code == 200

    watched = start_service(registry, workers=1, admin_token="secret-token")
    watched.process.send_signal(signal.SIGTTIN)
    wait_for(lambda: len(watched.worker_pids()) == 2)
    assert "not adding a worker" not in watched.log()


def test_metrics_answer_while_a_worker_creates_its_files(start_service, service_registry, tmp_path):
    """A starting worker creates each metrics file empty and sizes it a moment later: a scrape at
    that moment failed with a 500 (seen while workers were replaced under scraping). The file is
    left here as such a worker leaves it, under a number no process can have (above pid_max)."""
    folder = tmp_path / "metrics"
    server = start_service(service_registry, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    assert post(server, "/models/iris/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]}).status_code == 200
    (folder / "counter_4194305.db").touch()
    response = requests.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"scratchnet_requests", "scratchnet_predictions"} <= families
    assert metric_value(response.text, "scratchnet_predictions_total", model="iris") == 1


def test_a_starting_worker_does_not_report_the_registry_unreadable(tmp_path):
    """``scratchnet_registry_up`` is the minimum over the live workers: a worker between making
    its metrics and its first look at the registry must not count, or each worker start read as
    "registry unreadable" for a moment (seen in scrapes while workers were replaced). Run as a
    worker does, with its values in the multiprocess folder."""
    script = ("import sys; from service.metrics import Metrics; metrics = Metrics(); "
              "metrics.observe_request('GET', '/healthz', 200, 0.001, None); "
              "sys.stdout.write(metrics.exposition({}).decode())")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                          env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert 'scratchnet_requests_total{method="GET",route="/healthz",status="200"} 1.0' in done.stdout
    assert "scratchnet_registry_up " not in done.stdout, done.stdout


def test_an_unloaded_model_is_served_by_no_worker_in_the_metrics_either(live_service, service_registry):
    """Unloaded, a model answers 503 and /models and /readyz say no version serves; each
    worker's served-version gauge says so too (it went on naming the version), until it is loaded."""
    publish_model(service_registry, "paused")
    live_service.wait_until_served("paused", 1)
    assert post(live_service, "/v2/repository/models/paused/unload", headers=AUTH).status_code == 200

    def unloaded_everywhere():
        answers = answers_by_worker(live_service, "/models/paused/predict")
        return len(answers) == WORKERS and all(statuses == {503} for statuses in answers.values())

    wait_for(unloaded_everywhere, timeout=POLL_INTERVAL + CONVERGENCE_SLACK + 3)
    assert requests.get(live_service.url + "/models/paused").json()["served_version"] is None
    assert requests.get(live_service.url + "/readyz").json()["models"]["paused"]["version"] is None
    wait_for(lambda: live_service.served_versions("paused") == {}, timeout=POLL_INTERVAL + CONVERGENCE_SLACK)
    text = live_service.metrics()
    assert metric_value(text, "scratchnet_model_served_version", model="paused") == 0
    assert len([line for line in text.splitlines()
                if line.startswith('scratchnet_model_served_version{model="paused"')]) == WORKERS

    assert post(live_service, "/v2/repository/models/paused/load", headers=AUTH).status_code == 200
    live_service.wait_until_served("paused", 1)
    assert metric_value(live_service.metrics(), "scratchnet_model_worker_swaps_total", model="paused") == 0


def test_a_model_loaded_through_one_worker_answers_at_once_from_every_worker(start_service, tmp_path):
    """As in Triton, a load's 200 means the model answers: a client infers, or asks whether it is
    ready, right after it, whichever worker takes that request, long before the next poll."""
    registry = tmp_path / "models"
    publish_model(registry, "paused")
    Registry(registry).update_serving("paused", lambda state: {**state, "unloaded": True})
    server = start_service(registry, workers=WORKERS, poll_interval=60, admin_token=ADMIN_TOKEN)
    answers = answers_by_worker(server, "/models/paused/predict")
    assert len(answers) == WORKERS and all(statuses == {503} for statuses in answers.values()), answers

    assert post(server, "/v2/repository/models/paused/load", headers=AUTH).status_code == 200
    answers = answers_by_worker(server, "/models/paused/predict")
    assert len(answers) == WORKERS and all(statuses == {200} for statuses in answers.values()), answers
    with ThreadPoolExecutor(6) as pool:
        ready = list(pool.map(lambda _: requests.get(server.url + "/v2/models/paused/ready", timeout=30,
                                                     headers={"Connection": "close"}), range(24)))
    assert {response.status_code for response in ready} == {200}
