"""The worker process: one event loop, one broker connection, one consumer per queue.

Lifecycle:

1. start the pool (child processes for ``--pool processes``);
2. connect (retrying while the broker is not up yet), declare the queues,
   register the beat schedule, subscribe to revocations and rate limits,
   open the remote-control mailbox, announce the worker (events, ``-E``),
   start consuming;
3. run until a signal, reconnecting if the connection is lost (the broker
   has then already given this worker's unfinished messages to others);
4. **warm shutdown** on the first SIGTERM/SIGINT: stop consuming (buffered
   messages go back at once), give back the ones not started, let running
   tasks finish within ``worker_shutdown_timeout``, then close; whatever is
   still unfinished is returned by the broker when the connection closes;
5. **cold shutdown** on a second signal (or SIGQUIT): stop now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from brokerd_protocol import Event

from ...client import AsyncClient, connect
from ...consumer import Consumer
from ...errors import BrokerError, ConnectionLost
from ..beat import register_schedules
from ..declare import Declared, declare_queue_async
from ..exceptions import ConfigurationError
from ..message import TaskMessage
from ..signals import worker_init, worker_ready, worker_shutdown
from .banner import banner
from .dispatcher import Dispatcher
from .mailbox import Mailbox
from .processes import ProcessPool

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Worker"]

log = logging.getLogger("brokerd_client.tasks.worker")

#: Reconnect back-off (seconds): doubles from the first value up to the second.
_RECONNECT = (0.2, 5.0)


class Worker:
    """One worker process; ``await Worker(...).run()`` returns the exit code."""

    def __init__(
        self,
        app: App,
        *,
        queues: list[str],
        concurrency: int,
        prefetch: int,
        pool: str,
        hostname: str,
        app_spec: str | None = None,
        loglevel: str = "WARNING",
        shutdown_timeout: float = 60.0,
        max_tasks_per_child: int | None = None,
        print_banner: bool = True,
        ready_file: str | None = None,
        task_events: bool = False,
    ) -> None:
        if pool == "processes" and app_spec is None:
            raise ValueError("--pool processes needs the -A spec to start child processes")
        self.app = app
        self.queues = queues
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.pool = pool
        self.hostname = hostname
        self.app_spec = app_spec
        self.loglevel = loglevel
        self.shutdown_timeout = shutdown_timeout
        self.max_tasks_per_child = max_tasks_per_child
        self.print_banner = print_banner
        self.ready_file = ready_file
        self.task_events = task_events or app.conf.worker_send_task_events
        self._stop: asyncio.Future[str] | None = None
        self._signals = 0
        self._cold = False
        self.dispatcher: Dispatcher | None = None
        self.consumers: dict[str, Consumer] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        #: Set when a consumer of this connection ends by itself (or fails).
        self._lost: asyncio.Future[str] | None = None
        self.mailbox = Mailbox(self)
        self.started_at = time.time()
        # WorkerHook (used by the app while we run)
        self.loop: asyncio.AbstractEventLoop
        self.client: AsyncClient
        self.declared = Declared()

    # --- WorkerHook ---------------------------------------------------------------

    def publish(self, messages: list[TaskMessage]) -> None:
        assert self.dispatcher is not None
        self.dispatcher.publish(messages)

    # --- signals -------------------------------------------------------------------

    def request_stop(self, cold: bool = False) -> None:
        """First call: warm shutdown; a second call (or ``cold``): cold shutdown."""
        self._signals += 1
        if cold or self._signals > 1:
            if not self._cold:
                log.warning("cold shutdown: stopping running tasks now")
            self._cold = True
            if self.dispatcher is not None:
                self.dispatcher.stop_all()
        else:
            log.warning(
                "warm shutdown: no new tasks; waiting up to %gs for running ones "
                "(signal again for a cold shutdown)",
                self.shutdown_timeout,
            )
        if self._stop is not None and not self._stop.done():
            self._stop.set_result("cold" if self._cold else "warm")

    def _install_signals(self) -> list[int]:
        installed = []
        handlers: list[tuple[int, Callable[[], None]]] = [
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
        ]
        if hasattr(signal, "SIGQUIT"):
            handlers.append((signal.SIGQUIT, lambda: self.request_stop(cold=True)))
        for sig, handler in handlers:
            try:
                self.loop.add_signal_handler(sig, handler)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        return installed

    # --- running -------------------------------------------------------------------

    async def run(self) -> int:
        self.loop = loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        installed = self._install_signals()
        procs: ProcessPool | None = None
        if worker_init.receivers:
            worker_init.send(self)
        try:
            if self.pool == "processes":
                assert self.app_spec is not None
                procs = ProcessPool(
                    loop,
                    self.app_spec,
                    self.concurrency,
                    self._finish,
                    max_tasks_per_child=self.max_tasks_per_child,
                    loglevel=self.loglevel,
                    broker_url=self.app.broker_url,
                    result_serializer=self.app.conf.result_serializer,
                    max_decompressed=self.app.conf.task_max_decompressed_size,
                )
                await procs.start()
            self.dispatcher = Dispatcher(
                self.app,
                loop,
                concurrency=self.concurrency,
                pool=self.pool,
                hostname=self.hostname,
                process_pool=procs,
                task_events=self.task_events,
            )
            summary = loop.create_task(self._summaries())
            try:
                return await self._serve()
            except ConfigurationError as exc:
                log.error("cannot run: %s", exc)
                return 2
            finally:
                summary.cancel()
                if worker_shutdown.receivers:
                    worker_shutdown.send(self)
        finally:
            self.app.clients.worker = None
            for sig in installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            if procs is not None:
                procs.kill_all()

    def _finish(self, job: Any, outcome: Any) -> None:
        assert self.dispatcher is not None
        self.dispatcher.finish(job, outcome)

    async def _serve(self) -> int:
        assert self._stop is not None and self.dispatcher is not None
        delay = _RECONNECT[0]
        first = True
        while not self._stop.done():
            try:
                client = await connect(
                    self.app.broker_url,
                    heartbeat=self.app.conf.broker_heartbeat,
                    timeout=self.app.conf.broker_connection_timeout,
                    client_name=f"brokerd-worker {self.hostname}",
                    ssl_context=self.app.clients.ssl_context(),
                    # The worker reconnects itself (below): its deliveries,
                    # leases and held jobs belong to one connection.
                    recover=False,
                )
            except ConnectionLost as exc:
                if first and not self.app.conf.broker_connection_retry_on_startup:
                    log.error("cannot connect to the broker: %s", exc)
                    return 1
                log.error("cannot connect to the broker: %s; retrying in %.1fs", exc, delay)
                await asyncio.wait([self._stop], timeout=delay)
                delay = min(delay * 2, _RECONNECT[1])
                continue
            delay = _RECONNECT[0]
            try:
                ended = await self._session(client, first)
            except BrokerError as exc:
                if isinstance(exc, ConnectionLost) or client.is_closed:
                    log.error("connection to the broker lost: %s; reconnecting", exc)
                    self.dispatcher.forget_connection(client)
                    first = False
                    continue
                raise
            if ended:
                return 1 if self._cold else 0
            self.dispatcher.forget_connection(client)
            first = False
        return 1 if self._cold else 0

    async def _session(self, client: AsyncClient, first: bool) -> bool:
        """Serve one connection; True if we stopped on request, False if it was lost."""
        assert self._stop is not None and self.dispatcher is not None
        dispatcher = self.dispatcher
        self.client = client
        self.declared = Declared()
        dispatcher.client = client
        dispatcher.declared = self.declared
        topo = self.app.router.topology
        for name in self.queues:
            await declare_queue_async(client, topo, topo.queue(name))
            self.declared.names.add(name)
        schedules = await register_schedules(client, self.app, self.declared)
        subscribed = await client.subscribe(["revoke", "ratelimit"], self._on_event)
        if isinstance(subscribed, dict):
            dispatcher.revoked.update(str(i) for i in subscribed.get("revoked") or ())
            limits = subscribed.get("rate_limits")
            if isinstance(limits, dict):
                dispatcher.rates.known(limits)
        self.app.clients.worker = self
        self.consumers = {}
        self._lost = self.loop.create_future()
        await self.mailbox.start(client)
        await dispatcher.events.start(client, self._worker_fields)
        for name in self.queues:
            await self._start_consumer(client, name)
        if first and self.print_banner:
            print(
                banner(
                    self.app,
                    hostname=self.hostname,
                    queues=self.queues,
                    concurrency=self.concurrency,
                    prefetch=self.prefetch,
                    pool=self.pool,
                    schedules=schedules,
                ),
                flush=True,
            )
        log.info("ready: consuming %s", ", ".join(self.queues))
        if first and self.ready_file:
            _write_ready_file(self.ready_file)
        if first and worker_ready.receivers:
            worker_ready.send(self)
        lost = self._lost
        try:
            await asyncio.wait([self._stop, lost], return_when=asyncio.FIRST_COMPLETED)
            if not self._stop.done():
                # A consumer ended: the connection is gone (or a queue was deleted).
                exc = lost.exception()
                if exc is not None:
                    raise exc
                log.error("a consumer ended: %s", lost.result())
                await client.close()
                return False
            await self._shutdown(client, list(self.consumers.values()))
            return True
        finally:
            for task in self._readers.values():
                task.cancel()
            self._readers.clear()
            self.mailbox.stop()

    async def _start_consumer(self, client: AsyncClient, name: str) -> None:
        consumer = await client.consume(name, prefetch=self.prefetch)
        self.consumers[name] = consumer
        assert self._lost is not None
        self._readers[name] = self.loop.create_task(self._read(name, consumer, self._lost))

    async def _read(self, name: str, consumer: Consumer, lost: asyncio.Future[str]) -> None:
        assert self.dispatcher is not None
        accept = self.dispatcher.accept_delivery
        try:
            async for delivery in consumer:
                accept(delivery)
        except Exception as exc:  # the session re-raises it from ``lost``
            if not lost.done():
                lost.set_exception(exc)
            return
        if self.consumers.get(name) is consumer and not lost.done():
            lost.set_result(f"{name}: {consumer.cancel_reason}")

    def _worker_fields(self) -> dict[str, Any]:
        """What worker events report of this worker now (``WorkerFields``)."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return {"active": 0, "processed": 0, "pool": self.pool, "concurrency": self.concurrency}
        return {
            "active": dispatcher.running,
            "processed": dispatcher.stats.succeeded + dispatcher.stats.failed,
            "pool": self.pool,
            "concurrency": dispatcher.concurrency,
        }

    # --- remote control (the mailbox calls these) ---------------------------------------

    async def add_consumer(self, name: str) -> bool:
        """Consume ``name`` too, from now on (also after a reconnect); False if
        it is consumed already."""
        if name in self.consumers:
            return False
        topo = self.app.router.topology
        await declare_queue_async(self.client, topo, topo.queue(name))
        self.declared.names.add(name)
        await self._start_consumer(self.client, name)
        if name not in self.queues:
            self.queues.append(name)
        log.info("consuming %s too", name)
        return True

    async def cancel_consumer(self, name: str) -> bool:
        """Stop consuming ``name`` (its buffered messages go back); False if it
        was not consumed."""
        consumer = self.consumers.pop(name, None)
        if consumer is None:
            return False
        if name in self.queues:
            self.queues.remove(name)
        await consumer.cancel()
        log.info("no longer consuming %s", name)
        return True

    def _on_event(self, frame: Event) -> None:
        if self.dispatcher is None:
            return
        data = frame.data or {}
        if frame.topic == "ratelimit":
            name = data.get("name")
            if isinstance(name, str):
                self.dispatcher.rates.changed(name, data.get("rate"))
            return
        if frame.topic != "revoke":
            return
        task_id = data.get("task_id")
        if isinstance(task_id, str):
            self.dispatcher.revoke(task_id, bool(data.get("terminate")))

    async def _shutdown(self, client: AsyncClient, consumers: list[Consumer]) -> None:
        assert self.dispatcher is not None
        dispatcher = self.dispatcher
        dispatcher.accepting = False
        for consumer in consumers:
            with contextlib.suppress(BrokerError):
                await consumer.cancel()
        returned = dispatcher.return_waiting()
        if returned:
            log.info("returned %d task(s) that had not started", returned)
        if not self._cold:
            if dispatcher.running or dispatcher.settling:
                log.info("waiting for %d running task(s)", dispatcher.running)
            finished = await self._wait_idle()
            if not finished:
                log.warning(
                    "%d task(s) still running after %gs: returning their messages unacked",
                    dispatcher.running,
                    self.shutdown_timeout,
                )
                dispatcher.stop_all()
        else:
            dispatcher.stop_all()
        dispatcher.leases.stop()
        dispatcher.threads.shutdown()
        if dispatcher.processes is not None:
            await dispatcher.processes.stop(0 if self._cold else 5.0)
        if not self._cold:
            # Closing fails calls in flight: let the last results be confirmed.
            await dispatcher.recorder.wait_results(5.0)
        await dispatcher.events.stop(self._worker_fields)
        await client.close()

    async def _wait_idle(self) -> bool:
        """Wait for running tasks, ending early on a cold-shutdown request."""
        assert self.dispatcher is not None
        idle = self.loop.create_task(self.dispatcher.wait_idle(self.shutdown_timeout))
        while not idle.done():
            await asyncio.wait([idle], timeout=0.1)
            if self._cold:
                idle.cancel()
                return False
        return idle.result()

    async def _summaries(self) -> None:
        """An INFO line every ``worker_summary_interval`` seconds when busy."""
        assert self.dispatcher is not None
        interval = self.app.conf.worker_summary_interval
        stats = self.dispatcher.stats
        last = stats.snapshot()
        last_t = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now, now_t = stats.snapshot(), time.monotonic()
            if now != last:
                diff = [a - b for a, b in zip(now, last, strict=True)]
                done = diff[1] + diff[2]
                log.info(
                    "last %.0fs: %d received, %d succeeded, %d failed, %d retried, %d revoked, "
                    "%d rejected (%.1f tasks/s)",
                    now_t - last_t,
                    *diff,
                    done / (now_t - last_t),
                )
            last, last_t = now, now_t


def _write_ready_file(path: str) -> None:
    """Written once, at start-up: a tiny local file, not worth a thread."""
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")


def run_worker(worker: Worker) -> int:
    """Run ``worker`` on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(worker.run())
    if sys.version_info >= (3, 12):  # pragma: no cover
        return uvloop.run(worker.run())  # type: ignore[no-any-return]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(worker.run())
