"""Task class hooks (Celery's ``Task.before_start`` … ``after_return``) and the
task-run signals, called around every run of a task.

``@app.task(base=MyTask)`` makes the task an instance of ``MyTask``, a
subclass of :class:`~brokerd_client.tasks.Task` (``app.Task`` is the same
class) that overrides some of these methods. They are called in the process
and thread that runs the task (the child with ``--pool processes``), in eager
mode too, in Celery's order::

    task_prerun signal
    before_start(task_id, args, kwargs)
    -- the task runs --
    on_success(retval, ...)          + task_success signal     (SUCCESS)
    on_retry(exc, ..., einfo)        + task_retry signal       (RETRY)
    on_failure(exc, ..., einfo)      + task_failure signal     (FAILURE)
    after_return(status, retval, task_id, args, kwargs, einfo)
    task_postrun signal

``self.request`` is the running invocation's inside every hook. A hook that
raises is logged and ignored: the task's outcome (and so its stored result)
stays what the task itself produced. For ``async def`` tasks a hook may be
``async def`` too (it is awaited); a plain hook is called on the loop.

Nothing here runs when the task's class overrides no hook and no task-run
signal has a receiver: :func:`execution.execute` tests one class attribute
and one flag.
"""

from __future__ import annotations

import inspect
import logging
import traceback as _tb
from collections.abc import Mapping
from typing import Any, ClassVar

from . import signals, states
from .exceptions import Retry
from .outcome import Outcome
from .request import Request

__all__ = ["HOOKS", "ExceptionInfo", "TaskHooks"]

log = logging.getLogger("brokerd_client.tasks.hooks")

#: The methods a task class may override.
HOOKS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


class ExceptionInfo:
    """Celery's ``einfo``: the exception, its type, its traceback object and
    its formatted traceback (``str(einfo)``)."""

    __slots__ = ("exception", "tb", "traceback", "type")

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.tb = exc.__traceback__
        self.traceback = "".join(_tb.format_exception(type(exc), exc, exc.__traceback__))

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


class TaskHooks:
    """The hook methods of :class:`~brokerd_client.tasks.Task`, all doing
    nothing; override them in a subclass used as ``base=``."""

    #: True on a class that overrides at least one hook (set per subclass).
    _hooked: ClassVar[bool] = False
    #: The task's name (set by :class:`~brokerd_client.tasks.Task`).
    name: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._hooked = any(getattr(cls, name) is not getattr(TaskHooks, name) for name in HOOKS)

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> Any:
        """Called before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> Any:
        """Called when the task returned ``retval``."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> Any:
        """Called when the task raised ``exc`` (and will not be retried)."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> Any:
        """Called when the task asked to be retried (``exc``: why)."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Any,
        kwargs: Any,
        einfo: ExceptionInfo | None,
    ) -> Any:
        """Called after the task ran, whatever the outcome: ``status`` is
        SUCCESS, FAILURE or RETRY; ``retval`` the value or the exception."""


def _call(task: TaskHooks, hook: str, *args: Any) -> Any:
    try:
        return getattr(task, hook)(*args)
    except Exception:
        log.exception("%s.%s of task %s raised; ignored", type(task).__name__, hook, task.name)
        return None


def _call_sync(task: TaskHooks, hook: str, *args: Any) -> None:
    """A hook of a plain function task: an ``async def`` hook cannot be awaited here."""
    value = _call(task, hook, *args)
    if inspect.iscoroutine(value):
        value.close()
        log.warning(
            "%s.%s is async def but task %s is not: it was not run (make the task async "
            "def, or the hook a plain def)",
            type(task).__name__,
            hook,
            task.name,
        )


async def _acall(task: TaskHooks, hook: str, *args: Any) -> None:
    value = _call(task, hook, *args)
    if inspect.isawaitable(value):
        try:
            await value
        except Exception:
            log.exception("%s.%s of task %s raised; ignored", type(task).__name__, hook, task.name)


def before(task: TaskHooks, req: Request, args: list[Any], kwargs: dict[str, Any]) -> None:
    """``task_prerun`` then ``before_start`` (sync tasks)."""
    if signals.task_prerun.receivers:
        signals.task_prerun.send(task, task_id=req.id, task=task, args=args, kwargs=kwargs)
    if task._hooked:
        _call_sync(task, "before_start", req.id, args, kwargs)


async def abefore(task: TaskHooks, req: Request, args: list[Any], kwargs: dict[str, Any]) -> None:
    """:func:`before` for ``async def`` tasks (an async hook is awaited)."""
    if signals.task_prerun.receivers:
        signals.task_prerun.send(task, task_id=req.id, task=task, args=args, kwargs=kwargs)
    if task._hooked:
        await _acall(task, "before_start", req.id, args, kwargs)


class _Ending:
    """What the hooks and signals after a run are given, computed once."""

    __slots__ = ("einfo", "exc", "retval", "state")

    def __init__(self, outcome: Outcome) -> None:
        self.state = state = outcome.state
        self.exc: BaseException | None = None
        self.einfo: ExceptionInfo | None = None
        if state == states.SUCCESS:
            self.retval = outcome.value
            return
        exc = outcome.exception
        if exc is None:  # pragma: no cover - the execute path always keeps it
            exc = RuntimeError(outcome.exc.exc_message if outcome.exc else state)
        self.einfo = ExceptionInfo(exc)
        if isinstance(exc, Retry) and exc.exc is not None:
            self.exc = exc.exc
        else:
            self.exc = exc
        self.retval = self.exc


def _hook_call(
    task: TaskHooks,
    req: Request,
    args: list[Any],
    kwargs: Mapping[str, Any],
    end: _Ending,
) -> tuple[str, tuple[Any, ...]] | None:
    if end.state == states.SUCCESS:
        return "on_success", (end.retval, req.id, args, kwargs)
    if end.state == states.RETRY:
        return "on_retry", (end.exc, req.id, args, kwargs, end.einfo)
    if end.state == states.FAILURE:
        return "on_failure", (end.exc, req.id, args, kwargs, end.einfo)
    return None


def _outcome_signal(
    task: TaskHooks, req: Request, args: list[Any], kwargs: dict[str, Any], end: _Ending
) -> None:
    if end.state == states.SUCCESS:
        if signals.task_success.receivers:
            signals.task_success.send(task, result=end.retval)
    elif end.state == states.RETRY:
        if signals.task_retry.receivers:
            signals.task_retry.send(
                task,
                request=req,
                reason=end.einfo.exception if end.einfo else None,
                einfo=end.einfo,
            )
    elif signals.task_failure.receivers:
        exc = end.exc
        signals.task_failure.send(
            task,
            task_id=req.id,
            exception=exc,
            args=args,
            kwargs=kwargs,
            traceback=exc.__traceback__ if exc is not None else None,
            einfo=end.einfo,
        )


def _postrun(
    task: TaskHooks, req: Request, args: list[Any], kwargs: dict[str, Any], end: _Ending
) -> None:
    if signals.task_postrun.receivers:
        signals.task_postrun.send(
            task,
            task_id=req.id,
            task=task,
            args=args,
            kwargs=kwargs,
            retval=end.retval,
            state=end.state,
        )


def after(
    task: TaskHooks,
    req: Request,
    args: list[Any],
    kwargs: dict[str, Any],
    outcome: Outcome,
) -> None:
    """The outcome's hook and signal, ``after_return``, ``task_postrun``."""
    end = _Ending(outcome)
    hooked = task._hooked
    if hooked:
        call = _hook_call(task, req, args, kwargs, end)
        if call is not None:
            _call_sync(task, call[0], *call[1])
    _outcome_signal(task, req, args, kwargs, end)
    if hooked:
        _call_sync(task, "after_return", end.state, end.retval, req.id, args, kwargs, end.einfo)
    _postrun(task, req, args, kwargs, end)


async def aafter(
    task: TaskHooks,
    req: Request,
    args: list[Any],
    kwargs: dict[str, Any],
    outcome: Outcome,
) -> None:
    """:func:`after` for ``async def`` tasks (async hooks are awaited)."""
    end = _Ending(outcome)
    hooked = task._hooked
    if hooked:
        call = _hook_call(task, req, args, kwargs, end)
        if call is not None:
            await _acall(task, call[0], *call[1])
    _outcome_signal(task, req, args, kwargs, end)
    if hooked:
        await _acall(task, "after_return", end.state, end.retval, req.id, args, kwargs, end.einfo)
    _postrun(task, req, args, kwargs, end)


def revoked(
    task: TaskHooks | None,
    request: Request | None,
    task_id: str,
    *,
    terminated: bool,
    expired: bool,
) -> None:
    """Send ``task_revoked`` (the worker calls this only when it has receivers)."""
    if request is None:
        request = Request(id=task_id, task=task.name if task is not None else "")
    signals.task_revoked.send(
        task, request=request, terminated=terminated, signum=None, expired=expired
    )
