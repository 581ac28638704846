"""Standby nodes on PostgreSQL, measured: failover time, what a failure
costs, and how many messages/s one PostgreSQL primary sustains.

    python -m bench.ha [--cycles 5] [--seconds 10] [--publishers 4]

It starts a PostgreSQL of its own (``tests/pgcluster.py``: ``initdb`` and
``pg_ctl`` from the installed server, ``fsync`` on, in a temp dir) and
brokerd nodes on port 0, and prints:

* **failover**: per cycle, with a publisher (confirmed windows) and a
  consumer on a failover URL (``brokerd://a,b``), the time from kill -9 of
  the active node to the first delivery and the first confirm from the
  standby; confirmed messages lost and messages delivered twice. The killed
  node is started again and stands by for the next cycle.
* **database restart**: PostgreSQL stopped (``-m fast``) and started again
  under publishing: how long publishers were held, lost and failed publishes.
* **capacity**: end-to-end confirmed publishing and acked consuming through
  one node for ``--seconds``: messages/s, and CPU per message of the broker
  process and of the PostgreSQL server (the postmaster and its backends).

The load generators run in this process on the same machine: read the CPU
figures per message, which do not depend on the machine's other load as
much as the rates do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import brokerd_client
from brokerd_client.errors import BrokerError
from brokerd_client.tasks.testing import BrokerProcess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import Cluster

WINDOW = 100
BODY = b"x" * 256
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def server_cpu(cluster: Cluster) -> float:
    """CPU seconds of the PostgreSQL postmaster and every process it runs."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == postmaster:
                total += (int(stat[11]) + int(stat[12])) / TICKS
    return total


class Traffic:
    """A publisher (confirmed windows, republishing what a lost connection
    left unconfirmed) and a consumer, both on one URL, reconnecting."""

    def __init__(self, url: str, queue: str, publishers: int = 1) -> None:
        self.url = url
        self.queue = queue
        self.publishers = publishers
        self.confirmed: set[bytes] = set()
        self.confirm_times: list[float] = []
        self.received: list[bytes] = []
        self.receive_times: list[float] = []
        self.failed = 0
        #: monotonic() of each reconnect of a publisher after a lost connection.
        self.reconnected_at: list[float] = []
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Future[Any]] = []

    def start(self, consume: bool = True) -> None:
        self.tasks = [asyncio.ensure_future(self._publish(n)) for n in range(self.publishers)]
        if consume:
            self.tasks.append(asyncio.ensure_future(self._consume()))

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 120)

    async def _publish(self, n: int) -> None:
        # The publishers and consumers reconnect themselves (recover=False) so
        # that the figures stay those of docs/ha.md's table: republished
        # windows are timed here. A client with recovery does the same inside.
        next_id = 0
        client = await brokerd_client.connect(self.url, heartbeat=0, recover=False)
        await client.declare_queue(self.queue, durable=True)
        try:
            while not self.stop.is_set():
                bodies = [b"%d-%d-" % (n, i) + BODY for i in range(next_id, next_id + WINDOW)]
                next_id += WINDOW
                while bodies:
                    results = await asyncio.gather(
                        *(client.publish("", self.queue, b) for b in bodies),
                        return_exceptions=True,
                    )
                    now = time.monotonic()
                    left = []
                    for body, result in zip(bodies, results, strict=True):
                        if result is True:
                            self.confirmed.add(body)
                            self.confirm_times.append(now)
                        else:
                            left.append(body)
                    bodies = left
                    if bodies:
                        self.failed += 1
                        with contextlib.suppress(Exception):
                            await client.close()
                        client = await brokerd_client.connect(self.url, heartbeat=0, recover=False)
                        self.reconnected_at.append(time.monotonic())
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def _consume(self) -> None:
        while not self.stop.is_set():
            try:
                async with await brokerd_client.connect(
                    self.url, heartbeat=0, recover=False
                ) as client:
                    await client.declare_queue(self.queue, durable=True)
                    consumer = await client.consume(self.queue, prefetch=500)
                    async for d in consumer:
                        self.received.append(d.body)
                        self.receive_times.append(time.monotonic())
                        d.ack_nowait()
                        if self.stop.is_set():
                            break
            except (BrokerError, OSError):
                await asyncio.sleep(0.05)

    async def drain(self) -> None:
        """Consume until every confirmed message came and nothing is ready."""
        async with await brokerd_client.connect(self.url) as client:
            consumer = await client.consume(self.queue, prefetch=1000)
            while (
                not self.confirmed <= set(self.received)
                or (await client.queue_stats(self.queue)).ready
            ):
                d = await asyncio.wait_for(consumer.__anext__(), 30)
                self.received.append(d.body)
                await d.ack()

    def lost(self) -> int:
        return len(self.confirmed - set(self.received))

    def duplicated(self) -> int:
        return len(self.received) - len(set(self.received))


def first_after(times: list[float], moment: float) -> float:
    return next((t - moment for t in times if t > moment), float("nan"))


async def wait_log(node: BrokerProcess, line: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while line not in node.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {line!r} in {node.log_path}")
        await asyncio.sleep(0.02)


async def failover(cluster: Cluster, root: Path, cycles: int) -> None:
    url = cluster.create_database("ha_failover")
    nodes = [
        BrokerProcess(root / "a", "--store", url).start(),
        BrokerProcess(root / "b", "--store", url).start(),
    ]
    try:
        await wait_log(nodes[0], "brokerd listening on")
        await wait_log(nodes[1], "standby on")
        joined = "brokerd://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        traffic = Traffic(joined, "failover")
        traffic.start()
        active = 0
        delivered, confirmed = [], []
        for cycle in range(cycles):
            await asyncio.sleep(3.0)
            killed_at = time.monotonic()
            nodes[active].kill()
            while not any(t > killed_at for t in traffic.receive_times[-50:]):
                await asyncio.sleep(0.01)
                if time.monotonic() - killed_at > 60:
                    raise RuntimeError("no delivery from the standby within 60 s")
            while not any(t > killed_at for t in traffic.reconnected_at):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            back = next(t for t in traffic.reconnected_at if t > killed_at)
            while not any(t > back for t in traffic.confirm_times[-50:]):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            delivered.append(first_after(traffic.receive_times, killed_at))
            confirmed.append(first_after(traffic.confirm_times, back) + back - killed_at)
            print(
                f"  cycle {cycle + 1}: first delivery from the standby {delivered[-1]:.2f} s, "
                f"first confirm {confirmed[-1]:.2f} s after kill -9",
                flush=True,
            )
            # The killed node comes back as the next standby.
            nodes[active].start()
            await wait_log(nodes[active], "standby on")
            active = 1 - active
        await traffic.finish()
        await traffic.drain()
        print(
            f"failover over {cycles} kill -9 cycles: first delivery from the standby "
            f"median {statistics.median(delivered):.2f} s (min {min(delivered):.2f}, "
            f"max {max(delivered):.2f}); first confirm of a republished window median "
            f"{statistics.median(confirmed):.2f} s; "
            f"{len(traffic.confirmed)} confirmed, {traffic.lost()} lost, "
            f"{traffic.duplicated()} delivered twice"
        )
    finally:
        for node in nodes:
            node.kill()


async def database_restart(cluster: Cluster, root: Path) -> None:
    url = cluster.create_database("ha_restart")
    node = BrokerProcess(root / "r", "--store", url).start()
    try:
        traffic = Traffic(node.url, "restart")
        traffic.start(consume=False)
        await asyncio.sleep(3.0)
        loop = asyncio.get_running_loop()
        down_at = time.monotonic()
        await loop.run_in_executor(None, cluster.stop, "fast")
        await loop.run_in_executor(None, cluster.start)
        up_at = time.monotonic()
        while not any(t > up_at for t in traffic.confirm_times[-50:]):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        before = [t for t in traffic.confirm_times if t <= down_at + 0.5]
        held = first_after(traffic.confirm_times, up_at) + (up_at - max(before))
        await asyncio.sleep(1.0)
        await traffic.finish()
        await traffic.drain()
        print(
            f"database restart (pg_ctl stop -m fast; start: {up_at - down_at:.2f} s): "
            f"publishers held {held:.2f} s (last confirm before to first after), "
            f"first confirm {first_after(traffic.confirm_times, up_at):.2f} s after the "
            f"server was up; {len(traffic.confirmed)} confirmed, {traffic.lost()} lost, "
            f"{traffic.failed} windows republished"
        )
    finally:
        node.kill()


async def capacity(cluster: Cluster, root: Path, seconds: float, publishers: int) -> None:
    url = cluster.create_database("ha_capacity")
    node = BrokerProcess(root / "c", "--store", url).start()
    try:
        traffic = Traffic(node.url, "capacity", publishers)
        traffic.start()
        await asyncio.sleep(2.0)  # warm up
        received, started = len(traffic.received), time.monotonic()
        broker_cpu, db_cpu = cpu_seconds(node.pid), server_cpu(cluster)
        here = time.process_time()
        await asyncio.sleep(seconds)
        n = len(traffic.received) - received
        elapsed = time.monotonic() - started
        broker_used = cpu_seconds(node.pid) - broker_cpu
        db_used = server_cpu(cluster) - db_cpu
        load_used = time.process_time() - here
        await traffic.finish()
        print(
            f"capacity ({publishers} publishers x {WINDOW} in flight, 1 consumer, "
            f"{len(BODY)} B bodies, {seconds:g} s): {n / elapsed:,.0f} msg/s end to end "
            f"(confirmed + acked); CPU per message: broker {broker_used / n * 1e6:.0f} us, "
            f"PostgreSQL {db_used / n * 1e6:.0f} us, load generator {load_used / n * 1e6:.0f} us"
        )
    finally:
        node.kill()


async def main_async(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="brokerd-ha-bench-"))
    cluster = Cluster().start()
    try:
        print(f"PostgreSQL at {cluster.url()} ({cluster.root}); nodes in {root}", flush=True)
        if args.cycles:
            await failover(cluster, root, args.cycles)
        await database_restart(cluster, root)
        if args.seconds:
            await capacity(cluster, root, args.seconds, args.publishers)
    finally:
        cluster.kill()
        cluster.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=5, help="kill -9 cycles (0: skip)")
    parser.add_argument("--seconds", type=float, default=10.0, help="capacity run (0: skip)")
    parser.add_argument("--publishers", type=int, default=4, help="publishing connections")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
