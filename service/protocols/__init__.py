"""The standard inference protocols, so that existing clients work unchanged: KServe V2 / Open
Inference Protocol (``v2``, with the binary tensor data extension in ``binary``) and TF Serving /
KServe V1 REST (``v1``). Both are thin skins over the predictor core the native API uses: the
model's tensors (``signature``) map onto ``Predictor``'s image, vector and pixel batches.

Their errors carry ``"error": "<message>"``, which Triton's and TF Serving's clients read, beside
the native API's ``code`` and ``details``; with 400 for any input that cannot be used, as those
servers answer (where the native API distinguishes 415 and 422).
"""

from __future__ import annotations

from flask import Flask, g, request
from werkzeug.routing import BaseConverter

from .v1 import v1_bp
from .v2 import v2_bp

PREFIXES = ("/v1/", "/v2/")
BAD_INPUT = (415, 422)


def protocol_error(status: int, body: dict) -> tuple[int, dict]:
    return (400 if status in BAD_INPUT else status), body


class Segment(BaseConverter):
    """A path segment without a colon. TF Serving's URLs end in a verb, ``/v1/models/mnist:predict``:
    a model, version or label matched with this never swallows the verb (names have no colon), so
    a predict path is never also taken for a status path."""

    regex = "[^/:]+"


def init_app(app: Flask) -> None:
    app.url_map.converters["segment"] = Segment
    app.register_blueprint(v2_bp)
    app.register_blueprint(v1_bp)

    @app.before_request
    def protocol_errors():
        path = request.path
        if path == "/v2" or path.startswith(PREFIXES):
            g.error_shape = protocol_error
