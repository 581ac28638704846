"""The PostgreSQL schema, built by brokerd itself through numbered migrations.

Several brokerd processes (and several brokerd versions, during an upgrade)
may point at one database, so the schema carries its version in a table of
its own, ``brokerd_schema_version`` (one row). At start-up brokerd takes a
transaction-scoped advisory lock (two nodes starting together never migrate
twice), applies every migration above the stored version in order, each in
the same transaction as the new version number, and refuses a database whose
version is newer than it knows: an older brokerd must not write rows whose
meaning a newer one changed.

Migrations are append-only: a released one is never edited. Migration 1 is
the schema of the SQLite store (``storage/sql.py``) in PostgreSQL types: the
same tables, columns and indexes, so ``Op`` and ``Query`` map one to one.
Migration 2 adds the leadership lease row (``leader.py``); migration 3 its
``last_group`` column (a group's commit marker, ``store.py``).
"""

from __future__ import annotations

from typing import Any

from . import leader

#: Key of the advisory lock held while checking and migrating (any constant
#: that no other application on the database uses; "brokerd" in ASCII).
MIGRATION_LOCK = 0x62726F6B657264

VERSION_TABLE = "brokerd_schema_version"

MIGRATION_1 = """
CREATE TABLE exchanges (
    name text PRIMARY KEY,
    type text NOT NULL
);
CREATE TABLE queues (
    name text PRIMARY KEY,
    options bytea NOT NULL
);
CREATE TABLE bindings (
    queue text NOT NULL,
    exchange text NOT NULL,
    routing_key text NOT NULL,
    PRIMARY KEY (queue, exchange, routing_key)
);
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    queue text NOT NULL,
    priority integer NOT NULL,
    seq bigint,
    ready_at double precision,
    expires_at double precision,
    attempts integer NOT NULL,
    exchange text NOT NULL,
    routing_key text NOT NULL,
    headers bytea,
    message_id text,
    timestamp bigint NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX messages_ready ON messages (queue, priority, seq) WHERE seq IS NOT NULL;
CREATE INDEX messages_delayed ON messages (ready_at, id) WHERE seq IS NULL;
CREATE INDEX messages_queue ON messages (queue);
CREATE TABLE results (
    task_id text PRIMARY KEY,
    state text NOT NULL,
    payload bytea NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX results_expires ON results (expires_at);
CREATE TABLE revoked (
    task_id text PRIMARY KEY,
    expires_at double precision NOT NULL
);
CREATE TABLE schedules (
    name text PRIMARY KEY,
    spec text NOT NULL,
    exchange text NOT NULL,
    routing_key text NOT NULL,
    body bytea NOT NULL,
    props bytea NOT NULL,
    last_run double precision,
    next_run double precision NOT NULL
);
CREATE TABLE groups (
    group_id text PRIMARY KEY,
    size integer NOT NULL,
    joined integer NOT NULL,
    completer text,
    fired integer NOT NULL,
    expires_at double precision NOT NULL
);
CREATE TABLE group_members (
    group_id text NOT NULL,
    member_id text NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
"""

#: 3: users and their permissions (brokerd/auth).
MIGRATION_3 = """
CREATE TABLE users (
    name text PRIMARY KEY,
    password_hash text NOT NULL,
    tags text NOT NULL
);
CREATE TABLE permissions (
    username text NOT NULL,
    vhost text NOT NULL,
    configure text NOT NULL,
    write text NOT NULL,
    read text NOT NULL,
    PRIMARY KEY (username, vhost)
);
"""

#: 5: vhosts (brokerd/vhosts.py).
MIGRATION_5 = """
CREATE TABLE vhosts (
    name text PRIMARY KEY
);
"""

#: Migration n is ``MIGRATIONS[n - 1]``; the schema this code writes is the last.
#: 2: the leadership lease row (``leader.py``); 3: users and permissions;
#: 4: the lease row's commit marker (``leader.py``, ``store.py``); 5: vhosts.
MIGRATIONS: tuple[str, ...] = (
    MIGRATION_1,
    leader.MIGRATION,
    MIGRATION_3,
    leader.MIGRATION_GROUP,
    MIGRATION_5,
)
CURRENT_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was migrated by a newer brokerd than this one."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database schema is version {found}, newer than this brokerd knows (up to {known})"
        )
        self.found = found
        self.known = known


async def migrate(conn: Any) -> tuple[int, int]:
    """Bring the schema to ``CURRENT_VERSION``; (version found, version now).

    ``conn`` is an asyncpg connection outside any transaction."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
            "one boolean PRIMARY KEY DEFAULT true CHECK (one), version integer NOT NULL)"
        )
        found = await conn.fetchval(f"SELECT version FROM {VERSION_TABLE}")
        version = int(found) if found is not None else 0
        if version > CURRENT_VERSION:
            raise SchemaTooNew(version, CURRENT_VERSION)
        for number in range(version + 1, CURRENT_VERSION + 1):
            await conn.execute(MIGRATIONS[number - 1])
        if found is None:
            await conn.execute(
                f"INSERT INTO {VERSION_TABLE} (version) VALUES ($1)", CURRENT_VERSION
            )
        elif version < CURRENT_VERSION:
            await conn.execute(f"UPDATE {VERSION_TABLE} SET version = $1", CURRENT_VERSION)
    return version, CURRENT_VERSION
