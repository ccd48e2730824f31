"""Gunicorn's threaded worker, made to leave new connections to a worker with a free thread.

Every worker waits on the same listening socket, and Gunicorn's ``gthread`` worker accepts a
connection whenever it wakes first, busy or not. Clients that open their keep-alive connections
at once (a load generator, a proxy's connection pool) then often all land on one worker and keep
it: one core answers everything while the other idles. With two workers, 8 connections opened
together went to a single worker in about one run in three (docs/benchmarks.md).

``FairThreadWorker`` accepts only while one of its threads is free: a worker whose threads are
all handling requests stops listening until one finishes, so the next connections go to a worker
that can serve them at once, or wait in the kernel's queue until one can. Connections already
accepted are served exactly as before.

It relies on three methods of Gunicorn's ``ThreadWorker`` (``enqueue_req``, ``finish_request``,
``set_accept_enabled``), all called on the worker's main thread; gunicorn is pinned in
pyproject.toml, and tests/e2e/test_connections.py checks the behaviour against the real server.
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class FairThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.busy_threads = 0  # requests handed to the thread pool and not finished

    def has_free_thread(self) -> bool:
        return self.busy_threads < self.cfg.threads

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self.has_free_thread())

    def enqueue_req(self, conn) -> None:
        self.busy_threads += 1
        super().enqueue_req(conn)

    def accept(self, listener) -> None:
        super().accept(listener)
        if not self.has_free_thread():
            self.set_accept_enabled(False)

    def finish_request(self, conn, fs) -> None:
        self.busy_threads -= 1
        super().finish_request(conn, fs)
        self.set_accept_enabled(self.alive and self.nr_conns < self.worker_connections)
