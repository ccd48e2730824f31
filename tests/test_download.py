"""Downloads against a real HTTP server on 127.0.0.1 that honours Range requests."""

import hashlib
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from trainer.datasets import load_dataset
from trainer.download import ChecksumMismatch, DownloadError, fetch, mirror_urls

PAYLOAD = np.random.default_rng(0).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer:
    """Serves ``files`` (path -> bytes); records every request's path and Range header."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.honour_range = True
        self.cut_after: int | None = None  # drop the connection after this many body bytes
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                match = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if match and server.honour_range:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    body = body[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body = body[:server.cut_after]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def running_server():
    s = FileServer()
    yield s
    s.close()


@pytest.fixture
def server(running_server):
    running_server.files.clear()
    running_server.requests.clear()
    running_server.honour_range = True
    running_server.cut_after = None
    return running_server


def test_downloads_and_verifies(server, tmp_path):
    server.files["/a/data.bin"] = PAYLOAD
    path = fetch([server.url + "/a/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=True)
    assert path == tmp_path / "data.bin"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    # Cached and still valid: no second request.
    fetch([server.url + "/a/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert len(server.requests) == 1


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD[:-1] + b"\x00"
    with pytest.raises(ChecksumMismatch) as excinfo:
        fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    message = str(excinfo.value)
    assert "checksum mismatch for data.bin" in message
    assert f"expected {PAYLOAD_SHA}" in message
    assert "corrupted or the mirror changed" in message
    assert os.listdir(tmp_path) == []


def test_resumes_a_partial_download(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    half = len(PAYLOAD) // 2
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:half])
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", f"bytes={half}-")]


def test_interrupted_download_is_kept_and_resumed(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="resumed"):
        fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert (tmp_path / "data.bin.part").read_bytes() == PAYLOAD[:100_000]
    assert not (tmp_path / "data.bin").exists()

    server.cut_after = None
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/data.bin", "bytes=100000-")


def test_restarts_when_the_server_ignores_range(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes from somewhere else")
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_wrong_partial_download_is_retried_from_scratch(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(b"\xff" * 1000)  # not the file's first 1000 bytes
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", "bytes=1000-"), ("/data.bin", None)]


def test_complete_partial_download_answered_416(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_falls_back_to_the_next_mirror(server, tmp_path):
    server.files["/second/data.bin"] = PAYLOAD
    urls = [server.url + "/first/data.bin", server.url + "/second/data.bin"]
    path = fetch(urls, "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [p for p, _ in server.requests] == ["/first/data.bin", "/second/data.bin"]


def test_all_mirrors_failing_names_each(server, tmp_path):
    urls = [server.url + "/first/data.bin", "http://127.0.0.1:9/data.bin"]
    with pytest.raises(DownloadError) as excinfo:
        fetch(urls, "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert not isinstance(excinfo.value, ChecksumMismatch)
    assert "HTTP 404" in str(excinfo.value) and "127.0.0.1:9" in str(excinfo.value)
    assert not (tmp_path / "data.bin").exists()


def test_corrupt_cached_file_is_downloaded_again(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin").write_bytes(b"not it")
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_mirror_environment_variable_replaces_the_defaults(monkeypatch):
    defaults = ["https://example.org/mnist/x.gz"]
    monkeypatch.delenv("SCRATCHNET_MIRROR", raising=False)
    assert mirror_urls(defaults, "mnist/x.gz") == defaults
    monkeypatch.setenv("SCRATCHNET_MIRROR", "http://127.0.0.1:1/, http://127.0.0.1:2/base")
    assert mirror_urls(defaults, "mnist/x.gz") == ["http://127.0.0.1:1/mnist/x.gz", "http://127.0.0.1:2/base/mnist/x.gz"]


def test_load_dataset_downloads_the_real_wine_file_from_a_mirror(server, tmp_path, monkeypatch, datasets_dir):
    red = (datasets_dir / "wine-quality" / "winequality-red.csv").read_bytes()
    server.files["/wine-quality/winequality-red.csv"] = red
    monkeypatch.setenv("SCRATCHNET_MIRROR", server.url)
    monkeypatch.delenv("SCRATCHNET_DATA_DIR", raising=False)
    data = load_dataset("wine-quality", cache_dir=tmp_path, progress=False)
    assert (tmp_path / "wine-quality" / "winequality-red.csv").read_bytes() == red
    assert data.files == {"winequality-red.csv": hashlib.sha256(red).hexdigest()}
    assert len(data.x_train) + len(data.x_test) == 1599
    # Second load comes from the cache; with downloads off it still works.
    load_dataset("wine-quality", cache_dir=tmp_path, download=False)
    assert len(server.requests) == 1


def test_load_dataset_refuses_a_mirror_serving_other_bytes(server, tmp_path, monkeypatch):
    server.files["/wine-quality/winequality-red.csv"] = b'"a";"quality"\n1;5\n'
    monkeypatch.setenv("SCRATCHNET_MIRROR", server.url)
    monkeypatch.delenv("SCRATCHNET_DATA_DIR", raising=False)
    with pytest.raises(ChecksumMismatch, match="winequality-red.csv"):
        load_dataset("wine-quality", cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "wine-quality" / "winequality-red.csv").exists()
