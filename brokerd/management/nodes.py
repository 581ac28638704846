"""RabbitMQ's ``/api/nodes`` row for the one brokerd process: what monitoring
scripts read of a node (memory, disk, file descriptors, sockets, uptime),
from brokerd's own monitors and the process itself.

Memory: brokerd's limit (``--memory-limit``) bounds the bodies of messages
held in memory, and its memory alarm compares those bytes with it; so
``mem_used`` is those bytes and ``mem_limit`` that limit, keeping
``mem_used >= mem_limit`` the alarm's own condition as in RabbitMQ. The
process's resident size is ``rss_bytes`` (brokerd's). Erlang's process
counts (``proc_used``) have no meaning here and are not given.

Reading it costs one ``/proc/self/fd`` listing (O(open files)) and the
status map the overview also builds; nothing is sampled in the background.
"""

from __future__ import annotations

import os
import resource
from typing import Any

from ..broker import Broker
from ..config import Config
from ..diskfree import DiskMonitor
from ..flow import FlowControl

#: Where this process's open file descriptors are listed (Linux).
FD_DIR = "/proc/self/fd"


def fd_used() -> int | None:
    """Open file descriptors of this process (None where /proc is missing)."""
    try:
        return len(os.listdir(FD_DIR))
    except OSError:
        return None


def fd_total() -> int | None:
    """The soft limit on open files (None if unlimited or unknown)."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def node_row(
    name: str,
    status: dict[str, Any],
    *,
    broker: Broker,
    config: Config,
    disk: DiskMonitor | None,
    flow: FlowControl,
    sockets: int,
) -> dict[str, Any]:
    """The node ``name`` as RabbitMQ's ``/api/nodes`` shows one, from
    ``status`` (the admin status map) and the live monitors."""
    memory = broker.memory
    return {
        "name": name,
        "type": "disc",
        "running": True,
        "being_drained": False,
        "os_pid": str(status["pid"]),
        "uptime": int(status["uptime"] * 1000),
        "processors": os.cpu_count() or 1,
        "mem_used": memory.used,
        "mem_limit": memory.limit,
        "mem_alarm": memory.full(),
        "disk_free": disk.free if disk is not None else None,
        "disk_free_limit": disk.limit if disk is not None else None,
        "disk_free_alarm": bool(disk is not None and disk.alarm),
        "fd_used": fd_used(),
        "fd_total": fd_total(),
        "sockets_used": sockets,
        "sockets_total": config.max_connections,
        "partitions": [],
        # brokerd's own
        "rss_bytes": status["memory"]["rss_bytes"],
        "store_alarm": bool(flow.store_alarm),
        "storage": status["storage"],
        "version": status["version"],
    }
