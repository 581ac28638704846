"""The broker's in-memory record of one message in one queue.

A message routed to three queues becomes three records (one row each on
disk), so each queue can lease, requeue, expire and dead-letter its copy on
its own. Plain ``__slots__`` class rather than a dataclass: millions of these
pass through the hot path and construction cost matters.
"""

from __future__ import annotations

from typing import Any


class Message:
    __slots__ = (
        "attempts",
        "body",
        "exchange",
        "expires_at",
        "headers",
        "id",
        "message_id",
        "priority",
        "queue",
        "ready_at",
        "routing_key",
        "seq",
        "timestamp",
    )

    def __init__(
        self,
        id: int,
        queue: str,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None,
        message_id: str | None,
        priority: int,
        timestamp: int,
        expires_at: float | None,
        attempts: int = 0,
        seq: int | None = None,
        ready_at: float | None = None,
    ) -> None:
        #: Row id: unique for the life of the data directory.
        self.id = id
        self.queue = queue
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.headers = headers
        self.message_id = message_id
        self.priority = priority
        #: Milliseconds since the epoch when the broker accepted the message.
        self.timestamp = timestamp
        #: Wall-clock second after which the message is dead (TTL), or None.
        self.expires_at = expires_at
        #: Deliveries that ended without an ack (nack, lease expiry, disconnect).
        self.attempts = attempts
        #: Position in the queue's ready order; None while the message is delayed.
        self.seq = seq
        #: Wall-clock second a delayed message becomes ready; None once ready.
        self.ready_at = ready_at

    def __repr__(self) -> str:
        return (
            f"<Message id={self.id} queue={self.queue!r} seq={self.seq} attempts={self.attempts}>"
        )


def death_headers(
    headers: dict[str, Any] | None, reason: str, queue: str, detail: str | None
) -> dict[str, Any]:
    """A dead-lettered message's headers: its deaths counted, the reason, the
    queue it left, and ``detail`` (a rejecting client's reason), which replaces
    an earlier one or, absent, removes it so it never describes a later death."""
    out = dict(headers) if headers else {}
    count = out.get("x-death-count")
    out["x-death-count"] = (count if isinstance(count, int) else 0) + 1
    out["x-death-reason"] = reason
    out["x-death-queue"] = queue
    if detail:
        out["x-death-detail"] = detail
    else:
        out.pop("x-death-detail", None)
    return out
