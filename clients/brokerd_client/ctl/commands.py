"""brokerctl's commands: their names, arguments and what each asks the broker.

Names and argument order are rabbitmqctl's. Every command is one coroutine
over a connected ``AsyncClient``, returning what ``output`` prints. The list
commands page through the broker's replies (SPEC §17.3) until ``next`` is
nil, so a broker with more queues than one frame holds is listed whole.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brokerd_protocol import (
    AdminStatus,
    AdminStop,
    CloseConnection,
    Frame,
    ListBindings,
    ListConnections,
    ListConsumers,
    ListExchanges,
    ListQueues,
)

from ..client import AsyncClient
from .exits import DATAERR, CtlError, usage

#: Rows asked for per list request.
PAGE = 1000


@dataclass(frozen=True)
class Listing:
    """One ``list_*`` command: its frame, its columns and the default ones."""

    frame: Callable[[int, Any, int], Frame]
    columns: tuple[str, ...]
    default: tuple[str, ...]


LISTINGS: dict[str, Listing] = {
    "list_queues": Listing(
        ListQueues,
        (
            "name", "durable", "ready", "leased", "delayed", "consumers",
            "oldest_ready_age", "options",
        ),
        ("name", "durable", "ready", "leased", "delayed", "consumers", "oldest_ready_age"),
    ),
    "list_exchanges": Listing(
        ListExchanges, ("name", "type", "durable"), ("name", "type", "durable")
    ),
    "list_bindings": Listing(
        ListBindings, ("exchange", "queue", "routing_key"), ("exchange", "queue", "routing_key")
    ),
    "list_connections": Listing(
        ListConnections,
        (
            "id", "peer", "transport", "client_name", "connected_at", "consumers",
            "unsettled", "bytes_in", "bytes_out",
        ),
        (
            "id", "peer", "transport", "client_name", "connected_at", "consumers",
            "unsettled", "bytes_in", "bytes_out",
        ),
    ),
    "list_consumers": Listing(
        ListConsumers,
        ("connection", "consumer", "queue", "prefetch", "unsettled", "lease"),
        ("connection", "consumer", "queue", "prefetch", "unsettled", "lease"),
    ),
}  # fmt: skip


def list_columns(command: str, args: list[str]) -> tuple[str, ...]:
    """The columns a ``list_*`` command prints; unknown ones are a usage error."""
    spec = LISTINGS[command]
    for column in args:
        if column not in spec.columns:
            raise usage(
                f"{command}: unknown column {column!r}; the columns are {', '.join(spec.columns)}"
            )
    return tuple(args) or spec.default


async def fetch_all(client: AsyncClient, listing: Listing) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: Any = None
    while True:
        reply = await client.call(functools.partial(_page_request, listing, cursor))
        rows.extend(reply["items"])
        cursor = reply["next"]
        if cursor is None:
            return rows


def _page_request(listing: Listing, cursor: Any, req: int) -> Frame:
    return listing.frame(req, cursor, PAGE)


@dataclass(frozen=True)
class Result:
    """What a command produced: rows (lists), a map (status) or a message."""

    kind: str  # "rows", "map" or "message"
    value: Any
    columns: tuple[str, ...] = ()
    text: str = ""


Command = Callable[[AsyncClient], Awaitable[Result]]

#: Commands and how many arguments each takes: (fewest, most; None = any).
ARITY: dict[str, tuple[int, int | None]] = {
    "status": (0, 0),
    "stop": (0, 0),
    "purge_queue": (1, 1),
    "delete_queue": (1, 1),
    "close_connection": (2, 2),
    **{name: (0, None) for name in LISTINGS},
}

USAGE_LINES = {
    "status": "status",
    "stop": "stop",
    "list_queues": "list_queues [column ...]",
    "list_exchanges": "list_exchanges [column ...]",
    "list_bindings": "list_bindings [column ...]",
    "list_connections": "list_connections [column ...]",
    "list_consumers": "list_consumers [column ...]",
    "purge_queue": "purge_queue NAME",
    "delete_queue": "delete_queue NAME",
    "close_connection": "close_connection ID REASON",
}


def build(command: str, args: list[str], *, socket: Path | None) -> Command:
    """Check ``command`` and its arguments (before connecting) and return it."""
    if command not in ARITY:
        raise usage(f"unknown command {command!r}; the commands are {', '.join(ARITY)}")
    low, high = ARITY[command]
    if len(args) < low or (high is not None and len(args) > high):
        raise usage(f"usage: brokerctl {USAGE_LINES[command]}")
    if command in LISTINGS:
        listing = LISTINGS[command]
        columns = list_columns(command, args)

        async def run_list(client: AsyncClient) -> Result:
            return Result("rows", await fetch_all(client, listing), columns)

        return run_list
    if command == "status":

        async def run_status(client: AsyncClient) -> Result:
            return Result("map", await client.call(AdminStatus))

        return run_status
    if command == "stop":

        async def run_stop(client: AsyncClient) -> Result:
            reply = await client.call(AdminStop)
            pid = reply.get("pid") if isinstance(reply, dict) else None
            # The broker closes every connection, ours too, as it stops.
            await client.wait_closed()
            if socket is not None:
                await _gone(socket)
            return Result(
                "message", {"stopped": True, "pid": pid}, text=f"Stopped brokerd (pid {pid})"
            )

        return run_stop
    if command == "purge_queue":
        name = args[0]

        async def run_purge(client: AsyncClient) -> Result:
            count = await client.purge_queue(name)
            return Result(
                "message",
                {"queue": name, "purged": count},
                text=f"Purged {count} ready message(s) from queue {name!r}",
            )

        return run_purge
    if command == "delete_queue":
        name = args[0]

        async def run_delete(client: AsyncClient) -> Result:
            count = await client.delete_queue(name)
            return Result(
                "message",
                {"queue": name, "deleted": True, "messages": count},
                text=f"Deleted queue {name!r} with {count} message(s)",
            )

        return run_delete
    assert command == "close_connection"
    try:
        conn_id = int(args[0])
    except ValueError:
        raise CtlError(
            f"close_connection: connection id must be a number (see list_connections), "
            f"got {args[0]!r}",
            DATAERR,
        ) from None
    reason = args[1]

    async def run_close(client: AsyncClient) -> Result:
        await client.call(lambda req: CloseConnection(req, conn_id, reason))
        return Result(
            "message",
            {"connection": conn_id, "closed": True, "reason": reason},
            text=f"Closed connection {conn_id}: {reason}",
        )

    return run_close


async def _gone(path: Path) -> None:
    """Wait for the control socket to go: the broker removes it once stopped.

    There is no event to await for another process's exit, so this polls the
    file system (a stat of one path); the caller's ``--timeout`` bounds it.
    """
    # Another process ending is no event of ours: poll one stat.
    while os.path.lexists(path):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)
