"""The framework's floor for bench/serve.py: a Flask app with one route that reads the body and
answers a small JSON, served by the same Gunicorn configuration as the service::

    gunicorn -c service/gunicorn_conf.py "bench.floor_app:create_app()"

Whatever the service does beyond this (parsing, preprocessing, the forward pass, metrics,
logging) is its own cost; this app measures what Flask and Gunicorn cost on their own.
"""

from flask import Flask, jsonify, request


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)

    @app.post("/models/<name>/predict")
    def predict(name: str):
        body = request.get_data()
        return jsonify(model=name, received=len(body))

    return app
