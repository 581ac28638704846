"""Unit tests for the broker core: routing, confirms, topology, prefetch,
leases, dead-lettering, delays, priorities, TTL, max_length and paging.

Everything runs on a ``FakeClock`` and a ``MemoryStore`` whose callbacks wait
until ``store.drain()``, so "I/O completes" exactly when a test says so. No
sleeps, no timing asserts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from brokerd import delayed as delayed_mod
from brokerd.broker import Broker
from brokerd.clock import FakeClock
from brokerd.errors import BrokerError
from brokerd.queues import LOW_WATER, WINDOW, Connection, Consumer, Delivery
from brokerd.storage import MemoryStore
from brokerd.storage.base import Batch, Done
from brokerd_protocol import ErrorCode

# --- harness -----------------------------------------------------------------


@dataclass
class Got:
    """A snapshot of one delivery as the session would have framed it."""

    consumer: int
    delivery: int
    body: bytes
    attempt: int
    redelivered: bool
    headers: dict[str, Any] | None
    priority: int
    exchange: str
    routing_key: str
    deadline: float


class FakePeer:
    """Records everything the core sends to a connection."""

    def __init__(self) -> None:
        self.writable = True
        self.got: list[Got] = []
        self.confirm_calls: list[tuple[list[int], list[int]]] = []
        self.publish_errors: list[tuple[int, ErrorCode, str]] = []
        self.cancelled: list[tuple[int, str]] = []

    def send_delivery(self, consumer: Consumer, delivery: Delivery) -> None:
        m = delivery.message
        self.got.append(
            Got(
                consumer.id,
                delivery.id,
                m.body,
                m.attempts + 1,
                m.attempts > 0,
                dict(m.headers) if m.headers else None,
                m.priority,
                m.exchange,
                m.routing_key,
                delivery.deadline,
            )
        )

    def send_confirms(self, routed: list[int], unroutable: list[int]) -> None:
        self.confirm_calls.append((list(routed), list(unroutable)))

    def send_publish_error(self, seq: int, code: ErrorCode, message: str) -> None:
        self.publish_errors.append((seq, code, message))

    def send_consumer_cancelled(self, consumer_id: int, reason: str) -> None:
        self.cancelled.append((consumer_id, reason))

    # --- helpers for assertions ----------------------------------------------

    @property
    def confirmed(self) -> list[int]:
        return [s for routed, _ in self.confirm_calls for s in routed]

    @property
    def unroutable(self) -> list[int]:
        return [s for _, unr in self.confirm_calls for s in unr]

    def bodies(self) -> list[bytes]:
        return [g.body for g in self.got]

    def take(self) -> list[Got]:
        got, self.got = self.got, []
        return got


class Env:
    """A broker on a fake clock and an in-memory store, plus helpers."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.clock = FakeClock()
        self.store = store if store is not None else MemoryStore()
        self.broker = Broker(self.store, self.clock)
        self._seq = 0

    def connect(self) -> tuple[Connection, FakePeer]:
        peer = FakePeer()
        return self.broker.open(peer), peer

    def publish(
        self, conn: Connection, key: str, body: bytes, exchange: str = "", **props: Any
    ) -> int:
        self._seq += 1
        self.broker.publish(conn, self._seq, exchange, key, body, props)
        return self._seq

    def settle(self, rounds: int = 1000) -> None:
        """Commit and complete every pending store operation, and what they trigger."""
        for _ in range(rounds):
            self.broker.flush()
            if not self.store.drain() and not self.broker.batch:
                return
        raise AssertionError("store operations did not settle")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.broker.tick()

    def stats(self, queue: str) -> dict[str, Any]:
        return self.broker.queue_stats(queue)


@pytest.fixture
def env() -> Env:
    return Env()


def err(exc: pytest.ExceptionInfo[BrokerError]) -> tuple[ErrorCode, str]:
    return exc.value.code, exc.value.message


# --- publishing and routing --------------------------------------------------


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


def test_default_exchange_unknown_queue_is_unroutable(env: Env) -> None:
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


def test_unroutable_is_confirmed_as_unroutable_only_after_commit(env: Env) -> None:
    env.broker.declare_exchange("d", "direct", True)
    conn, peer = env.connect()
    seq = env.publish(conn, "nobody", b"x", exchange="d")
    assert peer.confirm_calls == []
    env.broker.flush()
    assert peer.confirm_calls == []
    env.store.drain()
    assert peer.confirm_calls == [([], [seq])]
    assert env.broker.counters.unroutable == 1


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
    code, message = err(exc)
    assert code == ErrorCode.NOT_FOUND
    assert "ghost" in message
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


def test_confirm_follows_store_commit(env: Env) -> None:
    env.broker.declare_queue("q", True, {})
    conn, peer = env.connect()
    s1 = env.publish(conn, "q", b"1")
    s2 = env.publish(conn, "q", b"2")
    assert peer.confirm_calls == []
    assert env.store.count_rows() == 0  # nothing handed to the store yet
    env.broker.flush()
    assert env.store.count_rows() == 2
    assert peer.confirm_calls == []  # committed, but the store has not reported back
    env.store.drain()
    # One batch, one confirm call covering both publishes.
    assert peer.confirm_calls == [([s1, s2], [])]


def test_confirms_for_transient_queue_also_wait_for_flush(env: Env) -> None:
    env.broker.declare_queue("t", False, {})
    conn, peer = env.connect()
    seq = env.publish(conn, "t", b"x")
    env.store.drain()
    assert peer.confirm_calls == []
    env.settle()
    assert peer.confirmed == [seq]
    assert env.store.count_rows() == 0  # transient messages never reach the store


def test_confirms_go_to_the_publishing_connection_only(env: Env) -> None:
    env.broker.declare_queue("q", True, {})
    c1, p1 = env.connect()
    c2, p2 = env.connect()
    s1 = env.publish(c1, "q", b"1")
    s2 = env.publish(c2, "q", b"2")
    env.settle()
    assert p1.confirmed == [s1]
    assert p2.confirmed == [s2]


def test_no_confirms_for_a_connection_closed_before_commit(env: Env) -> None:
    env.broker.declare_queue("q", True, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"1")
    env.broker.flush()
    env.broker.close(conn)
    env.store.drain()
    assert peer.confirm_calls == []
    assert env.stats("q")["ready"] == 1  # the message itself was accepted


class FailingStore(MemoryStore):
    """A store whose commits all fail."""

    def commit(self, batch: Batch, done: Done) -> None:
        self._schedule(lambda: done(OSError("disk on fire")))


def test_failed_commit_refuses_stored_publishes_and_confirms_the_rest() -> None:
    """Only a publish that needed the commit is refused; a transient-only or
    unroutable one needed nothing stored and was confirmed (or delivered) anyway."""
    env = Env(FailingStore())
    env.broker.declare_queue("q", True, {})
    env.broker.declare_queue("t", False, {})
    conn, peer = env.connect()
    s1 = env.publish(conn, "q", b"1")
    s2 = env.publish(conn, "nowhere", b"2")
    s3 = env.publish(conn, "t", b"3")
    env.settle()
    assert peer.confirm_calls == [([s3], [s2])]
    assert [(s, c) for s, c, _ in peer.publish_errors] == [(s1, ErrorCode.STORAGE_FAILED)]
    assert "disk on fire" in peer.publish_errors[0][2]


def test_uncommitted_bytes_return_to_zero_after_commit(env: Env) -> None:
    """Flow control must not leak: transient and durable publishes both settle to 0."""
    b = env.broker
    b.declare_queue("durable", True, {})
    b.declare_queue("transient", False, {"dead_letter_queue": "dlq"})
    b.declare_queue("dlq", True, {})
    b.declare_exchange("f", "fanout", False)
    b.bind("durable", "f", "")
    b.bind("transient", "f", "")
    conn, peer = env.connect()
    env.publish(conn, "durable", b"12345")
    assert b.uncommitted_bytes >= 5  # counted while the commit is outstanding
    env.publish(conn, "transient", b"1234567")
    env.publish(conn, "", b"123", exchange="f")
    env.settle()
    assert b.uncommitted_bytes == 0
    # A transient message dead-lettered into a durable queue is inserted there.
    b.consume(conn, "transient", 10, None)
    ids = [g.delivery for g in peer.take()]
    b.reject(conn, ids)
    env.settle()
    assert env.stats("dlq")["ready"] == 2
    assert b.uncommitted_bytes == 0


# --- topology ----------------------------------------------------------------


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


def test_declare_with_invalid_names_or_types(env: Env) -> None:
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


def test_delete_missing_queue_or_exchange(env: Env) -> None:
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


def test_bind_and_unbind_errors(env: Env) -> None:
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


# --- consumers and prefetch --------------------------------------------------


def test_consume_argument_checks(env: Env) -> None:
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


def test_round_robin_across_two_consumers(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    ca, pa = env.connect()
    cb, pb = env.connect()
    b.consume(ca, "q", 10, None)
    b.consume(cb, "q", 10, None)
    for i in range(6):
        env.publish(ca, "q", b"%d" % i)
    assert pa.bodies() == [b"0", b"2", b"4"]
    assert pb.bodies() == [b"1", b"3", b"5"]


def test_round_robin_skips_consumers_without_credit(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    ca, pa = env.connect()
    cb, pb = env.connect()
    b.consume(ca, "q", 1, None)
    b.consume(cb, "q", 10, None)
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


# --- dead-lettering, nack, reject ---------------------------------------------


def _dlq_env(env: Env, **options: Any) -> None:
    env.broker.declare_queue("dlq", True, {})
    env.broker.declare_queue("q", True, {"dead_letter_queue": "dlq", **options})


def test_max_deliveries_via_nack_dead_letters_with_reason(env: Env) -> None:
    _dlq_env(env, max_deliveries=3)
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
    dconn, dpeer = env.connect()
    b.consume(dconn, "dlq", 1, None)
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


def test_max_deliveries_via_lease_expiry(env: Env) -> None:
    _dlq_env(env, max_deliveries=2, lease=5)
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
    _dlq_env(env)
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


def test_a_reject_reason_travels_with_the_dead_lettered_message(env: Env) -> None:
    b = env.broker
    b.declare_queue("a", False, {"dead_letter_queue": "b"})
    b.declare_queue("b", False, {"dead_letter_queue": "c"})
    b.declare_queue("c", False, {})
    conn, peer = env.connect()
    env.publish(conn, "a", b"x")
    b.consume(conn, "a", 1, None)
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
    _dlq_env(env)
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
    _dlq_env(env, max_deliveries=5)
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
    b.declare_queue("a", False, {"dead_letter_queue": "b"})
    b.declare_queue("b", False, {"dead_letter_queue": "c"})
    b.declare_queue("c", False, {})
    conn, peer = env.connect()
    env.publish(conn, "a", b"x")
    b.consume(conn, "a", 1, None)
    b.reject(conn, [peer.take()[0].delivery])
    b.consume(conn, "b", 1, None)
    b.reject(conn, [peer.take()[0].delivery])
    b.consume(conn, "c", 1, None)
    (g,) = peer.take()
    assert g.headers is not None
    assert (g.headers["x-death-count"], g.headers["x-death-queue"]) == (2, "b")


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


# --- delayed publish -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["delay", "not_before"])
def test_delayed_publish_is_delayed_not_ready_and_delivered_on_time(env: Env, kind: str) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    b.consume(conn, "q", 10, 3600)
    props = {"delay": 60} if kind == "delay" else {"not_before": env.clock.now() + 60}
    seq = env.publish(conn, "q", b"eta", **props)
    env.publish(conn, "q", b"now")
    env.settle()
    assert seq in peer.confirmed  # delayed messages are confirmed on commit, like any
    assert peer.bodies() == [b"now"]
    assert env.stats("q") == {"ready": 0, "leased": 1, "delayed": 1, "consumers": 1}
    assert env.store.count_rows() == 2  # durable while it waits
    assert b.next_deadline() is not None
    env.advance(59.9)
    assert peer.bodies() == [b"now"]
    assert env.stats("q")["leased"] == 1  # never leased while delayed
    env.advance(0.2)
    assert peer.bodies() == [b"now", b"eta"]
    assert env.stats("q") == {"ready": 0, "leased": 2, "delayed": 0, "consumers": 1}


def test_delayed_message_waits_in_ready_after_release_without_consumer(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"x", delay=5)
    env.advance(5)
    assert env.stats("q") == {"ready": 1, "leased": 0, "delayed": 0, "consumers": 0}
    b.consume(conn, "q", 1, None)
    assert peer.bodies() == [b"x"]


def test_delay_and_not_before_take_the_later(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {})
    conn, peer = env.connect()
    b.consume(conn, "q", 10, None)
    env.publish(conn, "q", b"a", delay=10, not_before=env.clock.now() + 20)
    env.publish(conn, "q", b"b", delay=0)  # zero delay: ready at once
    env.publish(conn, "q", b"c", not_before=env.clock.now() - 5)  # past: ready at once
    assert peer.bodies() == [b"b", b"c"]
    env.advance(15)
    assert peer.bodies() == [b"b", b"c"]
    env.advance(5)
    assert peer.bodies() == [b"b", b"c", b"a"]


def test_delayed_messages_release_in_due_order(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    for name, delay in (("c", 30), ("a", 10), ("b", 20), ("a2", 10)):
        env.publish(conn, "q", name.encode(), delay=delay)
    env.settle()
    b.consume(conn, "q", 10, None)
    env.advance(100)
    assert peer.bodies() == [b"a", b"a2", b"b", b"c"]


def test_many_durable_delayed_messages_beyond_window(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny in-memory delayed window most durable delayed messages wait
    on disk; every one is still released exactly once, in due order, including
    ones added while a load from disk is in flight."""
    monkeypatch.setattr(delayed_mod, "DELAYED_WINDOW", 8)
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    expected = []
    for i in range(40):
        env.publish(conn, "q", b"%03d" % i, delay=100 + i)
        expected.append(b"%03d" % i)
    env.settle()
    assert env.stats("q")["delayed"] == 40
    b.consume(conn, "q", 1000, 86_400)
    late: list[bytes] = []
    for _ in range(300):
        env.clock.advance(1)
        b.tick()
        b.flush()  # loads requested by the tick are issued at flush
        if not late and b.delayed.loading:
            # Added while a load from disk is in flight, due after all loaded.
            for j in range(5):
                body = b"late%d" % j
                env.publish(conn, "q", body, delay=100 + j)
                late.append(body)
        env.settle()
    assert late, "no load from disk was ever in flight"
    assert sorted(peer.bodies()) == sorted(expected + late)
    assert peer.bodies()[:40] == expected
    assert env.stats("q") == {"ready": 0, "leased": 45, "delayed": 0, "consumers": 1}


# --- priorities ----------------------------------------------------------------


def test_higher_priority_first_fifo_within_priority(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    for body, prio in (("low1", 0), ("mid1", 5), ("top", 9), ("mid2", 5), ("low2", 0)):
        env.publish(conn, "q", body.encode(), priority=prio)
    env.settle()
    b.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"top", b"mid1", b"mid2", b"low1", b"low2"]
    assert [g.priority for g in peer.got] == [9, 5, 5, 0, 0]


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


# --- TTL ---------------------------------------------------------------------


def test_message_ttl_expired_before_dispatch_goes_to_dlq(env: Env) -> None:
    _dlq_env(env)
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
    _dlq_env(env)
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
    _dlq_env(env)
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


# --- max_length ----------------------------------------------------------------


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
    conn, _ = env.connect()
    b.consume(conn, "q", 5, None)
    for i in range(3):
        env.publish(conn, "q", b"%d" % i)  # each is leased at once
    assert env.stats("q")["leased"] == 3


def test_max_length_drop_head_dead_letters_the_oldest(env: Env) -> None:
    _dlq_env(env, max_length=2, overflow="drop_head")
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


# --- paging ------------------------------------------------------------------


def test_deep_durable_queue_pages_with_flat_memory(env: Env) -> None:
    b = env.broker
    b.declare_queue("deep", True, {})
    conn, peer = env.connect()
    total = 10_000
    for i in range(total):
        env.publish(conn, "deep", b"%05d" % i)
    env.settle()
    q = b.queues["deep"]
    assert q.mem <= WINDOW
    assert env.stats("deep")["ready"] == total
    assert env.store.count_rows() == total
    b.consume(conn, "deep", 100, None)
    received: list[bytes] = []
    peak = q.mem
    for _ in range(total):  # bounded: each round acks at least one delivery
        got = peer.take()
        if not got:
            env.settle()
            got = peer.take()
            if not got:
                break
        received.extend(g.body for g in got)
        assert b.ack(conn, [g.delivery for g in got]) == []
        peak = max(peak, q.mem)
        env.settle()
        peak = max(peak, q.mem)
    assert peak <= WINDOW
    assert len(received) == total
    assert received == [b"%05d" % i for i in range(total)]
    assert env.stats("deep") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 1}
    assert env.store.count_rows() == 0


def test_publish_while_paging_keeps_fifo(env: Env) -> None:
    b = env.broker
    b.declare_queue("deep", True, {})
    conn, peer = env.connect()
    n = WINDOW + 600
    for i in range(n):
        env.publish(conn, "deep", b"%05d" % i)
    env.settle()
    b.consume(conn, "deep", WINDOW - LOW_WATER + 10, None)  # triggers a page load
    assert b.queues["deep"].loading
    for i in range(n, n + 50):  # published while the load is in flight
        env.publish(conn, "deep", b"%05d" % i)
    received: list[bytes] = []
    for _ in range(1000):
        env.settle()
        got = peer.take()
        if not got:
            break
        received.extend(g.body for g in got)
        b.ack(conn, [g.delivery for g in got])
    assert received == [b"%05d" % i for i in range(n + 50)]


def test_purge_during_pending_page_load_does_not_resurrect(env: Env) -> None:
    b = env.broker
    b.declare_queue("deep", True, {})
    conn, peer = env.connect()
    n = WINDOW + 1000
    for i in range(n):
        env.publish(conn, "deep", b"%05d" % i)
    env.settle()
    q = b.queues["deep"]
    b.consume(conn, "deep", WINDOW - 10, None)
    assert q.loading  # the window fell below low water: a page read is out
    leased = [g.delivery for g in peer.take()]
    assert len(leased) == WINDOW - 10
    assert b.purge_queue("deep") == n - len(leased)
    env.settle()  # the stale page arrives now and must be ignored
    assert env.stats("deep") == {"ready": 0, "leased": WINDOW - 10, "delayed": 0, "consumers": 1}
    assert q.mem == 0
    assert peer.got == []
    b.ack(conn, leased)
    env.settle()
    assert env.store.count_rows() == 0
    assert peer.got == []
    env.publish(conn, "deep", b"after-purge")
    env.settle()
    assert peer.bodies() == [b"after-purge"]


def test_delete_during_pending_page_load(env: Env) -> None:
    b = env.broker
    b.declare_queue("deep", True, {})
    conn, _peer = env.connect()
    for i in range(WINDOW + 100):
        env.publish(conn, "deep", b"%05d" % i)
    env.settle()
    b.consume(conn, "deep", WINDOW, None)
    assert b.queues["deep"].loading
    b.delete_queue("deep")
    env.settle()
    assert env.store.count_rows() == 0
    b.declare_queue("deep", True, {})
    assert env.stats("deep")["ready"] == 0


def test_transient_queue_keeps_everything_in_memory(env: Env) -> None:
    b = env.broker
    b.declare_queue("t", False, {})
    conn, peer = env.connect()
    for i in range(WINDOW + 10):
        env.publish(conn, "t", b"%d" % i)
    assert b.queues["t"].mem == WINDOW + 10
    b.consume(conn, "t", 65_535, None)
    assert len(peer.got) == WINDOW + 10


# --- leases ------------------------------------------------------------------

#: Past a lease deadline by more than the wheel's resolution (0.05 s).
PAST = 0.06


def test_lease_expiry_returns_only_that_delivery(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    conn, peer = env.connect()
    b.consume(conn, "q", 10, 10.0)
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
    conn, peer = env.connect()
    b.consume(conn, "q", 1000, 0.37)
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
    c2, p2 = env.connect()
    b.consume(c2, "q", 10, None)
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
    c2, p2 = env.connect()
    b.consume(c2, "q", 1, None)
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
    c2, p2 = env.connect()
    b.consume(c2, "q", 10, None)
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
