"""The addresses of ``SCRATCHNET_BIND``, read here for Gunicorn (service/gunicorn_conf.py) and for
the image's health check (service/healthcheck.py), so that both read a value the same way.

A value holds one address or several, separated by commas and/or spaces, each in Gunicorn's
forms: ``HOST:PORT``, ``HOST`` (port 8000), ``[IPv6]:PORT``, ``unix:PATH`` or ``fd://FD``."""

from __future__ import annotations

import re

from gunicorn.util import parse_address

DEFAULT = "0.0.0.0:8000"
FORMS = "HOST:PORT, [IPv6]:PORT, unix:PATH or fd://FD, separated by commas or spaces"


class BindError(ValueError):
    pass


def bind_addresses(text: str) -> list[str]:
    """The addresses in ``text``, each checked; BindError names the first that is not one."""
    addresses = [address for address in re.split(r"[\s,]+", text) if address]
    if not addresses:
        raise BindError(f"expected one or more addresses ({FORMS})")
    for address in addresses:
        parse(address)
    return addresses


def parse(address: str) -> tuple[str, int] | str | int:
    """``address`` as Gunicorn reads it: ``(host, port)``, a unix socket's path, or a descriptor."""
    try:
        parsed = parse_address(address)
    except RuntimeError as error:  # Gunicorn's message names the bad part: "'80x' is not a valid port number."
        raise BindError(f"{address!r}: {str(error).rstrip('.')} (expected {FORMS})") from None
    if isinstance(parsed, tuple) and not 0 <= parsed[1] <= 65535:
        raise BindError(f"{address!r}: the port must be from 0 to 65535")
    if parsed == "":
        raise BindError(f"{address!r}: no socket path after unix:")
    if isinstance(parsed, int) and parsed < 0:
        raise BindError(f"{address!r}: a file descriptor is a number of at least 0")
    return parsed
