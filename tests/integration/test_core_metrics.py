"""The Prometheus endpoint of a real brokerd: /healthz, and /metrics counters
and gauges that follow what clients do. HTTP runs in a thread so it never
blocks the event loop the client lives on."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from typing import Any

import brokerd_client
from brokerd_client import AsyncClient

BOUND = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=BOUND) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")


def parse(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` for every sample line of the text format."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


class Scraper:
    def __init__(self, port: int) -> None:
        self.port = port
        self.last: dict[str, float] = {}

    async def scrape(self) -> dict[str, float]:
        status, text = await get(self.port, "/metrics")
        assert status == 200
        self.last = parse(text)
        return self.last

    async def delta(self, **names: float) -> dict[str, float]:
        """Scrape and check that each counter grew by exactly the given amount."""
        before = self.last
        now = await self.scrape()
        for key, expected in names.items():
            name = METRICS[key]
            assert now[name] - before.get(name, 0.0) == expected, (
                name,
                before.get(name),
                now[name],
            )
        return now


METRICS = {
    "published": "brokerd_messages_published_total",
    "acked": "brokerd_messages_acked_total",
    "rejected": "brokerd_messages_rejected_total",
    "dead_rejected": 'brokerd_messages_dead_lettered_total{reason="rejected"}',
    "unroutable": "brokerd_messages_unroutable_total",
}


def ready(queue: str) -> str:
    return f'brokerd_queue_ready_messages{{queue="{queue}",vhost="/"}}'


def leased(queue: str) -> str:
    return f'brokerd_queue_leased_messages{{queue="{queue}",vhost="/"}}'


async def test_healthz_and_metrics_follow_the_traffic(broker_factory: Any) -> None:
    port = free_port()
    proc = broker_factory("--metrics-port", str(port)).start()

    assert await get(port, "/healthz") == (200, "ok\n")
    status, _ = await get(port, "/no-such-page")
    assert status == 404

    c: AsyncClient = await brokerd_client.connect(f"brokerd://127.0.0.1:{proc.port}", timeout=BOUND)
    m = Scraper(port)
    await c.declare_queue("x.dead")
    await c.declare_queue("x", dead_letter_queue="x.dead")
    now = await m.scrape()
    assert now[ready("x")] == 0
    assert now[METRICS["published"]] == 0
    assert now["brokerd_connections"] == 1

    assert await c.publish_many(("", "x", b"%d" % i) for i in range(3)) == [True] * 3
    assert await c.publish("", "nowhere", b"lost") is False
    now = await m.delta(published=4, unroutable=1, acked=0)
    assert now[ready("x")] == 3
    assert now[leased("x")] == 0

    consumer = await c.consume("x", prefetch=1)
    d = await consumer.next(timeout=BOUND)
    now = await m.delta(published=0, acked=0)
    assert (now[ready("x")], now[leased("x")]) == (2, 1)
    await d.ack()
    d = await consumer.next(timeout=BOUND)
    now = await m.delta(acked=1, dead_rejected=0)
    assert (now[ready("x")], now[leased("x")]) == (1, 1)

    await d.reject()
    await consumer.next(timeout=BOUND)
    now = await m.delta(rejected=1, dead_rejected=1, acked=0)
    assert (now[ready("x")], now[leased("x")]) == (0, 1)
    assert now[ready("x.dead")] == 1
    await c.close()
