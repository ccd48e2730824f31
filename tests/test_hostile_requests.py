"""Hostile and malformed requests against a real Gunicorn: each bad input gets its documented status
and error code as JSON, odd but valid images are read the way the SPEC says, a decompression
bomb is refused, slow clients do not hold up anyone else, and after the whole corpus the server
still answers correctly. (That a bomb is refused before any pixel is decoded is proved in
test_preprocess.py; the service's memory is measured by bench/soak.py.)

The server runs with an 8 MiB body limit and a 2,000,000-number limit (both configurable, SPEC
§5) so the over-limit cases stay cheap, and a 5 s worker timeout so the slow clients outlast it;
everything else is the production configuration.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import io
import json
import re
import socket
import struct
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import requests
from PIL import Image

from images import bomb_png, encode, paper, synthetic_digit, to_mode
from modelgen import publish_model
from server import ServiceProcess, metric_value, raw_exchange
from shared.model_file import load_model
from shared.preprocess import image_to_vector

pytestmark = pytest.mark.slow

BODY_LIMIT = 8 * 1024 * 1024
VALUE_LIMIT = 2_000_000
WORKER_TIMEOUT = 5
IMAGE_MODEL = "/models/mnist/predict"
VECTOR_MODEL = "/models/iris/predict"
ADMIN_TOKEN = "hostile-admin-token"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    publish_model(root, "mnist", seed=3)
    publish_model(root, "iris", kind="vector")
    publish_model(root, "wide", kind="vector", labels=[f"class-{i}" for i in range(1000)])  # large answers
    return root


@pytest.fixture(scope="module")
def server(registry):
    env = {"SCRATCHNET_MAX_BODY_BYTES": str(BODY_LIMIT), "SCRATCHNET_MAX_VECTOR_VALUES": str(VALUE_LIMIT),
           "SCRATCHNET_TIMEOUT": str(WORKER_TIMEOUT)}
    with ServiceProcess(registry, workers=2, threads=4, admin_token=ADMIN_TOKEN, env=env) as process:
        yield process


# payloads -------------------------------------------------------------------------------------


@functools.cache
def digit_png() -> bytes:
    return encode(paper(synthetic_digit(1)), "PNG")


@functools.cache
def digit_jpeg() -> bytes:
    return encode(paper(synthetic_digit(1)).convert("RGB"), "JPEG")


@functools.cache
def large_blank_png(side: int = 5000) -> bytes:
    """A real ``side`` x ``side`` PNG of blank paper with one stroke: 25 million pixels, the
    per-image limit, in about 36 kB. Four fill the default pixel budget of a request."""
    image = Image.new("L", (side, side), 255)
    image.paste(0, (side // 4, side // 4, side // 4 + side // 20, 3 * side // 4))
    return encode(image, "PNG")


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("digit.png", digit_png())
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npy_header_only(shape: tuple) -> bytes:
    """A .npy header declaring ``shape`` float32, with no data behind it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def npy_with_header(header: str, data: bytes = b"") -> bytes:
    """A version 1.0 .npy file whose header is ``header`` as written, padded as numpy pads it."""
    text = header + " " * (-(len(header) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin-1") + data


def chunks(total: int, size: int = 1 << 20):
    """A body of ``total`` bytes sent with chunked transfer encoding (no Content-Length)."""
    def generate():
        sent = 0
        while sent < total:
            part = min(size, total - sent)
            sent += part
            yield b"\0" * part
    return generate()


@functools.cache
def million_numbers() -> bytes:
    return json.dumps({"inputs": [0.25] * 1_000_000}).encode()


@functools.cache
def million_numbers_batch() -> bytes:
    return json.dumps({"inputs": [[0.25] * 4] * 250_000}).encode()


def json_body(text: str | bytes) -> dict:
    return {"data": text.encode() if isinstance(text, str) else text, "headers": {"Content-Type": "application/json"}}


def raw(data: bytes, content_type: str | None) -> dict:
    return {"data": data, "headers": {"Content-Type": content_type} if content_type is not None else {}}


# the corpus ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One bad request and what the service must answer."""
    name: str
    status: int
    code: str
    request: Callable[[], dict] = field(compare=False)  # keyword arguments of requests.request
    path: str = IMAGE_MODEL
    method: str = "POST"

    def send(self, session: requests.Session, url: str) -> requests.Response:
        return session.request(self.method, url + self.path, timeout=60, **self.request())


CORPUS = [
    # bodies that are not what they claim
    Bad("empty image body", 400, "empty_body", lambda: raw(b"", "image/png")),
    Bad("empty JSON body", 400, "empty_body", lambda: json_body(""), VECTOR_MODEL),
    Bad("truncated PNG", 415, "unsupported_image", lambda: raw(digit_png()[:len(digit_png()) // 2], "image/png")),
    Bad("truncated JPEG", 415, "unsupported_image", lambda: raw(digit_jpeg()[:len(digit_jpeg()) // 2], "image/jpeg")),
    Bad("PNG claiming 30000x30000 pixels", 413, "image_too_large", lambda: raw(bomb_png(), "image/png")),
    Bad("SVG sent as image/png", 415, "unsupported_image",
        lambda: raw(b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><circle r="9"/></svg>', "image/png")),
    Bad("text sent as image/png", 415, "unsupported_image", lambda: raw(b"seven", "image/png")),
    Bad("ZIP sent as image/png", 415, "unsupported_image", lambda: raw(zip_bytes(), "image/png")),
    Bad("ZIP as application/zip", 415, "unsupported_media_type", lambda: raw(zip_bytes(), "application/zip")),
    # multipart
    Bad("multipart with no file", 422, "no_files", lambda: {"files": {"top_k": (None, "3")}}),
    Bad("multipart with an empty file", 422, "invalid_input",
        lambda: {"files": {"file": ("d.png", b"", "image/png")}}),
    Bad("multipart with 10,000 tiny files", 413, "form_too_large",
        lambda: {"files": [("file", (f"{i}.png", b"x", "image/png")) for i in range(10_000)]}),
    Bad("multipart with a wrong field name", 422, "invalid_input",
        lambda: {"files": {"file": ("d.png", digit_png(), "image/png"), "imagefile": (None, "d.png")}}),
    Bad("multipart with a bad top_k", 422, "invalid_input",
        lambda: {"files": {"file": ("d.png", digit_png(), "image/png"), "top_k": (None, "many")}}),
    Bad("multipart without a boundary", 400, "malformed_multipart", lambda: raw(digit_png(), "multipart/form-data")),
    Bad("multipart of 25-megapixel PNGs, over the request's pixel budget", 413, "too_many_pixels",
        lambda: {"files": [("file", (f"{i}.png", large_blank_png(), "image/png")) for i in range(5)]}),
    # JSON
    Bad("JSON that is a list", 422, "invalid_input", lambda: json_body("[1, 2, 3, 4]"), VECTOR_MODEL),
    Bad("JSON that is a string", 422, "invalid_input", lambda: json_body('"1, 2, 3, 4"'), VECTOR_MODEL),
    Bad("JSON with NaN", 422, "invalid_input", lambda: json_body('{"inputs": [NaN, 1, 2, 3]}'), VECTOR_MODEL),
    Bad("JSON with Infinity", 422, "invalid_input", lambda: json_body('{"inputs": [1, Infinity, 2, 3]}'), VECTOR_MODEL),
    Bad("JSON with -Infinity", 422, "invalid_input", lambda: json_body('{"inputs": [[1, 2, 3, -Infinity]]}'), VECTOR_MODEL),
    Bad("JSON with a number too large", 422, "invalid_input", lambda: json_body('{"inputs": [1e999, 1, 2, 3]}'), VECTOR_MODEL),
    Bad("JSON with strings", 422, "invalid_input", lambda: json_body('{"inputs": ["1", "2", "3", "4"]}'), VECTOR_MODEL),
    Bad("JSON with booleans", 422, "invalid_input", lambda: json_body('{"inputs": [true, false, 1, 2]}'), VECTOR_MODEL),
    Bad("JSON with null", 422, "invalid_input", lambda: json_body('{"inputs": [null, 1, 2, 3]}'), VECTOR_MODEL),
    Bad("JSON with objects", 422, "invalid_input", lambda: json_body('{"inputs": [{"a": 1}, 1, 2, 3]}'), VECTOR_MODEL),
    Bad("JSON lists of uneven lengths", 422, "invalid_input",
        lambda: json_body('{"inputs": [[1, 2, 3, 4], [1, 2], [1, 2, 3, 4, 5]]}'), VECTOR_MODEL),
    Bad("JSON numbers mixed with lists", 422, "invalid_input", lambda: json_body('{"inputs": [1, [2, 3], 4, 5]}'), VECTOR_MODEL),
    Bad("JSON nested three deep", 422, "invalid_input", lambda: json_body('{"inputs": [[[1, 2, 3, 4]]]}'), VECTOR_MODEL),
    Bad("JSON with a million numbers", 422, "invalid_input", lambda: json_body(million_numbers()), VECTOR_MODEL),
    Bad("JSON batch of a million numbers", 413, "batch_too_large", lambda: json_body(million_numbers_batch()), VECTOR_MODEL),
    Bad("JSON with more numbers than the limit", 413, "too_many_values",
        lambda: json_body(b'{"inputs": [' + b"0," * VALUE_LIMIT + b"0]}"), VECTOR_MODEL),
    Bad("JSON nested 100,000 deep", 400, "malformed_json",
        lambda: json_body('{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}"), VECTOR_MODEL),
    Bad("JSON objects nested 100,000 deep", 400, "malformed_json",
        lambda: json_body('{"inputs": [1, 2, 3, 4], "x": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}"), VECTOR_MODEL),
    Bad("JSON cut short", 400, "malformed_json", lambda: json_body('{"inputs": [1, 2,'), VECTOR_MODEL),
    Bad("JSON that is not UTF-8", 400, "malformed_json", lambda: json_body(b'{"inputs": "\xff\xfe"}'), VECTOR_MODEL),
    Bad("JSON with an unknown field", 422, "invalid_input", lambda: json_body('{"inputs": [1, 2, 3, 4], "input": 1}'), VECTOR_MODEL),
    Bad("JSON with inputs and images", 422, "invalid_input", lambda: json_body('{"inputs": [1, 2, 3, 4], "images": ["AA=="]}')),
    Bad("JSON image that is not base64", 400, "invalid_base64", lambda: json_body('{"images": ["not base64!"]}')),
    Bad("JSON top_k out of range", 422, "invalid_input", lambda: json_body('{"inputs": [1, 2, 3, 4], "top_k": -1}'), VECTOR_MODEL),
    Bad("JSON top_k a boolean", 422, "invalid_input", lambda: json_body('{"inputs": [1, 2, 3, 4], "top_k": true}'), VECTOR_MODEL),
    Bad("JSON integer of 5000 digits", 422, "invalid_input",
        lambda: json_body('{"inputs": [' + "9" * 5000 + ', 2, 3, 4]}'), VECTOR_MODEL),
    Bad("JSON compressed with deflate", 415, "unsupported_encoding",
        lambda: {**json_body(zlib.compress(b'{"inputs": [1, 2, 3, 4]}')), "headers": {
            "Content-Type": "application/json", "Content-Encoding": "deflate"}}, VECTOR_MODEL),
    # content types
    Bad("JSON sent as text/plain", 415, "unsupported_media_type",
        lambda: raw(b'{"inputs": [1, 2, 3, 4]}', "text/plain"), VECTOR_MODEL),
    Bad("no Content-Type", 415, "missing_content_type", lambda: raw(b'{"inputs": [1, 2, 3, 4]}', None), VECTOR_MODEL),
    Bad("XML", 415, "unsupported_media_type", lambda: raw(b"<inputs>1 2 3 4</inputs>", "application/xml"), VECTOR_MODEL),
    Bad("an image for a vector model", 415, "model_takes_vectors", lambda: raw(digit_png(), "image/png"), VECTOR_MODEL),
    Bad("a vector too short for the image model", 422, "invalid_input", lambda: json_body('{"inputs": [1, 2, 3, 4]}')),
    # .npy
    Bad(".npy of Python objects", 422, "invalid_npy_dtype",
        lambda: raw(npy_bytes(np.array([{"a": 1}, None], dtype=object)), "application/x-npy"), VECTOR_MODEL),
    Bad(".npy declaring 10^12 values", 413, "too_many_values",
        lambda: raw(npy_header_only((1_000_000, 1_000_000)), "application/x-npy"), VECTOR_MODEL),
    Bad(".npy with missing data", 400, "malformed_npy",
        lambda: raw(npy_header_only((10, 4)) + b"\0" * 12, "application/x-npy"), VECTOR_MODEL),
    Bad(".npy that is not one", 400, "malformed_npy", lambda: raw(b"\x93NUMPY garbage", "application/x-npy"), VECTOR_MODEL),
    Bad(".npy with negative dimensions", 400, "malformed_npy",
        lambda: raw(npy_header_only((-1, -4)) + b"\0" * 16, "application/x-npy"), VECTOR_MODEL),
    Bad(".npy header with an unclosed bracket", 400, "malformed_npy",
        lambda: raw(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4"), "application/x-npy"),
        VECTOR_MODEL),
    Bad(".npy with 65 dimensions, more than numpy makes", 400, "malformed_npy",
        lambda: raw(npy_header_only((1,) * 65) + b"\0" * 4, "application/x-npy"), VECTOR_MODEL),
    Bad(".npy of no values with a dimension over 2**63", 400, "malformed_npy",
        lambda: raw(npy_header_only((2 ** 63, 0)), "application/x-npy"), VECTOR_MODEL),
    Bad(".npy shape of booleans", 400, "malformed_npy",
        lambda: raw(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (True, 4), }", b"\0" * 16),
                    "application/x-npy"), VECTOR_MODEL),
    Bad(".npy header nested thousands deep", 400, "malformed_npy",
        lambda: raw(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "-" * 9000 + "1, 4), }"),
                    "application/x-npy"), VECTOR_MODEL),
    Bad(".npy of 0..255 pixels for an image model", 422, "invalid_npy_dtype",
        lambda: raw(npy_bytes(np.zeros((1, 784), np.uint8)), "application/x-npy")),
    # size limits
    Bad("body over the limit, with Content-Length", 413, "payload_too_large",
        lambda: raw(b"\0" * (BODY_LIMIT + 1), "image/png")),
    Bad("body over the limit, chunked", 413, "payload_too_large",
        lambda: raw(chunks(BODY_LIMIT + 1), "image/png")),
    Bad("JSON over the limit, chunked", 413, "payload_too_large",
        lambda: raw(chunks(BODY_LIMIT + (1 << 20)), "application/json"), VECTOR_MODEL),
    Bad("request line over Gunicorn's limit", 414, "uri_too_long", lambda: {}, "/models/" + "m" * 5000, "GET"),
    Bad("header over Gunicorn's limit", 431, "request_header_fields_too_large",
        lambda: {"headers": {"X-Padding": "p" * 9000}}, "/healthz", "GET"),
    # routes
    Bad("unknown model", 404, "model_not_found", lambda: json_body('{"inputs": [1, 2, 3, 4]}'), "/models/nope/predict"),
    Bad("version that is not a number", 404, "version_not_found",
        lambda: json_body('{"inputs": [1, 2, 3, 4]}'), "/models/iris/versions/1e3/predict"),
    Bad("version in digits that are not ASCII", 404, "version_not_found",
        lambda: json_body('{"inputs": [1, 2, 3, 4]}'), "/models/iris/versions/%C2%B2/predict"),
    Bad("version that does not exist", 404, "version_not_found",
        lambda: json_body('{"inputs": [1, 2, 3, 4]}'), "/models/iris/versions/99/predict"),
    Bad("unknown route", 404, "not_found", lambda: {}, "/predictions", "GET"),
    Bad("wrong method", 405, "method_not_allowed", lambda: {}, "/predict", "GET"),
    Bad("path traversal in a model name", 404, "not_found", lambda: {}, "/models/..%2f..%2fetc/versions/1", "GET"),
]


def run_corpus(server: ServiceProcess) -> list[tuple[Bad, requests.Response]]:
    """Every case, each on a new connection: after refusing a body it did not read (over 64 KiB),
    Gunicorn closes the connection, so a client must not reuse it (docs/reliability.md)."""
    answers = []
    for bad in CORPUS:
        with requests.Session() as session:
            answers.append((bad, bad.send(session, server.url)))
    return answers


def error_of(response: requests.Response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert set(body) == {"error", "code", "details"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["details"], list)
    return body


@pytest.mark.parametrize("bad", CORPUS, ids=[bad.name for bad in CORPUS])
def test_bad_request_gets_its_status_and_code(server, bad):
    with requests.Session() as session:
        response = bad.send(session, server.url)
    body = error_of(response)
    assert (response.status_code, body["code"]) == (bad.status, bad.code), body["error"]


@pytest.mark.parametrize("content_type, code", [("application/x-www-form-urlencoded", "unsupported_media_type"),
                                                (None, "missing_content_type")])
def test_json_sent_as_a_form_is_told_the_header_to_send(server, content_type, code):
    """``curl -d '{"inputs": ...}'`` without -H sends its JSON as application/x-www-form-urlencoded: the 415
    listed every accepted type, and never said that the body was JSON and which header was missing."""
    response = requests.post(server.url + VECTOR_MODEL, timeout=30, **raw(b' {"inputs": [1, 2, 3, 4]}', content_type))
    body = error_of(response)
    assert (response.status_code, body["code"]) == (415, code), body["error"]
    assert "its body looks like JSON: send it with Content-Type: application/json (curl -d sends " \
           "application/x-www-form-urlencoded unless told: add -H 'Content-Type: application/json')" in body["error"]


@pytest.mark.parametrize("path, template", [(IMAGE_MODEL, '{"images": ["%s"]}'),
                                            ("/v1/models/mnist:predict", '{"instances": [{"b64": "%s"}]}'),
                                            ("/v2/models/mnist/infer", '{"inputs": [{"name": "image", "shape": [1], '
                                                                       '"datatype": "BYTES", "data": ["%s"]}]}')])
def test_base64_pasted_in_lines_is_told_to_write_it_on_one_line(server, path, template):
    """``-d '{"images": ["'"$(base64 digit.png)"'"]}'`` pastes base64 as the base64 command writes it, in lines of 76
    characters: the raw line breaks make the JSON invalid, and the 400 said only "Invalid control character at: line 1
    column 90", which names no line break and nothing to do. On V2 it went on about binary tensors and their header,
    which have nothing to do with a line break inside a string."""
    lines = base64.encodebytes(digit_png()).decode()  # what `base64 digit.png` prints
    response = requests.post(server.url + path, data=(template % lines).encode(), timeout=30,
                             headers={"Content-Type": "application/json"})
    body = error_of(response)
    assert (response.status_code, body["code"]) == (400, "malformed_json"), body["error"]
    assert body["error"].startswith("The body is not valid JSON: Invalid control character at: line 1 column ")
    assert body["error"].endswith(": a string holds a raw line break, which JSON takes only escaped (\\n); write "
                                  "base64 on one line (base64 -w0 digit.png, or Python's base64.b64encode).")


@pytest.mark.parametrize("value", [-1, 70_000])
def test_a_pixel_array_of_one_value_outside_every_range_is_blank_without_a_warning(server, value):
    """Pixels of one value outside 0..65535 have no range to be scaled by: the scaling divided 0 by 0, NumPy's
    RuntimeWarning went to the service's log, and NaN pixels went on down the pipeline."""
    response = requests.post(server.url + "/v1/models/mnist:predict", json={"instances": [[[value] * 28] * 28]},
                             timeout=30)
    assert response.status_code == 400 and "The image is blank" in error_of(response)["error"], response.text
    assert "RuntimeWarning" not in server.log()


def test_made_up_methods_do_not_add_metric_series(server):
    """Any token is a valid HTTP method; the metrics must not grow a series for each one."""
    for i in range(40):
        response = requests.request(f"SCAN{i}", server.url + "/predict", timeout=10)
        assert (response.status_code, error_of(response)["code"]) == (405, "method_not_allowed")
    text = server.metrics()
    assert "SCAN" not in text
    assert 'method="other"' in text


def access_lines(server: ServiceProcess, request_id: str) -> list[dict]:
    """The access lines the service logged for ``request_id``."""
    lines = [json.loads(text) for text in server.log().splitlines() if text.startswith("{")]
    return [line for line in lines
            if line.get("logger") == "scratchnet.access" and line.get("request_id") == request_id]


def test_access_lines_name_the_clients_address(server):
    """An operator tracing abuse had the request id, route and status of each request, but not who
    sent it, in the app's lines or in those of the requests Gunicorn refused itself."""
    answered = requests.get(server.url + "/healthz", timeout=10)
    refused = requests.get(server.url + "/healthz", headers={"X-Padding": "p" * 9000}, timeout=10)
    assert (answered.status_code, refused.status_code) == (200, 431)
    deadline = time.monotonic() + 10
    while not all(access_lines(server, r.headers["X-Request-ID"]) for r in (answered, refused)):
        assert time.monotonic() < deadline, "no access lines"
        time.sleep(0.05)
    for response in (answered, refused):
        (line,) = access_lines(server, response.headers["X-Request-ID"])
        assert line["remote_addr"] == "127.0.0.1", line


def test_requests_gunicorn_refuses_itself_are_counted_and_logged(server):
    """A request line or headers over Gunicorn's limits never reach the app, yet an operator
    reading the metrics or the access log must see them, and the client gets the request id
    that names its access line."""
    def refused(text: str, status: int) -> float:
        return metric_value(text, "scratchnet_requests_total", route="<unmatched>", status=status)

    def too_long(text: str) -> float:
        return metric_value(text, "scratchnet_errors_total", route="<unmatched>", code="uri_too_long")

    before = server.metrics()
    long_line = requests.get(server.url + "/models/" + "m" * 5000, timeout=10)
    big_header = requests.get(server.url + "/healthz", headers={"X-Padding": "p" * 9000}, timeout=10)
    assert (long_line.status_code, big_header.status_code) == (414, 431)
    # the headers every answer carries, as the app's own answers do
    assert long_line.headers["X-Content-Type-Options"] == big_header.headers["X-Content-Type-Options"] == "nosniff"
    after = server.metrics()
    assert refused(after, 414) == refused(before, 414) + 1
    assert refused(after, 431) == refused(before, 431) + 1
    assert too_long(after) == too_long(before) + 1
    received = {long_line.headers.get("X-Request-ID"), big_header.headers.get("X-Request-ID")}
    access = [line for request_id in received for line in access_lines(server, request_id)]
    assert {(line["status"], line["request_id"]) for line in access} == {
        (414, long_line.headers.get("X-Request-ID")), (431, big_header.headers.get("X-Request-ID"))}
    assert all(line["route"] == "<unmatched>" and len(line["request_id"]) == 32 for line in access)
    assert {line.get("code") for line in access} == {"uri_too_long", "request_header_fields_too_large"}
    # Gunicorn's warnings quote the 5 kB line and the 9 kB header: cut, so that each line is written
    # whole to the pipe both workers share (PIPE_BUF, 4,096 bytes).
    assert all(len(line.encode()) < 4096 for line in server.log().splitlines() if line.startswith("{"))


NOT_HTTP = [
    # (name, request, status, code, what the message must say)
    ("length with chunked", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "invalid_header",
     "Content-Length header is invalid or repeated: give it once, as a whole number of bytes, and never with"),
    ("negative length", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400,
     "invalid_header", "Content-Length header"),
    ("two content types", b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
     400, "invalid_header", "Content-Type header is invalid or repeated: give it once"),
    ("chunked on HTTP/1.0", b"POST /predict HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "invalid_header", "only on an HTTP/1.1 request"),
    ("space in a header name", b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400,
     "invalid_header", "The header name 'Bad Name' is invalid"),
    ("lower-case method", b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_method",
     "a method is 3 to 20 capital letters"),
    ("HTTP/2.0 request line", b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported",
     "send the request as HTTP/1.1 or HTTP/1.0"),
    ("no request line", b"GARBAGE\r\n\r\n", 400, "invalid_request_line", "send it as METHOD /path HTTP/1.1"),
    ("malformed version", b"GET /healthz HTTP/1.1x\r\nHost: x\r\n\r\n", 400, "invalid_request_line",
     "version 'HTTP/1.1x' is malformed: end the line with HTTP/1.1"),
    ("header line without a colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo Colon Here\r\n\r\n", 400,
     "invalid_header", "A header line is malformed: write each header as Name: value"),
    ("one word without a colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n", 400,
     "invalid_header", "A header line is malformed: write each header as Name: value"),
    ("folded header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n", 400, "invalid_header",
     "obsolete folding"),
    ("two-letter method", b"AB /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_method",
     "3 to 20 capital letters"),
    ("a space in the path", b"GET /models/my model HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_request_line",
     "The request's path or query holds a space, which ends it: percent-encode it as %20. Encode each byte of the "
     "UTF-8 of other characters as %XX (a space as %20, \u00e9 as %C3%A9), as an HTTP client's URL encoding does."),
    ("UTF-8 in the path", "GET /models/caf\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400, "invalid_request_line",
     "The request's path or query holds characters other than printable ASCII, which must be percent-encoded."),
    ("a tab in the query", b"GET /models?a=\tb HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_request_line",
     "holds characters other than printable ASCII"),
    ("an expectation other than 100-continue", b"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n"
     b"Content-Length: 0\r\n\r\n", 417, "expectation_failed", "The Expect header '200-ok' cannot be met: the only "
     "expectation taken is 100-continue; send Expect: 100-continue, or no Expect header."),
    # over Gunicorn's limits, which its words ("Error parsing headers: 'limit request headers fields size'") left
    # the client to guess
    ("request line over the limit", b"GET /models/" + b"m" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
     "uri_too_long", "The request line (method, path and query) is over 4,094 bytes: shorten the path and query, "
     "and send inputs in the body of a POST"),
    ("header over the limit", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 9000 + b"\r\n\r\n", 431,
     "request_header_fields_too_large", "A header line of the request is over 8,190 bytes: shorten it"),
    ("too many headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(101))
     + b"\r\n", 431, "request_header_fields_too_large", "The request has more than 100 header lines: send fewer."),
]


@pytest.mark.parametrize("name, request_bytes, status, code, says", NOT_HTTP, ids=[case[0] for case in NOT_HTTP])
def test_a_request_that_is_not_valid_http_is_told_what_to_send(server, name, request_bytes, status, code, says):
    """Gunicorn refuses these before the app sees them, in its own words ("Invalid HTTP Header:
    'CONTENT-LENGTH'"): the answer says what is wrong and what to send, in the API's error shape,
    with the Date header every HTTP answer carries (RFC 9110 section 6.6.1)."""
    head, body = raw_exchange(server.url, request_bytes)
    lines = head.decode("latin-1").split("\r\n")
    assert int(lines[0].split()[1]) == status, (head + body)[:300]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert email.utils.parsedate_to_datetime(headers["Date"]).tzinfo is not None
    assert headers["Connection"] == "close" and headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    error = json.loads(body)
    assert set(error) == {"error", "code", "details"} and error["code"] == code, error
    assert says in error["error"], error


@pytest.mark.parametrize("version", [b"HTTP/1.2", b"HTTP/1.9"])
def test_a_later_http1_minor_version_is_answered_as_http11(server, version):
    """RFC 9110 section 2.5: a request of a higher minor version is processed as the highest one the
    server implements, and answered in that version. Gunicorn echoed the client's ("HTTP/1.9 200 OK"),
    a version no server speaks; the connection stays open between the two requests, as in HTTP/1.1."""
    request = b"GET /models HTTP/1.1\r\nHost: x\r\n\r\n".replace(b"HTTP/1.1", version)
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".replace(b"HTTP/1.1", version)
    head, body = raw_exchange(server.url, request + last)
    answer = head + b"\r\n\r\n" + body
    assert re.findall(rb"^HTTP/\S+ \d+", answer, re.M) == [b"HTTP/1.1 200", b"HTTP/1.1 200"], answer[:300]
    assert b'"mnist"' in answer and answer.endswith(b'{"status":"ok"}\n')


# malformed chunked bodies ------------------------------------------------------------------------
# Gunicorn parses a chunked body while the service reads it, and raises its own errors for a bad one.


def exchange(server: ServiceProcess, request: bytes, *, close_after: bool) -> tuple[int, dict]:
    """Send ``request`` as raw bytes (half-closing the connection after it when ``close_after``)
    and return the status and the JSON body of the answer."""
    head, body = raw_exchange(server.url, request, close_after=close_after)
    assert b"\r\ncontent-type: application/json" in head.lower(), (head + body)[:300]
    return int(head.split()[1]), json.loads(body)


HOSTS = [
    # (name, request, status, code): RFC 9112 section 3.2
    ("HTTP/1.1 without Host", b"GET /models HTTP/1.1\r\n\r\n", 400, "missing_host"),
    ("two Host headers", b"GET /models HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "invalid_header"),
    ("HTTP/1.0 without Host", b"GET /models HTTP/1.0\r\n\r\n", 200, None),
    ("HTTP/1.1 with Host", b"GET /models HTTP/1.1\r\nHost: x\r\n\r\n", 200, None),
]


@pytest.mark.parametrize("name, request_bytes, status, code", HOSTS, ids=[case[0] for case in HOSTS])
def test_an_http11_request_needs_exactly_one_host_header(server, name, request_bytes, status, code):
    """A server must answer 400 to an HTTP/1.1 request without a Host header or with two (a proxy
    and the service could otherwise route it differently); HTTP/1.0 has no Host to require."""
    answer_status, body = exchange(server, request_bytes, close_after=True)
    assert answer_status == status, body
    if code is None:
        assert "mnist" in {model["name"] for model in body["models"]}
    else:
        assert body["code"] == code and "Host header" in body["error"], body


def raw_status_line(server: ServiceProcess, request: bytes) -> str:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        return sock.makefile("rb").readline().decode("latin-1").rstrip("\r\n")


def chunked_request(path: str, content_type: str, chunks: bytes, method: str = "POST", headers: str = "",
                    transfer_encoding: str = "chunked") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n{headers}"
            f"Transfer-Encoding: {transfer_encoding}\r\nConnection: close\r\n\r\n").encode() + chunks


BAD_SIZE = b"zz\r\nabc\r\n0\r\n\r\n"
AUTHORIZED = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
BAD_CHUNKED = [
    # (name, request, half-close after it, status, code)
    ("bad chunk size, image", chunked_request(IMAGE_MODEL, "image/png", BAD_SIZE), False, 400, "malformed_body"),
    ("bad chunk size, form", chunked_request(IMAGE_MODEL, "multipart/form-data; boundary=x", BAD_SIZE), False,
     400, "malformed_body"),
    ("bad chunk size, label", chunked_request("/models/mnist/labels/stable", "application/json", BAD_SIZE, "PUT",
                                              AUTHORIZED), False, 400, "malformed_body"),
    ("bad chunk size, V2", chunked_request("/v2/models/iris/infer", "application/json", BAD_SIZE), False, 400,
     "malformed_body"),
    ("chunk not followed by CRLF", chunked_request(IMAGE_MODEL, "image/png", b"3\r\nabcXY0\r\n\r\n"), False,
     400, "malformed_body"),
    ("cut off inside a chunk", chunked_request(IMAGE_MODEL, "image/png", b"10\r\nabc"), True, 400, "truncated_body"),
    ("cut off inside a form", chunked_request(IMAGE_MODEL, "multipart/form-data; boundary=x",
                                              b"40\r\n--x\r\nContent-Disposition: form-data"), True,
     400, "truncated_body"),
    ("JSON cut off", chunked_request(VECTOR_MODEL, "application/json", b'40\r\n{"inputs": [[1, 2,'), True,
     400, "truncated_body"),
]


@pytest.mark.parametrize("name, request_bytes, close_after, status, code", BAD_CHUNKED,
                         ids=[case[0] for case in BAD_CHUNKED])
def test_a_malformed_chunked_body_is_a_400_without_a_traceback(server, registry, name, request_bytes,
                                                              close_after, status, code):
    logged = len(server.log())
    answer_status, body = exchange(server, request_bytes, close_after=close_after)
    assert answer_status == status, body
    assert set(body) == {"error", "code", "details"} and body["code"] == code, body
    time.sleep(0.2)  # the access line and anything else the worker writes about it
    assert "Traceback" not in server.log()[logged:]
    assert not (registry / "mnist" / "serving.json").exists()
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200


RESET_PART = 3 << 19  # 1.5 MiB: over a megabyte, a body is read by a thread, not the event loop
RESET_BODIES = [
    # (name, request line and headers, the part of the body sent before the reset)
    ("npy by length", f"POST {IMAGE_MODEL} HTTP/1.1\r\nContent-Type: application/x-npy\r\n"
                      "Content-Length: 3000000\r\n", b"\0" * RESET_PART),
    ("image chunked", f"POST {IMAGE_MODEL} HTTP/1.1\r\nContent-Type: image/png\r\n"
                      "Transfer-Encoding: chunked\r\n", b"2dc6c0\r\n" + b"\0" * RESET_PART),
    ("V2 by length", "POST /v2/models/iris/infer HTTP/1.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: 3000000\r\n", b" " * RESET_PART),
]


@pytest.mark.parametrize("name, head, part", RESET_BODIES, ids=[case[0] for case in RESET_BODIES])
def test_a_client_that_resets_mid_body_is_its_400_not_a_server_error(server, name, head, part):
    """A phone that loses its signal halfway through an upload resets the connection: that is the
    client's failure, logged without a traceback and never counted as a 500 that would page someone."""
    request_id = f"reset-{name.replace(' ', '-')}"
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{head}Host: test\r\nX-Request-ID: {request_id}\r\n\r\n".encode() + part)
        time.sleep(0.3)  # the worker is now reading the body
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
    deadline = time.monotonic() + 10
    while not (access := access_lines(server, request_id)):
        assert time.monotonic() < deadline, f"no access line for {request_id}"
        time.sleep(0.05)
    assert [(line["status"], line["code"]) for line in access] == [(400, "truncated_body")]
    logged = [line for line in server.log().splitlines() if request_id in line]
    assert not any("Traceback" in line or '"level": "error"' in line for line in logged), logged
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert metric_value(metrics, "scratchnet_errors_total", code="internal_error") == 0


@pytest.mark.parametrize("content_type", ["application/x-npy", "application/json", "image/png"])
def test_a_body_announced_larger_than_memory_under_a_raised_limit_is_a_413(registry, content_type):
    """An operator who raises SCRATCHNET_MAX_BODY_BYTES past the machine's memory (to lift the limit)
    let a Content-Length of 100 TB through to the allocation of its buffer: a 500 and a traceback."""
    env = {"SCRATCHNET_MAX_BODY_BYTES": str(10**15)}
    with ServiceProcess(registry, workers=1, threads=2, env=env) as process:
        head, body = raw_exchange(process.url, b"POST /models/iris/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                  + content_type.encode() + b"\r\nContent-Length: %d\r\n\r\nabc" % 10**14, timeout=10)
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert json.loads(body) == {"error": "The body of 100,000,000,000,000 bytes is more than this server can hold in "
                                         "memory; send it in smaller requests.", "code": "payload_too_large",
                                "details": []}


def test_an_answer_the_client_does_not_take_whole_is_logged_and_counted_as_cut(server):
    """A client that hangs up while its answer is sent left only the access line of a complete 200:
    the operator could not tell that the answer never arrived. (An answer that the system's send
    buffer takes whole, up to a few MB, counts as sent: this one is about 9 MB.)"""
    request_id = "hangs-up-mid-answer"
    path = "/models/wide/predict?top_k=1000"
    body = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]] * 200}).encode()
    route = "/models/<name>/predict"
    before = metric_value(server.metrics(), "scratchnet_answers_cut_total", route=route)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the server can buffer less of the answer
        sock.settimeout(30)
        sock.connect((host, int(port)))
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nX-Request-ID: {request_id}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        assert sock.recv(12) == b"HTTP/1.1 200"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
    deadline = time.monotonic() + 10
    while not (cut := [line for line in map(json.loads, filter(None, server.log().splitlines()))
                       if line.get("request_id") == request_id and line.get("logger") == "scratchnet.service"]):
        assert time.monotonic() < deadline, f"no line for the cut answer of {request_id}"
        time.sleep(0.05)
    (line,) = cut
    assert [a["status"] for a in access_lines(server, request_id)] == [200]
    assert line["level"] == "info" and line["route"] == route and line["status"] == 200
    whole = len(requests.post(server.url + path, data=body, timeout=30,
                              headers={"Content-Type": "application/json"}).content)
    assert 0 < line["bytes_sent"] < whole, (line, whole)
    assert line["message"] == (f"the client took {line['bytes_sent']:,} bytes of the answer to request {request_id} "
                               "(POST /models/wide/predict, 200) and no more: connection closed")
    assert metric_value(server.metrics(), "scratchnet_answers_cut_total", route=route) == before + 1


def one_chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


GZIPPED_VECTOR = one_chunk(zlib.compress(json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]}).encode(), wbits=31))
V2_VECTOR = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
TRANSFER_CODED = [
    # (name, request, code, what the answer advises)
    ("native JSON", chunked_request(VECTOR_MODEL, "application/json", GZIPPED_VECTOR,
                                    transfer_encoding="gzip, chunked"), "unsupported_transfer_coding", "uncompressed"),
    ("native image", chunked_request(IMAGE_MODEL, "image/png", one_chunk(zlib.compress(digit_png())),
                                     transfer_encoding="deflate, chunked"), "unsupported_transfer_coding",
     "uncompressed"),
    ("V2 infer", chunked_request("/v2/models/iris/infer", "application/json",
                                 one_chunk(zlib.compress(json.dumps(V2_VECTOR).encode(), wbits=31)),
                                 transfer_encoding="gzip, chunked"), "unsupported_transfer_coding",
     "Content-Encoding: gzip"),
    ("V1 predict", chunked_request("/v1/models/iris:predict", "application/json", GZIPPED_VECTOR,
                                   transfer_encoding="gzip,chunked"), "unsupported_transfer_coding",
     "Content-Encoding: gzip"),
    # Routes that read no body: the request is refused all the same, as the RFC asks.
    ("health check", chunked_request("/healthz", "application/json", b"0\r\n\r\n", method="GET",
                                     transfer_encoding="gzip, chunked"), "unsupported_transfer_coding",
     "send the body uncompressed"),
    ("V2 metadata", chunked_request("/v2/models/iris", "application/json", b"0\r\n\r\n", method="GET",
                                    transfer_encoding="gzip, chunked"), "unsupported_transfer_coding",
     "send the body uncompressed"),
    # A coding Gunicorn does not know at all: refused before the app sees the request.
    ("unknown coding", chunked_request(IMAGE_MODEL, "image/png", one_chunk(digit_png()), transfer_encoding="foo"),
     "unsupported_transfer_coding", "send the body as it is, or chunked"),
]


@pytest.mark.parametrize("name, request_bytes, code, advice", TRANSFER_CODED, ids=[case[0] for case in TRANSFER_CODED])
def test_a_body_with_a_transfer_coding_besides_chunked_is_a_501(server, name, request_bytes, code, advice):
    """Gunicorn takes ``gzip, chunked`` apart into chunks and leaves the gzip on: those bytes were read as
    the body itself (400 "not valid JSON", 415 "not an image"), where the body is fine and only its coding
    is unsupported."""
    logged = len(server.log())
    status, body = exchange(server, request_bytes, close_after=False)
    assert status == 501, body
    assert raw_status_line(server, request_bytes).lower() == "http/1.1 501 not implemented"  # not "Bad Request"
    assert body["error"].startswith("Transfer-Encoding ") and "only chunked" in body["error"], body
    assert advice in body["error"], body
    assert set(body) == {"error", "code", "details"} and body["code"] == code, body
    time.sleep(0.2)  # the access line and anything else the worker writes about it
    assert "Traceback" not in server.log()[logged:]


def damaged_tiff(tag: int = 259) -> bytes:
    """A white 64x64 TIFF whose ``tag`` entry claims 100,000 values, more than the file holds:
    Pillow reads it, with a UserWarning naming the tag."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    directory = struct.unpack("<I", data[4:8])[0]
    for entry in range(struct.unpack("<H", data[directory:directory + 2])[0]):
        at = directory + 2 + 12 * entry
        if struct.unpack("<H", data[at:at + 2])[0] == tag:
            data[at + 4:at + 8] = struct.pack("<I", 100_000)
    return bytes(data)


def test_a_warning_about_a_damaged_image_is_a_line_of_the_json_log(server):
    """Pillow's warnings went to stderr as they are, two lines of plain text each (its message and
    the source line that raised it) in the middle of the JSON log, as often as clients liked."""
    logged = len(server.log())
    for _ in range(4):  # on new connections: to both workers, each of which warns once
        response = requests.post(server.url + IMAGE_MODEL, data=damaged_tiff(), timeout=10,
                                 headers={"Content-Type": "image/tiff", "Connection": "close"})
        assert response.status_code == 422 and "The image is blank" in response.json()["error"], response.text
    time.sleep(0.2)
    lines = server.log()[logged:].splitlines()
    entries = [json.loads(line) for line in lines]  # every line, JSON
    warned = [entry for entry in entries if entry["logger"] == "py.warnings"]
    assert warned and all("Tag data larger than file" in entry["message"] for entry in warned), lines
    assert all(entry["level"] == "warning" for entry in warned)


def test_pillows_own_log_about_a_damaged_image_is_a_line_of_the_json_log(server):
    """Pillow logs an error of its own (logger ``PIL``) about a TIFF that claims more samples per
    pixel than it decodes: with no handler of ours, Python's last resort printed it as a line of
    plain text in the middle of the JSON log, as often as clients liked."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(buffer, "TIFF", tiffinfo={277: 100})  # SamplesPerPixel
    logged = len(server.log())
    response = requests.post(server.url + IMAGE_MODEL, data=buffer.getvalue(), timeout=10,
                             headers={"Content-Type": "image/tiff", "X-Request-ID": "damaged-tiff"})
    assert response.status_code == 415 and response.json()["code"] == "unsupported_image", response.text
    time.sleep(0.2)
    lines = server.log()[logged:].splitlines()
    entries = [json.loads(line) for line in lines]  # every line, JSON
    pillow = [entry for entry in entries if entry["logger"].startswith("PIL")]
    assert pillow and "More samples per pixel than can be decoded: 100" in pillow[0]["message"], lines
    assert any(entry.get("request_id") == "damaged-tiff" for entry in entries), lines


def test_the_debug_level_logs_no_line_of_pillows_for_each_image(registry):
    """SCRATCHNET_LOG_LEVEL=debug, the level of the service's own lines, logged Pillow's debug lines too: a
    line for each chunk of each PNG a client sent (a PNG of a thousand chunks, a thousand lines)."""
    image = encode(paper(synthetic_digit(7)), "PNG")
    with ServiceProcess(registry, workers=1, env={"SCRATCHNET_LOG_LEVEL": "debug"}) as process:
        logged = len(process.log())
        response = requests.post(process.url + IMAGE_MODEL, data=image, timeout=10,
                                 headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        time.sleep(0.2)
        lines = process.log()[logged:].splitlines()
    assert lines and not [line for line in lines if json.loads(line)["logger"].startswith("PIL")], lines


# odd but valid images ------------------------------------------------------------------------


def predict_image(server, data: bytes, content_type: str) -> list[float]:
    response = requests.post(server.url + IMAGE_MODEL + "?top_k=10", data=data,
                             headers={"Content-Type": content_type}, timeout=30)
    assert response.status_code == 200, response.text
    by_label = {entry["label"]: entry["probability"] for entry in response.json()["predictions"][0]["top_k"]}
    return [by_label[str(d)] for d in range(10)]


def test_animated_gif_is_read_from_its_first_frame(server):
    first, second = paper(synthetic_digit(1)), paper(synthetic_digit(0))
    animated = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(animated)).n_frames == 2
    gif = np.array(predict_image(server, animated, "image/gif"))
    as_first = np.array(predict_image(server, encode(first, "PNG"), "image/png"))
    as_second = np.array(predict_image(server, encode(second, "PNG"), "image/png"))
    assert np.abs(gif - as_first).max() < 0.02 < np.abs(gif - as_second).max()


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("P", "PNG"), ("LA", "PNG")])
def test_unusual_image_modes_predict_like_plain_grey(server, mode, fmt):
    grey = paper(synthetic_digit(1))
    plain = predict_image(server, encode(grey, "PNG"), "image/png")
    odd = predict_image(server, encode(to_mode(grey, mode), fmt), f"image/{fmt.lower()}")
    assert np.allclose(odd, plain, atol=0.02)


def test_a_file_under_any_form_field_name_is_an_image(server):
    """Files are taken whatever their field is called (``curl -F image=@digit.png`` works); only
    text fields other than top_k are refused (in the corpus above)."""
    response = requests.post(server.url + IMAGE_MODEL, files={"picture": ("d.png", digit_png(), "image/png")}, timeout=30)
    assert response.status_code == 200, response.text


# the decompression bomb ------------------------------------------------------------------------


def test_decompression_bomb_is_refused(server):
    """The service turns the decoder's refusal into 413 image_too_large; that nothing is decoded
    first is tested in test_preprocess.py (test_decompression_bomb_is_refused_before_decoding)."""
    workers = server.worker_pids()
    for bomb in [bomb_png(30_000), bomb_png(60_000), bomb_png(5_001)]:  # 900 M, 3.6 G and 25 M pixels
        response = requests.post(server.url + IMAGE_MODEL, data=bomb, headers={"Content-Type": "image/png"}, timeout=30)
        assert (response.status_code, error_of(response)["code"]) == (413, "image_too_large")
    assert server.worker_pids() == workers


# slow clients ------------------------------------------------------------------------------------


def trickle(url: str, *, headers_slowly: bool, seconds: float, results: list, complete: threading.Event) -> None:
    """One slow client: its headers or its body trickle in a byte at a time over ``seconds``;
    ``complete`` is set just before the request's last byte is sent (no answer can come before)."""
    host, port = url.removeprefix("http://").split(":")
    body = b'{"inputs": [5.1, 3.5, 1.4, 0.2]}'
    head = (f"POST {VECTOR_MODEL} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    slow = head if headers_slowly else body
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        if not headers_slowly:
            sock.sendall(head)
        for i in range(len(slow) - 1):
            sock.sendall(slow[i:i + 1])
            time.sleep(seconds / len(slow))
        complete.set()
        sock.sendall(slow[-1:])
        if headers_slowly:
            sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    results.append(answer)


def test_slow_clients_do_not_hold_up_other_requests(server):
    """Three clients trickle their requests in for longer than the worker timeout (two the body,
    one the headers). Meanwhile other requests are answered, no worker is restarted, and the slow
    requests are answered correctly once complete."""
    workers = server.worker_pids()
    payload = {"inputs": [5.1, 3.5, 1.4, 0.2]}
    with requests.Session() as session:
        assert session.post(server.url + VECTOR_MODEL, json=payload, timeout=10).status_code == 200
        answers: list[bytes] = []
        complete = [threading.Event() for _ in range(3)]
        slow = [threading.Thread(target=trickle, args=(server.url,), daemon=True,
                                 kwargs={"headers_slowly": i == 2, "seconds": WORKER_TIMEOUT + 2, "results": answers,
                                         "complete": complete[i]})
                for i in range(3)]
        for thread in slow:
            thread.start()
        # Count the answers that arrived while every slow request was still incomplete: a request
        # that waited behind a slow client could only be answered after that client finished.
        answered_meanwhile = 0
        while any(thread.is_alive() for thread in slow):
            response = session.post(server.url + VECTOR_MODEL, json=payload, timeout=10)
            assert response.status_code == 200
            answered_meanwhile += not any(event.is_set() for event in complete)
            time.sleep(0.05)
        for thread in slow:
            thread.join()
    assert answered_meanwhile > 20
    assert len(answers) == 3 and all(a.startswith(b"HTTP/1.1 200") and b'"predictions"' in a for a in answers)
    assert server.worker_pids() == workers


# every error a sentence --------------------------------------------------------------------------------


@functools.cache
def blank_png() -> bytes:
    return encode(Image.new("L", (28, 28), 255), "PNG")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v2_tensor(name: str, shape: list, datatype: str, data: list) -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


# Bodies each route is sent: malformed, of the wrong kind, and well-formed with inputs that preprocessing refuses
# (a blank picture, the wrong number of values, NaN, text), in each API's shape.
BAD_BODIES = [
    json_body("{oops"), json_body("[]"), json_body('{"inputs": [[1, 2]]}'), json_body('{"inputs": [NaN, 1, 2, 3]}'),
    json_body('{"images": ["%s"]}' % b64(blank_png())), json_body('{"images": ["%s"]}' % b64(b"seven")),
    json_body('{"instances": [[1, 2]]}'), json_body('{"instances": [{"b64": "%s"}]}' % b64(blank_png())),
    json_body('{"inputs": {"image": [{"b64": "%s"}, {"b64": "%s"}]}}' % (b64(digit_png()), b64(blank_png()))),
    json_body(json.dumps(v2_tensor("input", [1, 4], "FP32", [1, 2, 3, "x"]))),
    json_body(json.dumps(v2_tensor("image", [1], "BYTES", [b64(blank_png())]))),
    json_body(json.dumps(v2_tensor("pixels", [1, 28, 28], "UINT8", [0] * 784))),
    json_body(json.dumps(v2_tensor("pixels", [2, 28, 28], "UINT8", [0] * 1568))),
    json_body(json.dumps(v2_tensor("image", [2], "BYTES", [b64(digit_png()), b64(blank_png())]))),
    json_body(json.dumps(v2_tensor("image", [2], "BYTES", [b64(digit_png()), "@@"]))),
    json_body(json.dumps(v2_tensor("image", [3], "BYTES", [""]))),
    raw(blank_png(), "image/png"), raw(b"seven", "application/octet-stream"), raw(b"seven", "text/plain"),
]
# Triton's and TF Serving's words, which the protocol modules copy on purpose because their clients (tritonclient
# among them) and their users match them: they keep their case and end as those servers end them.
PROTOCOL_WORDS = ("unexpected ", "expected 1 input but got", "inference input '", "output '",
                  "class result not available", "the server does not support")


def route_corpus(server: ServiceProcess) -> list[tuple[str, str, dict]]:
    """``(method, path, request)`` for each operation the OpenAPI document lists: its path with models, versions
    and labels that exist and that do not, each body of ``BAD_BODIES`` where it takes one, with the admin token."""
    document = requests.get(server.url + "/openapi.json", timeout=10).json()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    cases = []
    for template, operations in document["paths"].items():
        for names in ({"name": "mnist", "version": "1", "label": "stable"}, {"name": "iris", "version": "1"},
                      {"name": "nope", "version": "99", "label": "nope"}):
            path = re.sub(r"\{(\w+)\}", lambda match: names.get(match[1], "nope"), template)
            for method in operations:
                if method in ("post", "put") and not path.endswith("/unload"):  # an unload would serve no more
                    cases += [(method, path, {**body, "headers": {**body["headers"], **auth}}) for body in BAD_BODIES]
                else:
                    cases.append((method, path, {"params": {"top_k": "many"}}))
    return cases


def is_sentence(message: str) -> bool:
    """A capital letter first, or a name that keeps its case: a literal (``instances[0]``, ``model.npz``,
    ``top_k``, ``/models``, ``'inputs'``) or a tensor named as a V2 request names it (``input 'image'``); a
    full stop last."""
    first, second = (message.split(maxsplit=2) + [""])[:2]
    literal = not re.fullmatch(r"[a-z][a-z'-]*[,;:]?", first) or second.startswith(("'", '"'))
    return (message[0].isupper() or literal) and message.endswith(".")


def test_every_error_message_is_a_sentence(server):
    """SPEC section 5: "error" is one clear sentence. shared/'s messages (the image decoder's, the vector checks',
    the model file's) reached clients as the clauses the trainer prints: "the image is blank: ...", lower case and
    without a full stop, beside the service's own sentences."""
    answers = [(bad.name, response) for bad, response in run_corpus(server)]
    with requests.Session() as session:
        for method, path, request in route_corpus(server):
            answers.append((f"{method.upper()} {path}", session.request(method, server.url + path, timeout=60,
                                                                         **request)))
    messages = {(where, response.json()["error"]) for where, response in answers
                if response.status_code >= 400 and response.headers["Content-Type"].startswith("application/json")}
    assert len(messages) > 100
    assert not [(where, message) for where, message in sorted(messages)
                if not message.startswith(PROTOCOL_WORDS) and not is_sentence(message)]


# after the corpus ------------------------------------------------------------------------------------


FRESH_CONNECTIONS = 8  # a request misses a given one of the 2 workers on all of them with probability 1/256


def reference_probabilities(registry, data: bytes) -> np.ndarray:
    model = load_model(registry / "mnist" / "1" / "model.npz")
    return model.predict_proba(image_to_vector(data, model.preprocessing)[None])[0]


def test_server_answers_correctly_after_the_corpus(server, registry):
    """Passes of the whole corpus leave both workers answering correctly. (Memory across the
    corpus is measured by bench/soak.py, not asserted here.)"""
    workers = server.worker_pids()
    for _ in range(3):
        for bad, response in run_corpus(server):
            assert response.status_code == bad.status, bad.name
    assert server.worker_pids() == workers
    expected = reference_probabilities(registry, digit_png())
    for _ in range(FRESH_CONNECTIONS):  # each on a new connection, so to either worker
        served = predict_image(server, digit_png(), "image/png")
        assert np.allclose(served, expected, atol=1e-5)
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
