"""Queues that end on their own: ``auto_delete`` and ``expires`` (SPEC §9.2).

Celery's reply and event queues are declared per process and abandoned when
it goes; these options are what removes them. A queue must never go early:
not before its first consumer (auto_delete), not while it is used (expires);
and when it goes, it goes as DeleteQueue does, on disk too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from corekit import PAST, DiskEnv, Env

from brokerd.clock import FakeClock
from brokerd.errors import BrokerError
from brokerd_protocol import ErrorCode

AUTO = {"auto_delete": True}


def test_an_auto_delete_queue_goes_when_its_last_consumer_is_cancelled(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, AUTO)
    conn, peer = env.connect()
    first = b.consume(conn, "q", 10, None)
    second = b.consume(conn, "q", 10, None)
    env.publish(conn, "q", b"left behind")
    env.settle()
    b.cancel(conn, first)
    assert "q" in b.queues  # one consumer is left
    b.cancel(conn, second)
    assert "q" not in b.queues
    assert peer.cancelled == []  # its consumers were cancelled by the client itself
    assert b.counters.queues_deleted == {"auto_delete": 1, "expires": 0}
    env.settle()
    assert "q" not in env.restart().broker.queues  # its rows went too


def test_an_auto_delete_queue_goes_when_its_consumers_connection_closes(env: Env) -> None:
    b = env.broker
    b.declare_queue("dlq", True, {})
    b.declare_queue("q", True, {**AUTO, "dead_letter_queue": "dlq", "max_deliveries": 1})
    b.declare_exchange("ex", "fanout", True)
    b.bind("q", "ex", "")
    producer, producer_peer = env.connect()
    for i in range(3):
        env.publish(producer, "q", b"m%d" % i)
    env.settle()
    conn, peer = env.consuming("q", prefetch=1)
    assert len(peer.got) == 1  # one leased, two ready
    b.close(conn)
    assert "q" not in b.queues
    # Dropped with the queue, the leased one included: not dead-lettered.
    assert env.stats("dlq")["ready"] == 0
    seq = env.publish(producer, "", b"x", exchange="ex")
    env.settle()
    assert producer_peer.unroutable == [seq]  # its binding went with it
    restarted = env.restart().broker
    assert "q" not in restarted.queues
    assert restarted.route("ex", "") == []


def test_an_auto_delete_queue_that_never_had_a_consumer_stays(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, AUTO)
    conn, _ = env.connect()
    env.publish(conn, "q", b"waiting for someone")
    env.settle()
    env.advance(86_400)
    b.declare_queue("q", True, AUTO)
    b.close(conn)  # a connection without consumers of it
    assert env.stats("q")["ready"] == 1


def test_a_consumer_leaving_another_queue_does_not_delete_an_auto_delete_one(env: Env) -> None:
    b = env.broker
    b.declare_queue("auto", False, AUTO)
    b.declare_queue("other", False, {})
    conn, _ = env.connect()
    b.consume(conn, "auto", 10, None)
    other = b.consume(conn, "other", 10, None)
    b.cancel(conn, other)
    assert "auto" in b.queues


def test_a_stopping_broker_deletes_no_auto_delete_queue(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, AUTO)
    conn, _ = env.consuming("q")
    b.stopping = True
    b.close(conn)
    assert "q" in b.queues
    env.settle()
    assert "q" in env.restart().broker.queues


def test_an_expiring_queue_goes_after_it_was_unused_that_long_never_before(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {"expires": 10})
    conn, _ = env.connect()
    env.publish(conn, "q", b"gone with it")
    env.settle()
    env.advance(9.9)
    assert "q" in b.queues
    env.advance(0.1 + PAST)
    assert "q" not in b.queues
    assert b.counters.queues_deleted == {"auto_delete": 0, "expires": 1}
    env.settle()
    assert "q" not in env.restart().broker.queues


@pytest.mark.parametrize("use", ["declare", "stats"])
def test_declaring_or_asking_for_stats_restarts_the_unused_period(env: Env, use: str) -> None:
    b = env.broker
    b.declare_queue("q", False, {"expires": 10})
    for _ in range(5):
        env.advance(8)
        if use == "declare":
            b.declare_queue("q", False, {"expires": 10})
        else:
            b.queue_stats("q")
    env.advance(9.9)
    assert "q" in b.queues
    env.advance(0.1 + PAST)
    assert "q" not in b.queues


def test_a_refused_redeclare_does_not_count_as_use(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"expires": 10})
    env.advance(8)
    with pytest.raises(BrokerError):
        b.declare_queue("q", False, {"expires": 11})
    env.advance(2 + PAST)
    assert "q" not in b.queues


def test_a_queue_with_a_consumer_never_expires_and_counts_from_when_it_left(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"expires": 10})
    conn, _ = env.consuming("q")
    env.advance(100)
    assert "q" in b.queues
    b.close(conn)
    env.advance(9.9)
    assert "q" in b.queues
    env.advance(0.1 + PAST)
    assert "q" not in b.queues


def test_an_expiry_armed_for_a_deleted_queue_spares_its_successor(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", False, {"expires": 10})
    b.delete_queue("q")
    b.declare_queue("q", False, {})
    env.advance(100)
    assert "q" in b.queues
    assert len(b.lifetimes) == 0


def test_auto_delete_and_expires_together_whichever_comes_first(env: Env) -> None:
    b = env.broker
    b.declare_queue("never-consumed", False, {"auto_delete": True, "expires": 10})
    b.declare_queue("consumed", False, {"auto_delete": True, "expires": 10})
    conn, _ = env.consuming("consumed")
    env.advance(10 + PAST)
    assert "never-consumed" not in b.queues  # expires, having had no consumer
    assert "consumed" in b.queues
    b.close(conn)
    assert "consumed" not in b.queues  # auto_delete, at once


@pytest.mark.parametrize(
    "change", [{"auto_delete": False}, {"expires": 20}, {"expires": None}, {"lease": 1}]
)
def test_redeclaring_with_other_lifetime_options_is_refused(
    env: Env, change: dict[str, Any]
) -> None:
    options = {"auto_delete": True, "expires": 10.0}
    env.broker.declare_queue("q", True, options)
    with pytest.raises(BrokerError) as exc:
        env.broker.declare_queue("q", True, {**options, **change})
    assert exc.value.code == ErrorCode.PRECONDITION_FAILED
    env.broker.declare_queue("q", True, {"expires": 10, "auto_delete": True})  # the same


def test_a_durable_expiring_queue_keeps_its_options_and_expires_after_a_restart(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    db = tmp_path / "brokerd.db"
    n = DiskEnv(db, clock=clock)
    n.broker.declare_queue("q", True, {"expires": 10, "auto_delete": True})
    conn, _ = n.connect()
    n.publish(conn, "q", b"m")
    n.settle()
    n.advance(9)
    n.crash()

    n = DiskEnv(db, clock=clock)
    q = n.broker.queues["q"]
    assert (q.options.expires, q.options.auto_delete) == (10.0, True)
    assert q.ready_count == 1  # (not QueueStats: that would count as use)
    n.advance(9)  # the unused period started again at recovery
    assert "q" in n.broker.queues
    n.advance(1 + PAST)
    assert "q" not in n.broker.queues
    n.settle()
    n.crash()

    n = DiskEnv(db, clock=clock)
    assert "q" not in n.broker.queues
    n.crash()
