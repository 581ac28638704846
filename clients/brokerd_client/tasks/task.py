"""The task object ``@app.task`` makes of a function.

It stays callable (``add(2, 2)`` runs the function here and now, as in Celery)
and adds ``delay``/``apply_async`` to send it to a worker, ``retry`` for
bound tasks, and ``adelay``/``aapply_async`` for async code that must not
block its event loop while the broker confirms the message.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from ..checks import positive
from .backoff import backoff_delay
from .exceptions import MaxRetriesExceededError, Retry
from .hooks import TaskHooks
from .progress import TaskProgress
from .ratelimit import parse_rate
from .request import Request, current_request
from .result import AsyncResult, ResultApp

if TYPE_CHECKING:
    from .config import Settings
    from .result import EagerResult
    from .routing import Router

__all__ = ["TASK_OPTIONS", "Signature", "Task", "TaskApp", "TaskSender"]

P = ParamSpec("P")
R = TypeVar("R")

#: Keyword arguments ``@app.task(...)`` accepts; anything else is a TypeError.
TASK_OPTIONS = frozenset(
    {
        "name",
        "queue",
        "routing_key",
        "exchange",
        "priority",
        "max_retries",
        "default_retry_delay",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "autoretry_for",
        "dont_autoretry_for",
        "retry_kwargs",
        "time_limit",
        "soft_time_limit",
        "ignore_result",
        "bind",
        "serializer",
        "acks_late",
        "expires",
        "track_started",
        "rate_limit",
    }
)

#: ``apply_async`` keywords (besides args/kwargs).
SEND_OPTIONS = frozenset(
    {
        "countdown",
        "eta",
        "expires",
        "queue",
        "routing_key",
        "exchange",
        "priority",
        "task_id",
        "ignore_result",
        "time_limit",
        "soft_time_limit",
        "serializer",
        "compression",
        "headers",
        "wait_confirm",
        "retries",
        "parent_id",
        "root_id",
    }
)

_NOT_GIVEN: Any = object()


@dataclass(frozen=True, slots=True)
class Signature:
    """A task call not sent yet: ``add.s(2, 2)``; send many with ``app.send_many``."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def set(self, **options: Any) -> Signature:
        return Signature(self.task, self.args, self.kwargs, {**self.options, **options})


class TaskSender(Protocol):
    """Where a task's calls go: to a worker through the broker, or run here
    (eager mode, ``apply``). :class:`~brokerd_client.tasks.sending.Sender` is
    the implementation."""

    def send(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        task: Task[Any, Any] | None,
    ) -> AsyncResult: ...

    async def asend(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        task: Task[Any, Any] | None,
    ) -> AsyncResult: ...

    def send_many(
        self, signatures: Iterable[Signature], *, timeout: float | None = None
    ) -> list[AsyncResult]: ...

    def apply(
        self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], task_id: str | None
    ) -> EagerResult: ...


class TaskApp(ResultApp, Protocol):
    """What a task, and the sender its calls go through, use of their app.

    :class:`~brokerd_client.tasks.App` is the implementation. Naming a
    protocol here instead of importing App keeps every arrow between them
    pointing from the app to its tasks: the app imports this module, sending
    and results; none of them imports the app.
    """

    @property
    def conf(self) -> Settings: ...

    @property
    def router(self) -> Router: ...

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]: ...

    @property
    def sender(self) -> TaskSender: ...

    def gen_task_name(self, fn: Callable[..., Any]) -> str: ...

    def signature(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        immutable: bool = False,
        **options: Any,
    ) -> Any:
        """A canvas signature (:class:`~brokerd_client.tasks.Signature`): the
        app makes it, so this module needs no import of the canvas."""
        ...


class Task(TaskHooks, TaskProgress, Generic[P, R]):
    """A registered task. Made by ``@app.task``; see the module docstring.

    Subclass it (``base=``) to override the hooks of :mod:`.hooks`."""

    def __init__(self, app: TaskApp, fn: Callable[..., Any], options: Mapping[str, Any]) -> None:
        unknown = set(options) - TASK_OPTIONS
        if unknown:
            raise TypeError(
                f"@app.task got unknown options {sorted(unknown)}; allowed: {sorted(TASK_OPTIONS)}"
            )
        self.app = app
        self.fn = fn
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self.is_async = inspect.iscoroutinefunction(fn)
        self.name: str = options.get("name") or app.gen_task_name(fn)
        self.bind: bool = bool(options.get("bind", False))
        self.queue: str | None = options.get("queue")
        self.routing_key: str | None = options.get("routing_key")
        self.exchange: str | None = options.get("exchange")
        self.priority: int | None = options.get("priority")
        max_retries = options.get("max_retries", 3)
        if max_retries is not None and (type(max_retries) is not int or max_retries < 0):
            raise ValueError(f"max_retries must be an int >= 0 or None, got {max_retries!r}")
        self.max_retries: int | None = max_retries
        self.default_retry_delay: float | None = positive(
            "default_retry_delay", options.get("default_retry_delay")
        )
        backoff = options.get("retry_backoff", False)
        if backoff is not True and backoff is not False:
            positive("retry_backoff", backoff, allow_none=False)
        self.retry_backoff: bool | float = backoff
        self.retry_backoff_max: float = positive(
            "retry_backoff_max", options.get("retry_backoff_max", 600)
        )
        self.retry_jitter: bool = bool(options.get("retry_jitter", True))
        self.autoretry_for: tuple[type[BaseException], ...] = _exc_types(
            "autoretry_for", options.get("autoretry_for", ())
        )
        self.dont_autoretry_for: tuple[type[BaseException], ...] = _exc_types(
            "dont_autoretry_for", options.get("dont_autoretry_for", ())
        )
        retry_kwargs = dict(options.get("retry_kwargs") or {})
        bad = set(retry_kwargs) - {"max_retries", "countdown"}
        if bad:
            raise TypeError(f"retry_kwargs supports max_retries and countdown, not {sorted(bad)}")
        if "max_retries" in retry_kwargs:
            self.max_retries = retry_kwargs.pop("max_retries")
        self.retry_kwargs: dict[str, Any] = retry_kwargs
        self.time_limit: float | None = positive("time_limit", options.get("time_limit"))
        self.soft_time_limit: float | None = positive(
            "soft_time_limit", options.get("soft_time_limit")
        )
        if (
            self.time_limit is not None
            and self.soft_time_limit is not None
            and self.soft_time_limit >= self.time_limit
        ):
            raise ValueError("soft_time_limit must be below time_limit")
        self._ignore_result: bool | None = options.get("ignore_result")
        self.serializer: str | None = options.get("serializer")
        self.acks_late: bool | None = options.get("acks_late")
        self.expires: float | None = positive("expires", options.get("expires"))
        self.track_started: bool | None = options.get("track_started")
        #: Celery's form ("10/s") as given, and what it means per second.
        self.rate_limit: str | float | None = options.get("rate_limit")
        self.rate: float | None = parse_rate(self.rate_limit)

    def __repr__(self) -> str:
        return f"<@task: {self.name}{' (async)' if self.is_async else ''}>"

    # --- effective options (task option, else the app's setting) ---------------

    @property
    def ignore_result(self) -> bool:
        if self._ignore_result is not None:
            return self._ignore_result
        return self.app.conf.task_ignore_result

    @property
    def effective_time_limits(self) -> tuple[float | None, float | None]:
        conf = self.app.conf
        hard = self.time_limit if self.time_limit is not None else conf.task_time_limit
        soft = (
            self.soft_time_limit if self.soft_time_limit is not None else conf.task_soft_time_limit
        )
        return hard, soft

    @property
    def routing_options(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("queue", self.queue),
                ("routing_key", self.routing_key),
                ("exchange", self.exchange),
            )
            if v is not None
        }

    # --- running here ---------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function in this process, now (no broker involved)."""
        if self.bind:
            return self.fn(self, *args, **kwargs)  # type: ignore[no-any-return]
        return self.fn(*args, **kwargs)  # type: ignore[no-any-return]

    @property
    def run(self) -> Callable[..., Any]:
        return self.fn

    @property
    def request(self) -> Request:
        """The running invocation's context (a default one outside a worker)."""
        req = current_request.get()
        return req if req is not None else Request(task=self.name)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
    ) -> EagerResult:
        """Run here and now like a worker would (retries included); return an
        :class:`~brokerd_client.tasks.result.EagerResult`."""
        return self.app.sender.apply(self, list(args or ()), dict(kwargs or {}), task_id)

    # --- sending ----------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Send to a worker: ``apply_async(args, kwargs)``."""
        return self.app.sender.send(self.name, args, kwargs, {}, self)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send with options: ``countdown``/``eta`` (held by the broker),
        ``expires``, ``queue``, ``routing_key``, ``exchange``, ``priority``,
        ``task_id``, ``ignore_result``, ``time_limit``, ``soft_time_limit``,
        ``serializer``, ``compression``, ``headers``, and ``wait_confirm``
        (default True: return once the broker has durably stored it)."""
        if "link" in options or "link_error" in options:  # the canvas sends it
            sig = self.app.signature(self.name, tuple(args or ()), dict(kwargs or {}))
            return sig.apply_async(**options)  # type: ignore[no-any-return]
        return self.app.sender.send(self.name, args or (), kwargs or {}, options, self)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """``delay`` for async code: awaits the broker's confirm without
        blocking the event loop."""
        return await self.app.sender.asend(self.name, args, kwargs, {}, self)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        return await self.app.sender.asend(self.name, args or (), kwargs or {}, options, self)

    def s(self, *args: Any, **kwargs: Any) -> Any:
        """A :class:`~brokerd_client.tasks.Signature` of this task with these
        arguments, for the canvas (partial: a chain passes the previous result
        first) and ``send_many``."""
        return self.app.signature(self.name, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Any:
        """An immutable signature: a chain does not pass it the previous result."""
        return self.app.signature(self.name, args, kwargs, immutable=True)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        immutable: bool = False,
        **options: Any,
    ) -> Any:
        """``task.signature(args, kwargs, **options)``, as in Celery."""
        return self.app.signature(
            self.name, tuple(args or ()), dict(kwargs or {}), immutable=immutable, **options
        )

    subtask = signature

    def delay_many(
        self, calls: Iterable[Sequence[Any] | tuple[Sequence[Any], Mapping[str, Any]]]
    ) -> list[AsyncResult]:
        """Send many calls of this task, pipelined: one confirm wait for all.

        Each item is a tuple of positional args, or ``(args, kwargs)`` when it
        is a 2-tuple whose second item is a dict.
        """
        sigs = []
        for call in calls:
            if (
                isinstance(call, tuple)
                and len(call) == 2
                and isinstance(call[1], Mapping)
                and isinstance(call[0], list | tuple)
            ):
                sigs.append(Signature(self.name, tuple(call[0]), dict(call[1])))
            else:
                sigs.append(Signature(self.name, tuple(call)))
        return self.app.sender.send_many(sigs)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, self.app)

    # --- retrying -----------------------------------------------------------------

    def retry_countdown(self, retries: int) -> float:
        """The delay before retry number ``retries`` (0-based) when none was given."""
        if self.retry_backoff:
            base = 1.0 if self.retry_backoff is True else float(self.retry_backoff)
            return backoff_delay(retries, base, self.retry_backoff_max, self.retry_jitter)
        if "countdown" in self.retry_kwargs:
            return float(self.retry_kwargs["countdown"])
        if self.default_retry_delay is not None:
            return float(self.default_retry_delay)
        return self.app.conf.task_default_retry_delay

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = _NOT_GIVEN,
        throw: bool = True,
    ) -> Retry:
        """End this run and schedule another (bound tasks: ``self.retry(...)``).

        Raises :class:`Retry`, which the worker turns into a delayed message
        held by the broker. After ``max_retries`` retries it raises ``exc``
        (or :class:`MaxRetriesExceededError`) instead, so the failure is
        recorded. Called outside a worker (the function called directly), it
        raises ``exc`` if given.
        """
        req = self.request
        limit = self.max_retries if max_retries is _NOT_GIVEN else max_retries
        if req.called_directly:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(f"{self.name} called directly cannot be retried")
        if limit is not None and req.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"can't retry {self.name}[{req.id}] args:{req.args} kwargs:{req.kwargs}: "
                f"max_retries={limit} reached"
            )
        if countdown is None:
            if eta is not None:
                countdown = max(0.0, eta.timestamp() - time.time())
            else:
                countdown = self.retry_countdown(req.retries)
        signal = Retry(
            float(countdown),
            exc,
            list(args) if args is not None else None,
            dict(kwargs) if kwargs is not None else None,
        )
        if throw:
            raise signal
        return signal


def _exc_types(name: str, value: Any) -> tuple[type[BaseException], ...]:
    if isinstance(value, type):
        value = (value,)
    types = tuple(value or ())
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"{name} must hold exception classes, got {t!r}")
    return types
