"""Structured logs: the ``scratchnet`` loggers write one line per event to stderr, a JSON object
(``SCRATCHNET_LOG_FORMAT=json``, the default) or readable text. The access log
(``scratchnet.access``) has one line per request with its id, method, route, model, version,
status and latency, at INFO, ERROR for a 500, WARNING for another 5xx: ``log_access`` writes it.

The access line is written on every request, so in the default set-up (JSON, our one stderr
handler) ``log_access`` builds it and writes it itself: the same line the logging module would
write, for a sixth of the CPU (a record, a formatter call and two locks per request were ~50 us
of a ~500 us prediction). Any other set-up goes through the logger."""

from __future__ import annotations

import ast
import codecs
import functools
import logging
import os
import re
import sys
import time

import orjson

from shared.text import shortened

ROOT = "scratchnet"
ACCESS = "scratchnet.access"
WARNINGS = "py.warnings"  # the logger of logging.captureWarnings
PILLOW = "PIL"  # Pillow logs an error of its own about some damaged images a client can send (a TIFF)
FIELDS = ("request_id", "remote_addr", "method", "path", "route", "model", "version", "status", "latency_ms", "code",
          "bytes_sent")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # what could end a line or garble a terminal
# Of those, what JSON may leave unescaped: str.splitlines() and other readers end a line at
# U+0085, U+2028 and U+2029, so a path holding one split its access line in two.
JSON_UNESCAPED = re.compile(r"[\x7f-\x9f\u2028\u2029]")
NON_ASCII = re.compile(r"[^\x00-\x7f]")


_last_second = (None, "")  # the latest whole second utc_time wrote, and its text: most lines share it


def utc_time(created: float) -> str:
    """``created`` (seconds since the epoch) in ISO 8601, UTC, with milliseconds: 2025-01-31T12:00:00.000Z."""
    global _last_second
    second, text = _last_second
    if second != int(created):
        second = int(created)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _last_second = (second, text)
    return f"{text}.{int(created % 1 * 1000):03d}Z"


def needs_ascii(stream) -> bool:
    """Whether ``stream`` encodes text otherwise than as UTF-8."""
    return not _is_utf8(getattr(stream, "encoding", None))


@functools.lru_cache(maxsize=8)
def _is_utf8(encoding: str | None) -> bool:
    return encoding is None or codecs.lookup(encoding).name == "utf-8"


def json_escape(match: re.Match) -> str:
    """A character of a JSON string as its escape; one above U+FFFF as the surrogate pair JSON uses."""
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _json_line(created: float, level: str, logger: str, message: str, fields: dict,
               exception: str | None = None, ascii_only: bool = False) -> str:
    """One event as the JSON object our log lines are: time (ISO 8601 UTC with milliseconds),
    level, logger, message, pid, then ``fields`` whose value is not None. ``ascii_only`` escapes
    every other character, for a stream that does not write UTF-8: ``PYTHONIOENCODING=ascii``
    wrote "é" as the backslash escape ``\\xe9``, which JSON does not have, and Latin-1 as a byte
    that is not UTF-8; either way the line was no longer JSON."""
    entry = {
        "time": utc_time(created),
        "level": level,
        "logger": logger,
        "message": message,
        "pid": os.getpid(),
    }
    for key, value in fields.items():
        if value is not None:
            entry[key] = value
    if exception:
        entry["exception"] = exception
    try:
        line = orjson.dumps(entry, default=str).decode()
    except orjson.JSONEncodeError:  # a lone surrogate: a path that is not UTF-8
        line = orjson.dumps(without_surrogates(entry), default=str).decode()
    if not line.isascii():
        line = (NON_ASCII if ascii_only else JSON_UNESCAPED).sub(json_escape, line)
    return line


def without_surrogates(value):
    """``value`` (text, or dicts and lists of it) with each lone surrogate written as an escape.
    A file name that is not UTF-8 reaches Python with its bad bytes as lone surrogates (PEP 383),
    which UTF-8 text cannot hold and strict JSON parsers refuse: the registry ``/srv/lat\\xe9n``
    (Latin-1) is shown as that, ``\\xe9`` written out."""
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no file name gives ("\\ud800" in a JSON body)
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {without_surrogates(key): without_surrogates(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_surrogates(item) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    """For a handler that writes to stderr (ours, and Gunicorn's)."""

    def format(self, record: logging.LogRecord) -> str:
        message, fields = record.getMessage(), {key: getattr(record, key, None) for key in FIELDS}
        exception = self.formatException(record.exc_info) if record.exc_info else None
        line = _json_line(record.created, record.levelname.lower(), record.name, message, fields, exception,
                          ascii_only=needs_ascii(sys.stderr))
        if exception is None and len(line) > LINE_LIMIT // 4 and len(line.encode()) >= LINE_LIMIT:
            # Gunicorn's warning about a request it refused quotes the request line or header, up to 8 kB
            line = _json_line(record.created, record.levelname.lower(), record.name,
                              shortened(message, LINE_LIMIT // 16), fields, ascii_only=needs_ascii(sys.stderr))
        return line


# Gunicorn's warning about a request it refused quotes the client's text (a header line or name, a method, a
# version, a coding), which can hold the admin token: whole, after "Authorization" or a credential's scheme, or in
# pieces, as when a client's line break splits "Authorization: Bearer abcd" from a line "EFGHIJKL" that reads as a
# header name. A word there that holds TOKEN_PIECE characters of the token, in any case (Gunicorn upper-cases
# names), or that follows "Authorization", "Bearer" or "Basic", is logged as NOT_SHOWN; the other words are kept.
TOKEN_PIECE = 4
NOT_SHOWN = "(not shown)"
WORD = re.compile(r"[^\s'\"=:]+")  # a word of a quoted line: "Authorization=Bearer" is two
CREDENTIAL = re.compile(r"\b(?:authorization|bearer|basic)[\s=:]+([^'\"]*)", re.IGNORECASE)
NOT_SHOWN_RUN = re.compile(r"\(not shown\)(?:\s+\(not shown\))+")


@functools.lru_cache(maxsize=4)
def _token_pieces(token: str) -> re.Pattern:
    """Where any TOKEN_PIECE characters of ``token`` start in a text (overlapping), as repr() may write them too."""
    size = min(TOKEN_PIECE, len(token))
    pieces = {token[i:i + size] for i in range(len(token) - size + 1)}
    pieces |= {piece.replace("\\", "\\\\") for piece in pieces}
    return re.compile("(?=(%s))" % "|".join(map(re.escape, sorted(pieces, key=len, reverse=True))), re.IGNORECASE)


def without_token(text: str, token: str | None) -> str:
    """``text`` with each word that holds a piece of ``token`` or a credential replaced by NOT_SHOWN."""
    spans = [match.span(1) for match in CREDENTIAL.finditer(text)]
    if token:
        spans += [match.span(1) for match in _token_pieces(token).finditer(text)]
    if not spans:
        return text
    hidden = [False] * len(text)
    for start, end in spans:
        hidden[start:end] = [True] * (end - start)
    shown = WORD.sub(lambda word: NOT_SHOWN if any(hidden[word.start():word.end()]) else word.group(), text)
    return NOT_SHOWN_RUN.sub(NOT_SHOWN, shown)


class HidesToken(logging.Filter):
    """Logs a message that shows the admin token, a piece of it or a credential with those words not shown."""

    def __init__(self, token: str | None):
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = without_token(message, self.token)
        if shown != message:
            record.msg, record.args = shown, ()
        return True


def escape_controls(text: str) -> str:
    """``text`` with its control characters written as escapes (a newline as \\n), so that client
    text such as a request path cannot start a line of its own."""
    return CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def logfmt_value(value) -> str:
    """``value`` as a logfmt value: bare when it is a plain token, else double-quoted with
    backslashes and quotes escaped, so that a space or ``=`` in client text (a path) cannot make
    a field of its own."""
    text = str(value)
    if text and not any(c in text for c in ' ="\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Gunicorn's warning about a request it refused ends with the client's text as Python quotes it ('...'), which a
# logfmt reader does not take for quotes: "Invalid HTTP Version: 'request_id=x status=200 HTTP/1.1'" read as the
# fields request_id and status. The text format writes it as a logfmt value, as it writes a path, cut as the JSON
# format cuts the message (the client's text can be 8 kB, and a longer line than a pipe writes whole can mix).
PYTHON_QUOTED_END = re.compile(r"""(?<=: )('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\Z""")


def _logfmt_quoted(match: re.Match) -> str:
    try:
        return logfmt_value(shortened(ast.literal_eval(match.group()), LINE_LIMIT // 16))
    except (ValueError, SyntaxError):
        return match.group()


class TextFormatter(logging.Formatter):
    """The message and fields have their control characters escaped; a traceback keeps its lines.
    Fields are logfmt ``key=value`` pairs (values quoted where needed) on the message's line, so
    that a fault's request id is on its ERROR line, before the traceback."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # In UTC, as the JSON lines: local time without its offset could not be placed.
        return utc_time(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if record.name.startswith("gunicorn.") and "=" in line:
            line = PYTHON_QUOTED_END.sub(_logfmt_quoted, line)
        extras = " ".join(f"{k}={logfmt_value(getattr(record, k))}" for k in FIELDS if getattr(record, k, None) is not None)
        return escape_controls(f"{line} {extras}" if extras else line)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners replace it)."""
    scratchnet = True

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(log_format: str = "json", level: str = "INFO") -> None:
    """Give the ``scratchnet`` loggers one stderr handler (replacing one set up before), and the
    warnings libraries print and Pillow's own log (for a damaged image a client sent) the same: printed
    as they are, by Python's last-resort handler, they were lines of plain text in a JSON log."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    for name in (ROOT, WARNINGS, PILLOW):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "scratchnet", False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False
    # Pillow's debug lines name each chunk of each image decoded ("STREAM b'IDAT' 41 22"): SCRATCHNET_LOG_LEVEL=debug
    # is the level of the service's own lines, and Pillow's from warning up are logged as before.
    logging.getLogger(PILLOW).setLevel(max(logging.getLevelName(level.upper()), logging.WARNING))
    logging.captureWarnings(True)


# A pipe writes up to PIPE_BUF (4,096) bytes whole; a longer line from one worker can be cut into by
# another worker's, and neither is JSON any more. Client text in an access line (the message, path,
# model name and method; the request id is at most 128 plain characters) is cut to CUT_TO characters
# when the line would pass LINE_LIMIT bytes, and to a tenth of that if it still would (12 bytes a
# character, escaped for a stream that is not UTF-8).
LINE_LIMIT, CUT_TO = 4000, 120
# Looked up once: logging.getLogger takes the logging module's lock, twice an access line.
_access_logger, _root_logger = logging.getLogger(ACCESS), logging.getLogger(ROOT)
CLIENT_TEXT = ("method", "path", "model")


# 5xx answers to what the client chose: a transfer coding (501) or an HTTP version (505) not taken.
CLIENTS_5XX = frozenset({501, 505})


def access_level(status: int) -> int:
    """The level of the access line of an answer with ``status`` (see ``log_access``)."""
    return logging.ERROR if status == 500 else logging.WARNING if status > 500 and status not in CLIENTS_5XX \
        else logging.INFO


def access_logged(status: int) -> bool:
    """Whether the access line of an answer with ``status`` is written at all: one that the log level leaves
    out need not be built."""
    return _access_logger.isEnabledFor(access_level(status))


def log_access(message: str, fields: dict) -> None:
    """The access line for one request: ``message`` and ``fields`` (FIELDS; None values left out).
    A 500, a fault of the server's, is logged at ERROR, so that a pipeline that keeps errors alone
    (or SCRATCHNET_LOG_LEVEL=error) sees it; another 5xx at WARNING (a 503 while no version is ready:
    each readiness probe of a starting worker would otherwise be an error); any other at INFO, a
    client's 4xx included, as Gunicorn's own access log does, and the 501 and 505 of a transfer
    coding or HTTP version the client chose that the server does not take."""
    level = access_level(fields["status"])
    access = _access_logger
    if not access.isEnabledFor(level):
        return
    if len(message) + sum(len(fields.get(key) or "") for key in CLIENT_TEXT) > LINE_LIMIT // 12:  # may not fit
        message, fields = _within_a_line(message, fields)
    handler = _direct_json_handler(access, level)
    if handler is None:
        access.log(level, message, extra=fields)
        return
    stream = handler.stream
    line = _json_line(time.time(), logging.getLevelName(level).lower(), ACCESS, message, fields,
                      ascii_only=needs_ascii(stream)) + "\n"
    try:
        with handler.lock:  # as the handler itself would: lines from two threads never interleave
            stream.write(line)
            stream.flush()
    except Exception:  # and as it would, a line that cannot be written (a full disk) is reported, not raised
        handler.handleError(logging.makeLogRecord({"name": ACCESS, "levelno": level, "msg": message}))


def _within_a_line(message: str, fields: dict) -> tuple[str, dict]:
    """``message`` and ``fields`` with their client text cut until their JSON line (as escaped for
    the worst stream) is under LINE_LIMIT bytes."""
    for limit in (CUT_TO, CUT_TO // 10):
        message = shortened(message, limit)
        fields = {key: shortened(value, limit) if key in CLIENT_TEXT and isinstance(value, str) else value
                  for key, value in fields.items()}
        if len(_json_line(0.0, "info", ACCESS, message, fields, ascii_only=True)) < LINE_LIMIT:
            break
    return message, fields


def _direct_json_handler(access: logging.Logger, level: int) -> StderrHandler | None:
    """Our JSON stderr handler when it is the only place the access line, at ``level``, would go, else None."""
    if access.handlers or access.filters or not access.propagate:
        return None
    root = _root_logger
    if root.propagate or root.filters or len(root.handlers) != 1:
        return None
    handler = root.handlers[0]
    if (not getattr(handler, "scratchnet", False) or type(handler.formatter) is not JsonFormatter
            or handler.filters or handler.level > level):
        return None
    return handler
