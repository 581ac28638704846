"""Fill the broker's disk while it is being published to and consumed from.

A ``PublishError`` means nothing of the publish was stored and nothing was
delivered (SPEC §10.4): a client that publishes it again must not create a
duplicate. The data dir is a small tmpfs (tests/tmpfs.py: root, opt-in with
BROKERD_DISK_TESTS=1, which CI sets). The free-disk alarm is off here: it exists to hold
publishers before the disk fills, and this test is about the disk filling anyway
(a full volume shared with something else, an alarm set too low).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokerproc import BrokerProcess
from tmpfs import small_tmpfs

import brokerd_client
from brokerd_client.errors import StorageFailed

pytestmark = pytest.mark.fault

BODY = 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        yield disk


async def test_a_publish_refused_for_a_full_disk_was_never_delivered(small_disk: Path) -> None:
    broker = BrokerProcess(small_disk / "data", "--min-free-disk", "0").start()
    try:
        delivered: list[int] = []
        refused: list[int] = []
        confirmed: list[int] = []
        async with await brokerd_client.connect(broker.url) as client:
            await client.declare_queue("fill", durable=True)
            consumer = await client.consume("fill", prefetch=65535)

            async def consume() -> None:
                # Read everything, ack nothing: the rows stay and the disk fills.
                async for d in consumer:
                    delivered.append(int(d.body[:12]))

            reader = asyncio.create_task(consume())
            n = 0
            while len(refused) < 50 and n < 20_000:
                ids = range(n, n + 100)
                n += 100
                results = await asyncio.gather(
                    *(client.publish("", "fill", b"%012d" % i + b"x" * BODY) for i in ids),
                    return_exceptions=True,
                )
                for i, result in zip(ids, results, strict=True):
                    if result is True:
                        confirmed.append(i)
                    elif isinstance(result, StorageFailed):
                        refused.append(i)
                    else:
                        raise AssertionError(f"publish {i}: unexpected {result!r}")
            await client.queue_stats("fill")  # a round trip after the last delivery
            await asyncio.sleep(0.2)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        print(
            f"\ndisk full: published {n}, confirmed {len(confirmed)}, refused {len(refused)}, "
            f"delivered {len(delivered)}"
        )
        assert refused, "the disk never filled"
        assert not set(refused) & set(delivered), "a refused publish was delivered"
        assert sorted(delivered) == sorted(confirmed)
    finally:
        broker.kill()
