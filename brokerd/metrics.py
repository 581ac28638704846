"""Prometheus ``/metrics`` and ``/healthz``, served on the broker's own loop.

The collector reads the broker's plain counters at scrape time, so nothing on
the message path touches prometheus-client. It is served from the event loop
(not prometheus-client's threaded HTTP server) because the state it reads is
owned by the loop thread and must not be walked while the loop mutates it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Collection, Iterator, Mapping, Sized
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .broker import Broker
from .config import Config
from .diskfree import DiskMonitor
from .flow import FlowControl
from .queues import Connection
from .stats import Buckets
from .storage import SqliteStore, Store
from .storage.postgres import PostgresStore
from .throttle import AuthThrottle
from .vhosts import split

log = logging.getLogger("brokerd.metrics")

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MAX_REQUEST = 8192


class Connected(Protocol):
    """One open connection as the metrics see it (``Session``)."""

    @property
    def conn(self) -> Connection: ...

    @property
    def bytes_in(self) -> int: ...

    @property
    def bytes_out(self) -> int: ...


class Observed(Protocol):
    """What the metrics read of the server (``BrokerServer``), at scrape time only."""

    @property
    def config(self) -> Config: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def store(self) -> Store: ...

    @property
    def sessions(self) -> Collection[Connected]: ...

    @property
    def handshaking(self) -> Sized:
        """Connections not welcomed yet."""
        ...

    @property
    def handshakes_dropped(self) -> Mapping[str, int]: ...

    @property
    def auth_throttle(self) -> AuthThrottle: ...

    @property
    def wrong_protocols(self) -> Mapping[str, int]:
        """Connections that spoke another protocol (AMQP, HTTP, TLS), by protocol."""
        ...

    @property
    def closed_bytes_in(self) -> int: ...

    @property
    def closed_bytes_out(self) -> int: ...

    @property
    def disk(self) -> DiskMonitor | None: ...

    @property
    def started_at(self) -> float: ...

    @property
    def standby_redirect(self) -> str | None: ...

    @property
    def flow(self) -> FlowControl: ...


def _histogram(name: str, doc: str, buckets: Buckets) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=buckets.cumulative(), sum_value=buckets.total)


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except OSError:
        return 0


class BrokerCollector:
    def __init__(self, server: Observed) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        broker = server.broker
        c = broker.counters
        now = broker.clock.now()

        for name, value, doc in (
            ("published", c.published, "Publish frames received."),
            ("confirmed", c.confirmed, "Publishes confirmed to their publisher."),
            ("routed", c.routed, "Publishes routed to at least one queue."),
            ("unroutable", c.unroutable, "Publishes that matched no queue."),
            ("delivered", c.delivered, "Deliveries sent to consumers."),
            ("redelivered", c.redelivered, "Deliveries of messages delivered before."),
            ("acked", c.acked, "Deliveries acknowledged."),
            ("nacked", c.nacked, "Deliveries negatively acknowledged."),
            ("rejected", c.rejected, "Deliveries rejected."),
            ("expired", c.expired, "Messages whose TTL ran out."),
            (
                "store_failed",
                c.store_failed,
                "Publishes refused because their commit failed (nothing stored or delivered).",
            ),
        ):
            yield CounterMetricFamily(f"brokerd_messages_{name}", doc, value=value)
        yield CounterMetricFamily(
            "brokerd_leases_expired",
            "Leases that ran out; each returned its message and stalled its connection.",
            value=c.leases_expired,
        )
        for name, table, doc in (
            ("dead_lettered", c.dead_lettered, "Messages moved to a dead-letter queue."),
            ("dropped", c.dropped, "Messages discarded (no dead-letter queue set, or revoked)."),
        ):
            fam = CounterMetricFamily(f"brokerd_messages_{name}", doc, labels=["reason"])
            for reason in ("max_deliveries", "rejected", "ttl", "max_length"):
                fam.add_metric([reason], table.get(reason, 0))
            for reason, value in table.items():
                if reason not in ("max_deliveries", "rejected", "ttl", "max_length"):
                    fam.add_metric([reason], value)
            yield fam

        ended = CounterMetricFamily(
            "brokerd_queues_deleted",
            "Queues that ended on their own: auto_delete (their last consumer went) or "
            "expires (unused for that long).",
            labels=["reason"],
        )
        for reason, value in c.queues_deleted.items():
            ended.add_metric([reason], value)
        yield ended

        ready = GaugeMetricFamily(
            "brokerd_queue_ready_messages",
            "Messages ready for delivery.",
            labels=["vhost", "queue"],
        )
        leased = GaugeMetricFamily(
            "brokerd_queue_leased_messages", "Messages delivered and not yet acked.",
            labels=["vhost", "queue"],
        )  # fmt: skip
        delayed = GaugeMetricFamily(
            "brokerd_queue_delayed_messages", "Messages waiting for their delay.",
            labels=["vhost", "queue"],
        )  # fmt: skip
        consumers = GaugeMetricFamily(
            "brokerd_queue_consumers", "Consumers attached.", labels=["vhost", "queue"]
        )
        oldest_ready = GaugeMetricFamily(
            "brokerd_queue_oldest_ready_age_seconds",
            "Age of the oldest ready message held in memory (0 when none).",
            labels=["vhost", "queue"],
        )
        oldest_lease = GaugeMetricFamily(
            "brokerd_queue_oldest_lease_age_seconds",
            "Time since the oldest live lease of the queue began (0 when none).",
            labels=["vhost", "queue"],
        )
        lease_start: dict[str, float] = {}
        for session in server.sessions:
            for d in session.conn.deliveries.values():
                qname = d.queue.name
                if d.started < lease_start.get(qname, now):
                    lease_start[qname] = d.started
        for q in broker.queues.values():
            # A vhost's queue by the name its clients use (docs/vhosts.md).
            labels = list(split(q.name))
            ready.add_metric(labels, q.ready_count)
            leased.add_metric(labels, q.leased)
            delayed.add_metric(labels, q.delayed)
            consumers.add_metric(labels, len(q.consumers))
            heads = [dq[0].timestamp for dq in q.ready if dq]
            oldest_ready.add_metric(labels, max(0.0, now - min(heads) / 1000) if heads else 0.0)
            oldest_lease.add_metric(labels, max(0.0, now - lease_start.get(q.name, now)))
        yield from (ready, leased, delayed, consumers, oldest_ready, oldest_lease)

        yield _histogram(
            "brokerd_publish_confirm_seconds",
            "From the first publish of a commit group to its confirm.",
            c.publish_confirm,
        )
        yield _histogram(
            "brokerd_delivery_attempts", "Attempt number of each delivery.", c.attempts
        )
        store = server.store
        if isinstance(store, SqliteStore | PostgresStore):
            yield _histogram(
                "brokerd_commit_seconds",
                "Duration of one group commit, the fsync after it included.",
                store.commit_seconds,
            )
            yield CounterMetricFamily(
                "brokerd_commits",
                "Group commits to the store (SQLite or PostgreSQL).",
                value=store.commits,
            )
            yield CounterMetricFamily(
                "brokerd_commits_synced",
                "Group commits that waited for the disk (fsync): those answering a "
                "stored publish's confirm or a reply sent after the commit.",
                value=store.synced_commits,
            )

        yield GaugeMetricFamily(
            "brokerd_connections", "Open client connections.", value=len(server.sessions)
        )
        yield GaugeMetricFamily(
            "brokerd_handshaking_connections",
            "Connections not yet welcomed (limited by max_handshakes).",
            value=len(server.handshaking),
        )
        dropped = CounterMetricFamily(
            "brokerd_handshakes_dropped",
            "Connections closed during their handshake: timeout, evicted (the pool was full), "
            "throttled (their address could not try again before the deadline).",
            labels=["reason"],
        )
        for reason, value in server.handshakes_dropped.items():
            dropped.add_metric([reason], value)
        yield dropped
        wrong = CounterMetricFamily(
            "brokerd_wrong_protocol_connections",
            "Connections that spoke another protocol on the broker port (amqp, http, tls); "
            "each was answered in its protocol where possible, then closed.",
            labels=["protocol"],
        )
        for protocol, value in server.wrong_protocols.items():
            wrong.add_metric([protocol], value)
        yield wrong
        throttle = server.auth_throttle
        yield CounterMetricFamily(
            "brokerd_auth_failures", "Hellos refused for a wrong token or password.",
            value=throttle.failures_total,
        )  # fmt: skip
        yield CounterMetricFamily(
            "brokerd_auth_deferred",
            "Hellos held back because their address failed to authenticate repeatedly.",
            value=throttle.deferred_total,
        )
        yield GaugeMetricFamily(
            "brokerd_consumers",
            "Consumers across all queues.",
            value=sum(len(q.consumers) for q in broker.queues.values()),
        )
        bytes_in = server.closed_bytes_in + sum(s.bytes_in for s in server.sessions)
        bytes_out = server.closed_bytes_out + sum(s.bytes_out for s in server.sessions)
        yield CounterMetricFamily(
            "brokerd_received_bytes", "Bytes received from clients.", value=bytes_in
        )
        yield CounterMetricFamily("brokerd_sent_bytes", "Bytes sent to clients.", value=bytes_out)
        yield GaugeMetricFamily(
            "brokerd_uncommitted_bytes",
            "Message bytes accepted and not yet committed.",
            value=broker.uncommitted_bytes,
        )
        disk = server.disk
        yield GaugeMetricFamily(
            "brokerd_disk_alarm",
            "1 while free disk space is below --min-free-disk and publishers are held.",
            value=int(disk is not None and disk.alarm),
        )
        if disk is not None and disk.free is not None:
            yield GaugeMetricFamily(
                "brokerd_disk_free_bytes",
                "Free space on the data dir's filesystem at the last reading.",
                value=disk.free,
            )
            yield GaugeMetricFamily(
                "brokerd_disk_free_limit_bytes",
                "--min-free-disk: below this free space publishers are held.",
                value=disk.limit,
            )
        yield GaugeMetricFamily(
            "brokerd_memory_held_bytes",
            "Body bytes of ready and delayed messages held in memory (and page reads "
            "in flight), counted against memory_limit.",
            value=broker.memory.used,
        )
        yield GaugeMetricFamily(
            "brokerd_memory_limit_bytes",
            "The memory_limit setting.",
            value=broker.memory.limit,
        )
        unacked = broker.unacked
        yield GaugeMetricFamily(
            "brokerd_unacked_bytes",
            "Body bytes of messages delivered and not yet acked (leased), all connections; "
            "counted against max_unacked_bytes_total.",
            value=unacked.held,
        )
        yield GaugeMetricFamily(
            "brokerd_unacked_bytes_limit",
            "The max_unacked_bytes_total setting.",
            value=unacked.limit,
        )
        yield GaugeMetricFamily(
            "brokerd_connection_unacked_bytes_limit",
            "The max_unacked_bytes setting (per connection).",
            value=unacked.per_connection,
        )
        yield GaugeMetricFamily(
            "brokerd_process_resident_memory_bytes",
            "Resident memory of the broker process.",
            value=rss_bytes(),
        )
        flow = server.flow
        yield GaugeMetricFamily(
            "brokerd_store_unavailable",
            "1 while the database (PostgreSQL) is away and publishers are held.",
            value=int(flow.store_alarm),
        )
        yield CounterMetricFamily(
            "brokerd_store_outages",
            "Times the database (PostgreSQL) went away.",
            value=flow.store_outages,
        )
        yield GaugeMetricFamily(
            "brokerd_node_active",
            "1 while this node serves clients; 0 while it stands by for another node "
            "holding the database's lease (docs/ha.md).",
            value=int(server.standby_redirect is None),
        )
        yield GaugeMetricFamily(
            "brokerd_uptime_seconds",
            "Seconds since the broker started.",
            value=time.monotonic() - server.started_at,
        )


class MetricsEndpoint:
    """A minimal HTTP/1.1 responder: GET /metrics and GET /healthz."""

    def __init__(self, server: Observed) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(server))
        self.server = server
        self._listener: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._listener = await asyncio.start_server(self._handle, host, port)
        self.port = self._listener.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        if len(head) > MAX_REQUEST:
            await self._respond(writer, 431, b"request too large\n")
            return
        parts = head.split(b"\r\n", 1)[0].split()
        method = parts[0] if parts else b""
        path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
        if method not in (b"GET", b"HEAD"):
            await self._respond(writer, 405, b"method not allowed\n")
        elif path == b"/metrics":
            body = generate_latest(self.registry)
            await self._respond(
                writer, 200, body, b"text/plain; version=0.0.4; charset=utf-8", method == b"HEAD"
            )
        elif path == b"/healthz":
            # Alive either way (a restart frees no disk); the alarm is said in the body.
            disk = self.server.disk
            body = b"ok\n"
            if disk is not None and disk.alarm:
                body = b"ok; disk alarm: free space below --min-free-disk, publishers held\n"
            await self._respond(writer, 200, body, head_only=method == b"HEAD")
        else:
            await self._respond(writer, 404, b"not found\n")

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: bytes = b"text/plain; charset=utf-8",
        head_only: bool = False,
    ) -> None:
        reason = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed"}.get(status, b"Error")
        writer.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (status, reason, content_type, len(body))
        )
        if not head_only:
            writer.write(body)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()


async def start_metrics(server: Observed) -> MetricsEndpoint:
    endpoint = MetricsEndpoint(server)
    await endpoint.start(server.config.metrics_host, server.config.metrics_port)
    return endpoint
