"""The deadline of the work in progress, for every adapter below it to honour.

The HTTP routes give each batch a deadline (its oldest request's arrival plus the request
timeout) and run the batch under :func:`until`; an adapter that waits (a database call, the
model) takes :func:`current` as the latest moment it may still answer. A context variable,
so it follows the work through ``await`` s and, with :func:`bound`, into a worker thread; the
core's use case and ports stay unaware of it. Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

__all__ = ["bound", "current", "until"]

_DEADLINE: ContextVar[float | None] = ContextVar("fraudscore_deadline", default=None)
P = ParamSpec("P")
R = TypeVar("R")


def current() -> float | None:
    """The deadline of the work in progress (``time.monotonic()`` seconds), or None."""
    return _DEADLINE.get()


@contextmanager
def until(deadline: float) -> Iterator[None]:
    """Run the body under ``deadline`` (or an earlier one already in force)."""
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def bound(deadline: float, function: Callable[P, R]) -> Callable[P, R]:
    """``function`` run under ``deadline``: for work handed to another thread, where the
    caller's context does not follow."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with until(deadline):
            return function(*args, **kwargs)

    return call
