"""``brokerd-worker`` (also ``python -m brokerd_client.worker``): the command line.

    brokerd-worker -A proj.tasks -l info -c 4 -Q default,web_tasks
    brokerd-worker -A proj.tasks inspect active      (also: control, events)

Options mirror ``celery worker``'s. Every setting is validated before anything
connects: a typo is an error at start, not a silent default.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
import sys

from brokerd_protocol import MAX_PREFETCH

from ...checks import positive
from ..exceptions import ConfigurationError
from .poolcheck import POOL_CHOICES, check_pool, pool_name
from .remotecli import SUBCOMMANDS
from .remotecli import main as remote_main

__all__ = ["main", "parse_args"]

_LEVELS = ("debug", "info", "warning", "error", "critical")

#: A count given on the command line: None (not given) or at least 1.
_at_least_one = functools.partial(positive, integer=True, error=ConfigurationError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="brokerd-worker",
        description="Run tasks of a brokerd_client.tasks.App from brokerd queues.",
    )
    p.add_argument("-A", "--app", required=True, help="module[:attribute] holding the App")
    p.add_argument("-b", "--broker", help="broker URL (overrides the app's broker_url)")
    p.add_argument(
        "-l", "--loglevel", default="warning", type=str.lower, choices=_LEVELS, help="log level"
    )
    p.add_argument(
        "-c", "--concurrency", type=int, help="tasks run at once (default: worker_concurrency)"
    )
    p.add_argument(
        "-Q", "--queues", help="comma-separated queues to consume (default: task_default_queue)"
    )
    p.add_argument(
        "-P",
        "--pool",
        choices=POOL_CHOICES,
        help="asyncio, threads or processes (prefork: processes)",
    )
    p.add_argument(
        "--prefetch", type=int, help="messages held per queue (default: worker_prefetch)"
    )
    p.add_argument(
        "--max-tasks-per-child", type=int, help="recycle a child process after this many tasks"
    )
    p.add_argument(
        "--max-decompressed-size",
        type=int,
        metavar="BYTES",
        help="largest a zlib task body may inflate to (default: task_max_decompressed_size)",
    )
    p.add_argument("-n", "--hostname", help="worker name (default: worker@<host>:<pid>)")
    p.add_argument("--shutdown-timeout", type=float, help="warm-shutdown grace period in seconds")
    p.add_argument("--without-banner", action="store_true", help="do not print the banner")
    p.add_argument(
        "-E",
        "--task-events",
        action="store_true",
        help="send task and worker events for monitors (default: worker_send_task_events)",
    )
    p.add_argument(
        "--ready-file",
        help="create this file once the worker consumes (for supervisors and tests)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        remote_main(argv[0], argv[1:])
        return
    args = parse_args(argv)
    logging.basicConfig(
        level=args.loglevel.upper(),
        format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    )
    from ..loader import load_app
    from .engine import Worker, run_worker

    try:
        app = load_app(args.app, args.broker, task_max_decompressed_size=args.max_decompressed_size)
        app.clients.ssl_context()  # the broker URL (setting or environment) and TLS, checked now
        conf = app.conf
        concurrency = _at_least_one("--concurrency", args.concurrency) or conf.concurrency
        prefetch = _at_least_one("--prefetch", args.prefetch) or conf.worker_prefetch or concurrency
        if prefetch > MAX_PREFETCH:
            raise ConfigurationError(f"prefetch must be at most {MAX_PREFETCH}, got {prefetch}")
        pool = pool_name(args.pool or conf.worker_pool)
        max_tasks = _at_least_one("--max-tasks-per-child", args.max_tasks_per_child)
        check_pool(
            pool,
            max_tasks_per_child=max_tasks or conf.worker_max_tasks_per_child,
            max_tasks_source="--max-tasks-per-child" if max_tasks else "worker_max_tasks_per_child",
        )
        max_tasks = max_tasks or conf.worker_max_tasks_per_child
        queues = [q.strip() for q in (args.queues or conf.task_default_queue).split(",")]
        queues = [q for q in queues if q]
        if not queues:
            raise ConfigurationError("-Q names no queue")
        for name in queues:
            app.router.topology.queue(name)  # refuses unknown queues when configured to
        for entry in conf.beat_schedule.values():
            app.router.route(
                entry.task,
                **{
                    k: v
                    for k, v in entry.options.items()
                    if k in ("queue", "routing_key", "exchange")
                },
            )
        shutdown_timeout = (
            args.shutdown_timeout
            if args.shutdown_timeout is not None
            else conf.worker_shutdown_timeout
        )
        hostname = args.hostname or f"worker@{socket.gethostname()}:{os.getpid()}"
    except (ConfigurationError, ImportError) as exc:
        print(f"brokerd-worker: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    worker = Worker(
        app,
        queues=queues,
        concurrency=concurrency,
        prefetch=prefetch,
        pool=pool,
        hostname=hostname,
        app_spec=args.app,
        loglevel=args.loglevel.upper(),
        shutdown_timeout=shutdown_timeout,
        max_tasks_per_child=max_tasks,
        print_banner=not args.without_banner,
        ready_file=args.ready_file,
        task_events=args.task_events,
    )
    code = run_worker(worker)
    app.close()
    raise SystemExit(code)
