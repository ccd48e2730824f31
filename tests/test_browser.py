"""The drawing page at ``/`` in a real headless Chromium, against a real Gunicorn.

A person draws with the mouse or a finger, or uploads a picture, and sees the label, the
confidence, the model and version that answered, and a bar per class. With the committed
``models/mnist`` the drawings must be read correctly (a vertical stroke is a "1"); without it a
random model from tests/modelgen.py stands in and only the page's behaviour is checked.

Needs Debian's ``chromium`` (``make system-deps``); skipped without it, except under CI (``CI``
set), where a missing browser is a failure. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import requests

from images import render_user_digit, synthetic_digit
from modelgen import publish_model
from server import ServiceProcess
from shared.registry import Registry

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
COMMITTED = REPO / "models"


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: install Debian's chromium (make system-deps) to run the browser tests"
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set, so this is a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page_registry(tmp_path_factory) -> tuple[Path, bool, int]:
    """``(root, real, version)``: a registry with one ``mnist``, a copy of the committed model's
    served version when the repository has one (``real``: its answers can be checked), else a
    random stand-in."""
    root = tmp_path_factory.mktemp("page-registry")
    committed = Registry(COMMITTED) if COMMITTED.is_dir() else None
    versions = committed.versions("mnist") if committed is not None else []
    if versions:
        version = committed.read_serving("mnist").get("pinned") or versions[-1]
        shutil.copytree(COMMITTED / "mnist" / str(version), root / "mnist" / str(version))
        return root, True, version
    return root, False, publish_model(root, "mnist")


@pytest.fixture(scope="module")
def service(page_registry):
    _require_chromium()
    with ServiceProcess(page_registry[0], workers=1, threads=4) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, service):
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    page = context.new_page()
    page.goto(service.url + "/")
    wait_for_models(page)
    yield page
    context.close()


def wait_for_models(page) -> None:
    page.wait_for_function("!document.querySelector('#model').disabled", timeout=15_000)


def wait_for_answer(page, after: int = 0) -> None:
    """Wait until the page shows the answer to a request newer than answer number ``after``."""
    page.wait_for_function(
        f"(() => {{ const a = document.querySelector('#answer');"
        f" return a.dataset.state === 'done' && Number(a.dataset.sequence) > {after}; }})()",
        timeout=15_000)


def answer_count(page) -> int:
    return int(page.locator("#answer").get_attribute("data-sequence") or 0)


def draw_one(page) -> None:
    """A vertical stroke down the middle of the pad, drawn with the mouse: a "1"."""
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] * 0.5
    page.mouse.move(x, box["y"] + box["height"] * 0.18)
    page.mouse.down()
    for step in range(1, 25):
        page.mouse.move(x + step * 0.4, box["y"] + box["height"] * (0.18 + 0.64 * step / 24))
    page.mouse.up()


def draw_zero(page) -> None:
    """An upright ellipse drawn with the mouse: a "0"."""
    box = page.locator("#pad").bounding_box()
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
    rx, ry = box["width"] * 0.22, box["height"] * 0.32
    points = [(cx + rx * math.sin(2 * math.pi * i / 48), cy - ry * math.cos(2 * math.pi * i / 48)) for i in range(50)]
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point)
    page.mouse.up()


def shown(page) -> dict:
    bars = page.locator("#bars li")
    return {
        "label": page.locator("#label").inner_text().strip(),
        "confidence": page.locator("#confidence").inner_text().strip(),
        "answered_by": page.locator("#answered-by").inner_text().strip(),
        "bars": [bars.nth(i).locator(".name").inner_text() for i in range(bars.count())],
        "top_bar": page.locator("#bars li.top .name").inner_text(),
        "error": page.locator("#error").inner_text() if page.locator("#error").is_visible() else "",
    }


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_drawing_with_the_mouse_shows_the_prediction_and_the_probabilities(page, page_registry):
    _, real_model, version = page_registry
    assert page.locator("#model option").all_inner_texts() == [f"mnist (v{version})"]
    with page.expect_request(lambda r: r.method == "POST" and "/models/mnist/predict" in r.url) as sent:
        draw_one(page)  # predicts by itself when the stroke ends
    request = sent.value
    assert request.headers["content-type"] == "image/png"
    assert "top_k=10" in request.url
    wait_for_answer(page)
    screenshot(page, "browser-drawing")

    result = shown(page)
    assert result["error"] == ""
    assert result["bars"] == [str(d) for d in range(10)]  # one bar per class, in label order
    assert result["top_bar"] == result["label"]
    assert result["confidence"].endswith("%")
    assert result["answered_by"] == f"mnist v{version}"
    if real_model:
        assert result["label"] == "1"

    page.get_by_role("button", name="Clear").click()
    first = answer_count(page)
    draw_zero(page)
    wait_for_answer(page, after=first)
    assert shown(page)["answered_by"] == f"mnist v{version}"
    if real_model:
        assert shown(page)["label"] == "0"


def test_an_uploaded_photo_is_predicted(page, page_registry, tmp_path):
    _, real_model, _ = page_registry
    photo = tmp_path / "zero.jpg"
    photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg"))  # a ring: a "0"
    page.locator("#file").set_input_files(str(photo))
    wait_for_answer(page)
    screenshot(page, "browser-upload")

    assert page.locator("#upload-preview").is_visible()
    result = shown(page)
    assert result["error"] == ""
    assert len(result["bars"]) == 10 and result["label"] in result["bars"]
    if real_model:
        assert result["label"] == "0"

    page.get_by_role("button", name="Clear").click()
    assert not page.locator("#upload-preview").is_visible()
    assert page.locator("#bars li").count() == 0
    assert page.locator("#placeholder").is_visible()


def test_the_predict_button_asks_again(page):
    draw_one(page)
    wait_for_answer(page)
    first = answer_count(page)
    page.get_by_role("button", name="Predict").click()
    wait_for_answer(page, after=first)
    assert shown(page)["answered_by"].startswith("mnist v")


def test_an_api_error_is_shown_on_the_page(page, service, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this file was cut short")
    api_error = requests.post(service.url + "/models/mnist/predict", data=broken.read_bytes(),
                              headers={"Content-Type": "image/png"}, timeout=10).json()["error"]
    page.locator("#file").set_input_files(str(broken))
    page.wait_for_function("document.querySelector('#answer').dataset.state === 'error'", timeout=15_000)
    error = page.get_by_role("alert")
    assert error.is_visible()
    assert api_error in error.inner_text()
    screenshot(page, "browser-error")


def test_a_finger_draws_on_a_phone_width_screen(browser, service, page_registry):
    _, real_model, _ = page_registry
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                                  device_scale_factor=2)
    try:
        page = context.new_page()
        page.goto(service.url + "/")
        wait_for_models(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways

        box = page.locator("#pad").bounding_box()
        x = box["x"] + box["width"] / 2
        points = [(x + i * 0.3, box["y"] + box["height"] * (0.2 + 0.6 * i / 20)) for i in range(21)]
        touch = context.new_cdp_session(page)  # real touch input, as a finger produces it
        touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": points[0][0], "y": points[0][1]}]})
        for px, py in points[1:]:
            touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": px, "y": py}]})
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        wait_for_answer(page)
        page.locator("#result-heading").scroll_into_view_if_needed()
        screenshot(page, "browser-phone")

        result = shown(page)
        assert len(result["bars"]) == 10
        if real_model:
            assert result["label"] == "1"
    finally:
        context.close()


def test_a_picture_dropped_on_the_pad_is_predicted(page, page_registry):
    _, real_model, _ = page_registry
    png = render_user_digit(synthetic_digit(1), "canvas_png")  # a "1" with a flag and a foot
    page.evaluate("""(bytes) => {
        const file = new File([new Uint8Array(bytes)], "one.png", {type: "image/png"});
        const transfer = new DataTransfer();
        transfer.items.add(file);
        const zone = document.querySelector("#drop-zone");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", list(png))
    wait_for_answer(page)
    result = shown(page)
    assert result["error"] == "" and len(result["bars"]) == 10
    if real_model:
        assert result["label"] == "1"
