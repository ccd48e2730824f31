"""The objects one app instance is made of, reachable from views as ``service()``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from shared.registry import Registry

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


def service() -> Service:
    return current_app.extensions[EXTENSION]
