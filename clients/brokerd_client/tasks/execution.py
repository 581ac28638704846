"""Run one task invocation and reduce whatever happens to an :class:`Outcome`.

This is the only place that calls task functions on behalf of a worker, in
every pool (threads, the event loop, child processes) and in eager mode, so
``Retry``, ``autoretry_for`` and ``max_retries`` behave identically wherever
a task runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import hooks, states
from .exceptions import Retry
from .interrupt import Interruptible
from .outcome import ExcInfo, Outcome
from .request import Request, current_request
from .signals import watch

if TYPE_CHECKING:
    from .task import Task

__all__ = ["execute", "execute_async"]


def _retry_outcome(signal: Retry) -> Outcome:
    cause = signal.exc if signal.exc is not None else signal
    return Outcome(
        states.RETRY,
        exc=ExcInfo.from_exception(cause),
        countdown=signal.countdown,
        args=signal.new_args,
        kwargs=signal.new_kwargs,
        exception=signal,
    )


def _on_error(task: Task[Any, Any], exc: BaseException) -> Outcome:
    """A task raised ``exc``: retry it if ``autoretry_for`` says so, else fail."""
    if (
        task.autoretry_for
        and isinstance(exc, task.autoretry_for)
        and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
    ):
        try:
            task.retry(exc=exc)
        except Retry as signal:
            return _retry_outcome(signal)
        except BaseException as final:
            return Outcome.failure(final)
    return Outcome.failure(exc)


def execute(
    task: Task[Any, Any],
    req: Request,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    with_hooks: bool = True,
) -> Outcome:
    """Run a plain function task in this thread, with its hooks and the
    task-run signals (:mod:`.hooks`) when it has any: one test when not."""
    if with_hooks and (task._hooked or watch.task_run):
        return _execute_hooked(task, req, args, kwargs)
    token = current_request.set(req)
    try:
        try:
            value = task.fn(task, *args, **kwargs) if task.bind else task.fn(*args, **kwargs)
        except Retry as signal:
            return _retry_outcome(signal)
        except (Exception, SystemExit) as exc:
            return _on_error(task, exc)
        return Outcome(states.SUCCESS, value)
    finally:
        current_request.reset(token)


def _execute_hooked(
    task: Task[Any, Any], req: Request, args: list[Any], kwargs: dict[str, Any]
) -> Outcome:
    token = current_request.set(req)  # the hooks see self.request too
    try:
        hooks.before(task, req, args, kwargs)
        outcome = execute(task, req, args, kwargs, with_hooks=False)
        hooks.after(task, req, args, kwargs, outcome)
        return outcome
    finally:
        current_request.reset(token)


async def execute_async(
    task: Task[Any, Any],
    req: Request,
    args: list[Any],
    kwargs: dict[str, Any],
    interruptible: Interruptible | None = None,
    *,
    with_hooks: bool = True,
) -> Outcome:
    """Run an ``async def`` task on the running loop.

    With ``interruptible`` the engine can raise an exception (the soft time
    limit) inside the task at its current ``await``. Cancellation (hard time
    limit, revoke with terminate) propagates as ``CancelledError``: the
    caller knows why it cancelled and records that. Hooks as for
    :func:`execute` (an ``async def`` hook is awaited).
    """
    if with_hooks and (task._hooked or watch.task_run):
        return await _execute_async_hooked(task, req, args, kwargs, interruptible)
    token = current_request.set(req)
    try:
        coro: Coroutine[Any, Any, Any] = (
            task.fn(task, *args, **kwargs) if task.bind else task.fn(*args, **kwargs)
        )
        try:
            if interruptible is not None:
                value = await interruptible.run(coro)
            else:
                value = await coro
        except Retry as signal:
            return _retry_outcome(signal)
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise  # cancelled by the worker
            # Raised by the task itself (e.g. it awaited a cancelled future):
            # a failure, not a cancellation of the job.
            return Outcome.failure(exc)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            # KeyboardInterrupt from a task must not stop the worker's loop.
            return _on_error(task, exc)
        return Outcome(states.SUCCESS, value)
    finally:
        current_request.reset(token)


async def _execute_async_hooked(
    task: Task[Any, Any],
    req: Request,
    args: list[Any],
    kwargs: dict[str, Any],
    interruptible: Interruptible | None,
) -> Outcome:
    token = current_request.set(req)
    try:
        await hooks.abefore(task, req, args, kwargs)
        outcome = await execute_async(task, req, args, kwargs, interruptible, with_hooks=False)
        await hooks.aafter(task, req, args, kwargs, outcome)
        return outcome
    finally:
        current_request.reset(token)
