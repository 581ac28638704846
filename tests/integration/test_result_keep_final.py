"""ResultSet's ``keep_final`` (SPEC §14.2): a final state is stored only if
no unexpired final state is, whether the broker has it cached or only on disk."""

from __future__ import annotations

import asyncio

from brokerproc import BrokerProcess
from clientkit import BOUND, connect


async def test_keep_final_never_replaces_a_final_result(broker: BrokerProcess) -> None:
    async with await connect(broker) as c:
        await c.result_set("t1", "SUCCESS", b"first")
        await c.result_set("t1", "SUCCESS", b"second", keep_final=True)  # cached: kept
        await c.result_set("t2", "STARTED")
        await c.result_set("t2", "FAILURE", b"f", keep_final=True)  # a non-final: replaced
        await c.result_set("t3", "SUCCESS", b"new", keep_final=True)  # nothing: stored
        assert await c.result_get(["t1", "t2", "t3"]) == {
            "t1": ("SUCCESS", b"first"),
            "t2": ("FAILURE", b"f"),
            "t3": ("SUCCESS", b"new"),
        }
        await c.result_set("t3", "FAILURE", b"plain")  # without it, a final replaces
        assert (await c.result_get(["t3"]))["t3"] == ("FAILURE", b"plain")


async def test_keep_final_reads_the_disk_when_the_result_is_not_cached(
    broker: BrokerProcess,
) -> None:
    async with await connect(broker) as c:
        await c.result_set("d", "SUCCESS", b"first")
    await asyncio.to_thread(broker.restart)  # the cache is gone, the row is not
    async with await connect(broker) as c:
        waiting = asyncio.ensure_future(c.result_wait("w", BOUND))
        await asyncio.sleep(0)  # its ResultWait goes out first
        await c.result_set("d", "FAILURE", b"second", keep_final=True)
        await c.result_set("w", "SUCCESS", b"w1", keep_final=True)
        assert await c.result_get(["d"]) == {"d": ("SUCCESS", b"first")}
        # A waiter is answered with what is stored.
        assert await asyncio.wait_for(waiting, BOUND) == ("SUCCESS", b"w1")
        assert await c.result_wait("d", BOUND) == ("SUCCESS", b"first")
