"""Regression tests from a correctness review of the server-side session."""

from __future__ import annotations

import asyncio

import pytest

import brokerd_client
import brokerd_protocol as bp
from brokerd_client import NotFound

BOUND = 20.0


async def test_frames_after_a_connection_error_are_not_acted_on(broker) -> None:  # type: ignore[no-untyped-def]
    """A Publish before Hello is a connection-level error: nothing pipelined
    behind it on the same connection takes effect, not even after a Hello."""
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(
        bp.encode(bp.Publish(1, "", "nowhere", b"x", {}))
        + bp.encode(bp.Hello([1], None, "late", 0.0))
        + bp.encode(bp.DeclareQueue(1, "sneaked-in", True, {}))
    )
    await writer.drain()
    dec = bp.Decoder(bp.DEFAULT_MAX_FRAME + 65536)
    frames: list[bp.Frame] = []
    async with asyncio.timeout(BOUND):
        while data := await reader.read(65536):
            dec.feed(data)
            while (f := dec.next_frame()) is not None:
                frames.append(f)
    writer.close()
    assert [type(f) for f in frames] == [bp.Error]
    assert frames[0].code == bp.ErrorCode.NOT_AUTHENTICATED  # type: ignore[attr-defined]
    c = await brokerd_client.connect(broker.url, timeout=BOUND)
    async with c:
        with pytest.raises(NotFound):
            await c.queue_stats("sneaked-in")
