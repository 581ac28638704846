"""The SQLite mapping: the schema, the statements behind every operation and
query kind, and how a batch and a recovery run on one connection.

``SqliteStore`` (a file, its writer thread) and ``MemoryStore`` (an in-memory
database on the loop thread) share all of it, so the two cannot drift apart.
This module is the only place that knows the tables; another store (say
PostgreSQL) brings its own mapping of the same ``Op`` and ``Query`` kinds.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgpack

from .base import INSERT_COLUMNS, Batch, MessageOps, Op, Query, QueueRecord, Recovered

SCHEMA = """
CREATE TABLE IF NOT EXISTS exchanges (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    options BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS bindings (
    queue TEXT NOT NULL,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    PRIMARY KEY (queue, exchange, routing_key)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    seq INTEGER,
    ready_at REAL,
    expires_at REAL,
    attempts INTEGER NOT NULL,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    headers BLOB,
    message_id TEXT,
    timestamp INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, priority, seq)
    WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_delayed ON messages (ready_at, id)
    WHERE seq IS NULL;
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    payload BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_expires ON results (expires_at);
CREATE TABLE IF NOT EXISTS revoked (
    task_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body BLOB NOT NULL,
    props BLOB NOT NULL,
    last_run REAL,
    next_run REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    group_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    joined INTEGER NOT NULL,
    completer TEXT,
    fired INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
"""

#: Changes to ``SCHEMA`` for databases made before them: migration n (counted
#: from 1) is ``MIGRATIONS[n - 1]``, and the database's ``user_version`` is the
#: last one applied. ``SCHEMA`` is version 0, created with ``IF NOT EXISTS``
#: so a database of any version may run it.
#: 1: users and their permissions (brokerd/auth); 2: vhosts (brokerd/vhosts.py).
MIGRATIONS: tuple[str, ...] = (
    """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    tags TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS permissions (
    username TEXT NOT NULL,
    vhost TEXT NOT NULL,
    configure TEXT NOT NULL,
    write TEXT NOT NULL,
    read TEXT NOT NULL,
    PRIMARY KEY (username, vhost)
);
""",
    """
CREATE TABLE IF NOT EXISTS vhosts (
    name TEXT PRIMARY KEY
);
""",
)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(sqlite3.DatabaseError):
    """The database was migrated by a newer brokerd than this one."""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables and apply every migration the database lacks, each
    in one transaction with its new ``user_version``."""
    conn.executescript(SCHEMA)
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database schema is version {version}, newer than this brokerd knows "
            f"(up to {SCHEMA_VERSION})"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        conn.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[number - 1]} PRAGMA user_version = {number}; COMMIT;"
        )


_COLS = ", ".join(INSERT_COLUMNS)
INSERT_SQL = f"INSERT INTO messages ({_COLS}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
UPDATE_SQL = (
    "UPDATE messages SET queue = ?, seq = ?, ready_at = ?, expires_at = ?, attempts = ?, "
    "headers = ? WHERE id = ?"
)
DELETE_SQL = "DELETE FROM messages WHERE id = ?"
READY_SQL = (
    f"SELECT {_COLS} FROM messages WHERE queue = ? AND priority = ? AND seq > ? "
    "ORDER BY seq LIMIT ?"
)
DELAYED_SQL = (
    f"SELECT {_COLS} FROM messages WHERE seq IS NULL "
    "AND (ready_at > ? OR (ready_at = ? AND id > ?)) ORDER BY ready_at, id LIMIT ?"
)

_FINAL = "('SUCCESS', 'FAILURE', 'REVOKED')"

#: Each operation kind's statements, run in order with the operation's
#: parameters (``Op`` documents them).
OP_SQL: dict[Op, tuple[str, ...]] = {
    Op.INSERT_MESSAGE: (INSERT_SQL,),
    Op.UPDATE_MESSAGE: (UPDATE_SQL,),
    Op.DELETE_MESSAGE: (DELETE_SQL,),
    Op.PUT_RESULT: (
        "INSERT INTO results (task_id, state, payload, expires_at) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, "
        "payload = excluded.payload, expires_at = excluded.expires_at "
        f"WHERE excluded.state IN {_FINAL} OR results.state NOT IN {_FINAL} "
        "OR results.expires_at <= ?5",
    ),
    Op.PUT_RESULT_KEEP_FINAL: (
        "INSERT INTO results (task_id, state, payload, expires_at) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT (task_id) DO UPDATE SET state = excluded.state, "
        "payload = excluded.payload, expires_at = excluded.expires_at "
        f"WHERE results.state NOT IN {_FINAL} OR results.expires_at <= ?5",
    ),
    Op.REVOKE_RESULT: (
        "INSERT INTO results (task_id, state, payload, expires_at) "
        "VALUES (?1, 'REVOKED', x'', ?2) "
        "ON CONFLICT (task_id) DO UPDATE SET state = 'REVOKED', payload = x'', "
        "expires_at = max(results.expires_at, excluded.expires_at) "
        "WHERE results.state NOT IN ('SUCCESS', 'FAILURE') OR results.expires_at <= ?3",
    ),
    Op.PUT_REVOCATION: (
        "INSERT INTO revoked (task_id, expires_at) VALUES (?, ?) ON CONFLICT (task_id) "
        "DO UPDATE SET expires_at = max(revoked.expires_at, excluded.expires_at)",
    ),
    Op.PUT_SCHEDULE: (
        "INSERT OR REPLACE INTO schedules (name, spec, exchange, routing_key, body, props, "
        "last_run, next_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    Op.SCHEDULE_RAN: ("UPDATE schedules SET last_run = ?2, next_run = ?3 WHERE name = ?1",),
    Op.DELETE_RESULT: ("DELETE FROM results WHERE task_id = ?",),
    Op.PUT_GROUP: (
        "INSERT OR REPLACE INTO groups (group_id, size, joined, completer, fired, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
    ),
    Op.PUT_GROUP_MEMBER: (
        "INSERT OR IGNORE INTO group_members (group_id, member_id) VALUES (?, ?)",
    ),
    Op.PUT_EXCHANGE: ("INSERT OR REPLACE INTO exchanges (name, type) VALUES (?, ?)",),
    Op.DELETE_EXCHANGE: (
        "DELETE FROM exchanges WHERE name = ?",
        "DELETE FROM bindings WHERE exchange = ?",
    ),
    Op.PUT_QUEUE: ("INSERT OR REPLACE INTO queues (name, options) VALUES (?, ?)",),
    Op.DELETE_QUEUE: (
        "DELETE FROM queues WHERE name = ?",
        "DELETE FROM bindings WHERE queue = ?",
        "DELETE FROM messages WHERE queue = ?",
    ),
    Op.PURGE_READY: ("DELETE FROM messages WHERE queue = ? AND priority = ? AND seq > ?",),
    Op.PUT_BINDING: (
        "INSERT OR REPLACE INTO bindings (queue, exchange, routing_key) VALUES (?, ?, ?)",
    ),
    Op.DELETE_BINDING: (
        "DELETE FROM bindings WHERE queue = ? AND exchange = ? AND routing_key = ?",
    ),
    Op.DELETE_SCHEDULE: ("DELETE FROM schedules WHERE name = ?",),
    Op.EXPIRE_RESULTS: ("DELETE FROM results WHERE expires_at <= ?",),
    Op.EXPIRE_REVOCATIONS: ("DELETE FROM revoked WHERE expires_at <= ?",),
    Op.DELETE_GROUP_MEMBERS: ("DELETE FROM group_members WHERE group_id = ?",),
    Op.EXPIRE_GROUPS: (
        "DELETE FROM group_members WHERE group_id IN "
        "(SELECT group_id FROM groups WHERE expires_at <= ?)",
        "DELETE FROM groups WHERE expires_at <= ?",
    ),
    Op.PUT_USER: ("INSERT OR REPLACE INTO users (name, password_hash, tags) VALUES (?, ?, ?)",),
    Op.DELETE_USER: (
        "DELETE FROM users WHERE name = ?1",
        "DELETE FROM permissions WHERE username = ?1",
    ),
    Op.PUT_PERMISSION: (
        "INSERT OR REPLACE INTO permissions (username, vhost, configure, write, read) "
        "VALUES (?, ?, ?, ?, ?)",
    ),
    Op.DELETE_PERMISSION: ("DELETE FROM permissions WHERE username = ? AND vhost = ?",),
    Op.PUT_VHOST: ("INSERT OR IGNORE INTO vhosts (name) VALUES (?)",),
    # ``substr`` rather than LIKE: a prefix holds no wildcard to escape.
    Op.DELETE_VHOST: (
        "DELETE FROM vhosts WHERE name = ?1 AND ?2 IS NOT NULL",
        "DELETE FROM permissions WHERE vhost = ?1 AND ?2 IS NOT NULL",
        "DELETE FROM results WHERE substr(task_id, 1, length(?2)) = ?2 AND ?1 IS NOT NULL",
        "DELETE FROM revoked WHERE substr(task_id, 1, length(?2)) = ?2 AND ?1 IS NOT NULL",
        "DELETE FROM schedules WHERE substr(name, 1, length(?2)) = ?2 AND ?1 IS NOT NULL",
        "DELETE FROM group_members WHERE substr(group_id, 1, length(?2)) = ?2 AND ?1 IS NOT NULL",
        "DELETE FROM groups WHERE substr(group_id, 1, length(?2)) = ?2 AND ?1 IS NOT NULL",
    ),
}

_QUERY_SQL: dict[Query, str] = {
    Query.EARLIEST_RESULT_EXPIRY: "SELECT MIN(expires_at) FROM results",
    Query.REVOCATIONS: "SELECT task_id, expires_at FROM revoked ORDER BY expires_at",
    Query.SCHEDULES: (
        "SELECT name, spec, exchange, routing_key, body, props, last_run, next_run FROM schedules"
    ),
    Query.GROUPS: ("SELECT group_id, size, joined, completer, fired, expires_at FROM groups"),
    Query.GROUP_MEMBERS: "SELECT group_id, member_id FROM group_members",
    Query.USERS: "SELECT name, password_hash, tags FROM users",
    Query.PERMISSIONS: "SELECT username, vhost, configure, write, read FROM permissions",
    Query.VHOSTS: "SELECT name FROM vhosts ORDER BY name",
}


def query_sql(query: Query, params: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """The statement and its parameters for a ``Query`` read."""
    # length() of a BLOB reads its size from the record header, not the
    # bytes (nor the overflow pages holding them).
    if query is Query.RESULTS:
        task_ids, now, max_payload = params
        marks = ", ".join("?" * len(task_ids))
        sql = (
            "SELECT task_id, state, CASE WHEN length(payload) <= ? THEN payload END, "
            f"expires_at, length(payload) FROM results WHERE task_id IN ({marks}) "
            "AND expires_at > ?"
        )
        return sql, (max_payload, *task_ids, now)
    if query is Query.RESULT_SIZES:
        task_ids, now = params
        marks = ", ".join("?" * len(task_ids))
        sql = (
            "SELECT task_id, state, length(payload) FROM results "
            f"WHERE task_id IN ({marks}) AND expires_at > ?"
        )
        return sql, (*task_ids, now)
    return _QUERY_SQL[query], params


def apply_batches(conn: sqlite3.Connection, batches: list[Batch]) -> None:
    """Apply batches in order inside the caller's transaction."""
    for batch in batches:
        for seg in batch.segments:
            if isinstance(seg, MessageOps):
                if seg.inserts:
                    conn.executemany(INSERT_SQL, seg.inserts)
                if seg.updates:
                    conn.executemany(UPDATE_SQL, seg.updates)
                if seg.deletes:
                    conn.executemany(DELETE_SQL, seg.deletes)
                for kind, rows in seg.rows.items():
                    for sql in OP_SQL[kind]:
                        conn.executemany(sql, rows)
            else:
                for sql in OP_SQL[seg.kind]:
                    conn.execute(sql, seg.params)


def recover(conn: sqlite3.Connection, now: float) -> Recovered:
    """Read topology and counts; make delayed messages that fell due by
    ``now`` ready (committed), with seqs above every stored one in id order."""
    rec = Recovered()
    rec.exchanges = [(n, t) for n, t in conn.execute("SELECT name, type FROM exchanges")]
    for name, blob in conn.execute("SELECT name, options FROM queues"):
        rec.queues.append(QueueRecord(name, msgpack.unpackb(blob, raw=False)))
    rec.bindings = list(conn.execute("SELECT queue, exchange, routing_key FROM bindings"))
    rec.max_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]
    max_seq = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE seq IS NOT NULL"
    ).fetchone()[0]
    conn.execute("BEGIN")
    conn.execute(
        "UPDATE messages SET seq = ? + id, ready_at = NULL WHERE seq IS NULL AND ready_at <= ?",
        (max_seq, now),
    )
    conn.execute("COMMIT")
    rec.max_seq = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE seq IS NOT NULL"
    ).fetchone()[0]
    for qname, prio, count in conn.execute(
        "SELECT queue, priority, COUNT(*) FROM messages WHERE seq IS NOT NULL "
        "GROUP BY queue, priority"
    ):
        rec.ready_counts[(qname, prio)] = count
    for qname, count in conn.execute(
        "SELECT queue, COUNT(*) FROM messages WHERE seq IS NULL GROUP BY queue"
    ):
        rec.delayed_counts[qname] = count
    return rec
