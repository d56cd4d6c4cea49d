"""The micro-batcher: concurrent calls share batches; each caller gets its own answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from fraudscore import Application, ModelUnavailable, Scores
from fraudscore_adapters.batching import AsyncBatchingScorer, BatchingScorer, MicroBatcher
from tests.support import RuleScorer, application

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def double(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await asyncio.sleep(0.01)
        return [ValueError(f"odd {i}") if i % 2 else i * 2 for i in items]


def test_concurrent_calls_are_batched_and_answered_in_order() -> None:
    recorder = Recorder()

    async def main() -> list[int | BaseException]:
        batcher: MicroBatcher[int, int] = MicroBatcher(recorder.double, max_batch=10)
        return await asyncio.gather(
            *(batcher.submit(i) for i in range(0, 40, 2)), return_exceptions=True
        )

    assert asyncio.run(main()) == [i * 2 for i in range(0, 40, 2)]
    assert recorder.batches[0] == [0]  # a lone first call is not held back
    assert [len(b) for b in recorder.batches] == [1, 10, 9]


def test_per_item_errors_reach_only_their_caller() -> None:
    async def main() -> list[int | BaseException]:
        batcher: MicroBatcher[int, int] = MicroBatcher(Recorder().double)
        return await asyncio.gather(*(batcher.submit(i) for i in (2, 3, 4)), return_exceptions=True)

    first, second, third = asyncio.run(main())
    assert (first, third) == (4, 8)
    assert isinstance(second, ValueError)
    assert str(second) == "odd 3"


def test_a_failing_batch_fails_every_caller_in_it_and_the_next_batch_runs() -> None:
    calls = 0

    async def flaky(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise ConnectionError("down")
        return list(items)

    async def main() -> tuple[list[int | BaseException], int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(flaky, max_batch=100)
        first = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        return first, await batcher.submit(7)

    first, later = asyncio.run(main())
    assert isinstance(first[0], ConnectionError)
    assert first[1:] == [1, 2]
    assert later == 7


def test_a_wrong_number_of_results_is_an_error_for_everyone() -> None:
    async def short(items: Sequence[int]) -> list[int | BaseException]:
        return []

    async def main() -> None:
        await MicroBatcher(short).submit(1)

    with pytest.raises(RuntimeError, match="batch of 1 got 0 results"):
        asyncio.run(main())


def test_concurrency_bounds_batches_in_flight() -> None:
    in_flight = peak = 0

    async def slow(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return list(items)

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(slow, max_batch=4, concurrency=3)
        return await asyncio.gather(*(batcher.submit(i) for i in range(50)))

    assert asyncio.run(main()) == list(range(50))
    assert peak == 3


def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    async def main() -> int:
        batcher: MicroBatcher[int, int] = MicroBatcher(Recorder().double)
        first = asyncio.ensure_future(batcher.submit(2))
        second = asyncio.ensure_future(batcher.submit(4))
        await asyncio.sleep(0)
        second.cancel()
        return await first

    assert asyncio.run(main()) == 4


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(Recorder().double, max_batch=0)


class SlowCountingScorer:
    """Scores by housing status; slow enough that concurrent callers pile up."""

    def __init__(self) -> None:
        self.inner = RuleScorer()
        self.lock = threading.Lock()

    def score(self, applications: Sequence[Application]) -> Scores:
        time.sleep(0.005)
        with self.lock:
            return self.inner.score(applications)


def test_threads_share_model_calls_and_keep_their_own_answers() -> None:
    slow = SlowCountingScorer()
    batching = BatchingScorer(slow, max_batch=32)
    apps = [application(housing_status="BA" if i % 2 else "BB") for i in range(200)]
    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            results = list(pool.map(lambda a: batching.score([a]), apps))
    finally:
        batching.close()
    assert [r.probabilities[0] for r in results] == [0.9 if i % 2 else 0.1 for i in range(200)]
    assert sum(slow.inner.batches) == 200
    assert max(slow.inner.batches) > 1  # calls were shared
    assert max(slow.inner.batches) <= 32
    assert len(slow.inner.batches) < 200


def test_async_callers_share_model_calls() -> None:
    slow = SlowCountingScorer()
    batching = AsyncBatchingScorer(slow)

    async def main() -> tuple[list[Scores], Scores]:
        got = await asyncio.gather(*(batching.score([application()]) for _ in range(50)))
        return got, await batching.score([application(housing_status="BA"), application()])

    try:
        got, many = asyncio.run(main())
    finally:
        batching.close()
    assert all(s.probabilities == [0.1] for s in got)
    assert many.probabilities == [0.9, 0.1]
    assert many.model_version == "rule-1"
    assert len(slow.inner.batches) < 50


def test_a_failing_model_fails_every_waiting_caller_and_recovers() -> None:
    class Flaky:
        calls = 0

        def score(self, applications: Sequence[Application]) -> Scores:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ModelUnavailable("boom")
            return RuleScorer().score(applications)

    batching = BatchingScorer(Flaky())
    try:
        with pytest.raises(ModelUnavailable, match="boom"):
            batching.score([application()])
        assert batching.score([application()]).probabilities == [0.1]
        assert batching.score([]).probabilities == []
    finally:
        batching.close()
