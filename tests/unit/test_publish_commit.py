"""A publish reaches consumers only once it is committed.

A refused publish (``PublishError``) must mean that nothing of it was stored
and nothing of it was delivered: a client that follows SPEC §10.4 publishes it
again, and a copy already handed to a consumer would be a duplicate. So the
core holds a publish's messages back from their queues until its batch
commits, and drops them if the commit fails.
"""

from __future__ import annotations

import sqlite3

import pytest
from test_broker import Env, FakePeer

from brokerd.errors import BrokerError
from brokerd.queues import Connection
from brokerd.storage import MemoryStore
from brokerd.storage.base import Batch, Done
from brokerd_protocol import ErrorCode


class FailingStore(MemoryStore):
    """A MemoryStore whose commits fail (nothing applied) while ``fail`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def commit(self, batch: Batch, done: Done) -> None:
        if self.fail:
            error = sqlite3.OperationalError("database or disk is full")
            self._schedule(lambda: done(error))
            return
        super().commit(batch, done)


@pytest.fixture
def env() -> Env:
    return Env(FailingStore())


def failing(env: Env) -> FailingStore:
    assert isinstance(env.store, FailingStore)
    return env.store


def _consuming(env: Env) -> tuple[Connection, FakePeer]:
    """A durable queue "q" and a connection consuming from it."""
    env.broker.declare_queue("q", True, {})
    env.settle()
    conn, peer = env.connect()
    env.broker.consume(conn, "q", 10, None)
    return conn, peer


def test_a_durable_publish_is_delivered_only_after_its_commit(env: Env) -> None:
    conn, peer = _consuming(env)
    seq = env.publish(conn, "q", b"one")
    assert peer.got == []
    assert peer.confirmed == []
    env.settle()
    assert peer.bodies() == [b"one"]
    assert peer.confirmed == [seq]


def test_a_publish_whose_commit_fails_is_neither_delivered_nor_stored(env: Env) -> None:
    b = env.broker
    conn, peer = _consuming(env)
    failing(env).fail = True
    seq = env.publish(conn, "q", b"lost")
    env.settle()
    assert [(s, code) for s, code, _ in peer.publish_errors] == [(seq, ErrorCode.STORAGE_FAILED)]
    assert "disk is full" in peer.publish_errors[0][2]
    assert peer.got == []
    assert peer.confirmed == []
    assert env.stats("q")["ready"] == 0
    assert env.store.count_rows() == 0
    assert b.counters.routed == 0
    assert b.counters.store_failed == 1
    # Storage recovers: the client's republish is delivered exactly once.
    failing(env).fail = False
    seq2 = env.publish(conn, "q", b"again")
    env.settle()
    assert peer.bodies() == [b"again"]
    assert peer.confirmed == [seq2]
    assert b.counters.routed == 1


def test_a_failed_fan_out_delivers_no_copy_not_even_to_a_transient_queue(env: Env) -> None:
    b = env.broker
    b.declare_exchange("fan", "fanout", True)
    b.declare_queue("durable", True, {})
    b.declare_queue("transient", False, {})
    b.bind("durable", "fan", "")
    b.bind("transient", "fan", "")
    env.settle()
    conn, peer = env.connect()
    b.consume(conn, "durable", 10, None)
    b.consume(conn, "transient", 10, None)
    failing(env).fail = True
    env.publish(conn, "k", b"x", exchange="fan")
    env.settle()
    assert len(peer.publish_errors) == 1
    assert peer.got == []
    assert env.stats("transient")["ready"] == 0


def test_a_publish_to_transient_queues_only_is_delivered_at_once(env: Env) -> None:
    b = env.broker
    b.declare_queue("t", False, {})
    conn, peer = env.connect()
    b.consume(conn, "t", 10, None)
    env.publish(conn, "t", b"now")
    assert peer.bodies() == [b"now"]


def test_a_purge_before_the_commit_removes_the_arriving_message(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    env.settle()
    conn, peer = env.connect()
    env.publish(conn, "q", b"purged")
    assert b.purge_queue("q") == 1
    env.settle()
    b.consume(conn, "q", 10, None)
    env.settle()
    assert peer.got == []
    assert env.stats("q")["ready"] == 0
    assert env.store.count_rows() == 0


def test_a_queue_deleted_before_the_commit_gets_no_arriving_message(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    env.settle()
    conn, peer = env.connect()
    env.publish(conn, "q", b"gone")
    b.delete_queue("q")
    b.declare_queue("q", True, {})
    env.settle()
    b.consume(conn, "q", 10, None)
    env.settle()
    assert peer.got == []
    assert env.store.count_rows() == 0


def test_max_length_counts_messages_still_arriving(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {"max_length": 1, "overflow": "reject_publish"})
    env.settle()
    conn, peer = env.connect()
    first = env.publish(conn, "q", b"1")
    with pytest.raises(BrokerError) as refused:
        env.publish(conn, "q", b"2")
    assert refused.value.code == ErrorCode.QUEUE_FULL
    env.settle()
    assert peer.confirmed == [first]
    assert env.stats("q")["ready"] == 1


def test_a_message_arriving_behind_a_newer_one_in_a_full_window_is_still_delivered(
    env: Env,
) -> None:
    """A dead-lettered message takes a newer seq and enters the window at once,
    while an older publish is still arriving. When the older one lands in a
    full window it must not be left on disk below the paging cursor, where no
    page load would ever find it."""
    from brokerd.queues import WINDOW

    b = env.broker
    b.declare_queue("dlq", True, {})
    b.declare_queue("work", True, {"dead_letter_queue": "dlq"})
    env.settle()
    conn, peer = env.connect()
    for i in range(WINDOW - 1):
        env.publish(conn, "dlq", b"old%d" % i)
    env.publish(conn, "work", b"rejected")
    env.settle()
    b.consume(conn, "work", 1, None)
    [g] = peer.take()
    env.publish(conn, "dlq", b"arriving")  # older seq, lands after the commit
    b.reject(conn, [g.delivery])  # newer seq, enters the window now
    env.settle()
    b.consume(conn, "dlq", 100, None)
    bodies: list[bytes] = []
    for _ in range(WINDOW * 2):
        env.settle()
        got = peer.take()
        if not got:
            break
        bodies += [x.body for x in got]
        b.ack(conn, [x.delivery for x in got])
    expected = [b"old%d" % i for i in range(WINDOW - 1)] + [b"arriving", b"rejected"]
    assert sorted(bodies) == sorted(expected)
    assert env.stats("dlq") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 1}
