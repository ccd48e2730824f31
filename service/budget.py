"""One large JSON parse or image decode at a time among a service's workers.

Parsing a JSON batch costs about 33 bytes of Python objects per number until the numbers are an
array: with the body and the arrays, ~450 MB for a request at the default limit of 8 million numbers.
Two workers given such requests together needed 1.1 GB, past the 1 GB that compose gives the service,
and the kernel killed a worker with the requests it held. So a request of an eighth of the limit or
more, once its body is read (at most 64 MiB, a seventh of what parsing it costs) and its numbers
counted, waits for its turn: among the workers of one Gunicorn (a lock file in the folder they
share), or among the threads of a process on its own. A smaller request (a few MB of objects at
most) never waits for a turn, though it may wait for a thread while large ones hold them. The lock
is an flock: the kernel releases it when a worker dies holding it.

Decoding an image costs up to ~16 bytes a pixel (a WebP with alpha: libwebp's buffer, Pillow's
RGBA, the grey and the alpha): ~390 MB at the default limit of 25 million pixels, which a file of
1 kB can declare. Four such requests at once, two per worker, took compose's 1 GB and workers were
killed. So an image that decodes to an eighth of the pixel limit or more takes the same turn
before it is decoded (a photo the JPEG decoder reduces as it decodes counts what it decodes to).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import threading
from pathlib import Path

LARGE_SHARE = 8  # a request of its limit / LARGE_SHARE numbers (or pixels) or more is large
LOCK_NAME = "large-json.lock"


def is_large(amount: int, limit: int) -> bool:
    """Whether ``amount`` (the numbers of a JSON body, the pixels of an image's decode) is a large
    share of ``limit``, what one request may hold: an eighth or more."""
    return amount * LARGE_SHARE >= limit


class LargeParses:
    def __init__(self, folder: str | os.PathLike | None):
        """``folder``: one the workers share (service/gunicorn_conf.py makes one per Gunicorn), or
        None for this process alone."""
        self._path = Path(folder) / LOCK_NAME if folder else None
        self._in_process = threading.Lock()

    def take_turn(self) -> int | None:
        """Wait for this request's turn; returns what ``end_turn`` takes."""
        if self._path is None:
            self._in_process.acquire()
            return None
        # Each turn opens the file anew: flock excludes other open files, not other threads of one.
        fd = os.open(self._path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def end_turn(self, turn: int | None) -> None:
        if turn is None:
            self._in_process.release()
        else:
            os.close(turn)  # releases the flock
        _return_freed_memory()


def _return_freed_memory() -> None:
    """Hand the memory a large parse freed back to the system (glibc keeps it for the process)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
