"""W4 on brokerd: noop tasks through one worker process, using the task SDK
(``brokerd_client.tasks``).

The SDK is imported lazily: while it does not exist (or lacks the pieces used here) the
workload reports 'not available' and the rest of the run goes on.

To fill this in once the SDK lands, implement :func:`run_noop_tasks` like its Celery twin
in :mod:`bench.systems.celery_peer`: start ONE worker process (``brokerd-worker`` or the
SDK's worker entry point) on ``ctx.target.url`` with prefetch ``ctx.settings.prefetch``,
acks after each task, serving a noop task; signal readiness; then from a separate producer
process send ``ctx.settings.task_count`` tasks and time from the first send to the last
task run (results ignored; the task writes ``bench.clock.now()`` to a file when it has run
``task_count`` times) or to the last result received (with results). Return
``(tasks_per_second, details)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model import NOT_AVAILABLE, Skip

if TYPE_CHECKING:
    from ..runner import RunContext

# What the harness needs from the SDK; checked by name so the report says what is missing.
REQUIRED = ("App",)


def check_available() -> None:
    try:
        import brokerd_client.tasks as tasks
    except ImportError as exc:
        raise Skip(NOT_AVAILABLE, f"brokerd_client.tasks not importable ({exc})") from exc
    missing = [name for name in REQUIRED if not hasattr(tasks, name)]
    if missing:
        raise Skip(NOT_AVAILABLE, f"brokerd_client.tasks lacks {', '.join(missing)}")
    raise Skip(
        NOT_AVAILABLE,
        "brokerd_client.tasks is importable but the W4 adapter "
        "(bench/systems/brokerd_tasks.py) is not written yet",
    )


async def run_noop_tasks(ctx: RunContext, *, with_results: bool) -> tuple[float, dict[str, Any]]:
    check_available()
    raise AssertionError("unreachable")
