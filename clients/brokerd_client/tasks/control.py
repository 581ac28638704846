"""Remote control: revoking tasks (``app.control.revoke``) and changing a
task's rate limit (``app.control.rate_limit``).

Revocation is kept by the broker, not broadcast to whichever workers happen to
be listening: a revoked task that is still queued (or waiting for its ETA) is
dropped when it would be delivered and recorded as REVOKED, even if no worker
was running when ``revoke`` was called. With ``terminate=True`` the broker also
pushes an event to every worker, which stops the task if it is running
(asyncio tasks are cancelled, child processes killed and replaced; a thread
cannot be interrupted, see docs/tasks.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .ratelimit import parse_rate

if TYPE_CHECKING:
    from .clients import Clients

__all__ = ["Control"]

#: How long the broker remembers a revocation (seconds) unless told otherwise.
DEFAULT_REVOKE_TTL = 7 * 86400.0


def _ids(task_id: str | Iterable[str]) -> list[str]:
    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError(f"revoke needs task ids (non-empty strings), got {task_id!r}")
    return ids


class Control:
    """``app.control``: revoking and rate limits through the app's connections."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients

    def revoke(
        self,
        task_id: str | Iterable[str],
        terminate: bool = False,
        signal: str | None = None,
        ttl: float = DEFAULT_REVOKE_TTL,
    ) -> None:
        """Revoke one task id or many. ``signal`` is accepted for Celery
        compatibility; child processes are always killed with SIGKILL."""
        del signal
        self.clients.producer.revoke(_ids(task_id), terminate=terminate, ttl=ttl)

    async def arevoke(
        self, task_id: str | Iterable[str], terminate: bool = False, ttl: float = DEFAULT_REVOKE_TTL
    ) -> None:
        client = await self.clients.async_client()
        await client.revoke(_ids(task_id), terminate=terminate, ttl=ttl)

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | float | None,
        destination: Any = None,
        reply: bool = False,
        timeout: float = 1.0,
        **kwargs: Any,
    ) -> None:
        """Set the rate limit of ``task_name`` for the whole fleet, now.

        Celery changes the limit in each worker that hears the broadcast, so
        N workers still run N times it; here the broker keeps it (SPEC §14.15)
        and every worker, started before or after, obeys it. ``None`` (or 0)
        removes the broker's limit: the task's own ``rate_limit`` applies
        again. Kept in the broker's memory: a broker restart forgets it.
        ``destination`` is refused (the limit is the fleet's, not a worker's);
        ``reply`` and ``timeout`` are accepted for Celery's call shape."""
        del reply, timeout, kwargs
        if destination is not None:
            raise ValueError(
                "rate limits are kept by the broker for every worker; destination= is not supported"
            )
        if not isinstance(task_name, str) or not task_name:
            raise ValueError(f"rate_limit needs a task name, got {task_name!r}")
        self.clients.producer.rate_set(task_name, parse_rate(rate_limit))

    async def arate_limit(self, task_name: str, rate_limit: str | float | None) -> None:
        if not isinstance(task_name, str) or not task_name:
            raise ValueError(f"rate_limit needs a task name, got {task_name!r}")
        client = await self.clients.async_client()
        await client.rate_set(task_name, parse_rate(rate_limit))
