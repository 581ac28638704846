"""The async client's recovery (``connect(..., recover=True)``): a real brokerd
killed with SIGKILL and started again on the same port and data dir. The code
under test has no reconnect logic of its own: publishes keep their futures,
consumers keep iterating, topology comes back."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokerproc import BrokerProcess
from clientkit import BOUND, take

import brokerd_client
from brokerd_client import AsyncClient
from brokerd_client.errors import ConnectionLost


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


async def _connect(node: BrokerProcess, **kwargs: float) -> AsyncClient:
    return await brokerd_client.connect(node.url, recover=True, timeout=BOUND, **kwargs)


async def _bounce(node: BrokerProcess) -> None:
    """kill -9, then start again on the same port (off the loop: clients run)."""
    await asyncio.to_thread(node.restart)


async def test_publisher_and_consumer_carry_on_across_kill9_without_reconnect_code(
    node: BrokerProcess,
) -> None:
    async with await _connect(node) as client:
        await client.declare_queue("r", durable=True)
        confirmed: set[int] = set()
        received: list[int] = []
        stop = asyncio.Event()

        async def publish() -> None:
            i = 0
            while not stop.is_set():
                batch = range(i, i + 50)
                i += 50
                results = await asyncio.gather(*(client.publish("", "r", b"%d" % n) for n in batch))
                assert all(results)
                confirmed.update(batch)

        async def consume() -> None:
            consumer = await client.consume("r", prefetch=100)
            async for d in consumer:
                received.append(int(d.body))
                d.ack_nowait()

        tasks = [asyncio.ensure_future(publish()), asyncio.ensure_future(consume())]
        async with asyncio.timeout(BOUND * 3):
            while len(received) < 500:
                await asyncio.sleep(0.01)
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await _bounce(node)
            seen = len(received)
            while len(received) < seen + 500:
                await asyncio.sleep(0.01)
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            stop.set()
            await tasks[0]
            while not confirmed <= set(received):
                await asyncio.sleep(0.01)
                assert not tasks[1].done(), tasks[1].exception()
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        assert client.recoveries == 1
        assert not client.is_closed


async def test_unconfirmed_publishes_are_republished_and_their_futures_resolve(
    node: BrokerProcess,
) -> None:
    async with await _connect(node) as client:
        await client.declare_queue("u", durable=True)
        assert node.proc is not None
        # A frozen broker reads nothing: these publishes stay unconfirmed.
        os.kill(node.pid, signal.SIGSTOP)
        pending = [asyncio.ensure_future(client.publish("", "u", b"%d" % i)) for i in range(20)]
        batch = asyncio.ensure_future(client.publish_many(("", "u", b"m%d" % i) for i in range(5)))
        await asyncio.sleep(0.2)
        assert client.inflight == 25
        assert not any(f.done() for f in pending)
        await _bounce(node)
        async with asyncio.timeout(BOUND):
            assert await asyncio.gather(*pending) == [True] * 20
            assert await batch == [True] * 5
        consumer = await client.consume("u", prefetch=100)
        bodies = {d.body for d in await take(consumer, 25)}
        assert bodies == {b"%d" % i for i in range(20)} | {b"m%d" % i for i in range(5)}


async def test_transient_topology_and_consumers_are_declared_again(node: BrokerProcess) -> None:
    async with await _connect(node) as client:
        await client.declare_exchange("tx", "topic", durable=False)
        await client.declare_queue("tq", durable=False)
        await client.bind("tq", "tx", "a.*")
        consumer = await client.consume("tq", prefetch=5)
        assert await client.publish("tx", "a.b", b"before")
        first = await consumer.next(timeout=BOUND)
        assert first.body == b"before"
        await _bounce(node)  # a transient exchange, queue and binding are gone with it
        # Routed through the re-declared exchange and binding to the re-declared queue.
        assert await client.publish("tx", "a.c", b"after") is True
        second = await consumer.next(timeout=BOUND)
        assert second.body == b"after"
        # The first delivery belonged to the lost connection: settling it is a no-op.
        await first.ack()
        await second.ack()
        info = await client.queue_stats("tq")
        assert (info.ready, info.leased, info.consumers) == (0, 0, 1)


async def test_a_delivery_of_the_lost_connection_comes_again(node: BrokerProcess) -> None:
    async with await _connect(node) as client:
        await client.declare_queue("d", durable=True)
        assert await client.publish("", "d", b"x")
        consumer = await client.consume("d", prefetch=1)
        old = await consumer.next(timeout=BOUND)
        await _bounce(node)
        again = await consumer.next(timeout=BOUND)
        assert again.body == b"x"
        assert again.attempt >= old.attempt
        await old.ack()  # no-op: the message is leased on the new connection
        info = await client.queue_stats("d")
        assert info.leased == 1
        await again.ack()
        info = await client.queue_stats("d")
        assert (info.ready, info.leased) == (0, 0)


async def test_it_gives_up_after_the_failover_timeout(node: BrokerProcess) -> None:
    client = await _connect(node, failover_timeout=1.0)
    try:
        await client.declare_queue("g", durable=True)
        consumer = await client.consume("g")
        node.kill()
        async with asyncio.timeout(BOUND):
            with pytest.raises(ConnectionLost, match="gave up recovering"):
                await client.publish("", "g", b"late")
            with pytest.raises(ConnectionLost):
                await consumer.next()
        assert client.is_closed
    finally:
        await client.close()


async def test_without_recover_a_lost_connection_is_raised(node: BrokerProcess) -> None:
    client = await brokerd_client.connect(node.url, timeout=BOUND)
    try:
        await client.declare_queue("n", durable=True)
        await _bounce(node)
        async with asyncio.timeout(BOUND):
            await client.wait_closed()
        with pytest.raises(ConnectionLost):
            await client.publish("", "n", b"x")
    finally:
        await client.close()
