"""An app's connections to the broker, opened on first use.

Sending from ordinary (threaded) code uses one blocking, thread-safe
:class:`~brokerd_client.Client` per app; async code (``await
task.adelay()``, ``await result.wait()``) uses one
:class:`~brokerd_client.AsyncClient` per event loop; code running on a
worker's loop uses the connection the worker lends (:class:`WorkerHook`).
Each connection comes with its :class:`~.declare.Declared`: what has been
declared on it, so the topology is declared once per connection.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..client import AsyncClient, connect
from ..sync import Client
from ..tls import from_celery
from ..url import parse_url
from .config import broker_url_from_env
from .declare import Declared

if TYPE_CHECKING:
    from .config import Settings
    from .message import TaskMessage

__all__ = ["DEFAULT_BROKER", "Clients", "WorkerHook"]

DEFAULT_BROKER = "brokerd://localhost:5673"

log = logging.getLogger("brokerd_client.tasks")


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


class Clients:
    """The connections of one app (see the module docstring).

    ``conf`` is read when a connection opens, so a ``broker_url`` set after
    the app was made (``brokerd-worker -b``) is the one used; ``name``
    prefixes the client names the broker shows.
    """

    def __init__(self, conf: Settings, name: str) -> None:
        self._conf = conf
        self._name = name
        self._lock = threading.Lock()
        self._producer: Client | None = None
        self._producer_declared = Declared()
        self._loop_clients: dict[int, _LoopClient] = {}
        #: The worker running on this process's loop, if any (set by the worker).
        self.worker: WorkerHook | None = None
        self._env_override_told = False

    @property
    def broker_url(self) -> str:
        """The ``broker_url`` setting (``App(broker=)``, ``-b``, config), else
        ``$BROKERD_URL``, else ``$CELERY_BROKER_URL``, else the default. An
        environment URL that the setting overrides is logged once, so the
        difference from Celery (where the variable wins) is never silent."""
        env = broker_url_from_env()
        url = self._conf.broker_url
        if url is None:
            return env[1] if env is not None else DEFAULT_BROKER
        if env is not None and env[1] != url and not self._env_override_told:
            self._env_override_told = True
            log.warning(
                "%s: using the app's broker_url setting; $%s, set to another URL, is ignored "
                "(a setting, App(broker=...) or -b wins over the environment)",
                self._name,
                env[0],
            )
        return url

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every connection of this app uses: from
        ``broker_use_ssl`` and a ``brokerds://`` URL (None: plain TCP)."""
        return from_celery(parse_url(self.broker_url), self._conf.broker_use_ssl)

    # --- blocking ------------------------------------------------------------------

    @property
    def producer(self) -> Client:
        """The blocking client (created on first use; thread-safe)."""
        client = self._producer
        if client is None:
            with self._lock:
                client = self._producer
                if client is None:
                    conf = self._conf
                    client = self._producer = Client(
                        self.broker_url,
                        heartbeat=conf.broker_heartbeat,
                        connect_timeout=conf.broker_connection_timeout,
                        client_name=f"{self._name}-producer",
                        ssl_context=self.ssl_context(),
                    )
        return client

    @property
    def producer_declared(self) -> Declared:
        """What has been declared through :attr:`producer`."""
        return self._producer_declared

    # --- async ---------------------------------------------------------------------

    def worker_on_this_loop(self) -> WorkerHook | None:
        """The worker, if we are running on its event loop."""
        hook = self.worker
        if hook is None:
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return hook if running is hook.loop else None

    async def async_client(self) -> AsyncClient:
        """The connection for the running event loop."""
        return (await self.on_this_loop())[0]

    async def on_this_loop(self) -> tuple[AsyncClient, Declared]:
        """The running loop's connection and what was declared on it: the
        worker's on its own loop, else one opened for this loop."""
        loop = asyncio.get_running_loop()
        hook = self.worker
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
                    conf = self._conf
                    client = entry.client = await connect(
                        self.broker_url,
                        heartbeat=conf.broker_heartbeat,
                        timeout=conf.broker_connection_timeout,
                        client_name=f"{self._name}-async",
                        ssl_context=self.ssl_context(),
                    )
                    entry.declared = Declared()
        return client, entry.declared

    # --- closing -------------------------------------------------------------------

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
