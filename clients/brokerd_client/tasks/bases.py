"""Making a task object from ``@app.task(base=...)`` / ``@shared_task(base=...)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .task import TASK_OPTIONS, Task, TaskApp

__all__ = ["base_options", "make_task"]


def base_options(cls: type[Task[Any, Any]]) -> dict[str, Any]:
    """Task options given as class attributes of a ``base=`` class (Celery
    allows ``class MyTask(Task): max_retries = 5``); the ``@app.task``
    keywords win over them."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is Task or not issubclass(klass, Task):
            continue
        for name, value in vars(klass).items():
            # Not ``name`` (a base serves many tasks) nor ``bind`` (per function).
            if name in TASK_OPTIONS and name not in ("bind", "name") and not callable(value):
                if isinstance(value, property | classmethod | staticmethod):
                    continue
                found[name] = value
    return found


def make_task(
    app: TaskApp, fn: Callable[..., Any], options: Mapping[str, Any], base: type | None
) -> Task[Any, Any]:
    """The task object for ``@app.task(base=...)`` (``base`` None: ``Task``)."""
    if base is None:
        return Task(app, fn, options)
    if not (isinstance(base, type) and issubclass(base, Task)):
        raise TypeError(f"base= must be a subclass of brokerd_client.tasks.Task, got {base!r}")
    return base(app, fn, {**base_options(base), **options})
