"""The task application: settings and the task registry.

``App("proj", broker="brokerd://127.0.0.1:5673")`` is cheap: nothing connects
until the first task is sent or a result is read. The app holds what is
configured (``conf``, routes, the tasks registered with ``@app.task``) and
the parts that act on it, each in its own module: ``app.clients`` (its
connections, :mod:`.clients`), ``app.sender`` (where task calls go,
:mod:`.sending`) and ``app.control`` (revocation, :mod:`.control`). The
sending and connection methods below are the Celery-style names for those
parts. Tasks and results see the app through the protocols their modules
declare (``TaskApp``, ``ResultApp``), so nothing below the app imports it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from ..client import AsyncClient
from ..sync import Client
from .bases import make_task
from .canvas import Signature as CanvasSignature
from .clients import Clients, WorkerHook
from .config import Settings
from .control import Control
from .exceptions import ConfigurationError
from .result import AsyncResult, default_app, set_default_app
from .routing import Router
from .sending import Sender
from .shared import bind_shared_tasks
from .task import Signature, Task

__all__ = ["App", "WorkerHook", "current_app"]

P = ParamSpec("P")
R = TypeVar("R")


def current_app() -> App:
    """The most recently created app (what ``AsyncResult(id)`` uses without ``app=``)."""
    app = default_app()
    if not isinstance(app, App):  # pragma: no cover - only App sets it
        raise RuntimeError("no brokerd_client.tasks.App has been created yet")
    return app


class App:
    """A task application; see the module docstring.

    ``main`` names the app (and prefixes task names defined in ``__main__``);
    ``broker`` is the broker URL; keyword ``settings`` are applied like
    :meth:`config_from_object` would.
    """

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        *,
        config_source: object | None = None,
        include: Sequence[str] | None = None,
        **settings: Any,
    ) -> None:
        self.main = main
        self.conf = Settings(on_change=self._conf_changed)
        if broker is not None:
            self.conf.update(broker_url=broker)
        if include:
            self.conf.update(include=list(include))
        if settings:
            self.conf.update(settings)
        if config_source is not None:
            self.config_from_object(config_source)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._router: Router | None = None
        self._discover: list[tuple[list[str] | Callable[[], Iterable[str]], str]] = []
        self.clients = Clients(self.conf, main or "app")
        self.control = Control(self.clients)
        self.sender = Sender(self)
        set_default_app(self)
        bind_shared_tasks(self)

    def __repr__(self) -> str:
        return f"<App {self.main or '__main__'} tasks={len(self.tasks)}>"

    # --- configuration ----------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        return self.clients.broker_url

    def config_from_object(
        self, obj: object, namespace: str | None = None, *, force: bool = True
    ) -> None:
        """Load settings from a module, object, dict or dotted path
        (``"proj.config"``); every name is validated now, see
        :meth:`Settings.from_object`. ``force`` is accepted for Celery
        compatibility: loading is always immediate here."""
        del force
        self.conf.from_object(obj, namespace)

    def _conf_changed(self) -> None:
        self._router = None

    @property
    def router(self) -> Router:
        router = self._router
        if router is None:
            router = self._router = Router(self.conf)
        return router

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.<related_name>`` for each package when the worker
        starts (or now, with ``force``). ``packages`` may be a callable (e.g.
        Django's installed apps). A package without that module is skipped; an
        error *inside* one is raised."""
        entry: list[str] | Callable[[], Iterable[str]] = (
            packages if callable(packages) else list(packages or ())
        )
        self._discover.append((entry, related_name))
        if force:
            self._import_discovered([(entry, related_name)])

    def import_modules(self) -> None:
        """Import ``imports``/``include`` modules and autodiscovered task modules
        (the worker calls this at start-up so every task is registered)."""
        for name in (*self.conf.imports, *self.conf.include):
            importlib.import_module(name)
        self._import_discovered(self._discover)

    @staticmethod
    def _import_discovered(
        entries: Iterable[tuple[list[str] | Callable[[], Iterable[str]], str]],
    ) -> None:
        for packages, related in entries:
            names = packages() if callable(packages) else packages
            for package in names:
                module = f"{package}.{related}"
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:
                    if exc.name != module:
                        raise

    # --- tasks ---------------------------------------------------------------------------

    def gen_task_name(self, fn: Callable[..., Any]) -> str:
        module = fn.__module__
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{fn.__name__}"

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, *, bind: Literal[True], **options: Any
    ) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...

    @overload
    def task(
        self, *, bind: Literal[False] = ..., **options: Any
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(self, *args: Any, bind: bool = False, **options: Any) -> Any:
        """Register a function (plain or ``async def``) as a task; see
        :data:`~brokerd_client.tasks.task.TASK_OPTIONS` for the options."""

        if len(args) > 1:
            raise TypeError("@app.task takes one function, or keyword options only")
        fn = args[0] if args else None
        options["bind"] = bind
        base = options.pop("base", None)

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            return self.register(make_task(self, func, options, base))

        if fn is not None:
            if not callable(fn):
                raise TypeError("@app.task takes a function or keyword options")
            return register(fn)
        return register

    def register(self, task: Task[Any, Any]) -> Task[Any, Any]:
        existing = self.tasks.get(task.name)
        if existing is not None and (
            existing.fn.__module__ != task.fn.__module__
            or existing.fn.__qualname__ != task.fn.__qualname__
        ):
            raise ConfigurationError(
                f"two different functions are registered as task {task.name!r}: "
                f"{existing.fn.__module__}.{existing.fn.__qualname__} and "
                f"{task.fn.__module__}.{task.fn.__qualname__}"
            )
        self.tasks[task.name] = task
        return task

    def signature(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        immutable: bool = False,
        **options: Any,
    ) -> CanvasSignature:
        """A signature of task ``name`` (it need not be registered here)."""
        return CanvasSignature(name, tuple(args), dict(kwargs or {}), options, immutable, self)

    # --- sending (app.sender) ------------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a task by name (it need not be registered in this process)."""
        return self.sender.send(name, args or (), kwargs or {}, options, self.tasks.get(name))

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        return await self.sender.asend(
            name, args or (), kwargs or {}, options, self.tasks.get(name)
        )

    def send_many(
        self, signatures: Iterable[Signature], *, timeout: float | None = None
    ) -> list[AsyncResult]:
        """Send many task calls pipelined, waiting once for all confirms.

        The bulk path for producers (and benchmarks): messages share socket
        writes and the broker commits them in groups. Raises the first
        failure after all were settled (see ``AsyncClient.publish_many``).
        """
        return self.sender.send_many(signatures, timeout=timeout)

    async def asend_many(self, signatures: Iterable[Signature]) -> list[AsyncResult]:
        """:meth:`send_many` for async code."""
        return await self.sender.asend_many(signatures)

    # --- results ---------------------------------------------------------------------------

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, self)

    # --- connections (app.clients) --------------------------------------------------------

    @property
    def producer_client(self) -> Client:
        """The app's blocking client (created on first use; thread-safe)."""
        return self.clients.producer

    async def async_client(self) -> AsyncClient:
        """The app's connection for the running event loop."""
        return await self.clients.async_client()

    def close(self) -> None:
        """Close the blocking client (async clients: :meth:`aclose` on their loop)."""
        self.clients.close()

    async def aclose(self) -> None:
        """Close this loop's async client."""
        await self.clients.aclose()


#: ``app.Task``: the task base class, as in Celery (``class MyTask(app.Task)``,
#: ``@app.task(base=app.Task)``); the same class as ``brokerd_client.tasks.Task``.
setattr(App, "Task", Task)  # noqa: B010 - not in the class body: it would shadow the type
