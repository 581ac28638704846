"""Exceptions of the task layer.

Names follow Celery's so ``except SoftTimeLimitExceeded:`` ports unchanged.
They derive from :class:`TaskError` (not from ``BrokerError``): they describe
what happened to a *task*, not to a connection.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigurationError",
    "ContentDisallowed",
    "InvalidTaskMessage",
    "MaxRetriesExceededError",
    "NotRegistered",
    "RemoteTaskError",
    "Retry",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "WorkerLostError",
]


class TaskError(Exception):
    """Base class of the task layer's own errors."""


class ConfigurationError(TaskError, ValueError):
    """A setting is unknown or invalid. Raised when the app is configured or
    the worker starts, never replaced by a silent default."""


class Retry(TaskError):
    """Raised by ``Task.retry()`` to end this run and schedule another.

    The worker catches it; the next attempt is a delayed message held by the
    broker (``countdown`` seconds), never a sleep in the worker.
    """

    def __init__(
        self,
        countdown: float,
        exc: BaseException | None = None,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.countdown = countdown
        self.exc = exc
        #: Replacement arguments for the next run (``None``: the same ones).
        self.new_args = args
        self.new_kwargs = kwargs
        reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        super().__init__(f"retry in {countdown:g}s{reason}")


class MaxRetriesExceededError(TaskError):
    """``retry()`` was called after ``max_retries`` retries and no ``exc`` was given."""


class SoftTimeLimitExceeded(TaskError):
    """Raised *inside* the task when its soft time limit passes, so it can clean up."""


class TimeLimitExceeded(TaskError):
    """The hard time limit passed: the task was cancelled or its process killed."""


class TaskRevokedError(TaskError):
    """The task was revoked (``revoke()``), expired, or terminated while running."""


class NotRegistered(TaskError, KeyError):
    """No task of this name is registered in the app (or in the worker)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not registered"


class ContentDisallowed(TaskError):
    """A message's content type is not in ``accept_content`` (pickle never is)."""


class InvalidTaskMessage(TaskError, ValueError):
    """A delivered message is not a valid task message (see
    ``brokerd_client.tasks.message``): a header of the wrong type or out of
    range, or no usable task id.

    ``header`` names the header at fault. ``task_id`` is the message's task id
    when that one is usable: the worker then records this error as the task's
    FAILURE; without one it dead-letters the message with this error as the
    reason (``x-death-detail``).
    """

    def __init__(
        self, message: str, *, header: str | None = None, task_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.header = header
        self.task_id = task_id


class WorkerLostError(TaskError):
    """The process running the task died without reporting an outcome."""


class RemoteTaskError(TaskError):
    """A task failed with an exception type this process cannot rebuild.

    ``AsyncResult.get()`` raises a subclass named after the original type,
    carrying its message; ``exc_type``, ``exc_module`` and ``remote_traceback``
    say what really happened where.
    """

    exc_type: str = ""
    exc_module: str = ""
    remote_traceback: str = ""
