"""Where the core routes a publish: by queue name on the default exchange and
by binding on direct, topic and fanout exchanges. A publish that cannot be
routed as asked (a missing exchange, bad properties, mandatory with no route)
is refused before anything is stored, so a client may safely publish it again.

Topic matching word by word is tested in test_routing.py.
"""

from __future__ import annotations

import pytest
from corekit import Env

from brokerd.errors import BrokerError
from brokerd_protocol import ErrorCode


def test_default_exchange_routes_by_queue_name(env: Env) -> None:
    b = env.broker
    b.declare_queue("a", True, {})
    b.declare_queue("b", True, {})
    conn, peer = env.connect()
    env.publish(conn, "a", b"to-a")
    env.settle()
    assert env.stats("a")["ready"] == 1
    assert env.stats("b")["ready"] == 0
    env.settle()
    b.consume(conn, "a", 10, None)
    (g,) = peer.take()
    assert (g.body, g.exchange, g.routing_key, g.attempt, g.redelivered) == (
        b"to-a",
        "",
        "a",
        1,
        False,
    )


def test_a_publish_to_an_unknown_queue_on_the_default_exchange_is_unroutable(env: Env) -> None:
    conn, peer = env.connect()
    seq = env.publish(conn, "nope", b"x")
    env.settle()
    assert peer.unroutable == [seq]
    assert peer.confirmed == []


def test_direct_exchange_routes_by_binding(env: Env) -> None:
    b = env.broker
    b.declare_exchange("d", "direct", True)
    for q in ("q1", "q2"):
        b.declare_queue(q, True, {})
    b.bind("q1", "d", "red")
    b.bind("q2", "d", "blue")
    b.bind("q1", "d", "both")
    b.bind("q2", "d", "both")
    conn, peer = env.connect()
    s_red = env.publish(conn, "red", b"r", exchange="d")
    s_both = env.publish(conn, "both", b"x", exchange="d")
    s_none = env.publish(conn, "green", b"g", exchange="d")
    env.settle()
    assert env.stats("q1")["ready"] == 2
    assert env.stats("q2")["ready"] == 1
    assert peer.confirmed == [s_red, s_both]
    assert peer.unroutable == [s_none]


def test_topic_exchange_routes_by_pattern(env: Env) -> None:
    b = env.broker
    b.declare_exchange("t", "topic", False)
    for q in ("star", "hash"):
        b.declare_queue(q, False, {})
    b.bind("star", "t", "logs.*")
    b.bind("hash", "t", "logs.#")
    conn, _ = env.connect()
    env.publish(conn, "logs.error", b"1", exchange="t")  # both
    env.publish(conn, "logs", b"2", exchange="t")  # '#' matches zero words
    env.publish(conn, "logs.a.b", b"3", exchange="t")  # '*' is exactly one word
    env.publish(conn, "Logs.error", b"4", exchange="t")  # case-sensitive: nowhere
    c1, p1 = env.connect()
    c2, p2 = env.connect()
    b.consume(c1, "star", 10, None)
    b.consume(c2, "hash", 10, None)
    assert p1.bodies() == [b"1"]
    assert p2.bodies() == [b"1", b"2", b"3"]


def test_fanout_exchange_ignores_key(env: Env) -> None:
    b = env.broker
    b.declare_exchange("f", "fanout", True)
    for q in ("q1", "q2"):
        b.declare_queue(q, True, {})
        b.bind(q, "f", "")
    conn, peer = env.connect()
    seq = env.publish(conn, "anything.at.all", b"x", exchange="f")
    env.settle()
    assert env.stats("q1")["ready"] == env.stats("q2")["ready"] == 1
    assert peer.confirmed == [seq]
    assert env.store.count_rows() == 2  # one row per queue copy


def test_mandatory_unroutable_raises_and_is_not_confirmed(env: Env) -> None:
    env.broker.declare_exchange("d", "direct", True)
    conn, peer = env.connect()
    with pytest.raises(BrokerError) as exc:
        env.publish(conn, "nobody", b"x", exchange="d", mandatory=True)
    assert exc.value.code == ErrorCode.UNROUTABLE
    env.settle()
    assert peer.confirm_calls == []


def test_publish_to_missing_exchange_is_not_found(env: Env) -> None:
    conn, peer = env.connect()
    with pytest.raises(BrokerError) as exc:
        env.publish(conn, "k", b"x", exchange="ghost")
    assert exc.value.code == ErrorCode.NOT_FOUND
    assert "ghost" in exc.value.message
    env.settle()
    assert peer.confirm_calls == []


def test_publish_with_bad_props_is_invalid_and_stores_nothing(env: Env) -> None:
    env.broker.declare_queue("q", True, {})
    conn, _ = env.connect()
    with pytest.raises(BrokerError) as exc:
        env.publish(conn, "q", b"x", priority=99)
    assert exc.value.code == ErrorCode.INVALID_ARGUMENT
    assert "priority" in exc.value.message
    env.settle()
    assert env.store.count_rows() == 0
    assert env.stats("q")["ready"] == 0
