"""Download a file into a cache, resumably, and keep it only if its SHA-256 matches.

A download goes to ``<cache>/<filename>.part``; an interrupted one is resumed with an HTTP
``Range`` request on the next try; an answer from byte 0 that repeats its bytes continues it, and any other
replaces it only if it is the whole, verified file (a mirror's error page does not cost the bytes downloaded).
The finished file is checked against the expected SHA-256 and only then renamed into place, so the cache
never holds a file with the wrong contents.
Processes sharing a cache take turns on a file (a lock beside it): the second one waits and
then uses the first one's verified file; a cache this process may not write (another user's, a
read-only mount) still serves the verified files it holds. A mirror that does not answer at all
(refused, timed out) is skipped for the rest of the process rather than waited on again for every file.
Standard library only (urllib); the progress bar uses tqdm when it is installed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "SCRATCHNET_CACHE"
MIRROR_ENV = "SCRATCHNET_MIRROR"
USER_AGENT = "scratchnet/0.1 (+urllib)"
TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20


class DownloadError(OSError):
    """No mirror delivered the file: the message lists what each mirror answered."""


class ChecksumMismatch(DownloadError):
    """A downloaded file's SHA-256 differs from the expected one; the file was deleted."""


class _RangeMismatch(DownloadError):
    """A resumed download was answered with a range that fits neither the request nor byte 0; the .part was deleted."""


# Hosts (scheme://host:port) that did not answer at all in this process.
_unreachable: set[str] = set()


def default_cache_dir() -> Path:
    """``$SCRATCHNET_CACHE`` if set, else ``~/.cache/scratchnet``."""
    value = os.environ.get(CACHE_ENV)
    try:
        return Path(value).expanduser() if value else Path.home() / ".cache" / "scratchnet"
    except RuntimeError:  # HOME unset, and a uid without an entry in the password database
        raise DownloadError(f"there is no home folder for the download cache (HOME is not set, and uid "
                            f"{os.getuid()} has no home in the password database): give a cache folder with "
                            f"--cache-dir (or ${CACHE_ENV}), or read local files with --data-dir") from None


def mirror_urls(default_urls: list[str], relative_path: str) -> list[str]:
    """The URLs to try for a file, in order: ``default_urls``, unless ``$SCRATCHNET_MIRROR`` is set.

    ``$SCRATCHNET_MIRROR`` holds one base URL, or several separated by spaces or commas, each
    laid out like a data folder: the file is at ``<base>/<relative_path>`` (``<dataset>/<file>``).
    """
    override = os.environ.get(MIRROR_ENV, "").strip()
    if not override:
        return list(default_urls)
    bases = [base for base in re.split(r"[\s,]+", override) if base]
    for base in bases:
        try:
            urllib.parse.urlsplit(base).port  # a bracket left open, a port that is no number: ValueError
        except ValueError as exc:
            problem = f"which is not a valid URL ({exc})"
        else:
            problem = None if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", base) else "which is not a URL"
        if problem:
            raise DownloadError(f"${MIRROR_ENV} names {base!r}, {problem}: give base URLs such as "
                                "https://mirror.example/scratchnet, separated by spaces or commas")
    return [f"{base.rstrip('/')}/{relative_path.lstrip('/')}" for base in bases]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url_list: list[str], filename: str, sha256: str, cache_dir: Path | str | None = None,
          progress: bool = True) -> Path:
    """Return ``cache_dir/filename`` with the given SHA-256, downloading it if needed.

    Mirrors in ``url_list`` are tried in order. A cached file with the wrong checksum is
    downloaded again. Raises ``ChecksumMismatch`` when a mirror served different bytes (nothing
    is left in place) and ``DownloadError`` when no mirror answered.
    """
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache_dir / filename
    part, lock_file = target.with_name(filename + ".part"), target.with_name(filename + ".lock")
    _check_in_the_way(cache_dir, [target, part, lock_file])
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = open(lock_file, "a")
    except OSError as exc:
        return _verified_without_lock(target, sha256.lower(), exc)
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is downloading %s into %s: waiting for it", filename, cache_dir)
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch_locked(url_list, target, part, sha256.lower(), progress)


def _check_in_the_way(cache_dir: Path, files: list[Path]) -> None:
    """Refuse a cache folder that is a file (or is to be made under one: a dataset's folder in a --cache-dir
    that is a file), or a folder where the cache keeps one of ``files``: the errors of open() ("Is a
    directory", "Not a directory") named no fix, or blamed the cache's permissions."""
    existing = next((path for path in (cache_dir, *cache_dir.parents) if path.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "the download cache" if existing == cache_dir else f"where the download cache {cache_dir} goes"
        raise DownloadError(f"{existing}, {where}, is a file, not a folder: move it away, or give another cache "
                            f"folder with --cache-dir (or ${CACHE_ENV})")
    for path in files:
        if path.is_dir():
            raise DownloadError(f"{path} is a folder, where the download cache keeps a file: move it away, or "
                                f"give another cache folder with --cache-dir (or ${CACHE_ENV})")


def _verified_without_lock(target: Path, expected: str, exc: OSError) -> Path:
    """``target`` from a cache this process may not write (another user's, a read-only mount), when it holds
    the verified file: files are only ever renamed into place whole, so reading one needs no lock."""
    try:
        if sha256_file(target) == expected:
            return target
    except OSError:
        pass
    raise DownloadError(f"could not download {target.name} into {target.parent}: {exc.strerror}; give another "
                        f"cache folder, one uid {os.getuid()} can write, with --cache-dir (or ${CACHE_ENV})") from None


def _fetch_locked(url_list: list[str], target: Path, part: Path, expected: str, progress: bool) -> Path:
    filename = target.name
    if target.exists():
        actual = sha256_file(target)
        if actual == expected:
            return target
        log.warning("cached %s has SHA-256 %s, expected %s: downloading it again", target, actual, expected)
        target.unlink()

    failures: list[str] = []
    mismatches: list[str] = []
    answering = [url for url in url_list if _origin(url) not in _unreachable]
    for url in answering or url_list:
        # A .part left by an earlier run is resumed; if the resumed file is wrong, or the
        # answer to the Range request is, the same mirror gets one more try from byte 0 before moving on.
        for _ in range(2 if _size(part) else 1):
            resumed = _size(part) > 0
            try:
                written, served = _download(url, part, filename, progress)
            except _RangeMismatch as exc:
                failures.append(f"{url}: {exc}")
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                if _disk_full(exc):  # the cache's fault, not the mirror's: every other mirror would fail too
                    raise DownloadError(
                        f"could not download {filename} into {target.parent}: {exc.strerror}; free some space, or "
                        f"give another cache folder with --cache-dir (or ${CACHE_ENV}) (the partial download is "
                        "kept and will be resumed)") from None
                failures.append(f"{url}: {_describe(exc)}")
                if _no_answer(exc):
                    _unreachable.add(_origin(url))
                    log.warning("%s did not answer (%s): skipping it for the other files", _origin(url),
                                _describe(exc))
                break
            except BaseException as stop:
                if not isinstance(stop, Exception) and _size(part):  # Ctrl-C, SIGTERM: say what stays
                    log.warning("%s: the %s bytes downloaded are kept in %s; the next run resumes from there",
                                filename, f"{_size(part):,}", part)
                raise
            actual = sha256_file(written)
            if actual == expected:
                os.replace(written, target)
                part.unlink(missing_ok=True)  # left when the whole file came beside it
                return target
            written.unlink()
            if resumed and written == part:
                continue  # the bytes kept from before may be what is wrong; the try from byte 0 judges the mirror
            why = ("the mirror sent a web page (an error page?), not the file" if served == "text/html"
                   else "the download was corrupted or the mirror changed")
            mismatches.append(f"checksum mismatch for {filename}: expected {expected}, got {actual}; {why} ({url})")
            break  # a whole answer that is not the file: asking this mirror again would get the same

    if mismatches and not _size(part):
        also = f"; other mirrors: {'; '.join(failures)}" if failures else ""
        raise ChecksumMismatch(f"{mismatches[-1]}{also}; nothing was kept: run again, and if it happens again, "
                               f"set ${MIRROR_ENV} to another mirror or read local files with --data-dir")
    tried = "; ".join(mismatches + failures) or "no mirror given"
    resume = " (the partial download is kept and will be resumed)" if _size(part) else ""
    raise DownloadError(f"could not download {filename}: {tried}{resume}")


def _download(url: str, part: Path, filename: str, progress: bool) -> tuple[Path, str]:
    """Write ``url`` into ``part``, appending to what it holds when the server honours Range; return the
    file written and the answer's content type. An answer from byte 0 to a Range request continues ``part``
    if it starts with the bytes ``part`` holds; otherwise it is written beside ``part``, which it replaces only
    once its checksum shows it is the file: a mirror that answers with a web page (an error page, a login)
    must not cost the bytes already downloaded."""
    offset = _size(part)
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            return part, ""  # the .part already holds the whole file; the checksum decides
        raise

    with response:
        start = _content_range_start(response.headers.get("Content-Range", "")) if response.status == 206 else 0
        if start not in (0, offset):
            part.unlink(missing_ok=True)  # a range that fits neither the file nor the request: the next try starts over
            raise _RangeMismatch(f"asked for bytes from {offset}, got Content-Range "
                                 f"{response.headers.get('Content-Range')!r}")
        written, repeated, rest = part, offset, b""
        if start != offset:  # the server ignored Range (200, or 206 from byte 0): the whole file, or so it says
            # As far as it repeats the bytes kept, it is the same download: they are not written a second time
            # (a disk with room for the file may have none for two copies of its start), and the rest is appended.
            repeated, rest = _repeated_start(response, part, offset)
            if repeated < offset:  # something else (an error page?), or it ended: written beside the .part
                written = part.with_name(part.name + ".whole")
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        try:
            with open(written, "ab" if written == part else "wb") as out, \
                    _progress_bar(filename, total, offset if written == part else 0, progress) as bar:
                if written != part:
                    with open(part, "rb") as kept:
                        out.write(kept.read(repeated))
                    bar.update(repeated)
                out.write(rest)
                bar.update(len(rest))
                # read1 hands over what has arrived, so a stalled server or Ctrl-C keeps every byte received.
                while chunk := response.read1(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if total is not None and _size(written) != total:
                raise DownloadError(f"connection closed after {_size(written)} of {total} bytes")
        except BaseException:
            if written != part:  # what .part holds is still the start of the file
                written.unlink(missing_ok=True)
            raise
        return written, response.headers.get_content_type()


def _repeated_start(response, part: Path, offset: int) -> tuple[int, bytes]:
    """Read ``response`` (an answer from byte 0) as far as it repeats the ``offset`` bytes ``part`` holds: how many
    it repeats, and the bytes read past them (all of the chunk where it differs, when it does)."""
    repeated = 0
    with open(part, "rb") as kept:
        while repeated < offset and (chunk := response.read1(CHUNK_BYTES)):
            same = min(len(chunk), offset - repeated)
            if kept.read(same) != chunk[:same]:
                return repeated, chunk
            repeated += same
            if same < len(chunk):
                return repeated, chunk[same:]
    return repeated, b""


def _content_range_start(value: str) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", value)
    return int(match.group(1)) if match else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _no_answer(exc: BaseException) -> bool:
    """Whether ``exc`` says the host did not answer at all (as opposed to answering an error)."""
    if isinstance(exc, urllib.error.HTTPError):
        return False
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, (TimeoutError, ConnectionRefusedError, ConnectionResetError))


def _disk_full(exc: BaseException) -> bool:
    return not isinstance(exc, urllib.error.URLError) and getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the library wrote


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def update(self, n: int) -> None:
        pass


def _progress_bar(filename: str, total: int | None, initial: int, progress: bool):
    if not progress:
        return _NoProgress()
    try:
        from tqdm import tqdm  # a trainer extra; downloads work without it
    except ImportError:
        return _NoProgress()
    # disable=None: no bar when stderr is not a terminal (logs, CI).
    return tqdm(total=total, initial=initial, desc=filename, unit="B", unit_scale=True,
                unit_divisor=1024, disable=None, leave=False)
