"""KServe V2 / Open Inference Protocol through Flask's test client: metadata, health, inference
with JSON and binary tensors (the answers equal the native API's), compression, Triton-style
errors, the classification extension and the model repository extension (unload, load, pin)."""

import base64
import gzip
import json
import struct
import zlib

import numpy as np
import pytest

from images import encode, paper, synthetic_digit
from modelgen import publish_corrupt, publish_model
from service.app import create_app

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIGIT = paper(synthetic_digit(1), side=28)          # dark ink on white, 28x28 "L"
DIGIT_PNG = encode(DIGIT, "PNG")
RNG = np.random.default_rng(0)
VECTORS = RNG.random((3, 784), dtype=np.float32)


@pytest.fixture
def registry(tmp_path):
    root = tmp_path / "models"
    publish_model(root, "mnist", seed=1)              # v1
    publish_model(root, "mnist", seed=2)              # v2: the served version
    publish_corrupt(root, "mnist")                    # v3: refused
    publish_model(root, "iris", kind="vector")
    publish_model(root, "wine", kind="regression")
    return root


@pytest.fixture
def client(registry):
    app = create_app({"registry": registry, "watch": False, "admin_token": TOKEN, "max_body_bytes": 1_000_000,
                      "max_batch": 64})
    app.extensions["scratchnet"].store.refresh()
    return app.test_client()


def tensor(name, data, datatype="FP32", shape=None):
    array = np.asarray(data)
    return {"name": name, "shape": list(shape or array.shape), "datatype": datatype, "data": array.tolist()}


def infer(client, body, model="mnist", version=None, **kwargs):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return client.post(path, json=body, **kwargs)


def outputs(response) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response.get_json()["outputs"]}


def native(client, path, **kwargs) -> tuple[np.ndarray, int]:
    """Digit probabilities (n, 10) and the version from the native API (every class via top_k)."""
    response = client.post(path, query_string={"top_k": 10}, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    rows = []
    for prediction in body["predictions"]:
        by_label = {entry["label"]: entry["probability"] for entry in prediction["top_k"]}
        rows.append([by_label[str(digit)] for digit in range(10)])
    return np.array(rows), body["model"]["version"]


def assert_protocol_error(response, status, contains):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "code", "details"}, body  # Triton's clients read "error"
    assert contains in body["error"], body


# server and model metadata -----------------------------------------------------------------------


def test_server_metadata_health_and_readiness(client):
    server = client.get("/v2").get_json()
    assert server["name"] == "scratchnet" and server["version"]
    assert {"binary_tensor_data", "model_repository"} <= set(server["extensions"])
    assert client.get("/v2/health/live").get_json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.get_json() == {"ready": True}


def test_model_metadata_describes_the_tensors(client):
    mnist = client.get("/v2/models/mnist").get_json()
    assert mnist["name"] == "mnist" and mnist["platform"] == "scratchnet_numpy"
    assert mnist["versions"] == ["1", "2"]  # v3 does not load
    assert mnist["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]},
                               {"name": "image", "datatype": "BYTES", "shape": [-1]},
                               {"name": "pixels", "datatype": "UINT8", "shape": [-1, 28, 28]}]
    assert mnist["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                                {"name": "index", "datatype": "INT64", "shape": [-1]}]
    assert client.get("/v2/models/mnist/versions/1").get_json()["versions"] == ["1"]
    wine = client.get("/v2/models/wine").get_json()
    assert wine["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 11]}]
    assert wine["outputs"] == [{"name": "value", "datatype": "FP32", "shape": [-1]}]
    assert_protocol_error(client.get("/v2/models/nope"), 404, "nope")
    assert_protocol_error(client.get("/v2/models/mnist/versions/9"), 404, "no version 9")


@pytest.mark.parametrize("method, path", [
    ("GET", "/v2/models/nope"), ("GET", "/v2/models/nope/ready"), ("GET", "/v2/models/nope/config"),
    ("GET", "/v2/models/nope/stats"), ("POST", "/v2/models/nope/infer"), ("POST", "/v2/models/nope/versions/1/infer"),
    ("POST", "/v2/repository/models/nope/load"), ("POST", "/v2/repository/models/nope/unload"),
    ("GET", "/v2/models/mnist/versions/9"), ("GET", "/v2/models/mnist/versions/9/ready"),
    ("GET", "/v2/models/mnist/versions/9/stats"), ("POST", "/v2/models/mnist/versions/9/infer"),
])
def test_an_unknown_model_or_version_is_refused_in_tritons_words(client, method, path):
    """Triton's sentence, which its clients' users search for, then the service's own, which names
    the models or versions there are."""
    response = client.open(path, method=method, json=one() if path.endswith("infer") else None, headers=AUTH)
    if "/nope" in path:
        assert_protocol_error(response, 404, "Request for unknown model: 'nope' is not found. There is no model 'nope'")
    else:
        assert_protocol_error(response, 404,
                              "Request for unknown model: 'mnist' version 9 is not found. Model mnist has no version 9")


@pytest.mark.parametrize("method, path, status, says", [
    ("POST", "/v1/models/mnist:explain", 400, "The explain API is not served"),
    ("POST", "/v1/models/mnist/versions/1:explain", 400, "The explain API is not served"),
    ("POST", "/v1/models/mnist/labels/stable:explain", 400, "The explain API is not served"),
    ("POST", "/v2/models/mnist/generate", 400, "The generate extension (text generation) is not served"),
    ("POST", "/v2/models/mnist/versions/1/generate_stream", 400,
     "The generate_stream extension (text generation) is not served"),
    ("GET", "/v2/trace/setting", 400, "the server does not support tracing"),
    ("POST", "/v2/trace/setting", 400, "the server does not support tracing"),
    ("GET", "/v2/models/mnist/trace/setting", 400, "the server does not support tracing"),
    ("GET", "/v2/logging", 400, "the server does not support dynamic logging"),
    ("POST", "/v2/logging", 400, "the server does not support dynamic logging"),
])
def test_a_standard_verb_not_served_says_so_and_what_to_use(client, registry, method, path, status, says):
    """KServe V1's :explain, Triton's generate, trace and logging extensions: each was a 404 "There is
    no such route", which reads as a wrong URL. Each answers as those servers do without the feature
    (Triton 400; KServe 501 for :explain, a 400 here, as for every request not served), naming what is
    not served and what to use instead."""
    (registry / "mnist" / "serving.json").write_text(json.dumps({"labels": {"stable": 1}}))
    client.application.extensions["scratchnet"].store.refresh()
    response = client.open(path, method=method, json={"instances": [[0.0] * 784]} if method == "POST" else None)
    assert_protocol_error(response, status, says)
    body = response.get_json()
    assert body["code"] == "unsupported_api"
    instead = {"explain": "to :predict instead", "generate": "to /v2/models/mnist/infer instead",
               "trace": "GET /v2/models/<name>/stats", "logging": "set SCRATCHNET_LOG_LEVEL"}
    assert next(words for verb, words in instead.items() if verb in path) in body["error"]


def test_model_readiness_per_model_and_version(client):
    assert client.get("/v2/models/mnist/ready").status_code == 200
    assert client.get("/v2/models/mnist/versions/1/ready").get_json() == {"name": "mnist", "ready": True}
    broken = client.get("/v2/models/mnist/versions/3/ready")
    assert broken.status_code == 503 and broken.get_json() == {"name": "mnist", "ready": False}
    assert_protocol_error(client.get("/v2/models/nope/ready"), 404, "no model 'nope'")


# inference -----------------------------------------------------------------------------------------


def test_an_id_holding_a_lone_surrogate_escape_comes_back_as_it_was_sent(client):
    # Valid JSON whose string is not valid Unicode: UTF-8 cannot hold it, the escape can.
    body = b'{"id": "req-\\ud800", "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [' + \
        b",".join([b"0"] * 784) + b"]}]}"
    response = client.post("/v2/models/mnist/infer", data=body, content_type="application/json")
    assert response.status_code == 200 and b'"id":"req-\\ud800"' in response.get_data()
    assert json.loads(response.get_data())["id"] == "req-\ud800"
    header = {"id": "\udfff", "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                           "parameters": {"binary_data_size": 3136}}]}
    binary_body, headers = binary_request(header, bytes(3136))
    assert json.loads(client.post("/v2/models/mnist/infer", data=binary_body, headers=headers).get_data())["id"] == \
        "\udfff"


def test_fp32_json_inference_equals_the_native_api(client):
    response = infer(client, {"id": "req-1", "inputs": [tensor("input", VECTORS)]})
    body = response.get_json()
    assert body["model_name"] == "mnist" and body["model_version"] == "2" and body["id"] == "req-1"
    assert response.headers["X-Model-Version"] == "2"
    got = outputs(response)
    expected, version = native(client, "/models/mnist/predict", json={"inputs": VECTORS.tolist()})
    assert version == 2
    np.testing.assert_allclose(got["probabilities"], expected, atol=1e-6)
    assert got["probabilities"].shape == (3, 10)
    np.testing.assert_array_equal(got["index"], got["probabilities"].argmax(axis=1))
    assert got["label"].tolist() == [str(i) for i in got["index"]]
    # The same data flat (row-major) gives the same answer.
    flat = infer(client, {"inputs": [{"name": "input", "shape": [3, 784], "datatype": "FP32",
                                      "data": VECTORS.ravel().tolist()}]})
    np.testing.assert_array_equal(outputs(flat)["probabilities"], got["probabilities"])


def test_a_version_answers_for_itself(client):
    v1 = infer(client, {"inputs": [tensor("input", VECTORS[:1])]}, version=1)
    assert v1.get_json()["model_version"] == "1"
    expected, version = native(client, "/models/mnist/versions/1/predict", json={"inputs": VECTORS[:1].tolist()})
    np.testing.assert_allclose(outputs(v1)["probabilities"], expected, atol=1e-6)
    assert_protocol_error(infer(client, {"inputs": [tensor("input", VECTORS[:1])]}, version=3), 503, "cannot be served")


@pytest.mark.parametrize("datatype", ["FP64", "FP16", "INT64", "INT32", "UINT8"])
def test_vector_models_take_any_numeric_datatype(client, datatype):
    values = np.array([[5, 3, 1, 0], [6, 3, 5, 2]])
    reference = outputs(infer(client, {"inputs": [tensor("input", values.astype(np.float32))]}, model="iris"))
    got = outputs(infer(client, {"inputs": [tensor("input", values, datatype)]}, model="iris"))
    np.testing.assert_array_equal(got["probabilities"], reference["probabilities"])
    labels = ["setosa", "versicolor", "virginica"]  # the iris model's classes (tests/modelgen.py)
    assert got["label"].tolist() == [labels[i] for i in reference["probabilities"].argmax(axis=1)]


def test_64_bit_integers_keep_their_value(client):
    # Beyond INT64's range NumPy holds JSON integers as float64: a UINT64 such as 2**64 - 1 must still
    # reach the model as that number (not wrapped to 0), and an INT64 past its range must be refused,
    # -2**63 - 1 too, which the JSON parser rounds to -2**63.
    row = [2**64 - 1, 2**63, 7] + [1] * 8
    as_floats = outputs(infer(client, {"inputs": [tensor("input", np.array([row], dtype=np.float64), "FP64")]},
                              model="wine"))
    as_uint64 = outputs(infer(client, {"inputs": [{"name": "input", "shape": [1, 11], "datatype": "UINT64",
                                                   "data": row}]}, model="wine"))
    np.testing.assert_array_equal(as_uint64["value"], as_floats["value"])
    for datatype, beyond in (("INT64", 2**63), ("INT64", -2**63 - 1), ("UINT64", 2**64), ("INT32", -2**63 - 1),
                             ("INT64", 10**400)):
        data = {"inputs": [{"name": "input", "shape": [1, 11], "datatype": datatype, "data": [beyond] + [1] * 10}]}
        assert_protocol_error(infer(client, data, model="wine"), 400, f"out of the range of {datatype}")


@pytest.mark.parametrize("datatype", ["FP32", "INT32"])
@pytest.mark.parametrize("data", [[True, False] + [1] * 9, [[1] * 10 + [True]]], ids=["flat", "nested"])
def test_a_boolean_among_numbers_is_refused_not_read_as_1(client, datatype, data):
    # As Triton does: JSON true is not a number, even where NumPy would take it for 1 beside numbers.
    request = {"inputs": [{"name": "input", "shape": [1, 11], "datatype": datatype, "data": data}]}
    assert_protocol_error(infer(client, request, model="wine"), 400, f"must be numbers of type {datatype}")


def test_a_single_number_as_data_is_read_not_refused(client):
    one = infer(client, {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": 0.5}]},
                model="wine")
    assert_protocol_error(one, 400, "Expected [-1,11], got [1,1]")  # refused for its shape, as Triton does


def test_an_image_models_input_tensor_must_hold_pixels_in_0_1(client):
    # 0..255 floats read as [0, 1] vectors saturate every answer: refused, with what to do.
    as_stored = VECTORS[:1] * 255
    assert_protocol_error(infer(client, {"inputs": [tensor("input", as_stored)]}), 400, "divide the pixels by 255")
    assert infer(client, {"inputs": [tensor("input", VECTORS[:1])]}).status_code == 200


def test_images_as_base64_bytes_equal_the_native_upload(client):
    text = base64.b64encode(DIGIT_PNG).decode()
    response = infer(client, {"inputs": [tensor("image", [text, text], "BYTES")],
                              "outputs": [{"name": "probabilities"}]})
    got = outputs(response)
    assert list(got) == ["probabilities"]
    expected, _ = native(client, "/models/mnist/predict", data=DIGIT_PNG, content_type="image/png")
    np.testing.assert_allclose(got["probabilities"], np.repeat(expected, 2, axis=0), atol=1e-6)


def test_raw_pixels_go_through_the_image_pipeline(client):
    pixels = np.asarray(DIGIT)
    square = outputs(infer(client, {"inputs": [tensor("pixels", pixels[np.newaxis], "UINT8")]}))
    flat = outputs(infer(client, {"inputs": [tensor("pixels", pixels.reshape(1, 784), "UINT8")]}))
    image = outputs(infer(client, {"inputs": [tensor("image", [base64.b64encode(DIGIT_PNG).decode()], "BYTES")]}))
    np.testing.assert_allclose(square["probabilities"], image["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(flat["probabilities"], square["probabilities"])


def test_raw_pixels_are_held_to_the_operators_pixel_limits(registry):
    # The limits an operator sets for images hold for pixels sent raw too: they bound the work.
    app = create_app({"registry": registry, "watch": False, "max_image_pixels": 50_000, "max_request_pixels": 60_000})
    app.extensions["scratchnet"].store.refresh()
    client = app.test_client()
    canvas = np.zeros((250, 250), dtype=np.uint8)
    canvas[50:200, 100:150] = 255
    assert_protocol_error(infer(client, {"inputs": [tensor("pixels", canvas[np.newaxis], "UINT8")]}), 413,
                          "The pixel array is 250x250 = 62,500 pixels; the limit is 50,000 pixels")
    two = np.stack([canvas[:200, :200]] * 2)
    assert_protocol_error(infer(client, {"inputs": [tensor("pixels", two, "UINT8")]}), 413,
                          "may declare at most 60,000 pixels in all")
    assert outputs(infer(client, {"inputs": [tensor("pixels", two[:1], "UINT8")]}))["probabilities"].shape == (1, 10)


@pytest.mark.parametrize("path, structure", [
    ("/v2/models/iris/infer",
     '{{"inputs": [{{"name": "input", "shape": [{rows}, 4], "datatype": "FP32", "data": {data}}}]}}'),
    ("/v1/models/iris:predict", '{{"instances": {data}}}'),
    ("/v1/models/iris:predict", '{{"instances": [{{"input": {row}}}, {{"input": {row}}}], "signature_name": ""}}'),
])
def test_protocol_bodies_are_held_to_the_value_limit_before_they_are_parsed(registry, path, structure):
    """Parsing JSON costs ~40 bytes a number: a body over the limit is refused on a count of its commas,
    so even one that would not parse is refused for its size; one at the limit, its structure aside, is not."""
    app = create_app({"registry": registry, "watch": False, "max_vector_values": 8, "max_batch": 2})
    app.extensions["scratchnet"].store.refresh()
    client = app.test_client()
    row = [5.1, 3.5, 1.4, 0.2]
    body = structure.format(rows=2, data=json.dumps([row, row]), row=json.dumps(row))
    assert client.post(path, data=body, content_type="application/json").status_code == 200
    cut = structure.format(rows=8, data=json.dumps([row] * 8), row=json.dumps(row * 8))[:-3]
    response = client.post(path, data=cut, content_type="application/json")
    assert response.status_code == 413 and "more than 8 numbers" in response.get_json()["error"], response.get_data()


def binary_request(header: dict, *chunks: bytes) -> tuple[bytes, dict]:
    text = json.dumps(header).encode()
    return text + b"".join(chunks), {"Inference-Header-Content-Length": str(len(text))}


def read_binary_response(response) -> tuple[dict, dict]:
    """``(JSON header, {output name: raw bytes})`` of a binary response."""
    body = response.get_data()
    size = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(body[:size])
    raw, offset = {}, size
    for output in header["outputs"]:
        length = output.get("parameters", {}).get("binary_data_size")
        if length is not None:
            raw[output["name"]] = body[offset:offset + length]
            offset += length
    assert offset == len(body)
    return header, raw


def test_binary_tensors_both_directions_without_content_type(client):
    body, headers = binary_request(
        {"inputs": [{"name": "input", "shape": [3, 784], "datatype": "FP32",
                     "parameters": {"binary_data_size": VECTORS.nbytes}}],
         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                     {"name": "label", "parameters": {"binary_data": True}},
                     {"name": "index", "parameters": {"binary_data": False}}]},
        VECTORS.astype("<f4").tobytes())
    response = client.post("/v2/models/mnist/infer", data=body, headers=headers)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "application/octet-stream"
    header, raw = read_binary_response(response)
    probabilities = np.frombuffer(raw["probabilities"], dtype="<f4").reshape(3, 10)
    reference = outputs(infer(client, {"inputs": [tensor("input", VECTORS)]}))
    np.testing.assert_array_equal(probabilities, reference["probabilities"])
    labels, offset = [], 0
    while offset < len(raw["label"]):
        (length,) = struct.unpack_from("<I", raw["label"], offset)
        labels.append(raw["label"][offset + 4:offset + 4 + length].decode())
        offset += 4 + length
    assert labels == reference["label"].tolist()
    assert header["outputs"][2]["data"] == reference["index"].tolist()


def test_binary_bytes_tensor_carries_image_files(client):
    elements = b"".join(struct.pack("<I", len(DIGIT_PNG)) + DIGIT_PNG for _ in range(2))
    body, headers = binary_request(
        {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                     "parameters": {"binary_data_size": len(elements)}}],
         "parameters": {"binary_data_output": True}},
        elements)
    response = client.post("/v2/models/mnist/infer", data=body, headers=headers)
    header, raw = read_binary_response(response)
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "label", "index"]
    expected, _ = native(client, "/models/mnist/predict", data=DIGIT_PNG, content_type="image/png")
    probabilities = np.frombuffer(raw["probabilities"], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(probabilities, np.repeat(expected, 2, axis=0), atol=1e-6)
    np.testing.assert_array_equal(np.frombuffer(raw["index"], dtype="<i8"), probabilities.argmax(axis=1))


def test_binary_bytes_beyond_the_elements_of_the_shape_are_refused_where_they_start(client):
    """Every element was read before they were counted: 60 MB of empty elements (4 zero bytes each) for a tensor
    of shape [1] kept a thread 15 s to say how many there were. The elements are read as far as the shape goes."""
    elements = struct.pack("<I", len(DIGIT_PNG)) + DIGIT_PNG + bytes(800_000)
    body, headers = binary_request(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": len(elements)}}]}, elements)
    response = client.post("/v2/models/mnist/infer", data=body, headers=headers)
    assert_protocol_error(response, 400, "input 'image' holds more than the 1 element its shape needs: 800000 bytes "
                                         "follow the last.")


@pytest.mark.parametrize("encoding, pack", [("gzip", gzip.compress), ("deflate", zlib.compress),
                                            ("deflate", lambda b: zlib.compress(b)[2:-4])])  # raw deflate too
def test_compressed_requests_and_responses(client, encoding, pack):
    request = json.dumps({"inputs": [tensor("input", VECTORS)]}).encode()
    response = client.post("/v2/models/mnist/infer", data=pack(request),
                           headers={"Content-Encoding": encoding, "Accept-Encoding": encoding})
    assert response.status_code == 200, response.get_data()
    assert response.headers["Content-Encoding"] == encoding
    unpack = gzip.decompress if encoding == "gzip" else zlib.decompress
    got = json.loads(unpack(response.get_data()))
    reference = infer(client, {"inputs": [tensor("input", VECTORS)]}).get_json()
    assert got["outputs"] == reference["outputs"]


@pytest.mark.parametrize("binary_output", [False, True])
def test_an_answer_is_built_with_its_headers_in_place(client, monkeypatch, binary_output):
    """An answer's Content-Type and Vary were set by the response's parsed properties, made for each answer
    and costing more than the rest of it (18.5 us against 9.4); the headers are the same, in the same order."""
    import werkzeug.sansio.response

    parsed, parse = [], werkzeug.sansio.response.parse_set_header
    monkeypatch.setattr(werkzeug.sansio.response, "parse_set_header",
                        lambda *args: (parsed.append(args[0]), parse(*args))[1])
    body = {"inputs": [tensor("input", VECTORS)], "parameters": {"binary_data_output": binary_output}}
    response = infer(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    names = [name for name, _ in response.headers if name not in ("X-Request-ID", "X-Worker-PID")]
    assert names == ["Content-Type", "Content-Length", *(["Inference-Header-Content-Length"] * binary_output),
                     "Vary", "X-Content-Type-Options", "Cache-Control", "X-Model-Name", "X-Model-Version"]
    assert response.headers["Content-Type"] == ("application/octet-stream" if binary_output else "application/json")
    assert response.headers["Vary"] == "Accept-Encoding"
    assert not parsed, f"{len(parsed)} headers parsed to build the answer"


@pytest.mark.parametrize("accept, coding", [("*", None), ("identity;q=1, gzip;q=0.5", None),
                                            ("gzip;q=0.5, deflate", "deflate"), ("identity;q=0, gzip;q=0.2", "gzip"),
                                            ("br", None)])
def test_the_answer_is_compressed_by_the_coding_the_client_wants_most(client, accept, coding):
    """Identity is one of the codings a client may prefer (first on a tie, as in Triton)."""
    response = infer(client, {"inputs": [tensor("input", VECTORS)]}, headers={"Accept-Encoding": accept})
    assert response.status_code == 200 and response.headers.get("Content-Encoding") == coding
    assert "Accept-Encoding" in response.vary  # compressed or not, a cache must not give it to another client
    if coding is None:
        assert response.get_json()["model_name"] == "mnist"


def test_an_empty_request_id_is_left_out_of_the_answer(client):
    assert "id" not in infer(client, {"id": "", "inputs": [tensor("input", VECTORS)]}).get_json()


def test_a_compressed_bomb_is_refused_before_it_inflates(client, monkeypatch):
    inflated = []  # what each inflater hands back, call by call
    real_inflater = zlib.decompressobj

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.inner = real_inflater(*args, **kwargs)

        def decompress(self, data, max_length=0):
            out = self.inner.decompress(data, max_length)
            inflated.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Recorded)
    bomb = gzip.compress(b" " * 5_000_000)  # 5 MB of spaces in ~5 KB; the limit is 1 MB
    response = client.post("/v2/models/mnist/infer", data=bomb, headers={"Content-Encoding": "gzip"})
    assert_protocol_error(response, 413, "inflates to more than the limit of 1,000,000 bytes: send fewer inputs in one "
                          "request, splitting the batch across requests.")
    assert inflated and sum(inflated) <= 1_000_001  # never more than one byte past the limit in memory
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=b"not gzip",
                                      headers={"Content-Encoding": "gzip"}), 400, "gzip")
    unsupported = client.post("/v2/models/mnist/infer", data=b"{}", headers={"Content-Encoding": "br"})
    assert_protocol_error(unsupported, 400, "br")
    assert unsupported.headers["Accept-Encoding"] == "gzip, deflate"  # RFC 9110 section 15.5.16


def test_x_gzip_is_gzip(client):
    """RFC 9110 section 8.4.1.3: a recipient takes the old name x-gzip as gzip."""
    request = json.dumps({"inputs": [tensor("input", VECTORS)]}).encode()
    response = client.post("/v2/models/mnist/infer", data=gzip.compress(request),
                           headers={"Content-Encoding": "x-gzip"})
    assert response.status_code == 200, response.get_data()
    assert response.get_json()["outputs"] == infer(client, {"inputs": [tensor("input", VECTORS)]}).get_json()["outputs"]


def test_a_gzip_body_of_several_members_is_read_whole(client):
    """RFC 1952 section 2.2: a gzip body is a series of members, read one after another as gunzip reads
    them (here the JSON part and the tensor compressed apart); bytes after the compressed data are refused,
    not dropped."""
    header, headers = binary_request({"inputs": [{"name": "input", "shape": [3, 784], "datatype": "FP32",
                                                  "parameters": {"binary_data_size": VECTORS.nbytes}}],
                                      "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}]},
                                     b"")
    body = gzip.compress(header) + b"\0\0" + gzip.compress(VECTORS.astype("<f4").tobytes())
    response = client.post("/v2/models/mnist/infer", data=body, headers={**headers, "Content-Encoding": "gzip"})
    reference = outputs(infer(client, {"inputs": [tensor("input", VECTORS)]}))
    np.testing.assert_array_equal(outputs(response)["probabilities"], reference["probabilities"])
    request = json.dumps({"inputs": [tensor("input", VECTORS)]}).encode()
    for encoding, pack in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        response = client.post("/v2/models/mnist/infer", data=pack(request) + b"junk",
                               headers={"Content-Encoding": encoding})
        assert_protocol_error(response, 400, f"not valid {encoding} data: 4 bytes follow the end of its compressed")


def test_repository_routes_refuse_a_compressed_body(client, registry):
    """Only infer decodes a Content-Encoding; the repository routes refuse one rather than misread it."""
    packed = gzip.compress(json.dumps({"parameters": {"version": 1}}).encode())
    response = client.post("/v2/repository/models/mnist/load", data=packed,
                           headers={"Content-Encoding": "gzip", **AUTH})
    assert_protocol_error(response, 400, "Content-Encoding gzip is not supported")
    assert serving_json(registry, "mnist") == {}


def test_classification_extension_lists_the_top_classes(client):
    response = infer(client, {"inputs": [tensor("input", VECTORS)],
                              "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]})
    (output,) = response.get_json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [3, 3]
    probabilities = outputs(infer(client, {"inputs": [tensor("input", VECTORS)]}))["probabilities"]
    for row, entries in zip(probabilities, np.reshape(output["data"], (3, 3))):
        indices = [int(entry.split(":")[1]) for entry in entries]
        assert indices == np.argsort(-row, kind="stable")[:3].tolist()
        assert [entry.split(":")[2] for entry in entries] == [str(i) for i in indices]
        assert float(entries[0].split(":")[0]) == pytest.approx(row[indices[0]], abs=1e-6)


def test_classification_ranks_the_output_it_is_asked_on(client):
    """As Triton: the top elements of the named output itself, with labels only where its
    positions are classes; a BYTES output has no class result."""
    got = outputs(infer(client, {"inputs": [tensor("input", VECTORS)]}))
    response = infer(client, {"inputs": [tensor("input", VECTORS)],
                              "outputs": [{"name": "index", "parameters": {"classification": 3}}]})
    (output,) = response.get_json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [3, 1]  # one element per row to rank
    assert output["data"] == [f"{i}:0" for i in got["index"].tolist()]
    response = infer(client, {"inputs": [tensor("input", VECTORS)],
                              "outputs": [{"name": "label", "parameters": {"classification": 2}}]})
    assert_protocol_error(response, 400, "class result not available for output 'label'")
    rows = RNG.normal(size=(2, 11)).astype(np.float32)
    values = outputs(infer(client, {"inputs": [tensor("input", rows)]}, model="wine"))["value"]
    response = infer(client, {"inputs": [tensor("input", rows)],
                              "outputs": [{"name": "value", "parameters": {"classification": 1}}]}, model="wine")
    (output,) = response.get_json()["outputs"]
    assert output["shape"] == [2, 1] and output["data"] == [f"{v:.6f}:0" for v in values.tolist()]


def test_regression_answers_values_in_target_units(client):
    rows = RNG.normal(size=(2, 11)).astype(np.float32)
    got = outputs(infer(client, {"inputs": [tensor("input", rows)]}, model="wine"))
    assert list(got) == ["value"] and got["value"].shape == (2,)
    native_values = client.post("/models/wine/predict", json={"inputs": rows.tolist()}).get_json()["predictions"]
    np.testing.assert_allclose(got["value"], [p["value"] for p in native_values], rtol=1e-6)


# errors in Triton's words ------------------------------------------------------------------------


def one(name="input", shape=(1, 784), datatype="FP32", data=None, **extra):
    values = np.zeros(int(np.prod(shape))).tolist() if data is None else data
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": values, **extra}]}


@pytest.mark.parametrize("body, contains", [
    (one(name="x"), "unexpected inference input 'x' for model 'mnist' (name it 'input', 'image' or 'pixels')"),
    (one(shape=(1, 783)), "unexpected shape for input 'input' for model 'mnist'. Expected [-1,784], got [1,783]"),
    (one(shape=(784,)), "Expected [-1,784], got [784]"),
    (one(datatype="BYTES", data=["a"] * 784), "data-type is 'BYTES', but model 'mnist' expects 'FP32'"),
    (one(datatype="UINT8"), "raw 0-255 pixels go in the input 'pixels'"),
    (one(datatype="FP17"), "data-type is 'FP17'"),
    (one(data=[0.0] * 700), "holds 700 values; its shape [1,784] needs 784."),
    (one(data=[[0.0, 1.0], [2.0]]), "not a regular array"),
    (one(data=["0.5"] * 784), "must be numbers"),
    (one(data=[float("nan")] + [0.0] * 783), "NaN"),
    (one(name="pixels", shape=(1, 28, 28), datatype="UINT8", data=[300] * 784), "out of the range of UINT8"),
    # A finite number past the datatype's range is named as such, not as the Infinity it would become.
    (one(datatype="FP16", data=[0.0, 70000.0] + [0.0] * 782), "out of the range of FP16 (-65504..65504): 70000"),
    (one(data=[1e39] + [0.0] * 783), "out of the range of FP32"),
    (one(data=[0.5, 10**400] + [0.0] * 782), "out of the range of FP32 (-3.40282e+38..3.40282e+38): an integer of 401"),
    (one(name="pixels", shape=(1, 28, 28), datatype="UINT8", data=[0.5] * 784), "must be integers"),
    (one(name="image", shape=(1,), datatype="BYTES", data=["@@not base64@@"]), "not valid base64"),
    (one(name="image", shape=(1,), datatype="BYTES", data=[base64.b64encode(b"GIF89a nope").decode()]), "image"),
    (one(name="image", shape=(1,), datatype="BYTES", data=[5]), "must be strings (BYTES), not a number (5)"),
    (one(name="image", shape=(1,), datatype="BYTES", data=[None]), "must be strings (BYTES), not null"),
    (one(name="image", shape=(2,), datatype="BYTES", data=["x"]),
     "input 'image' holds 1 element; its shape [2] needs 2."),
    ({"inputs": [one()["inputs"][0], one(name="image", shape=(1,), datatype="BYTES", data=["x"])["inputs"][0]]},
     "expected 1 input but got 2 inputs for model 'mnist'"),
    ({**one(), "outputs": [{"name": "logits"}]}, "unexpected inference output 'logits' for model 'mnist' (ask for "
     "'probabilities', 'label' or 'index', or leave outputs out for all of them)"),
    ({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32"}]}, "has no 'data'"),
    ({"inputs": [{"name": "input", "shape": [1, -784], "datatype": "FP32", "data": []}]}, "inputs.0.shape.1"),
    ({"inputs": []}, "In the inference request, inputs: must hold at least 1 item, not 0."),
    ({**one(), "unknown": 1}, "unknown: unknown field"),
    # JSON's words for what was sent, not the name of a class of the service's own
    ([one()], "In the inference request: must be a JSON object, not an array."),
    ({"inputs": [3]}, "inputs.0: must be a JSON object, not a number (3)."),
    (one(shape=(0, 784)), "no input"),
    ({**one(), "outputs": [{"name": "label"}, {"name": "label", "parameters": {"binary_data": True}}]},
     "output 'label' already requested"),  # as Triton: each output once
    (one(name="image", shape=(2,), datatype="BYTES", data=[base64.b64encode(b"x").decode(), "@@"]),
     "input 'image' element 1 is not valid base64"),  # named as the request names it, not images[1]
    (one(name="image", shape=(1,), datatype="BYTES", data=[""]), "input 'image' element 0 is empty"),
    # An image or pixel array that cannot be used is named the same way, whatever the reason.
    (one(name="image", shape=(2,), datatype="BYTES",
         data=[base64.b64encode(DIGIT_PNG).decode(), base64.b64encode(b"GIF89a nope").decode()]),
     "input 'image' element 1: "),
    (one(name="pixels", shape=(2, 28, 28), datatype="UINT8", data=[*synthetic_digit(1).ravel().tolist(), *[0] * 784]),
     "input 'pixels' element 1: "),
])
def test_bad_requests_get_400_with_a_triton_style_message(client, body, contains):
    assert_protocol_error(infer(client, body), 400, contains)


def test_columns_sent_as_inputs_are_told_to_go_in_one_vector(client):
    """One tensor per column of the csv a model was trained on (as a dataframe is sent): Triton's words
    alone named the first column as unexpected, with nothing on how to send the values."""
    body = {"inputs": [{"name": f"x{i}", "shape": [1], "datatype": "FP32", "data": [0.5]} for i in (3, 1, 0, 2)]}
    assert_protocol_error(infer(client, body, model="iris"), 400,
                          "unexpected inference input 'x3' for model 'iris' (its columns are not inputs: send each "
                          "vector as a list of 4 numbers, in the order of the columns model iris v1 was trained on: "
                          "x0, x1, x2, x3, as 'input')")


def test_bad_binary_bodies_get_400(client):
    raw = VECTORS[:1].tobytes()
    header = {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                          "parameters": {"binary_data_size": len(raw) - 4}}]}
    body, headers = binary_request(header, raw[:-4])
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=body, headers=headers), 400,
                          "expecting 3136 bytes")
    header["inputs"][0]["parameters"]["binary_data_size"] = len(raw)
    body, headers = binary_request(header, raw[:-4])
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=body, headers=headers), 400, "remain")
    body, headers = binary_request(header, raw + b"xx")
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=body, headers=headers), 400, "no input claims")
    for length in ("99999", "\xb2", "9" * 5000):  # '²' passes str.isdigit; 5000 digits is past int()'s limit
        assert_protocol_error(client.post("/v2/models/mnist/infer", data=body,
                                          headers={"Inference-Header-Content-Length": length}), 400, "JSON part")
    truncated = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                        "parameters": {"binary_data_size": 6}}]}).encode()
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=truncated + struct.pack("<I", 99) + b"ab",
                                      headers={"Inference-Header-Content-Length": str(len(truncated))}), 400,
                          "announces 99 bytes")
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=b"{not json"), 400, "not valid JSON")
    # Binary tensors without the header length: the body is read as JSON, and the error says what is missing.
    body, _ = binary_request(header, raw)
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=body), 400, "send its length in the "
                          "Inference-Header-Content-Length header")
    plain = json.dumps(header).encode()
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=plain), 400, "the body has no binary part")
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=plain,
                                      headers={"Inference-Header-Content-Length": str(len(plain))}), 400,
                          f"the body ends with its {len(plain)}-byte JSON part (Inference-Header-Content-Length): "
                          "its binary data is missing")
    # 0 is no length for a JSON part (Triton reads it as a raw binary request, which is not taken here).
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=body,
                                      headers={"Inference-Header-Content-Length": "0"}), 400,
                          "Inference-Header-Content-Length is 0")
    assert_protocol_error(client.post("/v2/models/mnist/infer", data=b""), 400, "empty")


@pytest.mark.parametrize("as_binary", [False, True], ids=["json", "binary"])
def test_a_shape_without_elements_is_refused_whatever_its_other_dimensions(client, as_binary):
    """A zero dimension makes the element count 0 whatever the others are, so the data (none) matches
    the shape; dimensions whose product NumPy cannot allocate must still get a 400, not a 500."""
    shape = [0, 2 ** 62, 2 ** 62]
    tensor = {"name": "pixels", "shape": shape, "datatype": "UINT8"}
    if as_binary:
        body, headers = binary_request({"inputs": [{**tensor, "parameters": {"binary_data_size": 0}}]})
        response = client.post("/v2/models/mnist/infer", data=body, headers=headers)
    else:
        response = infer(client, {"inputs": [{**tensor, "data": []}]})
    assert_protocol_error(response, 400, f"input 'pixels' has shape [0,{2 ** 62},{2 ** 62}], which holds no elements")


def test_errors_on_protocol_routes_are_bare_and_never_html(client):
    assert_protocol_error(client.get("/v2/no/such/route"), 404, "no such route")
    response = client.get("/v2/models/mnist/infer")
    assert_protocol_error(response, 405, "use POST")
    assert_protocol_error(infer(client, one(), model="nope"), 404, "nope")
    assert_protocol_error(infer(client, one(), version="x"), 404, "positive integers")
    for version in ("²", "١", "１"):  # str.isdigit takes them; int() refuses '²' and reads the others as 1
        for response in (client.get(f"/v2/models/mnist/versions/{version}"),
                         client.get(f"/v2/models/mnist/versions/{version}/ready"),
                         infer(client, one(), version=version)):
            assert_protocol_error(response, 404, "positive integers")
    # The native API keeps its own error shape.
    assert set(client.get("/models/nope").get_json()) == {"error", "code", "details"}


# model repository extension ----------------------------------------------------------------------


def test_repository_index_lists_every_version_with_its_state(client):
    index = client.post("/v2/repository/index", headers=AUTH).get_json()
    states = {(e["name"], e.get("version")): (e["state"], e["reason"]) for e in index}
    assert states[("mnist", "2")] == ("READY", "")
    assert states[("mnist", "3")][0] == "UNAVAILABLE" and states[("mnist", "3")][1]
    assert states[("wine", "1")] == ("READY", "")
    ready = client.post("/v2/repository/index", json={"ready": True}, headers=AUTH).get_json()
    assert ("mnist", "3") not in {(e["name"], e["version"]) for e in ready} and len(ready) == len(index) - 1
    assert_protocol_error(client.post("/v2/repository/index", json={"ready": "yes"}, headers=AUTH), 400, "ready")


def test_the_repository_index_is_admin_protected_like_the_rest_of_the_extension(client, registry):
    # The index tells which files failed to load and why (paths, checksums): the repository
    # extension is the operator's, as with Triton's restricted model-repository API.
    assert_protocol_error(client.post("/v2/repository/index"), 401, "Authorization")
    assert_protocol_error(client.post("/v2/repository/index", headers={"Authorization": "Bearer wrong"}), 403, "wrong")
    closed = create_app({"registry": registry, "watch": False})
    response = closed.test_client().post("/v2/repository/index", headers=AUTH)
    assert_protocol_error(response, 403, "SCRATCHNET_ADMIN_TOKEN")


@pytest.mark.parametrize("path", ["/v2/repository/index", "/v2/repository/models/mnist/load",
                                  "/v2/repository/models/mnist/unload"])
def test_a_repository_body_of_whitespace_is_not_json(client, path):
    # No body is no request object; a body of whitespace claims to be JSON and holds no value.
    for body in ("\n", "  "):
        response = client.post(path, data=body, content_type="application/json", headers=AUTH)
        assert_protocol_error(response, 400, "JSON")


def serving_json(registry, name) -> dict:
    path = registry / name / "serving.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_unload_takes_a_model_out_of_service_until_load(client, registry):
    assert_protocol_error(client.post("/v2/repository/models/mnist/unload"), 401, "Authorization")
    assert_protocol_error(client.post("/v2/repository/models/mnist/unload",
                                      headers={"Authorization": "Bearer wrong"}), 403, "wrong")
    response = client.post("/v2/repository/models/mnist/unload", headers=AUTH,
                           json={"parameters": {"unload_dependents": False}})
    assert response.status_code == 200 and response.get_json() == {"name": "mnist", "unload": True}
    assert serving_json(registry, "mnist")["unloaded"] is True
    assert client.get("/v2/models/mnist/ready").status_code == 503
    assert client.get("/v2/models/mnist/versions/1/ready").status_code == 503
    assert_protocol_error(infer(client, one()), 503, "unloaded")
    assert_protocol_error(client.get("/v2/models/mnist"), 503, "unloaded")
    native_answer = client.post("/models/mnist/predict", json={"inputs": VECTORS[:1].tolist()})
    assert native_answer.status_code == 503 and native_answer.get_json()["code"] == "model_unloaded"
    assert client.get("/models/mnist").get_json()["unloaded"] is True
    assert {e["state"] for e in client.post("/v2/repository/index", headers=AUTH).get_json() if e["name"] == "mnist"} == \
        {"UNAVAILABLE"}
    # The TF Serving routes answer 503 too, each as its operation documents.
    documented = client.get("/openapi.json").get_json()["paths"]
    for method, path in (("post", ":predict"), ("post", ":classify"), ("post", ":regress"), ("get", "/metadata")):
        response = client.open(f"/v1/models/mnist{path}", method=method.upper(), json={"instances": [[0.0] * 784]})
        assert_protocol_error(response, 503, "unloaded")
        assert "503" in documented[f"/v1/models/{{name}}{path}"][method]["responses"], path
    # Other models keep serving, and an unloaded model does not make the service unready.
    assert client.get("/v2/health/ready").status_code == 200 and client.get("/readyz").status_code == 200
    assert infer(client, {"inputs": [tensor("input", np.zeros((1, 4)))]}, model="iris").status_code == 200

    response = client.post("/v2/repository/models/mnist/load", headers=AUTH)
    assert response.status_code == 200 and response.get_json() == {"name": "mnist", "load": True}
    assert "unloaded" not in serving_json(registry, "mnist")
    assert client.get("/v2/models/mnist/ready").status_code == 200
    assert infer(client, one()).get_json()["model_version"] == "2"


def test_unload_naming_a_version_is_refused_not_taken_for_the_whole_model(client, registry):
    # Load takes parameters.version; unload has none: asked to unload version 1, it must not take
    # every version of the model out of service while answering that it did what was asked.
    for version in (1, "1"):
        response = client.post("/v2/repository/models/mnist/unload", headers=AUTH,
                               json={"parameters": {"version": version}})
        assert_protocol_error(response, 400, "has no parameters.version")
        assert response.get_json()["code"] == "unsupported_parameter"
    assert "unloaded" not in serving_json(registry, "mnist")
    assert infer(client, one()).get_json()["model_version"] == "2"


def test_load_with_a_version_pins_it_like_the_admin_api(client, registry):
    response = client.post("/v2/repository/models/mnist/load", headers=AUTH, json={"parameters": {"version": 1}})
    assert response.status_code == 200
    assert serving_json(registry, "mnist")["pinned"] == 1
    assert client.get("/models/mnist").get_json()["served_version"] == 1
    assert infer(client, one()).get_json()["model_version"] == "1"
    # Triton's way: a config with a version policy; "latest" removes the pin.
    config = json.dumps({"version_policy": {"latest": {"num_versions": 1}}})
    assert client.post("/v2/repository/models/mnist/load", headers=AUTH,
                       json={"parameters": {"config": config}}).status_code == 200
    assert serving_json(registry, "mnist")["pinned"] is None
    assert infer(client, one()).get_json()["model_version"] == "2"
    config = client.get("/v2/models/mnist/config").get_json()  # the config read, its version policy edited
    config["version_policy"] = {"specific": {"versions": [1]}}
    assert client.post("/v2/repository/models/mnist/load", headers=AUTH,
                       json={"parameters": {"config": json.dumps(config)}}).status_code == 200
    assert serving_json(registry, "mnist")["pinned"] == 1
    # The native unpin undoes it: one serving state behind both APIs.
    assert client.post("/models/mnist/unpin", headers=AUTH).status_code == 200
    assert infer(client, one()).get_json()["model_version"] == "2"


@pytest.mark.parametrize("parameters, status, contains", [
    ({"version": 3}, 409, "cannot be activated"),
    ({"version": 9}, 404, "no version 9"),
    ({"version": "x"}, 400, 'parameters.version: "x" is not a version: give a positive integer, such as 3, or'),
    ({"version": 0}, 400, "parameters.version: 0 is not a version"),
    ({"version": True}, 400, "parameters.version: true is not a version"),
    ({"version": "x" * 100}, 400, 'parameters.version: "xxxxxxxxxxxxxxxx... is not a version'),
    ({"version": "3\n"}, 400, 'parameters.version: "3\\n" is not a version: give a positive integer, such as 3, or'),
    ({"version": 1, "config": "{}"}, 400, "once"),
    ({"config": "{not json"}, 400, "not valid JSON"),
    ({"config": '{"version_policy": ' + "9" * 5000 + "}"}, 400,
     "parameters.config is not valid JSON: it holds an integer of over 4300 digits, too long to read."),
    ({"config": json.dumps({"max_batch_size": 8})}, 400, "parameters.config may change only 'version_policy', and "
     "its 'max_batch_size' is not the model's (GET /v2/models/mnist/config shows the model's own): remove it, or send "
     "it as that shows it."),
    ({"config": json.dumps({"name": "fashion", "version_policy": {"latest": {}}})}, 400, "its 'name' is not"),
    ({"config": json.dumps({"instance_group": [{"count": 2}]})}, 400,
     "its 'instance_group' is not the model's (a model's config holds no such member)"),
    ({"config": json.dumps({"version_policy": {"specific": {"versions": [1, 2]}}})}, 400, "one version"),
    ({"config": json.dumps({"version_policy": {"specific": {"versions": ["²"]}}})}, 400, "one version"),
    ({"config": json.dumps({"version_policy": {"specific": {"versions": ["١"]}}})}, 400, "one version"),
    ({"config": json.dumps({"version_policy": {"specific": {"versions": [True]}}})}, 400, "one version"),
    ({"config": json.dumps({"version_policy": {"specific": 1}})}, 400, "one version"),
    ({"file:1/model.npz": "AAAA"}, 400, "registry only"),
])
def test_bad_load_requests_change_nothing(client, registry, parameters, status, contains):
    response = client.post("/v2/repository/models/mnist/load", headers=AUTH, json={"parameters": parameters})
    assert_protocol_error(response, status, contains)
    assert serving_json(registry, "mnist") == {}


def test_load_of_a_model_that_cannot_answer_fails(client, registry, a_poll_later):
    """Triton answers a load only once the model is ready; a 200 would send the client to infer into a 503."""
    publish_corrupt(registry, "broken")
    response = client.post("/v2/repository/models/broken/load", headers=AUTH)
    assert_protocol_error(response, 409, "not an .npz archive")

    def states():
        return [e["state"] for e in client.post("/v2/repository/index", headers=AUTH).get_json()
                if e["name"] == "broken"]
    assert states() == ["LOADING"]  # a file just written may still be being written: its failure counts
    store = client.application.extensions["scratchnet"].store
    a_poll_later(store)  # once it has stayed as it is for a poll interval
    store.refresh()
    assert states() == ["UNAVAILABLE"]


def test_a_failed_load_leaves_an_unloaded_model_unloaded_and_the_service_ready(client, registry):
    # Every version of "broken" fails to load: the operator unloads it so that /readyz is 200 again.
    # A load that fails (409) must change nothing: clearing the unload would make the service unready.
    publish_corrupt(registry, "broken")
    client.application.extensions["scratchnet"].store.refresh()  # the watcher's pass (none runs here)
    assert client.get("/readyz").status_code == 503
    assert client.post("/v2/repository/models/broken/unload", headers=AUTH).status_code == 200
    assert client.get("/readyz").status_code == 200
    assert_protocol_error(client.post("/v2/repository/models/broken/load", headers=AUTH), 409, "not an .npz archive")
    latest = {"parameters": {"config": json.dumps({"version_policy": {"latest": {"num_versions": 1}}})}}
    assert_protocol_error(client.post("/v2/repository/models/broken/load", headers=AUTH, json=latest), 409,
                          "not an .npz archive")
    assert serving_json(registry, "broken")["unloaded"] is True
    assert client.get("/models/broken").get_json()["unloaded"] is True
    assert client.get("/readyz").status_code == 200 and client.get("/v2/health/ready").status_code == 200


def test_repository_routes_refuse_unknown_models(client):
    assert_protocol_error(client.post("/v2/repository/models/nope/load", headers=AUTH), 404, "nope")
    assert_protocol_error(client.post("/v2/repository/models/nope/unload", headers=AUTH), 404, "nope")


def test_openapi_documents_the_v2_routes(client):
    doc = client.get("/openapi.json").get_json()
    infer_op = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer_op["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert infer_op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/InferRequest")
    assert infer_op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ProtocolError")
    assert doc["paths"]["/v2/repository/models/{name}/load"]["post"]["security"] == [{"bearer": []}]
    assert "InferResponse" in doc["components"]["schemas"]


def test_whole_numbers_written_with_a_point_are_integers_as_the_published_schema_says(client):
    """OpenAPI 3.1's JSON Schema counts 4.0 an integer: a shape of [1.0, 4.0] and a load of version
    1.0 were refused, though the document published for them admits them."""
    request = {"inputs": [tensor("input", np.zeros((1, 4)))]}
    request["inputs"][0]["shape"] = [1.0, 4.0]
    response = infer(client, request, model="iris")
    assert response.status_code == 200 and response.get_json()["outputs"][0]["shape"][0] == 1
    assert client.post("/v2/repository/models/mnist/load", headers=AUTH,
                       json={"parameters": {"version": 1.0}}).status_code == 200
    assert client.get("/models/mnist").get_json()["pinned"] == 1
    assert_protocol_error(infer(client, {"inputs": [{**tensor("input", np.zeros((1, 4))), "shape": [1, 4.5]}]},
                                model="iris"), 400, "shape")
