"""Remote control: revoking tasks (``app.control.revoke``).

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
from typing import TYPE_CHECKING

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
    """``app.control``: revoking through the app's connections."""

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
