"""Keep-alive connections opened at once are spread over the workers (service/worker.py).

Gunicorn's own threaded worker accepts whatever it wakes up for: 8 connections opened together
(a load generator, a proxy's pool) went to one of two workers in about one burst in three, which
then served everything on one core. Here each burst of 8 connections, opened and used at once as
``wrk`` does, must reach both workers, none with more than 6 of the 8.
"""

import http.client
import json
import threading

import pytest

pytestmark = pytest.mark.slow

CONNECTIONS = 8
BURSTS = 6
REQUESTS_PER_CONNECTION = 15


def burst(url: str) -> list[str]:
    """Open CONNECTIONS keep-alive connections at once, send requests on each, return the worker
    PID that answered each connection (every answer on one connection must come from one PID)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"inputs": [0.5] * 784})
    connections = [http.client.HTTPConnection(host, int(port), timeout=30) for _ in range(CONNECTIONS)]
    pids: list[set[str]] = [set() for _ in connections]
    start = threading.Barrier(CONNECTIONS)

    def client(i: int) -> None:
        connection = connections[i]
        start.wait()
        for _ in range(REQUESTS_PER_CONNECTION):
            connection.request("POST", "/models/mnist/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            pids[i].add(response.getheader("X-Worker-PID"))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for connection in connections:
        connection.close()
    assert all(len(p) == 1 for p in pids), "a keep-alive connection moved between workers"
    return [p.pop() for p in pids]


def test_simultaneous_keep_alive_connections_reach_every_worker(start_service, service_registry):
    server = start_service(service_registry, workers=2, threads=2)
    workers = set(server.worker_pids())
    for _ in range(BURSTS):
        owners = burst(server.url)
        counts = {pid: owners.count(pid) for pid in set(owners)}
        assert {int(pid) for pid in counts} <= workers
        assert len(counts) == 2, f"all {CONNECTIONS} connections went to one worker: {counts}"
        assert max(counts.values()) <= 6, f"connections per worker: {counts}"
