"""DLQ redrive in the core: dead letters go back to the queue each one left
(``x-death-queue``), in order, by count or all, to a fixed target if asked;
messages with nowhere to go stay in order; the move is stored (it survives a
restart) and each message is in exactly one queue."""

from __future__ import annotations

import pytest
from corekit import Env

from brokerd.errors import BrokerError


def _dead_letter(env: Env, queue: str, bodies: list[bytes]) -> None:
    conn, _ = env.connect()
    for body in bodies:
        env.publish(conn, queue, body)
    env.settle()
    cconn, peer = env.consuming(queue, prefetch=len(bodies))
    for got in peer.take():
        env.broker.reject(cconn, [got.delivery], "broken")
    env.broker.close(cconn)
    env.settle()


def _bodies(env: Env, queue: str) -> list[bytes]:
    _, peer = env.consuming(queue, prefetch=100)
    env.settle()  # pages from the store after a restart
    return [g.body for g in peer.take()]


def test_redrive_by_count_then_all_keeps_order_and_survives_a_restart(env: Env) -> None:
    env.declare_with_dlq()
    _dead_letter(env, "q", [b"a", b"b", b"c", b"d"])
    assert env.stats("dlq")["ready"] == 4
    assert env.broker.redrive("dlq", 1) == 1
    assert env.broker.redrive("dlq", None) == 3
    env.settle()
    assert env.stats("q")["ready"] == 4 and env.stats("dlq")["ready"] == 0
    again = env.restart()
    assert again.stats("q")["ready"] == 4 and again.stats("dlq")["ready"] == 0
    assert _bodies(again, "q") == [b"a", b"b", b"c", b"d"]


def test_messages_without_a_source_stay_in_order_and_to_overrides(env: Env) -> None:
    env.declare_with_dlq()
    env.broker.declare_queue("other", True, {})
    _dead_letter(env, "q", [b"a", b"b"])
    conn, _ = env.connect()
    env.publish(conn, "dlq", b"plain")  # published straight in: no x-death-queue
    env.settle()
    assert env.broker.redrive("dlq", None) == 2
    assert env.stats("dlq")["ready"] == 1
    assert env.broker.redrive("dlq", None, to="other") == 1
    env.settle()
    assert _bodies(env, "other") == [b"plain"]
    with pytest.raises(BrokerError):
        env.broker.redrive("dlq", None, to="missing")
    with pytest.raises(BrokerError):
        env.broker.redrive("missing", None)


def test_a_deleted_source_keeps_its_dead_letters(env: Env) -> None:
    env.declare_with_dlq()
    _dead_letter(env, "q", [b"a"])
    env.broker.delete_queue("q")
    assert env.broker.redrive("dlq", None) == 0
    assert env.stats("dlq")["ready"] == 1


def test_a_redriven_message_starts_its_attempts_over_and_keeps_its_history(env: Env) -> None:
    env.declare_with_dlq(max_deliveries=1)
    _dead_letter(env, "q", [b"a"])
    env.broker.redrive("dlq", None)
    env.settle()
    _, peer = env.consuming("q")
    (got,) = peer.take()
    assert got.attempt == 1
    assert got.headers is not None and got.headers["x-death-queue"] == "q"
