"""Eager mode: run a task in the calling process as a worker would.

Used by ``task_always_eager`` (tests, local scripts) and ``Task.apply``.
Retries happen at once, without their countdown, like Celery's eager mode;
the arguments still go through the serializer, so a call that would fail to
encode for a real worker fails here too.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from . import states
from .execution import execute, execute_async
from .outcome import Outcome
from .request import Request
from .result import EagerResult
from .serialization import dumps, loads

if TYPE_CHECKING:
    from .task import Task

__all__ = ["apply_eagerly", "apply_eagerly_async"]


def _roundtrip(
    task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    ser = task.serializer or task.app.conf.task_serializer
    data = loads(dumps({"args": args, "kwargs": kwargs}, ser), ser)
    return list(data["args"]), dict(data["kwargs"])


def _request(
    task: Task[Any, Any], task_id: str, args: list[Any], kwargs: dict[str, Any], retries: int
) -> Request:
    return Request(
        id=task_id,
        task=task.name,
        args=args,
        kwargs=kwargs,
        retries=retries,
        is_eager=True,
        called_directly=False,
        time_limit=task.effective_time_limits,
    )


def _result(task: Task[Any, Any], task_id: str, outcome: Outcome) -> EagerResult:
    if outcome.state == states.SUCCESS:
        return EagerResult(task_id, states.SUCCESS, outcome.value)
    exc = outcome.exception
    assert exc is not None and outcome.exc is not None
    if task.app.conf.task_eager_propagates:
        raise exc
    return EagerResult(task_id, outcome.state, None, exc, outcome.exc.traceback)


def apply_eagerly(
    task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], task_id: str | None = None
) -> EagerResult:
    """Run ``task`` here, retrying at once while it asks to; return its result."""
    task_id = task_id or str(uuid.uuid4())
    args, kwargs = _roundtrip(task, args, kwargs)
    retries = 0
    while True:
        req = _request(task, task_id, args, kwargs, retries)
        if task.is_async:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                outcome = asyncio.run(execute_async(task, req, args, kwargs))
            else:
                raise RuntimeError(
                    f"{task.name} is an async task in eager mode called from a running event "
                    "loop: use 'await task.adelay(...)' there"
                )
        else:
            outcome = execute(task, req, args, kwargs)
        if outcome.state != states.RETRY:
            return _result(task, task_id, outcome)
        retries += 1
        args = outcome.args if outcome.args is not None else args
        kwargs = outcome.kwargs if outcome.kwargs is not None else kwargs


async def apply_eagerly_async(
    task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], task_id: str | None = None
) -> EagerResult:
    """``apply_eagerly`` for async callers: async tasks are awaited on this loop."""
    if not task.is_async:
        return apply_eagerly(task, args, kwargs, task_id)
    task_id = task_id or str(uuid.uuid4())
    args, kwargs = _roundtrip(task, args, kwargs)
    retries = 0
    while True:
        req = _request(task, task_id, args, kwargs, retries)
        outcome = await execute_async(task, req, args, kwargs)
        if outcome.state != states.RETRY:
            return _result(task, task_id, outcome)
        retries += 1
        args = outcome.args if outcome.args is not None else args
        kwargs = outcome.kwargs if outcome.kwargs is not None else kwargs
