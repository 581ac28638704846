"""Periodic schedules, registered with the broker (no beat process to run).

Every worker registers the app's ``beat_schedule`` at start-up with
``ScheduleSet``; identical re-registrations change nothing on the broker, and
the broker fires each due entry exactly once by publishing the task message
itself. So schedules keep firing while *any* broker is up, whether zero, one
or ten workers run, and never twice.

To register (or prune) schedules without starting a worker, or list them::

    python -m brokerd_client.tasks.beat -A proj.tasks [--prune] [--list]

``--list`` alone only reads: it registers nothing, so looking at a broker's
schedules (with an app whose ``beat_schedule`` differs, say) never changes them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from .declare import Declared, declare_async
from .exceptions import ConfigurationError
from .message import build_headers
from .schedules import broker_spec
from .serialization import content_type_of, encode_body

if TYPE_CHECKING:
    from ..client import AsyncClient
    from .app import App
    from .schedules import ScheduleEntry

__all__ = ["main", "register_schedules", "schedule_message"]


def schedule_message(app: App, entry: ScheduleEntry) -> dict[str, Any]:
    """The ``ScheduleSet`` arguments for ``entry``: where each firing is
    published and its body and headers. No task id: the broker gives every
    firing its own message id, which the worker uses as the task id."""
    task = app.tasks.get(entry.task)
    options = entry.options
    route = app.router.route(
        entry.task,
        queue=options.get("queue"),
        routing_key=options.get("routing_key"),
        exchange=options.get("exchange"),
        task_options=task.routing_options if task is not None else None,
    )
    conf = app.conf
    serializer = (task.serializer if task is not None else None) or conf.task_serializer
    body = encode_body(list(entry.args), entry.kwargs, serializer, conf.task_compression)
    expires_in = options.get("expires")
    headers = build_headers(
        task=entry.task,
        task_id=None,  # the broker names each firing
        content_type=content_type_of(serializer),
        compression=conf.task_compression,
        expires_in=None if expires_in is None else float(expires_in),
    )
    priority = options.get("priority", route.priority)
    if priority is None and task is not None:
        priority = task.priority
    return {
        "name": entry.name,
        "spec": broker_spec(entry, app.conf.timezone),
        "exchange": route.exchange,
        "routing_key": route.routing_key,
        "body": body,
        "headers": headers,
        "priority": priority or 0,
        "route": route,
    }


async def register_schedules(
    client: AsyncClient, app: App, declared: Declared | None = None
) -> list[str]:
    """Declare each entry's target queue and ``ScheduleSet`` it; returns the names."""
    declared = declared if declared is not None else Declared()
    names = []
    for entry in app.conf.beat_schedule.values():
        msg = schedule_message(app, entry)
        await declare_async(client, app.router.topology, declared, msg.pop("route"))
        try:
            await client.schedule_set(
                msg["name"],
                msg["spec"],
                msg["exchange"],
                msg["routing_key"],
                msg["body"],
                headers=msg["headers"],
                priority=msg["priority"],
            )
        except InvalidArgument as exc:
            raise ConfigurationError(
                f"beat_schedule entry {entry.name!r} ({msg['spec']}) was refused by the broker: "
                f"{exc.message}"
            ) from None
        names.append(entry.name)
    return names


async def _run(app: App, prune: bool, show: bool) -> None:
    from ..client import connect

    client = await connect(
        app.broker_url,
        client_name=f"{app.main or 'app'}-beat",
        ssl_context=app.clients.ssl_context(),
    )
    try:
        if show and not prune:
            _print_list(await client.schedule_list())
            return
        names = await register_schedules(client, app)
        print(f"registered {len(names)} schedule(s): {', '.join(names) or '-'}")
        if prune:
            for item in await client.schedule_list():
                if item["name"] not in names:
                    await client.schedule_delete(item["name"])
                    print(f"deleted schedule {item['name']!r} (not in beat_schedule)")
        if show:
            _print_list(await client.schedule_list())
    finally:
        await client.close()


def _print_list(items: list[dict[str, Any]]) -> None:
    if not items:
        print("no schedules")
    for item in items:
        print(
            f"{item['name']}: {item['spec']} -> {item['exchange'] or '(default)'}/"
            f"{item['routing_key']} next_run={item.get('next_run')} "
            f"last_run={item.get('last_run')}"
        )


def main(argv: list[str] | None = None) -> None:
    from .loader import load_app

    parser = argparse.ArgumentParser(
        prog="python -m brokerd_client.tasks.beat",
        description="Register an app's beat_schedule with brokerd (workers do this at start), "
        "or list the broker's schedules.",
    )
    parser.add_argument("-A", "--app", required=True, help="module[:app] holding the App")
    parser.add_argument("-b", "--broker", help="broker URL (overrides broker_url)")
    parser.add_argument(
        "--prune", action="store_true", help="delete broker schedules not in beat_schedule"
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the broker's schedules (alone: registers nothing, changes nothing)",
    )
    args = parser.parse_args(argv)
    try:
        app = load_app(args.app, args.broker)
        app.clients.ssl_context()  # the broker URL (setting or environment) and TLS, checked now
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    asyncio.run(_run(app, args.prune, args.list))


if __name__ == "__main__":
    main()
