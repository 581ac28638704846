"""The workloads W1-W9 (and W6b): what each measures and how, on any system.

Each workload is an ``async`` function of a :class:`bench.runner.RunContext` (a fresh
broker or freshly declared peer queue, an admin connection, the settings) returning
``(values, details)``; it raises :class:`bench.model.Skip` where it does not apply.
Producers and consumers always run in separate child processes (:mod:`bench.children`).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .children import Child, collect, kill_all, spawn, wait_ready
from .clock import now
from .model import NOT_APPLICABLE, SKIPPED, MetricSpec, Skip, WorkloadSpec
from .progress import Counter, Progress
from .systems import make_adapter

if TYPE_CHECKING:
    from .config import Settings
    from .runner import RunContext

Values = dict[str, float]
Details = dict[str, Any]
Result = tuple[Values, Details]

FILL_BATCH = 1000
#: Body bytes a filler keeps in flight at most (one batch), whatever the body size.
FILL_BATCH_BYTES = 64 * 1024 * 1024
W9_BLAST_SIZE = 1024  # the heavy publisher's bodies, as in the report that found the problem
W9_LEAD = 1.0  # seconds the blaster runs alone before the light client starts, and after it
W9_ALONE = 2.0  # seconds of light round trips with nothing else running (the baseline)
W4C_RATE = 100.0  # latency tasks per second: an idle worker, well below saturation
W8_KILL_TIMEOUT = 90.0  # above brokerd's 30 s lease, so a missed disconnect still shows

SPECS: dict[str, WorkloadSpec] = {
    "W1": WorkloadSpec(
        "W1",
        "durable end to end",
        (MetricSpec("msg_per_s", "W1 end to end, confirmed + acked", "msg/s", True),),
        "confirmed publish and consume with one ack per message, producer and consumer "
        "running at once; rate from the first publish to the last ack",
    ),
    "W2": WorkloadSpec(
        "W2",
        "publish only, confirmed",
        (MetricSpec("msg_per_s", "W2 publish, confirmed", "msg/s", True),),
        "confirmed publishes in pipelined batches into a durable queue, no consumer",
    ),
    "W3": WorkloadSpec(
        "W3",
        "drain backlog with acks",
        (MetricSpec("msg_per_s", "W3 drain backlog, acked", "msg/s", True),),
        "consume a pre-filled queue, one ack per message; rate from subscribe to last ack",
    ),
    "W4": WorkloadSpec(
        "W4",
        "noop tasks, one worker",
        (
            MetricSpec("tasks_per_s_ignored", "W4 noop tasks, results ignored", "tasks/s", True),
            MetricSpec("tasks_per_s_results", "W4 noop tasks, with results", "tasks/s", True),
        ),
        "noop tasks through one worker process (brokerd task SDK; Celery on the peers); "
        "from the first send to the last task run (ignored) or the last result received",
    ),
    "W4c": WorkloadSpec(
        "W4c",
        "an unchanged Celery app and worker",
        (
            MetricSpec("tasks_per_s", "W4c Celery worker, noop tasks", "tasks/s", True),
            MetricSpec("enqueue_per_s", "W4c Celery producer, confirmed enqueue", "tasks/s", True),
            MetricSpec("p50_ms", "W4c Celery task latency p50", "ms", False),
            MetricSpec("p99_ms", "W4c Celery task latency p99", "ms", False),
        ),
        "the same Celery app, solo pool, acks_late, one worker process, on every system "
        "(brokerd through its kombu transport): noop tasks/s as W4; the producer's rate of "
        "confirmed delay() calls while pre-loading; latency from delay() to the task "
        f"starting, {W4C_RATE:g} tasks/s to an idle worker",
    ),
    "W5": WorkloadSpec(
        "W5",
        "publish->deliver latency at fixed rate",
        (
            MetricSpec("p50_ms", "W5 latency p50", "ms", False),
            MetricSpec("p99_ms", "W5 latency p99", "ms", False),
            MetricSpec("p999_ms", "W5 latency p99.9", "ms", False),
        ),
        "messages sent on an absolute schedule at a fixed rate, send time in the body; "
        "latency = consumer receive time - send time",
    ),
    "W6": WorkloadSpec(
        "W6",
        "broker memory with a deep backlog",
        (
            MetricSpec("rss_delta", "W6 RSS growth, backlog queued", "bytes", False),
            MetricSpec("rss", "W6 RSS, backlog queued", "bytes", False),
        ),
        "broker resident memory after filling a durable queue (growth over the idle broker, "
        "and total)",
    ),
    "W6b": WorkloadSpec(
        "W6b",
        "broker memory with big bodies queued",
        (
            MetricSpec("rss", "W6b RSS, 1 MiB bodies queued", "bytes", False),
            MetricSpec("rss_restart", "W6b RSS, queued, after restart", "bytes", False),
        ),
        "broker resident memory after filling a durable queue with big bodies (default "
        "1 GiB of 1 MiB messages), and (brokerd) again after a restart on the same data dir",
    ),
    "W7": WorkloadSpec(
        "W7",
        "restart to ready with the backlog",
        (MetricSpec("restart_s", "W7 restart to first delivery", "s", False),),
        "SIGTERM the broker holding the backlog, restart it on the same data dir; time from "
        "the restart until a consumer receives its first message",
    ),
    "W8": WorkloadSpec(
        "W8",
        "redelivery after a consumer is killed",
        (
            MetricSpec("first_ms", "W8 kill -> first redelivery", "ms", False),
            MetricSpec("all_ms", "W8 kill -> all redelivered", "ms", False),
        ),
        "a consumer holding a full prefetch window unacked is SIGKILLed; time until another "
        "consumer on its own connection receives the first (and last) redelivered message",
    ),
    "W9": WorkloadSpec(
        "W9",
        "light client beside a blasting publisher",
        (
            MetricSpec("p50_ms", "W9 light round trip p50", "ms", False),
            MetricSpec("p99_ms", "W9 light round trip p99", "ms", False),
        ),
        "one client publishes 1 KiB messages as fast as it can without waiting for confirms "
        "while a light client does one confirmed publish at a time into its own queue; "
        "figure = the light client's publish-to-confirm round trip",
    ),
}


# ---------------------------------------------------------------------------- helpers


async def _run(
    ctx: RunContext,
    children: Sequence[Child],
    counters: list[Counter],
    *,
    stall: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Wait for every child to be ready, say go to all, and collect their results."""
    try:
        await wait_ready(children)
    except BaseException:
        kill_all(children)
        raise
    for child in children:
        child.go.set()
    return await collect(
        children,
        progress=Progress(ctx.title, counters),
        stall_timeout=stall or ctx.settings.stall_timeout,
    )


async def _fill(ctx: RunContext, queue: str, count: int, size: int) -> Details:
    """Pre-fill ``queue`` with ``count`` confirmed messages (not part of any figure)."""
    batch = max(1, min(FILL_BATCH, FILL_BATCH_BYTES // size))
    filler = spawn(
        "filler", "produce", ctx.target, queue=queue, count=count, size=size, batch=batch
    )
    res = (await _run(ctx, [filler], [Counter("filled", filler.counter, count)]))["filler"]
    depth = await ctx.admin.depth(queue)
    if depth != count:
        raise RuntimeError(f"queue holds {depth} messages after filling {count}")
    fill_s = res["t_end"] - res["t_first"]
    return {"fill_s": round(fill_s, 3), "fill_msg_per_s": round(count / fill_s, 1)}


def _check_count(what: str, got: int, want: int) -> None:
    if got != want:
        raise RuntimeError(f"{what}: got {got} distinct messages, expected {want}")


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


# ---------------------------------------------------------------------------- workloads


async def w1(ctx: RunContext) -> Result:
    s = ctx.settings
    queue = await ctx.fresh_queue()
    consumer = spawn(
        "consumer", "consume", ctx.target, queue=queue, count=s.count, prefetch=s.prefetch
    )
    producer = spawn(
        "producer", "produce", ctx.target, queue=queue, count=s.count, size=s.size, batch=s.batch
    )
    res = await _run(
        ctx,
        [consumer, producer],
        [Counter("sent", producer.counter, s.count), Counter("acked", consumer.counter, s.count)],
    )
    c, p = res["consumer"], res["producer"]
    _check_count("consumer", c["count"], s.count)
    elapsed = c["t_end"] - p["t_first"]
    return {"msg_per_s": s.count / elapsed}, {
        "count": s.count,
        "size": s.size,
        "prefetch": s.prefetch,
        "batch": s.batch,
        "elapsed_s": round(elapsed, 3),
        "publish_s": round(p["t_end"] - p["t_first"], 3),
        "duplicates": c["duplicates"],
        "uvloop": p["uvloop"],
    }


async def w2(ctx: RunContext) -> Result:
    s = ctx.settings
    queue = await ctx.fresh_queue()
    producer = spawn(
        "producer", "produce", ctx.target, queue=queue, count=s.count, size=s.size, batch=s.batch
    )
    p = (await _run(ctx, [producer], [Counter("confirmed", producer.counter, s.count)]))["producer"]
    elapsed = p["t_end"] - p["t_first"]
    depth = await ctx.admin.depth(queue)
    if depth != s.count:
        raise RuntimeError(f"queue holds {depth} messages after {s.count} confirmed publishes")
    return {"msg_per_s": s.count / elapsed}, {
        "count": s.count,
        "size": s.size,
        "batch": s.batch,
        "elapsed_s": round(elapsed, 3),
        "uvloop": p["uvloop"],
    }


async def w3(ctx: RunContext) -> Result:
    s = ctx.settings
    queue = await ctx.fresh_queue()
    fill = await _fill(ctx, queue, s.count, s.size)
    consumer = spawn(
        "consumer",
        "consume",
        ctx.target,
        queue=queue,
        count=s.count,
        prefetch=s.prefetch,
        subscribe_first=False,
    )
    c = (await _run(ctx, [consumer], [Counter("acked", consumer.counter, s.count)]))["consumer"]
    _check_count("consumer", c["count"], s.count)
    elapsed = c["t_end"] - c["t_start"]
    return {"msg_per_s": s.count / elapsed}, {
        "count": s.count,
        "size": s.size,
        "prefetch": s.prefetch,
        "elapsed_s": round(elapsed, 3),
        "duplicates": c["duplicates"],
        "uvloop": c["uvloop"],
        **fill,
    }


async def w4(ctx: RunContext) -> Result:
    impl = _task_impl(ctx.system)
    values: Values = {}
    details: Details = {"count": ctx.settings.task_count, "prefetch": ctx.settings.prefetch}
    for key, with_results in (("ignored", False), ("results", True)):
        rate, info = await impl.run_noop_tasks(ctx, with_results=with_results)
        values[f"tasks_per_s_{key}"] = rate
        details[key] = info
    return values, details


def _task_impl(system: str) -> Any:
    if system == "brokerd":
        from .systems import brokerd_tasks

        return brokerd_tasks
    from .systems import celery_peer

    return celery_peer


async def w4c(ctx: RunContext) -> Result:
    from .systems import celery_peer

    values: Values = {}
    rate, info = await celery_peer.run_noop_tasks(ctx, with_results=False)
    values["tasks_per_s"] = rate
    values["enqueue_per_s"] = ctx.settings.task_count / max(info["preload_s"], 1e-9)
    count = max(100, min(ctx.settings.task_count // 5, 2000))
    latency = await celery_peer.run_task_latency(ctx, rate=W4C_RATE, count=count)
    lat = latency.pop("latencies")
    values["p50_ms"] = _percentile(lat, 50) * 1000
    values["p99_ms"] = _percentile(lat, 99) * 1000
    return values, {"throughput": info, "latency": {**latency, "count": count, "rate": W4C_RATE}}


async def w5(ctx: RunContext) -> Result:
    s = ctx.settings
    count = max(1, round(s.rate * s.duration))
    queue = await ctx.fresh_queue()
    consumer = spawn(
        "consumer",
        "consume",
        ctx.target,
        queue=queue,
        count=count,
        prefetch=s.prefetch,
        record_latency=True,
    )
    producer = spawn(
        "producer", "paced_produce", ctx.target, queue=queue, rate=s.rate, count=count, size=s.size
    )
    res = await _run(
        ctx,
        [consumer, producer],
        [Counter("sent", producer.counter, count), Counter("received", consumer.counter, count)],
    )
    c, p = res["consumer"], res["producer"]
    _check_count("consumer", c["count"], count)
    lat = sorted(c["latencies_ns"])
    ms = 1e6
    return {
        "p50_ms": _percentile(lat, 50) / ms,
        "p99_ms": _percentile(lat, 99) / ms,
        "p999_ms": _percentile(lat, 99.9) / ms,
    }, {
        "rate": s.rate,
        "duration_s": s.duration,
        "count": count,
        "size": s.size,
        "prefetch": s.prefetch,
        "max_ms": round(lat[-1] / ms, 3),
        "mean_ms": round(sum(lat) / len(lat) / ms, 3),
        "achieved_rate": round(count / ((p["t_end_ns"] - p["t0_ns"]) / 1e9), 1),
        "send_lag_p50_ms": round(p["lag_p50_ns"] / ms, 3),
        "send_lag_max_ms": round(p["lag_max_ns"] / ms, 3),
        "max_publishes_in_flight": p["max_in_flight"],
        "uvloop": p["uvloop"],
    }


async def w6(ctx: RunContext) -> Result:
    s = ctx.settings
    queue = await ctx.fresh_queue()
    before = await ctx.server_rss()
    fill = await _fill(ctx, queue, s.backlog, s.backlog_size)
    await asyncio.sleep(2.0)  # let the broker settle (flushes, GC) before reading RSS
    after = await ctx.server_rss()
    return {"rss_delta": float(after - before), "rss": float(after)}, {
        "backlog": s.backlog,
        "size": s.backlog_size,
        "rss_before": before,
        "rss_after": after,
        "rss_source": ctx.rss_source,
        **fill,
    }


async def w6b(ctx: RunContext) -> Result:
    s = ctx.settings
    queue = await ctx.fresh_queue()
    idle = await ctx.server_rss()
    fill = await _fill(ctx, queue, s.big_backlog, s.big_size)
    await asyncio.sleep(2.0)  # let the broker settle (flushes, GC) before reading RSS
    filled = await ctx.server_rss()
    values = {"rss": float(filled)}
    details: Details = {
        "backlog": s.big_backlog,
        "size": s.big_size,
        "rss_idle": idle,
        "rss_filled": filled,
        "rss_source": ctx.rss_source,
        **fill,
    }
    broker = ctx.broker
    if broker is None:  # restarting a shared, system-managed server is outside the harness
        details["restart"] = "not run on a system-managed server"
        return values, details
    await ctx.admin.close()
    shutdown_s, clean = await asyncio.to_thread(broker.terminate, 60.0)
    if not clean:
        raise RuntimeError(f"brokerd did not exit within 60s of SIGTERM: {broker.log_tail()}")
    await broker.astart()
    ctx.target = type(ctx.target)(ctx.target.system, broker.url)
    ctx.admin = make_adapter(ctx.target)
    await ctx.admin.connect()
    depth = await ctx.admin.depth(queue)
    if depth != s.big_backlog:
        raise RuntimeError(f"after restart {depth} ready, expected {s.big_backlog}")
    await asyncio.sleep(2.0)  # the restarted broker pages its window in
    restarted = await ctx.server_rss()
    values["rss_restart"] = float(restarted)
    details.update(rss_restart=restarted, shutdown_s=round(shutdown_s, 3))
    return values, details


def _w7_precheck(system: str, settings: Settings) -> None:
    if system != "brokerd":
        raise Skip(
            SKIPPED,
            "restarting the shared, system-managed server is outside the harness",
        )


async def w7(ctx: RunContext) -> Result:
    s = ctx.settings
    broker = ctx.broker
    assert broker is not None
    queue = await ctx.fresh_queue()
    fill = await _fill(ctx, queue, s.backlog, s.backlog_size)
    await ctx.admin.close()
    consumer = spawn(
        "consumer",
        "restart_consume",
        ctx.target,
        port_file=str(broker.port_file),
        queue=queue,
        prefetch=s.prefetch,
    )
    try:
        await wait_ready([consumer])
        shutdown_s, clean = await asyncio.to_thread(broker.terminate, 60.0)
        if not clean:
            raise RuntimeError(f"brokerd did not exit within 60s of SIGTERM: {broker.log_tail()}")
        consumer.go.set()
        t0 = now()
        broker.spawn()
        port_wait = asyncio.ensure_future(asyncio.to_thread(broker.wait_port))
        c = (
            await collect(
                [consumer], progress=Progress(ctx.title, []), stall_timeout=s.stall_timeout
            )
        )["consumer"]
        await port_wait
    finally:
        consumer.kill()
    ctx.target = type(ctx.target)(ctx.target.system, broker.url)
    ctx.admin = make_adapter(ctx.target)
    await ctx.admin.connect()
    depth = await ctx.admin.depth(queue)
    if depth != s.backlog - 1:
        raise RuntimeError(f"after restart {depth} ready, expected {s.backlog - 1}")
    restart = c["t_first"] - t0
    return {"restart_s": restart}, {
        "backlog": s.backlog,
        "size": s.backlog_size,
        "shutdown_s": round(shutdown_s, 3),
        "port_file_s": round((broker.port_seen_at or t0) - t0, 3),
        "connected_s": round(c["t_connected"] - t0, 3),
        **fill,
    }


def _w8_precheck(system: str, settings: Settings) -> None:
    if system == "redis":
        raise Skip(NOT_APPLICABLE, "no redelivery without a reaper")


async def w8(ctx: RunContext) -> Result:
    s = ctx.settings
    hold = s.prefetch
    queue = await ctx.fresh_queue()
    from .payload import BodyFactory

    await ctx.admin.publish_batch(queue, BodyFactory(s.size).batch(0, hold))
    holder = spawn("holder", "hold", ctx.target, queue=queue, count=hold, prefetch=s.prefetch)
    waiter: Child | None = None
    try:
        await wait_ready([holder])
        waiter = spawn(
            "waiter", "await_redelivery", ctx.target, queue=queue, count=hold, prefetch=s.prefetch
        )
        await wait_ready([waiter])
        await asyncio.sleep(0.2)
        waiter.go.set()  # marks "after the kill" for the waiter's sanity check
        t_kill = now()
        os.kill(holder.pid, signal.SIGKILL)
        w = (
            await collect(
                [waiter],
                progress=Progress(ctx.title, [Counter("redelivered", waiter.counter, hold)]),
                stall_timeout=max(s.stall_timeout, W8_KILL_TIMEOUT),
            )
        )["waiter"]
    finally:
        holder.kill()
        if waiter is not None:
            waiter.kill()
    if w["before_kill"]:
        raise RuntimeError("the second consumer got a message before the first was killed")
    _check_count("waiter", w["count"], hold)
    return {
        "first_ms": (w["t_first"] - t_kill) * 1e3,
        "all_ms": (w["t_all"] - t_kill) * 1e3,
    }, {"held": hold, "size": s.size}


def _w9_precheck(system: str, settings: Settings) -> None:
    if system != "brokerd":
        raise Skip(SKIPPED, "the blaster speaks brokerd's wire protocol")


async def w9(ctx: RunContext) -> Result:
    s = ctx.settings
    heavy = await ctx.fresh_queue("heavy")
    light_queue = await ctx.fresh_queue("light")
    blaster = spawn(
        "blaster",
        "blast",
        ctx.target,
        queue=heavy,
        size=W9_BLAST_SIZE,
        seconds=s.blast_seconds + 2 * W9_LEAD,
    )
    light = spawn(
        "light",
        "round_trips",
        ctx.target,
        queue=light_queue,
        size=s.size,
        seconds=s.blast_seconds,
        lead=W9_LEAD,
        alone=W9_ALONE,
    )
    res = await _run(
        ctx,
        [blaster, light],
        [Counter("blasted", blaster.counter), Counter("light", light.counter)],
    )
    b, li = res["blaster"], res["light"]
    lat = sorted(li["latencies_ns"])
    alone = sorted(li["alone_ns"])
    depth = await ctx.admin.depth(heavy)
    if depth != b["sent"]:
        raise RuntimeError(f"heavy queue holds {depth} messages after {b['sent']} confirmed")
    ms = 1e6
    return {"p50_ms": _percentile(lat, 50) / ms, "p99_ms": _percentile(lat, 99) / ms}, {
        "blast_seconds": s.blast_seconds,
        "light_round_trips": li["count"],
        "light_size": s.size,
        "max_ms": round(lat[-1] / ms, 3),
        "p999_ms": round(_percentile(lat, 99.9) / ms, 3),
        "alone_p50_ms": round(_percentile(alone, 50) / ms, 3),
        "alone_p99_ms": round(_percentile(alone, 99) / ms, 3),
        "blasted": b["sent"],
        "blast_size": W9_BLAST_SIZE,
        "blast_msg_per_s": round(b["sent"] / (b["t_sent"] - b["t_first"]), 1),
        "blast_unconfirmed_at_stop": b["sent"] - b["confirmed_at_stop"],
        "blast_confirm_wait_s": round(b["t_end"] - b["t_sent"], 3),
        "uvloop": li["uvloop"],
    }


def _w4_precheck(system: str, settings: Settings) -> None:
    _task_impl(system).check_available()


def _w4c_precheck(system: str, settings: Settings) -> None:
    from .systems import celery_peer

    celery_peer.check_available()
    if system == "brokerd":
        try:
            import brokerd_client.celery.transport  # noqa: F401
        except ImportError as exc:
            raise Skip(SKIPPED, f"brokerd's kombu transport is not importable ({exc})") from exc


WorkloadFn = Callable[["RunContext"], Awaitable[Result]]
Precheck = Callable[[str, "Settings"], None]

WORKLOADS: dict[str, WorkloadFn] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W4c": w4c,
    "W5": w5,
    "W6": w6,
    "W6b": w6b,
    "W7": w7,
    "W8": w8,
    "W9": w9,
}

# Run before any broker is started: raise Skip where a workload does not apply.
PRECHECKS: dict[str, Precheck] = {
    "W4": _w4_precheck,
    "W4c": _w4c_precheck,
    "W7": _w7_precheck,
    "W8": _w8_precheck,
    "W9": _w9_precheck,
}
