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

How updates reach a waiter (``AsyncResult.get(on_message=...)``,
``iter_progress``, :mod:`.result`): pushed by the broker with ``ResultWatch``
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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from . import states
from .outcome import ExcInfo
from .serialization import _TAGS, dumps, encode_error, encode_result

if TYPE_CHECKING:
    from .clients import Clients
    from .config import Settings
    from .request import Request

__all__ = ["TaskProgress", "encode_state"]

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


class _App(Protocol):
    @property
    def conf(self) -> Settings: ...

    @property
    def clients(self) -> Clients: ...


class _Task(Protocol):
    """What ``update_state`` uses of its task (a protocol, so that this module
    does not import :mod:`.task`, which builds on it)."""

    name: str

    @property
    def app(self) -> _App: ...

    @property
    def request(self) -> Request: ...


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
        task: _Task = self  # type: ignore[assignment]
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
        task: _Task = self  # type: ignore[assignment]
        target = self._progress_target(task_id, state, meta)
        if target is None:
            return
        tid, wire_state, payload, ttl = target
        client = await task.app.clients.async_client()
        await client.result_set(tid, wire_state, payload, ttl)

    def _progress_target(
        self, task_id: str | None, state: str | None, meta: Any = None
    ) -> tuple[str, str, bytes, float] | None:
        task: _Task = self  # type: ignore[assignment]
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
