"""Large JSON parses take turns (service/budget.py): a request holding an eighth of the
per-request number limit or more waits, once read, while another large one is parsed, on every
route that parses JSON numbers; smaller requests and binary tensors never wait for a turn. The
turn is an flock among processes, which the kernel gives up for a worker that dies holding it.
(tests/test_docker.py sends the largest batches together to the service under its memory limit.)"""
import gzip
import io
import json
import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modelgen import publish_model
from service.app import create_app
from service.budget import LargeParses, is_large
from wsgi import chunked as chunked_request

LIMIT = 40_000  # numbers per request: a request of 5,000 or more is large
LARGE, SMALL = 2_000, 10  # rows of 4 numbers


def rows(n: int) -> list[list[float]]:
    return np.random.default_rng(n).random((n, 4)).round(3).tolist()


def v2_binary(n: int) -> tuple[bytes, dict]:
    data = np.asarray(rows(n), dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(data)}}]}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


JSON = {"Content-Type": "application/json"}
REQUESTS = {  # route -> (path, body and headers for n rows, where the answer's rows are)
    "native": ("/models/iris/predict", lambda n: (json.dumps({"inputs": rows(n)}).encode(), JSON),
               lambda answer: answer["predictions"]),
    "v1": ("/v1/models/iris:predict", lambda n: (json.dumps({"instances": rows(n)}).encode(), JSON),
           lambda answer: answer["predictions"]),
    # Its length promises few numbers: it waits all the same, once inflated and its numbers counted.
    "v1 gzip": ("/v1/models/iris:predict",
                lambda n: (gzip.compress(json.dumps({"instances": rows(n)}).encode()),
                           {**JSON, "Content-Encoding": "gzip"}),
                lambda answer: answer["predictions"]),
    "v2": ("/v2/models/iris/infer",
           lambda n: (json.dumps({"inputs": [{"name": "input", "shape": [n, 4], "datatype": "FP32",
                                              "data": rows(n)}]}).encode(), JSON),
           lambda answer: range(answer["outputs"][0]["shape"][0])),
}


@pytest.fixture
def app(tmp_path):
    publish_model(tmp_path / "models", "iris", kind="vector")
    return create_app({"registry": tmp_path / "models", "watch": False, "max_vector_values": LIMIT,
                       "max_batch": 10_000})


def post(app, route: str, n: int, answers: list, *, chunked: bool = False) -> None:
    """POST ``n`` rows to ``route``; ``chunked``: without a length, as a chunked body comes."""
    path, make, predictions = REQUESTS[route]
    body, headers = make(n)
    if chunked:
        response = app.test_client().open(chunked_request(path, body, headers=headers))
    else:
        response = app.test_client().post(path, data=body, headers=headers)
    answers.append((response.status_code, len(predictions(response.json)) if response.status_code == 200
                    else response.json))


@pytest.mark.parametrize("route", REQUESTS)
def test_a_large_json_request_waits_for_its_turn_and_a_small_one_does_not(app, route):
    parses = app.extensions["scratchnet"].large_parses
    turn = parses.take_turn()  # another large request is being parsed
    large = []
    waiting = threading.Thread(target=post, args=(app, route, LARGE, large))
    try:
        waiting.start()
        small = []
        post(app, route, SMALL, small)
        post(app, route, SMALL, small, chunked=True)  # no length to go by: its numbers are counted
        assert small == [(200, SMALL)] * 2
        waiting.join(0.5)
        assert waiting.is_alive() and large == [], "a large request was parsed while another held the turn"
    finally:
        parses.end_turn(turn)
    waiting.join(10)
    assert large == [(200, LARGE)]
    # The turn was given back at the request's end: the next large request goes at once.
    again = []
    post(app, route, LARGE, again)
    assert again == [(200, LARGE)]


def test_binary_tensors_do_not_wait_however_large(app):
    parses = app.extensions["scratchnet"].large_parses
    turn = parses.take_turn()
    try:
        body, headers = v2_binary(LARGE)
        response = app.test_client().post("/v2/models/iris/infer", data=body, headers=headers)
        assert response.status_code == 200, response.json
        assert response.json["outputs"][0]["shape"][0] == LARGE
    finally:
        parses.end_turn(turn)


def test_a_refused_large_request_gives_its_turn_back(app):
    body = json.dumps({"inputs": rows(LIMIT // 4 + 1)}).encode()  # one row over the limit
    response = app.test_client().post("/models/iris/predict", data=body, headers=JSON)
    assert response.status_code == 413 and response.json["code"] == "too_many_values"
    answers = []
    post(app, "native", LARGE, answers)
    assert answers == [(200, LARGE)]


def image_body(side: int, fmt: str = "WEBP") -> bytes:
    """A bar drawn on a canvas of ``side`` x ``side``: in a WebP, a transparent one, a kilobyte that
    decodes to 4 bytes a pixel and more; in a JPEG, a white one."""
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0)) if fmt == "WEBP" else Image.new("L", (side, side), 255)
    ImageDraw.Draw(canvas).rectangle((side // 3, side // 8, side // 2, side - side // 8), fill="black")
    buffer = io.BytesIO()
    canvas.save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buffer.getvalue()


def test_a_large_image_waits_for_its_turn_before_it_is_decoded_and_a_small_one_does_not(tmp_path):
    # Four 25-megapixel WebPs of a kilobyte each, two per worker, took compose's 1 GB: workers killed.
    publish_model(tmp_path / "models", "mnist")
    app = create_app({"registry": tmp_path / "models", "watch": False, "max_image_pixels": 8_000_000})
    parses = app.extensions["scratchnet"].large_parses
    small, large, photo = image_body(900), image_body(1000), image_body(2000, "JPEG")  # an eighth: 1,000,000 px
    turn = parses.take_turn()  # another request is decoding a large image
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(
        app.test_client().post("/predict", data=large, content_type="image/webp").status_code))
    others = ThreadPoolExecutor(1)  # one that waited for the turn fails the test rather than hang it
    try:
        waiting.start()
        for body in (small, photo):  # the JPEG is decoded reduced, to 1/64 of its 4 million pixels
            answer = others.submit(app.test_client().post, "/predict", data=body, content_type="image/*")
            assert answer.result(timeout=10).status_code == 200
        waiting.join(0.5)
        assert waiting.is_alive() and answers == [], "a large image was decoded while another held the turn"
    finally:
        parses.end_turn(turn)
        others.shutdown()
    waiting.join(10)
    assert answers == [200]
    # The turn was given back at the request's end: the next large image goes at once.
    assert app.test_client().post("/predict", data=large, content_type="image/webp").status_code == 200


def test_workers_take_turns_and_one_that_dies_holding_its_turn_gives_it_up(tmp_path):
    parses = LargeParses(tmp_path)
    assert not is_large(LIMIT // 8 - 1, LIMIT) and is_large(LIMIT // 8, LIMIT)
    fork = multiprocessing.get_context("fork")
    holding, die = fork.Event(), fork.Event()

    def worker() -> None:
        parses.take_turn()
        holding.set()
        die.wait(30)
        os._exit(0)  # killed, say: its turn is never ended

    child = fork.Process(target=worker)
    child.start()
    try:
        assert holding.wait(10)
        turns = []
        waiting = threading.Thread(target=lambda: turns.append(parses.take_turn()))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive(), "took a turn another worker holds"
        die.set()
        waiting.join(10)
        assert turns, "the turn of a worker that died was never given up"
        # Threads of one process take turns too.
        other = threading.Thread(target=lambda: turns.append(parses.take_turn()))
        other.start()
        other.join(0.5)
        assert other.is_alive() and len(turns) == 1, "two threads of one process held the turn together"
        parses.end_turn(turns[0])
        other.join(10)
        assert len(turns) == 2
        parses.end_turn(turns[1])
    finally:
        die.set()
        child.join(10)
