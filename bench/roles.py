"""Code that runs inside the producer/consumer child processes.

Each role is an ``async`` function run on the child's own event loop (uvloop when it is
installed). The parent talks to a child through a :class:`RoleContext`: a shared counter
(for the progress line and the stall watchdog), a ``ready`` event the child sets once it is
connected (and subscribed, where that matters), and a ``go`` event the parent sets to start
the timed part. Every timestamp is on :func:`bench.clock.now`, which all processes share.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clock import now, now_ns
from .payload import BodyFactory, parse
from .systems import Target, Unreachable, make_adapter

GO_TIMEOUT = 300.0
MAX_IN_FLIGHT = 20_000


@dataclass
class RoleContext:
    target: Target
    counter: Any  # multiprocessing RawValue("q")
    ready: Any  # multiprocessing Event
    go: Any  # multiprocessing Event

    def signal_ready(self) -> None:
        self.ready.set()

    async def wait_go(self) -> None:
        if not await asyncio.to_thread(self.go.wait, GO_TIMEOUT):
            raise TimeoutError("the parent never said go")


async def produce(
    ctx: RoleContext, *, queue: str, count: int, size: int, batch: int, wait_go: bool = True
) -> dict[str, Any]:
    """Confirmed publishing in pipelined batches of ``batch`` messages."""
    factory = BodyFactory(size)
    counter = ctx.counter
    async with make_adapter(ctx.target) as adapter:
        ctx.signal_ready()
        if wait_go:
            await ctx.wait_go()
        t_first = now()
        for start in range(0, count, batch):
            stop = min(count, start + batch)
            await adapter.publish_batch(queue, factory.batch(start, stop))
            counter.value = stop
        t_end = now()
    return {"t_first": t_first, "t_end": t_end, "count": count}


async def consume(
    ctx: RoleContext,
    *,
    queue: str,
    count: int,
    prefetch: int,
    subscribe_first: bool = True,
    record_latency: bool = False,
) -> dict[str, Any]:
    """Receive ``count`` distinct messages, acknowledging each one on its own.

    With ``subscribe_first`` the subscription exists before the parent says go (W1, W5);
    otherwise the clock starts just before subscribing to a pre-filled queue (W3).
    """
    counter = ctx.counter
    seen = bytearray(count)
    distinct = duplicates = 0
    latencies: list[int] = []
    t_first: float | None = None
    async with make_adapter(ctx.target) as adapter:
        if subscribe_first:
            consumer = await adapter.consume(queue, prefetch)
            ctx.signal_ready()
            await ctx.wait_go()
            t_start = now()
        else:
            ctx.signal_ready()
            await ctx.wait_go()
            t_start = now()
            consumer = await adapter.consume(queue, prefetch)
        async for delivery in consumer:
            if record_latency:
                received = now_ns()
                seq, stamp = parse(delivery.body)
                latencies.append(received - stamp)
            else:
                seq, _ = parse(delivery.body)
            if t_first is None:
                t_first = now()
            if seq < count and not seen[seq]:
                seen[seq] = 1
                distinct += 1
            else:
                duplicates += 1
            await delivery.ack()
            counter.value = distinct
            if distinct >= count:
                break
        t_last_ack = now()
        await adapter.sync(queue)
        t_end = now()
        lost_acks = consumer.lost_acks()
        with contextlib.suppress(Exception):
            await consumer.cancel()
    if lost_acks:
        raise RuntimeError(f"{lost_acks} acks were refused by the broker (lease lost)")
    result: dict[str, Any] = {
        "t_start": t_start,
        "t_first": t_first,
        "t_last_ack": t_last_ack,
        "t_end": t_end,
        "count": distinct,
        "duplicates": duplicates,
    }
    if record_latency:
        result["latencies_ns"] = latencies
    return result


async def paced_produce(
    ctx: RoleContext, *, queue: str, rate: float, count: int, size: int
) -> dict[str, Any]:
    """Publish ``count`` messages at ``rate``/s on an absolute schedule.

    Send *i* is due at ``t0 + i / rate``; the loop sleeps until that absolute time (never a
    fixed sleep, so there is no drift) and catches up without sleeping when late. Each
    publish runs as its own task so a slow confirm never delays the next send. The body
    carries the actual send time.
    """
    factory = BodyFactory(size)
    counter = ctx.counter
    period_ns = 1e9 / rate
    pending: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []
    lags: list[int] = []
    max_in_flight = 0

    def done(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            errors.append(task.exception())  # type: ignore[arg-type]

    async with make_adapter(ctx.target) as adapter:
        ctx.signal_ready()
        await ctx.wait_go()
        t0 = now_ns() + 20_000_000
        for i in range(count):
            due = t0 + int(i * period_ns)
            delay = due - now_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            sent = now_ns()
            lags.append(sent - due)
            task = asyncio.create_task(adapter.publish(queue, factory.make(i, sent)))
            pending.add(task)
            task.add_done_callback(done)
            max_in_flight = max(max_in_flight, len(pending))
            counter.value = i + 1
            if errors:
                raise errors[0]
            if len(pending) > MAX_IN_FLIGHT:
                raise RuntimeError(f"{len(pending)} publishes awaiting confirm: system fell behind")
        if pending:
            await asyncio.gather(*list(pending), return_exceptions=True)
        if errors:
            raise errors[0]
        t_end = now_ns()
    lags.sort()
    return {
        "t0_ns": t0,
        "t_end_ns": t_end,
        "count": count,
        "max_in_flight": max_in_flight,
        "lag_p50_ns": lags[len(lags) // 2] if lags else 0,
        "lag_max_ns": lags[-1] if lags else 0,
    }


async def hold(ctx: RoleContext, *, queue: str, count: int, prefetch: int) -> dict[str, Any]:
    """Receive ``count`` messages, never acknowledge them, then wait to be SIGKILLed."""
    received = 0
    async with make_adapter(ctx.target) as adapter:
        consumer = await adapter.consume(queue, prefetch)
        async for _delivery in consumer:
            received += 1
            ctx.counter.value = received
            if received >= count:
                break
        ctx.signal_ready()
        await asyncio.Event().wait()
    return {"count": received}


async def await_redelivery(
    ctx: RoleContext, *, queue: str, count: int, prefetch: int
) -> dict[str, Any]:
    """Subscribe, say ready, then time the arrival of the first and the last of ``count``
    messages (W8: the messages another consumer held when it was killed)."""
    distinct: set[int] = set()
    t_first: float | None = None
    early = 0
    async with make_adapter(ctx.target) as adapter:
        consumer = await adapter.consume(queue, prefetch)
        ctx.signal_ready()
        async for delivery in consumer:
            t = now()
            if t_first is None:
                t_first = t
                early = int(not ctx.go.is_set())
            seq, _ = parse(delivery.body)
            distinct.add(seq)
            await delivery.ack()
            ctx.counter.value = len(distinct)
            if len(distinct) >= count:
                break
        t_all = now()
        with contextlib.suppress(Exception):
            await consumer.cancel()
    return {"t_first": t_first, "t_all": t_all, "count": len(distinct), "before_kill": early}


async def restart_consume(
    ctx: RoleContext, *, port_file: str, queue: str, prefetch: int
) -> dict[str, Any]:
    """W7: once told go, poll for the restarted broker's port file, connect (retrying until
    it accepts), subscribe, and time the first delivery."""
    ctx.signal_ready()
    await ctx.wait_go()
    path = Path(port_file)
    attempts = 0
    while True:
        port = _read_port(path)
        if port:
            attempts += 1
            adapter = make_adapter(Target(ctx.target.system, f"brokerd://127.0.0.1:{port}"))
            try:
                await adapter.connect()
                break
            except (Unreachable, OSError):
                await adapter.close()
        await asyncio.sleep(0.002)
    t_connected = now()
    t_first: float | None = None
    try:
        consumer = await adapter.consume(queue, prefetch)
        async for delivery in consumer:
            t_first = now()
            await delivery.ack()
            break
        with contextlib.suppress(Exception):
            await consumer.cancel()
    finally:
        await adapter.close()
    return {"t_connected": t_connected, "t_first": t_first, "connect_attempts": attempts}


async def blast(ctx: RoleContext, *, queue: str, size: int, seconds: float) -> dict[str, Any]:
    """W9's heavy publisher: brokerd ``Publish`` frames as fast as the socket takes them for
    ``seconds``, with no window of unconfirmed messages (the sender never waits for a
    confirm; a separate reader only counts them). Speaks the wire protocol directly: the
    SDK bounds its publishers to ``max_inflight`` unconfirmed messages, and this role is
    the publisher that does not."""
    import brokerd_protocol as bp

    host, port = _brokerd_address(ctx.target.url)
    reader, writer = await asyncio.open_connection(host, port)
    decoder = bp.Decoder()
    writer.write(bp.encode(bp.Hello([1], None, "bench-w9-blaster", 0.0)))
    while (welcome := decoder.next_frame()) is None:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("brokerd closed the connection during the handshake")
        decoder.feed(data)
    if not isinstance(welcome, bp.Welcome):
        raise ConnectionError(f"handshake answered with {welcome!r}")
    confirmed = 0
    sent = 0
    stopped = False
    refused: list[str] = []
    settled = asyncio.Event()  # set once every publish sent is confirmed, or one failed

    async def count_confirms() -> None:
        nonlocal confirmed
        while data := await reader.read(1 << 20):
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                if isinstance(frame, bp.Confirm):
                    confirmed += sum(hi - lo + 1 for lo, hi in frame.ranges)
                    confirmed += len(frame.unroutable)
                elif isinstance(frame, (bp.PublishError, bp.Error)):
                    refused.append(repr(frame))
            if refused or (stopped and confirmed >= sent):
                settled.set()
        settled.set()

    counting = asyncio.create_task(count_confirms())
    body = bytes(size)
    ctx.signal_ready()
    await ctx.wait_go()
    t_first = now()
    deadline = t_first + seconds
    while now() < deadline and not refused:
        writer.write(
            b"".join(bp.encode(bp.Publish(sent + i, "", queue, body)) for i in range(1, 257))
        )
        sent += 256
        ctx.counter.value = sent
        await writer.drain()
    t_sent = now()
    confirmed_at_stop = confirmed
    stopped = True
    if confirmed >= sent:
        settled.set()
    async with asyncio.timeout(GO_TIMEOUT):
        await settled.wait()
    t_end = now()
    counting.cancel()
    writer.close()
    if refused:
        raise RuntimeError(f"brokerd refused a blasted publish: {refused[0]}")
    if confirmed < sent:
        raise RuntimeError(f"brokerd closed the connection with {sent - confirmed} unconfirmed")
    return {
        "t_first": t_first,
        "t_sent": t_sent,
        "t_end": t_end,
        "sent": sent,
        "confirmed_at_stop": confirmed_at_stop,
    }


async def round_trips(
    ctx: RoleContext, *, queue: str, size: int, seconds: float, lead: float, alone: float
) -> dict[str, Any]:
    """W9's light client: one confirmed publish at a time, each round trip recorded. First
    for ``alone`` seconds before saying ready (the baseline, nothing else running), then,
    ``lead`` seconds after go, for ``seconds`` beside the blaster."""
    factory = BodyFactory(size)

    async def run(adapter: Any, seconds: float, first: int) -> list[int]:
        latencies: list[int] = []
        deadline = now_ns() + int(seconds * 1e9)
        i = first
        while (start := now_ns()) < deadline:
            await adapter.publish(queue, factory.make(i, start))
            latencies.append(now_ns() - start)
            i += 1
            ctx.counter.value = i
        return latencies

    async with make_adapter(ctx.target) as adapter:
        baseline = await run(adapter, alone, 0)
        ctx.signal_ready()
        await ctx.wait_go()
        await asyncio.sleep(lead)
        latencies = await run(adapter, seconds, len(baseline))
    return {"count": len(latencies), "latencies_ns": latencies, "alone_ns": baseline}


def _brokerd_address(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host or "127.0.0.1", int(port)


def _read_port(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


ROLES: dict[str, Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = {
    "produce": produce,
    "consume": consume,
    "paced_produce": paced_produce,
    "hold": hold,
    "await_redelivery": await_redelivery,
    "restart_consume": restart_consume,
    "blast": blast,
    "round_trips": round_trips,
}


def child_main(
    role: str,
    target: Target,
    params: dict[str, Any],
    conn: Any,
    counter: Any,
    ready: Any,
    go: Any,
) -> None:
    """Entry point of a spawned child: run one role on a fresh event loop and send
    ``("ok", result)`` or ``("error", traceback)`` back through ``conn``."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        if role.startswith("sync:"):
            from .systems import task_runs

            result = task_runs.SYNC_ROLES[role[5:]](counter=counter, ready=ready, go=go, **params)
        else:
            ctx = RoleContext(target=target, counter=counter, ready=ready, go=go)
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                result = runner.run(ROLES[role](ctx, **params))
        result["uvloop"] = loop_factory is not None
        conn.send(("ok", result))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()
