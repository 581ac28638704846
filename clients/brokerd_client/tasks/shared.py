"""``@shared_task``: a task defined without an app, for reusable packages and
Django apps.

::

    from brokerd_client.tasks import shared_task

    @shared_task
    def add(x, y):
        return x + y

    add.delay(2, 2)          # sent through the current app

The function is registered in every :class:`~brokerd_client.tasks.App`
created in this process, before or after the decorator ran, each with its
own :class:`~brokerd_client.tasks.Task` object (its options read that app's
settings). The object ``@shared_task`` returns stands for the task of the
*current* app — the one created last (``current_app()``) — so ``add.delay``,
``add.apply_async``, ``add.s``, ``add.name`` and ``add(2, 2)`` act through
it; ``add.bind_to(app)`` is the task of one particular app. Using it before
any app exists raises a ``RuntimeError`` that says so.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from .bases import make_task
from .result import AsyncResult, default_app
from .task import Task, TaskApp

__all__ = ["SharedTask", "bind_shared_tasks", "shared_task"]

P = ParamSpec("P")
R = TypeVar("R")


class App(TaskApp, Protocol):
    """What a shared task uses of an app (:class:`~brokerd_client.tasks.App`;
    a protocol, so that this module does not import the app, which imports it)."""

    def register(self, task: Task[Any, Any]) -> Task[Any, Any]: ...


#: Every shared task defined in this process, in definition order.
_shared: list[SharedTask[Any, Any]] = []
#: Every app created in this process (weakly: an app may be dropped).
_apps: weakref.WeakSet[App] = weakref.WeakSet()


class SharedTask(Generic[P, R]):
    """What ``@shared_task`` returns: the task of the current app."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.fn = fn
        self.options = options
        self.base: type | None = options.pop("base", None)
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self.__name__ = getattr(fn, "__name__", "task")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self._tasks: weakref.WeakKeyDictionary[App, Task[Any, Any]] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<@shared_task: {self.fn.__module__}.{self.__qualname__}>"

    def bind_to(self, app: App) -> Task[P, R]:
        """This task as registered in ``app`` (registering it there if needed)."""
        task = self._tasks.get(app)
        if task is None:
            task = app.register(make_task(app, self.fn, dict(self.options), self.base))
            self._tasks[app] = task
        return task

    def _current(self) -> Task[P, R]:
        try:
            app = default_app()
        except RuntimeError:
            raise RuntimeError(
                f"shared task {self.fn.__module__}.{self.__qualname__} was used before any "
                "brokerd_client.tasks.App was created: create the app first (for Django, "
                "import it in your project's __init__.py)"
            ) from None
        return self.bind_to(app)  # type: ignore[arg-type]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._current()(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        return self._current().delay(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("fn", "options", "base", "_tasks"):
            raise AttributeError(name)
        return getattr(self._current(), name)


@overload
def shared_task(fn: Callable[P, R], /) -> SharedTask[P, R]: ...


@overload
def shared_task(**options: Any) -> Callable[[Callable[..., Any]], SharedTask[Any, Any]]: ...


def shared_task(*args: Any, **options: Any) -> Any:
    """Define a task for every app (see the module docstring); takes the same
    keyword options as ``@app.task`` (``bind=True``, ``base=``, ``name=`` …)."""
    if len(args) > 1:
        raise TypeError("@shared_task takes one function, or keyword options only")

    def define(fn: Callable[..., Any]) -> SharedTask[Any, Any]:
        if not callable(fn):
            raise TypeError("@shared_task takes a function or keyword options")
        shared: SharedTask[Any, Any] = SharedTask(fn, dict(options))
        _shared.append(shared)
        for app in list(_apps):
            shared.bind_to(app)
        return shared

    if args:
        return define(args[0])
    return define


def bind_shared_tasks(app: App) -> None:
    """Register every shared task in ``app`` (each new App calls this)."""
    _apps.add(app)
    for shared in list(_shared):
        shared.bind_to(app)
