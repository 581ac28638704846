"""Consuming against a real brokerd: prefetch, round-robin, nack/reject,
lease expiry and extension, and what a closing connection gives back.

"Not delivered" is checked through the broker's own counters (queue_stats is
answered after every dispatch the broker could have made), never by waiting
and hoping. Short leases (0.5-1 s) are used where expiry matters; waits are
bounded only to fail rather than hang.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from clientkit import BOUND, connect, take, wait_stats

from brokerd_client import AsyncClient, LeaseLost, QueueInfo


async def test_prefetch_one_means_exactly_one_unacked(client: AsyncClient) -> None:
    await client.declare_queue("one")
    await client.publish_many(("", "one", b"%d" % i) for i in range(3))
    consumer = await client.consume("one", prefetch=1)
    got = []
    for i in range(3):
        d = await consumer.next(timeout=BOUND)
        got.append(d.body)
        # The broker holds back everything else until this one is settled.
        assert await client.queue_stats("one") == QueueInfo(2 - i, 1, 0, 1)
        assert consumer.buffered == 0
        await d.ack()
    assert got == [b"0", b"1", b"2"]
    assert await client.queue_stats("one") == QueueInfo(0, 0, 0, 1)


async def test_prefetch_counts_unacked_deliveries_only(client: AsyncClient) -> None:
    await client.declare_queue("credit")
    await client.declare_queue("credit.dead")
    await client.publish_many(("", "credit", b"%d" % i) for i in range(6))
    consumer = await client.consume("credit", prefetch=2, lease=60)
    a, b = await take(consumer, 2)
    assert await client.queue_stats("credit") == QueueInfo(4, 2, 0, 1)
    # An extended delivery is still unacked: no new credit.
    await a.extend(120)
    assert await client.queue_stats("credit") == QueueInfo(4, 2, 0, 1)
    # Each settlement (ack, reject, nack) frees exactly one slot.
    await a.ack()
    (c,) = await take(consumer, 1)
    assert await client.queue_stats("credit") == QueueInfo(3, 2, 0, 1)
    await b.reject()
    (d,) = await take(consumer, 1)
    assert await client.queue_stats("credit") == QueueInfo(2, 2, 0, 1)
    await c.nack(delay=3600)
    (e,) = await take(consumer, 1)
    assert await client.queue_stats("credit") == QueueInfo(1, 2, 1, 1)
    assert [x.body for x in (a, b, c, d, e)] == [b"0", b"1", b"2", b"3", b"4"]
    assert consumer.buffered == 0


async def test_round_robin_alternates_between_two_connections(broker: Any) -> None:
    c1 = await connect(broker, "rr-1")
    c2 = await connect(broker, "rr-2")
    await c1.declare_queue("rr")
    k1 = await c1.consume("rr", prefetch=20)
    k2 = await c2.consume("rr", prefetch=20)
    assert (await c1.queue_stats("rr")).consumers == 2
    n = 10
    # One publish at a time, so each is dispatched on its own.
    for i in range(n):
        assert await c1.publish("", "rr", b"%d" % i)
    await wait_stats(c1, "rr", ready=0, leased=n)
    first = [d.body for d in await take(k1, k1.buffered)]
    second = [d.body for d in await take(k2, k2.buffered)]
    evens = [b"%d" % i for i in range(0, n, 2)]
    odds = [b"%d" % i for i in range(1, n, 2)]
    assert sorted([first, second]) == sorted([evens, odds])
    await c1.close()
    await c2.close()


async def test_nack_requeues_at_the_head_with_the_next_attempt(client: AsyncClient) -> None:
    await client.declare_queue("redo")
    await client.publish_many([("", "redo", b"a"), ("", "redo", b"b"), ("", "redo", b"c")])
    consumer = await client.consume("redo", prefetch=1)
    a = await consumer.next(timeout=BOUND)
    assert (a.body, a.attempt, a.redelivered) == (b"a", 1, False)
    await a.nack()
    again = await consumer.next(timeout=BOUND)
    assert (again.body, again.attempt, again.redelivered) == (b"a", 2, True)
    await again.nack()
    third = await consumer.next(timeout=BOUND)
    assert (third.body, third.attempt) == (b"a", 3)
    await third.ack()
    rest = []
    for _ in range(2):
        d = await consumer.next(timeout=BOUND)
        rest.append((d.body, d.attempt))
        await d.ack()
    assert rest == [(b"b", 1), (b"c", 1)]
    assert await client.queue_stats("redo") == QueueInfo(0, 0, 0, 1)


async def test_reject_and_nack_without_requeue_dead_letter_with_reason(
    client: AsyncClient,
) -> None:
    await client.declare_queue("final")
    await client.declare_queue("dlq", dead_letter_queue="final")
    await client.declare_queue("src", dead_letter_queue="dlq")
    await client.declare_queue("nodlq")
    await client.publish("", "src", b"r", headers={"k": "v"}, message_id="m-r", priority=2)
    await client.publish("", "src", b"n")
    await client.publish("", "nodlq", b"dropped")
    src = await client.consume("src", prefetch=2)
    r, n = await take(src, 2)
    await r.reject()
    await n.nack(requeue=False)
    assert await client.queue_stats("src") == QueueInfo(0, 0, 0, 1)

    dlq = await client.consume("dlq", prefetch=2)
    dead = {d.body: d for d in await take(dlq, 2)}
    assert set(dead) == {b"r", b"n"}
    for d in dead.values():
        assert d.headers["x-death-reason"] == "rejected"
        assert d.headers["x-death-queue"] == "src"
        assert d.headers["x-death-count"] == 1
        assert d.attempt == 1
    dr = dead[b"r"]
    assert (dr.headers["k"], dr.message_id, dr.priority) == ("v", "m-r", 2)
    assert (dr.exchange, dr.routing_key) == ("", "src")
    # Dead-lettered again from the dead-letter queue: the count goes up.
    await dr.reject()
    await dead[b"n"].ack()
    twice = await (await client.consume("final")).next(timeout=BOUND)
    assert twice.body == b"r"
    assert twice.headers["x-death-count"] == 2
    assert twice.headers["x-death-queue"] == "dlq"
    await twice.ack()

    # Without a dead-letter queue a rejected message is dropped.
    d = await (await client.consume("nodlq")).next(timeout=BOUND)
    await d.reject()
    assert await client.queue_stats("nodlq") == QueueInfo(0, 0, 0, 1)


async def test_lease_expiry_returns_only_that_delivery_and_the_connection_stays(
    broker: Any, client: AsyncClient
) -> None:
    await client.declare_queue("short")
    await client.declare_queue("long")
    await client.publish("", "short", b"expires")
    await client.publish("", "long", b"kept")
    # Two consumers on one connection: only one lease is short.
    short = await client.consume("short", prefetch=1, lease=0.5)
    long = await client.consume("long", prefetch=1, lease=60)
    expiring = await short.next(timeout=BOUND)
    kept = await long.next(timeout=BOUND)
    assert expiring.lease == pytest.approx(0.5)
    await short.cancel()  # so the returned message is not re-leased to us

    # The expired delivery is ready again, and only it.
    await wait_stats(client, "short", ready=1, leased=0)
    assert await client.queue_stats("long") == QueueInfo(0, 1, 0, 1)
    other = await connect(broker, "other")
    redelivered = await (await other.consume("short", prefetch=1)).next(timeout=BOUND)
    assert (redelivered.body, redelivered.attempt, redelivered.redelivered) == (
        b"expires",
        2,
        True,
    )

    # Our connection is still open; the other delivery is still ours to ack.
    assert not client.is_closed
    await kept.ack()
    with pytest.raises(LeaseLost) as lost:
        await expiring.ack()
    assert lost.value.delivery_id == expiring.delivery_id
    await redelivered.ack()
    assert await client.queue_stats("short") == QueueInfo(0, 0, 0, 1)
    assert await client.queue_stats("long") == QueueInfo(0, 0, 0, 1)
    await other.close()


async def test_extend_keeps_a_short_lease_alive_past_its_deadline(
    broker: Any, client: AsyncClient
) -> None:
    await client.declare_queue("slow")
    await client.publish("", "slow", b"long task")
    consumer = await client.consume("slow", prefetch=1, lease=1.0)
    d = await consumer.next(timeout=BOUND)
    # A rival consumer that would get the message if the lease ever lapsed.
    rival_client = await connect(broker, "rival")
    rival = await rival_client.consume("slow", prefetch=1)
    loop = asyncio.get_running_loop()
    until = loop.time() + 2.5
    while loop.time() < until:
        await asyncio.sleep(0.5)
        await d.extend(1.0)
        assert await client.queue_stats("slow") == QueueInfo(0, 1, 0, 2)
    await d.ack()  # raises LeaseLost if the lease ever expired
    assert await client.queue_stats("slow") == QueueInfo(0, 0, 0, 2)
    assert rival.buffered == 0
    with pytest.raises(TimeoutError):
        await rival.next(timeout=0.3)
    await rival_client.close()


async def test_closing_a_connection_returns_all_its_deliveries_at_once(broker: Any) -> None:
    holder = await connect(broker, "holder")
    await holder.declare_queue("q1")
    await holder.declare_queue("q2")
    await holder.publish_many(("", "q1", b"a%d" % i) for i in range(5))
    await holder.publish_many(("", "q2", b"b%d" % i) for i in range(3))
    k1 = await holder.consume("q1", prefetch=10, lease=60)
    k2 = await holder.consume("q2", prefetch=10, lease=60)
    held1 = await take(k1, 5)
    await take(k2, 3)
    await held1[0].ack()
    # Cancelling does not give deliveries back: they are leased to the connection.
    await k1.cancel()
    assert await holder.queue_stats("q1") == QueueInfo(0, 4, 0, 0)
    await held1[1].ack()

    taker = await connect(broker, "taker")
    t1 = await taker.consume("q1", prefetch=10)
    t2 = await taker.consume("q2", prefetch=10)
    assert t1.buffered == 0 and t2.buffered == 0
    await holder.close()
    got1 = await take(t1, 3)
    got2 = await take(t2, 3)
    assert [(d.body, d.attempt, d.redelivered) for d in got1] == [
        (b"a2", 2, True),
        (b"a3", 2, True),
        (b"a4", 2, True),
    ]
    assert [d.body for d in got2] == [b"b0", b"b1", b"b2"]
    assert all(d.attempt == 2 for d in got2)
    assert await taker.queue_stats("q1") == QueueInfo(0, 3, 0, 1)
    await taker.close()
