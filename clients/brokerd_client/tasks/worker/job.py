"""One received task message and everything the worker tracks while it runs."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..request import Request

if TYPE_CHECKING:
    from ...client import AsyncClient
    from ...consumer import Delivery
    from ..interrupt import Interruptible
    from ..message import TaskHeaders
    from ..task import Task

__all__ = ["Job"]


class Job:
    """A delivery being run (or waiting for a free slot).

    Slotted: the worker creates one per message on its hot path.
    """

    __slots__ = (
        "aio_task",
        "args",
        "child",
        "client",
        "compression",
        "delivery",
        "extend_at",
        "finished",
        "hard_limit",
        "ignore_result",
        "interruptible",
        "keep_final",
        "kill_reason",
        "kwargs",
        "meta",
        "pending",
        "request",
        "serializer",
        "soft_limit",
        "started",
        "started_at",
        "task",
        "task_id",
        "thread",
        "timers",
    )

    def __init__(
        self,
        delivery: Delivery,
        client: AsyncClient,
        task: Task[Any, Any],
        meta: TaskHeaders,
        serializer: str,
    ) -> None:
        self.delivery = delivery
        self.client = client
        self.task = task
        #: The message's headers, validated (``message.parse``).
        self.meta = meta
        self.task_id = meta.id
        self.serializer = serializer
        self.compression = meta.compression
        self.args: list[Any] = []
        self.kwargs: dict[str, Any] = {}
        self.request: Request | None = None
        self.ignore_result = False
        self.hard_limit: float | None = None
        self.soft_limit: float | None = None
        #: loop.time() at which the lease should next be extended.
        self.extend_at = 0.0
        self.started = False
        #: time.perf_counter() when it started (for "succeeded in ...s").
        self.started_at = 0.0
        self.finished = False
        #: Store its final state only if none is stored (SPEC §14.2 keep_final).
        self.keep_final = False
        #: Why the worker stopped it: "time_limit", "revoked", or None.
        self.kill_reason: str | None = None
        self.aio_task: asyncio.Task[Any] | None = None
        self.interruptible: Interruptible | None = None
        #: Ident of the pool thread running it (threads pool), or None.
        self.thread: int | None = None
        #: The child process running it (processes pool), or None.
        self.child: Any = None
        self.timers: list[asyncio.TimerHandle] | None = None
        #: Confirms of task messages this task sent; the ack waits for them.
        self.pending: list[asyncio.Future[Any]] | None = None

    def __repr__(self) -> str:
        return f"<Job {self.task.name}[{self.task_id}]>"

    @property
    def retries(self) -> int:
        return self.meta.retries

    def cancel_timers(self) -> None:
        timers = self.timers
        if timers:
            for handle in timers:
                handle.cancel()
            self.timers = None
