"""The prediction core without HTTP: inputs become one batch through shared.preprocess, one
forward pass, and results that match the model's own output; the JSON encoder agrees with the
plain Python form."""

import json

import numpy as np
import pytest
from PIL import Image

from images import encode, paper, synthetic_digit
from modelgen import publish_model
from service.config import load_settings
from service.encoding import classification_rows
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.predictor import DEFAULT_TOP_K, Predictor
from service.store import ModelStore
from shared import errors as shared_errors
from shared.preprocess import image_to_vector
from shared.registry import Registry


@pytest.fixture
def predictor(tmp_path):
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "iris", kind="vector")
    publish_model(tmp_path, "wine", kind="regression")
    settings = load_settings({"registry": tmp_path, "max_batch": 3000, "max_vector_values": 40_000}, environ={})
    store = ModelStore(Registry(tmp_path))
    store.refresh()
    return Predictor(store, settings)


def test_an_image_prediction_is_the_models_output_on_the_preprocessed_image(predictor):
    model = predictor.resolve("mnist")
    png = encode(paper(synthetic_digit(1)), "PNG")
    batch = predictor.predict_images(model, [png], top_k=10)
    expected = model.predict_proba(image_to_vector(png, model.preprocessing)[np.newaxis])
    np.testing.assert_allclose(batch.outputs, expected, rtol=1e-6)
    (row,) = batch.to_dicts()
    assert row["index"] == int(expected.argmax()) and row["label"] == str(row["index"])
    assert [e["probability"] for e in row["top_k"]] == sorted((e["probability"] for e in row["top_k"]), reverse=True)
    assert len(row["top_k"]) == 10


def test_the_default_model_and_top_k(predictor):
    model = predictor.resolve()
    assert model.name == "mnist"
    batch = predictor.predict_vectors(model, np.random.default_rng(0).random((4, 784)).tolist())
    assert len(batch) == 4 and all(len(r["top_k"]) == DEFAULT_TOP_K for r in batch.to_dicts())
    assert "top_k" not in predictor.predict_vectors(model, [0.5] * 784, top_k=0).to_dicts()[0]
    assert len(predictor.predict_vectors(model, [0.5] * 784, top_k=99).to_dicts()[0]["top_k"]) == 10


def test_vector_and_regression_models(predictor):
    iris = predictor.resolve("iris")
    (row,) = predictor.predict_vectors(iris, [5.1, 3.5, 1.4, 0.2]).to_dicts()
    probabilities = iris.predict_proba(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))[0]
    assert row["label"] == iris.labels[probabilities.argmax()] and row["confidence"] == pytest.approx(probabilities.max())
    wine = predictor.resolve("wine")
    x = np.random.default_rng(0).random((3, 11))
    batch = predictor.predict_vectors(wine, x)
    np.testing.assert_allclose([r["value"] for r in batch.to_dicts()], wine.predict(x.astype(np.float32)), rtol=1e-6)
    assert json.loads(batch.to_json())["predictions"][0]["value"] == pytest.approx(batch.outputs[0], rel=1e-6)


def test_the_json_encoder_agrees_with_the_python_form(predictor):
    model = predictor.resolve("mnist")
    x = np.random.default_rng(1).random((40, 784), dtype=np.float32)
    for top_k in (0, 1, 3, 10):
        batch = predictor.predict_vectors(model, x, top_k=top_k)
        decoded = json.loads(batch.to_json())
        assert decoded["model"] == {"name": "mnist", "version": 1}
        expected = batch.to_dicts()
        for got, want in zip(decoded["predictions"], expected):
            assert got["index"] == want["index"] and got["label"] == want["label"]
            assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-6)
            assert [e["label"] for e in got.get("top_k", [])] == [e["label"] for e in want.get("top_k", [])]
            assert [e["probability"] for e in got.get("top_k", [])] == \
                pytest.approx([e["probability"] for e in want.get("top_k", [])], abs=1e-6)


def test_the_encoder_escapes_labels_and_breaks_ties_like_argmax():
    probabilities = np.array([[0.25, 0.25, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0]], dtype=np.float32)
    labels = ['say "hi"', "T-shirt/top", "Ünïcode ☂", "back\\slash"]
    rows = json.loads(classification_rows(probabilities, labels, 4))
    assert rows[0]["label"] == "Ünïcode ☂" and rows[0]["confidence"] == 0.5
    assert rows[1]["index"] == 0 and [e["label"] for e in rows[1]["top_k"]][:2] == ['say "hi"', "T-shirt/top"]
    assert rows[0]["top_k"][-1] == {"label": "back\\slash", "probability": 0.0}


@pytest.mark.parametrize("classes", [1, 2, 10, 33, 1000])
def test_the_encoder_ranks_classes_as_a_stable_argsort_does_ties_and_zeros_included(classes):
    rng = np.random.default_rng(classes)
    probabilities = rng.dirichlet(np.full(classes, 0.1), 300).astype(np.float32)
    probabilities[::5] = np.round(probabilities[::5], 2)  # ties
    probabilities[::7, :classes // 2] = 0.0  # ties at zero, as probabilities that underflow
    probabilities[3] = 1.0 / classes  # all tied
    k = min(classes, 5)
    rows = json.loads(classification_rows(probabilities, [f"c{i}" for i in range(classes)], k))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    assert [row["index"] for row in rows] == order[:, 0].tolist()
    assert [[e["label"] for e in row["top_k"]] for row in rows] == [[f"c{i}" for i in r] for r in order.tolist()]
    assert [[e["probability"] for e in row["top_k"]] for row in rows] == \
        np.round(np.take_along_axis(probabilities, order, axis=1).astype(np.float64), 6).tolist()


def test_the_encoder_writes_probabilities_as_python_rounds_them():
    values = np.concatenate([[0.0, 1.0, 0.5, 0.25, 0.001, 1e-6, 4e-7, 6e-7, 0.9999996, 0.1234565, 0.0105],
                             np.random.default_rng(2).random(2000)]).astype(np.float32)
    probabilities = np.stack([values, 1 - values], axis=1)
    rows = json.loads(classification_rows(probabilities, ["a", "b"], 2))
    written = [next(e["probability"] for e in row["top_k"] if e["label"] == "a") for row in rows]
    assert written == [round(float(v), 6) for v in values]


def test_pixel_arrays_go_through_the_image_pipeline(predictor):
    model = predictor.resolve("mnist")
    digit = synthetic_digit(0)
    batch = predictor.predict_pixels(model, [digit, digit.tolist(), 255 - digit])
    # The same pixels sent as a PNG file: the same preprocessing, so the same answer, whichever
    # way round the ink is.
    as_image = predictor.predict_images(model, [encode(Image.fromarray(digit), "PNG")])
    for outputs in batch.outputs:
        np.testing.assert_allclose(outputs, as_image.outputs[0], atol=1e-6)


def test_an_image_models_float32_batch_is_checked_at_the_edges_of_the_one_pass_range_check(predictor):
    mnist = predictor.resolve("mnist")
    edges = np.array([[0.0, -0.0, -0.009, 1e-45, 1.0, 1.01] + [0.5] * 778], dtype=np.float32)
    assert len(predictor.predict_array(mnist, edges)) == 1  # -0.0 and the slack below 0 through the full check
    just_over = np.nextafter(np.float32(1.01), np.float32(2))
    for value, told in ((just_over, "is 1.01; .*clip the values to \\[0, 1\\]"),
                        (3.0, "divide the pixels by 255"), (-0.5, "negative values are pixels normalised already"),
                        (np.nan, "vector 2, position 7 is NaN"), (np.inf, "vector 2, position 7 is Infinity"),
                        (-np.inf, "position 7 is -Infinity")):
        batch = np.full((3, 784), 0.25, np.float32)
        batch[2, 7] = value
        with pytest.raises((InvalidInput, shared_errors.InvalidInput), match=told):  # range, finiteness
            predictor.predict_array(mnist, batch)


def test_clear_errors(predictor):
    mnist, wine = predictor.resolve("mnist"), predictor.resolve("wine")
    with pytest.raises(shared_errors.InvalidInput, match="783 values; model mnist v1 expects 784"):
        predictor.predict_vectors(mnist, [0.0] * 783)
    with pytest.raises(shared_errors.InvalidInput, match="NaN"):
        predictor.predict_vectors(wine, [float("nan")] + [0.0] * 10)
    with pytest.raises(UnsupportedMediaType, match="reads vectors of 11 numbers, not images: send JSON"):
        predictor.predict_images(wine, [b"\x89PNG"])
    with pytest.raises(PayloadTooLarge, match="3001 vectors; the limit is 3000"):
        predictor.predict_vectors(wine, [[0.0] * 11] * 3001)
    with pytest.raises(PayloadTooLarge, match="47040 numbers; the limit is 40000 per request: split the batch into "
                                              "requests of at most 51 vectors"):
        predictor.predict_vectors(mnist, np.zeros((60, 784), dtype=np.float32))
    with pytest.raises(shared_errors.UnsupportedImage):
        predictor.predict_images(mnist, [b"not an image"])
    with pytest.raises(InvalidInput, match="not finite"):
        predictor.predict_vectors(wine, [[3e38] * 11])
