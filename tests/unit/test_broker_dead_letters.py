"""Dead-lettering, nack and reject.

A message that keeps failing (``max_deliveries`` reached by nacks or by lease
expiries) or that is rejected moves to its queue's dead-letter queue with the
reason in its headers, or is dropped and counted when there is none: a poison
message never loops forever and never vanishes uncounted. A nack may requeue,
at the head and in order, or after a delay.
"""

from __future__ import annotations

import pytest
from corekit import Env, FakePeer

from brokerd.errors import BrokerError
from brokerd.queues import Connection
from brokerd_protocol import ErrorCode


def test_nacks_up_to_max_deliveries_dead_letter_with_the_reason(env: Env) -> None:
    env.declare_with_dlq(max_deliveries=3)
    b = env.broker
    conn, peer = env.connect()
    env.publish(conn, "q", b"poison", headers={"task": "t1"})
    env.settle()
    b.consume(conn, "q", 1, None)
    attempts = []
    for _ in range(3):
        (g,) = peer.take()
        attempts.append((g.attempt, g.redelivered))
        assert b.nack(conn, [g.delivery], True, None) == []
    assert attempts == [(1, False), (2, True), (3, True)]
    assert peer.got == []
    assert env.stats("q") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 1}
    assert env.stats("dlq")["ready"] == 1
    _, dpeer = env.consuming("dlq", 1)
    (d,) = dpeer.take()
    assert d.body == b"poison"
    assert d.attempt == 1
    assert d.headers == {
        "task": "t1",
        "x-death-reason": "max_deliveries",
        "x-death-queue": "q",
        "x-death-count": 1,
    }
    env.settle()
    assert env.store.count_rows() == 1
    assert b.counters.dead_lettered == {"max_deliveries": 1}


def test_lease_expiries_count_towards_max_deliveries(env: Env) -> None:
    env.declare_with_dlq(max_deliveries=2, lease=5)
    b = env.broker
    conn, peer = env.connect()
    env.publish(conn, "q", b"slow")
    env.settle()
    b.consume(conn, "q", 1, None)
    env.advance(5.1)
    b.heard_from(conn)  # alive (a heartbeat, say), just too slow
    env.advance(5.1)
    assert [g.attempt for g in peer.got] == [1, 2]
    assert env.stats("q")["leased"] == 0
    assert env.stats("dlq")["ready"] == 1
    assert b.ack(conn, [g.delivery for g in peer.got]) == [1, 2]


def test_max_deliveries_without_dlq_drops(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {"max_deliveries": 2})
    conn, peer = env.connect()
    env.publish(conn, "q", b"x")
    env.settle()
    b.consume(conn, "q", 1, None)
    b.nack(conn, [peer.take()[0].delivery], True, None)
    b.nack(conn, [peer.take()[0].delivery], True, None)
    env.settle()
    assert peer.got == []
    assert env.stats("q") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 1}
    assert env.store.count_rows() == 0
    assert b.counters.dropped == {"max_deliveries": 1}


def test_dead_letter_queue_that_does_not_exist_drops(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {"dead_letter_queue": "missing"})
    conn, peer = env.connect()
    env.publish(conn, "q", b"x")
    env.settle()
    b.consume(conn, "q", 1, None)
    b.reject(conn, [peer.take()[0].delivery])
    env.settle()
    assert env.store.count_rows() == 0
    assert b.counters.dropped == {"rejected": 1}


def test_reject_dead_letters_with_reason_rejected(env: Env) -> None:
    env.declare_with_dlq()
    b = env.broker
    conn, peer = env.connect()
    env.publish(conn, "q", b"bad")
    env.settle()
    b.consume(conn, "q", 1, None)
    assert b.reject(conn, [peer.take()[0].delivery, 77]) == [77]
    assert env.stats("dlq")["ready"] == 1
    b.consume(conn, "dlq", 1, None)
    (d,) = peer.take()
    assert d.headers is not None and d.headers["x-death-reason"] == "rejected"
    env.settle()
    assert env.store.count_rows() == 1


def _chain(env: Env) -> tuple[Connection, FakePeer]:
    """Queues a, b and c, each dead-lettering into the next, and a connection
    holding the one message published to a."""
    b = env.broker
    b.declare_queue("a", False, {"dead_letter_queue": "b"})
    b.declare_queue("b", False, {"dead_letter_queue": "c"})
    b.declare_queue("c", False, {})
    conn, peer = env.connect()
    env.publish(conn, "a", b"x")
    b.consume(conn, "a", 1, None)
    return conn, peer


def test_a_reject_reason_travels_with_the_dead_lettered_message(env: Env) -> None:
    b = env.broker
    conn, peer = _chain(env)
    assert b.reject(conn, [peer.take()[0].delivery], "no usable task id") == []
    b.consume(conn, "b", 1, None)
    (g,) = peer.take()
    assert g.headers is not None
    assert g.headers["x-death-reason"] == "rejected"
    assert g.headers["x-death-detail"] == "no usable task id"
    b.reject(conn, [g.delivery])  # no reason this time: the old one does not linger
    b.consume(conn, "c", 1, None)
    (g,) = peer.take()
    assert g.headers is not None and "x-death-detail" not in g.headers


def test_a_long_reject_reason_is_cut_to_its_first_1024_characters(env: Env) -> None:
    env.declare_with_dlq()
    b = env.broker
    conn, peer = env.connect()
    env.publish(conn, "q", b"x")
    env.settle()
    b.consume(conn, "q", 1, None)
    b.reject(conn, [peer.take()[0].delivery], "é" * 5000)
    b.consume(conn, "dlq", 1, None)
    (g,) = peer.take()
    assert g.headers is not None and g.headers["x-death-detail"] == "é" * 1024


def test_nack_without_requeue_dead_letters(env: Env) -> None:
    env.declare_with_dlq(max_deliveries=5)
    b = env.broker
    conn, peer = env.connect()
    env.publish(conn, "q", b"bad")
    env.settle()
    b.consume(conn, "q", 1, None)
    b.nack(conn, [peer.take()[0].delivery], False, None)
    assert peer.got == []
    assert env.stats("q")["ready"] == 0
    b.consume(conn, "dlq", 1, None)
    (d,) = peer.take()
    assert d.headers is not None and d.headers["x-death-reason"] == "rejected"


def test_death_count_accumulates_across_dead_letterings(env: Env) -> None:
    b = env.broker
    conn, peer = _chain(env)
    b.reject(conn, [peer.take()[0].delivery])
    b.consume(conn, "b", 1, None)
    b.reject(conn, [peer.take()[0].delivery])
    b.consume(conn, "c", 1, None)
    (g,) = peer.take()
    assert g.headers is not None
    assert (g.headers["x-death-count"], g.headers["x-death-queue"]) == (2, "b")


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


def test_nack_with_delay_holds_the_message_until_due(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"retry-me")
    env.settle()
    b.consume(conn, "q", 10, None)
    assert b.nack(conn, [peer.take()[0].delivery], True, 30) == []
    assert env.stats("q") == {"ready": 0, "leased": 0, "delayed": 1, "consumers": 1}
    env.advance(29.9)
    assert peer.got == []
    assert env.stats("q")["delayed"] == 1
    env.advance(0.2)
    (g,) = peer.take()
    assert (g.body, g.attempt, g.redelivered) == (b"retry-me", 2, True)
    assert env.stats("q") == {"ready": 0, "leased": 1, "delayed": 0, "consumers": 1}
    env.settle()
    assert env.store.count_rows() == 1


def test_nack_with_bad_delay_is_invalid_and_changes_nothing(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"x")
    b.consume(conn, "q", 1, None)
    did = peer.got[0].delivery
    with pytest.raises(BrokerError) as exc:
        b.nack(conn, [did], True, -1)
    assert exc.value.code == ErrorCode.INVALID_ARGUMENT
    assert b.ack(conn, [did]) == []


def test_nack_requeue_returns_several_in_original_order(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    for i in range(5):
        env.publish(conn, "q", b"%d" % i)
    cid = b.consume(conn, "q", 3, None)
    first = peer.take()
    b.cancel(conn, cid)
    assert b.nack(conn, [g.delivery for g in first], True, None) == []
    assert env.stats("q")["ready"] == 5
    b.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"0", b"1", b"2", b"3", b"4"]
