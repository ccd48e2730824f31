"""The service's settings: defaults, overridden by the environment, overridden by ``create_app(config)``.

| variable                      | default     | meaning                                                        |
| ----------------------------- | ----------- | -------------------------------------------------------------- |
| SCRATCHNET_REGISTRY           | models      | the registry folder                                            |
| SCRATCHNET_DEFAULT_MODEL      | mnist       | the model ``POST /predict`` uses                               |
| SCRATCHNET_MODELS             | (all)       | comma list of the models to serve; default: every registry model |
| SCRATCHNET_POLL_INTERVAL      | 1.0         | seconds between two looks at the registry                     |
| SCRATCHNET_MAX_BODY_BYTES     | 67108864    | largest request body (413 above)                               |
| SCRATCHNET_MAX_IMAGE_PIXELS   | 25000000    | largest image or pixel array, width x height, before decoding (413) |
| SCRATCHNET_MAX_REQUEST_PIXELS | 100000000   | most pixels the images (or pixel arrays) of one request may declare (413) |
| SCRATCHNET_MAX_BATCH          | 10000       | most inputs (vectors or images) in one request (413)           |
| SCRATCHNET_MAX_VECTOR_VALUES  | 8000000     | most numbers in one request, all vectors together (413)        |
| SCRATCHNET_MAX_MODEL_BYTES    | 268435456   | largest model file the service will load                       |
| SCRATCHNET_CACHED_VERSIONS    | 4           | versions kept besides served and labelled ones, per worker, all models |
| SCRATCHNET_ADMIN_TOKEN        | (unset)     | bearer token of admin routes, 8 characters or more; unset or blank: admin disabled |
| SCRATCHNET_CORS_ORIGINS       | (unset)     | origins of pages that may call it (CORS): comma list, ``*``: any |
| SCRATCHNET_LOG_FORMAT         | json        | ``json`` (one object per line) or ``text``; Gunicorn's own too |
| SCRATCHNET_LOG_LEVEL          | INFO        | level of the ``scratchnet`` loggers                            |
| SCRATCHNET_WATCH              | true        | run the registry watcher thread; off, nothing reloads by itself (refused with several workers and the admin API on, a SIGTTIN worker too) |

Keys of ``create_app(config)`` are the lower-case names without the prefix (``poll_interval``;
tests pass ``watch=False`` and call ``refresh`` themselves).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, fields, replace
from pathlib import Path

from shared.registry import RegistryError, check_name

PREFIX = "SCRATCHNET_"


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")  # of the app's loggers and Gunicorn's


class ConfigError(ValueError):
    """A setting with a value the service cannot use; the message names the variable."""


MIN_POLL_INTERVAL = 0.01  # seconds: the watcher polls at most 100 times a second
MIN_TOKEN_LENGTH = 8  # characters of SCRATCHNET_ADMIN_TOKEN
# An origin as a browser's Origin header gives it: scheme, host (a name, IPv4 or [IPv6]) and port, nothing else.
ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.I)
DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True)
class Settings:
    registry: Path = Path("models")
    default_model: str = "mnist"
    models: tuple[str, ...] | None = None
    poll_interval: float = 1.0
    max_body_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 25_000_000
    # Four images at the per-image limit; bounds the decoding work of one request (about half a
    # second of a core for blank PNGs) whatever the body limit lets through.
    max_request_pixels: int = 100_000_000
    max_batch: int = 10_000
    max_vector_values: int = 8_000_000
    max_model_bytes: int = 256 * 1024 * 1024
    cached_versions: int = 4
    admin_token: str | None = None
    cors_origins: tuple[str, ...] | None = None  # ("*",): any origin
    log_format: str = "json"
    log_level: str = "INFO"
    watch: bool = True

    def __post_init__(self):
        for name in ("max_body_bytes", "max_image_pixels", "max_request_pixels", "max_batch", "max_vector_values",
                     "max_model_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{PREFIX}{name.upper()} must be at least 1")
        if self.cached_versions < 0:
            raise ConfigError(f"{PREFIX}CACHED_VERSIONS must be 0 or more")
        # The watcher's wait refuses longer ones (inf); a shorter one (1e-300) kept a core busy polling.
        if not MIN_POLL_INTERVAL <= self.poll_interval <= threading.TIMEOUT_MAX:
            raise ConfigError(f"{PREFIX}POLL_INTERVAL must be a number of seconds from {MIN_POLL_INTERVAL} to "
                              f"{threading.TIMEOUT_MAX:.0f}")
        if self.admin_token is not None and not (self.admin_token.isascii() and self.admin_token.isprintable()):
            # Clients encode other characters in a header differently (curl: UTF-8, Python: Latin-1), so
            # such a token matched for some and was "wrong" for the others. The message never shows it.
            raise ConfigError(f"{PREFIX}ADMIN_TOKEN must be printable ASCII (letters, digits and punctuation): "
                              "clients send it in an HTTP header")
        if self.admin_token and len(self.admin_token) < MIN_TOKEN_LENGTH:
            # A few characters are guessed in few tries, and as pieces of it are kept out of the logs, ordinary
            # words holding them were too.
            raise ConfigError(f"{PREFIX}ADMIN_TOKEN must be {MIN_TOKEN_LENGTH} characters or more, not "
                              f"{len(self.admin_token)}: a random one, python3 -c 'import secrets; "
                              "print(secrets.token_hex(16))', is best")
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"{PREFIX}LOG_FORMAT must be 'json' or 'text', not {self.log_format!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(f"{PREFIX}LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")

    @property
    def admin_enabled(self) -> bool:
        return bool(self.admin_token)


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(name: str, kind, raw):
    """``raw`` (a string from the environment, or any value from code) as the field's type."""
    if raw is None:
        return None
    try:
        if name == "models":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            items = [item.strip() for item in items if item.strip()]
            for item in items:  # here, once, not in every worker after Gunicorn has bound its port
                try:
                    check_name(item)
                except RegistryError as e:
                    raise ConfigError(f"{PREFIX}MODELS={raw!r}: {e}") from None
            return tuple(dict.fromkeys(items)) or None  # each model once, in the order given
        if name == "registry":
            if not str(raw).strip():  # Path("") is the current folder, served without a word
                raise ConfigError(f"{PREFIX}REGISTRY is empty: give the registry folder, such as the default "
                                  f"{Settings().registry}")
            return Path(raw)
        if name == "default_model":
            try:  # a name no model can have ('' or '../x') made every POST /predict a 404
                return check_name(str(raw).strip())
            except RegistryError as e:
                raise ConfigError(f"{PREFIX}DEFAULT_MODEL={raw!r}: {e}") from None
        if name == "watch":
            if isinstance(raw, bool):
                return raw
            word = str(raw).strip().lower()
            if word not in TRUE_WORDS + FALSE_WORDS:  # "ture" read as false turned hot swap off without a word
                raise ConfigError(f"{PREFIX}WATCH={raw!r} is not a yes or no: give one of "
                                  f"{', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}")
            return word in TRUE_WORDS
        if name == "admin_token":
            # The header's token is compared without its surrounding whitespace, so the setting's must be
            # too: a token read from a file ends in a newline. Blank is no token: admin stays disabled.
            return str(raw).strip() or None
        if name == "cors_origins":
            return _origins(raw)
        if name == "poll_interval":
            return float(raw)
        if kind in (int, "int"):
            return int(raw)
        return str(raw)
    except ConfigError:
        raise
    except (TypeError, ValueError):
        expected = "a number of seconds" if name == "poll_interval" else "a whole number"
        raise ConfigError(f"{PREFIX}{name.upper()}={raw!r}: expected {expected}, such as the default "
                          f"{getattr(Settings(), name)}") from None


def _origins(raw) -> tuple[str, ...] | None:
    """The origins of SCRATCHNET_CORS_ORIGINS as browsers send them (lower case, no default port):
    None for none, ``("*",)`` for any."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    items = [str(item).strip() for item in items if str(item).strip()]
    if items == ["*"]:
        return ("*",)
    origins = []
    for item in items:
        match = ORIGIN.fullmatch(item)
        port = match and match.group(3)
        if not match or (port is not None and not 0 < int(port) < 65536):
            hint = " (* stands alone: it allows every origin)" if item == "*" else ""
            raise ConfigError(f"{PREFIX}CORS_ORIGINS={raw!r}: {item!r} is not an origin{hint}: give "
                              "scheme://host[:port] with http or https and no path, such as https://app.example.com "
                              "or http://127.0.0.1:8888, several separated by commas, or * for any origin")
        scheme, host = match.group(1).lower(), match.group(2).lower()
        default = port is None or port.lstrip("0") == DEFAULT_PORTS[scheme]  # a browser leaves the default out
        origins.append(f"{scheme}://{host}" + ("" if default else f":{int(port)}"))
    return tuple(dict.fromkeys(origins)) or None


def load_settings(overrides: dict | None = None, environ: dict | None = None) -> Settings:
    """Defaults, then ``SCRATCHNET_*`` variables from ``environ`` (default ``os.environ``), then ``overrides``."""
    environ = os.environ if environ is None else environ
    overrides = {k.lower(): v for k, v in (overrides or {}).items()}
    known = {f.name: f.type for f in fields(Settings)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)} (known: {', '.join(known)})")
    values = {}
    for name, kind in known.items():
        if name in overrides:
            values[name] = _convert(name, kind, overrides[name])
        elif PREFIX + name.upper() in environ:
            values[name] = _convert(name, kind, environ[PREFIX + name.upper()])
    return replace(Settings(), **values)
