"""What the admin list frames answer: one row per queue, exchange, binding,
connection or consumer, and the pages they travel in (SPEC §17.3).

Pure functions over the core's state and a clock reading, so every rule is
tested without a socket. Invariants:

* Rows come sorted by their key (queue name; exchange, queue, key for a
  binding; connection id; connection and consumer id), and a page holds the
  rows whose key is greater than the cursor. A page is therefore correct
  however the state changed since the previous one: nothing is listed twice,
  and what existed all along is listed once.
* A page holds at most ``limit`` rows and at most ``budget`` encoded bytes
  (half the connection's frame limit), but always at least one row, so paging
  always advances. ``next`` is the last key sent when more rows follow, else
  nil.
* A cursor of the wrong shape is ``INVALID_ARGUMENT``, never a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import msgpack

from brokerd_protocol import MAX_LIST_LIMIT

from ..errors import invalid
from ..queues import PRIORITIES, QueueState
from ..topology import Exchange
from ..vhosts import Names, split

#: A row's sort key as the wire carries it: a str, an int or a list of them.
Key = Any
Row = tuple[Key, dict[str, Any]]


class Listed(Protocol):
    """What a connection shows to admins (implemented by ``Session``)."""

    id: int
    peer_name: str
    client_name: str
    connected_wall: float
    local: bool
    bytes_in: int
    bytes_out: int

    @property
    def authenticated(self) -> bool: ...


def oldest_ready_age(q: QueueState, now: float) -> float | None:
    """Seconds since the oldest ready message in memory was published.

    Only the head of each priority is looked at (messages keep publish order
    within a priority; a returned message goes back to the head). Messages
    still on disk are younger than those in memory of their priority, so the
    answer is exact unless a whole priority waits on disk; None when no ready
    message is in memory.
    """
    oldest: int | None = None
    for p in PRIORITIES:
        dq = q.ready[p]
        if dq and (oldest is None or dq[0].timestamp < oldest):
            oldest = dq[0].timestamp
    if oldest is None:
        return None
    return max(0.0, round(now - oldest / 1000, 3))


def _visible(internal: str, vhost: str | None) -> tuple[str, str] | None:
    """(vhost, client name) of an internal name, None if filtered out."""
    v, name = split(internal)
    if vhost is not None and v != vhost:
        return None
    return v, name


def queue_rows(queues: Mapping[str, QueueState], now: float, vhost: str | None = None) -> list[Row]:
    """Queues (of ``vhost``, or all): keyed by internal name, names as their
    vhost's clients know them, with a ``vhost`` column."""
    rows: list[Row] = []
    for internal, q in queues.items():
        seen = _visible(internal, vhost)
        if seen is None:
            continue
        v, name = seen
        stats = q.stats()
        options = q.options.to_wire()
        dlq = options.get("dead_letter_queue")
        if isinstance(dlq, str):
            options["dead_letter_queue"] = split(dlq)[1]
        rows.append(
            (
                internal,
                {
                    "vhost": v,
                    "name": name,
                    "durable": q.durable,
                    "ready": stats["ready"],
                    "leased": stats["leased"],
                    "delayed": stats["delayed"],
                    "consumers": stats["consumers"],
                    "oldest_ready_age": oldest_ready_age(q, now),
                    "options": options,
                },
            )
        )
    return rows


def exchange_rows(
    exchanges: Mapping[str, Exchange], vhost: str | None = None, vhosts: list[str] | None = None
) -> list[Row]:
    """Exchanges, each vhost's default one (``""``, direct, durable) first;
    ``vhosts``: the vhosts listed (their default exchanges)."""
    rows: list[Row] = []
    for v in vhosts if vhosts is not None else ["/"]:
        if vhost is None or v == vhost:
            key = Names.of(v).prefix
            rows.append((key, {"vhost": v, "name": "", "type": "direct", "durable": True}))
    for internal, ex in exchanges.items():
        seen = _visible(internal, vhost)
        if seen is not None:
            row = {"vhost": seen[0], "name": seen[1], "type": ex.type, "durable": ex.durable}
            rows.append((internal, row))
    return rows


def binding_rows(exchanges: Mapping[str, Exchange], vhost: str | None = None) -> list[Row]:
    """Explicit bindings; the default exchange's implicit ones are not listed."""
    rows: list[Row] = []
    for internal, ex in exchanges.items():
        seen = _visible(internal, vhost)
        if seen is None:
            continue
        v, name = seen
        for queue, key in ex.router.bindings():
            row = {"vhost": v, "exchange": name, "queue": split(queue)[1], "routing_key": key}
            rows.append(([internal, queue, key], row))
    return rows


def connection_rows(
    sessions: Iterable[Listed], consumers: Callable[[Listed], Any], vhost: str | None = None
) -> list[Row]:
    """Welcomed connections. ``consumers(s)`` is the core's ``Connection`` of
    session ``s`` (its consumers and deliveries)."""
    rows: list[Row] = []
    for s in sessions:
        if not s.authenticated:
            continue
        v = getattr(s, "vhost", "/")
        if vhost is not None and v != vhost:
            continue
        conn = consumers(s)
        rows.append(
            (
                s.id,
                {
                    "id": s.id,
                    "peer": s.peer_name,
                    "transport": "unix" if s.local else "tcp",
                    "client_name": s.client_name,
                    "vhost": v,
                    # The user it logged in as (None: the token, the control
                    # socket, or a broker without users).
                    "user": getattr(s, "user", None),
                    "connected_at": round(s.connected_wall, 3),
                    "consumers": len(conn.consumers),
                    "unsettled": len(conn.deliveries),
                    # Body bytes of those deliveries (--max-unacked-bytes).
                    "unsettled_bytes": conn.leased_bytes,
                    "bytes_in": s.bytes_in,
                    "bytes_out": s.bytes_out,
                },
            )
        )
    return rows


def consumer_rows(
    sessions: Iterable[Listed], consumers: Callable[[Listed], Any], vhost: str | None = None
) -> list[Row]:
    rows: list[Row] = []
    for s in sessions:
        if not s.authenticated:
            continue
        v = getattr(s, "vhost", "/")
        if vhost is not None and v != vhost:
            continue
        for c in consumers(s).consumers.values():
            rows.append(
                (
                    [s.id, c.id],
                    {
                        "connection": s.id,
                        "consumer": c.id,
                        "vhost": v,
                        "queue": split(c.queue.name)[1],
                        "prefetch": c.prefetch,
                        "unsettled": c.unacked,
                        "lease": c.lease,
                    },
                )
            )
    return rows


# --- paging -----------------------------------------------------------------------

#: The shape of each list's key: a checker for a cursor sent back by a client.
KeyCheck = Callable[[Any], bool]


def _is_str(v: Any) -> bool:
    return type(v) is str


def _is_int(v: Any) -> bool:
    return type(v) is int


def _strs(n: int) -> KeyCheck:
    return lambda v: type(v) is list and len(v) == n and all(type(x) is str for x in v)


def _ints(n: int) -> KeyCheck:
    return lambda v: type(v) is list and len(v) == n and all(type(x) is int for x in v)


QUEUE_KEY: KeyCheck = _is_str
EXCHANGE_KEY: KeyCheck = _is_str
BINDING_KEY: KeyCheck = _strs(3)
CONNECTION_KEY: KeyCheck = _is_int
CONSUMER_KEY: KeyCheck = _ints(2)


def _sortable(key: Key) -> Any:
    return tuple(key) if type(key) is list else key


def page(rows: list[Row], cursor: Any, limit: int, budget: int, check: KeyCheck) -> dict[str, Any]:
    """The reply to a list request: ``{"items": [...], "next": key or nil}``."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise invalid(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    if cursor is not None and not check(cursor):
        raise invalid("cursor must be nil or the 'next' value of the previous page")
    rows.sort(key=lambda row: _sortable(row[0]))
    after = None if cursor is None else _sortable(cursor)
    items: list[dict[str, Any]] = []
    used = 0
    last: Key = None
    more = False
    for key, item in rows:
        if after is not None and _sortable(key) <= after:
            continue
        size = len(msgpack.packb(item, use_bin_type=True))
        if items and (len(items) >= limit or used + size > budget):
            more = True
            break
        items.append(item)
        used += size
        last = key
    return {"items": items, "next": last if more else None}
