"""``brokerctl``: parse the command line, run one command, exit with
rabbitmqctl's codes (``exits.py``).

Everything that can be checked before connecting is (command, arguments,
columns, where the broker is, the token), so a usage error is reported as
one (64) even when no broker runs. Messages go to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from brokerd_protocol.definitions import summary as skipped_summary

from ..client import AsyncClient, connect, connect_unix
from ..errors import (
    AccessRefused,
    AuthenticationError,
    BrokerError,
    ConnectionLost,
    InternalError,
)
from . import definitions, output
from .commands import (
    DEFINITION_COMMANDS,
    PASSWORD_COMMANDS,
    QUEUE_COMMANDS,
    USAGE_LINES,
    Result,
    build,
)
from .exits import DATAERR, OK, SOFTWARE, TEMPFAIL, UNAVAILABLE, CtlError, usage
from .target import Target, check_socket, reachable, read_password, resolve

CLIENT_NAME = "brokerctl"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 as rabbitmqctl's do (not 2)."""

    def error(self, message: str) -> NoReturn:
        raise usage(message)


def build_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {line}" for line in USAGE_LINES.values())
    p = _Parser(
        prog="brokerctl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Administer a running brokerd (rabbitmqctl's command names).",
        epilog=f"commands:\n{commands}\n\nexit codes: 0 ok, 64 usage, 65 refused by the "
        "broker, 69 broker unreachable, 70 internal error, 75 timeout. See docs/brokerctl.md.",
    )
    p.add_argument(
        "--data-dir",
        help="the broker's data dir, where its control socket is (default ./data, or "
        "BROKERD_DATA_DIR)",
    )
    p.add_argument(
        "--url",
        help="a remote broker, brokerd://host:port (no token here: use --token-file)",
    )
    p.add_argument(
        "--token-file",
        help="file holding the broker's token for --url ('-' reads stdin; default "
        "BROKERD_TOKEN_FILE)",
    )
    p.add_argument(
        "--user",
        help="with --url: log in as this user (an administrator) instead of the token; its "
        "password from --password-file",
    )
    p.add_argument(
        "--password-file",
        help="file holding --user's password ('-' reads stdin; default BROKERD_PASSWORD_FILE)",
    )
    p.add_argument(
        "-p",
        "--vhost",
        default=None,
        help="the vhost: of set_permissions, clear_permissions, list_permissions (default /), "
        "purge_queue and delete_queue (default /); the list commands show only its rows "
        "(default: every vhost)",
    )
    p.add_argument("--formatter", choices=["table", "json"], default="table", help="output format")
    p.add_argument("-t", "--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    p.add_argument("command", help="the command to run")
    p.add_argument("args", nargs="*", help="its arguments")
    return p


async def _connect(
    target: Target,
    timeout: float,  # noqa: ASYNC109 - for connect()
    *,
    user: str | None = None,
    password: str | None = None,
    vhost: str = "/",
) -> AsyncClient:
    """Connect to ``target`` on ``vhost``; with ``user``, as that user rather
    than with the target's own credentials (``authenticate_user``)."""
    if target.socket is not None:
        check_socket(target.socket)
        with reachable(target.socket) as name:
            return await connect_unix(
                name,
                client_name=CLIENT_NAME,
                timeout=timeout,
                user=user,
                password=password,
                vhost=vhost,
            )
    assert target.url is not None
    if user is None:
        user, password = target.user, target.password
        token = target.token
    else:
        token = None
    return await connect(
        target.url,
        token=token,
        user=user,
        password=password,
        client_name=CLIENT_NAME,
        timeout=timeout,
        vhost=vhost,
    )


async def _authenticate(target: Target, args: argparse.Namespace, password: str) -> str:
    """``authenticate_user``: a connection of its own, as the user."""
    name = args.args[0]
    try:
        client = await _connect(
            target, args.timeout, user=name, password=password, vhost=args.vhost or "/"
        )
    except AccessRefused:
        # Refused the vhost, checked after the password: the password is right.
        client = None
    except AuthenticationError as exc:
        raise CtlError(f'user "{name}" could not authenticate: {exc}', DATAERR) from None
    if client is not None:
        await client.close()
    result = Result("message", {"user": name, "authenticated": True}, text="Success")
    return output.render(result, args.formatter)


def _read_definitions(path: str) -> Any:
    """The JSON document import_definitions reads ('-': stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise CtlError(f"cannot read definitions from {path}: {exc}", DATAERR) from None


async def _definitions(target: Target, args: argparse.Namespace) -> str:
    """export_definitions and import_definitions: the admin connection, and
    one more per vhost for what lives in vhosts (``definitions.py``)."""
    path = args.args[0]
    data: Any = getattr(args, "definitions", None)

    async def connect(vhost: str) -> AsyncClient:
        return await _connect(target, args.timeout, vhost=vhost)

    client = await _connect(target, args.timeout)
    try:
        async with asyncio.timeout(args.timeout):
            if args.command == "import_definitions":
                counts = await definitions.import_(client, connect, data)
                skipped = counts.get("not_imported")
                shown = ", ".join(
                    f"{n} {kind}" for kind, n in counts.items() if kind != "not_imported"
                )
                text = f"Imported definitions: {shown}"
                if skipped:
                    text += f". Not imported (no equivalent): {skipped_summary(skipped)}"
                result = Result("message", counts, text=text)
                return output.render(result, args.formatter)
            exported = await definitions.export(client, connect)
    finally:
        await client.close()
    document = json.dumps(exported, indent=2)
    if path == "-":
        return document
    # It holds password hashes: readable by its owner only, as the data dir.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(document + "\n")
    summary = {kind: len(items) for kind, items in exported.items()}
    text = f"Exported definitions to {path}: " + ", ".join(
        f"{n} {kind}" for kind, n in summary.items()
    )
    return output.render(Result("message", {"file": path, **summary}, text=text), args.formatter)


async def _run(target: Target, args: argparse.Namespace, password: str | None) -> str:
    if args.command == "authenticate_user":
        return await _authenticate(target, args, password or "")
    if args.command in DEFINITION_COMMANDS:
        return await _definitions(target, args)
    command = build(
        args.command, args.args, socket=target.socket, vhost=args.vhost, password=password
    )
    # The queue commands act in ``-p``'s vhost: the connection is made there.
    on = (args.vhost or "/") if args.command in QUEUE_COMMANDS else "/"
    client = await _connect(target, args.timeout, vhost=on)
    try:
        async with asyncio.timeout(args.timeout):
            result = await command(client)
    finally:
        await client.close()
    return output.render(result, args.formatter)


def _failure(exc: BaseException, target: Target) -> CtlError:
    """The one line and the exit code for a failed command."""
    where = target.describe()
    if isinstance(exc, CtlError):
        return exc
    if isinstance(exc, TimeoutError):
        return CtlError(f"no answer from brokerd at {where} in time (--timeout)", TEMPFAIL)
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, ConnectionLost) and isinstance(exc.__cause__, AuthenticationError)
    ):
        return CtlError(
            f"brokerd at {where} refused the token: {exc} (check --token-file, or --user and "
            "--password-file)",
            UNAVAILABLE,
        )
    if isinstance(exc, ConnectionLost):
        return CtlError(f"cannot talk to brokerd at {where}: {exc}", UNAVAILABLE)
    if isinstance(exc, InternalError):
        return CtlError(f"brokerd failed: {exc}", SOFTWARE)
    if isinstance(exc, BrokerError):
        return CtlError(str(exc), DATAERR)
    return CtlError(f"brokerctl failed: {type(exc).__name__}: {exc}", SOFTWARE)


def run(argv: list[str] | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run brokerctl; (exit code, stdout, stderr). ``main`` prints them."""
    env = dict(os.environ) if env is None else env
    target = Target()
    try:
        args = build_parser().parse_intermixed_args(argv)
        if args.timeout <= 0:
            raise usage("--timeout must be more than 0 seconds")
        target = resolve(
            args.data_dir, args.url, args.token_file, env, args.user, args.password_file
        )
        # Checked before connecting: a usage error is one even with no broker.
        build(args.command, args.args, socket=target.socket, vhost=args.vhost)
        password = None
        if args.command in PASSWORD_COMMANDS:
            password = read_password(f"Password for {args.args[0]}: ")
        if args.command == "import_definitions":
            args.definitions = _read_definitions(args.args[0])
        text = asyncio.run(_run(target, args, password))
    except Exception as exc:
        failure = _failure(exc, target)
        return failure.code, "", f"Error: {failure.message}\n"
    return OK, text + "\n" if text else "", ""


def main(argv: list[str] | None = None) -> None:
    code, out, err = run(argv)
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    raise SystemExit(code)
