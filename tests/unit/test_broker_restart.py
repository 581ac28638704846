"""Restart tests: a Broker on a SqliteStore, closed and rebuilt from disk.

The store's writer thread posts callbacks to a queue that the test thread runs
(as the event loop would), so all broker code runs on the test thread. Time is
a FakeClock; waits for the writer are bounded, never timed.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from brokerd.broker import Broker
from brokerd.clock import FakeClock
from brokerd.queues import WINDOW, Connection, Consumer, Delivery
from brokerd.storage import SqliteStore
from brokerd_protocol import ErrorCode


class Peer:
    def __init__(self) -> None:
        self.writable = True
        self.got: list[tuple[int, bytes, int, dict[str, Any] | None]] = []
        self.confirmed: list[int] = []
        self.errors: list[tuple[int, ErrorCode]] = []

    def send_delivery(self, consumer: Consumer, d: Delivery) -> None:
        m = d.message
        self.got.append((d.id, m.body, m.attempts + 1, dict(m.headers) if m.headers else None))

    def send_confirms(self, routed: list[int], unroutable: list[int]) -> None:
        self.confirmed += routed + unroutable

    def send_publish_error(self, seq: int, code: ErrorCode, message: str) -> None:
        self.errors.append((seq, code))

    def send_consumer_cancelled(self, consumer_id: int, reason: str) -> None:
        pass

    def bodies(self) -> list[bytes]:
        return [g[1] for g in self.got]

    def take(self) -> list[tuple[int, bytes, int, dict[str, Any] | None]]:
        got, self.got = self.got, []
        return got


class Node:
    """One broker process's worth of state over a data file."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        self.clock = clock
        self.posted: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        self.store = SqliteStore(path)
        self.recovered = self.store.recover(clock.now())
        self.broker = Broker(self.store, clock)
        self.broker.restore(self.recovered)
        self.store.start(self._post)
        self._seq = 0
        self.settle()

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        self.posted.put((fn, args))

    def settle(self, rounds: int = 1000) -> None:
        """Flush, then run posted callbacks until the writer is idle."""
        for _ in range(rounds):
            self.broker.flush()
            marker: list[Any] = []
            self.store.load_ready("", 0, 0, 1, marker.append)  # a read behind every commit
            ran = 0
            while not marker:
                fn, args = self.posted.get(timeout=30)
                fn(*args)
                ran += 1
            if ran == 1 and not self.broker.batch:
                return
        raise AssertionError("store operations did not settle")

    def connect(self) -> tuple[Connection, Peer]:
        peer = Peer()
        return self.broker.open(peer), peer

    def publish(self, conn: Connection, key: str, body: bytes, exchange: str = "", **p: Any) -> int:
        self._seq += 1
        self.broker.publish(conn, self._seq, exchange, key, body, p)
        return self._seq

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.broker.tick()

    def crash(self) -> None:
        """Stop without closing connections (committed work only survives)."""
        self.store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data" / "brokerd.db"


def test_restart_restores_topology_ready_leased_and_delayed(db: Path, clock: FakeClock) -> None:
    n = Node(db, clock)
    b = n.broker
    b.declare_exchange("ex", "topic", True)
    b.declare_exchange("tmp-ex", "fanout", False)
    b.declare_queue("work", True, {"max_deliveries": 5, "lease": 10})
    b.declare_queue("dlq", True, {})
    b.declare_queue("temp", False, {})
    b.bind("work", "ex", "a.*")
    b.bind("temp", "ex", "a.*")
    conn, peer = n.connect()
    for i in range(1, 5):
        n.publish(conn, "a.b", b"m%d" % i, exchange="ex")
    n.publish(conn, "work", b"soon", delay=5)
    n.publish(conn, "work", b"later", delay=100)
    n.settle()
    assert peer.confirmed == [1, 2, 3, 4, 5, 6]
    b.consume(conn, "work", 2, None)
    (m1, m2) = peer.take()
    assert b.nack(conn, [m1[0]], True, None) == []  # attempts=1 written to disk
    (m1_again,) = peer.take()
    assert m1_again[1:3] == (b"m1", 2)
    assert b.ack(conn, [m2[0]]) == []
    (m3,) = peer.take()  # leased when the broker dies
    n.settle()
    n.crash()

    clock.advance(10)  # "soon" falls due while the broker is down
    n2 = Node(db, clock)
    b2 = n2.broker
    rec = n2.recovered
    assert sorted(rec.exchanges) == [("ex", "topic")]
    assert sorted(q.name for q in rec.queues) == ["dlq", "work"]
    assert rec.bindings == [("work", "ex", "a.*")]
    assert "temp" not in b2.queues and "tmp-ex" not in b2.exchanges
    assert b2.queues["work"].options.max_deliveries == 5
    # m1 and m3 were leased: ready again. m4 ready. "soon" became ready.
    assert b2.queue_stats("work") == {"ready": 4, "leased": 0, "delayed": 1, "consumers": 0}
    conn2, peer2 = n2.connect()
    b2.consume(conn2, "work", 10, None)
    got = peer2.take()
    assert [(body, attempt) for _, body, attempt, _ in got] == [
        (b"m1", 2),  # the nack's attempt survived the restart
        (b"m3", 1),
        (b"m4", 1),
        (b"soon", 1),
    ]
    assert m3[1] == b"m3"
    # Bindings route again; the transient queue's binding is gone with it.
    n2.publish(conn2, "a.z", b"new", exchange="ex")
    n2.settle()
    assert peer2.bodies() == [b"new"]
    assert b2.ack(conn2, list(conn2.deliveries)) == []
    peer2.take()
    n2.advance(89)
    assert peer2.got == []
    n2.advance(2)
    assert peer2.bodies() == [b"later"]
    assert b2.ack(conn2, list(conn2.deliveries)) == []
    n2.settle()
    # The new message's id did not collide with a recovered row.
    assert peer2.errors == [] and peer2.confirmed == [1]
    n2.crash()
    n3 = Node(db, clock)
    assert n3.recovered.ready_counts == {}
    assert n3.recovered.delayed_counts == {}
    n3.crash()


def test_attempts_from_lease_expiry_survive_restart_up_to_max_deliveries(
    db: Path, clock: FakeClock
) -> None:
    n = Node(db, clock)
    b = n.broker
    b.declare_queue("dlq", True, {})
    b.declare_queue("q", True, {"max_deliveries": 3, "dead_letter_queue": "dlq", "lease": 5})
    conn, peer = n.connect()
    n.publish(conn, "q", b"poison")
    n.settle()
    b.consume(conn, "q", 1, None)
    n.advance(5.1)  # first failure (expiry)
    b.heard_from(conn)  # the consumer is alive, just too slow
    n.advance(5.1)  # second failure
    b.heard_from(conn)
    assert [g[2] for g in peer.take()] == [1, 2, 3]
    n.settle()
    n.crash()  # third delivery in flight: not counted as failed

    n2 = Node(db, clock)
    conn2, peer2 = n2.connect()
    n2.broker.consume(conn2, "q", 1, None)
    ((did, body, attempt, _),) = peer2.take()
    assert (body, attempt) == (b"poison", 3)
    n2.broker.nack(conn2, [did], True, None)  # third failure: dead-lettered
    assert peer2.got == []
    assert n2.broker.queue_stats("dlq")["ready"] == 1
    n2.settle()
    n2.crash()

    n3 = Node(db, clock)
    assert n3.broker.queue_stats("q")["ready"] == 0
    assert n3.broker.queue_stats("dlq")["ready"] == 1
    conn3, peer3 = n3.connect()
    n3.broker.consume(conn3, "dlq", 1, None)
    ((_, body, attempt, headers),) = peer3.take()
    assert (body, attempt) == (b"poison", 1)
    assert headers is not None
    assert headers["x-death-reason"] == "max_deliveries"
    assert headers["x-death-queue"] == "q"
    n3.crash()


def test_nack_delay_survives_restart_as_delayed(db: Path, clock: FakeClock) -> None:
    n = Node(db, clock)
    n.broker.declare_queue("q", True, {})
    conn, peer = n.connect()
    n.publish(conn, "q", b"retry")
    n.settle()
    n.broker.consume(conn, "q", 1, None)
    n.broker.nack(conn, [peer.take()[0][0]], True, 60)
    n.settle()
    n.crash()

    clock.advance(30)
    n2 = Node(db, clock)
    assert n2.broker.queue_stats("q") == {"ready": 0, "leased": 0, "delayed": 1, "consumers": 0}
    conn2, peer2 = n2.connect()
    n2.broker.consume(conn2, "q", 1, None)
    n2.advance(29.9)
    assert peer2.got == []
    n2.advance(0.2)
    ((_, body, attempt, _),) = peer2.take()
    assert (body, attempt) == (b"retry", 2)
    n2.crash()


def test_unconfirmed_work_is_not_recovered_but_confirmed_is(db: Path, clock: FakeClock) -> None:
    n = Node(db, clock)
    n.broker.declare_queue("q", True, {})
    conn, peer = n.connect()
    n.publish(conn, "q", b"confirmed")
    n.settle()
    assert peer.confirmed == [1]
    n.publish(conn, "q", b"never-flushed")  # still in broker.batch
    n.crash()
    n2 = Node(db, clock)
    conn2, peer2 = n2.connect()
    n2.broker.consume(conn2, "q", 10, None)
    assert peer2.bodies() == [b"confirmed"]
    n2.crash()


def test_deep_queue_pages_after_restart(db: Path, clock: FakeClock) -> None:
    n = Node(db, clock)
    n.broker.declare_queue("deep", True, {})
    conn, _ = n.connect()
    total = WINDOW + 700
    for i in range(total):
        n.publish(conn, "deep", b"%05d" % i, priority=1 if i % 3 == 0 else 0)
    n.settle()
    n.crash()

    n2 = Node(db, clock)
    q = n2.broker.queues["deep"]
    assert q.mem <= WINDOW
    assert n2.broker.queue_stats("deep")["ready"] == total
    conn2, peer2 = n2.connect()
    n2.broker.consume(conn2, "deep", 500, None)
    received: list[bytes] = []
    for _ in range(total):
        got = peer2.take()
        if not got:
            n2.settle()
            got = peer2.take()
            if not got:
                break
        received.extend(g[1] for g in got)
        n2.broker.ack(conn2, [g[0] for g in got])
        assert q.mem <= WINDOW
    assert len(received) == total
    assert sorted(received) == [b"%05d" % i for i in range(total)]
    # Priority 1 first (FIFO), then priority 0 (FIFO).
    high = [b"%05d" % i for i in range(total) if i % 3 == 0]
    low = [b"%05d" % i for i in range(total) if i % 3 != 0]
    assert received == high + low
    n2.settle()
    n2.crash()
    n3 = Node(db, clock)
    assert n3.recovered.ready_counts == {}
    n3.crash()


def test_purged_and_deleted_queues_stay_that_way(db: Path, clock: FakeClock) -> None:
    n = Node(db, clock)
    b = n.broker
    b.declare_exchange("ex", "direct", True)
    b.declare_queue("purged", True, {})
    b.declare_queue("gone", True, {})
    b.bind("gone", "ex", "k")
    conn, _ = n.connect()
    for i in range(WINDOW + 10):
        n.publish(conn, "purged", b"%d" % i)
    n.publish(conn, "gone", b"x")
    n.publish(conn, "gone", b"y", delay=5)
    n.settle()
    assert b.purge_queue("purged") == WINDOW + 10
    assert b.delete_queue("gone") == 2
    b.delete_exchange("ex")
    n.settle()
    n.crash()
    clock.advance(10)
    n2 = Node(db, clock)
    assert [q.name for q in n2.recovered.queues] == ["purged"]
    assert n2.recovered.exchanges == []
    assert n2.recovered.bindings == []
    assert n2.recovered.ready_counts == {}
    assert n2.recovered.delayed_counts == {}
    n2.crash()
