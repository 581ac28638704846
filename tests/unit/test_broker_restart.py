"""Restarts: a broker on a SqliteStore, crashed and rebuilt from disk.

Only committed work survives, and all of it does: topology, ready and delayed
messages, and delivery attempts (so ``max_deliveries`` still holds across
restarts); leased messages become ready again. ``corekit.DiskEnv`` runs the
store's writer-thread callbacks on the test thread, on a FakeClock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from corekit import DiskEnv

from brokerd.clock import FakeClock
from brokerd.queues import WINDOW


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data" / "brokerd.db"


def test_restart_restores_topology_ready_leased_and_delayed(db: Path, clock: FakeClock) -> None:
    n = DiskEnv(db, clock=clock)
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
    assert b.nack(conn, [m1.delivery], True, None) == []  # attempts=1 written to disk
    (m1_again,) = peer.take()
    assert (m1_again.body, m1_again.attempt) == (b"m1", 2)
    assert b.ack(conn, [m2.delivery]) == []
    (m3,) = peer.take()  # leased when the broker dies
    n.settle()
    n.crash()

    clock.advance(10)  # "soon" falls due while the broker is down
    n2 = DiskEnv(db, clock=clock)
    b2 = n2.broker
    rec = n2.recovered
    assert sorted(rec.exchanges) == [("ex", "topic")]
    assert sorted(q.name for q in rec.queues) == ["dlq", "work"]
    assert rec.bindings == [("work", "ex", "a.*")]
    assert "temp" not in b2.queues and "tmp-ex" not in b2.exchanges
    assert b2.queues["work"].options.max_deliveries == 5
    # m1 and m3 were leased: ready again. m4 ready. "soon" became ready.
    assert b2.queue_stats("work") == {"ready": 4, "leased": 0, "delayed": 1, "consumers": 0}
    conn2, peer2 = n2.consuming("work")
    got = peer2.take()
    assert [(g.body, g.attempt) for g in got] == [
        (b"m1", 2),  # the nack's attempt survived the restart
        (b"m3", 1),
        (b"m4", 1),
        (b"soon", 1),
    ]
    assert m3.body == b"m3"
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
    assert peer2.publish_errors == [] and peer2.confirmed == [1]
    n2.crash()
    n3 = DiskEnv(db, clock=clock)
    assert n3.recovered.ready_counts == {}
    assert n3.recovered.delayed_counts == {}
    n3.crash()


def test_attempts_from_lease_expiry_survive_restart_up_to_max_deliveries(
    db: Path, clock: FakeClock
) -> None:
    n = DiskEnv(db, clock=clock)
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
    assert [g.attempt for g in peer.take()] == [1, 2, 3]
    n.settle()
    n.crash()  # third delivery in flight: not counted as failed

    n2 = DiskEnv(db, clock=clock)
    conn2, peer2 = n2.consuming("q", 1)
    (g,) = peer2.take()
    assert (g.body, g.attempt) == (b"poison", 3)
    n2.broker.nack(conn2, [g.delivery], True, None)  # third failure: dead-lettered
    assert peer2.got == []
    assert n2.broker.queue_stats("dlq")["ready"] == 1
    n2.settle()
    n2.crash()

    n3 = DiskEnv(db, clock=clock)
    assert n3.broker.queue_stats("q")["ready"] == 0
    assert n3.broker.queue_stats("dlq")["ready"] == 1
    _, peer3 = n3.consuming("dlq", 1)
    (g,) = peer3.take()
    assert (g.body, g.attempt) == (b"poison", 1)
    assert g.headers is not None
    assert g.headers["x-death-reason"] == "max_deliveries"
    assert g.headers["x-death-queue"] == "q"
    n3.crash()


def test_nack_delay_survives_restart_as_delayed(db: Path, clock: FakeClock) -> None:
    n = DiskEnv(db, clock=clock)
    n.broker.declare_queue("q", True, {})
    conn, peer = n.connect()
    n.publish(conn, "q", b"retry")
    n.settle()
    n.broker.consume(conn, "q", 1, None)
    n.broker.nack(conn, [peer.take()[0].delivery], True, 60)
    n.settle()
    n.crash()

    clock.advance(30)
    n2 = DiskEnv(db, clock=clock)
    assert n2.broker.queue_stats("q") == {"ready": 0, "leased": 0, "delayed": 1, "consumers": 0}
    _, peer2 = n2.consuming("q", 1)
    n2.advance(29.9)
    assert peer2.got == []
    n2.advance(0.2)
    (g,) = peer2.take()
    assert (g.body, g.attempt) == (b"retry", 2)
    n2.crash()


def test_unconfirmed_work_is_not_recovered_but_confirmed_is(db: Path, clock: FakeClock) -> None:
    n = DiskEnv(db, clock=clock)
    n.broker.declare_queue("q", True, {})
    conn, peer = n.connect()
    n.publish(conn, "q", b"confirmed")
    n.settle()
    assert peer.confirmed == [1]
    n.publish(conn, "q", b"never-flushed")  # still in broker.batch
    n.crash()
    n2 = DiskEnv(db, clock=clock)
    _, peer2 = n2.consuming("q")
    assert peer2.bodies() == [b"confirmed"]
    n2.crash()


def test_deep_queue_pages_after_restart(db: Path, clock: FakeClock) -> None:
    n = DiskEnv(db, clock=clock)
    n.broker.declare_queue("deep", True, {})
    conn, _ = n.connect()
    total = WINDOW + 700
    for i in range(total):
        n.publish(conn, "deep", b"%05d" % i, priority=1 if i % 3 == 0 else 0)
    n.settle()
    n.crash()

    n2 = DiskEnv(db, clock=clock)
    q = n2.broker.queues["deep"]
    assert q.mem <= WINDOW
    assert n2.broker.queue_stats("deep")["ready"] == total
    conn2, peer2 = n2.consuming("deep", 500)
    received: list[bytes] = []
    for _ in range(total):
        got = peer2.take()
        if not got:
            n2.settle()
            got = peer2.take()
            if not got:
                break
        received.extend(g.body for g in got)
        n2.broker.ack(conn2, [g.delivery for g in got])
        assert q.mem <= WINDOW
    assert len(received) == total
    assert sorted(received) == [b"%05d" % i for i in range(total)]
    # Priority 1 first (FIFO), then priority 0 (FIFO).
    high = [b"%05d" % i for i in range(total) if i % 3 == 0]
    low = [b"%05d" % i for i in range(total) if i % 3 != 0]
    assert received == high + low
    n2.settle()
    n2.crash()
    n3 = DiskEnv(db, clock=clock)
    assert n3.recovered.ready_counts == {}
    n3.crash()


def test_purged_and_deleted_queues_stay_that_way(db: Path, clock: FakeClock) -> None:
    n = DiskEnv(db, clock=clock)
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
    n2 = DiskEnv(db, clock=clock)
    assert [q.name for q in n2.recovered.queues] == ["purged"]
    assert n2.recovered.exchanges == []
    assert n2.recovered.bindings == []
    assert n2.recovered.ready_counts == {}
    assert n2.recovered.delayed_counts == {}
    n2.crash()
