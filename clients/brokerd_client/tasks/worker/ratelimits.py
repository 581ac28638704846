"""Holding rate-limited tasks until the broker gives them a slot.

The limit is the fleet's, kept by the broker (SPEC §14.14): before a job of
a rate-limited task starts, the worker asks for the task name's next slot
and is told how long to wait. The job waits outside the pool (it takes no
concurrency slot, as in Celery), its lease kept alive like any held job's,
and joins the queue of jobs to start when its slot comes. Tasks without a
limit never ask: the path of an unlimited task is one dict lookup.

Which tasks are limited: the task's ``rate_limit``, else the app's
``task_default_rate_limit``, unless the broker has a limit of its own for
the name (``app.control.rate_limit``), which wins; the worker hears of those
through its "ratelimit" subscription. ``worker_disable_rate_limits`` turns
all of it off for this worker.

If asking fails (the connection is going away) the job starts at once: its
message is the broker's again anyway if the connection is lost, and a
failure to ask is no reason to lose a task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..ratelimit import parse_rate

if TYPE_CHECKING:
    from ..app import App
    from ..task import Task
    from .job import Job

log = logging.getLogger("brokerd_client.tasks.worker")


class RateGate:
    def __init__(
        self, app: App, loop: asyncio.AbstractEventLoop, release: Callable[[Job], None]
    ) -> None:
        self.loop = loop
        self.release = release
        self.enabled = not app.conf.worker_disable_rate_limits
        self.default = parse_rate(app.conf.task_default_rate_limit)
        #: task name -> the broker's own limit (per second).
        self.broker_limits: dict[str, float] = {}
        #: Jobs waiting for their slot.
        self.holding: set[Job] = set()
        self._asking: set[asyncio.Task[None]] = set()

    def own_rate(self, task: Task[..., object]) -> float | None:
        """The limit this worker knows for ``task``, or None if it is unlimited."""
        if not self.enabled:
            return None
        rate = task.rate if task.rate is not None else self.default
        if rate is None and task.name in self.broker_limits:
            return 0.0  # limited by the broker only: ask with no rate of our own
        return rate

    def admit(self, job: Job) -> bool:
        """Hold ``job`` until its slot if its task is limited; False if it is not."""
        rate = self.own_rate(job.task)
        if rate is None:
            return False
        self.holding.add(job)
        asking = self.loop.create_task(self._ask(job, rate))
        self._asking.add(asking)
        asking.add_done_callback(self._asking.discard)
        return True

    async def _ask(self, job: Job, rate: float) -> None:
        try:
            wait = await job.client.rate_acquire(job.task.name, rate)
        except Exception as exc:
            log.warning("cannot take a rate-limit slot for %r: %s; running it now", job, exc)
            wait = 0.0
        if wait > 0:
            self.loop.call_later(wait, self._due, job)
        else:
            self._due(job)

    def _due(self, job: Job) -> None:
        if job in self.holding:
            self.holding.discard(job)
            if not job.finished:
                self.release(job)

    def take_all(self) -> list[Job]:
        """The held jobs, no longer held (shutdown, a lost connection)."""
        jobs = list(self.holding)
        self.holding.clear()
        return jobs

    # --- the broker's limits (the "ratelimit" topic) -------------------------------

    def known(self, limits: Mapping[str, object]) -> None:
        """The limits in force when the worker subscribed."""
        self.broker_limits = {
            str(n): float(r) for n, r in limits.items() if isinstance(r, int | float) and r > 0
        }

    def changed(self, name: str, rate: object) -> None:
        if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
            self.broker_limits[name] = float(rate)
        else:
            self.broker_limits.pop(name, None)
