"""Message TTL, per message or per queue (the shorter wins).

An expired message is never delivered: dispatch notices it at the head, and
the tick sweeps queues nobody consumes, so stale messages do not stay counted
as ready. It goes to the dead-letter queue with reason ``ttl``, or is dropped
and counted.
"""

from __future__ import annotations

from corekit import Env


def test_message_ttl_expired_before_dispatch_goes_to_dlq(env: Env) -> None:
    env.declare_with_dlq()
    b = env.broker
    conn, peer = env.connect()
    env.publish(conn, "q", b"stale", ttl=5)
    env.publish(conn, "q", b"fresh")
    env.clock.advance(6)  # no tick: dispatch itself must notice
    env.settle()
    b.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"fresh"]
    assert env.stats("dlq")["ready"] == 1
    b.consume(conn, "dlq", 10, None)
    g = peer.got[-1]
    assert g.body == b"stale"
    assert g.headers is not None and g.headers["x-death-reason"] == "ttl"
    assert b.counters.expired == 1


def test_message_ttl_swept_by_tick_without_consumers(env: Env) -> None:
    env.declare_with_dlq()
    conn, _ = env.connect()
    env.publish(conn, "q", b"stale", ttl=5)
    env.settle()
    env.advance(4.9)
    assert env.stats("q")["ready"] == 1
    env.advance(1.2)
    assert env.stats("q")["ready"] == 0
    assert env.stats("dlq")["ready"] == 1
    env.settle()
    assert env.store.count_rows() == 1


def test_expired_without_dlq_is_dropped(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"x", ttl=1)
    env.clock.advance(2)
    b.consume(conn, "q", 1, None)
    env.settle()
    assert peer.got == []
    assert env.store.count_rows() == 0
    assert b.counters.dropped == {"ttl": 1}


def test_queue_message_ttl_and_the_shorter_ttl_wins(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"message_ttl": 10})
    conn, peer = env.connect()
    env.publish(conn, "q", b"queue-ttl")
    env.publish(conn, "q", b"own-shorter", ttl=3)
    env.publish(conn, "q", b"own-longer", ttl=100)
    env.clock.advance(5)
    b.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"queue-ttl", b"own-longer"]
    cid = next(iter(conn.consumers))
    b.cancel(conn, cid)
    env.publish(conn, "q", b"late")
    env.clock.advance(10.5)
    b.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"queue-ttl", b"own-longer"]


def test_ttl_not_expired_is_delivered(env: Env) -> None:
    env.broker.declare_queue("q", False, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"x", ttl=5)
    env.advance(4.9)
    env.broker.consume(conn, "q", 1, None)
    assert peer.bodies() == [b"x"]


def test_requeued_message_past_ttl_is_not_redelivered(env: Env) -> None:
    env.declare_with_dlq()
    b = env.broker
    conn, peer = env.connect()
    env.publish(conn, "q", b"x", ttl=5)
    env.settle()
    b.consume(conn, "q", 1, None)
    (g,) = peer.take()
    env.clock.advance(6)
    b.nack(conn, [g.delivery], True, None)
    assert peer.got == []
    assert env.stats("dlq")["ready"] == 1
