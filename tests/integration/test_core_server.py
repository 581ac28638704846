"""The server's edges against a real brokerd: authentication, the loopback
rule, frame limits, the handshake, heartbeats and the connection limits,
and peers that try to pin memory, stall the loop or never finish the handshake.

Raw-socket tests speak the wire protocol with the sans-IO codec so they can
misbehave in ways the SDK never would. Waits are bounded only to fail rather
than hang; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import brokerd_client
from brokerd.cli import build_server
from brokerd.clock import FakeClock
from brokerd.config import Config
from brokerd_client import (
    AuthenticationError,
    ConnectionLost,
    NotFound,
    QueueInfo,
    ResourceLimitExceeded,
)
from brokerd_protocol import (
    DEFAULT_MAX_FRAME,
    Ack,
    Confirm,
    Consume,
    DeclareQueue,
    Decoder,
    Deliver,
    ErrorCode,
    Frame,
    Heartbeat,
    Hello,
    Ok,
    Publish,
    QueueStats,
    Welcome,
    encode,
    encode_payload,
)
from brokerd_protocol import Error as ErrorFrame

BOUND = 20.0


class RawConnection:
    """A bare TCP connection that sends and reads frames, nothing more."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder(DEFAULT_MAX_FRAME + 65536)

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: Frame | bytes) -> None:
        self.writer.write(data if isinstance(data, bytes) else encode(data))
        await self.writer.drain()

    async def read_frame(self) -> Frame | None:
        """The next frame, or None once the server closed the connection."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            try:
                data = await self.reader.read(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.decoder.feed(data)

    async def frames_until_closed(self) -> list[Frame]:
        """Every frame the server sends until it closes (bounded)."""
        frames: list[Frame] = []
        async with asyncio.timeout(BOUND):
            while (frame := await self.read_frame()) is not None:
                frames.append(frame)
        return frames

    async def handshake(self, heartbeat: float = 30.0, token: str | None = None) -> Welcome:
        await self.send(Hello([1], token, "raw", heartbeat))
        async with asyncio.timeout(BOUND):
            welcome = await self.read_frame()
        assert isinstance(welcome, Welcome), welcome
        return welcome

    def close(self) -> None:
        self.writer.close()


def connection_error(frames: list[Frame]) -> ErrorFrame:
    """The connection-level Error that must end ``frames``."""
    assert frames, "the server closed without an Error frame"
    last = frames[-1]
    assert isinstance(last, ErrorFrame), frames
    assert last.req == 0
    return last


async def test_only_the_right_token_is_let_in(broker_factory: Any) -> None:
    proc = broker_factory(token="s3cret").start()
    base = f"brokerd://127.0.0.1:{proc.port}"
    with pytest.raises(AuthenticationError):
        await brokerd_client.connect(base, timeout=BOUND)  # no token at all
    with pytest.raises(AuthenticationError):
        await brokerd_client.connect(base, token="s3cret-not", timeout=BOUND)
    with pytest.raises(AuthenticationError):
        await brokerd_client.connect(base, token="", timeout=BOUND)
    good = await brokerd_client.connect(base, token="s3cret", timeout=BOUND)
    async with good:
        await good.declare_queue("authed")
        assert await good.publish("", "authed", b"x")

    # On the wire: AUTH_FAILED, then the connection closes.
    raw = await RawConnection.open(proc.port)
    await raw.send(Hello([1], "wrong", "raw", 30.0))
    err = connection_error(await raw.frames_until_closed())
    assert err.code == ErrorCode.AUTH_FAILED
    raw.close()


@pytest.mark.parametrize("flag", ["--host", "--metrics-host"])
def test_non_loopback_bind_without_a_token_refuses_to_start(tmp_path: Path, flag: str) -> None:
    cmd = [
        sys.executable, "-m", "brokerd",
        "--port", "0",
        "--metrics-port", "0",
        "--data-dir", str(tmp_path / "data"),
        flag, "0.0.0.0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BOUND, check=False)
    assert proc.returncode != 0
    assert "0.0.0.0" in proc.stderr
    assert "token" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_oversized_frame_gets_frame_too_large_then_close(broker: Any) -> None:
    raw = await RawConnection.open(broker.port)
    welcome = await raw.handshake()
    # A header declaring 100 MB, and no payload: refused from the header alone.
    await raw.send(struct.pack(">I", 100 * 1024 * 1024))
    err = connection_error(await raw.frames_until_closed())
    assert err.code == ErrorCode.FRAME_TOO_LARGE
    raw.close()
    # One byte over the announced limit is refused too.
    raw = await RawConnection.open(broker.port)
    await raw.handshake()
    await raw.send(struct.pack(">I", welcome.max_frame + 1))
    assert connection_error(await raw.frames_until_closed()).code == ErrorCode.FRAME_TOO_LARGE
    raw.close()


async def test_frames_before_hello_get_not_authenticated(broker: Any) -> None:
    c = await brokerd_client.connect(broker.url, timeout=BOUND)
    await c.declare_queue("guarded")
    for first in (Publish(1, "", "guarded", b"sneaky"), QueueStats(1, "guarded"), Heartbeat()):
        raw = await RawConnection.open(broker.port)
        await raw.send(first)
        err = connection_error(await raw.frames_until_closed())
        assert err.code == ErrorCode.NOT_AUTHENTICATED, first
        raw.close()
    # The publish before Hello stored nothing.
    assert await c.queue_stats("guarded") == QueueInfo(0, 0, 0, 0)
    await c.close()


async def test_frames_after_a_connection_error_are_not_acted_on(broker: Any) -> None:
    """A Publish before Hello is a connection-level error: nothing pipelined
    behind it on the same connection takes effect, not even after a Hello."""
    raw = await RawConnection.open(broker.port)
    await raw.send(
        encode(Publish(1, "", "nowhere", b"x", {}))
        + encode(Hello([1], None, "late", 0.0))
        + encode(DeclareQueue(1, "sneaked-in", True, {}))
    )
    frames = await raw.frames_until_closed()
    raw.close()
    assert [type(f) for f in frames] == [ErrorFrame]
    assert connection_error(frames).code == ErrorCode.NOT_AUTHENTICATED
    c = await brokerd_client.connect(broker.url, timeout=BOUND)
    async with c:
        with pytest.raises(NotFound):
            await c.queue_stats("sneaked-in")


async def test_a_silent_peer_is_dropped_with_heartbeat_timeout(broker: Any) -> None:
    raw = await RawConnection.open(broker.port)
    # brokerd raises a smaller request to its 0.5 s floor.
    welcome = await raw.handshake(heartbeat=0.2)
    assert welcome.heartbeat == 0.5
    # Now say nothing at all. The server heartbeats, then gives up on us.
    frames = await raw.frames_until_closed()
    err = connection_error(frames)
    assert err.code == ErrorCode.HEARTBEAT_TIMEOUT
    assert all(isinstance(f, Heartbeat) for f in frames[:-1]), frames
    raw.close()


async def test_max_connections_refuses_the_next_one(broker_factory: Any) -> None:
    proc = broker_factory("--max-connections", "2").start()
    url = f"brokerd://127.0.0.1:{proc.port}"
    first = await brokerd_client.connect(url, timeout=BOUND)
    second = await brokerd_client.connect(url, timeout=BOUND)
    with pytest.raises((ResourceLimitExceeded, ConnectionLost)):
        await brokerd_client.connect(url, timeout=BOUND)
    # On the wire: RESOURCE_LIMIT, then the connection closes.
    raw = await RawConnection.open(proc.port)
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        await raw.send(Hello([1], None, "raw", 30.0))
    err = connection_error(await raw.frames_until_closed())
    assert err.code == ErrorCode.RESOURCE_LIMIT
    raw.close()
    # The existing connections are unaffected.
    await first.declare_queue("limited")
    await second.queue_stats("limited")
    # Once one closes, a new connection is admitted.
    await first.close()
    async with asyncio.timeout(BOUND):
        while True:
            try:
                third = await brokerd_client.connect(url, timeout=BOUND)
                break
            except (ResourceLimitExceeded, ConnectionLost):
                await asyncio.sleep(0.05)
    assert (await third.queue_stats("limited")).ready == 0
    await third.close()
    await second.close()


# --- hostile and faulty peers ----------------------------------------------------

#: SPEC §13: the largest payload accepted before Welcome.
HELLO_LIMIT = 16 * 1024
#: SPEC §13: the most delivery ids in one Ack, Nack, Reject or Extend.
SETTLE_IDS = 10_000


async def test_before_welcome_a_frame_larger_than_the_hello_limit_is_refused(broker: Any) -> None:
    """An unauthenticated peer cannot make the broker buffer a full-size frame."""
    raw = await RawConnection.open(broker.port)
    await raw.send(struct.pack(">I", HELLO_LIMIT + 1))
    err = connection_error(await raw.frames_until_closed())
    assert err.code == ErrorCode.FRAME_TOO_LARGE
    assert str(HELLO_LIMIT) in err.message
    raw.close()


async def test_a_hello_at_the_limit_is_welcomed_and_the_full_limit_applies_after(
    broker: Any,
) -> None:
    empty = len(encode_payload(Hello([1], None, "", 30.0)))
    name = "n" * (HELLO_LIMIT - empty - 2)  # str 16 has a 2-byte longer header than fixstr
    hello = Hello([1], None, name, 30.0)
    assert len(encode_payload(hello)) == HELLO_LIMIT
    raw = await RawConnection.open(broker.port)
    await raw.send(hello)
    async with asyncio.timeout(BOUND):
        welcome = await raw.read_frame()
    assert isinstance(welcome, Welcome), welcome
    # After Welcome, frames up to max_frame are read again.
    await raw.send(Publish(1, "", "nowhere", b"x" * (4 * HELLO_LIMIT)))
    async with asyncio.timeout(BOUND):
        confirm = await raw.read_frame()
    assert confirm is not None and type(confirm).__name__ == "Confirm", confirm
    raw.close()


async def test_consume_is_answered_with_its_id_before_the_first_delivery(broker: Any) -> None:
    raw = await RawConnection.open(broker.port)
    await raw.handshake()
    await raw.send(DeclareQueue(1, "ready", False, {}))
    await raw.send(Publish(1, "", "ready", b"waiting"))
    async with asyncio.timeout(BOUND):
        assert isinstance(await raw.read_frame(), Ok)  # the declare
        assert isinstance(await raw.read_frame(), Confirm)
        await raw.send(Consume(2, "ready", 10, None))
        first, second = await raw.read_frame(), await raw.read_frame()
    assert first == Ok(2, 1)
    assert isinstance(second, Deliver) and (second.consumer, second.body) == (1, b"waiting")
    raw.close()


async def test_an_ack_with_more_ids_than_the_cap_closes_the_connection(broker: Any) -> None:
    raw = await RawConnection.open(broker.port)
    await raw.handshake()
    await raw.send(Ack(1, [1] * (SETTLE_IDS + 1)))
    err = connection_error(await raw.frames_until_closed())
    assert err.code == ErrorCode.PROTOCOL_ERROR
    assert "Ack" in err.message and str(SETTLE_IDS) in err.message
    raw.close()


async def test_the_handshake_deadline_counts_from_connect_not_from_the_last_byte(
    broker_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer trickling its Hello a byte at a time is still dropped at the deadline."""
    monkeypatch.setenv("BROKERD_HANDSHAKE_TIMEOUT", "1")
    proc = broker_factory().start()
    raw = await RawConnection.open(proc.port)
    hello = encode(Hello([1], None, "x" * 200, 30.0))

    async def trickle() -> None:
        with contextlib.suppress(OSError):
            for byte in hello[:-1]:
                await raw.send(bytes([byte]))
                await asyncio.sleep(0.1)

    task = asyncio.create_task(trickle())
    try:
        err = connection_error(await raw.frames_until_closed())
    finally:
        task.cancel()
    assert err.code == ErrorCode.NOT_AUTHENTICATED
    assert not task.done() or task.cancelled()  # it was still trickling
    raw.close()


async def test_connections_still_in_the_handshake_never_take_an_authenticated_slot(
    broker_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKERD_MAX_HANDSHAKES", "4")
    proc = broker_factory("--max-connections", "2").start()
    url = f"brokerd://127.0.0.1:{proc.port}"
    idle = [await RawConnection.open(proc.port) for _ in range(10)]
    # Ten peers that never say Hello: a healthy client still gets both slots.
    first = await brokerd_client.connect(url, timeout=BOUND)
    second = await brokerd_client.connect(url, timeout=BOUND)
    # Only four may wait in the handshake: the oldest were dropped to make room.
    for raw in idle[:6]:
        err = connection_error(await raw.frames_until_closed())
        assert err.code == ErrorCode.RESOURCE_LIMIT
        raw.close()
    # --max-connections still bounds the authenticated connections.
    with pytest.raises((ResourceLimitExceeded, ConnectionLost)):
        await brokerd_client.connect(url, timeout=BOUND)
    await first.declare_queue("still-served")
    await second.close()
    await first.close()
    for raw in idle[6:]:
        raw.close()


# --- failed authentication ---------------------------------------------------------

TOKEN = "correct-horse-battery-staple"


async def bad_hello(port: int, guess: str) -> RawConnection:
    raw = await RawConnection.open(port)
    await raw.send(Hello([1], guess, "guesser", 30.0))
    return raw


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(BOUND):
        while not condition():  # noqa: ASYNC110 - server state, no event to await
            await asyncio.sleep(0.01)


async def test_after_a_few_failures_the_next_hello_from_that_address_waits_its_turn() -> None:
    """In-process broker whose throttle runs on a fake clock: a held Hello is
    answered only once that clock reaches its turn, whatever the wall time."""
    clock = FakeClock(1000.0)
    config = Config(host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0, token=TOKEN)
    server = build_server(config.validate(), auth_clock=clock.now)
    await server.start()
    assert server.port is not None
    throttle = server.auth_throttle
    try:
        for i in range(3):  # honest typos cost nothing
            raw = await bad_hello(server.port, f"guess-{i}")
            assert connection_error(await raw.frames_until_closed()).code == ErrorCode.AUTH_FAILED
            raw.close()
        assert (throttle.failures_total, throttle.deferred_total) == (3, 0)

        raw = await bad_hello(server.port, "guess-3")
        await until(lambda: throttle.deferred_total == 1)
        assert throttle.failures_total == 3  # held, not yet checked
        clock.advance(0.5)  # its turn
        assert connection_error(await raw.frames_until_closed()).code == ErrorCode.AUTH_FAILED
        assert throttle.failures_total == 4
        raw.close()

        # The right token from the same address waits its turn too, then gets in.
        raw = await RawConnection.open(server.port)
        await raw.send(Hello([1], TOKEN, "honest", 30.0))
        await until(lambda: throttle.deferred_total == 2)
        clock.advance(1.0)
        async with asyncio.timeout(BOUND):
            welcome = await raw.read_frame()
        assert isinstance(welcome, Welcome), welcome
        raw.close()
        # Which forgave the address.
        raw = await bad_hello(server.port, "guess-5")
        assert connection_error(await raw.frames_until_closed()).code == ErrorCode.AUTH_FAILED
        assert throttle.deferred_total == 2
        raw.close()
    finally:
        await server.stop()


async def test_a_held_hello_that_cannot_get_its_turn_before_the_deadline_is_refused() -> None:
    clock = FakeClock(1000.0)
    config = Config(
        host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0, token=TOKEN,
        handshake_timeout=0.3,
    )  # fmt: skip
    server = build_server(config.validate(), auth_clock=clock.now)
    await server.start()
    assert server.port is not None
    try:
        for i in range(7):  # after the seventh failure the next attempt waits 5 s (the cap)
            clock.advance(10.0)  # each of these comes when its address may try again
            raw = await bad_hello(server.port, f"guess-{i}")
            await raw.frames_until_closed()
            raw.close()
        raw = await bad_hello(server.port, "guess-7")
        err = connection_error(await raw.frames_until_closed())
        assert err.code == ErrorCode.RESOURCE_LIMIT
        assert "authentication" in err.message
        assert server.auth_throttle.failures_total == 7  # that guess was never checked
        raw.close()
    finally:
        await server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=BOUND) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_failed_authentications_are_counted_and_logged_without_any_token(
    broker_factory: Any,
) -> None:
    metrics_port = free_port()
    proc = broker_factory("--metrics-port", str(metrics_port), token=TOKEN).start()
    for guess in ("first-guess", "second-guess"):
        raw = await bad_hello(proc.port, guess)
        assert connection_error(await raw.frames_until_closed()).code == ErrorCode.AUTH_FAILED
        raw.close()
    samples = await asyncio.to_thread(scrape, metrics_port)
    assert samples["brokerd_auth_failures_total"] == 2
    assert samples["brokerd_auth_deferred_total"] == 0
    log = proc.log_path.read_text()
    failures = [line for line in log.splitlines() if "authentication failed" in line]
    assert len(failures) == 2, log
    assert all("127.0.0.1" in line for line in failures)
    assert TOKEN not in log
    assert "first-guess" not in log and "second-guess" not in log


async def test_a_token_file_keeps_the_secret_out_of_the_command_line(
    broker_factory: Any, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    proc = broker_factory("--token-file", str(token_file)).start()
    cmdline = await asyncio.to_thread(Path(f"/proc/{proc.pid}/cmdline").read_bytes)
    assert TOKEN.encode() not in cmdline
    client = await brokerd_client.connect(f"brokerd://{TOKEN}@127.0.0.1:{proc.port}", timeout=BOUND)
    await client.close()
    with pytest.raises(AuthenticationError):
        await brokerd_client.connect(f"brokerd://127.0.0.1:{proc.port}", timeout=BOUND)
