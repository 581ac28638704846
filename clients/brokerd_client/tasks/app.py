"""The task application: settings, the task registry, and sending tasks.

``App("proj", broker="brokerd://127.0.0.1:5673")`` is cheap: nothing connects
until the first task is sent or a result is read. Sending from ordinary
(threaded) code uses one blocking, thread-safe :class:`~brokerd_client.Client`
per app; async code (``await task.adelay()``, ``await result.wait()``) uses one
:class:`~brokerd_client.AsyncClient` per event loop; code running inside a
worker reuses the worker's own connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, overload

from ..client import AsyncClient, connect
from ..sync import Client
from .config import Settings
from .control import Control
from .eager import apply_eagerly, apply_eagerly_async
from .exceptions import ConfigurationError, NotRegistered
from .producer import Declared, TaskMessage, build_message, declare_async, declare_sync
from .result import AsyncResult
from .routing import Router
from .task import Signature, Task

__all__ = ["App", "WorkerHook", "current_app"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_BROKER = "brokerd://localhost:5673"

_current: App | None = None

log = logging.getLogger("brokerd_client.tasks")


def _log_unconfirmed(name: str, task_id: str) -> Callable[[concurrent.futures.Future[bool]], None]:
    def done(fut: concurrent.futures.Future[bool]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("task %s[%s] was not sent: %s", name, task_id, fut.exception())

    return done


def current_app() -> App:
    """The most recently created app (what ``AsyncResult(id)`` uses without ``app=``)."""
    if _current is None:
        raise RuntimeError("no brokerd_client.tasks.App has been created yet")
    return _current


class WorkerHook(Protocol):
    """What a worker lends its app while it runs, so tasks sending tasks reuse
    the worker's connection and the worker acks only after those sends are
    confirmed (no child task is lost if the broker crashes in between)."""

    loop: asyncio.AbstractEventLoop
    client: AsyncClient
    declared: Declared

    def publish(self, messages: list[TaskMessage]) -> None: ...


@dataclass
class _LoopClient:
    loop: asyncio.AbstractEventLoop
    lock: asyncio.Lock
    client: AsyncClient | None = None
    declared: Declared = field(default_factory=Declared)


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
        global _current
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
        self.control = Control(self)
        self._router: Router | None = None
        self._discover: list[tuple[list[str] | Callable[[], Iterable[str]], str]] = []
        self._lock = threading.Lock()
        self._producer: Client | None = None
        self._producer_declared = Declared()
        self._loop_clients: dict[int, _LoopClient] = {}
        self._worker_hook: WorkerHook | None = None
        _current = self

    def __repr__(self) -> str:
        return f"<App {self.main or '__main__'} tasks={len(self.tasks)}>"

    # --- configuration ----------------------------------------------------------------

    @property
    def broker_url(self) -> str:
        return self.conf.broker_url or DEFAULT_BROKER

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

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            return self.register(Task(self, func, options))

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
        **options: Any,
    ) -> Signature:
        return Signature(name, tuple(args), dict(kwargs or {}), options)

    # --- sending -------------------------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a task by name (it need not be registered in this process)."""
        return self._send(name, args or (), kwargs or {}, options, self.tasks.get(name))

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        return await self._asend(name, args or (), kwargs or {}, options, self.tasks.get(name))

    def _worker_loop_hook(self) -> WorkerHook | None:
        """The worker hook if we are running on the worker's event loop."""
        hook = self._worker_hook
        if hook is None:
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return hook if running is hook.loop else None

    def _eager_task(self, name: str, task: Task[Any, Any] | None) -> Task[Any, Any]:
        if task is None:
            task = self.tasks.get(name)
        if task is None:
            raise NotRegistered(f"task {name!r} is not registered (task_always_eager is on)")
        return task

    def _send(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        task: Task[Any, Any] | None,
    ) -> AsyncResult:
        if self.conf.task_always_eager:
            return apply_eagerly(
                self._eager_task(name, task), list(args), dict(kwargs), options.get("task_id")
            )
        tm = build_message(self, self.router, name, args, kwargs, options, task)
        hook = self._worker_loop_hook()
        if hook is not None:
            hook.publish([tm])
            return AsyncResult(tm.task_id, self)
        client = self.producer_client
        declare_sync(client, self.router.topology, self._producer_declared, tm.route)
        if options.get("wait_confirm", True):
            client.publish_message(tm.message)
        else:
            sent = client.publish_message_nowait(tm.message)
            sent.add_done_callback(_log_unconfirmed(name, tm.task_id))
        return AsyncResult(tm.task_id, self)

    async def _asend(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        task: Task[Any, Any] | None,
    ) -> AsyncResult:
        if self.conf.task_always_eager:
            return await apply_eagerly_async(
                self._eager_task(name, task), list(args), dict(kwargs), options.get("task_id")
            )
        tm = build_message(self, self.router, name, args, kwargs, options, task)
        client, declared = await self._loop_client()
        await declare_async(client, self.router.topology, declared, tm.route)
        await client.publish_many([tm.message])
        return AsyncResult(tm.task_id, self)

    def send_many(
        self, signatures: Iterable[Signature], *, timeout: float | None = None
    ) -> list[AsyncResult]:
        """Send many task calls pipelined, waiting once for all confirms.

        The bulk path for producers (and benchmarks): messages share socket
        writes and the broker commits them in groups. Raises the first
        failure after all were settled (see ``AsyncClient.publish_many``).
        """
        sigs = list(signatures)
        if self.conf.task_always_eager:
            return [self._send(s.task, s.args, s.kwargs, s.options, None) for s in sigs]
        router = self.router
        built = [
            build_message(self, router, s.task, s.args, s.kwargs, s.options, self.tasks.get(s.task))
            for s in sigs
        ]
        hook = self._worker_loop_hook()
        if hook is not None:
            hook.publish(built)
            return [AsyncResult(tm.task_id, self) for tm in built]
        client = self.producer_client
        for route in {tm.route for tm in built}:
            declare_sync(client, router.topology, self._producer_declared, route)
        client.publish_many([tm.message for tm in built], timeout=timeout)
        return [AsyncResult(tm.task_id, self) for tm in built]

    async def asend_many(self, signatures: Iterable[Signature]) -> list[AsyncResult]:
        """:meth:`send_many` for async code."""
        sigs = list(signatures)
        router = self.router
        built = [
            build_message(self, router, s.task, s.args, s.kwargs, s.options, self.tasks.get(s.task))
            for s in sigs
        ]
        client, declared = await self._loop_client()
        for route in {tm.route for tm in built}:
            await declare_async(client, router.topology, declared, route)
        await client.publish_many(tm.message for tm in built)
        return [AsyncResult(tm.task_id, self) for tm in built]

    # --- results ---------------------------------------------------------------------------

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, self)

    # --- connections -------------------------------------------------------------------------

    @property
    def producer_client(self) -> Client:
        """The app's blocking client (created on first use; thread-safe)."""
        client = self._producer
        if client is None:
            with self._lock:
                client = self._producer
                if client is None:
                    conf = self.conf
                    client = self._producer = Client(
                        self.broker_url,
                        heartbeat=conf.broker_heartbeat,
                        connect_timeout=conf.broker_connection_timeout,
                        client_name=f"{self.main or 'app'}-producer",
                    )
        return client

    async def async_client(self) -> AsyncClient:
        """The app's connection for the running event loop."""
        return (await self._loop_client())[0]

    async def _loop_client(self) -> tuple[AsyncClient, Declared]:
        loop = asyncio.get_running_loop()
        hook = self._worker_hook
        if hook is not None and hook.loop is loop:
            return hook.client, hook.declared
        entry = self._loop_clients.get(id(loop))
        if entry is None or entry.loop is not loop:
            for key, old in list(self._loop_clients.items()):
                if old.loop.is_closed():
                    del self._loop_clients[key]
            entry = self._loop_clients[id(loop)] = _LoopClient(loop, asyncio.Lock())
        client = entry.client
        if client is None or client.is_closed:
            async with entry.lock:
                client = entry.client
                if client is None or client.is_closed:
                    conf = self.conf
                    client = entry.client = await connect(
                        self.broker_url,
                        heartbeat=conf.broker_heartbeat,
                        timeout=conf.broker_connection_timeout,
                        client_name=f"{self.main or 'app'}-async",
                    )
                    entry.declared = Declared()
        return client, entry.declared

    def close(self) -> None:
        """Close the blocking client (async clients: :meth:`aclose` on their loop)."""
        with self._lock:
            client, self._producer = self._producer, None
            self._producer_declared = Declared()
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this loop's async client."""
        entry = self._loop_clients.pop(id(asyncio.get_running_loop()), None)
        if entry is not None and entry.client is not None:
            await entry.client.close()
