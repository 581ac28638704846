"""Priorities, message TTL, max_length overflow policies and purge against a
real brokerd. Waits are bounded only to fail rather than hang."""

from __future__ import annotations

import asyncio

import pytest
from clientkit import BOUND, take, wait_stats

from brokerd_client import AsyncClient, Message, PreconditionFailed, QueueFull, QueueInfo


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "transient"])
async def test_higher_priorities_are_delivered_first_then_fifo_within_a_priority(
    client: AsyncClient, durable: bool
) -> None:
    await client.declare_queue("prio", durable)
    # Published low to high while nobody consumes; a few priorities twice.
    order = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 5, 9]
    msgs = [Message("", "prio", b"%d-%d" % (p, i), priority=p) for i, p in enumerate(order)]
    assert await client.publish_many(msgs) == [True] * len(msgs)
    assert await client.queue_stats("prio") == QueueInfo(len(msgs), 0, 0, 0)
    consumer = await client.consume("prio", prefetch=1)
    got = []
    for _ in msgs:
        d = await consumer.next(timeout=BOUND)
        got.append((d.priority, d.body))
        await d.ack()
    expected = sorted(
        ((p, b"%d-%d" % (p, i)) for i, p in enumerate(order)),
        key=lambda pb: (-pb[0], int(pb[1].split(b"-")[1])),
    )
    assert got == expected
    assert got[0] == (9, b"9-9")


async def test_a_queue_declared_with_max_priority_caps_what_is_published_above_it(
    client: AsyncClient,
) -> None:
    await client.declare_queue("capped", max_priority=2)
    await client.declare_queue("capped", max_priority=2)  # the same queue
    with pytest.raises(PreconditionFailed):
        await client.declare_queue("capped", max_priority=3)
    for body, priority in ((b"low", 0), (b"high", 7), (b"two", 2)):
        assert await client.publish("", "capped", body, priority=priority)
    consumer = await client.consume("capped", prefetch=3)
    got = [await consumer.next(timeout=BOUND) for _ in range(3)]
    assert [(d.priority, d.body) for d in got] == [(2, b"high"), (2, b"two"), (0, b"low")]


async def test_a_task_queue_declares_its_max_priority(client: AsyncClient) -> None:
    """``Queue(max_priority=...)`` of the task SDK (kombu's name) reaches the broker."""
    from brokerd_client.tasks import App, Queue
    from brokerd_client.tasks.declare import declare_queue_async

    app = App("prio", task_queues=[Queue("tasks.capped", exchange="", max_priority=1)])
    [q] = app.conf.task_queues
    await declare_queue_async(client, app.router.topology, q)
    with pytest.raises(PreconditionFailed):
        await client.declare_queue("tasks.capped", max_priority=2)
    assert await client.publish("", "tasks.capped", b"t", priority=9)
    consumer = await client.consume("tasks.capped", prefetch=1)
    assert (await consumer.next(timeout=BOUND)).priority == 1


async def test_message_ttl_and_queue_ttl_expire_to_the_dlq_and_are_never_delivered(
    client: AsyncClient,
) -> None:
    await client.declare_queue("expired")
    await client.declare_queue("per-msg", dead_letter_queue="expired")
    await client.declare_queue("per-queue", dead_letter_queue="expired", message_ttl=0.5)
    assert await client.publish("", "per-msg", b"short", ttl=0.5, message_id="s")
    assert await client.publish("", "per-msg", b"long")
    assert await client.publish("", "per-queue", b"q-default")
    # The smaller of the message's and the queue's TTL applies.
    assert await client.publish("", "per-queue", b"q-longer-ttl", ttl=3600)
    # A delay counts towards the TTL: this one has expired by the time it is due.
    await client.declare_queue("per-msg-delayed", dead_letter_queue="expired")
    assert await client.publish("", "per-msg-delayed", b"delayed", delay=0.6, ttl=0.3)

    # Nobody consumes; the broker dead-letters them in the background.
    info = await wait_stats(client, "expired", ready=4)
    assert info == QueueInfo(4, 0, 0, 0)
    assert await client.queue_stats("per-msg") == QueueInfo(1, 0, 0, 0)
    assert await client.queue_stats("per-queue") == QueueInfo(0, 0, 0, 0)
    assert await client.queue_stats("per-msg-delayed") == QueueInfo(0, 0, 0, 0)

    per_msg = await client.consume("per-msg", prefetch=10)
    per_queue = await client.consume("per-queue", prefetch=10)
    d = await per_msg.next(timeout=BOUND)
    assert d.body == b"long"
    await d.ack()
    dead = await take(await client.consume("expired", prefetch=10), 4)
    by_body = {x.body: x for x in dead}
    assert set(by_body) == {b"short", b"q-default", b"q-longer-ttl", b"delayed"}
    for x in dead:
        assert x.headers["x-death-reason"] == "ttl"
    assert by_body[b"short"].headers["x-death-queue"] == "per-msg"
    assert by_body[b"short"].message_id == "s"
    assert by_body[b"q-default"].headers["x-death-queue"] == "per-queue"
    # The expired messages were never handed to the queues' consumers.
    assert per_msg.buffered == 0
    assert per_queue.buffered == 0
    assert await client.queue_stats("per-queue") == QueueInfo(0, 0, 0, 1)


async def test_expired_message_is_skipped_when_a_consumer_arrives(client: AsyncClient) -> None:
    await client.declare_queue("late.dead")
    await client.declare_queue("late", dead_letter_queue="late.dead")
    assert await client.publish("", "late", b"stale", ttl=0.3)
    assert await client.publish("", "late", b"fresh")
    await asyncio.sleep(0.5)  # past the TTL; the consumer may arrive before any sweep
    consumer = await client.consume("late", prefetch=10)
    d = await consumer.next(timeout=BOUND)
    assert d.body == b"fresh"
    await d.ack()
    await wait_stats(client, "late.dead", ready=1)
    assert consumer.buffered == 0


async def test_a_leased_message_does_not_expire(client: AsyncClient) -> None:
    await client.declare_queue("held.dead")
    await client.declare_queue("held", dead_letter_queue="held.dead")
    consumer = await client.consume("held", prefetch=1, lease=60)
    assert await client.publish("", "held", b"x", ttl=0.3)
    d = await consumer.next(timeout=BOUND)
    await asyncio.sleep(0.6)  # well past the TTL, while leased
    await d.ack()
    assert await client.queue_stats("held.dead") == QueueInfo(0, 0, 0, 0)


async def test_max_length_reject_publish_refuses_and_keeps_the_queue(
    client: AsyncClient,
) -> None:
    await client.declare_queue("full", max_length=3)
    for i in range(3):
        assert await client.publish("", "full", b"%d" % i)
    with pytest.raises(QueueFull):
        await client.publish("", "full", b"refused")
    assert await client.queue_stats("full") == QueueInfo(3, 0, 0, 0)

    # A publish routed to several queues is refused as a whole.
    await client.declare_queue("roomy")
    await client.declare_exchange("both", "fanout")
    await client.bind("full", "both", "")
    await client.bind("roomy", "both", "")
    with pytest.raises(QueueFull):
        await client.publish("both", "", b"fan")
    assert await client.queue_stats("roomy") == QueueInfo(0, 0, 0, 0)

    consumer = await client.consume("full", prefetch=3)
    held = await take(consumer, 3)
    assert [d.body for d in held] == [b"0", b"1", b"2"]
    await held[0].ack()
    # Room again: the next publish is accepted.
    assert await client.publish("", "full", b"3")
    await asyncio.gather(*(d.ack() for d in held[1:]))
    d = await consumer.next(timeout=BOUND)
    assert d.body == b"3"
    await d.ack()


async def test_max_length_drop_head_dead_letters_the_oldest_lowest_priority(
    client: AsyncClient,
) -> None:
    await client.declare_queue("dropped")
    await client.declare_queue(
        "ring", max_length=3, overflow="drop_head", dead_letter_queue="dropped"
    )
    for i in range(5):
        assert await client.publish("", "ring", b"%d" % i)
    assert await client.queue_stats("ring") == QueueInfo(3, 0, 0, 0)
    assert await client.queue_stats("dropped") == QueueInfo(2, 0, 0, 0)
    graveyard = await client.consume("dropped", prefetch=10)
    dead = await take(graveyard, 2)
    assert [d.body for d in dead] == [b"0", b"1"]
    for d in dead:
        assert d.headers["x-death-reason"] == "max_length"
        assert d.headers["x-death-queue"] == "ring"
        await d.ack()
    got = []
    consumer = await client.consume("ring", prefetch=10)
    for d in await take(consumer, 3):
        got.append(d.body)
        await d.ack()
    await consumer.cancel()
    assert got == [b"2", b"3", b"4"]

    # The victim is the oldest message of the lowest priority, not the oldest overall.
    await client.declare_queue(
        "pring", max_length=2, overflow="drop_head", dead_letter_queue="dropped"
    )
    assert await client.publish("", "pring", b"high", priority=5)
    assert await client.publish("", "pring", b"low-old")
    assert await client.publish("", "pring", b"low-new")
    assert await client.queue_stats("pring") == QueueInfo(2, 0, 0, 0)
    d = await graveyard.next(timeout=BOUND)
    assert (d.body, d.headers["x-death-reason"]) == (b"low-old", "max_length")
    await d.ack()
    consumer = await client.consume("pring", prefetch=2)
    assert [d.body for d in await take(consumer, 2)] == [b"high", b"low-new"]


async def test_purge_counts_ready_messages_and_leaves_leased_and_delayed(
    client: AsyncClient,
) -> None:
    await client.declare_queue("purge")
    assert await client.publish_many(("", "purge", b"%d" % i) for i in range(5)) == [True] * 5
    assert await client.publish("", "purge", b"eta", delay=3600)
    consumer = await client.consume("purge", prefetch=2, lease=60)
    held = await take(consumer, 2)
    await consumer.cancel()
    assert await client.queue_stats("purge") == QueueInfo(3, 2, 1, 0)
    assert await client.purge_queue("purge") == 3
    assert await client.queue_stats("purge") == QueueInfo(0, 2, 1, 0)
    assert await client.purge_queue("purge") == 0
    # The leased ones are still ours: one acked, one returned and delivered again.
    await held[0].ack()
    await held[1].nack()
    assert await client.queue_stats("purge") == QueueInfo(1, 0, 1, 0)
    d = await (await client.consume("purge")).next(timeout=BOUND)
    assert (d.body, d.attempt) == (b"1", 2)
    await d.ack()
