"""Custom states while a task runs: ``self.update_state(state="PROGRESS",
meta={...})``, read back as ``AsyncResult(id).state``/``.info`` and followed
with ``result.get(on_message=...)`` or ``result.iter_progress()``.

How a custom state is stored (the same convention as the Celery transport,
:mod:`brokerd_client.celery.payload`, so either side reads the other's): the
broker knows six states (SPEC §14.1); any other is stored as ``STARTED`` with
the real state in the payload map's ``"state"`` key and ``meta`` in its
``"result"`` key. A custom state is therefore never final: ``.get()`` keeps
waiting until SUCCESS, FAILURE or REVOKED, and a later STARTED/custom state
never replaces a final one on the broker.

How updates reach a waiter — no new frame: the final state is pushed by
``ResultWait`` as before, and progress is read with ``ResultGet`` between
``ResultWait`` slices of ``interval`` seconds (0.5 by default). A waiter thus
sees the final state the moment it is stored and each progress state within
``interval`` of its being stored; states replaced faster than that are
skipped (the latest one is delivered). A push per update (a ``ResultWatch``
frame) was judged not worth a new frame for progress bars; see
docs/tasks.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import states
from .outcome import ExcInfo
from .serialization import _TAGS, dumps, encode_error, encode_result

if TYPE_CHECKING:
    from .result import AsyncResult
    from .task import Task

__all__ = ["DEFAULT_INTERVAL", "TaskProgress", "encode_state", "iter_updates"]

log = logging.getLogger("brokerd_client.tasks")

#: Seconds between two reads of a running task's state while following it.
DEFAULT_INTERVAL = 0.5

#: States the broker stores as they are.
BROKER_STATES = frozenset(
    {
        states.PENDING,
        states.STARTED,
        states.RETRY,
        states.SUCCESS,
        states.FAILURE,
        states.REVOKED,
    }
)


def encode_state(state: str, meta: Any, serializer: str) -> tuple[str, bytes]:
    """``(broker state, payload)`` for ``update_state(state, meta)``."""
    if not isinstance(state, str) or not state:
        raise ValueError(f"state must be a non-empty str, got {state!r}")
    if state in states.EXCEPTION_STATES and isinstance(meta, BaseException):
        info = ExcInfo.from_exception(meta)
        return state, encode_error(
            info.exc_type, info.exc_module, info.exc_message, info.traceback, serializer
        )
    if state in BROKER_STATES:
        return state, encode_result(meta, serializer)
    return states.STARTED, _TAGS[serializer] + dumps({"state": state, "result": meta}, serializer)


class TaskProgress:
    """``update_state`` of :class:`~brokerd_client.tasks.Task`."""

    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Any = None,
        **kwargs: Any,
    ) -> None:
        """Store ``state`` (any name; ``"PROGRESS"`` is customary) with ``meta``
        for the running task (or ``task_id``), for waiters and
        ``AsyncResult(id).state``/``.info`` to see while it runs.

        From a worker's thread, child process or a plain script it blocks
        until the broker has committed it. Called inside an ``async def`` task
        on the worker's loop it sends on the worker's connection without
        waiting (that connection also carries the final result, after it);
        ``await self.aupdate_state(...)`` waits for the commit. In eager mode
        (no broker) it does nothing. ``kwargs`` are accepted for Celery
        compatibility and ignored.
        """
        del kwargs
        task: Task[Any, Any] = self  # type: ignore[assignment]
        target = self._progress_target(task_id, state, meta)
        if target is None:
            return
        tid, wire_state, payload, ttl = target
        clients = task.app.clients
        hook = clients.worker_on_this_loop()
        if hook is not None:
            fut = hook.client.result_set(tid, wire_state, payload, ttl)
            fut.add_done_callback(_log_failure(tid))
            return
        clients.producer.result_set(tid, wire_state, payload, ttl)

    async def aupdate_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Any = None,
        **kwargs: Any,
    ) -> None:
        """:meth:`update_state` for async code: awaits the broker's commit."""
        del kwargs
        task: Task[Any, Any] = self  # type: ignore[assignment]
        target = self._progress_target(task_id, state, meta)
        if target is None:
            return
        tid, wire_state, payload, ttl = target
        client = await task.app.clients.async_client()
        await client.result_set(tid, wire_state, payload, ttl)

    def _progress_target(
        self, task_id: str | None, state: str | None, meta: Any = None
    ) -> tuple[str, str, bytes, float] | None:
        task: Task[Any, Any] = self  # type: ignore[assignment]
        req = task.request
        if task_id is None:
            if req.is_eager:
                return None
            task_id = req.id
        if not task_id:
            raise RuntimeError(f"{task.name}.update_state() outside a running task needs task_id=")
        conf = task.app.conf
        wire_state, payload = encode_state(state or states.PENDING, meta, conf.result_serializer)
        return task_id, wire_state, payload, float(conf.result_expires)


def _log_failure(task_id: str) -> Callable[[Any], None]:
    def done(fut: Any) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("update_state of task %s not stored: %s", task_id, fut.exception())

    return done


# --- following a result -----------------------------------------------------------


def _message(result: AsyncResult, state: str, data: dict[str, Any]) -> dict[str, Any]:
    """Celery's ``on_message`` argument: the task's meta as a map."""
    from .result import _value_of

    return {"task_id": result.id, "status": state, "result": _value_of(state, data)}


def iter_updates(
    result: AsyncResult, timeout: float | None, interval: float | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(state, data)`` each time the task's state or meta changes, the
    final state last (then stop); ``TimeoutError`` after ``timeout``."""
    step = DEFAULT_INTERVAL if interval is None else max(0.01, float(interval))
    client = result.app.clients.producer
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[str, bytes] | None = None
    record = client.result_get([result.id]).get(result.id)
    while True:
        if record is not None and record != last:
            last = record
            state, data = result._decode(record)
            yield state, data
            if result._final is not None:
                return
        left = step if deadline is None else min(step, deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError(f"task {result.id} not ready after {timeout} s")
        record = client.result_wait(result.id, max(0.001, left))
        if record is None:
            record = client.result_get([result.id]).get(result.id)


async def aiter_updates(
    result: AsyncResult,
    timeout: float | None,  # noqa: ASYNC109 - Celery-style API
    interval: float | None,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """:func:`iter_updates` for async code."""
    step = DEFAULT_INTERVAL if interval is None else max(0.01, float(interval))
    client = await result.app.clients.async_client()
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[str, bytes] | None = None
    record = (await client.result_get([result.id])).get(result.id)
    while True:
        if record is not None and record != last:
            last = record
            state, data = result._decode(record)
            yield state, data
            if result._final is not None:
                return
        left = step if deadline is None else min(step, deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError(f"task {result.id} not ready after {timeout} s")
        record = await client.result_wait(result.id, max(0.001, left))
        if record is None:
            record = (await client.result_get([result.id])).get(result.id)


def get_with_messages(
    result: AsyncResult,
    timeout: float | None,
    propagate: bool,
    interval: float | None,
    on_message: Callable[[dict[str, Any]], Any],
) -> Any:
    """``result.get(on_message=...)``: call ``on_message`` with each state's
    meta (the final one included), then return like ``get``."""
    from .result import _final_value

    if result._final is None:
        for state, data in iter_updates(result, timeout, interval):
            on_message(_message(result, state, data))
    else:
        on_message(_message(result, *result._final))
    assert result._final is not None
    return _final_value(result.id, *result._final, propagate)
