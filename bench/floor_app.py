"""The framework's floor for bench/serve.py: a Flask app with one route that reads the body and
answers a small JSON, served by the same Gunicorn configuration as the service::

    gunicorn -c service/gunicorn_conf.py "bench.floor_app:create_app()"

Whatever the service does beyond this (parsing, preprocessing, the forward pass, metrics,
logging) is its own cost; this app measures what Flask and Gunicorn cost on their own.

``create_image_work_app`` is the other reference, for bench/image_work.py: the same route doing
only an image prediction's unavoidable work, the shared preprocessing and the forward pass of
the served model and the service's JSON answer, without anything else the service does
(content types, limits, errors in the API's shape, request ids, metrics, access log)::

    gunicorn -c service/gunicorn_conf.py "bench.floor_app:create_image_work_app()"

With ``stage`` it stops earlier in the pipeline and runs the forward pass on a fixed input
instead, to show what each part costs on its own: ``"decode"`` only decodes the image to grey
(``shared.preprocess.decode_grey``: Pillow's open and load, the conversion to luminance),
``"forward"`` does not look at the body at all.
"""

import os

import numpy as np
from flask import Flask, Response, jsonify, request

from shared.model_file import load_model
from shared.preprocess import decode_grey, images_to_batch
from shared.registry import Registry
from service.predictor import DEFAULT_TOP_K, PredictionBatch


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)

    @app.post("/models/<name>/predict")
    def predict(name: str):
        body = request.get_data()
        return jsonify(model=name, received=len(body))

    return app


STAGES = ("forward", "decode", "all")


def create_image_work_app(config: dict | None = None, stage: str = "all") -> Flask:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    app = Flask(__name__)
    registry = Registry(os.environ.get("SCRATCHNET_REGISTRY", "models"))
    models = {}

    @app.post("/models/<name>/predict")
    def predict(name: str):
        if name not in models:
            version = registry.read_serving(name)["pinned"] or registry.versions(name)[-1]
            models[name] = load_model(registry.model_path(name, version))
        model = models[name]
        body = request.get_data()
        if stage == "all":
            inputs = images_to_batch([body], model.preprocessing)
        else:
            if stage == "decode":
                decode_grey(body)
            inputs = np.zeros((1, model.input_size), dtype=np.float32)
        probabilities = model.predict_proba(inputs)
        answer = PredictionBatch(model, probabilities, DEFAULT_TOP_K).to_json()
        return Response(answer, mimetype="application/json")

    return app
