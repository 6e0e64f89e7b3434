"""Every metric modelapi exports, created together once ``runtime.setup`` has chosen the value class.

``Families(registry)`` builds the prometheus-client objects; ``registry`` is ``None`` in multiprocess mode (the
values live in the per-process files, read back by ``MultiProcessCollector``) and the process's own registry
otherwise. ``Families.specs`` lists (name, type, labels, help) for the docs and the naming test.

Gauges carry a multiprocess mode: ``livesum`` (summed over live processes; a dead worker's share goes once
the supervisor marks it dead), ``livemostrecent`` (a value every worker samples from the same source, such
as the jobs database: the latest write of a live process wins), ``liveall`` (one series per live process,
labelled ``pid``), ``max`` (the largest value any process, live or dead, wrote: a timestamp). Counters
and histograms of dead workers are kept, so totals never go down when a worker is replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: request, queue-wait and compute times: sub-millisecond to a minute
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: rows in one batch: powers of two up to 1024, then +Inf
ROWS_BUCKETS = tuple(float(2**i) for i in range(11))

Mode = Literal["livesum", "liveall", "livemostrecent", "max"]
MODEL_VERSION = ("model", "version")
PER_PROTOCOL = ("model", "version", "protocol")


@dataclass(frozen=True)
class Spec:
    name: str
    type: str
    labels: tuple[str, ...]
    help: str


class Families:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self._registry = registry
        self.specs: list[Spec] = []
        #: every metric object by its name (``runtime.setup``'s ``hide`` takes some out of the registry)
        self.by_name: dict[str, Counter | Gauge | Histogram] = {}
        # requests --------------------------------------------------------------------------------------------
        self.requests = self._counter(
            "modelapi_requests_total",
            "Requests that reached a model version, by protocol and status class (code: 2xx, 4xx, 5xx).",
            (*PER_PROTOCOL, "code"),
        )
        self.rows = self._counter(
            "modelapi_rows_inferred_total", "Rows of the requests a model version answered (2xx).", PER_PROTOCOL
        )
        self.duration = self._histogram(
            "modelapi_request_duration_seconds",
            "Seconds from admission to the end of a call, answered or failed.",
            PER_PROTOCOL,
            SECONDS_BUCKETS,
        )
        self.queue_wait = self._histogram(
            "modelapi_request_queue_seconds",
            "Seconds an answered request waited for its batch.",
            PER_PROTOCOL,
            SECONDS_BUCKETS,
        )
        self.compute = self._histogram(
            "modelapi_request_compute_seconds",
            "Seconds the batch that answered a request ran.",
            PER_PROTOCOL,
            SECONDS_BUCKETS,
        )
        self.success_seconds = self._counter(
            "modelapi_request_success_seconds_total",
            "Seconds the answered (2xx) requests took, admission to the end of the call (Triton's success.ns).",
            PER_PROTOCOL,
        )
        self.last_request = self._gauge(
            "modelapi_last_request_timestamp_seconds",
            "When a model version last answered a request (Unix time; the latest of every worker).",
            MODEL_VERSION,
            "max",
        )
        self.rejected = self._counter(
            "modelapi_requests_rejected_total",
            "Requests refused before any model ran them, by reason (model is empty when none was named).",
            ("model", "protocol", "reason"),
        )
        self.inflight = self._gauge(
            "modelapi_requests_in_flight", "Calls admitted into a model version and not yet finished.", MODEL_VERSION
        )
        self.queued = self._gauge(
            "modelapi_requests_queued", "Requests waiting for a batch of a model version (sampled).", MODEL_VERSION
        )
        # batches ---------------------------------------------------------------------------------------------
        self.batches = self._counter("modelapi_batches_total", "Batches a model version ran.", MODEL_VERSION)
        self.batch_rows = self._histogram(
            "modelapi_batch_rows", "Rows in one batch (sum/count: the mean batch size).", MODEL_VERSION, ROWS_BUCKETS
        )
        # model versions --------------------------------------------------------------------------------------
        self.loads = self._counter(
            "modelapi_model_loads_total", "Versions loaded and warmed up (READY), reloads included.", MODEL_VERSION
        )
        self.reloads = self._counter(
            "modelapi_model_reloads_total",
            "Loads of a model that had been READY before in the same worker.",
            MODEL_VERSION,
        )
        self.load_failures = self._counter(
            "modelapi_model_load_failures_total", "Loads that ended UNAVAILABLE.", MODEL_VERSION
        )
        self.state = self._gauge(
            "modelapi_model_state",
            "Workers in which the version is in this state (LOADING, READY, UNAVAILABLE, UNLOADING, UNLOADED).",
            (*MODEL_VERSION, "state"),
        )
        # jobs ------------------------------------------------------------------------------------------------
        self.jobs_submitted = self._counter("modelapi_jobs_submitted_total", "Batch jobs submitted.", ("model",))
        self.jobs_finished = self._counter(
            "modelapi_jobs_finished_total",
            "Batch jobs that ended, by state (succeeded, failed, cancelled).",
            ("model", "state"),
        )
        self.jobs_rows = self._counter(
            "modelapi_jobs_rows_total", "Rows of batch jobs computed and committed.", ("model",)
        )
        self.jobs_queued = self._gauge(
            "modelapi_jobs_queued", "Batch jobs waiting to run (sampled from the jobs database).", (), "livemostrecent"
        )
        self.jobs_running = self._gauge(
            "modelapi_jobs_running", "Batch jobs running (sampled from the jobs database).", (), "livemostrecent"
        )
        # the prediction log and drift (docs/monitoring.md) ---------------------------------------------------
        self.log_rows = self._counter(
            "modelapi_prediction_log_rows_total", "Rows written to the prediction log.", ("model",)
        )
        self.log_dropped = self._counter(
            "modelapi_prediction_log_dropped_rows_total",
            "Sampled rows the prediction log dropped: its queue was full, or the store failed.",
            ("model",),
        )
        feature = (*MODEL_VERSION, "feature")
        self.drift_psi = self._gauge(
            "modelapi_feature_drift_psi",
            "Population stability index of a feature's last logged rows against its reference.",
            feature,
            "livemostrecent",
        )
        self.drift_p = self._gauge(
            "modelapi_feature_drift_p_value",
            "p-value of the two-sample test (KS for numbers, chi-square for categories) of a feature's last rows.",
            feature,
            "livemostrecent",
        )
        self.missing = self._gauge(
            "modelapi_feature_missing_ratio", "Share of a feature's last logged rows without a value.", feature,
            "livemostrecent",
        )  # fmt: skip
        self.prediction_psi = self._gauge(
            "modelapi_prediction_drift_psi",
            "Population stability index of the predictions' last logged rows against the reference's.",
            MODEL_VERSION,
            "livemostrecent",
        )
        self.rejected_ratio = self._gauge(
            "modelapi_inputs_rejected_ratio",
            "Share of a model version's requests in the last hour rejected for their input (400, 413, 422).",
            MODEL_VERSION,
            "livemostrecent",
        )
        # processes: in multiprocess mode the collector adds the pid label itself (liveall) --------------------
        pid = ("pid",) if registry is not None else ()
        self.cpu = self._gauge(
            "modelapi_process_cpu_seconds", "CPU seconds (user and system) a worker process used.", pid, "liveall"
        )
        self.memory = self._gauge(
            "modelapi_process_resident_memory_bytes",
            "Resident memory of a worker process (peak where /proc is missing).",
            pid,
            "liveall",
        )
        self.started = self._gauge(
            "modelapi_process_start_time_seconds", "When a worker process started (Unix time).", pid, "liveall"
        )

    def process(self, pid: int) -> tuple[Gauge, Gauge, Gauge]:
        """The CPU, memory and start-time gauges of process ``pid`` (this process)."""
        if self._registry is None:
            return self.cpu, self.memory, self.started
        label = str(pid)
        return self.cpu.labels(label), self.memory.labels(label), self.started.labels(label)

    def _spec(self, name: str, kind: str, labels: Sequence[str], doc: str) -> None:
        self.specs.append(Spec(name, kind, tuple(labels), doc))

    def _counter(self, name: str, doc: str, labels: Sequence[str]) -> Counter:
        self._spec(name, "counter", labels, doc)
        metric = self.by_name[name] = Counter(name, doc, labels, registry=self._registry)
        return metric

    def _histogram(self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
        self._spec(name, "histogram", labels, doc)
        metric = self.by_name[name] = Histogram(name, doc, labels, registry=self._registry, buckets=buckets)
        return metric

    def _gauge(self, name: str, doc: str, labels: Sequence[str], mode: Mode = "livesum") -> Gauge:
        self._spec(name, "gauge", ("pid",) if mode == "liveall" else labels, doc)  # liveall: pid either way
        metric = self.by_name[name] = Gauge(name, doc, labels, registry=self._registry, multiprocess_mode=mode)
        return metric
