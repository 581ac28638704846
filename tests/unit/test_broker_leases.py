"""Leases (visibility timeouts).

Every delivery carries a deadline. On expiry only that delivery returns to the
queue, and the connection stays open; extend pushes the deadline, so a live
worker's long task is never redelivered; a lease never expires early. On
disconnect all of a connection's deliveries return at once, in order, at the
head. What a connection whose lease ran out gets next is in
test_stalled_consumers.py.
"""

from __future__ import annotations

import pytest
from corekit import PAST, Env

from brokerd.errors import BrokerError
from brokerd_protocol import ErrorCode


def test_lease_expiry_returns_only_that_delivery(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.consuming("q", lease=10.0)
    env.publish(conn, "q", b"a")
    env.settle()
    (a,) = peer.take()
    assert a.deadline == env.clock.now() + 10
    env.advance(5)
    env.publish(conn, "q", b"b")
    env.settle()
    (bb,) = peer.take()
    env.advance(5 - 0.01)  # just before a's deadline: nothing happens
    assert peer.got == []
    assert env.stats("q")["leased"] == 2
    env.advance(0.01 + PAST)
    assert peer.got == []  # stalled: nothing more until it shows life
    b.heard_from(conn)
    (again,) = peer.take()
    assert (again.body, again.attempt, again.redelivered) == (b"a", 2, True)
    assert again.delivery not in (a.delivery, bb.delivery)
    assert env.stats("q") == {"ready": 0, "leased": 2, "delayed": 0, "consumers": 1}
    # The connection stays usable; the expired delivery is gone for good.
    assert b.ack(conn, [a.delivery]) == [a.delivery]
    assert b.ack(conn, [bb.delivery, again.delivery]) == []
    env.settle()
    assert env.store.count_rows() == 0
    assert b.counters.redelivered == 1


def test_lease_expiry_without_credit_waits_in_the_queue_head(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"lease": 2})
    c1, p1 = env.connect()
    c2, p2 = env.connect()
    env.publish(c1, "q", b"first")
    env.publish(c1, "q", b"second")
    b.consume(c1, "q", 1, None)
    (_first,) = p1.take()
    env.advance(2 + PAST)
    assert p1.got == []  # stalled until it shows life
    b.heard_from(c1)
    (again,) = p1.take()  # c1 got its credit back and the head is "first" again
    assert (again.body, again.attempt) == (b"first", 2)
    b.consume(c2, "q", 1, None)
    assert p2.bodies() == [b"second"]


def test_extend_pushes_the_deadline(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"lease": 10})
    conn, peer = env.connect()
    env.publish(conn, "q", b"long-task")
    b.consume(conn, "q", 1, None)
    (g,) = peer.take()
    env.advance(5)
    assert b.extend(conn, [g.delivery], 20) == []  # new deadline: t0 + 25
    env.advance(5 + PAST)  # past the original deadline
    assert peer.got == []
    assert env.stats("q")["leased"] == 1
    env.advance(15 - PAST - 0.01)  # just before the new deadline
    assert peer.got == []
    env.advance(0.01 + PAST)  # past the new deadline
    assert peer.got == []  # the connection is stalled
    assert b.extend(conn, [g.delivery], 20) == [g.delivery]
    b.heard_from(conn)
    (again,) = peer.take()
    assert again.attempt == 2


def test_extend_of_a_lost_or_unknown_delivery_is_lost(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"lease": 1})
    conn, peer = env.connect()
    env.publish(conn, "q", b"x")
    env.publish(conn, "q", b"y")
    b.consume(conn, "q", 2, None)
    x, y = peer.take()
    env.advance(1 + PAST)
    assert b.extend(conn, [x.delivery, 12345], 30) == [x.delivery, 12345]
    with pytest.raises(BrokerError) as exc:
        b.extend(conn, [y.delivery], 0)
    assert exc.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(BrokerError):
        b.extend(conn, [y.delivery], 86_401)


def test_extend_can_keep_a_delivery_alive_indefinitely(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"lease": 2})
    conn, peer = env.connect()
    env.publish(conn, "q", b"x")
    b.consume(conn, "q", 1, None)
    (g,) = peer.take()
    for _ in range(50):  # a long task heart-beating its lease
        env.advance(1)
        assert b.extend(conn, [g.delivery], 2) == []
    assert peer.got == []
    assert b.ack(conn, [g.delivery]) == []


def test_lease_never_expires_early(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.consuming("q", 1000, lease=0.37)
    for i in range(200):
        env.publish(conn, "q", b"%d" % i)
        env.advance(0.013)
    leased_at = {g.delivery: g.deadline for g in peer.take()}
    for _ in range(100):
        env.advance(0.011)
        for g in peer.take():
            assert g.attempt >= 2
        for did, deadline in leased_at.items():
            if did not in conn.deliveries:
                assert deadline <= env.clock.now()
            else:
                assert deadline > env.clock.now() - 0.05 - 1e-6


def test_disconnect_returns_all_deliveries_in_order_at_the_head(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    c1, p1 = env.connect()
    for i in range(5):
        env.publish(c1, "q", b"%d" % i)
    env.settle()
    b.consume(c1, "q", 3, None)
    assert p1.bodies() == [b"0", b"1", b"2"]
    b.close(c1)
    assert env.stats("q") == {"ready": 5, "leased": 0, "delayed": 0, "consumers": 0}
    _, p2 = env.consuming("q")
    assert p2.bodies() == [b"0", b"1", b"2", b"3", b"4"]
    assert [g.attempt for g in p2.got] == [2, 2, 2, 1, 1]
    # The old leases are gone from the wheel: only c2's five remain.
    assert len(b.leases) == 5
    env.advance(29)
    assert len(p2.got) == 5
    assert b.ack(c1, [1]) == [1]  # a closed connection holds nothing


def test_disconnect_is_idempotent_and_counts_attempts_once(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"max_deliveries": 2})
    c1, _p1 = env.connect()
    env.publish(c1, "q", b"x")
    b.consume(c1, "q", 1, None)
    b.close(c1)
    b.close(c1)
    _, p2 = env.consuming("q", 1)
    assert [g.attempt for g in p2.got] == [2]


def test_lease_expiries_in_one_tick_keep_their_order(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"lease": 5})
    c1, _p1 = env.connect()
    for i in range(4):
        env.publish(c1, "q", b"%d" % i)
    cid = b.consume(c1, "q", 3, None)
    b.cancel(c1, cid)  # keep the leases, take no more
    env.advance(5 + PAST)
    _, p2 = env.consuming("q")
    assert p2.bodies() == [b"0", b"1", b"2", b"3"]


def test_next_deadline_reports_leases_and_delays(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"lease": 10})
    conn, peer = env.connect()
    assert b.next_deadline() is None
    env.publish(conn, "q", b"x", delay=3)
    nd = b.next_deadline()
    assert nd == env.clock.now() + 3
    b.consume(conn, "q", 1, None)
    env.publish(conn, "q", b"y")
    (g,) = peer.take()
    nd = b.next_deadline()
    assert nd is not None and nd == pytest.approx(env.clock.now() + 3)
    b.ack(conn, [g.delivery])
    env.advance(3)
    (g,) = peer.take()
    nd = b.next_deadline()
    assert nd is not None and env.clock.now() + 10 <= nd <= env.clock.now() + 10.05 + 1e-6
