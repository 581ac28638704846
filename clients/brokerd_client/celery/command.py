"""``celery -A proj brokerd ...``: brokerd commands in Celery's CLI.

This module is also why ``brokerd://`` works in every ``celery`` command with
no user code: it is the ``celery.commands`` entry point ``brokerd``, which the
celery CLI imports at start-up, and importing it imports
:mod:`brokerd_client.celery`, which registers the ``brokerd`` scheme with
kombu (kombu has no entry point group for transports).

Commands:

* ``celery -A proj brokerd queues [-Q a,b]``: ready, leased, delayed and
  consumer counts of the app's task queues (or the queues named).
"""

from __future__ import annotations

from typing import Any

import click

from . import register

__all__ = ["brokerd"]

register()


@click.group(name="brokerd")
def brokerd() -> None:
    """brokerd: inspect the broker behind this Celery app."""


@brokerd.command(name="queues")
@click.option(
    "-Q",
    "--queues",
    "names",
    default="",
    help="Comma-separated queue names (default: the app's task queues).",
)
@click.pass_context
def queues(ctx: click.Context, names: str) -> None:
    """Show ready/leased/delayed/consumers of the app's task queues."""
    app: Any = ctx.find_root().obj.app
    wanted = [n.strip() for n in names.split(",") if n.strip()] or sorted(app.amqp.queues.keys())
    with app.connection_for_write() as conn:
        if conn.transport.driver_type != "brokerd":
            raise click.ClickException(
                f"the broker of this app is not brokerd ({conn.transport.driver_type})"
            )
        channel = conn.default_channel
        rows = [("queue", "ready", "leased", "delayed", "consumers")]
        for name in wanted:
            try:
                stats = channel.queue_stats(name)
            except conn.channel_errors as exc:
                rows.append((name, "-", "-", "-", f"({exc})"))
                continue
            rows.append(
                (
                    name,
                    str(stats["ready"]),
                    str(stats["leased"]),
                    str(stats["delayed"]),
                    str(stats["consumers"]),
                )
            )
    width = max(len(row[0]) for row in rows)
    for row in rows:
        click.echo(f"{row[0]:<{width}}  " + "  ".join(f"{cell:>9}" for cell in row[1:]))
