"""``--max-unacked-bytes`` on a real brokerd: a consumer with a huge prefetch
on a queue of big bodies is leased only its connection's byte limit of them,
and acks let delivery go on until every message arrived once, in order (the
broker's own accounting read from the metrics endpoint)."""

from __future__ import annotations

from typing import Any

from clientkit import BOUND, connect, wait_stats
from test_core_metrics import free_port, get, parse

import brokerd_protocol as bp

KIB = 1024
SIZE = 128 * KIB
N = 32  # 4 MiB of bodies, eight times the connection's limit


def body(i: int) -> bytes:
    head = b"big:%05d:" % i
    return head + b"m" * (SIZE - len(head))


async def unacked(port: int) -> float:
    status, text = await get(port, "/metrics")
    assert status == 200
    return parse(text)["brokerd_unacked_bytes"]


async def test_a_huge_prefetch_leases_only_the_connections_unacked_bytes(
    broker_factory: Any,
) -> None:
    metrics = free_port()
    proc = broker_factory("--max-unacked-bytes", "512KiB", "--metrics-port", str(metrics)).start()
    c = await connect(proc)
    await c.declare_queue("big")
    assert await c.publish_many([("", "big", body(i)) for i in range(N)]) == [True] * N
    await wait_stats(c, "big", ready=N)
    consumer = await c.consume("big", prefetch=1000, lease=60)
    first = [await consumer.next(timeout=BOUND) for _ in range(4)]
    # 4 x 128 KiB reach the limit: the broker stops there, prefetch or not.
    await wait_stats(c, "big", leased=4, ready=N - 4)
    assert await unacked(metrics) == 4 * SIZE
    # The connection's own share, as brokerctl list_connections shows it.
    rows = (await c.call(bp.ListConnections))["items"]
    assert [r["unsettled_bytes"] for r in rows] == [4 * SIZE]
    for d in first:
        await d.ack()
    for i in range(4, N):
        d = await consumer.next(timeout=BOUND)
        assert d.body == body(i), f"expected {i}, got {d.body[:16]!r}"
        await d.ack()
    assert [d.body for d in first] == [body(i) for i in range(4)]
    await wait_stats(c, "big", ready=0, leased=0)
    assert await unacked(metrics) == 0
    await consumer.cancel()
    await c.close()
