"""How a message is laid out as a row of the messages table, both ways.

Every store keeps messages as rows of these columns (``INSERT_COLUMNS``) with
headers as msgpack, so a batch encodes a message once, on the loop thread, and
a store reads rows back into ``Message`` objects with the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from ..message import Message

#: One row of a table, or the parameters of one operation (a message row is in
#: the column order of ``INSERT_COLUMNS``).
Row = tuple[Any, ...]

INSERT_COLUMNS = (
    "id",
    "queue",
    "priority",
    "seq",
    "ready_at",
    "expires_at",
    "attempts",
    "exchange",
    "routing_key",
    "headers",
    "message_id",
    "timestamp",
    "body",
)


def pack_headers(headers: dict[str, Any] | None) -> bytes | None:
    return None if not headers else msgpack.packb(headers, use_bin_type=True)


def unpack_headers(blob: bytes | None) -> dict[str, Any] | None:
    if blob is None:
        return None
    value = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    return value if isinstance(value, dict) else None


def message_row(m: Message) -> Row:
    return (
        m.id,
        m.queue,
        m.priority,
        m.seq,
        m.ready_at,
        m.expires_at,
        m.attempts,
        m.exchange,
        m.routing_key,
        pack_headers(m.headers),
        m.message_id,
        m.timestamp,
        m.body,
    )


def row_message(row: Row) -> Message:
    (id_, queue, priority, seq, ready_at, expires_at, attempts, exchange, rkey, headers,
     message_id, timestamp, body) = row  # fmt: skip
    return Message(
        id_,
        queue,
        exchange,
        rkey,
        bytes(body),
        unpack_headers(headers),
        message_id,
        priority,
        timestamp,
        expires_at,
        attempts,
        seq,
        ready_at,
    )


def read_messages(rows: Iterable[Row], max_bytes: int | None) -> list[Message]:
    """Messages from ``rows`` until their bodies add up to ``max_bytes``.

    Rows are pulled one at a time, so a store passing a live cursor stops
    reading from disk there; the row that reaches the budget is kept, so a
    read always makes progress."""
    if max_bytes is None:
        return [row_message(r) for r in rows]
    out: list[Message] = []
    total = 0
    for r in rows:
        m = row_message(r)
        out.append(m)
        total += len(m.body)
        if total >= max_bytes:
            break
    return out


def update_row(m: Message) -> Row:
    """The mutable state of a message, for the one UPDATE statement we use."""
    return (m.queue, m.seq, m.ready_at, m.expires_at, m.attempts, pack_headers(m.headers), m.id)
