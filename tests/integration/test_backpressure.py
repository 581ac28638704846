"""A client that sends requests but never reads the replies is back-pressured:
the broker stops reading from it instead of buffering replies without bound,
and keeps serving everyone else."""

from __future__ import annotations

import asyncio
import socket
import time

import brokerd_client
import brokerd_protocol as bp

REQUESTS = 2_000_000


async def test_peer_that_does_not_read_is_not_read_either(broker) -> None:  # type: ignore[no-untyped-def]
    sock = socket.create_connection(("127.0.0.1", broker.port))
    sock.sendall(bp.encode(bp.Hello([1], None, "flood", 0.0)))
    dec = bp.Decoder()
    while (welcome := dec.next_frame()) is None:
        dec.feed(sock.recv(4096))
    assert isinstance(welcome, bp.Welcome)
    sock.sendall(bp.encode(bp.DeclareQueue(1, "flood", True, {})))
    sock.setblocking(False)
    one = bp.encode(bp.QueueStats(2, "flood"))
    chunk = one * 10_000
    sent = 0
    stalled_since: float | None = None
    deadline = time.monotonic() + 30
    # Send until the broker stops taking bytes for a whole second.
    while sent < REQUESTS * len(one) and time.monotonic() < deadline:
        try:
            n = sock.send(chunk[sent % len(chunk) :])
        except BlockingIOError:
            n = 0
        if n:
            sent += n
            stalled_since = None
        elif stalled_since is None:
            stalled_since = time.monotonic()
        elif time.monotonic() - stalled_since > 1.0:
            break
        else:
            await asyncio.sleep(0.01)
    requests_sent = sent // len(one)
    # Without back-pressure the broker would read all 2,000,000 requests and
    # hold ~100 MB of replies for a peer that never reads them.
    assert requests_sent < REQUESTS // 2, requests_sent
    async with await brokerd_client.connect(broker.url) as client:
        stats = await client.queue_stats("flood")
        assert stats.ready == 0
    sock.close()
