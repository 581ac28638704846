"""Inspect and control: asking every live worker, through the broker.

The shapes are Celery's (``app.control.inspect().active()``,
``app.control.ping()``, ``app.control.shutdown()``), built on brokerd's own
queues rather than a second mechanism:

* every worker binds a transient, auto-deleted queue of its own to the
  fanout exchange ``brokerd.control`` (its "mailbox"); it goes with the
  worker's connection, so a dead worker is never asked;
* a request is one JSON message on that exchange: the command, its
  arguments, the hostnames it is for (None: every worker) and the name of a
  transient reply queue the caller declared and consumes;
* each worker that the request is for answers into the reply queue; the
  caller collects replies until ``timeout`` (or until every named worker
  answered) and returns ``{hostname: reply}``, or None when no one answered,
  as Celery does.

Nothing is stored: control traffic goes to transient queues and costs no
fsync. The body is JSON with a size cap, never pickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import BrokerError

if TYPE_CHECKING:
    from ..client import AsyncClient

__all__ = [
    "CONTROL_COMMANDS",
    "CONTROL_EXCHANGE",
    "EVENTS_EXCHANGE",
    "INSPECT_COMMANDS",
    "broadcast",
    "decode",
    "encode",
]

#: Fanout exchange every worker's mailbox is bound to.
CONTROL_EXCHANGE = "brokerd.control"
#: Topic exchange task and worker events go to (``-E``).
EVENTS_EXCHANGE = "brokerd.events"
#: Largest control request or reply read (bytes); bigger ones are dropped.
MAX_CONTROL_BODY = 4 * 1024 * 1024

INSPECT_COMMANDS = frozenset(
    {"ping", "active", "reserved", "scheduled", "stats", "registered", "revoked"}
)
CONTROL_COMMANDS = frozenset(
    {"shutdown", "pool_grow", "pool_shrink", "add_consumer", "cancel_consumer", "rate_limit"}
)


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, default=repr, separators=(",", ":")).encode()


def decode(body: bytes) -> dict[str, Any] | None:
    """A control message's JSON object, or None for anything else."""
    if len(body) > MAX_CONTROL_BODY:
        return None
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _destination(destination: str | Iterable[str] | None) -> list[str] | None:
    if destination is None:
        return None
    names = [destination] if isinstance(destination, str) else list(destination)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"destination must be worker hostnames, got {destination!r}")
    return names


async def broadcast(
    client: AsyncClient,
    command: str,
    arguments: dict[str, Any] | None = None,
    *,
    destination: str | Iterable[str] | None = None,
    reply: bool = True,
    timeout: float = 1.0,  # noqa: ASYNC109 - how long replies are collected, Celery's name
    limit: int | None = None,
) -> dict[str, Any] | None:
    """Send ``command`` to the workers; ``{hostname: reply}`` of those that
    answered within ``timeout`` (None if none did, or if ``reply`` is False)."""
    if command not in INSPECT_COMMANDS | CONTROL_COMMANDS:
        known = ", ".join(sorted(INSPECT_COMMANDS | CONTROL_COMMANDS))
        raise ValueError(f"unknown control command {command!r}; known: {known}")
    names = _destination(destination)
    if limit is None and names is not None:
        limit = len(names)
    await client.declare_exchange(CONTROL_EXCHANGE, "fanout", durable=False)
    reply_to = None
    consumer = None
    if reply:
        reply_to = f"brokerd.reply.{uuid.uuid4().hex}"
        await client.declare_queue(reply_to, durable=False, auto_delete=True, expires=60.0)
        consumer = await client.consume(reply_to, prefetch=1000)
    ticket = uuid.uuid4().hex
    request = {
        "command": command,
        "arguments": arguments or {},
        "destination": names,
        "reply_to": reply_to,
        "ticket": ticket,
    }
    try:
        await client.publish(CONTROL_EXCHANGE, "", encode(request))
        if consumer is None:
            return None
        replies: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        iterator = consumer.__aiter__()
        while limit is None or len(replies) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                delivery = await asyncio.wait_for(iterator.__anext__(), left)
            except (TimeoutError, StopAsyncIteration):
                break
            await delivery.ack(wait=False)
            answer = decode(delivery.body)
            if answer is None or answer.get("ticket") != ticket:
                continue
            hostname = answer.get("hostname")
            if isinstance(hostname, str):
                replies[hostname] = answer.get("reply")
        return replies or None
    finally:
        if consumer is not None:
            with contextlib.suppress(BrokerError):
                await consumer.cancel()
            with contextlib.suppress(BrokerError):
                await client.delete_queue(reply_to or "")
