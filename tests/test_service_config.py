"""Settings: defaults, then SCRATCHNET_* variables, then create_app's overrides; a bad value names
its variable."""

from pathlib import Path

import pytest

from service.config import ConfigError, load_settings


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
    ({"SCRATCHNET_LOG_FORMAT": "xml"}, "SCRATCHNET_LOG_FORMAT"),
])
def test_a_bad_value_names_its_variable(environ, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=environ)


def test_an_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown settings: pol_interval"):
        load_settings({"pol_interval": 1}, environ={})
