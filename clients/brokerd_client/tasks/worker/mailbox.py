"""A worker's mailbox: answering inspect and control requests (see ``tasks.remote``).

The mailbox is a transient, auto-deleted queue bound to the fanout exchange
``brokerd.control``, named after the worker's hostname and made unique, so
it lives exactly as long as the worker's connection: a worker that died is
never waited for, and a reconnect makes a new one. Requests are read on the
worker's loop between deliveries; every answer is built from state the
worker already keeps (no per-task cost for being inspectable) and published
to the caller's reply queue without waiting for its confirm.

A request this worker cannot parse, or one for other hostnames, is dropped;
a command that fails is answered ``{"error": "..."}``, as Celery's are. No
request can stop the worker except ``shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import BrokerError
from ..ratelimit import parse_rate
from ..remote import CONTROL_EXCHANGE, decode, encode
from .events import decoded_args

if TYPE_CHECKING:
    from ...client import AsyncClient
    from ...consumer import Consumer
    from ..app import App
    from .dispatcher import Dispatcher
    from .job import Job


class Owner(Protocol):
    """What the mailbox needs of its worker (``engine.Worker``)."""

    app: App
    hostname: str
    pool: str
    prefetch: int
    queues: list[str]
    started_at: float
    dispatcher: Dispatcher | None

    def request_stop(self, cold: bool = False) -> None: ...

    async def add_consumer(self, name: str) -> bool: ...

    async def cancel_consumer(self, name: str) -> bool: ...


__all__ = ["Mailbox"]

log = logging.getLogger("brokerd_client.tasks.worker")

Reply = dict[str, Any] | list[Any]


class Mailbox:
    def __init__(self, worker: Owner) -> None:
        self.worker = worker
        self.client: AsyncClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Reply]]] = {
            "ping": self._ping,
            "active": self._active,
            "reserved": self._reserved,
            "scheduled": self._scheduled,
            "stats": self._stats,
            "registered": self._registered,
            "revoked": self._revoked,
            "shutdown": self._shutdown,
            "pool_grow": self._pool_grow,
            "pool_shrink": self._pool_shrink,
            "add_consumer": self._add_consumer,
            "cancel_consumer": self._cancel_consumer,
            "rate_limit": self._rate_limit,
        }

    async def start(self, client: AsyncClient) -> None:
        """Open this connection's mailbox and start answering."""
        self.client = client
        name = f"brokerd.control.{self.worker.hostname}.{uuid.uuid4().hex[:8]}"
        await client.declare_exchange(CONTROL_EXCHANGE, "fanout", durable=False)
        await client.declare_queue(name, durable=False, auto_delete=True)
        await client.bind(name, CONTROL_EXCHANGE, "")
        consumer = await client.consume(name, prefetch=16)
        self._reader = asyncio.get_running_loop().create_task(self._serve(client, consumer))

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None

    async def _serve(self, client: AsyncClient, consumer: Consumer) -> None:
        async for delivery in consumer:
            with contextlib.suppress(BrokerError):
                await delivery.ack(wait=False)
            request = decode(delivery.body)
            if request is None:
                log.warning("dropping a control message that is not a JSON object")
                continue
            destination = request.get("destination")
            if isinstance(destination, list) and self.worker.hostname not in destination:
                continue
            reply = await self.answer(request)
            reply_to = request.get("reply_to")
            if isinstance(reply_to, str) and reply_to:
                body = encode(
                    {
                        "hostname": self.worker.hostname,
                        "ticket": request.get("ticket"),
                        "reply": reply,
                    }
                )
                task = asyncio.get_running_loop().create_task(client.publish("", reply_to, body))
                self._pending.add(task)
                task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a control reply was not delivered: %s", task.exception())

    async def answer(self, request: dict[str, Any]) -> Reply:
        """The reply to one request (never raises)."""
        command = request.get("command")
        handler = self._handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            return {"error": f"unknown command {command!r}"}
        arguments = request.get("arguments")
        try:
            return await handler(arguments if isinstance(arguments, dict) else {})
        except Exception as exc:
            log.warning("control command %s failed: %s", command, exc)
            return {"error": f"{type(exc).__name__}: {exc}"}

    # --- inspect ------------------------------------------------------------------

    async def _ping(self, args: dict[str, Any]) -> Reply:
        return {"ok": "pong"}

    def _jobs(self, started: bool) -> list[Job]:
        dispatcher = self.worker.dispatcher
        if dispatcher is None:
            return []
        return [j for j in dispatcher.held.values() if j.started == started and not j.finished]

    def _info(self, job: Job) -> dict[str, Any]:
        d = job.delivery
        args, kwargs = decoded_args(job, self.worker.app.conf.task_max_decompressed_size)
        child = job.child
        return {
            "id": job.task_id,
            "name": job.task.name,
            "args": args,
            "kwargs": kwargs,
            "type": job.task.name,
            "hostname": self.worker.hostname,
            "time_start": (time.time() - (time.perf_counter() - job.started_at))
            if job.started
            else None,
            "acknowledged": d.settled,
            "delivery_info": {
                "exchange": d.exchange,
                "routing_key": d.routing_key,
                "priority": d.priority,
                "redelivered": d.redelivered,
            },
            "worker_pid": getattr(child, "pid", None) or os.getpid(),
        }

    async def _active(self, args: dict[str, Any]) -> Reply:
        return [self._info(j) for j in self._jobs(started=True)]

    async def _reserved(self, args: dict[str, Any]) -> Reply:
        return [self._info(j) for j in self._jobs(started=False)]

    async def _scheduled(self, args: dict[str, Any]) -> Reply:
        # Countdown/ETA tasks are held by the broker until due, never here.
        return []

    async def _stats(self, args: dict[str, Any]) -> Reply:
        worker = self.worker
        dispatcher = worker.dispatcher
        pool: dict[str, Any] = {"implementation": worker.pool}
        total: dict[str, int] = {}
        if dispatcher is not None:
            pool["max-concurrency"] = dispatcher.concurrency
            if dispatcher.processes is not None:
                pool["processes"] = dispatcher.processes.pids()
            total = dict(dispatcher.stats.total)
        return {
            "pid": os.getpid(),
            "hostname": worker.hostname,
            "uptime": round(time.time() - worker.started_at, 3),
            "pool": pool,
            "prefetch_count": worker.prefetch,
            "queues": list(worker.queues),
            "total": total,
            "broker": {"transport": "brokerd"},
        }

    async def _registered(self, args: dict[str, Any]) -> Reply:
        return sorted(self.worker.app.tasks)

    async def _revoked(self, args: dict[str, Any]) -> Reply:
        dispatcher = self.worker.dispatcher
        return sorted(dispatcher.revoked) if dispatcher is not None else []

    # --- control ------------------------------------------------------------------

    async def _shutdown(self, args: dict[str, Any]) -> Reply:
        log.warning("shutdown requested by remote control")
        asyncio.get_running_loop().call_soon(self.worker.request_stop)
        return {"ok": "shutting down"}

    def _count(self, args: dict[str, Any]) -> int:
        n = args.get("n", 1)
        if type(n) is not int or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        return n

    async def _pool_grow(self, args: dict[str, Any]) -> Reply:
        n = self._count(args)
        assert self.worker.dispatcher is not None
        size = self.worker.dispatcher.resize(n)
        return {"ok": f"pool will grow (concurrency {size})"}

    async def _pool_shrink(self, args: dict[str, Any]) -> Reply:
        n = self._count(args)
        assert self.worker.dispatcher is not None
        size = self.worker.dispatcher.resize(-n)
        return {"ok": f"pool will shrink (concurrency {size})"}

    def _queue(self, args: dict[str, Any]) -> str:
        queue = args.get("queue")
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"queue must be a queue name, got {queue!r}")
        return queue

    async def _add_consumer(self, args: dict[str, Any]) -> Reply:
        queue = self._queue(args)
        if await self.worker.add_consumer(queue):
            return {"ok": f"add consumer {queue}"}
        return {"ok": f"already consuming from {queue}"}

    async def _cancel_consumer(self, args: dict[str, Any]) -> Reply:
        queue = self._queue(args)
        if await self.worker.cancel_consumer(queue):
            return {"ok": f"no longer consuming from {queue}"}
        return {"error": f"not consuming from {queue}"}

    async def _rate_limit(self, args: dict[str, Any]) -> Reply:
        name = args.get("task_name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"task_name must be a task name, got {name!r}")
        assert self.client is not None
        await self.client.rate_set(name, parse_rate(args.get("rate_limit")))
        return {"ok": "new rate limit set successfully"}
