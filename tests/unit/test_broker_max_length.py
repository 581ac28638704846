"""A queue's ``max_length`` and its overflow.

``reject_publish`` refuses a publish that would overfill any queue it routes
to, and then stores it in none; ``drop_head`` dead-letters the oldest. Only
ready messages count: leased ones do not, delayed ones once due. A full
dead-letter queue takes no more, so queues that dead-letter into each other
cannot grow or loop.
"""

from __future__ import annotations

import pytest
from corekit import Env

from brokerd.errors import BrokerError
from brokerd_protocol import ErrorCode


def test_max_length_reject_publish_raises_and_stores_nothing(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {"max_length": 2})
    conn, peer = env.connect()
    s1 = env.publish(conn, "q", b"1")
    s2 = env.publish(conn, "q", b"2")
    env.settle()
    rows = env.store.count_rows()
    with pytest.raises(BrokerError) as exc:
        env.publish(conn, "q", b"3")
    assert exc.value.code == ErrorCode.QUEUE_FULL
    env.settle()
    assert env.store.count_rows() == rows == 2
    assert peer.confirmed == [s1, s2]
    assert env.stats("q")["ready"] == 2


def test_max_length_reject_publish_in_one_target_stores_in_none(env: Env) -> None:
    b = env.broker
    b.declare_exchange("f", "fanout", True)
    b.declare_queue("small", True, {"max_length": 1})
    b.declare_queue("big", True, {})
    b.bind("small", "f", "")
    b.bind("big", "f", "")
    conn, _ = env.connect()
    env.publish(conn, "", b"1", exchange="f")
    with pytest.raises(BrokerError) as exc:
        env.publish(conn, "", b"2", exchange="f")
    assert exc.value.code == ErrorCode.QUEUE_FULL
    env.settle()
    assert env.store.count_rows() == 2
    assert env.stats("big")["ready"] == 1


def test_max_length_counts_ready_not_leased(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"max_length": 1})
    conn, _ = env.consuming("q", 5)
    for i in range(3):
        env.publish(conn, "q", b"%d" % i)  # each is leased at once
    assert env.stats("q")["leased"] == 3


def test_max_length_drop_head_dead_letters_the_oldest(env: Env) -> None:
    env.declare_with_dlq(max_length=2, overflow="drop_head")
    b = env.broker
    conn, peer = env.connect()
    for i in range(4):
        env.publish(conn, "q", b"%d" % i)
    env.settle()
    assert env.stats("q")["ready"] == 2
    assert env.stats("dlq")["ready"] == 2
    assert env.store.count_rows() == 4
    b.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"2", b"3"]
    b.consume(conn, "dlq", 10, None)
    tail = peer.got[2:]
    assert [g.body for g in tail] == [b"0", b"1"]
    assert all(g.headers and g.headers["x-death-reason"] == "max_length" for g in tail)


def test_max_length_counts_delayed_messages_once_due(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {"max_length": 1, "overflow": "drop_head"})
    conn, peer = env.connect()
    env.publish(conn, "q", b"d1", delay=10)
    env.publish(conn, "q", b"d2", delay=10)
    env.publish(conn, "q", b"ready")  # delayed messages do not count yet
    env.settle()
    assert env.stats("q") == {"ready": 1, "leased": 0, "delayed": 2, "consumers": 0}
    env.advance(11)
    env.settle()
    assert env.stats("q") == {"ready": 1, "leased": 0, "delayed": 0, "consumers": 0}
    b.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"d2"]
    assert b.counters.dropped == {"max_length": 2}
    env.settle()
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
