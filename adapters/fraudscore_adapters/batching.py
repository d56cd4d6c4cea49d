"""Micro-batching for the async path: many concurrent single calls, one batched call.

Callers ``await batcher.submit(item)``; items that arrive while a batch is in flight wait for
the next one, so batches grow with load and cost nothing when it is quiet (a lone request is
a batch of one, sent at once). Each caller gets its own result, or its own exception; a fault
of the whole batch reaches every caller in it. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["BatchFunction", "MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")

BatchFunction = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException"]]]
"""Takes a batch, returns one result or exception per item, in order."""


class MicroBatcher(Generic[T, R]):
    """Collect concurrent :meth:`submit` calls into batches of at most ``max_batch`` items.

    At most ``concurrency`` batches are in flight at once (e.g. the connections a pool may
    lend); the rest queue up and are taken together when a slot frees.
    """

    def __init__(
        self, function: BatchFunction[T, R], *, max_batch: int = 64, concurrency: int = 1
    ) -> None:
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be at least 1")
        self._function = function
        self._max_batch = max_batch
        self._slots = concurrency
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """The result for ``item`` once its batch has run (or the exception for it)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._pending and len(self._running) < self._slots:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._dispatch()

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._function([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} got {len(results)} results")
        except BaseException as exc:  # every caller of the batch gets the batch's fault
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away (cancelled)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
