"""``brokerd`` command: read settings, run the server until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from .config import ConfigError, load_config
from .malloc import pin_mmap_threshold
from .server import BrokerServer
from .storage import StorageOpenError


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
        server = BrokerServer(config)
        asyncio.run(_run(server))
    except StorageOpenError as exc:
        # Said in one line, without a traceback: the operator's fix is in it.
        print(f"brokerd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:
        print(f"brokerd: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
