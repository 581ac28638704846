"""What only the PostgreSQL store does: its versioned schema, one broker
per database, start-up errors an operator can act on, and a lost connection
failing the commit in flight (and only it). What every store does is
test_store_contract.py. These run on the session's own PostgreSQL
(tests/pgcluster.py)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from corekit import msg
from pgcluster import Cluster, database_for, free_port

from brokerd.storage import Batch, Query, StorageOpenError
from brokerd.storage.postgres import PostgresStore, leader
from brokerd.storage.postgres.schema import CURRENT_VERSION, VERSION_TABLE

BOUND = 30.0


@pytest.fixture
def url(postgres: Cluster, tmp_path: Path) -> str:
    return database_for(str(tmp_path))


def _sql(url: str, sql: str, *args: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


class Loop:
    def __init__(self) -> None:
        self.posted: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        self.posted.put((fn, args))

    def commit(self, store: PostgresStore, batch: Batch) -> BaseException | None:
        out: list[BaseException | None] = []
        store.commit(batch, out.append)
        while not out:
            fn, args = self.posted.get(timeout=BOUND)
            fn(*args)
        return out[0]


def test_a_new_database_gets_the_current_schema_and_its_version(url: str) -> None:
    store = PostgresStore(url)
    try:
        assert store.schema_versions == (0, CURRENT_VERSION)
    finally:
        store.close()
    assert [r[0] for r in _sql(url, f"SELECT version FROM {VERSION_TABLE}")] == [CURRENT_VERSION]
    again = PostgresStore(url)
    try:
        assert again.schema_versions == (CURRENT_VERSION, CURRENT_VERSION)
    finally:
        again.close()


def test_a_schema_newer_than_this_brokerd_knows_is_refused(url: str) -> None:
    PostgresStore(url).close()
    _sql(url, f"UPDATE {VERSION_TABLE} SET version = $1", CURRENT_VERSION + 98)
    with pytest.raises(StorageOpenError) as info:
        PostgresStore(url)
    text = str(info.value)
    assert f"schema is version {CURRENT_VERSION + 98}, newer than this brokerd knows" in text
    assert "run the newer brokerd" in text
    # Refusing changed nothing.
    assert [r[0] for r in _sql(url, f"SELECT version FROM {VERSION_TABLE}")] == [
        CURRENT_VERSION + 98
    ]


def test_a_second_node_is_refused_while_the_first_holds_the_lease(url: str) -> None:
    first = PostgresStore(url, node="first")
    try:
        with pytest.raises(StorageOpenError, match=r"another brokerd .node first.* holds"):
            PostgresStore(url, node="second", lease_wait=0)
    finally:
        first.close()


def test_the_same_node_takes_its_lease_back_at_once_with_a_new_epoch(url: str) -> None:
    first = PostgresStore(url, node="n1")
    assert first.epoch == 1
    first.close()  # its lease still runs: a kill -9 leaves it so too
    again = PostgresStore(url, node="n1", lease_wait=0)
    try:
        assert again.epoch == 2
    finally:
        again.close()


def test_another_node_takes_over_once_a_dead_nodes_lease_ran_out(url: str) -> None:
    PostgresStore(url, node="dead").close()  # never renews again
    other = PostgresStore(url, node="other")  # waits for the lease to run out
    try:
        assert other.epoch == 2
        assert [tuple(r) for r in _sql(url, "SELECT node, epoch FROM brokerd_leader")] == [
            ("other", 2)
        ]
    finally:
        other.close()


def test_an_idle_node_keeps_renewing_its_lease(
    url: str, started: tuple[PostgresStore, Loop]
) -> None:
    def expiry() -> Any:
        return _sql(url, "SELECT expires_at FROM brokerd_leader")[0][0]

    before = expiry()
    for _ in range(100):
        threading.Event().wait(leader.RENEW / 4)
        if expiry() > before:
            break
    assert expiry() > before


def test_a_fenced_node_commits_nothing_and_says_so_once(
    url: str, started: tuple[PostgresStore, Loop]
) -> None:
    """Another node took over (a newer epoch) while this one was paused: its
    next write transaction sees the epoch, writes nothing, and every job after
    it fails too; the broker is told once, to step down."""
    store, loop = started
    told: list[Exception] = []
    store.on_fenced = told.append
    first = Batch()
    first.insert(msg(1, seq=1))
    assert loop.commit(store, first) is None
    _sql(url, "UPDATE brokerd_leader SET epoch = epoch + 1, node = 'usurper'")
    stale = Batch()
    stale.insert(msg(2, seq=2))
    error = loop.commit(store, stale)
    assert isinstance(error, leader.Fenced)
    later = Batch()
    later.insert(msg(3, seq=3))
    assert isinstance(loop.commit(store, later), leader.Fenced)
    assert [type(e) for e in told] == [leader.Fenced]
    assert _ids(url) == [1]
    assert [tuple(r) for r in _sql(url, "SELECT node FROM brokerd_leader")] == [("usurper",)]


def test_an_unreachable_server_is_told_in_one_line_without_the_password() -> None:
    url = f"postgresql://app:hunter2-secret@127.0.0.1:{free_port()}/db"
    with pytest.raises(StorageOpenError) as info:
        PostgresStore(url, connect_timeout=5)
    text = str(info.value)
    assert "cannot reach the database server" in text
    assert "hunter2-secret" not in text and "app:***@127.0.0.1" in text


def test_a_missing_database_is_told_with_what_to_do(postgres: Cluster) -> None:
    with pytest.raises(StorageOpenError, match=r"does not exist.*createdb"):
        PostgresStore(postgres.url("no_such_database"))


@pytest.fixture
def started(url: str) -> Any:
    store = PostgresStore(url)
    loop = Loop()
    store.recover(0.0)
    store.start(loop.post)
    try:
        yield store, loop
    finally:
        store.close()


def _ids(url: str) -> list[int]:
    return sorted(r[0] for r in _sql(url, "SELECT id FROM messages"))


def test_a_connection_lost_while_idle_is_opened_again_for_the_next_commit(
    url: str, started: tuple[PostgresStore, Loop]
) -> None:
    store, loop = started
    first = Batch()
    first.insert(msg(1, seq=1))
    assert loop.commit(store, first) is None
    _sql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'brokerd' AND pid <> pg_backend_pid()",
    )
    after = Batch()
    after.insert(msg(2, seq=2))
    assert loop.commit(store, after) is None
    assert _ids(url) == [1, 2]


class _DiedWhileIdle:
    """An asyncpg connection whose server went away while it sat idle, seen
    before the socket's end is: the server's error moved the protocol out of
    its idle state, so the next statement is refused without being sent."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.terminated = False

    def is_closed(self) -> bool:
        return self.terminated

    def terminate(self) -> None:
        self.terminated = True
        self.conn.terminate()

    async def execute(self, *args: Any) -> str:
        raise asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        )

    fetch = execute


def test_a_connection_found_dead_at_the_start_of_a_commit_is_replaced_and_the_commit_goes_on(
    url: str, started: tuple[PostgresStore, Loop]
) -> None:
    """Nothing of the group was sent when the first statement is refused, so
    the group is committed once on a new connection rather than failed."""
    store, loop = started
    first = Batch()
    first.insert(msg(1, seq=1))
    assert loop.commit(store, first) is None
    dead = _DiedWhileIdle(store._conn)
    store._conn = dead
    after = Batch()
    after.insert(msg(2, seq=2))
    assert loop.commit(store, after) is None
    assert dead.terminated
    assert _ids(url) == [1, 2]


def test_a_read_on_a_connection_found_dead_is_asked_again_on_a_new_one(
    url: str, started: tuple[PostgresStore, Loop]
) -> None:
    store, loop = started
    first = Batch()
    first.insert(msg(1, seq=1))
    assert loop.commit(store, first) is None
    dead = _DiedWhileIdle(store._conn)
    store._conn = dead
    answers: list[Any] = []
    store.read(Query.REVOCATIONS, (), answers.append)
    while not answers:
        fn, args = loop.posted.get(timeout=BOUND)
        fn(*args)
    assert answers == [[]]
    assert dead.terminated


def test_a_connection_lost_inside_a_commit_keeps_the_group_and_commits_it_once(
    url: str, started: tuple[PostgresStore, Loop], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database going away mid-transaction: that transaction applied
    nothing, so the store keeps the group and commits it again on a new
    connection (its publishers wait instead of failing); each row once."""
    from brokerd.storage.postgres import store as pg

    store, loop = started
    apply = pg.apply_batches
    cut = [True]

    async def apply_then_lose_the_connection(conn: Any, batches: list[Batch]) -> None:
        await apply(conn, batches)
        if cut:
            cut.clear()
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setattr(pg, "apply_batches", apply_then_lose_the_connection)
    kept = Batch()
    kept.insert(msg(1, seq=1))
    assert loop.commit(store, kept) is None
    after = Batch()
    after.insert(msg(2, seq=2))
    assert loop.commit(store, after) is None
    assert _ids(url) == [1, 2]
    assert store.outages == 1 and store.unavailable_since is None


def test_a_commit_whose_answer_was_lost_is_not_applied_twice(
    url: str, started: tuple[PostgresStore, Loop], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection breaks after the COMMIT went through but before its
    answer came: the group's number in the lease row says it committed, so
    it is reported done and not inserted again (which would fail)."""
    from brokerd.storage.postgres import store as pg

    store, loop = started
    apply = pg.apply_batches
    cut = [True]

    async def commit_then_lose_the_connection(conn: Any, batches: list[Batch]) -> None:
        await apply(conn, batches)
        if cut:
            cut.clear()
            await conn.execute("COMMIT")
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setattr(pg, "apply_batches", commit_then_lose_the_connection)
    once = Batch()
    once.insert(msg(1, seq=1))
    assert loop.commit(store, once) is None
    after = Batch()
    after.insert(msg(2, seq=2))
    assert loop.commit(store, after) is None
    assert _ids(url) == [1, 2]


def test_recovery_is_fenced_too(url: str) -> None:
    """Recovery writes (due delayed messages become ready): a node that lost
    the lease between opening and recovering writes nothing."""
    store = PostgresStore(url, node="slow")
    try:
        _sql(url, "UPDATE brokerd_leader SET epoch = epoch + 1, node = 'other'")
        with pytest.raises(StorageOpenError, match="took over the database"):
            store.recover(0.0)
    finally:
        store.close()


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_only_groups_that_promise_durability_wait_for_the_wal_flush(
    url: str, durability: str
) -> None:
    """A confirm's group commits with synchronous_commit on (with
    ``--durability full``); acks and the like, and every group with
    ``normal``, commit without waiting for the flush. Both are committed."""
    store = PostgresStore(url, durability=durability)
    loop = Loop()
    store.recover(0.0)
    store.start(loop.post)
    try:
        promise = Batch()
        promise.insert(msg(1, seq=1))
        promise.confirm(object(), 1, 2, durable=True)
        assert loop.commit(store, promise) is None
        ack = Batch()
        ack.delete(1)
        ack.insert(msg(2, seq=2))
        assert loop.commit(store, ack) is None
        assert (store.commits, store.synced_commits) == (2, 1 if durability == "full" else 0)
    finally:
        store.close()
    assert _ids(url) == [2]
