"""The context of the task run in progress: ``self.request`` in a bound task.

Kept in a ``ContextVar`` so it is right in every place a task can run: worker
threads (each has its own context), asyncio tasks (each copies the context
when created) and child processes.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Request", "current_request"]


@dataclass(slots=True)
class Request:
    """What a running task knows about its own invocation (Celery's names)."""

    id: str | None = None
    task: str = ""
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: How many times this task was retried before this run (0 on the first).
    retries: int = 0
    #: How many times the broker delivered this message (redeliveries count).
    attempt: int = 1
    is_eager: bool = False
    called_directly: bool = True
    hostname: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    #: (hard, soft) time limits in seconds, ``None`` when unlimited.
    time_limit: tuple[float | None, float | None] = (None, None)


#: The request of the task running in this context; a default one (called
#: directly) when no task is running.
current_request: ContextVar[Request | None] = ContextVar("brokerd_task_request", default=None)
