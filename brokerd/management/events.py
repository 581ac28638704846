"""Workers and task progress from the workers' events, as Flower shows them.

A worker started with ``-E`` publishes Celery-shaped JSON events to the
transient topic exchange ``brokerd.events`` of its vhost (``worker.heartbeat``,
``task.succeeded``, ...; ``brokerd_client.tasks.worker.events``). The
management plane reads them in-process: a transient queue of its own
(``QUEUE``, bounded, oldest dropped first) bound with ``#``, consumed by this
module as a connection of the core (a ``Peer``), acked in one batch per loop
turn. The queue is made when someone first asks for workers or tasks (so a
broker nobody watches this way has no extra queue), and it costs nothing
while no worker sends events.

Kept in memory, bounded: workers by hostname (``online`` while heartbeats
arrive within three of their intervals; ``worker-offline`` ends it), and the
last ``MAX_TASKS`` tasks by id with their state, name, arguments, worker,
runtime, exception and traceback. Nothing survives a restart (the results
store does that for final states).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from brokerd_protocol import ErrorCode

from ..broker import Broker
from ..errors import BrokerError
from ..queues import Connection, Consumer, Delivery
from ..vhosts import DEFAULT_VHOST, Names

log = logging.getLogger("brokerd.management")

#: The SDK's events exchange (``brokerd_client.tasks.remote.EVENTS_EXCHANGE``).
EVENTS_EXCHANGE = "brokerd.events"
QUEUE = "brokerd.management.events"
#: Events waiting in the queue at most (the oldest dropped first).
QUEUE_LENGTH = 10_000
MAX_TASKS = 1000
MAX_WORKERS = 1000
#: Seconds between attempts to (re)attach to the events exchange.
RETRY = 5.0
#: Task event type -> the state it means (Celery's).
STATES = {
    "task-received": "RECEIVED",
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
    "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
}
WORKER_FIELDS = (
    "pid", "sw_ident", "sw_ver", "sw_sys", "active", "processed", "loadavg", "freq",
    "pool", "concurrency",
)  # fmt: skip
TASK_FIELDS = (
    "name", "args", "kwargs", "retries", "eta", "expires", "queue", "result",
    "runtime", "exception", "traceback", "root_id", "parent_id",
)  # fmt: skip


class EventWatcher:
    """The core's ``Peer`` for the management plane's own events consumer."""

    writable = True

    def __init__(
        self, broker: Broker, clock: Callable[[], float] = time.time, vhost: str = DEFAULT_VHOST
    ) -> None:
        self.broker = broker
        self.clock = clock
        #: The vhost whose workers this watches (each has its own exchange).
        self.vhost = vhost
        names = Names.of(vhost)
        self.exchange = names.inn(EVENTS_EXCHANGE)
        self.queue = names.inn(QUEUE)
        self.workers: dict[str, dict[str, Any]] = {}
        self.tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.conn: Connection = broker.open(self)
        self.consumer: Consumer | None = None
        self._acks: list[int] = []
        self._last_try = -RETRY
        self.received = 0

    # --- attaching ------------------------------------------------------------------

    def attach(self) -> bool:
        """Declare the exchange, the queue and the binding, and consume."""
        broker = self.broker
        try:
            broker.declare_exchange(self.exchange, "topic", False)
            if self.queue not in broker.queues:
                broker.declare_queue(
                    self.queue, False, {"max_length": QUEUE_LENGTH, "overflow": "drop_head"}
                )
            broker.bind(self.queue, self.exchange, "#")
            consumer = broker.add_consumer(self.conn, self.queue, 1000, 60.0)
        except BrokerError as exc:
            log.warning("worker events of vhost %r are not shown: %s", self.vhost, exc.message)
            return False
        self.consumer = consumer
        broker.start_consumer(consumer)
        return True

    def watch(self) -> None:
        """Attach if not attached (at most every ``RETRY`` seconds)."""
        now = time.monotonic()
        if self.consumer is None and now - self._last_try >= RETRY:
            self._last_try = now
            self.attach()

    # --- Peer -----------------------------------------------------------------------

    def send_delivery(self, consumer: Consumer, delivery: Delivery) -> None:
        self._acks.append(delivery.id)
        if len(self._acks) == 1:
            asyncio.get_running_loop().call_soon(self._ack)
        self.received += 1
        try:
            event = json.loads(delivery.message.body)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(event, dict):
            self.apply(event)

    def _ack(self) -> None:
        ids, self._acks = self._acks, []
        if ids and not self.conn.closed:
            self.broker.ack(self.conn, ids)

    def send_confirms(self, routed: list[int], unroutable: list[int]) -> None:  # pragma: no cover
        pass

    def send_publish_error(
        self, seq: int, code: ErrorCode, message: str
    ) -> None:  # pragma: no cover
        pass

    def send_consumer_cancelled(self, consumer_id: int, reason: str) -> None:
        # The queue was deleted: attach again at the next retry.
        self.consumer = None

    # --- events ---------------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        hostname = event.get("hostname")
        if not isinstance(kind, str) or not isinstance(hostname, str):
            return
        at = event.get("timestamp")
        if not isinstance(at, int | float):
            at = self.clock()
        if kind.startswith("worker-"):
            self._worker(kind, hostname, float(at), event)
        elif kind in STATES:
            self._task(kind, hostname, float(at), event)

    def _worker(self, kind: str, hostname: str, at: float, event: dict[str, Any]) -> None:
        worker = self.workers.get(hostname)
        if worker is None:
            if len(self.workers) >= MAX_WORKERS:
                # Forget the one heard from longest ago.
                oldest = min(self.workers, key=lambda h: self.workers[h]["last_heartbeat"])
                del self.workers[oldest]
            worker = self.workers[hostname] = {"hostname": hostname}
        for name in WORKER_FIELDS:
            if name in event:
                worker[name] = event[name]
        worker["last_heartbeat"] = at
        worker["offline"] = kind == "worker-offline"

    def _task(self, kind: str, hostname: str, at: float, event: dict[str, Any]) -> None:
        uuid = event.get("uuid")
        if not isinstance(uuid, str):
            return
        task = self.tasks.pop(uuid, None)
        if task is None:
            task = {"uuid": uuid}
            while len(self.tasks) >= MAX_TASKS:
                self.tasks.popitem(last=False)
        self.tasks[uuid] = task
        task["state"] = STATES[kind]
        task["hostname"] = hostname
        task[kind.removeprefix("task-")] = at
        task["timestamp"] = at
        for name in TASK_FIELDS:
            if name in event:
                task[name] = event[name]

    # --- views ----------------------------------------------------------------------

    def worker_rows(self) -> list[dict[str, Any]]:
        now = self.clock()
        rows = []
        for hostname in sorted(self.workers):
            w = dict(self.workers[hostname])
            freq = w.get("freq")
            freq = float(freq) if isinstance(freq, int | float) and freq > 0 else 2.0
            w["online"] = not w.pop("offline") and now - w["last_heartbeat"] <= 3 * freq
            # Celery's own worker events name no pool: null, as for an unknown.
            w.setdefault("pool", None)
            w.setdefault("concurrency", None)
            w["vhost"] = self.vhost
            rows.append(w)
        return rows

    def task_rows(self, limit: int) -> list[dict[str, Any]]:
        """The most recently changed tasks first."""
        out: list[dict[str, Any]] = []
        for uuid in reversed(self.tasks):
            if len(out) >= limit:
                break
            out.append({**self.tasks[uuid], "vhost": self.vhost})
        return out
