"""Celery-style tasks on brokerd: results, retries, schedules and revocation
kept by the broker itself.

::

    from brokerd_client.tasks import App

    app = App("proj", broker="brokerd://127.0.0.1:5673")
    app.config_from_object("proj.config")

    @app.task(name="SMS")
    def send_sms_code(mobile, code): ...

    send_sms_code.delay("13800000000", "1234")

Run workers with ``brokerd-worker -A proj.tasks -l info -c 4 -Q default``.
See docs/tasks.md for the full guide and a line-by-line port from Celery.
"""

from __future__ import annotations

from . import signals, states
from .app import App, current_app
from .canvas import GroupResult, Signature, chain, chord, group, maybe_signature, signature
from .canvasio import ChordError
from .exceptions import (
    ConfigurationError,
    ContentDisallowed,
    InvalidTaskMessage,
    MaxRetriesExceededError,
    NotRegistered,
    RemoteTaskError,
    Retry,
    SoftTimeLimitExceeded,
    TaskError,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from .hooks import ExceptionInfo
from .queues import Exchange, Queue
from .request import Request
from .result import AsyncResult, EagerResult
from .schedules import crontab
from .shared import shared_task
from .task import Task

__all__ = [
    "App",
    "AsyncResult",
    "ChordError",
    "ConfigurationError",
    "ContentDisallowed",
    "EagerResult",
    "ExceptionInfo",
    "Exchange",
    "GroupResult",
    "InvalidTaskMessage",
    "MaxRetriesExceededError",
    "NotRegistered",
    "Queue",
    "RemoteTaskError",
    "Request",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskError",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "WorkerLostError",
    "chain",
    "chord",
    "crontab",
    "current_app",
    "group",
    "maybe_signature",
    "shared_task",
    "signals",
    "signature",
    "states",
]
