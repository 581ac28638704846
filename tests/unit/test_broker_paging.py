"""Paging a durable queue's backlog from the store.

A durable queue keeps a window of its backlog in memory and reads the rest as
consumers drain it, so memory stays flat however deep the queue. FIFO holds
across pages and publishes made while a page read is in flight; a purge or
delete during that read must not bring its messages back. The byte budget
across queues is tested in test_memory_budget.py.
"""

from __future__ import annotations

from corekit import Env, FakePeer

from brokerd.queues import LOW_WATER, WINDOW, Connection


def _deep(env: Env, n: int) -> tuple[Connection, FakePeer]:
    """A durable queue "deep" holding ``n`` committed messages, bodies b"00000"
    counting up, and the connection that published them."""
    env.broker.declare_queue("deep", True, {})
    conn, peer = env.connect()
    for i in range(n):
        env.publish(conn, "deep", b"%05d" % i)
    env.settle()
    return conn, peer


def test_deep_durable_queue_pages_with_flat_memory(env: Env) -> None:
    b = env.broker
    total = 10_000
    conn, peer = _deep(env, total)
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
    n = WINDOW + 600
    conn, peer = _deep(env, n)
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
    n = WINDOW + 1000
    conn, peer = _deep(env, n)
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


def test_a_queue_deleted_during_a_page_load_is_declared_again_empty(env: Env) -> None:
    b = env.broker
    conn, _ = _deep(env, WINDOW + 100)
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
