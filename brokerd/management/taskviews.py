"""The task layer as the management API shows it: schedules, recent results
(state, error, traceback) and revoking.

Result payloads are the SDK's (``brokerd_client.tasks.serialization``): a tag
byte, ``j`` json or ``m`` msgpack, then a map ``{"result": ...}`` or
``{"exc_type", "exc_module", "exc_message", "traceback"}``. They are decoded
here only to be shown: msgpack without object hooks and with its size limits,
json as data; anything else is shown as its size. Results are at most
``CACHE_MAX_PAYLOAD`` bytes (the only ones held in memory). A FAILURE shows
``retriable``: whether its worker stored the task's message with it (see
``retry``); one too large to decode here shows neither.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

import brokerd_protocol as bp

from ..errors import BrokerError
from ..tasks.extension import TaskExtension
from .retry import NotRetriable, message_in, payload_map

#: Results looked at per listing, at most (the cache holds up to 10,000).
MAX_SCANNED = 10_000
#: Characters of a result value shown (its repr, as JSON text).
MAX_SHOWN = 2000


#: Larger payloads are not decoded for display (their size is shown).
MAX_DECODED = 64 * 1024


def decode_payload(payload: bytes) -> dict[str, Any]:
    if not payload:
        return {}
    if len(payload) > MAX_DECODED:
        return {"payload_bytes": len(payload)}
    obj = payload_map(payload)
    if obj is None:
        return {"payload_bytes": len(payload)}
    out: dict[str, Any] = {}
    for key in ("exc_type", "exc_module", "exc_message", "traceback"):
        if isinstance(obj.get(key), str):
            out[key] = obj[key]
    if "result" in obj:
        text = json.dumps(obj["result"], default=repr)
        out["result"] = text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"
    if "exc_type" in out:
        # The message a retry would send; its task name and routing key name
        # the row when the workers' events did not show the task.
        try:
            message = message_in(obj)
        except NotRetriable:
            out["retriable"] = False
        else:
            out["retriable"] = True
            name = message.headers.get("task")
            if isinstance(name, str):
                out["name"] = name
            out["routing_key"] = message.routing_key
    return out


def recent(
    tasks: TaskExtension, limit: int, keep: Callable[[str], bool] = lambda _: True
) -> list[dict[str, Any]]:
    """Up to ``limit`` recent final results whose (internal) task id ``keep``
    accepts, newest first; only those are decoded."""
    out: list[dict[str, Any]] = []
    for task_id, state, payload in tasks.results.recent(MAX_SCANNED):
        if keep(task_id):
            row = {"task_id": task_id, "state": state, **decode_payload(payload)}
            if state != "FAILURE":
                row.pop("retriable", None)
            out.append(row)
            if len(out) >= limit:
                break
    return out


def schedules(tasks: TaskExtension) -> list[dict[str, Any]]:
    """Every schedule; a paused one (its next run infinite) has ``paused``
    and no ``next_run`` (JSON has no infinity)."""
    entries = tasks.schedules.entries
    out = []
    for name in sorted(entries):
        row = entries[name].listing()
        paused = math.isinf(row["next_run"])
        row["paused"] = paused
        if paused:
            row["next_run"] = None
        out.append(row)
    return out


class _Nobody:
    """The revoke's requester: not a connection, so it is sent no reply
    (the caller waits for the commit itself)."""

    def reply_ok(self, req: int, value: Any = None) -> None:  # pragma: no cover
        pass

    def reply_error(self, req: int, exc: BrokerError) -> None:  # pragma: no cover
        pass

    def send(self, frame: bp.Frame) -> None:  # pragma: no cover
        pass


async def committed(tasks: TaskExtension) -> None:
    """Return once the broker's current batch is durable (or raise)."""
    future: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def done(error: BaseException | None) -> None:
        if not future.done():
            future.set_result(error)

    tasks.broker.batch.after_commit(done)
    error = await future
    if error is not None:
        raise RuntimeError(f"storing the change failed: {error}")


async def revoke(tasks: TaskExtension, task_id: str, terminate: bool, ttl: float) -> None:
    """Revoke as the Revoke frame does (stored, announced to workers), and
    return once the revocation is committed."""
    broker = tasks.broker
    tasks.revocations.revoke(_Nobody(), bp.Revoke(0, [task_id], terminate, ttl))
    future: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def committed(error: BaseException | None) -> None:
        if not future.done():
            future.set_result(error)

    broker.batch.after_commit(committed)
    error = await future
    if error is not None:
        raise RuntimeError(f"storing the revocation failed: {error}")
