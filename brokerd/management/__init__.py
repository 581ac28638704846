"""The management plane: an HTTP API (RabbitMQ's paths and names) and a page,
served by the broker itself on ``--http-port`` (docs/management.md).

``install(server, ...)`` wires it into a server before ``start``: a tick hook
samples the rates, a listening hook opens the HTTP port once the broker's
state is restored, a stop hook closes it.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..auth import Verifier
from ..config import ConfigError, is_loopback
from ..tasks.extension import TaskExtension
from ..throttle import AuthThrottle
from .api import API, Host, StatusSource
from .auth import Gate
from .http import HTTPServer
from .rates import Rates

__all__ = ["DEFAULT_HTTP_PORT", "Management", "install"]

log = logging.getLogger("brokerd.management")

DEFAULT_HTTP_PORT = 15673


class Server(Host, Protocol):
    """What installing needs of the server (``BrokerServer``)."""

    @property
    def verifier(self) -> Verifier: ...

    @property
    def auth_throttle(self) -> AuthThrottle: ...

    @property
    def tick_hooks(self) -> list[Callable[[float], None]]: ...

    @property
    def listening_hooks(self) -> list[Callable[[], Awaitable[None]]]: ...

    @property
    def stop_hooks(self) -> list[Callable[[], None]]: ...


class Management:
    def __init__(self, server: Server, status: StatusSource, tasks: TaskExtension | None) -> None:
        self.server = server
        self.rates = Rates()
        self.gate = Gate(
            server.users, server.verifier, server.config.token, throttle=server.auth_throttle
        )
        self.api = API(server, self.gate, self.rates, status, tasks)
        self.http: HTTPServer | None = None

    @property
    def port(self) -> int | None:
        return self.http.port if self.http is not None else None

    def tick(self, now: float) -> None:
        broker = self.server.broker
        self.rates.tick(now, broker.counters, broker.queues)

    async def start(self) -> None:
        config = self.server.config
        port = config.http_port
        if port == -1:
            return
        host = config.http_host
        if not is_loopback(host) and not self.server.users.defined:
            raise ConfigError(
                f"refusing to serve the management API on {host!r} without users: add a "
                "user first (brokerctl add_user NAME --tags administrator), or bind 127.0.0.1"
            )
        http = HTTPServer(self.api.handle)
        try:
            await http.start(host, DEFAULT_HTTP_PORT if port is None else port)
        except OSError as exc:
            if port is None and exc.errno == errno.EADDRINUSE:
                # The default port, taken (another broker on this host): the
                # broker matters more than its console.
                log.warning(
                    "management API off: port %d is in use (set --http-port)", DEFAULT_HTTP_PORT
                )
                return
            raise
        self.http = http
        log.info("management API and page on http://%s:%d/", host, http.port)
        if config.port_file:
            _write_port(config.port_file + ".http", http.port)

    def close(self) -> None:
        if self.http is not None:
            self.http.close()


def _write_port(path: str, port: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def install(server: Server, status: StatusSource, tasks: TaskExtension | None = None) -> Management:
    """Wire the management plane into ``server`` (``brokerd.cli.build_server``)."""
    mgmt = Management(server, status, tasks)
    server.tick_hooks.append(mgmt.tick)
    server.listening_hooks.append(mgmt.start)
    server.stop_hooks.append(mgmt.close)
    return mgmt
