"""The service's Prometheus metrics (prometheus-client), and their exposition for ``/metrics``.

One :class:`Metrics` per app, made by the composition root. What is counted where:

- per predict request, by the front door (both serving paths): ``fraudscore_requests_total``
  by route and status, ``fraudscore_request_errors_total`` by route and problem type (status
  and type from the problem table), ``fraudscore_request_duration_seconds`` by route, and
  ``fraudscore_flagged_total`` by route (predictions with ``is_fraud``): a counter increment
  and a histogram observation per request, one more increment for an error or a flag;
- per batch, by the batchers: ``fraudscore_batch_size``, ``fraudscore_queue_depth`` (callers
  waiting for a batch), the scores served (``fraudscore_score``, and the drift window behind
  ``fraudscore_score_psi``); by the ports' timing decorators
  (:mod:`~fraudscore_adapters.monitoring.timed`): ``fraudscore_store_duration_seconds`` (read,
  write) and ``fraudscore_model_duration_seconds``;
- about once a second and at each scrape: the database pools' connections
  (``fraudscore_db_pool_*``, from psycopg_pool's ``get_stats()``);
- when a model is loaded (:meth:`Metrics.model_loaded`, also for a model swapped at run time):
  ``fraudscore_model_info{model_version}`` and the drift reference.

Labels are few and fixed: route (``sync``, ``async``), status, problem type, store operation,
pool and its state; never a user id or a key id.

Several worker processes: with ``PROMETHEUS_MULTIPROC_DIR`` set (the ``serve`` command does,
:mod:`~fraudscore_adapters.monitoring.procdir`), each worker writes to memory-mapped files there
and a scrape merges every worker's files (``MultiProcessCollector``): counters and histograms
add up, dead workers' included (they never go backwards); each gauge says how its workers'
values combine: the queue depth and the pools' connections are summed over live workers
(``livesum``), the model version is 1 if any live worker serves it (``livemax``), and the PSI
is one series per live worker, labelled ``pid`` (``liveall``: each worker's own window).
A worker's live gauges are dropped when it stops, or at the next scrape if it died unheard.
(``prometheus_client.Info`` has no multiprocess mode, hence a gauge set to 1.)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from fraudscore import Prediction
from fraudscore_adapters.monitoring.drift import DriftWindow, ScoreDistribution

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_DRIFT_WINDOW",
    "Metrics",
    "Observe",
    "PoolStats",
    "RouteMetrics",
    "forget_dead",
    "render_directory",
]

log = logging.getLogger("fraudscore.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text format every Prometheus reads (``generate_latest`` writes it; every name here is
a classic one, so prometheus-client's newer 1.0.0 label changes nothing but the header)."""
DEFAULT_DRIFT_WINDOW = 10_000

Observe = Callable[[float], None]
PoolStats = Callable[[], Mapping[str, Mapping[str, int]]]
"""Each pool's psycopg_pool ``get_stats()``, by pool name."""

ROUTES = ("sync", "async")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Request latency, seconds: most answers take 1-30 ms; every one comes within the 3 s
request timeout."""
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""One store or model call for a batch, seconds."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SCORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
"""Fraud probabilities: most sit near 0, so the buckets are finer there."""


class RouteMetrics:
    """One predict route's metrics, label values bound once (``labels()`` costs a lookup
    under a lock): what the route's batcher reports to (a
    :class:`~fraudscore_adapters.batching.BatchObserver`)."""

    __slots__ = ("_metrics", "answered", "batch_size", "flagged", "latency", "queue")

    def __init__(self, metrics: Metrics, route: str) -> None:
        self._metrics = metrics
        self.answered = metrics.requests.labels(route, "200")
        self.latency = metrics.latency.labels(route)
        self.flagged = metrics.flagged.labels(route)
        self.batch_size = metrics.batch_size.labels(route)
        self.queue = metrics.queue_depth.labels(route)

    def batch(self, size: int, waiting: int) -> None:
        """A batch of ``size`` callers started; ``waiting`` are still queued."""
        self.batch_size.observe(size)
        self.queue.set(waiting)

    def waiting(self, waiting: int) -> None:
        """``waiting`` callers are queued (a batch ended, or the queue was tended)."""
        self.queue.set(waiting)

    def served(self, outcomes: Sequence[Prediction | BaseException]) -> None:
        """A batch's outcomes: the scores of its recorded predictions."""
        self._metrics.scored([o.probability for o in outcomes if isinstance(o, Prediction)])


class Metrics:
    """The metrics of one app (one worker process), on a registry of their own; in
    multiprocess mode (``multiprocess_dir``) a scrape reads every worker's files instead."""

    def __init__(
        self, *, drift_window: int = DEFAULT_DRIFT_WINDOW, multiprocess_dir: str | None = None
    ) -> None:
        if multiprocess_dir is not None and values.ValueClass is values.MutexValue:
            raise RuntimeError(
                "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported: this"
                " process's metrics would not reach the shared directory"
            )
        if drift_window < 1:
            raise ValueError("the drift window holds at least one score")
        self.multiprocess_dir = multiprocess_dir
        self.drift_window = drift_window
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "fraudscore_requests",
            "Predict requests answered by the front door (both serving paths), by route and"
            " HTTP status; 499: the client left before its batch (no answer sent).",
            ["route", "status"],
            registry=registry,
        )
        self.errors = Counter(
            "fraudscore_request_errors",
            "Predict requests answered with a problem, by route and problem type.",
            ["route", "problem"],
            registry=registry,
        )
        self.latency = Histogram(
            "fraudscore_request_duration_seconds",
            "Time in the front door per predict request (key check, queue, batch), by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.flagged = Counter(
            "fraudscore_flagged",
            "Predictions answered with is_fraud true, by route; divided by the 200s of"
            " fraudscore_requests_total: the flag rate.",
            ["route"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "fraudscore_batch_size",
            "Requests per batch, by route.",
            ["route"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "fraudscore_queue_depth",
            "Requests waiting for a batch, by route, summed over live workers.",
            ["route"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.store_seconds = Histogram(
            "fraudscore_store_duration_seconds",
            "One feature-store read or prediction write for a batch, by route and operation.",
            ["route", "op"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.model_seconds = Histogram(
            "fraudscore_model_duration_seconds",
            "One model call for a batch, by route (async: with its hop to the model thread).",
            ["route"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.pool_connections = Gauge(
            "fraudscore_db_pool_connections",
            "Database connections by pool and state (in_use, idle), summed over live workers.",
            ["pool", "state"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_max = Gauge(
            "fraudscore_db_pool_max_connections",
            "Most connections each pool may open, summed over live workers.",
            ["pool"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.pool_waiting = Gauge(
            "fraudscore_db_pool_waiting",
            "Requests waiting for a connection, by pool, summed over live workers.",
            ["pool"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.model_info = Gauge(
            "fraudscore_model_info",
            "1 for the model version a live worker serves (0 for one it served before).",
            ["model_version"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.scores = Histogram(
            "fraudscore_score",
            "Fraud probabilities of the recorded predictions.",
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
        self.psi = Gauge(
            "fraudscore_score_psi",
            "Population-stability index of each worker's last FRAUDSCORE_DRIFT_WINDOW scores"
            " against the model's validation scores (deciles); NaN until the window is full"
            " or when the model's manifest has no validation distribution.",
            multiprocess_mode="liveall",
            registry=registry,
        )
        self.psi.set(math.nan)
        self._routes = {route: RouteMetrics(self, route) for route in ROUTES}
        self._failed: dict[tuple[str, int, str], tuple[Counter, Counter]] = {}
        self._pools: PoolStats | None = None
        self._model_version: str | None = None
        self._drift: DriftWindow | None = None

    # --- per request (the front door) -----------------------------------------------------

    def route(self, name: str) -> RouteMetrics:
        """The metrics of predict route ``name``."""
        found = self._routes.get(name)
        if found is None:
            found = self._routes[name] = RouteMetrics(self, name)
        return found

    def answered(self, route: str, flagged: bool, started: float) -> None:
        """A prediction was answered; the request arrived at ``started``
        (:func:`time.perf_counter`)."""
        bound = self._routes.get(route) or self.route(route)
        bound.answered.inc()
        bound.latency.observe(time.perf_counter() - started)
        if flagged:
            bound.flagged.inc()

    def failed(self, route: str, status: int, problem: str, started: float) -> None:
        """A request ended with ``status`` and problem type ``problem`` (its slug)."""
        key = (route, status, problem)
        counters = self._failed.get(key)
        if counters is None:
            counters = self._failed[key] = (
                self.requests.labels(route, str(status)),
                self.errors.labels(route, problem),
            )
        counters[0].inc()
        counters[1].inc()
        (self._routes.get(route) or self.route(route)).latency.observe(
            time.perf_counter() - started
        )

    # --- per batch ------------------------------------------------------------------------

    def scored(self, scores: Sequence[float]) -> None:
        """The scores of a batch's recorded predictions: the histogram, the drift window and
        its PSI."""
        if not scores:
            return
        observe = self.scores.observe
        for score in scores:
            observe(score)
        drift = self._drift
        if drift is not None:
            drift.add(scores)
            self.psi.set(drift.psi())

    def store_time(self, route: str, op: str) -> Observe:
        """Where a store call's duration goes (``op``: read or write)."""
        return self.store_seconds.labels(route, op).observe

    def model_time(self, route: str) -> Observe:
        """Where a model call's duration goes."""
        return self.model_seconds.labels(route).observe

    # --- the model ------------------------------------------------------------------------

    def model_loaded(self, manifest: Mapping[str, object]) -> None:
        """The model described by ``manifest`` now serves: its version becomes 1 (the one
        before, if another, 0) and the drift window restarts against its validation scores
        (the PSI is NaN, with a warning, when the manifest carries none). Call it on the
        event loop, as the batches' reports run there."""
        version = str(manifest.get("model_version", "unknown"))
        if self._model_version is not None and self._model_version != version:
            self.model_info.labels(self._model_version).set(0)
        self.model_info.labels(version).set(1)
        self._model_version = version
        try:
            reference = ScoreDistribution.from_manifest(manifest)
            why = "no validation score distribution (trained before drift monitoring)"
        except ValueError as exc:
            reference, why = None, f"an unusable validation score distribution ({exc})"
        if reference is None:
            log.warning(
                "model %s: its manifest has %s: fraudscore_score_psi stays NaN; retrain to"
                " monitor drift",
                version,
                why,
            )
        self._drift = None if reference is None else DriftWindow(reference, self.drift_window)
        self.psi.set(math.nan)

    @property
    def drift(self) -> DriftWindow | None:
        """The drift window of the model serving now (None: no reference)."""
        return self._drift

    # --- pools and scrapes ----------------------------------------------------------------

    def watch_pools(self, stats: PoolStats) -> None:
        """Report these pools' usage (at :meth:`refresh`)."""
        self._pools = stats
        self.refresh()

    def refresh(self) -> None:
        """Read the pools' usage into their gauges."""
        if self._pools is None:
            return
        for name, stats in self._pools().items():
            size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
            self.pool_connections.labels(name, "in_use").set(size - idle)
            self.pool_connections.labels(name, "idle").set(idle)
            self.pool_max.labels(name).set(stats.get("pool_max", 0))
            self.pool_waiting.labels(name).set(stats.get("requests_waiting", 0))

    def render(self) -> bytes:
        """The exposition: this app's registry, or in multiprocess mode every worker's
        files."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        return render_directory(self.multiprocess_dir)

    def close(self) -> None:
        """This worker stops: in multiprocess mode, its live gauges leave the scrapes."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def render_directory(path: str) -> bytes:
    """The exposition of every process's files in multiprocess directory ``path``, once the
    live gauges of processes that are gone are dropped."""
    forget_dead(path)
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def forget_dead(path: str) -> list[int]:
    """Drop the live gauges of the processes in ``path`` that are gone (a worker that died
    without stopping never said so); the pids dropped."""
    pids = set()
    for file in Path(path).glob("gauge_live*_*.db"):
        with contextlib.suppress(ValueError):
            pids.add(int(file.stem.rsplit("_", 1)[1]))
    gone = sorted(pid for pid in pids if not _alive(pid))
    for pid in gone:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
