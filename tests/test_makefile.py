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


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_stopped_with_sigterm_leaves_no_gunicorn_running(tmp_path):
    """``kill`` of make, ``timeout make serve`` or an editor's stop button: make passes SIGTERM to its
    recipe, and Gunicorn must get it, not be left serving (and holding the port) with no parent."""
    log = tmp_path / "serve.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SCRATCHNET_")},
           "SCRATCHNET_BIND": "127.0.0.1:0", "SCRATCHNET_WORKERS": "1"}
    with open(log, "wb") as out:  # the installed marker is taken as made: this environment has what serve needs
        make = subprocess.Popen(["make", "serve", f"VENV={VENV}", "-o", f"{VENV}/bin/.installed-service"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "service started" not in log.read_text() and make.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
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
