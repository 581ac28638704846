"""Raise an exception inside a running coroutine at its current ``await``.

A soft time limit must raise ``SoftTimeLimitExceeded`` *inside* the task so
it can clean up, but asyncio can only cancel a task (``CancelledError``,
which task code should not swallow). :class:`Interruptible` drives the task's
coroutine itself: to interrupt, it cancels the asyncio task, which wakes the
coroutine at whatever it awaits, and at that point throws the chosen
exception into the coroutine *instead of* the ``CancelledError`` (and
withdraws the cancellation request with ``Task.uncancel``). Without a pending
interruption a cancellation passes through unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["Interruptible"]


class Interruptible:
    """One coroutine run that others may :meth:`throw` into."""

    __slots__ = ("_pending", "_task")

    def __init__(self) -> None:
        self._pending: BaseException | None = None
        self._task: asyncio.Task[Any] | None = None

    def run(self, coro: Coroutine[Any, Any, Any]) -> _Driver:
        """``await interruptible.run(coro)`` runs ``coro`` in the current task."""
        return _Driver(self, coro)

    def throw(self, exc: BaseException) -> bool:
        """Raise ``exc`` inside the coroutine at its current await.

        Returns False if it is not running (finished or not started yet).
        """
        task = self._task
        if task is None or task.done():
            return False
        self._pending = exc
        task.cancel()
        return True


class _Driver:
    __slots__ = ("_coro", "_owner")

    def __init__(self, owner: Interruptible, coro: Coroutine[Any, Any, Any]) -> None:
        self._owner = owner
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, Any]:
        owner, coro = self._owner, self._coro
        owner._task = asyncio.current_task()
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    if error is not None:
                        exc, error = error, None
                        yielded = coro.throw(exc)
                    else:
                        yielded = coro.send(value)
                except StopIteration as stop:
                    return stop.value
                value = None
                try:
                    value = yield yielded
                except asyncio.CancelledError as cancelled:
                    pending = owner._pending
                    if pending is not None:
                        owner._pending = None
                        task = asyncio.current_task()
                        if task is not None:
                            task.uncancel()
                        error = pending
                    else:
                        error = cancelled
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    error = exc
        finally:
            owner._task = None
            coro.close()
