"""What a test does when something it needs is missing here."""

import os
from typing import NoReturn

import pytest


def unavailable(reason: str, under_ci: str = "") -> NoReturn:
    """Skip, saying ``reason``; under CI (``CI`` set), where everything must run, fail instead,
    with ``under_ci`` added (how CI provides it)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure{under_ci})")
    pytest.skip(reason)


def needs_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root")
