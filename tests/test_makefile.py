"""The Makefile's ``make serve``, run as the README says, stopped the ways a user stops it."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent  # this virtual environment, which has the service's extra


def session_processes(session: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return found


def started_make_serve(log: Path) -> subprocess.Popen:
    """``make serve`` on a free port with one worker, in a session of its own, once its service has
    started or it has stopped (its output in ``log``)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SCRATCHNET_")},
           "SCRATCHNET_BIND": "127.0.0.1:0", "SCRATCHNET_WORKERS": "1"}
    with open(log, "wb") as out:  # the installed marker is taken as made: this environment has what serve needs
        make = subprocess.Popen(["make", "serve", f"VENV={VENV}", "-o", f"{VENV}/bin/.installed-service"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while "service started" not in log.read_text() and make.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return make


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_stopped_with_sigterm_leaves_no_gunicorn_running(tmp_path):
    """``kill`` of make, ``timeout make serve`` or an editor's stop button: make passes SIGTERM to its
    recipe, and Gunicorn must get it, not be left serving (and holding the port) with no parent."""
    log = tmp_path / "serve.log"
    make = started_make_serve(log)
    try:
        assert re.search(r"Listening at: http://127\.0\.0\.1:\d+", log.read_text()), log.read_text()
        make.send_signal(signal.SIGTERM)
        make.wait(timeout=30)
        deadline = time.monotonic() + 15
        while session_processes(make.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [" ".join(process.cmdline()) for process in session_processes(make.pid)]
        assert not left, f"still running after make stopped: {left}"
    finally:
        for process in session_processes(make.pid):
            process.kill()
        if make.poll() is None:
            make.kill()
            make.wait()


OLD_PYTHON = """#!/bin/sh
# Python 3.10, as far as the Makefile asks it anything.
case "$1" in
  -V) echo "Python 3.10.13" ;;
  -c) exit 1 ;;
  -m) mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && cp "$0" "$3/bin/pip" ;;
  *) echo "ERROR: Package 'scratchnet' requires a different Python: 3.10.13 not in '>=3.11'" >&2; exit 1 ;;
esac
"""


def make_serve(*arguments: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRATCHNET_")}
    return subprocess.run(["make", "serve", *arguments], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_with_a_python_older_than_3_11_says_so_and_makes_no_environment(tmp_path):
    old = tmp_path / "python3.10"
    old.write_text(OLD_PYTHON)
    old.chmod(0o755)
    venv = tmp_path / "venv"
    done = make_serve(f"PYTHON={old}", f"VENV={venv}")
    assert done.returncode != 0
    assert f"{old} is Python 3.10.13; scratchnet needs Python 3.11 or newer" in done.stderr, done.stderr
    assert "PYTHON=python3.12" in done.stderr
    assert not venv.exists()  # or the next make, given a newer Python, would reuse it


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_names_an_environment_an_older_python_made(tmp_path):
    """A .venv that Python 3.10 made is reused by every make, whatever PYTHON says: pip's refusal
    alone left the user retrying with a newer Python, in vain."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(OLD_PYTHON)
    (venv / "bin" / "python").chmod(0o755)
    done = make_serve(f"PYTHON={sys.executable}", f"VENV={venv}")
    assert done.returncode != 0
    expected = f"{venv}/bin/python is Python 3.10.13; scratchnet needs Python 3.11 or newer: remove {venv}"
    assert expected in done.stderr, done.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_readme_says_how_to_run_make_serve_on_another_port_and_it_does(tmp_path):
    shown = re.search(r"`SCRATCHNET_BIND=(127\.0\.0\.1:\d+) make serve`", (REPO / "README.md").read_text())
    assert shown, "the README does not say how to give make serve another port"
    log = tmp_path / "serve.log"
    make = started_make_serve(log)  # on any free port, as on the README's
    try:
        assert re.search(r"Listening at: http://127\.0\.0\.1:(?!8000\b)\d+", log.read_text()), log.read_text()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # as Ctrl-C does
        make.wait(timeout=30)
