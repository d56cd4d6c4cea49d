"""The composition root: settings in, wired adapters out.

The one place that decides which adapter serves which port. ``DATABASE_URL`` unset means the
embedded default (the in-memory store seeded from the local dataset, predictions kept in
memory); set means PostgreSQL for both. Nothing here runs at import: :func:`runtime` opens and
closes everything inside the app's lifespan, and :func:`app_from_env` is the server's factory.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
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
)
from fraudscore_adapters import memory, postgres
from fraudscore_adapters.baf import load_features
from fraudscore_adapters.batching import ThreadScorer
from fraudscore_adapters.dataset import dataset_path
from fraudscore_adapters.http import Batching, FastPredictRoutes, Runtime, create_app
from fraudscore_adapters.postgres.pools import PoolSettings
from fraudscore_adapters.settings import Settings
from fraudscore_adapters.xgb import XGBScorer, probe_applications

__all__ = ["app_from_env", "build_app", "model_readiness", "runtime"]

log = logging.getLogger("fraudscore")

Check = Callable[[], Awaitable[str]]
"""A readiness probe of one part: ``ok``, or what is wrong."""
PROBE_TIMEOUT_S = 2.0
"""Each readiness probe answers within this: a frozen store or a wedged model is not ready."""


@dataclass(frozen=True, slots=True)
class _Stores:
    features: FeatureRepository
    sink: PredictionSink
    async_features: AsyncFeatureRepository
    async_sink: AsyncPredictionSink
    check: Check


def _memory_stores(settings: Settings) -> _Stores:
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

    async def check() -> str:
        return "ok"  # in this process: answers whenever the process does

    return _Stores(
        store,
        sink,
        memory.AsyncMemoryFeatureStore(store),
        memory.AsyncMemoryPredictionSink(sink),
        check,
    )


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


async def _postgres_stores(settings: Settings, url: str, stack: AsyncExitStack) -> _Stores:
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
    return _Stores(
        postgres.PostgresFeatureStore(pool, prepare=prepare, timeout_s=timeout_s),
        postgres.PostgresPredictionSink(pool, prepare=prepare, timeout_s=timeout_s),
        postgres.AsyncPostgresFeatureStore(apool, prepare=prepare, timeout_s=timeout_s),
        postgres.AsyncPostgresPredictionSink(apool, prepare=prepare, timeout_s=timeout_s),
        check,
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


@asynccontextmanager
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Load the model, open the stores, yield the wired services; close all on exit."""
    async with AsyncExitStack() as stack:
        scorer = await asyncio.to_thread(XGBScorer.load, settings.artifact_dir)
        threaded = ThreadScorer(scorer, timeout_s=settings.request_timeout_s)
        stack.callback(threaded.close)
        if settings.database_url:
            stores = await _postgres_stores(settings, settings.database_url, stack)
        else:
            stores = await asyncio.to_thread(_memory_stores, settings)

        model_check = model_readiness(threaded)

        async def checks() -> dict[str, str]:
            return {"model": await model_check(), "store": await stores.check()}

        yield Runtime(
            service=ScoringService(features=stores.features, sink=stores.sink, scorer=scorer),
            async_service=AsyncScoringService(
                features=stores.async_features, sink=stores.async_sink, scorer=threaded
            ),
            checks=checks,
            info={"model_version": scorer.model_version},
            liveness=lambda: _model_liveness(threaded),
        )


def _model_liveness(threaded: ThreadScorer) -> list[str]:
    stuck = threaded.stuck_s()
    return [f"model: a call is {stuck:.1f} s past its timeout"] if stuck > 0 else []


def build_app(settings: Settings) -> Litestar | FastPredictRoutes:
    """The HTTP app for ``settings``."""
    return create_app(
        lambda: runtime(settings),
        retry_after_s=settings.retry_after_s,
        batching=Batching(
            max_batch=settings.max_batch,
            concurrency=settings.batch_concurrency,
            max_queue=settings.max_queue,
            timeout_s=settings.request_timeout_s,
        ),
        fast_path=settings.fast_path == "on",
    )


def app_from_env() -> Litestar | FastPredictRoutes:
    """The server's factory: settings from the environment and ``.env``, read once here."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return build_app(Settings.from_env(os.environ))
