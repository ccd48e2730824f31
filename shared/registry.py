"""The model registry on disk (SPEC §2): ``<root>/<name>/<version>/model.npz``.

Versions are immutable folders named by positive integers. Publishing builds a version in a
hidden temporary folder beside them and renames it into place, so a reader sees a whole
version or none. ``serving.json`` (pin and labels) is replaced atomically and is the single
source of truth for every worker and replica.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO, Callable

from .text import read_json, shortened

MODEL_FILE = "model.npz"
SERVING_FILE = "serving.json"
HIGHEST_FILE = ".highest_version"   # the highest version publish has given (see Registry)
TMP_PREFIX = ".tmp-"
# The patterns end in \Z, not $: $ also matches before a final newline ("stable\n").
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
LABEL_PATTERN = NAME_PATTERN
# A version's name: a positive integer of at most 9 ASCII digits (str.isdigit also takes '²'
# and '١', which int() refuses or reads as another number).
VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,8}\Z")
# A folder name that says a version but is not one: 0100, v2, V2, -1, +3, 1.5, 1.0.0.
VERSION_LIKE_PATTERN = re.compile(r"^[vV]?[+-]?[0-9]+(?:\.[0-9]+)*\Z")
MAX_VERSION = 999_999_999  # the highest number VERSION_PATTERN names: a higher one would be invisible
STALE_TMP_SECONDS = 3600
MAX_SERVING_BYTES = 1 << 20


class RegistryError(Exception):
    """A registry operation that cannot be done; the message says why."""


NAME_CHARACTERS = "letters, digits, '.', '_' or '-' (at most 64 characters, starting with a letter or digit)"


def check_name(name: str, what: str = "model name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise RegistryError(f"{what} {name!r} is not valid: use {NAME_CHARACTERS}")
    return name


def _holds_versions(folder: Path) -> bool:
    """Whether ``folder`` is a folder with a version folder in it (False when it cannot be listed)."""
    try:
        return folder.is_dir() and bool(_version_numbers(folder))
    except OSError:
        return False


def _holds_a_version(folder: Path) -> bool:
    """Whether the model folder ``folder`` holds a version, looking no further than the first: the
    registry's list of models is read every poll, and a model may hold hundreds of versions."""
    with os.scandir(folder) as entries:
        return any(VERSION_PATTERN.match(entry.name) and Path(entry.path).is_dir() for entry in entries)


def _version_numbers(folder: Path, misnamed: list[str] | None = None) -> list[int]:
    """The versions in the model folder ``folder``, ascending; ``misnamed`` as for ``Registry.versions``."""
    versions, unread = [], []
    for path in folder.iterdir():
        if VERSION_PATTERN.match(path.name):
            if path.is_dir():
                versions.append(int(path.name))
        elif misnamed is not None and VERSION_LIKE_PATTERN.match(path.name) and path.is_dir():
            unread.append(path.name)
    if misnamed is not None:
        misnamed += (misnamed_version(name, versions) for name in unread)
        misnamed.sort()
    return sorted(versions)


def misnamed_version(folder: str, versions: Collection[int] = ()) -> str:
    """Why a folder named like a version (``0100``, ``v2``, ``1.5``) is not read as one, and what to name it;
    ``versions``, the model's, whose names are taken."""
    if not folder.isdigit():
        digits = folder.lstrip("vV+")
        if digits.isdigit() and 0 < int(digits) <= MAX_VERSION:
            return _rename_to(folder, int(digits), "the number alone", versions)
        return f"the folder {folder} is not read as a version: a version is named by a positive integer (1, 2, 3 ...)"
    number = int(folder)
    if number == 0:
        return f"the folder {folder} is not read as a version: versions are numbered from 1"
    if number > MAX_VERSION:
        return f"the folder {folder} is not read as a version: a version has at most 9 digits"
    return _rename_to(folder, number, "no leading zeros", versions)


def _rename_to(folder: str, number: int, why: str, versions: Collection[int]) -> str:
    """The advice to rename ``folder`` ``number``, unless a version has that name: mv would move it into that one."""
    if number in versions:
        return (f"the folder {folder} is not read as a version, and version {number} is the folder {number} "
                f"already: move {folder} out of the model's folder ('python -m trainer publish <folder>' adds it "
                "as the next version)")
    return f"the folder {folder} is not read as a version: rename it {number} ({why})"


class NotRegularFile(OSError):
    """A path that is a folder, a pipe, a socket or a device where a file was expected."""

    def __init__(self, path, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


def open_regular_file(path) -> BinaryIO:
    """``path`` opened for reading, which must be a regular file (else NotRegularFile). Opened
    without blocking: opening a FIFO for reading waits for a writer, and reading a device may never
    end, either of which would hang whoever reads it (every worker's watcher, an admin call holding
    the serving lock, a publisher)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        # Checked on the descriptor: open() refuses a folder's with IsADirectoryError and leaves it
        # open (it closes only what it opened itself), one descriptor lost on every watcher's retry.
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, "a folder" if stat.S_ISDIR(mode) else "a pipe, socket or device")
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def nearest_existing(folder: Path) -> Path:
    """``folder`` if it exists, else its nearest parent that does (where creating it would start)."""
    return next(p for p in (folder, *folder.parents) if p.exists())


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, deepest first: what ``mkdir -p`` makes."""
    return [path for path in (folder, *folder.parents) if not path.exists()]


@contextlib.contextmanager
def removed_if_left_empty(folders: list[Path]):
    """Around a write that makes ``folders`` (deepest first): if it fails or is stopped, remove those
    it left empty, so that a run which wrote nothing leaves no trace (a folder that holds anything,
    another publisher's say, stays)."""
    try:
        yield
    except BaseException:
        for path in folders:
            with contextlib.suppress(OSError):  # not empty, or not made after all
                path.rmdir()
        raise


def try_writing(folder: Path) -> tuple[Path, OSError | None]:
    """The nearest of ``folder`` and its parents that exists, and the error that creating a file
    in it raised (None: it can be written). Tried, not asked: os.access says yes to root for
    almost anything (a folder in /proc, a read-only mount)."""
    existing = nearest_existing(folder)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return existing, e
    return existing, None


def unwritable(folder: Path, error: OSError) -> str:
    """In words, why ``try_writing`` could make no file in ``folder``, which exists."""
    if error.errno == errno.ENOENT:  # "No such file or directory" of a folder that is there: /proc, /sys
        return f"no file or folder can be made in {folder}: it is a file system the kernel makes up, not storage"
    if error.errno == errno.EROFS:
        return f"{folder} is on a read-only file system"
    return f"{folder} is not writable by uid {os.getuid()} ({error.strerror or error})"


class Registry:
    """A registry folder. Every method reads the disk afresh: nothing is cached here.

    ``publish`` never gives a version number twice, so a pin or a label names one model for
    ever, even after its folder is deleted: ``<name>/.highest_version`` records the highest
    number it has given (readers ignore the file), and a new version takes the next number above
    that record, every version folder, and every version ``serving.json`` pins or labels (so a
    registry made before the record existed is safe too). Deleting a model's whole folder
    deletes its record: a new model of that name starts again at 1.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def model_names(self, unreadable: dict[str, str] | None = None,
                    misnamed: dict[str, str] | None = None) -> list[str]:
        """Names of the model folders (those with at least one version or a serving.json).

        A folder that cannot be listed (its permissions) is left out, so one such folder does not
        hide every other model; ``unreadable``, when given, receives its name and the reason. A
        folder that holds versions under a name that is no model's (``my model``), or only folders
        named like versions that are none (``0001``, ``v1``), is left out too; ``misnamed``, when given,
        receives its name and what to do.
        """
        names = []
        for entry in sorted(self.root.iterdir()):
            if not NAME_PATTERN.match(entry.name):
                if misnamed is not None and not entry.name.startswith(".") and _holds_versions(entry):
                    misnamed[entry.name] = (f"the folder {entry.name!r} holds versions but is not read as a model: "
                                            f"a name is {NAME_CHARACTERS}; rename it")
                continue
            try:
                wrong: list[str] = []
                if self.has_model(entry.name, wrong):
                    names.append(entry.name)
                elif misnamed is not None and wrong:
                    misnamed[entry.name] = f"the folder {entry.name!r} holds no version: {'; '.join(wrong)}"
            except OSError as e:
                if unreadable is not None:
                    unreadable[entry.name] = f"the folder {entry} cannot be read ({e.strerror or e})"
        return names

    def has_model(self, name: str, misnamed: list[str] | None = None) -> bool:
        """Whether ``<root>/<name>`` is a model folder: at least one version or a serving.json
        (OSError when the folder cannot be listed). ``misnamed`` as for ``versions``."""
        folder = self.root / check_name(name)
        if not folder.is_dir():
            return False
        if _holds_a_version(folder):
            return True
        if misnamed is not None:  # no version: the folders named like versions that are none
            _version_numbers(folder, misnamed)
        return (folder / SERVING_FILE).exists()

    def versions(self, name: str, misnamed: list[str] | None = None) -> list[int]:
        """Published versions of ``name``, ascending. Temporary and stray folders are ignored;
        ``misnamed``, when given, receives what each folder named like a version that is none
        (``0100``, ``0``, ``v2``, ``1.5``) should be instead, which a reader would otherwise skip unseen."""
        folder = self.root / check_name(name)
        return _version_numbers(folder, misnamed) if folder.is_dir() else []

    def model_folder(self, name: str) -> Path:
        """``<root>/<name>``, where serving.json and its lock are written; a link leading outside the
        registry is refused, as model_path refuses to read versions through one."""
        folder = self.root / check_name(name)
        if self._leads_outside(folder):
            raise RegistryError(f"the folder {name} leads outside the registry (a link); nothing is written there")
        return folder

    def model_path(self, name: str, version: int) -> Path:
        """Path of a version's model file, refusing links that lead outside the registry."""
        path = self.root / check_name(name) / str(int(version)) / MODEL_FILE
        if self._leads_outside(path):
            # Named relative to the registry: the message reaches clients in version reports.
            raise RegistryError(f"{path.relative_to(self.root)} leads outside the registry (a link); refused")
        return path

    def _leads_outside(self, path: Path) -> bool:
        """Whether ``path``, inside the registry by name, resolves (through a link) to a place outside it.
        A link that loops (or cannot be followed) is refused, named relative to the registry."""
        try:
            return self.root.resolve() not in path.resolve().parents
        except (RuntimeError, OSError):  # RuntimeError: Python 3.11's "Symlink loop"
            raise RegistryError(f"{path.relative_to(self.root)} is a link that loops or cannot be followed; "
                                "refused") from None

    # serving.json ------------------------------------------------------------------------

    def read_serving(self, name: str) -> dict:
        """The model's serving state: ``{"pinned": int | None, "labels": {label: version}}``, and
        ``"unloaded": true`` while the model is out of service (the service's V2 unload).

        A missing file means no pin and no labels; a malformed one raises RegistryError, as does a
        link leading outside the registry or to nothing (the pin is where it leads, out of reach).
        """
        path = self.root / check_name(name) / SERVING_FILE
        if path.is_symlink():
            if self._leads_outside(path):
                raise RegistryError(f"{path} is a link leading outside the registry; refused")
            if not path.exists():
                raise RegistryError(f"{path} is a link to a file that does not exist")
        try:
            with open_regular_file(path) as f:
                raw = f.read(MAX_SERVING_BYTES + 1)  # the workers read it on every poll
            if len(raw) > MAX_SERVING_BYTES:
                raise RegistryError(f"{path} is over {MAX_SERVING_BYTES} bytes; it holds a pin and labels only")
            data = read_json(raw.decode("utf-8"))
        except FileNotFoundError:
            return {"pinned": None, "labels": {}}
        except NotRegularFile as e:
            raise RegistryError(f"{path} is not a regular file ({e.kind})") from None
        except (OSError, ValueError) as e:  # ValueError: not UTF-8, not JSON, nested too deeply, a 5000-digit number
            raise RegistryError(f"{path} cannot be read: {e}") from None
        if not isinstance(data, dict):
            raise RegistryError(f"{path} must hold a JSON object")
        pinned = data.get("pinned")
        if pinned is not None and not _is_version(pinned):
            raise RegistryError(f"{path}: 'pinned' must be a version number (a positive integer of at most 9 "
                                f"digits) or null, not {shortened(json.dumps(pinned), 40)}")
        labels = data.get("labels")
        labels = {} if labels is None else labels
        if not (isinstance(labels, dict) and all(LABEL_PATTERN.match(k) and _is_version(v) for k, v in labels.items())):
            raise RegistryError(f"{path}: 'labels' must map label names to version numbers (positive integers of "
                                "at most 9 digits)")
        if "unloaded" in data and not isinstance(data["unloaded"], bool):
            raise RegistryError(f"{path}: 'unloaded' must be true or false, not "
                                f"{shortened(json.dumps(data['unloaded']), 40)}")
        return {**data, "pinned": pinned, "labels": labels}

    def write_serving(self, name: str, state: dict) -> None:
        """Replace serving.json atomically (temporary file in the same folder, then rename).

        The model's folder must exist (FileNotFoundError otherwise): creating it would bring back a
        model removed (rm -rf) while an admin call was changing it, as a folder holding only a
        serving.json: a model of no version, which a worker starting later cannot serve, so /readyz
        fails."""
        folder = self.model_folder(name)
        _write_atomically(folder / SERVING_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def update_serving(self, name: str, change: Callable[[dict], dict]) -> dict:
        """Read, change and write serving.json; returns the new state. A change that leaves the
        state as it is writes nothing, so that it succeeds where the registry is read-only too (a
        client loading a model already loaded, as Triton's clients do to be sure of it); the
        model's folder must still be there (FileNotFoundError), as for a write."""
        current = self.read_serving(name)
        state = change(current)
        if _as_compared(state) != _as_compared(current):
            self.write_serving(name, state)
        elif not self.model_folder(name).is_dir():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(self.root / name))
        return state

    # publishing ----------------------------------------------------------------------------

    def check_publishable(self, name: str) -> None:
        """Raise RegistryError now if publishing ``name`` could not work (a bad name, a registry
        path that is a file, a folder that cannot be written), so that a long training run is
        not spent before finding out."""
        target = self.root / check_name(name)
        for path in (self.root, target):
            if path.is_symlink() and not path.exists():  # mkdir would find it there, and fail
                raise RegistryError(f"cannot publish into {path}: it is a link to {os.readlink(path)}, "
                                    "which does not exist")
            if path.exists() and not path.is_dir():
                raise RegistryError(f"cannot publish into {path}: it is not a folder")
        self.model_folder(name)  # not a link leading outside the registry, whose versions would not be read
        existing, error = try_writing(target)
        if not existing.is_dir():  # a file where a folder on the way would go: no write access would help
            raise RegistryError(f"cannot publish into {self.root}: {existing} is not a folder")
        if error is not None:
            if error.errno in (errno.EACCES, errno.EPERM):
                # A folder another user owns (a registry made on the host, published into from a container).
                advice = (f"; give uid {os.getuid()} write access to it, or publish as its owner (with Docker: "
                          "SCRATCHNET_UID and SCRATCHNET_GID, docs/docker.md)")
            else:
                advice = "; choose a registry folder on a disk you can write to (--registry, or $SCRATCHNET_REGISTRY)"
            raise RegistryError(f"cannot publish {name} into {self.root}: {unwritable(existing, error)}{advice}")
        self.highest_published(name)  # a damaged record is refused now, not after training

    def publish(self, name: str, build: Callable[[Path, int], None],
                on_published: Callable[[int], None] = lambda version: None) -> int:
        """Publish a new version of ``name`` and return its number.

        ``build(folder, version)`` writes the version's files (``model.npz`` and any extras)
        into a temporary folder; it is then renamed to ``<name>/<version>`` in one step. The
        number is one above any this model has used (see the class docstring). If another publisher
        took that number first, the version is built again with the next. ``on_published(version)``
        is called as soon as the version is in place, even when Ctrl-C or SIGTERM stops the
        publisher right after the rename, so the caller knows what it published.
        """
        folder = self.model_folder(name)
        with removed_if_left_empty(_make_folder(folder)):
            return self._publish_into(folder, name, build, on_published)

    def _publish_into(self, folder: Path, name: str, build: Callable[[Path, int], None],
                      on_published: Callable[[int], None]) -> int:
        self.remove_stale_temporaries(name)
        for _ in range(100):
            version = self._highest_used(name) + 1
            if version > MAX_VERSION:
                raise RegistryError(f"cannot publish {name}: version {version} would have more than 9 digits "
                                    f"(the highest version number is {MAX_VERSION})")
            try:
                tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-", dir=folder))
            except FileNotFoundError:  # a concurrent first publish of this model failed and removed the folder
                _make_folder(folder)
                continue
            try:
                build(tmp, version)
                if not (tmp / MODEL_FILE).is_file():
                    raise RegistryError(f"publishing {name} v{version} wrote no {MODEL_FILE}")
                _fsync_tree(tmp)
                _make_readable(tmp)
                # The number is recorded before the version appears: a record that cannot be written
                # (a full disk) then fails the publish, rather than a published version whose number
                # a later publish could give again once it is deleted.
                self._record_given(name, version)
                os.rename(tmp, folder / str(version))  # fails if that version exists (not empty)
                on_published(version)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                if (folder / str(version)).exists():
                    continue  # lost the race for this number; build the next one
                raise RegistryError(f"cannot publish {name} v{version} into {self.root}: {e.strerror or e}; "
                                    "nothing was published") from None
            except BaseException:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:  # stopped just after the rename: the version is published all the same
                    on_published(version)
                raise
            with contextlib.suppress(OSError):  # the version is published: a failure here must not say otherwise
                _fsync_dir(folder)  # the new version survives a crash
            return version
        raise RegistryError(f"cannot publish {name}: too many concurrent publishers")

    def highest_published(self, name: str) -> int:
        """The highest version ever published of ``name`` as recorded (0 when nothing is recorded)."""
        path = self.root / check_name(name) / HIGHEST_FILE
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as e:
            raise RegistryError(f"{path} cannot be read: {e}") from None
        if not VERSION_PATTERN.match(text):
            raise RegistryError(f"{path} must hold the highest version published (a positive integer), "
                                f"not {shortened(text, 20)!r}")
        return int(text)

    def _highest_used(self, name: str) -> int:
        """The highest version number ``name`` has used: published, on disk, pinned or labelled."""
        try:
            serving = self.read_serving(name)
        except RegistryError:  # the workers keep their last good state; the record still holds
            serving = {"pinned": None, "labels": {}}
        named = [serving["pinned"] or 0, *serving["labels"].values()]
        return max(self.highest_published(name), *self.versions(name), *named)

    def _record_given(self, name: str, version: int) -> None:
        """Raise the record of the highest version given to ``version`` (never lower it: a
        concurrent publisher may have recorded a higher one)."""
        folder = self.root / name
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one read-compare-write of the record at a time
            if version > self.highest_published(name):
                _write_atomically(folder / HIGHEST_FILE, f"{version}\n")
        finally:
            os.close(fd)

    def remove_stale_temporaries(self, name: str, older_than: float = STALE_TMP_SECONDS) -> None:
        """Remove temporary folders left by a publisher that died (never seen by readers)."""
        folder = self.root / check_name(name)
        now = time.time()
        for entry in folder.glob(TMP_PREFIX + "*"):
            try:
                if now - entry.stat().st_mtime > older_than:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            except OSError:
                pass


def _is_version(value) -> bool:
    """A version number as serving.json holds it: a JSON integer from 1 to MAX_VERSION."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_VERSION


def _as_compared(state: dict) -> dict:
    """A serving state as it reads: ``"unloaded": false`` says what its absence does."""
    return {**state, "unloaded": bool(state.get("unloaded"))}


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: a temporary file in the same folder, then a rename, which
    survives a crash once the folder itself is synced (a pin an admin call answered is not lost)."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the change is made: a folder that cannot be synced must not say otherwise
        _fsync_dir(path.parent)


def _make_readable(folder: Path) -> None:
    """Let every user read a new version's files, whatever the publisher's umask (a service under
    another uid must load them). Its folders take the model folder's permissions, setgid
    included, so that in a registry shared by a group the group may delete the version too."""
    folder_mode = stat.S_IMODE(folder.parent.stat().st_mode) & ~(stat.S_ISUID | stat.S_ISVTX) | 0o755
    for path in (folder, *folder.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            os.chmod(path, folder_mode)
        elif stat.S_ISREG(mode):
            os.chmod(path, 0o644)


def _make_folder(folder: Path) -> list[Path]:
    """``mkdir -p folder``, what it creates readable by every user whatever the umask (the
    service may run as another user) and otherwise as the umask and a setgid parent make it.
    Returns the folders it made, deepest first."""
    missing = missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for path in missing:
        with contextlib.suppress(OSError):  # made by a concurrent publisher as another user: theirs
            os.chmod(path, stat.S_IMODE(path.stat().st_mode) | 0o755)
    return missing


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
