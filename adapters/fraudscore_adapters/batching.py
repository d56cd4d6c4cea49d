"""Micro-batching: many concurrent single calls on an event loop, one batched call.

:class:`MicroBatcher` collects concurrent ``await batcher.submit(item)`` calls (never blocking
the loop). Items that arrive while a batch is in flight wait for the next one, so batches grow
with load and cost nothing when it is quiet (a lone call is a batch of one, sent at once). Each
caller gets its own result, or its own exception; a fault of the whole batch reaches every
caller in it. :class:`BatchedPredictions` puts one in front of the scoring use case (what the
HTTP routes call); :class:`ThreadScorer` keeps a blocking model off the loop.

What a caller may count on, whatever hangs below (all measured by ``bench/chaos.py``):

- **A bounded queue.** At most ``max_queue`` callers wait; one more gets :class:`Overloaded`
  at once (a quick 503), instead of a latency that grows with the backlog.
- **A deadline.** Every caller is answered within ``timeout_s`` of its arrival. A batch runs
  under its oldest caller's deadline (:mod:`fraudscore_adapters.deadlines`, which the database
  and model adapters honour); a caller still queued, or in a batch that has not answered, at
  its deadline gets :class:`DeadlineExceeded`. A batch that keeps running past its deadline
  still holds its slot (work never piles up behind a wedged call) and :meth:`stuck_s` reports
  it, for liveness.
- **No work for callers who left.** A caller still queued after ``WATCH_AFTER_S`` has its
  client watched; if it went away before its batch started, it is dropped from the batch: not
  scored, not recorded.
- **A drain.** :meth:`drain` refuses new callers (:class:`ShuttingDown`) and waits for the
  queued and running batches to answer, within a bound.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from fraudscore import (
    Application,
    AsyncScoringService,
    FraudscoreError,
    ModelUnavailable,
    Outcome,
    Prediction,
    Scores,
    ScoringService,
)
from fraudscore.ports import Scorer
from fraudscore_adapters import deadlines

__all__ = [
    "ANSWER_MARGIN_S",
    "DEFAULT_BATCHING",
    "WATCH_AFTER_S",
    "BatchFunction",
    "BatchObserver",
    "BatchedPredictions",
    "Batching",
    "ClientGone",
    "DeadlineExceeded",
    "MicroBatcher",
    "Overloaded",
    "QueueObserver",
    "ShuttingDown",
    "ThreadScorer",
    "Watch",
]

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("fraudscore.batching")

BatchFunction = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException"]]]
"""Takes a batch, returns one result or exception per item, in order."""
Watch = Callable[[], Coroutine[Any, Any, None]]
"""Makes an awaitable that completes when a caller's client goes away (its answer would reach
nobody)."""

WATCH_AFTER_S = 0.1
"""A caller queued this long has its client watched (and the queue is tended this often while
batches hold it up). Under load a request waits ~5-15 ms for the batch ahead of it; this is
for the ones held up by an overload or a slow database, whose clients may give up."""
ANSWER_MARGIN_S = 0.1
"""The work of a batch must end this long before its callers' deadline, so that its own
error (the store's, the model's) rather than a bare timeout reaches them, in time."""


class Overloaded(FraudscoreError):
    """The route's queue is full: this request was refused at once, nothing done."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting
        super().__init__(f"overloaded: {waiting} requests are already waiting on this route")


class ShuttingDown(FraudscoreError):
    """The server is stopping: it answers what it accepted, and takes nothing new."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry on another instance")


class DeadlineExceeded(FraudscoreError):
    """No answer within the request's deadline; nothing for it was recorded, or if its batch
    still runs, its answer is dropped."""

    def __init__(self, timeout_s: float, where: str) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"no answer within {timeout_s:g} s ({where})")


class ClientGone(FraudscoreError):
    """The caller's client went away before its batch started: nothing was done for it."""

    def __init__(self) -> None:
        super().__init__("the client went away before its request was served")


@dataclass(frozen=True, slots=True)
class Batching:
    """How a route batches concurrent requests, and the bounds on waiting for one."""

    max_batch: int = 128
    """Requests per batch at most."""
    concurrency: int = 1
    """Batches in flight at once, per route. One lets batches grow with load; two or three
    measured no better at 16 or 64 connections and cost more CPU per request
    (``bench/http_load.py --batch-concurrency 1 2 3``)."""
    max_queue: int = 512
    """Requests waiting for a batch at most; one more gets a 503 at once."""
    timeout_s: float = 3.0
    """Every request is answered within this, from its arrival."""

    def __post_init__(self) -> None:
        if min(self.max_batch, self.concurrency, self.max_queue) < 1 or self.timeout_s <= 0:
            raise ValueError("max_batch, concurrency and max_queue must be at least 1, timeout > 0")


DEFAULT_BATCHING = Batching()


class QueueObserver(Protocol):
    """What a batcher reports, once per batch (never per caller): metrics."""

    def batch(self, size: int, waiting: int) -> None:
        """A batch of ``size`` callers started; ``waiting`` callers are still queued."""
        ...

    def waiting(self, waiting: int) -> None:
        """``waiting`` callers are queued (after a batch ended, or the queue was tended)."""
        ...


class BatchObserver(QueueObserver, Protocol):
    """What :class:`BatchedPredictions` reports: the queue, and each batch's outcomes."""

    def served(self, outcomes: Sequence[Prediction | BaseException]) -> None:
        """A batch ended with these outcomes, one per caller."""
        ...


class _Waiting(Generic[T, R]):
    """A queued caller: its item, its future, its deadline (monotonic), and how to learn that
    its client went away (``watch``; a task runs it once the caller has waited long)."""

    __slots__ = ("deadline", "future", "item", "watch", "watcher")

    def __init__(
        self, item: T, future: asyncio.Future[R], deadline: float, watch: Watch | None
    ) -> None:
        self.item, self.future, self.deadline, self.watch = item, future, deadline, watch
        self.watcher: asyncio.Task[None] | None = None
        """The task running ``watch``, once the caller has waited ``WATCH_AFTER_S``."""

    def gone(self) -> bool:
        """Whether the caller's client is known to have gone away."""
        return self.watcher is not None and self.watcher.done() and not self.watcher.cancelled()

    def answer(self, result: R | BaseException) -> None:
        """Settle the caller (unless it went away meanwhile) and stop watching its client."""
        if self.watcher is not None:
            self.watcher.cancel()
        if self.future.done():
            return
        if isinstance(result, BaseException):
            self.future.set_exception(result)
        else:
            self.future.set_result(result)


class MicroBatcher(Generic[T, R]):
    """Collect concurrent :meth:`submit` calls into batches (see the module's guarantees)."""

    def __init__(
        self,
        function: BatchFunction[T, R],
        batching: Batching = DEFAULT_BATCHING,
        observer: QueueObserver | None = None,
    ) -> None:
        self._function = function
        self._batching = batching
        self._observer = observer
        self._pending: deque[_Waiting[T, R]] = deque()
        self._running: dict[asyncio.Task[None], float] = {}
        """Each batch in flight, with its callers' deadline."""
        self._sweep: asyncio.TimerHandle | None = None
        self._closing = False

    async def submit(self, item: T, watch: Watch | None = None) -> R:
        """The result for ``item`` once its batch has run (or the exception for it).

        ``watch``: an awaitable factory that completes when the caller's client goes away;
        it runs only for callers still queued after ``WATCH_AFTER_S``.
        """
        if self._closing:
            raise ShuttingDown
        if len(self._pending) >= self._batching.max_queue:
            raise Overloaded(len(self._pending))
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        deadline = time.monotonic() + self._batching.timeout_s
        self._pending.append(_Waiting(item, future, deadline, watch))
        self._dispatch()
        return await future

    def stuck_s(self) -> float:
        """How long the oldest batch in flight has run past its deadline (0: none has)."""
        if not self._running:
            return 0.0
        return max(0.0, time.monotonic() - min(self._running.values()))

    @property
    def waiting(self) -> int:
        """Callers queued for a batch."""
        return len(self._pending)

    async def drain(self, timeout_s: float) -> bool:
        """Take no new callers; wait up to ``timeout_s`` for the accepted ones to be answered.

        Returns whether all were; callers still queued then get :class:`ShuttingDown`.
        """
        self._closing = True
        end = time.monotonic() + timeout_s
        while (self._pending or self._running) and time.monotonic() < end:
            await asyncio.sleep(0.01)
        drained = not (self._pending or self._running)
        while self._pending:
            self._pending.popleft().answer(ShuttingDown())
        return drained

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending and len(self._running) < self._batching.concurrency:
            batch = self._take()
            if not batch:
                break
            deadline = batch[0].deadline  # the oldest caller's
            task = loop.create_task(self._run(batch, deadline))
            self._running[task] = deadline
            task.add_done_callback(self._finished)
            if self._observer is not None:
                self._observer.batch(len(batch), len(self._pending))
        if self._pending and self._sweep is None:
            due = min(WATCH_AFTER_S, self._pending[0].deadline - time.monotonic())
            self._sweep = loop.call_later(max(due, 0.0), self._tend_queue)

    def _take(self) -> list[_Waiting[T, R]]:
        """The next batch: queued callers still waiting for an answer, oldest first; one with
        less than ``ANSWER_MARGIN_S`` left is answered now (no time to serve it)."""
        now = time.monotonic() + ANSWER_MARGIN_S
        batch: list[_Waiting[T, R]] = []
        while self._pending and len(batch) < self._batching.max_batch:
            waiting = self._pending.popleft()
            if waiting.future.done() or waiting.gone():  # cancelled, or its client left
                waiting.answer(ClientGone())
            elif waiting.deadline <= now:
                waiting.answer(DeadlineExceeded(self._batching.timeout_s, "queued"))
            else:
                batch.append(waiting)
        return batch

    def _tend_queue(self) -> None:
        """While callers queue behind batches in flight: answer those past their deadline, and
        start watching the clients of those that have waited ``WATCH_AFTER_S``.

        Watching costs a task and two ``receive`` calls (~10 µs of CPU a request measured with
        granian), so it is spent only where it can save a batch slot: on callers that waited.
        """
        self._sweep = None
        now = time.monotonic()
        while self._pending and self._pending[0].deadline <= now:
            waiting = self._pending.popleft()
            waiting.answer(DeadlineExceeded(self._batching.timeout_s, "queued"))
        loop = asyncio.get_running_loop()
        watch_before = now + self._batching.timeout_s - WATCH_AFTER_S
        for waiting in self._pending:
            if waiting.deadline > watch_before:
                break  # the rest arrived later
            if waiting.watch is not None and waiting.watcher is None:
                waiting.watcher = loop.create_task(waiting.watch())
        self._dispatch()
        self._report_queue()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._dispatch()
        self._report_queue()

    def _report_queue(self) -> None:
        if self._observer is not None:
            self._observer.waiting(len(self._pending))

    async def _run(self, batch: list[_Waiting[T, R]], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        late = DeadlineExceeded(self._batching.timeout_s, "no answer from the batch")
        timer = loop.call_later(deadline - time.monotonic(), _answer_all, batch, late)
        try:
            with deadlines.until(deadline - ANSWER_MARGIN_S):
                results = _checked(len(batch), await self._function([w.item for w in batch]))
        except BaseException as exc:  # every caller of the batch gets the batch's fault
            _answer_all(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            timer.cancel()
        for waiting, result in zip(batch, results, strict=True):
            waiting.answer(result)


def _answer_all(batch: Sequence[_Waiting[T, R]], exc: BaseException) -> None:
    for waiting in batch:
        waiting.answer(exc)


def _checked(size: int, results: Sequence[R | BaseException]) -> Sequence[R | BaseException]:
    if len(results) != size:
        raise RuntimeError(f"batch of {size} got {len(results)} results")
    return results


class ThreadScorer:
    """An :class:`~fraudscore.AsyncScorer` that runs a blocking scorer in a thread of its own.

    The model call (measured: ~0.4 ms for one application, ~1.3 ms for 64) never blocks the
    event loop; calls run one at a time, in order. One executor hop per call: callers batch
    before they get here. A call still unanswered at the deadline in force (or after
    ``timeout_s``) raises ModelUnavailable; :meth:`stuck_s` says how long the call in the
    thread has run, for liveness.
    """

    def __init__(self, scorer: Scorer, *, timeout_s: float = 3.0) -> None:
        self._scorer = scorer
        self._timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer")
        self._started: float | None = None

    async def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """One probability per application, in order, scored in the scorer's thread (with
        reasons where the scorer gives them; see :class:`~fraudscore.ports.Scorer`)."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        deadline = min(deadlines.current() or now + self._timeout_s, now + self._timeout_s)
        call = loop.run_in_executor(self._executor, self._timed, applications, explain)
        try:
            return await asyncio.wait_for(call, max(deadline - now, 0.0))
        except TimeoutError:
            raise ModelUnavailable(f"no answer within {deadline - now:.1f} s") from None

    def _timed(self, applications: Sequence[Application], explain: Sequence[bool] | None) -> Scores:
        self._started = time.monotonic()
        try:
            if explain is None:
                return self._scorer.score(applications)
            return self._scorer.score(applications, explain=explain)
        finally:
            self._started = None

    def stuck_s(self) -> float:
        """How long the call in the scorer's thread has run past ``timeout_s`` (0: none)."""
        started = self._started
        return 0.0 if started is None else max(0.0, time.monotonic() - started - self._timeout_s)

    def close(self) -> None:
        """Stop the scoring thread (waits for the call in progress)."""
        self._executor.shutdown(wait=True)


Ask = tuple[str, str | None, bool]
"""One predict request as the batcher queues it: the raw user id, who asked (a key id), and
whether it asked for reasons."""


class BatchedPredictions:
    """``await predict(user_id, caller)`` for concurrent callers on one event loop, in batches.

    Callers that arrive while a batch is in flight go together into the next one: one store
    read, one model call, one commit for all of them, and each caller gets its own prediction
    or its own error. :meth:`on_loop` runs the async use case on the loop; :meth:`in_threads`
    runs the blocking use case in worker threads, one hop per batch (a hop per request cost
    about 3x the CPU: each one wakes the loop).
    """

    def __init__(
        self,
        predict_many: BatchFunction[Ask, Prediction],
        batching: Batching = DEFAULT_BATCHING,
        observer: BatchObserver | None = None,
    ) -> None:
        if observer is not None:
            predict_many = _observed(predict_many, observer)
        self.batcher: MicroBatcher[Ask, Prediction] = MicroBatcher(predict_many, batching, observer)

    @classmethod
    def on_loop(
        cls,
        service: AsyncScoringService,
        *,
        route: str,
        batching: Batching = DEFAULT_BATCHING,
        observer: BatchObserver | None = None,
    ) -> BatchedPredictions:
        """Batches of the async use case, awaited on the loop."""

        async def predict_many(asks: Sequence[Ask]) -> list[Outcome]:
            user_ids, callers, explain = _split(asks)
            return await service.predict_many(
                user_ids, route=route, callers=callers, explain=explain
            )

        return cls(predict_many, batching, observer)

    @classmethod
    def in_threads(
        cls,
        service: ScoringService,
        executor: Executor,
        *,
        route: str,
        batching: Batching = DEFAULT_BATCHING,
        observer: BatchObserver | None = None,
    ) -> BatchedPredictions:
        """Batches of the blocking use case, each run in a thread of ``executor`` under the
        batch's deadline."""

        async def predict_many(asks: Sequence[Ask]) -> list[Outcome]:
            loop = asyncio.get_running_loop()
            user_ids, callers, explain = _split(asks)
            call = functools.partial(
                service.predict_many, user_ids, route=route, callers=callers, explain=explain
            )
            deadline = deadlines.current()
            bound = call if deadline is None else deadlines.bound(deadline, call)
            return await loop.run_in_executor(executor, bound)

        return cls(predict_many, batching, observer)

    async def predict(
        self,
        user_id: str,
        caller: str | None = None,
        watch: Watch | None = None,
        *,
        explain: bool = False,
    ) -> Prediction:
        """The recorded prediction for ``user_id``, asked by ``caller`` (with its reasons
        when ``explain``); raise its domain error."""
        return await self.batcher.submit((user_id, caller, explain), watch)


def _observed(
    predict_many: BatchFunction[Ask, Prediction], observer: BatchObserver
) -> BatchFunction[Ask, Prediction]:
    """``predict_many``, each batch's outcomes reported to ``observer`` (on the loop); a
    fault of the observer is logged, never given to the batch's callers."""

    async def observed(asks: Sequence[Ask]) -> Sequence[Prediction | BaseException]:
        outcomes = await predict_many(asks)
        try:
            observer.served(outcomes)
        except Exception:
            log.exception("reporting a batch's outcomes failed")
        return outcomes

    return observed


def _split(asks: Sequence[Ask]) -> tuple[list[str], list[str | None], list[bool]]:
    return [a[0] for a in asks], [a[1] for a in asks], [a[2] for a in asks]
