"""NVIDIA's ``tritonclient[http]``, unchanged, against the service in a real Gunicorn: health,
metadata, inference with JSON and binary tensors (vectors and encoded images, a batch of 64,
compressed both ways), a pinned version, the model repository's load and unload, and the
statistics. Every answer must equal the native API's for the same input."""

import base64
import json
import os
import signal
import time

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from images import encode, paper, synthetic_digit
from modelgen import publish_model
from server import ServiceProcess

TOKEN = "triton-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RNG = np.random.default_rng(7)
DIGITS_PNG = [encode(paper(synthetic_digit(seed)), "PNG") for seed in (0, 1)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    publish_model(root, "mnist", seed=1)
    publish_model(root, "mnist", seed=2)       # served
    publish_model(root, "digits", seed=3)      # changed by the repository test
    publish_model(root, "digits", seed=4)
    with ServiceProcess(root, workers=2, threads=4, poll_interval=0.2, admin_token=TOKEN) as service:
        yield service


@pytest.fixture
def client(server):
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=30)
    yield client
    client.close()


def native_probabilities(server, path: str, **kwargs) -> tuple[np.ndarray, int]:
    """Digit probabilities (n, 10) from the native API, and the version that answered."""
    response = requests.post(server.url + path, params={"top_k": 10}, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    body = response.json()
    rows = [[{e["label"]: e["probability"] for e in p["top_k"]}[str(d)] for d in range(10)]
            for p in body["predictions"]]
    return np.array(rows), body["model"]["version"]


def vectors_input(x: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def on_every_worker(server, path: str, check, timeout: float = 10) -> None:
    """Wait until every Gunicorn worker answers ``GET path`` so that ``check(response)`` holds."""
    workers, good = server.worker_pids(), set()
    deadline = time.monotonic() + timeout
    while good != workers:
        response = requests.get(server.url + path, headers={"Connection": "close"}, timeout=10)
        pid = int(response.headers["X-Worker-PID"])
        (good.add if check(response) else good.discard)(pid)
        assert time.monotonic() < deadline, f"workers {workers - good} still answer {response.status_code} " \
                                            f"{response.text[:200]} on {path}"


def test_health_and_metadata(server, client):
    # Versions other than the served one are checked by each worker's first registry pass, within
    # a poll interval of its start; until then they are "loading" and not listed.
    on_every_worker(server, "/v2/models/mnist", lambda response: response.json()["versions"] == ["1", "2"])
    assert client.is_server_live() and client.is_server_ready()
    assert {"binary_tensor_data", "model_repository"} <= set(client.get_server_metadata()["extensions"])
    assert client.is_model_ready("mnist") and client.is_model_ready("mnist", "1")
    assert not client.is_model_ready("nope")
    metadata = client.get_model_metadata("mnist")
    assert metadata["platform"] == "scratchnet_numpy" and metadata["versions"] == ["1", "2"]
    assert {"name": "input", "datatype": "FP32", "shape": [-1, 784]} in metadata["inputs"]
    with pytest.raises(InferenceServerException) as error:
        client.get_model_metadata("nope")
    assert error.value.status() == "404"


def test_a_client_shapes_its_request_from_the_model_config(server, client):
    """Triton's clients read the model configuration (``get_model_config``) for the batch limit and
    each tensor's dims without the batch dimension, and build the request from them."""
    assert "model_configuration" in client.get_server_metadata()["extensions"]
    config = client.get_model_config("mnist")
    assert config["name"] == "mnist" and config["max_batch_size"] == 10_000
    inputs = {tensor["name"]: tensor for tensor in config["input"]}
    assert inputs["input"] == {"name": "input", "data_type": "TYPE_FP32", "dims": [784], "optional": True}
    assert inputs["image"]["data_type"] == "TYPE_STRING" and inputs["pixels"]["dims"] == [28, 28]
    outputs = {tensor["name"]: tensor for tensor in config["output"]}
    assert outputs["probabilities"]["dims"] == [10] and outputs["index"]["data_type"] == "TYPE_INT64"
    x = RNG.random((5, *inputs["input"]["dims"]), dtype=np.float32)
    tensor = httpclient.InferInput("input", list(x.shape), inputs["input"]["data_type"].removeprefix("TYPE_"))
    tensor.set_data_from_numpy(x)
    assert client.infer("mnist", [tensor]).as_numpy("probabilities").shape == (5, *outputs["probabilities"]["dims"])
    assert client.get_model_config("mnist", "1")["name"] == "mnist"
    for model, version in (("nope", ""), ("mnist", "9")):
        with pytest.raises(InferenceServerException) as error:
            client.get_model_config(model, version)
        assert error.value.status() == "404"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_fp32_vectors_equal_the_native_answers(server, client, binary):
    x = RNG.random((3, 784), dtype=np.float32)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "label", "index")]
    result = client.infer("mnist", [vectors_input(x, binary)], outputs=outputs, request_id="r-42")
    response = result.get_response()
    assert response["model_name"] == "mnist" and response["model_version"] == "2" and response["id"] == "r-42"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 10)
    expected, version = native_probabilities(server, "/models/mnist/predict", json={"inputs": x.tolist()})
    assert version == 2
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("index"), probabilities.argmax(axis=1))
    assert [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label")] == \
        [str(i) for i in probabilities.argmax(axis=1)]


def test_a_batch_of_64_compressed_both_ways(server, client):
    x = RNG.random((64, 784), dtype=np.float32)
    result = client.infer("mnist", [vectors_input(x)], request_compression_algorithm="gzip",
                          response_compression_algorithm="deflate")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (64, 10)
    expected, _ = native_probabilities(server, "/models/mnist/predict", json={"inputs": x.tolist()})
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def test_encoded_images_as_bytes_binary_and_json(server, client):
    expected, _ = native_probabilities(server, "/models/mnist/predict",
                                       files=[("file", ("a.png", DIGITS_PNG[0])), ("file", ("b.png", DIGITS_PNG[1]))])
    as_files = httpclient.InferInput("image", [2], "BYTES")
    as_files.set_data_from_numpy(np.array(DIGITS_PNG, dtype=np.object_))
    binary = client.infer("mnist", [as_files]).as_numpy("probabilities")
    np.testing.assert_allclose(binary, expected, atol=1e-6)
    # In JSON, BYTES elements are text: images go as base64.
    as_text = httpclient.InferInput("image", [2], "BYTES")
    as_text.set_data_from_numpy(np.array([base64.b64encode(png) for png in DIGITS_PNG], dtype=np.object_),
                                binary_data=False)
    result = client.infer("mnist", [as_text], outputs=[httpclient.InferRequestedOutput("probabilities", False)])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


def test_a_pinned_version_answers(server, client):
    x = RNG.random((2, 784), dtype=np.float32)
    result = client.infer("mnist", [vectors_input(x)], model_version="1")
    assert result.get_response()["model_version"] == "1"
    expected, version = native_probabilities(server, "/models/mnist/versions/1/predict", json={"inputs": x.tolist()})
    assert version == 1
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


def test_repository_load_pins_and_unload_takes_out_of_service(server, client):
    with pytest.raises(InferenceServerException) as error:
        client.get_model_repository_index()
    assert error.value.status() == "401"
    index = client.get_model_repository_index(headers=AUTH)
    assert {"name": "digits", "version": "2", "state": "READY", "reason": ""} in index
    with pytest.raises(InferenceServerException) as error:
        client.unload_model("digits")
    assert error.value.status() == "401"

    pin_1 = json.dumps({"version_policy": {"specific": {"versions": [1]}}})
    client.load_model("digits", config=pin_1, headers=AUTH)
    on_every_worker(server, "/models/digits", lambda r: r.json()["served_version"] == 1)
    assert client.get_model_config("digits")["version_policy"] == {"specific": {"versions": [1]}}
    x = RNG.random((1, 784), dtype=np.float32)
    assert client.infer("digits", [vectors_input(x)]).get_response()["model_version"] == "1"
    config = client.get_model_config("digits")  # Triton's way: edit the config read, send the whole back
    config["version_policy"] = {"latest": {"num_versions": 1}}
    client.load_model("digits", config=json.dumps(config), headers=AUTH)
    on_every_worker(server, "/models/digits", lambda r: r.json()["served_version"] == 2)
    assert client.get_model_config("digits")["version_policy"] == {"latest": {"num_versions": 1}}

    client.unload_model("digits", headers=AUTH)
    on_every_worker(server, "/v2/models/digits/ready", lambda r: r.status_code == 503)
    assert not client.is_model_ready("digits")
    with pytest.raises(InferenceServerException) as error:
        client.infer("digits", [vectors_input(x)])
    assert error.value.status() == "503" and "unloaded" in error.value.message()
    assert {e["state"] for e in client.get_model_repository_index(headers=AUTH) if e["name"] == "digits"} == {"UNAVAILABLE"}
    assert client.is_server_ready() and client.is_model_ready("mnist")

    client.load_model("digits", headers=AUTH)
    on_every_worker(server, "/v2/models/digits/ready", lambda r: r.status_code == 200)
    assert client.infer("digits", [vectors_input(x)]).get_response()["model_version"] == "2"


@pytest.mark.parametrize("name, shape, message", [
    ("input", [1, 783], "unexpected shape for input 'input' for model 'mnist'. Expected [-1,784], got [1,783]"),
    ("x", [1, 784], "unexpected inference input 'x' for model 'mnist' (name it 'input', 'image' or 'pixels')"),
    # the two shapes clients most often send by mistake: the batch dimension left out, a picture's pixels as vectors
    ("input", [784], "unexpected shape for input 'input' for model 'mnist'. Expected [-1,784], got [784] (the first "
     "dimension is the batch: send one vector as shape [1,784])"),
    ("input", [1, 28, 28], "unexpected shape for input 'input' for model 'mnist'. Expected [-1,784], got [1,28,28] "
     "(pixels as [n, height, width] go in the input 'pixels'; or send each picture as one row of 784 values in "
     "[0, 1])"),
])
def test_errors_reach_the_client_in_tritons_words(client, name, shape, message):
    tensor = httpclient.InferInput(name, shape, "FP32")
    tensor.set_data_from_numpy(np.zeros(shape, dtype=np.float32))
    with pytest.raises(InferenceServerException) as error:
        client.infer("mnist", [tensor])
    assert error.value.status() == "400" and error.value.message() == message


def test_a_tensor_in_shared_memory_is_refused_not_ignored(client):
    """tritonclient's set_shared_memory names a region the server is to read an input from or write an output to.
    There is no shared memory here: an output asked for in a region was answered in the response instead, 200, and
    the client went on to read a region nothing wrote; an input in a region was told it had no 'data'."""
    output = httpclient.InferRequestedOutput("probabilities")
    output.set_shared_memory("outputs", 40)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("mnist", [vectors_input(np.zeros((1, 784), dtype=np.float32))], outputs=[output])
    assert refused.value.status() == "400"
    assert refused.value.message().startswith("Unable to find system shared memory region: 'outputs' for output "
                                              "'probabilities': this server has no shared memory")
    assert "leave out the output's shared memory parameters" in refused.value.message()
    tensor = httpclient.InferInput("input", [1, 784], "FP32")
    tensor.set_shared_memory("inputs", 3136)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("mnist", [tensor])
    assert refused.value.status() == "400"
    assert refused.value.message().startswith("Unable to find system shared memory region: 'inputs' for input "
                                              "'input': this server has no shared memory")
    assert "send its data in the request" in refused.value.message()


def test_a_binary_request_whose_header_length_is_wrong_is_told_what_the_length_must_be(server):
    """A binary request's Inference-Header-Content-Length counted in characters, not bytes (an id with an accent),
    cuts the JSON part short: the 400 said only "not valid JSON", which sent the user to look at the JSON."""
    raw = np.zeros((1, 784), dtype=np.float32).tobytes()
    header = json.dumps({"id": "café", "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                                    "parameters": {"binary_data_size": len(raw)}}]}, ensure_ascii=False)
    response = requests.post(server.url + "/v2/models/mnist/infer", data=header.encode() + raw, timeout=30,
                             headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 400 and response.json()["code"] == "malformed_json", response.text
    assert response.json()["error"].startswith("The body is not valid JSON: ")
    assert f"; the JSON part is read as the first {len(header)} bytes of the body, as Inference-Header-Content-" \
           "Length says: it must be the length in bytes of the JSON exactly as sent (UTF-8), before the binary " \
           "tensors." in response.json()["error"]
    fixed = requests.post(server.url + "/v2/models/mnist/infer", data=header.encode() + raw, timeout=30,
                          headers={"Inference-Header-Content-Length": str(len(header.encode()))})
    assert fixed.status_code == 200 and fixed.json()["id"] == "café", fixed.text


@pytest.mark.parametrize("path, body, message", [
    ("/v2/models/mnist/infer", {"model_version": "1"}, "The request's model_version '1' is not the version the URL "
     "names (version 2, the served one): name it in the URL, /v2/models/mnist/versions/1/infer, or leave "
     "model_version out."),
    ("/v2/models/mnist/versions/1/infer", {"model_version": "2"}, "model_version '2' is not the version the URL "
     "names (version 1)"),
    ("/v2/models/mnist/infer", {"model_name": "digits"}, "The request's model_name 'digits' is not the model the URL "
     "names, 'mnist': send it to /v2/models/digits/infer, or leave model_name out."),
])
def test_a_model_or_version_named_in_the_body_must_be_the_one_that_answers(server, path, body, message):
    """The V2 body may name the model and version (KServe's client sends model_name); the URL decides which answers.
    A body naming version 1 was answered 200 by the served version 2, so a client that put the version in the body
    alone took version 2's probabilities for version 1's."""
    tensor = {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}
    response = requests.post(server.url + path, json={**body, "inputs": [tensor]}, timeout=30)
    assert response.status_code == 400 and response.json()["code"] == "model_mismatch", response.text
    assert message in response.json()["error"]
    agreeing = {"model_name": "mnist", "model_version": "02" if "versions/1" not in path else "1", "inputs": [tensor]}
    assert requests.post(server.url + path, json=agreeing, timeout=30).status_code == 200


def test_the_documented_header_length_is_one_the_service_takes(server):
    """The OpenAPI document gave Inference-Header-Content-Length a minimum of 0, which the service refuses (Triton
    reads 0 as a raw binary request): a client generated from the document could send it."""
    operation = requests.get(server.url + "/openapi.json", timeout=30).json()["paths"]["/v2/models/{name}/infer"]
    header = next(p for p in operation["post"]["parameters"] if p["name"] == "Inference-Header-Content-Length")
    assert header["schema"]["minimum"] == 1
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]})
    refused = requests.post(server.url + "/v2/models/mnist/infer", data=body, timeout=30,
                            headers={"Inference-Header-Content-Length": "0"})
    assert refused.status_code == 400 and refused.json()["code"] == "malformed_header_length"


@pytest.mark.parametrize("model, version", [("nope", ""), ("mnist", "9")])
def test_an_error_before_the_body_is_used_keeps_the_connection(client, model, version):
    """A refused request whose body the service never needed (an unknown model or version) must not
    cost the connection: Gunicorn drains at most 64 KiB of an unread body and then drops a
    connection it has answered "keep-alive" on, so tritonclient's next call on it failed."""
    x = RNG.random((64, 784), dtype=np.float32)  # 200 KB of binary tensor data
    for _ in range(3):
        with pytest.raises(InferenceServerException) as refused:
            client.infer(model, [vectors_input(x)], model_version=version)
        assert refused.value.status() == "404"
        assert client.infer("mnist", [vectors_input(x)]).as_numpy("probabilities").shape == (64, 10)


def test_statistics_add_up_every_protocol_and_worker_and_survive_a_worker_restart(tmp_path):
    """Triton's statistics extension (``get_inference_statistics``): per version, the predictions
    of every protocol summed over the Gunicorn workers, refusals once the version was chosen
    counted as failures, stage times that add up to the whole, and no count lost when a worker
    is replaced."""
    publish_model(tmp_path, "counted", seed=5)
    publish_model(tmp_path, "counted", seed=6)  # served
    with ServiceProcess(tmp_path, workers=2, threads=2, poll_interval=0.2) as service:
        client = httpclient.InferenceServerClient(url=service.url.removeprefix("http://"), network_timeout=30)
        try:
            assert "statistics" in client.get_server_metadata()["extensions"]
            before = time.time()
            for rows in (1, 4, 2):
                client.infer("counted", [vectors_input(RNG.random((rows, 784), dtype=np.float32))])
            client.infer("counted", [vectors_input(RNG.random((1, 784), dtype=np.float32))], model_version="1")
            # The native API and TF Serving's, each request on a new connection, until both workers answered.
            pids, native = set(), 0
            while len(pids) < 2 or native < 6:
                response = requests.post(service.url + "/models/counted/predict", headers={"Connection": "close"},
                                         json={"inputs": RNG.random((1, 784)).tolist()}, timeout=30)
                assert response.status_code == 200
                pids.add(int(response.headers["X-Worker-PID"]))
                native += 1
                assert native < 200, "one worker answered every request"
            v1_body = {"instances": RNG.random((2, 784)).tolist()}
            assert requests.post(service.url + "/v1/models/counted:predict", json=v1_body, timeout=30).ok
            # Refused after the version was chosen: a short vector (native 422) and a wrong shape (V2 400).
            assert requests.post(service.url + "/models/counted/predict", json={"inputs": [[1.0] * 783]},
                                 timeout=30).status_code == 422
            with pytest.raises(InferenceServerException):
                client.infer("counted", [vectors_input(np.zeros((1, 783), dtype=np.float32))])
            # Not counted: no version of the model was chosen.
            assert requests.post(service.url + "/models/counted/versions/9/predict", json={"inputs": [[1.0] * 784]},
                                 timeout=30).status_code == 404
            after = time.time()

            def statistics(**version) -> dict[str, dict]:
                return {s["version"]: s for s in client.get_inference_statistics("counted", **version)["model_stats"]}

            stats = statistics()
            assert set(stats) == {"1", "2"}
            served = stats["2"]
            assert (served["inference_count"], served["execution_count"]) == (7 + native + 2, 3 + native + 1)
            inference = served["inference_stats"]
            assert inference["success"]["count"] == 3 + native + 1 and inference["fail"]["count"] == 2
            assert inference["fail"]["ns"] > 0 and inference["queue"] == {"count": 3 + native + 1, "ns": 0}
            stages = [inference[f"compute_{stage}"] for stage in ("input", "infer", "output")]
            assert all(stage["count"] == 3 + native + 1 and stage["ns"] > 0 for stage in stages)
            # The three stages cover a prediction from its body read to its answer encoded, as success does.
            assert abs(sum(stage["ns"] for stage in stages) - inference["success"]["ns"]) <= 1_000 * (3 + native + 1)
            assert before * 1000 <= served["last_inference"] <= after * 1000
            assert (stats["1"]["inference_count"], stats["1"]["execution_count"]) == (1, 1)
            assert list(statistics(model_version="1")) == ["1"]
            everything = client.get_inference_statistics()["model_stats"]
            assert [(s["name"], s["version"]) for s in everything] == [("counted", "1"), ("counted", "2")]
            with pytest.raises(InferenceServerException) as error:
                client.get_inference_statistics("nope")
            assert error.value.status() == "404"

            for pid in pids:  # both workers replaced: their counts and last times join the exited totals
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while service.worker_pids() & pids or len(service.worker_pids()) < 2:
                assert time.monotonic() < deadline, "the workers were not replaced"
                time.sleep(0.05)
            assert statistics() == stats
        finally:
            client.close()
