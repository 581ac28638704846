"""Leased bodies are bounded in bytes: per connection (``max_unacked_bytes``)
and over all connections (``max_unacked_bytes_total``), whatever the
consumers' prefetch. Deliveries stop at a limit and resume as acks (or nacks,
lease expiry, disconnects) free bytes: nothing stalls, nothing is lost or
delivered twice, and a message larger than a limit still gets through, one at
a time. FakeClock + MemoryStore (corekit.Env).
"""

from __future__ import annotations

import pytest
from corekit import PAST, Env

from brokerd.queues import Connection

KIB = 1024
SIZE = 64 * KIB


def body(i: int, queue: str = "q", size: int = SIZE) -> bytes:
    head = b"%s:%06d:" % (queue.encode(), i)
    return head + b"." * (size - len(head))


def leased(*conns: Connection) -> int:
    """Body bytes leased to ``conns``, counted from their deliveries
    (independently of the broker's own accounting)."""
    return sum(len(d.message.body) for c in conns for d in c.deliveries.values())


@pytest.fixture
def env() -> Env:
    e = Env()
    e.broker.unacked.per_connection = 256 * KIB
    e.broker.unacked.limit = 1024 * KIB
    return e


def fill(env: Env, queue: str, count: int, size: int = SIZE) -> None:
    env.broker.declare_queue(queue, True, {})
    pub, _ = env.connect()
    for i in range(count):
        env.publish(pub, queue, body(i, queue, size))
    env.settle()


def test_a_huge_prefetch_holds_only_the_connections_byte_limit_of_bodies(env: Env) -> None:
    fill(env, "q", 40)
    conn, peer = env.connect()
    env.broker.consume(conn, "q", 1000, None)
    env.settle()
    # Four 64 KiB bodies reach 256 KiB: the fifth waits for an ack.
    assert len(peer.got) == 4
    assert leased(conn) == conn.leased_bytes == 256 * KIB
    assert env.broker.unacked.held == 256 * KIB


def test_acks_free_bytes_and_every_message_arrives_once_in_order(env: Env) -> None:
    fill(env, "q", 40)
    conn, peer = env.connect()
    env.broker.consume(conn, "q", 1000, None)
    env.settle()
    seen: list[bytes] = []
    for _ in range(200):
        got = peer.take()
        if not got:
            break
        seen += [g.body for g in got]
        assert leased(conn) <= 256 * KIB
        env.broker.ack(conn, [g.delivery for g in got[:2]])
        rest = [g.delivery for g in got[2:]]
        env.settle()
        if rest:
            env.broker.ack(conn, rest)
        env.settle()
    assert seen == [body(i) for i in range(40)]
    assert conn.leased_bytes == 0 and env.broker.unacked.held == 0
    assert env.stats("q")["ready"] == 0 and env.stats("q")["leased"] == 0


def test_a_message_larger_than_the_limit_is_still_delivered_one_at_a_time(env: Env) -> None:
    fill(env, "q", 3, size=512 * KIB)
    conn, peer = env.connect()
    env.broker.consume(conn, "q", 100, None)
    env.settle()
    for i in range(3):
        (got,) = peer.take()
        assert got.body == body(i, size=512 * KIB)
        env.broker.ack(conn, [got.delivery])
        env.settle()
    assert peer.take() == [] and conn.leased_bytes == 0


def test_freed_bytes_feed_every_queue_the_connection_consumes_in_turn(env: Env) -> None:
    """A worker consuming a deep queue and another one gets both: the deep
    one does not keep the freed room to itself."""
    fill(env, "deep", 40)
    fill(env, "other", 4)
    conn, peer = env.connect()
    env.broker.consume(conn, "deep", 1000, None)
    env.broker.consume(conn, "other", 1000, None)
    env.settle()
    others: list[bytes] = []
    for _ in range(40):
        got = peer.take()
        others += [g.body for g in got if g.body.startswith(b"other")]
        if len(others) == 4:
            break
        env.broker.ack(conn, [g.delivery for g in got])
        env.settle()
    assert others == [body(i, "other") for i in range(4)]


def test_the_total_limit_holds_over_many_connections_and_none_is_starved(env: Env) -> None:
    fill(env, "q", 64)
    peers = [env.connect() for _ in range(8)]
    for conn, _ in peers:
        env.broker.consume(conn, "q", 1000, None)
    env.settle()
    # 1 MiB in all: sixteen 64 KiB bodies, whatever the per-connection room.
    conns = [conn for conn, _ in peers]
    assert env.broker.unacked.held == leased(*conns) == 1024 * KIB
    received = {id(conn): 0 for conn, _ in peers}
    total = 0
    for _ in range(400):
        batch = [(conn, peer.take()) for conn, peer in peers]
        if not any(got for _, got in batch):
            break
        for conn, got in batch:
            received[id(conn)] += len(got)
            total += len(got)
        assert leased(*conns) <= 1024 * KIB
        for conn, got in batch:
            if got:
                env.broker.ack(conn, [g.delivery for g in got])
        env.settle()
    assert total == 64 and env.broker.unacked.held == 0
    assert all(n > 0 for n in received.values())


def test_a_queue_held_back_by_the_total_limit_is_fed_when_another_queue_acks(env: Env) -> None:
    env.broker.unacked.per_connection = 1024 * KIB
    fill(env, "a", 32)
    fill(env, "b", 4)
    conn_a, peer_a = env.connect()
    env.broker.consume(conn_a, "a", 1000, None)
    env.settle()
    assert len(peer_a.got) == 16  # the total limit
    conn_b, peer_b = env.connect()
    env.broker.consume(conn_b, "b", 1000, None)
    env.settle()
    assert peer_b.got == []
    # Both wait for room, "a" first: freed room goes to them in turn, so "b"
    # is fed long before "a" runs out of messages.
    got_b: list[bytes] = []
    for _ in range(2):
        env.broker.ack(conn_a, [g.delivery for g in peer_a.take()[:4]])
        env.settle()
        got_b += [g.body for g in peer_b.take()]
    assert got_b == [body(i, "b") for i in range(4)]
    assert env.stats("a")["ready"] > 0


def test_nacks_expiry_and_disconnects_free_their_bytes(env: Env) -> None:
    fill(env, "q", 12)
    conn, peer = env.connect()
    env.broker.consume(conn, "q", 1000, 5.0)
    env.settle()
    got = peer.take()
    assert len(got) == 4
    env.broker.nack(conn, [got[0].delivery], True, None)
    env.settle()
    assert conn.leased_bytes == leased(conn) <= 256 * KIB
    env.advance(5.0 + PAST)  # every lease runs out
    assert conn.leased_bytes == 0 and env.broker.unacked.held == 0
    other, other_peer = env.connect()
    env.broker.consume(other, "q", 1000, None)
    env.settle()
    assert len(other_peer.got) == 4
    env.broker.close(other)
    env.settle()
    assert other.leased_bytes == 0
    assert env.broker.unacked.held == leased(conn) == 0
    assert env.stats("q")["ready"] == 12
