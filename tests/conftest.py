import os
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
