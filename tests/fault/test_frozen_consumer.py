"""SIGSTOP a consumer holding messages; a healthy consumer must get them.

A frozen process keeps its socket open. When its leases run out, its messages
must go to live consumers, not back to the frozen one (which would burn their
delivery attempts until they are dead-lettered unprocessed).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import pytest

import brokerd_client

pytestmark = pytest.mark.fault

FROZEN = textwrap.dedent(
    """
    import asyncio, sys
    import brokerd_client

    async def main() -> None:
        client = await brokerd_client.connect(sys.argv[1])
        consumer = await client.consume("frozen", prefetch=10)
        got = 0
        async for _ in consumer:
            got += 1
            if got == 10:
                print("holding", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_a_frozen_consumers_expired_messages_go_to_a_healthy_one(broker) -> None:  # type: ignore[no-untyped-def]
    async with await brokerd_client.connect(broker.url) as client:
        await client.declare_queue("frozen.dlq", durable=True)
        await client.declare_queue(
            "frozen", durable=True, lease=0.5, max_deliveries=3, dead_letter_queue="frozen.dlq"
        )
        await client.publish_many([("", "frozen", b"%d" % i) for i in range(10)])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FROZEN, broker.url, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.strip() == b"holding"
            os.kill(proc.pid, signal.SIGSTOP)
            healthy = await client.consume("frozen", prefetch=10)
            got: list[bytes] = []
            while len(got) < 10:
                try:
                    d = await asyncio.wait_for(healthy.__anext__(), timeout=10)
                except TimeoutError:
                    break
                got.append(d.body)
                await d.ack()
            stats = await client.queue_stats("frozen.dlq")
        finally:
            proc.kill()
            await proc.wait()
    assert stats.ready == 0, f"{stats.ready} message(s) dead-lettered without being processed"
    assert sorted(got) == sorted(b"%d" % i for i in range(10))
