"""Gunicorn's threaded worker, made to leave new connections to a worker with a free thread.

Every worker waits on the same listening socket, and Gunicorn's ``gthread`` worker accepts a
connection whenever it wakes first, busy or not. Clients that open their keep-alive connections
at once (a load generator, a proxy's connection pool) then often all land on one worker and keep
it: one core answers everything while the other idles. With two workers, 8 connections opened
together went to a single worker in about one run in three (docs/benchmarks.md).

``FairThreadWorker`` accepts at once only while one of its threads is free and it holds fewer
connections than threads. A worker without that room stops listening for ``ACCEPT_DELAY``, so a
new connection goes to a worker that can serve it at once if there is one; if no worker has room,
the first to make some or to reach the end of its delay takes it (so a connection never waits
longer than that for a busy server, however many others its workers keep busy). Connections
already accepted are served exactly as before.

Gunicorn hands a connection to a thread as soon as any of it is readable, and the thread then
blocks reading the rest: a few clients that send a byte, a request line or part of a body, slowly
or not at all, held every thread and stopped the service (``workers x threads`` of them, each for
the client timeout, again and again). Here a request is gathered on the event loop, holding no
thread, until its headers have come and, when its Content-Length is at most ``GATHER_BODY``
(1 MiB: every image and JSON request), its body too; only then does a thread take it. A longer
body (a large batch), a chunked one and one whose client awaits ``100 Continue`` are read by the
thread. Every read waits at most ``SCRATCHNET_CLIENT_TIMEOUT`` seconds (default 10) for progress:
the next bytes of the request, or room for the next part of the answer (a slow reader that keeps
reading gets all of a large answer). After that the request is answered 408
(``service/errors.py``), or the connection is closed when its headers never ended (logged in one
line, not as an error). A stopping worker (SIGTERM, a reload) answers a request whose body it is
still gathering 503 ``server_stopping`` just before its graceful timeout ends; its exit dropped it.
(A client that trickles a large body is a buffering proxy's job: ``docker/nginx.conf``.) Over TLS
(Gunicorn's ``certfile``) the socket is Gunicorn's own, read in the thread, and neither applies.

A worker out of file descriptors (``ulimit -n``), or a system out of them or of memory for
sockets, cannot accept a waiting connection: Gunicorn's worker died of it, with every connection
it held. Here it logs one line, stops accepting for ``ACCEPT_PAUSE`` and serves what it holds
(whose ends free what was missing); waiting connections stay in the listen queue meanwhile.
(service/gunicorn_conf.py keeps ``worker_connections`` below the limit, so that this is rare.)

Gunicorn's thread pool starts a thread for each of the first requests: a worker that could not
start one (a low ``ulimit -v`` or ``-u``) booted, then failed requests under traffic. Here every
thread is started at boot, and a worker that cannot start them fails to boot, which stops
Gunicorn with one line saying why.

A stopping worker closes its listening sockets at once, so new connections are refused rather
than queued behind the requests in flight and then reset.

Gunicorn drains a body the application left unread (a request refused before its body was read:
an unknown model, a missing token, a body over the size limit) only when it is under
``DRAIN_LIMIT`` bytes (it gives up once it has read that many), and closes the connection
otherwise, after an answer that said ``keep-alive``: a client that reused the connection lost
its next request. Such an answer now says ``Connection: close``.

A connection the server closes (after ``Connection: close``, an HTTP/1.0 request, an error) is
half-closed first and what the client still sends is read and dropped until the client closes
too (RFC 9112 section 9.6): closed with unread bytes, the kernel resets it, and a client still
sending its body can lose the answer. Gunicorn waits for that end on the worker's main thread,
up to ``LINGER_SECONDS`` per connection, during which no connection of the worker is accepted or
dispatched: a client that keeps its socket open after such an answer (urllib holding a response
it has not read yet) stopped the worker for 2 s. Here the wait is an event on the event loop.

A request Gunicorn answers itself, before the app sees it (a request line or headers over its
limits, a malformed request line or header), is answered in the API's JSON error shape
(``json_error``) rather than Gunicorn's HTML page, in words that say what to send instead, and
counted and logged like any other (route ``<unmatched>``).

A client that sends ``Expect: 100-continue`` (curl, for bodies over 1 MiB) holds its body back
until the server says ``100 Continue``. Gunicorn says it as soon as it has read the headers, so a
request the service refuses from its headers alone (404 unknown model, 401/403 admin, 413 by
Content-Length, 415) still had its body sent. Here ``100 Continue`` goes out when the app first
reads the body; a request answered without reading it is answered with ``Connection: close``
and the client sends nothing more.

It relies on methods of Gunicorn's ``ThreadWorker`` (``enqueue_req``, ``finish_request`` and
``set_accept_enabled``, called on the worker's main thread, and ``handle_request``, on a thread),
on its threads calling ``setblocking(True)`` on a connection's socket before reading it, on a
connection's ``wait_for_data``, on how it parks connections (``pending_conns``), on ``handle``
returning a false value for a connection to close, on a request's ``_expected_100_continue``
(read when the environ is made), on bodies being read through the socket's ``recv`` or
``recv_into``, on its body readers and on its response's ``force_close``, on ``accept`` raising
what ``accept()`` raised but EAGAIN and ECONNABORTED, and on ``get_thread_pool`` making the pool;
gunicorn is pinned in pyproject.toml, and tests/e2e/test_connections.py checks the behaviour
against the real server.
"""

from __future__ import annotations

import collections
import errno
import functools
import http
import json
import logging
import math
import os
import re
import selectors
import socket
import sys
import threading
import time
import uuid

from gunicorn import util as gunicorn_util
from gunicorn.arbiter import Arbiter
from gunicorn.errors import AppImportError
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.errors import (ExpectationFailed, InvalidHeader, InvalidHeaderName, InvalidHTTPVersion,
                                  InvalidRequestLine, InvalidRequestMethod, LimitRequestHeaders, LimitRequestLine,
                                  ObsoleteFolding, UnsupportedTransferCoding)
from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS
from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker

from service import cors
from service.app import ANSWER_CUT, REQUEST_ID_TEXT, record_unrouted
from service.context import EXTENSION
from service.errors import (BODY_TIMEOUT_MESSAGE, SERVER_STOPPING_MESSAGE, SHUT_BY_STOP, ClientWentAway,
                            ServerStopping, error_body)
from service.logs import HidesToken, without_token
from shared.text import shortened

ACCEPT_DELAY = 0.005  # seconds a busy worker leaves a waiting connection to the others
# Gunicorn lets a thread wait up to 5 s for a new connection's first bytes before handing it to
# the event loop, so a few connections that send nothing (browser preconnects, port scanners) held
# every thread for seconds. Here the thread waits this long; then the connection waits for its
# request on the event loop, holding no thread, for Gunicorn's keep-alive time.
FIRST_BYTES_WAIT = 0.05
CLIENT_TIMEOUT = float(os.environ.get("SCRATCHNET_CLIENT_TIMEOUT", "10"))
DRAIN_LIMIT = 64 * 1024  # gunicorn/http/parser.py: _DRAIN_MAX_BYTES
# A closing connection is read for at most this long before it is closed regardless, as
# Apache's lingering close does. No cap on the bytes: a client sends the whole body of a refused
# request before it reads the answer, and one closed under it with bytes unread is reset and loses
# the answer. At most LINGER_READ bytes per wake-up, so a fast sender does not hold the event loop.
LINGER_SECONDS = 2.0
LINGER_READ = 256 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# A request is gathered on the event loop, holding no thread, until its headers have come and its
# body too when its Content-Length is at most GATHER_BODY; a longer body is read by the thread.
GATHER_STEP = 256 * 1024
GATHER_BODY = 1 << 20
GATHER_HEAD = 64 * 1024  # headers longer than this go to a thread, whose parser refuses them (431)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,18})[ \t]*\r\n")
# A client's request id, as service.app takes it, in the head of a request a thread never saw.
_REQUEST_ID = re.compile(rb"\r\nx-request-id[ \t]*:[ \t]*(%s)[ \t]*\r\n" % REQUEST_ID_TEXT.encode(), re.IGNORECASE)
_ORIGIN = re.compile(rb"\r\norigin[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r\n", re.IGNORECASE)  # and its page's origin (CORS)
# A stopping worker (SIGTERM, a reload) answers a request whose body is still arriving on the event loop 503
# this long before its graceful timeout ends, when the master kills it: the client is told to send it again.
STOP_ANSWER_MARGIN = 0.5
# accept() fails with these while the process is out of file descriptors (EMFILE), the system is
# (ENFILE), or the kernel has no memory for a socket (ENOBUFS, ENOMEM); none is the client's fault.
ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE = 0.1  # seconds a worker stops accepting after one of them
# The status, code and request id of the answer Gunicorn wrote itself on this thread (see json_error).
_own_answer = threading.local()


def json_error(sock, status_int: int, reason: str, mesg: str, *, worded: bool = False,
               code: str | None = None) -> None:
    """Gunicorn's ``util.write_error``, in the API's JSON error shape instead of an HTML page.
    Gunicorn calls it for a request it cannot parse (a request line or headers over its limits,
    a malformed chunk); what it answered is noted for the worker's access line. It carries the
    request id of that line, as the app's answers do, so the client can name it, and the CORS
    headers the app's answer would (``_own_answer.headers``) when the request's origin is known."""
    if reason == "Bad Request" and status_int == 500:  # Gunicorn's words for its 400s, given to this too
        reason = http.HTTPStatus(status_int).phrase
    code = code or ("internal_error" if status_int == 500 else reason.lower().replace(" ", "_"))
    # Gunicorn's messages are fragments ("Invalid header"), a worded one (the 408's) the app's own sentence.
    message = mesg if worded else f"{reason}: {mesg}" if mesg else reason
    explained = _explained(getattr(_own_answer, "exc", None), getattr(_own_answer, "header_limits", None))
    if explained is not None:
        status_int, code, message = explained
        reason = http.HTTPStatus(status_int).phrase
    request_id = getattr(_own_answer, "client_request_id", None) or uuid.uuid4().hex
    body = json.dumps(error_body(message, code), separators=(",", ":")).encode() + b"\n"  # as the app writes it
    head = (f"HTTP/1.1 {status_int} {reason}\r\nDate: {gunicorn_util.http_date()}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nX-Request-ID: {request_id}\r\nX-Worker-PID: {os.getpid()}\r\n"
            f"X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in getattr(_own_answer, "headers", ())) + "\r\n")
    _own_answer.status, _own_answer.code, _own_answer.request_id = status_int, code, request_id
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


HEADER_RULES = {
    "CONTENT-LENGTH": "give it once, as a whole number of bytes, and never with Transfer-Encoding",
    "TRANSFER-ENCODING": "give chunked once, as the last coding, and only on an HTTP/1.1 request",
}
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 section 5.6.2: a token
# What a header line without a colon is logged as: Gunicorn's warning quoted the line whole, and such a
# line can hold a credential ("Authorization Bearer <token>"), which the log must never show; its first word,
# the header it meant to be, is shown so that the line can be found (Gunicorn's log hides any piece of the
# token in it too: service.logs.HidesToken).
UNSHOWN_LINE = "a header line without a colon, starting {!r} (the rest not shown)"
FIRST_WORD = re.compile(r"[^\s=]*")
BARE_LF = "bare LF as line terminator"  # Gunicorn's own words, of no line in particular


def _refused_header_name(exc: InvalidHeader) -> str | None:
    """The name of the header Gunicorn refused (it gives names upper-cased), or None when it refused a
    line without a colon, which it quotes whole, or a line's ending."""
    text = str(exc.hdr)
    return text if HEADER_NAME.fullmatch(text) and text == text.upper() else None


def _header_limits(cfg) -> tuple[int, int]:
    """How many header lines a request may have, and how many bytes each, as Gunicorn's parser applies
    ``--limit-request-fields`` and ``--limit-request-field-size`` (0 or less: its own maximum)."""
    fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= MAX_HEADERS else MAX_HEADERS
    return fields, cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else DEFAULT_MAX_HEADERFIELD_SIZE


SPACED_TARGET = re.compile(r"\S+ +(\S+ +)*HTTP/\d\.\d")  # the rest of a target with spaces, then the version
UNENCODED = re.compile(r"[^\x21-\x7e]")  # what RFC 9112 section 3.2 leaves to percent-encoding in a target
ENCODE_TARGET = ("Encode each byte of the UTF-8 of other characters as %XX (a space as %20, é as %C3%A9), as an HTTP "
                 "client's URL encoding does.")


def _explained(exc: Exception | None, header_limits: tuple[int, int] | None = None) -> tuple[int, str, str] | None:
    """The status, code and message for a request Gunicorn could not parse, in words that say
    what to send instead; None to keep Gunicorn's own. ``header_limits``: the worker's _header_limits."""
    if isinstance(exc, LimitRequestLine):  # Gunicorn's words: "Request Line is too large (8192 > 4094)"
        limit = f"over {exc.max_size:,} bytes" if isinstance(exc.max_size, int) else "too long"
        return 414, "uri_too_long", (f"The request line (method, path and query) is {limit}: shorten the path and "
                                     "query, and send inputs in the body of a POST rather than in the URL.")
    if isinstance(exc, LimitRequestHeaders):  # Gunicorn's words: "Error parsing headers: 'limit request ...'"
        fields, size = header_limits or (MAX_HEADERS, DEFAULT_MAX_HEADERFIELD_SIZE)
        if exc.msg == "limit request headers fields":
            what = f"The request has more than {fields:,} header lines: send fewer."
        elif exc.msg == "limit request headers fields size":
            what = (f"A header line of the request is over {size:,} bytes: shorten it, and send large data in the "
                    "body.")
        else:
            what = (f"The request's headers are too large: send at most {fields:,} header lines of at most "
                    f"{size:,} bytes each, and large data in the body.")
        return 431, "request_header_fields_too_large", what
    if isinstance(exc, InvalidHTTPVersion):
        if isinstance(exc.version, tuple):  # well-formed, such as HTTP/2.0: a version not served
            return 505, "http_version_not_supported", (f"HTTP version {'.'.join(map(str, exc.version))} is not "
                                                       "served here; send the request as HTTP/1.1 or HTTP/1.0.")
        if SPACED_TARGET.fullmatch(str(exc.version)):  # "GET /models/my model HTTP/1.1": the path ended at the space
            return 400, "invalid_request_line", ("The request's path or query holds a space, which ends it: "
                                                 f"percent-encode it as %20. {ENCODE_TARGET}")
        version = without_token(str(exc.version), None)  # "GET /x Bearer <token> HTTP/1.1"
        return 400, "invalid_request_line", (f"The request line's version {shortened(version, 60)!r} is "
                                             "malformed: end the line with HTTP/1.1.")
    if isinstance(exc, InvalidHeader):
        if _refused_header_name(exc) is None:  # a whole line without a colon, or Gunicorn's own words
            return 400, "invalid_header", ("A header line is malformed: write each header as Name: value, on a line "
                                           "of its own ended by CRLF.")
        rule = HEADER_RULES.get(str(exc.hdr).upper(), "give it once, with no control characters in its value")
        return 400, "invalid_header", f"The request's {str(exc.hdr).title()} header is invalid or repeated: {rule}."
    if isinstance(exc, InvalidHeaderName):
        name = without_token(str(exc.hdr), None)  # "Authorization Bearer a:b" splits at the token's colon
        return 400, "invalid_header", (f"The header name {shortened(name, 60)!r} is invalid: a name is "
                                       "letters, digits and the punctuation !#$%&'*+-.^_`|~.")
    if isinstance(exc, ObsoleteFolding):
        return 400, "invalid_header", ("A header continues on a line that starts with a space or tab (obsolete "
                                       "folding): write each header's value on its own line.")
    if isinstance(exc, InvalidRequestMethod):
        return 400, "invalid_method", (f"The request method {shortened(str(exc.method), 60)!r} is invalid: a method "
                                       "is 3 to 20 capital letters, such as GET or POST.")
    if isinstance(exc, InvalidRequestLine):
        parts = str(exc.req).split(" ", 2)
        if len(parts) == 3 and UNENCODED.search(parts[1]):  # a byte outside printable ASCII, é sent as is
            return 400, "invalid_request_line", ("The request's path or query holds characters other than printable "
                                                 f"ASCII, which must be percent-encoded. {ENCODE_TARGET}")
        return 400, "invalid_request_line", "The request line is invalid: send it as METHOD /path HTTP/1.1."
    if isinstance(exc, ExpectationFailed):  # Gunicorn's words: "Unable to comply with expectation: 'x'"
        expect = without_token(str(exc.expect), None)
        return 417, "expectation_failed", (f"The Expect header {shortened(expect, 60)!r} cannot be met: the only "
                                           "expectation taken is 100-continue; send Expect: 100-continue, or no Expect "
                                           "header.")
    if isinstance(exc, UnsupportedTransferCoding):  # worded as the app words its own refusal of "gzip, chunked"
        return 501, "unsupported_transfer_coding", (f"Transfer-Encoding {exc.hdr} is not supported, only chunked; "
                                                    "send the body as it is, or chunked.")
    return None


def _first_bytes(wait, timeout: float) -> bool:
    return wait(min(timeout, FIRST_BYTES_WAIT))


def unread_bytes(environ: dict) -> float:
    """How much of the request body has not been read: infinite for a chunked body not read to
    its end (its length is unknown)."""
    body = environ.get("wsgi.input")
    reader = getattr(body, "reader", None)
    if isinstance(reader, LengthReader):
        return body.buf.tell() + reader.length
    if isinstance(reader, ChunkedReader) and reader.parser is not None:
        return math.inf
    return 0


def body_left_undrained(environ: dict) -> bool:
    """Whether too much of the request body is unread for Gunicorn to drain before reusing the
    connection: ``DRAIN_LIMIT`` bytes or more (a chunked body not read to its end counts), or any
    of a body whose reading failed (it stopped arriving: the 408; a malformed chunk), after which
    Gunicorn never reuses the connection."""
    return getattr(environ.get("wsgi.input"), "failed", False) or unread_bytes(environ) >= DRAIN_LIMIT


def client_asks_to_close(environ: dict) -> bool:
    """Whether ``close`` is among the options of the request's Connection header (RFC 9112 §9.6):
    Gunicorn honours only a header that is ``close`` alone, not ``keep-alive, close`` or ``TE, close``."""
    return "close" in (option.strip() for option in environ.get("HTTP_CONNECTION", "").lower().split(","))


def close_after_undrained_bodies(wsgi):
    """``wsgi`` answering with ``Connection: close`` when Gunicorn will close the connection after
    the answer anyway (its ``start_response`` is a method of Gunicorn's response), when the client
    asked for it among other connection options, or when the client was never told to send the
    body it holds back (``Expect: 100-continue``): it may send it still, or not, and only a new
    connection tells the two apart."""

    def app(environ, start_response):
        def start(status, headers, exc_info=None):
            sock = environ.get("gunicorn.socket")
            awaiting_continue = getattr(sock, "continue_pending", False)
            if awaiting_continue:
                sock.continue_pending = False  # too late: the answer is final
            if (body_left_undrained(environ) or client_asks_to_close(environ)
                    or (awaiting_continue and unread_bytes(environ) > 0)):
                start_response.__self__.force_close()
            return start_response(status, headers, exc_info)

        body = wsgi(environ, start)
        if isinstance(body, environ.get("wsgi.file_wrapper", ())):  # sent by sendfile, unwatched
            return body
        return WatchedAnswer(body, environ)

    return app


class WatchedAnswer:
    """An answer's body as Gunicorn sends it, watched for a client that does not take it whole.
    Gunicorn writes each chunk before it asks for the next, and closes the body however the
    sending ended: closed before the body was done, the client hung up or stopped reading (the
    write failed), and ``environ[ANSWER_CUT]``, which the app set, is told how many bytes of the
    answer, its head included, the socket sent, and whether the worker's quick stop shut the
    connection (``SHUT_BY_STOP``) rather than the client."""

    def __init__(self, body, environ: dict):
        self.body, self.environ, self.whole = body, environ, False
        self.socket = environ.get("gunicorn.socket")
        self.sent_before = getattr(self.socket, "sent", 0)

    def __iter__(self):
        yield from self.body  # Gunicorn asks for the next chunk once this one is written
        self.whole = True

    def close(self) -> None:
        try:
            if not self.whole and (cut := self.environ.get(ANSWER_CUT)) is not None:
                cut(getattr(self.socket, "sent", 0) - self.sent_before, getattr(self.socket, SHUT_BY_STOP, False))
        finally:
            if hasattr(self.body, "close"):
                self.body.close()


def request_gathered(data: bytes) -> bool:
    """Whether ``data``, the start of a connection's next request, is enough to hand it to a thread:
    its headers and, for a body of at most GATHER_BODY bytes, the body. A client awaiting
    ``100 Continue`` sends its body only once told to, and a chunked body's length is unknown: both
    go once their headers are in."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > GATHER_HEAD
    head = bytes(data[:end + 2]).lower()
    if b"\r\nexpect:" in head or b"\r\ntransfer-encoding:" in head:
        return True
    length = _CONTENT_LENGTH.search(head)
    return length is None or int(length[1]) > GATHER_BODY or len(data) - end - 4 >= int(length[1])


class ClientSocket(socket.socket):
    """A client connection whose blocking mode waits at most CLIENT_TIMEOUT for each read or write
    (no limit when it is 0), which sends ``100 Continue`` before the first read of a body whose
    client awaits it (``continue_pending``), and whose reads first return what the event loop
    gathered of the request (``gathered``, from ``gathered_at`` on)."""

    continue_pending = False
    gathered = b""
    gathered_at = 0
    sent = 0  # bytes written to the client

    def setblocking(self, flag: bool) -> None:
        self.settimeout((CLIENT_TIMEOUT or None) if flag else 0.0)

    def gathered_left(self) -> int:
        return len(self.gathered) - self.gathered_at

    def take_gathered(self, size: int) -> memoryview:
        start = self.gathered_at
        self.gathered_at = min(len(self.gathered), start + size)
        part = memoryview(self.gathered)[start:self.gathered_at]
        if self.gathered_at == len(self.gathered):
            self.gathered, self.gathered_at = b"", 0
        return part

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.gathered_left():
            return bytes(self.take_gathered(size))
        if self.continue_pending:
            self.send_continue()
        try:
            return super().recv(size, flags)
        except ConnectionError as e:  # told from a fault of the server's by the one error handler
            raise ClientWentAway(e.errno, e.strerror) from e

    def recv_into(self, buffer, size: int = 0, flags: int = 0) -> int:
        if self.gathered_left():
            part = self.take_gathered(size or len(buffer))
            memoryview(buffer).cast("B")[:len(part)] = part
            return len(part)
        if self.continue_pending:
            self.send_continue()
        try:
            return super().recv_into(buffer, size, flags)
        except ConnectionError as e:
            raise ClientWentAway(e.errno, e.strerror) from e

    def send_continue(self) -> None:
        self.continue_pending = False
        self.sendall(CONTINUE)

    def sendall(self, data, flags: int = 0) -> None:
        # socket.sendall applies its timeout to the whole call; here it applies to each write.
        view = memoryview(data).cast("B")
        try:
            while view:
                written = self.send(view, flags)
                self.sent += written
                view = view[written:]
        except TimeoutError as e:
            raise AnswerNotRead(*e.args) from e


class AnswerNotRead(TimeoutError):
    """A client read none of the answer written to it for CLIENT_TIMEOUT seconds."""


class QuietClientTimeouts(logging.Filter):
    """Gunicorn logs a client socket's timeout as an error with a traceback: make it one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
            what = "read no more of its answer" if isinstance(record.exc_info[1], AnswerNotRead) else \
                "sent no more of its request"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a client %s for %s s: connection closed", (what, CLIENT_TIMEOUT), None, None)
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def with_client_timeout(sock: socket.socket) -> ClientSocket:
    """The same connection as a ClientSocket (the descriptor moves over; ``sock`` is left closed)."""
    timeout = sock.gettimeout()
    wrapped = ClientSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    if timeout is None:
        wrapped.setblocking(True)  # blocking, as it was: with the client timeout
    else:
        wrapped.settimeout(timeout)
    return wrapped


class FairThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.busy_threads = 0  # requests handed to the thread pool and not finished
        self.in_threads: set = set()  # their connections
        self.waiting_since: float | None = None  # when a connection was seen waiting while all threads were busy
        self.lingering = collections.deque()  # closing connections, oldest (first to expire) first
        self.linger_buffer = bytearray(LINGER_READ)  # where what they still send is dropped
        self.accept_paused_until = 0.0  # monotonic time until which accept() is not tried (ACCEPT_PAUSE)
        self.accept_failing = False  # an accept() failed for want of resources and none has succeeded since
        self.gathering: dict = {}  # connections whose request is being gathered -> when they time out
        self.quitting = False  # a SIGINT or SIGQUIT is being handled
        self.stop_answer_at: float | None = None  # stopping: when requests still being gathered are answered 503

    def init_process(self) -> None:
        # In the worker, after the fork.
        self.log.error_log.addFilter(QuietClientTimeouts())
        try:
            super().init_process()
        except AppImportError:
            raise
        except Exception:
            # Gunicorn logs this, then prints the error again on stderr outside its log: a line that
            # was not JSON. Logged here as Gunicorn does, with the exit status Gunicorn gives.
            self.log.exception("Exception in worker process")
            sys.exit(-1 if self.booted else Arbiter.WORKER_BOOT_ERROR)

    def handle_quit(self, sig, frame) -> None:
        """Ctrl-C reaches every process of the terminal's group, and the master then sends each worker
        SIGQUIT: Gunicorn's handler, run again inside itself while it held the thread pool's lock,
        waited for that lock for ever, until the master killed the worker at the graceful timeout. The
        first quit is carried through; another that arrives meanwhile has nothing to add.

        The worker's exit waits for every thread of its pool: one blocked reading the body of a client
        that had stalled (or writing to one that reads nothing) held the quick shutdown for the whole
        graceful timeout, until the master killed the worker. Their connections are shut down first, so
        such a read or write ends at once; a thread that is computing finishes as it would have. Each
        socket is marked first (``SHUT_BY_STOP``), so that the app logs and counts a body read cut off
        this way as the stop's 503 ``server_stopping``, and an answer it cuts as the stop's, not as
        the client's doing."""
        if self.quitting:
            return
        self.quitting = True
        for conn in list(self.in_threads):
            setattr(conn.sock, SHUT_BY_STOP, True)
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed already
                pass
        super().handle_quit(sig, frame)

    def run(self) -> None:
        super().run()
        # Requests whose body was still arriving when the graceful wait ended (or began: a graceful timeout under
        # STOP_ANSWER_MARGIN) are told so; the event loop is gone: each is closed once answered.
        for conn in list(self.gathering):
            self.end_gathering(conn)
            self.answer_gathering(conn, time.monotonic(), stopping=True, then=self.close_answered)
        if self.in_threads:
            # The graceful wait (SCRATCHNET_GRACEFUL_TIMEOUT) ended with requests still in flight. Python's
            # exit waits for every thread of the pool: one reading a stalled client's body kept a retired
            # worker (a reload, SIGTTOU) running until the master killed it at SCRATCHNET_TIMEOUT, with a
            # traceback on stderr. It ends now, as a stopping master's own kill would end it; the master logs
            # how many requests it ended with (child_exit in service/gunicorn_conf.py), but only a stop's
            # reason: a retired worker says why its requests go unanswered itself.
            self.log.warning("the worker's graceful wait (SCRATCHNET_GRACEFUL_TIMEOUT, %g s) ran out: the requests "
                             "still in flight are cut off unanswered", self.cfg.graceful_timeout)
            self.log.info("Worker exiting (pid: %s)", self.pid)
            os._exit(0)

    def get_thread_pool(self):
        """The pool with all its threads started. ThreadPoolExecutor starts one per task submitted
        while none is idle: tasks that wait until the last has started make it start them all."""
        pool = super().get_thread_pool()
        all_started = threading.Event()
        try:
            for _ in range(self.cfg.threads):
                pool.submit(all_started.wait)
        except RuntimeError as error:  # "can't start new thread"
            self.log.error("cannot start the worker's %d threads (%s): allow more memory (ulimit -v) or processes "
                           "(ulimit -u), or set a lower SCRATCHNET_THREADS", self.cfg.threads, error)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        finally:
            all_started.set()
        return pool

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.flask_app = self.wsgi
        svc = getattr(self.flask_app, "extensions", {}).get(EXTENSION)
        self.log.error_log.addFilter(HidesToken(svc.settings.admin_token if svc is not None else None))
        self.wsgi = close_after_undrained_bodies(self.wsgi)

    def handle_error(self, req, client, addr, exc) -> None:
        # A request Gunicorn refused before the app saw it: counted and logged as the app would.
        started = time.perf_counter()
        if isinstance(exc, InvalidHeader) and _refused_header_name(exc) is None and exc.hdr != BARE_LF:
            exc.hdr = UNSHOWN_LINE.format(shortened(FIRST_WORD.match(exc.hdr)[0], 60))  # not the whole line
        _own_answer.status, _own_answer.exc, _own_answer.header_limits = None, exc, _header_limits(self.cfg)
        try:
            super().handle_error(req, client, addr, exc)
        finally:
            _own_answer.exc = None
        if _own_answer.status is not None:
            record_unrouted(self.flask_app, getattr(req, "method", None), getattr(req, "path", None),
                            _own_answer.status, _own_answer.code, time.perf_counter() - started,
                            _own_answer.request_id, client=addr)

    def has_room(self) -> bool:
        """A thread free, and fewer connections held than threads. Keep-alive clients hold their
        connections: a burst of them opened at once (a load generator, a proxy's pool) went to
        whichever worker woke first, before any of their requests made it busy (31 of 32 to one
        worker; wrk at 32 clients ran on one core in one run in five)."""
        return self.busy_threads < self.cfg.threads and self.nr_conns < self.cfg.threads

    def delaying(self, now: float) -> bool:
        """No room, and a connection seen waiting less than ACCEPT_DELAY ago: leave it to the others."""
        return (not self.has_room() and self.waiting_since is not None
                and now - self.waiting_since < ACCEPT_DELAY)

    def set_accept_enabled(self, enabled: bool) -> None:
        now = time.monotonic()
        super().set_accept_enabled(enabled and not self.delaying(now) and now >= self.accept_paused_until)
        if not self.alive:
            # Stopping: Gunicorn keeps the listening socket open until the worker exits, so a new
            # connection waited in its backlog for the requests in flight, then was reset after
            # sending its request. Closed now (the master has closed its own copy), a new
            # connection is refused at once, which a client or proxy can safely retry elsewhere.
            for listener in self.sockets:
                listener.close()

    def accept(self, listener) -> None:
        if not self.alive:  # stopping: the listener may be closed already (an event of the same poll)
            return
        now = time.monotonic()
        if not self.has_room():
            # A connection seen long after the last one is a new one: it gets the delay too.
            if self.waiting_since is None or now - self.waiting_since > 2 * ACCEPT_DELAY:
                self.waiting_since = now
            if self.delaying(now):
                self.set_accept_enabled(False)  # listen again when the delay ends (see below)
                return
        self.waiting_since = None
        try:
            super().accept(listener)
        except OSError as error:
            if error.errno not in ACCEPT_EXHAUSTED:
                raise
            self.pause_accepting(error)
        else:
            self.accept_failing = False

    def pause_accepting(self, error: OSError) -> None:
        """Stop accepting for ACCEPT_PAUSE; said once until an accept succeeds again."""
        if not self.accept_failing:
            self.log.warning("cannot accept new connections (%s, holding %d): they wait in the listen queue, tried "
                             "again every %s s; raise the open-files limit (ulimit -n) if this recurs",
                             error.strerror, self.nr_conns, ACCEPT_PAUSE)
        self.accept_failing = True
        self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE
        self.set_accept_enabled(False)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if not self._accepting and self.waiting_since is not None and self.alive:
            timeout = min(timeout, ACCEPT_DELAY)  # wake up when the delay ends
        pause_left = self.accept_paused_until - time.monotonic()
        if not self._accepting and pause_left > 0 and self.alive:
            timeout = min(timeout, pause_left)  # and when a pause ends
        if self.lingering:
            timeout = max(0.0, min(timeout, self.lingering[0].timeout - time.monotonic()))
        if not self.alive and self.stop_answer_at is None:
            self.stop_answer_at = time.monotonic() + max(0.0, self.cfg.graceful_timeout - STOP_ANSWER_MARGIN)
        if self.gathering:
            until = min(self.gathering.values())
            if self.stop_answer_at is not None:
                until = min(until, self.stop_answer_at)
            timeout = max(0.0, min(timeout, until - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)
        self.close_expired_lingering()
        self.close_expired_gathering()

    def enqueue_req(self, conn) -> None:
        # Gunicorn hands a connection over as soon as it is readable, or with what its parser read
        # ahead of the last request (a pipelined one): the request is gathered first, unless it is
        # there already, or the socket is TLS (read by Gunicorn's own socket, in the thread).
        unreader = getattr(conn.parser, "unreader", None)
        ahead = unreader is not None and bool(unreader.buf.getvalue())
        if not (vars(conn).pop("request_gathered", False) or ahead or self.cfg.is_ssl):
            self.gather(conn)
            return
        if "wait_for_data" not in vars(conn):  # a new connection, before any read
            conn.wait_for_data = functools.partial(_first_bytes, conn.wait_for_data)
            if not isinstance(conn.sock, ClientSocket):
                conn.sock = with_client_timeout(conn.sock)
        self.busy_threads += 1
        self.in_threads.add(conn)
        super().enqueue_req(conn)

    # gathering a request on the event loop ------------------------------------------------------

    def gather(self, conn) -> None:
        """Read the connection's next request on the event loop, holding no thread, until it can
        go to one (``request_gathered``): a client that sends a request slowly, or part of one and
        then nothing, keeps a thread from no other request. Each read resets its time limit."""
        if not isinstance(conn.sock, ClientSocket):
            conn.sock = with_client_timeout(conn.sock)
        sock = conn.sock
        sock.setblocking(False)
        conn.gathering = bytearray(sock.take_gathered(sock.gathered_left()))  # what the last request left
        conn.gathering_since = time.monotonic()  # when its request began to come, once it has
        # A connection that has sent nothing yet (a browser's preconnect) waits as an idle one does.
        wait = (CLIENT_TIMEOUT or math.inf) if conn.gathering else self.cfg.keepalive
        self.gathering[conn] = time.monotonic() + wait
        self.poller.register(sock, selectors.EVENT_READ, functools.partial(self.on_gathering_readable, conn))
        if conn.gathering and request_gathered(conn.gathering):
            self.gathered(conn)
        else:
            self.on_gathering_readable(conn, sock)  # what has come already, without a turn of the loop

    def on_gathering_readable(self, conn, sock) -> None:
        try:
            data = socket.socket.recv(sock, GATHER_STEP)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the client
            data = b""
        if not data:  # the client closed before its request was whole
            if b"\r\n\r\n" in conn.gathering:
                # Its headers came, its body did not: a thread reads the body to its end and answers 400
                # truncated_body, counted and logged, as it does for a larger body (read by a thread) cut off.
                self.gathered(conn)
                return
            self.end_gathering(conn)
            self.nr_conns -= 1
            conn.close()
            return
        now = time.monotonic()
        if not conn.gathering:  # an idle connection's next request begins
            conn.gathering_since = now
        conn.gathering += data
        self.gathering[conn] = now + (CLIENT_TIMEOUT or math.inf)
        if request_gathered(conn.gathering):
            self.gathered(conn)

    def gathered(self, conn) -> None:
        self.end_gathering(conn)
        conn.sock.gathered, conn.sock.gathered_at = conn.gathering, 0  # handed over whole: never grown again
        del conn.gathering
        conn.data_ready = conn.request_gathered = True
        self.enqueue_req(conn)

    def end_gathering(self, conn) -> None:
        del self.gathering[conn]
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    def close_expired_gathering(self) -> None:
        """A request that stopped coming for CLIENT_TIMEOUT: one whose headers came is answered
        408, as a thread's read of its body would be; one whose headers never ended is closed, and
        so, without a word, is a connection that sent nothing (Gunicorn's keep-alive time). A
        stopping worker answers one whose headers came 503 ``server_stopping`` before its graceful
        timeout ends (``stop_answer_at``): its exit dropped it unanswered, unlogged and uncounted."""
        now = time.monotonic()
        stopping = self.stop_answer_at is not None and now >= self.stop_answer_at
        for conn in [conn for conn, until in self.gathering.items() if stopping or until <= now]:
            self.end_gathering(conn)
            self.answer_gathering(conn, now, stopping=stopping, then=self.linger)

    def answer_gathering(self, conn, now: float, *, stopping: bool, then) -> None:
        """Answer a request no longer gathered (408, or 503 when ``stopping``) and hand its connection to
        ``then``; one whose headers never ended is closed without a word."""
        data = conn.gathering
        if b"\r\n\r\n" not in data:
            if data and not stopping:
                self.log.info("a client sent no more of its request for %s s: connection closed", CLIENT_TIMEOUT)
            self.nr_conns -= 1
            conn.close()
            return
        head = bytes(data[:data.find(b"\r\n\r\n") + 2])
        method, target, *_ = head[:head.find(b"\r\n")].decode("latin-1").split(" ") + ["", ""]
        path = re.split(r"[?#]", target, maxsplit=1)[0]  # logged as the app logs it: the query is no log's
        client_id = _REQUEST_ID.search(head)
        origin = _ORIGIN.search(head)
        _own_answer.status, _own_answer.client_request_id = None, client_id[1].decode() if client_id else None
        _own_answer.headers = cors.headers_for_path(self.flask_app, method or None, path or None,
                                                    origin[1].decode("latin-1") if origin else None)
        try:
            if stopping:
                json_error(conn.sock, ServerStopping.status, "Service Unavailable", SERVER_STOPPING_MESSAGE,
                           worded=True, code=ServerStopping.code)
            else:
                json_error(conn.sock, 408, "Request Timeout", BODY_TIMEOUT_MESSAGE, worded=True)
        finally:
            _own_answer.client_request_id, _own_answer.headers = None, ()
        # No thread worked on it: counted and logged, but kept out of the latency histogram.
        record_unrouted(self.flask_app, method or None, path or None, _own_answer.status, _own_answer.code,
                        now - conn.gathering_since, _own_answer.request_id, routed=True, timed=False,
                        client=conn.client)
        then(conn)

    def close_answered(self, conn) -> None:
        """Close a connection whose answer is written, without the event loop (it has ended)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.nr_conns -= 1
        conn.close()

    def handle_request(self, req, conn):
        # Gunicorn sends 100 Continue before the app sees the request: the client then sent a
        # body the app was about to refuse unread (an unknown model, a bad token, a body over
        # the limit). Sent at the first read of the body instead, as uvicorn does; a request
        # answered without reading it is answered at once, and its body never sent.
        # Gunicorn takes HTTP/1.2 to 1.9 and echoes the version in its status line ("HTTP/1.9 200 OK"),
        # a version this server does not speak: such a request is read and answered as HTTP/1.1, as
        # RFC 9110 section 2.5 asks of a server that implements the major version.
        req.version = min(req.version, (1, 1))
        sock = conn.sock
        if not isinstance(sock, ClientSocket):  # TLS: Gunicorn's own socket, and its own way
            return super().handle_request(req, conn)
        if req._expected_100_continue:
            req._expected_100_continue = False
            sock.continue_pending = True
        try:
            return super().handle_request(req, conn)
        finally:
            sock.continue_pending = False

    def finish_request(self, conn, fs) -> None:
        self.busy_threads -= 1
        self.in_threads.discard(conn)
        if not self.alive and not fs.cancelled() and fs.exception() is None and fs.result() is gthread._DEFER:
            # A connection whose request had not arrived yet: Gunicorn parks it on the event loop
            # only while running; stopping, it took it for a kept-alive one and closed it
            # unanswered. Park it for the stop's linger, as Gunicorn does for kept-alive ones.
            conn.sock.setblocking(False)
            conn.timeout = time.monotonic() + min(self.cfg.keepalive, gthread.STOP_KEEPALIVE_LINGER)
            self.pending_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, functools.partial(self.on_pending_socket_readable, conn))
            return
        if fs.cancelled() or (fs.exception() is None and not fs.result()):
            self.linger(conn)
        elif (self.alive and fs.exception() is None and fs.result() is not gthread._DEFER
              and isinstance(conn.sock, ClientSocket) and conn.sock.gathered_left()):
            self.enqueue_req(conn)  # the next request (pipelined) came with this one: the socket may stay quiet
        else:
            super().finish_request(conn, fs)
        self.set_accept_enabled(self.alive and self.nr_conns < self.worker_connections)

    # closing connections ------------------------------------------------------------------------

    def linger(self, conn) -> None:
        """Close ``conn`` once the client has closed its side or LINGER_SECONDS have passed. It
        counts as a connection until then, so a stopping worker waits for it."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # the answer is complete: FIN after it
            conn.sock.setblocking(False)
        except OSError:  # the client is gone already
            self.nr_conns -= 1
            conn.close()
            return
        conn.timeout = time.monotonic() + LINGER_SECONDS
        self.lingering.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, functools.partial(self.on_lingering_readable, conn))

    def on_lingering_readable(self, conn, sock) -> None:
        try:
            if sock.recv_into(self.linger_buffer):
                return  # dropped: wait for more, or for the end
        except BlockingIOError:
            return
        except OSError:
            pass
        self.end_lingering(conn)  # the client closed its side, or the connection failed

    def end_lingering(self, conn) -> None:
        self.lingering.remove(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self.nr_conns -= 1
        conn.close()

    def close_expired_lingering(self) -> None:
        now = time.monotonic()
        while self.lingering and self.lingering[0].timeout <= now:
            self.end_lingering(self.lingering[0])
