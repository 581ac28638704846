"""The start-up banner: what this worker is connected to and will run."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from ... import __version__
from ...url import parse_url
from ..schedules import broker_spec

if TYPE_CHECKING:
    from ..app import App

__all__ = ["banner"]


def _safe_url(url: str) -> str:
    parsed = parse_url(url)
    auth = "***@" if parsed.token else ""
    return f"brokerd://{auth}{parsed.host}:{parsed.port}"


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


def banner(
    app: App,
    *,
    hostname: str,
    queues: list[str],
    concurrency: int,
    prefetch: int,
    pool: str,
    schedules: list[str],
) -> str:
    conf = app.conf
    topo = app.router.topology
    lines = [
        "",
        f"brokerd-worker {hostname}  v{__version__} "
        f"(Python {platform.python_version()}, {platform.system()})",
        "=" * 72,
        f"  app:          {app.main or '__main__'}",
        f"  broker:       {_safe_url(app.broker_url)}",
        f"  results:      stored in brokerd, kept {_duration(conf.result_expires)}",
        f"  concurrency:  {concurrency} ({pool} pool), prefetch {prefetch} per queue",
        f"  acks:         {'late (after the task finishes)' if conf.task_acks_late else 'early'}",
        "",
        "[queues]",
    ]
    for name in queues:
        q = topo.queue(name)
        binding = topo.binding_of(q)
        exchange = topo.exchange_of(q)
        if binding is not None and exchange is not None:
            where = f"exchange={exchange.name}({exchange.type}) key={binding.routing_key}"
        else:
            where = f"exchange=(default) key={q.name}"
        lines.append(f"  . {name:<20} {where}  lease={topo.lease_of(q):g}s")
    lines += ["", "[tasks]"]
    for name in sorted(app.tasks):
        task = app.tasks[name]
        lines.append(f"  . {name}{'  (async)' if task.is_async else ''}")
    if schedules:
        lines += ["", "[schedules] (fired by the broker, once per due time)"]
        for name in schedules:
            entry = conf.beat_schedule[name]
            lines.append(f"  . {name}: {entry.task} {broker_spec(entry, conf.timezone)}")
    lines.append("")
    return "\n".join(lines)
