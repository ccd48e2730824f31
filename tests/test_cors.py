"""Calls from a web page served by another origin (CORS, SCRATCHNET_CORS_ORIGINS): the headers through
Flask's test client, then a real headless Chromium whose page, served from another port, calls a real
Gunicorn with fetch()."""

from __future__ import annotations

import base64
import contextlib
import http.server
import threading
from pathlib import Path

import pytest
import requests

from images import encode, paper, synthetic_digit
from modelgen import publish_model
from server import ServiceProcess, raw_exchange
from service.app import create_app
from service.config import ConfigError, load_settings
from skips import unavailable

APP = "https://app.example.com"
DIGIT_PNG = encode(paper(synthetic_digit(1)), "PNG")
PREFLIGHT = {"Origin": APP, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type,x-request-id"}
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("cors-models")
    publish_model(root, "mnist", seed=1)
    return root


def client(registry, origins):
    return create_app({"registry": registry, "watch": False, "admin_token": "cors-admin-token",
                       "cors_origins": origins}).test_client()


def cors_headers(response) -> dict:
    return {k: v for k, v in response.headers.items() if k.startswith("Access-Control-")}


@pytest.mark.parametrize("path", ["/models/mnist/predict", "/v2/models/mnist/infer", "/v1/models/mnist:predict",
                                  "/predict", "/models/mnist"])
def test_a_preflight_from_an_allowed_origin_is_answered(registry, path):
    response = client(registry, f"{APP}, http://127.0.0.1:8888").options(path, headers=PREFLIGHT)
    assert response.status_code == 204 and response.get_data() == b""
    headers = cors_headers(response)
    assert headers.pop("Access-Control-Allow-Origin") == APP and "Origin" in response.vary
    assert {"POST", "GET"} <= set(headers.pop("Access-Control-Allow-Methods").split(", "))
    assert {"Content-Type", "Authorization", "X-Request-ID"} <= set(headers.pop("Access-Control-Allow-Headers")
                                                                    .split(", "))
    assert int(headers.pop("Access-Control-Max-Age")) > 0
    assert headers == {}  # no credentials


def test_an_answer_and_an_error_carry_the_origin_and_the_headers_a_page_may_read(registry):
    browser = client(registry, APP)
    for response in (browser.post("/models/mnist/predict", data=DIGIT_PNG, content_type="image/png",
                                  headers={"Origin": APP}),
                     browser.post("/models/mnist/predict", data=b"not a picture", content_type="image/png",
                                  headers={"Origin": APP}),
                     browser.get("/models/nope", headers={"Origin": APP})):
        assert response.is_json
        headers = cors_headers(response)
        assert headers.pop("Access-Control-Allow-Origin") == APP and "Origin" in response.vary
        assert {"X-Model-Name", "X-Model-Version", "X-Request-ID"} <= set(
            headers.pop("Access-Control-Expose-Headers").split(", "))
        assert headers == {}


def test_an_answer_without_a_vary_of_its_own_is_given_one_without_parsing_it(registry, monkeypatch):
    """Every answer to a page's request got Vary: Origin through response.vary, which parses the header
    into a set and writes the set back: 11.3 us of CPU time a request with the answer, against 9.3 us.
    An answer that has no Vary is given the header; one that has its own (V2's Accept-Encoding) adds to it."""
    import werkzeug.sansio.response

    parsed, parse = [], werkzeug.sansio.response.parse_set_header
    monkeypatch.setattr(werkzeug.sansio.response, "parse_set_header",
                        lambda *args: (parsed.append(args[0]), parse(*args))[1])
    browser = client(registry, APP)
    response = browser.post("/models/mnist/predict", data=DIGIT_PNG, content_type="image/png", headers={"Origin": APP})
    assert response.status_code == 200 and response.headers.getlist("Vary") == ["Origin"]
    assert not parsed, f"{len(parsed)} headers parsed to add the CORS headers"
    infer = browser.post("/v2/models/mnist/infer", headers={"Origin": APP},
                         json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                           "data": [base64.b64encode(DIGIT_PNG).decode()]}]})
    assert infer.status_code == 200, infer.get_data(as_text=True)
    assert infer.headers.getlist("Vary") == ["Accept-Encoding, Origin"]


def test_another_origin_gets_no_cors_headers(registry):
    browser = client(registry, APP)
    for origin in ("https://evil.example.com", "null", "https://app.example.com.evil.example.com"):
        preflight = browser.options("/models/mnist/predict", headers={**PREFLIGHT, "Origin": origin})
        answer = browser.post("/models/mnist/predict", data=DIGIT_PNG, content_type="image/png",
                              headers={"Origin": origin})
        assert (preflight.status_code, answer.status_code) == (204, 200)
        assert cors_headers(preflight) == cors_headers(answer) == {}


def test_any_origin(registry):
    browser = client(registry, "*")
    preflight = browser.options("/models/mnist/predict", headers={**PREFLIGHT, "Origin": "http://localhost:3000"})
    answer = browser.post("/models/mnist/predict", data=DIGIT_PNG, content_type="image/png",
                          headers={"Origin": "http://localhost:3000"})
    assert preflight.headers["Access-Control-Allow-Origin"] == answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in answer.headers and "X-Model-Version" in answer.headers[
        "Access-Control-Expose-Headers"]


@pytest.mark.parametrize("origins", [None, "", " "])
def test_unset_no_cors_headers_at_all(registry, origins):
    browser = client(registry, origins)
    preflight = browser.options("/models/mnist/predict", headers=PREFLIGHT)
    answer = browser.post("/models/mnist/predict", data=DIGIT_PNG, content_type="image/png", headers={"Origin": APP})
    assert (preflight.status_code, answer.status_code) == (204, 200)
    assert cors_headers(preflight) == cors_headers(answer) == {} and "Origin" not in answer.vary


def test_the_admin_routes_are_left_to_operators(registry):
    browser = client(registry, "*")
    for path in ("/models/mnist/rollback", "/v2/repository/models/mnist/unload"):
        assert cors_headers(browser.options(path, headers=PREFLIGHT)) == {}
    assert cors_headers(browser.post("/models/mnist/unpin", headers={"Origin": APP})) == {}
    # the label's path is also a read-only route, whose methods leave PUT and DELETE out
    preflight = browser.options("/models/mnist/labels/prod",
                                headers={**PREFLIGHT, "Access-Control-Request-Method": "PUT"})
    assert not {"PUT", "DELETE"} & set(preflight.headers["Access-Control-Allow-Methods"].split(", "))


def test_a_body_that_stops_arriving_is_answered_with_the_cors_headers_of_its_origin(registry):
    """A real Gunicorn's worker answers a small body that stops arriving (408) itself, without the app: the answer
    carried no CORS headers, and a page of an allowed origin could not read why its upload failed."""
    env = {"SCRATCHNET_CORS_ORIGINS": APP, "SCRATCHNET_CLIENT_TIMEOUT": "1"}
    with ServiceProcess(registry, workers=1, threads=2, env=env) as service:
        def stalled(origin: str, path: str = "/models/mnist/predict") -> dict:
            head, body = raw_exchange(service.url, (f"POST {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n"
                                                    "Content-Type: application/x-npy\r\nContent-Length: 5000\r\n\r\n"
                                                    ).encode() + b"\x93NUMPY")
            assert head.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in body, head + body
            return dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])

        allowed = stalled(APP)
        assert allowed["Access-Control-Allow-Origin"] == APP and allowed["Vary"] == "Origin", allowed
        assert {"X-Request-ID", "X-Worker-PID"} <= set(allowed["Access-Control-Expose-Headers"].split(", "))
        other = stalled("https://evil.example.com")
        assert not [name for name in other if name.startswith("Access-Control-")] and other["Vary"] == "Origin"
        assert not [name for name in stalled(APP, "/models/mnist/rollback") if name.startswith("Access-Control-")]


def test_an_unknown_route_still_answers_options_with_its_json_404(registry):
    for origins in (None, APP):
        response = client(registry, origins).options("/no/such/route", headers=PREFLIGHT)
        assert response.status_code == 404 and response.get_json()["code"] == "not_found"


def test_options_asterisk_is_answered_with_the_servers_methods(registry):
    """RFC 9110 section 9.3.7: ``OPTIONS *`` asks what the server itself takes, and a real Gunicorn answered it
    404 'no such route'. It is a 204 naming every method a route takes; the path ``/*`` is still no route, and a
    page's preflight of a route is answered as before."""
    with ServiceProcess(registry, workers=1, threads=2, env={"SCRATCHNET_CORS_ORIGINS": APP}) as service:
        def options(target: str) -> tuple[str, dict, bytes]:
            head, body = raw_exchange(service.url, f"OPTIONS {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                                   f"Origin: {APP}\r\nAccess-Control-Request-Method: POST\r\n\r\n"
                                                   .encode())
            status, *lines = head.decode().split("\r\n")
            return status, dict(line.split(": ", 1) for line in lines), body

        status, headers, body = options("*")
        assert status == "HTTP/1.1 204 NO CONTENT" and body == b"" and "Content-Type" not in headers, headers
        assert set(headers["Allow"].split(", ")) == {"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"}
        status, headers, body = options("/*")
        assert status.startswith("HTTP/1.1 404 ") and b'"not_found"' in body
        status, headers, _ = options("/models/mnist/predict")
        assert status == "HTTP/1.1 204 NO CONTENT" and set(headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
        assert headers["Access-Control-Allow-Origin"] == APP and "POST" in headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize("value, origins", [
    ("https://App.Example.com:443, http://127.0.0.1:8888,https://app.example.com", (APP, "http://127.0.0.1:8888")),
    ("http://[::1]:8080", ("http://[::1]:8080",)),
    (" * ", ("*",)),
    ("", None),
])
def test_the_setting_reads_origins_as_browsers_send_them(value, origins):
    assert load_settings(environ={"SCRATCHNET_CORS_ORIGINS": value}).cors_origins == origins


@pytest.mark.parametrize("value", ["https://app.example.com/", "app.example.com", "ftp://app.example.com",
                                   "https://app.example.com:99999", "*, https://app.example.com",
                                   "https://app.example.com/predict"])
def test_a_value_that_is_no_origin_is_refused_in_one_line(value):
    with pytest.raises(ConfigError, match=r"SCRATCHNET_CORS_ORIGINS=.*is not an origin.*scheme://host\[:port\]") as e:
        load_settings(environ={"SCRATCHNET_CORS_ORIGINS": value})
    assert "\n" not in str(e.value)


# A real browser ----------------------------------------------------------------------------------

PAGE = b"<!doctype html><title>another origin</title>"
FETCH = """async ([url, png]) => {
    const body = Uint8Array.from(atob(png), c => c.charCodeAt(0));
    try {
        const headers = {'Content-Type': 'image/png', 'X-Request-ID': 'page-1'};
        const r = await fetch(url, {method: 'POST', body, headers});
        return {status: r.status, version: r.headers.get('X-Model-Version'), body: await r.json()};
    } catch (e) {
        return {error: String(e)};
    }
}"""


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def page_server():
    """A page on another port of 127.0.0.1, so another origin than the service's."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_page_of_another_origin_reads_a_prediction_only_when_allowed(registry):
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps) to run the browser tests")
    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM_ARGS

    png = base64.b64encode(DIGIT_PNG).decode()
    with page_server() as origin, sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for allowed in (origin, None):
                env = {"SCRATCHNET_CORS_ORIGINS": allowed} if allowed else {}
                with ServiceProcess(registry, workers=1, threads=2, env=env) as service:
                    page = chromium.new_page()
                    console = []
                    page.on("console", lambda message: console.append(message.text))
                    page.goto(origin + "/")
                    answer = page.evaluate(FETCH, [service.url + "/models/mnist/predict", png])
                    missing = page.evaluate(FETCH, [service.url + "/models/nope/predict", png])
                    page.close()
                    log = service.log()
                    metrics = requests.get(service.url + "/metrics", timeout=10).text
                if allowed:
                    assert answer["status"] == 200 and answer["version"] == "1", answer
                    assert answer["body"]["model"]["name"] == "mnist" and answer["body"]["predictions"][0]["label"]
                    assert missing["status"] == 404 and missing["body"]["code"] == "model_not_found", missing
                    assert "OPTIONS /models/mnist/predict 204" in log  # a preflight is logged, not predicted
                    assert 'scratchnet_predictions_total{model="mnist",version="1"} 1.0' in metrics
                    # one preflight per fetch: the route template is the same for both models
                    assert 'method="OPTIONS",route="/models/<name>/predict",status="204"} 2.0' in metrics
                else:
                    assert "Failed to fetch" in answer["error"] and "Failed to fetch" in missing["error"]
                    assert any("CORS policy" in line for line in console), console
        finally:
            chromium.close()
