"""Flow control against a broker running in the test's own event loop, so the
test can hold commits back (a gated store), fake the free disk space and look
at the sessions.

A publisher that never waits for its confirms is held at its own budget of
uncommitted bytes, so the commit queue everyone's confirms wait behind stays
short; the broker-wide budget holds only connections that publish. Waits are
bounded, never timed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from clientkit import BOUND

import brokerd_client
import brokerd_protocol as bp
from brokerd.cli import build_server
from brokerd.config import Config
from brokerd.metrics import BrokerCollector
from brokerd.server import BrokerServer
from brokerd.session import Session
from brokerd.storage import MemoryStore
from brokerd.storage.base import Batch, Done, Loaded, Queried, Query, Recovered, Written

#: The most one socket read hands the session (asyncio reads 256 KiB at a time).
READ_CHUNK = 256 * 1024


class GatedStore:
    """A MemoryStore whose operations wait, in order, while the gate is closed."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.held: list[Callable[[], None]] | None = None

    def close_gate(self) -> None:
        self.held = []

    def _run(self, op: Callable[[], None]) -> None:
        if self.held is None:
            op()
        else:
            self.held.append(op)

    def open(self) -> None:
        held, self.held = self.held or [], None
        for op in held:
            op()

    def recover(self, now: float) -> Recovered:
        return self.inner.recover(now)

    def commit(self, batch: Batch, done: Done, written: Written | None = None) -> None:
        self._run(lambda: self.inner.commit(batch, done, written))

    def load_ready(
        self, queue: str, priority: int, after_seq: int, limit: int, done: Loaded
    ) -> None:
        self._run(lambda: self.inner.load_ready(queue, priority, after_seq, limit, done))

    def load_delayed(self, after: tuple[float, int], limit: int, done: Loaded) -> None:
        self._run(lambda: self.inner.load_delayed(after, limit, done))

    def read(self, query: Query, params: tuple[Any, ...], done: Queried) -> None:
        self._run(lambda: self.inner.read(query, params, done))

    def close(self) -> None:
        self.open()
        self.inner.close()


@contextlib.asynccontextmanager
async def gated_broker(**settings: Any) -> AsyncIterator[tuple[BrokerServer, GatedStore]]:
    config = Config(host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0, **settings)
    server = build_server(config.validate())
    assert isinstance(server.store, MemoryStore)
    gate = GatedStore(server.store)
    server.store = server.broker.store = server.broker.commits.store = gate  # type: ignore[assignment]
    await server.start()
    try:
        yield server, gate
    finally:
        gate.open()
        await server.stop()


async def until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(BOUND):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


class Blaster:
    """A raw connection writing Publish frames without reading a single confirm."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sent = 0

    @classmethod
    async def connect(cls, server: BrokerServer) -> Blaster:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(bp.encode(bp.Hello([1], None, "blaster", 0.0)))
        decoder = bp.Decoder()
        while decoder.next_frame() is None:
            decoder.feed(await reader.read(65536))
        return cls(reader, writer)

    def session(self, server: BrokerServer) -> Session:
        host, port = self.writer.get_extra_info("sockname")[:2]
        (session,) = [s for s in server.sessions if s.peer_name == f"{host}:{port}"]
        return session

    def publish(self, queue: str, count: int, size: int = 1024) -> None:
        body = bytes(size)
        frames = [
            bp.encode(bp.Publish(self.sent + i, "", queue, body)) for i in range(1, count + 1)
        ]
        self.sent += count
        self.writer.write(b"".join(frames))  # never drained: the kernel and asyncio buffer it

    async def confirmed(self) -> int:
        """Read confirms until every publish sent is confirmed; returns how many."""
        decoder = bp.Decoder()
        done = 0
        async with asyncio.timeout(BOUND):
            while done < self.sent:
                decoder.feed(await self.reader.read(1 << 20))
                while (frame := decoder.next_frame()) is not None:
                    assert isinstance(frame, bp.Confirm), frame
                    done += sum(hi - lo + 1 for lo, hi in frame.ranges)
        return done

    def close(self) -> None:
        self.writer.close()


async def test_publisher_that_never_waits_is_held_at_its_own_budget(  # type: ignore[no-untyped-def]
) -> None:
    from brokerd.flow import CONNECTION_BUDGET

    async with gated_broker() as (server, gate):
        admin = await brokerd_client.connect(f"brokerd://127.0.0.1:{server.port}")
        await admin.declare_queue("heavy")
        await admin.declare_queue("light")
        blaster = await Blaster.connect(server)
        gate.close_gate()
        # Far below the broker-wide budget (64 MiB), far above one connection's.
        blaster.publish("heavy", 4 * CONNECTION_BUDGET // 1024)
        session = blaster.session(server)
        await until(lambda: session.commit_paused, "the blaster was held")
        assert session.uncommitted <= CONNECTION_BUDGET + READ_CHUNK
        assert server.broker.uncommitted_bytes < server.config.max_uncommitted
        # Another connection is still read and served while the blaster is held...
        light = asyncio.ensure_future(admin.publish("", "light", b"x"))
        # (accepted, and waiting for its commit to be confirmed)
        await until(lambda: server.broker.queues["light"].published == 1, "light accepted")
        await admin.queue_stats("light")  # a round trip after the publish
        assert not light.done()
        # ... and once commits go through, everyone is confirmed and the blaster resumes.
        gate.open()
        assert await asyncio.wait_for(light, BOUND) is True
        assert (await admin.queue_stats("light")).ready == 1
        assert await blaster.confirmed() == blaster.sent
        assert not session.commit_paused
        assert session.uncommitted == 0
        blaster.close()
        await admin.close()


async def test_broker_wide_budget_holds_publishers_but_not_consumers(  # type: ignore[no-untyped-def]
) -> None:
    async with gated_broker(max_uncommitted=64 * 1024) as (server, gate):
        url = f"brokerd://127.0.0.1:{server.port}"
        client = await brokerd_client.connect(url)
        await client.declare_queue("work")
        await client.declare_queue("heavy")
        for i in range(3):
            await client.publish("", "work", b"task %d" % i)
        blaster = await Blaster.connect(server)
        gate.close_gate()
        blaster.publish("heavy", 256)  # 256 KiB uncommitted: four times the broker's budget
        session = blaster.session(server)
        await until(lambda: session.commit_paused, "the blaster was held")
        # A connection that does not publish keeps being read: requests, acks, deliveries.
        try:
            async with asyncio.timeout(BOUND):
                held_at = (await client.queue_stats("heavy")).ready
                assert held_at < blaster.sent
                consumer = await client.consume("work", prefetch=10)
                for _ in range(3):
                    delivery = await consumer.next()
                    await delivery.ack()
                    assert (await client.queue_stats("heavy")).ready == held_at
        except TimeoutError:
            pytest.fail("the consuming connection stopped being read")
        gate.open()
        assert await blaster.confirmed() == blaster.sent
        blaster.close()
        await client.close()


# --- the free-disk alarm -----------------------------------------------------------------


class FakeDisk:
    def __init__(self, free: int) -> None:
        self.free = free

    def probe(self, path: str) -> int:
        return self.free


@contextlib.asynccontextmanager
async def broker_on_disk(data_dir: Path, **settings: Any) -> AsyncIterator[BrokerServer]:
    config = Config(host="127.0.0.1", port=0, data_dir=str(data_dir), metrics_port=0, **settings)
    server = build_server(config.validate())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def gauge(server: BrokerServer, name: str) -> float:
    for family in BrokerCollector(server).collect():
        if family.name == name:
            return float(family.samples[0].value)
    raise AssertionError(f"no metric {name}")


async def test_disk_alarm_blocks_publishers_until_space_returns(tmp_path: Path) -> None:
    limit = 100 * 2**20
    async with broker_on_disk(tmp_path / "data", min_free_disk=limit) as server:
        assert server.disk is not None
        disk = FakeDisk(free=10 * limit)
        server.disk.probe = disk.probe
        url = f"brokerd://127.0.0.1:{server.port}"
        publisher = await brokerd_client.connect(url)
        consumer_client = await brokerd_client.connect(url)
        await publisher.declare_queue("work")
        assert await publisher.publish("", "work", b"before") is True
        consumer = await consumer_client.consume("work", prefetch=10)
        await (await consumer.next(timeout=BOUND)).ack()

        disk.free = limit - 1
        await until(lambda: server.flow.disk_alarm, "the disk alarm was raised")
        assert gauge(server, "brokerd_disk_alarm") == 1
        assert gauge(server, "brokerd_disk_free_bytes") == limit - 1
        during = asyncio.ensure_future(publisher.publish("", "work", b"during"))
        # The consuming connection is still read and answered while the alarm is up...
        for _ in range(3):
            assert (await consumer_client.queue_stats("work")).ready == 0
        # ... the publishing one is not: its publish was never taken in.
        assert server.broker.counters.published == 1
        assert not during.done()

        disk.free = limit
        await until(lambda: not server.flow.disk_alarm, "the disk alarm was cleared")
        assert gauge(server, "brokerd_disk_alarm") == 0
        assert await asyncio.wait_for(during, BOUND) is True
        delivery = await consumer.next(timeout=BOUND)
        assert delivery.body == b"during"
        await delivery.ack()
        await publisher.close()
        await consumer_client.close()


async def test_connection_that_first_publishes_during_the_alarm_is_then_held(
    tmp_path: Path,
) -> None:
    limit = 100 * 2**20
    async with broker_on_disk(tmp_path / "data", min_free_disk=limit) as server:
        assert server.disk is not None
        disk = FakeDisk(free=limit // 2)
        server.disk.probe = disk.probe
        await until(lambda: server.flow.disk_alarm, "the disk alarm was raised")
        client = await brokerd_client.connect(f"brokerd://127.0.0.1:{server.port}")
        await client.declare_queue("work")  # not a publish: answered during the alarm
        assert await client.publish("", "work", b"first") is True  # the read that held it
        second = asyncio.ensure_future(client.publish("", "work", b"second"))
        other = await brokerd_client.connect(f"brokerd://127.0.0.1:{server.port}")
        assert (await other.queue_stats("work")).ready == 1
        assert not second.done()
        disk.free = limit
        assert await asyncio.wait_for(second, BOUND) is True
        assert (await other.queue_stats("work")).ready == 2
        await client.close()
        await other.close()


async def test_held_connection_still_gets_heartbeats_and_survives_a_long_alarm(
    tmp_path: Path,
) -> None:
    limit = 100 * 2**20
    async with broker_on_disk(tmp_path / "data", min_free_disk=limit) as server:
        assert server.disk is not None
        disk = FakeDisk(free=10 * limit)
        server.disk.probe = disk.probe
        url = f"brokerd://127.0.0.1:{server.port}"
        client = await brokerd_client.connect(url, heartbeat=0.5)  # the shortest allowed
        await client.declare_queue("work")
        assert await client.publish("", "work", b"before") is True
        disk.free = 0
        await until(lambda: server.flow.disk_alarm, "the disk alarm was raised")
        held = asyncio.ensure_future(client.publish("", "work", b"held"))
        await asyncio.sleep(4 * client.heartbeat)  # twice the silence that ends a connection
        assert not client.is_closed
        disk.free = limit
        assert await asyncio.wait_for(held, BOUND) is True
        await client.close()


async def test_deliveries_go_out_before_their_write_only_while_the_disk_has_room(
    tmp_path: Path,
) -> None:
    """The free-disk reading decides it, with the alarm off too (SPEC §10.4):
    a publish that a full disk refuses was then never delivered."""
    from brokerd.diskfree import DELIVERY_MARGIN

    async with broker_on_disk(tmp_path / "data", min_free_disk=0) as server:
        assert server.disk is not None
        disk = FakeDisk(free=10 * DELIVERY_MARGIN)
        server.disk.probe = disk.probe
        server.disk.check(0.0)
        assert server.broker.deliver_before_write()
        disk.free = DELIVERY_MARGIN - 1
        await until(lambda: server.disk is not None and server.disk.free == disk.free, "reread")
        assert not server.broker.deliver_before_write()
        assert not server.flow.disk_alarm
        # Publishes are taken and delivered all the same, each after its write.
        client = await brokerd_client.connect(f"brokerd://127.0.0.1:{server.port}")
        await client.declare_queue("work")
        consumer = await client.consume("work", prefetch=10)
        assert await client.publish("", "work", b"late") is True
        assert (await consumer.next(timeout=BOUND)).body == b"late"
        await client.close()


async def test_an_in_memory_broker_delivers_before_its_write() -> None:
    config = Config(host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0)
    server = build_server(config.validate())
    assert server.broker.deliver_before_write()
