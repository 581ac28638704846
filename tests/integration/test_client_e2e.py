"""The Python SDK against a real brokerd (started on port 0 with a temp data dir).

These tests pin the client and the server to each other: every wire-level
promise the SDK makes (typed errors, confirms, settle batching, lease loss,
consumer cancellation, connection loss) is exercised end to end. Waits are
bounded by ``asyncio.timeout`` only to fail instead of hanging; nothing here
asserts on timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from clientkit import BOUND, wait_stats

import brokerd_client
from brokerd_client import (
    AsyncClient,
    AuthenticationError,
    ConnectionLost,
    InvalidArgument,
    LeaseLost,
    Message,
    NotFound,
    PreconditionFailed,
    QueueFull,
    QueueInfo,
    Unroutable,
)


async def test_a_published_message_is_consumed_with_its_properties_and_acked(
    client: AsyncClient,
) -> None:
    await client.declare_queue("jobs")
    assert await client.publish(
        "", "jobs", b"hello", headers={"k": "v", "n": 1}, message_id="m1", priority=3
    )
    assert await client.queue_stats("jobs") == QueueInfo(1, 0, 0, 0)
    consumer = await client.consume("jobs", prefetch=1)
    d = await consumer.next(timeout=BOUND)
    assert (d.body, d.routing_key, d.exchange) == (b"hello", "jobs", "")
    assert d.headers == {"k": "v", "n": 1}
    assert (d.message_id, d.priority, d.attempt, d.redelivered) == ("m1", 3, 1, False)
    assert d.timestamp is not None and d.timestamp > 1_600_000_000
    info = await client.queue_stats("jobs")
    assert (info.ready, info.leased, info.consumers) == (0, 1, 1)
    await d.ack()
    await consumer.cancel()
    assert await client.queue_stats("jobs") == QueueInfo(0, 0, 0, 0)


async def test_an_unroutable_publish_is_false_and_with_mandatory_refused(
    client: AsyncClient,
) -> None:
    await client.declare_exchange("events", "topic")
    await client.declare_queue("eu")
    await client.bind("eu", "events", "orders.eu.*")
    assert await client.publish("events", "orders.eu.created", b"") is True
    assert await client.publish("events", "orders.us.created", b"") is False
    with pytest.raises(Unroutable):
        await client.publish("events", "orders.us.created", b"", mandatory=True)
    await client.unbind("eu", "events", "orders.eu.*")
    assert await client.publish("events", "orders.eu.created", b"") is False
    assert (await client.queue_stats("eu")).ready == 1


async def test_request_errors_are_typed_and_leave_the_connection_open(
    client: AsyncClient,
) -> None:
    with pytest.raises(NotFound):
        await client.consume("no-such-queue")
    with pytest.raises(NotFound):
        await client.queue_stats("no-such-queue")
    with pytest.raises(NotFound):
        await client.publish("no-such-exchange", "k", b"")
    await client.declare_queue("q", lease=10)
    with pytest.raises(PreconditionFailed):
        await client.declare_queue("q", lease=20)
    await client.declare_queue("q", lease=10)  # identical redeclare is fine
    with pytest.raises(InvalidArgument):
        await client.declare_exchange("x", "no-such-type")
    assert not client.is_closed


async def test_publish_many_into_a_full_queue_reports_each_result(client: AsyncClient) -> None:
    await client.declare_queue("small", max_length=2)
    msgs: list[Message | tuple[str, str, bytes]] = [
        ("", "small", b"1"),
        Message("", "small", b"2"),
        ("", "small", b"3"),
    ]
    with pytest.raises(QueueFull) as info:
        await client.publish_many(msgs)
    results = info.value.results
    assert results is not None
    assert results[:2] == [True, True]
    assert isinstance(results[2], QueueFull)
    assert await client.purge_queue("small") == 2


async def test_a_bulk_publish_is_consumed_and_acked_in_full(client: AsyncClient) -> None:
    n = 5000
    await client.declare_queue("bulk")
    results = await client.publish_many(("", "bulk", b"%d" % i) for i in range(n))
    assert results == [True] * n
    await wait_stats(client, "bulk", ready=n)
    consumer = await client.consume("bulk", prefetch=500)
    seen = 0

    async def worker() -> None:
        nonlocal seen
        async for d in consumer:
            await d.ack()
            seen += 1
            if seen == n:
                await consumer.cancel()

    async with asyncio.timeout(BOUND):
        await asyncio.gather(*(worker() for _ in range(20)))
    assert seen == n
    await wait_stats(client, "bulk", ready=0, leased=0)


async def test_a_delayed_nack_waits_and_a_reject_goes_to_the_dead_letter_queue(
    client: AsyncClient,
) -> None:
    await client.declare_queue("dlq")
    await client.declare_queue("work", dead_letter_queue="dlq")
    await client.publish_many([("", "work", b"a"), ("", "work", b"b")])
    consumer = await client.consume("work", prefetch=2)
    first = await consumer.next(timeout=BOUND)
    second = await consumer.next(timeout=BOUND)
    await asyncio.gather(first.nack(delay=3600), second.reject())
    info = await client.queue_stats("work")
    assert (info.ready, info.leased, info.delayed) == (0, 0, 1)
    dead = await (await client.consume("dlq")).next(timeout=BOUND)
    assert dead.body == b"b"
    assert dead.headers["x-death-reason"] == "rejected"
    await dead.ack()


async def test_lost_lease_raises_lease_lost_only_for_that_delivery(client: AsyncClient) -> None:
    await client.declare_queue("leases")
    await client.publish_many([("", "leases", b"keep"), ("", "leases", b"lose")])
    consumer = await client.consume("leases", prefetch=2, lease=60)
    keep = await consumer.next(timeout=BOUND)
    lose = await consumer.next(timeout=BOUND)
    # Shorten one lease so it expires; the other is extended and stays ours.
    await lose.extend(0.001)
    await keep.extend(120)
    # The expired one returns to the queue and, as the consumer has room
    # again, comes straight back as a new delivery.
    again = await consumer.next(timeout=BOUND)
    assert (again.body, again.attempt, again.redelivered) == (b"lose", 2, True)
    results = await asyncio.gather(keep.ack(), lose.ack(), return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], LeaseLost)
    assert results[1].delivery_id == lose.delivery_id
    await again.ack()


async def test_deleting_the_queue_ends_iteration(client: AsyncClient) -> None:
    await client.declare_queue("doomed")
    consumer = await client.consume("doomed")

    async def drain() -> list[bytes]:
        return [d.body async for d in consumer]

    task = asyncio.create_task(drain())
    await asyncio.sleep(0)
    await client.delete_queue("doomed")
    async with asyncio.timeout(BOUND):
        assert await task == []
    assert consumer.cancel_reason


async def test_wrong_token_is_an_authentication_error(broker_factory: Any) -> None:
    proc = broker_factory(token="s3cret").start()
    port = proc.port
    with pytest.raises(AuthenticationError):
        await brokerd_client.connect(f"brokerd://wrong@127.0.0.1:{port}", timeout=BOUND)
    ok = await brokerd_client.connect(f"brokerd://s3cret@127.0.0.1:{port}", timeout=BOUND)
    await ok.close()


async def test_broker_death_fails_pending_calls(broker: Any, client: AsyncClient) -> None:
    await client.declare_queue("q")
    consumer = await client.consume("q")
    iterating = asyncio.create_task(consumer.next())
    await asyncio.sleep(0)
    await asyncio.to_thread(broker.kill)
    async with asyncio.timeout(BOUND):
        with pytest.raises(ConnectionLost):
            await iterating
    with pytest.raises(ConnectionLost):
        await client.publish("", "q", b"x")


async def test_heartbeats_keep_an_idle_connection_alive(broker: Any) -> None:
    c = await brokerd_client.connect(broker.url, heartbeat=0.5, timeout=BOUND)
    async with c:
        assert 0 < c.heartbeat <= 0.5
        # Idle for several intervals: both sides must heartbeat to stay up.
        await asyncio.sleep(c.heartbeat * 5)
        assert not c.is_closed
        await c.declare_queue("alive")


async def test_the_sync_client_declares_publishes_and_purges(broker: Any) -> None:
    def use_it() -> tuple[bool, QueueInfo, list[bool], int]:
        with brokerd_client.Client(broker.url, timeout=BOUND) as c:
            c.declare_queue("sync")
            routed = c.publish("", "sync", b"x")
            many = c.publish_many([("", "sync", b"y"), ("", "nowhere", b"z")])
            info = c.queue_stats("sync")
            purged = c.purge_queue("sync")
            return routed, info, many, purged

    routed, info, many, purged = await asyncio.to_thread(use_it)
    assert routed is True
    assert many == [True, False]
    assert info.ready == 2
    assert purged == 2


# --- sizes: checked before sending ---------------------------------------------------


def test_the_sync_client_refuses_oversized_frames_and_keeps_its_connection(
    broker_factory: Any,
) -> None:
    small = broker_factory("--max-frame", "65536").start()
    with brokerd_client.Client(small.url) as client:
        client.declare_queue("jobs")
        with pytest.raises(brokerd_client.MessageTooLarge, match="limit of 65536 bytes"):
            client.publish("", "jobs", b"x" * 70_000)
        with pytest.raises(brokerd_client.MessageTooLarge):
            client.publish_many([("", "jobs", b"x" * 70_000)])
        with pytest.raises(brokerd_client.MessageTooLarge):
            client.result_set("t", "SUCCESS", b"x" * 70_000)
        assert client.publish("", "jobs", b"fits") is True
        assert client.queue_stats("jobs").ready == 1


async def test_result_get_of_many_large_results_is_split_to_fit_the_frame_limit(
    broker_factory: Any,
) -> None:
    small = broker_factory("--max-frame", "65536").start()
    async with await brokerd_client.connect(small.url) as client:
        ids = [f"t{i}" for i in range(6)]
        for task_id in ids:
            await client.result_set(task_id, "SUCCESS", task_id.encode() * 30_000)
        found = await client.result_get([*ids, "unknown"])
        assert sorted(found) == ids
        assert all(found[t] == ("SUCCESS", t.encode() * 30_000) for t in ids)
        assert not client.is_closed
