"""The client socket of service/worker.py on its own: its time limit is for each step of
progress, so a slow reader that keeps reading gets a whole answer and a silent one is dropped.
(tests/e2e/test_connections.py runs it in a real Gunicorn.) And the worker's stop on Ctrl-C."""

import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service import worker

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def connection(monkeypatch):
    """(server end as a ClientSocket with a 0.5 s limit, client end), both with small buffers."""
    monkeypatch.setattr(worker, "CLIENT_TIMEOUT", 0.5)
    server, client = socket.socketpair()
    for end in (server, client):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    server.setblocking(False)  # as Gunicorn leaves a new connection
    server = worker.with_client_timeout(server)
    server.setblocking(True)  # as Gunicorn's thread does before reading: the limit, not for ever
    yield server, client
    server.close()
    client.close()


def test_a_slow_reader_gets_the_whole_answer(connection):
    server, client = connection
    answer = bytes(range(256)) * 4096  # 1 MiB, far more than the buffers hold
    received = bytearray()

    def read_slowly():
        while len(received) < len(answer):
            received.extend(client.recv(16384))
            time.sleep(0.03)  # each pause far under the limit

    reader = threading.Thread(target=read_slowly)
    started = time.monotonic()
    reader.start()
    server.sendall(answer)  # takes longer than the limit in all, never that long without progress
    reader.join(timeout=30)
    assert bytes(received) == answer
    assert time.monotonic() - started > 1.0  # longer than the limit twice over: the case under test


def test_a_silent_client_is_dropped_after_the_limit(connection):
    server, client = connection
    client.sendall(b"POST / HTTP/1.1\r\n")
    assert server.recv(100) == b"POST / HTTP/1.1\r\n"
    with pytest.raises(TimeoutError):
        server.recv(100)  # nothing more comes
    with pytest.raises(TimeoutError):
        server.sendall(b"x" * (1 << 22))  # and nothing is read: no room for the answer either


def test_a_client_that_reads_no_more_of_its_answer_is_told_apart_from_one_that_sends_no_more(connection):
    """Gunicorn's line for a timed-out socket said the client sent no more of its request, also when
    it was the answer the client had stopped reading."""
    server, client = connection
    with pytest.raises(worker.AnswerNotRead) as stopped_reading:
        server.sendall(b"x" * (1 << 22))
    assert server.sent > 0  # what the buffers took before the limit
    with pytest.raises(TimeoutError) as stopped_sending:
        server.recv(100)
    lines = []
    for error in (stopped_reading.value, stopped_sending.value):
        record = logging.LogRecord("gunicorn.error", logging.ERROR, __file__, 0, "Error handling request", (),
                                   (type(error), error, None))
        worker.QuietClientTimeouts().filter(record)
        lines.append((record.levelname, record.getMessage(), record.exc_info))
    assert lines == [("INFO", "a client read no more of its answer for 0.5 s: connection closed", None),
                     ("INFO", "a client sent no more of its request for 0.5 s: connection closed", None)]


QUIT_TWICE = """
import logging, os, signal
from gunicorn.config import Config
from gunicorn.glogging import Logger
from service.worker import FairThreadWorker

cfg = Config()
worker = FairThreadWorker(0, os.getppid(), [], None, 30, cfg, Logger(cfg))
worker.tpool = worker.get_thread_pool()
for quit_signal in (signal.SIGINT, signal.SIGQUIT):
    signal.signal(quit_signal, worker.handle_quit)


class MasterQuitsMeanwhile:
    # The pool's queue, but the master's SIGQUIT arrives as the worker, handling the terminal's
    # SIGINT, wakes the pool's threads inside its shutdown: where a real Ctrl-C's race puts it one
    # time in three.

    def __init__(self, queue):
        self.queue = queue

    def put(self, item, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGQUIT)
        self.queue.put(item, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.queue, name)


worker.tpool._work_queue = MasterQuitsMeanwhile(worker.tpool._work_queue)
os.kill(os.getpid(), signal.SIGINT)
"""


def test_a_worker_sent_sigint_and_sigquit_at_once_exits_at_once(tmp_path):
    """Ctrl-C sends SIGINT to the master and every worker, and the master sends each worker SIGQUIT:
    a worker must exit then, not hang until the master kills it ("was sent SIGKILL!")."""
    script = tmp_path / "quit_twice.py"
    script.write_text(QUIT_TWICE)
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("the worker still ran 10 s after its SIGINT and SIGQUIT")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 5
