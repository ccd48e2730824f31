"""The model store on its own: which version serves, hot swap by reference, failures that never
replace a working model, bounded memory, and a registry that disappears and comes back."""

import codecs
import contextlib
import gc
import json
import logging
import os
import shutil
import tempfile
import time
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from modelgen import publish_corrupt, publish_model
from service.errors import Conflict, NotFound, NotReady
from service.metrics import Metrics
from service.store import AVAILABLE, UNLOADED_WAIT, ModelStore, StoreEvents
from shared.registry import Registry
from users import run_as


class Recorder(StoreEvents):
    def __init__(self):
        self.swaps, self.failures, self.removed, self.pins = [], [], [], []

    def served(self, name, old, new):
        self.swaps.append((name, old, new))

    def load_failed(self, name, version, reason):
        self.failures.append((name, version, reason))

    def version_removed(self, name, version):
        self.removed.append((name, version))

    def pin_unservable(self, name, pinned):
        self.pins.append((name, pinned))


def make_store(root, **options) -> tuple[ModelStore, Recorder]:
    events = Recorder()
    store = ModelStore(Registry(root), events=events, **options)
    store.refresh()
    return store, events


def after_each_load(store: ModelStore, monkeypatch, then) -> None:
    """``store``'s loads made to call ``then(name, version)`` once each has read its file: a file
    deleted, renamed or written to while it is read."""
    load = store._load

    def load_then(name, version):
        loaded = load(name, version)
        then(name, version)
        return loaded

    monkeypatch.setattr(store, "_load", load_then)


@contextlib.contextmanager
def refreshing_while_loading(store: ModelStore, monkeypatch, version: int, name: str = "mnist"):
    """The body runs while a watcher pass (``store.refresh`` in another thread) is loading
    ``version`` of ``name``; the load then goes on, and the pass ends before the block does."""
    load, started, release = store._load, threading.Event(), threading.Event()

    def slow_load(model, loading):
        if (model, loading) == (name, version):
            started.set()
            release.wait(10)
        return load(model, loading)

    monkeypatch.setattr(store, "_load", slow_load)
    with ThreadPoolExecutor(1) as pool:
        refreshed = pool.submit(store.refresh)
        assert started.wait(10)
        try:
            yield
        finally:
            release.set()
            refreshed.result(timeout=10)


def test_serves_the_highest_version_that_loads(tmp_path, caplog):
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "mnist", favour=3)
    publish_corrupt(tmp_path, "mnist")
    store, events = make_store(tmp_path)
    assert store.served("mnist").version == 2
    statuses = {v["version"]: v["status"] for v in store.describe("mnist")["versions"]}
    assert statuses[1] == statuses[2] == AVAILABLE
    assert statuses[3].startswith("failed: ") and "not an .npz archive" in statuses[3]
    assert [f[1] for f in events.failures] == [3]
    # The operator's log says it too (SPEC: reported in /models, the metrics and the logs).
    warnings = [r.getMessage() for r in caplog.records if r.name == "scratchnet.store" and r.levelname == "WARNING"]
    assert any(m.startswith("mnist v3 cannot be served: ") and "not an .npz archive" in m for m in warnings), warnings


def test_the_store_log_names_the_model_and_version_in_fields_of_their_own(tmp_path, caplog):
    """A log pipeline filters the store's lines by model and version as it does the access lines,
    without parsing their message."""
    from service.logs import JsonFormatter

    caplog.set_level(logging.INFO, logger="scratchnet.store")
    publish_model(tmp_path, "mnist")
    publish_corrupt(tmp_path, "mnist")
    make_store(tmp_path)
    records = {r.levelname: r for r in caplog.records if r.name == "scratchnet.store"}
    failed, served = records["WARNING"], records["INFO"]
    assert (failed.model, failed.version) == ("mnist", 2) and "v2 cannot be served" in failed.getMessage()
    assert (served.model, served.version) == ("mnist", 1) and "now serving version 1" in served.getMessage()
    line = json.loads(JsonFormatter().format(failed))
    assert (line["model"], line["version"], line["level"]) == ("mnist", 2, "warning")


def test_a_version_deleted_from_the_registry_is_logged_and_a_label_left_pointing_at_it_named(tmp_path, caplog):
    """/models/<name> shows a deleted version only by its absence: the log says which went, and
    warns of the labels that now point to nothing, as TF Serving logs each version it unloads."""
    caplog.set_level(logging.INFO, logger="scratchnet.store")
    for favour in (1, 2, 3):
        publish_model(tmp_path, "mnist", favour=favour)
    Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {"canary": 2, "stable": 2}})
    store, _ = make_store(tmp_path)
    shutil.rmtree(tmp_path / "mnist" / "1")
    shutil.rmtree(tmp_path / "mnist" / "2")
    store.refresh()
    gone = {r.version: r for r in caplog.records if r.name == "scratchnet.store" and "is gone" in r.getMessage()}
    assert sorted(gone) == [1, 2]
    assert gone[1].levelname == "INFO" and gone[1].getMessage() == "mnist: version 1 is gone from the registry"
    assert gone[2].levelname == "WARNING" and gone[2].model == "mnist"
    assert "labels 'canary', 'stable' still point to it" in gone[2].getMessage()
    assert "PUT /models/mnist/labels/<label>" in gone[2].getMessage()


def test_a_version_being_loaded_is_reported_loading_while_the_old_one_serves(tmp_path, monkeypatch):
    publish_model(tmp_path, "mnist")
    store, events = make_store(tmp_path)
    publish_model(tmp_path, "mnist", favour=3)
    with refreshing_while_loading(store, monkeypatch, 2):
        info = store.describe("mnist")
        statuses = {v["version"]: v["status"] for v in info["versions"]}
        assert statuses == {1: AVAILABLE, 2: "loading"} and info["served_version"] == 1
        assert store.served("mnist").version == 1
    statuses = {v["version"]: v["status"] for v in store.describe("mnist")["versions"]}
    assert statuses == {1: AVAILABLE, 2: AVAILABLE} and store.served("mnist").version == 2
    assert events.swaps[-1] == ("mnist", 1, 2)


def test_a_hostile_version_waiting_to_be_loaded_is_described_without_an_error(tmp_path, monkeypatch, a_poll_later):
    """While the watcher loads the newest version, an older new one waits as "loading"; describing
    it reads its manifest, which a hostile file makes Python's JSON reader refuse in ways of its own."""
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    for text in ('{"n": ' + "1" * 5000 + "}", "[" * 100_000):
        publish_model(tmp_path, "mnist")
        hostile = tmp_path / "mnist" / str(max(Registry(tmp_path).versions("mnist"))) / "model.npz"
        with np.load(hostile) as archive:
            members = {key: archive[key] for key in archive.files}
        np.savez(hostile, **{**members, "manifest": np.frombuffer(text.encode(), dtype=np.uint8)})
    newest = publish_model(tmp_path, "mnist")
    with refreshing_while_loading(store, monkeypatch, newest):
        for version in (2, 3):
            info = store.describe_version("mnist", version)
            assert info["status"] == "loading" and info["manifest"] is None
    a_poll_later(store)
    store.refresh()  # a failure counts once the next pass finds its file as it was
    for version in (2, 3):
        assert store.describe_version("mnist", version)["status"].startswith("failed: ")
    assert store.served("mnist").version == newest


def test_every_model_swaps_before_any_version_is_checked_for_its_status_alone(tmp_path, monkeypatch):
    """A burst of new versions of one model must not hold back another model's swap: each model
    loads what it serves first, then the other new versions are checked."""
    for name in ("big", "small"):
        publish_model(tmp_path, name)
    store, _ = make_store(tmp_path)
    for _ in range(4):
        publish_model(tmp_path, "big")
    publish_model(tmp_path, "small")
    loads, load = [], store._load
    monkeypatch.setattr(store, "_load", lambda name, version: loads.append((name, version)) or load(name, version))
    store.refresh()
    assert sorted(loads[:2]) == [("big", 5), ("small", 2)]  # what serves, whichever model comes first
    assert loads[2:] == [("big", 4), ("big", 3), ("big", 2)]  # then the rest, newest first


def test_a_pass_checks_versions_nothing_serves_for_a_bounded_time(tmp_path, monkeypatch):
    """Loading a burst of large versions for their status alone must not keep the watcher from
    serving.json for longer than CHECK_SECONDS (past one load): the rest wait for later passes."""
    from service.store import CHECK_SECONDS
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path, poll_interval=1.0)
    for _ in range(8):
        publish_model(tmp_path, "mnist")
    load = store._load

    def slow_load(name, version):
        time.sleep(CHECK_SECONDS / 2)
        return load(name, version)

    monkeypatch.setattr(store, "_load", slow_load)
    waiting = []
    for _ in range(9):
        store.refresh()
        assert store.served("mnist").version == 9
        statuses = {v["version"]: v["status"] for v in store.describe("mnist")["versions"]}
        waiting.append(sum(status == "loading" for status in statuses.values()))
        if not waiting[-1]:
            break
    # the first pass loads v9 to serve it, then checks two or three more (at least one) and stops
    assert 4 <= waiting[0] <= 6
    assert all(later < earlier for earlier, later in zip(waiting, waiting[1:])) and waiting[-1] == 0
    assert set(statuses.values()) == {AVAILABLE}


def test_a_look_at_one_model_never_waits_on_another_models_load(tmp_path, monkeypatch):
    """A pass loading a large version of one model holds only that model: an admin call's look at
    another model, and a readiness probe, answer meanwhile."""
    for name in ("big", "small"):
        publish_model(tmp_path, name)
    store, _ = make_store(tmp_path)
    Registry(tmp_path).write_serving("small", {"pinned": None, "labels": {}, "unloaded": True})
    store.refresh(["small"])
    new = publish_model(tmp_path, "big")
    publish_model(tmp_path, "small")
    with refreshing_while_loading(store, monkeypatch, new, name="big"):
        started = time.monotonic()
        store.refresh(["small"], validate_all=False)  # what an admin call does before it changes small
        ready, report = store.readiness()
        assert time.monotonic() - started < UNLOADED_WAIT / 2  # neither waited for big's load
        assert store.slot("small").versions[2].status == AVAILABLE and report["models"]["small"]["unloaded"]
        assert store.served("big").version == 1
    assert store.served("big").version == new


def test_a_version_that_goes_while_it_loads_is_not_served(tmp_path, monkeypatch):
    publish_model(tmp_path, "mnist")
    store, events = make_store(tmp_path)
    gone = publish_model(tmp_path, "mnist")
    # deleted (or renamed) while it is read
    after_each_load(store, monkeypatch, lambda name, version: shutil.rmtree(tmp_path / name / str(version),
                                                                            ignore_errors=True))
    store.refresh()
    assert store.served("mnist").version == 1 and events.swaps == [("mnist", None, 1)]
    store.refresh()
    assert [v["version"] for v in store.describe("mnist")["versions"]] == [1] and gone == 2


def test_versions_checked_for_their_status_alone_are_not_kept_in_memory(tmp_path):
    for _ in range(4):
        publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    statuses = {v["version"]: v["status"] for v in store.describe("mnist")["versions"]}
    assert statuses == {1: AVAILABLE, 2: AVAILABLE, 3: AVAILABLE, 4: AVAILABLE}
    assert list(store.slot("mnist").recent) == [] and store.served("mnist").version == 4
    assert store.version("mnist", 2).version == 2  # loaded again when asked for
    assert list(store.slot("mnist").recent) == [2]


def test_a_bad_file_is_parsed_once_not_on_every_poll(tmp_path, a_poll_later):
    publish_model(tmp_path, "mnist")
    publish_corrupt(tmp_path, "mnist")
    store, events = make_store(tmp_path)
    for _ in range(5):
        store.refresh()
    assert len(events.failures) == 1
    # A file that changes is looked at again, and its failure counts once the next pass finds it as it
    # was (it may have been being written), without parsing it again.
    (tmp_path / "mnist" / "2" / "model.npz").write_bytes(b"still not a model, but different")
    store.refresh()
    assert len(events.failures) == 1 and store.describe("mnist")["versions"][1]["status"] == "loading"
    store.refresh()  # too soon after (an admin call's look, say): it may still be being written
    assert len(events.failures) == 1
    a_poll_later(store)
    store.refresh()
    assert len(events.failures) == 2
    assert store.served("mnist").version == 1


def test_a_new_version_swaps_in_and_a_held_model_keeps_working(tmp_path):
    publish_model(tmp_path, "mnist", favour=1)
    store, events = make_store(tmp_path)
    held = store.served("mnist")
    publish_model(tmp_path, "mnist", favour=2)
    store.refresh()
    assert store.served("mnist").version == 2
    assert events.swaps == [("mnist", None, 1), ("mnist", 1, 2)]
    # A request that took v1 before the swap finishes on v1.
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    assert held.version == 1 and list(held.predict(x)) == [1, 1, 1]
    assert list(store.served("mnist").predict(x)) == [2, 2, 2]


def test_a_version_written_in_place_counts_no_failure_until_its_file_stays_as_it_is(tmp_path, a_poll_later):
    """A model.npz copied in place (cp, not renamed) was loaded half written at every poll, each counted
    as a failed load. A failure counts once a pass a poll later finds the file as it was, without parsing it
    again."""
    publish_model(tmp_path, "mnist")
    for _ in range(2):
        publish_model(tmp_path / "source", "mnist")
    whole = (tmp_path / "source" / "mnist" / "2" / "model.npz").read_bytes()
    store, events = make_store(tmp_path)
    model_file = tmp_path / "mnist" / "2" / "model.npz"
    model_file.parent.mkdir()
    for written in (0, 1000, 20_000):  # the copy goes on between passes
        model_file.write_bytes(whole[:written])
        store.refresh()
        assert store.served("mnist").version == 1 and events.failures == []
        assert store.describe("mnist")["versions"][1]["status"] == "loading"
    a_poll_later(store)
    store.refresh()  # as it was a poll before: a copy that stopped there
    assert [version for _, version, _ in events.failures] == [2]
    assert store.describe("mnist")["versions"][1]["status"].startswith("failed: not an .npz archive")
    model_file.write_bytes(whole)
    store.refresh()
    assert store.served("mnist").version == 2 and len(events.failures) == 1


def test_a_failing_new_version_never_replaces_the_served_one(tmp_path):
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    before = store.served("mnist")
    publish_corrupt(tmp_path, "mnist")
    store.refresh()
    assert store.served("mnist") is before


def test_pin_and_labels_come_from_serving_json(tmp_path):
    for _ in range(3):
        publish_model(tmp_path, "mnist")
    Registry(tmp_path).write_serving("mnist", {"pinned": 1, "labels": {"canary": 3, "stable": 2}})
    store, _ = make_store(tmp_path)
    assert store.served("mnist").version == 1
    assert store.labelled("mnist", "canary").version == 3
    info = store.describe("mnist")
    assert info["pinned"] == 1 and info["labels"] == {"canary": 3, "stable": 2}
    Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {}})
    store.refresh()
    assert store.served("mnist").version == 3
    with pytest.raises(NotFound):
        store.labelled("mnist", "canary")


def test_the_served_versions_file_rewritten_in_place_serves_from_memory_while_the_copy_goes_on(tmp_path):
    """Versions are immutable, but a file copied over in place must not make every worker drop the
    version that serves at the copy's first bytes: it goes on serving from memory while the file
    changes (or has failed on one pass alone). A file that then stays as it is and fails is skipped,
    as a worker starting now skips it, so that every worker serves the same version; a whole file
    that loads serves again."""
    publish_model(tmp_path, "mnist", favour=1)
    publish_model(tmp_path, "mnist", favour=2)
    registry = Registry(tmp_path)
    registry.write_serving("mnist", {"pinned": None, "labels": {"stable": 2}})
    store, events = make_store(tmp_path)
    served = store.served("mnist")
    model_file = tmp_path / "mnist" / "2" / "model.npz"
    whole = model_file.read_bytes()
    for partial in (whole[:1000], whole[:3000], b"garbage"):  # a copy under way, then damage
        model_file.write_bytes(partial)
        store.refresh()
        assert store.served("mnist") is served
        assert store.labelled("mnist", "stable") is served and store.version("mnist", 2) is served
        info = store.describe("mnist")
        assert info["served_version"] == 2
        assert any(p.startswith("version 2's file is changing (being written?) and does not load as it is: ")
                   and p.endswith("still serving v2 from memory for now") for p in info["problems"]), info["problems"]
    store.refresh()  # the damaged file, as it was: what a worker starting now serves
    assert store.served("mnist").version == 1 == make_store(tmp_path)[0].served("mnist").version
    assert events.swaps == [("mnist", None, 2), ("mnist", 2, 1)]
    for favour in (3, 4):  # another network, written whole under the same number
        publish_model(tmp_path / "copy", "mnist", favour=favour)
    os.replace(tmp_path / "copy" / "mnist" / "2" / "model.npz", model_file)
    store.refresh()
    assert store.served("mnist") is not served and store.served("mnist").version == 2
    assert not store.describe("mnist")["problems"]


def test_a_served_file_that_stays_damaged_with_no_other_version_to_serve_is_no_longer_served(tmp_path, a_poll_later):
    """A model's one version damaged in place: the workers running served it from memory for good,
    while a worker started since (a recycled one) answered 503, so answers alternated between 200
    and 503 and each worker's readiness said otherwise. After its pass of grace it serves nothing,
    as a worker starting then, and the file serves again once it loads."""
    publish_model(tmp_path, "mnist")
    model_file = tmp_path / "mnist" / "1" / "model.npz"
    whole = model_file.read_bytes()
    store, events = make_store(tmp_path)
    model_file.write_bytes(b"damaged")
    store.refresh()
    assert store.served("mnist").version == 1  # for one pass: a copy may be under way
    a_poll_later(store)
    store.refresh()
    for running in (store, make_store(tmp_path)[0]):
        with pytest.raises(NotReady, match="v1 failed: not an .npz archive"):
            running.served("mnist")
        assert running.readiness()[0] is False and not running.describe("mnist")["ready"]
    assert events.swaps == [("mnist", None, 1), ("mnist", 1, None)]
    model_file.write_bytes(whole)
    store.refresh()
    assert store.served("mnist").version == 1


def test_a_served_version_deleted_with_no_other_version_that_loads_is_no_longer_served(tmp_path):
    """v2 serves, v1 is damaged; v2's folder deleted: the workers running served v2 from memory for
    good, while a worker started since answered 503. After a pass of grace (its folder may be being
    rewritten) nothing serves, as in a worker starting then."""
    publish_corrupt(tmp_path, "mnist")
    publish_model(tmp_path, "mnist")
    store, events = make_store(tmp_path)
    assert store.served("mnist").version == 2
    shutil.rmtree(tmp_path / "mnist" / "2")
    store.refresh()
    assert store.served("mnist").version == 2  # for one pass
    store.refresh()
    for running in (store, make_store(tmp_path)[0]):
        with pytest.raises(NotReady, match="v1 failed: "):
            running.served("mnist")
    assert events.swaps == [("mnist", None, 2), ("mnist", 2, None)]


@pytest.mark.parametrize("looked_at_by", ["the status checks", "an admin call"])
def test_a_served_file_rewritten_whole_is_served_anew_whoever_loads_it_first(tmp_path, looked_at_by):
    """v1 serves while a pin names a broken v2; v1's file is then rewritten whole (another network).
    Whether the watcher's status checks or an admin call's look loads it first, the next passes serve
    the new file's network, as a worker starting then does, not the copy in memory."""
    rows = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    publish_model(tmp_path, "mnist", favour=1)
    publish_corrupt(tmp_path, "mnist")
    registry = Registry(tmp_path)
    store, _ = make_store(tmp_path)
    registry.write_serving("mnist", {"pinned": 2, "labels": {}})
    store.refresh()
    assert store.served("mnist").version == 1
    publish_model(tmp_path / "copy", "mnist", favour=3)
    os.replace(tmp_path / "copy" / "mnist" / "1" / "model.npz", tmp_path / "mnist" / "1" / "model.npz")
    if looked_at_by == "the status checks":
        store.refresh()
        registry.write_serving("mnist", {"pinned": None, "labels": {}})
    else:
        store.refresh(["mnist"], validate_all=False)
        assert store.servable("mnist", 1).predict(rows).tolist() == [3, 3, 3]
        registry.write_serving("mnist", {"pinned": 1, "labels": {}})
    for _ in range(2):
        store.refresh()
    starting = make_store(tmp_path)[0]
    assert store.served("mnist").predict(rows).tolist() == starting.served("mnist").predict(rows).tolist() == [3, 3, 3]
    assert store.version("mnist", 1) is store.served("mnist") and not store.slot("mnist").fresh


def test_a_served_file_replaced_by_one_with_the_same_mtime_is_served_anew(tmp_path):
    """rsync -a renames a new file over the old one and keeps its source's mtime, which can be the
    old file's (touch -r makes it so too): the new file serves its own network after the next pass,
    not the old one kept in memory."""
    rows = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    publish_model(tmp_path, "mnist", favour=1)
    store, _ = make_store(tmp_path)
    served = store.served("mnist")
    model_file = tmp_path / "mnist" / "1" / "model.npz"
    before = model_file.stat()
    publish_model(tmp_path / "copy", "mnist", favour=3)
    os.replace(tmp_path / "copy" / "mnist" / "1" / "model.npz", model_file)
    os.utime(model_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert model_file.stat().st_mtime_ns == before.st_mtime_ns
    store.refresh()
    assert store.served("mnist") is not served
    assert store.served("mnist").predict(rows).tolist() == [3, 3, 3]


def test_a_load_read_while_its_file_changed_is_set_aside_not_reported_failed(tmp_path, monkeypatch, caplog):
    publish_model(tmp_path, "mnist")
    store, events = make_store(tmp_path)
    publish_model(tmp_path, "mnist")
    model_file = tmp_path / "mnist" / "2" / "model.npz"
    whole = model_file.read_bytes()
    model_file.write_bytes(whole[:1000])  # a copy under way...
    ended = []

    def the_copy_ends(name, version):
        if not ended:
            model_file.write_bytes(whole)  # ...that ends while this load reads the part written
            ended.append(version)

    after_each_load(store, monkeypatch, the_copy_ends)
    store.refresh()
    assert ended == [2] and store.served("mnist").version == 1
    assert events.failures == [] and "cannot be served" not in caplog.text
    store.refresh()
    assert store.served("mnist").version == 2 and events.failures == [] and "cannot be served" not in caplog.text


def test_a_load_that_ends_after_a_pass_saw_a_new_ctime_is_kept(tmp_path, monkeypatch):
    """A chmod while a request loads a version: the pass that sees it makes a new record of the same
    content, joins the load, and serves it; the load's result is that record's, not set aside, so the
    version is not loaded and swapped in again on the next pass."""
    for _ in range(2):
        publish_model(tmp_path, "mnist")
    events = Recorder()
    store = ModelStore(Registry(tmp_path), events=events)
    store.refresh(validate_all=False)  # v2 serves; v1 waits to be checked
    slot = store.slot("mnist")
    before = slot.versions[1].stamp
    load, started, release = store._load, threading.Event(), threading.Event()

    def slow_load(name, version):
        started.set()
        release.wait(10)
        return load(name, version)

    monkeypatch.setattr(store, "_load", slow_load)
    with ThreadPoolExecutor(2) as pool:
        asked = pool.submit(store.version, "mnist", 1)  # a request for v1, by its version route
        assert started.wait(10)
        (tmp_path / "mnist" / "1" / "model.npz").chmod(0o640)
        Registry(tmp_path).write_serving("mnist", {"pinned": 1, "labels": {}})
        passed = pool.submit(store.refresh, ["mnist"], validate_all=False)  # an admin call's look
        deadline = time.monotonic() + 10
        while slot.versions[1].stamp == before:  # the pass has made v1's new record, and waits on the load
            assert time.monotonic() < deadline
            time.sleep(0.01)
        release.set()
        passed.result(timeout=10)
        assert asked.result(timeout=10) is store.served("mnist")
    assert slot.versions[1].status == AVAILABLE and store.served("mnist").version == 1
    store.refresh()
    assert events.swaps == [("mnist", None, 2), ("mnist", 2, 1)]  # not reloaded and swapped again


def test_an_admin_look_does_not_wait_for_the_status_checks_of_the_same_model(tmp_path, monkeypatch):
    for _ in range(3):
        publish_model(tmp_path, "mnist")
    store = ModelStore(Registry(tmp_path), events=Recorder())
    store.refresh(validate_all=False)  # v3 serves; v1 and v2 wait to be checked
    with refreshing_while_loading(store, monkeypatch, 2):  # the pass's checks are loading v2
        started = time.monotonic()
        store.refresh(["mnist"], validate_all=False)
        assert time.monotonic() - started < UNLOADED_WAIT / 2
    assert store.slot("mnist").versions[2].status == AVAILABLE


def test_a_damaged_served_version_kept_in_memory_cannot_be_pinned_or_labelled(tmp_path, a_poll_later):
    """Kept for a pass while its file may be being copied, a damaged served version is not pinned:
    a pin would keep it serving from memory for good, where a worker starting since serves nothing."""
    for _ in range(2):
        publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    (tmp_path / "mnist" / "2" / "model.npz").write_bytes(b"damaged")
    store.refresh(["mnist"], validate_all=False)  # what an admin call does first
    assert store.served("mnist").version == 2  # kept, for now
    for action in ("activated", "labelled"):
        with pytest.raises(NotReady, match=f"Version 2 of mnist cannot be {action} now: its file is changing"):
            store.servable("mnist", 2, action)
    a_poll_later(store)
    store.refresh(["mnist"], validate_all=False)  # as it was: it has failed, and serves no more
    for action in ("activated", "labelled"):
        with pytest.raises(Conflict, match=f"Version 2 of mnist cannot be {action}: its model.npz failed to load: "
                                           "not an .npz archive"):
            store.servable("mnist", 2, action)


def test_the_served_version_is_pinned_from_its_file_not_from_memory_while_the_file_changes(tmp_path, monkeypatch):
    """A pin or a label of the served version whose file is being copied over loads the file: one
    that is still changing is 'try again' (503), not a pin of the copy in memory."""
    for _ in range(2):
        publish_model(tmp_path, "mnist")
    Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {"canary": 2}})
    store, _ = make_store(tmp_path)
    model_file = tmp_path / "mnist" / "2" / "model.npz"
    whole = model_file.read_bytes()
    model_file.write_bytes(whole[:2000])

    def the_copy_goes_on(name, version):
        if version == 2:
            model_file.write_bytes(model_file.read_bytes() + b"\0")

    with monkeypatch.context() as copying:
        after_each_load(store, copying, the_copy_goes_on)
        store.refresh(["mnist"], validate_all=False)
        assert store.served("mnist").version == 2 and store.slot("mnist").versions[2].status == "loading"
        with pytest.raises(NotReady, match="cannot be activated now: its file is changing"):
            store.servable("mnist", 2)
    model_file.write_bytes(whole)  # the copy is done
    store.refresh(["mnist"], validate_all=False)  # an admin call's look, then its check
    assert store.servable("mnist", 2) is store.served("mnist")
    assert store.labelled("mnist", "canary").version == 2


def test_a_label_on_a_version_being_written_says_why_it_cannot_serve(tmp_path, monkeypatch):
    for _ in range(3):
        publish_model(tmp_path, "mnist")
    Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {"canary": 2}})
    store = ModelStore(Registry(tmp_path), events=Recorder())
    store.refresh(validate_all=False)
    model_file = tmp_path / "mnist" / "2" / "model.npz"
    store.slot("mnist").resident.clear()  # as for a label set since the last pass
    after_each_load(store, monkeypatch,  # the copy goes on while it is read
                    lambda name, version: model_file.write_bytes(model_file.read_bytes() + b"\0"))
    with store._lock:
        store.slot("mnist").versions[2].status = "loading"
    with pytest.raises(NotReady, match="Label 'canary' of model mnist points to version 2, which cannot be served: "
                                       "its file changed while it was read"):
        store.labelled("mnist", "canary")


def test_a_failed_version_rewritten_then_deleted_is_reported_removed(tmp_path):
    publish_model(tmp_path, "mnist")
    publish_corrupt(tmp_path, "mnist")
    store, events = make_store(tmp_path)
    assert store.describe("mnist")["versions"][1]["status"].startswith("failed: ")
    Registry(tmp_path).write_serving("mnist", {"pinned": 1, "labels": {}})
    (tmp_path / "mnist" / "2" / "model.npz").write_bytes(b"damaged again")
    store.refresh(validate_all=False)  # its new record waits to be checked: v1 is pinned
    shutil.rmtree(tmp_path / "mnist" / "2")
    store.refresh()
    assert events.removed == [("mnist", 2)]  # its metrics series go, the failure gauge with them


def test_a_version_deleted_while_a_request_reads_it_is_not_found(tmp_path, monkeypatch):
    for _ in range(2):
        publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)  # v1 was checked and let go
    after_each_load(store, monkeypatch, lambda name, version: shutil.rmtree(tmp_path / name / str(version)))
    with pytest.raises(NotFound, match="has no version 1 any more"):
        store.version("mnist", 1)


def test_a_version_whose_permissions_changed_is_still_loaded_for_a_rollback(tmp_path):
    """A new ctime (chmod, chown, a hard link) is the same content: a version checked before is not
    set aside when loaded again for a rollback or a pin."""
    for _ in range(3):
        publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)  # serves v3; v1 and v2 were checked and let go
    for version in (1, 2):
        (tmp_path / "mnist" / str(version) / "model.npz").chmod(0o640)
    store.refresh(["mnist"], validate_all=False)
    assert store.lower_servable("mnist", 3).version == 2
    assert store.servable("mnist", 1).version == 1


def test_the_checks_leave_alone_a_model_whose_folder_went(tmp_path):
    """A model's folder gone (the registry being recreated, say) is not reported as versions that
    fail to load: the pass that finds it missing checks nothing of it."""
    for _ in range(3):
        publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "other")
    events = Recorder()
    store = ModelStore(Registry(tmp_path), events=events)
    store.refresh(validate_all=False)  # v1 and v2 of mnist wait to be checked
    shutil.rmtree(tmp_path / "mnist")
    store.refresh()
    store.refresh()
    assert events.failures == [] and store.names() == ["other"]


@pytest.mark.parametrize("fault", ["deleted", "damaged"])
def test_a_pinned_version_deleted_or_damaged_stops_serving_in_every_worker_as_in_one_started_since(
        tmp_path, caplog, a_poll_later, fault):
    """The pinned version's folder deleted (or its file damaged in place, and left so): the workers that had
    loaded it answered with it from memory for good, and a worker started since (a recycled one, a reload)
    answered 503, so that answers and readiness alternated until someone unpinned. As for a served version
    that is not pinned, it now serves for one more pass, then no longer, in every worker alike."""
    for favour in (1, 2):
        publish_model(tmp_path, "mnist", favour=favour)
    registry = Registry(tmp_path)
    registry.write_serving("mnist", {"pinned": 1, "labels": {}})
    running, events = make_store(tmp_path)
    if fault == "deleted":
        shutil.rmtree(tmp_path / "mnist" / "1")
    else:
        (tmp_path / "mnist" / "1" / "model.npz").write_bytes(b"PK\x03\x04 damaged in place")
    running.refresh()
    assert running.served("mnist").version == 1  # one more pass: its folder may be being written again
    a_poll_later(running)
    running.refresh()
    started, _ = make_store(tmp_path)
    for store in (running, started):
        with pytest.raises(NotReady, match="Pinned version 1 (does not exist|failed: not an .npz archive)"):
            store.served("mnist")
        assert store.readiness()[0] is False and store.describe("mnist")["served_version"] is None
    assert events.swaps[-1] == ("mnist", 1, None) and events.pins[-1] == ("mnist", 1)
    assert "the pinned version 1" in caplog.text and "no longer served" in caplog.text
    registry.write_serving("mnist", {"pinned": None, "labels": {}})
    for store in (running, started):
        store.refresh()
        assert store.served("mnist").version == 2


@pytest.mark.parametrize("pinned", [None, 2])
def test_a_served_file_that_failed_and_is_written_again_serves_from_memory_while_it_changes_pinned_or_not(
        tmp_path, monkeypatch, pinned):
    """The served version's grace follows one rule, pinned or not: from memory while its file changes, and
    for one pass after it failed. Its file unreadable (a folder in its place), then written again just as it
    is tried again: it kept serving while pinned, but the version below took over for a pass when not."""
    import types
    import service.store as store_module
    for favour in (1, 2):
        publish_model(tmp_path, "mnist", favour=favour)
    Registry(tmp_path).write_serving("mnist", {"pinned": pinned, "labels": {}})
    clock = [time.monotonic()]
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    store, events = make_store(tmp_path)
    model_file = tmp_path / "mnist" / "2" / "model.npz"
    whole = model_file.read_bytes()
    model_file.unlink()
    model_file.mkdir()
    store.refresh()  # unreadable: its one pass of grace
    assert store.served("mnist").version == 2

    def written_again(name, version):
        if version == 2 and model_file.is_dir():
            model_file.rmdir()
            model_file.write_bytes(whole[:1000])

    after_each_load(store, monkeypatch, written_again)
    clock[0] += store_module.MAX_RETRY_SECONDS  # its retry is due: the file changes while it is read
    store.refresh()
    assert store.served("mnist").version == 2
    model_file.write_bytes(whole)
    store.refresh()
    assert store.served("mnist").version == 2 and not store.describe("mnist")["problems"]
    assert [new for _, _, new in events.swaps] == [2, 2]  # served, then its new file: never v1 meanwhile


def test_an_unservable_pin_keeps_the_version_served_before(tmp_path, caplog):
    for favour in (1, 2):
        publish_model(tmp_path, "mnist", favour=favour)
    publish_corrupt(tmp_path, "mnist")  # v3
    registry = Registry(tmp_path)
    registry.write_serving("mnist", {"pinned": 1, "labels": {}})
    store, events = make_store(tmp_path)
    assert store.served("mnist").version == 1
    # serving.json written by hand (or by another tool) pins what cannot serve: v1 goes on serving,
    # never the highest version the pin was there to keep traffic from.
    for pinned, why in ((3, "failed: not an .npz archive"), (9, "does not exist")):
        registry.write_serving("mnist", {"pinned": pinned, "labels": {}})
        store.refresh()
        assert store.served("mnist").version == 1
        info = store.describe("mnist")
        assert info["served_version"] == 1 and info["pinned"] == pinned
        assert any(f"pinned version {pinned} {why}" in p and "still serving v1" in p for p in info["problems"])
        assert f"pinned version {pinned} {why}" in caplog.text
    assert events.swaps == [("mnist", None, 1)] and events.pins == [("mnist", 3), ("mnist", 9)]
    registry.write_serving("mnist", {"pinned": 2, "labels": {}})
    store.refresh()
    assert store.served("mnist").version == 2 and store.describe("mnist")["problems"] == []
    assert events.pins[-1] == ("mnist", None)


def test_at_start_an_unservable_pin_leaves_the_model_unservable_saying_why(tmp_path):
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "mnist")
    Registry(tmp_path).write_serving("mnist", {"pinned": 7, "labels": {}})
    store, _ = make_store(tmp_path)
    with pytest.raises(NotReady,
                       match=r"Pinned version 7 does not exist: unpin the model \(POST /models/mnist/unpin\)"):
        store.served("mnist")
    assert store.version("mnist", 2).version == 2  # versions stay reachable by number
    assert any("pinned version 7 does not exist; nothing is served" in p for p in store.describe("mnist")["problems"])
    ready, report = store.readiness()
    assert not ready and ("model mnist has no servable version (pinned version 7 does not exist: unpin the model "
                          "(POST /models/mnist/unpin) or activate a version that loads)") in report["reason"]


def test_a_malformed_serving_json_keeps_the_last_good_state(tmp_path):
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "mnist")
    Registry(tmp_path).write_serving("mnist", {"pinned": 1, "labels": {}})
    store, _ = make_store(tmp_path)
    (tmp_path / "mnist" / "serving.json").write_text("{not json")
    store.refresh()
    assert store.served("mnist").version == 1
    assert any("serving.json" in p for p in store.describe("mnist")["problems"])
    starting, _ = make_store(tmp_path)  # a worker starting now cannot know the pin: it serves nothing
    with pytest.raises(NotReady, match="nothing is served until it is fixed"):
        starting.served("mnist")
    assert starting.version("mnist", 2).version == 2
    (tmp_path / "mnist" / "serving.json").write_text('{"pinned": 1}')
    starting.refresh()
    assert starting.served("mnist").version == 1


def test_versions_load_on_demand_and_the_cache_stays_bounded(tmp_path):
    for _ in range(6):
        publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path, cached_versions=2)
    for v in range(1, 7):
        assert store.version("mnist", v).version == v
    slot = store.slot("mnist")
    assert len(slot.recent) <= 2
    with pytest.raises(NotFound):
        store.version("mnist", 99)


@pytest.mark.parametrize("cached_versions", [1, 0])
def test_requests_for_a_version_being_loaded_share_its_one_load(tmp_path, monkeypatch, cached_versions):
    for _ in range(3):
        publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path, cached_versions=cached_versions)  # serves v3, keeps at most one other
    (old, *_) = [v for v in (1, 2) if v not in store.slot("mnist").recent]
    load, loads, started, release = store._load, [], threading.Event(), threading.Event()

    def slow_load(name, version):
        loads.append((name, version))
        started.set()
        release.wait(10)
        return load(name, version)

    waiting = []  # requests waiting on the load in progress
    result = Future.result

    def counted_result(future, timeout=None):
        waiting.append(future)
        return result(future, timeout)

    monkeypatch.setattr(store, "_load", slow_load)
    monkeypatch.setattr(Future, "result", counted_result)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(store.version, "mnist", old)
        assert started.wait(10)
        others = [pool.submit(store.version, "mnist", old) for _ in range(5)]
        deadline = time.monotonic() + 10
        while len(waiting) < 5:  # all five wait on the load before it ends
            assert time.monotonic() < deadline, f"{len(waiting)} requests wait on the load"
            time.sleep(0.01)
        release.set()
        models = [first.result(timeout=10)] + [f.result(timeout=10) for f in others]
    assert loads == [("mnist", old)]
    assert all(m is models[0] for m in models) and models[0].version == old
    assert store._loading == {}  # nothing is kept once the load is over


def test_servable_refuses_a_broken_version_with_its_reason(tmp_path):
    publish_model(tmp_path, "mnist")
    publish_corrupt(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    with pytest.raises(Conflict, match="not an .npz archive"):
        store.servable("mnist", 2)
    with pytest.raises(NotReady):
        store.version("mnist", 2)


def test_no_memory_is_kept_across_many_swaps(tmp_path):
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path, cached_versions=2)
    old_models = []
    for _ in range(25):
        old_models.append(weakref.ref(store.served("mnist")))
        publish_model(tmp_path, "mnist")
        store.refresh()
    assert store.served("mnist").version == 26
    gc.collect()
    alive = [ref() for ref in old_models if ref() is not None]
    assert len(alive) <= 2, f"{len(alive)} old models still in memory"


def test_the_registry_disappearing_keeps_serving_and_recovers(tmp_path):
    root = tmp_path / "models"
    publish_model(root, "mnist")
    store, _ = make_store(root)
    model = store.served("mnist")
    root.rename(tmp_path / "elsewhere")
    store.refresh()
    assert store.served("mnist") is model
    ready, report = store.readiness()
    assert ready and report["registry"]["ok"] is False and "does not exist" in report["registry"]["error"]
    (tmp_path / "elsewhere").rename(root)
    publish_model(root, "mnist")
    store.refresh()
    assert store.registry_error is None and store.served("mnist").version == 2


def test_a_registry_that_goes_during_a_pass_keeps_its_models(tmp_path):
    root = tmp_path / "models"
    publish_model(root, "mnist")
    store, events = make_store(root)
    model = store.served("mnist")

    class GoingRegistry(Registry):  # unmounted just after the pass has found it readable
        def model_names(self, unreadable=None, misnamed=None):
            names = super().model_names(unreadable, misnamed)
            root.rename(tmp_path / "elsewhere")
            return names

    store.registry = GoingRegistry(root)
    store.refresh()
    assert store.names() == ["mnist"] and store.served("mnist") is model and events.removed == []
    store.refresh()
    ready, report = store.readiness()
    assert ready and "does not exist" in report["registry"]["error"] and store.served("mnist") is model


@pytest.mark.parametrize("goes_after", ["read_serving", "versions"])
def test_a_registry_that_goes_while_a_model_is_read_keeps_its_pin_labels_and_versions(tmp_path, goes_after):
    root = tmp_path / "models"
    for favour in (1, 2, 3):
        publish_model(root, "mnist", favour=favour)
    Registry(root).write_serving("mnist", {"pinned": 1, "labels": {"stable": 2}})
    store, events = make_store(root, models=("mnist",))  # named: the pass lists no other folder
    served, stable = store.served("mnist"), store.labelled("mnist", "stable")

    class GoingRegistry(Registry):  # unmounted after one file of the model has been read
        def read_serving(self, name):
            return self._then_go("read_serving", super().read_serving(name))

        def versions(self, name, misnamed=None):
            return self._then_go("versions", super().versions(name, misnamed))

        def _then_go(self, step, result):
            if step == goes_after and root.is_dir():
                root.rename(tmp_path / "elsewhere")
            return result

    store.registry = GoingRegistry(root)
    store.refresh()
    assert store.served("mnist") is served and store.labelled("mnist", "stable") is stable
    info = store.describe("mnist")
    assert info["pinned"] == 1 and info["labels"] == {"stable": 2}
    assert [v["status"] for v in info["versions"]] == [AVAILABLE] * 3 and events.failures == []
    (tmp_path / "elsewhere").rename(root)
    store.refresh()
    assert store.served("mnist") is served and events.swaps == [("mnist", None, 1)]


def test_a_pin_written_just_after_its_version_was_published_is_never_seen_without_it(tmp_path):
    publish_model(tmp_path, "mnist")

    class PublishingRegistry(Registry):  # a publish, then a pin of it, while a worker's pass reads the model
        def versions(self, name, misnamed=None):
            listed = super().versions(name, misnamed)
            if len(listed) == 1:
                version = publish_model(tmp_path, "mnist", favour=2)
                Registry(tmp_path).write_serving("mnist", {"pinned": version, "labels": {"stable": version}})
            return listed

    events = Recorder()
    store = ModelStore(PublishingRegistry(tmp_path), models=("mnist",), events=events)
    store.refresh()  # a worker starting: the state before the publish, or after it, never a mix
    assert store.served("mnist").version == 1 and store.describe("mnist")["problems"] == []
    assert events.pins == []  # no pin was ever unservable
    store.refresh()
    assert store.served("mnist").version == 2 and store.labelled("mnist", "stable").version == 2


def test_a_worker_starting_as_the_registry_goes_starts_and_serves_once_it_is_back(tmp_path):
    root = tmp_path / "models"
    publish_model(root, "mnist")

    class GoingRegistry(Registry):  # gone between the check that it is readable and its listing
        def model_names(self, unreadable=None, misnamed=None):
            if root.is_dir():
                root.rename(tmp_path / "elsewhere")
            return super().model_names(unreadable, misnamed)

    store = ModelStore(GoingRegistry(root))
    store.refresh()  # a worker's first pass, in create_app: an exception there stops the whole service
    assert store.names() == []
    (tmp_path / "elsewhere").rename(root)
    store.registry = Registry(root)
    store.refresh()
    assert store.served("mnist").version == 1


def test_a_registry_swapped_for_another_in_two_renames_keeps_its_models(tmp_path):
    root, new = tmp_path / "models", tmp_path / "new"
    publish_model(root, "mnist")
    publish_model(new, "mnist", favour=2)
    store, events = make_store(root)
    steps = []

    class SwappingPath(type(root)):  # each rename of the swap just before the store looks at a folder
        def is_dir(self):
            if steps and self.name == steps[0][0]:
                steps.pop(0)[1]()
            return super().is_dir()

    class SwappingRegistry(Registry):
        def model_names(self, unreadable=None, misnamed=None):
            names = super().model_names(unreadable, misnamed)
            if new.exists():
                steps[:] = [("mnist", lambda: root.rename(tmp_path / "old")), ("models", lambda: new.rename(root))]
            return names

    store.registry = SwappingRegistry(root)
    store.registry.root = SwappingPath(root)
    store.refresh()
    assert steps == [] and store.names() == ["mnist"] and events.removed == []
    assert store.served("mnist").version == 1
    store.refresh()
    assert store.served("mnist").version == 1 and store.describe("mnist")["versions"][0]["status"] == AVAILABLE


def check_unreadable_registry(root):
    publish_model(root, "mnist")
    store, _ = make_store(root)
    root.chmod(0)
    try:
        store.refresh()
        assert store.served("mnist").version == 1 and store.registry_error
    finally:
        root.chmod(0o755)


def run_unprivileged(check, folder) -> None:
    """``check(folder / "models")`` in a forked child that has given up root's privileges (root
    reads any folder, whatever its mode). Everything the check needs is already imported."""
    nobody = 65534
    os.chown(folder, nobody, nobody)
    codecs.lookup("ascii")  # the registry reads .highest_version as ASCII; the codec is a module under /root
    run_as(nobody, nobody, lambda: check(folder / "models"))


def unprivileged(check, tmp_path) -> None:
    """``check(models folder)`` as an unprivileged user when the tests run as root (see run_unprivileged)."""
    if os.geteuid() != 0:
        check(tmp_path / "models")
        return
    publish_model(tmp_path, "warmup")  # as root, first: loads every module the child will use
    make_store(tmp_path)[0].refresh()
    Metrics().exposition(None)
    folder = Path(tempfile.mkdtemp(prefix="scratchnet-unreadable-"))
    try:
        run_unprivileged(check, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_an_unreadable_registry_keeps_serving(tmp_path):
    unprivileged(check_unreadable_registry, tmp_path)


def check_registry_unreadable_before_the_list_notices(root, caplog):
    publish_model(root, "mnist")
    store, _ = make_store(root)
    root.chmod(0)
    try:
        # A model's own pass, which leaves the registry folder to the list's pass, ran first: it found the
        # registry readable on the list's last look, and cannot read the model's folder now.
        store.refresh(["mnist"], check_registry=False)
        assert store.served("mnist").version == 1
        assert store.describe("mnist")["problems"] == ["the folder of mnist cannot be read (Permission denied); "
                                                       "serving from memory"]
        assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    finally:
        root.chmod(0o755)


def test_a_registry_unreadable_since_the_last_look_gives_no_traceback(tmp_path, caplog):
    """chmod 000 of the registry logged 'registry refresh failed' with a PermissionError's traceback from
    a model's pass that came before the list's: an error in the log for what the list's pass reports."""
    unprivileged(lambda root: check_registry_unreadable_before_the_list_notices(root, caplog), tmp_path)


def check_unreadable_model_folder_logged_as_served_from_memory(root, caplog):
    publish_model(root, "mnist")
    store, _ = make_store(root)
    caplog.set_level(logging.INFO, logger="scratchnet.store")
    caplog.clear()  # only what the folder's loss and return log: a level set before keeps the loads' lines
    (root / "mnist").chmod(0)
    try:
        store.refresh()
        assert store.served("mnist").version == 1
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and errors[0].endswith("; serving version 1 from memory until it can be read")
    finally:
        (root / "mnist").chmod(0o755)
    store.refresh()
    assert [r.getMessage() for r in caplog.records if r.levelname == "INFO"] == ["mnist: its folder can be read again"]


def test_a_model_folder_made_unreadable_is_logged_as_served_from_memory_then_readable_again(tmp_path, caplog):
    """The log said 'it is not served until it can be read' of a model every worker went on serving from memory,
    and nothing once it could be read again."""
    unprivileged(lambda root: check_unreadable_model_folder_logged_as_served_from_memory(root, caplog), tmp_path)


def check_version_lookup_while_unreadable(root):
    for favour in (1, 2):
        publish_model(root, "mnist", favour=favour)
    store, _ = make_store(root)
    for unreadable in (root, root / "mnist"):
        unreadable.chmod(0)
        try:
            store.refresh()
            assert store.version("mnist", 2).version == 2  # what is in memory answers
            with pytest.raises(NotReady, match="Version 7 of mnist cannot be looked up: .*Permission denied") as e:
                store.version("mnist", 7)
            assert e.value.code == "registry_unavailable"
            with pytest.raises(NotReady, match="Version 7 of mnist cannot be looked up"):
                store.describe_version("mnist", 7)  # was 'available', a version no one knows of
        finally:
            unreadable.chmod(0o755)
        store.refresh()
    with pytest.raises(NotFound, match="has no version 7"):
        store.version("mnist", 7)


def test_a_version_asked_for_while_the_registry_cannot_be_read_is_not_said_to_be_missing(tmp_path):
    """A version the worker had not looked at answered 404 'Model mnist has no version 7' while the registry
    (or the model's folder) could not be read, though it may well be there: a client took it for deleted."""
    unprivileged(check_version_lookup_while_unreadable, tmp_path)


def test_readiness_needs_every_configured_model(tmp_path):
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path, models=("mnist", "wine"))
    ready, report = store.readiness()
    assert not ready
    assert "model wine has no servable version" in report["reason"]
    assert report["models"]["mnist"] == {"ready": True, "version": 1}
    empty, _ = make_store(tmp_path / "empty")
    ready, report = empty.readiness()
    assert not ready and "holds no models" in report["reason"]


def test_a_removed_model_folder_is_no_longer_served(tmp_path):
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "wine", kind="regression")
    publish_corrupt(tmp_path, "wine")
    store, events = make_store(tmp_path)
    shutil.rmtree(tmp_path / "wine")
    store.refresh()  # one pass could be the middle of `rm -rf` of the whole registry: still served
    assert store.served("wine").version == 1 and events.swaps[-1] != ("wine", 1, None)
    store.refresh()  # the next pass confirms it
    assert store.names() == ["mnist"]
    with pytest.raises(NotFound, match="There is no model 'wine'"):
        store.served("wine")
    assert store.readiness()[0] is True and "wine" not in store.versions_held()
    assert events.swaps[-1] == ("wine", 1, None) and sorted(events.removed) == [("wine", 1), ("wine", 2)]
    # A store that starts now agrees; a model published again under the name is served again.
    assert make_store(tmp_path)[0].names() == ["mnist"]
    publish_model(tmp_path, "wine", kind="regression")
    store.refresh()
    assert store.served("wine").version == 1


def test_a_removed_configured_model_is_unservable_and_makes_the_service_unready(tmp_path):
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "wine", kind="regression")
    store, _ = make_store(tmp_path, models=("mnist", "wine"))
    shutil.rmtree(tmp_path / "wine")
    store.refresh()
    store.refresh()
    with pytest.raises(NotReady, match="The registry has no version of wine"):
        store.served("wine")
    ready, report = store.readiness()
    assert not ready and "model wine has no servable version" in report["reason"]


def test_a_registry_deleted_and_recreated_keeps_serving_through_the_moments_it_lacks_the_folder(tmp_path):
    registry = tmp_path / "registry"
    publish_model(registry, "mnist", favour=1)
    store, events = make_store(registry)
    # `rm -rf` of the registry: a pass lands after the model's folder went, before the registry did.
    shutil.rmtree(registry / "mnist")
    store.refresh()
    registry.rmdir()
    store.refresh()
    assert store.served("mnist").version == 1 and store.registry_error
    # Re-created: a pass lands after the registry came back, before the model's folder did.
    registry.mkdir()
    store.refresh()
    assert store.served("mnist").version == 1
    publish_model(registry, "mnist", favour=2)
    store.refresh()
    rows = np.zeros((1, 784), np.float32)
    assert store.served("mnist").version == 1 and store.served("mnist").predict(rows)[0] == 2  # the new v1
    assert store.describe("mnist")["problems"] == [] and ("mnist", 1, None) not in events.swaps


@pytest.mark.parametrize("serving_json", [False, True], ids=["folder left empty", "serving.json left"])
def test_a_model_folder_emptied_for_a_while_keeps_serving_from_memory(tmp_path, serving_json):
    publish_model(tmp_path, "mnist", favour=1)
    store, _ = make_store(tmp_path)
    if serving_json:
        Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {}})
    shutil.rmtree(tmp_path / "mnist" / "1")  # the folder stays: being rewritten, say
    store.refresh()
    assert store.served("mnist").version == 1
    assert any("still serving v1 from memory" in p for p in store.describe("mnist")["problems"])
    publish_model(tmp_path, "mnist", favour=2)
    store.refresh()
    assert store.served("mnist").version == 2 and store.describe("mnist")["problems"] == []


def test_a_model_folder_left_without_versions_serves_nothing_as_a_worker_starting_then(tmp_path):
    """Every version deleted (``rm -rf models/mnist/*``): the workers running served the last one
    from memory for good, while a worker started since answered 404, or 503 with serving.json left."""
    for name in ("mnist", "fashion"):
        publish_model(tmp_path, name)
    Registry(tmp_path).write_serving("fashion", {"pinned": None, "labels": {"stable": 1}})
    store, events = make_store(tmp_path)
    for name in ("mnist", "fashion"):
        shutil.rmtree(tmp_path / name / "1")
    store.refresh()
    assert store.served("mnist").version == 1 and store.served("fashion").version == 1  # for one pass
    store.refresh()
    starting, _ = make_store(tmp_path)
    for running in (store, starting):
        assert running.names() == ["fashion"]
        with pytest.raises(NotFound, match="There is no model 'mnist'"):
            running.served("mnist")
        with pytest.raises(NotReady, match="The registry has no version of fashion"):
            running.served("fashion")
        assert running.readiness()[0] is False
    assert ("mnist", 1, None) in events.swaps and ("fashion", 1, None) in events.swaps
    assert store.versions_held() == starting.versions_held()


def test_new_models_are_discovered(tmp_path):
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    publish_model(tmp_path, "wine", kind="regression")
    store.refresh()
    assert store.names() == ["mnist", "wine"] and store.served("wine").task == "regression"


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def watching(root, poll_interval: float = 0.1) -> ModelStore:
    store, _ = make_store(root, poll_interval=poll_interval)
    store.start()
    return store


def test_the_watcher_thread_picks_up_a_new_version(tmp_path):
    publish_model(tmp_path, "mnist")
    store = watching(tmp_path, poll_interval=0.05)
    try:
        publish_model(tmp_path, "mnist")
        assert wait_for(lambda: store.served("mnist").version == 2, 2)
    finally:
        store.stop()


def test_stopping_waits_for_all_the_watcher_threads_together_not_for_each_in_turn(tmp_path, monkeypatch):
    """A worker shutting down while three models load a new version each (two loading, one waiting for
    its turn) waits STOP_WAIT_SECONDS in all, not that long for each: Gunicorn's graceful timeout is short."""
    import service.store as store_module
    names = ("a", "b", "c")
    for name in names:
        publish_model(tmp_path, name)
    store = watching(tmp_path, poll_interval=0.05)
    load, started, release = store._load, [], threading.Event()

    def stuck_load(name, version):
        started.append(name)
        release.wait(10)
        return load(name, version)

    monkeypatch.setattr(store, "_load", stuck_load)
    monkeypatch.setattr(store_module, "STOP_WAIT_SECONDS", 1.0)
    try:
        for name in names:
            publish_model(tmp_path, name)
        assert wait_for(lambda: len(started) == 2, 5)  # two loads at a time; the third model's thread waits
        began = time.monotonic()
        store.stop()
        assert time.monotonic() - began < 2.0
    finally:
        release.set()


def test_one_models_long_load_holds_back_no_other_models_pin(tmp_path, monkeypatch):
    """Each model has its own watcher thread: with one pass for every model, a pin of mnist
    written while fashion loaded a large new version (seconds) waited for that load."""
    import service.store as store_module
    for name in ("mnist", "fashion"):
        publish_model(tmp_path, name, favour=1)
        publish_model(tmp_path, name, favour=2)
    loading, release = threading.Event(), threading.Event()
    load = store_module.load_model

    def slow_for_fashion_v3(path, **kwargs):
        if kwargs.get("expect_name") == "fashion" and kwargs.get("expect_version") == 3:
            loading.set()
            release.wait(30)
        return load(path, **kwargs)

    monkeypatch.setattr(store_module, "load_model", slow_for_fashion_v3)
    store = watching(tmp_path, poll_interval=0.05)
    try:
        publish_model(tmp_path, "fashion", favour=3)
        assert loading.wait(10)
        Registry(tmp_path).write_serving("mnist", {"pinned": 1, "labels": {}})
        assert wait_for(lambda: store.served("mnist").version == 1, 5), "the pin waited for another model's load"
        assert store.served("fashion").version == 2  # still loading v3
    finally:
        release.set()
        store.stop()


def test_an_idle_poll_lists_the_registry_a_constant_number_of_times(tmp_path, monkeypatch):
    """The list thread alone looks at the registry folder: each model's thread asking too made an
    idle poll's cost grow with the square of the models (1000 models: a whole core)."""
    import service.store as store_module
    for i in range(50):
        publish_model(tmp_path, f"m{i}")
    store = watching(tmp_path)
    time.sleep(0.5)  # every model's thread running
    calls, listdir = [], os.listdir
    monkeypatch.setattr(store_module.os, "listdir", lambda p: (calls.append(p) if Path(p) == tmp_path else None,
                                                                 listdir(p))[1])
    time.sleep(1.0)
    store.stop()
    assert len(calls) / 10 <= 3, f"the registry folder listed {len(calls) / 10:.0f} times a poll with 50 models"


def test_the_list_of_models_looks_at_no_model_s_every_version(tmp_path, monkeypatch):
    """The registry's list of models, read every poll, looks in each model's folder for one version:
    a stat of every version folder there, besides each model's own pass, made an idle poll's cost
    grow with every version the registry keeps (60 models of 32 versions: a third of it)."""
    publish_model(tmp_path, "mnist")
    for version in range(2, 41):  # 40 versions, as a model holds after months of publishing
        shutil.copytree(tmp_path / "mnist" / "1", tmp_path / "mnist" / str(version))
    publish_model(tmp_path, "iris", kind="vector")
    stats, stat = [], os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: (stats.append(Path(path)), stat(path, *a, **k))[1])
    assert Registry(tmp_path).model_names() == ["iris", "mnist"]
    looked_at = [path for path in stats if path.parent == tmp_path / "mnist"]
    assert len(looked_at) <= 1, f"{len(looked_at)} version folders of mnist looked at to list the models"


def test_an_idle_pass_builds_no_path_for_each_version_it_has_checked(tmp_path, monkeypatch):
    """Each model's pass, every poll, stats every version's file; building each one's path three
    times over in pathlib besides, an idle pass over 60 models of 32 versions took 46 ms of a
    worker's CPU a second instead of 25. Paths are built once, as strings, for unchanged files."""
    import pathlib
    for _ in range(40):
        publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    store.refresh()
    built, make = [], pathlib.PurePath._make_child
    monkeypatch.setattr(pathlib.PurePath, "_make_child", lambda self, args: (built.append(args), make(self, args))[1])
    store.refresh(["mnist"], check_registry=False)
    assert len(built) <= 45, f"{len(built)} paths built by an idle pass over 40 versions"


def test_status_checks_of_many_models_do_not_all_load_at_once(tmp_path, monkeypatch):
    """Every load holds its file and arrays: each model's thread checking its own versions at once
    took a worker starting on 8 models of 24 MB versions from 129 MB to 1 GB."""
    for i in range(6):
        publish_model(tmp_path, f"m{i}")
        publish_model(tmp_path, f"m{i}")  # v2 serves; v1 is checked for its status by the watcher
    store = ModelStore(Registry(tmp_path), poll_interval=0.2)
    store.refresh(validate_all=False)  # as create_app: the other versions are left to the watcher
    now, most, lock = [0], [0], threading.Lock()
    load = store._load

    def counted(name, version):
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        try:
            time.sleep(0.3)  # a large file
            return load(name, version)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(store, "_load", counted)
    store.start()
    try:
        assert wait_for(lambda: all(store._slots[f"m{i}"].versions[1].status == AVAILABLE for i in range(6)), 20)
    finally:
        store.stop()
    assert most[0] <= 2, f"{most[0]} versions loaded at once"


def test_a_model_whose_watcher_thread_cannot_start_is_still_watched(tmp_path, monkeypatch):
    publish_model(tmp_path, "a")
    publish_model(tmp_path, "b")
    real_start = threading.Thread.start

    def start(self):
        if self.name == "scratchnet-registry-watcher-b":
            raise RuntimeError("can't start new thread")  # ulimit -u or -v reached
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    store = watching(tmp_path)
    try:
        time.sleep(0.3)
        new = publish_model(tmp_path, "b", favour=3)
        assert wait_for(lambda: store.served("b").version == new, 3), "b is no longer watched"
    finally:
        store.stop()


def test_stop_then_start_leaves_one_thread_per_model(tmp_path, monkeypatch):
    """A thread still loading when stop() gave up on it must end with the stop it was started under."""
    import service.store as store_module
    publish_model(tmp_path, "slow")
    store = watching(tmp_path, poll_interval=0.05)
    load, loading = store_module.load_model, threading.Event()

    def slow(path, **kwargs):
        if kwargs.get("expect_version") == 2:
            loading.set()
            time.sleep(6)  # longer than stop()'s join
        return load(path, **kwargs)

    monkeypatch.setattr(store_module, "load_model", slow)
    publish_model(tmp_path, "slow")
    assert loading.wait(5)
    store.stop()
    store.start()
    time.sleep(2.5)  # the slow load has ended
    threads = [t.name for t in threading.enumerate() if t.name == "scratchnet-registry-watcher-slow"]
    store.stop()
    assert len(threads) == 1, threads


def test_forgotten_models_leave_no_thread_objects_behind(tmp_path):
    publish_model(tmp_path, "keep")
    store = watching(tmp_path, poll_interval=0.05)
    try:
        for i in range(10):
            publish_model(tmp_path, f"t{i}")
            assert wait_for(lambda: f"t{i}" in store.names())
            shutil.rmtree(tmp_path / f"t{i}")
            assert wait_for(lambda: f"t{i}" not in store.names())
        time.sleep(0.3)
        assert len(store._model_threads) <= 2
    finally:
        store.stop()


def test_describe_version_gives_the_manifest(tmp_path):
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    info = store.describe_version("mnist", 1)
    assert info["status"] == AVAILABLE and info["served"] and info["manifest"]["name"] == "mnist"
    json.dumps(info)  # serialisable as it is


def test_an_unloaded_model_is_reported_not_ready_and_serving_nothing(tmp_path):
    publish_model(tmp_path, "mnist")
    Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {}, "unloaded": True})
    store, _ = make_store(tmp_path)
    info = store.describe("mnist")
    assert info["unloaded"] is True and info["ready"] is False and info["served_version"] is None
    assert [v["served"] for v in info["versions"]] == [False]
    assert store.describe_version("mnist", 1)["served"] is False


def test_a_model_unloaded_while_serving_is_reported_serving_nothing_in_readiness_too(tmp_path):
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    assert store.readiness()[1]["models"]["mnist"] == {"ready": True, "version": 1}
    Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {}, "unloaded": True})
    store.refresh()
    assert store.describe("mnist")["served_version"] is None
    assert store.readiness()[1]["models"]["mnist"] == {"ready": False, "version": None, "unloaded": True}


def test_a_model_loaded_through_another_worker_serves_here_even_during_a_registry_pass(tmp_path):
    # Another worker wrote "loaded" to serving.json and answered; a client's next request lands
    # here while this worker's watcher is in the middle of a pass (which holds the refresh lock).
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {}, "unloaded": True})
    store.refresh()
    store._refresh_lock.acquire()  # a pass in progress
    Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {}, "unloaded": False})
    threading.Timer(0.3, store._refresh_lock.release).start()  # the pass ends
    store.require_loaded("mnist")  # waits for the pass, then reads serving.json: no 503
    assert store.readiness()[1]["models"]["mnist"] == {"ready": True, "version": 1}


def test_a_model_loaded_with_another_pin_through_another_worker_serves_that_version_here_at_once(tmp_path):
    # Unloaded while v2 was pinned; another worker loads it pinned to v1 and answers. This worker
    # must not go from 503 to v2, the version before the unload, until its watcher looks.
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "mnist")
    registry = Registry(tmp_path)
    registry.write_serving("mnist", {"pinned": 2, "labels": {}, "unloaded": True})
    store, _ = make_store(tmp_path)
    registry.write_serving("mnist", {"pinned": 1, "labels": {}})
    store.require_loaded("mnist")
    assert store.served("mnist").version == 1
    assert store.describe("mnist")["pinned"] == 1 and store.describe("mnist")["served_version"] == 1


def test_no_request_meets_the_version_from_before_the_unload_while_the_loaded_pin_loads(tmp_path, monkeypatch):
    # One request finds the model loaded again and loads the new pin; another arriving meanwhile
    # must wait for it (or be refused), not be served the version pinned before the unload.
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "mnist")
    registry = Registry(tmp_path)
    registry.write_serving("mnist", {"pinned": 2, "labels": {}, "unloaded": True})
    store, _ = make_store(tmp_path)
    after_each_load(store, monkeypatch, lambda name, version: time.sleep(0.5) if version == 1 else None)
    registry.write_serving("mnist", {"pinned": 1, "labels": {}})
    first = threading.Thread(target=store.require_loaded, args=("mnist",))
    first.start()
    time.sleep(0.1)  # the first request is loading v1
    store.require_loaded("mnist")
    assert store.served("mnist").version == 1
    first.join()


def test_the_watcher_starts_a_pass_every_poll_interval_whatever_a_pass_takes(tmp_path, monkeypatch):
    # A change seen by no pass yet waits at most the interval: waiting a whole interval after each
    # pass ends would add the pass's own loads and checks to it.
    import service.store as store_module
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path, poll_interval=1.0)
    clock, waits = [100.0], []

    class Stop:
        def wait(self, timeout):
            waits.append(round(timeout, 6))
            return len(waits) > 3

    def a_pass(*args, **kwargs):
        clock[0] += 0.3 if len(waits) < 3 else 1.5  # the third pass overruns the interval

    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(store, "_stop", Stop())
    store._every_poll(a_pass)
    assert waits == [1.0, 0.7, 0.7, 0.1]  # after the pass that overran, a tenth of the interval
    waits.clear()
    store._every_poll(a_pass, at_once=True)  # a model's own watcher, started for a model just found
    assert waits == [0.0, 0.7, 0.7, 0.1]


def test_the_models_watchers_spread_their_passes_across_the_poll_interval(tmp_path, monkeypatch):
    # Models found together used to pass together every interval, their stat calls in one burst
    # that requests waited behind (p99 rose with the versions kept); no model may wait longer
    # than the interval between its passes for it.
    interval, names = 0.4, [f"m{i}" for i in range(8)]
    for name in names:
        publish_model(tmp_path, name, kind="vector")
    store = ModelStore(Registry(tmp_path), poll_interval=interval)
    passes: dict[str, list[float]] = {name: [] for name in names}
    refresh = store.refresh

    def timed_refresh(models=None, **options):
        for name in models or ():
            passes[name].append(time.monotonic())
        return refresh(models, **options)

    monkeypatch.setattr(store, "refresh", timed_refresh)
    store.start()
    time.sleep(interval * 6)
    store.stop()
    late = [times[2:] for times in passes.values()]  # the first pass is everyone's at once, the second early
    assert all(len(times) >= 1 for times in late)
    gaps = [b - a for times in passes.values() for a, b in zip(times, times[1:])]
    assert max(gaps) < interval * 1.25
    phases = sorted((t / interval) % 1.0 for times in late for t in times[:1])
    widest = max([b - a for a, b in zip(phases, phases[1:])] + [phases[0] + 1 - phases[-1]])
    assert widest < 0.5, f"the models' passes bunch together: phases {phases}"


def test_a_label_on_a_worker_that_never_read_serving_json_is_not_called_missing(tmp_path):
    publish_model(tmp_path, "mnist")
    (tmp_path / "mnist" / "serving.json").write_text('{"pinned": 5, ')  # broken by hand
    store, _ = make_store(tmp_path)
    with pytest.raises(NotReady, match=r"Model mnist's labels cannot be read: .*serving.json cannot be read") as e:
        store.labelled("mnist", "stable")
    assert e.value.code == "serving_state_unreadable"


def test_a_label_set_through_another_worker_is_followed_here_at_once(tmp_path):
    # Another worker labelled v1 and answered; the client's request through the label lands here
    # before this worker's watcher has looked (docs/serving.md's hot-swap example does just that).
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    Registry(tmp_path).write_serving("mnist", {"pinned": None, "labels": {"stable": 1}})
    assert store.labelled("mnist", "stable").version == 1
    with pytest.raises(NotFound, match=r"no label 'canary' \(labels: stable\)"):
        store.labelled("mnist", "canary")


def check_unreadable_model_folder(root):
    publish_model(root, "mnist")
    publish_model(root, "iris", kind="vector")
    (root / "iris").chmod(0)
    metrics = Metrics()
    try:
        store = ModelStore(Registry(root), events=metrics)
        store.refresh()  # the first pass of a worker starting: it must not raise
        assert store.names() == ["mnist"] and store.served("mnist").version == 1
        publish_model(root, "mnist")
        store.refresh()
        assert store.served("mnist").version == 2  # the other models are still watched
        # Not served, and said where an operator looks: /readyz (still ready), /metrics, /models/iris.
        ready, report = store.readiness()
        assert ready and report["registry"]["unreadable_models"] == {
            "iris": f"the folder {root / 'iris'} cannot be read (Permission denied)"}
        assert "scratchnet_registry_unreadable_models 1.0" in metrics.exposition(None).decode()
        with pytest.raises(NotReady, match="Model iris is not served: the folder .* cannot be read") as refused:
            store.slot("iris")
        assert refused.value.code == "model_unreadable"
    finally:
        (root / "iris").chmod(0o755)
    store.refresh()
    assert store.served("iris").version == 1
    assert store.readiness()[1]["registry"]["unreadable_models"] == {}
    assert "scratchnet_registry_unreadable_models 0.0" in metrics.exposition(None).decode()


def test_an_unreadable_model_folder_does_not_stop_the_other_models(tmp_path):
    unprivileged(check_unreadable_model_folder, tmp_path)


def check_permissions_fixed(root):
    publish_model(root, "mnist")
    publish_model(root, "mnist", favour=3)
    model_file = root / "mnist" / "2" / "model.npz"
    model_file.chmod(0)
    try:
        store, _ = make_store(root)
        assert store.served("mnist").version == 1
        assert "Permission denied" in store.describe("mnist")["versions"][1]["status"]
    finally:
        model_file.chmod(0o644)  # changes neither the content nor the mtime: only the ctime
    store.refresh()
    assert store.served("mnist").version == 2
    assert store.describe("mnist")["versions"][1]["status"] == AVAILABLE


def test_a_version_that_could_not_be_read_is_served_once_its_permissions_are_fixed(tmp_path):
    unprivileged(check_permissions_fixed, tmp_path)


def test_a_served_file_whose_permissions_change_is_not_loaded_again(tmp_path):
    """Only a file that failed is read again for a change of its permissions (its ctime): a
    backup's hard links or a chmod of a served file must not count as a swap in every worker."""
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    served = store.served("mnist")
    (tmp_path / "mnist" / "1" / "model.npz").chmod(0o600)
    store.refresh()
    assert store.served("mnist") is served


def check_served_file_made_unreadable(root, a_poll_later):
    publish_model(root, "mnist")
    publish_model(root, "mnist", favour=3)
    running, _ = make_store(root)
    assert running.served("mnist").version == 2
    (root / "mnist" / "2" / "model.npz").chmod(0)
    try:
        started, _ = make_store(root)  # a worker started now (a reload, a recycled worker) cannot read it
        running.refresh()
        a_poll_later(running)
        running.refresh()  # the pass after the one that saw it fail: no copy can be under way
        assert started.served("mnist").version == running.served("mnist").version == 1
        assert "Permission denied" in running.describe("mnist")["versions"][1]["status"]
    finally:
        (root / "mnist" / "2" / "model.npz").chmod(0o644)


def test_a_served_file_made_unreadable_is_passed_over_as_a_starting_worker_passes_it(tmp_path, a_poll_later):
    """A served file that this process can no longer read is loaded again, fails and is passed over,
    as a worker started after the chmod passes it over: otherwise the workers that loaded it before
    serve it and the new ones the version below, and answers alternate between the two for good."""
    unprivileged(lambda root: check_served_file_made_unreadable(root, a_poll_later), tmp_path)


def check_unknown_model_while_the_registry_cannot_be_read(root):
    publish_model(root, "mnist")
    root.chmod(0)
    try:
        store, _ = make_store(root)  # a worker started during the outage: it has never read the registry
        with pytest.raises(NotReady, match=r"Model mnist is not served: the registry folder .* cannot be read") as e:
            store.served("mnist")
        assert e.value.code == "registry_unavailable"
    finally:
        root.chmod(0o755)
    store.refresh()
    assert store.served("mnist").version == 1


def test_a_worker_that_cannot_read_the_registry_answers_503_not_that_the_model_does_not_exist(tmp_path):
    """A 404 is final to clients and proxies, which do not retry it, and a Triton client reads it as
    an unknown model: while the registry cannot be read, whether it holds a model cannot be told."""
    unprivileged(check_unknown_model_while_the_registry_cannot_be_read, tmp_path)


def test_a_serving_json_rewritten_in_place_with_the_same_size_and_time_is_seen(tmp_path):
    # On kernels whose file times tick every few ms, two writes of the same size within one tick
    # leave size, inode and mtime alike: a change seen only through those would be missed.
    for _ in range(3):
        publish_model(tmp_path, "mnist")
    path = tmp_path / "mnist" / "serving.json"
    path.write_text('{"pinned": 1}')
    store, _ = make_store(tmp_path)
    assert store.served("mnist").version == 1
    before = os.stat(path)
    with open(path, "r+") as f:
        f.write('{"pinned": 2}')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (before.st_mtime_ns, before.st_size, before.st_ino)
    store.refresh()
    assert store.served("mnist").version == 2 and store.describe("mnist")["pinned"] == 2


def test_a_burst_of_new_versions_swaps_to_the_newest_before_checking_the_others(tmp_path, monkeypatch):
    import service.store as store_module
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    for _ in range(5):
        publish_model(tmp_path, "mnist")
    served_while_loading = {}
    real_load = store_module.load_model

    def load(path, **kwargs):
        served_while_loading[kwargs["expect_version"]] = store.served("mnist").version
        return real_load(path, **kwargs)

    monkeypatch.setattr(store_module, "load_model", load)
    store.refresh()
    assert served_while_loading == {6: 1, 5: 6, 4: 6, 3: 6, 2: 6}
    assert {v["status"] for v in store.describe("mnist")["versions"]} == {AVAILABLE}


@pytest.mark.parametrize("text, message", [
    ('{"pinned": 1000000000}', "'pinned' must be a version number"),
    ('{"pinned": 2.0}', "'pinned' must be a version number"),
    ('{"pinned": "' + "x" * 100 + '"}', r'not "x{36}\.\.\.$'),  # a long value is cut
    ('{"labels": {"stable": 1000000000}}', "'labels' must map label names to version numbers"),
    ('{"labels": []}', "'labels' must map"),
    ('{"labels": {"stable\\n": 1}}', "'labels' must map"),
    ('{"unloaded": "true"}', "'unloaded' must be true or false, not \"true\""),  # not taken as loaded
    ('{"unloaded": 1}', "'unloaded' must be true or false, not 1"),
    ("[" * 100_000, "cannot be read: it is nested over about 1000 levels deep$"),
    ('{"pinned": ' + "9" * 5000 + "}", "cannot be read: it holds an integer of over 4300 digits, too long to read$"),
    ('{"pinned": 1}' + " " * (1 << 20), "is over 1048576 bytes"),
])
def test_serving_json_refuses_what_no_version_folder_can_be(tmp_path, text, message):
    from shared.registry import RegistryError
    publish_model(tmp_path, "mnist")
    (tmp_path / "mnist" / "serving.json").write_text(text)
    with pytest.raises(RegistryError, match=message):
        Registry(tmp_path).read_serving("mnist")
    assert publish_model(tmp_path, "mnist") == 2  # the refused numbers do not make the next version invisible


def test_serving_json_as_a_link_is_followed_only_inside_the_registry_and_never_to_nothing(tmp_path):
    """A link to nothing (a volume not mounted yet) is not "no pin": the pin is out of reach, and
    a worker keeps the state it knows; a link out of the registry is refused like a model file's."""
    from shared.registry import RegistryError
    for _ in range(2):
        publish_model(tmp_path, "mnist")
    registry = Registry(tmp_path)
    kept = tmp_path / "mnist" / "serving.kept.json"
    kept.write_text('{"pinned": 1, "labels": {"stable": 2}}')
    link = tmp_path / "mnist" / "serving.json"
    link.symlink_to(kept.name)
    assert registry.read_serving("mnist")["pinned"] == 1  # within the registry: followed
    store, _ = make_store(tmp_path)
    assert store.served("mnist").version == 1
    kept.unlink()
    with pytest.raises(RegistryError, match="is a link to a file that does not exist"):
        registry.read_serving("mnist")
    store.refresh()
    info = store.describe("mnist")
    assert store.served("mnist").version == 1 and info["labels"] == {"stable": 2}
    assert "using the last good serving state" in info["problems"][0]
    outside = tmp_path.parent / f"{tmp_path.name}-serving.json"
    outside.write_text('{"pinned": 2}')
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(RegistryError, match="is a link leading outside the registry; refused"):
        registry.read_serving("mnist")
    link.unlink()
    link.symlink_to(link.name)  # a link to itself
    with pytest.raises(RegistryError, match="mnist/serving.json is a link that loops or cannot be followed"):
        registry.read_serving("mnist")
    assert publish_model(tmp_path, "mnist") == 3  # the trainer publishes all the same
    store.refresh()
    assert store.served("mnist").version == 1 and "loops" in store.describe("mnist")["problems"][0]


def test_publish_refuses_a_version_number_of_ten_digits(tmp_path):
    from shared.registry import MAX_VERSION, RegistryError
    publish_model(tmp_path, "mnist")
    (tmp_path / "mnist" / "serving.json").write_text(json.dumps({"pinned": MAX_VERSION}))
    with pytest.raises(RegistryError, match="more than 9 digits"):
        publish_model(tmp_path, "mnist")
    assert Registry(tmp_path).versions("mnist") == [1] and Registry(tmp_path).highest_published("mnist") == 1


def test_a_version_deleted_while_a_request_looks_it_up_is_404_not_a_crash(tmp_path, monkeypatch):
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path, cached_versions=0)
    real_checked = store._checked

    def checked_while_deleted(slot, version):
        monkeypatch.setattr(store, "_checked", real_checked)
        shutil.rmtree(tmp_path / "mnist" / str(version))
        store.refresh()  # the watcher drops the record meanwhile
        return real_checked(slot, version)

    monkeypatch.setattr(store, "_checked", checked_while_deleted)
    with pytest.raises(NotFound, match="no version 1 any more"):
        store.version("mnist", 1)


def test_rollback_skips_a_version_deleted_while_it_looks_for_one(tmp_path):
    for favour in (1, 2, 3):
        publish_model(tmp_path, "mnist", favour=favour)

    class DeletingStore(ModelStore):
        def version(self, name, version):
            if version == 2 and (tmp_path / "mnist" / "2").exists():
                shutil.rmtree(tmp_path / "mnist" / "2")
                self.refresh()  # the watcher's pass, after rollback has read the records
            return super().version(name, version)

    store = DeletingStore(Registry(tmp_path), cached_versions=0)  # v2 is not in memory
    store.refresh()
    assert store.lower_servable("mnist", 3).version == 1


def test_a_label_on_a_deleted_or_broken_version_says_so(tmp_path):
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "mnist")
    publish_corrupt(tmp_path, "mnist")
    (tmp_path / "mnist" / "serving.json").write_text('{"labels": {"old": 1, "bad": 3}}')
    store, _ = make_store(tmp_path)
    shutil.rmtree(tmp_path / "mnist" / "1")
    store.refresh()
    with pytest.raises(NotFound, match="Label 'old' of model mnist points to version 1, which does not exist"):
        store.labelled("mnist", "old")
    with pytest.raises(NotReady, match="Label 'bad' of model mnist points to version 3, which cannot be served: "
                                       "its model.npz failed to load: not an .npz archive"):
        store.labelled("mnist", "bad")


def test_a_version_that_failed_on_an_io_error_is_tried_again_but_a_bad_file_is_not(tmp_path, monkeypatch, a_poll_later):
    import errno
    import service.store as store_module
    from shared.errors import ModelFileError
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path, poll_interval=0.01)
    publish_model(tmp_path, "mnist")
    publish_corrupt(tmp_path, "mnist")
    real_load, loads = store_module.load_model, []

    def flaky_load(path, **kwargs):  # v2 meets an I/O error twice (a network file system's hiccup)
        loads.append(kwargs["expect_version"])
        if loads.count(2) <= 2 and kwargs["expect_version"] == 2:
            try:
                raise OSError(errno.EIO, "Input/output error")
            except OSError as e:
                raise ModelFileError(path, f"cannot read the file ({e.strerror})") from None
        return real_load(path, **kwargs)

    monkeypatch.setattr(store_module, "load_model", flaky_load)
    store.refresh()  # new files: read again a poll later before a failure counts
    a_poll_later(store)
    store.refresh()
    assert store.served("mnist").version == 1
    assert "Input/output error" in store.describe("mnist")["versions"][1]["status"]
    time.sleep(0.05)
    store.refresh()
    assert store.served("mnist").version == 2
    time.sleep(0.05)
    store.refresh()
    assert loads == [3, 2, 2, 2]  # the corrupt v3 is read once


def test_a_file_unreadable_for_a_day_is_still_tried_again(tmp_path, monkeypatch, caplog):
    """The back-off stops growing at its cap: a version whose file stays unreadable (here a folder
    where model.npz should be) is tried again every MAX_RETRY_SECONDS for as long as it lasts, and
    the pass never fails on the count of failures."""
    import types
    import service.store as store_module
    publish_model(tmp_path, "mnist")
    (tmp_path / "mnist" / "2" / "model.npz").mkdir(parents=True)
    clock = [time.monotonic()]
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    store, events = make_store(tmp_path)
    passes = 24 * 60  # a day of passes, one a minute
    descriptors = len(os.listdir("/proc/self/fd"))
    for _ in range(passes):
        clock[0] += store_module.MAX_RETRY_SECONDS + 1
        store.refresh()
    assert len(events.failures) == passes + 1 and {f[1] for f in events.failures} == {2}
    assert "registry refresh failed" not in caplog.text
    assert store.served("mnist").version == 1
    # each try closes what it opened: a descriptor lost per try ran a worker out of them (EMFILE)
    # within a day under the usual limit of 1024
    assert len(os.listdir("/proc/self/fd")) <= descriptors + 2
    statuses = {v["version"]: v["status"] for v in store.describe("mnist")["versions"]}
    assert "not a regular file (a folder)" in statuses[2]


def test_the_back_off_of_an_unreadable_file_is_not_restarted_by_passes_that_do_not_read_it(tmp_path, monkeypatch):
    """A retry that is due waits for a pass that checks it; passes meanwhile (an admin call's look,
    or a pass whose checks ran out of time) keep its count, so the back-off keeps growing."""
    import types
    import service.store as store_module
    publish_model(tmp_path, "mnist")
    Registry(tmp_path).write_serving("mnist", {"pinned": 1, "labels": {}})
    (tmp_path / "mnist" / "2" / "model.npz").mkdir(parents=True)
    clock = [time.monotonic()]
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    store, events = make_store(tmp_path)
    for _ in range(4):
        clock[0] += store_module.MAX_RETRY_SECONDS + 1
        store.refresh(validate_all=False)  # the retry is due, and waits to be checked
        store.refresh(validate_all=False)
        store.refresh()
    assert len(events.failures) == 5 and store.slot("mnist").versions[2].retries == 5


@pytest.mark.timeout(60)  # a hang guard: opening a pipe for reading waits for a writer that never comes
def test_a_pipe_in_place_of_a_model_file_or_serving_json_is_refused_without_hanging_the_watcher(tmp_path,
                                                                                                a_poll_later):
    publish_model(tmp_path, "mnist")
    store, _ = make_store(tmp_path)
    (tmp_path / "mnist" / "2").mkdir()
    os.mkfifo(tmp_path / "mnist" / "2" / "model.npz")
    store.refresh()
    a_poll_later(store)
    store.refresh()  # a failure counts once the next pass finds the file as it was
    info = store.describe("mnist")
    assert info["served_version"] == 1
    status = info["versions"][1]["status"]
    assert status.startswith("failed: ") and "not a regular file (a pipe, socket or device)" in status

    os.mkfifo(tmp_path / "mnist" / "serving.json")
    assert publish_model(tmp_path, "mnist", favour=3) == 3  # the publisher is not held up either
    store.refresh()
    info = store.describe("mnist")
    assert info["served_version"] == 3  # the last good serving state (no pin) still holds
    assert any("serving.json is not a regular file" in problem for problem in info["problems"])


def test_a_registry_switched_whole_by_a_link_serves_the_new_files_under_the_same_numbers(tmp_path, caplog):
    # Blue/green: the registry path is a link flipped from one complete registry to another.
    blue, green, current = tmp_path / "blue", tmp_path / "green", tmp_path / "current"
    publish_model(blue, "mnist", favour=3)
    publish_model(green, "mnist", favour=7)
    current.symlink_to(blue)
    store, events = make_store(current)
    vector = np.full((1, 784), 0.5, dtype=np.float32)
    assert store.served("mnist").predict_proba(vector).argmax() == 3
    flipped = tmp_path / "flipped"
    flipped.symlink_to(green)
    flipped.rename(current)  # the flip is one rename
    with caplog.at_level("INFO", logger="scratchnet.store"):
        store.refresh()
    assert store.served("mnist").version == 1 and store.served("mnist").predict_proba(vector).argmax() == 7
    assert "mnist: version 1 reloaded, its file having changed" in caplog.messages
    assert events.swaps[-1] == ("mnist", 1, 1)


def test_folders_that_look_like_versions_or_models_but_are_neither_are_reported(tmp_path, caplog):
    """A version folder named 0100 (TF Serving reads it as version 100) or a model folder named
    "my model" was skipped without a word: no log line, no problem, nothing in /readyz."""
    publish_model(tmp_path, "mnist")
    shutil.copytree(tmp_path / "mnist" / "1", tmp_path / "mnist" / "0100")
    (tmp_path / "mnist" / "0").mkdir()
    (tmp_path / "mnist" / "extras").mkdir()  # not a number: a folder of the user's own, left alone
    shutil.copytree(tmp_path / "mnist", tmp_path / "my model")
    (tmp_path / "notes").mkdir()  # holds no version: not a model, and not said to be one
    publish_model(tmp_path, "wine", kind="regression")
    (tmp_path / "wine" / "1").rename(tmp_path / "wine" / "0001")  # its only version, misnamed
    store, _ = make_store(tmp_path)
    assert store.names() == ["mnist"] and [v["version"] for v in store.describe("mnist")["versions"]] == [1]
    reasons = ["the folder 0 is not read as a version: versions are numbered from 1",
               "the folder 0100 is not read as a version: rename it 100 (no leading zeros)"]
    assert store.describe("mnist")["problems"] == reasons
    misnamed = store.readiness()[1]["registry"]["misnamed_folders"]
    assert list(misnamed) == ["my model", "wine"]
    assert "holds versions but is not read as a model" in misnamed["my model"]
    assert misnamed["wine"] == ("the folder 'wine' holds no version: the folder 0001 is not read as a version: "
                                "rename it 1 (no leading zeros)")
    for reason in reasons + list(misnamed.values()):
        assert caplog.text.count(reason) == 1
    store.refresh()  # logged once, not at every pass
    assert all(caplog.text.count(reason) == 1 for reason in reasons + list(misnamed.values()))


def test_folders_named_like_versions_but_not_numbers_alone_are_reported(tmp_path, caplog):
    """A version folder named v2 (a common layout elsewhere), -1 or 1.5 was skipped without a word,
    and a model whose versions were all named so was no model at all: 404, and nothing in the log,
    /models or /readyz said why."""
    publish_model(tmp_path, "mnist")
    for folder in ("v2", "-1", "1.5"):
        shutil.copytree(tmp_path / "mnist" / "1", tmp_path / "mnist" / folder)
    (tmp_path / "mnist" / "1.bak").mkdir()  # not a version's name: a folder of the user's own, left alone
    publish_model(tmp_path, "wine", kind="regression")
    (tmp_path / "wine" / "1").rename(tmp_path / "wine" / "v1")  # its only version, misnamed
    store, _ = make_store(tmp_path)
    assert store.names() == ["mnist"] and [v["version"] for v in store.describe("mnist")["versions"]] == [1]
    reasons = ["the folder -1 is not read as a version: a version is named by a positive integer (1, 2, 3 ...)",
               "the folder 1.5 is not read as a version: a version is named by a positive integer (1, 2, 3 ...)",
               "the folder v2 is not read as a version: rename it 2 (the number alone)"]
    assert store.describe("mnist")["problems"] == reasons
    misnamed = store.readiness()[1]["registry"]["misnamed_folders"]
    assert misnamed == {"wine": "the folder 'wine' holds no version: the folder v1 is not read as a version: "
                                "rename it 1 (the number alone)"}
    for reason in reasons + list(misnamed.values()):
        assert caplog.text.count(reason) == 1


def test_a_misnamed_folder_whose_number_is_taken_is_not_to_be_renamed_onto_it(tmp_path):
    """v2 or 0002 beside version 2 (a copy kept by hand) was to be renamed 2: mv would put it inside the
    folder 2, where it is never read, and the problem would go away without the copy being served."""
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "mnist")
    for folder in ("v2", "0002", "v3"):
        shutil.copytree(tmp_path / "mnist" / "1", tmp_path / "mnist" / folder)
    store, _ = make_store(tmp_path)
    assert store.describe("mnist")["problems"] == [
        "the folder 0002 is not read as a version, and version 2 is the folder 2 already: move 0002 out of the "
        "model's folder ('python -m trainer publish <folder>' adds it as the next version)",
        "the folder v2 is not read as a version, and version 2 is the folder 2 already: move v2 out of the "
        "model's folder ('python -m trainer publish <folder>' adds it as the next version)",
        "the folder v3 is not read as a version: rename it 3 (the number alone)"]


def test_a_request_for_a_folder_not_read_as_a_model_says_why(tmp_path):
    """/models/wine of a folder wine whose only version is named 0001 answered "There is no model
    'wine'", as for a name the registry lacks: only /readyz and the log said what to rename."""
    publish_model(tmp_path, "mnist")
    publish_model(tmp_path, "wine", kind="regression")
    (tmp_path / "wine" / "1").rename(tmp_path / "wine" / "0001")
    store, _ = make_store(tmp_path)
    with pytest.raises(NotFound) as e:
        store.slot("wine")
    assert e.value.message == ("There is no model 'wine' (models: mnist): the folder 'wine' holds no version: "
                               "the folder 0001 is not read as a version: rename it 1 (no leading zeros).")
    with pytest.raises(NotFound) as e:
        store.slot("beer")
    assert e.value.message == "There is no model 'beer' (models: mnist)."


def test_a_version_folder_without_its_model_file_is_reported_once_and_read_when_the_file_arrives(
        tmp_path, tmp_path_factory, monkeypatch, caplog):
    """An empty version folder (made by hand, or a copy not yet begun) fails once, is logged and counted
    once, and is not read again every minute as an unreadable file is; once model.npz arrives it serves."""
    import types
    import service.store as store_module
    publish_model(tmp_path, "mnist")
    (tmp_path / "mnist" / "2").mkdir()
    clock = [time.monotonic()]
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    with caplog.at_level("WARNING", logger="scratchnet.store"):
        store, events = make_store(tmp_path)
        for _ in range(10):
            clock[0] += store_module.MAX_RETRY_SECONDS + 1
            store.refresh()
    assert events.failures == [("mnist", 2, "the folder holds no model.npz")]
    assert caplog.messages == ["mnist v2 cannot be served: the folder holds no model.npz"]
    assert store.describe("mnist")["versions"][1]["status"] == "failed: the folder holds no model.npz"
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    publish_model(elsewhere, "mnist")
    publish_model(elsewhere, "mnist")
    os.rename(elsewhere / "mnist" / "2" / "model.npz", tmp_path / "mnist" / "2" / "model.npz")  # the copy ends
    store.refresh()
    assert store.served("mnist").version == 2


def test_the_cache_of_recent_versions_is_bounded_for_all_models_together(tmp_path):
    for name in ("a", "b", "c"):
        for _ in range(3):
            publish_model(tmp_path, name)
    store, _ = make_store(tmp_path, cached_versions=2)
    for name in ("a", "b", "c"):  # the old versions of every model, each once: the most recent two stay
        for v in (1, 2):
            assert store.version(name, v).version == v
    held = {(name, v) for name in ("a", "b", "c") for v in store.slot(name).recent}
    assert held == {("c", 1), ("c", 2)}
    assert store.version("a", 1).version == 1  # loaded again when asked for, letting the least recent go
    assert {(name, v) for name in ("a", "b", "c") for v in store.slot(name).recent} == {("c", 2), ("a", 1)}
