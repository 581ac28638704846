"""Helpers for the tests of standby nodes sharing one PostgreSQL database."""

from __future__ import annotations

import asyncio

from brokerproc import BrokerProcess


async def wait_log(broker: BrokerProcess, line: str, within: float = 60.0) -> None:
    """Until ``line`` appears in the node's log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while line not in broker.log_path.read_text(errors="replace"):
        assert loop.time() < deadline, broker.log_path.read_text(errors="replace")
        await asyncio.sleep(0.05)


async def wait_active(broker: BrokerProcess, within: float = 60.0) -> None:
    """Until a node took the lease and loaded the queues (it serves now)."""
    await wait_log(broker, "brokerd listening on", within)


async def wait_standby(broker: BrokerProcess, within: float = 60.0) -> None:
    """Until a node stands by (it redirects every client)."""
    await wait_log(broker, "standby on", within)


def failover_url(*nodes: BrokerProcess) -> str:
    return "brokerd://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
