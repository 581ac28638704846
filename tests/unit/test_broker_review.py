"""Regression tests from a correctness review of the broker core."""

from __future__ import annotations

import pytest
from test_broker import Env

from brokerd import delayed as delayed_mod
from brokerd.broker import Broker
from brokerd.storage.base import QueueRecord, Recovered


@pytest.fixture
def env() -> Env:
    return Env()


@pytest.mark.parametrize("how", ["reject", "nack"])
def test_settling_a_delivery_of_a_deleted_queue_does_not_dead_letter_it(env: Env, how: str) -> None:
    """A deleted queue's messages are gone (its rows were deleted with it): a
    reject or nack of a delivery still held must not move the message into the
    dead-letter queue, where it would be counted without a row behind it."""
    b = env.broker
    b.declare_queue("dlq", True, {})
    b.declare_queue("work", True, {"dead_letter_queue": "dlq"})
    conn, peer = env.connect()
    env.publish(conn, "work", b"x")
    env.settle()
    b.consume(conn, "work", 10, None)
    [g] = peer.take()
    b.delete_queue("work")
    env.settle()
    if how == "reject":
        assert b.reject(conn, [g.delivery]) == []
    else:
        assert b.nack(conn, [g.delivery], False, None) == []
    env.settle()
    assert env.stats("dlq")["ready"] == 0
    assert env.store.count_rows() == 0


def test_delayed_load_in_flight_does_not_resurrect_a_deleted_queue(env: Env) -> None:
    """Delayed messages loading from disk when their queue is deleted and
    declared again must not turn up in the new queue of the same name."""
    first = env.broker
    first.declare_queue("q", True, {})
    conn, _ = env.connect()
    for i in range(3):
        env.publish(conn, "q", b"old%d" % i, delay=100)
    env.settle()
    assert env.store.count_rows() == 3

    # A restart: the delayed messages are on disk and load asynchronously.
    b = Broker(env.store, env.clock)
    env.broker = b
    b.restore(
        Recovered(
            queues=[QueueRecord("q", {})],
            delayed_counts={"q": 3},
            max_id=first._next_id,
            max_seq=first._next_seq,
        )
    )
    b.flush()
    assert b.delayed.loading
    b.delete_queue("q")  # while the load is in flight
    b.declare_queue("q", True, {})
    env.settle()
    assert env.stats("q") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 0}
    conn, peer = env.connect()
    b.consume(conn, "q", 100, None)
    env.advance(200)
    env.settle()
    assert peer.bodies() == []
    assert env.stats("q") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 1}


def test_durable_delayed_on_disk_load_although_transient_ones_wait_in_memory(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable delayed messages beyond the in-memory window must be loaded
    once no durable ones remain in memory, even when a far-off transient
    delayed message keeps the heap non-empty."""
    monkeypatch.setattr(delayed_mod, "DELAYED_WINDOW", 8)
    b = env.broker
    b.declare_queue("a", True, {})
    b.declare_queue("b", True, {})
    b.declare_queue("t", False, {})
    conn, peer = env.connect()
    for i in range(9):  # the soonest: trimmed to the window's first half
        env.publish(conn, "a", b"a%d" % i, delay=50 + i)
    for i in range(4):
        env.publish(conn, "b", b"b%d" % i, delay=100 + i)
    env.publish(conn, "t", b"far", delay=100_000)
    env.settle()
    assert b.delayed.on_disk
    b.delete_queue("a")  # leaves no durable delayed message in memory
    env.settle()
    b.consume(conn, "b", 100, 86_400)
    for _ in range(300):
        env.advance(1)
        env.settle()
    assert sorted(peer.bodies()) == [b"b0", b"b1", b"b2", b"b3"]
    assert env.stats("b")["delayed"] == 0


def test_a_full_dead_letter_queue_drops_instead_of_growing(env: Env) -> None:
    """A dead-letter queue at its max_length takes no more dead-lettered messages."""
    b = env.broker
    b.declare_queue("dlq", True, {"max_length": 1})
    b.declare_queue("work", True, {"dead_letter_queue": "dlq"})
    conn, peer = env.connect()
    for body in (b"a", b"b", b"c"):
        env.publish(conn, "work", body)
    env.settle()
    b.consume(conn, "work", 10, None)
    got = peer.take()
    assert b.reject(conn, [g.delivery for g in got]) == []
    env.settle()
    assert env.stats("dlq")["ready"] == 1
    assert b.counters.dead_lettered == {"rejected": 1}
    assert b.counters.dropped == {"rejected": 2}
    assert env.store.count_rows() == 1


def test_two_full_drop_head_queues_dead_lettering_into_each_other_terminate(env: Env) -> None:
    b = env.broker
    b.declare_queue(
        "a", False, {"max_length": 1, "overflow": "drop_head", "dead_letter_queue": "b"}
    )
    b.declare_queue(
        "b", False, {"max_length": 1, "overflow": "drop_head", "dead_letter_queue": "a"}
    )
    conn, _ = env.connect()
    env.publish(conn, "b", b"b1")
    env.publish(conn, "a", b"a1")
    env.publish(conn, "a", b"a2")  # drops a1 towards b, which is full
    env.settle()
    assert env.stats("a")["ready"] == 1
    assert env.stats("b")["ready"] == 1
