"""Downloads against a real HTTP server on 127.0.0.1 that honours Range requests."""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from trainer import download
from trainer.datasets import load_dataset
from trainer.download import ChecksumMismatch, DownloadError, fetch, mirror_urls
from users import ctrl_c_at_its_default, run_as

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = np.random.default_rng(0).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer:
    """Serves ``files`` (path -> bytes); records every request's path and Range header."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.honour_range = True
        self.cut_after: int | None = None  # drop the connection after this many body bytes
        self.range_from_zero = False  # answer a Range request with 206 and the whole file
        self.range_shift = 0  # answer a Range request with 206 and bytes this far past the start asked for
        self.partial_from: int | None = None  # answer every request with 206 and the bytes from here
        self.delay = 0.0  # seconds before the body is sent
        self.content_type: str | None = None
        self.stall_after: int | None = None  # send this many body bytes, then nothing for a while
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path == "/loop":
                    self.send_response(302)
                    self.send_header("Location", "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                match = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if server.partial_from is not None:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {server.partial_from}-{len(body) - 1}/{len(body)}")
                    body = body[server.partial_from:]
                elif match and server.range_from_zero:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
                elif match and server.honour_range:
                    start = int(match.group(1)) + server.range_shift
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
                if server.content_type:
                    self.send_header("Content-Type", server.content_type)
                self.end_headers()
                if server.cut_after is not None:
                    body = body[:server.cut_after]
                    self.close_connection = True
                time.sleep(server.delay)
                if server.stall_after is not None:
                    self.wfile.write(body[:server.stall_after])
                    self.wfile.flush()
                    time.sleep(2)
                    return
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
    running_server.range_from_zero = False
    running_server.range_shift = 0
    running_server.partial_from = None
    running_server.delay = 0.0
    running_server.stall_after = None
    running_server.content_type = None
    return running_server


def cache_files(folder) -> list[str]:
    """What a cache folder holds besides the lock files that let processes take turns."""
    return sorted(name for name in os.listdir(folder) if not name.endswith(".lock"))


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
    assert cache_files(tmp_path) == []


def test_a_web_page_instead_of_the_file_is_named_and_the_message_says_what_to_do(server, tmp_path):
    server.files["/data.bin"] = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(ChecksumMismatch) as excinfo:
        fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    message = str(excinfo.value)
    assert "the mirror sent a web page (an error page?), not the file" in message
    assert message.endswith("nothing was kept: run again, and if it happens again, set $SCRATCHNET_MIRROR to "
                            "another mirror or read local files with --data-dir")
    assert cache_files(tmp_path) == []


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


def test_a_stalled_download_keeps_what_arrived(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_unreachable", set())
    monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    server.files["/data.bin"] = PAYLOAD
    server.stall_after = 100_000
    with pytest.raises(DownloadError, match=r"timed out \(the partial download is kept and will be resumed\)"):
        fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert (tmp_path / "data.bin.part").read_bytes() == PAYLOAD[:100_000]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_download_stopped_by_the_user_says_what_it_keeps_for_the_next_run(server, tmp_path, stop):
    server.files["/wine-quality/winequality-red.csv"] = PAYLOAD
    server.stall_after = 100_000
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCRATCHNET_MIRROR": server.url}
    env.pop("SCRATCHNET_DATA_DIR", None)
    run = subprocess.Popen([sys.executable, "-m", "trainer", "summary", "--dataset", "wine-quality", "--cache-dir",
                            str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True,
                           preexec_fn=ctrl_c_at_its_default)
    part = tmp_path / "wine-quality" / "winequality-red.csv.part"
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size == 100_000) and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(stop)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 128 + stop and "Traceback" not in err, err
    assert (f"winequality-red.csv: the 100,000 bytes downloaded are kept in {part}; the next run resumes from "
            "there") in err
    assert part.read_bytes() == PAYLOAD[:100_000]


def test_restarts_when_the_server_ignores_range(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes from somewhere else")
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    # The 200 answer to the range request is the whole file: it is used, not fetched again.
    assert server.requests == [("/data.bin", "bytes=31-")]
    assert cache_files(tmp_path) == ["data.bin"]


@pytest.mark.parametrize("body, content_type, cut_after", [
    (b"<html><body><h1>503 Service Unavailable</h1></body></html>", "text/html; charset=utf-8", None),
    (b"\x00" * 1000, "application/octet-stream", None),
    (PAYLOAD, None, 100_000),
], ids=["web page", "another file", "the file, cut short"])
def test_a_whole_answer_to_a_resume_that_is_not_the_file_keeps_the_partial_download(server, tmp_path, body,
                                                                                    content_type, cut_after):
    """A mirror that ignored the Range request and answered 200 with something else than the file
    (an error page, above all) cost the bytes already downloaded: its answer replaced the .part."""
    half = len(PAYLOAD) // 2
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:half])
    server.files["/data.bin"] = body
    server.honour_range = False
    server.content_type = content_type
    server.cut_after = cut_after
    with pytest.raises(DownloadError) as excinfo:
        fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert not isinstance(excinfo.value, ChecksumMismatch)
    assert str(excinfo.value).endswith("(the partial download is kept and will be resumed)")
    if content_type == "text/html; charset=utf-8":
        assert "the mirror sent a web page (an error page?), not the file" in str(excinfo.value)
    assert cache_files(tmp_path) == ["data.bin.part"]
    assert (tmp_path / "data.bin.part").read_bytes() == PAYLOAD[:half]

    server.files["/data.bin"] = PAYLOAD  # the next run, from a mirror that sends the file
    server.honour_range, server.content_type, server.cut_after = True, None, None
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/data.bin", f"bytes={half}-")
    assert cache_files(tmp_path) == ["data.bin"]


def test_wrong_partial_download_is_retried_from_scratch(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(b"\xff" * 1000)  # not the file's first 1000 bytes
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", "bytes=1000-"), ("/data.bin", None)]


def test_a_partial_download_longer_than_the_file_is_not_blamed_on_the_mirror(server, tmp_path):
    """The resume is answered 416, the fresh try is cut short: the error is the cut, and what
    arrived is kept for the next run."""
    server.files["/data.bin"] = PAYLOAD
    server.cut_after = 100_000
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD + b"\xff" * 1000)
    with pytest.raises(DownloadError) as excinfo:
        fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert not isinstance(excinfo.value, ChecksumMismatch)
    assert str(excinfo.value).endswith("connection closed after 100000 of 300000 bytes "
                                       "(the partial download is kept and will be resumed)")
    assert (tmp_path / "data.bin.part").read_bytes() == PAYLOAD[:100_000]
    assert server.requests == [("/data.bin", f"bytes={len(PAYLOAD) + 1000}-"), ("/data.bin", None)]


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


def test_processes_sharing_a_cache_take_turns(server, tmp_path):
    """Two processes downloading one file into one cache at once (a parameter sweep, two
    containers on a cache volume): the second waits and uses the first one's verified file."""
    server.files["/data.bin"] = PAYLOAD
    server.delay = 0.5
    script = ("import sys; from pathlib import Path; from trainer.download import fetch; "
              "path = fetch([sys.argv[1]], 'data.bin', sys.argv[2], Path(sys.argv[3]), progress=False); "
              "print(path)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = []
    for _ in range(2):
        processes.append(subprocess.Popen([sys.executable, "-c", script, server.url + "/data.bin", PAYLOAD_SHA,
                                           str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        time.sleep(0.2)
    outcomes = [(p.wait(60), *p.communicate()) for p in processes]
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    assert [out.strip() for _, out, _ in outcomes] == [str(tmp_path / "data.bin")] * 2
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert len(server.requests) == 1 and cache_files(tmp_path) == ["data.bin"]


def test_a_cache_this_user_cannot_write_still_serves_its_files(server):
    """A cache filled by another user (a volume shared by containers run as other uids, a read-only
    mount): a verified file in it is used; one it lacks is refused with what to do."""
    server.files["/data.bin"] = PAYLOAD
    urls = [server.url + "/data.bin"]
    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o755)
    cache = folder / "cache"
    fetch(urls, "data.bin", PAYLOAD_SHA, cache, progress=False)

    def check():
        assert fetch(urls, "data.bin", PAYLOAD_SHA, cache, progress=False).read_bytes() == PAYLOAD
        with pytest.raises(DownloadError, match=r"could not download other.bin into .*/cache: Permission denied; give "
                                                r"another cache folder, one uid \d+ can write, with --cache-dir "
                                                r"\(or \$SCRATCHNET_CACHE\)$"):
            fetch(urls, "other.bin", PAYLOAD_SHA, cache, progress=False)

    cache.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anywhere: check as another user
            run_as(65534, 65534, check)
        else:
            check()
        assert len(server.requests) == 1
    finally:
        cache.chmod(0o755)
        shutil.rmtree(folder)


@pytest.mark.parametrize("in_the_way", ["data.bin", "data.bin.part", "data.bin.lock", ""])
def test_a_folder_where_the_cache_keeps_a_file_is_named_with_the_fix(server, tmp_path, in_the_way):
    """A folder named like the downloaded file, or a file given as the cache: open()'s "[Errno 21] Is a
    directory" named no fix, and the other cases were blamed on the cache's permissions or on the mirror."""
    server.files["/data.bin"] = PAYLOAD
    cache = tmp_path / "cache"
    if in_the_way:
        (cache / in_the_way).mkdir(parents=True)
        expected = rf"{cache / in_the_way} is a folder, where the download cache keeps a file: move it away, or "
    else:
        cache.write_text("notes")
        expected = rf"{cache}, the download cache, is a file, not a folder: move it away, or "
    with pytest.raises(DownloadError, match=expected + r"give another cache folder with --cache-dir "
                                                       r"\(or \$SCRATCHNET_CACHE\)$"):
        fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, cache, progress=False)
    assert server.requests == []


def test_a_file_given_as_the_cache_of_a_datasets_folder_is_named_with_the_fix(server, tmp_path):
    """--cache-dir naming a file: a dataset is kept in a folder of its own in the cache, which cannot be made
    in a file, and the error ("Not a directory") blamed the cache's permissions."""
    server.files["/data.bin"] = PAYLOAD
    cache = tmp_path / "cache"
    cache.write_text("notes")
    with pytest.raises(DownloadError, match=rf"^{cache}, where the download cache {cache / 'wine-quality'} goes, is "
                                            r"a file, not a folder: move it away, or give another cache folder with "
                                            r"--cache-dir \(or \$SCRATCHNET_CACHE\)$"):
        fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, cache / "wine-quality", progress=False)
    assert server.requests == []


def test_a_cache_folder_under_home_is_expanded(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    server.files["/data.bin"] = PAYLOAD
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, "~/cache", progress=False)
    assert path == tmp_path / "cache" / "data.bin" and path.read_bytes() == PAYLOAD


def test_a_mirror_that_does_not_answer_is_not_waited_on_for_every_file(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_unreachable", set())
    monkeypatch.setattr(download, "TIMEOUT_S", 0.5)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    dead = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        for name in ("one.bin", "two.bin"):
            server.files[f"/{name}"] = PAYLOAD
            path = fetch([f"{dead}/{name}", f"{server.url}/{name}"], name, PAYLOAD_SHA, tmp_path, progress=False)
            assert path.read_bytes() == PAYLOAD
        assert len(accepted) == 1  # the second file went straight to the mirror that answers
    finally:
        silent.close()
        for connection in accepted:
            connection.close()


def test_a_range_answered_from_byte_zero_starts_over(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.range_from_zero = True
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and server.requests == [("/data.bin", "bytes=1000-")]
    assert cache_files(tmp_path) == ["data.bin"]


def test_a_range_answered_from_another_byte_starts_over(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.range_shift = 10
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    path = fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", "bytes=1000-"), ("/data.bin", None)]


def test_part_of_the_file_sent_for_the_whole_is_refused(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.partial_from = 10
    with pytest.raises(DownloadError, match="asked for bytes from 0, got Content-Range 'bytes 10-299999/300000'"):
        fetch([server.url + "/data.bin"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert cache_files(tmp_path) == []


def test_errors_are_one_line(server, tmp_path):
    with pytest.raises(DownloadError) as excinfo:
        fetch([server.url + "/loop"], "data.bin", PAYLOAD_SHA, tmp_path, progress=False)
    assert "HTTP 302" in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_mirror_environment_variable_replaces_the_defaults(monkeypatch):
    defaults = ["https://example.org/mnist/x.gz"]
    monkeypatch.delenv("SCRATCHNET_MIRROR", raising=False)
    assert mirror_urls(defaults, "mnist/x.gz") == defaults
    monkeypatch.setenv("SCRATCHNET_MIRROR", "http://127.0.0.1:1/, http://127.0.0.1:2/base")
    assert mirror_urls(defaults, "mnist/x.gz") == ["http://127.0.0.1:1/mnist/x.gz", "http://127.0.0.1:2/base/mnist/x.gz"]
    monkeypatch.setenv("SCRATCHNET_MIRROR", "http://127.0.0.1:1/ notaurl")  # urllib said only 'unknown url type'
    with pytest.raises(DownloadError, match=r"\$SCRATCHNET_MIRROR names 'notaurl', which is not a URL"):
        mirror_urls(defaults, "mnist/x.gz")


@pytest.mark.parametrize("base, why", [("http://[::1", "Invalid IPv6 URL"), ("http://127.0.0.1:8o/", "Port could not"),
                                       ("http://127.0.0.1:99999/", "Port out of range")])
def test_a_mirror_url_that_cannot_be_parsed_is_named_with_its_variable(monkeypatch, base, why):
    """urllib's 'Invalid IPv6 URL' alone named neither the URL nor where it came from."""
    monkeypatch.setenv("SCRATCHNET_MIRROR", base)
    with pytest.raises(DownloadError, match=rf"\$SCRATCHNET_MIRROR names '{re.escape(base)}', which is not a valid URL "
                                            rf"\({why}.*\): give base URLs"):
        mirror_urls(["https://example.org/mnist/x.gz"], "mnist/x.gz")


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


def test_a_dataset_no_mirror_serves_says_how_to_use_local_files(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_MIRROR", server.url)  # which has no files: 404 for each
    monkeypatch.delenv("SCRATCHNET_DATA_DIR", raising=False)
    with pytest.raises(DownloadError) as excinfo:
        load_dataset("wine-quality", cache_dir=tmp_path, progress=False)
    message = str(excinfo.value)
    assert "could not download winequality-red.csv" in message and "HTTP 404" in message
    assert message.endswith("give their folder with --data-dir (or $SCRATCHNET_DATA_DIR)")
