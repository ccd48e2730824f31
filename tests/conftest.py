import os
import time
from pathlib import Path

import pytest

from skips import unavailable


def _datasets_dir() -> Path | None:
    value = os.environ.get("SCRATCHNET_DATASETS")
    return Path(value) if value and Path(value).is_dir() else None


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The folder holding genuine copies of mnist/, fashion-mnist/ and wine-quality/.

    Set SCRATCHNET_DATASETS to use it; the Makefile sets it when a datasets folder sits beside
    the checkout."""
    path = _datasets_dir()
    if path is None:
        unavailable("real datasets not available: set SCRATCHNET_DATASETS to a folder with mnist/, fashion-mnist/, "
                    "wine-quality/", ": the Makefile sets it when a datasets folder sits beside the checkout")
    return path


@pytest.fixture
def a_poll_later(monkeypatch):
    """``a_poll_later(store)`` moves a ModelStore's clock on by its poll interval, as between two passes of
    its watcher: a file that failed to load and is found as it was then counts as failed, where one found
    changed may be being written (service.store.VersionRecord.settled)."""
    import types

    import service.store as store_module

    def later(store) -> None:
        ahead = getattr(store_module.time, "ahead", 0.0) + store.poll_interval
        monkeypatch.setattr(store_module, "time",
                            types.SimpleNamespace(monotonic=lambda: time.monotonic() + ahead, ahead=ahead))
    return later
