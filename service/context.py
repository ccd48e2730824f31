"""The objects one app instance is made of, reachable from views as ``service()``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from shared.registry import Registry

from .budget import LargeParses
from .config import Settings
from .metrics import Metrics
from .predictor import Predictor
from .store import ModelStore

EXTENSION = "scratchnet"


@dataclass(frozen=True)
class Service:
    settings: Settings
    registry: Registry
    store: ModelStore
    predictor: Predictor
    metrics: Metrics
    large_parses: LargeParses  # one large JSON parse or image decode at a time (service.budget)


def service() -> Service:
    # One look through Flask's proxy for the app, then plain attributes: each attribute read through the proxy
    # costs as much again, and a prediction calls this several times.
    return current_app._get_current_object().extensions[EXTENSION]
