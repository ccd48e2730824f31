"""Fixtures that run the service in a real Gunicorn (see tests/server.py).

- ``start_service(registry, **options)``: start a ``ServiceProcess``; stopped after the test.
- ``service_registry``: a module-wide registry folder with small random models (tests/modelgen.py):
  ``mnist`` v1 (random) and v2 (always predicts "7"), ``iris`` (vector classifier) and ``wine``
  (regression). Tests that change a model publish their own under a name of their own.
- ``live_service``: one Gunicorn per test module on ``service_registry``: 3 workers, a 0.2 s
  poll, admin token ``ADMIN_TOKEN``.
"""

import pytest

from modelgen import publish_standard_models
from server import ServiceProcess

ADMIN_TOKEN = "e2e-admin-token"
WORKERS = 3
POLL_INTERVAL = 0.2


@pytest.fixture
def start_service():
    started = []

    def start(registry, **options) -> ServiceProcess:
        server = ServiceProcess(registry, **options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def service_registry(tmp_path_factory):
    return publish_standard_models(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def live_service(service_registry):
    with ServiceProcess(service_registry, workers=WORKERS, poll_interval=POLL_INTERVAL,
                        admin_token=ADMIN_TOKEN) as server:
        yield server
