"""Settings: defaults, then SCRATCHNET_* variables, then create_app's overrides; a bad value names
its variable. Gunicorn's: the addresses it listens on, and the folders it must write to."""

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from modelgen import publish_model
from server import ServiceProcess, metric_value, read_only, wait_until_ended
from skips import needs_root, unavailable
from service.binds import FORMS
from service.config import ConfigError, load_settings
from service.healthcheck import probe_target

REPO = Path(__file__).resolve().parent.parent


def test_defaults():
    settings = load_settings(environ={})
    assert settings.registry == Path("models") and settings.default_model == "mnist" and settings.models is None
    assert settings.poll_interval == 1.0 and not settings.admin_enabled and settings.log_format == "json"


def test_environment_then_overrides():
    environ = {"SCRATCHNET_REGISTRY": "/srv/models", "SCRATCHNET_MODELS": " mnist, wine ,mnist,",
               "SCRATCHNET_POLL_INTERVAL": "0.5", "SCRATCHNET_MAX_BATCH": "100",
               "SCRATCHNET_ADMIN_TOKEN": "s3cret-token", "SCRATCHNET_LOG_FORMAT": "text"}
    settings = load_settings({"max_batch": 7}, environ=environ)
    assert settings.registry == Path("/srv/models") and settings.models == ("mnist", "wine")
    assert settings.poll_interval == 0.5 and settings.max_batch == 7
    assert settings.admin_enabled and settings.admin_token == "s3cret-token" and settings.log_format == "text"
    assert load_settings(environ={"SCRATCHNET_ADMIN_TOKEN": ""}).admin_enabled is False


@pytest.mark.parametrize("environ,named", [
    ({"SCRATCHNET_MAX_BATCH": "lots"}, "SCRATCHNET_MAX_BATCH"),
    ({"SCRATCHNET_MAX_BODY_BYTES": "0"}, "SCRATCHNET_MAX_BODY_BYTES"),
    ({"SCRATCHNET_POLL_INTERVAL": "-1"}, "SCRATCHNET_POLL_INTERVAL"),
    ({"SCRATCHNET_POLL_INTERVAL": "inf"}, "SCRATCHNET_POLL_INTERVAL"),  # the watcher thread would die of it
    ({"SCRATCHNET_POLL_INTERVAL": "1e10"}, "SCRATCHNET_POLL_INTERVAL"),
    ({"SCRATCHNET_POLL_INTERVAL": "1e-300"}, "SCRATCHNET_POLL_INTERVAL must be a number of seconds from 0.01"),
    ({"SCRATCHNET_LOG_FORMAT": "xml"}, "SCRATCHNET_LOG_FORMAT"),
    ({"SCRATCHNET_WATCH": "ture"}, "SCRATCHNET_WATCH='ture' is not a yes or no"),  # was read as off
])
def test_a_bad_value_names_its_variable(environ, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=environ)


def test_watch_reads_yes_and_no_words():
    for word, watch in (("1", True), ("On", True), ("yes", True), ("0", False), ("off", False), (" false ", False)):
        assert load_settings(environ={"SCRATCHNET_WATCH": word}).watch is watch


def documented_settings(module: Path) -> set[str]:
    """The SCRATCHNET_* variables of a module docstring's settings table."""
    return set(re.findall(r"^\| (SCRATCHNET_[A-Z_]+) ", module.read_text(), re.M))


def test_compose_passes_every_documented_setting_to_the_service():
    """Compose passes on only the variables its file names: one left out is ignored without a word."""
    compose = (REPO / "docker-compose.yml").read_text()
    api = compose[compose.index("\n  api:\n"):compose.index("\n  trainer:\n")]
    passed = set(re.findall(r"^      (SCRATCHNET_[A-Z_]+):", api, re.M))
    documented = documented_settings(REPO / "service" / "config.py") | documented_settings(
        REPO / "service" / "gunicorn_conf.py")
    assert len(documented) > 20
    assert documented - passed == set()


def settings_table(text: str) -> dict[str, str]:
    """Each SCRATCHNET_* variable of a Markdown or docstring table, with its default column."""
    return {name: default.strip(" `") for name, default in
            re.findall(r"^\| `?(SCRATCHNET_[A-Z_]+)`? +\| ([^|]+)\|", text, re.M)}


def test_the_serving_reference_lists_every_setting_with_its_default():
    """docs/serving.md is the operator's reference: it named a few settings and sent the reader to the source for
    the rest (SCRATCHNET_TIMEOUT, SCRATCHNET_MAX_MODEL_BYTES ...). Its table holds every variable the modules'
    tables hold, and a number the same as theirs."""
    code = settings_table((REPO / "service" / "config.py").read_text()) | settings_table(
        (REPO / "service" / "gunicorn_conf.py").read_text())
    doc = settings_table((REPO / "docs" / "serving.md").read_text())
    assert set(doc) == set(code)
    for name, default in code.items():
        if re.fullmatch(r"[0-9.]+", default):
            assert float(re.match(r"[0-9.]+", doc[name])[0]) == float(default), name


def test_an_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown settings: pol_interval"):
        load_settings({"pol_interval": 1}, environ={})


def refusal(line: str) -> str:
    """The message of the line Gunicorn's configuration exits on: a critical line of the JSON log (the default
    format), as every other line of it is."""
    entry = json.loads(line)
    assert (entry["level"], entry["logger"]) == ("critical", "scratchnet.config"), entry
    return entry["message"]


def run_gunicorn(tmp_path, launcher: list[str] | None = None, **variables: str | None) -> subprocess.CompletedProcess:
    """Gunicorn as production runs it, with ``variables`` (None: unset) for the SCRATCHNET_* of this
    environment, in a test that expects it to stop by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRATCHNET_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"SCRATCHNET_BIND": "127.0.0.1:0", "TMPDIR": str(tmp_path), **variables})
    return subprocess.run([*(launcher or []), sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py",
                           "service.app:create_app()"], cwd=REPO, capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in env.items() if v is not None})


def test_workers_run_as_another_user_boot_and_write_their_metrics():
    """Root starting Gunicorn with --user and --group, as a system service does: the metrics folder
    the master made was root's alone (0700), and every worker failed to boot on writing into it."""
    needs_root("running workers as another user")
    folder = Path(tempfile.mkdtemp(prefix="scratchnet-as-nobody-"))
    try:
        folder.chmod(0o755)  # the workers read the registry: pytest's tmp_path is root's alone
        (folder / "tmp").mkdir(mode=0o777)
        publish_model(folder / "models", "wine")
        for path in [folder / "models", *(folder / "models").rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        env = {"GUNICORN_CMD_ARGS": "--user 65534 --group 65534", "TMPDIR": str(folder / "tmp")}
        with ServiceProcess(folder / "models", workers=2, env=env) as server:
            assert "Exception in worker process" not in server.log()
            metrics = next((folder / "tmp").glob("scratchnet-metrics-*"))
            written = {path.stat().st_uid for path in metrics.glob("*.db")}
            assert written == {65534} and {pid for pid in server.worker_pids()
                                           if psutil.Process(pid).uids().effective == 65534} == server.worker_pids()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("variable, value, message", [
    ("SCRATCHNET_WORKERS", "two", "SCRATCHNET_WORKERS='two': expected a whole number of at least 1"),
    ("SCRATCHNET_WORKERS", "0", "SCRATCHNET_WORKERS='0': expected a whole number of at least 1"),
    ("SCRATCHNET_CLIENT_TIMEOUT", "abc", "SCRATCHNET_CLIENT_TIMEOUT='abc': expected a finite number from 0 to "
                                         "9223372036"),
    ("SCRATCHNET_CLIENT_TIMEOUT", "1e300", "SCRATCHNET_CLIENT_TIMEOUT='1e300': expected a finite number from 0 to "
                                           "9223372036"),
    ("SCRATCHNET_MALLOC_ARENAS", "1" + "0" * 20, f"SCRATCHNET_MALLOC_ARENAS='1{'0' * 20}': expected a whole number "
                                                 "from 0 to 2147483647"),
    ("SCRATCHNET_POLL_INTERVAL", "abc", "SCRATCHNET_POLL_INTERVAL='abc': expected a number of seconds, such as the "
                                        "default 1.0"),
    ("SCRATCHNET_MAX_BODY_BYTES", "64MB", "SCRATCHNET_MAX_BODY_BYTES='64MB': expected a whole number, such as the "
                                          "default 67108864"),
    ("SCRATCHNET_POLL_INTERVAL", "inf", "SCRATCHNET_POLL_INTERVAL must be a number of seconds from 0.01 to "
                                        "9223372036"),
    ("SCRATCHNET_LOG_LEVEL", "verbose", "SCRATCHNET_LOG_LEVEL must be one of debug, info, warning, error, critical, not 'verbose'"),
    ("SCRATCHNET_CONTROL_SOCKET", "true", "SCRATCHNET_CONTROL_SOCKET='true': expected 0 or 1"),
    ("SCRATCHNET_ADMIN_TOKEN", "pässwörd", "SCRATCHNET_ADMIN_TOKEN must be printable ASCII (letters, digits and "
                                           "punctuation): clients send it in an HTTP header"),
    # A token of a few characters is guessed in few tries, and kept ordinary words out of the logs (each holding
    # a piece of it).
    ("SCRATCHNET_ADMIN_TOKEN", "s", "SCRATCHNET_ADMIN_TOKEN must be 8 characters or more, not 1: a random one, "
                                    "python3 -c 'import secrets; print(secrets.token_hex(16))', is best"),
    ("SCRATCHNET_BIND", "127.0.0.1:80x", f"SCRATCHNET_BIND='127.0.0.1:80x': '127.0.0.1:80x': '80x' is not a valid "
                                         f"port number (expected {FORMS})"),
    ("SCRATCHNET_BIND", "127.0.0.1:0, [::1]:70000",
     "SCRATCHNET_BIND='127.0.0.1:0, [::1]:70000': '[::1]:70000': the port must be from 0 to 65535"),
    ("SCRATCHNET_BIND", " , ", f"SCRATCHNET_BIND=' , ': expected one or more addresses ({FORMS})"),
    ("SCRATCHNET_REGISTRY", "", "SCRATCHNET_REGISTRY is empty: give the registry folder, such as the default models"),
    ("SCRATCHNET_DEFAULT_MODEL", "", "SCRATCHNET_DEFAULT_MODEL='': model name '' is not valid: use letters, digits, "
                                     "'.', '_' or '-' (at most 64 characters, starting with a letter or digit)"),
    ("SCRATCHNET_DEFAULT_MODEL", "../x", "SCRATCHNET_DEFAULT_MODEL='../x': model name '../x' is not valid: use "
                                         "letters, digits, '.', '_' or '-' (at most 64 characters, starting with a "
                                         "letter or digit)"),
    ("SCRATCHNET_MODELS", "mnist,../etc", "SCRATCHNET_MODELS='mnist,../etc': model name '../etc' is not valid: use "
                                          "letters, digits, '.', '_' or '-' (at most 64 characters, starting with a "
                                          "letter or digit)"),
    ("SCRATCHNET_CORS_ORIGINS", "https://app.example.com/",
     "SCRATCHNET_CORS_ORIGINS='https://app.example.com/': 'https://app.example.com/' is not an origin: give "
     "scheme://host[:port] with http or https and no path, such as https://app.example.com or "
     "http://127.0.0.1:8888, several separated by commas, or * for any origin"),
])
def test_gunicorn_refuses_a_bad_setting_in_one_line_before_it_starts(tmp_path, variable, value, message):
    done = run_gunicorn(tmp_path, **{variable: value})
    assert done.returncode != 0
    assert [refusal(line) for line in done.stderr.strip().splitlines()] == [message]
    assert not list(tmp_path.glob("scratchnet-metrics-*"))  # its metrics folder was removed on the way out


@pytest.mark.parametrize("limit, connections", [(64, 1000), (64, 64), (1024, 5000)])
def test_gunicorn_refuses_worker_connections_the_open_files_limit_cannot_hold(tmp_path, limit, connections):
    """Gunicorn applies --worker-connections after reading this configuration, so the value it keeps
    under the limit was replaced by one that ran the worker out of files under load."""
    done = run_gunicorn(tmp_path, ["sh", "-c", f'ulimit -n {limit} && exec "$@"', "sh"],
                        GUNICORN_CMD_ARGS=f"--worker-connections {connections}")
    assert done.returncode != 0
    default = limit // 2 if limit < 200 else min(1000, limit - 100)
    assert [refusal(line) for line in done.stderr.strip().splitlines()] == [
        f"--worker-connections {connections} is not below the open-files limit of {limit} (ulimit -n): every "
        "connection is an open file, besides the ~20 a worker holds itself; leave it out (the default here is "
        f"{default}) or raise the limit"]
    assert not list(tmp_path.glob("scratchnet-metrics-*"))


@pytest.mark.parametrize("workers, command_line", [("3", None), ("1", "--workers 2")])
def test_gunicorn_refuses_the_admin_api_on_several_workers_without_their_watchers(tmp_path, workers, command_line):
    """An admin call is applied by the worker that answers it, and by the others' watchers: with
    them off, a pin answered 200 while the other workers served the old version for good. The refusal is
    the log's one line, as docs/docker.md promises: "Starting gunicorn" came before it."""
    done = run_gunicorn(tmp_path, SCRATCHNET_WATCH="0", SCRATCHNET_ADMIN_TOKEN="secret-token",
                        SCRATCHNET_WORKERS=workers, GUNICORN_CMD_ARGS=command_line)
    assert done.returncode != 0
    count = int(command_line.split()[-1]) if command_line else int(workers)
    assert [refusal(line) for line in done.stderr.strip().splitlines()] == [
        f"SCRATCHNET_WATCH is off with {count} workers and the admin API on: a pin, unpin, rollback or label change "
        "would reach only the worker that answers it. Turn the watcher on, run one worker (SCRATCHNET_WORKERS=1), "
        "or leave SCRATCHNET_ADMIN_TOKEN unset"]
    assert not list(tmp_path.glob("scratchnet-metrics-*"))


@pytest.mark.parametrize("family, host, shown", [(socket.AF_INET, "127.0.0.1", "127.0.0.1"),
                                                  (socket.AF_INET6, "::1", "[::1]")], ids=["ipv4", "ipv6"])
def test_gunicorn_names_an_address_another_program_holds(tmp_path, family, host, shown):
    """Gunicorn alone retries for five seconds and then says "Can't connect to ('127.0.0.1', 8000)".
    The address is named, and the hint given, in a form SCRATCHNET_BIND takes (IPv6 in brackets)."""
    with socket.socket(family) as other:
        try:
            other.bind((host, 0))
        except OSError as exc:
            unavailable(f"no {host} loopback here ({exc.strerror})")
        other.listen()
        port = other.getsockname()[1]
        done = run_gunicorn(tmp_path, SCRATCHNET_BIND=f"{shown}:{port}")
    assert done.returncode != 0
    assert [refusal(line) for line in done.stderr.strip().splitlines()] == [
        f"cannot listen on {shown}:{port}: Address already in use: another program listens there (a "
        f"scratchnet already running?); stop it, or serve on another port, e.g. SCRATCHNET_BIND={shown}:{port + 1}"]
    assert not list(tmp_path.glob("scratchnet-metrics-*"))


def test_gunicorn_warns_of_a_misspelt_setting(tmp_path):
    done = run_gunicorn(tmp_path, SCRATCHNET_ADMIN_TOKN="secret", SCRATCHNET_WORKERS="x")  # x: stops after the warning
    assert "SCRATCHNET_ADMIN_TOKN is not a setting of scratchnet and is ignored (a misspelling?)" in done.stderr


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_warning_of_a_misspelt_setting_is_a_line_of_the_services_log(tmp_path, log_format):
    """The service starts and serves after the warning, which was a line of plain text at the head of a JSON log."""
    publish_model(tmp_path, "mnist")
    with ServiceProcess(tmp_path, workers=1, env={"SCRATCHNET_LOG_FORMAT": log_format,
                                                  "SCRATCHNET_MAX_BACTH": "10"}) as server:
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        first = server.log().splitlines()[0]
    said = "SCRATCHNET_MAX_BACTH is not a setting of scratchnet and is ignored (a misspelling?)"
    if log_format == "json":
        warning = json.loads(first)
        assert (warning["level"], warning["logger"]) == ("warning", "scratchnet.config") and said in warning["message"]
    else:
        assert re.match(r"^\S+Z WARNING scratchnet\.config \[\d+\] " + re.escape(said), first), first


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_line_a_bad_setting_stops_on_is_a_line_of_the_services_log(tmp_path, log_format):
    """It was plain text ("error: ...") at the end of a JSON log, the one line a collector parsing JSON could
    not read as an event being the one that says why the service did not start."""
    done = run_gunicorn(tmp_path, SCRATCHNET_LOG_FORMAT=log_format, SCRATCHNET_POLL_INTERVAL="abc")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    said = "SCRATCHNET_POLL_INTERVAL='abc': expected a number of seconds, such as the default 1.0"
    if log_format == "json":
        assert refusal(line) == said
    else:
        assert re.match(r"^\S+Z CRITICAL scratchnet\.config \[\d+\] " + re.escape(said) + "$", line), line


def test_a_default_model_left_out_of_scratchnet_models_is_named_as_such(tmp_path):
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "wine", kind="regression")
    with ServiceProcess(tmp_path, workers=1, env={"SCRATCHNET_MODELS": "wine"}) as server:
        response = requests.post(server.url + "/predict", json={"inputs": [0.5] * 784}, timeout=10)
        assert response.status_code == 404
        log = server.log()
    assert "the default model 'mnist' (SCRATCHNET_DEFAULT_MODEL) is not one of the models served " \
           "(SCRATCHNET_MODELS: wine)" in log, log
    assert "is not in the registry" not in log  # it is: the registry holds mnist


BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                  "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "GOTO_NUM_THREADS")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: BLAS starts no thread of its own")
@pytest.mark.parametrize("env", [
    {"SCRATCHNET_NUMPY_THREADS": "1", "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"},
    {"OMP_NUM_THREADS": "1"},
], ids=["ours over the libraries' own", "OMP_NUM_THREADS without ours"])
def test_a_worker_runs_the_blas_threads_it_is_told(tmp_path, monkeypatch, env):
    """SCRATCHNET_NUMPY_THREADS=1 left a worker with a BLAS thread per core when the environment also
    set OPENBLAS_NUM_THREADS, and without it, an OMP_NUM_THREADS=1 (which many images and orchestrators
    set) was overruled by the cores given to OpenBLAS's own variable. Either way a worker that has
    answered a large batch has, with one BLAS thread and no registry watcher, its main thread and its
    SCRATCHNET_THREADS alone."""
    for name in BLAS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    publish_model(tmp_path, "mnist", hidden=256)
    batch = io.BytesIO()
    np.save(batch, np.random.default_rng(0).random((2000, 784), dtype=np.float32))
    with ServiceProcess(tmp_path, workers=1, threads=2, env={"SCRATCHNET_WATCH": "0", **env}) as server:
        response = requests.post(server.url + "/predict", data=batch.getvalue(),
                                 headers={"Content-Type": "application/x-npy"}, timeout=30)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2000
        [worker] = server.worker_pids()
        assert len(os.listdir(f"/proc/{worker}/task")) == 1 + 2


# the addresses it listens on ------------------------------------------------------------------------


def health_check(bind: str, *args: str) -> tuple[int, str]:
    """The image's HEALTHCHECK with ``SCRATCHNET_BIND=bind``: its exit status and what it printed."""
    done = subprocess.run([sys.executable, "-m", "service.healthcheck", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=10, env={**os.environ, "SCRATCHNET_BIND": bind})
    return done.returncode, done.stdout


def test_gunicorn_listens_on_every_address_of_scratchnet_bind(tmp_path):
    publish_model(tmp_path, "mnist")
    socket_path = tmp_path / "api.sock"
    bind = f"127.0.0.1:0, 127.0.0.1:0 unix:{socket_path}"  # commas, spaces, or both
    with ServiceProcess(tmp_path, workers=1, env={"SCRATCHNET_BIND": bind}) as server:
        first, second, unix = server.addresses()
        assert first != second and unix == f"unix:{socket_path}"
        for url in (first, second):
            response = requests.post(url + "/models/mnist/predict", json={"inputs": [0.5] * 784}, timeout=10)
            assert response.status_code == 200 and response.json()["model"]["name"] == "mnist"
        assert health_check(first.removeprefix("http://")) == (0, "")
        assert health_check(unix) == (0, "")
        status, said = health_check(f"{unix}.gone")
        assert status == 1 and said.startswith(f"unhealthy: GET /healthz on {unix}.gone: ") and said.count("\n") == 1


def test_the_compose_health_check_asks_readiness_and_logs_why_not(tmp_path):
    """docker-compose.yml's healthcheck: unhealthy while a model has no servable version, with the
    reason /readyz gives in the one line Docker keeps in the health log; healthy once it serves."""
    compose = (REPO / "docker-compose.yml").read_text()
    assert 'test: ["CMD", "python", "-m", "service.healthcheck", "/readyz"]' in compose
    publish_model(tmp_path, "mnist")
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.npz").write_bytes(b"not a model")
    with ServiceProcess(tmp_path, workers=1) as server:
        address = server.addresses()[0].removeprefix("http://")
        assert health_check(address) == (0, "")  # alive
        status, said = health_check(address, "/readyz")
        assert status == 1 and said.count("\n") == 1, said
        assert said.startswith(f"unhealthy: GET /readyz on {address} answered 503: model broken has no servable "
                               "version (v1 failed: "), said
        shutil.rmtree(tmp_path / "broken")
        deadline = time.monotonic() + 10
        while health_check(address, "/readyz")[0] != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health_check(address, "/readyz") == (0, "")
    status, said = health_check(address, "/metrics")
    assert status == 1 and said.startswith("unhealthy: usage: python -m service.healthcheck [/healthz | /readyz]")


@pytest.mark.parametrize("bind, target", [
    ("0.0.0.0:8000", ("127.0.0.1", 8000)),  # every interface: reached through the loopback address
    ("[::]:8140", ("::1", 8140)),
    ("[::1]:8140", ("::1", 8140)),
    ("localhost", ("localhost", 8000)),  # Gunicorn's default port
    ("tcp://10.0.0.5:9000", ("10.0.0.5", 9000)),
    ("unix:/run/scratchnet/api.sock", "/run/scratchnet/api.sock"),
    ("unix:///run/api.sock", "/run/api.sock"),
    ("fd://3", None),  # a socket handed over by a supervisor: no address to reach
    ("127.0.0.1:0", None),  # a port the kernel picks
])
def test_the_health_check_reaches_the_address_gunicorn_listens_on(bind, target):
    assert probe_target(bind) == target


# the folders it writes to -------------------------------------------------------------------------


def refused_in_one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()  # no traceback
    return refusal(line)


def test_gunicorn_on_a_read_only_root_says_to_mount_a_tmpfs(tmp_path):
    # Every folder Python's tempfile tries: TMPDIR (unset here), /tmp, /var/tmp, /usr/tmp, the working directory.
    folders = [path for path in ("/tmp", "/var/tmp", "/usr/tmp") if os.path.isdir(path)] + [REPO]
    line = refused_in_one_line(run_gunicorn(tmp_path, read_only(*folders), TMPDIR=None, TEMP=None, TMP=None))
    assert line.startswith("no folder for the workers' metrics: TMPDIR unset: No usable temporary directory")
    assert "mount a tmpfs at /tmp" in line


def metrics_folders(tmpdir: Path) -> set[Path]:
    return set(tmpdir.glob("scratchnet-metrics-*"))


def predict_wine(server: ServiceProcess) -> None:
    response = requests.post(server.url + "/models/wine/predict", json={"inputs": [[1.0, 2.0, 3.0, 4.0]]}, timeout=10)
    assert response.status_code == 200, response.text


def test_the_metrics_folder_of_a_killed_master_is_removed_by_the_next_one_once_its_workers_are_gone(tmp_path):
    """kill -9 (systemd's stop timeout, the OOM killer) leaves the master no exit in which to remove its
    metrics folder: each such restart left another one in TMPDIR for good. The next master started in
    that TMPDIR removes it, unless a worker of the killed master still runs (and writes there). A folder
    without the lock file (made by an earlier version) is left alone."""
    publish_model(tmp_path / "models", "wine", kind="vector")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    older = tmpdir / "scratchnet-metrics-older"
    older.mkdir()
    (older / "counter_1.db").touch()
    env = {"TMPDIR": str(tmpdir)}
    with ServiceProcess(tmp_path / "models", workers=2, env=env) as killed:
        [left] = metrics_folders(tmpdir) - {older}
        held, ended = (psutil.Process(pid) for pid in sorted(killed.worker_pids()))
        held.suspend()  # it cannot notice its master gone, and keeps running
        killed.kill_master()
        wait_until_ended([ended])
    try:
        assert left.is_dir()
        with ServiceProcess(tmp_path / "models", workers=1, env=env) as second:
            assert left.is_dir() and len(metrics_folders(tmpdir)) == 3  # held by the worker still running
            assert "stale metrics folder" not in second.log()
    finally:
        held.kill()
    wait_until_ended([held])
    with ServiceProcess(tmp_path / "models", workers=1, env=env) as third:
        assert not left.exists()
        [own] = metrics_folders(tmpdir) - {older}
        assert own.is_dir() and (older / "counter_1.db").exists()
        predict_wine(third)
        assert metric_value(third.metrics(), "scratchnet_predictions_total", model="wine") == 1
        [line] = [json.loads(line) for line in third.log().splitlines() if "stale metrics folder" in line]
        assert (line["level"], line["message"]) == ("info", f"removed 1 stale metrics folder from {tmpdir}, left by "
                                                            "masters killed with kill -9 (or out of memory)")


def test_a_master_leaves_the_metrics_folder_of_another_one_running_in_the_same_tmpdir(tmp_path):
    """Two services sharing a TMPDIR: the second to start must not take the first one's folder for a
    killed master's, or the first one's scrapes lose every count."""
    publish_model(tmp_path / "models", "wine", kind="vector")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    with ServiceProcess(tmp_path / "models", workers=2, env=env) as first:
        predict_wine(first)
        [folder] = metrics_folders(tmpdir)
        with ServiceProcess(tmp_path / "models", workers=1, env=env) as second:
            assert first.url != second.url and folder.is_dir() and len(metrics_folders(tmpdir)) == 2
            predict_wine(first)
            predict_wine(second)
            assert metric_value(first.metrics(), "scratchnet_predictions_total", model="wine") == 2
            assert metric_value(second.metrics(), "scratchnet_predictions_total", model="wine") == 1
            assert "stale metrics folder" not in second.log()
        assert metrics_folders(tmpdir) == {folder}
        assert metric_value(first.metrics(), "scratchnet_predictions_total", model="wine") == 2
    assert metrics_folders(tmpdir) == set()


@pytest.mark.parametrize("variable, said", [
    ("TMPDIR", "no folder for the workers' metrics: TMPDIR={}: Read-only file system; mount a tmpfs at /tmp"),
    ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROC_DIR={}: Read-only file system; point it at a writable"),
])
def test_gunicorn_says_in_one_line_that_a_folder_it_must_write_to_is_read_only(tmp_path, variable, said):
    # A TMPDIR that cannot be used is named, rather than passed over for /tmp without a word.
    folder = tmp_path / "read-only"
    folder.mkdir()
    line = refused_in_one_line(run_gunicorn(tmp_path, read_only(folder), **{variable: str(folder)}))
    assert line.startswith(said.format(folder))


def test_a_read_only_root_serves_with_the_metrics_in_a_writable_folder(tmp_path):
    """Nothing else needs a writable folder: Gunicorn's heartbeat files go to /dev/shm, not TMPDIR."""
    publish_model(tmp_path, "mnist")
    metrics = Path(tempfile.mkdtemp(prefix="scratchnet-test-metrics-", dir="/dev/shm"))
    try:
        with ServiceProcess(tmp_path, workers=1, launcher=read_only("/tmp", "/var/tmp", REPO),
                            env={"PROMETHEUS_MULTIPROC_DIR": str(metrics), "TMPDIR": "/tmp"}) as server:
            response = requests.post(server.url + "/models/mnist/predict", json={"inputs": [0.5] * 784}, timeout=10)
            assert response.status_code == 200
            assert list(metrics.glob("*.db"))
    finally:
        shutil.rmtree(metrics)
