"""KServe's own Python client, ``kserve.InferenceRESTClient``, unchanged, against the service in a
real Gunicorn (V2 and V1 protocols). ``kserve`` pulls in kubernetes, grpcio and fastapi (about
450 MB), so it lives in its own virtual environment: ``SCRATCHNET_KSERVE_PYTHON`` names its
Python (``make test`` builds one in ``.venv-kserve``). Without it the test skips and says so, unless ``CI`` is set."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests

from modelgen import publish_model
from server import ServiceProcess
from skips import unavailable

CLIENT = Path(__file__).parent / "clients" / "kserve_client.py"


@pytest.fixture(scope="module")
def kserve_python() -> str:
    python = os.environ.get("SCRATCHNET_KSERVE_PYTHON")
    if not python or not os.access(python, os.X_OK):  # absent, or not this user's to run
        unavailable("set SCRATCHNET_KSERVE_PYTHON to a Python with the kserve package to run KServe's own client",
                    ": make test builds that Python in .venv-kserve")
    return python


def test_kserve_client_gets_the_native_answers(kserve_python, tmp_path):
    publish_model(tmp_path / "registry", "digits", seed=5)
    vectors = np.random.default_rng(3).random((4, 784), dtype=np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    with ServiceProcess(tmp_path / "registry", workers=2, poll_interval=0.2) as service:
        done = subprocess.run([kserve_python, str(CLIENT), service.url, "digits", str(tmp_path / "vectors.npy")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        answers = json.loads(done.stdout)
        native = requests.post(service.url + "/models/digits/predict", params={"top_k": 10},
                               json={"inputs": vectors.tolist()}, timeout=30).json()
    expected = np.array([[{e["label"]: e["probability"] for e in p["top_k"]}[str(d)] for d in range(10)]
                         for p in native["predictions"]])
    assert answers["v2_server_live"] and answers["v2_server_ready"] and answers["v2_model_ready"]
    assert answers["v1_server_live"] and answers["v1_model_ready"]
    for binary in (False, True):
        got = answers[f"v2_binary_{binary}"]
        assert (got["id"], got["model_name"]) == ("kserve-1", "digits")  # the client drops model_version
        np.testing.assert_allclose(got["probabilities"], expected, atol=1e-6)
    np.testing.assert_allclose(answers["v1_predictions"], expected, atol=1e-6)
