"""The native HTTP API through Flask's test client: every route, every body type, every error
status with its JSON body, the admin routes, metrics, logs and the OpenAPI document."""

import base64
import gzip
import html
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from allocations import traced_peak
from images import FORMAT_MODES, encode, paper, render_user_digit, synthetic_digit, to_mode
from modelgen import publish_corrupt, publish_model
from service import api, inputs, metrics, schemas
from service.protocols import v1, v2
from service.app import create_app
from service.errors import ClientWentAway
from service.logs import configure_logging
from shared.forward import Model
from users import run_as
from wsgi import chunked

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIGIT_PNG = encode(paper(synthetic_digit(1)), "PNG")


@pytest.fixture
def registry(tmp_path):
    root = tmp_path / "models"
    publish_model(root, "mnist", seed=1)              # v1: random
    publish_model(root, "mnist", seed=2, favour=7)    # v2: always "7"; the served version
    publish_corrupt(root, "mnist")                     # v3: refused
    publish_model(root, "iris", kind="vector")
    publish_model(root, "wine", kind="regression")
    return root


def make_app(registry, **config):
    settings = {"registry": registry, "watch": False, "admin_token": TOKEN, "max_body_bytes": 4_000_000,
                "max_image_pixels": 1_000_000, "max_batch": 64, **config}
    app = create_app(settings)
    app.extensions["scratchnet"].store.refresh()
    return app


@pytest.fixture
def app(registry):
    return make_app(registry)


@pytest.fixture
def client(app):
    return app.test_client()


def assert_error(response, status: int, code: str | None = None, contains: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "code", "details"} and isinstance(body["details"], list)
    assert body["error"] and "Traceback" not in body["error"]
    if code:
        assert body["code"] == code, body
    if contains:
        assert contains in body["error"], body
    return body


def assert_schema(schema, body):
    """The body validates against the response model and has no field the document does not name."""
    schema.model_validate(body)
    assert set(body) <= set(schema.model_fields), set(body) - set(schema.model_fields)


def vectors(n, size=784, seed=0):
    return np.random.default_rng(seed).random((n, size), dtype=np.float32)


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_declaring(shape: tuple, data: bytes) -> bytes:
    """A .npy file whose header declares ``shape`` (float32) whatever ``data`` holds."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def serving_state(registry, name="mnist") -> dict | None:
    path = registry / name / "serving.json"
    return json.loads(path.read_text()) if path.exists() else None


# predictions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_a_raw_image_of_each_format(client, fmt):
    mode = "RGB" if "RGB" in FORMAT_MODES[fmt] else "L"
    data = encode(to_mode(paper(synthetic_digit(1)), mode), fmt)
    response = client.post("/predict", data=data, content_type=f"image/{fmt.lower()}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_schema(schemas.PredictResponse, body)
    assert body["model"] == {"name": "mnist", "version": 2}
    (prediction,) = body["predictions"]
    assert prediction["label"] == "7" and prediction["index"] == 7 and prediction["confidence"] > 0.99
    assert len(prediction["top_k"]) == 3 and prediction["top_k"][0] == {"label": "7", "probability": prediction["confidence"]}
    assert response.headers["X-Model-Version"] == "2" and response.headers["X-Model-Name"] == "mnist"


def test_user_images_from_a_canvas_and_a_photo(client):
    for kind in ("canvas_png", "photo_jpeg", "colour_png"):
        data = render_user_digit(synthetic_digit(0), kind)
        response = client.post("/models/mnist/predict", data=data, content_type="image/png")
        assert response.status_code == 200 and response.get_json()["predictions"][0]["label"] == "7"


def test_multipart_with_several_files_and_top_k(client):
    files = [(io.BytesIO(DIGIT_PNG), "a.png"), (io.BytesIO(encode(paper(synthetic_digit(0)), "JPEG")), "b.jpg")]
    response = client.post("/predict", data={"file": files, "top_k": "5"}, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    predictions = response.get_json()["predictions"]
    assert len(predictions) == 2 and all(len(p["top_k"]) == 5 for p in predictions)


def test_input_image_shows_each_picture_as_the_network_read_it(client):
    """A TIFF, which no browser shows, could be predicted but not seen: the answer can carry what was read."""
    from shared.preprocess import image_to_vector

    pictures = [encode(paper(synthetic_digit(1)), "TIFF"), encode(paper(synthetic_digit(0)), "PNG")]
    files = [(io.BytesIO(data), f"{i}.img") for i, data in enumerate(pictures)]
    response = client.post("/predict?input_image=true&top_k=0", data={"file": files},
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_schema(schemas.PredictResponse, body)
    preprocessing = client.get("/models/mnist").get_json()["manifest"]["input"]["preprocessing"]
    for prediction, data in zip(body["predictions"], pictures):
        assert prediction["label"] == "7" and "top_k" not in prediction
        prefix, encoded = prediction["input_image"].split(",")
        assert prefix == "data:image/png;base64" and len(encoded) < 2000  # a few hundred bytes
        shown = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert shown.size == (28, 28) and shown.mode == "L"
        read = image_to_vector(data, preprocessing).reshape(28, 28)
        assert np.abs(np.asarray(shown) / 255 - (1 - read)).max() <= 0.5 / 255 + 1e-6  # dark ink on white
    plain = client.post("/predict?input_image=false", data=pictures[0], content_type="image/tiff").get_json()
    assert "input_image" not in plain["predictions"][0]
    assert_error(client.post("/predict?input_image=yes", data=pictures[0], content_type="image/tiff"),
                 422, "invalid_input", "true or false is expected, not 'yes'")
    assert_error(client.post("/models/iris/predict?input_image=true", json={"inputs": [0.5] * 4}),
                 422, "invalid_input", "model iris reads numbers: leave input_image out")


def test_the_images_of_one_request_share_a_pixel_budget(registry):
    """Each image may be within the per-image limit while together they would take a core for
    minutes to decode (a few kB of PNG declare millions of blank pixels)."""
    width, height = Image.open(io.BytesIO(DIGIT_PNG)).size
    client = make_app(registry, max_request_pixels=3 * width * height).test_client()
    files = [(io.BytesIO(DIGIT_PNG), f"{i}.png") for i in range(4)]
    limit = f"Image 3: the images of one request may declare at most {3 * width * height:,} pixels"
    body = assert_error(client.post("/predict", data={"file": files}, content_type="multipart/form-data"),
                        413, "too_many_pixels", limit)
    assert body["details"] == [{"image": 3}]
    files = [(io.BytesIO(DIGIT_PNG), f"{i}.png") for i in range(3)]
    assert client.post("/predict", data={"file": files}, content_type="multipart/form-data").status_code == 200


def multipart(*parts: bytes, closed: bool = True) -> bytes:
    """A form body with the boundary ``b`` from each part's header lines and content."""
    body = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts)
    return body + b"--b--\r\n" if closed else body


def test_multipart_parts_as_clients_send_them(client):
    """A file part is one with a file name, or with a Content-Type that is not text: the name is
    optional (RFC 7578), and aiohttp or Go's mime/multipart leave it out. A file name that is not
    UTF-8 (curl sends a Latin-1 name's bytes as they are) does not lose the whole form."""
    def post(body):
        return client.post("/predict", data=body, content_type="multipart/form-data; boundary=b")

    unnamed = b'Content-Disposition: form-data; name="image"\r\nContent-Type: image/png\r\n\r\n' + DIGIT_PNG
    latin1 = b'Content-Disposition: form-data; name="file"; filename="chiffre-\xe9.png"\r\n\r\n' + DIGIT_PNG
    octets = b'Content-Disposition: form-data; name="f"\r\nContent-Type: application/octet-stream\r\n\r\n' + DIGIT_PNG
    for parts, count in (((unnamed,), 1), ((latin1,), 1), ((unnamed, latin1, octets), 3)):
        response = post(multipart(*parts))
        assert response.status_code == 200, response.get_json()
        assert [p["label"] for p in response.get_json()["predictions"]] == ["7"] * count
    text = b'Content-Disposition: form-data; name="file"\r\n\r\n' + DIGIT_PNG  # text/plain by default: a field
    assert_error(post(multipart(text)), 422, "invalid_input", "Unknown form field 'file'")


def test_a_malformed_form_is_named_for_what_it_lacks(client):
    """Both were "the body holds no part of a multipart form", which they do."""
    part = b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + DIGIT_PNG
    cut_off = client.post("/predict", data=multipart(part, closed=False),
                          content_type="multipart/form-data; boundary=b")
    assert_error(cut_off, 400, "malformed_multipart", "without its closing boundary --b--")
    anonymous = client.post("/predict", data=multipart(b"Content-Type: image/png\r\n\r\n" + DIGIT_PNG),
                            content_type="multipart/form-data; boundary=b")
    assert_error(anonymous, 400, "malformed_multipart", "Part 1 of the form has no Content-Disposition header")


def test_a_part_without_headers_is_not_called_a_missing_part(client):
    # The boundary is there and opens a part: what is wrong is that part's headers.
    for body in (multipart(b"\r\n" + DIGIT_PNG), b"--b\r\nContent-Disposition: form-da"):
        response = client.post("/predict", data=body, content_type="multipart/form-data; boundary=b")
        assert_error(response, 400, "malformed_multipart", "Part 1 of the form has no headers, or they are cut off")
    elsewhere = client.post("/predict", data=b"no boundary here", content_type="multipart/form-data; boundary=b")
    assert_error(elsewhere, 400, "malformed_multipart", "The body holds no part of a multipart form with the boundary")


def test_a_large_body_that_is_no_form_is_refused_at_once(registry):
    """werkzeug looked for the first boundary trying its pattern at every byte: 32 MiB of line breaks sent as a
    form kept a thread busy for about 5 s before its 400 (a 64 MiB body, the default limit, for 12 s)."""
    client = make_app(registry, max_body_bytes=40 << 20).test_client()
    junk = b"\r\n" * (16 << 20)
    started = time.perf_counter()
    response = client.post("/predict", data=junk, content_type="multipart/form-data; boundary=b")
    assert_error(response, 400, "malformed_multipart", "The body holds no part of a multipart form")
    # A preamble before the first boundary is skipped, as it was, as fast.
    part = b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + DIGIT_PNG
    response = client.post("/predict", data=junk + multipart(part), content_type="multipart/form-data; boundary=b")
    assert response.status_code == 200, response.get_json()
    assert time.perf_counter() - started < 2


def test_a_part_with_headers_past_their_limits_is_refused_without_holding_them(client):
    """A part's headers were held and parsed whatever their size, an object of ~220 bytes for each line: 3
    million lines (24 MB) took a worker 654 MB and 2.6 s, and a body at the limit would pass compose's 1 GB."""
    def post(body):
        return client.post("/predict", data=body, content_type="multipart/form-data; boundary=b")

    disposition = b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n'
    most = disposition + b"X-A: b\r\n" * 99 + b"\r\n" + DIGIT_PNG  # 100 lines
    assert post(multipart(most)).status_code == 200
    longest = disposition + b"X-A: " + b"b" * (65536 - len(disposition) - 7) + b"\r\n\r\n" + DIGIT_PNG
    assert post(multipart(longest)).status_code == 200
    for many in (disposition + b"X-A: b\r\n" * 100 + b"\r\n" + DIGIT_PNG,
                 disposition + b"X-A: " + b"b" * 65536 + b"\r\n\r\n" + DIGIT_PNG):
        assert_error(post(multipart(most, many)), 413, "form_too_large", "Part 2 of the form has too many headers")
    flood = multipart(disposition + b"X-A: b\r\n" * 400_000 + b"\r\n" + DIGIT_PNG)  # 3.2 MB, under the limit here
    response, peak = traced_peak(post, flood)
    assert_error(response, 413, "form_too_large", "at most 100 lines and 65536 bytes")
    assert peak < 3 * len(flood), f"{peak / len(flood):.1f} bytes of memory per byte of the form"


def test_json_base64_images_and_data_urls(client):
    encoded = base64.b64encode(DIGIT_PNG).decode()
    response = client.post("/predict", json={"images": [encoded, "data:image/png;base64," + encoded,
                                                        "DATA:image/png;BASE64," + encoded], "top_k": 1})
    assert response.status_code == 200, response.get_json()
    assert [len(p["top_k"]) for p in response.get_json()["predictions"]] == [1, 1, 1]


def test_base64_broken_by_whitespace_everywhere_costs_no_more_memory_than_its_size(client):
    """Whitespace was taken out by splitting the text, an object for each piece: about 20 bytes of memory for
    every byte of "AB AB AB ...", so {"images": [...]} of 63 MiB took a worker to 1.8 GB (and 4 s), past the
    1 GB compose gives the whole service."""
    text = "AB " * (2 << 20)
    _, peak = traced_peak(inputs.decode_base64_image, text, 0)
    assert peak < 4 * len(text), f"{peak / len(text):.1f} bytes of memory per character"
    wrapped = base64.encodebytes(DIGIT_PNG).decode()  # base64 as `base64` writes it: a line break every 76
    response = client.post("/predict", json={"images": [wrapped, " \u3000".join(wrapped)]})
    assert response.status_code == 200, response.get_json()


def test_base64_one_character_over_whole_groups_is_told_why_it_is_refused(client):
    whole = base64.b64encode(DIGIT_PNG[:len(DIGIT_PNG) // 3 * 3]).decode()  # 4-character groups, no padding
    for stray in ("A", "A=", "A==="):  # a length no padding makes whole: a character lost or one too many
        assert_error(client.post("/predict", json={"images": [whole + stray]}), 400, "invalid_base64",
                     "one character over a whole number of 4-character groups")


def test_every_base64_error_names_its_image_in_the_details(client):
    encoded = base64.b64encode(DIGIT_PNG).decode()
    for bad, status in (("data:image/png,iVBORw0K", 400), ("!!!!", 400), ("", 422)):
        body = assert_error(client.post("/predict", json={"images": [encoded, bad]}), status, "invalid_base64",
                            "images[1]")
        assert body["details"] == [{"image": 1}], bad


def test_json_vectors_one_or_a_batch(client):
    one = client.post("/predict", json={"inputs": vectors(1)[0].tolist()})
    batch = client.post("/predict?top_k=0", json={"inputs": vectors(5).tolist()})
    assert len(one.get_json()["predictions"]) == 1
    assert len(batch.get_json()["predictions"]) == 5 and "top_k" not in batch.get_json()["predictions"][0]


def test_npy_batches(client, app):
    x = vectors(20)
    response = client.post("/models/mnist/versions/1/predict", data=npy(x), content_type="application/x-npy")
    assert response.status_code == 200
    model = app.extensions["scratchnet"].store.version("mnist", 1)
    indices = [p["index"] for p in response.get_json()["predictions"]]
    assert indices == model.predict(x).tolist()
    for variant in (x.astype(np.float64), np.asfortranarray(x), x[0]):
        response = client.post("/models/mnist/versions/1/predict", data=npy(variant), content_type="application/x-npy")
        assert response.status_code == 200, response.get_json()
    sniffed = client.post("/predict", data=npy(x), content_type="application/octet-stream")
    assert sniffed.status_code == 200 and len(sniffed.get_json()["predictions"]) == 20


def test_regression_and_vector_models(client, app):
    store = app.extensions["scratchnet"].store
    x = vectors(2, 11)
    response = client.post("/models/wine/predict", json={"inputs": x.tolist()})
    body = response.get_json()
    assert_schema(schemas.PredictResponse, body)
    assert [p["value"] for p in body["predictions"]] == pytest.approx(store.served("wine").predict(x).tolist(), rel=1e-6)
    response = client.post("/models/iris/predict", json={"inputs": [5.1, 3.5, 1.4, 0.2]})
    iris = store.served("iris")
    expected = iris.labels[iris.predict_proba(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)).argmax()]
    assert response.get_json()["predictions"][0]["label"] == expected


def test_regression_values_are_the_float32_the_model_computed(client, app):
    """Each value reads back as exactly the float32 the forward pass gave (what evaluate scores), not one
    rounded to 7 significant digits, which lands a few float32 steps away (5.37719059 -> 5.377191)."""
    wine = app.extensions["scratchnet"].store.served("wine")
    for rows in (16, 64):  # a small batch and a large one are written by different code
        x = vectors(rows, 11)
        body = client.post("/models/wine/predict", json={"inputs": x.tolist()}).get_json()
        values = np.array([p["value"] for p in body["predictions"]], dtype=np.float32)
        assert values.tolist() == wine.predict(x).tolist()


def test_version_and_label_routes(client, registry):
    response = client.post("/models/mnist/versions/1/predict", json={"inputs": vectors(1).tolist()})
    assert response.headers["X-Model-Version"] == "1"
    client.put("/models/mnist/labels/stable", json={"version": 1}, headers=AUTH)
    response = client.post("/models/mnist/labels/stable/predict", json={"inputs": vectors(1).tolist()})
    assert response.status_code == 200 and response.get_json()["model"]["version"] == 1


# model reports -----------------------------------------------------------------------------------


def test_model_reports(client):
    listing = client.get("/models").get_json()
    assert_schema(schemas.ModelList, listing)
    assert listing["default_model"] == "mnist" and [m["name"] for m in listing["models"]] == ["iris", "mnist", "wine"]
    info = client.get("/models/mnist").get_json()
    assert_schema(schemas.ModelInfo, info)
    assert info["served_version"] == 2 and info["pinned"] is None and info["classes"] == [str(d) for d in range(10)]
    statuses = {v["version"]: v["status"] for v in info["versions"]}
    assert statuses[1] == statuses[2] == "available" and statuses[3].startswith("failed: not an .npz archive")
    assert info["manifest"]["version"] == 2 and "dense1.weight" in info["manifest"]["parameters"]["arrays"]
    version = client.get("/models/mnist/versions/1").get_json()
    assert_schema(schemas.VersionInfo, version)
    assert version["status"] == "available" and not version["served"] and version["manifest"]["version"] == 1
    broken = client.get("/models/mnist/versions/3").get_json()
    assert broken["status"].startswith("failed: ") and broken["manifest"] is None


# errors ------------------------------------------------------------------------------------------


def test_400_malformed_bodies(client):
    assert_error(client.post("/predict", data=b"{not json", content_type="application/json"), 400, "malformed_json")
    assert_error(client.post("/predict", json={"images": ["***"]}), 400, "invalid_base64")
    assert_error(client.post("/predict", data=b"\x93NUMPY\x01\x00garbage", content_type="application/x-npy"),
                 400, "malformed_npy")
    assert_error(client.post("/predict", data=b"\x93NUMPY\x07\x00garbage", content_type="application/x-npy"), 400,
                 "malformed_npy", "The body is not a readable .npy file: .npy format version 7.0 is not supported "
                                  "(use 1.0 or 2.0).")
    truncated = npy(vectors(2))[:-10]
    assert_error(client.post("/predict", data=truncated, content_type="application/x-npy"), 400, "malformed_npy")
    assert_error(client.post("/predict", data=b"", content_type="image/png"), 400, "empty_body")


def test_no_image_or_an_empty_one_is_a_422_whichever_way_it_is_sent(client):
    # A well-formed request with no image in it; a body of no bytes at all is the 400 above.
    assert_error(client.post("/predict", data={"top_k": "1"}, content_type="multipart/form-data"), 422, "no_files")
    assert_error(client.post("/predict", json={"images": []}), 422, "invalid_input")
    empty = {"file": (io.BytesIO(b""), "e.png", "image/png")}
    assert_error(client.post("/predict", data=empty, content_type="multipart/form-data"), 422, "invalid_input",
                 "The image is empty (0 bytes).")
    assert_error(client.post("/predict", json={"images": [""]}), 422, "invalid_base64", "is empty")


@pytest.mark.parametrize("shape", [(-1, 11), (-1, -11), (2, -1, -1)])
def test_npy_with_a_negative_dimension_is_malformed(client, shape):
    body = npy_declaring(shape, bytes(44))
    assert_error(client.post("/models/wine/predict", data=body, content_type="application/x-npy"), 400,
                 "malformed_npy", "negative dimension")


def test_npy_with_code_in_its_header_is_told_so_without_the_parsers_internals(client):
    body = npy_declaring("__import__('os').getpid()", bytes(44))
    response = client.post("/models/wine/predict", data=body, content_type="application/x-npy")
    assert_error(response, 400, "malformed_npy", "its header holds code")
    assert "ast." not in response.get_json()["error"]


@pytest.mark.parametrize("depth", [3_000, 9_000])  # numpy's literal parser: RecursionError, then MemoryError
def test_npy_with_a_header_nested_thousands_deep_is_malformed(client, depth):
    body = npy_declaring("(" + "-" * depth + "1, 11)", bytes(44))
    assert_error(client.post("/models/wine/predict", data=body, content_type="application/x-npy"), 400,
                 "malformed_npy", "nested too deeply")


def test_a_body_sent_as_npy_that_is_something_else_is_named(client):
    archive = io.BytesIO()
    np.savez(archive, x=vectors(1, 11))
    for body, told in ((archive.getvalue(), "it is a zip archive, such as numpy.savez writes"),
                       (DIGIT_PNG, "it is a PNG image: send it with Content-Type image/png"),
                       (b'{"inputs": [1, 2]}', "it looks like JSON: send it with Content-Type application/json")):
        assert_error(client.post("/models/wine/predict", data=body, content_type="application/x-npy"), 400,
                     "malformed_npy", told)


def test_an_image_model_refuses_npy_pixels_as_stored_and_arrays_not_of_vectors(client, app):
    pixels = (vectors(2) * 255).astype(np.uint8)  # 0..255 read as [0, 1] vectors: every answer saturated
    for dtype in (np.uint8, np.int64):
        assert_error(client.post("/models/mnist/predict", data=npy(pixels.astype(dtype)),
                                 content_type="application/x-npy"), 422, "invalid_npy_dtype", "floats in [0, 1]")
    assert client.post("/models/mnist/predict", data=npy(pixels / np.float32(255)),
                       content_type="application/x-npy").status_code == 200
    assert client.post("/models/wine/predict", data=npy(np.ones((2, 11), np.int32)),
                       content_type="application/x-npy").status_code == 200  # a vector model's numbers may be whole
    for shape in ((), (1, 28, 28), (1, 1, 1, 784)):
        assert_error(client.post("/models/mnist/predict", data=npy(np.zeros(shape, np.float32)),
                                 content_type="application/x-npy"), 422, "invalid_npy_shape",
                     f"shape {list(shape)}; send one vector (784,) or a batch (n, 784)")


def test_an_image_model_refuses_vectors_that_are_not_pixels_in_0_1_and_says_what_they_look_like(client):
    pixels = vectors(2)
    as_stored = (pixels * 255).round()  # 0..255, as a PNG holds them
    normalised = (pixels - 0.1307) / 0.3081  # what torchvision's MNIST transform hands a network: -0.42..2.82
    overshot = np.where(pixels > 0.5, 1.5, pixels)
    for batch, shown, told in ((as_stored, as_stored > 2, "values above 2 are pixels of 0..255: divide the pixels "
                                "by 255"),
                               (normalised, normalised < 0, "negative values are pixels normalised already"),
                               (overshot, overshot > 1.01, "clip the values to [0, 1]")):
        body = assert_error(client.post("/models/mnist/predict", json={"inputs": batch.tolist()}), 422,
                            "input_out_of_range", told)
        row, col = np.argwhere(shown)[0]  # the first value that shows what the hint says
        assert f"The value at vector {row}, position {col} is {batch[row, col]:.6g}; model mnist v2" in body["error"]
        assert_error(client.post("/models/mnist/predict", data=npy(batch.astype(np.float32)),
                                 content_type="application/x-npy"), 422, "input_out_of_range", told)
    rounded = np.minimum(pixels + 0.005, 1.005)  # a JSON round trip may overshoot [0, 1] a little
    assert client.post("/models/mnist/predict", json={"inputs": rounded.tolist()}).status_code == 200
    big = vectors(1, 11) * 300  # a vector model's numbers are whatever its features are
    assert client.post("/models/wine/predict", json={"inputs": big.tolist()}).status_code == 200


def test_npy_with_an_oversized_header_names_the_limit(client):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 11), }" + " " * 20_000 + "\n"
    body = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + bytes(44)
    assert_error(client.post("/models/wine/predict", data=body, content_type="application/x-npy"), 400,
                 "malformed_npy", "at most 10000")


def test_multipart_without_a_usable_boundary_says_so(client):
    no_boundary = client.post("/predict", data=DIGIT_PNG, content_type="multipart/form-data")
    assert_error(no_boundary, 400, "malformed_multipart", "no boundary")
    not_a_form = client.post("/predict", data=DIGIT_PNG, content_type="multipart/form-data; boundary=xyz")
    assert_error(not_a_form, 400, "malformed_multipart", "'xyz'")


def test_json_too_large_or_too_deep_gets_a_clear_message(client):
    huge = '{"inputs": [[' + "9" * 5000 + ', 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]}'
    body = assert_error(client.post("/models/wine/predict", data=huge, content_type="application/json"), 422,
                        "invalid_input", "too large")
    assert "set_int_max_str_digits" not in body["error"]
    deep = '{"inputs": ' + "[" * 2000 + "]" * 2000 + "}"
    body = assert_error(client.post("/models/wine/predict", data=deep, content_type="application/json"), 400,
                        "malformed_json", "nested too deeply")
    assert "recursion" not in body["error"]


def test_arrays_nested_around_nothing_are_refused_before_they_fill_memory(registry):
    """Brackets without commas between them were counted as no numbers at all: 59 MiB of [[[...]]] chains took a
    worker to 3 GB while it parsed them, without waiting for its turn among large parses, before a 413 for the
    batch. Arrays nested as deep as a request's data (pixels as [28][28][1]) are still taken."""
    client = make_app(registry, max_body_bytes=16 << 20, max_batch=1000).test_client()
    chains = '{"inputs": [' + ",".join(["[" * 500 + "]" * 500] * 4000) + "]}"
    response, peak = traced_peak(client.post, "/models/iris/predict", data=chains, content_type="application/json")
    assert_error(response, 413, "too_many_values", "The JSON body holds 2,000,002 arrays and objects for about "
                                                   "4,000 values in them: nest arrays only as deep as the data's")
    assert peak < 4 * len(chains), f"{peak / len(chains):.1f} bytes of memory per byte of the body"
    pixels = [[[[0.0]] * 28] * 28] * 300  # 243,902 arrays for 235,200 numbers, as a Keras model's [-1, 28, 28, 1]
    response = client.post("/v1/models/mnist/versions/1:predict", json={"instances": pixels})
    assert_error(response, 400, "invalid_input", "blank")  # read through: nothing to see in them


def test_a_batch_over_the_limit_is_refused_before_its_images_are_decoded(client):
    """Each image was decoded before the batch was counted: 7.9 million tiny base64 images (52 MiB) took a worker
    21 s and 1.2 GB to be told that 10,000 is the limit, and as long on V1 and V2. The first image here is not
    base64, which only decoding finds; the limit is 64."""
    images = ["not base64!"] + ["AAAA"] * 60_000
    cases = [("/predict", {"images": images}, "60001 images"),
             ("/v1/models/mnist:predict", {"instances": [{"b64": image} for image in images]}, "60001 instances"),
             ("/v2/models/mnist/infer", {"inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                                                     "data": images}]}, "60001 images")]
    for path, body, held in cases:
        started = time.perf_counter()
        response = client.post(path, json=body)
        assert_error(response, 413, "batch_too_large", f"The request holds {held}; the limit is 64 per request: "
                                                       "split them into requests of at most 64.")
        assert time.perf_counter() - started < 1.5, path


def test_strings_and_objects_beyond_what_a_batch_needs_are_refused_before_parsing(client):
    """Each costs several numbers' memory, and a request needs a few per input: 4 million {"b64": "AAAA"} instances
    (57 MiB) took a worker to 1.4 GB while they were parsed, only to be refused for their number (6 million V2
    BYTES elements: 685 MB). The limit here is 64 inputs: 200,512 strings and objects."""
    cases = [("/v1/models/mnist:predict", '{"instances": [' + ",".join(['{"b64": "AAAA"}'] * 100_000) + "]}"),
             ("/predict", '{"images": [' + ",".join(['"AAAA"'] * 250_000) + "]}")]
    for path, body in cases:
        response, peak = traced_peak(client.post, path, data=body, content_type="application/json")
        assert_error(response, 413, "too_many_values", "strings and objects, more than the 200,512 a request of at "
                                                       "most 64 inputs needs; send fewer inputs per request.")
        assert peak < 4 * len(body), f"{path}: {peak / len(body):.1f} bytes of memory per byte of the body"


def test_a_string_among_many_numbers_is_named_without_an_array_of_strings(client):
    """NumPy was handed the numbers with the string among them, and made an array of strings as long as it of
    every value: a 77-character one at the end of a batch of 10,000 vectors took a worker to 2.7 GB and 20 s; a
    longer one raised MemoryError, a 500, on the native, V1 and V2 routes alike. Here 64 vectors and 2,000
    characters: 400 MB."""
    numbers = [[0.5] * 784 for _ in range(64)]
    numbers[-1][-1] = "x" * 2000
    cases = [("/predict", {"inputs": numbers}, 422, "Value at vector 63, position 783 is a string ('xxxxx"),
             ("/v1/models/mnist:predict", {"instances": numbers}, 400, "Value at vector 63, position 783 is a string"),
             ("/v1/models/mnist:predict", {"instances": [{"pixels": numbers}]}, 400,
              "instances[0] must be an array of pixels: numbers, in rows of equal length."),
             ("/v2/models/mnist/infer", {"inputs": [{"name": "input", "shape": [64, 784], "datatype": "FP32",
                                                     "data": numbers}]}, 400,
              "The data of input 'input' must be numbers of type FP32.")]
    for path, body, status, message in cases:
        response, peak = traced_peak(client.post, path, json=body)
        assert_error(response, status, None, message)
        assert peak < 20 << 20, f"{path}: {peak >> 20} MiB"


def test_404_unknown_things(client):
    assert_error(client.get("/no/such/route"), 404, "not_found")
    assert_error(client.post("/models/nope/predict", json={"inputs": [1]}), 404, "model_not_found", "'nope'")
    assert_error(client.post("/models/mnist/versions/9/predict", json={"inputs": [1]}), 404, "version_not_found")
    assert_error(client.post("/models/mnist/versions/abc/predict", json={"inputs": [1]}), 404, "version_not_found")
    assert_error(client.post("/models/mnist/labels/nope/predict", json={"inputs": [1]}), 404, "label_not_found")
    assert_error(client.get("/models/nope"), 404, "model_not_found")
    assert_error(client.get("/models/mnist/versions/9"), 404, "version_not_found")
    assert_error(client.get("/models//mnist"), 404, "not_found")  # not a redirect to /models/mnist
    assert_error(client.post("/models//mnist/predict", json={"inputs": [1]}), 404, "not_found")


@pytest.mark.parametrize("path, route", [("/models/", "/models"), ("/healthz/", "/healthz"),
                                         ("/models/mnist/", "/models/mnist")])
def test_a_trailing_slash_is_named_as_the_difference(client, path, route):
    assert_error(client.get(path), 404, "not_found", f"without the trailing slash, {route} is one")


def fetched(client, path: str, headers: dict | None = None):
    """A GET whose body is read and whose file is closed (a file's answer streams it)."""
    with client.get(path, headers=headers) as response:
        response.get_data()
    return response


def test_state_answers_are_never_cached_and_files_are_revalidated(client):
    """A proxy that kept /models or /readyz would answer with the version served before a swap; a
    200 without Cache-Control may be kept (RFC 9111 section 4.2.2). Files carry validators instead."""
    for path in ("/models", "/models/mnist", "/readyz", "/healthz", "/metrics", "/openapi.json", "/v2/models/mnist"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path
    assert client.post("/predict", json={"inputs": [0.5] * 784}).headers["Cache-Control"] == "no-store"
    page = fetched(client, "/static/app.js")
    assert page.headers["Cache-Control"] == "no-cache" and page.headers["ETag"]


def test_conditions_and_ranges_on_files_are_answered_as_http_says(client):
    whole = fetched(client, "/static/app.js")
    size = len(whole.get_data())
    for condition in ({"If-Match": '"another"'}, {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}):
        for path, headers in (("/static/app.js", {}), ("/", {"Accept": "text/html"})):  # the drawing page
            failed = fetched(client, path, {**headers, **condition})
            # JSON, not the file's whole content under a 412
            assert_error(failed, 412, "precondition_failed", "fetch it again without the condition")
    assert fetched(client, "/static/app.js", {"If-Match": whole.headers["ETag"]}).status_code == 200
    later = fetched(client, "/static/app.js", {"If-Unmodified-Since": "Mon, 01 Jan 2100 00:00:00 GMT"})
    assert later.status_code == 200 and later.get_data() == whole.get_data()
    # several ranges, or a Range that cannot be read: answered with the whole file (RFC 9110 section 14.2)
    for ignored in ("bytes=0-1,5-6", "bytes=5-2", "items=0-1", "bytes=abc"):
        answer = fetched(client, "/static/app.js", {"Range": ignored})
        assert answer.status_code == 200 and answer.get_data() == whole.get_data(), ignored
    # a failed condition wins over a range, and If-Unmodified-Since over If-None-Match (section 13.2.2)
    for headers in ({"If-Match": '"another"', "Range": "bytes=0-3"},
                    {"If-None-Match": whole.headers["ETag"], "If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}):
        assert_error(fetched(client, "/static/app.js", headers), 412, "precondition_failed")
    assert fetched(client, "/static/app.js", {"If-Match": "*", "Range": "bytes=0-3"}).status_code == 206
    api = client.post("/predict", json={"inputs": [0.5] * 784}, headers={"If-Match": '"another"'})
    assert api.status_code == 200  # the API's answers carry no validators to compare
    past = fetched(client, "/static/app.js", {"Range": f"bytes={size + 10}-"})
    assert_error(past, 416, "range_not_satisfiable", f"within its {size:,} bytes")
    assert past.headers["Content-Range"] == f"bytes */{size}"
    part = fetched(client, "/static/app.js", {"Range": "bytes=0-3"})
    assert part.status_code == 206 and part.get_data() == whole.get_data()[:4]


# '²' and '①' pass str.isdigit but int() refuses them; '١', '１' and '𝟏' int() reads as 1.
NOT_VERSIONS = ["²", "①", "١", "１", "𝟏", "0", "00", "+1", "1.0", "1%0A"]


@pytest.mark.parametrize("version", NOT_VERSIONS)
def test_a_version_is_ascii_digits_on_every_route(client, registry, version):
    for response in (client.get(f"/models/mnist/versions/{version}"),
                     client.post(f"/models/mnist/versions/{version}/predict", json={"inputs": [0.5] * 784}),
                     client.post(f"/models/mnist/versions/{version}/activate", headers=AUTH)):
        assert_error(response, 404, "version_not_found", "positive integers")
    assert serving_state(registry) is None  # nothing pinned


@pytest.mark.parametrize("version", ["01", "0001"])
def test_a_version_with_leading_zeros_is_its_number_as_triton_and_tf_serving_read_it(client, version):
    body = {"inputs": [[0.5] * 784]}
    native = client.post(f"/models/mnist/versions/{version}/predict", json=body)
    assert native.status_code == 200 and native.get_json()["model"]["version"] == 1
    assert client.get(f"/models/mnist/versions/{version}").get_json()["version"] == 1
    tf_serving = client.post(f"/v1/models/mnist/versions/{version}:predict", json={"instances": body["inputs"]})
    assert tf_serving.status_code == 200 and tf_serving.headers["X-Model-Version"] == "1"
    v2 = client.post(f"/v2/models/mnist/versions/{version}/infer", json={
        "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": body["inputs"]}]})
    assert v2.status_code == 200 and v2.get_json()["model_version"] == "1"
    body = assert_error(client.get(f"/models/mnist/versions/{version}0000000000"), 404, "version_not_found", "9 digits")
    assert f"Version {version}0000000000 does not exist" in body["error"]


def test_a_version_too_long_is_not_called_a_non_integer(client):
    body = assert_error(client.get("/models/mnist/versions/1000000000"), 404, "version_not_found", "9 digits")
    assert "positive integers" not in body["error"]


def test_405_wrong_method(client):
    response = client.get("/predict")
    assert_error(response, 405, "method_not_allowed", "use POST")
    assert "POST" in response.headers["Allow"]
    assert_error(client.delete("/models"), 405)


def test_protocol_routes_are_counted_under_templates_without_converters(client):
    client.post("/v1/models/mnist:predict", json={"instances": [[0.0] * 784]})
    client.post("/v1/models/mnist/versions/1:classify", json={"instances": [[0.0] * 784]})
    client.get("/v1/models/mnist:predict")  # a 405, counted under the route its path names
    text = client.get("/metrics").get_data(as_text=True)
    assert 'scratchnet_requests_total{method="POST",route="/v1/models/<name>:predict",status="200"} 1.0' in text
    assert 'route="/v1/models/<name>/versions/<version>:<verb>",status="400"} 1.0' in text
    assert 'scratchnet_requests_total{method="GET",route="/v1/models/<name>:predict",status="405"} 1.0' in text
    assert "segment:" not in text and "any(" not in text


@pytest.mark.parametrize("path, methods", [
    ("/predict", {"POST"}), ("/models/mnist", {"GET", "HEAD"}),
    ("/models/mnist/labels/stable", {"GET", "HEAD", "PUT", "DELETE"}),
    ("/v2/models/iris/infer", {"POST"}), ("/v1/models/iris", {"GET", "HEAD"}),
])
def test_options_answers_the_routes_methods_without_a_body(client, path, methods):
    response = client.options(path)
    assert response.status_code == 204
    assert "Content-Type" not in response.headers and response.get_data() == b""
    assert {m.strip() for m in response.headers["Allow"].split(",")} == methods | {"OPTIONS"}


def test_options_on_an_unknown_route_is_a_json_404(client):
    assert_error(client.options("/no/such/route"), 404, "not_found")


def test_a_405_is_counted_under_the_route_its_path_names(client):
    client.get("/models/mnist/predict")
    client.get("/no/such/route")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'scratchnet_requests_total{method="GET",route="/models/<name>/predict",status="405"} 1.0' in text
    assert 'scratchnet_errors_total{code="method_not_allowed",model="",route="/models/<name>/predict"} 1.0' in text
    assert 'scratchnet_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in text


def test_413_too_large(client, registry):
    """A body over the limit is told what to send instead, by what it holds: "larger than the limit" alone
    left a client to guess."""
    big = client.post("/predict", data=b"\0" * 4_000_001, content_type="image/png")
    assert_error(big, 413, "payload_too_large", "The request body is larger than the limit of 4,000,000 bytes: "
                                                "send a smaller picture (fewer pixels, or saved as JPEG).")
    batch = client.post("/predict", data=b"[" * 4_000_001, content_type="application/json")
    assert_error(batch, 413, "payload_too_large", "The request body is larger than the limit of 4,000,000 bytes: "
                                                  "send fewer inputs in one request, splitting the batch across "
                                                  "requests.")
    huge = encode(Image.new("L", (1200, 1000), 255), "PNG")  # 1.2 MP declared, over the 1 MP limit
    assert_error(client.post("/predict", data=huge, content_type="image/png"), 413, "image_too_large")
    assert_error(client.post("/predict", json={"inputs": vectors(65).tolist()}), 413, "batch_too_large", "limit is 64")
    assert_error(client.post("/predict", data=npy(vectors(65)), content_type="application/x-npy"), 413, "batch_too_large")


def test_each_limit_says_how_to_get_under_it(registry):
    """A limit told only as "the request holds 65 vectors; the limit is 64" left a client to work out what to
    send instead: each says how to get under it (smaller batches, fewer numbers, a smaller picture)."""
    client = make_app(registry, max_vector_values=40_000).test_client()
    cases = [
        (client.post("/models/iris/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]] * 65}), "batch_too_large",
         "The request holds 65 vectors; the limit is 64 per request: split them into requests of at most 64."),
        (client.post("/predict", data=npy(vectors(60)), content_type="application/x-npy"), "too_many_values",
         "The .npy array holds 47040 numbers; the limit is 40000 per request: split the batch into requests of at "
         "most 51 vectors."),
        (client.post("/predict", data=npy(np.zeros((40_001,), np.float32)), content_type="application/x-npy"),
         "too_many_values", "The .npy array holds 40001 numbers; the limit is 40000 per request: split the batch "
                            "into requests of at most 1 vector."),
        (client.post("/predict", data=encode(Image.new("L", (1200, 1000), 255), "PNG"), content_type="image/png"),
         "image_too_large", "The image is 1200x1000 = 1,200,000 pixels; the limit is 1,000,000 pixels: crop or "
                            "shrink the picture and send it again."),
        (client.post("/predict", data={"file": [(io.BytesIO(b"x"), f"{i}.png") for i in range(1001)]},
                     content_type="multipart/form-data"), "form_too_large",
         "The form is too large: at most 1000 parts (files and fields) and 500000 bytes per text field; send fewer "
         "files per request, or the pictures as files, not text fields."),
    ]
    rows = [[5.1, 3.5, 1.4, 0.2]] * 10_001  # 40,004 numbers
    cases += [(client.post("/models/iris/predict", json={"inputs": rows}), "too_many_values",
               "The JSON body holds more than 40000 numbers, the limit per request; split the batch into requests of "
               "at most 64 vectors."),
              (client.post("/v1/models/iris:predict", json={"instances": [[0.5] * 700] * 60}), "too_many_values",
               "The JSON body holds more than 40000 numbers, the limit per request; split the batch into requests of "
               "at most 64 instances.")]
    for response, code, message in cases:
        assert assert_error(response, 413, code)["error"] == message


def test_413_for_a_chunked_body_without_length(client):
    """A chunked body has no length to refuse it by: it is read up to the limit and refused past it,
    never cut at the limit and answered as if that were all that was sent."""
    def png(body: bytes) -> Request:
        return chunked("/predict", body, content_type="image/png")

    assert client.open(png(DIGIT_PNG)).status_code == 200
    assert_error(client.open(png(b"\0" * 4_000_000)), 415, "unsupported_image")  # at the limit: read
    assert_error(client.open(png(b"\0" * 4_000_001)), 413, "payload_too_large")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None])
def test_a_picture_sent_without_an_image_type_is_told_the_type_to_send(client, content_type):
    """``curl --data-binary @digit.png`` without -H sends a form's content type: the refusal says the
    body is a PNG and which header to send it with, not only the list of accepted types."""
    response = client.post("/predict", data=DIGIT_PNG, content_type=content_type)
    code = "unsupported_media_type" if content_type else "missing_content_type"
    assert_error(response, 415, code, "its body is a PNG image: send it with Content-Type: image/png "
                                      "(curl: -H 'Content-Type: image/png')")


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
def test_a_picture_sent_as_inputs_is_told_to_send_it_as_images(client, prefix):
    """``{"inputs": ["<base64>"]}`` was answered that position 0 is a string, not a number, which never
    says where a picture goes."""
    picture = prefix + base64.b64encode(DIGIT_PNG).decode()
    assert_error(client.post("/predict", json={"inputs": [picture]}), 422, "invalid_input",
                 "'inputs' holds a picture's text, and takes numbers: send pictures as base64 under 'images' "
                 '({"images": ["<base64>"]})')
    assert_error(client.post("/predict", json={"inputs": ["0.5"] * 784}), 422, "invalid_input",
                 "is a string ('0.5'), not a number")


def test_415_unsupported_media(client):
    assert_error(client.post("/predict", data=b"1,2,3", content_type="text/csv"), 415, "unsupported_media_type")
    assert_error(client.post("/predict", data=b"plain bytes", content_type="image/png"), 415, "unsupported_image")
    assert_error(client.post("/predict", data=b"abc"), 415, "missing_content_type")
    assert_error(client.post("/models/wine/predict", data=DIGIT_PNG, content_type="image/png"), 415,
                 "model_takes_vectors", "Model wine v1 reads vectors of 11 numbers, not images: ")


def test_an_image_for_a_vector_model_is_told_the_vectors_to_send_in_each_protocols_form(client):
    """A picture sent to a model that reads vectors was refused with "takes vectors of 11 numbers, not images", which
    left its client to find out how a vector is sent, and in which order of the columns."""
    columns = "x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10"  # the columns tests/modelgen.py's wine was trained on
    order = f", each vector's numbers in the order of the columns it was trained on: {columns}"
    native = f'Model wine v1 reads vectors of 11 numbers, not images: send JSON {{"inputs": [[...11 numbers...]]}}' \
        f"{order}."
    form = b'Content-Disposition: form-data; name="file"; filename="digit.png"\r\nContent-Type: image/png\r\n\r\n'
    picture = base64.b64encode(DIGIT_PNG).decode()
    for response in (client.post("/models/wine/predict", data=DIGIT_PNG, content_type="image/png"),
                     client.post("/models/wine/predict", data=multipart(form + DIGIT_PNG),
                                 content_type="multipart/form-data; boundary=b"),
                     client.post("/models/wine/predict", json={"images": [picture]})):
        assert assert_error(response, 415, "model_takes_vectors")["error"] == native
    # The standard protocols refuse an input the model lacks in their own words, and say what to send in their form.
    v2 = client.post("/v2/models/wine/infer", json={"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [picture]}]})
    assert assert_error(v2, 400, "unexpected_input")["error"] == (
        "unexpected inference input 'image' for model 'wine' (model wine v1 reads vectors of 11 numbers, not images: "
        f"send the input 'input', a FP32 tensor of shape [n, 11]{order})")
    for body, where, key in (({"instances": [{"b64": picture}]}, "instances[0] names the inputs", "instances"),
                             ({"inputs": {"image": [{"b64": picture}]}}, "'inputs' names", "inputs")):
        v1 = client.post("/v1/models/wine:predict", json=body)
        assert assert_error(v1, 400, "unexpected_input")["error"] == (
            f"{where} 'image'; model 'wine' takes exactly one of 'input' (model wine v1 reads vectors of 11 numbers, "
            f'not images: send "{key}": [[...11 numbers...]]{order}).')


def test_octet_stream_that_is_neither_an_image_nor_npy_says_how_a_npy_batch_is_sent(client):
    """application/octet-stream is read as an image or a .npy file: bytes that are neither were refused as an
    image alone, which never told a client sending numbers that a .npy batch goes as application/x-npy."""
    body = assert_error(client.post("/models/mnist/predict", data=b"garbage\0\1\2",
                                    content_type="application/octet-stream"), 415, "unsupported_image",
                        "The data is not an image in an accepted format (PNG, JPEG, WEBP, BMP, GIF, TIFF)")
    assert "application/x-npy" in body["error"] and ".npy" in body["error"]
    png = assert_error(client.post("/models/mnist/predict", data=b"garbage", content_type="image/png"), 415,
                       "unsupported_image")
    assert "npy" not in png["error"]  # an image type: the body was meant as an image


def test_an_image_under_a_misspelt_key_is_told_the_keys_not_to_remove_it(client):
    """{"image": "<base64>"} was answered "image: unknown field; remove it", which leaves the request with no
    image at all: the answer names the fields the body takes, images among them."""
    sent = {"image": base64.b64encode(DIGIT_PNG).decode()}
    assert_error(client.post("/predict", json=sent), 422, "invalid_input",
                 "In the JSON body, image: unknown field; the fields are inputs, images, top_k.")


def test_an_image_sent_bare_or_as_an_object_is_told_the_shape_images_take(client):
    """{"images": "<base64>"} (one image, not in a list) and {"images": [{"b64": ...}]} (TF Serving's form) were
    answered "Input should be a valid list" and "Input should be a valid string", naming neither what came
    nor what to send instead."""
    image = base64.b64encode(DIGIT_PNG).decode()
    assert_error(client.post("/predict", json={"images": image}), 422, "invalid_input",
                 f"In the JSON body, images: must be a list ([...]), not a string ({image[:17] + '...'!r}).")
    assert_error(client.post("/predict", json={"images": [{"b64": image}]}), 422, "invalid_input",
                 "In the JSON body, images.0: must be a string, not an object.")


def test_a_field_missing_or_of_the_wrong_type_is_told_what_to_send(client):
    """Pydantic's own words reached clients: "Field required", "Input should be a valid boolean", "Input should be
    a valid dictionary", and {"inputs": true} got "expected a list of numbers, got a boolean (true)" without the
    field's name; an unknown field inside a tensor was told "remove it", not the names it sits among. Each names
    the field by its path and what to send there."""
    iris = [5.1, 3.5, 1.4, 0.2]
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": iris}
    cases = [
        ("/models/iris/predict", {"inputs": True}, 422,
         "In the JSON body: 'inputs' must be a vector or a list of vectors ([[...numbers...]]), not a boolean (true)."),
        ("/models/mnist/labels/prod", {}, 422, "In the JSON body, version: missing; add it, as an integer such as 3."),
        ("/v1/models/iris:predict", {"instances": [iris], "parameters": 3}, 400,
         "In the predict request, parameters: must be a JSON object, not a number (3)."),
        ("/v2/models/iris/infer", {"inputs": [tensor], "parameters": {"binary_data_output": "yes"}}, 400,
         "In the inference request, parameters.binary_data_output: must be true or false, not a string ('yes')."),
        ("/v2/models/iris/infer", {"inputs": [{"shape": [1, 4], "datatype": "FP32", "data": iris}]}, 400,
         "In the inference request, inputs.0.name: missing; add it, as a string."),
        ("/v2/models/iris/infer", {"inputs": [{**tensor, "nmae": "input"}]}, 400,
         "In the inference request, inputs.0.nmae: unknown field; the fields are name, shape, datatype, parameters, "
         "data."),
        ("/v2/repository/index", {"ready": 1}, 400,
         "In the index request, ready: must be true or false, not a number (1)."),
        ("/v2/repository/models/mnist/unload", {"parameters": 3}, 400,
         "In the unload request, parameters: must be a JSON object, not a number (3)."),
    ]
    for path, body, status, message in cases:
        method = client.put if path.startswith("/models/mnist/labels") else client.post
        assert assert_error(method(path, json=body, headers=AUTH), status)["error"] == message, path


def test_a_value_no_model_can_take_is_told_what_to_send(client):
    """A number past float32's range, a 5,000-digit integer and pixels of NaN were told only what was wrong
    ("... is too large for float32", "pixel array holds NaN or Infinity"): each now says what to send."""
    cases = [
        ("/models/iris/predict", '{"inputs": [1e39, 0, 0, 0]}', 422,
         "Value at position 0 (1e+39) is too large for float32; send values within ±3.4e+38."),
        ("/models/iris/predict", '{"inputs": [1%s, 0, 0, 0]}' % ("0" * 5000), 422,
         "The JSON body holds a number too large to use, an integer of 5001 digits; send values within float32's "
         "range (±3.4e+38)."),
        ("/v2/models/mnist/infer", '{"inputs": [{"name": "pixels", "shape": [1, 2, 2], "datatype": "FP32", '
                                   '"data": [0.1, NaN, 0.1, 0.2]}]}', 400,
         "Pixel array holds NaN or Infinity; send finite pixels, from 0 to 1, 0 to 255 or 0 to 65535."),
    ]
    for path, body, status, message in cases:
        response = client.post(path, data=body, content_type="application/json")
        assert assert_error(response, status)["error"] == message, path


def test_422_well_formed_but_invalid(client):
    body = assert_error(client.post("/predict", json={"inputs": [0.5] * 783}), 422, "invalid_input")
    assert body["error"] == "Vector has 783 values; model mnist v2 expects 784."
    assert_error(client.post("/models/wine/predict", data=b'{"inputs": [NaN, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}',
                             content_type="application/json"), 422, "invalid_input", "NaN")
    unknown = assert_error(client.post("/predict", json={"inputs": [0.5] * 784, "extra": 1}), 422, "invalid_input")
    assert unknown["details"] == [{"field": "extra", "message": "unknown field; the fields are inputs, images, top_k"}]
    assert_error(client.post("/predict", json={"inputs": [1.0], "images": ["AA=="]}), 422, "invalid_input",
                 "In the JSON body: give either 'inputs' (numbers) or 'images' (base64), exactly one of them.")
    assert_error(client.post("/predict", json={"images": []}), 422, "invalid_input",
                 "In the JSON body, images: must hold at least 1 item, not 0.")
    assert_error(client.post("/predict", json=[1, 2, 3]), 422, "invalid_input", "must be an object")
    bad_query = client.post("/predict?top_k=abc", json={"inputs": [0.5] * 784})
    assert_error(bad_query, 422, "invalid_input", "top_k")
    # named like every refusal once the model is known: the query is read after the model is resolved
    assert (bad_query.headers["X-Model-Name"], bad_query.headers["X-Model-Version"]) == ("mnist", "2")
    assert_error(client.post("/predict?top_k=-1", json={"inputs": [0.5] * 784}), 422, "invalid_input", "top_k")
    assert_error(client.post("/predict?top_k=1", json={"inputs": [0.5] * 784, "top_k": 2}), 422, "invalid_input",
                 "twice")
    assert_error(client.post("/predict?colour=red", json={"inputs": [0.5] * 784}), 422, "invalid_input", "colour")
    assert_error(client.post("/predict?top_k=3&top_k=4", json={"inputs": [0.5] * 784}), 422, "invalid_input",
                 "top_k is given 2 times")
    assert_error(client.post("/predict", data=npy(np.array(["a", "b"])), content_type="application/x-npy"),
                 422, "invalid_npy_dtype")
    files = {"file": (io.BytesIO(DIGIT_PNG), "a.png"), "colour": "red"}
    assert_error(client.post("/predict", data=files, content_type="multipart/form-data"), 422, "invalid_input",
                 "'colour'")
    blank = encode(Image.new("L", (50, 50), 255), "PNG")
    assert_error(client.post("/predict", data=blank, content_type="image/png"), 422, "invalid_input", "blank")


def test_an_error_from_a_model_version_names_it_in_the_headers(client):
    """The version that refused the input is the one whose input size the message quotes."""
    response = client.post("/models/mnist/versions/1/predict", json={"inputs": [0.5] * 783})
    assert_error(response, 422, "invalid_input", "model mnist v1 expects 784")
    assert response.headers["X-Model-Name"] == "mnist" and response.headers["X-Model-Version"] == "1"
    served = client.post("/models/wine/predict", data=DIGIT_PNG, content_type="image/png")
    assert_error(served, 415, "model_takes_vectors")
    assert served.headers["X-Model-Name"] == "wine" and served.headers["X-Model-Version"] == "1"
    unknown = client.post("/models/mnist/versions/9/predict", json={"inputs": [0.5] * 784})
    assert_error(unknown, 404, "version_not_found")
    assert "X-Model-Version" not in unknown.headers  # no version answered


@pytest.mark.parametrize("top_k, problem", [(True, "must be an integer such as 3, not a boolean (true)"),
                                            ("3", "must be an integer such as 3, not a string ('3')"),
                                            (2.5, "must be an integer such as 3, not 2.5"),
                                            (1e23, "must be at most 1000, not 1e+23"),  # not 99999999999999991611392
                                            (2 ** 70, "must be at most 1000, not 1.18e+21"),
                                            (-1, "must be at least 0, not -1")])
def test_top_k_in_json_must_be_an_integer_within_its_range(client, top_k, problem):
    response = client.post("/predict", json={"inputs": [0.5] * 784, "top_k": top_k})
    assert_error(response, 422, "invalid_input", f"top_k: {problem}.")


def test_an_integer_beyond_a_floats_range_is_refused_by_its_number_of_digits(client):
    """A bound's message wrote the integer as a float, which raised OverflowError past 309 digits: a 500."""
    huge = "9" * 400
    vector = ",".join(["0.5"] * 784)
    answers = [
        (client.post("/predict", data=f'{{"inputs": [{vector}], "top_k": {huge}}}', content_type="application/json"),
         422, "top_k: must be at most 1000, not an integer of 400 digits."),
        (client.post(f"/predict?top_k={huge}", json={"inputs": [0.5] * 784}),
         422, "top_k: must be at most 1000, not an integer of 400 digits."),
        (client.put("/models/mnist/labels/stable", data=f'{{"version": -{huge}}}', content_type="application/json",
                    headers=AUTH), 422, "version: must be at least 1, not a negative integer of 400 digits."),
        (client.post("/v2/models/mnist/infer", content_type="application/json",
                     data=f'{{"inputs": [{{"name": "input", "shape": [-{huge}, 784], "datatype": "FP32", '
                          f'"data": [{vector}]}}]}}'),
         400, "shape.0: must be at least 0, not a negative integer of 400 digits."),
    ]
    for response, status, message in answers:
        assert_error(response, status, "invalid_input", message)


def test_a_version_past_the_highest_is_refused_not_looked_up(client, registry):
    """A version of 23 digits (a JSON integer past 64 bits, which arrives as a float's value) was looked up and
    answered 'Model mnist has no version 12345678901234567741440', a number the client never sent."""
    for body in ('{"version": 12345678901234567890123}', '{"version": 1000000000}'):
        assert_error(client.put("/models/mnist/labels/big", data=body, content_type="application/json", headers=AUTH),
                     422, "invalid_input", "version: must be at most 999999999")
        response = client.post("/v2/repository/models/mnist/load", data=f'{{"parameters": {body}}}',
                               content_type="application/json", headers=AUTH)
        assert_error(response, 400, "invalid_input", "parameters.version: a version is at most 999,999,999")
    assert "big" not in client.get("/models/mnist").get_json()["labels"]


def test_a_whole_number_written_with_a_point_is_an_integer_as_json_schema_says(client):
    """OpenAPI 3.1's JSON Schema counts 5.0 an integer, so the published schemas admit it: it was refused."""
    response = client.post("/predict", json={"inputs": [0.5] * 784, "top_k": 5.0})
    assert response.status_code == 200 and len(response.get_json()["predictions"][0]["top_k"]) == 5


def test_top_k_in_the_query_string_is_read_from_text(client):
    response = client.post("/predict?top_k=5", json={"inputs": [0.5] * 784})
    assert response.status_code == 200 and len(response.get_json()["predictions"][0]["top_k"]) == 5
    assert_error(client.post("/predict?top_k=true", json={"inputs": [0.5] * 784}), 422, "invalid_input", "top_k")


def test_top_k_above_the_class_count_lists_every_class_in_a_large_batch_too(registry):
    """top_k=10 to a 3-class model lists the 3 classes, most probable first, in every row of a batch
    of any size: large batches are written by another encoder than small ones."""
    client = make_app(registry, max_batch=256).test_client()
    x = np.random.default_rng(0).normal(size=(200, 4)).tolist()
    response = client.post("/models/iris/predict?top_k=10", json={"inputs": x})
    assert response.status_code == 200, response.get_data(as_text=True)
    predictions = response.get_json()["predictions"]
    assert len(predictions) == 200
    for prediction in predictions:
        probabilities = [entry["probability"] for entry in prediction["top_k"]]
        assert sorted(entry["label"] for entry in prediction["top_k"]) == ["setosa", "versicolor", "virginica"]
        assert probabilities == sorted(probabilities, reverse=True)
        assert prediction["top_k"][0] == {"label": prediction["label"], "probability": prediction["confidence"]}


def assert_top_k_text_refused(client, text: str, expected: str) -> None:
    """``top_k`` given as ``text`` in the query string and in a form is refused saying ``expected``."""
    query = client.post("/predict", query_string={"top_k": text}, json={"inputs": [0.5] * 784})
    assert_error(query, 422, "invalid_input", expected)
    form = client.post("/predict", data={"file": (io.BytesIO(DIGIT_PNG), "d.png"), "top_k": text},
                       content_type="multipart/form-data")
    assert_error(form, 422, "invalid_input", expected)


@pytest.mark.parametrize("text", ["3_0", "3.0", "+3", "0x3"])
def test_top_k_text_that_is_not_a_whole_number_is_refused_not_reread(client, text):
    # int("3_0") is 30: read that way, a typo would silently list ten times the classes asked for.
    assert_top_k_text_refused(client, text, f"top_k: a whole number from 0 to 1000 is expected, not '{text}'")


def test_top_k_text_of_thousands_of_digits_is_refused_in_the_clients_words(client):
    """Python's int() refuses text of over 4,300 digits saying to call sys.set_int_max_str_digits(), advice
    for a programmer, not for the client, who is told what top_k takes."""
    for digits, count in (("9" * 4400, 4400), ("0" * 20 + "9" * 10, 10)):
        assert_top_k_text_refused(client, digits, f"top_k: must be at most 1000, not an integer of {count} digits.")
    leading_zeros = client.post("/predict", query_string={"top_k": "0" * 20 + "3"}, json={"inputs": [0.5] * 784})
    assert leading_zeros.status_code == 200 and len(leading_zeros.get_json()["predictions"][0]["top_k"]) == 3


def test_top_k_given_twice_in_a_form_is_refused_as_in_the_query_string(client):
    response = client.post("/predict", data={"file": (io.BytesIO(DIGIT_PNG), "d.png"), "top_k": ["1", "5"]},
                           content_type="multipart/form-data")
    body = assert_error(response, 422, "invalid_input", "The form field top_k is given 2 times; give it once.")
    assert body["details"] == [{"field": "top_k", "message": "repeated"}]


def test_a_picture_sent_as_json_is_told_to_send_its_own_content_type(client):
    body = assert_error(client.post("/predict", data=DIGIT_PNG, content_type="application/json"), 400,
                        "malformed_json", "The body is a PNG image, not JSON: send it as it is with Content-Type: image/png")
    assert "codec" not in body["error"]


def test_two_problems_in_a_body_are_counted_in_words(client):
    response = client.post("/predict", json={"inputs": [0.5] * 784, "top_k": "x", "extra": 1})
    assert_error(response, 422, "invalid_input", "top_k: must be an integer such as 3, not a string ('x') (and 1 more problem).")
    response = client.post("/predict", json={"inputs": [0.5] * 784, "top_k": "x", "extra": 1, "more": 2})
    assert_error(response, 422, "invalid_input", "(and 2 more problems).")


def test_an_empty_npy_body_is_called_empty(client):
    for content_type in ("application/x-npy", "application/npy"):
        response = client.post("/models/iris/predict", data=b"", content_type=content_type)
        assert_error(response, 400, "empty_body", "The body is empty; send an array as numpy.save writes it.")


def test_compressed_bodies_are_refused_naming_the_encoding(client, registry):
    vector = json.dumps({"inputs": [0.5] * 784}).encode()
    for encoding in ("gzip", "br"):
        response = client.post("/predict", data=gzip.compress(vector), content_type="application/json",
                               headers={"Content-Encoding": encoding})
        assert_error(response, 415, "unsupported_encoding", f"Content-Encoding {encoding} is not supported")
        assert "uncompressed" in response.get_json()["error"]
    for body, content_type in ((gzip.compress(DIGIT_PNG), "image/png"), (gzip.compress(npy(vectors(1))),
                                                                         "application/x-npy")):
        assert_error(client.post("/predict", data=body, content_type=content_type,
                                 headers={"Content-Encoding": "gzip"}), 415, "unsupported_encoding")
    form = client.post("/predict", data={"file": (io.BytesIO(DIGIT_PNG), "a.png")}, content_type="multipart/form-data",
                       headers={"Content-Encoding": "gzip"})
    assert_error(form, 415, "unsupported_encoding")
    label = client.put("/models/mnist/labels/packed", data=gzip.compress(b'{"version": 1}'),
                       content_type="application/json", headers={"Content-Encoding": "gzip", **AUTH})
    assert_error(label, 415, "unsupported_encoding")
    assert label.headers["Accept-Encoding"] == "identity"  # RFC 9110 section 15.5.16: what the route takes
    assert serving_state(registry) is None
    plain = client.post("/predict", data=vector, content_type="application/json",
                        headers={"Content-Encoding": "identity"})
    assert plain.status_code == 200


def test_503_when_no_version_can_serve(registry):
    publish_corrupt(registry, "broken")
    app = make_app(registry, models="mnist,broken,ghost")
    client = app.test_client()
    refused = client.post("/models/broken/predict", json={"inputs": [1]})
    assert_error(refused, 503, "model_not_ready", "not an .npz archive")
    assert refused.get_json()["error"].endswith("; publish a model that loads as a new version of broken.")
    assert_error(client.post("/models/ghost/predict", json={"inputs": [1]}), 503, "model_not_ready")
    assert_error(client.post("/models/mnist/versions/3/predict", json={"inputs": [1]}), 503, "version_failed")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert_schema(schemas.Readiness, ready.get_json())
    assert "model broken has no servable version" in ready.get_json()["reason"]
    assert "model ghost has no servable version" in ready.get_json()["reason"]


def test_readiness_names_the_default_model_and_why_post_predict_answers_404_once_it_is_removed(registry):
    """The default model removed from the registry: POST /predict answers 404 on every worker, and /readyz
    stayed 200 saying nothing of it. It stays 200, as in a worker started since and as TF Serving answers for
    the models it still has: readiness gates every route, and a removal all workers see alike would take the
    other models out of service too. It now names the default model and gives the 404's reason; a service that
    must not be ready without it names it in SCRATCHNET_MODELS."""
    client = make_app(registry).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["default_model"] == {"name": "mnist", "ready": True,
                                                                              "version": 2}
    assert_schema(schemas.Readiness, ready.get_json())
    waiting = make_app(registry, models="mnist,iris").test_client()
    shutil.rmtree(registry / "mnist")
    for app_client in (client, waiting):
        for _ in range(2):  # a removal is applied once a second pass confirms it
            app_client.application.extensions["scratchnet"].store.refresh()
    refused = assert_error(client.post("/predict", json={"inputs": [[0.5] * 784]}), 404, "model_not_found")
    for started_since in (False, True):
        ready = (make_app(registry) if started_since else client.application).test_client().get("/readyz")
        assert ready.status_code == 200 and "reason" not in ready.get_json()
        assert ready.get_json()["default_model"] == {"name": "mnist", "ready": False, "version": None,
                                                     "reason": refused["error"]}
        assert_schema(schemas.Readiness, ready.get_json())
    assert "SCRATCHNET_DEFAULT_MODEL" in refused["error"] and "POST /models/<name>/predict" in refused["error"]
    unready = waiting.get("/readyz")
    assert unready.status_code == 503 and "model mnist has no servable version" in unready.get_json()["reason"]
    assert unready.get_json()["default_model"] == {"name": "mnist", "ready": False, "version": None}


def test_the_model_list_of_a_missing_registry_says_it_is_missing(tmp_path, registry):
    """GET /models of a registry folder that does not exist answered an empty list and nothing else, as a
    registry without models would: the list says why, as /readyz does."""
    listing = make_app(tmp_path / "nowhere").test_client().get("/models")
    assert listing.status_code == 200 and listing.get_json()["models"] == []
    assert_schema(schemas.ModelList, listing.get_json())
    assert listing.get_json()["problems"] == [f"the registry folder {tmp_path / 'nowhere'} does not exist"]
    misplaced = make_app(registry / "mnist").test_client().get("/models").get_json()  # a model's folder
    assert "looks like a model's folder" in misplaced["problems"][0]
    assert make_app(registry).test_client().get("/models").get_json()["problems"] == []


def test_a_model_that_scratchnet_models_leaves_out_is_named_as_left_out(registry):
    """A model whose folder is in the registry but not in SCRATCHNET_MODELS was answered "There is no model",
    which left an operator looking at the folder puzzled: the 404 names the setting."""
    client = make_app(registry, models="mnist").test_client()
    said = ("Model 'iris' is in the registry but not served: SCRATCHNET_MODELS (mnist) leaves it out; add it there "
            "to serve it.")
    assert_error(client.post("/models/iris/predict", json={"inputs": [[1, 2, 3, 4]]}), 404, "model_not_found", said)
    assert_error(client.get("/models/iris"), 404, "model_not_found", said)
    assert_error(client.get("/models/nope"), 404, "model_not_found", "There is no model 'nope' (models: mnist).")


@pytest.mark.parametrize("fault", [RuntimeError("secret internals"), ConnectionRefusedError(111, "secret internals")],
                         ids=["an error", "a connection of the server's own"])
def test_500_is_json_without_a_traceback(app, capsys, fault):
    """A connection error is the client's 400 only when the client's own connection failed
    (test_hostile_requests.py): one the server made is its fault, logged for its operator."""
    @app.get("/boom")
    def boom():
        raise fault

    response = app.test_client().get("/boom", headers={"X-Request-ID": "req-500"})
    body = assert_error(response, 500, "internal_error")
    assert "secret" not in body["error"] and response.headers["X-Request-ID"] == "req-500"
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert any(entry.get("request_id") == "req-500" and "secret internals" in entry.get("exception", "")
               for entry in logged)


# admin -------------------------------------------------------------------------------------------


def test_admin_needs_the_token(client, registry):
    assert_error(client.post("/models/mnist/unpin"), 401, "missing_token")
    response = client.post("/models/mnist/unpin", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_error(response, 401, "malformed_authorization")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(client.post("/models/mnist/unpin", headers={"Authorization": "Bearer wrong"}), 403, "wrong_token")
    assert_error(client.put("/models/mnist/labels/x", json={"version": 1}), 401)
    assert not (registry / "mnist" / "serving.json").exists()


def test_admin_is_disabled_without_a_token(registry):
    client = make_app(registry, admin_token=None).test_client()
    assert_error(client.post("/models/mnist/versions/1/activate", headers=AUTH), 403, "admin_disabled",
                 "SCRATCHNET_ADMIN_TOKEN")


def test_pin_rollback_unpin(client, registry):
    def served():
        return client.post("/predict", json={"inputs": [0.5] * 784}).headers["X-Model-Version"]

    response = client.post("/models/mnist/versions/1/activate", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["pinned"] == 1
    assert_schema(schemas.ModelInfo, response.get_json())
    assert json.loads((registry / "mnist" / "serving.json").read_text())["pinned"] == 1
    assert served() == "1"
    assert_error(client.post("/models/mnist/rollback", headers=AUTH), 409, "nothing_to_roll_back_to")
    assert_error(client.post("/models/mnist/versions/3/activate", headers=AUTH), 409, "version_not_servable",
                 "not an .npz archive")
    assert_error(client.post("/models/mnist/versions/9/activate", headers=AUTH), 404, "version_not_found")
    assert_error(client.post("/models/nope/unpin", headers=AUTH), 404, "model_not_found")
    assert client.post("/models/mnist/unpin", headers=AUTH).get_json()["served_version"] == 2
    assert served() == "2"
    response = client.post("/models/mnist/rollback", headers=AUTH)
    assert response.get_json()["pinned"] == 1 and served() == "1"


def test_a_pin_loads_what_it_serves_not_every_new_version(app, client, registry, monkeypatch):
    """An admin call looks at the registry under the serving lock, which other workers' calls wait
    on: it loads what serves and the version it pins, and leaves the other new versions to the
    watcher (loading a burst of them had made a pin take seconds)."""
    for _ in range(4):
        publish_model(registry, "mnist")  # v4 to v7
    store = app.extensions["scratchnet"].store
    loads, load = [], store._load
    monkeypatch.setattr(store, "_load", lambda name, version: loads.append(version) or load(name, version))
    response = client.post("/models/mnist/versions/1/activate", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["served_version"] == 1
    assert loads == [7, 1]  # the newest, which served until the pin, and the version pinned
    statuses = {v["version"]: v["status"] for v in response.get_json()["versions"]}
    assert statuses[4] == statuses[5] == statuses[6] == "loading"


@pytest.mark.parametrize("text", ["[" * 100_000, '{"pinned": ' + "9" * 5000 + "}", '{"pinned": 1000000000}'])
def test_a_hand_edited_serving_json_the_service_cannot_use_is_reported_not_a_crash(registry, text):
    (registry / "mnist" / "serving.json").write_text(text)
    client = make_app(registry).test_client()  # a worker starting on it: it cannot know the pin
    info = client.get("/models/mnist").get_json()
    assert info["served_version"] is None and "serving.json" in info["problems"][0]
    assert_error(client.post("/predict", json={"inputs": [0.5] * 784}), 503, "model_not_ready",
                 "nothing is served until it is fixed")
    assert client.post("/models/mnist/versions/2/predict", json={"inputs": [0.5] * 784}).status_code == 200
    assert "serving.json" in client.get("/readyz").get_json()["reason"]
    assert_error(client.post("/models/mnist/unpin", headers=AUTH), 409, "serving_state_invalid",
                 "correct serving.json by hand, or delete it (no pin, no labels), then try again.")
    assert_error(client.post("/models/mnist/rollback", headers=AUTH), 409, "serving_state_invalid")


def test_a_label_on_a_version_deleted_since_names_the_label(client, registry):
    assert client.put("/models/mnist/labels/old", json={"version": 1}, headers=AUTH).status_code == 200
    shutil.rmtree(registry / "mnist" / "1")
    client.application.extensions["scratchnet"].store.refresh()
    assert_error(client.post("/models/mnist/labels/old/predict", json={"inputs": [0.5] * 784}), 404,
                 "version_not_found", "Label 'old' of model mnist points to version 1, which does not exist")
    assert "label 'old' points to version 1" in " ".join(client.get("/models/mnist").get_json()["problems"])
    for route in ("/models/mnist/labels/old", "/v1/models/mnist/labels/old", "/v1/models/mnist/labels/old/metadata"):
        response = client.get(route)
        assert response.status_code == 404, route
        assert response.get_json()["error"] == (
            "Label 'old' of model mnist points to version 1, which does not exist; point it at a version that does "
            "(PUT /models/mnist/labels/old with {\"version\": N}) or delete it (DELETE /models/mnist/labels/old)."), route


def test_a_registry_the_service_cannot_write_is_named_with_the_fix(registry):
    # A registry the service reads but may not write (a volume filled by another uid): a pin cannot
    # be kept in serving.json, and the answer says whose permission is missing and how to give it.
    folder = Path(tempfile.mkdtemp(prefix="scratchnet-unwritable-"))
    folder.chmod(0o755)  # the test's own tmp_path is root's alone: another user could not even read it
    try:
        models = shutil.copytree(registry, folder / "models")
        client = make_app(models).test_client()
        assert client.post("/models/mnist/versions/1/activate", headers=AUTH).status_code == 200  # as the owner
        assert client.post("/models/mnist/unpin", headers=AUTH).status_code == 200

        def check():
            body = assert_error(client.post("/models/mnist/versions/1/activate", headers=AUTH), 503,
                                "registry_unavailable", "cannot be written (Permission denied): give the service's user")
            assert f"(uid {os.getuid()})" in body["error"] and "SCRATCHNET_UID" in body["error"]
            assert client.get("/models/mnist").get_json()["served_version"] == 2  # nothing changed

        (models / "mnist").chmod(0o555)
        if os.geteuid() == 0:  # root writes anywhere: check as another user
            run_as(65534, 65534, check)
        else:
            check()
        (models / "mnist").chmod(0o755)
        shutil.rmtree(models / "mnist")  # the folder removed since the last poll
        assert_error(client.post("/models/mnist/versions/1/activate", headers=AUTH), 404, "model_not_found")
        assert not (models / "mnist").exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_an_admin_change_while_the_registry_cannot_be_read_names_that_not_a_missing_write_access(registry):
    # chmod 000 on the registry (or a model's folder) after the service loaded it: a pin said the model's folder
    # "cannot be written" and to give write access to it, which changes nothing; reading is what fails.
    folder = Path(tempfile.mkdtemp(prefix="scratchnet-unreadable-"))
    folder.chmod(0o755)
    try:
        models = shutil.copytree(registry, folder / "models")
        client = make_app(models).test_client()
        assert client.get("/models/mnist").get_json()["served_version"] == 2

        def check(unreadable):
            body = assert_error(client.post("/models/mnist/versions/1/activate", headers=AUTH), 503,
                                "registry_unavailable", f"The registry folder {unreadable} cannot be read "
                                "(Permission denied): give the service's user")
            assert "read access to it" in body["error"] and "cannot be written" not in body["error"]
            assert client.get("/models/mnist").get_json()["served_version"] == 2  # nothing changed

        for unreadable in (models, models / "mnist"):
            unreadable.chmod(0)
            try:
                if os.geteuid() == 0:  # root reads anything: check as another user
                    run_as(65534, 65534, lambda: check(unreadable))
                else:
                    check(unreadable)
            finally:
                unreadable.chmod(0o755)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_an_admin_change_while_the_registry_is_gone_says_so_not_that_the_model_is(client, registry):
    registry.rename(registry.with_name("unmounted"))  # the whole volume, not one model's folder
    for response in (client.post("/models/mnist/versions/1/activate", headers=AUTH),
                     client.post("/models/mnist/unpin", headers=AUTH),
                     client.put("/models/mnist/labels/stable", headers=AUTH, json={"version": 1})):
        assert_error(response, 503, "registry_unavailable", f"The registry folder {registry} does not exist")
    assert client.get("/models/mnist").get_json()["served_version"] == 2  # still served from memory


def test_a_model_report_while_the_registry_is_gone_answers_a_documented_503(client, registry):
    """Whether a model the worker does not know exists cannot be told without the registry: the reports
    answer 503, which the document named for none of them (a generated client got no ErrorResponse)."""
    registry.rename(registry.with_name("unmounted"))
    client.application.extensions["scratchnet"].store.refresh()
    doc = client.get("/openapi.json").get_json()
    for path, template in (("/models/foo", "/models/{name}"),
                           ("/models/foo/versions/1", "/models/{name}/versions/{version}"),
                           ("/v1/models/foo", "/v1/models/{name}"),
                           ("/v1/models/foo/versions/1", "/v1/models/{name}/versions/{version}"),
                           ("/v1/models/foo/labels/stable", "/v1/models/{name}/labels/{label}"),
                           ("/v2/models/foo", "/v2/models/{name}")):
        assert_error(client.get(path), 503, "registry_unavailable", f"the registry folder {registry} does not exist")
        documented = doc["paths"][template]["get"]["responses"]
        schema = "ProtocolError" if template.startswith("/v") else "ErrorResponse"
        assert documented.get("503", {}).get("content") == {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}, template


@pytest.mark.parametrize("damage", ["folder deleted", "file damaged"])
def test_a_version_served_from_memory_is_listed_as_answering_on_every_protocol(client, registry, damage):
    """A pinned version whose folder went, or whose file fails since it loaded, goes on answering
    from memory for a pass; the version lists left it out, or called it failed (TF Serving's END,
    Triton's UNAVAILABLE), while it answered every request without a version."""
    store = client.application.extensions["scratchnet"].store
    assert client.post("/models/mnist/versions/2/activate", headers=AUTH).status_code == 200
    if damage == "folder deleted":
        shutil.rmtree(registry / "mnist" / "2")
    else:
        (registry / "mnist" / "2" / "model.npz").write_bytes(b"not a model any more")
    store.refresh()
    assert client.post("/predict", json={"inputs": [0.5] * 784}).headers["X-Model-Version"] == "2"
    info = client.get("/models/mnist").get_json()
    assert {"version": 2, "status": "available", "served": True} \
        == {key: v[key] for v in info["versions"] if v["version"] == 2 for key in ("version", "status", "served")}
    assert any(problem.endswith("still serving v2") for problem in info["problems"]), info["problems"]
    assert "2" in client.get("/v2/models/mnist").get_json()["versions"]
    assert client.get("/v2/models/mnist/versions/2/ready").status_code == 200
    index = client.post("/v2/repository/index", headers=AUTH).get_json()
    assert {"name": "mnist", "version": "2", "state": "READY", "reason": ""} in index
    for route in ("/v1/models/mnist", "/v1/models/mnist/versions/2"):
        states = {v["version"]: v["state"] for v in client.get(route).get_json()["model_version_status"]}
        assert states["2"] == "AVAILABLE", (route, states)


def test_a_pinned_version_whose_folder_went_cannot_be_pinned_or_labelled_again(client, registry):
    # v2 is pinned, then deleted: this worker answers with it from memory for a pass, but a label or pin
    # is read by workers that start later, which do not have it; a version deleted is refused as absent.
    store = client.application.extensions["scratchnet"].store
    assert client.post("/models/mnist/versions/2/activate", headers=AUTH).status_code == 200
    shutil.rmtree(registry / "mnist" / "2")
    store.refresh()
    assert client.post("/predict", json={"inputs": [0.5] * 784}).headers["X-Model-Version"] == "2"
    for response in (client.put("/models/mnist/labels/stable", json={"version": 2}, headers=AUTH),
                     client.post("/models/mnist/versions/2/activate", headers=AUTH),
                     client.post("/v2/repository/models/mnist/load", json={"parameters": {"version": 2}},
                                 headers=AUTH)):
        assert_error(response, 404, "version_not_found", "has no version 2")
    assert serving_state(registry)["labels"] == {}


def test_rollback_steps_down_from_a_pinned_version_that_cannot_serve(client, registry):
    # v2 is pinned, then deleted: a worker starting then serves nothing of mnist, and rollback, the
    # operator's way out, pins the version below the pin instead of answering that nothing serves.
    assert client.post("/models/mnist/versions/2/activate", headers=AUTH).status_code == 200
    shutil.rmtree(registry / "mnist" / "2")
    restarted = make_app(registry).test_client()
    assert_error(restarted.post("/predict", json={"inputs": [0.5] * 784}), 503, "model_not_ready")
    response = restarted.post("/models/mnist/rollback", headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["pinned"] == 1 and response.get_json()["served_version"] == 1
    assert serving_state(registry)["pinned"] == 1
    assert restarted.post("/predict", json={"inputs": [0.5] * 784}).headers["X-Model-Version"] == "1"
    assert_error(restarted.post("/models/mnist/rollback", headers=AUTH), 409, "nothing_to_roll_back_to")


def test_rollback_right_after_a_publish_steps_down_from_the_new_version(client, registry):
    # The worker taking the call has not polled since v4 was published (there is no watcher here),
    # while others serve v4 already: the rollback goes one step down from v4 (v3 is broken: v2).
    publish_model(registry, "mnist", seed=4)
    response = client.post("/models/mnist/rollback", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["pinned"] == 2
    assert serving_state(registry)["pinned"] == 2 and response.get_json()["served_version"] == 2


def test_admin_calls_right_after_a_new_model_is_published_find_it(client, registry):
    # The first version of a new model was published after this worker's last poll (there is no
    # watcher here; in a live service, any call within the poll interval, on any replica): a deploy
    # script that publishes and then pins, labels or loads the model must not be told it does not exist.
    publish_model(registry, "fresh", kind="vector")
    response = client.post("/models/fresh/versions/1/activate", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["served_version"] == 1
    publish_model(registry, "fresh2", kind="vector")
    response = client.put("/models/fresh2/labels/stable", headers=AUTH, json={"version": 1})
    assert response.status_code == 200 and serving_state(registry, "fresh2")["labels"] == {"stable": 1}
    publish_model(registry, "fresh3", kind="vector")
    assert client.post("/v2/repository/models/fresh3/unload", headers=AUTH).status_code == 200
    assert serving_state(registry, "fresh3")["unloaded"] is True
    publish_model(registry, "fresh4", kind="vector")
    assert client.post("/v2/repository/models/fresh4/load", headers=AUTH, json={}).status_code == 200
    assert client.post("/models/fresh4/predict", json={"inputs": [[0.0] * 4]}).status_code == 200
    assert_error(client.post("/models/nothing/unpin", headers=AUTH), 404, "model_not_found")
    unknown = client.post("/v2/repository/models/nothing/load", headers=AUTH, json={})
    assert unknown.status_code == 404 and unknown.get_json()["error"]  # V2's error shape: no code


def test_a_label_sent_without_the_json_content_type_is_told_which_header_to_set(client):
    """curl -d sends its JSON as application/x-www-form-urlencoded: the 415 said only "Send the label as JSON",
    which the body already was."""
    for headers, sent in (({"Content-Type": "application/x-www-form-urlencoded"},
                           "Content-Type application/x-www-form-urlencoded"), ({}, "no Content-Type")):
        response = client.put("/models/mnist/labels/canary", data='{"version": 1}', headers={**AUTH, **headers})
        body = assert_error(response, 415, "unsupported_media_type", f"The label came with {sent};")
        assert "Content-Type: application/json" in body["error"]


def test_labels(client, registry):
    response = client.put("/models/mnist/labels/canary", json={"version": 2}, headers=AUTH)
    assert response.status_code == 200 and response.get_json()["labels"] == {"canary": 2}
    # A label is not an activation: the refusal says what was asked.
    assert_error(client.put("/models/mnist/labels/canary", json={"version": 3}, headers=AUTH), 409,
                 "version_not_servable",
                 "Version 3 of mnist cannot be labelled 'canary': its model.npz failed to load: not an .npz archive")
    assert_error(client.put("/models/mnist/labels/canary", json={"version": 9}, headers=AUTH), 404)
    assert_error(client.put("/models/mnist/labels/canary", json={"version": 1, "x": 1}, headers=AUTH), 422)
    assert_error(client.put("/models/mnist/labels/canary", json={"version": 0}, headers=AUTH), 422)
    assert_error(client.put("/models/mnist/labels/canary", data="2", content_type="text/plain", headers=AUTH), 415)
    assert_error(client.put("/models/mnist/labels/canary", data="{", content_type="application/json", headers=AUTH),
                 400, "malformed_json")
    assert_error(client.put("/models/mnist/labels/-bad", json={"version": 1}, headers=AUTH), 422, "invalid_label",
                 "Label '-bad' is not valid: use letters, digits")
    assert_error(client.put("/models/mnist/labels/stable%0A", json={"version": 1}, headers=AUTH), 422,
                 "invalid_label")
    for version in (True, "1", 1.5):
        assert_error(client.put("/models/mnist/labels/flag", json={"version": version}, headers=AUTH), 422,
                     "invalid_input", "version: must be an integer such as 3, not ")
    assert client.put("/models/mnist/labels/flag", json={"version": 1.0}, headers=AUTH).get_json()["labels"] == {
        "canary": 2, "flag": 1}  # 1.0 is an integer to JSON Schema
    assert client.delete("/models/mnist/labels/flag", headers=AUTH).status_code == 200
    empty = client.put("/models/mnist/labels/canary", content_type="application/json", headers=AUTH)
    assert_error(empty, 400, "empty_body", '{"version": 3}')
    assert serving_state(registry)["labels"] == {"canary": 2}
    # Anyone may ask where a label points, as with a version: the answer is that version's report.
    labelled = client.get("/models/mnist/labels/canary")
    assert labelled.status_code == 200 and labelled.get_json() == client.get("/models/mnist/versions/2").get_json()
    assert client.delete("/models/mnist/labels/canary", headers=AUTH).get_json()["labels"] == {}
    assert_error(client.delete("/models/mnist/labels/canary", headers=AUTH), 404, "label_not_found")
    assert_error(client.get("/models/mnist/labels/canary"), 404, "label_not_found")
    assert_error(client.post("/models/mnist/labels/canary/predict", json={"inputs": [1]}), 404, "label_not_found")


def test_a_label_no_label_can_be_is_refused_to_set_and_not_found_to_read(client):
    """Setting a label by a name the registry refuses is a wrong request (422); predicting through it, or asking
    where it points, names a label the model lacks (404, as for any other), and says none can have it: the report
    route answered 422, and the predict routes a 404 that read as if the label might yet be set."""
    for method in ("put", "delete"):
        assert_error(getattr(client, method)("/models/mnist/labels/-bad", json={"version": 1}, headers=AUTH), 422,
                     "invalid_label", "Label '-bad' is not valid: use letters, digits")
    never = "Model mnist has no label '-bad' (labels: none); nor can any have that name, as a label's name uses " \
            "letters, digits"
    for response in (client.get("/models/mnist/labels/-bad"), client.get("/v1/models/mnist/labels/-bad"),
                     client.post("/models/mnist/labels/-bad/predict", json={"inputs": [1]}),
                     client.post("/v1/models/mnist/labels/-bad:predict", json={"instances": [[1]]})):
        assert_error(response, 404, "label_not_found", never)
    assert_error(client.get("/models/mnist/labels/canary"), 404, "label_not_found", "Model mnist has no label "
                 "'canary' (labels: none).")  # a name a label can have says nothing more


# operations --------------------------------------------------------------------------------------


def test_health_and_readiness(client, tmp_path):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["ready"] is True
    empty = make_app(tmp_path / "empty").test_client().get("/readyz")
    assert empty.status_code == 503 and "holds no models" in empty.get_json()["reason"]


@pytest.mark.parametrize("models", [None, "mnist"])
def test_a_registry_set_to_a_model_folder_is_named_as_one(registry, models):
    """SCRATCHNET_REGISTRY set to models/mnist, as TF Serving's --model_base_path names a model's own
    folder: /readyz said only that the registry holds no models (or that mnist has no version)."""
    for folder, what, where in ((registry / "mnist", "a model's folder (it holds the version folders 1, 2, 3)",
                                 "its parent"),
                                (registry / "mnist" / "2", "a version's folder (it holds model.npz)",
                                 "the folder two levels up")):
        ready = make_app(folder, models=models).test_client().get("/readyz")
        assert ready.status_code == 503
        assert f"{folder} looks like {what}, not a registry: point SCRATCHNET_REGISTRY" in ready.get_json()["reason"]
        assert f"at {where}, which holds the model folders" in ready.get_json()["reason"]
    assert "looks like" not in make_app(registry, models="mnist,nope").test_client().get("/readyz").get_json()["reason"]


def test_readiness_names_a_configured_model_without_versions_in_one_sentence(registry):
    """The reason quoted the store's sentence as it was, capital letter and all, inside its own:
    'model nope has no servable version (The registry has no version of nope)'."""
    ready = make_app(registry, models="mnist,nope").test_client().get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["reason"] == "model nope has no servable version (the registry has no version of nope)"


def test_errors_are_counted_by_the_model_the_request_named_when_the_registry_holds_it(client):
    """An operator's per-model error ratio counts the requests refused before any version answered
    (a version that failed to load); a name the registry does not hold counts under no model, so
    clients cannot grow the series."""
    assert client.post("/models/mnist/versions/3/predict", json={"inputs": [0.5] * 784}).status_code == 503
    assert client.post("/models/nosuch/predict", json={"inputs": [0.5] * 784}).status_code == 404
    text = client.get("/metrics").get_data(as_text=True)
    assert ('scratchnet_errors_total{code="version_failed",model="mnist",route="/models/<name>/versions/<version>'
            '/predict"} 1.0') in text
    assert 'scratchnet_errors_total{code="model_not_found",model="",route="/models/<name>/predict"} 1.0' in text
    assert "nosuch" not in text


def test_predict_without_its_default_model_says_the_default_is_missing_and_what_to_send(registry):
    """A client of POST /predict names no model: 'There is no model 'digits'' alone spoke of a model it
    never asked for, without a word of the default (SCRATCHNET_DEFAULT_MODEL) or of how to name one."""
    client = make_app(registry, default_model="digits").test_client()
    body = assert_error(client.post("/predict", json={"inputs": [0.5] * 4}), 404, "model_not_found")
    assert body["error"] == ("POST /predict answers with the default model (SCRATCHNET_DEFAULT_MODEL), and there is "
                             "no model 'digits' (models: iris, mnist, wine). Name the model in the URL instead: "
                             "POST /models/<name>/predict.")
    assert_error(client.post("/models/digits/predict", json={"inputs": [0.5] * 4}), 404, "model_not_found",
                 "There is no model 'digits' (models: iris, mnist, wine).")


def test_changing_a_configured_model_not_published_yet_says_to_publish_it(registry):
    """SCRATCHNET_MODELS names a model whose first version is not published: an admin change of it was
    told the model was there no more, its folder gone, though it had never been."""
    client = make_app(registry, models="mnist,nope").test_client()
    for response in (client.post("/models/nope/unpin", headers=AUTH),
                     client.post("/v2/repository/models/nope/unload", headers=AUTH)):
        body = assert_error(response, 404, "model_not_found", "The registry has no folder for model 'nope'")
        assert "any more" not in body["error"] and "publish a version of it first" in body["error"]
    assert not (registry / "nope").exists()


def test_a_default_model_refusing_predict_counts_its_errors_under_that_model(registry):
    """POST /predict names no model in its URL: a refusal from the default model before a version
    answered (none ready, or unloaded) counted under no model, hiding it from the per-model ratio."""
    client = make_app(registry, models="mnist,nope", default_model="nope").test_client()
    assert_error(client.post("/predict", json={"inputs": [0.5] * 4}), 503, "model_not_ready")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'scratchnet_errors_total{code="model_not_ready",model="nope",route="/predict"} 1.0' in text


def test_metrics_count_requests_errors_and_versions(client):
    """Requests are counted by the request, predictions by the row: a batch of 5 is 5 predictions."""
    for rows in (1, 1, 5):
        assert client.post("/predict", json={"inputs": vectors(rows).tolist()}).status_code == 200
    client.post("/predict", json={"inputs": [0.5] * 3})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'scratchnet_requests_total{method="POST",route="/predict",status="200"} 3.0' in text
    assert 'scratchnet_errors_total{code="invalid_input",model="mnist",route="/predict"} 1.0' in text
    assert 'scratchnet_predictions_total{model="mnist",version="2"} 7.0' in text
    assert 'scratchnet_model_served_version{model="mnist"} 2.0' in text
    assert 'scratchnet_model_load_failures_total{model="mnist",version="3"} 1.0' in text
    assert 'scratchnet_model_version_failed{model="mnist",version="3"} 1.0' in text
    assert "scratchnet_request_duration_seconds_bucket" in text and "scratchnet_registry_up 1.0" in text
    # Series an alert watches are there from the start, at 0, not only once something went wrong.
    assert 'scratchnet_model_pin_unservable{model="iris"} 0.0' in text
    assert "scratchnet_registry_unreadable_models 0.0" in text


def test_metrics_report_this_process_memory_and_cpu_time(client):
    """Outside Gunicorn the app is one process: the standard process_* series, unlabelled, are its own."""
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    [rss] = families["process_resident_memory_bytes"].samples
    assert rss.labels == {} and abs(rss.value - psutil.Process().memory_info().rss) < 0.2 * rss.value
    assert families["process_cpu_seconds"].samples[0].value > 0


def test_latency_histograms_resolve_times_under_a_millisecond(client):
    client.post("/predict", json={"inputs": [0.5] * 784})
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    for name in ("scratchnet_request_duration_seconds", "scratchnet_inference_duration_seconds"):
        bounds = sorted({float(s.labels["le"]) for s in families[name].samples if s.name.endswith("_bucket")})
        assert bounds[:4] == [0.0001, 0.00025, 0.0005, 0.001], name


def in_flight(client) -> dict[str, float]:
    """``scratchnet_requests_in_flight`` by route, as a scrape (itself in flight) sees it."""
    families = text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
    return {sample.labels["route"]: sample.value for family in families
            if family.name == "scratchnet_requests_in_flight" for sample in family.samples}


def test_a_request_is_in_flight_from_its_start_to_its_answer(app):
    """An operator sees what each route is handling now: a request held in its view counts 1 while
    it is held and 0 once answered, and a scrape sees itself as the one /metrics request in flight."""
    entered, release = threading.Event(), threading.Event()

    @app.get("/held")
    def held():
        entered.set()
        release.wait(10)
        return {"held": True}

    answers = []
    holder = threading.Thread(target=lambda: answers.append(app.test_client().get("/held")))
    holder.start()
    try:
        assert entered.wait(10)
        assert in_flight(app.test_client()) == {"/held": 1.0, "/metrics": 1.0}
    finally:
        release.set()
        holder.join(10)
    assert [answer.status_code for answer in answers] == [200]
    assert in_flight(app.test_client()) == {"/held": 0.0, "/metrics": 1.0}


class GoneStream(io.BytesIO):
    """A request body whose client resets the connection halfway, as service.worker's sockets report it."""

    def read(self, size=-1):
        raise ClientWentAway(104, "Connection reset by peer")


def test_every_way_a_request_ends_takes_it_out_of_flight(app, client):
    """A success, a client's error, a request refused before its route ran, a client gone
    mid-body and an exception in a view each leave their route at 0: one that stayed counted
    would show the service busier than it is, for good."""
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    no_host = EnvironBuilder(path="/healthz").get_environ()
    del no_host["HTTP_HOST"]
    answers = [
        client.post("/predict", json={"inputs": [0.5] * 784}),
        client.post("/predict", json={"inputs": [0.5] * 3}),
        client.post("/models/nosuch/predict", json={"inputs": [0.5] * 784}),
        client.delete("/predict"),
        client.get("/nowhere"),
        client.open(Request(no_host)),
        client.post("/predict", input_stream=GoneStream(), content_length=1000, content_type="application/json"),
        client.get("/boom"),
    ]
    assert [answer.status_code for answer in answers] == [200, 422, 404, 405, 404, 400, 400, 500]
    assert answers[5].get_json()["code"] == "missing_host"
    assert in_flight(client) == {"/predict": 0.0, "/models/<name>/predict": 0.0, "<unmatched>": 0.0,
                                 "/healthz": 0.0, "/boom": 0.0, "/metrics": 1.0}


class UploadStream(io.BytesIO):
    """A request body whose reading moves ``clock`` on by a minute: a client slow to upload."""

    def __init__(self, data: bytes, clock: list[float]):
        super().__init__(data)
        self.clock = clock

    def read(self, size=-1):
        self.clock[0] += 60.0
        return super().read(size)


@pytest.mark.parametrize("path, body, module", [
    ("/models/wine/predict", {"inputs": [[0.5] * 11]}, api),
    ("/v1/models/wine:predict", {"instances": [[0.5] * 11]}, v1),
    ("/v2/models/wine/infer", {"inputs": [{"name": "input", "shape": [1, 11], "datatype": "FP32",
                                          "data": [0.5] * 11}]}, v2),
], ids=["native", "v1", "v2"])
def test_the_inference_histogram_leaves_out_the_clients_upload(app, client, monkeypatch, path, body, module):
    clock = [1000.0]
    fake = types.SimpleNamespace(perf_counter=lambda: clock[0], time=time.time)
    monkeypatch.setattr(module, "time", fake)
    monkeypatch.setattr(metrics, "time", fake)  # where the histogram's end is read
    body = json.dumps(body).encode()
    response = client.post(path, input_stream=UploadStream(body, clock), content_length=len(body),
                           content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    [seconds] = [s.value for s in families["scratchnet_inference_duration_seconds"].samples
                 if s.name.endswith("_sum") and s.labels["model"] == "wine"]
    assert seconds < 60.0  # the minute the body took to arrive is not the model's


def test_a_model_removed_while_the_listing_is_made_is_left_out_of_it(app, client, registry, monkeypatch):
    store = app.extensions["scratchnet"].store
    names = store.names

    def names_then_wine_goes():  # the watcher's pass lands between reading the names and describing them
        listed = names()
        if (registry / "wine").exists():
            shutil.rmtree(registry / "wine")
            store.refresh()
            store.refresh()
        return listed

    monkeypatch.setattr(store, "names", names_then_wine_goes)
    response = client.get("/models")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [model["name"] for model in response.get_json()["models"]] == ["iris", "mnist"]


def model_series(text: str, model: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("scratchnet_model") and f'model="{model}"' in line]


def test_model_metrics_follow_the_registry_and_do_not_pile_up(app, client, registry):
    store = app.extensions["scratchnet"].store
    client.post("/models/mnist/versions/1/predict", json={"inputs": [0.5] * 784})
    for _ in range(3):  # three hot swaps
        publish_model(registry, "mnist")
        store.refresh()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'scratchnet_model_served_version{model="mnist"} 6.0' in text
    assert 'scratchnet_model_worker_swaps_total{model="mnist"} 3.0' in text
    assert len([line for line in model_series(text, "mnist") if line.startswith("scratchnet_model_served")]) == 1
    # Deleted versions drop out of every per-version series: the broken v3 stops being reported failed.
    for version in (1, 3, 4, 5):
        shutil.rmtree(registry / "mnist" / str(version))
    store.refresh()
    text = client.get("/metrics").get_data(as_text=True)
    versions = {label for line in model_series(text, "mnist") for label in re.findall(r'version="(\d+)"', line)}
    assert versions == {"2", "6"}
    assert 'scratchnet_model_version_failed{model="mnist",version="3"}' not in text
    assert 'scratchnet_predictions_total{model="mnist",version="1"}' not in text
    # Nor does the process keep them: a long-lived worker would otherwise hold a set of series for
    # every version it ever predicted with.
    metrics = app.extensions["scratchnet"].metrics
    for metric in (metrics.predictions, metrics.inference, metrics.version_failed, metrics.load_failures):
        kept = {sample.labels["version"] for family in metric.collect() for sample in family.samples
                if sample.labels.get("model") == "mnist"}
        assert kept <= {"2", "6"}, (metric, kept)
    # A removed model drops out altogether.
    shutil.rmtree(registry / "wine")
    store.refresh()
    store.refresh()
    assert model_series(client.get("/metrics").get_data(as_text=True), "wine") == []


SWAPS_IN_GUNICORN_MODE = """
import os, shutil, sys, tracemalloc
from pathlib import Path
from modelgen import publish_model
from service.app import create_app

registry = Path(sys.argv[1])
publish_model(registry, "iris", kind="vector")
app = create_app({"registry": str(registry), "watch": False, "default_model": "iris"})
client, store = app.test_client(), app.extensions["scratchnet"].store
store.refresh()

def swap():  # a new version, answered with, and the one before deleted
    version = publish_model(registry, "iris", kind="vector")
    shutil.rmtree(registry / "iris" / str(version - 1))
    store.refresh()
    assert client.post("/models/iris/predict", json={"inputs": [0.1] * 4}).json["model"]["version"] == version

for _ in range(20):
    swap()
tracemalloc.start()
before = tracemalloc.take_snapshot()
for _ in range(100):
    swap()
after = tracemalloc.take_snapshot()
print(sum(stat.size_diff for stat in after.compare_to(before, "filename")
          if "prometheus_client" in str(stat.traceback)))
# A deleted version put back is counted on from where it was, as the workers' files add up.
shutil.move(registry / "iris" / "121", registry / "kept")
store.refresh()
shutil.move(registry / "kept", registry / "iris" / "121")
store.refresh()
client.post("/models/iris/versions/121/predict", json={"inputs": [0.1] * 4})
print(client.get("/metrics").get_data(as_text=True))
"""


def test_a_worker_frees_the_metrics_of_deleted_versions_in_gunicorn_mode(tmp_path):
    """Under Gunicorn (multi-process metrics) prometheus_client keeps every value a worker ever
    made, so a worker answering with each new version grew by ~20 kB a swap for good."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parent.parent)])}
    done = subprocess.run([sys.executable, "-c", SWAPS_IN_GUNICORN_MODE, str(tmp_path / "registry")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    growth, _, text = done.stdout.partition("\n")
    assert int(growth) < 100_000, f"the metrics hold {int(growth) / 1e6:.1f} MB more after 100 swaps"
    assert 'scratchnet_predictions_total{model="iris",version="121"} 2.0' in text


def test_a_model_that_never_served_a_version_reports_version_0(app, client, registry, a_poll_later):
    publish_corrupt(registry, "broken")  # a new model whose only version fails to load
    app.extensions["scratchnet"].store.refresh()
    a_poll_later(app.extensions["scratchnet"].store)  # its failure counts once the file stays as it is
    app.extensions["scratchnet"].store.refresh()
    assert client.get("/readyz").status_code == 503
    text = client.get("/metrics").get_data(as_text=True)
    assert 'scratchnet_model_served_version{model="broken"} 0.0' in text
    assert 'scratchnet_model_version_failed{model="broken",version="1"} 1.0' in text
    configured = make_app(registry, models="mnist,missing").test_client().get("/metrics").get_data(as_text=True)
    assert 'scratchnet_model_served_version{model="missing"} 0.0' in configured
    assert 'scratchnet_model_served_version{model="mnist"} 2.0' in configured


def test_an_unservable_pin_is_reported_in_the_metrics(app, client, registry):
    (registry / "mnist" / "serving.json").write_text('{"pinned": 3}')  # v3 is broken
    app.extensions["scratchnet"].store.refresh()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'scratchnet_model_pin_unservable{model="mnist"} 3.0' in text
    assert 'scratchnet_model_served_version{model="mnist"} 2.0' in text
    info = client.get("/models/mnist").get_json()
    assert info["served_version"] == 2 and "pinned version 3 failed: not an .npz archive" in info["problems"][0]


def test_an_unloaded_model_is_reported_not_ready(client):
    assert client.post("/v2/repository/models/mnist/unload", headers=AUTH).status_code == 200
    assert_error(client.post("/models/mnist/predict", json={"inputs": [0.5] * 784}), 503, "model_unloaded")
    info = client.get("/models/mnist").get_json()
    assert info["unloaded"] is True and info["ready"] is False and info["served_version"] is None
    assert not any(v["served"] for v in info["versions"])
    assert client.get("/models/mnist/versions/2").get_json()["served"] is False
    [listed] = [m for m in client.get("/models").get_json()["models"] if m["name"] == "mnist"]
    assert listed["ready"] is False
    assert client.post("/v2/repository/models/mnist/load", headers=AUTH).status_code == 200
    info = client.get("/models/mnist").get_json()
    assert info["ready"] is True and info["served_version"] == 2


def test_request_ids_and_access_log(client, capsys):
    given = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123" and given.headers["X-Worker-PID"].isdigit()
    made = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]
    assert made != "bad id with spaces" and len(made) == 32
    started = time.perf_counter()
    client.post("/models/mnist/predict", json={"inputs": [0.5] * 784}, headers={"X-Request-ID": "p-1"})
    wall_seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (entry,) = [e for e in lines if e.get("request_id") == "p-1"]
    assert entry["logger"] == "scratchnet.access" and entry["method"] == "POST"
    assert entry["route"] == "/models/<name>/predict" and entry["model"] == "mnist" and entry["version"] == 2
    assert entry["status"] == 200
    # The line's milliseconds and the histograms' seconds are the one request's, within its wall time.
    samples = {(s.name, s.labels.get("route") or s.labels.get("model")): s.value
               for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
               for s in f.samples}
    request_seconds = samples["scratchnet_request_duration_seconds_sum", "/models/<name>/predict"]
    inference_seconds = samples["scratchnet_inference_duration_seconds_sum", "mnist"]
    assert 0 < inference_seconds <= request_seconds <= wall_seconds
    assert 0 < entry["latency_ms"] == round(request_seconds * 1000, 2) <= wall_seconds * 1000
    assert entry["message"] == f"POST /models/mnist/predict 200 {request_seconds * 1000:.1f}ms"


def test_access_lines_name_the_model_of_the_url(client, capsys):
    """Admin calls, model reports and refusals are found by the model they concern."""
    client.post("/models/mnist/versions/1/activate", headers={**AUTH, "X-Request-ID": "pin"})
    client.get("/models/mnist", headers={"X-Request-ID": "report"})
    client.post("/models/mnist/labels/nope/predict", json={"inputs": [0.5] * 784}, headers={"X-Request-ID": "label"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    entries = {e["request_id"]: e for e in lines if e.get("logger") == "scratchnet.access"}
    assert [(entries[i]["model"], entries[i]["status"]) for i in ("pin", "report", "label")] == \
        [("mnist", 200), ("mnist", 200), ("mnist", 404)]
    assert all("version" not in entries[i] for i in ("pin", "report", "label"))  # no version answered


def test_text_access_lines_cannot_be_forged_by_a_path(registry, capsys):
    try:
        client = make_app(registry, log_format="text").test_client()
        capsys.readouterr()
        client.get("/models/x%0A2026-11-30%2000:00:00,000%20ERROR%20forged%0D%00line")
        err = capsys.readouterr().err
        client.get('/models/x%20status=200%20code=ok%20request_id=0000%22')  # fields of its own, in logfmt
        fields = capsys.readouterr().err
    finally:
        configure_logging("json", "INFO")
    (line,) = err.splitlines()
    assert line.split(" ")[1:3] == ["INFO", "scratchnet.access"]  # after the time (one word: UTC, ISO 8601)
    assert "\x00" not in err and '"/models/x\\n2026-11-30 00:00:00,000 ERROR forged\\r\\x00line" 404' in line
    assert ' GET "/models/x status=200 code=ok request_id=0000\\"" 404 ' in fields  # the message quotes it too
    assert ' path="/models/x status=200 code=ok request_id=0000\\"" ' in fields
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', fields)  # what a logfmt reader takes for fields
    assert " status=404 " in unquoted and "status=200" not in unquoted and " code=model_not_found" in unquoted


def access_levels(err: str, log_format: str) -> dict[str, str]:
    """The level of each access line in ``err``, by request id."""
    if log_format == "json":
        entries = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        return {e["request_id"]: e["level"] for e in entries if e["logger"] == "scratchnet.access"}
    return {re.search(r" request_id=(\S+)", line)[1]: line.split(" ")[1].lower()
            for line in err.splitlines() if " scratchnet.access " in line}


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_server_fault_is_an_error_in_the_access_log_and_not_ready_a_warning(registry, capsys, log_format):
    """A log pipeline that keeps ERROR lines alone sees every 500 (an exception in a view), and so
    does SCRATCHNET_LOG_LEVEL=error; no version ready to serve (503) is a WARNING, as a starting
    worker's readiness probes get it; a client's 4xx stays INFO, and so do the 501 and 505 of a
    transfer coding or an HTTP version the client chose and the server does not take (a scanner's
    probes would otherwise fill a warnings-only pipeline)."""
    asked = {"fault": ("GET", "/boom"), "not-ready": ("POST", "/models/ghost/predict"), "missing": ("GET", "/nowhere"),
             "invalid": ("POST", "/predict"), "fine": ("GET", "/healthz"), "coding": ("GET", "/coding"),
             "version": ("GET", "/version")}
    seen = {}
    try:
        for level in ("INFO", "ERROR"):
            app = make_app(registry, log_format=log_format, log_level=level, models="mnist,ghost")

            @app.get("/boom")
            def boom():
                raise RuntimeError("secret internals")

            app.add_url_rule("/coding", "coding", lambda: ({"error": "unsupported transfer coding"}, 501))
            app.add_url_rule("/version", "version", lambda: ({"error": "unsupported HTTP version"}, 505))

            client = app.test_client()
            capsys.readouterr()
            statuses = [client.open(path, method=method, headers={"X-Request-ID": name},
                                    json={"inputs": [0.5]} if method == "POST" else None).status_code
                        for name, (method, path) in asked.items()]
            assert statuses == [500, 503, 404, 422, 200, 501, 505]
            seen[level] = access_levels(capsys.readouterr().err, log_format)
    finally:
        configure_logging("json", "INFO")
    assert seen["INFO"] == {"fault": "error", "not-ready": "warning", "missing": "info", "invalid": "info",
                            "fine": "info", "coding": "info", "version": "info"}
    assert seen["ERROR"] == {"fault": "error"}


def test_json_access_lines_stay_one_line_for_every_line_reader(client, capsys):
    """U+2028, U+2029 and U+0085 in a path are valid unescaped in JSON, but str.splitlines() (and
    other readers) end a line there: the access line came out as two fragments, neither JSON."""
    capsys.readouterr()
    client.get("/models/a%E2%80%A8b%E2%80%A9c%C2%85d/predict", headers={"X-Request-ID": "breaks"})
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]
    (entry,) = [e for e in entries if e.get("request_id") == "breaks"]
    assert entry["path"] == "/models/a\u2028b\u2029c\x85d/predict" and entry["status"] == 405


@pytest.mark.parametrize("piece", ["x", "%01", "%E2%80%A8", "%F0%9F%98%80"])  # escaped to 1, 6, 6 and 12 bytes
@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_an_access_line_fits_what_a_pipe_writes_whole_however_long_the_path(client, capsys, monkeypatch, piece,
                                                                              encoding):
    """Two workers share stderr: a line over PIPE_BUF (4,096 bytes) can be cut into by the other's,
    and a 4,000-character path, written in the message and in its field, made lines of 8 kB."""
    monkeypatch.setattr("service.logs.needs_ascii", lambda stream: encoding == "ascii")
    request_id = "r" * 128  # the longest a client may give: kept whole, it is what the client quotes
    for count in (1300, 190):
        capsys.readouterr()
        client.get(f"/models/{piece * count}/predict", headers={"X-Request-ID": request_id})
        (line,) = [line for line in capsys.readouterr().err.splitlines() if request_id in line]
        entry = json.loads(line)
        assert len(line.encode()) + 1 < 4096 and entry["status"] == 405 and entry["request_id"] == request_id
        assert entry["path"].startswith("/models/")
    short = client.get("/models/" + "m" * 100 + "/predict", headers={"X-Request-ID": "short"})
    (line,) = [line for line in capsys.readouterr().err.splitlines() if '"short"' in line]
    assert short.status_code == 405 and json.loads(line)["path"] == "/models/" + "m" * 100 + "/predict"  # kept whole


def test_a_server_fault_in_text_logs_names_its_request_on_the_error_line(registry, capsys):
    """An operator greps the request id a client reports (X-Request-ID of the 500) and finds the
    ERROR line, followed by its traceback; the id was after the traceback's last line, glued to
    the exception's message."""
    try:
        app = make_app(registry, log_format="text")

        @app.get("/boom")
        def boom():
            raise RuntimeError("secret internals")

        capsys.readouterr()
        assert app.test_client().get("/boom", headers={"X-Request-ID": "req-500"}).status_code == 500
        lines = capsys.readouterr().err.splitlines()
    finally:
        configure_logging("json", "INFO")
    error = next(i for i, line in enumerate(lines) if " ERROR scratchnet.service " in line)
    assert lines[error].endswith('unexpected error request_id=req-500 method=GET path=/boom route=/boom'), lines[error]
    assert lines[error + 1] == "Traceback (most recent call last):"
    assert "RuntimeError: secret internals" in lines[error + 2:]

def test_a_server_fault_in_a_prediction_names_the_model_and_version_on_the_error_line(client, capsys, monkeypatch):
    """Logs filtered by model showed a failing version's access lines but not the traceback that said why."""
    def fault(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Model, "forward", fault)
    capsys.readouterr()
    response = client.post("/models/mnist/predict", json={"inputs": [0.5] * 784}, headers={"X-Request-ID": "f-1"})
    assert response.status_code == 500 and "secret" not in response.get_data(as_text=True)
    (entry,) = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"unexpected error"' in line]
    assert {k: entry.get(k) for k in ("request_id", "method", "path", "route", "model", "version")} == {
        "request_id": "f-1", "method": "POST", "path": "/models/mnist/predict", "route": "/models/<name>/predict",
        "model": "mnist", "version": 2}
    assert "RuntimeError: secret internals" in entry["exception"]


def test_openapi_names_exactly_the_routes_the_app_serves(app, client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, methods in doc["paths"].items() for method in methods}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        # <segment:name> is {name}; <any(classify, regress):verb> is each of its words
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        choices = re.search(r"<any\(([^)]*)\):\w+>", path)
        paths = [path.replace(choices[0], word.strip()) for word in choices[1].split(",")] if choices else [path]
        served |= {(p, m) for p in paths for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served
    refs = set()

    def collect(node):
        if isinstance(node, dict):
            refs.update(v.rsplit("/", 1)[-1] for k, v in node.items() if k == "$ref")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(doc)
    assert refs <= set(doc["components"]["schemas"])
    predict = doc["paths"]["/models/{name}/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"application/json", "image/*", "multipart/form-data",
                                                       "application/x-npy", "application/npy",
                                                       "application/octet-stream"}
    assert {"200", "400", "404", "413", "415", "422", "503"} <= set(predict["responses"])
    assert doc["paths"]["/models/{name}/rollback"]["post"]["security"] == [{"bearer": []}]


def test_openapi_defaults_are_valid_values_of_their_schemas(client):
    """OpenAPI 3.1 validators check each default against its schema: a null default needs a
    schema that allows null."""
    doc = client.get("/openapi.json").get_json()

    def null_defaults(node, where):
        if isinstance(node, dict):
            if "default" in node and node["default"] is None:
                yield where, node
            for key, value in node.items():
                yield from null_defaults(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from null_defaults(value, f"{where}/{i}")

    for where, schema in null_defaults(doc["components"], "components"):
        types = [schema["type"]] if "type" in schema else [s.get("type") for s in schema.get("anyOf", [])]
        assert not types or "null" in types, (where, schema)


def test_openapi_predict_request_is_an_object_a_client_generator_can_model(client):
    """Exactly one of inputs and images, said without a union at the top of the schema: openapi-python-client
    made the prediction body of an object whose top is oneOf an untyped value, and its generated predict
    functions failed on every call (isinstance(body, Any))."""
    import jsonschema_rs  # schemathesis's validator

    doc = client.get("/openapi.json").get_json()
    schema = doc["components"]["schemas"]["PredictRequest"]
    assert schema["type"] == "object" and not {"oneOf", "anyOf", "allOf"} & set(schema)
    validator = jsonschema_rs.Draft202012Validator({"$ref": "#/components/schemas/PredictRequest",
                                                    "components": doc["components"]})
    assert validator.is_valid({"inputs": [0.5, 0.25]}) and validator.is_valid({"images": ["iVBORw0K"], "top_k": 2})
    for refused in ({}, {"top_k": 2}, {"inputs": [0.5], "images": ["iVBORw0K"]}):
        assert not validator.is_valid(refused), refused
        assert_error(client.post("/predict", json=refused), 422, "invalid_input")


def test_openapi_every_array_schema_says_what_its_items_are(client):
    """openapi-python-client refuses an array schema without items ("type array must have items or prefixItems
    defined"), drops the schema and every operation that refers to it: V1PredictRequest, and the three TF
    Serving :predict operations, were missing from the generated client."""
    doc = client.get("/openapi.json").get_json()

    def arrays_without_items(node, where):
        if isinstance(node, dict):
            if node.get("type") == "array" and not {"items", "prefixItems"} & set(node):
                yield where
            for key, value in node.items():
                yield from arrays_without_items(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from arrays_without_items(value, f"{where}/{i}")

    assert list(arrays_without_items(doc, "")) == []


def test_openapi_documents_every_body_the_predict_routes_take(client):
    """Each content type the document names for a prediction is answered, and each the routes take is named:
    application/octet-stream (an image or a .npy file, the one body type openapi-python-client sends raw) and
    application/npy were taken but missing, and a form's several images were described as one file."""
    doc = client.get("/openapi.json").get_json()
    for template in ("/predict", "/models/{name}/predict", "/models/{name}/versions/{version}/predict",
                     "/models/{name}/labels/{label}/predict"):
        body = doc["paths"][template]["post"]["requestBody"]
        assert set(body["content"]) == {"application/json", "image/*", "multipart/form-data", "application/x-npy",
                                        "application/npy", "application/octet-stream"}, template
    content = doc["paths"]["/predict"]["post"]["requestBody"]["content"]
    batch = npy(vectors(2))

    def two_files():
        return {"data": {"file": [(io.BytesIO(DIGIT_PNG), "a.png"), (io.BytesIO(DIGIT_PNG), "b.png")]},
                "content_type": "multipart/form-data"}

    sent = {
        "application/json": [{"json": {"images": [base64.b64encode(DIGIT_PNG).decode()]}}],
        "image/*": [{"data": DIGIT_PNG, "content_type": "image/png"}],
        "multipart/form-data": [two_files()],
        "application/x-npy": [{"data": batch, "content_type": "application/x-npy"}],
        "application/npy": [{"data": batch, "content_type": "application/npy"}],
        "application/octet-stream": [{"data": DIGIT_PNG, "content_type": "application/octet-stream"},
                                     {"data": batch, "content_type": "application/octet-stream"}],
    }
    assert set(sent) == set(content)
    for content_type, requests in sent.items():
        for request in requests:
            response = client.post("/predict", **request)
            assert response.status_code == 200, (content_type, response.get_json())
    form = content["multipart/form-data"]["schema"]["properties"]["file"]
    assert form == {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1}
    with client.post("/predict", **two_files()) as response:
        assert len(response.get_json()["predictions"]) == 2


class StalledBody(io.BytesIO):
    """A request body that stops arriving: the worker's socket raises TimeoutError (service/worker.py).
    Its bytes only give the request a length; none of them can be read."""

    def read(self, size=-1):
        raise TimeoutError("timed out")

    readline = readinto = read


@pytest.mark.parametrize("method, path, template", [
    ("post", "/models/iris/predict", "/models/{name}/predict"),
    ("put", "/models/iris/labels/stable", "/models/{name}/labels/{label}"),
    ("post", "/v2/models/iris/infer", "/v2/models/{name}/infer"),
    ("post", "/v1/models/iris:predict", "/v1/models/{name}:predict"),
    ("post", "/v2/repository/index", "/v2/repository/index"),
])
def test_openapi_documents_the_408_of_a_body_that_stops_arriving(client, method, path, template):
    response = getattr(client, method)(path, input_stream=StalledBody(b" " * 100), content_type="application/json",
                                       headers=AUTH)
    assert response.status_code == 408
    assert_error(response, 408, "request_timeout")  # the protocols' routes too
    documented = client.get("/openapi.json").get_json()["paths"][template][method]["responses"]
    schema = "ProtocolError" if template.startswith("/v") else "ErrorResponse"
    assert documented["408"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{schema}"}


def test_openapi_documents_408_on_every_operation_that_takes_a_body(client):
    doc = client.get("/openapi.json").get_json()
    missing = [(method, template) for template, operations in doc["paths"].items()
               for method, operation in operations.items()
               if "requestBody" in operation and "408" not in operation["responses"]]
    assert missing == []


def test_openapi_documents_405_on_exactly_the_operations_that_can_answer_it(client):
    """A path parameter's value may hold a '/' (sent as %2F) or a TF Serving verb, which can make the
    path another route's: every operation is tried with values that end in the tail of each route."""
    doc = client.get("/openapi.json").get_json()
    known = {"name": "mnist", "version": "1", "label": "stable"}

    def fill(template, **values):
        return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], known[m[1]]), template)

    routes = [fill(template) for template in doc["paths"]]
    tails = {"x" + route[i:] for route in routes for i in range(1, len(route)) if route[i] in "/:"}
    answered = set()
    for template, operations in doc["paths"].items():
        for method in operations:
            for parameter in re.findall(r"\{(\w+)\}", template):
                if any(client.open(fill(template, **{parameter: tail}), method=method).status_code == 405
                       for tail in tails):
                    answered.add((method, template))
    documented = {(method, template) for template, operations in doc["paths"].items()
                  for method, operation in operations.items() if "405" in operation["responses"]}
    assert answered == documented and len(documented) == 10
    for method, template in documented:
        response = doc["paths"][template][method]["responses"]["405"]
        schema = "ProtocolError" if template.startswith("/v") else "ErrorResponse"
        assert response["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{schema}"}
        assert set(response["headers"]) == {"Allow"}
    assert_error(client.get("/models/x%2Fpredict"), 405, "method_not_allowed", "use POST")


def test_docs_and_index_pages(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.mimetype == "text/html"
    page = docs.get_data(as_text=True)
    assert "/models/{name}/versions/{version}/activate" in page and "PredictRequest" in page
    assert "<script src=\"http" not in page  # self-contained: no CDN
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    with client.get("/", headers={"Accept": browser}) as index:
        assert index.status_code == 200 and index.mimetype == "text/html"
        assert "Accept" in index.vary  # the same URL answers JSON to other clients: caches must tell them apart
    with client.get("/", headers={"Accept": "application/xhtml+xml"}) as index:
        assert index.status_code == 200 and index.mimetype == "text/html"
    # KServe's V1 client asks / whether the server lives; so may a client that prefers JSON or refuses HTML.
    for accept in ("*/*", "application/json", None, "text/plain", "application/json, text/html;q=0.9",
                   "text/html;q=0, application/json", "text/html;q=0"):
        alive = client.get("/", headers={"Accept": accept} if accept else {})
        assert alive.status_code == 200 and alive.get_json() == {"status": "alive"}
        assert "Accept" in alive.vary


def test_docs_page_says_what_each_body_holds(client):
    """The page listed a body's content types only: what each holds (a form's files under any field name,
    octet-stream read as an image or a .npy file, V2's binary header length) was in openapi.json alone."""
    doc = client.get("/openapi.json").get_json()
    page = html.unescape(client.get("/docs").get_data(as_text=True))
    for template, method in (("/predict", "post"), ("/v2/models/{name}/infer", "post")):
        assert doc["paths"][template][method]["requestBody"]["description"] in page, template


def test_access_line_written_directly_matches_the_loggers(capsys):
    """The default set-up writes the access line without a logging record: it must be the line the
    JSON formatter writes for the same record; any other set-up goes through the logger."""
    import logging
    from datetime import datetime

    from service.logs import configure_logging, log_access

    fields = {"request_id": "r-1", "method": "POST", "path": "/predict", "route": "/predict", "model": "mnist",
              "version": 2, "status": 200, "latency_ms": 1.25, "code": None}
    configure_logging("json", "INFO")
    log_access("POST /predict 200 1.2ms", fields)
    logging.getLogger("scratchnet.access").info("POST /predict 200 1.2ms", extra=fields)
    direct, logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    written = [datetime.strptime(entry.pop("time"), "%Y-%m-%dT%H:%M:%S.%fZ") for entry in (direct, logged)]
    assert abs((written[1] - written[0]).total_seconds()) < 1
    assert direct == logged and "code" not in direct and direct["logger"] == "scratchnet.access"

    seen = []
    extra = logging.Handler()
    extra.emit = seen.append
    access = logging.getLogger("scratchnet.access")
    access.addHandler(extra)
    try:
        log_access("GET /healthz 200 0.1ms", {**fields, "path": "/healthz"})
    finally:
        access.removeHandler(extra)
    assert [record.path for record in seen] == ["/healthz"]  # a handler of its own gets the record
    assert json.loads(capsys.readouterr().err)["path"] == "/healthz"  # and stderr the line, as before

    configure_logging("json", "WARNING")
    log_access("POST /predict 200 1.2ms", fields)
    configure_logging("text", "INFO")
    log_access("POST /predict 200 1.2ms", fields)
    (line,) = capsys.readouterr().err.splitlines()  # nothing at WARNING; text through the formatter
    assert "scratchnet.access" in line and "request_id=r-1" in line and not line.startswith("{")
    configure_logging("json", "INFO")


def test_access_lines_look_up_no_logger_and_write_each_second_once(client, capsys, monkeypatch):
    """Every request writes an access line: looking up its two loggers took the logging module's lock
    twice a line, and writing out the date and time of each line anew, its second included, was a
    third of the line's CPU time besides (7.5 us a line; 4.9 us without them)."""
    import logging
    import time

    looked_up, written = [], []
    get_logger, strftime = logging.getLogger, time.strftime
    monkeypatch.setattr(logging, "getLogger", lambda name=None: (looked_up.append(name), get_logger(name))[1])
    monkeypatch.setattr(time, "strftime", lambda form, *when: (written.append(form), strftime(form, *when))[1])
    capsys.readouterr()
    for _ in range(20):
        assert client.get("/healthz").status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["path"] for line in lines] == ["/healthz"] * 20
    assert not [name for name in looked_up if name and name.startswith("scratchnet")]
    assert len(written) <= 3, f"the time of 20 lines in {len({line['time'][:19] for line in lines})} seconds " \
                              f"written out {len(written)} times"


def test_a_request_ends_its_turn_at_large_parses_even_when_its_in_flight_count_fails(app, monkeypatch):
    """The end of every request takes its in-flight gauge down and ends its turn among large parses: two
    teardown hooks did, reading g four times through Flask's proxy (5.1 us a request), and one that failed
    left the other undone, a turn never ended holding up every large parse after it. One hook does both
    now, reading g once (3.4 us), and ends the turn whatever the gauge does."""
    import flask

    ended = []
    monkeypatch.setattr(app.extensions["scratchnet"].large_parses, "end_turn", ended.append)

    class FailingGauge:
        def dec(self):
            raise OSError("the metrics file is gone")

    with app.test_request_context("/models/mnist/predict", method="POST"):
        flask.g.large_turn, flask.g.in_flight = 7, FailingGauge()
        with pytest.raises(OSError):
            app.do_teardown_request(None)
        assert "large_turn" not in flask.g and "in_flight" not in flask.g
    assert ended == [7]


def test_exactly_the_limit_of_values_is_accepted_with_top_k_beside_them(registry):
    """The cheap count of commas before parsing must not refuse a body the limit allows: two
    784-value vectors and top_k in a body with a limit of 1,568 values."""
    client = make_app(registry, max_vector_values=2 * 784).test_client()
    vectors = [[0.5] * 784, [0.25] * 784]
    response = client.post("/models/mnist/predict", json={"inputs": vectors, "top_k": 2})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [len(p["top_k"]) for p in response.get_json()["predictions"]] == [2, 2]
    one_more = client.post("/models/mnist/predict", json={"inputs": [*vectors, [0.5] * 784], "top_k": 2})
    assert_error(one_more, 413, "too_many_values")
