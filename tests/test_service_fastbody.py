"""The one-copy body reader against Gunicorn's own body classes on a real socket pair: the bytes
are exact, what Gunicorn had buffered is used, and a pipelined next request is left in place."""

import io
import socket
import threading

import numpy as np
import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from service.fastbody import MIN_SIZE, numpy_buffer, read_from_socket


def gunicorn_body(payload: bytes, length: int, *, already_buffered: int):
    """A Body as Gunicorn builds it after parsing the headers (some body bytes already read)."""
    ours, theirs = socket.socketpair()
    unreader = SocketUnreader(ours)
    unreader.unread(payload[:already_buffered])
    sender = threading.Thread(target=lambda: (theirs.sendall(payload[already_buffered:]), theirs.close()))
    sender.start()
    return Body(LengthReader(unreader, length)), unreader, sender, ours


@pytest.mark.parametrize("allocate", [bytearray, numpy_buffer])
@pytest.mark.parametrize("already_buffered", [0, 1000, MIN_SIZE + 5, 3 * MIN_SIZE + 10])
def test_reads_the_exact_body_and_leaves_the_next_request(already_buffered, allocate):
    body = np.random.default_rng(0).integers(0, 256, 3 * MIN_SIZE, dtype=np.uint8).tobytes()
    following = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    wsgi_input, unreader, sender, sock = gunicorn_body(body + following, len(body), already_buffered=already_buffered)
    data = read_from_socket({"wsgi.input": wsgi_input}, len(body), allocate)
    sender.join()
    assert type(data) is type(allocate(0)) and bytes(data) == body
    assert wsgi_input.read(10) == b""  # Gunicorn sees the body consumed
    assert unreader.read(len(following)) == following
    sock.close()


def test_steps_aside_when_it_does_not_apply():
    small = b"x" * 100
    wsgi_input, _, sender, sock = gunicorn_body(small, len(small), already_buffered=0)
    assert read_from_socket({"wsgi.input": wsgi_input}, len(small)) is None  # small: the standard path
    assert wsgi_input.read(100) == small
    sender.join()
    sock.close()
    assert read_from_socket({"wsgi.input": io.BytesIO(b"y" * MIN_SIZE)}, MIN_SIZE) is None  # not Gunicorn
