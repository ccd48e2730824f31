"""Settings: defaults, then SCRATCHNET_* variables, then create_app's overrides; a bad value names
its variable."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parent.parent


def test_defaults():
    settings = load_settings(environ={})
    assert settings.registry == Path("models") and settings.default_model == "mnist" and settings.models is None
    assert settings.poll_interval == 1.0 and not settings.admin_enabled and settings.log_format == "json"


def test_environment_then_overrides():
    environ = {"SCRATCHNET_REGISTRY": "/srv/models", "SCRATCHNET_MODELS": " mnist, wine ,", "SCRATCHNET_POLL_INTERVAL": "0.5",
               "SCRATCHNET_MAX_BATCH": "100", "SCRATCHNET_ADMIN_TOKEN": "s3cret", "SCRATCHNET_LOG_FORMAT": "text"}
    settings = load_settings({"max_batch": 7}, environ=environ)
    assert settings.registry == Path("/srv/models") and settings.models == ("mnist", "wine")
    assert settings.poll_interval == 0.5 and settings.max_batch == 7
    assert settings.admin_enabled and settings.admin_token == "s3cret" and settings.log_format == "text"
    assert load_settings(environ={"SCRATCHNET_ADMIN_TOKEN": ""}).admin_enabled is False


@pytest.mark.parametrize("environ,named", [
    ({"SCRATCHNET_MAX_BATCH": "lots"}, "SCRATCHNET_MAX_BATCH"),
    ({"SCRATCHNET_MAX_BODY_BYTES": "0"}, "SCRATCHNET_MAX_BODY_BYTES"),
    ({"SCRATCHNET_POLL_INTERVAL": "-1"}, "SCRATCHNET_POLL_INTERVAL"),
    ({"SCRATCHNET_POLL_INTERVAL": "inf"}, "SCRATCHNET_POLL_INTERVAL"),  # the watcher thread would die of it
    ({"SCRATCHNET_POLL_INTERVAL": "1e10"}, "SCRATCHNET_POLL_INTERVAL"),
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


def test_an_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown settings: pol_interval"):
        load_settings({"pol_interval": 1}, environ={})


@pytest.mark.parametrize("variable, value, message", [
    ("SCRATCHNET_WORKERS", "two", "SCRATCHNET_WORKERS='two': expected a whole number of at least 1"),
    ("SCRATCHNET_WORKERS", "0", "SCRATCHNET_WORKERS='0': expected a whole number of at least 1"),
    ("SCRATCHNET_CLIENT_TIMEOUT", "abc", "SCRATCHNET_CLIENT_TIMEOUT='abc': expected a finite number of at least 0"),
    ("SCRATCHNET_POLL_INTERVAL", "abc", "SCRATCHNET_POLL_INTERVAL='abc' is not a valid value"),
    ("SCRATCHNET_POLL_INTERVAL", "inf", "SCRATCHNET_POLL_INTERVAL must be a positive number of seconds, at most "
                                        "9223372036"),
    ("SCRATCHNET_LOG_LEVEL", "verbose", "SCRATCHNET_LOG_LEVEL must be one of debug, info, warning, error, critical, not 'verbose'"),
    ("SCRATCHNET_CONTROL_SOCKET", "true", "SCRATCHNET_CONTROL_SOCKET='true': expected 0 or 1"),
    ("SCRATCHNET_ADMIN_TOKEN", "pässwörd", "SCRATCHNET_ADMIN_TOKEN must be printable ASCII (letters, digits and "
                                           "punctuation): clients send it in an HTTP header"),
])
def test_gunicorn_refuses_a_bad_setting_in_one_line_before_it_starts(tmp_path, variable, value, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRATCHNET_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"SCRATCHNET_BIND": "127.0.0.1:0", "TMPDIR": str(tmp_path), variable: value})
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py", "service.app:create_app()"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"error: {message}"]
    assert not list(tmp_path.glob("scratchnet-metrics-*"))  # its metrics folder was removed on the way out


def test_gunicorn_warns_of_a_misspelt_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRATCHNET_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"SCRATCHNET_BIND": "127.0.0.1:0", "TMPDIR": str(tmp_path), "SCRATCHNET_ADMIN_TOKN": "secret",
                "SCRATCHNET_WORKERS": "x"})  # stops it right after the warning
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py", "service.app:create_app()"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert "warning: SCRATCHNET_ADMIN_TOKN is not a setting of scratchnet and is ignored (a misspelling?)" in done.stderr
