"""Exchanges, queues and bindings.

Clients declare what they need every time they start, so declaring again must
change nothing, and declaring with other settings must fail rather than
quietly keep one version; a bad option names its field. Purging and deleting
must leave nothing that could come back: no row, binding or delayed message of
an old queue reaches a new one of the same name.
"""

from __future__ import annotations

from typing import Any

import pytest
from corekit import Env

from brokerd.errors import BrokerError
from brokerd_protocol import ErrorCode


def test_declare_queue_is_idempotent(env: Env) -> None:
    opts = {"lease": 5, "max_deliveries": 3}
    env.broker.declare_queue("q", True, opts)
    conn, _ = env.connect()
    env.publish(conn, "q", b"kept")
    env.broker.declare_queue("q", True, dict(opts))
    env.broker.declare_queue("q", True, {"max_deliveries": 3, "lease": 5.0})
    env.settle()
    assert env.stats("q")["ready"] == 1


def test_declare_exchange_is_idempotent(env: Env) -> None:
    b = env.broker
    b.declare_exchange("e", "topic", True)
    b.declare_queue("q", True, {})
    b.bind("q", "e", "a.#")
    b.declare_exchange("e", "topic", True)
    conn, _ = env.connect()
    env.publish(conn, "a.b", b"x", exchange="e")
    env.settle()
    assert env.stats("q")["ready"] == 1  # the binding survived the redeclare


@pytest.mark.parametrize(
    ("durable", "options"),
    [
        (True, {"lease": 6}),
        (False, {"lease": 5}),
        (True, {"lease": 5, "max_deliveries": 2}),
        (True, {"lease": 5, "overflow": "drop_head"}),
    ],
)
def test_redeclare_queue_with_different_settings_fails(
    env: Env, durable: bool, options: dict[str, Any]
) -> None:
    env.broker.declare_queue("q", True, {"lease": 5})
    with pytest.raises(BrokerError) as exc:
        env.broker.declare_queue("q", durable, options)
    assert exc.value.code == ErrorCode.PRECONDITION_FAILED
    assert "'q'" in exc.value.message


def test_a_queue_without_max_priority_takes_the_first_one_declared_then_keeps_it(
    env: Env,
) -> None:
    """brokerd before max_priority accepted x-max-priority and dropped it, so
    queues stored then have none: a Celery app declaring x-max-priority as
    before must not be refused after an upgrade. Once set, another value is."""
    b = env.broker
    b.declare_queue("q", True, {"lease": 5})
    b.declare_queue("q", True, {"lease": 5, "max_priority": 4})
    b.declare_queue("q", True, {"lease": 5, "max_priority": 4})
    for other in ({"lease": 5, "max_priority": 5}, {"lease": 5}, {"lease": 6, "max_priority": 4}):
        with pytest.raises(BrokerError) as exc:
            b.declare_queue("q", True, other)
        assert exc.value.code == ErrorCode.PRECONDITION_FAILED
    env.settle()
    restarted = env.restart()
    restarted.broker.declare_queue("q", True, {"lease": 5, "max_priority": 4})
    with pytest.raises(BrokerError):
        restarted.broker.declare_queue("q", True, {"lease": 5})


@pytest.mark.parametrize(("etype", "durable"), [("fanout", True), ("direct", False)])
def test_redeclare_exchange_with_different_settings_fails(
    env: Env, etype: str, durable: bool
) -> None:
    env.broker.declare_exchange("e", "direct", True)
    with pytest.raises(BrokerError) as exc:
        env.broker.declare_exchange("e", etype, durable)
    assert exc.value.code == ErrorCode.PRECONDITION_FAILED


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"lease": 0}, "lease"),
        ({"lease": "30"}, "lease"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"max_length": -1}, "max_length"),
        ({"overflow": "explode"}, "overflow"),
        ({"message_ttl": -5}, "message_ttl"),
        ({"dead_letter_queue": ""}, "dead_letter_queue"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_declare_queue_with_invalid_options_names_the_field(
    env: Env, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(BrokerError) as exc:
        env.broker.declare_queue("q", True, options)
    assert exc.value.code == ErrorCode.INVALID_ARGUMENT
    assert field in exc.value.message
    assert "q" not in env.broker.queues
    env.settle()
    assert env.store.commits == 0


def test_declares_with_invalid_names_or_types_are_refused(env: Env) -> None:
    b = env.broker
    for call in (
        lambda: b.declare_queue("", True, {}),
        lambda: b.declare_queue("x" * 256, True, {}),
        lambda: b.declare_exchange("", "direct", True),
        lambda: b.declare_exchange("e", "headers", True),
    ):
        with pytest.raises(BrokerError) as exc:
            call()
        assert exc.value.code == ErrorCode.INVALID_ARGUMENT


def test_purge_drops_ready_only_and_returns_count(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    for i in range(5):
        env.publish(conn, "q", b"%d" % i)
    env.publish(conn, "q", b"later", delay=60)
    env.settle()
    b.consume(conn, "q", 2, None)
    leased = [g.delivery for g in peer.take()]
    assert b.purge_queue("q") == 3
    assert env.stats("q") == {"ready": 0, "leased": 2, "delayed": 1, "consumers": 1}
    env.settle()
    assert env.store.count_rows() == 3  # two leased + one delayed
    # The leased messages are still ours to settle.
    assert b.ack(conn, leased) == []
    env.settle()
    assert env.store.count_rows() == 1
    assert peer.got == []  # nothing purged came back
    env.advance(61)
    assert peer.bodies() == [b"later"]


def test_purge_empty_queue_returns_zero(env: Env) -> None:
    env.broker.declare_queue("q", False, {})
    assert env.broker.purge_queue("q") == 0
    with pytest.raises(BrokerError) as exc:
        env.broker.purge_queue("nope")
    assert exc.value.code == ErrorCode.NOT_FOUND


def test_delete_queue_cancels_consumers_and_removes_everything(env: Env) -> None:
    b = env.broker
    b.declare_exchange("d", "direct", True)
    b.declare_queue("q", True, {})
    b.bind("q", "d", "k")
    c1, p1 = env.connect()
    c2, p2 = env.connect()
    for i in range(4):
        env.publish(c1, "q", b"%d" % i)
    cid1 = b.consume(c1, "q", 1, None)
    cid2 = b.consume(c2, "q", 1, None)
    env.settle()
    assert b.delete_queue("q") == 2  # ready messages, not the two leased
    assert p1.cancelled == [(cid1, "queue 'q' was deleted")]
    assert p2.cancelled == [(cid2, "queue 'q' was deleted")]
    assert c1.consumers == {} and c2.consumers == {}
    with pytest.raises(BrokerError) as exc:
        b.queue_stats("q")
    assert exc.value.code == ErrorCode.NOT_FOUND
    # The binding went with the queue, and so did every stored row.
    s = env.publish(c1, "k", b"x", exchange="d")
    env.settle()
    assert s in p1.unroutable
    assert env.store.count_rows() == 0
    # Settling a delivery of the deleted queue is harmless and not "lost".
    assert b.ack(c1, [p1.got[0].delivery]) == []
    assert b.nack(c2, [p2.got[0].delivery], True, None) == []
    env.settle()
    assert env.store.count_rows() == 0


def test_deleted_queue_does_not_leak_delayed_messages_into_a_new_one(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"old", delay=10)
    assert b.delete_queue("q") == 1
    b.declare_queue("q", True, {})
    b.consume(conn, "q", 10, None)
    env.advance(11)
    env.settle()
    assert peer.got == []
    assert env.stats("q") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 1}
    assert b.next_deadline() is None


def test_deleting_a_missing_queue_or_exchange_is_refused(env: Env) -> None:
    b = env.broker
    for call, code in (
        (lambda: b.delete_queue("nope"), ErrorCode.NOT_FOUND),
        (lambda: b.delete_exchange("nope"), ErrorCode.NOT_FOUND),
        (lambda: b.delete_exchange(""), ErrorCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(BrokerError) as exc:
            call()
        assert exc.value.code == code


def test_delete_exchange_stops_routing(env: Env) -> None:
    b = env.broker
    b.declare_exchange("f", "fanout", True)
    b.declare_queue("q", True, {})
    b.bind("q", "f", "")
    b.delete_exchange("f")
    conn, peer = env.connect()
    with pytest.raises(BrokerError) as exc:
        env.publish(conn, "", b"x", exchange="f")
    assert exc.value.code == ErrorCode.NOT_FOUND
    b.declare_exchange("f", "fanout", True)
    s = env.publish(conn, "", b"x", exchange="f")
    assert env.stats("q")["ready"] == 0  # old bindings did not come back
    env.settle()
    assert peer.unroutable == [s]


def test_bind_and_unbind_with_bad_arguments_are_refused(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    b.declare_exchange("d", "direct", False)
    cases = [
        (lambda: b.bind("q", "ghost", "k"), ErrorCode.NOT_FOUND),
        (lambda: b.bind("ghost", "d", "k"), ErrorCode.NOT_FOUND),
        (lambda: b.bind("q", "", "q"), ErrorCode.INVALID_ARGUMENT),
        (lambda: b.unbind("q", "d", "never-bound"), ErrorCode.NOT_FOUND),
    ]
    for call, code in cases:
        with pytest.raises(BrokerError) as exc:
            call()
        assert exc.value.code == code


def test_unbind_stops_routing(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    b.declare_exchange("d", "direct", False)
    b.bind("q", "d", "k")
    b.bind("q", "d", "k")  # binding twice is one binding
    b.unbind("q", "d", "k")
    conn, peer = env.connect()
    s = env.publish(conn, "k", b"x", exchange="d")
    env.settle()
    assert peer.unroutable == [s]
