"""Remote control: revoking tasks (``app.control.revoke``), changing a
task's rate limit (``app.control.rate_limit``), and asking the live workers
(``app.control.inspect()``, ``ping``, ``shutdown``, ``pool_grow`` ...; the
mechanism is :mod:`.remote`'s).

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
from .remote import broadcast

if TYPE_CHECKING:
    from .clients import Clients

__all__ = ["Control", "Inspect"]

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

    # --- asking the live workers (Celery's broadcast commands) -------------------------

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: str | Iterable[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
    ) -> dict[str, Any] | None:
        """Send ``command`` to the live workers (all, or the hostnames in
        ``destination``); with ``reply``, ``{hostname: answer}`` of those that
        answered within ``timeout`` seconds, or None if none did."""
        return self.clients.producer.run_async(
            lambda client: broadcast(
                client,
                command,
                arguments,
                destination=destination,
                reply=reply,
                timeout=timeout,
                limit=limit,
            ),
            timeout=timeout + 30.0,
        )

    def inspect(
        self, destination: str | Iterable[str] | None = None, timeout: float = 1.0
    ) -> Inspect:
        return Inspect(self, destination, timeout)

    def ping(
        self, destination: str | Iterable[str] | None = None, timeout: float = 1.0
    ) -> dict[str, Any] | None:
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout)

    def shutdown(
        self,
        destination: str | Iterable[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
    ) -> dict[str, Any] | None:
        """Warm shutdown of the workers (running tasks finish first)."""
        return self.broadcast("shutdown", destination=destination, reply=reply, timeout=timeout)

    def pool_grow(
        self,
        n: int = 1,
        destination: str | Iterable[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
    ) -> dict[str, Any] | None:
        return self.broadcast(
            "pool_grow", {"n": n}, destination=destination, reply=reply, timeout=timeout
        )

    def pool_shrink(
        self,
        n: int = 1,
        destination: str | Iterable[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
    ) -> dict[str, Any] | None:
        return self.broadcast(
            "pool_shrink", {"n": n}, destination=destination, reply=reply, timeout=timeout
        )

    def add_consumer(
        self,
        queue: str,
        destination: str | Iterable[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """Workers start consuming ``queue`` too (until they stop)."""
        del kwargs
        return self.broadcast(
            "add_consumer", {"queue": queue}, destination=destination, reply=reply, timeout=timeout
        )

    def cancel_consumer(
        self,
        queue: str,
        destination: str | Iterable[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        del kwargs
        return self.broadcast(
            "cancel_consumer",
            {"queue": queue},
            destination=destination,
            reply=reply,
            timeout=timeout,
        )


class Inspect:
    """``app.control.inspect()``: what each live worker says about itself.

    Every method returns ``{hostname: answer}`` for the workers that answered
    within the timeout, or None if none did (Celery's shape)."""

    def __init__(
        self, control: Control, destination: str | Iterable[str] | None, timeout: float
    ) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    def _ask(self, command: str) -> dict[str, Any] | None:
        return self.control.broadcast(
            command, destination=self.destination, reply=True, timeout=self.timeout
        )

    def ping(self) -> dict[str, Any] | None:
        return self._ask("ping")

    def active(self) -> dict[str, Any] | None:
        """Tasks running now."""
        return self._ask("active")

    def reserved(self) -> dict[str, Any] | None:
        """Tasks received and not started yet (prefetched, or waiting for a rate-limit slot)."""
        return self._ask("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        """Tasks with an ETA held by the worker: always empty lists here, as
        brokerd holds countdown/ETA tasks in the broker until they are due."""
        return self._ask("scheduled")

    def stats(self) -> dict[str, Any] | None:
        return self._ask("stats")

    def registered(self) -> dict[str, Any] | None:
        return self._ask("registered")

    def revoked(self) -> dict[str, Any] | None:
        return self._ask("revoked")
