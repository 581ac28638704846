"""``brokerd-worker inspect|control|events``: Celery's monitoring commands.

    brokerd-worker inspect ping -b brokerd://host:5673
    brokerd-worker -A proj inspect active            (the app's broker URL)
    brokerd-worker control pool_grow 2 -d worker@a:12
    brokerd-worker events                            (live, one line per event)

Subcommand names, arguments and output follow ``celery inspect`` /
``celery control`` / ``celery events --dump``: one block per worker that
answered, ``--json`` for scripts, and exit status 69 (EX_UNAVAILABLE) when no
worker answered within the timeout, so scripts and health checks written for
Celery keep working.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from typing import TYPE_CHECKING, Any

from ...errors import BrokerError
from ...url import redact
from ..exceptions import ConfigurationError
from ..remote import CONTROL_COMMANDS, EVENTS_EXCHANGE, INSPECT_COMMANDS, broadcast

if TYPE_CHECKING:
    from ..app import App

__all__ = ["SUBCOMMANDS", "main"]

SUBCOMMANDS = ("inspect", "control", "events")
#: sysexits: no worker answered (Celery exits with it too).
EX_UNAVAILABLE = 69
EX_USAGE = 64

#: control command -> its positional arguments (name, type).
_CONTROL_ARGS: dict[str, list[tuple[str, type]]] = {
    "shutdown": [],
    "pool_grow": [("n", int)],
    "pool_shrink": [("n", int)],
    "add_consumer": [("queue", str)],
    "cancel_consumer": [("queue", str)],
    "rate_limit": [("task_name", str), ("rate_limit", str)],
}


def _parser(sub: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"brokerd-worker {sub}")
    if sub != "events":
        commands = INSPECT_COMMANDS if sub == "inspect" else CONTROL_COMMANDS
        p.add_argument("command", choices=sorted(commands))
        p.add_argument("arguments", nargs="*", help="the command's arguments")
        p.add_argument(
            "-d", "--destination", help="comma-separated worker hostnames (default: all)"
        )
        p.add_argument(
            "-t", "--timeout", type=float, default=1.0, help="seconds to wait for answers"
        )
    p.add_argument("-A", "--app", help="module[:attribute] holding the App (its broker URL)")
    p.add_argument("-b", "--broker", help="broker URL")
    p.add_argument("-j", "--json", action="store_true", help="print JSON")
    return p


def _app(args: argparse.Namespace) -> App:
    from ..app import App
    from ..loader import load_app

    if args.app:
        return load_app(args.app, args.broker)
    return App("brokerd-worker", broker=args.broker) if args.broker else App("brokerd-worker")


def _arguments(command: str, given: list[str]) -> dict[str, Any]:
    spec = _CONTROL_ARGS.get(command, [])
    if command in ("pool_grow", "pool_shrink") and not given:
        given = ["1"]
    if len(given) != len(spec):
        names = " ".join(name for name, _ in spec) or "no arguments"
        raise ConfigurationError(f"{command} takes {names}")
    out: dict[str, Any] = {}
    for (name, kind), text in zip(spec, given, strict=True):
        try:
            out[name] = kind(text)
        except ValueError:
            raise ConfigurationError(f"{command}: {name} must be {kind.__name__}") from None
    return out


def _print_replies(replies: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(replies, indent=2, sort_keys=True, default=repr))
        return
    for hostname in sorted(replies):
        reply = replies[hostname]
        error = isinstance(reply, dict) and "error" in reply
        print(f"->  {hostname}: {'ERROR' if error else 'OK'}")
        if isinstance(reply, dict) and ("ok" in reply or "error" in reply):
            print(f"        {reply.get('ok', reply.get('error'))}")
        elif isinstance(reply, list):
            if not reply:
                print("    - empty -")
            for item in reply:
                if isinstance(item, dict) and "id" in item:
                    print(
                        f"    * {{'id': {item['id']!r}, 'name': {item.get('name')!r}, "
                        f"'args': {item.get('args')!r}, 'kwargs': {item.get('kwargs')!r}}}"
                    )
                else:
                    print(f"    * {item}")
        else:
            print(json.dumps(reply, indent=4, sort_keys=True, default=repr))
    n = len(replies)
    print(f"\n{n} node{'s' if n != 1 else ''} online.")


async def _ask(app: App, args: argparse.Namespace, command: str) -> dict[str, Any] | None:
    arguments = _arguments(command, args.arguments) if command in CONTROL_COMMANDS else {}
    if command not in CONTROL_COMMANDS and args.arguments:
        raise ConfigurationError(f"{command} takes no arguments")
    destination = (
        [d.strip() for d in args.destination.split(",") if d.strip()] if args.destination else None
    )
    client = await app.clients.async_client()
    return await broadcast(
        client,
        command,
        arguments,
        destination=destination,
        reply=True,
        timeout=args.timeout,
    )


def _line(event: dict[str, Any]) -> str:
    kind = event.get("type", "?")
    hostname = event.get("hostname", "?")
    stamp = event.get("timestamp")
    when = f"{stamp:.6f}" if isinstance(stamp, int | float) else "?"
    skip = {"type", "hostname", "timestamp", "utcoffset"}
    fields = ", ".join(f"{k}={event[k]!r}" for k in sorted(event) if k not in skip)
    return f"{when} {hostname} {kind}: {fields}"


async def _events(app: App, args: argparse.Namespace) -> None:
    client = await app.clients.async_client()
    await client.declare_exchange(EVENTS_EXCHANGE, "topic", durable=False)
    queue = f"brokerd.events.dump.{uuid.uuid4().hex[:12]}"
    await client.declare_queue(
        queue, durable=False, auto_delete=True, max_length=100_000, overflow="drop_head"
    )
    await client.bind(queue, EVENTS_EXCHANGE, "#")
    consumer = await client.consume(queue, prefetch=1000)
    print(f"-> brokerd-worker events: dumping events from {redact(app.broker_url)}", flush=True)
    async for delivery in consumer:
        await delivery.ack(wait=False)
        try:
            event = json.loads(delivery.body)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        print(json.dumps(event, sort_keys=True) if args.json else _line(event), flush=True)


def main(sub: str, argv: list[str]) -> None:
    args = _parser(sub).parse_args(argv)
    try:
        app = _app(args)
        app.clients.ssl_context()
        if sub == "events":
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_events(app, args))
            raise SystemExit(0)
        replies = asyncio.run(_ask(app, args, args.command))
    except (ConfigurationError, ImportError, ValueError) as exc:
        print(f"brokerd-worker {sub}: error: {exc}", file=sys.stderr)
        raise SystemExit(EX_USAGE) from None
    except (BrokerError, OSError) as exc:
        print(f"brokerd-worker {sub}: error: cannot reach the broker: {exc}", file=sys.stderr)
        raise SystemExit(EX_UNAVAILABLE) from None
    if not replies:
        print("Error: No nodes replied within time constraint.", file=sys.stderr)
        raise SystemExit(EX_UNAVAILABLE)
    _print_replies(replies, args.json)
