"""The composition root: settings in, wired adapters out.

The one place that decides which adapter serves which port. ``DATABASE_URL`` unset means the
embedded default (the in-memory store seeded from the local dataset, predictions kept in
memory, API keys in a local file); set means PostgreSQL for all three. Nothing here runs at
import: :func:`runtime` opens and closes everything inside the app's lifespan, and
:func:`app_from_env` is the server's factory.

The seam: :class:`Parts` passes in any of the model, the stores and the key store instead of
building them from settings (tests wire tiny models and in-memory adapters through this same
root; a library can embed the service the same way). Everything else (the gate, the
batchers, readiness, the metrics, the app) is built here either way.

Metrics (:mod:`~fraudscore_adapters.monitoring`): the ports the services run on are wrapped in
timing decorators here (store and model time per batch; the core knows no metrics), the pools'
usage is read about once a second, and the model's manifest gives the model version and the
drift reference. The server's factory passes ``PROMETHEUS_MULTIPROC_DIR`` (set by the
``serve`` command) so that every worker's metrics reach every scrape.

The model: loaded from ``FRAUDSCORE_ARTIFACT_DIR`` (what its ``current`` pointer names) behind
a :class:`~fraudscore_adapters.reloading.SwappableScorer`, which both routes score through,
and reloaded without a restart (:mod:`~fraudscore_adapters.reloading`: the admin routes,
SIGHUP, and a watcher of the pointer every ``FRAUDSCORE_MODEL_WATCH_S``). A model passed in
through :class:`Parts` is served as it is: nothing to reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from litestar import Litestar

from fraudscore import AsyncScoringService, FraudscoreError, ScoringService
from fraudscore.ports import (
    AsyncFeatureRepository,
    AsyncPredictionSink,
    AsyncScorer,
    FeatureRepository,
    PredictionSink,
    Scorer,
)
from fraudscore_adapters import logs, memory, postgres
from fraudscore_adapters.access import FileKeyStore, Gate, KeyStore, keep_fresh, refresh
from fraudscore_adapters.baf import load_features
from fraudscore_adapters.batching import ThreadScorer
from fraudscore_adapters.dataset import dataset_path
from fraudscore_adapters.http import Batching, FastPredictRoutes, Runtime, create_app
from fraudscore_adapters.monitoring import timed
from fraudscore_adapters.monitoring.procdir import MULTIPROC_ENV
from fraudscore_adapters.monitoring.prom import Metrics, PoolStats
from fraudscore_adapters.postgres.keys import PostgresKeyStore
from fraudscore_adapters.postgres.pools import PoolSettings
from fraudscore_adapters.reloading import Reloader, Vouches, load_xgb
from fraudscore_adapters.settings import Settings
from fraudscore_adapters.xgb import probe_applications, required_pins
from fraudscore_adapters.xgb.reasons import ReasonPolicy

__all__ = [
    "KEYS_MAX_STALE_REFRESHES",
    "Parts",
    "Stores",
    "app_from_env",
    "build_app",
    "model_pins",
    "model_readiness",
    "runtime",
]

log = logging.getLogger("fraudscore")

Check = Callable[[], Awaitable[str]]
"""A readiness probe of one part: ``ok``, or what is wrong."""
PROBE_TIMEOUT_S = 2.0
"""Each readiness probe answers within this: a frozen store or a wedged model is not ready."""
KEYS_MAX_STALE_REFRESHES = 10
"""Keys not re-read for this many refresh intervals (20 s by default) fail closed: every
protected request gets 503 ``keys-unavailable`` until they are read again."""
POOL_GAUGES_EVERY_S = 1.0
"""How often each worker reads its pools' usage into the metrics (a scrape reads it too)."""


async def _always_ok() -> str:
    return "ok"


@dataclass(frozen=True, slots=True)
class Stores:
    """The feature store and prediction sink, each with both faces, and their readiness."""

    features: FeatureRepository
    sink: PredictionSink
    async_features: AsyncFeatureRepository
    async_sink: AsyncPredictionSink
    check: Check = _always_ok
    keys: KeyStore | None = None
    """Where the API keys live when it is the same place (the PostgreSQL pool)."""
    pool_stats: PoolStats | None = None
    """The usage of the connection pools behind them, by pool (None: no pools)."""

    @classmethod
    def in_memory(
        cls, features: FeatureRepository, sink: PredictionSink, check: Check = _always_ok
    ) -> Stores:
        """Stores whose calls never block (in memory, or a test's fake): the async faces run
        them on the loop."""
        return cls(
            features,
            sink,
            memory.AsyncMemoryFeatureStore(features),
            memory.AsyncMemoryPredictionSink(sink),
            check,
        )


@dataclass(frozen=True, slots=True)
class Parts:
    """Parts to wire instead of building them from settings; None builds it."""

    scorer: Scorer | None = None
    stores: Stores | None = None
    keys: KeyStore | None = None


def _memory_stores(settings: Settings) -> Stores:
    path = dataset_path(settings, create=False)
    frame, _ = load_features(path)
    store = memory.MemoryFeatureStore()
    store.load_frame(frame)
    sink = memory.MemoryPredictionSink(capacity=settings.memory_predictions)
    log.warning(
        "DATABASE_URL is not set: serving %s applications of %s from memory; predictions are"
        " kept in memory only (the newest %s)",
        f"{frame.height:,}",
        path,
        f"{settings.memory_predictions:,}",
    )

    return Stores.in_memory(store, sink)  # in this process: ready whenever the process is


def _pool_settings(settings: Settings, url: str) -> PoolSettings:
    """Pool options for ``url``: a pooler host gets no prepared statements, no startup options."""
    prepare = postgres.use_prepared_statements(settings.prepared_statements, url)
    timeout_ms = postgres.startup_statement_timeout_ms(settings.statement_timeout_ms, url)
    log.info(
        "PostgreSQL%s: prepared statements %s; statement_timeout %s",
        " (pooled endpoint)" if postgres.pooled_endpoint(url) else "",
        "on" if prepare else "off",
        f"{timeout_ms} ms" if timeout_ms else "from the server or role settings",
    )
    return {
        "min_size": settings.pool_min_size,
        "max_size": settings.pool_max_size,
        "timeout_s": settings.pool_timeout_s,
        "statement_timeout_ms": timeout_ms,
        "connect_timeout_s": settings.connect_timeout_s,
        "prepare": prepare,
        "max_idle_s": settings.pool_max_idle_s,
    }


async def _postgres_stores(settings: Settings, url: str, stack: AsyncExitStack) -> Stores:
    options = _pool_settings(settings, url)
    pool = postgres.open_pool(url, **options)
    stack.callback(pool.close)
    apool = await postgres.open_async_pool(url, **options)
    stack.push_async_callback(apool.close)

    async def check() -> str:
        """Both pools (one per route) can read features and record predictions, in time."""
        found = await asyncio.gather(
            asyncio.to_thread(postgres.probe, pool, PROBE_TIMEOUT_S),
            postgres.aprobe(apool, PROBE_TIMEOUT_S),
        )
        return next((result for result in found if result != "ok"), "ok")

    prepare, timeout_s = options.get("prepare", True), settings.request_timeout_s
    return Stores(
        postgres.PostgresFeatureStore(pool, prepare=prepare, timeout_s=timeout_s),
        postgres.PostgresPredictionSink(pool, prepare=prepare, timeout_s=timeout_s),
        postgres.AsyncPostgresFeatureStore(apool, prepare=prepare, timeout_s=timeout_s),
        postgres.AsyncPostgresPredictionSink(apool, prepare=prepare, timeout_s=timeout_s),
        check,
        PostgresKeyStore.on_pool(pool, timeout_s=timeout_s),
        lambda: {"sync": pool.get_stats(), "async": apool.get_stats()},
    )


def model_readiness(scorer: AsyncScorer, timeout_s: float = PROBE_TIMEOUT_S) -> Check:
    """A probe scored through ``scorer`` (the requests' own path): a wedged or broken model
    fails readiness, rather than only the requests."""
    probe = probe_applications(1)

    async def check() -> str:
        try:
            async with asyncio.timeout(timeout_s):
                scores = await scorer.score(probe)
            scores.probability(0)  # a probability, or ModelUnavailable
        except FraudscoreError as exc:
            return str(exc)
        except TimeoutError:
            return f"model unavailable: no answer to a probe within {timeout_s} s"
        return "ok"

    return check


def model_pins(settings: Settings) -> frozenset[str] | None:
    """The pins a model must match (FRAUDSCORE_MODEL_SHA256: one or more); raise
    ModelUnavailable when production (DATABASE_URL set) has none and
    FRAUDSCORE_ALLOW_UNPINNED_MODEL is not on."""
    return required_pins(
        settings.model_sha256,
        production=bool(settings.database_url),
        allow_unpinned=settings.allow_unpinned_model == "on",
    )


async def _models(settings: Settings, parts: Parts) -> Reloader:
    """The model to serve and what reloads it: the one passed in, else the artifact folder's."""
    if parts.scorer is not None:
        return Reloader.wired(parts.scorer)
    pins = model_pins(settings)
    if pins is None:
        log.warning("the model is not pinned (FRAUDSCORE_MODEL_SHA256 is not set)")
    policy = ReasonPolicy(when=settings.reasons, method=settings.reasons_method)
    vouches = await asyncio.to_thread(Vouches, settings.run_dir)
    load = functools.partial(load_xgb, reasons=policy)
    return await Reloader.open(settings.artifact_dir, pins=pins, vouches=vouches, load=load)


async def _stores(settings: Settings, stack: AsyncExitStack) -> Stores:
    if settings.database_url:
        return await _postgres_stores(settings, settings.database_url, stack)
    return await asyncio.to_thread(_memory_stores, settings)


@asynccontextmanager
async def _fresh_gate(settings: Settings, keys: KeyStore) -> AsyncIterator[Gate]:
    """The gate, its keys read once now and again every ``keys_refresh_s`` until exit."""
    gate = Gate(
        rate=settings.rate_limit_rps,
        burst=settings.rate_limit_burst,
        max_stale_s=KEYS_MAX_STALE_REFRESHES * settings.keys_refresh_s,
    )
    await refresh(gate, keys)
    active = gate.active()
    if active == 0:
        log.warning("no active API key: every predict request gets 401 until one is created")
    else:
        log.info("API keys: %d active, re-read every %s s", active, settings.keys_refresh_s)
    task = asyncio.create_task(keep_fresh(gate, keys, settings.keys_refresh_s))
    try:
        yield gate
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await refresh(gate, keys)  # the last-use times of the final seconds


def model_description(scorer: Scorer) -> Mapping[str, object]:
    """What the metrics learn of a model: its manifest (an
    :class:`~fraudscore_adapters.xgb.XGBScorer`'s, or any scorer's ``manifest`` mapping), else
    its ``model_version`` alone."""
    manifest = getattr(scorer, "manifest", None)
    if isinstance(manifest, Mapping):
        return manifest
    return {"model_version": str(getattr(scorer, "model_version", "unknown"))}


@asynccontextmanager
async def _pool_gauges(metrics: Metrics, stats: PoolStats | None) -> AsyncIterator[None]:
    """The pools' usage read into the metrics every ``POOL_GAUGES_EVERY_S`` until exit."""
    if stats is None:
        yield
        return
    metrics.watch_pools(stats)

    async def keep() -> None:
        while True:
            await asyncio.sleep(POOL_GAUGES_EVERY_S)
            try:
                metrics.refresh()
            except Exception:  # a pool closing under it: the next tick reads again
                log.debug("reading the pools' usage failed", exc_info=True)

    task = asyncio.create_task(keep())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _timed_services(
    stores: Stores, scorer: Scorer, threaded: AsyncScorer, metrics: Metrics
) -> tuple[ScoringService, AsyncScoringService]:
    """The use case's two faces on ports whose every call is timed into ``metrics``: the
    blocking ports serve the sync route, the async ones the async route."""
    service = ScoringService(
        features=timed.TimedFeatures(stores.features, metrics.store_time("sync", "read")),
        sink=timed.TimedSink(stores.sink, metrics.store_time("sync", "write")),
        scorer=timed.TimedScorer(scorer, metrics.model_time("sync")),
    )
    async_service = AsyncScoringService(
        features=timed.TimedAsyncFeatures(
            stores.async_features, metrics.store_time("async", "read")
        ),
        sink=timed.TimedAsyncSink(stores.async_sink, metrics.store_time("async", "write")),
        scorer=timed.TimedAsyncScorer(threaded, metrics.model_time("async")),
    )
    return service, async_service


@asynccontextmanager
async def runtime(
    settings: Settings, parts: Parts | None = None, *, multiprocess_dir: str | None = None
) -> AsyncIterator[Runtime]:
    """Load the model, open the stores, start the gate, yield the wired services; close all on
    exit. ``parts`` replaces any of the model, stores and key store; ``multiprocess_dir``: the
    directory the server's workers share their metrics through (None: this process only)."""
    parts = parts or Parts()
    async with AsyncExitStack() as stack:
        metrics = Metrics(drift_window=settings.drift_window, multiprocess_dir=multiprocess_dir)
        stack.callback(metrics.close)
        models = await _models(settings, parts)
        scorer = models.scorer
        metrics.model_loaded(model_description(scorer.loaded.scorer))
        # every model that starts serving later (a reload, a rollback) gets the same call
        models.on_serving.append(
            lambda loaded: metrics.model_loaded(model_description(loaded.scorer))
        )
        threaded = ThreadScorer(scorer, timeout_s=settings.request_timeout_s)
        stack.callback(threaded.close)
        stores = parts.stores or await _stores(settings, stack)
        await stack.enter_async_context(_pool_gauges(metrics, stores.pool_stats))
        keys = parts.keys or stores.keys or FileKeyStore(settings.keys_path)
        gate = await stack.enter_async_context(_fresh_gate(settings, keys))
        await stack.enter_async_context(models.running(settings.model_watch_s))
        model_check = model_readiness(threaded)
        service, async_service = _timed_services(stores, scorer, threaded, metrics)

        async def checks() -> dict[str, str]:
            return {
                "model": await model_check(),
                "store": await stores.check(),
                "keys": gate.freshness(),
            }

        yield Runtime(
            service=service,
            async_service=async_service,
            gate=gate,
            checks=checks,
            metrics=metrics,
            liveness=lambda: _model_liveness(threaded),
            models=models,
        )


def _model_liveness(threaded: ThreadScorer) -> list[str]:
    stuck = threaded.stuck_s()
    return [f"model: a call is {stuck:.1f} s past its timeout"] if stuck > 0 else []


def build_app(
    settings: Settings, parts: Parts | None = None, *, multiprocess_dir: str | None = None
) -> Litestar | FastPredictRoutes:
    """The HTTP app for ``settings``, with ``parts`` wired in place of those it names; its
    metrics shared through ``multiprocess_dir`` with the server's other workers, if given."""
    return create_app(
        lambda: runtime(settings, parts, multiprocess_dir=multiprocess_dir),
        retry_after_s=settings.retry_after_s,
        batching=Batching(
            max_batch=settings.max_batch,
            concurrency=settings.batch_concurrency,
            max_queue=settings.max_queue,
            timeout_s=settings.request_timeout_s,
        ),
        fast_path=settings.fast_path == "on",
        metrics_access=settings.metrics_access,
    )


def app_from_env() -> Litestar | FastPredictRoutes:
    """The server's factory: settings from the environment and ``.env``, read once here (and
    the metrics' multiprocess directory, set by the ``serve`` command)."""
    settings = Settings.from_env(os.environ)
    logs.configure(settings.log_format)
    return build_app(settings, multiprocess_dir=os.environ.get(MULTIPROC_ENV) or None)
