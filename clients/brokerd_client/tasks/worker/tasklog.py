"""The lines a worker logs for each task at ``-l info``, in Celery's words.

``Task name[id] received``, ``Task name[id] succeeded in 0.001s: result``,
``Task name[id] retry: Retry in 10s: ...``, ``Task name[id] raised unexpected:
...`` (ERROR, with the traceback) and ``Discarding revoked task: name[id]``:
the shapes Celery's worker prints, so log searches, alerts and dashboards
written for a Celery fleet keep matching. One module owns the wording.

Cost: the worker asks ``enabled()`` once per event (a cached level check),
so below INFO the lines cost one boolean per task; at INFO two log records
per task (docs/tasks.md gives the measured price). A result is shown with
``repr`` cut to ``RESULT_REPR_MAX`` characters, as Celery cuts it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..outcome import ExcInfo
    from .job import Job

__all__ = ["RESULT_REPR_MAX", "TaskLog"]

log = logging.getLogger("brokerd_client.tasks.worker")

#: Longest result representation in a "succeeded" line.
RESULT_REPR_MAX = 1024


def short_repr(value: Any, limit: int = RESULT_REPR_MAX) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not fail the task's bookkeeping
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exc_text(exc: ExcInfo | None) -> str:
    """``ValueError('bad input')``, as Celery shows a task's exception."""
    if exc is None:
        return "unknown error"
    return f"{exc.exc_type}({exc.exc_message!r})"


class TaskLog:
    """Per-task log lines of one worker; ``info`` is read once, at start."""

    __slots__ = ("info",)

    def __init__(self) -> None:
        self.info = log.isEnabledFor(logging.INFO)

    def received(self, job: Job) -> None:
        log.info("Task %s[%s] received", job.task.name, job.task_id)

    def succeeded(self, job: Job, runtime: float, value: Any) -> None:
        log.info(
            "Task %s[%s] succeeded in %.6gs: %s",
            job.task.name,
            job.task_id,
            runtime,
            short_repr(value),
        )

    @staticmethod
    def failed(job: Job, exc: ExcInfo | None) -> None:
        """Always logged (ERROR), with the traceback."""
        trace = f"\n{exc.traceback.rstrip()}" if exc is not None and exc.traceback else ""
        log.error(
            "Task %s[%s] raised unexpected: %s%s", job.task.name, job.task_id, exc_text(exc), trace
        )

    @staticmethod
    def retry(job: Job, countdown: float, exc: ExcInfo | None) -> None:
        log.info(
            "Task %s[%s] retry: Retry in %.6gs: %s",
            job.task.name,
            job.task_id,
            countdown,
            exc_text(exc) if exc is not None else "retry requested",
        )

    @staticmethod
    def discarded(name: str, task_id: str) -> None:
        log.info("Discarding revoked task: %s[%s]", name, task_id)
