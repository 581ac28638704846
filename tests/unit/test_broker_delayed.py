"""Delayed messages (ETA, countdown, a nack's delay).

They wait in the broker, durable and never leased, so no worker holds them in
memory and none is redelivered because it waited. Beyond an in-memory window
durable ones wait on disk and load in due order, each released exactly once;
a queue deleted while such a load is in flight does not get them back.
"""

from __future__ import annotations

import pytest
from corekit import Env

from brokerd import delayed as delayed_mod
from brokerd.broker import Broker
from brokerd.storage.base import QueueRecord, Recovered


@pytest.mark.parametrize("kind", ["delay", "not_before"])
def test_delayed_publish_is_delayed_not_ready_and_delivered_on_time(env: Env, kind: str) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.consuming("q", lease=3600)
    props = {"delay": 60} if kind == "delay" else {"not_before": env.clock.now() + 60}
    seq = env.publish(conn, "q", b"eta", **props)
    env.publish(conn, "q", b"now")
    env.settle()
    assert seq in peer.confirmed  # delayed messages are confirmed on commit, like any
    assert peer.bodies() == [b"now"]
    assert env.stats("q") == {"ready": 0, "leased": 1, "delayed": 1, "consumers": 1}
    assert env.store.count_rows() == 2  # durable while it waits
    assert b.next_deadline() is not None
    env.advance(59.9)
    assert peer.bodies() == [b"now"]
    assert env.stats("q")["leased"] == 1  # never leased while delayed
    env.advance(0.2)
    assert peer.bodies() == [b"now", b"eta"]
    assert env.stats("q") == {"ready": 0, "leased": 2, "delayed": 0, "consumers": 1}


def test_delayed_message_waits_in_ready_after_release_without_consumer(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"x", delay=5)
    env.advance(5)
    assert env.stats("q") == {"ready": 1, "leased": 0, "delayed": 0, "consumers": 0}
    b.consume(conn, "q", 1, None)
    assert peer.bodies() == [b"x"]


def test_delay_and_not_before_take_the_later(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.consuming("q")
    env.publish(conn, "q", b"a", delay=10, not_before=env.clock.now() + 20)
    env.publish(conn, "q", b"b", delay=0)  # zero delay: ready at once
    env.publish(conn, "q", b"c", not_before=env.clock.now() - 5)  # past: ready at once
    assert peer.bodies() == [b"b", b"c"]
    env.advance(15)
    assert peer.bodies() == [b"b", b"c"]
    env.advance(5)
    assert peer.bodies() == [b"b", b"c", b"a"]


def test_delayed_messages_release_in_due_order(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    for name, delay in (("c", 30), ("a", 10), ("b", 20), ("a2", 10)):
        env.publish(conn, "q", name.encode(), delay=delay)
    env.settle()
    b.consume(conn, "q", 10, None)
    env.advance(100)
    assert peer.bodies() == [b"a", b"a2", b"b", b"c"]


def test_durable_delayed_messages_beyond_the_window_are_each_released_once_in_due_order(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny in-memory delayed window most durable delayed messages wait
    on disk; every one is still released exactly once, in due order, including
    ones added while a load from disk is in flight."""
    monkeypatch.setattr(delayed_mod, "DELAYED_WINDOW", 8)
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    expected = []
    for i in range(40):
        env.publish(conn, "q", b"%03d" % i, delay=100 + i)
        expected.append(b"%03d" % i)
    env.settle()
    assert env.stats("q")["delayed"] == 40
    b.consume(conn, "q", 1000, 86_400)
    late: list[bytes] = []
    for _ in range(300):
        env.clock.advance(1)
        b.tick()
        b.flush()  # loads requested by the tick are issued at flush
        if not late and b.delayed.loading:
            # Added while a load from disk is in flight, due after all loaded.
            for j in range(5):
                body = b"late%d" % j
                env.publish(conn, "q", body, delay=100 + j)
                late.append(body)
        env.settle()
    assert late, "no load from disk was ever in flight"
    assert sorted(peer.bodies()) == sorted(expected + late)
    assert peer.bodies()[:40] == expected
    assert env.stats("q") == {"ready": 0, "leased": 45, "delayed": 0, "consumers": 1}


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
    conn, peer = env.consuming("q", 100)
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
