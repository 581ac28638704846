"""The memory budget: message bodies held in memory stay within ``memory_limit``
however big the bodies, while every message is still counted and delivered
exactly once, in order.

Bodies here are 64 KiB against a 1 MiB limit (durable caching up to 512 KiB, a
256 KiB window per queue), the same proportions as 1 MiB bodies against the
128 MiB default, at a size a unit test can afford. FakeClock + MemoryStore (corekit.Env).
"""

from __future__ import annotations

import itertools

import pytest
from corekit import Env, FakePeer

from brokerd.broker import Broker
from brokerd.errors import BrokerError
from brokerd.queues import Connection
from brokerd.storage.base import QueueRecord, Recovered
from brokerd_protocol import ErrorCode

KIB = 1024
LIMIT = 1024 * KIB
CACHE = LIMIT // 2
WINDOW = LIMIT // 4
SIZE = 64 * KIB


def body(i: int, queue: str = "q", size: int = SIZE) -> bytes:
    head = b"%s:%06d:" % (queue.encode(), i)
    return head + b"." * (size - len(head))


def held(b: Broker) -> int:
    """Body bytes the broker holds as ready or delayed messages, counted from its
    data structures (independently of its own accounting)."""
    ready = sum(len(m.body) for q in b.queues.values() for dq in q.ready for m in dq)
    return ready + sum(len(e[2].body) for e in b.delayed.heap)


def queue_held(b: Broker, name: str) -> int:
    return sum(len(m.body) for dq in b.queues[name].ready for m in dq)


@pytest.fixture
def env() -> Env:
    return Env(memory_limit=LIMIT)


def drain_in_order(
    env: Env, conn: Connection, peer: FakePeer, queue: str, count: int, prefetch: int = 3
) -> list[int]:
    """Consume ``count`` messages, acking each; check the order and return the
    peak bytes held while draining."""
    b = env.broker
    cid = b.consume(conn, queue, prefetch, None)
    got: list[bytes] = []
    peaks: list[int] = []
    for _ in range(count * 4):
        env.settle()
        peaks.append(held(b))
        batch = peer.take()
        if not batch and len(got) == count:
            break
        got += [g.body for g in batch]
        if batch:
            b.ack(conn, [g.delivery for g in batch])
    b.cancel(conn, cid)
    env.settle()
    assert got == [body(i, queue) for i in range(count)]  # each once, in order
    return peaks


def test_a_deep_queue_of_big_bodies_holds_only_its_byte_window_in_memory(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    n = 100  # 6.4 MiB of bodies against a 1 MiB budget
    for i in range(n):
        env.publish(conn, "q", body(i))
    env.settle()
    assert len(peer.confirmed) == n
    assert held(b) <= WINDOW
    assert env.stats("q")["ready"] == n  # the backlog is fully accounted
    assert b.memory.used == held(b)

    peaks = drain_in_order(env, conn, peer, "q", n)
    assert max(peaks) <= WINDOW + SIZE
    assert held(b) == 0
    assert b.memory.used == 0
    assert env.stats("q") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 0}
    assert env.store.count_rows() == 0


def test_queues_share_one_broker_wide_budget(env: Env) -> None:
    b = env.broker
    names = [f"q{i}" for i in range(6)]
    for name in names:
        b.declare_queue(name, True, {})
    conn, peer = env.connect()
    n = 30
    for i in range(n):
        for name in names:
            env.publish(conn, name, body(i, name))
    env.settle()
    assert held(b) <= CACHE
    for name in names:
        assert queue_held(b, name) <= WINDOW
        assert env.stats(name)["ready"] == n
    for name in names:
        peaks = drain_in_order(env, conn, peer, name, n)
        assert max(peaks) <= CACHE + SIZE
    assert b.memory.used == held(b) == 0


def test_a_queue_with_consumers_still_pages_when_idle_queues_fill_the_budget(env: Env) -> None:
    b = env.broker
    idle = [f"idle{i}" for i in range(4)]
    for name in [*idle, "live"]:
        b.declare_queue(name, True, {})
    conn, peer = env.connect()
    for i in range(8):
        for name in idle:
            env.publish(conn, name, body(i, name))
    for i in range(20):
        env.publish(conn, "live", body(i, "live"))
    env.settle()
    assert held(b) <= CACHE
    assert b.memory.room() <= 0  # the idle queues' windows took all durable room
    assert queue_held(b, "live") == 0
    peaks = drain_in_order(env, conn, peer, "live", 20, prefetch=1)
    assert max(peaks) <= CACHE + SIZE


def test_a_restarted_broker_pages_in_only_the_byte_window(env: Env) -> None:
    first = env.broker
    first.declare_queue("q", True, {})
    conn, _ = env.connect()
    n = 60
    for i in range(n):
        env.publish(conn, "q", body(i))
    env.settle()
    b = Broker(env.store, env.clock, memory_limit=LIMIT)
    env.broker = b
    b.restore(
        Recovered(
            queues=[QueueRecord("q", {})],
            ready_counts={("q", 0): n},
            max_id=first._next_id,
            max_seq=first._next_seq,
        )
    )
    env.settle()
    assert 0 < held(b) <= WINDOW
    assert b.memory.used == held(b)
    assert env.stats("q")["ready"] == n
    conn, peer = env.connect()
    peaks = drain_in_order(env, conn, peer, "q", n)
    assert max(peaks) <= WINDOW + SIZE


def test_durable_delayed_big_bodies_stay_within_the_budget_and_fall_due_in_order(
    env: Env,
) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    n = 60
    order = list(range(n))
    # Published out of due order: message i falls due at second i + 1.
    for i in itertools.chain(order[1::2], order[0::2]):
        env.publish(conn, "q", body(i), delay=i + 1)
    env.settle()
    assert len(peer.confirmed) == n
    assert held(b) <= WINDOW + SIZE
    assert env.stats("q")["delayed"] == n
    b.consume(conn, "q", n, None)
    got: list[bytes] = []
    for _ in range(n + 5):
        env.advance(1)
        env.settle()
        assert held(b) <= LIMIT + SIZE
        assert b.memory.used == held(b)
        batch = peer.take()
        got += [g.body for g in batch]
        b.ack(conn, [g.delivery for g in batch])
    assert got == [body(i) for i in range(n)]
    assert env.stats("q") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 1}


def test_delayed_big_bodies_load_within_the_budget_after_a_restart(env: Env) -> None:
    first = env.broker
    first.declare_queue("q", True, {})
    conn, _ = env.connect()
    n = 40
    for i in range(n):
        env.publish(conn, "q", body(i), delay=100 + i)
    env.settle()
    b = Broker(env.store, env.clock, memory_limit=LIMIT)
    env.broker = b
    b.restore(
        Recovered(
            queues=[QueueRecord("q", {})],
            delayed_counts={"q": n},
            max_id=first._next_id,
            max_seq=first._next_seq,
        )
    )
    env.settle()
    assert 0 < held(b) <= WINDOW // 2 + SIZE
    conn, peer = env.connect()
    b.consume(conn, "q", n, None)
    got: list[bytes] = []
    for _ in range(200):
        env.advance(1)
        env.settle()
        assert held(b) <= LIMIT + SIZE
        got += peer.bodies()
        b.ack(conn, [g.delivery for g in peer.take()])
    assert got == [body(i) for i in range(n)]


def test_a_transient_queue_at_the_memory_limit_refuses_publishes_with_queue_full(
    env: Env,
) -> None:
    b = env.broker
    b.declare_queue("t", False, {})
    b.declare_queue("d", True, {})
    conn, peer = env.connect()
    accepted = 0
    with pytest.raises(BrokerError) as exc:
        for i in range(2 * LIMIT // SIZE):
            env.publish(conn, "t", body(i, "t"))
            accepted += 1
    assert exc.value.code == ErrorCode.QUEUE_FULL
    assert "memory limit" in exc.value.message
    assert accepted == LIMIT // SIZE
    with pytest.raises(BrokerError):
        env.publish(conn, "t", body(0, "t"), delay=5)  # delayed ones are held too
    env.settle()
    assert len(peer.confirmed) == accepted
    assert env.stats("t")["ready"] == accepted  # nothing accepted was lost
    # Durable queues keep taking messages: they wait on disk.
    for i in range(10):
        env.publish(conn, "d", body(i, "d"))
    env.settle()
    assert env.stats("d")["ready"] == 10
    assert queue_held(b, "d") == 0
    assert held(b) <= LIMIT
    # Consuming frees room, and the transient queue takes messages again.
    cid = b.consume(conn, "t", 4, None)
    b.cancel(conn, cid)
    b.ack(conn, [g.delivery for g in peer.take()])
    env.publish(conn, "t", body(accepted, "t"))
    env.settle()
    assert env.stats("t")["ready"] == accepted - 4 + 1


def test_durable_backlogs_never_take_the_room_transient_queues_need(env: Env) -> None:
    b = env.broker
    names = [f"d{i}" for i in range(6)]
    for name in names:
        b.declare_queue(name, True, {})
    b.declare_queue("t", False, {})
    conn, _ = env.connect()
    for i in range(30):
        for name in names:
            env.publish(conn, name, body(i, name))
    env.settle()
    assert held(b) <= CACHE
    accepted = 0
    with pytest.raises(BrokerError):
        for i in range(LIMIT // SIZE + 1):
            env.publish(conn, "t", body(i, "t"))
            accepted += 1
    assert accepted * SIZE >= LIMIT - CACHE


def test_dead_letters_into_a_transient_queue_at_the_memory_limit_are_dropped(env: Env) -> None:
    b = env.broker
    b.declare_queue("dlq", False, {})
    b.declare_queue("filler", False, {})
    b.declare_queue("work", True, {"dead_letter_queue": "dlq"})
    conn, peer = env.connect()
    env.publish(conn, "work", body(0, "work"))
    env.settle()
    with pytest.raises(BrokerError):
        for i in range(LIMIT // SIZE + 1):
            env.publish(conn, "filler", body(i, "filler"))
    env.settle()
    cid = b.consume(conn, "work", 1, None)
    [g] = peer.take()
    b.cancel(conn, cid)
    env.publish(conn, "filler", body(99, "filler"))  # takes the room the delivery left
    assert b.memory.full()
    b.reject(conn, [g.delivery])
    env.settle()
    assert env.stats("dlq")["ready"] == 0
    assert b.counters.dropped == {"rejected": 1}
    assert env.store.count_rows() == 0


def test_the_budget_counts_exactly_what_is_held_through_every_kind_of_change(
    env: Env,
) -> None:
    b = env.broker
    b.declare_queue("dlq", True, {})
    b.declare_queue("q", True, {"dead_letter_queue": "dlq", "message_ttl": 50})
    b.declare_queue("t", False, {"max_length": 3, "overflow": "drop_head"})
    b.declare_queue("gone", True, {})
    conn, peer = env.connect()

    def check() -> None:
        env.settle()
        assert b.memory.used == held(b)

    for i in range(30):
        env.publish(conn, "q", body(i))
        env.publish(conn, "gone", body(i, "gone"), delay=10 + i)
        env.publish(conn, "t", body(i, "t", size=1000))
    env.publish(conn, "t", body(99, "t", size=1000), delay=3)
    check()
    cid = b.consume(conn, "q", 5, None)
    got = peer.take()
    check()
    b.nack(conn, [got[0].delivery], True, None)
    b.nack(conn, [got[1].delivery], True, 2.0)
    b.reject(conn, [got[2].delivery])
    b.ack(conn, [got[3].delivery])
    check()
    b.cancel(conn, cid)
    b.close(conn)  # the last delivery returns
    check()
    env.advance(5)  # delayed ones fall due
    check()
    b.delete_queue("gone")
    check()
    assert b.purge_queue("dlq") == 1
    check()
    for _ in range(60):  # the ttl passes: swept to the dead-letter queue as paged in
        env.advance(1)
        check()
    assert b.purge_queue("q") == 0
    assert b.purge_queue("dlq") == 28  # 30, less one acked and one rejected (purged)
    assert b.purge_queue("t") == 3
    check()
    assert b.memory.used == 0
