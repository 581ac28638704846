"""Consumers, prefetch and the order of deliveries.

Prefetch counts unacked deliveries only, so ``prefetch=1`` really means one.
Round-robin passes over a consumer without credit, or whose connection cannot
take writes, so one slow consumer holds nothing back from the others. Higher
priorities go first, FIFO within a priority, and a requeued message keeps its
place.
"""

from __future__ import annotations

import pytest
from corekit import Env

from brokerd.errors import BrokerError
from brokerd_protocol import ErrorCode


def test_consume_and_cancel_with_bad_arguments_are_refused(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, _ = env.connect()
    for call, code in (
        (lambda: b.consume(conn, "nope", 1, None), ErrorCode.NOT_FOUND),
        (lambda: b.consume(conn, "q", 0, None), ErrorCode.INVALID_ARGUMENT),
        (lambda: b.consume(conn, "q", 65_536, None), ErrorCode.INVALID_ARGUMENT),
        (lambda: b.consume(conn, "q", 1, 0.0), ErrorCode.INVALID_ARGUMENT),
        (lambda: b.consume(conn, "q", 1, 86_401.0), ErrorCode.INVALID_ARGUMENT),
        (lambda: b.cancel(conn, 42), ErrorCode.NOT_FOUND),
    ):
        with pytest.raises(BrokerError) as exc:
            call()
        assert exc.value.code == code
    assert conn.consumers == {}


def test_consumer_ids_count_up_per_connection(env: Env) -> None:
    env.broker.declare_queue("q", False, {})
    c1, _ = env.connect()
    c2, _ = env.connect()
    assert [env.broker.consume(c1, "q", 1, None) for _ in range(3)] == [1, 2, 3]
    assert env.broker.consume(c2, "q", 1, None) == 1


def test_a_consumer_gets_nothing_until_it_is_started(env: Env) -> None:
    """The session answers Consume with the id between the two calls."""
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"waiting")
    consumer = b.add_consumer(conn, "q", 10, None)
    assert (consumer.id, peer.got) == (1, [])
    b.start_consumer(consumer)
    assert peer.bodies() == [b"waiting"]


def test_prefetch_one_delivers_exactly_one_until_ack(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    for i in range(3):
        env.publish(conn, "q", b"%d" % i)
    env.settle()
    b.consume(conn, "q", 1, None)
    assert peer.bodies() == [b"0"]
    env.publish(conn, "q", b"3")
    env.settle()
    assert len(peer.got) == 1
    assert env.stats("q")["leased"] == 1
    assert env.stats("q")["ready"] == 3
    assert b.ack(conn, [peer.got[0].delivery]) == []
    assert peer.bodies() == [b"0", b"1"]


def test_prefetch_counts_unacked_deliveries_only(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    for i in range(6):
        env.publish(conn, "q", b"%d" % i)
    b.consume(conn, "q", 2, None)
    first = peer.take()
    assert [g.body for g in first] == [b"0", b"1"]
    # Extending a lease frees no credit.
    assert b.extend(conn, [first[0].delivery], 60) == []
    assert peer.got == []
    b.ack(conn, [first[0].delivery])
    assert peer.bodies() == [b"2"]
    b.reject(conn, [first[1].delivery])
    assert peer.bodies() == [b"2", b"3"]
    assert env.stats("q")["leased"] == 2


def test_round_robin_alternates_between_two_consumers(env: Env) -> None:
    env.broker.declare_queue("q", False, {})
    ca, pa = env.consuming("q")
    _, pb = env.consuming("q")
    for i in range(6):
        env.publish(ca, "q", b"%d" % i)
    assert pa.bodies() == [b"0", b"2", b"4"]
    assert pb.bodies() == [b"1", b"3", b"5"]


def test_round_robin_skips_consumers_without_credit(env: Env) -> None:
    env.broker.declare_queue("q", False, {})
    ca, pa = env.consuming("q", 1)
    _, pb = env.consuming("q")
    for i in range(4):
        env.publish(ca, "q", b"%d" % i)
    assert pa.bodies() == [b"0"]
    assert pb.bodies() == [b"1", b"2", b"3"]


def test_unwritable_peer_gets_nothing_until_resume(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    peer.writable = False
    b.consume(conn, "q", 10, None)
    for i in range(3):
        env.publish(conn, "q", b"%d" % i)
    assert peer.got == []
    assert env.stats("q")["ready"] == 3
    peer.writable = True
    assert peer.got == []  # the core only learns through resume()
    b.resume(conn)
    assert peer.bodies() == [b"0", b"1", b"2"]
    assert env.stats("q") == {"ready": 0, "leased": 3, "delayed": 0, "consumers": 1}


def test_unwritable_consumer_is_skipped_for_a_writable_one(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    slow, slow_peer = env.connect()
    fast, fast_peer = env.connect()
    slow_peer.writable = False
    b.consume(slow, "q", 10, None)
    b.consume(fast, "q", 10, None)
    for i in range(3):
        env.publish(fast, "q", b"%d" % i)
    assert slow_peer.got == []
    assert fast_peer.bodies() == [b"0", b"1", b"2"]


def test_cancel_stops_deliveries_but_leases_stay_settleable(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    cid = b.consume(conn, "q", 10, None)
    env.publish(conn, "q", b"0")
    b.cancel(conn, cid)
    env.publish(conn, "q", b"1")
    assert peer.bodies() == [b"0"]
    assert env.stats("q") == {"ready": 1, "leased": 1, "delayed": 0, "consumers": 0}
    assert b.ack(conn, [peer.got[0].delivery]) == []
    assert env.stats("q")["leased"] == 0


def test_ack_of_unknown_or_foreign_delivery_is_lost(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    c1, p1 = env.connect()
    c2, _ = env.connect()
    env.publish(c1, "q", b"0")
    b.consume(c1, "q", 10, None)
    did = p1.got[0].delivery
    assert b.ack(c2, [did]) == [did]  # delivery ids are per connection
    assert b.ack(c1, [did, 999]) == [999]
    assert b.ack(c1, [did]) == [did]  # a second ack finds nothing


# --- priorities --------------------------------------------------------------


def test_higher_priorities_are_delivered_first_and_fifo_within_a_priority(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    for body, prio in (("low1", 0), ("mid1", 5), ("top", 9), ("mid2", 5), ("low2", 0)):
        env.publish(conn, "q", body.encode(), priority=prio)
    env.settle()
    b.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"top", b"mid1", b"mid2", b"low1", b"low2"]
    assert [g.priority for g in peer.got] == [9, 5, 5, 0, 0]


def test_a_queue_with_max_priority_takes_higher_priorities_at_its_maximum(env: Env) -> None:
    """As RabbitMQ's ``x-max-priority``: above it a message counts as at it,
    so it is delivered in publish order with the others at the maximum; each
    queue of a fan-out caps by its own maximum."""
    b = env.broker
    b.declare_exchange("fan", "fanout", True)
    b.declare_queue("capped", True, {"max_priority": 3})
    b.declare_queue("full", True, {})
    for q in ("capped", "full"):
        b.bind(q, "fan", "")
    conn, _ = env.connect()
    for body, prio in (("low", 0), ("three", 3), ("nine", 9), ("five", 5)):
        env.publish(conn, "", body.encode(), exchange="fan", priority=prio)
    env.settle()
    _, capped = env.consuming("capped")
    _, full = env.consuming("full")
    env.settle()
    assert capped.bodies() == [b"three", b"nine", b"five", b"low"]
    assert [g.priority for g in capped.got] == [3, 3, 3, 0]
    assert full.bodies() == [b"nine", b"five", b"three", b"low"]


def test_requeued_message_keeps_its_priority_position(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"low", priority=0)
    env.publish(conn, "q", b"high", priority=3)
    cid = b.consume(conn, "q", 1, None)
    (g,) = peer.take()
    assert g.body == b"high"
    b.cancel(conn, cid)
    b.nack(conn, [g.delivery], True, None)
    b.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"high", b"low"]
