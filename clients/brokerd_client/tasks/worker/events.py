"""Task and worker events (``-E``), in Celery's shapes, for monitors.

Off by default, as in Celery: a worker started with ``-E`` (or
``worker_send_task_events = True``) publishes one JSON message per event to
the transient topic exchange ``brokerd.events``, with Celery's routing keys
(``task.succeeded``, ``worker.heartbeat``) and field names (``type``,
``uuid``, ``hostname``, ``timestamp``, ``runtime``, ``result``,
``exception``, ``traceback``, ``freq``, ``active``, ``processed``...), so
what reads Celery events reads these. Worker events also carry ``pool``
(``asyncio``, ``threads`` or ``processes``; ``-P prefork`` is ``processes``)
and ``concurrency`` (the pool's size now, so after ``pool_grow`` or
``pool_shrink``), which Celery's do not; a resize sends a ``worker-heartbeat``
at once. ``brokerd-worker events`` prints them live; the management page
reads them too.

Cost: nothing when off (one boolean per hook). When on, events of one loop
turn go out together in one pipelined ``publish_many`` that nothing waits
for; with no monitor bound, the broker drops them as unroutable without
storing anything (the exchange and any monitor queue are transient). A
worker sends ``worker-heartbeat`` every ``HEARTBEAT`` seconds, so a monitor
can tell a live worker from a dead one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import BrokerError
from ...message import Message
from ..message import CELERY_V2
from ..remote import EVENTS_EXCHANGE
from ..serialization import decode_body, decode_result

if TYPE_CHECKING:
    from ...client import AsyncClient
    from ..outcome import Outcome
    from .job import Job

__all__ = ["HEARTBEAT", "EventSender", "WorkerFields", "decoded_args"]

log = logging.getLogger("brokerd_client.tasks.worker")

#: Seconds between worker-heartbeat events (Celery's default ``freq``).
HEARTBEAT = 2.0
#: Longest repr of args, kwargs or a result in an event (Celery cuts too).
REPR_MAX = 1024
#: Most events buffered while the connection cannot take them; older ones drop.
MAX_BUFFERED = 10_000

try:
    from importlib.metadata import version as _version

    _SW_VER = _version("brokerd")
except Exception:  # pragma: no cover - an uninstalled checkout
    _SW_VER = "0"


#: What a worker event reports of the worker now: ``active``, ``processed``,
#: ``pool`` and ``concurrency`` (the engine's, read at each worker event).
WorkerFields = Callable[[], dict[str, Any]]

#: Fixed for the process: read once.
_SW_SYS = platform.system()


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= REPR_MAX else text[: REPR_MAX - 3] + "..."


def decoded_args(job: Job, max_decompressed: int) -> tuple[Any, Any]:
    """``(args, kwargs)`` of a job, decoding a copy if it has not started
    (``(None, None)`` if the body cannot be decoded)."""
    if job.started:
        return job.args, job.kwargs
    try:
        return decode_body(
            job.delivery.body,
            job.serializer,
            job.compression,
            max_decompressed,
            celery=job.meta.protocol == CELERY_V2,
        )
    except Exception:
        return None, None


class EventSender:
    """One worker's events; ``enabled`` is read by the hooks before anything else."""

    def __init__(self, hostname: str, enabled: bool, max_decompressed: int) -> None:
        self.hostname = hostname
        self.enabled = enabled
        self.max_decompressed = max_decompressed
        self.client: AsyncClient | None = None
        self._buffer: list[Message] = []
        self._flushing = False
        self._pending: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._fields: WorkerFields | None = None
        self.sent = 0

    # --- lifecycle -----------------------------------------------------------------

    async def start(self, client: AsyncClient, fields: WorkerFields) -> None:
        """Declare the exchange, say we are online, and start heartbeats."""
        if not self.enabled:
            return
        self.client = client
        self._fields = fields
        await client.declare_exchange(EVENTS_EXCHANGE, "topic", durable=False)
        self.worker_event("worker-online", fields)
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(fields))

    async def _beat(self, fields: WorkerFields) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            self.worker_event("worker-heartbeat", fields)

    def changed(self) -> None:
        """The pool was resized: a ``worker-heartbeat`` now, so monitors see
        the new ``concurrency`` without waiting for the next beat."""
        if self.enabled and self._fields is not None and self._heartbeat is not None:
            self.worker_event("worker-heartbeat", self._fields)

    async def stop(self, fields: WorkerFields) -> None:
        """Say we are going (worker-offline) and let the last events out."""
        if not self.enabled:
            return
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        self.worker_event("worker-offline", fields)
        self._flush()
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=2.0)

    # --- events ----------------------------------------------------------------------

    def worker_event(self, kind: str, fields: WorkerFields) -> None:
        loadavg = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
        self._send(
            kind,
            {
                "freq": HEARTBEAT,
                "sw_ident": "brokerd-worker",
                "sw_ver": _SW_VER,
                "sw_sys": _SW_SYS,
                "loadavg": loadavg,
                "pid": os.getpid(),
                **fields(),
            },
        )

    def received(self, job: Job) -> None:
        args, kwargs = decoded_args(job, self.max_decompressed)
        meta = job.meta
        self._send(
            "task-received",
            {
                "uuid": job.task_id,
                "name": job.task.name,
                "args": _short(args),
                "kwargs": _short(kwargs),
                "retries": meta.retries,
                "eta": meta.eta,
                "expires": meta.expires,
                "root_id": meta.root_id,
                "parent_id": meta.parent_id,
                "queue": job.delivery.routing_key,
            },
        )

    def started(self, job: Job) -> None:
        pid = getattr(job.child, "pid", None) or os.getpid()
        self._send("task-started", {"uuid": job.task_id, "pid": pid})

    def finished(self, job: Job, outcome: Outcome) -> None:
        state = outcome.state
        runtime = time.perf_counter() - job.started_at if job.started else 0.0
        exc = outcome.exc
        if state == "SUCCESS":
            value = outcome.value
            if value is None and outcome.payload is not None:  # encoded in a child process
                try:
                    value = decode_result(outcome.payload).get("result")
                except Exception:
                    value = None
            result = _short(value)
            self._send(
                "task-succeeded", {"uuid": job.task_id, "result": result, "runtime": runtime}
            )
        elif state == "FAILURE":
            self._send(
                "task-failed",
                {
                    "uuid": job.task_id,
                    "exception": f"{exc.exc_type}({exc.exc_message!r})" if exc else "",
                    "traceback": exc.traceback if exc else "",
                    "runtime": runtime,
                },
            )
        elif state == "RETRY":
            self._send(
                "task-retried",
                {
                    "uuid": job.task_id,
                    "exception": f"{exc.exc_type}({exc.exc_message!r})" if exc else "",
                    "traceback": exc.traceback if exc else "",
                },
            )
        elif state == "REVOKED":
            self.revoked(job.task_id, terminated=job.started, expired=False)

    def revoked(self, task_id: str, *, terminated: bool, expired: bool) -> None:
        self._send(
            "task-revoked",
            {"uuid": task_id, "terminated": terminated, "signum": None, "expired": expired},
        )

    def rejected(self, task_id: str) -> None:
        self._send("task-rejected", {"uuid": task_id, "requeue": False})

    # --- sending -------------------------------------------------------------------

    def _send(self, kind: str, fields: dict[str, Any]) -> None:
        fields["type"] = kind
        fields["hostname"] = self.hostname
        fields["timestamp"] = time.time()
        fields["utcoffset"] = 0
        body = json.dumps(fields, separators=(",", ":"), default=repr).encode()
        buffer = self._buffer
        if len(buffer) >= MAX_BUFFERED:
            del buffer[: MAX_BUFFERED // 2]
        buffer.append(Message(EVENTS_EXCHANGE, kind.replace("-", ".", 1), body))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        client = self.client
        if not self._buffer or client is None or client.is_closed:
            return
        messages, self._buffer = self._buffer, []
        task = asyncio.get_running_loop().create_task(client.publish_many(messages))
        self._pending.add(task)
        task.add_done_callback(self._done)
        self.sent += len(messages)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, BrokerError):
            log.warning("sending events failed: %s", exc)
