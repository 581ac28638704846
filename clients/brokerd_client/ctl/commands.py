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
    AddUser,
    AddVhost,
    AdminStatus,
    AdminStop,
    ClearPermissions,
    CloseConnection,
    DeleteUser,
    DeleteVhost,
    Frame,
    ListBindings,
    ListConnections,
    ListConsumers,
    ListExchanges,
    ListPermissions,
    ListQueues,
    ListUsers,
    ListVhosts,
    SetPermissions,
    UpdateUser,
)

from ..client import AsyncClient
from .exits import DATAERR, SOFTWARE, CtlError, usage

#: Rows asked for per list request.
PAGE = 1000


@dataclass(frozen=True)
class Listing:
    """One ``list_*`` command: its frame, its columns and the default ones."""

    frame: Callable[..., Frame]
    columns: tuple[str, ...]
    default: tuple[str, ...]
    #: The frame takes a vhost filter (``-p``; nil lists every vhost).
    per_vhost: bool = True


LISTINGS: dict[str, Listing] = {
    "list_queues": Listing(
        ListQueues,
        (
            "name", "durable", "ready", "leased", "delayed", "consumers",
            "oldest_ready_age", "options", "vhost",
        ),
        ("name", "durable", "ready", "leased", "delayed", "consumers", "oldest_ready_age"),
    ),
    "list_exchanges": Listing(
        ListExchanges, ("name", "type", "durable", "vhost"), ("name", "type", "durable")
    ),
    "list_bindings": Listing(
        ListBindings,
        ("exchange", "queue", "routing_key", "vhost"),
        ("exchange", "queue", "routing_key"),
    ),
    "list_connections": Listing(
        ListConnections,
        (
            "id", "peer", "transport", "client_name", "connected_at", "consumers",
            "unsettled", "unsettled_bytes", "bytes_in", "bytes_out", "user", "vhost",
        ),
        (
            "id", "peer", "transport", "client_name", "connected_at", "consumers",
            "unsettled", "bytes_in", "bytes_out",
        ),
    ),
    "list_consumers": Listing(
        ListConsumers,
        ("connection", "consumer", "queue", "prefetch", "unsettled", "lease", "vhost"),
        ("connection", "consumer", "queue", "prefetch", "unsettled", "lease"),
    ),
    "list_users": Listing(ListUsers, ("name", "tags"), ("name", "tags"), per_vhost=False),
    "list_vhosts": Listing(
        ListVhosts, ("name", "queues", "messages"), ("name",), per_vhost=False
    ),
}  # fmt: skip

#: Columns of list_permissions and list_user_permissions (rabbitmqctl's).
PERMISSION_COLUMNS = ("user", "vhost", "configure", "write", "read")
#: Commands that take a password, read from stdin or a prompt (never argv).
PASSWORD_COMMANDS = frozenset({"add_user", "change_password", "authenticate_user"})
#: Commands that act on one queue of ``-p``'s vhost, over a connection made there.
QUEUE_COMMANDS = frozenset({"purge_queue", "delete_queue"})
#: Commands that open a connection per vhost (``definitions.py``), run by ``main``.
DEFINITION_COMMANDS = frozenset({"export_definitions", "import_definitions"})


def list_columns(command: str, args: list[str]) -> tuple[str, ...]:
    """The columns a ``list_*`` command prints; unknown ones are a usage error."""
    spec = LISTINGS[command]
    for column in args:
        if column not in spec.columns:
            raise usage(
                f"{command}: unknown column {column!r}; the columns are {', '.join(spec.columns)}"
            )
    return tuple(args) or spec.default


async def fetch_all(
    client: AsyncClient, listing: Listing, vhost: str | None = None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: Any = None
    while True:
        reply = await client.call(functools.partial(_page_request, listing, vhost, cursor))
        rows.extend(reply["items"])
        cursor = reply["next"]
        if cursor is None:
            return rows


def _page_request(listing: Listing, vhost: str | None, cursor: Any, req: int) -> Frame:
    if listing.per_vhost:
        return listing.frame(req, cursor, PAGE, vhost)
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
    # The password commands accept a second argument only to refuse it, saying why.
    "add_user": (1, 2),
    "delete_user": (1, 1),
    "change_password": (1, 2),
    "authenticate_user": (1, 2),
    "set_user_tags": (1, None),
    "set_permissions": (4, 4),
    "clear_permissions": (1, 1),
    "list_permissions": (0, 0),
    "list_user_permissions": (1, 1),
    "add_vhost": (1, 1),
    "delete_vhost": (1, 1),
    "export_definitions": (1, 1),
    "import_definitions": (1, 1),
}

USAGE_LINES = {
    "status": "status",
    "stop": "stop",
    "list_queues": "list_queues [-p VHOST] [column ...]",
    "list_exchanges": "list_exchanges [-p VHOST] [column ...]",
    "list_bindings": "list_bindings [-p VHOST] [column ...]",
    "list_connections": "list_connections [-p VHOST] [column ...]",
    "list_consumers": "list_consumers [-p VHOST] [column ...]",
    "purge_queue": "purge_queue [-p VHOST] NAME",
    "delete_queue": "delete_queue [-p VHOST] NAME",
    "close_connection": "close_connection ID REASON",
    "add_user": "add_user USER  (password on stdin or at the prompt)",
    "delete_user": "delete_user USER",
    "change_password": "change_password USER  (password on stdin or at the prompt)",
    "authenticate_user": "authenticate_user USER  (password on stdin or at the prompt)",
    "set_user_tags": "set_user_tags USER [TAG ...]",
    "list_users": "list_users [column ...]",
    "set_permissions": "set_permissions [-p VHOST] USER CONFIGURE WRITE READ",
    "clear_permissions": "clear_permissions [-p VHOST] USER",
    "list_permissions": "list_permissions [-p VHOST]",
    "list_user_permissions": "list_user_permissions USER",
    "add_vhost": "add_vhost VHOST",
    "delete_vhost": "delete_vhost VHOST",
    "list_vhosts": "list_vhosts [column ...]",
    "export_definitions": "export_definitions FILE  ('-': stdout)",
    "import_definitions": "import_definitions FILE  ('-': stdin)",
}

NOT_IN_ARGV = (
    "brokerctl does not take a password on the command line: other local users can read "
    "command lines (ps, /proc/<pid>/cmdline). Give it on stdin (brokerctl {command} USER "
    "< FILE) or type it at the prompt"
)


def build(
    command: str,
    args: list[str],
    *,
    socket: Path | None,
    vhost: str | None = None,
    password: str | None = None,
) -> Command:
    """Check ``command`` and its arguments (before connecting) and return it.

    ``password`` is what the password commands set or check, read by the
    caller from stdin or a prompt; ``vhost`` is ``-p``'s (None: not given;
    the permission commands then mean ``"/"``, the lists every vhost)."""
    if command not in ARITY:
        raise usage(f"unknown command {command!r}; the commands are {', '.join(ARITY)}")
    low, high = ARITY[command]
    if len(args) < low or (high is not None and len(args) > high):
        raise usage(f"usage: brokerctl {USAGE_LINES[command]}")
    if command in PASSWORD_COMMANDS and len(args) > 1:
        raise usage(NOT_IN_ARGV.format(command=command))
    users = _user_command(command, args, vhost or "/", password or "")
    if users is not None:
        return users
    vhosts = _vhost_command(command, args)
    if vhosts is not None:
        return vhosts
    if command in LISTINGS:
        listing = LISTINGS[command]
        columns = list_columns(command, args)

        chosen = bool(args)

        async def run_list(client: AsyncClient) -> Result:
            rows = await fetch_all(client, listing, vhost)
            shown = columns
            # Rows of several vhosts (no -p): the default columns say whose.
            if (
                not chosen
                and "vhost" in listing.columns
                and len({r.get("vhost") for r in rows}) > 1
            ):
                shown = ("vhost", *columns)
            return Result("rows", rows, shown)

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


def _message(value: dict[str, Any], text: str) -> Result:
    return Result("message", value, text=text)


def _user_command(command: str, args: list[str], vhost: str, password: str) -> Command | None:
    """The user and permission commands (SPEC §17.6); None for any other."""
    if command == "authenticate_user" or command in DEFINITION_COMMANDS:
        # Run by ``main`` on connections of their own (as the user; one per
        # vhost): nothing to ask of the administrator's connection.
        async def run_nothing(client: AsyncClient) -> Result:
            raise CtlError("authenticate_user runs on its own connection", SOFTWARE)

        return run_nothing
    if command == "add_user":
        name = args[0]

        async def run_add(client: AsyncClient) -> Result:
            await client.call(lambda req: AddUser(req, name, password, []))
            return _message({"user": name, "added": True}, f'Added user "{name}"')

        return run_add
    if command == "delete_user":
        name = args[0]

        async def run_delete_user(client: AsyncClient) -> Result:
            await client.call(lambda req: DeleteUser(req, name))
            return _message({"user": name, "deleted": True}, f'Deleted user "{name}"')

        return run_delete_user
    if command == "change_password":
        name = args[0]

        async def run_change(client: AsyncClient) -> Result:
            await client.call(lambda req: UpdateUser(req, name, password=password))
            return _message(
                {"user": name, "password_changed": True}, f'Changed the password of "{name}"'
            )

        return run_change
    if command == "set_user_tags":
        name, tags = args[0], args[1:]

        async def run_tags(client: AsyncClient) -> Result:
            await client.call(lambda req: UpdateUser(req, name, tags=tags))
            shown = ", ".join(tags) if tags else "none"
            return _message({"user": name, "tags": tags}, f'Set the tags of "{name}" to {shown}')

        return run_tags
    if command == "set_permissions":
        name, configure, write, read = args

        async def run_set(client: AsyncClient) -> Result:
            await client.call(lambda req: SetPermissions(req, name, vhost, configure, write, read))
            return _message(
                {"user": name, "vhost": vhost, "configure": configure, "write": write,
                 "read": read},
                f'Set the permissions of "{name}" on vhost "{vhost}"',
            )  # fmt: skip

        return run_set
    if command == "clear_permissions":
        name = args[0]

        async def run_clear(client: AsyncClient) -> Result:
            await client.call(lambda req: ClearPermissions(req, name, vhost))
            return _message(
                {"user": name, "vhost": vhost, "cleared": True},
                f'Cleared the permissions of "{name}" on vhost "{vhost}"',
            )

        return run_clear
    if command in ("list_permissions", "list_user_permissions"):
        only_vhost = vhost if command == "list_permissions" else None
        only_user = args[0] if args else None
        columns = PERMISSION_COLUMNS[1:] if only_user is not None else PERMISSION_COLUMNS

        async def run_list_permissions(client: AsyncClient) -> Result:
            rows: list[dict[str, Any]] = []
            cursor: Any = None
            while True:
                page = await client.call(
                    functools.partial(_permission_page, only_vhost, only_user, cursor)
                )
                rows.extend(page["items"])
                cursor = page["next"]
                if cursor is None:
                    return Result("rows", rows, columns)

        return run_list_permissions
    return None


def _vhost_command(command: str, args: list[str]) -> Command | None:
    """add_vhost and delete_vhost (SPEC §17.7); None for any other."""
    if command == "add_vhost":
        name = args[0]

        async def run_add(client: AsyncClient) -> Result:
            await client.call(lambda req: AddVhost(req, name))
            return _message({"vhost": name, "added": True}, f'Adding vhost "{name}" ...')

        return run_add
    if command == "delete_vhost":
        name = args[0]

        async def run_delete(client: AsyncClient) -> Result:
            await client.call(lambda req: DeleteVhost(req, name))
            return _message({"vhost": name, "deleted": True}, f'Deleting vhost "{name}" ...')

        return run_delete
    return None


def _permission_page(vhost: str | None, user: str | None, cursor: Any, req: int) -> Frame:
    return ListPermissions(req, vhost, user, cursor, PAGE)
