"""Connections and the workers' threads (service/worker.py): keep-alive connections opened at
once are spread over the workers, a client that goes silent in the middle of a request does
not keep a thread, a worker out of file descriptors keeps serving, and a worker's threads are
all started at boot.

Gunicorn's own threaded worker accepts whatever it wakes up for: 8 connections opened together
(a load generator, a proxy's pool) went to one of two workers in about one burst in three, which
then served everything on one core. Leaving new connections to the others while a worker's threads
were busy was not enough: connections opened before any request was sent made no worker busy, and
31 of 32 went to one (wrk at 32 clients: one run in five on one core). Here each burst of 8 or 32
connections, opened together and then used as ``wrk`` does, must reach both workers, none with more
than three quarters of them.
"""

import contextlib
import http.client
import io
import json
import os
import resource
import signal
import socket
import threading
import time

import numpy as np
import pytest
import requests

from images import encode, paper, synthetic_digit
from server import ServiceProcess, metric_value

pytestmark = pytest.mark.slow

BURSTS = 6
REQUESTS_PER_CONNECTION = 15
DIGIT_PNG = encode(paper(synthetic_digit(3)), "PNG")


def address(url: str) -> tuple[str, int]:
    """(host, port) of a server's ``http://host:port`` URL."""
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def burst(url: str, count: int) -> list[str]:
    """Open ``count`` keep-alive connections at once, send requests on each, return the worker
    PID that answered each connection (every answer on one connection must come from one PID)."""
    body = json.dumps({"inputs": [0.5] * 784})
    connections = [http.client.HTTPConnection(*address(url), timeout=30) for _ in range(count)]
    for connection in connections:  # all opened before any request, as wrk opens them
        connection.connect()
    pids: list[set[str]] = [set() for _ in connections]
    start = threading.Barrier(count)

    def client(i: int) -> None:
        connection = connections[i]
        start.wait()
        for _ in range(REQUESTS_PER_CONNECTION):
            connection.request("POST", "/models/mnist/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            pids[i].add(response.getheader("X-Worker-PID"))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for connection in connections:
        connection.close()
    assert all(len(p) == 1 for p in pids), "a keep-alive connection moved between workers"
    return [p.pop() for p in pids]


@pytest.mark.parametrize("connections", [8, 32])
def test_simultaneous_keep_alive_connections_reach_every_worker(start_service, service_registry, connections):
    """Bursts of keep-alive connections opened at once spread over both workers. The bursts begin
    once each worker has answered a request: a worker's first answers are slow (its caches are
    cold), and in a burst at that moment the other one fairly takes most connections."""
    server = start_service(service_registry, workers=2, threads=2)
    workers = set(server.worker_pids())
    answered: set[int] = set()
    for _ in range(200):  # new connections go to either worker: both have answered long before this runs out
        response = requests.post(server.url + "/models/mnist/predict", json={"inputs": [0.5] * 784},
                                 headers={"Connection": "close"}, timeout=30)
        answered.add(int(response.headers["X-Worker-PID"]))
        if answered == workers:
            break
    assert answered == workers
    for _ in range(BURSTS):
        owners = burst(server.url, connections)
        counts = {pid: owners.count(pid) for pid in set(owners)}
        assert {int(pid) for pid in counts} <= workers
        assert len(counts) == 2, f"all {connections} connections went to one worker: {counts}"
        assert max(counts.values()) <= connections * 3 // 4, f"connections per worker: {counts}"


def stall(url: str, request: bytes) -> socket.socket:
    """Send ``request`` (part of one) and go silent, keeping the connection open."""
    sock = socket.create_connection(address(url), timeout=30)
    sock.sendall(request)
    return sock


def test_clients_that_go_silent_mid_request_do_not_hold_the_service(start_service, service_registry):
    """One worker with one thread: each stalled request holds the only thread until the client
    timeout drops it, after which the next request is answered. Without the timeout the health
    check below would never be answered (its own 30 s timeout is only a hang guard)."""
    server = start_service(service_registry, workers=1, threads=1, env={"SCRATCHNET_CLIENT_TIMEOUT": "1"})
    workers = server.worker_pids()
    head = (b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
            b"Content-Length: 60000000\r\n\r\n")
    form = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"X-Request-ID: stalled-form\r\nContent-Length: 5000\r\n\r\n"
            b"--b\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n")
    silent = [stall(server.url, head + b"\x93NUM"),                 # a body that stops after 4 bytes
              stall(server.url, form + b"\x89PNG"),                 # a form upload that stops in its file
              stall(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")]  # headers that never end
    try:
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200
        answers = []
        for upload in silent[:2]:  # a stalled upload is told why, and that the connection closes, which it does
            answer = upload.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in answer, answer[:300]
            answers.append(answer.partition(b"\r\n\r\n")[2])
            assert b"\r\nConnection: close\r\n" in answer, answer[:300]  # 5000 bytes: it said keep-alive
            assert upload.recv(65536) == b""
        assert silent[2].recv(65536) == b""  # an incomplete request line and headers: just closed
        # The same answer whether a thread read the body (60 MB) or the event loop gathered it (5000 bytes).
        assert answers[0] == answers[1] == (b'{"error":"The request body stopped arriving before its end; send it '
                                            b'again.","code":"request_timeout","details":[]}\n'), answers
        assert "Traceback" not in server.log()  # logged in one line each, not as errors
        # Each under its route, naming the model, whether the app or the worker's event loop timed it out.
        timed_out = [json.loads(line) for line in server.log().splitlines() if '"status":408' in line]
        assert sorted((line["route"], line.get("model")) for line in timed_out) == [
            ("/models/<name>/predict", "mnist"), ("/predict", "mnist")], timed_out  # /predict's: the default
        # The one the event loop gathered and timed out keeps the client's request id, and its
        # real time; no thread worked on it, so the latency histogram leaves it out.
        (gathered,) = [line for line in timed_out if line["route"] == "/predict"]
        assert gathered["request_id"] == "stalled-form" and 1000 <= gathered["latency_ms"] < 20_000, gathered
        metrics = requests.get(server.url + "/metrics", timeout=30).text
        assert metric_value(metrics, "scratchnet_requests_total", route="/predict", status="408") == 1
        assert metric_value(metrics, "scratchnet_errors_total", route="/predict", model="mnist") == 1
        assert metric_value(metrics, "scratchnet_request_duration_seconds_count", route="/predict") == 0
        response = requests.post(server.url + "/models/mnist/predict", json={"inputs": [[0.5] * 784]}, timeout=30)
        assert response.status_code == 200 and server.worker_pids() == workers  # nothing was restarted
    finally:
        for sock in silent:
            sock.close()


def test_requests_that_come_slowly_hold_no_thread_until_they_have_come(start_service, service_registry):
    """One worker with one thread and the default 10 s client timeout: a thread read each of these
    requests, and each held the only thread for 10 s of silence (a byte, a request line, a body
    that stops), so a health check behind seven of them waited over a minute. They are gathered
    on the event loop, and the thread takes a request once it has come. The 5 s limit is a hang
    guard, not a speed measurement."""
    server = start_service(service_registry, workers=1, threads=1)
    upload = (b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
              b"Content-Length: %d\r\n\r\n" % len(DIGIT_PNG))
    slow = ([stall(server.url, b"G") for _ in range(4)]
            + [stall(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(2)]
            + [stall(server.url, upload + DIGIT_PNG[:100])])
    try:
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
        slow[4].sendall(b"\r\n")  # the rest of one request
        assert read_answer(slow[4]).startswith(b"HTTP/1.1 200 ")
        slow[6].sendall(DIGIT_PNG[100:])
        answer = read_answer(slow[6])
        assert answer.startswith(b"HTTP/1.1 200 ") and json.loads(answer.partition(b"\r\n\r\n")[2])["predictions"]
    finally:
        for sock in slow:
            sock.close()


def test_clients_that_keep_a_closed_connection_open_do_not_stop_the_worker(start_service, service_registry):
    """After an answer that ends the connection (``Connection: close``), the server half-closes
    it and waits for the client to close its side before closing (RFC 9112 section 9.6).
    Gunicorn waited on the worker's main thread, up to 2 s a connection, and the worker accepted
    and answered nothing meanwhile: behind 12 clients that keep such a connection open (urllib
    does until its response is read), a health check waited 24 s. Its 10 s limit below is that
    hang, not a speed measurement."""
    server = start_service(service_registry, workers=1, threads=1)
    held = [stall(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") for _ in range(12)]
    try:
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        for sock in held:  # each one answered in full, then ended by the server
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}\n'), answer
    finally:
        for sock in held:
            sock.close()


def test_connections_that_send_nothing_hold_no_thread(start_service, service_registry):
    """One worker with one thread: connections that never send a byte (browser preconnects, port
    scanners) wait on the event loop, not in the thread, so a request behind them is answered at
    once. Gunicorn's own threads wait 5 s for each one's first bytes; the 4 s limit on the health
    check below is that difference, not a speed measurement."""
    server = start_service(service_registry, workers=1, threads=1, env={"SCRATCHNET_CLIENT_TIMEOUT": "1"})
    idle = [socket.create_connection(address(server.url), timeout=30) for _ in range(2)]
    try:
        assert requests.get(server.url + "/healthz", timeout=4).status_code == 200
        # They wait as idle connections do (Gunicorn's keep-alive time, 5 s), not the client timeout
        # of a request under way, and are not logged as stalled requests.
        time.sleep(1.5)
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(idle[0]).startswith(b"HTTP/1.1 200 ")
        assert "sent no more of its request" not in server.log()
    finally:
        for sock in idle:
            sock.close()


def test_a_stopping_service_refuses_new_connections_while_it_finishes_old_ones(start_service, service_registry):
    """After SIGTERM, the workers finish the requests in flight (up to the graceful timeout, 15 s
    here) while a new connection is refused, which a client can retry elsewhere. A connection the
    kernel still accepts must be answered: Gunicorn left such connections waiting in the backlog
    until the worker exited, then reset them (the 5 s read limit below is that hang, not a speed
    measurement). Only the one queued in the instant the listener closes is reset, and the next
    connection is then refused."""
    server = start_service(service_registry, workers=2, threads=2,
                           env={"SCRATCHNET_CLIENT_TIMEOUT": "20", "SCRATCHNET_GRACEFUL_TIMEOUT": "15"})
    in_flight = stall(server.url, b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Type: application/x-npy\r\nContent-Length: 1000\r\n\r\n\x93NUM")
    try:
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200  # the stalled one is being read
        server.process.send_signal(signal.SIGTERM)
        in_flight.setblocking(False)
        while True:
            with pytest.raises(BlockingIOError):  # still in flight, unanswered: the service is stopping, not stopped
                in_flight.recv(1)
            try:
                late = socket.create_connection(address(server.url), timeout=5)
            except ConnectionRefusedError:
                break
            except ConnectionResetError:  # queued in the instant the listener closed: not left waiting
                continue
            with late:
                late.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                try:
                    answer = late.recv(100)
                except ConnectionResetError:
                    answer = None
            if answer is None:  # reset: queued as the listener closed, which then refuses the next connection
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(address(server.url), timeout=5).close()
                break
            assert answer.startswith(b"HTTP/1.1 "), "a connection accepted while stopping got no answer"
    finally:
        in_flight.close()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_requests_a_worker_ends_with_unanswered_are_logged(start_service, service_registry, how):
    """A stop whose requests outlast SCRATCHNET_GRACEFUL_TIMEOUT cuts them off unanswered, and so
    does a worker killed (kill -9): the log said only that the workers and the master exited, as
    after a clean stop (exit status 0), or that a worker was killed, with nothing of the clients
    left without an answer. The master now says how many requests each worker ended with in
    flight and, when a stop cut them, the setting that bounds a stop's wait."""
    server = start_service(service_registry, workers=1, threads=3,  # the third answers the scrapes
                           env={"SCRATCHNET_CLIENT_TIMEOUT": "60", "SCRATCHNET_GRACEFUL_TIMEOUT": "1"})
    worker = server.worker_pids().pop()
    head = (b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
            b"Content-Length: 60000000\r\n\r\n\x93NUM")  # read by a thread, in the app, and never finished
    stalled = [stall(server.url, head) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while metric_value(server.metrics(), "scratchnet_requests_in_flight", route="/models/<name>/predict") < 2:
            assert time.monotonic() < deadline, "the stalled requests never reached the app"
            time.sleep(0.05)
        if how == "stop":
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=30) == 0
            expected = (f"worker {worker} ended with 2 requests in flight, unanswered: the stop cut them off (SIGTERM "
                        "waits SCRATCHNET_GRACEFUL_TIMEOUT, 1 s, for them; SIGINT and SIGQUIT do not)")
        else:
            os.kill(worker, signal.SIGKILL)
            expected = f"worker {worker} ended with 2 requests in flight, unanswered"
            deadline = time.monotonic() + 30
            while expected not in server.log():
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
    finally:
        for sock in stalled:
            sock.close()
    lines = [json.loads(line) for line in server.log().splitlines() if expected in line]
    assert len(lines) == 1 and lines[0]["level"] == "warning", server.log()
    if how == "kill":
        assert "SCRATCHNET_GRACEFUL_TIMEOUT" not in lines[0]["message"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["stop", "reload"])
def test_a_small_body_still_arriving_when_the_graceful_wait_ends_is_answered(start_service, service_registry, sig):
    """A small body (under 1 MiB) is gathered on the worker's event loop before a thread takes it. One still
    arriving when a stop or a reload's SCRATCHNET_GRACEFUL_TIMEOUT (1 s here) ran out was dropped: the client
    read nothing (b''), and no access line or count said so. It is now answered 503 server_stopping, and
    logged and counted as the stop's, under its route."""
    server = start_service(service_registry, workers=1, threads=2,
                           env={"SCRATCHNET_CLIENT_TIMEOUT": "60", "SCRATCHNET_GRACEFUL_TIMEOUT": "1"})
    stalled = stall(server.url, b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\nX-Request-ID: cut-by-stop\r\n"
                                b"Content-Type: application/x-npy\r\nContent-Length: 5000\r\n\r\n\x93NUMPY\x01\x00v")
    try:
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200  # the stalled one has come
        server.process.send_signal(sig)
        answer = read_answer(stalled)
    finally:
        stalled.close()
    assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nX-Request-ID: cut-by-stop\r\n" in answer, answer
    assert answer.endswith(b'{"error":"The service stopped while the request body was arriving, and closed the '
                           b'connection; send the request again.","code":"server_stopping","details":[]}\n'), answer
    if sig == signal.SIGTERM:
        assert server.process.wait(timeout=30) == 0
    else:  # the new worker's scrape counts the old worker's answer
        deadline = time.monotonic() + 30
        while metric_value(server.metrics(), "scratchnet_requests_total", route="/models/<name>/predict",
                           status="503") != 1:
            assert time.monotonic() < deadline, server.metrics()
            time.sleep(0.05)
    (line,) = [json.loads(line) for line in server.log().splitlines() if '"request_id":"cut-by-stop"' in line]
    assert (line["status"], line["code"], line["route"], line.get("model")) == (
        503, "server_stopping", "/models/<name>/predict", "mnist"), line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_a_quick_shutdown_does_not_wait_for_a_client_stalled_mid_request(start_service, service_registry, sig):
    """Ctrl-C (SIGINT) and SIGQUIT stop Gunicorn at once, without the graceful wait. A worker's
    exit waited for every thread of its pool, so one blocked reading the body of a client that
    had stalled held the stop for the whole SCRATCHNET_GRACEFUL_TIMEOUT (30 s here; the 20 s
    below is only a hang guard), until the master killed the worker, logged as "was sent SIGKILL!
    Perhaps out of memory?"."""
    server = start_service(service_registry, workers=1, threads=2,
                           env={"SCRATCHNET_CLIENT_TIMEOUT": "60", "SCRATCHNET_GRACEFUL_TIMEOUT": "30"})
    stalled = stall(server.url, b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Type: application/x-npy\r\nContent-Length: 60000000\r\n\r\n\x93NUM")
    try:
        deadline = time.monotonic() + 30
        while metric_value(server.metrics(), "scratchnet_requests_in_flight", route="/models/<name>/predict") < 1:
            assert time.monotonic() < deadline, "the stalled request never reached the app"
            time.sleep(0.05)
        server.process.send_signal(sig)
        assert server.process.wait(timeout=20) == 0
    finally:
        stalled.close()
    assert "SIGKILL" not in server.log()


def test_requests_a_quick_shutdown_cuts_off_are_logged_as_the_stops(start_service, service_registry):
    """A quitting worker (Ctrl-C reaches each worker as SIGINT) shuts down the connections its threads
    hold: a body being read then ended early, and was logged and counted as the client's 400
    truncated_body, followed by "the client took 0 bytes of the answer", and an answer being written
    to a client was logged as one the client did not take. Each is now the stop's: the request whose
    body was cut is a 503 server_stopping, and an answer cut says the service stopped. The worker alone
    is stopped here, so that the master's next worker serves the metrics it folded in."""
    server = start_service(service_registry, workers=1, threads=4,
                           env={"SCRATCHNET_CLIENT_TIMEOUT": "60", "SCRATCHNET_GRACEFUL_TIMEOUT": "30"})
    worker = server.worker_pids().pop()
    stalled = [stall(server.url, b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\nX-Request-ID: cut-npy\r\n"
                                 b"Content-Type: application/x-npy\r\nContent-Length: 60000000\r\n\r\n\x93NUM"),
               stall(server.url, b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\nX-Request-ID: cut-chunked\r\n"
                                 b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"in")]
    batch = io.BytesIO()
    np.save(batch, np.full((10_000, 784), 0.5, dtype=np.float32))
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing: the long answer waits to be sent
    try:
        reader.connect(address(server.url))
        reader.sendall(b"POST /models/mnist/predict?top_k=10 HTTP/1.1\r\nHost: x\r\nX-Request-ID: unread\r\n"
                       b"Content-Type: application/x-npy\r\nContent-Length: %d\r\n\r\n" % len(batch.getvalue())
                       + batch.getvalue())
        deadline = time.monotonic() + 30
        while (metric_value(server.metrics(), "scratchnet_requests_in_flight", route="/models/<name>/predict") < 2
               or '"unread"' not in server.log()):
            assert time.monotonic() < deadline, "the requests never reached the app"
            time.sleep(0.05)
        os.kill(worker, signal.SIGINT)
        while server.log().count("service started") < 2:  # the master's next worker
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        metrics = server.metrics()
    finally:
        reader.close()
        for sock in stalled:
            sock.close()
    lines = {line.get("request_id"): line for line in map(json.loads, server.log().splitlines())
             if line["logger"] == "scratchnet.access"}
    for request_id in ("cut-npy", "cut-chunked"):
        line = lines[request_id]
        assert (line["status"], line["code"], line["level"]) == (503, "server_stopping", "warning"), line
    assert lines["unread"]["status"] == 200
    assert "the client took" not in server.log(), server.log()
    (cut,) = [line for line in map(json.loads, server.log().splitlines()) if line.get("bytes_sent") is not None]
    assert cut["message"].startswith("the service stopped and closed the connection after "), cut
    assert (cut["request_id"], cut["status"], cut["level"]) == ("unread", 200, "warning"), cut
    route = "/models/<name>/predict"
    assert metric_value(metrics, "scratchnet_requests_total", route=route, status="503") == 2
    assert metric_value(metrics, "scratchnet_errors_total", route=route, code="server_stopping") == 2
    assert metric_value(metrics, "scratchnet_errors_total", code="truncated_body") == 0
    assert metric_value(metrics, "scratchnet_answers_cut_total") == 0  # the clients' doing, and none was


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTTOU], ids=["SIGHUP", "SIGTTOU"])
def test_a_retired_worker_exits_when_its_graceful_timeout_ends(start_service, service_registry, sig):
    """A worker a reload (HUP) or SIGTTOU retires finishes its requests for SCRATCHNET_GRACEFUL_TIMEOUT
    (1 s here). One still held by a stalled client then logged "Worker exiting" but did not exit: its
    exit waited for the thread reading that client, until the master killed it at SCRATCHNET_TIMEOUT
    (30 s; the 20 s below is only a hang guard) with a critical "WORKER TIMEOUT" and a Python traceback,
    not JSON, on stderr. It exits now, and the master says how many requests it ended with. That line
    said "unanswered" and no more, as for a worker that crashed: the worker now says that its graceful
    wait ran out."""
    server = start_service(service_registry, workers=1, threads=3,  # the third answers the scrapes
                           env={"SCRATCHNET_CLIENT_TIMEOUT": "60", "SCRATCHNET_GRACEFUL_TIMEOUT": "1"})
    retired = server.worker_pids().pop()
    stalled = [stall(server.url, b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Type: application/x-npy\r\nContent-Length: 60000000\r\n\r\n\x93NUM")
               for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while metric_value(server.metrics(), "scratchnet_requests_in_flight", route="/models/<name>/predict") < 2:
            assert time.monotonic() < deadline, "the stalled requests never reached the app"
            time.sleep(0.05)
        if sig == signal.SIGTTOU:  # a second worker first: SIGTTOU then retires the oldest, holding them
            server.process.send_signal(signal.SIGTTIN)
            while server.log().count("service started") < 2:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
        server.process.send_signal(sig)
        deadline = time.monotonic() + 20
        while retired in server.worker_pids():
            assert time.monotonic() < deadline, f"worker {retired} still running:\n{server.log()}"
            time.sleep(0.05)
    finally:
        for sock in stalled:
            sock.close()
    log = server.log()
    assert "WORKER TIMEOUT" not in log
    assert all(line.startswith("{") for line in log.splitlines()), log
    assert f"worker {retired} ended with 2 requests in flight, unanswered" in log, log
    # and why: the master's line gives a stop's reason only, and a reload is no stop
    assert ("the worker's graceful wait (SCRATCHNET_GRACEFUL_TIMEOUT, 1 s) ran out: the requests still in flight are "
            "cut off unanswered") in log, log


def test_a_body_left_unread_in_two_parts_keeps_the_connection(start_service, service_registry):
    """A request refused without reading its body (404 here) whose body comes in two parts: the
    rest is drained and the kept-alive connection answers the next request."""
    server = start_service(service_registry, workers=1, threads=1)
    body = b"x" * 20000
    with socket.create_connection(address(server.url), timeout=30) as sock:
        sock.sendall(b"POST /models/nope/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:10000])
        time.sleep(0.1)  # the second half comes later, as over a slow network
        sock.sendall(body[10000:])
        first = read_answer(sock)
        assert first.startswith(b"HTTP/1.1 404 ") and b"keep-alive" in first.lower()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 200 ")


def test_a_request_that_arrives_after_the_stop_began_is_answered(start_service, service_registry):
    """A connection opened just before SIGTERM whose request comes a moment later is served, as
    a stopping worker serves its kept-alive connections, not closed unanswered (its thread gave up
    waiting for the request after the stop began)."""
    server = start_service(service_registry, workers=1, threads=1)
    with socket.create_connection(address(server.url), timeout=30) as sock:
        time.sleep(0.01)  # accepted, its thread waiting for the request, which will come too late for it
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("connection", ["close", "keep-alive, close", "TE, close", "Upgrade,Close"])
def test_close_among_the_connection_options_closes_the_connection(start_service, service_registry, connection):
    """``Connection`` is a list of options (RFC 9112 §9.6): Perl's LWP sends ``TE, close``. A client
    that asked to close and found the connection kept would wait on it for an end that never comes."""
    server = start_service(service_registry, workers=1, threads=1)
    with socket.create_connection(address(server.url), timeout=30) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n".encode())
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close\r\n" in answer, answer[:300]
        sock.settimeout(5)
        assert sock.recv(1) == b""  # closed by the server, not left open


@pytest.mark.parametrize("path, headers", [
    ("/models/nope/predict", {"Content-Type": "image/png"}),                      # unknown model
    ("/models/mnist/unpin", {"Authorization": "Bearer wrong"}),                    # refused token
    ("/models/mnist/predict", {"Content-Type": "image/png", "Content-Encoding": "br"}),  # unsupported encoding
])
def test_a_large_body_refused_unread_closes_the_connection_honestly(start_service, service_registry, path, headers):
    """A request refused before its body is read, with more body than Gunicorn drains: the answer
    says ``Connection: close``, so a client opens a new connection for its next request instead
    of losing it on one the server closes. A small unread body keeps the connection: Gunicorn
    drains one under 64 KiB and gives up at 64 KiB."""
    server = start_service(service_registry, workers=1, threads=1, env={"SCRATCHNET_ADMIN_TOKEN": "secret-token"})
    with contextlib.closing(http.client.HTTPConnection(*address(server.url), timeout=30)) as connection:
        for size, kept in ((1000, True), (64 * 1024 - 1, True), (64 * 1024, False), (1_000_000, False)):
            connection.request("POST", path, b"x" * size, headers)
            response = connection.getresponse()
            response.read()
            assert 400 <= response.status < 500
            assert response.getheader("Connection") == ("keep-alive" if kept else "close")
            connection.request("GET", "/healthz")  # on the same connection, or a new one after "close"
            after = connection.getresponse()
            assert after.status == 200 and after.read()


def test_a_client_still_sending_a_refused_body_gets_its_answer(start_service, service_registry):
    """http.client, like most clients, sends the whole body before it reads the answer. Refused
    unread, a body larger than the kernel's socket buffers hold is still being sent when the
    answer is written: the server reads and drops the rest until the client has sent it, rather
    than closing the connection under it, which reset it and lost the answer (BrokenPipeError)."""
    server = start_service(service_registry, workers=1, threads=1)
    with contextlib.closing(http.client.HTTPConnection(*address(server.url), timeout=30)) as connection:
        connection.request("POST", "/models/nope/predict", b"x" * 32_000_000, {"Content-Type": "image/png"})
        response = connection.getresponse()
        assert response.status == 404 and response.getheader("Connection") == "close"
        body = json.loads(response.read())
        assert body["code"] == "model_not_found" and "nope" in body["error"]


def read_answer(sock: socket.socket) -> bytes:
    """One answer's head and its Content-Length bytes of body (a 100 Continue is a head alone)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection ended after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:]).get(b"Content-Length", b"0"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("path, headers, length", [
    ("/models/nope/predict", b"Content-Type: image/png\r\n", 1_500_000),        # unknown model
    ("/models/mnist/unpin", b"Authorization: Bearer wrong\r\n", 1_500_000),     # refused token
    ("/models/mnist/predict", b"Content-Type: text/plain\r\n", 1_500_000),      # unsupported type
    ("/models/mnist/predict", b"Content-Type: image/png\r\n", 3_000_000),       # over the size limit
])
def test_a_request_refused_from_its_headers_is_answered_before_its_body_is_sent(start_service, service_registry,
                                                                                path, headers, length):
    """A client that sends ``Expect: 100-continue`` (curl does for bodies over 1 MiB) waits for
    100 Continue before sending its body. A request refused from its headers alone is answered
    at once instead, so the body is never sent, and with ``Connection: close``: the client may
    send it still or not, and the next request goes on a new connection. Gunicorn said 100
    Continue before the service saw the request, and the client sent a body only to have it
    refused."""
    server = start_service(service_registry, workers=1, threads=1, env={"SCRATCHNET_ADMIN_TOKEN": "secret-token",
                                                                         "SCRATCHNET_MAX_BODY_BYTES": "2000000"})
    with socket.create_connection(address(server.url), timeout=30) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                     % (path.encode(), headers, length))
        answer = read_answer(sock)
        assert answer.split(b" ", 2)[1] in (b"401", b"403", b"404", b"413", b"415"), answer[:200]
        assert b"\r\nConnection: close\r\n" in answer and b'"code":' in answer
        assert sock.recv(65536) == b""


def test_a_body_is_asked_for_when_it_is_read(start_service, service_registry):
    """``Expect: 100-continue`` on requests whose body the service reads (an image, a form, a
    chunked body): 100 Continue, then the body, then the answer on a connection kept alive."""
    server = start_service(service_registry, workers=1, threads=1)
    image = encode(paper(synthetic_digit()), "PNG")
    form = (b"--b\r\nContent-Disposition: form-data; name=file; filename=a.png\r\nContent-Type: image/png\r\n\r\n"
            + image + b"\r\n--b--\r\n")
    requests_and_bodies = [
        (b"Content-Type: image/png\r\nContent-Length: %d\r\n" % len(image), image),
        (b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n" % len(form), form),
        (b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(image), image)),
    ]
    with socket.create_connection(address(server.url), timeout=30) as sock:
        for headers, body in requests_and_bodies:
            sock.sendall(b"POST /models/mnist/predict HTTP/1.1\r\nHost: x\r\n%sExpect: 100-continue\r\n\r\n" % headers)
            assert read_answer(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(body)
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: keep-alive\r\n" in answer, answer[:300]


@pytest.mark.parametrize("worker_connections", [None, 60], ids=["default", "near-the-limit"])
def test_a_worker_out_of_file_descriptors_keeps_serving(start_service, service_registry, worker_connections):
    """100 idle connections to a worker allowed 64 open files (``ulimit -n 64``): it holds what it
    can, and serves again once they close, without a restart; it died of accept()'s EMFILE, and
    took every connection it held along. By default it stops accepting below the limit; told to
    hold nearly as many connections as the limit (Gunicorn's --worker-connections), which with its
    own files it cannot, it pauses when accept() fails, and says so in a line. (As many as the
    limit or more stop the start: tests/test_service_config.py.)"""
    env = {"GUNICORN_CMD_ARGS": f"--worker-connections {worker_connections}"} if worker_connections else {}
    server = start_service(service_registry, workers=1, threads=2, limits={resource.RLIMIT_NOFILE: 64}, env=env)
    [worker] = server.worker_pids()
    idle = [socket.create_connection(address(server.url), timeout=30) for _ in range(100)]
    time.sleep(1)  # the worker takes them, up to what it can hold
    for sock in idle:
        sock.close()
    response = requests.post(server.url + "/models/mnist/predict", json={"inputs": [0.5] * 784}, timeout=10)
    assert response.status_code == 200 and response.headers["X-Worker-PID"] == str(worker)
    assert server.worker_pids() == {worker}
    said = [entry["message"] for entry in map(json.loads, server.log().splitlines())
            if entry["message"].startswith("cannot accept new connections")]
    if worker_connections is None:
        assert said == []  # it never reached the limit
    else:
        assert said and all("Too many open files" in message for message in said)


def test_a_worker_starts_all_its_threads_at_boot(start_service, service_registry):
    """A thread that cannot be started (a low ``ulimit -v`` or ``-u``) must stop a worker at boot
    rather than fail requests under traffic: before its first request a worker has its main thread
    and its SCRATCHNET_THREADS, and traffic starts no other. (No registry watcher thread, and one
    BLAS thread, so that these are all.)"""
    server = start_service(service_registry, workers=1, threads=4,
                           env={"SCRATCHNET_WATCH": "0", "SCRATCHNET_NUMPY_THREADS": "1"})
    [worker] = server.worker_pids()
    assert len(os.listdir(f"/proc/{worker}/task")) == 1 + 4
    burst(server.url, 8)
    assert len(os.listdir(f"/proc/{worker}/task")) == 1 + 4


def test_a_worker_that_cannot_start_its_threads_stops_the_service_at_boot_saying_why(service_registry):
    # Each thread's stack is as large as the stack limit: 1 GiB, of which 2.5 GiB of address
    # space has room for two, not eight.
    server = ServiceProcess(service_registry, workers=1, threads=8, env={"SCRATCHNET_NUMPY_THREADS": "1"},
                            limits={resource.RLIMIT_STACK: 1 << 30, resource.RLIMIT_AS: 5 << 29})
    status, log = server.failed_start()
    assert status == 3  # Gunicorn's "worker failed to boot"
    entries = [json.loads(line) for line in log.splitlines()]
    errors = [entry["message"] for entry in entries if entry["level"] == "error"]
    assert errors[0] == ("cannot start the worker's 8 threads (can't start new thread): allow more memory (ulimit -v) "
                         "or processes (ulimit -u), or set a lower SCRATCHNET_THREADS")
    assert "Reason: Worker failed to boot." in errors and not any("exception" in entry for entry in entries)


@pytest.mark.parametrize("announced, sent", [(500_000, 200_000), (3_000_000, 1_500_000)])
def test_a_body_cut_off_by_the_client_is_answered_counted_and_logged(start_service, service_registry, announced,
                                                                      sent):
    """A client that ends its side of the connection before the body it announced is whole: a body
    the event loop gathers (up to 1 MiB) was dropped without a word, no answer, no access line and
    no count in the metrics, while a larger one, read by a thread, was answered 400 truncated_body.
    Either size is now that 400, on one access line and in scratchnet_requests_total."""
    server = start_service(service_registry, workers=1, threads=1)
    head = (f"POST /models/wine/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {announced}\r\nX-Request-ID: cut-{announced}\r\n\r\n").encode()
    with socket.create_connection(address(server.url), timeout=10) as sock:
        sock.sendall(head + b" " * sent)
        sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "truncated_body"
    time.sleep(0.2)  # the access line follows the answer
    lines = [json.loads(line) for line in server.log().splitlines() if '"scratchnet.access"' in line]
    (line,) = [line for line in lines if line.get("request_id") == f"cut-{announced}"]
    assert (line["status"], line["code"], line["route"]) == (400, "truncated_body", "/models/<name>/predict")
    assert metric_value(server.metrics(), "scratchnet_requests_total", method="POST",
                        route="/models/<name>/predict", status="400") == 1
