"""Restart recovery against a real brokerd: what survives SIGKILL and SIGTERM.

``broker.restart()`` is SIGKILL then a start on the same data directory and
port. Acks are answered before they commit, but commits are applied in
order, so a confirmed publish made after an ack's ``Settled`` proves the ack
is on disk (``commit_barrier``). Waits are bounded only to fail rather than
hang; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from clientkit import BOUND, connect, take

from brokerd_client import (
    AsyncClient,
    Message,
    NotFound,
    PreconditionFailed,
    QueueInfo,
    ServerShuttingDown,
)


async def restart(broker: Any, *clients: AsyncClient) -> AsyncClient:
    """SIGKILL the broker, start it again on the same data dir, reconnect."""
    await asyncio.to_thread(broker.restart)
    for c in clients:
        await c.close()
    return await connect(broker)


async def commit_barrier(client: AsyncClient) -> None:
    """Return once everything the broker did before now is committed.

    The writer applies batches in order, so the confirm of a publish sent
    after (say) an ack's Settled reply means that ack's delete is on disk.
    """
    await client.declare_queue("core.barrier")
    assert await client.publish("", "core.barrier", b"barrier") is True


async def test_durable_topology_and_messages_survive_sigkill_transient_ones_do_not(
    broker: Any,
) -> None:
    c = await connect(broker)
    exchanges = {"core.direct": "direct", "core.topic": "topic", "core.fanout": "fanout"}
    for name, etype in exchanges.items():
        await c.declare_exchange(name, etype)
    await c.declare_exchange("core.transient-x", "fanout", durable=False)
    await c.declare_exchange("core.doomed", "direct")
    await c.declare_exchange("core.reborn", "direct")
    opts: dict[str, Any] = {
        "lease": 7.5,
        "max_deliveries": 4,
        "dead_letter_queue": "core.dead",
        "max_length": 1000,
        "overflow": "drop_head",
        "message_ttl": 3600.0,
    }
    await c.declare_queue("core.opts", **opts)
    for q in ("core.dead", "core.d", "core.t", "core.f"):
        await c.declare_queue(q)
    await c.declare_queue("core.transient-q", durable=False)
    await c.bind("core.d", "core.direct", "red")
    await c.bind("core.d", "core.direct", "gone")
    await c.unbind("core.d", "core.direct", "gone")  # a removed binding stays removed
    await c.bind("core.t", "core.topic", "a.*.c")
    await c.bind("core.f", "core.fanout", "")
    await c.bind("core.transient-q", "core.fanout", "")
    await c.bind("core.f", "core.transient-x", "")
    await c.bind("core.d", "core.doomed", "k")
    await c.delete_exchange("core.doomed")  # its bindings go with it, on disk too
    await c.bind("core.d", "core.reborn", "k")
    await c.delete_exchange("core.reborn")
    await c.declare_exchange("core.reborn", "direct")  # a new exchange: no old bindings

    assert await c.publish("core.direct", "red", b"d1") is True
    assert await c.publish("core.topic", "a.b.c", b"t1") is True
    assert await c.publish("core.fanout", "any", b"f1") is True
    assert await c.publish(
        "", "core.opts", b"o1", headers={"h": "v", "n": 7}, message_id="o-1", priority=4
    )
    assert await c.publish("", "core.transient-q", b"gone") is True
    assert (await c.queue_stats("core.transient-q")).ready == 2

    c = await restart(broker, c)

    # Durable exchanges are back with their types.
    for name, etype in exchanges.items():
        await c.declare_exchange(name, etype)
        other = "fanout" if etype != "fanout" else "direct"
        with pytest.raises(PreconditionFailed):
            await c.declare_exchange(name, other)
    # Transient ones are not.
    with pytest.raises(NotFound):
        await c.publish("core.transient-x", "", b"x")
    with pytest.raises(NotFound):
        await c.queue_stats("core.transient-q")
    with pytest.raises(NotFound):
        await c.publish("core.doomed", "k", b"x")

    # The queue kept its options: the same declaration matches, others do not.
    await c.declare_queue("core.opts", **opts)
    with pytest.raises(PreconditionFailed):
        await c.declare_queue("core.opts")
    with pytest.raises(PreconditionFailed):
        await c.declare_queue("core.opts", **{**opts, "max_deliveries": 5})
    with pytest.raises(PreconditionFailed):
        await c.declare_queue("core.opts", **{**opts, "overflow": "reject_publish"})

    # Messages survived, with their properties.
    for q in ("core.d", "core.t", "core.f", "core.opts"):
        assert await c.queue_stats(q) == QueueInfo(1, 0, 0, 0), q
    got = {}
    for q in ("core.d", "core.t", "core.f", "core.opts"):
        consumer = await c.consume(q, prefetch=1)
        d = await consumer.next(timeout=BOUND)
        got[q] = d
        await d.ack()
        await consumer.cancel()
    assert {q: d.body for q, d in got.items()} == {
        "core.d": b"d1",
        "core.t": b"t1",
        "core.f": b"f1",
        "core.opts": b"o1",
    }
    o = got["core.opts"]
    assert (o.headers, o.message_id, o.priority, o.attempt) == ({"h": "v", "n": 7}, "o-1", 4, 1)
    assert (got["core.t"].exchange, got["core.t"].routing_key) == ("core.topic", "a.b.c")

    # Bindings survived: each exchange routes again; removed ones do not.
    assert await c.publish("core.direct", "red", b"d2") is True
    assert await c.publish("core.direct", "gone", b"x") is False
    assert await c.publish("core.topic", "a.zz.c", b"t2") is True
    assert await c.publish("core.topic", "a.c", b"x") is False
    assert await c.publish("core.fanout", "", b"f2") is True
    assert await c.publish("core.reborn", "k", b"x") is False
    await c.declare_exchange("core.doomed", "direct")
    assert await c.publish("core.doomed", "k", b"x") is False
    for q in ("core.d", "core.t", "core.f"):
        assert await c.queue_stats(q) == QueueInfo(1, 0, 0, 0), q
    await c.close()


async def test_leased_messages_return_as_ready_and_acked_ones_stay_gone(broker: Any) -> None:
    c = await connect(broker)
    await c.declare_queue("core.work")
    assert await c.publish_many(("", "core.work", b"m%d" % i) for i in range(6)) == [True] * 6
    consumer = await c.consume("core.work", prefetch=6, lease=60)
    held = await take(consumer, 6)
    assert [d.body for d in held] == [b"m%d" % i for i in range(6)]
    await asyncio.gather(held[0].ack(), held[2].ack())
    await commit_barrier(c)
    assert await c.queue_stats("core.work") == QueueInfo(0, 4, 0, 1)

    c = await restart(broker, c)

    # Lease state is not persisted: every unacked message is ready again.
    assert await c.queue_stats("core.work") == QueueInfo(4, 0, 0, 0)
    consumer = await c.consume("core.work", prefetch=10)
    again = await take(consumer, 4)
    assert [d.body for d in again] == [b"m1", b"m3", b"m4", b"m5"]
    # A broker crash is not a failed delivery (docs/ARCHITECTURE.md, "Durable layout").
    assert [d.attempt for d in again] == [1, 1, 1, 1]
    await asyncio.gather(*(d.ack() for d in again))
    assert await c.queue_stats("core.work") == QueueInfo(0, 0, 0, 1)
    await c.close()


async def test_priority_order_holds_after_a_restart(broker: Any) -> None:
    c = await connect(broker)
    await c.declare_queue("core.prio")
    n = 3000  # more than one in-memory window: the backlog pages from disk
    msgs = [Message("", "core.prio", b"%d" % i, priority=i % 10) for i in range(n)]
    assert await c.publish_many(msgs) == [True] * n

    c = await restart(broker, c)

    assert await c.queue_stats("core.prio") == QueueInfo(n, 0, 0, 0)
    consumer = await c.consume("core.prio", prefetch=100)
    got = []
    for _ in range(n):
        d = await consumer.next(timeout=BOUND)
        got.append((d.priority, int(d.body)))
        await d.ack(wait=False)
    # Highest priority first, oldest first within a priority.
    assert got == sorted(((i % 10, i) for i in range(n)), key=lambda pi: (-pi[0], pi[1]))
    await c.close()


async def test_delivery_count_survives_restart_then_max_deliveries_dead_letters(
    broker: Any,
) -> None:
    c = await connect(broker)
    await c.declare_queue("core.dead")
    await c.declare_queue("core.retry", max_deliveries=3, dead_letter_queue="core.dead")
    assert await c.publish("", "core.retry", b"flaky", message_id="f-1", headers={"h": 1})
    consumer = await c.consume("core.retry", prefetch=1)
    first = await consumer.next(timeout=BOUND)
    assert (first.attempt, first.redelivered) == (1, False)
    await first.nack()
    second = await consumer.next(timeout=BOUND)
    assert (second.attempt, second.redelivered) == (2, True)
    # Stop the consumer so the second nack leaves the message ready (not re-leased).
    await consumer.cancel()
    await second.nack()
    await commit_barrier(c)
    assert await c.queue_stats("core.retry") == QueueInfo(1, 0, 0, 0)

    c = await restart(broker, c)

    consumer = await c.consume("core.retry", prefetch=1)
    third = await consumer.next(timeout=BOUND)
    assert (third.body, third.attempt, third.redelivered) == (b"flaky", 3, True)
    await third.nack()  # the third failed delivery of max_deliveries=3: dead-lettered
    dead_consumer = await c.consume("core.dead")
    dead = await dead_consumer.next(timeout=BOUND)
    assert dead.body == b"flaky"
    assert dead.message_id == "f-1"
    assert dead.headers["x-death-reason"] == "max_deliveries"
    assert dead.headers["x-death-queue"] == "core.retry"
    assert dead.headers["x-death-count"] == 1
    assert dead.headers["h"] == 1
    assert dead.attempt == 1  # the count starts afresh in the dead-letter queue
    await dead.ack()
    assert await c.queue_stats("core.retry") == QueueInfo(0, 0, 0, 1)
    assert consumer.buffered == 0
    await c.close()


async def test_delayed_message_survives_restart_and_is_not_delivered_early(
    broker: Any,
) -> None:
    c = await connect(broker)
    await c.declare_queue("core.later")
    published_at = time.time()
    assert await c.publish("", "core.later", b"soon", delay=2)
    assert await c.publish("", "core.later", b"much-later", delay=3600)
    assert await c.queue_stats("core.later") == QueueInfo(0, 0, 2, 0)

    c = await restart(broker, c)

    info = await c.queue_stats("core.later")
    assert info.leased == 0
    assert info.ready + info.delayed == 2
    assert info.delayed >= 1  # "much-later" certainly; "soon" unless the restart took 2 s
    consumer = await c.consume("core.later", prefetch=5)
    d = await consumer.next(timeout=BOUND)
    received_at = time.time()
    assert d.body == b"soon"
    # The broker released it no earlier than its due time (same host clock).
    assert received_at >= published_at + 2
    await d.ack()
    assert await c.queue_stats("core.later") == QueueInfo(0, 0, 1, 1)
    assert consumer.buffered == 0
    await c.close()


async def test_sigterm_stops_gracefully_and_loses_nothing_confirmed(broker: Any) -> None:
    c = await connect(broker)
    n = 1000
    await c.declare_queue("core.graceful")
    await c.declare_queue("core.graceful-delayed")
    assert await c.publish_many(("", "core.graceful", b"%04d" % i) for i in range(n)) == [True] * n
    assert await c.publish("", "core.graceful-delayed", b"eta", delay=3600)
    # Leased at the stop in a queue that allows one delivery: the stop must
    # not count as that delivery failing (which would drop the message).
    await c.declare_queue("core.graceful-once", max_deliveries=1)
    assert await c.publish("", "core.graceful-once", b"once")
    once = await c.consume("core.graceful-once", prefetch=1, lease=60)
    await once.next(timeout=BOUND)
    consumer = await c.consume("core.graceful", prefetch=10, lease=60)
    held = await take(consumer, 10)
    # Acked (Settled received) right before SIGTERM, with no commit barrier:
    # a graceful stop lets in-flight commits finish.
    await asyncio.gather(*(d.ack() for d in held[:5]))

    code = await asyncio.to_thread(broker.terminate)
    assert code == 0
    with pytest.raises(ServerShuttingDown):
        async with asyncio.timeout(BOUND):
            while True:
                await consumer.next(timeout=BOUND)
    await c.close()

    await asyncio.to_thread(broker.start)
    c = await connect(broker)
    assert await c.queue_stats("core.graceful") == QueueInfo(n - 5, 0, 0, 0)
    assert await c.queue_stats("core.graceful-delayed") == QueueInfo(0, 0, 1, 0)
    assert await c.queue_stats("core.graceful-once") == QueueInfo(1, 0, 0, 0)
    d = await (await c.consume("core.graceful-once")).next(timeout=BOUND)
    assert (d.body, d.attempt) == (b"once", 1)
    await d.ack()
    consumer = await c.consume("core.graceful", prefetch=200)
    bodies = []
    for _ in range(n - 5):
        d = await consumer.next(timeout=BOUND)
        bodies.append((d.body, d.attempt))
        await d.ack(wait=False)
    # In order, and the five held at the stop were not counted as failed.
    assert bodies == [(b"%04d" % i, 1) for i in range(5, n)]
    await c.close()
