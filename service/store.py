"""The model store: which ``Model`` each worker serves, and the watcher that keeps it in step with
the registry (SPEC §2, §6).

Every worker process has one store. A background thread looks at the registry's list of models
every ``poll_interval`` seconds, and one thread per model looks at that model's folder as often:
a cheap pass of ``stat`` calls, a directory listing and a read of the small ``serving.json``,
and a model file is parsed only when it is new or changed (a failure is
remembered together with the file's ``(mtime, size, inode, ctime)``, so a bad file is read once,
not every poll; a file that could not be read at all is tried again with a back-off). A failure
counts only once the file has stayed as it was for a poll interval: a file written in place (``cp``),
which changes from pass to pass, is ``loading`` until whole rather than a failure each pass. New
versions are loaded and validated on that thread, off the request path, the newest first; the
served model then changes with one reference assignment, so a request keeps the ``Model`` it
started with. Only once a model has what it serves are its other new versions checked, for
a bounded time each pass, so that a burst of them never delays a swap or a pin; and since each
model has its own thread, one model's long load (a large new version) never delays another's. At
most two loads run at once and one model's status checks at a time, which bounds the memory loads
take (each holds its file and arrays) however many models change together. A load during
which its file changed is set aside for the next pass. A version that fails to load never
replaces a working one; the served version's own file, changed and failing (copied over in
place), is served from memory while it changes and for one pass more, then skipped as a worker
starting then would skip it, so that every worker serves the same version (a pinned one too: nothing then
serves, as in a worker starting then); a new file that loads serves in its
place, whoever loaded it first. When the registry
disappears the store keeps serving what it holds and says so in ``readiness()``; a pass during
which a model's folder goes applies nothing of what it read (a half-read folder seems to have no
pin, no labels and failed versions).

Which version serves: the one ``serving.json`` pins, else the highest version that loads. A
``serving.json`` that cannot be used keeps the last good state; a worker that has never read a
good one serves nothing of that model until it is fixed (it may pin another version). A pin
that cannot be honoured (the version is missing or fails to load) keeps the version served
before and reports the problem (the pinned version itself, served, only for a pass once its folder
went or its file failed, as any served version); with nothing served before (a worker starting), the model is
not servable (503, and ``/readyz`` says why) rather than serving a version the pin excludes. A
model whose folder is gone, or holds neither a version nor ``serving.json`` (no model folder for
``Registry.has_model``), with the registry there, on two passes in a row has been removed: it is
no longer served (404, or 503 for a model named in ``SCRATCHNET_MODELS``), and a worker started
later agrees. One pass is not enough: ``rm -rf`` of the whole registry, or its re-creation, passes
through a moment when the registry is there without the model's folder, and the store keeps
serving from memory when the registry itself goes. Likewise a folder whose ``serving.json`` stays
but whose versions are all gone (being rewritten, or deleted) serves from memory for one pass, and
nothing once the next pass finds no version either (503), as a worker starting then would.

Memory stays bounded: a model holds the served version and the versions that serving labels point
to, and the worker an LRU of at most ``cached_versions`` other recently used versions, all models
together, so that asking for old versions of many models holds no more.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ModelFileError
from shared.forward import Model
from shared.model_file import load_model, read_manifest
from shared.registry import (LABEL_PATTERN, MODEL_FILE, NAME_CHARACTERS, SERVING_FILE, VERSION_PATTERN, Registry,
                             RegistryError, check_name)

from .errors import Conflict, NotFound, NotReady, access_advice

log = logging.getLogger("scratchnet.store")

MAX_RETRY_SECONDS = 60.0  # the longest wait before reading again a file that could not be read
UNLOADED_WAIT = 2.0  # the longest a request to an unloaded model waits for a registry pass in progress
STOP_WAIT_SECONDS = 5.0  # the longest stop() waits for the watcher threads, all together
CHECK_SECONDS = 0.25  # the most a pass spends (past one load) checking versions nothing serves, for their status
# Of a poll interval: how long a file that failed to load must be seen unchanged (by two looks that far apart)
# for the failure to count, the passes coming an interval apart give or take (VersionRecord.settled).
SETTLE_POLLS = 0.9
AVAILABLE = "available"
LOADING = "loading"
FAILED = "failed"


def failed_status(reason: str) -> str:
    """The status of a version that cannot be served, for ``reason``: ``"failed: <reason>"``."""
    return f"{FAILED}: {reason}"


def dangling_label(name: str, label: str, version: int) -> NotFound:
    """The 404 for a label that points to a version the registry no longer holds."""
    return NotFound(f"Label {label!r} of model {name} points to version {version}, which does not exist; point it "
                    f"at a version that does (PUT /models/{name}/labels/{label} with {{\"version\": N}}) or delete "
                    f"it (DELETE /models/{name}/labels/{label}).", code="version_not_found")


def failure_reason(status: str) -> str | None:
    """Why a version cannot be served, from its status (see failed_status); None when it has not failed."""
    return status.removeprefix(FAILED + ": ") if status.startswith(FAILED) else None


@dataclass
class VersionRecord:
    """What the store knows of one version: its status and the file state it was checked against."""
    status: str = LOADING          # "available", "loading" or "failed: <reason>"
    stamp: tuple | None = None     # (mtime_ns, size, inode, ctime_ns) of model.npz when checked
    retry_at: float | None = None  # a failure to read the file (not its content): when to try again
    retries: int = 0               # such failures in a row of this file
    kept_served: bool = False      # the served version, kept in memory for a pass after this file failed
    reported: bool = False         # its status was reported (metrics): its removal must be too
    # The file's stamp has stayed as it is for a poll interval (SETTLE_POLLS), from ``seen`` to a later look,
    # or was seen on this worker's first pass, with nothing earlier to compare: only then does a failed load
    # count. A file that fails while unsettled may be being written in place (cp): its failure (status,
    # unreadable) waits for a pass that finds the file settled, which counts it without parsing the file
    # again (a file that could not be read is read again).
    settled: bool = False
    unsettled_failure: tuple[str, bool] | None = None
    seen: float = field(default_factory=lambda: time.monotonic())  # when this stamp was first seen


@dataclass
class ModelSlot:
    """One model name. ``served`` is the only reference requests read; it is replaced whole."""
    name: str
    served: Model | None = None
    pinned: int | None = None
    labels: dict[str, int] = field(default_factory=dict)
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    resident: dict[int, Model] = field(default_factory=dict)        # served and labelled versions
    # A new load of a version in service (its file rewritten in place) made outside the pass's own
    # choice of what serves (a status check, an admin call): the next pass serves it, not the old copy.
    fresh: dict[int, Model] = field(default_factory=dict)
    recent: OrderedDict = field(default_factory=OrderedDict)         # other versions (see ModelStore._recent)
    serving_state: dict | None = None  # serving.json as last read (None: never read)
    serving_error: str | None = None
    unloaded: bool = False         # "unloaded": true in serving.json: out of service until loaded again
    # Loaded again in serving.json: the model stays unloaded until a look at it serves what the state
    # asks (the pin may have changed meanwhile), so that no request meets the version from before.
    reloading: bool = False
    pin_problem: str | None = None  # why the pinned version cannot serve, while it cannot
    problems: list[str] = field(default_factory=list)
    misnamed: list[str] = field(default_factory=list)  # folders named like versions that are none, and why
    swaps: int = 0
    folder_missing: bool = False   # the last pass found the registry without this model (see has_model)
    # the last pass found its folder, serving.json in it, and no version; or what served gone and no version that loads
    no_versions: bool = False
    # One look at this model's registry folder at a time; a look at another model, or a load of
    # another's large version, never waits on it.
    refresh_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


def about(model: str, version: int | None = None) -> dict:
    """A log line's ``extra``: the model (and version) it is about, as fields of their own in both
    log formats, for a log pipeline to filter on as it does the access lines'."""
    return {"model": model, "version": version}


class StoreEvents:
    """What the store reports as it works; ``service.metrics.Metrics`` records these."""

    def model_added(self, name: str) -> None: ...  # a model the store now knows of, serving nothing yet
    def served(self, name: str, old: int | None, new: int | None) -> None: ...  # new None: model removed
    def load_failed(self, name: str, version: int, reason: str) -> None: ...
    def version_status(self, name: str, version: int, status: str) -> None: ...
    def version_removed(self, name: str, version: int) -> None: ...
    def pin_unservable(self, name: str, pinned: int | None) -> None: ...  # None: the pin serves (or none is set)
    def registry_status(self, ok: bool) -> None: ...
    def unreadable_models(self, count: int) -> None: ...  # model folders that cannot be listed
    def model_unloaded(self, name: str, unloaded: bool) -> None: ...  # taken out of service, or back


def _is_version(model: Model | None, version: int) -> bool:
    """Whether ``model`` (a served one, say, or None when nothing serves) is ``version``."""
    return model is not None and model.version == version


def _stamp(path: str | Path) -> tuple | None:
    """What says a file changed. The ctime changes with its permissions and owner too, so a file
    that failed because it could not be read is read again once that is fixed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def _content_changed(before: tuple | None, after: tuple | None) -> bool:
    """Whether a file's content (mtime, size, inode) or its presence differs between two stamps; a
    new ctime alone (its permissions, owner or links changed) is the same content."""
    return before != after if before is None or after is None else before[:3] != after[:3]


def _changed(record: VersionRecord, stamp: tuple | None, path: str | Path) -> bool:
    """Whether the file at ``path`` may no longer be the one ``record`` describes: its content (mtime,
    size, inode) changed, or, for a file that was not loaded, also its permissions or owner (the
    ctime), which may have been why. A loaded file whose permissions or owner change is loaded again
    only if this process can no longer read it: it then fails and is passed over, as a worker
    starting then passes it over, so that every worker serves the same version."""
    if record.status != AVAILABLE or _content_changed(record.stamp, stamp):
        return record.stamp != stamp
    return record.stamp != stamp and not os.access(path, os.R_OK)


def _awaits_next_pass(record: VersionRecord) -> bool:
    """Whether ``record``'s file failed to load before it settled: a later pass looks at it again, and
    counts the failure once the file has stayed as it was (VersionRecord.settled)."""
    return record.unsettled_failure is not None and not record.settled


def _changing(record: VersionRecord) -> str:
    """What the file of a version still ``loading`` is doing, for a message: "is changing ..."."""
    if record.unsettled_failure is None:
        return "is changing"  # it changed while it was read
    return f"is changing (being written?) and does not load as it is: {failure_reason(record.unsettled_failure[0])}"


def _status_said(record: VersionRecord) -> str:
    """A version's status for a message: a failure still waiting to count says what it is."""
    if _awaits_next_pass(record):
        return f"{LOADING}, its file {_changing(record)}"
    return record.status


def _reason(error: Exception) -> str:
    if isinstance(error, ModelFileError):
        return error.reason
    if isinstance(error, (RegistryError, OSError)):
        return str(error)
    return f"the file cannot be loaded ({type(error).__name__}: {error})"


class ModelStore:
    def __init__(self, registry: Registry, *, models: tuple[str, ...] | None = None,
                 poll_interval: float = 1.0, cached_versions: int = 4, max_model_bytes: int | None = None,
                 events: StoreEvents | None = None):
        self.registry = registry
        self.configured = tuple(check_name(n) for n in models) if models else None
        self.poll_interval = poll_interval
        self.cached_versions = cached_versions
        self.max_model_bytes = max_model_bytes
        self.events = events or StoreEvents()
        self.registry_error: str | None = None
        self._registry_seen = False  # whether a pass has ever found the registry readable
        self._first_pass_done = False  # whether a pass has brought the models in line (VersionRecord.settled)
        self._unreadable: dict[str, str] = {}  # model folders that cannot be listed, and why
        self._misnamed: dict[str, str] = {}  # folders of versions whose names are no model's, and why
        self._slots: dict[str, ModelSlot] = {n: ModelSlot(n) for n in self.configured or ()}
        for name in self._slots:
            self.events.model_added(name)
        self._refresh_lock = threading.Lock()   # one look at the registry's folder list at a time
        self._check_turn = 0                    # which model the next pass's checks start with
        self._lock = threading.RLock()          # short: records and caches
        self._loading: dict[tuple[str, int], Future] = {}  # loads in progress, shared by whoever wants them
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None
        self._model_threads: dict[str, threading.Thread] = {}  # each model's watcher, started by _thread
        self._phases = 0  # model watchers started: each one's place in the poll interval (_watch_model)
        self._no_thread: set[str] = set()  # models whose thread could not start: the list thread looks at them
        self._checking = threading.Lock()  # one model's status checks at a time, whichever thread runs them
        self._loads = threading.BoundedSemaphore(2)  # loads at once: one long load blocks no other model's
        # Every model's recent versions (ModelSlot.recent), least recent first: what bounds them all together.
        self._recent: OrderedDict[tuple[str, int], ModelSlot] = OrderedDict()

    # the watcher ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the watcher threads in this process (again after a fork: threads do not survive it)."""
        if self._thread is not None and self._thread.is_alive() and self._thread_pid == os.getpid():
            return
        self._stop = threading.Event()
        self._model_threads = {}
        self._thread = threading.Thread(target=self._watch, name="scratchnet-registry-watcher", daemon=True)
        self._thread_pid = os.getpid()
        self._thread.start()

    def stop(self) -> None:
        """Stop the watcher threads, waiting STOP_WAIT_SECONDS at most for all of them together (one may
        be loading a large version). The list's thread goes first, so no model's thread starts after."""
        self._stop.set()
        if self._thread is not None and self._thread_pid == os.getpid():
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            self._thread.join(timeout=STOP_WAIT_SECONDS)
            for thread in list(self._model_threads.values()):
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._thread = None
        self._model_threads = {}

    def _watch(self) -> None:
        """The registry's list of models, every poll interval; each model's own thread (started here
        for a model new to this store) brings it in line with its folder, so that a model whose load
        takes long (a large new version, seconds) holds back no other model's pin or new version."""
        self._every_poll(self._watch_models, stop=self._stop)

    def _watch_models(self) -> None:
        with self._refresh_lock:
            if not self._registry_readable():
                for slot in list(self._slots.values()):
                    slot.folder_missing = False
                return
            names = self._discover()
        for name in [n for n, t in self._model_threads.items() if not t.is_alive()]:
            del self._model_threads[name]  # a model forgotten: its thread ended
        for name in names:
            if name in self._model_threads:
                continue
            thread = threading.Thread(target=self._watch_model, args=(name, self._stop), daemon=True,
                                      name=f"scratchnet-registry-watcher-{name}")
            try:
                thread.start()
            except RuntimeError as e:  # no thread to be had (ulimit -u, -v): this thread looks at it
                if name not in self._no_thread:
                    log.error("%s: cannot start its watcher thread (%s); the thread listing the models watches it",
                              name, e, extra=about(name))
                self._no_thread.add(name)
                self.refresh([name], check_registry=False)
                continue
            self._no_thread.discard(name)
            self._model_threads[name] = thread

    def _watch_model(self, name: str, stop: threading.Event) -> None:
        """One model's passes, the first at once; the thread ends once the model is forgotten (its
        folder removed), and _watch starts another if the model comes back.

        The models found together would otherwise pass together every interval, all their ``stat``
        calls in one burst that requests wait behind. The second pass comes early instead, after a
        share of the interval that spreads the models across it (multiples of the golden ratio's
        fraction, evenly spread however many models there are), so no gap exceeds the interval."""
        def look() -> bool:
            if name not in self._slots:
                return False
            self.refresh([name], check_registry=False)  # the list thread looks at the registry itself
            return True

        phase = (self._phases * 0.6180339887) % 1.0
        self._phases += 1
        self._every_poll(look, at_once=True, stop=stop, phase=phase)

    def _every_poll(self, look, *, at_once: bool = False, stop: threading.Event | None = None,
                    phase: float = 1.0) -> None:
        """``look()`` every poll interval (the first at once if ``at_once``, the second ``phase`` of
        an interval after the first) until the store stops or it returns False. From start to start:
        waiting a whole interval after each pass would let a change wait the interval plus a pass (its
        loads and status checks). A pass longer than the interval (a slow network file system) is
        followed by a rest of a tenth of it, so that the watcher never competes with requests without a
        break."""
        wait = 0.0 if at_once else self.poll_interval
        stop = stop or self._stop  # this thread's store start: a later start() has its own
        interval = self.poll_interval * phase
        while not stop.wait(wait):
            started = time.monotonic()
            try:
                if look() is False:
                    return
            except Exception:  # the watcher must outlive any surprise; the next pass retries
                log.exception("registry refresh failed")
            wait = max(self.poll_interval / 10, started + interval - time.monotonic())
            interval = self.poll_interval

    # one pass over the registry ------------------------------------------------------------

    def refresh(self, names: list[str] | None = None, *, validate_all: bool = True,
                check_registry: bool = True) -> None:
        """Bring the store in line with the registry (for ``names``, default every model).

        Every model first loads only what it needs to serve (the served and labelled versions),
        so that no model's swap waits on another's loads. Then, with ``validate_all``, the other
        new versions are checked for their status, each model's newest first (a model after
        another, starting with the next one each pass), until CHECK_SECONDS (or half the poll
        interval, if shorter) have passed, the load under way finishing (a burst of large
        versions must not keep the watcher from serving.json for longer); the rest stay
        ``loading`` until a later pass checks them.
        """
        with self._refresh_lock:
            if not (self._registry_readable() if check_registry else self.registry_error is None):
                for slot in list(self._slots.values()):
                    slot.folder_missing = False
                return
            if names is None:
                names = self._discover()
            slots = [slot for slot in map(self._slots.get, names) if slot is not None]
        for slot in slots:
            with slot.refresh_lock:
                if self._slots.get(slot.name) is not slot:  # forgotten meanwhile (its folder went)
                    continue
                try:
                    self._refresh_model(slot)
                except Exception:  # one model's surprise must not stop the others being refreshed
                    log.exception("%s: registry refresh failed; serving what is loaded", slot.name)
        self._first_pass_done = True
        if validate_all:
            self._check_new_versions(slots, time.monotonic() + min(CHECK_SECONDS, self.poll_interval / 2))

    def _check_new_versions(self, slots: list[ModelSlot], deadline: float) -> None:
        """Load each version still ``loading`` for its status, newest first, until ``deadline``;
        one at least. Each pass starts with the next model, so that one whose loads take the whole
        time (or are set aside, its file being copied) does not keep the others' unchecked. A model
        being looked at by another thread (an admin call), or whose folder went, is left to the
        next pass."""
        if not self._checking.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return  # another model's checks took this pass's time: the next pass
        try:
            self._check_new_versions_locked(slots, deadline)
        finally:
            self._checking.release()

    def _check_new_versions_locked(self, slots: list[ModelSlot], deadline: float) -> None:
        self._check_turn += 1
        start = self._check_turn % len(slots) if slots else 0
        for slot in slots[start:] + slots[:start]:
            if not slot.refresh_lock.acquire(blocking=False):
                continue
            try:  # the loads run without the lock, which an admin call's look at this model needs
                if self._slots.get(slot.name) is not slot or slot.folder_missing:
                    continue
                with self._lock:
                    waiting = sorted((v for v, r in slot.versions.items() if r.status == LOADING
                                      and not _awaits_next_pass(r)), reverse=True)
            finally:
                slot.refresh_lock.release()
            for version in waiting:
                try:
                    self._checked(slot, version, keep=False)  # checked for its status, not kept in memory
                except Exception:  # as in the pass: one surprise must not stop the watcher
                    log.exception("%s v%d: checking it failed", slot.name, version)
                if time.monotonic() >= deadline:
                    return

    def _registry_readable(self) -> bool:
        root = self.registry.root
        try:
            if not root.is_dir():
                raise OSError(f"the registry folder {root} does not exist")
            os.listdir(root)
        except OSError as e:
            error = e.strerror and f"the registry folder {root} cannot be read ({e.strerror})" or str(e)
            if e.errno in (errno.EACCES, errno.EPERM):
                error += ": " + access_advice("read")
            if error != self.registry_error:
                serving = any(slot.served is not None for slot in self._slots.values())
                log.error("%s; %s", error, "serving the models already loaded" if serving
                          else "no model is served until it can be read")
            self.registry_error = error
            self.events.registry_status(False)
            return False
        if self.registry_error:
            log.info("the registry folder %s is readable again", root)
        self.registry_error = None
        self._registry_seen = True
        self.events.registry_status(True)
        return True

    def _discover(self) -> list[str]:
        if self.configured is not None:
            return list(self.configured)
        unreadable: dict[str, str] = {}
        misnamed: dict[str, str] = {}
        try:
            names = self.registry.model_names(unreadable, misnamed)
        except OSError:  # the registry went after this pass found it readable: the next pass says so
            return list(self._slots)
        if not self.registry.root.is_dir():  # it went during the listing: its folders were not unreadable
            unreadable = {}
        for name, reason in unreadable.items():
            if self._unreadable.get(name) != reason:
                slot = self._slots.get(name)
                served = slot.served if slot is not None else None  # a worker started since serves nothing of it
                log.error("%s: %s; %s", name, reason, "it is not served until it can be read" if served is None
                          else f"serving version {served.version} from memory until it can be read", extra=about(name))
        for name in set(self._unreadable).intersection(names).difference(unreadable):
            log.info("%s: its folder can be read again", name, extra=about(name))
        for name, reason in misnamed.items():
            if name not in self._misnamed:
                log.warning("the registry: %s", reason)
        self._unreadable, self._misnamed = unreadable, misnamed
        self.events.unreadable_models(len(unreadable))
        self._add_models(names)
        return list(self._slots)

    def _add_models(self, names) -> None:
        """A slot for each of ``names`` this store does not know yet, each reported (model_added)."""
        with self._lock:
            added = [name for name in names if name not in self._slots]
            for name in added:
                self._slots[name] = ModelSlot(name)
        for name in added:
            self.events.model_added(name)

    def _refresh_model(self, slot: ModelSlot) -> None:
        """Bring one model in line with its registry folder: read it, then choose and serve."""
        folder = self.registry.root / slot.name
        try:
            present = folder.is_dir()
        except OSError as e:  # the registry became unreadable since the list's look, whose next look says so
            self._unreadable_folder(slot, e)
            return
        if not present:
            self._note_missing_folder(slot)
            return
        read = self._read_folder(slot, folder)
        if read is not None and not read[2] and not (folder / SERVING_FILE).exists():
            self._note_missing_folder(slot)  # neither a version nor serving.json: no model's folder any more
            return
        slot.folder_missing = False
        if read is None:
            return
        serving, misnamed, stamps = read
        self._apply_serving(slot, *serving)
        # serving.json unusable and never read (a worker starting): it may pin a version or unload
        # the model, so serving the latest would be a guess that the other workers do not make.
        unknown_state = slot.serving_state is None and slot.serving_error is not None
        problems = self._state_problems(slot, misnamed, unknown_state)
        self._sync_versions(slot, stamps)
        target = self._choose_served(slot, stamps, unknown_state, problems)
        resident = self._resolve_labels(slot, stamps, target, problems)
        self._record_pass(slot, resident, problems)
        if target is not None and target is not slot.served:
            self._swap(slot, target)
        if slot.reloading:  # back in service, serving what the state asks
            slot.reloading = slot.unloaded = False
            self.events.model_unloaded(slot.name, False)

    def _holds_model(self, name: str) -> bool:
        """Whether the registry has a folder for ``name`` that is a model's (a version or serving.json
        in it): a worker starting now would serve it. One that cannot be listed is not gone."""
        try:
            return self.registry.has_model(name)
        except OSError:
            return True

    def _note_missing_folder(self, slot: ModelSlot) -> None:
        """The model was not found (see _holds_model): forgotten if the previous pass missed it too."""
        # Removed from the registry, unless the whole registry went after this pass found it
        # readable (an unmounted volume) or was swapped for another in two renames: then it
        # serves from memory, as the next pass says. The folder is looked at again after the
        # registry, so that a registry back in place by then is not taken for a removal either.
        # A removal also has to be seen again by the next pass (module docstring).
        if self.registry.root.is_dir() and not self._holds_model(slot.name):
            if slot.folder_missing:
                self._forget(slot)
            else:
                slot.folder_missing = True
                if slot.served is not None:
                    with self._lock:
                        slot.problems = [f"no version and no serving.json in the registry; still serving "
                                         f"v{slot.served.version} from memory for one more pass"]
        else:
            slot.folder_missing = False

    def _read_folder(self, slot: ModelSlot, folder: Path) -> tuple | None:
        """``(serving, misnamed, stamps)``: serving.json as ``_read_serving`` gives it, the folders
        named in digits that are no version, and each version on disk with its file's stamp. None
        when this pass must apply nothing: the folder cannot be listed, or went while it was read."""
        # serving.json first: a version it pins or labels was published before it was written, so
        # the listing that follows has it (read the other way round, a pin written just after a
        # publish would look like a pin of a version that does not exist).
        serving = self._read_serving(slot.name)
        misnamed: list[str] = []
        try:
            on_disk = self.registry.versions(slot.name, misnamed)
        except OSError as e:
            self._unreadable_folder(slot, e)
            return None
        stamps = {v: _stamp(self._file(slot.name, v)) for v in on_disk}
        if not folder.is_dir():
            # The folder (or the whole registry) went while this pass read it: a missing serving.json
            # or model file then says nothing of the pin, the labels or the versions. The next pass
            # sees what is there.
            return None
        return serving, misnamed, stamps

    @staticmethod
    def _unreadable_folder(slot: ModelSlot, error: OSError) -> None:
        """The model's folder cannot be read: what serves goes on serving from memory, and says why."""
        slot.problems = [f"the folder of {slot.name} cannot be read ({error.strerror}); serving from memory"]

    def _state_problems(self, slot: ModelSlot, misnamed: list[str], unknown_state: bool) -> list[str]:
        """The problems of an unusable serving.json and of misnamed version folders (new ones logged)."""
        problems: list[str] = []
        if slot.serving_error:
            problems.append(slot.serving_error + ("; nothing is served until it is fixed" if unknown_state
                                                  else "; using the last good serving state"))
        for reason in set(misnamed) - set(slot.misnamed):
            log.warning("%s: %s", slot.name, reason, extra=about(slot.name))
        slot.misnamed = misnamed
        problems += misnamed
        return problems

    def _sync_versions(self, slot: ModelSlot, stamps: dict[int, tuple | None]) -> None:
        """Bring the version records in line with the files on disk (``stamps``): records of versions
        gone are dropped and reported, new or changed files are to be loaded again."""
        with self._lock:
            removed = {v: slot.versions.pop(v) for v in set(slot.versions) - set(stamps)}
            for gone in removed:
                slot.recent.pop(gone, None)
            now = time.monotonic()
            for v, stamp in stamps.items():
                record = slot.versions.get(v)
                if record is not None and record.stamp == stamp and record.retry_at is not None \
                        and record.retry_at <= now:  # an I/O error may have passed (a network file system)
                    slot.versions[v] = VersionRecord(LOADING, stamp, retries=record.retries, settled=True,
                                                     kept_served=record.kept_served, reported=record.reported)
                elif record is None or record.stamp != stamp and _changed(record, stamp, self._file(slot.name, v)):
                    slot.versions[v] = VersionRecord(LOADING, stamp, reported=record is not None and record.reported,
                                                     settled=not self._first_pass_done)
                    if record is not None:
                        slot.recent.pop(v, None)
                        slot.resident.pop(v, None)
                elif record.stamp != stamp:  # a loaded file, still readable, whose permissions or owner changed
                    record.stamp = stamp
                else:  # as it was: checked, or still to be (with its retries and what it keeps)
                    record.settled = record.settled or now - record.seen >= SETTLE_POLLS * self.poll_interval
        for version in sorted(removed):
            self._log_removed(slot, version)
        self._report_removed(slot.name, removed)

    def _log_removed(self, slot: ModelSlot, version: int) -> None:
        """Say that ``version``'s folder left the registry, which ``/models/<name>`` shows only by its
        absence; a warning naming the labels that now point to nothing (a pin says so on its own)."""
        labels = sorted(label for label, v in slot.labels.items() if v == version)
        if labels:
            named = ", ".join(repr(label) for label in labels)
            named = f"label {named} still points" if len(labels) == 1 else f"labels {named} still point"
            log.warning("%s: version %d is gone from the registry, and %s to it: point each at a version that "
                        "exists (PUT /models/%s/labels/<label>) or delete it", slot.name, version, named, slot.name,
                        extra=about(slot.name, version))
        else:
            log.info("%s: version %d is gone from the registry", slot.name, version, extra=about(slot.name, version))

    def _choose_served(self, slot: ModelSlot, stamps: dict[int, tuple | None], unknown_state: bool,
                       problems: list[str]) -> Model | None:
        """What should serve: the pin, else the highest version that loads. What cannot be served
        never replaces what serves (module docstring). Why not is added to ``problems``."""
        pin_problem = None
        if not stamps:
            target = self._without_versions(slot, problems)
            if slot.pinned is not None:
                pin_problem = f"pinned version {slot.pinned} does not exist"
        else:
            gone_before, slot.no_versions = slot.no_versions, False
            if unknown_state:
                target = slot.served
            elif slot.pinned is not None:
                target, pin_problem = self._pinned_target(slot, stamps, problems, gone_before)
            else:
                target = self._highest_servable(slot, stamps, problems, gone_before)
        self._report_pin(slot, pin_problem, target)
        return target

    def _without_versions(self, slot: ModelSlot, problems: list[str]) -> Model | None:
        """No version on disk. What serves goes on serving from memory for this pass (the folder may
        be being rewritten); once the next pass finds none either, nothing serves, as nothing would
        in a worker starting then, so that every worker agrees."""
        served = slot.served
        if served is not None and not slot.no_versions:
            slot.no_versions = True
            problems.append(f"no version on disk; still serving v{served.version} from memory for one more pass")
            return served
        slot.no_versions = False
        if served is not None:
            log.info("%s: no version left in its folder; no longer served", slot.name, extra=about(slot.name))
            slot.served = None
            self.events.served(slot.name, served.version, None)
        return None

    def _pinned_target(self, slot: ModelSlot, stamps: dict[int, tuple | None], problems: list[str],
                       gone_before: bool = False) -> tuple[Model | None, str | None]:
        """``(the pinned version, None)`` if it loads, else ``(what served before, why the pin cannot serve)``.
        What served before is the pinned version itself when its folder went or its file fails: it serves
        from memory while its file changes and for one pass more (``gone_before``: the previous pass gave it
        that pass), then no longer, as in a worker starting then, so that every worker agrees."""
        target = self._checked(slot, slot.pinned) if slot.pinned in stamps else None
        if target is not None:
            return target, None
        record = slot.versions.get(slot.pinned) if slot.pinned in stamps else None
        why = _status_said(record) if record is not None else "does not exist"
        pin_problem = f"pinned version {slot.pinned} {why}"
        target = slot.served
        if _is_version(target, slot.pinned) and not self._grant_grace_pass(slot, record, gone_before):
            log.warning("%s: the pinned version %d %s; no longer served, as in a worker starting now", slot.name,
                        slot.pinned, "is gone" if record is None else f"has {record.status}",
                        extra=about(slot.name, slot.pinned))
            slot.served = target = None
            self.events.served(slot.name, slot.pinned, None)
        problems.append(pin_problem + (f"; still serving v{target.version}" if target is not None
                                       else "; nothing is served"))
        return target, pin_problem

    @staticmethod
    def _grant_grace_pass(slot: ModelSlot, record: VersionRecord | None, gone_before: bool) -> bool:
        """Give the served version, whose folder went (``record`` None) or whose file does not load, its
        grace if it still has some, and say whether it goes on serving from memory on this pass: while its
        file changes (being copied over), and for the one pass after it went (``gone_before``: the previous
        pass gave it that pass) or failed (``record.kept_served``, set here; a failure that waits for the next
        pass, see VersionRecord.settled, has that pass), then no longer, as in a worker starting then, so that
        every worker serves the same version. The pinned version and the highest that serves follow this rule."""
        if record is None:
            slot.no_versions = not gone_before
            return not gone_before
        if record.status == LOADING and record.unsettled_failure is None:
            return True
        kept, record.kept_served = record.kept_served, True  # failed, perhaps still being written: its pass
        return not kept

    def _highest_servable(self, slot: ModelSlot, stamps: dict[int, tuple | None], problems: list[str],
                          gone_before: bool = False) -> Model | None:
        """The highest version on disk that loads; what serves, while its own file is changing (or has
        failed on one pass alone), or for one pass when it is gone and no version loads (``gone_before``:
        the previous pass gave it that pass)."""
        for v in sorted(stamps, reverse=True):
            target = self._checked(slot, v)
            if target is not None:
                return target
            record = slot.versions.get(v)
            if _is_version(slot.served, v) and record is not None \
                    and self._grant_grace_pass(slot, record, gone_before):
                # Its file changed (being copied over, or damaged) and does not load: the copy in memory
                # serves while the file changes or on the pass it first fails; a file that stays as it is
                # and fails is then skipped below, as a worker starting now skips it.
                if record.status != LOADING:  # failed: this is its one pass
                    log.warning("%s: the file of the served version %d changed and %s; serving it from "
                                "memory for one more pass", slot.name, v, record.status, extra=about(slot.name, v))
                why = _changing(record) if record.status == LOADING else f"changed and {record.status}"
                problems.append(f"version {v}'s file {why}; still serving v{v} from memory for now")
                return slot.served
        served = slot.served
        if served is None:
            return None
        record = slot.versions.get(served.version)
        if record is None and self._grant_grace_pass(slot, None, gone_before):  # its folder gone (being rewritten?)
            problems.append(f"version {served.version} is gone and no other version can be served; still serving "
                            f"v{served.version} from memory for one more pass")
            return served
        if record is None or record.kept_served:
            # Its file failed and stayed so, or is gone, and no other version loads: a worker starting now
            # serves nothing of the model, so neither does this one (it would answer for good beside 503s).
            why = "is gone" if record is None else f"has {record.status}"
            log.warning("%s: no version can be served, the file of the served version %d %s; no longer served",
                        slot.name, served.version, why, extra=about(slot.name, served.version))
            slot.served = None
            self.events.served(slot.name, served.version, None)
            return None
        problems.append(f"no version on disk can be served; still serving v{served.version} from memory")
        return served

    def _resolve_labels(self, slot: ModelSlot, stamps: dict[int, tuple | None], target: Model | None,
                        problems: list[str]) -> dict[int, Model]:
        """What stays in memory: ``target`` and each version a label points to that loads (a label
        that cannot be served is added to ``problems``)."""
        resident = {target.version: target} if target is not None else {}
        for label, v in slot.labels.items():
            if v not in stamps:
                problems.append(f"label {label!r} points to version {v}, which does not exist")
                continue
            model = resident.get(v) or self._checked(slot, v)
            if model is None:
                problems.append(f"label {label!r} points to version {v}, which {slot.versions[v].status}")
            else:
                resident[v] = model
        return resident

    def _record_pass(self, slot: ModelSlot, resident: dict[int, Model], problems: list[str]) -> None:
        """Record what stays in memory (out of the LRU) and the pass's problems; a fresh load is
        forgotten once it is what stays, or its version no longer does."""
        with self._lock:
            slot.resident = resident
            for v in resident:
                slot.recent.pop(v, None)
            slot.fresh = {v: m for v, m in slot.fresh.items() if v in resident and resident[v] is not m}
            slot.problems = problems

    def _swap(self, slot: ModelSlot, target: Model) -> None:
        """Serve ``target`` in place of what serves, logged and reported."""
        old = slot.served
        slot.served = target  # the swap: one reference assignment
        if old is not None:
            slot.swaps += 1
        if old is None:
            log.info("%s: now serving version %d", slot.name, target.version, extra=about(slot.name, target.version))
        elif old.version == target.version:  # a new file under the same number (a registry swapped whole)
            log.info("%s: version %d reloaded, its file having changed", slot.name, target.version,
                     extra=about(slot.name, target.version))
        else:
            log.info("%s: now serving version %d (was %d)", slot.name, target.version, old.version,
                     extra=about(slot.name, target.version))
        self.events.served(slot.name, old.version if old is not None else None, target.version)

    def _report_pin(self, slot: ModelSlot, problem: str | None, served: Model | None) -> None:
        """Log and count a pin that cannot be honoured when it starts, changes or ends."""
        if problem == slot.pin_problem:
            return
        if problem is not None:
            log.warning("%s: %s; %s", slot.name, problem,
                        f"still serving version {served.version}" if served is not None else "nothing is served",
                        extra=about(slot.name, slot.pinned))
        elif slot.pinned is not None:
            log.info("%s: pinned version %d serves now", slot.name, slot.pinned, extra=about(slot.name, slot.pinned))
        slot.pin_problem = problem
        self.events.pin_unservable(slot.name, slot.pinned if problem is not None else None)

    def _report_removed(self, name: str, records: dict[int, VersionRecord]) -> None:
        """Versions gone from the registry stop being reported (those never reported were not)."""
        for v, record in records.items():
            if record.reported or record.status != LOADING:
                self.events.version_removed(name, v)

    def _forget(self, slot: ModelSlot) -> None:
        """The model's folder is gone: it was removed from the registry, and is no longer served
        (a model named in the configuration stays known, with nothing to serve)."""
        name = slot.name
        with self._lock:
            if self.configured is None:
                del self._slots[name]
            else:
                self._slots[name] = ModelSlot(name)
        if slot.served is None and not slot.versions:
            return
        log.info("%s: its folder is gone from the registry; no longer served", name, extra=about(name))
        self._report_removed(name, slot.versions)
        if slot.pin_problem is not None:
            self.events.pin_unservable(name, None)
        if slot.unloaded:
            self.events.model_unloaded(name, False)
        if slot.served is not None:
            self.events.served(name, slot.served.version, None)

    def _read_serving(self, name: str) -> tuple[dict | None, str | None]:
        """``(state, None)`` or ``(None, why it cannot be used)``. Read afresh on every pass: it is
        a few bytes, and a file's stamp can miss a change (two writes of the same size within one
        tick of the file system's clock)."""
        try:
            return self.registry.read_serving(name), None
        except (RegistryError, OSError) as e:
            return None, str(e)

    def _apply_serving(self, slot: ModelSlot, state: dict | None, error: str | None) -> None:
        if error is not None:
            if slot.serving_error != error:
                log.error("%s: %s", slot.name, error, extra=about(slot.name))
            slot.serving_error = error
            return
        slot.serving_error = None
        if state == slot.serving_state:
            return
        slot.pinned, slot.labels = state["pinned"], dict(state["labels"])
        unloaded = state.get("unloaded") is True
        slot.reloading = slot.unloaded and not unloaded  # ended by _refresh_model, once it serves the state
        if unloaded and not slot.unloaded:
            slot.unloaded = True
            self.events.model_unloaded(slot.name, True)
        slot.serving_state = state

    def _checked(self, slot: ModelSlot, version: int, *, keep: bool = True) -> Model | None:
        """The loaded model of ``version``, loading and validating it if it is new; None if it fails.
        Whoever wants a version while it loads waits for that load and gets its result (reading,
        hashing and checking a file is costly, and each load holds the model's memory). ``keep``:
        a new load joins the recently used versions (it does not when only its status is wanted).
        A file whose content changed or that went while it was read gives None, and its version is
        set to ``loading`` for the next pass to look at again, nothing reported: what was read may
        be neither the old file nor the new."""
        key = (slot.name, version)
        with self._lock:
            record = slot.versions.get(version)
            if record is None:
                return None
            if record.status.startswith(FAILED) or _awaits_next_pass(record):
                return None
            model = self._cached(slot, version)
            if model is not None and record.status == AVAILABLE:
                return model
            stamp, failure = record.stamp, record.unsettled_failure
            loading = self._loading.get(key)
            if loading is None:
                self._loading[key] = Future()
        if loading is not None:
            return loading.result()
        model, status, unreadable, updated = None, failed_status("the load was interrupted"), False, False
        try:
            if failure is not None and not failure[1]:  # settled since it failed: the same file, the same failure
                status, unreadable = failure
            else:
                with self._loads:
                    model, status, unreadable = self._load(slot.name, version)
            if _content_changed(stamp, self._file_stamp(slot.name, version)):
                model, status, unreadable = None, LOADING, False
            with self._lock:
                current = slot.versions.get(version)
                # the record the load began with, or one a pass made since for a new ctime alone (a
                # chmod): a failure needs the very state it was read in (a fixed permission reads again)
                if current is not None and (current.stamp == stamp or model is not None
                                            and not _content_changed(current.stamp, stamp)):
                    updated = True
                    status = self._record_load(slot, version, current, model, status, unreadable, keep)
        finally:
            with self._lock:
                self._loading.pop(key).set_result(model)
        if updated and status != LOADING:
            self._report_load(slot.name, version, model, status)
        return model

    def _record_load(self, slot: ModelSlot, version: int, record: VersionRecord, model: Model | None, status: str,
                     unreadable: bool, keep: bool) -> str:
        """Record in ``record`` what loading ``version`` gave (see ``_load``), with the lock held, and return
        the status recorded: ``loading``, not the failure, for a file that failed before it settled."""
        record.unsettled_failure = None
        if model is None and status != LOADING and not record.settled:  # see VersionRecord.settled
            record.unsettled_failure, status, unreadable = (status, unreadable), LOADING, False
        record.status = status
        record.reported = record.reported or status != LOADING
        if unreadable:  # read again later, waiting longer each time up to the cap
            wait = min(MAX_RETRY_SECONDS, self.poll_interval * 2.0 ** min(record.retries, 64))
            record.retry_at = time.monotonic() + wait
            record.retries += 1
        if model is not None and (keep or self._in_service(slot, version)):
            self._remember(slot, model)
        return status

    def _report_load(self, name: str, version: int, model: Model | None, status: str) -> None:
        """Log and count the settled outcome of loading ``version`` of ``name``: its failure, and its status."""
        if model is None:
            log.warning("%s v%d cannot be served: %s", name, version, failure_reason(status),
                        extra=about(name, version))
            self.events.load_failed(name, version, failure_reason(status))
        self.events.version_status(name, version, status)

    def _file_stamp(self, name: str, version: int) -> tuple | None:
        """The stamp of a version's model file now (None: there is none)."""
        return _stamp(self._file(name, version))

    def _file(self, name: str, version: int) -> str:
        """The path of a version's model file, as a string: a pass looks at every version's, every poll."""
        return os.path.join(self.registry.root, name, str(version), MODEL_FILE)

    def _load(self, name: str, version: int) -> tuple[Model | None, str, bool]:
        """``(model or None, status, whether it failed because the file could not be read)``.
        A file whose content is refused is not read again until it changes; one that could not
        be read (permissions, an I/O error, memory) is tried again later."""
        try:
            path = self.registry.model_path(name, version)
            model = load_model(path, expect_name=name, expect_version=version, max_bytes=self.max_model_bytes)
        except Exception as e:  # whatever a file makes the loader raise, it must not stop the watcher
            reason = _reason(e)
            # A missing file (a version folder made by hand, or half copied) is not an error to retry: its
            # arrival changes the stamp, which reads it again; retried, it counted a failure every minute.
            missing = isinstance(e, FileNotFoundError) or isinstance(e.__context__, FileNotFoundError)
            unreadable = not missing and (isinstance(e, (OSError, MemoryError))
                                          or isinstance(e.__context__, (OSError, MemoryError)))
            return None, failed_status(reason), unreadable
        return model, AVAILABLE, False

    def _cached(self, slot: ModelSlot, version: int) -> Model | None:
        if version in slot.fresh:
            return slot.fresh[version]
        if _is_version(slot.served, version):
            record = slot.versions.get(version)
            if record is None or record.status != LOADING:
                return slot.served
        if version in slot.resident:
            return slot.resident[version]
        model = slot.recent.get(version)
        if model is not None:
            slot.recent.move_to_end(version)
            self._recent[slot.name, version] = slot
            self._recent.move_to_end((slot.name, version))
        return model

    def _in_service(self, slot: ModelSlot, version: int) -> bool:
        return version in slot.resident or _is_version(slot.served, version)

    def _remember(self, slot: ModelSlot, model: Model) -> None:
        if self._in_service(slot, model.version):
            in_service = slot.resident.get(model.version) or slot.served
            if model is not in_service:  # a new load of its file: see ModelSlot.fresh
                slot.fresh[model.version] = model
            return
        slot.recent[model.version] = model
        slot.recent.move_to_end(model.version)
        self._recent[slot.name, model.version] = slot
        self._recent.move_to_end((slot.name, model.version))
        # Entries whose version has left its model's recent ones since (served or labelled now, deleted,
        # its model removed) hold nothing: dropped, so that only those that do count.
        for key in [(name, version) for (name, version), held in self._recent.items()
                    if version not in held.recent or self._slots.get(name) is not held]:
            del self._recent[key]
        while len(self._recent) > self.cached_versions:
            (_, version), held = self._recent.popitem(last=False)
            held.recent.pop(version, None)

    # lookups for requests --------------------------------------------------------------------

    def names(self) -> list[str]:
        return list(self.configured) if self.configured is not None else sorted(self._slots)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is one of ``names()``, without building the list."""
        return name in self.configured if self.configured is not None else name in self._slots

    def slot(self, name: str) -> ModelSlot:
        slot = self._slots.get(name)
        if slot is None:
            reason = self._unreadable.get(name)
            if reason is not None:
                raise NotReady(f"Model {name} is not served: {reason}; {access_advice('read')}.",
                               code="model_unreadable")
            if self.registry_error is not None:  # whether it has such a model cannot be told
                raise NotReady(f"Model {name} is not served: {self.registry_error}.", code="registry_unavailable")
            known = ", ".join(self.names()) or "none"
            if self._left_out(name):  # else an operator looking at its folder was told it does not exist
                raise NotFound(f"Model {name!r} is in the registry but not served: SCRATCHNET_MODELS ({known}) leaves "
                               "it out; add it there to serve it.", code="model_not_found")
            misnamed = self._misnamed.get(name)  # a folder of that name, not read as a model: say why
            raise NotFound(f"There is no model {name!r} (models: {known})" + (f": {misnamed}." if misnamed else "."),
                           code="model_not_found")
        return slot

    def _left_out(self, name: str) -> bool:
        """Whether ``name`` is a model of the registry that the configured list of models leaves out."""
        if self.configured is None:
            return False
        try:
            return self.registry.has_model(name)
        except (OSError, RegistryError):  # not a model name, or a folder that cannot be listed
            return False

    def found(self, name: str) -> ModelSlot:
        """:meth:`slot`, after a look at the registry when this worker does not know ``name``: the
        admin routes use it, so that a call right after a model's first version was published (before
        this worker's next poll, or on another replica) changes that model rather than answering that
        it does not exist."""
        if self.configured is None and name not in self._slots:
            try:
                present = self.registry.has_model(name)
            except (OSError, RegistryError):  # not a model name, or a folder that cannot be listed: 404
                present = False
            if present:
                self._add_models([name])  # unless the watcher found it meanwhile
                self.refresh([name], validate_all=False)
        return self.slot(name)

    def served(self, name: str) -> Model:
        """The model that serves ``name`` right now (one reference read)."""
        slot = self.slot(name)
        model = slot.served
        if model is None:
            raise NotReady(f"Model {name} has no servable version yet. {self._why_not(slot)}".strip(),
                           code="model_not_ready", details=self._version_details(slot))
        return model

    def version(self, name: str, version: int) -> Model:
        """Version ``version`` of ``name``, loading it on demand if it is not in memory."""
        slot = self.slot(name)
        served = slot.served
        if _is_version(served, version):
            return served
        with self._lock:
            model = self._cached(slot, version)
            record = slot.versions.get(version)
        if model is not None:
            return model
        if record is None:
            stamp = self._file_stamp(name, version)
            unreadable = self.registry_error or self._unreadable.get(name)
            if stamp is None and unreadable:  # whether the version is there cannot be told: not a 404
                raise NotReady(f"Version {version} of {name} cannot be looked up: {unreadable}; try again once "
                               "it can be read.", code="registry_unavailable")
            if stamp is None:
                with self._lock:
                    versions = ", ".join(str(v) for v in sorted(slot.versions)) or "none"
                raise NotFound(f"Model {name} has no version {version} (versions: {versions}).",
                               code="version_not_found")
            with self._lock:
                record = slot.versions.setdefault(version, VersionRecord(LOADING, stamp))
        if record.status.startswith(FAILED):
            raise self._failed_version(slot, version, record.status)
        model = self._checked(slot, version)
        if model is None:
            with self._lock:
                record = slot.versions.get(version)
            gone = record is None or record.status == LOADING and self._file_stamp(name, version) is None
            if gone:  # deleted while it was being looked up (or read)
                raise NotFound(f"Model {name} has no version {version} any more (it was removed from the registry).",
                               code="version_not_found")
            if record.status == LOADING:  # its load was set aside: the file changed while it was read, or since
                why = "changed while it was read (being written?)" if record.unsettled_failure is None \
                    else _changing(record)
                raise NotReady(f"Version {version} of {name} cannot be served: its file {why}; try again in a moment.",
                               code="version_loading")
            raise self._failed_version(slot, version, record.status)
        return model

    @staticmethod
    def _failed_version(slot: ModelSlot, version: int, status: str, action: str = "served") -> NotReady:
        """The 503 for a request that names ``version`` of ``slot``'s model, whose file failed to load (``status``):
        one sentence with the loader's reason and what to do, which for a client is to ask for the version the model
        serves, if one does, and otherwise (or for an admin route, ``action`` "activated" or "labelled") to publish
        one that loads."""
        served = slot.served if action == "served" and not slot.unloaded else None
        instead = (f"ask for {slot.name} without a version or label, which v{served.version} answers, or "
                   if served is not None else "")
        return NotReady(f"Version {version} of {slot.name} cannot be {action}: its {MODEL_FILE} failed to load: "
                        f"{failure_reason(status)}; {instead}publish a model that loads as a new version.",
                        code="version_failed")

    def _unloaded_now(self, slot: ModelSlot, wait: float = UNLOADED_WAIT) -> bool:
        """Whether ``slot``'s model is unloaded, as serving.json says now. A load through another
        worker answers as soon as that worker serves, as Triton's does, so a client infers and
        asks readiness next, before this worker's watcher has looked: an unloaded model has its
        few bytes of serving.json read again (only then), after this model's look at the registry
        in progress, if any, for up to ``wait`` seconds (one loading a large version may take longer)."""
        if slot.unloaded and slot.refresh_lock.acquire(timeout=wait):
            try:
                self._apply_serving(slot, *self._read_serving(slot.name))
                if slot.reloading:  # loaded again, perhaps with another pin: unloaded until it serves that
                    self._refresh_model(slot)
            except Exception:  # as the watcher's pass: its next one tries again
                log.exception("%s: registry refresh failed; serving what is loaded", slot.name)
            finally:
                slot.refresh_lock.release()
        return slot.unloaded

    def require_loaded(self, name: str) -> None:
        """503 while the model is unloaded (``set_serving`` in service.api), 404 if unknown."""
        if self._unloaded_now(self.slot(name)):
            raise NotReady(f"Model {name} is unloaded; it serves again once loaded "
                           f"(POST /v2/repository/models/{name}/load).", code="model_unloaded")

    def label_version(self, name: str, label: str) -> int:
        """The version ``label`` points to, without loading it: 404 for an unknown model or label.
        A label this worker does not know yet may have been set through another one just now: a
        client labels a version and predicts through the label at once, as docs/serving.md shows."""
        slot = self.slot(name)
        labels = slot.labels  # replaced whole by the watcher, never changed in place: read once
        valid = LABEL_PATTERN.match(label) is not None  # serving.json holds no other names: no need to read it
        if label not in labels and valid:  # serving.json as it is now, without waiting for the watcher's lock
            state, error = self._read_serving(name)
            if state is None and slot.serving_state is None:  # never read: the label may well be there
                raise NotReady(f"Model {name}'s labels cannot be read: {error}; fix or remove serving.json (the admin "
                               "API writes it).", code="serving_state_unreadable")
            labels = state["labels"] if state is not None else labels
        version = labels.get(label)
        if version is None:
            known = ", ".join(sorted(labels)) or "none"
            never = "" if valid else f"; nor can any have that name, as a label's name uses {NAME_CHARACTERS}"
            raise NotFound(f"Model {name} has no label {label!r} (labels: {known}){never}.", code="label_not_found")
        return version

    def labelled(self, name: str, label: str) -> Model:
        version = self.label_version(name, label)
        try:
            return self.version(name, version)
        except NotFound:
            raise dangling_label(name, label, version) from None
        except NotReady as e:
            raise NotReady(f"Label {label!r} of model {name} points to version {version}, which cannot be served: "
                           f"{e.message.partition(': ')[2]}", code=e.code, details=e.details) from None

    def servable(self, name: str, version: int, action: str = "activated") -> Model:
        """``version`` loaded and validated, for the admin routes: 404 if absent, 409 if broken.
        ``action`` is what the route was asked to do with it ("activated", "labelled")."""
        slot = self.slot(name)
        with self._lock:
            record = slot.versions.get(version)
        served = slot.served
        if _is_version(served, version) and record is None:
            # Served from memory, its folder gone (the callers looked at the registry just now): what is pinned
            # or labelled is the folder, which a worker starting now does not have, as for any deleted version.
            raise NotFound(f"Model {name} has no version {version} any more (it was removed from the registry; "
                           "this worker still answers with it from memory).", code="version_not_found")
        if _is_version(served, version) and record is not None and record.status != AVAILABLE:
            # The served version is in memory even while its file changes (kept as it is copied over, see
            # _highest_servable). What is pinned or labelled is the file, which must load: else the old copy
            # would serve from memory for good, where a worker starting then serves nothing.
            model = self._checked(slot, version)
            if model is not None:
                return model  # its file's model, which the next pass serves in place of the old copy
            with self._lock:
                record = slot.versions.get(version)
            if record is not None and record.status == LOADING:
                raise NotReady(f"Version {version} of {name} cannot be {action} now: its file is changing "
                               "(being written?); try again in a moment.", code="version_loading")
            raise Conflict(f"Version {version} of {name} cannot be {action}: its file changed and "
                           f"{record.status if record is not None else 'went'}.", code="version_not_servable")
        try:
            return self.version(name, version)
        except NotReady as e:
            with self._lock:
                record = slot.versions.get(version)
            if e.code == "version_failed" and record is not None:  # what to do is said to a client: say an admin's
                e = self._failed_version(slot, version, record.status, action)
            raise Conflict(e.message.replace(" cannot be served", f" cannot be {action}"),
                           code="version_not_servable") from None

    def lower_servable(self, name: str, below: int) -> Model | None:
        """The highest version under ``below`` that loads, for rollback."""
        slot = self.slot(name)
        with self._lock:  # the watcher changes the records while we look
            lower = sorted((v for v in slot.versions if v < below), reverse=True)
        for v in lower:
            try:
                return self.version(name, v)
            except NotReady:
                continue
            except NotFound as e:  # deleted since the records were read: the next one down may serve
                if e.code != "version_not_found":
                    raise
        return None

    # reports ---------------------------------------------------------------------------------

    def _version_details(self, slot: ModelSlot) -> list[dict]:
        with self._lock:
            return [{"version": v, "status": r.status} for v, r in sorted(slot.versions.items())]

    def _why_not(self, slot: ModelSlot) -> str:
        if self.registry_error:
            return self.registry_error + "."
        if slot.serving_state is None and slot.serving_error:
            return f"{slot.serving_error}; nothing is served until it is fixed."
        if not slot.versions:
            return f"The registry has no version of {slot.name}."
        if slot.pin_problem:
            return (f"{slot.pin_problem[0].upper()}{slot.pin_problem[1:]}: unpin the model (POST "
                    f"/models/{slot.name}/unpin) or activate a version that loads.")
        with self._lock:
            failed = [f"v{v} {_status_said(r)}" for v, r in sorted(slot.versions.items()) if r.status != AVAILABLE]
            loading = any(r.status == LOADING or _awaits_next_pass(r) for r in slot.versions.values())
        if not failed:
            return ""
        then = "try again in a moment" if loading else f"publish a model that loads as a new version of {slot.name}"
        return f"{'; '.join(failed)}; {then}."

    def describe(self, name: str) -> dict:
        """The model as ``/models/<name>`` shows it. The version served is listed ``available``, as
        it answers, even when its folder has gone or its file fails since it was loaded (it serves
        from memory, see ``problems``): the standard protocols' lists and states follow these."""
        slot = self.slot(name)
        served = slot.served if not self._unloaded_now(slot) else None  # unloaded: nothing serves
        with self._lock:
            statuses = {v: r.status for v, r in slot.versions.items()}
        if served is not None:
            statuses[served.version] = AVAILABLE
        versions = [{"version": v, "status": status,
                     "served": _is_version(served, v),
                     "pinned": slot.pinned == v,
                     "labels": sorted(label for label, lv in slot.labels.items() if lv == v)}
                    for v, status in sorted(statuses.items())]
        info = {
            "name": name,
            "ready": served is not None,
            "served_version": served.version if served is not None else None,
            "pinned": slot.pinned,
            "labels": dict(sorted(slot.labels.items())),
            "versions": versions,
            "problems": list(slot.problems) + ([self.registry_error] if self.registry_error else []),
            "swaps": slot.swaps,
            "unloaded": slot.unloaded,
        }
        if served is not None:
            info.update(task=served.task, input={"kind": served.input_kind, "size": served.input_size},
                        classes=served.labels, manifest=served.manifest)
        else:
            info.update(task=None, input=None, classes=None, manifest=None)
        return info

    def describe_version(self, name: str, version: int) -> dict:
        slot = self.slot(name)
        with self._lock:
            record = slot.versions.get(version)
            model = self._cached(slot, version)
        if record is None and model is None:
            try:  # raises NotFound, or loads a version the watcher has not seen yet
                model = self.version(name, version)
            except NotReady:
                if version not in slot.versions:  # nothing is known of it (the registry cannot be read)
                    raise
            with self._lock:
                record = slot.versions.get(version)
        manifest = model.manifest if model is not None else None
        if manifest is None and record is not None and not record.status.startswith(FAILED):
            try:
                manifest = read_manifest(self.registry.model_path(name, version), max_bytes=self.max_model_bytes)
            except Exception:  # whatever a file not loaded yet makes the reader raise, as in _load
                manifest = None
        served = slot.served if not self._unloaded_now(slot) else None
        answers = record is None or _is_version(served, version)  # one served answers, from memory if need be
        return {
            "name": name,
            "version": version,
            "status": AVAILABLE if answers else record.status,
            "served": _is_version(served, version),
            "pinned": slot.pinned == version,
            "labels": sorted(label for label, v in slot.labels.items() if v == version),
            "manifest": manifest,
        }

    def versions_held(self) -> dict[str, set[int]] | None:
        """The versions the registry holds, by model, as this worker last saw them; None while it
        has never seen the registry (a worker started while it was away), which knows nothing of
        what it holds rather than that it holds nothing."""
        if not self._registry_seen:
            return None
        with self._lock:
            return {name: set(slot.versions) for name, slot in self._slots.items()}

    def misplaced_registry(self) -> str:
        """Why the registry folder looks like a model's folder (versions in it, as in the folder TF Serving's
        --model_base_path names) or a version's, one level too deep; '' when it does not, or holds a version."""
        if any(slot.versions for slot in list(self._slots.values())):
            return ""
        root = self.registry.root
        try:
            entries = os.listdir(root)
            versions = sorted(int(e) for e in entries  # a model may be named '1' too
                              if VERSION_PATTERN.match(e) and e not in self._slots and (root / e).is_dir())
        except OSError:
            return ""
        if MODEL_FILE in entries:
            what, where = "a version's folder (it holds model.npz)", "the folder two levels up"
        elif versions:
            shown = ", ".join(map(str, versions[:5])) + (" ..." if len(versions) > 5 else "")
            what, where = f"a model's folder (it holds the version folders {shown})", "its parent"
        else:
            return ""
        return (f"{root} looks like {what}, not a registry: point SCRATCHNET_REGISTRY (with Docker, "
                f"SCRATCHNET_MODELS_DIR) at {where}, which holds the model folders (<model>/<version>/model.npz)")

    def readiness(self) -> tuple[bool, dict]:
        """``(ready, report)``: ready when every configured model has a servable version."""
        names = self.names()
        models = {}
        reasons = []
        for name in names:
            slot = self._slots.get(name)
            served = slot.served if slot is not None else None
            models[name] = {"ready": served is not None,
                            "version": served.version if served is not None else None}
            # taken out of service on purpose: not a fault; a probe never waits on a pass (wait=0)
            if slot is not None and self._unloaded_now(slot, wait=0):
                models[name].update(ready=False, version=None, unloaded=True)  # as /models/<name> says
                continue
            if served is None:
                why = self._why_not(slot) if slot is not None else ""  # a sentence, quoted inside this one
                why = why[:1].lower() + why[1:].rstrip(".")
                reasons.append(f"model {name} has no servable version" + (f" ({why})" if why else ""))
        if not names:
            reasons.append(f"the registry {self.registry.root} holds no models"
                           + (f" ({self.registry_error})" if self.registry_error else ""))
        misplaced = self.misplaced_registry() if reasons else ""
        if misplaced:
            reasons.append(misplaced)
        report = {"ready": not reasons, "models": models,
                  "registry": {"path": str(self.registry.root), "ok": self.registry_error is None,
                               "error": self.registry_error, "unreadable_models": dict(self._unreadable),
                               "misnamed_folders": dict(self._misnamed)}}
        if reasons:
            report["reason"] = "; ".join(reasons)
        return not reasons, report
