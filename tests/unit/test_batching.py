"""The micro-batcher: concurrent calls share batches; each caller gets its own answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from fraudscore import (
    Application,
    AsyncScoringService,
    ModelUnavailable,
    Prediction,
    Scores,
    ScoringService,
    UnknownUser,
)
from fraudscore_adapters import deadlines
from fraudscore_adapters.batching import (
    ANSWER_MARGIN_S,
    WATCH_AFTER_S,
    BatchedPredictions,
    Batching,
    ClientGone,
    DeadlineExceeded,
    MicroBatcher,
    Overloaded,
    ShuttingDown,
    ThreadScorer,
    Watch,
)
from fraudscore_adapters.memory import (
    AsyncMemoryFeatureStore,
    AsyncMemoryPredictionSink,
    MemoryFeatureStore,
    MemoryPredictionSink,
)
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
        batcher: MicroBatcher[int, int] = MicroBatcher(recorder.double, Batching(max_batch=10))
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
        batcher: MicroBatcher[int, int] = MicroBatcher(flaky, Batching(max_batch=100))
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
        batcher: MicroBatcher[int, int] = MicroBatcher(slow, Batching(max_batch=4, concurrency=3))
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
        Batching(max_batch=0)
    with pytest.raises(ValueError, match="at least 1"):
        Batching(max_queue=0)
    with pytest.raises(ValueError, match="timeout > 0"):
        Batching(timeout_s=0)


class SlowCountingScorer:
    """Scores by housing status; slow enough that concurrent callers pile up."""

    def __init__(self) -> None:
        self.inner = RuleScorer()
        self.lock = threading.Lock()

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        time.sleep(0.005)
        with self.lock:
            return self.inner.score(applications)


class ThreadNoting(SlowCountingScorer):
    """Also notes which thread each model call ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        self.threads.add(threading.current_thread().name)
        return super().score(applications)


IDS = [str(i % 7) for i in range(120)]  # users 1..6 are stored (1, 3, 5 as BA), user 0 is not


def stored() -> MemoryFeatureStore:
    store = MemoryFeatureStore()
    for user in range(1, 7):
        store.add(user, application(housing_status="BA" if user % 2 else "BB"))
    return store


async def predict_all(batched: BatchedPredictions, ids: list[str]) -> list[object]:
    async def one(user_id: str) -> object:
        try:
            return (await batched.predict(user_id)).probability
        except UnknownUser as exc:
            return exc.user_id

    return await asyncio.gather(*(one(i) for i in ids))


def expected(ids: list[str]) -> list[object]:
    return [0 if i == "0" else 0.9 if int(i) % 2 else 0.1 for i in ids]


def test_sync_batches_run_in_worker_threads_and_answer_each_caller() -> None:
    scorer, sink = ThreadNoting(), MemoryPredictionSink()
    service = ScoringService(features=stored(), sink=sink, scorer=scorer)

    async def main() -> list[object]:
        with ThreadPoolExecutor(1, thread_name_prefix="batch") as threads:
            batched = BatchedPredictions.in_threads(
                service, threads, route="sync", batching=Batching(max_batch=32)
            )
            return await predict_all(batched, IDS)

    assert asyncio.run(main()) == expected(IDS)
    assert scorer.threads == {"batch_0"}  # never the event loop's thread
    assert sum(scorer.inner.batches) == len([i for i in IDS if i != "0"])
    assert 1 < max(scorer.inner.batches) <= 32  # requests shared model calls
    assert len(sink.records) == sum(scorer.inner.batches)
    assert {p.route for p in sink.records} == {"sync"}


def test_async_batches_keep_the_model_off_the_loop() -> None:
    scorer, sink = ThreadNoting(), MemoryPredictionSink()
    threaded = ThreadScorer(scorer)
    service = AsyncScoringService(
        features=AsyncMemoryFeatureStore(stored()),
        sink=AsyncMemoryPredictionSink(sink),
        scorer=threaded,
    )

    async def main() -> list[object]:
        batched = BatchedPredictions.on_loop(
            service, route="async", batching=Batching(max_batch=16)
        )
        return await predict_all(batched, IDS)

    try:
        assert asyncio.run(main()) == expected(IDS)
    finally:
        threaded.close()
    assert scorer.threads == {"scorer_0"}
    assert 1 < max(scorer.inner.batches) <= 16
    assert len(sink.records) == sum(scorer.inner.batches)
    assert {p.route for p in sink.records} == {"async"}


def test_a_failing_model_fails_every_waiting_caller_and_recovers() -> None:
    class Flaky:
        calls = 0

        def score(
            self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
        ) -> Scores:
            Flaky.calls += 1
            if Flaky.calls <= 2:  # a batch of one, then the three that queued behind it
                raise ModelUnavailable("boom")
            return RuleScorer().score(applications)

    threaded = ThreadScorer(Flaky())
    service = AsyncScoringService(
        features=AsyncMemoryFeatureStore(stored()),
        sink=AsyncMemoryPredictionSink(MemoryPredictionSink()),
        scorer=threaded,
    )

    async def main() -> tuple[list[Prediction | BaseException], float]:
        batched = BatchedPredictions.on_loop(service, route="async")
        first = await asyncio.gather(
            *(batched.predict(str(i)) for i in range(1, 5)), return_exceptions=True
        )
        return first, (await batched.predict("1")).probability

    try:
        first, later = asyncio.run(main())
    finally:
        threaded.close()
    assert all(isinstance(r, ModelUnavailable) for r in first)
    assert Flaky.calls == 3
    assert later == 0.9


class Gate:
    """A batch function that holds every batch until opened, noting what it was given."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.batches: list[list[int]] = []
        self.deadlines: list[float | None] = []

    async def run(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.deadlines.append(deadlines.current())
        await self.open.wait()
        return list(items)


async def started(*calls: Awaitable[int]) -> list[asyncio.Task[int]]:
    """The calls as tasks, each submitted in order (one loop turn apart)."""
    tasks = []
    for call in calls:
        tasks.append(asyncio.ensure_future(call))
        await asyncio.sleep(0)
    return tasks


def test_a_full_queue_refuses_at_once_and_the_accepted_are_served() -> None:
    gate = Gate()

    async def main() -> tuple[list[int], float]:
        batcher = MicroBatcher(gate.run, Batching(max_batch=1, max_queue=2))
        accepted = await started(batcher.submit(1), batcher.submit(2), batcher.submit(3))
        began = time.perf_counter()
        with pytest.raises(Overloaded, match="2 requests are already waiting"):
            await batcher.submit(4)
        refused_in = time.perf_counter() - began
        gate.open.set()
        return list(await asyncio.gather(*accepted)), refused_in

    answers, refused_in = asyncio.run(main())
    assert answers == [1, 2, 3]
    assert refused_in < 0.01
    assert gate.batches == [[1], [2], [3]]


def test_every_caller_is_answered_by_its_deadline_whatever_hangs() -> None:
    gate = Gate()  # never opened: the batch hangs

    async def main() -> tuple[list[BaseException | int], float, float]:
        batcher = MicroBatcher(gate.run, Batching(max_batch=1, timeout_s=0.2))
        began = time.perf_counter()
        tasks = await started(*(batcher.submit(i) for i in range(3)))
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        took = time.perf_counter() - began
        stuck = batcher.stuck_s()
        gate.open.set()
        await asyncio.sleep(0.01)
        return answers, took, stuck

    answers, took, stuck = asyncio.run(main())
    assert all(isinstance(a, DeadlineExceeded) for a in answers), answers
    assert "no answer within 0.2 s" in str(answers[0])
    assert "(queued)" in str(answers[1])  # never left the queue: the batch ahead held it
    assert 0.19 < took < 0.35
    assert stuck > 0  # the hung batch holds its slot and shows as stuck
    assert gate.batches == [[0]]  # nothing piled up behind the hung batch


def test_a_batch_runs_under_its_oldest_callers_deadline() -> None:
    gate = Gate()
    gate.open.set()

    async def main() -> float:
        batcher = MicroBatcher(gate.run, Batching(timeout_s=2.0))
        now = time.monotonic()
        await batcher.submit(1)
        return now

    arrived = asyncio.run(main())
    (deadline,) = gate.deadlines
    assert deadline is not None
    assert deadline == pytest.approx(arrived + 2.0 - ANSWER_MARGIN_S, abs=0.05)


def test_queued_callers_whose_client_left_are_neither_served_nor_counted() -> None:
    gate = Gate()
    watched: list[int] = []

    def watch(i: int) -> Watch:
        async def client() -> None:
            watched.append(i)
            if i != 2:  # the other clients stay
                await asyncio.Event().wait()

        return client

    async def main() -> list[BaseException | int]:
        batcher = MicroBatcher(gate.run, Batching(max_batch=10))
        tasks = await started(*(batcher.submit(i, watch(i)) for i in range(4)))
        await asyncio.sleep(WATCH_AFTER_S * 2)  # they have waited: their clients are watched
        gate.open.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, one, gone, three = asyncio.run(main())
    assert (first, one, three) == (0, 1, 3)
    assert isinstance(gone, ClientGone)
    assert gate.batches == [[0], [1, 3]]  # user 2 left while queued: never in a batch
    assert sorted(watched) == [1, 2, 3]  # the first went straight into a batch: not watched


def test_callers_served_at_once_are_not_watched() -> None:
    watched: list[int] = []

    async def client() -> None:
        watched.append(1)

    async def main() -> list[int]:
        batcher = MicroBatcher(Recorder().double, Batching(max_batch=100))
        return [await batcher.submit(i * 2, client) for i in range(5)]

    assert asyncio.run(main()) == [0, 4, 8, 12, 16]
    assert watched == []  # no waiting, no watching: no cost on the common path


def test_drain_answers_the_accepted_and_refuses_the_new() -> None:
    async def slow(items: Sequence[int]) -> list[int | BaseException]:
        await asyncio.sleep(0.05)
        return list(items)

    async def main() -> tuple[list[int], bool]:
        batcher = MicroBatcher(slow, Batching(max_batch=2))
        tasks = await started(*(batcher.submit(i) for i in range(5)))
        draining = asyncio.ensure_future(batcher.drain(2.0))
        await asyncio.sleep(0)
        with pytest.raises(ShuttingDown):
            await batcher.submit(99)
        return list(await asyncio.gather(*tasks)), await draining

    answers, drained = asyncio.run(main())
    assert answers == [0, 1, 2, 3, 4]
    assert drained is True


def test_a_drain_that_times_out_answers_the_queued_and_says_so() -> None:
    gate = Gate()

    async def main() -> tuple[bool, BaseException | int]:
        batcher = MicroBatcher(gate.run, Batching(max_batch=1, timeout_s=5.0))
        _, queued = await started(batcher.submit(1), batcher.submit(2))
        drained = await batcher.drain(0.05)
        answer = (await asyncio.gather(queued, return_exceptions=True))[0]
        gate.open.set()
        await asyncio.sleep(0.01)
        return drained, answer

    drained, answer = asyncio.run(main())
    assert drained is False
    assert isinstance(answer, ShuttingDown)


def test_sync_batches_see_their_deadline_in_the_worker_thread() -> None:
    seen: list[tuple[str, float | None]] = []

    class Noting(MemoryFeatureStore):
        def latest_many(self, user_ids: Sequence[int]) -> list[Application | UnknownUser]:
            seen.append((threading.current_thread().name, deadlines.current()))
            return super().latest_many(user_ids)

    store = Noting()
    store.add(1, application())
    service = ScoringService(features=store, sink=MemoryPredictionSink(), scorer=RuleScorer())

    async def main() -> float:
        with ThreadPoolExecutor(1, thread_name_prefix="batch") as threads:
            batched = BatchedPredictions.in_threads(
                service, threads, route="sync", batching=Batching(timeout_s=1.5)
            )
            now = time.monotonic()
            await batched.predict("1")
            return now

    arrived = asyncio.run(main())
    ((thread, deadline),) = seen
    assert thread == "batch_0"
    assert deadline == pytest.approx(arrived + 1.5 - ANSWER_MARGIN_S, abs=0.05)


def test_a_model_past_its_deadline_is_unavailable_and_shows_as_stuck() -> None:
    release = threading.Event()

    class Hanging:
        def score(
            self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
        ) -> Scores:
            release.wait(5)
            return RuleScorer().score(applications)

    threaded = ThreadScorer(Hanging(), timeout_s=0.1)

    async def main() -> tuple[float, float]:
        began = time.perf_counter()
        with pytest.raises(ModelUnavailable, match=r"no answer within 0\.1 s"):
            await threaded.score([application()])
        took = time.perf_counter() - began
        await asyncio.sleep(0.1)
        return took, threaded.stuck_s()

    try:
        took, stuck = asyncio.run(main())
    finally:
        release.set()
        threaded.close()
    assert took < 0.3
    assert stuck > 0
    assert threaded.stuck_s() == 0.0
