"""Retrying a failed task from the management API.

A native worker stores a FAILURE with the task's message as it was
delivered: the payload's map (see ``taskviews``) has ``"task_message"``, a
msgpack map ``{"exchange", "routing_key", "headers", "body", "priority"}``
(bin in a msgpack payload, base64 text in a json one). This module is that
key's one reader in the broker (``brokerd_client.tasks.serialization.
pack_task_message`` its one writer; a test holds the two together).

A retry, all on the loop, in this order:

1. read the task's stored result (404 none; 409 not FAILURE, or a FAILURE
   stored without its message: Celery workers, a canvas task, a message too
   large to keep);
2. publish the message again (same exchange, routing key, headers without
   the dead-letter history, body and priority; message id = task id; routed
   as a publisher on the broker port would be, ``mandatory`` so a message
   that routes nowhere now is refused, nothing stored);
3. in the same loop step, remove the FAILURE as ResultDelete does. The
   worker's first state of the new run (STARTED, or the final one) arrives
   later over the network, so it is always ordered after the removal: an
   ``AsyncResult`` waiting on the old id is answered by the new run, never
   by the stale failure. (If the removal's commit failed, the new run's
   final state would still replace the FAILURE: a final state replaces
   anything.)

The answer comes once the message is confirmed (durable) and the removal
committed. Two retries of one task at the same time are refused (409) while
the first is in flight; afterwards the FAILURE is gone, so a second retry
finds no failed task.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..tasks.extension import TaskExtension
from ..tasks.results import Result

#: The payload key that holds the task's message.
MESSAGE_KEY = "task_message"
#: Headers not sent again: the broker's dead-letter history (a retried
#: message starts afresh, as a worker's own retry does).
DROPPED_HEADER_PREFIX = "x-death-"


class NotRetriable(Exception):
    """Why a task cannot be retried (HTTP 409 with this text)."""


class UnknownTask(Exception):
    """No stored result for the task (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A failed task's message as its worker received it."""

    exchange: str
    routing_key: str
    headers: dict[str, Any]
    body: bytes
    priority: int

    def props(self, task_id: str) -> dict[str, Any]:
        """The publish properties of the message sent again."""
        headers = {k: v for k, v in self.headers.items() if not k.startswith(DROPPED_HEADER_PREFIX)}
        return {
            "headers": headers,
            "priority": self.priority,
            "message_id": task_id,
            "mandatory": True,
        }


def payload_map(payload: bytes) -> dict[str, Any] | None:
    """The map inside a result payload (no object hooks), or None."""
    tag, data = payload[:1], payload[1:]
    try:
        if tag == b"j":
            obj = json.loads(data)
        elif tag == b"m":
            # (unpackb takes no max_buffer_size: its input is all there is,
            # and it bounds every length by the input's size.)
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            return None
    except (ValueError, msgpack.UnpackException, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def stored_message(payload: bytes) -> StoredMessage:
    """The message a FAILURE's payload carries; :class:`NotRetriable` says why not."""
    return message_in(payload_map(payload))


def message_in(obj: dict[str, Any] | None) -> StoredMessage:
    """:func:`stored_message` of a payload already decoded (``payload_map``)."""
    raw = obj.get(MESSAGE_KEY) if obj is not None else None
    if raw is None:
        raise NotRetriable(
            "its failure was stored without the task's message (only brokerd's native "
            "workers store it, not for a task of a canvas, nor when it would not fit the "
            "broker's frame limit): send the task again from your code"
        )
    try:
        blob = base64.b64decode(raw, validate=True) if isinstance(raw, str) else raw
        if not isinstance(blob, bytes):
            raise ValueError("not bytes")
        msg = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except (ValueError, binascii.Error, msgpack.UnpackException, RecursionError):
        raise NotRetriable("the stored task message cannot be read") from None
    if not isinstance(msg, dict):
        raise NotRetriable("the stored task message cannot be read")
    exchange, key = msg.get("exchange"), msg.get("routing_key")
    headers, body, priority = msg.get("headers"), msg.get("body"), msg.get("priority", 0)
    if (
        not isinstance(exchange, str)
        or not isinstance(key, str)
        or not isinstance(headers, dict)
        or not isinstance(body, bytes)
        or isinstance(priority, bool)
        or not isinstance(priority, int)
    ):
        raise NotRetriable("the stored task message is malformed")
    return StoredMessage(exchange, key, headers, body, priority)


async def read_result(tasks: TaskExtension, task_id: str) -> Result | None:
    """The stored result of ``task_id`` (internal id), or None."""
    future: asyncio.Future[Result | BaseException | None] = (
        asyncio.get_running_loop().create_future()
    )

    def done(outcome: Result | BaseException | None) -> None:
        if not future.done():
            future.set_result(outcome)

    tasks.results.read(task_id, done)
    outcome = await future
    if isinstance(outcome, BaseException):
        raise RuntimeError(f"reading the result failed: {outcome}")
    return outcome


class Retries:
    """Retries of failed tasks; one per task at a time."""

    def __init__(self, tasks: TaskExtension) -> None:
        self.tasks = tasks
        self._busy: set[str] = set()

    async def retry(
        self,
        task_id: str,
        send: Callable[[StoredMessage], asyncio.Future[None]],
        timeout: float,  # noqa: ASYNC109 - the publish's bound, as an HTTP publish's
    ) -> StoredMessage:
        """Retry failed task ``task_id`` (internal id): see the module docstring;
        the message sent.

        ``send`` checks and starts the publish of the message (raising, with
        nothing stored, if it may not or cannot be published) and returns
        its confirm. Raises :class:`UnknownTask`, :class:`NotRetriable`,
        ``TimeoutError`` (not confirmed in time: it may or may not be
        stored) or ``RuntimeError`` (the store failed).
        """
        if task_id in self._busy:
            raise NotRetriable("a retry of this task is already in progress")
        self._busy.add(task_id)
        try:
            result = await read_result(self.tasks, task_id)
            if result is None:
                raise UnknownTask(
                    "no stored result for this task (unknown, expired, forgotten, or "
                    "retried and not finished yet)"
                )
            if result.state != "FAILURE":
                raise NotRetriable(f"only a failed task can be retried; this one is {result.state}")
            message = stored_message(result.payload)
            confirmed = send(message)
            removed: asyncio.Future[int | BaseException] = (
                asyncio.get_running_loop().create_future()
            )

            def done(outcome: int | BaseException) -> None:
                if not removed.done():
                    removed.set_result(outcome)

            # Same loop step as the publish: ahead of any state of the new run.
            self.tasks.results.remove([task_id], done)
            await asyncio.wait_for(confirmed, timeout)
            outcome = await removed
            if isinstance(outcome, BaseException):
                raise RuntimeError(
                    f"the task was sent again but its failure was not removed: {outcome}"
                )
            return message
        finally:
            self._busy.discard(task_id)
