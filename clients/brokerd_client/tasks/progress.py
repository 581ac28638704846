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

How updates reach a waiter: pushed by the broker with ``ResultWatch``
(frame 54, SPEC §14.16). A ``ResultWait`` is answered by final states only,
so following progress needs a request that any new result answers; the
watch names the result the client last saw (a 16-byte digest) so an update
stored between two watches is answered at once rather than lost. A state
replaced before the waiter's next watch reached the broker is skipped (the
newer one is delivered): a waiter always converges on the latest state and
always gets the final one.
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

__all__ = ["TaskProgress", "aiter_updates", "encode_state", "get_with_messages", "iter_updates"]

log = logging.getLogger("brokerd_client.tasks")

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


#: Longest single ResultWatch (the broker's bound); longer waits chain them.
_MAX_WATCH = 3600.0


def _slice(deadline: float | None, timeout: float | None, task_id: str) -> float:
    if deadline is None:
        return _MAX_WATCH
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"task {task_id} not ready after {timeout} s")
    return max(0.001, min(left, _MAX_WATCH))


def iter_updates(
    result: AsyncResult, timeout: float | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(state, data)`` each time the task's stored result changes, the
    final state last (then stop); ``TimeoutError`` after ``timeout``.

    Each step is one ``ResultWatch`` naming the result last seen: the broker
    answers as soon as another one is stored (at once if that already
    happened), so nothing polls and no state that lasts is missed.
    """
    client = result.app.clients.producer
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[str, bytes] | None = None
    while True:
        record = client.result_watch(result.id, _slice(deadline, timeout, result.id), last)
        if record is None or record == last:
            continue
        last = record
        state, data = result._decode(record)
        yield state, data
        if result._final is not None:
            return


async def aiter_updates(
    result: AsyncResult,
    timeout: float | None,  # noqa: ASYNC109 - Celery-style API
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """:func:`iter_updates` for async code."""
    client = await result.app.clients.async_client()
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[str, bytes] | None = None
    while True:
        record = await client.result_watch(result.id, _slice(deadline, timeout, result.id), last)
        if record is None or record == last:
            continue
        last = record
        state, data = result._decode(record)
        yield state, data
        if result._final is not None:
            return


def get_with_messages(
    result: AsyncResult,
    timeout: float | None,
    propagate: bool,
    on_message: Callable[[dict[str, Any]], Any],
) -> Any:
    """``result.get(on_message=...)``: call ``on_message`` with each state's
    meta (the final one included), then return like ``get``."""
    from .result import _final_value

    if result._final is None:
        for state, data in iter_updates(result, timeout):
            on_message(_message(result, state, data))
    else:
        on_message(_message(result, *result._final))
    assert result._final is not None
    return _final_value(result.id, *result._final, propagate)
