"""Orchestration: every selected workload on every selected system, one at a time.

For brokerd each workload gets a freshly started server on a new temporary data dir; for
the peers each workload deletes and declares its own uniquely named queue. A system that
cannot be reached is reported 'unreachable' and the run goes on; a workload that raises is
reported 'failed' with its error, never a crash of the harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .children import ChildFailed
from .clock import now
from .config import Settings
from .model import FAILED, OK, UNREACHABLE, Outcome, Skip
from .procs import BrokerdProcess, BrokerStartError, rabbitmq_pid, rss_of_pid
from .progress import Status
from .systems import DISPLAY, Adapter, Target, Unreachable, make_adapter
from .workloads import PRECHECKS, SPECS, WORKLOADS


@dataclass
class RunContext:
    """What a workload sees: settings, where the system is, an admin connection, and (for
    brokerd) the broker process started for this workload."""

    settings: Settings
    workload: str
    system: str
    target: Target
    admin: Adapter
    broker: BrokerdProcess | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    queues: list[str] = field(default_factory=list)
    extra_cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.workload} {DISPLAY.get(self.system, self.system)}"

    def queue_name(self, tag: str = "") -> str:
        name = f"bench-{self.workload.lower()}-{self.run_id}" + (f"-{tag}" if tag else "")
        self.queues.append(name)
        return name

    async def fresh_queue(self, tag: str = "") -> str:
        """A uniquely named queue, deleted (in case) and declared durable."""
        name = self.queue_name(tag)
        await self.admin.reset_queue(name)
        return name

    @property
    def rss_source(self) -> str:
        return {
            "brokerd": "/proc/<brokerd pid>/status VmRSS",
            "rabbitmq": "/proc/<beam.smp pid>/status VmRSS",
            "redis": "INFO memory used_memory_rss",
        }[self.system]

    async def server_rss(self) -> int:
        """The broker server's resident memory in bytes."""
        if self.system == "brokerd":
            assert self.broker is not None
            return self.broker.rss()
        if self.system == "rabbitmq":
            pid = rabbitmq_pid()
            if pid is None:
                raise Skip("skipped", "no local RabbitMQ beam.smp process to read RSS from")
            return rss_of_pid(pid)
        rss: Callable[[], Awaitable[int]] = getattr(self.admin, "memory_rss")  # noqa: B009
        return await rss()

    async def cleanup(self) -> None:
        for fn in self.extra_cleanup:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fn(), 60)
        if self.system != "brokerd":
            for queue in self.queues:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.admin.delete_queue(queue), 60)
        with contextlib.suppress(Exception):
            await self.admin.close()


class Runner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.status = Status()
        self.unreachable: dict[str, str] = {}
        self.system_info: dict[str, dict[str, Any]] = {}
        self.outcomes: list[Outcome] = []

    async def probe(self) -> None:
        """Check each selected system once; peers that cannot be reached are skipped."""
        for system in self.settings.systems:
            self.status.say(f"probing {DISPLAY[system]} ...")
            if system == "brokerd":
                try:
                    import brokerd_client  # noqa: F401
                except ImportError as exc:
                    self.system_info[system] = {"error": f"brokerd_client not importable: {exc}"}
                    continue
                import brokerd

                self.system_info[system] = {
                    "version": getattr(brokerd, "__version__", "?"),
                    "ack": "ack(wait=True)"
                    if self.settings.brokerd_ack == "wait"
                    else "ack(wait=False), fire-and-forget like AMQP basic.ack",
                    "started_as": "python -m brokerd --host 127.0.0.1 --port 0 "
                    "--data-dir TMP --port-file TMP/port (fresh per workload)"
                    + (
                        " --tls-cert --tls-key (TLS, brokerds://)"
                        if self.settings.brokerd_tls
                        else ""
                    )
                    + (
                        "; clients log in as a user with permission patterns (--brokerd-user)"
                        if self.settings.brokerd_user
                        else ""
                    )
                    + (
                        f" --store {_shown(self.settings.brokerd_store)} (PostgreSQL, a fresh "
                        "database per workload)"
                        if self.settings.brokerd_store
                        else ""
                    ),
                }
                continue
            try:
                adapter = make_adapter(Target(system, self.settings.urls[system]))
                await asyncio.wait_for(adapter.connect(), 15)
                try:
                    self.system_info[system] = await adapter.describe()
                finally:
                    await adapter.close()
            except (Unreachable, OSError, TimeoutError) as exc:
                self.unreachable[system] = str(exc) or type(exc).__name__
        self.status.clear()

    async def run(self) -> list[Outcome]:
        await self.probe()
        for workload in self.settings.workloads:
            for system in self.settings.systems:
                outcome = await self.run_one(workload, system)
                self.outcomes.append(outcome)
                self._announce(outcome)
        return self.outcomes

    def _announce(self, o: Outcome) -> None:
        from .report import describe_outcome

        print(f"{o.workload} {DISPLAY[o.system]:<9} {describe_outcome(o)}", file=sys.stderr)

    async def run_one(self, workload: str, system: str) -> Outcome:
        t0 = now()
        if system in self.unreachable:
            return Outcome(workload, system, UNREACHABLE, note=self.unreachable[system])
        ctx: RunContext | None = None
        broker: BrokerdProcess | None = None
        try:
            precheck = PRECHECKS.get(workload)
            if precheck is not None:
                precheck(system, self.settings)
            if system == "brokerd":
                broker = BrokerdProcess(keep_dir=self.settings.keep_temp)
                self.status.say(f"[{workload} brokerd] starting a fresh brokerd ...")
                await broker.astart()
                self.status.clear()
                target = Target(system, broker.url)
            else:
                target = Target(system, self.settings.urls[system])
            admin = make_adapter(target)
            await asyncio.wait_for(admin.connect(), 15)
            ctx = RunContext(self.settings, workload, system, target, admin, broker)
            values, details = await WORKLOADS[workload](ctx)
            if broker is not None and not broker.alive():
                raise RuntimeError(f"brokerd died during the workload: {broker.log_tail()}")
            return Outcome(workload, system, OK, values, details=details, elapsed_s=now() - t0)
        except Skip as skip:
            return Outcome(workload, system, skip.status, note=skip.reason, elapsed_s=now() - t0)
        except Unreachable as exc:
            status = FAILED if system == "brokerd" else UNREACHABLE
            return Outcome(workload, system, status, note=str(exc), elapsed_s=now() - t0)
        except ChildFailed as exc:
            note = str(exc)
            if broker is not None and not broker.alive():
                note += f" (brokerd exited: {broker.log_tail(5)})"
            return Outcome(
                workload,
                system,
                FAILED,
                note=note,
                details={"error": exc.detail},
                elapsed_s=now() - t0,
            )
        except BrokerStartError as exc:
            return Outcome(workload, system, FAILED, note=str(exc), elapsed_s=now() - t0)
        except Exception as exc:
            return Outcome(
                workload,
                system,
                FAILED,
                note=f"{type(exc).__name__}: {exc}",
                details={"error": traceback.format_exc()},
                elapsed_s=now() - t0,
            )
        finally:
            self.status.clear()
            if ctx is not None:
                await ctx.cleanup()
            if broker is not None:
                await asyncio.to_thread(broker.close)

    def meta(self) -> dict[str, Any]:
        try:
            import uvloop  # noqa: F401

            loop = "uvloop"
        except ImportError:
            loop = "asyncio"
        return {
            "settings": self.settings.as_json(),
            "host": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpus": _cpu_count(),
                "cpu_model": _cpu_model(),
                "event_loop": loop,
            },
            "systems": self.system_info,
            "unreachable": self.unreachable,
            "specs": {k: {"title": v.title, "measures": v.measures} for k, v in SPECS.items()},
        }


def _shown(url: str | None) -> str:
    from brokerd.storage.postgres import redact

    return redact(url or "")


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
