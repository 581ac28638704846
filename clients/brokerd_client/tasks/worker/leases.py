"""Keeping the leases of held deliveries alive while their tasks run.

One timer for the whole worker, not one per task: each tick extends every
delivery that is a third of the way through its lease (back to its full
lease), then sleeps until the next one is due. Extends issued in one tick
share one frame, so a worker holding a thousand deliveries pays one frame per
tick, and a task may run for days on a queue whose lease is seconds: it is
redelivered only if the worker itself stops extending (it died, or lost its
connection).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from ...consumer import Delivery
from . import settle
from .job import Job

__all__ = ["LeaseKeeper"]

log = logging.getLogger("brokerd_client.tasks.worker")

#: Extend this long before a third of the lease is used, to absorb loop lag.
_SLACK = 0.005


class LeaseKeeper:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        held: dict[int, Job],
        on_lost: Callable[[Delivery], None],
    ) -> None:
        self._loop = loop
        self._held = held
        self._on_lost = on_lost
        self._handle: asyncio.TimerHandle | None = None
        self._when = math.inf
        self.extended = 0

    def track(self, job: Job) -> None:
        """Start keeping ``job``'s lease (call when it is received)."""
        d = job.delivery
        job.extend_at = d.lease_deadline - d.lease * (2.0 / 3.0)
        if job.extend_at < self._when:
            self._schedule(job.extend_at)

    def _schedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = self._loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._handle = None
        self._when = math.inf
        now = self._loop.time()
        soonest = math.inf
        for job in self._held.values():
            d = job.delivery
            if d.settled:
                continue
            if job.extend_at <= now + _SLACK:
                settle.extend(d, d.lease, self._on_lost)
                job.extend_at = now + d.lease / 3.0
                self.extended += 1
            soonest = min(soonest, job.extend_at)
        if soonest < math.inf:
            self._schedule(soonest)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = math.inf
