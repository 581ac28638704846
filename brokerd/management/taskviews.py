"""The task layer as the management API shows it: schedules, recent results
(state, error, traceback) and revoking.

Result payloads are the SDK's (``brokerd_client.tasks.serialization``): a tag
byte, ``j`` json or ``m`` msgpack, then a map ``{"result": ...}`` or
``{"exc_type", "exc_module", "exc_message", "traceback"}``. They are decoded
here only to be shown: msgpack without object hooks and with its size limits,
json as data; anything else is shown as its size. Results are at most
``CACHE_MAX_PAYLOAD`` bytes (the only ones held in memory).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack

import brokerd_protocol as bp

from ..errors import BrokerError
from ..tasks.extension import TaskExtension

#: Characters of a result value shown (its repr, as JSON text).
MAX_SHOWN = 2000


def decode_payload(payload: bytes) -> dict[str, Any]:
    if not payload:
        return {}
    tag, data = payload[:1], payload[1:]
    try:
        if tag == b"j":
            obj = json.loads(data)
        elif tag == b"m":
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_buffer_size=len(data))
        else:
            return {"payload_bytes": len(payload)}
    except (ValueError, msgpack.UnpackException, RecursionError):
        return {"payload_bytes": len(payload)}
    if not isinstance(obj, dict):
        return {"payload_bytes": len(payload)}
    out: dict[str, Any] = {}
    for key in ("exc_type", "exc_module", "exc_message", "traceback"):
        if isinstance(obj.get(key), str):
            out[key] = obj[key]
    if "result" in obj:
        text = json.dumps(obj["result"], default=repr)
        out["result"] = text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"
    return out


def recent(tasks: TaskExtension, limit: int) -> list[dict[str, Any]]:
    return [
        {"task_id": task_id, "state": state, **decode_payload(payload)}
        for task_id, state, payload in tasks.results.recent(limit)
    ]


def schedules(tasks: TaskExtension) -> list[dict[str, Any]]:
    entries = tasks.schedules.entries
    return [entries[name].listing() for name in sorted(entries)]


class _Nobody:
    """The revoke's requester: not a connection, so it is sent no reply
    (the caller waits for the commit itself)."""

    def reply_ok(self, req: int, value: Any = None) -> None:  # pragma: no cover
        pass

    def reply_error(self, req: int, exc: BrokerError) -> None:  # pragma: no cover
        pass

    def send(self, frame: bp.Frame) -> None:  # pragma: no cover
        pass


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
