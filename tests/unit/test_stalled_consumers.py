"""A consumer whose lease ran out is not handed more work until it shows life.

A frozen process (SIGSTOP, a GC pause, a wedged event loop) keeps its socket
open. When its leases expire, round-robin used to hand the very same messages
straight back to it, burning their delivery attempts while a healthy consumer
sat idle. Now a connection with an expired lease is *stalled*: its consumers
get nothing until any frame arrives from it (an ack, an extend, a heartbeat),
so the expired messages go to live consumers first.
"""

from __future__ import annotations

from corekit import PAST, Env, FakePeer, Got

from brokerd.queues import Connection


def _queue(env: Env, **options: object) -> None:
    env.declare_with_dlq(lease=5, **options)
    env.settle()


def test_expired_messages_go_to_a_live_consumer_not_back_to_the_frozen_one(env: Env) -> None:
    _queue(env, max_deliveries=3)
    b = env.broker
    frozen_conn, frozen = env.connect()
    live_conn, live = env.connect()
    b.consume(frozen_conn, "q", 10, None)
    for i in range(10):
        env.publish(frozen_conn, "q", b"%d" % i)
    env.settle()
    assert len(frozen.take()) == 10
    b.consume(live_conn, "q", 10, None)
    assert live.got == []  # the frozen consumer holds everything
    env.advance(5 + PAST)
    assert frozen.got == []
    assert sorted(live.bodies()) == [b"%d" % i for i in range(10)]
    assert {g.attempt for g in live.got} == {2}


def test_a_stalled_consumer_alone_does_not_burn_attempts_until_it_shows_life(env: Env) -> None:
    _queue(env, max_deliveries=3)
    b = env.broker
    conn, peer = env.consuming("q", 1)
    env.publish(conn, "q", b"job")
    env.settle()
    [first] = peer.take()
    for _ in range(5):  # many lease periods pass while the process is frozen
        env.advance(5 + PAST)
    assert peer.got == []
    assert env.stats("q") == {"ready": 1, "leased": 0, "delayed": 0, "consumers": 1}
    assert env.stats("dlq")["ready"] == 0
    # It wakes up: its late ack is refused (the lease was lost), and that frame
    # is a sign of life, so the message comes back to it on its second attempt.
    assert b.ack(conn, [first.delivery]) == [first.delivery]
    b.heard_from(conn)
    [again] = peer.take()
    assert (again.body, again.attempt) == (b"job", 2)


def _holding_one(env: Env, body: bytes) -> tuple[Connection, FakePeer, Got]:
    """A connection whose consumer holds one delivery of ``body`` from "q"."""
    conn, peer = env.consuming("q")
    env.publish(conn, "q", body)
    env.settle()
    [got] = peer.take()
    return conn, peer, got


def test_any_frame_revives_a_stalled_connection(env: Env) -> None:
    _queue(env)
    conn, peer, _ = _holding_one(env, b"a")
    env.advance(5 + PAST)
    assert peer.got == []
    assert conn.stalled
    env.broker.heard_from(conn)  # e.g. a heartbeat
    assert not conn.stalled
    assert peer.bodies() == [b"a"]


def test_a_stalled_connection_gets_no_new_messages_either(env: Env) -> None:
    _queue(env)
    _, stalled, _ = _holding_one(env, b"old")
    env.advance(5 + PAST)
    live_conn, live = env.connect()
    env.publish(live_conn, "q", b"new")
    env.settle()
    assert stalled.got == []
    env.broker.consume(live_conn, "q", 10, None)
    assert sorted(live.bodies()) == [b"new", b"old"]


def test_a_connection_that_settles_in_time_never_stalls(env: Env) -> None:
    _queue(env)
    b = env.broker
    conn, _, g = _holding_one(env, b"a")
    env.advance(4)
    assert b.extend(conn, [g.delivery], 5) == []
    env.advance(4)
    assert b.ack(conn, [g.delivery]) == []
    assert not conn.stalled
