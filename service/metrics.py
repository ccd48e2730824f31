"""Prometheus metrics, correct across Gunicorn workers.

Under Gunicorn, ``service/gunicorn_conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any
worker imports ``prometheus_client``: every worker then writes its values to files there and
``GET /metrics`` (answered by whichever worker) adds them up. Counters, histograms and
summaries are summed over all workers, dead ones included, and the time of a version's last
prediction is the latest of them all; other gauges describe live workers only (the
``child_exit`` hook removes a dead worker's files). A dead worker's lasting values are then
folded into one file of totals of the workers that have exited (``fold_exited_process``):
left as they were, every replaced worker (a crash, Gunicorn's ``max_requests``, a reload) left
two more files that every scrape reads, and 1,000 of them made ``/metrics`` take 0.8 s. Without
that variable (``flask run``, tests) the metrics live in a registry of this app alone.

Requests are labelled by route template (``/models/<name>/predict``), never by raw path, so
the number of series stays bounded; model metrics are labelled by model and version. Those are
reported only for the models and versions the registry holds (``exposition``), so deleted
versions and removed models drop out: a worker's multiprocess files cannot delete a series.
The served version is one series per model and worker whose value is the version, so a swap
adds no series, and the workers agree once they have converged.
"""

from __future__ import annotations

import fcntl
import glob
import operator
import os
import re
import time
import warnings
from collections import defaultdict
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client import ProcessCollector, disable_created_metrics, generate_latest, multiprocess
from prometheus_client import values as prometheus_values
from prometheus_client.mmap_dict import MmapedDict

from .store import FAILED, StoreEvents

# The *_created series double the output and mean nothing across worker restarts.
disable_created_metrics()
# Removing a series is "not implemented in multi-process mode" only in that its value stays in
# the process's file; the series' objects in the process go (see release_values), which is what
# version_removed wants.
warnings.filterwarnings("ignore", message="Removal of labels has not been implemented", category=UserWarning)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# From 0.1 ms: a vector's forward pass takes tens of microseconds and a whole prediction request
# well under a millisecond, which buckets starting at 1 ms would lump together.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
# The multiprocess files whose values outlive their process, and how an exited process's values
# join the totals of those exited before it: counts and times add up; a time of last use is the latest.
FOLDED_KINDS = {"counter": operator.add, "histogram": operator.add, "summary": operator.add, "gauge_max": max}
EXITED = "exited"  # "<kind>_exited.db": the totals of the processes that have exited
LOCK_FILE = "metrics.lock"  # held shared while a scrape reads the files, exclusive while one is folded
STAGES = ("input", "infer", "output")  # the stages of a prediction, as Triton's statistics name them compute_*
FOLD_WAIT = 0.2  # seconds the master waits for scrapes to finish before leaving a fold for later
LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")  # a live gauge's file: removed when its process exits


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def release_values(labels: tuple[str, str]) -> None:
    """Let the values of the removed series of a model version (``(model, version)``) go. In
    multi-process mode prometheus_client keeps every value it ever made in a list of its own (to
    reopen their files after a fork), and each file's index of its series, so removing a series
    freed nothing: each version a worker had answered with kept its ~25 values (~20 kB) for good,
    and a worker's memory grew with every swap. A series made again later (the version's folder
    put back) takes a new place in the file; the old one's value is added to it when read, as a
    dead worker's are. The list is the closure of the value class's ``__init__``; a release that
    finds no such list (another prometheus_client) leaves everything as it was."""
    init = getattr(prometheus_values.ValueClass, "__init__", None)
    names = getattr(getattr(init, "__code__", None), "co_freevars", ())
    cells = dict(zip(names, getattr(init, "__closure__", None) or ()))
    if "values" not in cells or "lock" not in cells:
        return
    made, lock = cells["values"].cell_contents, cells["lock"].cell_contents
    with lock:
        released = [value for value in made if _model_labels(value) == labels]
        made[:] = [value for value in made if _model_labels(value) != labels]
        for value in released:  # the file's index of the series (its value stays in the file)
            getattr(getattr(value, "_file", None), "_positions", {}).pop(getattr(value, "_key", None), None)


def _model_labels(value) -> tuple | None:
    """``(model, version)`` of a multi-process value's series, None for a series about no version."""
    params = getattr(value, "_params", ())
    if len(params) < 5 or tuple(params[3][:2]) != ("model", "version"):
        return None
    return tuple(params[4][:2])


class Metrics(StoreEvents):
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry()
        if not self.multiprocess:  # under Gunicorn, MultiProcessFiles reports every process's
            ProcessCollector(registry=self.registry)
        registry = None if self.multiprocess else self.registry  # multiprocess values live in files
        self.requests = Counter("scratchnet_requests", "HTTP requests answered, by route template and status.",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("scratchnet_request_duration_seconds", "Time to answer a request.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        # Summed over the live workers: a worker that dies takes its requests, and their count, with it.
        self.in_flight = Gauge("scratchnet_requests_in_flight", "Requests the app is handling now, by route "
                               "template: from its start on a request to its answer, the span of "
                               "scratchnet_request_duration_seconds. A scrape counts itself (route /metrics).",
                               ["route"], multiprocess_mode="livesum", registry=registry)
        self.answers_cut = Counter("scratchnet_answers_cut", "Answers the client did not take whole (it closed the "
                                   "connection, or read none of the answer for SCRATCHNET_CLIENT_TIMEOUT), by route "
                                   "template; scratchnet_requests_total counts them as answered.", ["route"],
                                   registry=registry)
        self.errors = Counter("scratchnet_errors", "Error responses, by error code and the model the request "
                              "named, /predict's the default one (empty: none, or none the registry holds).",
                              ["route", "code", "model"], registry=registry)
        self.predictions = Counter("scratchnet_predictions", "Inputs predicted (rows of a batch), by model version.",
                                   ["model", "version"], registry=registry)
        self.inference = Histogram("scratchnet_inference_duration_seconds",
                                   "Time to read, preprocess and run one batch and encode its answer, by model "
                                   "version.", ["model", "version"], buckets=LATENCY_BUCKETS, registry=registry)
        self.stages = Counter("scratchnet_inference_stage_seconds", "Time the successful predictions spent in each "
                              "stage, by model version: input (reading and preprocessing the inputs), infer (the "
                              "forward pass), output (encoding the answer).", ["model", "version", "stage"],
                              registry=registry)
        self.failed = Summary("scratchnet_failed_inference_duration_seconds", "Prediction requests refused after "
                              "their model version was chosen (bad input), and the time each took, by model "
                              "version.", ["model", "version"], registry=registry)
        self.last_inference = Gauge("scratchnet_last_inference_timestamp_seconds", "When a model version last "
                                    "answered a prediction (Unix time).", ["model", "version"],
                                    multiprocess_mode="max", registry=registry)
        self.served_version = Gauge("scratchnet_model_served_version", "The version a worker serves (0: none), "
                                    "one series per worker (pid).", ["model"], multiprocess_mode="liveall",
                                    registry=registry)
        self.swaps = Counter("scratchnet_model_worker_swaps", "Hot swaps (changes of the served version) counted by "
                             "each worker: one new version served by N workers counts N.", ["model"],
                             registry=registry)
        self.unservable_pin = Gauge("scratchnet_model_pin_unservable", "The version serving.json pins while it "
                                    "cannot be served (missing or failing to load), else 0.", ["model"],
                                    multiprocess_mode="livemax", registry=registry)
        self.load_failures = Counter("scratchnet_model_load_failures", "Model files that failed to load "
                                     "(each worker counts its own attempts).", ["model", "version"], registry=registry)
        self.version_failed = Gauge("scratchnet_model_version_failed", "1 when a version cannot be served.",
                                    ["model", "version"], multiprocess_mode="livemax", registry=registry)
        self.unreadable = Gauge("scratchnet_registry_unreadable_models", "Model folders in the registry that a "
                                "worker cannot list, so does not serve (the most of any worker).",
                                multiprocess_mode="livemax", registry=registry)
        self._served: dict[str, int | None] = {}  # by model: the version loaded to serve
        self._unloaded: set[str] = set()  # models taken out of service (they serve nothing)
        self._request_series: dict[tuple, tuple] = {}  # label values -> metric children, looked up once
        self._in_flight_series: dict[str, Gauge] = {}
        self._model_series: dict[tuple, tuple] = {}
        # Made at the first look at the registry (registry_status): a gauge starts at 0, and a
        # worker that had not looked yet made the minimum over the workers say "unreadable".
        self.registry_up: Gauge | None = None
        self._register_in = registry

    # request events --------------------------------------------------------------------------

    def request_started(self, route: str) -> Gauge:
        """A request the app has started on: counted in flight until ``.dec()`` on what this returns."""
        series = self._in_flight_series.get(route)
        if series is None:  # routes are a bounded set (UNMATCHED for the rest), so is this cache
            series = self._in_flight_series[route] = self.in_flight.labels(route)
        series.inc()
        return series

    def answer_cut(self, route: str) -> None:
        self.answers_cut.labels(route).inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float | None, error_code: str | None,
                        model: str = "") -> None:
        """One answered request; ``model``, the model it named, must be one the registry holds (the
        label's values stay a bounded set), else empty. ``seconds`` None: not timed (see
        ``service.app.record_unrouted``)."""
        method = method if method in HTTP_METHODS else "other"  # a client can send any token as a method
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:  # routes, methods and statuses are bounded sets, so is this cache
            series = self._request_series[key] = (self.requests.labels(method, route, str(status)),
                                                  self.latency.labels(route))
        series[0].inc()
        if seconds is not None:
            series[1].observe(seconds)
        if error_code:
            self.errors.labels(route, error_code, model).inc()

    def observe_prediction(self, batch, started: float) -> None:
        """A prediction answered: ``batch`` is its ``PredictionBatch``, whose answer has just been
        encoded, ``started`` when its body was in (``time.perf_counter()``)."""
        now = time.perf_counter()
        model = batch.model
        key = (model.name, model.version)
        series = self._model_series.get(key)
        if series is None:
            labels = (model.name, str(model.version))
            series = self._model_series[key] = (
                self.predictions.labels(*labels), self.inference.labels(*labels), self.last_inference.labels(*labels),
                *(self.stages.labels(*labels, stage) for stage in STAGES))
        predictions, inference, last, input_stage, infer_stage, output_stage = series
        predictions.inc(len(batch))
        inference.observe(now - started)
        last.set(time.time())
        forward_ended = batch.forward_started + batch.forward_seconds
        input_stage.inc(max(batch.forward_started - started, 0.0))
        infer_stage.inc(batch.forward_seconds)
        output_stage.inc(max(now - forward_ended, 0.0))

    def observe_failed_prediction(self, name: str, version: int, seconds: float) -> None:
        self.failed.labels(name, str(version)).observe(seconds)

    # store events ----------------------------------------------------------------------------

    def model_added(self, name: str) -> None:
        # 0 until a version serves (or a pin fails): a model that never loads one would otherwise have
        # no series at all, and an alert on "served version 0" would never see it.
        if name not in self._served:
            self._served[name] = None
            self._report_served(name)
            self.unservable_pin.labels(name).set(0)

    def served(self, name: str, old: int | None, new: int | None) -> None:
        if old is not None and new is not None:
            self.swaps.labels(name).inc()
        self._served[name] = new
        self._report_served(name)

    def model_unloaded(self, name: str, unloaded: bool) -> None:
        (self._unloaded.add if unloaded else self._unloaded.discard)(name)
        self._report_served(name)

    def _report_served(self, name: str) -> None:
        # An unloaded model keeps its version loaded but answers 503: it serves none, as /models says.
        version = None if name in self._unloaded else self._served.get(name)
        self.served_version.labels(name).set(version or 0)

    def load_failed(self, name: str, version: int, reason: str) -> None:
        self.load_failures.labels(name, str(version)).inc()

    def version_status(self, name: str, version: int, status: str) -> None:
        self.version_failed.labels(name, str(version)).set(1 if status.startswith(FAILED) else 0)

    def version_removed(self, name: str, version: int) -> None:
        labels = (name, str(version))
        self.version_failed.labels(*labels).set(0)  # what a live gauge's file keeps once the series goes
        # The version's series are dropped from this process, which otherwise kept them for every
        # version it ever predicted with. (Under Gunicorn their values stay in the worker's file;
        # ``exposition`` leaves them out.)
        self._model_series.pop((name, version), None)
        for metric in (self.predictions, self.inference, self.failed, self.last_inference, self.load_failures,
                       self.version_failed):
            metric.remove(*labels)
        for stage in STAGES:
            self.stages.remove(*labels, stage)
        if self.multiprocess:
            release_values(labels)

    def pin_unservable(self, name: str, pinned: int | None) -> None:
        self.unservable_pin.labels(name).set(pinned or 0)

    def unreadable_models(self, count: int) -> None:
        self.unreadable.set(count)

    def registry_status(self, ok: bool) -> None:
        if self.registry_up is None:
            self.registry_up = Gauge("scratchnet_registry_up", "1 when the registry folder is readable "
                                     "(by every worker).", multiprocess_mode="livemin", registry=self._register_in)
        self.registry_up.set(1 if ok else 0)

    # exposition ------------------------------------------------------------------------------

    def exposition(self, held: dict[str, set[int]] | None) -> bytes:
        """The metrics text; ``held``: the versions the registry holds, by model
        (``ModelStore.versions_held``), or None when unknown: then nothing is left out."""
        return self._read(held, generate_latest)

    def statistics(self, held: dict[str, set[int]] | None) -> dict[tuple[str, int], dict[str, float]]:
        """By model version (``held`` as for ``exposition``), the prediction counts and times of
        every worker added up, for Triton's statistics extension: ``rows``, ``executions``,
        ``seconds``, ``failures``, ``failure_seconds``, ``last`` (Unix time) and
        ``<stage>_seconds`` per STAGES."""
        return self._read(held, _statistics)

    def _read(self, held: dict[str, set[int]] | None, use):
        """``use(collector)`` on the metrics of every process (of this app alone outside
        Gunicorn), less the models and versions the registry no longer holds."""
        if not self.multiprocess:
            return use(HeldOnly(self.registry, held))
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        # Shared: a fold must not move a dead worker's values between the files while they are
        # read (counted twice, or not at all, and a counter that drops reads as a reset).
        lock = _open_lock(directory)
        try:
            fcntl.flock(lock, fcntl.LOCK_SH)
            return use(HeldOnly(MultiProcessFiles(directory), held))
        finally:
            os.close(lock)


STATISTICS = {  # sample -> what Metrics.statistics calls it
    "scratchnet_predictions_total": "rows",
    "scratchnet_inference_duration_seconds_count": "executions",
    "scratchnet_inference_duration_seconds_sum": "seconds",
    "scratchnet_failed_inference_duration_seconds_count": "failures",
    "scratchnet_failed_inference_duration_seconds_sum": "failure_seconds",
    "scratchnet_last_inference_timestamp_seconds": "last",
}


def _statistics(collector) -> dict[tuple[str, int], dict[str, float]]:
    totals: defaultdict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for metric in collector.collect():
        for sample in metric.samples:
            if sample.name == "scratchnet_inference_stage_seconds_total":
                key = sample.labels["stage"] + "_seconds"
            else:
                key = STATISTICS.get(sample.name)
            if key is not None:
                version = totals[sample.labels["model"], int(sample.labels["version"])]
                version[key] = version.get(key, 0.0) + sample.value
    return totals


class MultiProcessFiles:
    """The metrics of every process's files in ``directory``, as prometheus_client's
    ``MultiProcessCollector`` reads them, less the files of a process that is starting: such a
    file is created empty and sized a moment later, and read in between it failed the whole
    scrape (500) each time a worker started. It holds no values before it is sized.

    Then the standard ``process_*`` metrics (memory, CPU time, open files, start time) of the
    Gunicorn master and of each live worker, read from /proc at the scrape and labelled by pid as
    the live gauges are: a worker's own ``ProcessCollector`` would report only the worker that
    happens to answer, and prometheus_client leaves them out in multiprocess mode."""

    def __init__(self, directory: str):
        self.directory = directory

    def collect(self):
        files = []
        live = {os.getppid()}  # the master, which writes no files
        for path in glob.glob(os.path.join(self.directory, "*.db")):
            try:
                if os.path.getsize(path) > 0:
                    files.append(path)
            except FileNotFoundError:  # a dead worker's live gauges, just removed
                continue
            if match := LIVE_FILE.fullmatch(os.path.basename(path)):
                live.add(int(match[1]))
        yield from multiprocess.MultiProcessCollector.merge(files, accumulate=True)
        yield from _process_metrics(sorted(live))


def _process_metrics(pids: list[int]):
    """ProcessCollector's metrics for each of ``pids``, one family each with a ``pid`` label
    (a process that has just exited is left out)."""
    families = {}
    for pid in pids:
        for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
            samples = [sample._replace(labels={**sample.labels, "pid": str(pid)}) for sample in family.samples]
            if family.name in families:
                families[family.name].samples.extend(samples)
            else:
                family.samples = samples
                families[family.name] = family
    return families.values()


def _open_lock(directory: str | os.PathLike) -> int:
    # Read-only is enough for flock, and works for a worker running as another user.
    return os.open(os.path.join(directory, LOCK_FILE), os.O_RDONLY | os.O_CREAT, 0o644)


def fold_exited_process(directory: str | os.PathLike, pid: int) -> bool:
    """Fold the lasting values of ``pid``, a process that has exited (FOLDED_KINDS), into the totals of
    the exited ones in ``directory`` and remove its files, so that the folder holds one file per
    kind for all of them. False, changing nothing, when scrapes kept the files busy for
    ``FOLD_WAIT``: the caller tries again later. Only for a process known to be dead: one still
    running would go on writing to a file no longer read."""
    directory = Path(directory)
    lock = _open_lock(directory)
    try:
        deadline = time.monotonic() + FOLD_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)
        for kind, combine in FOLDED_KINDS.items():
            _fold_file(directory / f"{kind}_{pid}.db", directory / f"{kind}_{EXITED}.db", combine)
        return True
    finally:
        os.close(lock)


def _fold_file(source: Path, totals: Path, combine) -> None:
    if not source.exists():
        return
    if source.stat().st_size == 0:  # the process died between creating the file and sizing it
        source.unlink()
        return
    # A series' key is the same text in every process's file, and counters and histogram buckets
    # (stored per bucket, not cumulated) are plain sums: combining by key is exact.
    values: dict[str, float] = {}
    for path in (totals, source):
        if path.exists():
            for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(str(path)):
                values[key] = combine(values[key], value) if key in values else value
    partial = totals.with_name(totals.name + ".partial")  # not *.db: never read by a scrape
    partial.unlink(missing_ok=True)
    written = MmapedDict(str(partial))
    try:
        for key, value in values.items():
            written.write_value(key, value, 0.0)
    finally:
        written.close()
    os.replace(partial, totals)
    source.unlink()


class HeldOnly:
    """A collector's metrics without the samples of models or versions the registry no longer holds.

    With ``held`` None (this worker has never read the registry) every sample stays: the scrape
    is answered by whichever worker takes it, and left out, every model's series, the other
    workers' included, vanished from one scrape and came back at the next."""

    def __init__(self, source, held: dict[str, set[int]] | None):
        self.source = source
        self.held = held

    def collect(self):
        if self.held is None:
            yield from self.source.collect()
            return
        for metric in self.source.collect():
            metric.samples = [sample for sample in metric.samples if self._held(sample.labels)]
            yield metric

    def _held(self, labels: dict) -> bool:
        if not labels.get("model"):  # about no model (an error's, when the request named none)
            return True
        versions = self.held.get(labels["model"])
        return versions is not None and ("version" not in labels or int(labels["version"]) in versions)
