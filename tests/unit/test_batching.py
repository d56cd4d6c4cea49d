"""The micro-batcher: concurrent calls share batches; each caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from fraudscore_adapters.batching import MicroBatcher

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
