"""TF Serving / KServe V1 REST with ``requests``, the way TF Serving's documentation shows it, against
the service in a real Gunicorn: row and columnar requests, ``b64`` images, version and label
paths, model status, and errors with the ``"error"`` message TF Serving's clients read. Answers equal the
native API's."""

import base64
import gzip
import io
import json
import re
import socket
import time

import numpy as np
import pytest
import requests

from images import encode, paper, synthetic_digit
from modelgen import publish_corrupt, publish_model
from server import ServiceProcess

TOKEN = "v1-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RNG = np.random.default_rng(3)
PNGS = [encode(paper(synthetic_digit(seed)), "PNG") for seed in (0, 1)]
B64 = [base64.b64encode(png).decode() for png in PNGS]
IRIS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
NOT_AN_IMAGE = base64.b64encode(b"GIF89a nope").decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    publish_model(root, "mnist", seed=1)
    publish_model(root, "mnist", seed=2)   # served
    publish_corrupt(root, "mnist")         # v3: refused
    publish_model(root, "iris", kind="vector")
    publish_model(root, "wine", kind="regression")
    with ServiceProcess(root, workers=2, threads=4, poll_interval=0.2, admin_token=TOKEN) as service:
        requests.put(service.url + "/models/mnist/labels/stable", json={"version": 1}, headers=AUTH,
                     timeout=10).raise_for_status()
        # The worker that took the PUT knows the label at once; the others within a poll interval.
        deadline, in_a_row = time.monotonic() + 10, 0
        while in_a_row < 12 and time.monotonic() < deadline:
            known = requests.get(service.url + "/models/mnist", timeout=10).json()["labels"].get("stable") == 1
            in_a_row = in_a_row + 1 if known else 0
            time.sleep(0.05)
        assert in_a_row >= 12, "not every worker learned the label 'stable' within 10 s"
        yield service


def post(server, path: str, body) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=30)


def native(server, path: str, **kwargs) -> list[dict]:
    response = requests.post(server.url + path, params={"top_k": 10}, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def probabilities(prediction: dict, labels: list[str]) -> list[float]:
    by_label = {entry["label"]: entry["probability"] for entry in prediction["top_k"]}
    return [by_label[label] for label in labels]


def assert_error(response, status: int, contains: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "code", "details"} and contains in body["error"], body


# predict -----------------------------------------------------------------------------------------


def test_row_format_vectors(server):
    response = post(server, "/v1/models/iris:predict", {"instances": IRIS})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = native(server, "/models/iris/predict", json={"inputs": IRIS})
    labels = ["setosa", "versicolor", "virginica"]
    assert len(predictions) == len(expected) == len(IRIS)
    for got, want in zip(predictions, expected):
        assert set(got) == {"probabilities", "label", "index"}
        np.testing.assert_allclose(got["probabilities"], probabilities(want, labels), atol=1e-6)
        assert got["label"] == want["label"] == labels[got["index"]]


def test_columnar_format_vectors_bare_and_named(server):
    rows = post(server, "/v1/models/iris:predict", {"instances": IRIS}).json()["predictions"]
    for body in ({"inputs": IRIS}, {"inputs": {"input": IRIS}}, {"signature_name": "serving_default", "inputs": IRIS},
                 {"signature_name": "", "inputs": IRIS}):  # empty is the default signature, as /metadata says
        response = post(server, "/v1/models/iris:predict", body)
        assert response.status_code == 200, response.text
        outputs = response.json()["outputs"]
        assert outputs["probabilities"] == [r["probabilities"] for r in rows]
        assert outputs["label"] == [r["label"] for r in rows] and outputs["index"] == [r["index"] for r in rows]
    one = post(server, "/v1/models/iris:predict", {"inputs": IRIS[0]}).json()["outputs"]  # a single vector
    np.testing.assert_allclose(one["probabilities"], [rows[0]["probabilities"]], atol=1e-6)


@pytest.mark.parametrize("body", [
    {"instances": [{"b64": B64[0]}, {"b64": B64[1]}]},
    {"instances": [{"image": {"b64": B64[0]}}, {"image": {"b64": B64[1]}}]},
    {"inputs": {"image": [{"b64": B64[0]}, {"b64": B64[1]}]}},
    # Each image a one-element list: how a client sends a string input of shape [-1, 1].
    {"instances": [[{"b64": B64[0]}], [{"b64": B64[1]}]]},
    {"instances": [{"image": [{"b64": B64[0]}]}, {"image": [{"b64": B64[1]}]}]},
    {"inputs": {"image": [[{"b64": B64[0]}], [{"b64": B64[1]}]]}},
    {"inputs": [[{"b64": B64[0]}], [{"b64": B64[1]}]]},
], ids=["rows", "named-rows", "columns", "nested-rows", "nested-named-rows", "nested-columns", "nested-bare-columns"])
def test_b64_images_equal_the_native_upload(server, body):
    response = post(server, "/v1/models/mnist:predict", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    got = answer["predictions"] if "predictions" in answer else \
        [{"probabilities": p} for p in answer["outputs"]["probabilities"]]
    expected = native(server, "/models/mnist/predict", files=[("file", ("a.png", PNGS[0])), ("file", ("b.png", PNGS[1]))])
    digits = [str(d) for d in range(10)]
    assert len(got) == len(expected) == 2
    for row, want in zip(got, expected):
        np.testing.assert_allclose(row["probabilities"], probabilities(want, digits), atol=1e-6)


def test_version_and_label_paths(server):
    x = RNG.random((1, 784)).tolist()
    digits = [str(d) for d in range(10)]
    v1 = native(server, "/models/mnist/versions/1/predict", json={"inputs": x})[0]
    for path in ("/v1/models/mnist/versions/1:predict", "/v1/models/mnist/labels/stable:predict"):
        response = post(server, path, {"instances": x})
        assert response.status_code == 200 and response.headers["X-Model-Version"] == "1"
        np.testing.assert_allclose(response.json()["predictions"][0]["probabilities"], probabilities(v1, digits),
                                   atol=1e-6)
    served = post(server, "/v1/models/mnist:predict", {"instances": x})
    assert served.headers["X-Model-Version"] == "2"


def test_regression_answers_plain_values(server):
    rows = RNG.normal(size=(2, 11)).tolist()
    predictions = post(server, "/v1/models/wine:predict", {"instances": rows}).json()["predictions"]
    expected = [p["value"] for p in native(server, "/models/wine/predict", json={"inputs": rows})]
    np.testing.assert_allclose(predictions, expected, rtol=1e-6)
    assert post(server, "/v1/models/wine:predict", {"inputs": rows}).json()["outputs"] == predictions


def test_raw_pixel_rows_go_through_the_image_pipeline(server):
    pixels = np.asarray(paper(synthetic_digit(1), side=28)).tolist()
    from_pixels = post(server, "/v1/models/mnist:predict", {"instances": [pixels]}).json()["predictions"][0]
    png = encode(paper(synthetic_digit(1), side=28), "PNG")
    from_png = post(server, "/v1/models/mnist:predict",
                    {"instances": [{"b64": base64.b64encode(png).decode()}]}).json()["predictions"][0]
    np.testing.assert_allclose(from_pixels["probabilities"], from_png["probabilities"], atol=1e-6)


# status ------------------------------------------------------------------------------------------


def test_model_status_like_tf_serving(server):
    status = requests.get(server.url + "/v1/models/mnist", timeout=10).json()
    by_version = {s["version"]: s for s in status["model_version_status"]}
    assert by_version["2"] == {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert by_version["1"]["state"] == "AVAILABLE"
    assert by_version["3"]["state"] == "END" and by_version["3"]["status"]["error_code"] == "UNKNOWN"
    assert by_version["3"]["status"]["error_message"]
    assert status["name"] == "mnist" and status["ready"] is True
    one = requests.get(server.url + "/v1/models/mnist/versions/1", timeout=10).json()
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    labelled = requests.get(server.url + "/v1/models/mnist/labels/stable", timeout=10).json()
    assert labelled["model_version_status"] == one["model_version_status"]
    assert requests.get(server.url + "/v1/models", timeout=10).json() == {"models": ["iris", "mnist", "wine"]}


def test_model_metadata_like_tf_serving(server):
    def tensor(dtype, *sizes):
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(s), "name": ""} for s in sizes],
                                                 "unknown_rank": False}}

    def signature(name, path=""):
        answer = requests.get(server.url + f"/v1/models/{name}{path}/metadata", timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        (only,) = body["metadata"]["signature_def"]["signature_def"].items()
        assert only[0] == "serving_default" and only[1]["method_name"] == "tensorflow/serving/predict"
        for tensors in (only[1]["inputs"], only[1]["outputs"]):
            for key, info in tensors.items():
                assert info.pop("name") == key
        return body["model_spec"], only[1]["inputs"], only[1]["outputs"]

    spec, inputs, outputs = signature("mnist")
    assert spec == {"name": "mnist", "signature_name": "", "version": "2"}
    assert inputs == {"input": tensor("DT_FLOAT", -1, 784), "image": tensor("DT_STRING", -1),
                      "pixels": tensor("DT_UINT8", -1, 28, 28)}
    assert outputs == {"probabilities": tensor("DT_FLOAT", -1, 10), "label": tensor("DT_STRING", -1),
                       "index": tensor("DT_INT64", -1)}
    assert signature("mnist", "/versions/1")[0]["version"] == "1"
    assert signature("mnist", "/labels/stable")[0]["version"] == "1"
    spec, inputs, outputs = signature("iris")
    assert inputs == {"input": tensor("DT_FLOAT", -1, 4)} and outputs["probabilities"] == tensor("DT_FLOAT", -1, 3)
    assert signature("wine")[2] == {"value": tensor("DT_FLOAT", -1)}
    # What the signature names is what predict takes.
    response = post(server, "/v1/models/mnist:predict", {"inputs": {"image": [{"b64": B64[0]}]}})
    assert set(response.json()["outputs"]) == set(outputs)


# errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, body, status, contains", [
    ("/v1/models/iris:predict", {"instances": IRIS, "inputs": IRIS}, 400, "either 'instances'"),
    ("/v1/models/iris:predict", {}, 400, "either 'instances'"),
    ("/v1/models/iris:predict", {"instances": []}, 400, "non-empty list"),
    ("/v1/models/iris:predict", {"instances": [[1.0, 2.0]]}, 400, "expects 4"),
    ("/v1/models/iris:predict", {"instances": [[1.0, "x", 2.0, 3.0]]}, 400, "not a number"),
    ("/v1/models/iris:predict", {"signature_name": "classify", "instances": IRIS}, 400, "'classify' not found"),
    ("/v1/models/iris:predict", {"instances": IRIS, "extra": 1}, 400, "extra: unknown field"),
    ("/v1/models/mnist:predict", {"instances": [{"b64": "%%%"}]}, 400, "instances[0] is not valid base64"),
    ("/v1/models/mnist:predict", {"inputs": {"image": [{"b64": B64[0]}, {"b64": ""}]}}, 400, "inputs[1] is empty"),
    ("/v1/models/mnist:predict", {"instances": [{"b64": B64[0]}, {"b64": NOT_AN_IMAGE}]}, 400, "instances[1]: "),
    ("/v1/models/mnist:predict", {"inputs": {"image": [{"b64": B64[0]}, {"b64": NOT_AN_IMAGE}]}}, 400, "inputs[1]: "),
    ("/v1/models/mnist:predict", {"instances": [{"pixels": synthetic_digit(1).tolist()},
                                                {"pixels": [[0] * 28] * 28}]}, 400, "instances[1]: "),
    ("/v1/models/mnist:predict", {"instances": [[{"b64": B64[0]}, {"b64": B64[1]}]]}, 400,
     "instances[0] holds 2 images"),
    ("/v1/models/mnist:predict", {"instances": [[{"b64": B64[0]}, 0.5]]}, 400, "instances[0] mixes objects"),
    ("/v1/models/mnist:predict", {"instances": ["plain text"]}, 400, '{"b64"'),
    ("/v1/models/mnist:predict", {"instances": [{"b64": B64[0]}, [0.0] * 784]}, 400, "mix the inputs"),
    ("/v1/models/mnist:predict", {"instances": [{"photo": {"b64": B64[0]}}]}, 400, "'photo'"),
    ("/v1/models/mnist:predict", {"instances": [[[0, 1], [2]]]}, 400, "regular array"),
    ("/v1/models/iris:predict", {"instances": [IRIS[:1]]}, 400,
     "got 3 levels of nesting (shape [1, 1, 4]): send each vector as one flat list of 4 numbers"),
    ("/v1/models/mnist/versions/3:predict", {"instances": IRIS}, 503, "cannot be served"),
    ("/v1/models/mnist/labels/beta:predict", {"instances": IRIS}, 404, "no label 'beta'"),
])
def test_errors_are_tf_serving_style(server, path, body, status, contains):
    assert_error(post(server, path, body), status, contains)


V2_BODY = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": IRIS}]}


@pytest.mark.parametrize("path, body, status, says", [
    ("/models/iris/predict", V2_BODY, 422, "The JSON body is a KServe V2 inference request (named tensors): POST it to "
     '/v2/models/iris/infer; this route takes {"inputs": [[...numbers...]]} or {"images": ["<base64>"]}.'),
    ("/models/iris/predict", {"instances": IRIS}, 422, "The JSON body is a TF Serving predict request ('instances'): "
     "POST it to /v1/models/iris:predict"),
    ("/v1/models/iris:predict", V2_BODY, 400, "The body is a KServe V2 inference request (named tensors): POST it to "
     '/v2/models/iris/infer; this route takes {"instances": [...]} or {"inputs": ...}.'),
    ("/v1/models/mnist:predict", {"images": B64[:1]}, 400, "The body is a request of the native API ('images'): POST "
     "it to /models/mnist/predict"),
    ("/v2/models/iris/infer", {"instances": IRIS}, 400, "The body is a TF Serving predict request ('instances'): "
     "POST it to /v1/models/iris:predict; this route takes {\"inputs\": [{\"name\": ..., "),
    ("/v2/models/mnist/infer", {"images": B64[:1]}, 400, "The body is a request of the native API ('images'): POST "
     "it to /models/mnist/predict"),
])
def test_a_body_of_another_api_is_told_where_it_goes(server, path, body, status, says):
    """The service speaks three APIs, and a client moving between them sends one's body to another's route: a V2
    request on the native route was told that "values named in an object are not read", a TF Serving one that
    'instances' is an unknown field, and neither was told which route takes it."""
    response = requests.post(server.url + path, json=body, timeout=30)
    assert response.status_code == status and says in response.json()["error"], response.text
    goes_to = re.search(r"POST it to (\S+?);", response.json()["error"]).group(1)
    assert requests.post(server.url + goes_to, json=body, timeout=30).status_code == 200


PICTURE_AS_JSON = [
    ("/v1/models/mnist:predict", '{"instances": [{"b64": "<base64>"}]}', {"instances": [{"b64": B64[0]}]}),
    ("/v2/models/mnist/infer", 'the BYTES input \'image\': {"inputs": [{"name": "image", "shape": [1], '
     '"datatype": "BYTES", "data": ["<base64>"]}]}',
     {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [B64[0]]}]}),
]


@pytest.mark.parametrize("path, told, body", PICTURE_AS_JSON, ids=["v1", "v2"])
def test_a_picture_file_posted_whole_to_a_protocol_route_is_told_how_to_send_it(server, path, told, body):
    """``curl --data-binary @digit.png`` or ``curl -F image=@digit.png``, as the native API takes a picture, sent
    to TF Serving's or V2's route was answered "The body is not valid JSON: 'utf-8' codec can't decode byte 0x89
    in position 0", which says neither what the body is nor what to send. The answer says both, and doing what
    it says is answered."""
    response = requests.post(server.url + path, data=PNGS[0], headers={"Content-Type": "image/png"}, timeout=30)
    assert_error(response, 400, f"The body is a PNG image, not the JSON this route reads: send the file's bytes in "
                                f"base64 as {told}.")
    form = requests.post(server.url + path, files={"image": ("digit.png", PNGS[0], "image/png")}, timeout=30)
    assert_error(form, 400, f"The body is a multipart form, not the JSON this route reads: send each picture "
                            f"file's bytes in base64 as {told}.")
    assert requests.post(server.url + path, json=body, timeout=30).status_code == 200


@pytest.mark.parametrize("path, vectors", [
    ("/v1/models/iris:predict", 'send "instances": [[...4 numbers...]]'),
    ("/v2/models/iris/infer", "send the input 'input', a FP32 tensor of shape [n, 4]"),
], ids=["v1", "v2"])
def test_a_native_body_for_a_vector_model_is_told_what_it_reads(server, path, vectors):
    response = requests.post(server.url + path, data=PNGS[0], timeout=30)
    assert_error(response, 400, f"The body is a PNG image, not the JSON this route reads: model iris v1 reads "
                                f"vectors of 4 numbers, not images: {vectors}")
    array = io.BytesIO()
    np.save(array, np.array(IRIS, dtype=np.float32))
    response = requests.post(server.url + path, data=array.getvalue(), headers={"Content-Type": "application/x-npy"},
                             timeout=30)
    rows = vectors.replace("send ", "send its rows as ", 1)
    assert_error(response, 400, f"The body is a .npy array, not the JSON this route reads: {rows}.")


def test_values_sent_by_column_name_are_told_the_columns_order(server):
    """A client of a model trained on a csv sent its values named by the csv's columns, and was told the
    model takes 'input', or that a value is an object, without the order in which to send them."""
    order = "send each vector as a list of 4 numbers, in the order of the columns model iris v1 was trained on: " \
            "x0, x1, x2, x3"
    named = dict(zip(["x3", "x0", "x2", "x1"], IRIS[0]))
    for body in ({"instances": [named]}, {"inputs": {name: [value] for name, value in named.items()}}):
        assert_error(post(server, "/v1/models/iris:predict", body), 400, f"(its columns are not inputs: {order}, "
                                                                         "as 'input').")
    for body in ({"inputs": [named]}, {"inputs": named}):
        assert_error(post(server, "/models/iris/predict", body), 422, f"Values named in an object are not read: "
                                                                       f"{order}.")
    assert_error(post(server, "/models/mnist/predict", {"inputs": {"a": 1}}), 422,
                 "Values named in an object are not read: send each vector as a list of 784 numbers.")


def test_status_errors_and_methods(server):
    assert_error(requests.get(server.url + "/v1/models/mnist/labels/beta/metadata", timeout=10), 404, "no label 'beta'")
    assert_error(requests.get(server.url + "/v1/models/mnist/versions/3/metadata", timeout=10), 503, "cannot be served")
    for method in ("GET", "PUT", "DELETE"):  # a predict path is never taken for a status path
        response = requests.request(method, server.url + "/v1/models/mnist/versions/2:predict", timeout=10)
        assert_error(response, 405, "use POST")
        assert {m.strip() for m in response.headers["Allow"].split(",")} == {"OPTIONS", "POST"}
    options = requests.options(server.url + "/v1/models/mnist:predict", timeout=10)
    assert options.status_code == 204 and "Content-Type" not in options.headers and options.content == b""
    assert {m.strip() for m in options.headers["Allow"].split(",")} == {"OPTIONS", "POST"}
    assert_error(requests.post(server.url + "/v1/models/iris:predict", data=b"{oops", timeout=10), 400, "JSON")


NO_MODEL = "There is no model 'nope' (models: "
NO_VERSION = "Model mnist has no version 9 (versions: "
NO_ZERO = "Version '0' does not exist: versions are positive integers."


@pytest.mark.parametrize("method, path, message, then", [
    ("POST", "/v1/models/nope:predict", "Servable not found for request: Latest(nope)", NO_MODEL),
    ("POST", "/v1/models/nope/versions/1:predict", "Servable not found for request: Specific(nope, 1)", NO_MODEL),
    ("POST", "/v1/models/nope/labels/stable:predict", "Servable not found for request: Latest(nope)", NO_MODEL),
    ("POST", "/v1/models/mnist/versions/9:predict", "Servable not found for request: Specific(mnist, 9)", NO_VERSION),
    ("POST", "/v1/models/nope:classify", "Servable not found for request: Latest(nope)", NO_MODEL),
    ("POST", "/v1/models/mnist/versions/9:regress", "Servable not found for request: Specific(mnist, 9)", NO_VERSION),
    ("GET", "/v1/models/nope/metadata", "Servable not found for request: Latest(nope)", NO_MODEL),
    ("GET", "/v1/models/mnist/versions/9/metadata", "Servable not found for request: Specific(mnist, 9)", NO_VERSION),
    ("GET", "/v1/models/nope", "Could not find any versions of model nope", NO_MODEL),
    ("GET", "/v1/models/nope/versions/1", "Could not find version 1 of model nope", NO_MODEL),
    ("GET", "/v1/models/mnist/versions/9", "Could not find version 9 of model mnist", NO_VERSION),
    # Digits that no version can be: TF Serving reads them as a number all the same, and its words name it.
    ("POST", "/v1/models/mnist/versions/0:predict", "Servable not found for request: Specific(mnist, 0)", NO_ZERO),
    ("POST", "/v1/models/mnist/versions/00:regress", "Servable not found for request: Specific(mnist, 0)", "Version "),
    ("GET", "/v1/models/mnist/versions/0/metadata", "Servable not found for request: Specific(mnist, 0)", NO_ZERO),
    ("GET", "/v1/models/mnist/versions/0", "Could not find version 0 of model mnist", NO_ZERO),
    ("POST", "/v1/models/mnist/versions/12345678901:predict",
     "Servable not found for request: Specific(mnist, 12345678901)", "Version 12345678901 does not exist: "),
])
def test_an_unknown_model_or_version_is_refused_in_tf_serving_words(server, method, path, message, then):
    """TF Serving's sentences (its prediction service's, and its model status service's), which its
    clients' users search for, then the service's own, which names what there is to ask for
    instead; a label the model lacks keeps the service's own words (above)."""
    body = {"instances": IRIS} if method == "POST" else None
    response = requests.request(method, server.url + path, json=body, timeout=10)
    assert_error(response, 404, message)
    assert response.json()["error"].startswith(f"{message}. {then}")


def test_a_model_without_a_version_yet_is_not_found_as_tf_serving_says(tmp_path):
    """A model SCRATCHNET_MODELS names, its first version not published yet, had a 200 with an empty
    model_version_status, which TF Serving never sends (a client reading its first state failed);
    TF Serving answers 404 until a version is there, and so does this, the same on every worker."""
    publish_model(tmp_path, "mnist")
    with ServiceProcess(tmp_path, workers=2, threads=2, env={"SCRATCHNET_MODELS": "mnist,fresh"}) as service:
        for _ in range(4):
            response = requests.get(service.url + "/v1/models/fresh", timeout=10)
            assert_error(response, 404, "Could not find any versions of model fresh. The registry has no version")
        publish_model(tmp_path, "fresh", kind="vector")
        deadline, in_a_row = time.monotonic() + 10, 0
        while in_a_row < 8:  # every worker, within a poll interval
            assert time.monotonic() < deadline, "the model's first version was not found within 10 s"
            response = requests.get(service.url + "/v1/models/fresh", timeout=10)
            found = response.status_code == 200
            in_a_row = in_a_row + 1 if found else 0
            if found:
                assert [s["state"] for s in response.json()["model_version_status"]] == ["AVAILABLE"]
            time.sleep(0.05)


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_classify_and_regress_say_what_to_use_instead(server, verb):
    """TF Serving's tf.Example verbs: an error naming :predict, not a 405 pointing at GET."""
    for path in (f"/v1/models/wine:{verb}", f"/v1/models/wine/versions/1:{verb}"):
        assert_error(post(server, path, {"examples": [{"x": 1.0}]}), 400, "to :predict instead")


@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A1", "%EF%BC%91"])  # '²', '١', '１': not ASCII digits
def test_a_version_is_ascii_digits(server, version):
    assert_error(requests.get(server.url + f"/v1/models/mnist/versions/{version}", timeout=10), 404,
                 "positive integers")
    assert_error(post(server, f"/v1/models/iris/versions/{version}:predict", {"instances": IRIS}), 404,
                 "positive integers")


def test_parameters_beside_the_instances_are_accepted(server):
    """Vertex AI sends ``{"instances": [...], "parameters": {...}}`` to a prediction container."""
    plain = post(server, "/v1/models/iris:predict", {"instances": IRIS})
    with_parameters = post(server, "/v1/models/iris:predict", {"instances": IRIS, "parameters": {"confidence": 0.5}})
    assert plain.status_code == with_parameters.status_code == 200, with_parameters.text
    assert with_parameters.json() == plain.json()


def test_a_gzip_body_is_inflated_as_tf_serving_does(server):
    """TF Serving inflates a request sent with ``Content-Encoding: gzip`` (large b64 batches shrink
    about tenfold); the answer equals the uncompressed request's."""
    body = json.dumps({"instances": [{"b64": B64[0]}, {"b64": B64[1]}]}).encode()
    plain = post(server, "/v1/models/mnist:predict", json.loads(body))
    assert plain.status_code == 200, plain.text
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    packed = requests.post(server.url + "/v1/models/mnist:predict", data=gzip.compress(body), headers=headers,
                           timeout=30)
    assert packed.status_code == 200, packed.text
    assert packed.json() == plain.json()
    bomb = gzip.compress(b" " * (64 * 1024 * 1024 + 1))  # past SCRATCHNET_MAX_BODY_BYTES once inflated
    assert_error(requests.post(server.url + "/v1/models/mnist:predict", data=bomb, headers=headers, timeout=30),
                 413, "inflates to more than the limit of 64 MiB (67,108,864 bytes): send fewer inputs in one request")
    assert_error(requests.post(server.url + "/v1/models/mnist:predict", data=body, headers=headers, timeout=30),
                 400, "not valid gzip data")
    assert_error(requests.post(server.url + "/v1/models/mnist:predict", data=body, timeout=30,
                               headers={**headers, "Content-Encoding": "br"}), 400, "Content-Encoding br")


@pytest.mark.parametrize("path", ["/v1/models/nope:predict", "/v1/models/mnist/versions/9:predict",
                                  "/v1/models/nope:classify"])
def test_an_error_before_the_body_is_used_keeps_the_connection(server, path):
    """Gunicorn drains at most 64 KiB of a body the application left unread, then drops the connection
    it has just answered "keep-alive" on: the body is read before the model is looked up."""
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"instances": [[0.5] * 784] * 40}).encode()  # ~120 KB
    assert len(body) > 64 * 1024
    with socket.create_connection((host, int(port)), timeout=10) as sock, sock.makefile("rb") as answers:
        request = (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        for expected in (404, 200):
            sock.sendall(request if expected == 404 else b"GET /v1/models/mnist HTTP/1.1\r\nHost: test\r\n\r\n")
            status = answers.readline()
            assert status.startswith(f"HTTP/1.1 {expected} ".encode()), status
            length = 0
            while (line := answers.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                length = int(value) if name.lower() == "content-length" else length
            answers.read(length)
