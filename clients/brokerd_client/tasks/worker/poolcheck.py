"""Settings a pool cannot honour, refused when the worker starts.

Why refuse rather than ignore: ``worker_max_tasks_per_child`` recycles a
*child process*; in the ``asyncio`` and ``threads`` pools every task runs in
the worker's own process, so the setting would do nothing while the user
believes leaking tasks are being contained. A worker that starts is a worker
whose settings all take effect; the error says which pool would honour them.

Celery's pool names are accepted where they mean the same thing here:
``prefork`` is the ``processes`` pool (one child process per slot).
"""

from __future__ import annotations

from ..config import POOL_ALIASES, POOLS
from ..exceptions import ConfigurationError

__all__ = ["POOL_CHOICES", "check_pool", "pool_name"]

#: What ``-P`` accepts.
POOL_CHOICES = (*POOLS, *POOL_ALIASES)


def pool_name(name: str) -> str:
    """The pool ``name`` means (an alias resolved)."""
    return POOL_ALIASES.get(name, name)


def check_pool(pool: str, *, max_tasks_per_child: int | None, max_tasks_source: str) -> None:
    """``ConfigurationError`` if ``pool`` cannot apply a setting it was given.

    ``max_tasks_source`` says where the value came from (the command-line flag
    or the setting), so the message names what the user wrote.
    """
    if max_tasks_per_child is not None and pool != "processes":
        raise ConfigurationError(
            f"{max_tasks_source}={max_tasks_per_child} recycles child processes, and the "
            f"{pool!r} pool runs every task in the worker's own process: use -P processes "
            "(worker_pool = 'processes'), or remove the setting"
        )
