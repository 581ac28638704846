"""The Store contract: what every store must do, run against each one.

A store takes typed batches and typed reads (``brokerd.storage.base``) and
promises: batches apply in submission order, each atomically (with the other
batches of its commit group); reads run in submission order with the commits
(a read sees every commit submitted before it and none submitted after);
message pages follow (queue, priority, seq > cursor) and the (ready_at, id)
horizon, bounded by a row limit and a byte budget that still returns one row;
``recover`` reports what is stored and makes due delayed messages ready; done
callbacks run from the loop's schedule, never inside the submitting call; and
a durable store keeps a commit whose callback ran through a kill -9, and
nothing of a group killed before its commit.

Every test runs once per entry of ``FACTORIES``: a new store (PostgreSQL, say)
passes by adding one factory. Store-specific behaviour (SQLite's WAL mode,
group budgets and start-up errors; MemoryStore's ``drain``; PostgreSQL's
schema versions) is tested in test_storage_sqlite.py, test_storage_memory.py
and test_storage_postgres.py. The PostgreSQL factory runs on the session's
own server (tests/pgcluster.py), one database per test, and skips without
server binaries unless BROKERD_POSTGRES_TESTS=1.

The "loop" here is the test thread: stores post callbacks to a queue it runs.
Waits are bounded, never timed.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from corekit import msg

from brokerd.message import Message
from brokerd.storage import MemoryStore, Op, Query, SqliteStore
from brokerd.storage.base import Batch, Recovered, Row, Store

T0 = 1_700_000_000.0
KIB = 1024
BOUND = 30.0
EVERYTHING = (float("-inf"), 0)

# --- factories -------------------------------------------------------------------------

#: Posts ``fn(*args)`` to the loop (the test thread).
Post = Callable[..., None]


@dataclass(frozen=True)
class Opened:
    store: Store
    #: Begin applying submitted work (a store may queue it until then).
    start: Callable[[], None]


@dataclass(frozen=True)
class Factory:
    name: str
    #: Open the store at ``path`` (a path it may use), posting callbacks with ``post``.
    open: Callable[[Path, Post], Opened]
    #: A new store opened at the same path sees what an earlier one committed
    #: (and so the crash tests apply).
    durable: bool
    #: For crash tests: make the next commit group stall inside its transaction,
    #: after applying its batches and before committing, calling
    #: ``stalled(number of batches in the group)``.
    stall_next_group: Callable[[Callable[[int], None]], None] | None = None
    #: For crash tests: make every later sync (fsync) of ``store`` wait until
    #: killed, after its write: commits are reported written, never done.
    block_syncs: Callable[[Store], None] | None = None


def _open_memory(path: Path, post: Post) -> Opened:
    return Opened(MemoryStore(schedule=post), lambda: None)


def _open_sqlite(path: Path, post: Post) -> Opened:
    store = SqliteStore(path)
    return Opened(store, lambda: store.start(post))


def _stall_sqlite(stalled: Callable[[int], None]) -> None:
    from brokerd.storage import sqlite

    apply = sqlite.apply_batches

    def apply_then_stall(conn: Any, batches: list[Batch]) -> None:
        apply(conn, batches)
        stalled(len(batches))
        threading.Event().wait()  # until killed

    sqlite.apply_batches = apply_then_stall  # type: ignore[assignment]


def _block_sqlite_syncs(store: Store) -> None:
    assert isinstance(store, SqliteStore) and store.wal is not None
    store.wal.sync = threading.Event().wait  # type: ignore[assignment,method-assign]


def _open_postgres(path: Path, post: Post) -> Opened:
    from pgcluster import database_for

    from brokerd.storage.postgres import PostgresStore

    # One node per path: a store reopened on it (a restart, the crash tests'
    # parent after its child) takes the lease back at once.
    store = PostgresStore(database_for(str(path)), node=_node(path))
    return Opened(store, lambda: store.start(post))


def _node(path: Path) -> str:
    import hashlib

    return "node-" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


def _stall_postgres(stalled: Callable[[int], None]) -> None:
    import asyncio

    from brokerd.storage.postgres import store as pg

    apply = pg.apply_batches

    async def apply_then_stall(conn: Any, batches: list[Batch]) -> None:
        await apply(conn, batches)
        stalled(len(batches))
        await asyncio.get_running_loop().create_future()  # until killed

    pg.apply_batches = apply_then_stall  # type: ignore[assignment]


FACTORIES = [
    Factory("memory", _open_memory, durable=False),
    Factory(
        "sqlite",
        _open_sqlite,
        durable=True,
        stall_next_group=_stall_sqlite,
        block_syncs=_block_sqlite_syncs,
    ),
    # Its own server (tests/pgcluster.py, the session's ``postgres`` fixture);
    # one database per test. A commit is written and durable at once (COMMIT
    # returns after the WAL flush): there is no sync to block.
    Factory("postgresql", _open_postgres, durable=True, stall_next_group=_stall_postgres),
]
BY_NAME = {f.name: f for f in FACTORIES}


# --- harness -------------------------------------------------------------------------


class Loop:
    """Stands in for the event loop: runs what stores post, on the test thread."""

    def __init__(self) -> None:
        self.posted: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self.thread = threading.get_ident()

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        self.posted.put((fn, args))

    def run_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            fn, args = self.posted.get(timeout=BOUND)
            fn(*args)


class Harness:
    def __init__(self, factory: Factory, path: Path) -> None:
        self.factory = factory
        self.path = path
        self.loop = Loop()
        opened = factory.open(path, self.loop.post)
        self.store = opened.store
        self._start = opened.start

    def start(self) -> Harness:
        self._start()
        return self

    def submit(self, batch: Batch) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        self.store.commit(batch, out.append)
        return out

    def commit(self, batch: Batch) -> BaseException | None:
        out = self.submit(batch)
        self.loop.run_until(lambda: bool(out))
        return out[0]

    def wait(self, out: list[Any]) -> Any:
        self.loop.run_until(lambda: bool(out))
        assert not isinstance(out[0], BaseException), out[0]
        return out[0]

    def ready(
        self, q: str = "q", prio: int = 0, after: int = 0, limit: int = 100, **kw: Any
    ) -> list[Message]:
        out: list[Any] = []
        self.store.load_ready(q, prio, after, limit, out.append, **kw)
        result: list[Message] = self.wait(out)
        return result

    def ready_ids(self, q: str = "q", prio: int = 0, **kw: Any) -> list[int]:
        return [m.id for m in self.ready(q, prio, **kw)]

    def delayed(
        self, after: tuple[float, int] = EVERYTHING, limit: int = 100, **kw: Any
    ) -> list[Message]:
        out: list[Any] = []
        self.store.load_delayed(after, limit, out.append, **kw)
        result: list[Message] = self.wait(out)
        return result

    def read(self, query: Query, *params: Any) -> list[Row]:
        out: list[Any] = []
        self.store.read(query, params, out.append)
        rows: list[Row] = self.wait(out)
        return [tuple(r) for r in rows]

    def restart(self, now: float = T0) -> Recovered:
        """What the store reports at start-up: a durable store is closed and
        opened again; another reports on what it holds now."""
        if not self.factory.durable:
            return self.store.recover(now)
        self.store.close()
        self.loop = Loop()
        opened = self.factory.open(self.path, self.loop.post)
        self.store = opened.store
        rec = self.store.recover(now)
        opened.start()
        return rec

    def close(self) -> None:
        self.store.close()


def _needs_server(factory: Factory, request: pytest.FixtureRequest) -> None:
    if factory.name == "postgresql":
        request.getfixturevalue("postgres")  # started once; skips without a server


@pytest.fixture(params=FACTORIES, ids=lambda f: f.name)
def factory(request: pytest.FixtureRequest) -> Factory:
    result: Factory = request.param
    _needs_server(result, request)
    return result


@pytest.fixture
def unstarted(factory: Factory, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(factory, tmp_path / "data" / "brokerd.sqlite3")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def h(unstarted: Harness) -> Harness:
    return unstarted.start()


def batch(*messages: Message) -> Batch:
    b = Batch()
    for m in messages:
        b.insert(m)
    return b


def topology() -> Batch:
    b = Batch()
    b.put_exchange("ex", "topic")
    b.put_queue("q", {"max_deliveries": 3})
    b.put_queue("q2", {})
    b.put_binding("q", "ex", "a.*")
    return b


# --- ordering ----------------------------------------------------------------------------


def test_batches_apply_in_submission_order_and_report_in_that_order(h: Harness) -> None:
    order: list[int] = []
    steps: list[Callable[[Batch], None]] = [
        lambda b: b.put_queue("q", {"v": 1}),
        lambda b: b.put_queue("q", {"v": 2}),
        lambda b: b.insert(msg(1, seq=1)),
        lambda b: b.delete_queue("q"),
        lambda b: (b.put_queue("q", {"v": 3}), b.insert(msg(2, seq=2))),
    ]
    for i, step in enumerate(steps):
        b = Batch()
        step(b)
        h.store.commit(b, lambda err, i=i: order.append(i if err is None else -1 - i))
    h.loop.run_until(lambda: len(order) == len(steps))
    assert order == list(range(len(steps)))
    rec = h.restart()
    assert [(q.name, q.options) for q in rec.queues] == [("q", {"v": 3})]
    assert h.ready_ids() == [2]


def test_steps_and_row_operations_apply_in_batch_order(h: Harness) -> None:
    b = Batch()
    b.insert(msg(1, seq=1))
    b.purge_ready("q", 0, 0)  # a purge...
    b.insert(msg(2, seq=2))  # ...then a publish
    b.put_schedule("s", "every 1", "", "q", b"x", b"\x80", None, T0 + 1)
    b.delete_schedule("s")
    b.put_schedule("s", "every 2", "", "q", b"y", b"\x80", None, T0 + 2)
    assert h.commit(b) is None
    assert h.ready_ids() == [2]
    assert [r[1] for r in h.read(Query.SCHEDULES)] == ["every 2"]


def test_a_read_sees_the_commits_submitted_before_it_and_none_after(h: Harness) -> None:
    events: list[Any] = []
    h.store.commit(batch(msg(1, seq=1)), lambda e: events.append(("commit", 1, e)))
    h.store.load_ready("q", 0, 0, 10, lambda r: events.append(("ready", r)))
    later = batch(msg(2, seq=2), msg(3, ready_at=T0 + 5))
    later.put_result("t", "SUCCESS", b"42", T0 + 100, T0)
    h.store.commit(later, lambda e: events.append(("commit", 2, e)))
    h.store.load_ready("q", 0, 0, 10, lambda r: events.append(("ready", r)))
    h.store.load_delayed(EVERYTHING, 10, lambda r: events.append(("delayed", r)))
    h.store.read(Query.RESULTS, (("t",), T0, 1000), lambda r: events.append(("results", r)))
    h.loop.run_until(lambda: len(events) == 6)
    assert events[0] == ("commit", 1, None)
    assert events[1][0] == "ready" and [m.id for m in events[1][1]] == [1]
    assert events[2] == ("commit", 2, None)
    assert events[3][0] == "ready" and [m.id for m in events[3][1]] == [1, 2]
    assert events[4][0] == "delayed" and [m.id for m in events[4][1]] == [3]
    assert events[5][0] == "results" and [tuple(r) for r in events[5][1]] == [
        ("t", "SUCCESS", b"42", T0 + 100, 2)
    ]


def test_done_callbacks_run_from_the_loop_never_inside_the_call(h: Harness) -> None:
    threads: list[int] = []

    def done(_: Any) -> None:
        threads.append(threading.get_ident())

    h.store.commit(batch(msg(1, seq=1)), done)
    assert threads == []
    h.store.load_ready("q", 0, 0, 10, done)
    assert threads == []
    h.store.load_delayed(EVERYTHING, 10, done)
    assert threads == []
    h.store.read(Query.REVOCATIONS, (), done)
    assert threads == []
    h.loop.run_until(lambda: len(threads) == 4)
    assert set(threads) == {h.loop.thread}


def test_a_callback_may_submit_more_work(h: Harness) -> None:
    ran: list[str] = []

    def first(err: BaseException | None) -> None:
        ran.append("first")
        h.store.commit(Batch(), lambda e: ran.append("second"))

    h.store.commit(Batch(), first)
    h.loop.run_until(lambda: len(ran) == 2)
    assert ran == ["first", "second"]


def durable_batch(*messages: Message) -> Batch:
    """A batch whose commit answers a promise of durability (a stored publish's confirm)."""
    b = batch(*messages)
    b.confirm(object(), 1, 2, durable=True)
    return b


@pytest.mark.parametrize("promise", [True, False], ids=["durable", "plain"])
def test_a_commit_is_reported_written_then_done_from_the_loop(h: Harness, promise: bool) -> None:
    """``written`` (the batch is applied and visible: its messages may be
    delivered) comes first, ``done`` (durable: confirms may go out) after it,
    both from the loop, never inside the call."""
    events: list[Any] = []
    b = durable_batch(msg(1, seq=1)) if promise else batch(msg(1, seq=1))
    h.store.commit(b, lambda e: events.append(("done", e)), lambda: events.append("written"))
    assert events == []
    h.loop.run_until(lambda: len(events) == 2)
    assert events == ["written", ("done", None)]
    assert h.ready_ids() == [1]


def test_written_and_done_keep_submission_order_across_batches(unstarted: Harness) -> None:
    h = unstarted
    events: list[Any] = []
    for i in range(1, 4):
        b = durable_batch(msg(i, seq=i)) if i != 2 else batch(msg(i, seq=i))
        h.store.commit(
            b,
            lambda e, i=i: events.append(("done", i, e)),
            lambda i=i: events.append(("written", i)),
        )
    h.start()
    h.loop.run_until(lambda: len(events) == 6)
    written = [e[1] for e in events if e[0] == "written"]
    done = [e[1] for e in events if e[0] == "done"]
    assert written == [1, 2, 3] and done == [1, 2, 3]
    for i in (1, 2, 3):  # each batch: written before done
        assert events.index(("written", i)) < events.index(("done", i, None))


# --- failure -------------------------------------------------------------------------------


def test_a_failed_commit_applies_nothing_of_its_group_and_tells_every_batch(
    unstarted: Harness,
) -> None:
    """Submitted before the store starts, so a store that groups commits may
    group these. Whatever the grouping, a batch told None is wholly applied,
    a batch told an error has nothing applied, and the batch that cannot apply
    is told an error. A batch that applied nothing is never reported written
    (its messages must not be delivered)."""
    h = unstarted
    first = batch(msg(1, seq=1))
    first.put_queue("q", {})
    clash = durable_batch(msg(2, seq=2), msg(5, seq=5), msg(5, seq=6))  # duplicate message id
    clash.put_exchange("ex", "direct")
    last = batch(msg(3, seq=3))
    last.put_result("t", "SUCCESS", b"", T0 + 100, T0)
    outcomes: list[list[BaseException | None]] = []
    written: list[bool] = []
    for i, b in enumerate((first, clash, last)):
        out: list[BaseException | None] = []
        outcomes.append(out)
        written.append(False)
        h.store.commit(b, out.append, lambda i=i: written.__setitem__(i, True))
    h.start()
    h.loop.run_until(lambda: all(outcomes))
    first_err, clash_err, last_err = (out[0] for out in outcomes)
    assert clash_err is not None
    assert written == [first_err is None, False, last_err is None]
    rec = h.restart()
    ready = h.ready_ids()
    assert (1 in ready) == (first_err is None) == (rec.queues != [])
    assert 2 not in ready and 5 not in ready and rec.exchanges == []
    assert (3 in ready) == (last_err is None) == (h.read(Query.RESULTS, ("t",), T0, 1000) != [])
    # The store stays usable after a failed group.
    assert h.commit(batch(msg(2, seq=2))) is None
    assert 2 in h.ready_ids()


# --- message pages ---------------------------------------------------------------------------


def test_load_ready_pages_by_queue_priority_and_seq_above_the_cursor(h: Harness) -> None:
    b = Batch()
    for i in range(1, 21):
        b.insert(msg(i, seq=100 + i, priority=i % 2))
    b.insert(msg(99, "other", seq=1))
    b.insert(msg(50, ready_at=T0 + 1))  # delayed: never in ready pages
    h.commit(b)
    assert h.ready_ids(prio=0) == list(range(2, 21, 2))
    page1 = h.ready(prio=1, limit=4)
    assert [m.id for m in page1] == [1, 3, 5, 7]
    last_seq = page1[-1].seq
    assert last_seq is not None
    assert [m.id for m in h.ready(prio=1, after=last_seq, limit=4)] == [9, 11, 13, 15]
    assert h.ready(prio=1, after=10_000) == []
    assert h.ready_ids("other") == [99]


def test_load_ready_returns_in_seq_order_not_id_order(h: Harness) -> None:
    h.commit(batch(msg(1, seq=30), msg(2, seq=10), msg(3, seq=20)))
    assert h.ready_ids() == [2, 3, 1]


def test_load_ready_stops_once_the_bodies_read_reach_max_bytes(h: Harness) -> None:
    h.commit(batch(*(msg(i, seq=i, body=b"x" * 10 * KIB) for i in range(1, 11))))
    assert h.ready_ids(max_bytes=None) == list(range(1, 11))
    assert h.ready_ids(max_bytes=30 * KIB) == [1, 2, 3]
    assert h.ready_ids(max_bytes=25 * KIB) == [1, 2, 3]  # the row reaching the budget is kept
    assert h.ready_ids(limit=2, max_bytes=1024 * KIB) == [1, 2]  # the row limit still applies


def test_load_ready_returns_at_least_one_row_however_small_the_budget(h: Harness) -> None:
    h.commit(batch(msg(1, seq=1, body=bytes(100 * KIB)), msg(2, seq=2, body=b"x")))
    assert h.ready_ids(max_bytes=1) == [1]


def test_a_read_cut_short_leaves_nothing_open_behind_it(h: Harness) -> None:
    h.commit(batch(*(msg(i, seq=i, body=bytes(10 * KIB)) for i in range(1, 6))))
    assert h.ready_ids(max_bytes=1) == [1]
    assert h.commit(batch(msg(6, seq=6))) is None
    assert h.ready_ids() == [1, 2, 3, 4, 5, 6]


def test_load_delayed_pages_by_the_ready_at_and_id_horizon(h: Harness) -> None:
    h.commit(
        batch(
            msg(1, ready_at=T0 + 30),
            msg(2, ready_at=T0 + 10),
            msg(3, ready_at=T0 + 10),
            msg(4, "other", ready_at=T0 + 20),
            msg(5, seq=1),  # ready: never in delayed loads
        )
    )
    assert [m.id for m in h.delayed()] == [2, 3, 4, 1]
    assert [m.id for m in h.delayed((T0 + 10, 2), 2)] == [3, 4]
    assert [m.id for m in h.delayed((T0 + 10, 3))] == [4, 1]
    assert h.delayed((T0 + 30, 1)) == []


def test_load_delayed_stops_once_the_bodies_read_reach_max_bytes(h: Harness) -> None:
    h.commit(batch(*(msg(i, ready_at=T0 + i, body=bytes(10 * KIB)) for i in range(1, 6))))
    assert [m.id for m in h.delayed(max_bytes=20 * KIB)] == [1, 2]
    assert [m.id for m in h.delayed(max_bytes=1)] == [1]
    assert [m.id for m in h.delayed(max_bytes=None)] == [1, 2, 3, 4, 5]


def test_a_message_reads_back_exactly_as_inserted(h: Harness) -> None:
    m = msg(1, seq=10, headers={"k": "v", "n": 3, "b": b"\x01"}, body=b"\x00\xffbin")
    m.expires_at = T0 + 5
    h.commit(batch(m))
    (got,) = h.ready()
    for slot in Message.__slots__:
        assert getattr(got, slot) == getattr(m, slot), slot
    assert isinstance(got.body, bytes)


# --- recover -----------------------------------------------------------------------------------


def test_an_empty_store_recovers_nothing(h: Harness) -> None:
    assert h.restart() == Recovered()


def test_recover_reports_topology_counts_and_the_highest_id_and_seq(h: Harness) -> None:
    b = topology()
    for i in range(1, 6):
        b.insert(msg(i, seq=i))
    b.insert(msg(6, priority=3, seq=6))
    b.insert(msg(7, "q2", seq=7))
    b.insert(msg(8, ready_at=T0 + 100))  # delayed, not due
    assert h.commit(b) is None
    rec = h.restart(T0)
    assert rec.exchanges == [("ex", "topic")]
    assert sorted((q.name, q.options) for q in rec.queues) == [
        ("q", {"max_deliveries": 3}),
        ("q2", {}),
    ]
    assert rec.bindings == [("q", "ex", "a.*")]
    assert rec.ready_counts == {("q", 0): 5, ("q", 3): 1, ("q2", 0): 1}
    assert rec.delayed_counts == {"q": 1}
    assert rec.max_id == 8
    assert rec.max_seq == 7


def test_recover_makes_due_delayed_messages_ready_in_id_order(h: Harness) -> None:
    h.commit(
        batch(
            msg(1, seq=1),
            msg(5, ready_at=T0 + 10),  # due at restart
            msg(3, ready_at=T0 + 50),  # due at restart (exactly)
            msg(4, ready_at=T0 + 500),  # not due
            msg(2, seq=2),
        )
    )
    rec = h.restart(T0 + 50)
    assert rec.ready_counts == {("q", 0): 4}
    assert rec.delayed_counts == {"q": 1}
    ready = h.ready()
    assert [m.id for m in ready] == [1, 2, 3, 5]
    assert all(m.ready_at is None for m in ready)
    seqs = [m.seq for m in ready]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert rec.max_seq == seqs[-1]
    (still,) = h.delayed()
    assert (still.id, still.ready_at, still.seq) == (4, T0 + 500, None)
    # The conversion is stored: recovering again finds the same state.
    rec2 = h.restart(T0 + 50)
    assert rec2.ready_counts == rec.ready_counts
    assert rec2.max_seq == rec.max_seq


# --- every operation kind, as seen through recover() and the reads -------------------------------


def test_every_operation_kind_is_covered_here() -> None:
    """A new ``Op`` needs a contract test below (and a statement in every store)."""
    covered = {
        Op.INSERT_MESSAGE,
        Op.UPDATE_MESSAGE,
        Op.DELETE_MESSAGE,
        Op.PUT_RESULT,
        Op.PUT_RESULT_KEEP_FINAL,
        Op.REVOKE_RESULT,
        Op.PUT_REVOCATION,
        Op.PUT_SCHEDULE,
        Op.SCHEDULE_RAN,
        Op.PUT_EXCHANGE,
        Op.DELETE_EXCHANGE,
        Op.PUT_QUEUE,
        Op.DELETE_QUEUE,
        Op.PURGE_READY,
        Op.PUT_BINDING,
        Op.DELETE_BINDING,
        Op.DELETE_SCHEDULE,
        Op.EXPIRE_RESULTS,
        Op.EXPIRE_REVOCATIONS,
        Op.DELETE_RESULT,
        Op.PUT_GROUP,
        Op.PUT_GROUP_MEMBER,
        Op.DELETE_GROUP_MEMBERS,
        Op.EXPIRE_GROUPS,
        Op.PUT_USER,
        Op.DELETE_USER,
        Op.PUT_PERMISSION,
        Op.DELETE_PERMISSION,
        Op.PUT_VHOST,
        Op.DELETE_VHOST,
    }
    assert covered == set(Op)
    assert {
        Query.EARLIEST_RESULT_EXPIRY,
        Query.RESULTS,
        Query.RESULT_SIZES,
        Query.REVOCATIONS,
        Query.SCHEDULES,
        Query.GROUPS,
        Query.GROUP_MEMBERS,
        Query.USERS,
        Query.PERMISSIONS,
        Query.VHOSTS,
    } == set(Query)


def test_update_message_stores_its_mutable_state(h: Harness) -> None:
    m = msg(1, seq=1)
    h.commit(batch(m, msg(2, seq=2)))
    b = Batch()
    m.queue, m.seq, m.attempts, m.headers, m.expires_at = "dlq", 7, 2, {"x-death-count": 1}, T0
    b.update(m)
    m2 = msg(2, seq=None, ready_at=T0 + 60, attempts=1)
    b.update(m2)  # back to delayed
    h.commit(b)
    (moved,) = h.ready("dlq")
    assert (moved.id, moved.seq, moved.attempts, moved.headers, moved.expires_at) == (
        1,
        7,
        2,
        {"x-death-count": 1},
        T0,
    )
    assert h.ready() == []
    (delayed,) = h.delayed()
    assert (delayed.id, delayed.seq, delayed.ready_at, delayed.attempts) == (2, None, T0 + 60, 1)


def test_delete_message_removes_only_that_row(h: Harness) -> None:
    h.commit(batch(msg(1, seq=1), msg(2, seq=2), msg(3, ready_at=T0 + 9)))
    b = Batch()
    b.delete(1)
    b.delete(3)
    b.delete(404)  # no such row: nothing happens
    assert h.commit(b) is None
    assert h.ready_ids() == [2]
    assert h.delayed() == []


def test_delete_exchange_takes_its_bindings_with_it(h: Harness) -> None:
    b = topology()
    b.put_exchange("other", "fanout")
    b.put_binding("q2", "other", "")
    b.put_binding("q2", "ex", "b.#")
    h.commit(b)
    b = Batch()
    b.delete_exchange("ex")
    h.commit(b)
    rec = h.restart()
    assert rec.exchanges == [("other", "fanout")]
    assert rec.bindings == [("q2", "other", "")]


def test_put_exchange_and_put_queue_replace_what_was_stored(h: Harness) -> None:
    h.commit(topology())
    b = Batch()
    b.put_exchange("ex", "direct")
    b.put_queue("q", {"lease": 5.0})
    h.commit(b)
    rec = h.restart()
    assert rec.exchanges == [("ex", "direct")]
    assert sorted((q.name, q.options) for q in rec.queues) == [("q", {"lease": 5.0}), ("q2", {})]


def test_queue_options_come_back_as_stored_every_value_type_included(h: Harness) -> None:
    options = {"lease": 5.0, "auto_delete": True, "expires": 0.25, "dead_letter_queue": None}
    b = Batch()
    b.put_queue("q", options)
    b.put_queue("q-int", {"expires": 60, "auto_delete": False})
    h.commit(b)
    rec = h.restart()
    assert sorted((q.name, q.options) for q in rec.queues) == [
        ("q", options),
        ("q-int", {"expires": 60, "auto_delete": False}),
    ]
    stored = next(q.options for q in rec.queues if q.name == "q")
    assert type(stored["auto_delete"]) is bool and type(stored["expires"]) is float


def test_delete_queue_takes_its_bindings_and_all_its_messages(h: Harness) -> None:
    b = topology()
    b.put_binding("q2", "ex", "b")
    b.insert(msg(1, seq=1))
    b.insert(msg(2, ready_at=T0 + 100))
    b.insert(msg(3, "q2", seq=2))
    h.commit(b)
    b = Batch()
    b.delete_queue("q")
    h.commit(b)
    rec = h.restart()
    assert [q.name for q in rec.queues] == ["q2"]
    assert rec.bindings == [("q2", "ex", "b")]
    assert rec.ready_counts == {("q2", 0): 1}
    assert rec.delayed_counts == {}
    assert h.ready_ids("q2") == [3]


def test_purge_ready_deletes_ready_rows_above_the_cursor_only(h: Harness) -> None:
    h.commit(
        batch(
            msg(1, seq=1),
            msg(2, seq=2),
            msg(3, seq=3),
            msg(4, seq=4, priority=1),
            msg(5, ready_at=T0 + 100),  # delayed: stays
            msg(6, "q2", seq=5),  # other queue: stays
        )
    )
    b = Batch()
    b.purge_ready("q", 0, 1)  # the cursor: seq 1 is in memory, deleted by id if at all
    h.commit(b)
    assert h.ready_ids() == [1]
    assert h.ready_ids(prio=1) == [4]
    assert [m.id for m in h.delayed()] == [5]
    assert h.ready_ids("q2") == [6]


def test_put_binding_is_idempotent_and_delete_binding_removes_exactly_one(h: Harness) -> None:
    b = topology()
    b.put_binding("q", "ex", "a.*")  # again
    b.put_binding("q", "ex", "b.*")
    b.put_binding("q2", "ex", "a.*")
    h.commit(b)
    b = Batch()
    b.delete_binding("q", "ex", "a.*")
    b.delete_binding("q", "ex", "no.such")
    h.commit(b)
    assert sorted(h.restart().bindings) == [("q", "ex", "b.*"), ("q2", "ex", "a.*")]


def _results(h: Harness, *task_ids: str, now: float = T0) -> dict[str, tuple[Any, ...]]:
    return {r[0]: (r[1], bytes(r[2]), r[3]) for r in h.read(Query.RESULTS, task_ids, now, 1 << 30)}


def test_results_are_read_without_payloads_larger_than_the_cap(h: Harness) -> None:
    """ResultGet checks sizes before it holds payloads: a stored result
    larger than the reader's cap comes back as its size only."""
    b = Batch()
    b.put_result("small", "SUCCESS", b"x" * 10, T0 + 100, T0)
    b.put_result("big", "FAILURE", b"y" * 5000, T0 + 100, T0)
    b.put_result("gone", "SUCCESS", b"z" * 5000, T0 - 1, T0 - 2)
    h.commit(b)
    ids = ("small", "big", "gone", "never")
    assert sorted(h.read(Query.RESULTS, ids, T0, 100)) == [
        ("big", "FAILURE", None, T0 + 100, 5000),
        ("small", "SUCCESS", b"x" * 10, T0 + 100, 10),
    ]
    assert sorted(h.read(Query.RESULTS, ids, T0, 5000))[0] == (
        "big",
        "FAILURE",
        b"y" * 5000,
        T0 + 100,
        5000,
    )
    assert sorted(h.read(Query.RESULT_SIZES, ids, T0)) == [
        ("big", "FAILURE", 5000),
        ("small", "SUCCESS", 10),
    ]


def test_put_result_never_lets_a_non_final_state_replace_an_unexpired_final_one(
    h: Harness,
) -> None:
    b = Batch()
    b.put_result("a", "STARTED", b"", T0 + 100, T0)
    b.put_result("a", "SUCCESS", b"42", T0 + 100, T0)  # final replaces anything
    b.put_result("a", "STARTED", b"", T0 + 200, T0)  # ignored
    b.put_result("b", "FAILURE", b"boom", T0 + 10, T0)
    b.put_result("b", "RETRY", b"", T0 + 300, T0 + 20)  # the final one had expired
    b.put_result("c", "PENDING", b"", T0 + 100, T0)
    b.put_result("c", "STARTED", b"s", T0 + 150, T0)  # non-final replaces non-final
    b.put_result("d", "REVOKED", b"", T0 + 100, T0)
    b.put_result("d", "SUCCESS", b"late", T0 + 100, T0)  # final replaces final
    h.commit(b)
    assert _results(h, "a", "b", "c", "d", "e") == {
        "a": ("SUCCESS", b"42", T0 + 100),
        "b": ("RETRY", b"", T0 + 300),
        "c": ("STARTED", b"s", T0 + 150),
        "d": ("SUCCESS", b"late", T0 + 100),
    }


def test_put_result_keep_final_never_replaces_an_unexpired_final_result(h: Harness) -> None:
    b = Batch()
    b.put_result("a", "SUCCESS", b"first", T0 + 100, T0)
    b.put_result_keep_final("a", "SUCCESS", b"second", T0 + 200, T0)  # kept: a's first
    b.put_result("b", "STARTED", b"", T0 + 100, T0)
    b.put_result_keep_final("b", "FAILURE", b"f", T0 + 100, T0)  # replaces a non-final
    b.put_result_keep_final("c", "SUCCESS", b"new", T0 + 100, T0)  # nothing there
    b.put_result("d", "FAILURE", b"old", T0 + 10, T0)
    b.put_result_keep_final("d", "SUCCESS", b"d2", T0 + 300, T0 + 20)  # d's had expired
    b.put_result_keep_final("e", "SUCCESS", b"e1", T0 + 100, T0)
    b.put_result("e", "FAILURE", b"e2", T0 + 100, T0)  # a plain final still replaces
    h.commit(b)
    assert _results(h, "a", "b", "c", "d", "e") == {
        "a": ("SUCCESS", b"first", T0 + 100),
        "b": ("FAILURE", b"f", T0 + 100),
        "c": ("SUCCESS", b"new", T0 + 100),
        "d": ("SUCCESS", b"d2", T0 + 300),
        "e": ("FAILURE", b"e2", T0 + 100),
    }


def test_results_read_returns_only_the_asked_unexpired_results(h: Harness) -> None:
    b = Batch()
    b.put_result("old", "SUCCESS", b"", T0 + 10, T0)
    b.put_result("new", "SUCCESS", b"", T0 + 100, T0)
    b.put_result("other", "SUCCESS", b"", T0 + 100, T0)
    h.commit(b)
    assert set(_results(h, "old", "new", now=T0 + 10)) == {"new"}  # expires_at > now
    assert set(_results(h, "old", "new", now=T0)) == {"old", "new"}
    assert _results(h, "missing") == {}


def test_revoke_result_keeps_success_and_failure_and_only_lengthens_revoked(
    h: Harness,
) -> None:
    b = Batch()
    b.put_result("ok", "SUCCESS", b"1", T0 + 100, T0)
    b.put_result("bad", "FAILURE", b"2", T0 + 100, T0)
    b.put_result("gone", "SUCCESS", b"3", T0 + 5, T0)
    b.put_result("running", "STARTED", b"", T0 + 100, T0)
    b.revoke_result("long", T0 + 500, T0)
    h.commit(b)
    b = Batch()
    for task_id in ("ok", "bad", "gone", "running", "fresh"):
        b.revoke_result(task_id, T0 + 200, T0 + 10)
    b.revoke_result("long", T0 + 300, T0 + 10)  # shorter: the longer expiry stays
    h.commit(b)
    assert _results(h, "ok", "bad", "gone", "running", "fresh", "long", now=T0 + 10) == {
        "ok": ("SUCCESS", b"1", T0 + 100),
        "bad": ("FAILURE", b"2", T0 + 100),
        "gone": ("REVOKED", b"", T0 + 200),
        "running": ("REVOKED", b"", T0 + 200),
        "fresh": ("REVOKED", b"", T0 + 200),
        "long": ("REVOKED", b"", T0 + 500),
    }


def test_expire_results_deletes_expired_ones_and_the_earliest_expiry_follows(h: Harness) -> None:
    assert h.read(Query.EARLIEST_RESULT_EXPIRY) in ([], [(None,)])
    b = Batch()
    b.put_result("a", "SUCCESS", b"", T0 + 10, T0)
    b.put_result("b", "SUCCESS", b"", T0 + 20, T0)
    b.put_result("c", "PENDING", b"", T0 + 30, T0)
    h.commit(b)
    assert h.read(Query.EARLIEST_RESULT_EXPIRY) == [(T0 + 10,)]
    b = Batch()
    b.expire_results(T0 + 20)  # expires_at <= now
    h.commit(b)
    assert h.read(Query.EARLIEST_RESULT_EXPIRY) == [(T0 + 30,)]
    assert set(_results(h, "a", "b", "c")) == {"c"}


def test_revocations_only_lengthen_come_by_expiry_and_expire(h: Harness) -> None:
    b = Batch()
    b.put_revocation("a", T0 + 50)
    b.put_revocation("b", T0 + 20)
    b.put_revocation("a", T0 + 30)  # shorter: ignored
    b.put_revocation("c", T0 + 10)
    b.put_revocation("c", T0 + 40)  # longer: kept
    h.commit(b)
    assert h.read(Query.REVOCATIONS) == [("b", T0 + 20), ("c", T0 + 40), ("a", T0 + 50)]
    b = Batch()
    b.expire_revocations(T0 + 40)
    h.commit(b)
    assert h.read(Query.REVOCATIONS) == [("a", T0 + 50)]


def test_schedules_are_put_replaced_marked_as_run_and_deleted(h: Harness) -> None:
    props = msgpack.packb({"priority": 3})
    b = Batch()
    b.put_schedule("s1", "every 5", "ex", "k", b"body", props, None, T0 + 5)
    b.put_schedule("s2", "cron * * * * *", "", "q", b"", b"\x80", T0, T0 + 60)
    b.put_schedule("gone", "every 1", "", "q", b"", b"\x80", None, T0 + 1)
    h.commit(b)
    b = Batch()
    b.schedule_ran("s1", T0 + 5, T0 + 10)
    b.put_schedule("s2", "cron 0 * * * *", "", "q2", b"new", b"\x80", T0, T0 + 3600)
    b.delete_schedule("gone")
    h.commit(b)
    rows = sorted(h.read(Query.SCHEDULES))
    assert rows == [
        ("s1", "every 5", "ex", "k", b"body", props, T0 + 5, T0 + 10),
        ("s2", "cron 0 * * * *", "", "q2", b"new", b"\x80", T0, T0 + 3600),
    ]


def test_users_and_permissions_are_put_replaced_and_deleted_together(h: Harness) -> None:
    b = Batch()
    b.put_user("app", "scrypt$h1", "monitoring")
    b.put_user("ops", "scrypt$h2", "administrator,management")
    b.put_user("gone", "scrypt$h3", "")
    b.put_permission("app", "/", "^app", ".*", "")
    b.put_permission("gone", "/", ".*", ".*", ".*")
    b.put_permission("gone", "other", ".*", ".*", ".*")
    b.put_permission("ops", "/", ".*", ".*", ".*")
    h.commit(b)
    b = Batch()
    b.put_user("app", "scrypt$h4", "")
    b.put_permission("app", "/", "^app", "^app", "^app")
    b.delete_user("gone")
    b.delete_permission("ops", "/")
    h.commit(b)
    assert sorted(h.read(Query.USERS)) == [
        ("app", "scrypt$h4", ""),
        ("ops", "scrypt$h2", "administrator,management"),
    ]
    assert h.read(Query.PERMISSIONS) == [("app", "/", "^app", "^app", "^app")]


def test_delete_vhost_drops_its_rows_under_its_prefix_and_nothing_else(h: Harness) -> None:
    p = "\x1fv\x1fa\x1f"  # vhost "a"; "ab" shares no prefix with it
    other = "\x1fv\x1fab\x1f"
    b = Batch()
    for v in ("a", "ab", "b"):
        b.put_vhost(v)
    b.put_vhost("a")  # twice: kept once
    h.commit(b)
    b = Batch()
    b.put_user("app", "scrypt$h", "")
    b.put_permission("app", "a", ".*", ".*", ".*")
    b.put_permission("app", "/", ".*", ".*", ".*")
    for prefix in (p, other, ""):
        b.put_result(prefix + "t", "SUCCESS", b"1", T0 + 100, T0)
        b.put_revocation(prefix + "t", T0 + 100)
        b.put_schedule(prefix + "s", "every 1", "", prefix + "q", b"x", b"\x80", None, T0 + 1)
        b.put_group(prefix + "g", 2, 1, None, False, T0 + 100)
        b.put_group_member(prefix + "g", "m")
    h.commit(b)
    b = Batch()
    b.delete_vhost("a", p)
    h.commit(b)
    assert h.read(Query.VHOSTS) == [("ab",), ("b",)]
    assert h.read(Query.PERMISSIONS) == [("app", "/", ".*", ".*", ".*")]
    assert set(_results(h, p + "t", other + "t", "t")) == {other + "t", "t"}
    assert sorted(r[0] for r in h.read(Query.REVOCATIONS)) == sorted([other + "t", "t"])
    assert sorted(r[0] for r in h.read(Query.SCHEDULES)) == sorted([other + "s", "s"])
    assert sorted(r[0] for r in h.read(Query.GROUPS)) == sorted([other + "g", "g"])
    assert sorted(r[0] for r in h.read(Query.GROUP_MEMBERS)) == sorted([other + "g", "g"])


def test_delete_result_forgets_a_result_whatever_its_state(h: Harness) -> None:
    b = Batch()
    b.put_result("done", "SUCCESS", b"1", T0 + 100, T0)
    b.put_result("running", "STARTED", b"", T0 + 100, T0)
    b.put_result("kept", "FAILURE", b"2", T0 + 100, T0)
    h.commit(b)
    b = Batch()
    b.delete_result("done")
    b.delete_result("running")
    b.delete_result("never-stored")
    h.commit(b)
    assert set(_results(h, "done", "running", "kept")) == {"kept"}


def test_delete_result_is_ordered_against_the_result_rows_around_it(h: Harness) -> None:
    b = Batch()
    b.put_result("t", "SUCCESS", b"old", T0 + 100, T0)
    h.commit(b)
    b = Batch()
    b.put_result("t", "SUCCESS", b"newer", T0 + 100, T0)
    b.delete_result("t")
    b.put_result("t", "STARTED", b"new", T0 + 100, T0)  # nothing final to protect any more
    h.commit(b)
    assert _results(h, "t") == {"t": ("STARTED", b"new", T0 + 100)}


def _groups(h: Harness) -> dict[str, tuple[Any, ...]]:
    return {r[0]: r[1:] for r in h.read(Query.GROUPS)}


def _members(h: Harness) -> set[tuple[Any, ...]]:
    return set(h.read(Query.GROUP_MEMBERS))


def test_groups_are_put_replaced_and_their_members_are_a_set(h: Harness) -> None:
    b = Batch()
    b.put_group("g", 3, 1, None, False, T0 + 10)
    b.put_group_member("g", "a")
    b.put_group_member("g", "b")
    b.put_group_member("g", "a")  # already there: ignored
    b.put_group("g", 3, 2, None, False, T0 + 20)  # replaces
    b.put_group("h", 1, 1, "x", True, T0 + 5)
    h.commit(b)
    assert _groups(h) == {"g": (3, 2, None, 0, T0 + 20), "h": (1, 1, "x", 1, T0 + 5)}
    assert _members(h) == {("g", "a"), ("g", "b")}
    rec_groups = _groups(h)
    h.restart()
    assert _groups(h) == rec_groups


def test_delete_group_members_is_ordered_against_the_member_rows_around_it(h: Harness) -> None:
    b = Batch()
    b.put_group_member("g", "a")
    b.put_group_member("other", "z")
    b.delete_group_members("g")
    b.put_group_member("g", "b")  # after the step: stays
    h.commit(b)
    assert _members(h) == {("other", "z"), ("g", "b")}


def test_expire_groups_deletes_expired_groups_and_their_members(h: Harness) -> None:
    b = Batch()
    b.put_group("old", 2, 1, None, False, T0 + 10)
    b.put_group_member("old", "a")
    b.put_group("new", 2, 1, None, False, T0 + 30)
    b.put_group_member("new", "b")
    h.commit(b)
    b = Batch()
    b.expire_groups(T0 + 10)  # expires_at <= now
    h.commit(b)
    assert set(_groups(h)) == {"new"}
    assert _members(h) == {("new", "b")}


# --- crashes (durable stores) --------------------------------------------------------------------


@pytest.fixture(params=[f for f in FACTORIES if f.durable], ids=lambda f: f.name)
def durable(request: pytest.FixtureRequest) -> Factory:
    result: Factory = request.param
    _needs_server(result, request)
    return result


class Child:
    """This module run as a process that commits for a crash test and is killed -9."""

    def __init__(self, factory: Factory, path: Path, scenario: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, factory.name, str(path), scenario],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def expect(self, line: str) -> None:
        assert self.proc.stdout is not None
        got = self.proc.stdout.readline().strip()
        assert got == line, f"child said {got!r}, expected {line!r}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=BOUND)
        assert self.proc.returncode == -signal.SIGKILL


@pytest.mark.fault
def test_a_commit_whose_callback_ran_survives_a_kill(durable: Factory, tmp_path: Path) -> None:
    path = tmp_path / "data" / "brokerd.sqlite3"
    child = Child(durable, path, "commit")
    child.expect("committed")
    child.kill()
    h = Harness(durable, path)
    rec = h.restart()
    try:
        assert [q.name for q in rec.queues] == ["q"]
        assert rec.ready_counts == {("q", 0): 100}
        assert h.ready_ids(limit=1000) == list(range(1, 101))
        assert _results(h, "t") == {"t": ("SUCCESS", b"ok", T0 + 100)}
    finally:
        h.close()


@pytest.mark.fault
def test_a_group_killed_before_its_commit_leaves_nothing_of_it(
    durable: Factory, tmp_path: Path
) -> None:
    assert durable.stall_next_group is not None
    path = tmp_path / "data" / "brokerd.sqlite3"
    child = Child(durable, path, "stall")
    child.expect("committed")
    child.expect("stalled 2")  # both batches in one group
    child.kill()
    h = Harness(durable, path)
    rec = h.restart()
    try:
        assert rec.ready_counts == {("q", 0): 1}  # the first commit, nothing of the group
        assert h.ready_ids() == [1]
        assert [q.name for q in rec.queues] == ["q"]
        assert _results(h, "t") == {}
    finally:
        h.close()


@pytest.mark.fault
def test_a_commit_reported_written_survives_a_kill_before_its_sync(
    durable: Factory, tmp_path: Path
) -> None:
    """Messages are delivered once their commit is written, before its sync:
    a crash of the broker process (not a power cut) must not lose them."""
    if durable.block_syncs is None:
        pytest.skip(f"{durable.name} reports a commit written only when it is durable")
    path = tmp_path / "data" / "brokerd.sqlite3"
    child = Child(durable, path, "written")
    child.expect("written")
    child.kill()
    h = Harness(durable, path)
    rec = h.restart()
    try:
        assert rec.ready_counts == {("q", 0): 100}
        assert h.ready_ids(limit=1000) == list(range(1, 101))
    finally:
        h.close()


def _child(name: str, path: str, scenario: str) -> None:
    """Commit, say so, and wait to be killed. With ``scenario`` "stall", the
    store is then opened again and two batches are queued before it starts,
    so they form one group, which stalls before its commit."""
    factory = BY_NAME[name]
    loop = Loop()
    opened = factory.open(Path(path), loop.post)
    opened.store.recover(T0)
    opened.start()
    if scenario == "written":
        assert factory.block_syncs is not None
        factory.block_syncs(opened.store)
        b = durable_batch(*(msg(i, seq=i) for i in range(1, 101)))
        b.put_queue("q", {})
        written: list[bool] = []
        opened.store.commit(b, lambda e: print("done", e, flush=True), lambda: written.append(True))
        loop.run_until(lambda: bool(written))
        print("written", flush=True)
        threading.Event().wait()  # until killed
    first = Batch()
    first.put_queue("q", {})
    if scenario == "commit":
        for i in range(1, 101):
            first.insert(msg(i, seq=i))
        first.put_result("t", "SUCCESS", b"ok", T0 + 100, T0)
    else:
        first.insert(msg(1, seq=1))
    out: list[BaseException | None] = []
    opened.store.commit(first, out.append)
    loop.run_until(lambda: bool(out))
    assert out == [None]
    print("committed", flush=True)
    if scenario == "stall":
        assert factory.stall_next_group is not None
        opened.store.close()
        opened = factory.open(Path(path), loop.post)
        opened.store.recover(T0)
        group = [batch(msg(2, seq=2), msg(3, seq=3)), batch(msg(4, seq=4))]
        group[0].put_queue("q2", {})
        group[1].put_result("t", "SUCCESS", b"", T0 + 100, T0)
        for b in group:
            opened.store.commit(b, out.append)
        factory.stall_next_group(lambda n: print(f"stalled {n}", flush=True))
        opened.start()
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    _child(*sys.argv[1:4])
