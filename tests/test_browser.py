"""The drawing page at ``/`` in a real headless Chromium, against a real Gunicorn.

A person draws with the mouse or a finger, or uploads a picture, and sees the label, the
confidence, the model and version that answered, and a bar per class. With the committed
``models/mnist`` the drawings must be read correctly (a vertical stroke is a "1"); without it a
random model from tests/modelgen.py stands in and only the page's behaviour is checked. A second
service (``catalogue``) holds several random models and the admin API, for long class names,
models that read no pictures, and models taken out of service or pinned while the page is open.

Needs Debian's ``chromium`` (``make system-deps``); skipped without it, except under CI (``CI``
set), where a missing browser is a failure. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import os
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from images import bomb_png, encode, paper, render_user_digit, synthetic_digit
from modelgen import publish_corrupt, publish_model
from server import ServiceProcess
from shared.model_file import load_model
from shared.preprocess import WORKING_SIDE, image_to_vector
from shared.registry import Registry
from skips import unavailable

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
COMMITTED = REPO / "models"
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
ADMIN_TOKEN = "page-admin"
MODEL_REFRESH_MS = 30_000  # how often the page looks at the model list again (MODEL_REFRESH_MS in app.js)
REQUEST_TIME_LIMIT_MS = 60_000  # how long the page waits for an answer (REQUEST_TIME_LIMIT_MS in app.js)


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    unavailable(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps) to run the browser tests")


@pytest.fixture(scope="module")
def page_registry(tmp_path_factory) -> tuple[Path, int]:
    """``(root, version)``: a registry with one ``mnist``, a copy of the committed model's served
    version, so that what the page shows can be checked against the digit drawn."""
    root = tmp_path_factory.mktemp("page-registry")
    committed = Registry(COMMITTED)
    versions = committed.versions("mnist")
    assert versions, f"the repository's {COMMITTED} holds no mnist model"
    version = committed.read_serving("mnist").get("pinned") or versions[-1]
    shutil.copytree(COMMITTED / "mnist" / str(version), root / "mnist" / str(version))
    return root, version


@pytest.fixture(scope="module")
def service(page_registry):
    _require_chromium()
    with ServiceProcess(page_registry[0], workers=1, threads=4) as server:
        yield server


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A service with the admin API on and four random models: ``mnist`` v1 and v2 (v2 served),
    ``fashion-mnist`` (answers "T-shirt/top", its first class, to almost anything) and
    ``wine-quality`` (a regression on numbers: no pictures)."""
    _require_chromium()
    root = tmp_path_factory.mktemp("catalogue")
    publish_model(root, "mnist", seed=1)
    publish_model(root, "mnist", seed=2)
    publish_model(root, "fashion-mnist", labels=FASHION, favour=0, fit="garment")
    publish_model(root, "wine-quality", kind="regression")
    with ServiceProcess(root, workers=1, threads=4, admin_token=ADMIN_TOKEN) as server:
        yield server


def admin_post(server, path: str) -> None:
    response = requests.post(server.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    response.raise_for_status()


@contextlib.contextmanager
def admin_change(server, path: str, undo: str):
    """``admin_post(path)``, and ``admin_post(undo)`` when the block ends: the module shares one server."""
    admin_post(server, path)
    try:
        yield
    finally:
        admin_post(server, undo)


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
    with opened(browser, service.url + "/") as page:
        yield page


@contextlib.contextmanager
def opened(browser, url: str, *, width: int = 1000, height: int = 760, phone: bool = False,
           fake_clock: bool = False, script: str = "", text_size: int = 0, **options):
    """A page at ``url`` in a fresh browser context, once its model list has loaded. ``phone``:
    touch input at twice the pixel density; ``fake_clock``: page.clock can move time forward;
    ``script``: run before the page's own; ``text_size``: the browser's text size setting in px
    (16 unless changed), as a person with low vision sets it; ``options``: more of the context's
    settings (``forced_colors``, ``color_scheme``, ``device_scale_factor``)."""
    touch = {"has_touch": True, "is_mobile": True, "device_scale_factor": 2} if phone else {}
    context = browser.new_context(viewport={"width": width, "height": height}, **{**touch, **options})
    try:
        if script:
            context.add_init_script(script)
        page = context.new_page()
        if text_size:
            page.context.new_cdp_session(page).send("Page.setFontSizes", {"fontSizes": {"standard": text_size}})
        if fake_clock:
            page.clock.install()
        page.goto(url)
        wait_for_models(page)
        yield page
    finally:
        context.close()


# Each page.wait_for_function below is given a function, not an expression: Playwright polls an
# expression with eval, which the page's Content-Security-Policy refuses.
def wait_for_models(page) -> None:
    page.wait_for_function("() => !document.querySelector('#model').disabled", timeout=15_000)


def wait_for_answer(page, after: int = 0) -> None:
    """Wait until the page shows the answer to a request newer than answer number ``after``."""
    page.wait_for_function(
        f"() => {{ const a = document.querySelector('#answer');"
        f" return a.dataset.state === 'done' && Number(a.dataset.sequence) > {after}; }}",
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


def draw_one_with_a_finger(page) -> None:
    """A vertical stroke down the pad as real touch input, the way a finger produces it."""
    finger_down_the_pad(page, 0.2, 0.8)


def finger_down_the_pad(page, start: float, end: float) -> None:
    """A finger moved down the middle of the pad, from ``start`` to ``end`` of its height (``end``
    above ``start``: a swipe up), as real touch input."""
    points = down_the_pad(page, start, end)
    touch = page.context.new_cdp_session(page)
    first = {"x": points[0][0], "y": points[0][1]}
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [first]})
    for px, py in points[1:]:
        touch.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": px, "y": py}]})
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def down_the_pad(page, start: float = 0.2, end: float = 0.8) -> list[tuple[float, float]]:
    """21 points down the middle of the pad (a slight slant), from ``start`` to ``end`` of its height."""
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] / 2
    return [(x + i * 0.3, box["y"] + box["height"] * (start + (end - start) * i / 20)) for i in range(21)]


def has_ink(page) -> bool:
    """Whether anything is drawn on the pad's canvas (transparent where nothing is)."""
    return page.evaluate("""() => { const pad = document.querySelector('#pad');
        return pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data.some((value) => value > 0); }""")


def draw_one_with_a_pen(page, button: str) -> None:
    """A vertical stroke down the pad with a pen pressing ``button``: "left" for its tip, "right"
    for its barrel button, as the browser reports a pen's input."""
    points = down_the_pad(page)
    pen = page.context.new_cdp_session(page)
    pressed = {"left": 1, "right": 2}[button]  # the event's buttons while it presses

    def send(kind: str, point: tuple[float, float], buttons: int) -> None:
        pen.send("Input.dispatchMouseEvent", {"type": kind, "x": point[0], "y": point[1], "button": button,
                                              "buttons": buttons, "clickCount": 1, "pointerType": "pen"})

    send("mousePressed", points[0], pressed)
    for point in points[1:]:
        send("mouseMoved", point, pressed)
    send("mouseReleased", points[-1], 0)


def wait_until_in_view(page, selector: str) -> None:
    """Wait until the element lies within the viewport (a smooth scroll to it has ended), give or
    take the fraction of a pixel that whole-pixel scroll positions leave."""
    page.wait_for_function(
        f"() => {{ const box = document.querySelector({selector!r}).getBoundingClientRect();"
        f" return box.height > 0 && box.top >= -1 && box.bottom <= innerHeight + 1; }}", timeout=5_000)


def chosen_model(page) -> str:
    """The text of the selected option, e.g. "mnist (v2)"."""
    return page.evaluate("document.querySelector('#model').selectedOptions[0].text")


def wait_for_chosen_model(page, text: str) -> None:
    """Wait until the selected option reads ``text`` (the page re-reads the model list)."""
    page.wait_for_function(f"() => document.querySelector('#model').selectedOptions[0].text === {text!r}",
                           timeout=10_000)


def inside(inner: dict, outer: dict) -> bool:
    return (inner["x"] >= outer["x"] and inner["y"] >= outer["y"]
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"]
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"])


def overlap(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


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


def spoken_answer(page) -> str:
    """What the page's live region says of the latest answer (it is not seen)."""
    return page.locator("#spoken-answer").text_content()


def contrast(one: list[int], other: list[int]) -> float:
    """WCAG's contrast ratio of two sRGB colours, from 1 (the same) to 21 (black on white)."""
    def luminance(rgb: list[int]) -> float:
        linear = [c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def css_colours(page, *lookups: tuple[str, str]) -> list[list[int]]:
    """The computed colour of each ``(selector, property)`` as ``[r, g, b]``."""
    return page.evaluate("""lookups => lookups.map(([selector, property]) =>
        getComputedStyle(document.querySelector(selector))[property].match(/\\d+/g).slice(0, 3).map(Number))""",
                         [list(lookup) for lookup in lookups])


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_drawing_with_the_mouse_shows_the_prediction_and_the_probabilities(page, page_registry):
    _, version = page_registry
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
    assert result["label"] == "1"
    # A screen reader hears the answer once, whole: what is shown is no live region, and changes in pieces.
    assert spoken_answer(page) == f"Predicted 1, confidence {result['confidence']}, by mnist v{version}."
    assert page.locator("#answer[aria-live], #answer [aria-live], #answer [role=status], #answer output").count() == 0

    page.get_by_role("button", name="Clear").click()
    first = answer_count(page)
    draw_zero(page)
    wait_for_answer(page, after=first)
    assert shown(page)["answered_by"] == f"mnist v{version}"
    assert shown(page)["label"] == "0"
    assert spoken_answer(page) == f"Predicted 0, confidence {shown(page)['confidence']}, by mnist v{version}."


def test_a_value_answered_by_a_regression_model_is_shown_and_said(page, page_registry):
    """A model that reads pictures may answer a value: it stands where the class would."""
    _, version = page_registry
    answer = {"model": {"name": "mnist", "version": version}, "predictions": [{"value": 5.1234}]}
    page.route(lambda url: "/predict" in url, lambda route: route.fulfill(json=answer))
    draw_one(page)
    wait_for_answer(page)
    assert page.locator("#label").inner_text() == "5.12"
    assert page.locator("#confidence").inner_text() == "n/a (regression)"
    assert spoken_answer(page) == f"Predicted value 5.12, by mnist v{version}."


def test_the_drawing_is_sent_at_the_services_working_size_and_reads_as_the_whole_pad(page, page_registry):
    """The page sends its pad reduced as the service would reduce it before reading it (by the whole
    factor that brings it under twice WORKING_SIDE): a quarter of the pixels, the same digit read."""
    root, version = page_registry
    with page.expect_request(lambda r: r.method == "POST" and "/models/mnist/predict" in r.url) as sent:
        draw_zero(page)
    # Chromium does not show a Blob body to the request event: the page's own export function
    # (the one the request was made with) gives it again, as many bytes as the request carried.
    body = base64.b64decode(page.evaluate("""async () => {
        const bytes = new Uint8Array(await (await canvasBlob()).arrayBuffer());
        return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join("")); }"""))
    assert int(sent.value.all_headers()["content-length"]) == len(body)
    # The drawing as the page keeps it (280 px), not the pad on screen, which has the screen's pixels.
    pad = base64.b64decode(page.evaluate("() => ink.toDataURL('image/png')").split(",")[1])
    with Image.open(io.BytesIO(pad)) as whole, Image.open(io.BytesIO(body)) as reduced:
        factor = max(whole.size) // WORKING_SIDE
        assert factor >= 2 and reduced.size == (whole.width // factor, whole.height // factor)
    preprocessing = load_model(Registry(root).model_path("mnist", version)).preprocessing
    difference = np.abs(image_to_vector(body, preprocessing) - image_to_vector(pad, preprocessing))
    assert difference.max() < 0.01, f"the model's input differs by up to {difference.max():.3f} from the whole pad's"


def test_an_uploaded_photo_is_predicted(page, tmp_path):
    photo = tmp_path / "zero.jpg"
    photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg"))  # a ring: a "0"
    page.locator("#file").set_input_files(str(photo))
    wait_for_answer(page)
    screenshot(page, "browser-upload")

    assert page.get_by_role("img", name="Uploaded picture: zero.jpg", exact=True).is_visible()
    result = shown(page)
    assert result["error"] == ""
    assert len(result["bars"]) == 10 and result["label"] in result["bars"]
    assert result["label"] == "0"

    page.get_by_role("button", name="Clear").click()
    assert not page.locator("#upload-preview").is_visible()
    assert page.locator("#bars li").count() == 0
    assert page.locator("#placeholder").is_visible()
    # Where to draw, in words that hold at every width (the pad is beside the answer on a desktop).
    assert page.locator("#placeholder").inner_text() == "Nothing yet: draw in the white square, or upload a picture."


def test_a_picture_changed_on_disk_since_it_was_chosen_is_named_not_blamed_on_the_service(page, tmp_path):
    """A picture saved over (cropped as the page advises) after it was chosen cannot be read
    again; Predict then said "Could not reach the service (Failed to fetch): it may be down",
    though the service was up."""
    photo = tmp_path / "zero.jpg"
    photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg"))
    page.locator("#file").set_input_files(str(photo))
    wait_for_answer(page)
    photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg") + b"\0")
    os.utime(photo, (photo.stat().st_atime, photo.stat().st_mtime + 10))
    page.get_by_role("button", name="Predict").click()
    assert wait_for_failure(page) == ("zero.jpg can no longer be read: it was changed, moved or deleted since it "
                                      "was chosen. Choose it again.")


def test_a_pen_draws_with_its_tip_and_not_with_its_barrel_button(page):
    """A pen's barrel button (or its eraser) drew as its tip does: only the mouse's other buttons
    were passed over."""
    posted = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    draw_one_with_a_pen(page, "right")
    page.wait_for_timeout(500)  # longer than the page waits after a stroke before it predicts
    assert not has_ink(page) and posted == []
    draw_one_with_a_pen(page, "left")
    wait_for_answer(page)
    assert has_ink(page) and shown(page)["label"] == "1"


def test_the_predict_button_asks_again(page):
    draw_one(page)
    wait_for_answer(page)
    first = answer_count(page)
    page.get_by_role("button", name="Predict").click()
    wait_for_answer(page, after=first)
    assert shown(page)["answered_by"].startswith("mnist v")
    assert page.evaluate("window.scrollY") == 0  # the answer was in view: the page does not scroll


def test_the_keyboard_focus_stays_on_predict(page):
    draw_one(page)
    wait_for_answer(page)
    page.locator("#predict").focus()
    for _ in range(2):  # the second Enter must work as well as the first
        before = answer_count(page)
        page.keyboard.press("Enter")
        wait_for_answer(page, after=before)
        assert page.evaluate("document.activeElement.id") == "predict"
    assert page.locator("#predict").get_attribute("aria-disabled") is None


def test_the_upload_button_shows_the_keyboard_focus(page):
    for _ in range(6):  # model, Predict, Clear, then the file input
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file":
            break
    assert page.evaluate("document.activeElement.id") == "file"
    outline = page.locator(".upload span").evaluate(
        "span => { const style = getComputedStyle(span); return [style.outlineStyle, style.outlineWidth]; }")
    assert outline[0] != "none" and outline[1] != "0px"


def test_a_screen_reader_meets_each_control_once(page):
    """The upload button is a span over an invisible file input: both were read out, the span's
    text and then the input named by it."""
    tree = page.locator(".actions").aria_snapshot()
    assert tree.count("Upload a picture") == 1, tree
    assert '- button "Upload a picture"' in tree
    assert page.get_by_role("button", name="Upload a picture").count() == 1


def test_the_checkbox_grows_with_the_text(page):
    """Someone who sets large text in the browser gets a checkbox to match, not a 13 px box."""
    page.evaluate("document.documentElement.style.fontSize = '32px'")
    box = page.locator("#auto").bounding_box()
    label = page.locator("label[for=auto]").bounding_box()
    assert box["height"] >= 30 and box["width"] >= 30, box
    assert box["x"] + box["width"] <= label["x"]  # still beside its label, not over it


def test_without_automatic_prediction_a_new_picture_clears_the_old_answer(page, tmp_path):
    page.locator("#auto").uncheck()
    draw_one(page)
    page.get_by_role("button", name="Predict").click()
    wait_for_answer(page)

    photo = tmp_path / "zero.jpg"
    photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg"))
    page.locator("#file").set_input_files(str(photo))
    assert page.locator("#answer").get_attribute("data-state") == "stale"
    assert not page.locator("#verdict").is_visible()
    assert page.locator("#bars li").count() == 0
    assert page.locator("#placeholder").inner_text() == "Press Predict to read this picture."
    assert spoken_answer(page) == "Press Predict to read this picture."  # the answer's going is said
    screenshot(page, "browser-stale")

    before = answer_count(page)
    page.get_by_role("button", name="Predict").click()
    wait_for_answer(page, after=before)
    page.get_by_role("button", name="Clear").click()  # the picture goes, and a stroke takes its place
    draw_one(page)
    assert page.locator("#answer").get_attribute("data-state") == "stale"
    assert not page.locator("#verdict").is_visible()


def test_an_api_error_is_shown_on_the_page(page, service, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this file was cut short")
    api_error = requests.post(service.url + "/models/mnist/predict", data=broken.read_bytes(),
                              headers={"Content-Type": "image/png"}, timeout=10).json()["error"]
    page.locator("#file").set_input_files(str(broken))
    page.wait_for_function("() => document.querySelector('#answer').dataset.state === 'error'", timeout=15_000)
    error = page.get_by_role("alert")
    assert error.is_visible()
    assert error.inner_text() == api_error and api_error.endswith(".")  # the service's sentence, without its code
    assert error.get_attribute("data-code") == "unsupported_image"
    # the picture is still on the pad: "Nothing yet: draw ..." would tell a person to draw
    assert page.locator("#placeholder").inner_text() == "No prediction for this input."
    screenshot(page, "browser-error")


def test_a_picture_too_large_is_refused_with_what_to_do(page, tmp_path):
    """The alert gave the service's message as it came, "the image is 6000x6000 = ... pixels
    (image_too_large)": a lower-case start, a code for programs, and nothing to do about it."""
    huge = tmp_path / "huge.png"
    huge.write_bytes(bomb_png(6000))  # a header that declares 36 million pixels
    page.locator("#file").set_input_files(str(huge))
    assert wait_for_failure(page) == ("The image is 6000x6000 = 36,000,000 pixels; the limit is 25,000,000 pixels: "
                                      "crop or shrink the picture and send it again.")
    assert page.get_by_role("alert").get_attribute("data-code") == "image_too_large"
    assert page.locator("#placeholder").inner_text() == "No prediction for this input."

    page.get_by_role("button", name="Clear").click()
    drawing = tmp_path / "digit.svg"
    drawing.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
                       '<path d="M14 4v20" stroke="#000" stroke-width="3"/></svg>')
    page.locator("#file").set_input_files(str(drawing))
    message = wait_for_failure(page)  # it says which formats are read, and what to do
    assert message == ("The data is an SVG drawing, in none of the accepted formats (PNG, JPEG, WEBP, BMP, GIF, "
                       "TIFF): convert it to PNG or JPEG."), message


def test_a_file_that_is_not_a_picture_is_refused_with_what_to_do(page, tmp_path):
    """A text file chosen by mistake was refused with "The data is not an image in an accepted format
    (PNG, JPEG, WEBP, BMP, GIF, TIFF).": what was wrong, and nothing of what to do."""
    notes = tmp_path / "notes.txt"
    notes.write_text("seven\n")
    page.locator("#file").set_input_files(str(notes))
    assert wait_for_failure(page) == ("The data is not an image in an accepted format (PNG, JPEG, WEBP, BMP, GIF, "
                                      "TIFF): send a picture saved as one of them, such as a PNG or JPEG file.")
    assert page.get_by_role("alert").get_attribute("data-code") == "unsupported_image"
    assert page.locator("#pad-hint").inner_text() == "notes.txt: no preview. Press Clear to draw instead."


def test_a_photo_cut_short_is_refused_with_what_to_do(page, tmp_path):
    """A photo still downloading, or copied only in part, was refused with "The JPEG image could not be decoded,
    the file may be truncated or corrupt: image file is truncated (12 bytes not processed).": nothing to do."""
    whole = render_user_digit(synthetic_digit(0), "photo_jpeg")
    photo = tmp_path / "zero.jpg"
    photo.write_bytes(whole[:len(whole) // 2])
    page.locator("#file").set_input_files(str(photo))
    message = wait_for_failure(page)
    assert message.startswith("The JPEG image could not be decoded, the file may be truncated or corrupt: "), message
    assert message.endswith("; save or download it again, and send the whole file."), message


def test_a_file_over_the_body_limit_is_refused_with_what_to_do(browser, tmp_path):
    """A phone photo larger than the service takes got only "The request body is larger than the
    limit of 1,000,000 bytes.": nothing said what to do about it."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(encode(paper(synthetic_digit(7), 64).convert("RGB"), "JPEG") + bytes(2_000_000))
    root = tmp_path / "registry"
    publish_model(root, "mnist")
    with ServiceProcess(root, workers=1, threads=2, env={"SCRATCHNET_MAX_BODY_BYTES": "1000000"}) as server, \
            opened(browser, server.url + "/") as page:
        page.locator("#file").set_input_files(str(photo))
        assert wait_for_failure(page) == ("The request body is larger than the limit of 1,000,000 bytes: "
                                          "send a smaller picture (fewer pixels, or saved as JPEG).")
        assert page.get_by_role("alert").get_attribute("data-code") == "payload_too_large"


@pytest.mark.parametrize("status, advice", [
    (413, "Shrink the picture (fewer pixels, or saved as JPEG) and upload it again."),
    (502, "The service may be down, restarting or overloaded: try again in a moment."),
])
def test_a_proxys_own_error_page_is_shown_with_what_to_do(page, status, advice):
    """A proxy in front of the service answers with its own HTML page: a body over its limit (1 MB
    by default in some, less than a phone photo), a service it cannot reach. The page said only "The
    server answered 413 Payload Too Large.", and nothing of what to do. The proxy is stood in for
    here: the service itself answers these in JSON."""
    draw_one(page)
    wait_for_answer(page)
    page.route(lambda url: "/predict" in url, lambda route: route.fulfill(
        status=status, content_type="text/html", body=f"<html><body><h1>{status}</h1><hr>proxy</body></html>"))
    page.get_by_role("button", name="Predict").click()
    message = wait_for_failure(page)
    assert message.startswith(f"The server answered {status} "), message
    assert message.endswith(f". {advice}"), message


def free_port() -> int:
    """A port nothing listens on now, for a service that must come back at the same address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_failure(page) -> str:
    """Wait until the page shows that its request failed, and return what the alert says."""
    page.wait_for_function("() => document.querySelector('#answer').dataset.state === 'error'", timeout=15_000)
    return page.get_by_role("alert").inner_text()


def test_the_page_says_when_the_service_is_down_and_works_once_it_is_back(browser, tmp_path):
    root = tmp_path / "registry"
    publish_model(root, "mnist")
    # the same address both times; the browser's idle connections need not delay the stop
    address = {"SCRATCHNET_BIND": f"127.0.0.1:{free_port()}", "SCRATCHNET_GRACEFUL_TIMEOUT": "1"}
    with ServiceProcess(root, workers=1, threads=2, env=address) as server, opened(browser, server.url + "/") as page:
        draw_one(page)
        wait_for_answer(page)
        server.stop()
        page.get_by_role("button", name="Predict").click()
        assert "Could not reach the service" in wait_for_failure(page)
        assert not page.locator("#verdict").is_visible()  # the old answer is not left standing
        screenshot(page, "browser-service-down")

        with ServiceProcess(root, workers=1, threads=2, env=address):
            before = answer_count(page)
            page.get_by_role("button", name="Predict").click()
            wait_for_answer(page, after=before)
            assert not page.get_by_role("alert").is_visible()


def test_a_device_without_a_network_is_told_so_not_that_the_service_is_down(page):
    """A phone that lost its signal was told the service "may be down or restarting"."""
    page.context.set_offline(True)
    try:
        draw_one(page)
        assert wait_for_failure(page) == "This device is offline: connect it to a network, then try again."
    finally:
        page.context.set_offline(False)
    before = answer_count(page)
    page.get_by_role("button", name="Predict").click()
    wait_for_answer(page, after=before)
    assert not page.get_by_role("alert").is_visible()


def test_a_service_that_never_answers_is_shown_waiting_then_ends_the_wait_with_a_message(browser, tmp_path):
    root = tmp_path / "registry"
    publish_model(root, "mnist")
    with ServiceProcess(root, workers=1, threads=2) as server, \
            opened(browser, server.url + "/", fake_clock=True) as page:
        (worker,) = server.worker_pids()
        os.kill(worker, signal.SIGSTOP)  # the connection is accepted, the answer never comes
        try:
            with page.expect_request(lambda r: r.method == "POST" and "/models/mnist/predict" in r.url):
                draw_one(page)
            page.clock.fast_forward(1000)
            page.locator("#busy").wait_for(state="visible")
            assert page.locator("#busy").inner_text() == "Predicting…"
            assert page.locator("#answer").get_attribute("aria-busy") == "true"
            assert "waiting" in page.locator("#result").get_attribute("class")  # the old answer is greyed
            page.clock.fast_forward(REQUEST_TIME_LIMIT_MS)
            assert "did not answer within 60 s" in wait_for_failure(page)
            assert page.locator("#predict").get_attribute("aria-disabled") is None  # Predict can be pressed again
            assert not page.locator("#busy").is_visible()
            assert page.locator("#answer").get_attribute("aria-busy") is None
            assert "waiting" not in (page.locator("#result").get_attribute("class") or "")
        finally:
            os.kill(worker, signal.SIGCONT)


def test_a_large_picture_on_a_slow_uplink_is_given_the_time_to_arrive(browser, service, tmp_path):
    """A 5 MB phone photo over a 40 kB/s uplink takes two minutes to send, and the service waits
    for it (it drops only a client that stops sending); the page gave up after 60 s with "The
    service did not answer within 60 s. It may be overloaded or stuck", and the same again each
    time it was tried. Here 1 MB at 100 kB/s: the page's clock is moved on past 60 s while it is sent."""
    picture = tmp_path / "padded.png"
    picture.write_bytes(encode(paper(synthetic_digit(1)), "PNG") + bytes(1_000_000))  # bytes after the end: read alike
    with opened(browser, service.url + "/", fake_clock=True) as page:
        network = page.context.new_cdp_session(page)
        network.send("Network.enable")
        network.send("Network.emulateNetworkConditions",
                     {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 100_000})
        with page.expect_request(lambda r: r.method == "POST" and "/predict" in r.url):
            page.locator("#file").set_input_files(str(picture))
        page.clock.fast_forward(REQUEST_TIME_LIMIT_MS + 1000)
        page.wait_for_function("() => ['done', 'error'].includes(document.querySelector('#answer').dataset.state)",
                               timeout=30_000)
        assert page.locator("#answer").get_attribute("data-state") == "done", page.locator("#error").inner_text()
        assert shown(page)["label"] == "1"


@contextlib.contextmanager
def answer_held(page):
    """Predict pressed, and its answer held back until the block ends: long enough for the page to
    say that it waits."""
    held = []
    page.route(lambda url: "/predict" in url, lambda route: held.append(route))
    before = answer_count(page)
    page.get_by_role("button", name="Predict").click()
    page.locator("#busy").wait_for(state="visible")
    yield
    held.pop().continue_()
    page.unroute_all()
    wait_for_answer(page, after=before)


def test_the_answer_a_new_one_replaces_stays_readable_and_looks_old(page):
    """While a new answer was awaited the old one was dimmed to half its opacity, and its text fell
    to 2.1:1 against the panel, under WCAG's 4.5:1. It is greyed instead, in a colour that keeps
    4.5:1, and marked by more than colour: a dashed box round its label."""
    draw_one(page)
    wait_for_answer(page)
    (current,) = css_colours(page, ("#bars li.top .fill", "backgroundColor"))
    with answer_held(page):
        screenshot(page, "browser-waiting")
        label, box, fact, panel, bar_name, fill = css_colours(
            page, ("#label", "color"), (".label-box", "backgroundColor"), ("#confidence", "color"),
            ("#result", "backgroundColor"), ("#bars li.top .name", "color"), ("#bars li.top .fill", "backgroundColor"))
        assert contrast(label, box) >= 4.5 and contrast(fact, panel) >= 4.5 and contrast(bar_name, panel) >= 4.5
        opacities = page.evaluate("[...document.querySelectorAll('#result *')].map(e => getComputedStyle(e).opacity)")
        assert set(opacities) == {"1"}  # nothing faded
        assert page.locator(".label-box").evaluate("box => getComputedStyle(box).borderTopStyle") == "dashed"
        assert fill != current  # the old bars are not drawn as the answer's
    assert css_colours(page, ("#bars li.top .fill", "backgroundColor")) == [current]
    assert page.locator(".label-box").evaluate("box => getComputedStyle(box).borderTopStyle") == "solid"


# Records, from before the page's own script runs, each state of its two status notes.
STATUS_WATCH = """(() => {
  window.statusNotes = [];  // [id, text, rendered], at each change
  const last = {};
  new MutationObserver(() => {
    for (const id of ["busy", "model-note"]) {
      const note = document.getElementById(id);
      if (!note) continue;
      const now = [id, note.textContent, !note.hidden && getComputedStyle(note).display !== "none"];
      if (JSON.stringify(now) === last[id]) continue;
      last[id] = JSON.stringify(now);
      window.statusNotes.push(now);
    }
  }).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
})();"""


def test_a_status_note_is_on_the_page_before_its_text(browser, catalogue):
    """The model note and the "Predicting…" note were hidden while they had nothing to say, and
    revealed with their text already in them: a screen reader often says nothing of such a note."""
    with opened(browser, catalogue.url + "/?model=no-such-model", script=STATUS_WATCH) as page:
        draw_one(page)
        wait_for_answer(page)
        with answer_held(page):
            pass
        notes = page.evaluate("window.statusNotes")
        assert all(rendered for _, _, rendered in notes), notes
        said = [(note, text) for note, text, _ in notes if text]
        assert ("busy", "Predicting…") in said, notes
        assert ("model-note", "There is no model named no-such-model. Showing mnist instead.") in said, notes
        busy = page.locator("#busy")
        assert busy.text_content() == ""
        top = page.locator("#answer").bounding_box()["y"]
        busy.evaluate("busy => busy.remove()")
        assert page.locator("#answer").bounding_box()["y"] == top  # the empty note took no room


def test_after_a_hot_swap_the_bars_show_the_classes_of_the_version_that_answered(browser, tmp_path):
    root = tmp_path / "registry"
    publish_model(root, "mnist")
    publish_model(root, "shapes", labels=["circle", "square", "triangle"], favour=0)
    with ServiceProcess(root, workers=1, threads=2) as server, \
            opened(browser, server.url + "/?model=shapes") as page:
        draw_one(page)
        wait_for_answer(page)
        assert page.locator("#bars .name").all_inner_texts() == ["circle", "square", "triangle"]

        version = publish_model(root, "shapes", labels=["circle", "square", "triangle", "star"], favour=3)
        server.wait_until_served("shapes", version)
        before = answer_count(page)
        page.get_by_role("button", name="Predict").click()
        wait_for_answer(page, after=before)
        assert page.locator("#answered-by").inner_text() == f"shapes v{version}"
        assert page.locator("#label").inner_text() == "star"
        assert sorted(page.locator("#bars .name").all_inner_texts()) == ["circle", "square", "star", "triangle"]
        assert page.locator("#bars li.top").get_attribute("aria-label") == "star: 100%"


def test_without_javascript_the_page_says_so(browser, service):
    """With JavaScript turned off the model list said "Loading models…" for good, and the buttons
    did nothing, without a word of why."""
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(service.url + "/")
        note = page.locator("#result noscript p")  # Playwright's text search skips <noscript>
        assert note.is_visible()
        assert note.inner_text().startswith("This page needs JavaScript to draw, upload and predict")
        assert note.locator("a").get_attribute("href") == "docs"
    finally:
        context.close()


def to_the_api_page_and_back(page, *, by_its_link: bool) -> None:
    """To the API page by the footer's link, and back by the API page's own link or the browser's Back."""
    page.locator("footer a", has_text="API reference").click()
    page.wait_for_url("**/docs")
    if by_its_link:
        page.locator("a", has_text="drawing page").first.click()
    else:
        page.go_back()
    wait_for_models(page)


def test_a_drawing_is_still_there_after_a_visit_to_the_api_page(page):
    """The API page had no way back to the drawing page, and going there and back (its link, or the browser's
    Back) reloaded the page empty: the drawing, and its answer, were gone."""
    draw_one(page)
    wait_for_answer(page)
    to_the_api_page_and_back(page, by_its_link=True)
    wait_for_answer(page)
    assert has_ink(page) and shown(page)["label"] == "1" and not page.locator("#pad-hint").is_visible()
    to_the_api_page_and_back(page, by_its_link=False)
    wait_for_answer(page)
    assert has_ink(page) and shown(page)["label"] == "1"
    page.locator("#clear").click()  # a drawing cleared stays cleared
    to_the_api_page_and_back(page, by_its_link=False)
    assert not has_ink(page) and page.locator("#pad-hint").is_visible()
    assert page.locator("#placeholder").inner_text() == "Nothing yet: draw in the white square, or upload a picture."


def test_an_uploaded_picture_is_still_there_after_a_visit_to_the_api_page(page, tmp_path):
    """A drawing was kept across a visit to the API page, an uploaded picture was not: back on the
    page, the pad was empty and the picture had to be found and chosen again."""
    photo = tmp_path / "zero.jpg"
    photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg"))
    page.locator("#file").set_input_files(str(photo))
    wait_for_answer(page)
    for by_its_link in (True, False):
        to_the_api_page_and_back(page, by_its_link=by_its_link)
        wait_for_answer(page)
        preview = page.get_by_role("img", name="Uploaded picture: zero.jpg", exact=True)
        assert preview.is_visible() and preview.evaluate("img => img.complete && img.naturalWidth > 0")
        assert not has_ink(page) and shown(page)["label"] == "0" and shown(page)["error"] == ""
        assert page.locator("#pad-hint").inner_text() == "Press Clear to draw instead."
    page.locator("#clear").click()  # a picture cleared stays cleared
    to_the_api_page_and_back(page, by_its_link=False)
    assert not page.locator("#upload-preview").is_visible()
    page.locator("#file").set_input_files(str(photo))
    wait_for_answer(page)

    # A picture larger than a tab may keep is not kept, and says nothing of it; nor does the one before come back.
    sheet = np.asarray(paper(synthetic_digit(0), 2000).convert("RGB"), dtype=np.int16)
    grain = np.random.default_rng(0).integers(-12, 13, sheet.shape)  # a camera's noise: PNG cannot squeeze it
    scan = tmp_path / "scan.png"
    scan.write_bytes(encode(Image.fromarray(np.clip(sheet + grain, 0, 255).astype(np.uint8)), "PNG"))
    assert scan.stat().st_size > 6_000_000
    before = answer_count(page)
    page.locator("#file").set_input_files(str(scan))
    wait_for_answer(page, after=before)
    assert shown(page)["label"] == "0"
    to_the_api_page_and_back(page, by_its_link=False)
    assert not page.locator("#upload-preview").is_visible() and not has_ink(page)
    assert page.locator("#pad-hint").is_visible() and not page.get_by_role("alert").is_visible()
    assert page.locator("#placeholder").inner_text() == "Nothing yet: draw in the white square, or upload a picture."


def test_without_automatic_prediction_a_picture_kept_across_a_visit_to_the_api_page_waits(page, tmp_path):
    """Back from the API page, the browser shows the checkbox as it was left, unticked, but only once the
    page has loaded: the picture kept was sent by itself before then, as if automatic prediction were on."""
    page.locator("#auto").uncheck()
    photo = tmp_path / "zero.jpg"
    photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg"))
    page.locator("#file").set_input_files(str(photo))
    page.get_by_role("button", name="Predict").click()
    wait_for_answer(page)
    posted = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    to_the_api_page_and_back(page, by_its_link=False)
    page.get_by_role("img", name="Uploaded picture: zero.jpg", exact=True).wait_for()
    page.wait_for_timeout(500)  # longer than an answer takes
    assert not page.locator("#auto").is_checked() and posted == []
    assert page.locator("#placeholder").inner_text() == "Press Predict to read this picture."
    page.get_by_role("button", name="Predict").click()
    wait_for_answer(page)
    assert shown(page)["label"] == "0" and len(posted) == 1


def test_the_hint_on_the_pad_offers_to_drop_a_picture_only_where_one_can_be_dropped(page, browser, service):
    """On a phone, which has no drag and drop of files, the empty pad said "Draw here, or drop a picture"."""
    assert page.locator("#pad-hint").inner_text() == "Draw here, or drop a picture"
    with opened(browser, service.url + "/", width=390, height=844, phone=True) as phone:
        hint = phone.locator("#pad-hint")
        assert hint.inner_text() == "Draw here with a finger, or upload a picture"
        draw_one_with_a_finger(phone)
        wait_for_answer(phone)
        phone.locator("#clear").click()
        assert hint.is_visible() and hint.inner_text() == "Draw here with a finger, or upload a picture"


def test_the_automatic_prediction_checkbox_names_what_a_finger_a_mouse_and_a_pen_do(page, browser, service):
    """On a phone its label said "Predict automatically when the pen lifts": a finger draws there, and no pen."""
    label = "Predict automatically when a stroke ends or a picture arrives"
    with opened(browser, service.url + "/", width=390, height=844, phone=True) as phone:
        assert phone.locator("label[for=auto]").inner_text() == label and phone.locator("#auto").is_checked()
        draw_one_with_a_finger(phone)  # the finger lifts: the stroke has ended, and is predicted
        wait_for_answer(phone)
        assert shown(phone)["label"] == "1"
    assert page.locator("label[for=auto]").inner_text() == label  # the same words for a mouse and a pen
    draw_one_with_a_pen(page, "left")
    wait_for_answer(page)
    before = answer_count(page)
    page.get_by_role("button", name="Clear").click()
    draw_one(page)
    wait_for_answer(page, after=before)
    assert shown(page)["label"] == "1"


def test_the_hint_on_the_pad_is_readable(page):
    """WCAG's 4.5:1 contrast for text: the hint names a picture that cannot be previewed."""
    text, sheet = css_colours(page, ("#pad-hint", "color"), ("#drop-zone", "backgroundColor"))
    assert contrast(text, sheet) >= 4.5, (text, sheet)


def test_a_phone_on_its_side_shows_the_whole_pad_to_draw_on(browser, service):
    """At 667 x 375 the pad began 192 px down and ran off the bottom of the screen."""
    with opened(browser, service.url + "/", width=667, height=375, phone=True) as page:
        assert not page.locator("header p").is_visible()  # the header shrinks to make room
        pad = page.locator("#drop-zone").bounding_box()
        assert pad["y"] >= 0 and pad["y"] + pad["height"] <= 375, pad
        assert pad["height"] >= 200  # still a pad to draw a digit on
        draw_one_with_a_finger(page)
        wait_for_answer(page)
        result = shown(page)
        assert len(result["bars"]) == 10
        assert result["label"] == "1"


def test_a_laptop_at_200_percent_zoom_keeps_the_sentence_under_the_title(browser, service):
    """A 1280 x 800 screen at 200 % zoom is 640 x 400 CSS pixels, as short as a phone on its side:
    the phone's layout hid the sentence that says what the page is for."""
    with opened(browser, service.url + "/", width=640, height=400, device_scale_factor=2) as page:
        assert page.locator("header p").is_visible()


def test_a_finger_draws_on_a_phone_width_screen(browser, service):
    with opened(browser, service.url + "/", width=390, height=844, phone=True) as page:
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways

        draw_one_with_a_finger(page)
        wait_for_answer(page)
        page.locator("#result-heading").scroll_into_view_if_needed()
        screenshot(page, "browser-phone")

        result = shown(page)
        assert len(result["bars"]) == 10
        assert result["label"] == "1"


@pytest.mark.parametrize("density", [2, 3])
def test_on_a_sharp_phone_screen_the_stroke_is_sharp_and_under_the_finger(browser, service, density):
    """The pad was a 280 px canvas stretched over 354 CSS px: at 3 device pixels each, a stroke's
    edge was a blurred stair of 4-pixel steps."""
    with opened(browser, service.url + "/", width=390, height=844, phone=True, device_scale_factor=density) as page:
        pad = page.locator("#pad")
        box = pad.bounding_box()
        assert page.evaluate("() => { const pad = document.querySelector('#pad');"
                             " return [pad.width, pad.height]; }") == [round(box["width"] * density)] * 2
        draw_one_with_a_finger(page)
        wait_for_answer(page)
        assert shown(page)["label"] == "1"
        page.evaluate("() => scrollTo(0, 0)")
        shot = np.asarray(Image.open(io.BytesIO(pad.screenshot())).convert("L"), dtype=np.int32)
        screenshot(page, f"browser-phone-density-{density}")
        row = shot[shot.shape[0] // 2]  # across the stroke, half way down the pad
        inked = np.flatnonzero(row < 128) / density  # CSS px from the pad's edge
        # Where the finger went (down the middle), as wide as the brush (20 px of 280).
        stroke = 20 * box["width"] / 280
        assert abs((inked.min() + inked.max()) / 2 - box["width"] / 2) < 3
        assert abs(inked.max() - inked.min() - stroke) < 3
        # Sharp: from paper to ink within a device pixel or two on each side.
        assert np.count_nonzero((row > 40) & (row < 215)) <= 4, row[row < 250]


def test_on_a_phone_a_swipe_over_an_uploaded_picture_scrolls_the_page_and_keeps_the_picture(browser, service, tmp_path):
    """A finger over the picture's preview went through to the canvas, which takes every touch
    to draw: a swipe to scroll the page threw the picture away and drew a stroke. While a picture
    is shown the pad draws nothing; it says that Clear brings the drawing back."""
    photo = tmp_path / "zero.jpg"
    photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg"))
    with opened(browser, service.url + "/", width=390, height=844, phone=True) as page:
        page.locator("#file").set_input_files(str(photo))
        wait_for_answer(page)
        wait_until_in_view(page, "#verdict")
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, "browser-phone-upload")
        finger_down_the_pad(page, 0.8, 0.3)  # a swipe up
        page.wait_for_function("() => window.scrollY > 0", timeout=5_000)
        finger_down_the_pad(page, 0.5, 0.5)  # a tap
        preview, hint = page.locator("#upload-preview"), page.locator("#pad-hint")
        assert preview.is_visible() and not has_ink(page)
        assert page.locator("#answer").get_attribute("data-state") == "done"
        assert hint.is_visible() and hint.inner_text() == "Press Clear to draw instead."
        assert inside(hint.bounding_box(), page.locator("#drop-zone").bounding_box())

        page.get_by_role("button", name="Clear").click()
        page.evaluate("window.scrollTo(0, 0)")
        assert not preview.is_visible() and hint.inner_text() == "Draw here with a finger, or upload a picture"
        before = answer_count(page)
        draw_one_with_a_finger(page)
        wait_for_answer(page, after=before)
        assert shown(page)["label"] == "1"


def test_a_click_on_an_uploaded_picture_keeps_it(page, tmp_path):
    """A click on the preview threw the picture away, and its answer with it."""
    photo = tmp_path / "zero.jpg"
    photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg"))
    page.locator("#file").set_input_files(str(photo))
    wait_for_answer(page)
    box = page.locator("#upload-preview").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert page.locator("#upload-preview").is_visible() and not has_ink(page)
    assert shown(page)["label"] == "0"


def test_a_picture_dropped_on_the_pad_is_predicted(page):
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
    assert result["label"] == "1"


def drop_on(page, selector: str, data: dict) -> None:
    """A drag from outside the browser ``data`` (files, items) let go over the middle of ``selector``."""
    box = page.locator(selector).bounding_box()
    point = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
    mouse = page.context.new_cdp_session(page)
    for kind in ("dragEnter", "dragOver", "drop"):
        mouse.send("Input.dispatchDragEvent", {"type": kind, **point, "data": {**data, "dragOperationsMask": 1}})


def test_a_picture_dropped_beside_the_pad_is_predicted(page, tmp_path):
    """A picture let go just beside the pad, on the result panel, did nothing: a browser that
    opens a dropped file in the tab would have left the page for it."""
    picture = tmp_path / "one.png"
    picture.write_bytes(render_user_digit(synthetic_digit(1), "canvas_png"))
    drop_on(page, "#result", {"items": [], "files": [str(picture)]})
    wait_for_answer(page)
    assert shown(page)["label"] == "1"
    assert page.url.startswith("http://") and page.locator("#upload-preview").is_visible()


def test_several_pictures_dropped_at_once_say_that_only_the_first_is_read(page, tmp_path):
    """Three pictures dropped on the pad: the first was predicted and the other two were dropped without a word."""
    pictures = []
    for digit in (1, 0, 0):
        pictures.append(tmp_path / f"{len(pictures)}-{digit}.png")
        pictures[-1].write_bytes(render_user_digit(synthetic_digit(digit), "canvas_png"))
    posted = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    drop_on(page, "#pad", {"items": [], "files": [str(picture) for picture in pictures]})
    wait_for_answer(page)
    assert shown(page)["label"] == "1" and shown(page)["error"] == "" and len(posted) == 1
    assert page.get_by_role("img", name="Uploaded picture: 0-1.png", exact=True).is_visible()
    hint = page.locator("#pad-hint")
    assert hint.inner_text() == "Read the first of 3 files; drop one picture at a time. Press Clear to draw instead."
    assert inside(hint.bounding_box(), page.locator("#drop-zone").bounding_box())
    drop_on(page, "#pad", {"items": [], "files": [str(pictures[1])]})  # one at a time: nothing more to say
    wait_for_answer(page, after=1)
    assert shown(page)["label"] == "0" and hint.inner_text() == "Press Clear to draw instead."


def paste(page, pictures: list[bytes]) -> None:
    """``pictures`` (PNG files) pasted on the page at once, as a paste of files copied together."""
    page.evaluate("""(pictures) => {
        const transfer = new DataTransfer();
        pictures.forEach((bytes, i) => transfer.items.add(new File([new Uint8Array(bytes)], `${i}.png`,
                                                                   {type: "image/png"})));
        document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true}));
    }""", [list(picture) for picture in pictures])


def test_several_pictures_pasted_at_once_say_that_only_the_first_is_read(page):
    """Three pictures pasted together: the first was predicted and the other two went without a word, where a
    drop of three says so."""
    posted = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    paste(page, [render_user_digit(synthetic_digit(digit), "canvas_png") for digit in (1, 0, 0)])
    wait_for_answer(page)
    assert shown(page)["label"] == "1" and shown(page)["error"] == "" and len(posted) == 1
    hint = page.locator("#pad-hint")
    assert hint.inner_text() == "Read the first of 3 files; paste one picture at a time. Press Clear to draw instead."
    assert inside(hint.bounding_box(), page.locator("#drop-zone").bounding_box())
    paste(page, [render_user_digit(synthetic_digit(0), "canvas_png")])  # one at a time: nothing more to say
    wait_for_answer(page, after=1)
    assert shown(page)["label"] == "0" and hint.inner_text() == "Press Clear to draw instead."


def test_a_picture_dragged_from_a_web_page_is_named_not_ignored(page):
    """A picture dragged from another tab comes as its address, not a file: nothing happened."""
    page.drag_and_drop("footer a", "#pad")  # a link of this page, let go by mistake: nothing to say
    assert not page.get_by_role("alert").is_visible()
    drop_on(page, "#pad", {"items": [{"mimeType": "text/uri-list", "data": "https://example.com/seven.png"}]})
    error = page.get_by_role("alert")
    error.wait_for(state="visible")
    assert error.inner_text().startswith("Only a picture file can be dropped here")
    assert "Save the picture first" in error.inner_text()


def test_a_folder_dropped_on_the_pad_is_named_as_one(page, tmp_path):
    """A folder of photos dropped on the pad was told "photos can no longer be read: it was changed, moved or
    deleted since it was chosen. Choose it again.": not what was wrong, and choosing it again did the same."""
    draw_one(page)
    wait_for_answer(page)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "one.png").write_bytes(render_user_digit(synthetic_digit(1), "canvas_png"))
    posted = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    drop_on(page, "#pad", {"items": [], "files": [str(folder)]})
    error = page.get_by_role("alert")
    error.wait_for(state="visible")
    assert error.inner_text() == "photos is a folder: drop one of the pictures in it instead."
    assert posted == [] and has_ink(page) and page.locator("#verdict").is_visible()  # the drawing stays, and its answer
    drop_on(page, "#pad", {"items": [], "files": [str(folder / "one.png")]})
    wait_for_answer(page, after=1)
    assert not error.is_visible() and shown(page)["label"] == "1"


@pytest.mark.parametrize("width, height", [(375, 667), (320, 568)])
def test_on_a_phone_the_answer_scrolls_into_view(browser, service, width, height):
    with opened(browser, service.url + "/", width=width, height=height, phone=True) as page:
        draw_one_with_a_finger(page)
        wait_for_answer(page)
        wait_until_in_view(page, "#verdict")
        assert page.evaluate("window.scrollY") > 0  # it was below the pad


def test_on_a_phone_the_pad_stays_put_between_the_strokes_of_one_digit(browser, service):
    """A 4 or a 7 takes two strokes, with a pause longer than the automatic prediction waits:
    the answer to the first stroke scrolled the pad 150 px up before the second began."""
    with opened(browser, service.url + "/", width=375, height=667, phone=True) as page:
        top = page.locator("#pad").bounding_box()["y"]
        draw_one_with_a_finger(page)
        wait_for_answer(page)
        page.wait_for_timeout(300)  # a person's pause between two strokes
        assert page.locator("#pad").bounding_box()["y"] == top
        before = answer_count(page)
        draw_one_with_a_finger(page)
        wait_for_answer(page, after=before)
        wait_until_in_view(page, "#verdict")  # once the pen rests, the answer still comes into view


@pytest.mark.parametrize("width, height", [(1000, 760), (375, 667)])
def test_a_long_class_name_fits_and_the_bars_share_one_scale(browser, catalogue, width, height):
    with opened(browser, catalogue.url + "/?model=fashion-mnist", width=width, height=height) as page:
        draw_one(page)
        wait_for_answer(page)
        wait_until_in_view(page, "#verdict")
        screenshot(page, f"browser-long-label-{width}")
        assert shown(page)["label"] == "T-shirt/top"

        label = page.locator("#label").bounding_box()
        assert inside(label, page.locator(".label-box").bounding_box())
        assert inside(label, page.locator(".result").bounding_box())
        assert label["x"] >= 0 and label["x"] + label["width"] <= width
        assert not overlap(page.locator(".label-box").bounding_box(), page.locator(".facts").bounding_box())

        tracks = [page.locator("#bars .track").nth(i).bounding_box() for i in range(len(FASHION))]
        assert all(abs(t["x"] - tracks[0]["x"]) < 0.5 and abs(t["width"] - tracks[0]["width"]) < 0.5
                   for t in tracks), tracks


def bar_rows(page) -> list[dict]:
    """Each bar's name (its text, box and how many lines it takes) and its track's box."""
    return page.evaluate("""() => [...document.querySelectorAll('#bars li')].map((row) => {
        const name = row.querySelector('.name'), range = document.createRange();
        range.selectNodeContents(name);
        const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
        const box = (e) => {
            const r = e.getBoundingClientRect();
            return {x: r.x, y: r.y, width: r.width, height: r.height};
        };
        return {text: name.textContent, lines, name: box(name), track: box(row.querySelector('.track'))};
    })""")


def test_with_large_text_on_a_phone_a_class_name_is_whole_over_its_bar(browser, catalogue):
    """With the text at 150 % on a 360 px phone the Fashion-MNIST names were cut ("T-" over
    "shirt/top", "Ankle" over "boot") beside bars some 50 px long. Digits stay beside their bars."""
    with opened(browser, catalogue.url + "/?model=fashion-mnist", width=360, height=740, phone=True,
                text_size=24) as page:
        draw_one_with_a_finger(page)
        wait_for_answer(page)
        rows = bar_rows(page)
        assert [row["text"] for row in rows] == FASHION
        for row in rows:
            assert row["lines"] == 1, row
            assert row["name"]["y"] + row["name"]["height"] <= row["track"]["y"] + 0.5, row  # over its bar
        assert len({(round(r["track"]["x"]), round(r["track"]["width"])) for r in rows}) == 1  # one scale
        assert rows[0]["track"]["width"] > 120

        before = answer_count(page)
        page.locator("#model").select_option("mnist")
        wait_for_answer(page, after=before)
        for row in bar_rows(page):
            assert row["name"]["x"] + row["name"]["width"] <= row["track"]["x"], row  # a digit beside its bar


def test_with_large_text_on_a_phone_the_answers_facts_are_not_cut_into_letters(browser, catalogue):
    """With the text at 200 % on a 360 px phone, "Answered by" took most of the panel's width and
    its value was cut a few letters a line: "fash", "ion-", "mni", "st", "v1"."""
    with opened(browser, catalogue.url + "/?model=fashion-mnist", width=360, height=740, phone=True,
                text_size=32) as page:
        draw_one_with_a_finger(page)
        wait_for_answer(page)
        facts = page.evaluate("""() => [...document.querySelectorAll('.facts dd')].map((value) => {
            const range = document.createRange();
            range.selectNodeContents(value);
            return [value.textContent, new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size];
        })""")
        assert facts[1][0].startswith("fashion-mnist v"), facts
        assert all(lines == 1 for _, lines in facts), facts


def test_a_garment_model_asks_for_a_garment_and_a_digit_model_for_a_digit(browser, catalogue):
    """With fashion-mnist chosen the page still said "Draw a digit", named the pad a place to draw
    one digit, and refused an empty pad with "Draw a digit or upload a picture first"."""
    pad_name = "Drawing area: draw one {} with the mouse, a pen or a finger"
    with opened(browser, catalogue.url + "/?model=fashion-mnist") as page:
        assert chosen_model(page).startswith("fashion-mnist")
        intro = page.locator("header p").inner_text()
        assert "garment" in intro and "digit" not in intro
        assert page.title() == "scratchnet: draw a garment"
        assert page.get_by_role("heading", name="Your garment").count() == 1
        assert page.get_by_role("img", name=pad_name.format("garment")).count() == 1
        page.get_by_role("button", name="Predict").click()
        assert page.get_by_role("alert").inner_text().startswith("Draw a garment")
        screenshot(page, "browser-garment-model")
        page.select_option("#model", "mnist")
        assert "Draw a digit" in page.locator("header p").inner_text()
        assert page.title() == "scratchnet: draw a digit"
        assert page.get_by_role("img", name=pad_name.format("digit")).count() == 1


def test_a_refusal_of_the_empty_pad_goes_when_another_model_is_chosen(browser, catalogue):
    """Predict on an empty pad says "Draw a digit or upload a picture first."; with fashion-mnist
    chosen next, the alert went on asking for a digit under an intro that asks for a garment."""
    with opened(browser, catalogue.url + "/?model=mnist") as page:
        page.get_by_role("button", name="Predict").click()
        assert page.get_by_role("alert").inner_text() == "Draw a digit or upload a picture first."
        page.locator("#model").select_option("fashion-mnist")
        assert not page.get_by_role("alert").is_visible()
        page.get_by_role("button", name="Predict").click()
        assert page.get_by_role("alert").inner_text() == (
            "Draw a garment (a piece of clothing, a shoe or a bag) or upload a picture first.")


def test_a_model_that_reads_no_pictures_is_named_not_swapped(browser, catalogue):
    with opened(browser, catalogue.url + "/?model=wine-quality") as page:
        note = page.locator("#model-note")
        assert note.is_visible()
        assert "wine-quality is not offered on this page" in note.inner_text()
        assert "Showing mnist instead" in note.inner_text()  # the server's default model
        assert chosen_model(page) == "mnist (v2)"
        assert not any("wine-quality" in text for text in page.locator("#model option").all_inner_texts())
        screenshot(page, "browser-not-an-image-model")
    with opened(browser, catalogue.url + "/?model=no-such-model") as page:
        assert "There is no model named no-such-model" in page.locator("#model-note").inner_text()


def test_the_model_shown_in_place_of_one_that_reads_no_pictures_is_not_swapped_when_it_goes(browser, catalogue):
    """Opened at ?model=wine-quality, the page drew with mnist in its place; once mnist was
    unloaded, the next drawing was answered by fashion-mnist ("T-shirt/top" for a "1")."""
    with opened(browser, catalogue.url + "/?model=wine-quality") as page:
        assert chosen_model(page) == "mnist (v2)"
        with admin_change(catalogue, "/v2/repository/models/mnist/unload", "/v2/repository/models/mnist/load"):
            draw_one(page)
            assert "unloaded" in wait_for_failure(page)
            wait_for_chosen_model(page, "mnist (unavailable)")
            note = page.locator("#model-note").inner_text()
            assert "wine-quality is not offered on this page" in note and "mnist is not available now" in note, note
            with page.expect_request(lambda r: r.method == "POST" and "/predict" in r.url) as sent:
                page.get_by_role("button", name="Predict").click()
            assert "/models/mnist/predict" in sent.value.url


def test_a_default_model_that_reads_no_pictures_is_passed_over_quietly(browser, tmp_path):
    """A service whose default model reads numbers: a person who opens the page asked for no
    model, and is told nothing about one; the picture model is simply chosen."""
    root = tmp_path / "registry"
    publish_model(root, "fashion-mnist", labels=FASHION, favour=0)
    publish_model(root, "wine-quality", kind="regression")
    with ServiceProcess(root, workers=1, threads=2, env={"SCRATCHNET_DEFAULT_MODEL": "wine-quality"}) as server, \
            opened(browser, server.url + "/") as page:
        assert chosen_model(page) == "fashion-mnist (v1)"
        note = page.locator("#model-note")
        assert not note.is_visible(), note.inner_text()
        top = page.locator("#drop-zone").bounding_box()["y"]
        note.evaluate("note => note.remove()")
        assert page.locator("#drop-zone").bounding_box()["y"] == top  # the empty note took no room


def test_an_unloaded_default_model_is_named_and_comes_back(browser, catalogue):
    with admin_change(catalogue, "/v2/repository/models/mnist/unload", "/v2/repository/models/mnist/load"):
        with opened(browser, catalogue.url + "/", fake_clock=True) as page:
            assert page.locator("#model").input_value() == "mnist"  # not the clothing model in its place
            assert chosen_model(page) == "mnist (unavailable)"
            assert "fashion-mnist (v1)" in page.locator("#model option").all_inner_texts()
            note = page.locator("#model-note")
            assert "mnist is not available now: it is unloaded" in note.inner_text()
            screenshot(page, "browser-unloaded")

            admin_post(catalogue, "/v2/repository/models/mnist/load")
            page.clock.fast_forward(MODEL_REFRESH_MS)
            wait_for_chosen_model(page, "mnist (v2)")
            assert not note.is_visible()


def test_a_model_unloaded_while_the_page_is_open_is_named(browser, catalogue):
    with opened(browser, catalogue.url + "/") as page:
        assert chosen_model(page) == "mnist (v2)"
        with admin_change(catalogue, "/v2/repository/models/mnist/unload", "/v2/repository/models/mnist/load"):
            with page.expect_request(lambda r: r.method == "POST" and "/models/mnist/predict" in r.url):
                draw_one(page)
            page.wait_for_function("() => document.querySelector('#answer').dataset.state === 'error'", timeout=15_000)
            assert "unloaded" in page.get_by_role("alert").inner_text()
            # the 503 makes the page look at the model list again
            wait_for_chosen_model(page, "mnist (unavailable)")
            assert "mnist is not available now" in page.locator("#model-note").inner_text()


def test_an_unloaded_model_that_reads_numbers_is_not_offered_as_a_picture_model(browser, catalogue):
    """An unloaded model is listed without its input: the page took it for a picture model and
    promised to offer it again once it served. The manifest of its version says what it reads."""
    with admin_change(catalogue, "/v2/repository/models/wine-quality/unload", "/v2/repository/models/wine-quality/load"):
        assert requests.get(catalogue.url + "/models/wine-quality", timeout=10).json()["input"] is None
        with opened(browser, catalogue.url + "/?model=wine-quality") as page:
            note = page.locator("#model-note").inner_text()
            assert "wine-quality is not offered on this page: it does not read pictures" in note
            assert chosen_model(page) == "mnist (v2)"
            assert not any("wine-quality" in text for text in page.locator("#model option").all_inner_texts())


def test_a_model_found_to_read_numbers_when_it_answers_is_dropped_with_a_note(browser, catalogue):
    """What an unloaded model reads could not be learned (its manifest was out of reach): the page
    kept it chosen. Loaded again, it refused a drawing with 415 model_takes_vectors, and the page
    kept sending it drawings: it looked at the model list again only after a 404 or a 503."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    try:
        page = context.new_page()
        page.route(lambda url: "/models/wine-quality/versions/" in url, lambda route: route.abort())
        with admin_change(catalogue, "/v2/repository/models/wine-quality/unload",
                          "/v2/repository/models/wine-quality/load"):
            page.goto(catalogue.url + "/?model=wine-quality")
            wait_for_models(page)
            assert chosen_model(page) == "wine-quality (unavailable)"
            note = page.locator("#model-note")
            assert "if it reads pictures, this page offers it once it serves" in note.inner_text()

            admin_post(catalogue, "/v2/repository/models/wine-quality/load")
            catalogue.wait_until_served("wine-quality", 1)
            # the list, read again at once: the page's own next look is 30 s on
            with page.expect_request(lambda r: r.url.endswith("/models"), timeout=5_000):
                draw_one(page)
                wait_for_failure(page)
                assert page.get_by_role("alert").get_attribute("data-code") == "model_takes_vectors"
            wait_for_chosen_model(page, "mnist (v2)")
            assert "wine-quality is not offered on this page: it does not read pictures" in note.inner_text()
            assert not any("wine-quality" in text for text in page.locator("#model option").all_inner_texts())
    finally:
        context.close()


def test_a_model_that_cannot_load_is_named_in_sentences_and_answers_with_the_reason(browser, tmp_path):
    """The only model's file is damaged: the note names it (one sentence began "this page"),
    and a drawing gets the service's 503 message."""
    root = tmp_path / "registry"
    publish_corrupt(root, "mnist")
    with ServiceProcess(root, workers=1, threads=2) as server, opened(browser, server.url + "/") as page:
        assert chosen_model(page) == "mnist (unavailable)"
        assert page.locator("#model-note").inner_text() == (  # no manifest says what it reads
            "Model mnist is not available now: no version of it can serve. "
            "If it reads pictures, this page offers it once it serves.")
        draw_one(page)
        assert wait_for_failure(page).startswith("Model mnist has no servable version yet.")
        assert page.get_by_role("alert").get_attribute("data-code") == "model_not_ready"


def test_the_model_choice_follows_the_version_that_answers(browser, catalogue):
    with opened(browser, catalogue.url + "/") as page:
        assert chosen_model(page) == "mnist (v2)"
        with admin_change(catalogue, "/models/mnist/versions/1/activate", "/models/mnist/unpin"):
            draw_one(page)
            wait_for_answer(page)
            assert shown(page)["answered_by"] == "mnist v1"
            assert chosen_model(page) == "mnist (v1)"


def test_without_automatic_prediction_a_change_of_model_waits_for_predict(browser, catalogue):
    """With "Predict automatically" off, choosing another model still sent the drawing to it."""
    with opened(browser, catalogue.url + "/") as page:
        page.locator("#auto").uncheck()
        draw_one(page)
        page.get_by_role("button", name="Predict").click()
        wait_for_answer(page)
        posted = []
        page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
        page.locator("#model").select_option("fashion-mnist")
        page.wait_for_timeout(1_000)  # past the rest after a change of model
        assert posted == []
        assert page.locator("#answer").get_attribute("data-state") == "stale"  # not mnist's answer under the new name
        assert page.locator("#placeholder").inner_text() == "Press Predict to read this picture."

        before = answer_count(page)
        page.get_by_role("button", name="Predict").click()
        wait_for_answer(page, after=before)
        assert shown(page)["answered_by"].startswith("fashion-mnist v")
        assert [url.split("/models/")[1] for url in posted] == ["fashion-mnist/predict?top_k=10"]


def test_arrow_keys_on_the_model_choice_predict_once_they_rest(browser, catalogue):
    """On the closed list each arrow key chooses the next model, and each choice sent the drawing
    to be read: three presses sent three requests, each cutting off the one before."""
    with opened(browser, catalogue.url + "/") as page:
        draw_one(page)
        wait_for_answer(page)
        posted = []
        page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
        before = answer_count(page)
        page.locator("#model").focus()
        first = page.evaluate("document.querySelector('#model').selectedIndex") == 0
        away, back = ("ArrowDown", "ArrowUp") if first else ("ArrowUp", "ArrowDown")
        for key in (away, back, away):
            page.keyboard.press(key)
        other = page.locator("#model").input_value()
        assert other != "mnist"
        wait_for_answer(page, after=before)
        page.wait_for_timeout(500)
        assert [url.split("/models/")[1] for url in posted] == [f"{other}/predict?top_k=10"]

        before = answer_count(page)
        page.locator("#model").select_option("mnist")  # a pick from the open list predicts as well
        wait_for_answer(page, after=before)
        assert shown(page)["answered_by"] == "mnist v2"

        # A change drops the answer still on its way for the model chosen before: it came in during
        # the choice's rest and was shown, and read out, under the new model's name.
        from playwright.sync_api import Error as PlaywrightError

        held = []
        page.route(lambda url: "/models/mnist/predict" in url, lambda route: held.append(route))
        page.get_by_role("button", name="Predict").click()
        while not held:
            page.wait_for_timeout(20)
        before = answer_count(page)
        page.locator("#model").select_option(other)
        with contextlib.suppress(PlaywrightError):  # the page has given up the request
            held.pop().continue_()
        page.wait_for_timeout(150)  # within the rest
        assert answer_count(page) == before
        page.unroute_all()
        wait_for_answer(page, after=before)
        assert shown(page)["answered_by"].startswith(other)


def test_a_drawing_made_before_the_model_list_arrives_is_predicted_once_it_does(browser, service):
    """On a slow network a person draws before the page knows its models; the drawing waits for
    the list instead of being refused with "no image model"."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    try:
        page = context.new_page()
        held = []  # the model list requests, answered (by the service) only when let through
        page.route(lambda url: url.endswith("/models"), lambda route: held.append(route))
        page.goto(service.url + "/")
        while not held:
            page.wait_for_timeout(50)
        assert page.locator("#model").is_disabled()
        draw_one(page)
        page.get_by_role("button", name="Predict").click()
        held.pop().continue_()
        wait_for_answer(page)
        assert shown(page)["answered_by"].startswith("mnist v")
        assert not page.get_by_role("alert").is_visible()
    finally:
        context.close()


@contextlib.contextmanager
def drawn_while_the_model_list_fails(browser, service):
    """``(page, list_comes)``: a page whose model list requests fail (the service is starting, or
    a proxy is between restarts) until ``list_comes()``, and a drawing it refused for want of it."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    try:
        page = context.new_page()
        failing = [True]
        page.route(lambda url: url.endswith("/models"),
                   lambda route: route.abort() if failing else route.continue_())
        page.goto(service.url + "/")
        page.locator("#model-note").wait_for(state="visible")
        draw_one(page)
        error = page.get_by_role("alert")
        error.wait_for(state="visible")
        assert error.inner_text().startswith("The model list could not be loaded")
        yield page, failing.clear
    finally:
        context.close()


def test_a_model_list_that_fails_is_not_said_both_to_need_a_retry_and_to_be_retried(browser, service):
    """The note said "try again in a moment" and then "Retrying…": the page asks again by itself."""
    with drawn_while_the_model_list_fails(browser, service) as (page, _):
        note = page.locator("#model-note").inner_text()
        assert note.startswith("Could not list the models. Could not reach the service"), note
        assert note.endswith("it may be down or restarting. Retrying…"), note
        assert "try again" not in note


def test_a_drawing_while_the_model_list_fails_says_why_and_predict_looks_again(browser, service):
    """The model list got no answer: a drawing was refused with "No image model is available",
    and Predict kept refusing until the next look, seconds later."""
    with drawn_while_the_model_list_fails(browser, service) as (page, list_comes):
        list_comes()
        with page.expect_request(lambda r: r.url.endswith("/models"), timeout=1_000):  # not the look 3 s on
            page.get_by_role("button", name="Predict").click()
        wait_for_answer(page)
        assert shown(page)["answered_by"].startswith("mnist v")
        assert not page.get_by_role("alert").is_visible()


def test_a_drawing_refused_while_the_model_list_fails_is_predicted_once_the_list_comes(browser, service):
    """When the page's own next look got the list, the choice filled but the refusal stayed on
    screen, and the drawing was never read."""
    with drawn_while_the_model_list_fails(browser, service) as (page, list_comes):
        list_comes()  # the page looks again by itself, seconds later
        wait_for_answer(page)
        assert shown(page)["answered_by"].startswith("mnist v")
        assert not page.get_by_role("alert").is_visible()


def test_predict_on_an_empty_pad_while_the_model_list_fails_leaves_no_note_once_it_comes(browser, service):
    """The refusal stayed on screen once the list came; a first fix left 'Draw a digit ... first'
    appearing by itself instead."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    try:
        page = context.new_page()
        failing = [True]
        page.route(lambda url: url.endswith("/models"), lambda route: route.abort() if failing else route.continue_())
        posted = []
        page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
        page.goto(service.url + "/")
        page.locator("#model-note").wait_for(state="visible")
        page.get_by_role("button", name="Predict").click()
        error = page.get_by_role("alert")
        error.wait_for(state="visible")
        assert error.inner_text().startswith("The model list could not be loaded")
        failing.clear()  # the page looks again by itself, seconds later
        error.wait_for(state="hidden", timeout=10_000)
        page.wait_for_timeout(500)
        assert not error.is_visible() and posted == []
    finally:
        context.close()


def test_an_empty_file_is_named_and_not_sent(page, tmp_path):
    draw_one(page)
    wait_for_answer(page)
    posted = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    empty = tmp_path / "scan.png"
    empty.write_bytes(b"")
    page.locator("#file").set_input_files(str(empty))
    error = page.get_by_role("alert")
    error.wait_for(state="visible")
    assert error.inner_text() == "scan.png is empty (0 bytes): choose another picture."
    assert posted == []
    assert page.locator("#verdict").is_visible()  # the drawing stays, and so does its answer


def test_in_forced_colours_the_drawing_and_the_bars_can_be_seen(browser, service):
    """Windows' high-contrast themes replace backgrounds with the system's: the dark ink must not
    end up on a dark sheet, nor the bars vanish into the panel (3:1, WCAG's non-text contrast)."""
    with opened(browser, service.url + "/", forced_colors="active", color_scheme="dark") as page:
        draw_one(page)
        wait_for_answer(page)
        screenshot(page, "browser-forced-colours")
        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")

        def pixel(x: float, y: float) -> list[int]:
            return list(shot.getpixel((round(x), round(y))))

        pad = page.locator("#pad").bounding_box()  # the stroke runs down the middle
        ink = pixel(pad["x"] + pad["width"] * 0.5 + 5, pad["y"] + pad["height"] * 0.5)
        sheet = pixel(pad["x"] + pad["width"] * 0.1, pad["y"] + pad["height"] * 0.5)
        assert contrast(ink, sheet) >= 3, (ink, sheet)

        track = page.locator("#bars li.top .track").bounding_box()  # its fill covers at least a tenth
        panel = page.locator(".result").bounding_box()
        fill = pixel(track["x"] + track["width"] * 0.05, track["y"] + track["height"] / 2)
        background = pixel(panel["x"] + panel["width"] - 6, track["y"] + track["height"] / 2)
        assert contrast(fill, background) >= 3, (fill, background)


def test_the_focus_ring_and_the_edge_of_the_pad_stand_out(page):
    """WCAG's 3:1 against the page for what marks a control: the keyboard focus on each stop,
    and the edge of the pad, which no text marks once something is drawn."""
    (white,) = css_colours(page, ("html", "backgroundColor"))
    rings = {}
    for _ in range(5):  # model, Predict, Clear, the file input (its span shows the focus), automatic
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id")
        ring = "#file + span" if focused == "file" else f"#{focused}"
        (rings[focused],) = css_colours(page, (ring, "outlineColor"))
    assert list(rings) == ["model", "predict", "clear", "file", "auto"]
    assert all(contrast(colour, white) >= 3 for colour in rings.values()), rings
    (edge,) = css_colours(page, ("#drop-zone", "borderTopColor"))
    assert contrast(edge, white) >= 3, edge


def test_the_probabilities_heading_shows_only_over_bars(page):
    heading = page.get_by_role("heading", name="Probabilities")
    assert not heading.is_visible()  # nothing to show yet
    draw_one(page)
    wait_for_answer(page)
    assert heading.is_visible()
    page.get_by_role("button", name="Clear").click()
    assert not heading.is_visible()


def test_a_tiff_is_shown_as_the_model_reads_it(page, page_registry, tmp_path):
    """Chromium shows no TIFF: a scan that was predicted correctly left the pad saying "no preview"."""
    scan = tmp_path / "scan.tiff"
    scan.write_bytes(encode(paper(synthetic_digit(1)), "TIFF"))
    page.locator("#file").set_input_files(str(scan))
    wait_for_answer(page)
    preview = page.get_by_role("img", name="Uploaded picture: scan.tiff, as the model reads it", exact=True)
    preview.wait_for(state="visible")
    screenshot(page, "browser-tiff")
    assert preview.evaluate("img => img.complete && img.naturalWidth === 28 && img.naturalHeight === 28")
    assert page.locator("#pad-hint").inner_text() == "scan.tiff, as the model reads it. Press Clear to draw instead."
    assert shown(page)["label"] == "1" and shown(page)["error"] == ""
    # What is shown is the network's input, dark ink on white: a stroke down the middle of the pad.
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(preview.get_attribute("src").split(",")[1]))))
    preprocessing = load_model(Registry(page_registry[0]).model_path("mnist", page_registry[1])).preprocessing
    read = image_to_vector(scan.read_bytes(), preprocessing).reshape(28, 28)
    assert np.abs(pixels / 255 - (1 - read)).max() < 0.01
    page.get_by_role("button", name="Clear").click()
    assert not preview.is_visible() and page.locator("#pad-hint").inner_text() == "Draw here, or drop a picture"


def test_a_tiff_is_sent_once_and_with_automatic_prediction_off_only_on_predict(page, tmp_path):
    """The page predicted a TIFF, then, finding that it could not show it, sent it again for the picture the model
    read: two predictions for one upload in the service's metrics, the second even with automatic prediction off."""
    scan = tmp_path / "scan.tiff"
    scan.write_bytes(encode(paper(synthetic_digit(1)), "TIFF"))
    posted = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    as_read = page.get_by_role("img", name="Uploaded picture: scan.tiff, as the model reads it", exact=True)
    hint = page.locator("#pad-hint")
    page.locator("#file").set_input_files(str(scan))
    wait_for_answer(page)
    as_read.wait_for(state="visible")
    page.wait_for_timeout(500)  # time for a request sent after the answer to leave
    assert len(posted) == 1 and shown(page)["label"] == "1"

    page.get_by_role("button", name="Clear").click()
    page.locator("#auto").uncheck()
    posted.clear()
    page.locator("#file").set_input_files(str(scan))
    page.wait_for_function("() => document.querySelector('#pad-hint').textContent.includes('no preview')")
    page.wait_for_timeout(500)
    assert posted == [] and hint.inner_text() == "scan.tiff: no preview. Press Clear to draw instead."
    before = answer_count(page)
    page.get_by_role("button", name="Predict").click()
    wait_for_answer(page, after=before)
    as_read.wait_for(state="visible")
    page.wait_for_timeout(500)
    assert len(posted) == 1 and shown(page)["label"] == "1"
    assert hint.inner_text() == "scan.tiff, as the model reads it. Press Clear to draw instead."


def test_a_long_file_name_on_the_pad_is_shown_whole(page, tmp_path):
    """A picture the page cannot show, nor the service read: the pad names the file instead, and a long name
    wraps."""
    name = "SCAN" + "0123456789" * 5 + ".txt"
    notes = tmp_path / name
    notes.write_text("not a picture")
    page.locator("#file").set_input_files(str(notes))
    page.get_by_role("alert").wait_for(state="visible")
    hint = page.locator("#pad-hint")
    hint.wait_for(state="visible")
    assert hint.inner_text() == f"{name}: no preview. Press Clear to draw instead."
    assert hint.evaluate("hint => hint.scrollWidth <= hint.clientWidth")  # nothing cut off
    assert inside(hint.bounding_box(), page.locator("#drop-zone").bounding_box())


def test_a_long_name_in_an_alert_or_a_note_wraps_inside_it_on_a_phone(browser, service, tmp_path):
    """A long file name in the alert, and a long model name in the note, ran out of their boxes
    and widened the page: a phone's screen scrolled sideways to 668 px of its 390."""
    model = "a_model_name_that_is_quite_long_and_has_no_spaces_anywhere_in_it"
    with opened(browser, f"{service.url}/?model={model}", width=390, height=844, phone=True) as page:
        note = page.locator("#model-note")
        assert model in note.inner_text()
        empty = tmp_path / "PXL_20261203_083045123_MP_portrait_original_from_the_camera_roll.jpg"
        empty.write_bytes(b"")
        page.locator("#file").set_input_files(str(empty))
        error = page.get_by_role("alert")
        error.wait_for(state="visible")
        assert empty.name in error.inner_text()
        for box in (note, error):
            assert box.evaluate("box => box.scrollWidth <= box.clientWidth"), box.inner_text()  # nothing runs out
        assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")  # no sideways scrolling


# Collects, from before the page's own script runs, each load or run its policy refuses.
REFUSALS = """window.refused = [];
document.addEventListener("securitypolicyviolation",
                          (e) => window.refused.push(`${e.effectiveDirective} refused ${e.blockedURI}`));"""


@contextlib.contextmanager
def under_watch(browser, url: str):
    """``(page, answer, refusals)``: the page at ``url`` in a fresh browser context, the answer that
    brought it, and a function that lists what its Content-Security-Policy refused, as events and
    console lines."""
    context = browser.new_context()
    try:
        context.add_init_script(REFUSALS)
        page = context.new_page()
        console = []
        page.on("console", lambda message: console.append(message.text))
        answer = page.goto(url)

        def refusals() -> list[str]:
            return page.evaluate("window.refused") + [line for line in console if "Content Security Policy" in line]

        yield page, answer, refusals
    finally:
        context.close()


def test_the_page_draws_uploads_and_predicts_under_its_content_security_policy(browser, service, tmp_path):
    with under_watch(browser, service.url + "/") as (page, answer, refusals):
        policy = answer.headers.get("content-security-policy", "")
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert answer.headers.get("x-content-type-options") == "nosniff"
        wait_for_models(page)
        draw_one(page)
        wait_for_answer(page)
        assert shown(page)["error"] == "" and len(shown(page)["bars"]) == 10
        bar_width = page.locator("#bars li.top .fill").evaluate("fill => fill.getBoundingClientRect().width")
        assert bar_width > 0  # the bars' widths, set by the script, are not refused as inline style

        photo = tmp_path / "zero.jpg"
        photo.write_bytes(render_user_digit(synthetic_digit(0), "photo_jpeg"))
        before = answer_count(page)
        page.locator("#file").set_input_files(str(photo))
        wait_for_answer(page, after=before)
        preview = page.locator("#upload-preview")
        assert preview.is_visible() and preview.evaluate("img => img.complete && img.naturalWidth > 0")  # a blob: URL
        assert refusals() == []


def test_the_api_page_is_laid_out_for_a_phones_screen(browser, service):
    """Without a viewport declaration a phone laid the API page out 980 px wide and shrank it to fit: its text
    was a third of its size, to be zoomed and scrolled sideways."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                                  device_scale_factor=2)
    try:
        page = context.new_page()
        page.goto(service.url + "/docs")
        assert page.evaluate("document.documentElement.clientWidth") == 390
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    finally:
        context.close()


def test_the_api_page_keeps_its_style_under_its_content_security_policy(browser, service):
    with under_watch(browser, service.url + "/docs") as (page, answer, refusals):
        assert "default-src 'none'" in answer.headers.get("content-security-policy", "")
        assert page.evaluate("getComputedStyle(document.body).maxWidth") != "none"  # the inline style sheet applies
        assert refusals() == []
