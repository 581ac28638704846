"""The PostgreSQL mapping: the statements behind every ``Op`` and ``Query``
kind, and how a group of batches, a page read and a recovery run on one
asyncpg connection.

The rules each operation keeps are those of the SQLite mapping
(``storage/sql.py``), stated on ``Op``; the contract suite holds both stores
to them. What differs is how rows travel, chosen by measuring
(bench/pgdriver.py, docs/postgresql.md): message inserts go in with ``COPY``
(binary, one round trip for any number of rows), deletes by an array of ids
in one statement, and every other row kind with ``executemany`` (asyncpg
pipelines it: one round trip per kind, not per row).

A page with a byte budget is cut inside the database: a window sum of the
body sizes before each row stops the page where ``read_messages`` would, so
bodies past the budget are never sent to brokerd.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..base import INSERT_COLUMNS, Batch, MessageOps, Op, Query, QueueRecord, Recovered, Row
from . import leader

_COLS = ", ".join(INSERT_COLUMNS)
UPDATE_SQL = (
    "UPDATE messages SET queue = $1, seq = $2, ready_at = $3, expires_at = $4, attempts = $5, "
    "headers = $6 WHERE id = $7"
)
DELETE_SQL = "DELETE FROM messages WHERE id = ANY($1::bigint[])"

_READY_WHERE = "queue = $1 AND priority = $2 AND seq > $3 ORDER BY seq LIMIT $4"
READY_SQL = f"SELECT {_COLS} FROM messages WHERE {_READY_WHERE}"
_DELAYED_WHERE = (
    "seq IS NULL AND (ready_at > $1 OR (ready_at = $1 AND id > $2)) ORDER BY ready_at, id LIMIT $3"
)
DELAYED_SQL = f"SELECT {_COLS} FROM messages WHERE {_DELAYED_WHERE}"


def _budgeted(where: str, order: str, budget: str) -> str:
    """The page of ``where`` cut once the bodies before a row reach ``budget``
    (``octet_length`` of a stored body reads its size, not the body)."""
    return (
        f"SELECT {_COLS} FROM (SELECT {_COLS}, sum(octet_length(body)) OVER "
        f"(ORDER BY {order} ROWS UNBOUNDED PRECEDING) - octet_length(body) AS before "
        f"FROM (SELECT {_COLS} FROM messages WHERE {where}) page) sized "
        f"WHERE before < {budget} ORDER BY {order}"
    )


READY_BUDGET_SQL = _budgeted(_READY_WHERE, "seq", "$5")
DELAYED_BUDGET_SQL = _budgeted(_DELAYED_WHERE, "ready_at, id", "$4")

_FINAL = "('SUCCESS', 'FAILURE', 'REVOKED')"

#: Each operation kind's statements, run in order with the operation's
#: parameters (``Op`` documents them). Message rows are not here: they have
#: their own paths (``apply_batches``).
OP_SQL: dict[Op, tuple[str, ...]] = {
    Op.UPDATE_MESSAGE: (UPDATE_SQL,),
    Op.PUT_RESULT: (
        "INSERT INTO results (task_id, state, payload, expires_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, "
        "payload = excluded.payload, expires_at = excluded.expires_at "
        f"WHERE excluded.state IN {_FINAL} OR results.state NOT IN {_FINAL} "
        "OR results.expires_at <= $5",
    ),
    Op.PUT_RESULT_KEEP_FINAL: (
        "INSERT INTO results (task_id, state, payload, expires_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, "
        "payload = excluded.payload, expires_at = excluded.expires_at "
        f"WHERE results.state NOT IN {_FINAL} OR results.expires_at <= $5",
    ),
    Op.REVOKE_RESULT: (
        "INSERT INTO results (task_id, state, payload, expires_at) "
        "VALUES ($1, 'REVOKED', '\\x'::bytea, $2) "
        "ON CONFLICT (task_id) DO UPDATE SET state = 'REVOKED', payload = '\\x'::bytea, "
        "expires_at = greatest(results.expires_at, excluded.expires_at) "
        "WHERE results.state NOT IN ('SUCCESS', 'FAILURE') OR results.expires_at <= $3",
    ),
    Op.PUT_REVOCATION: (
        "INSERT INTO revoked (task_id, expires_at) VALUES ($1, $2) ON CONFLICT (task_id) "
        "DO UPDATE SET expires_at = greatest(revoked.expires_at, excluded.expires_at)",
    ),
    Op.PUT_SCHEDULE: (
        "INSERT INTO schedules (name, spec, exchange, routing_key, body, props, last_run, "
        "next_run) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO UPDATE SET "
        "spec = excluded.spec, exchange = excluded.exchange, "
        "routing_key = excluded.routing_key, body = excluded.body, props = excluded.props, "
        "last_run = excluded.last_run, next_run = excluded.next_run",
    ),
    Op.SCHEDULE_RAN: ("UPDATE schedules SET last_run = $2, next_run = $3 WHERE name = $1",),
    Op.DELETE_RESULT: ("DELETE FROM results WHERE task_id = $1",),
    Op.PUT_GROUP: (
        "INSERT INTO groups (group_id, size, joined, completer, fired, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (group_id) DO UPDATE SET "
        "size = excluded.size, joined = excluded.joined, completer = excluded.completer, "
        "fired = excluded.fired, expires_at = excluded.expires_at",
    ),
    Op.PUT_GROUP_MEMBER: (
        "INSERT INTO group_members (group_id, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    ),
    Op.PUT_EXCHANGE: (
        "INSERT INTO exchanges (name, type) VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET type = excluded.type",
    ),
    Op.DELETE_EXCHANGE: (
        "DELETE FROM exchanges WHERE name = $1",
        "DELETE FROM bindings WHERE exchange = $1",
    ),
    Op.PUT_QUEUE: (
        "INSERT INTO queues (name, options) VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET options = excluded.options",
    ),
    Op.DELETE_QUEUE: (
        "DELETE FROM queues WHERE name = $1",
        "DELETE FROM bindings WHERE queue = $1",
        "DELETE FROM messages WHERE queue = $1",
    ),
    Op.PURGE_READY: ("DELETE FROM messages WHERE queue = $1 AND priority = $2 AND seq > $3",),
    Op.PUT_BINDING: (
        "INSERT INTO bindings (queue, exchange, routing_key) VALUES ($1, $2, $3) "
        "ON CONFLICT DO NOTHING",
    ),
    Op.DELETE_BINDING: (
        "DELETE FROM bindings WHERE queue = $1 AND exchange = $2 AND routing_key = $3",
    ),
    Op.DELETE_SCHEDULE: ("DELETE FROM schedules WHERE name = $1",),
    Op.EXPIRE_RESULTS: ("DELETE FROM results WHERE expires_at <= $1",),
    Op.EXPIRE_REVOCATIONS: ("DELETE FROM revoked WHERE expires_at <= $1",),
    Op.DELETE_GROUP_MEMBERS: ("DELETE FROM group_members WHERE group_id = $1",),
    Op.EXPIRE_GROUPS: (
        "DELETE FROM group_members WHERE group_id IN "
        "(SELECT group_id FROM groups WHERE expires_at <= $1)",
        "DELETE FROM groups WHERE expires_at <= $1",
    ),
    Op.PUT_USER: (
        "INSERT INTO users (name, password_hash, tags) VALUES ($1, $2, $3) "
        "ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, "
        "tags = excluded.tags",
    ),
    Op.DELETE_USER: (
        "DELETE FROM users WHERE name = $1",
        "DELETE FROM permissions WHERE username = $1",
    ),
    Op.PUT_PERMISSION: (
        "INSERT INTO permissions (username, vhost, configure, write, read) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username, vhost) DO UPDATE SET "
        "configure = excluded.configure, write = excluded.write, read = excluded.read",
    ),
    Op.DELETE_PERMISSION: ("DELETE FROM permissions WHERE username = $1 AND vhost = $2",),
    Op.PUT_VHOST: ("INSERT INTO vhosts (name) VALUES ($1) ON CONFLICT DO NOTHING",),
    Op.DELETE_VHOST: (
        "DELETE FROM vhosts WHERE name = $1 AND $2::text IS NOT NULL",
        "DELETE FROM permissions WHERE vhost = $1 AND $2::text IS NOT NULL",
        "DELETE FROM results WHERE left(task_id, length($2)) = $2 AND $1::text IS NOT NULL",
        "DELETE FROM revoked WHERE left(task_id, length($2)) = $2 AND $1::text IS NOT NULL",
        "DELETE FROM schedules WHERE left(name, length($2)) = $2 AND $1::text IS NOT NULL",
        "DELETE FROM group_members WHERE left(group_id, length($2)) = $2 AND $1::text IS NOT NULL",
        "DELETE FROM groups WHERE left(group_id, length($2)) = $2 AND $1::text IS NOT NULL",
    ),
}

_QUERY_SQL: dict[Query, str] = {
    Query.EARLIEST_RESULT_EXPIRY: "SELECT MIN(expires_at) FROM results",
    # octet_length() of a bytea reads the size from its (TOAST) header,
    # without fetching or decompressing the value.
    Query.RESULTS: (
        "SELECT task_id, state, CASE WHEN octet_length(payload) <= $3::bigint THEN payload END, "
        "expires_at, octet_length(payload) FROM results "
        "WHERE task_id = ANY($1::text[]) AND expires_at > $2"
    ),
    Query.RESULT_SIZES: (
        "SELECT task_id, state, octet_length(payload) FROM results "
        "WHERE task_id = ANY($1::text[]) AND expires_at > $2"
    ),
    Query.REVOCATIONS: "SELECT task_id, expires_at FROM revoked ORDER BY expires_at",
    Query.SCHEDULES: (
        "SELECT name, spec, exchange, routing_key, body, props, last_run, next_run FROM schedules"
    ),
    Query.GROUPS: "SELECT group_id, size, joined, completer, fired, expires_at FROM groups",
    Query.GROUP_MEMBERS: "SELECT group_id, member_id FROM group_members",
    Query.USERS: "SELECT name, password_hash, tags FROM users",
    Query.PERMISSIONS: "SELECT username, vhost, configure, write, read FROM permissions",
    Query.VHOSTS: "SELECT name FROM vhosts ORDER BY name",
}


def query_sql(query: Query, params: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """The statement and its arguments for a ``Query`` read."""
    if query is Query.RESULTS:
        task_ids, now, max_payload = params
        return _QUERY_SQL[query], (list(task_ids), float(now), int(max_payload))
    if query is Query.RESULT_SIZES:
        task_ids, now = params
        return _QUERY_SQL[query], (list(task_ids), float(now))
    return _QUERY_SQL[query], params


def ready_sql(
    queue: str, priority: int, after_seq: int, limit: int, max_bytes: int | None
) -> tuple[str, tuple[Any, ...]]:
    if max_bytes is None:
        return READY_SQL, (queue, priority, after_seq, limit)
    return READY_BUDGET_SQL, (queue, priority, after_seq, limit, max_bytes)


def delayed_sql(
    after: tuple[float, int], limit: int, max_bytes: int | None
) -> tuple[str, tuple[Any, ...]]:
    if max_bytes is None:
        return DELAYED_SQL, (float(after[0]), after[1], limit)
    return DELAYED_BUDGET_SQL, (float(after[0]), after[1], limit, max_bytes)


def _floats(rows: list[Row], kind: Op) -> list[Row]:
    """Rows with their real-valued parameters as floats (the broker may
    record an int time; the driver encodes ``double precision`` strictly)."""
    positions = _FLOAT_PARAMS.get(kind)
    if not positions:
        return rows
    return [
        tuple(float(v) if i in positions and isinstance(v, int) else v for i, v in enumerate(r))
        for r in rows
    ]


_FLOAT_PARAMS: dict[Op, frozenset[int]] = {
    Op.UPDATE_MESSAGE: frozenset({2, 3}),
    Op.PUT_RESULT: frozenset({3, 4}),
    Op.PUT_RESULT_KEEP_FINAL: frozenset({3, 4}),
    Op.REVOKE_RESULT: frozenset({1, 2}),
    Op.PUT_REVOCATION: frozenset({1}),
    Op.PUT_SCHEDULE: frozenset({6, 7}),
    Op.SCHEDULE_RAN: frozenset({1, 2}),
    Op.PUT_GROUP: frozenset({5}),
    Op.EXPIRE_RESULTS: frozenset({0}),
    Op.EXPIRE_REVOCATIONS: frozenset({0}),
    Op.EXPIRE_GROUPS: frozenset({0}),
}


async def apply_batches(conn: Any, batches: list[Batch]) -> None:
    """Apply batches in order inside the caller's transaction."""
    for batch in batches:
        for seg in batch.segments:
            if isinstance(seg, MessageOps):
                if seg.inserts:
                    await conn.copy_records_to_table(
                        "messages", records=seg.inserts, columns=INSERT_COLUMNS
                    )
                if seg.updates:
                    await conn.executemany(UPDATE_SQL, _floats(seg.updates, Op.UPDATE_MESSAGE))
                if seg.deletes:
                    await conn.execute(DELETE_SQL, [d[0] for d in seg.deletes])
                for kind, rows in seg.rows.items():
                    args = _floats(rows, kind)
                    for sql in OP_SQL[kind]:
                        await conn.executemany(sql, args)
            else:
                params = _floats([seg.params], seg.kind)[0]
                for sql in OP_SQL[seg.kind]:
                    await conn.execute(sql, *params)


async def recover(conn: Any, now: float, epoch: int | None = None) -> Recovered:
    """Read topology and counts; make delayed messages that fell due by
    ``now`` ready (committed), with seqs above every stored one in id order.
    With ``epoch``, that write is fenced like every other (``leader.py``)."""
    rec = Recovered()
    rec.exchanges = [(r[0], r[1]) for r in await conn.fetch("SELECT name, type FROM exchanges")]
    for name, blob in await conn.fetch("SELECT name, options FROM queues"):
        rec.queues.append(QueueRecord(name, msgpack.unpackb(blob, raw=False)))
    rec.bindings = [
        (r[0], r[1], r[2])
        for r in await conn.fetch("SELECT queue, exchange, routing_key FROM bindings")
    ]
    async with conn.transaction():
        if epoch is not None and not leader.still_ours(await conn.execute(leader.fence_sql(epoch))):
            raise leader.Fenced(epoch)
        rec.max_id = int(await conn.fetchval("SELECT COALESCE(MAX(id), 0) FROM messages"))
        max_seq = int(
            await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE seq IS NOT NULL")
        )
        await conn.execute(
            "UPDATE messages SET seq = $1 + id, ready_at = NULL "
            "WHERE seq IS NULL AND ready_at <= $2",
            max_seq,
            float(now),
        )
    rec.max_seq = int(
        await conn.fetchval("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE seq IS NOT NULL")
    )
    for qname, prio, count in await conn.fetch(
        "SELECT queue, priority, COUNT(*) FROM messages WHERE seq IS NOT NULL "
        "GROUP BY queue, priority"
    ):
        rec.ready_counts[(qname, prio)] = int(count)
    for qname, count in await conn.fetch(
        "SELECT queue, COUNT(*) FROM messages WHERE seq IS NULL GROUP BY queue"
    ):
        rec.delayed_counts[qname] = int(count)
    return rec
