"""``brokerd`` command: read settings, build the broker, run it until SIGTERM/SIGINT.

``build_server`` is the one way to build a full broker (the core server plus
the task layer): the command uses it, and so do in-process users (tests,
``brokerd_client.tasks.testing``), so they run the broker the command runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable

from .admin import install as install_admin
from .admin.vhosts import install as install_vhost_admin
from .auth.admin import install as install_user_admin
from .clock import Clock
from .config import Config, ConfigError, load_config
from .malloc import pin_mmap_threshold
from .management import install as install_management
from .server import BrokerServer
from .storage import StorageOpenError
from .tasks import install as install_tasks
from .tls import TLSFileError


def build_server(
    config: Config,
    clock: Clock | None = None,
    *,
    auth_clock: Callable[[], float] = time.monotonic,
) -> BrokerServer:
    """The broker ``brokerd`` runs, not started: the server with the task layer,
    the admin frames and the user admin frames (brokerctl).

    ``clock`` (the core's) and ``auth_clock`` (the authentication throttle's)
    are for tests that drive time themselves.
    """
    server = BrokerServer(config, clock, auth_clock=auth_clock)
    tasks = install_tasks(server)
    admin = install_admin(server)
    server.user_admin = install_user_admin(server)
    server.vhost_admin = install_vhost_admin(server)
    server.management = install_management(server, admin, tasks)
    return server


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def _run(server: BrokerServer) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
    # SIGHUP reloads the TLS certificate for new connections (none are dropped).
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    await server.start()
    await server.serve_until_stopped()


def main(argv: list[str] | None = None) -> None:
    try:
        config, warnings = load_config(argv)
    except ConfigError as exc:
        print(f"brokerd: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("brokerd")
    for warning in warnings:
        log.warning("%s", warning)
    pin_mmap_threshold()
    loop_name = _install_uvloop()
    log.info("event loop: %s", loop_name)
    try:
        server = build_server(config)
        asyncio.run(_run(server))
        if server.fenced:
            # Another node took the database over; a supervisor should not
            # restart this one in a loop over it.
            raise SystemExit(3)
    except (StorageOpenError, TLSFileError, ConfigError) as exc:
        # Said in one line, without a traceback: the operator's fix is in it.
        print(f"brokerd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:
        print(f"brokerd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
