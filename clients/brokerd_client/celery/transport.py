"""The kombu transport for brokerd: ``broker_url = "brokerd://[token@]host:5673"``.

``brokerds://`` is the same over TLS; Celery's ``broker_use_ssl`` (kombu's
``ssl``) gives the CA, a client certificate or an ``SSLContext`` and, with a
``brokerd://`` URL, turns TLS on as it does for ``amqp://``
(:func:`brokerd_client.tls.from_celery`).

An unchanged Celery (5.3+) or kombu application runs on brokerd through this
transport. It is a native transport (like kombu's ``pyamqp``), not kombu's
polling "virtual" transport: there is no polling interval anywhere.

How kombu's AMQP model maps onto brokerd (protocol/SPEC.md):

* **Connection**: one TCP connection speaking brokerd's protocol
  (:mod:`.wire`); ``brokerd://user:password@host`` logs in as a user of the
  broker (docs/security.md), and a lone secret is the broker's token
  (``brokerd://token@host`` or ``brokerd://:token@host``). kombu's
  ``virtual_host`` (the URL's path, ``%2F`` or none for ``"/"``) is the
  broker's vhost (docs/vhosts.md). The token is moved out of the user
  name as the transport is created, so kombu's ``as_uri()`` (Celery's
  banner and error logs) masks it.
* **Channels** are local objects sharing the connection: each holds its
  consumers, its prefetch and the deliveries handed to its consumers.
* **Deliveries are pushed.** ``register_with_event_loop`` puts the socket on
  Celery's hub; ``on_readable`` reads what is there and dispatches every
  delivery read so far, at once. ``drain_events(timeout)`` blocks on the
  socket for code without a hub and hands over one delivery per call, as
  kombu expects of a transport (its remote control counts replies by calls).
  Frames read while a blocking call waits for its reply are dispatched
  afterwards, never from inside it: on the hub, a wake-up pipe
  (:mod:`.hubwake`) makes the hub's next ``poll`` return at once and
  dispatches them where ``on_readable`` would.
* **Exchanges** ``direct``, ``topic``, ``fanout`` and the default exchange are
  brokerd's own (SPEC §9.1). **Queues**: see :mod:`.queueargs`.
* **Publishing** sends a Publish built by :func:`.envelope.to_message` and, by
  default, waits for its Confirm (transport option ``confirm_publish``,
  default True): a ``delay()`` that returned is durably committed. With
  ``confirm_publish=False`` publishes are fire and forget (like pyamqp's
  default); refusals are then only logged. A refused publish raises the
  broker's error (``Unroutable`` for a mandatory publish that routes nowhere,
  ``QueueFull``, ...); a message larger than the broker's frame limit raises
  ``MessageTooLarge`` before anything is sent.
* **ETA / countdown.** ``to_message`` turns a future ``eta`` header into
  brokerd's ``not_before``, so the *broker* holds the task, durably, and
  delivers it when it is due. On delivery the transport sets
  ``headers["eta"] = None`` before Celery sees the message: the worker runs it
  at once and never keeps ETA tasks in memory or raises its prefetch for them.
* **Consuming**: ``basic_consume`` is a brokerd Consume whose prefetch is the
  channel's ``basic_qos`` prefetch_count (0 = unlimited = 65535). brokerd's
  prefetch is exact and per consumer (one per queue consumed), like
  RabbitMQ's per-consumer QoS. A new ``basic_qos`` re-consumes at the new
  prefetch (Cancel + Consume); deliveries already held survive the Cancel
  (SPEC §11.1), so until they are settled they come on top of the new window.
  ``no_ack`` consumers (Celery's remote control, event receivers) are acked
  by the transport as soon as their deliveries are read, in one Ack frame.
* **Settling**: ``basic_ack`` (``multiple`` too), ``basic_reject`` (requeue:
  Nack back to the queue, marked redelivered; no requeue: Reject, which
  dead-letters or drops), ``basic_recover`` (requeue everything held).
  On the hub's thread acks are deferred to the end of the loop turn (the
  hub's ``on_tick``, just before it polls): Celery acks each task with
  ``call_soon``, so all the acks of a turn go out in one Ack frame. Any
  other write, and any blocking read, sends deferred acks first. Elsewhere
  (no hub, other threads) an ack is written at once.
* **basic_get**: asks QueueStats first and returns None when nothing is
  ready; otherwise consumes with prefetch 1 until one delivery arrives (at
  most transport option ``get_timeout`` seconds, default 1.0, in case another
  consumer took it first), then cancels.
* **Leases (acks_late)**: every unsettled delivery is leased to the
  connection. A :class:`.keeper.LeaseKeeper` thread extends all of them in one
  Extend about every lease/3 and sends heartbeats, also while the consuming
  thread is blocked in a long task (solo pool). So a task longer than its
  lease is never redelivered while its worker lives, and a killed worker's
  tasks return to the queue at once (its connection closes). Transport
  option ``lease`` (seconds) sets the Consume lease (default: the queue's).
  A delivery read after the consuming thread spent more than half a lease
  in callbacks (a solo pool runs tasks inside them, and reads nothing
  meanwhile) may have waited in the socket past its lease; it is checked
  with an Extend before it runs, and skipped here if the broker already took
  it back (it went to another consumer).
* **Threads**: acks may come from any thread (Celery's threads pool); every
  write goes through the connection's write lock. Reading is done by the
  consuming thread only.
* **Errors**: a lost socket or a broker close raises ``ConnectionLost`` (in
  ``connection_errors``: Celery reconnects); request errors raise brokerd's
  typed errors (``PreconditionFailed`` for a redeclaration with other
  options, ...), listed in ``channel_errors``; messages name the brokerd
  error code.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from kombu.exceptions import ChannelError as KombuChannelError
from kombu.exceptions import ConnectionError as KombuConnectionError
from kombu.transport import base

from brokerd_protocol import (
    MAX_PREFETCH,
    Bind,
    Cancel,
    Consume,
    DeclareExchange,
    DeclareQueue,
    DeleteExchange,
    DeleteQueue,
    Deliver,
    PurgeQueue,
    QueueStats,
    Unbind,
)

from ..errors import (
    AuthenticationError,
    BrokerError,
    ConnectionLost,
    HeartbeatTimeout,
    InternalError,
    InvalidArgument,
    LeaseLost,
    MessageTooLarge,
    NotFound,
    PreconditionFailed,
    ProtocolViolation,
    QueueFull,
    Redirected,
    ResourceLimitExceeded,
    StorageFailed,
    Unroutable,
)
from ..failover import FAILOVER_TIMEOUT, backoff, retryable
from ..tls import from_celery
from ..url import DEFAULT_PORT, BrokerURL, parse_url, redact
from .envelope import ENVELOPE_HEADER, InvalidEnvelope, KombuMessage, from_delivery, to_message
from .hubwake import HubBinding
from .keeper import LeaseKeeper
from .queueargs import EXCHANGE_TYPES, queue_options
from .wire import ACK, EXTEND, KIND_NAMES, NACK, REJECT, RETURN, WireConnection

__all__ = [
    "Channel",
    "Message",
    "TLSTransport",
    "Transport",
    "TransportConnection",
    "queue_declare_ok_t",
]

log = logging.getLogger("brokerd_client.celery")

#: Most fire-and-forget publishes left unconfirmed before a publisher reads
#: confirms (``confirm_publish=False``); it then waits until half are in.
_MAX_UNCONFIRMED = 10_000


class queue_declare_ok_t(NamedTuple):  # kombu's and py-amqp's name
    queue: str
    message_count: int
    consumer_count: int


class RawDelivery:
    """What a consumer callback receives; ``Channel.message_to_python`` makes
    the kombu :class:`Message` of it."""

    __slots__ = ("consumer_tag", "error", "frame", "kombu")

    def __init__(self, frame: Deliver, consumer_tag: str) -> None:
        self.frame = frame
        self.consumer_tag = consumer_tag
        self.error: InvalidEnvelope | None = None
        headers = frame.props.get("headers") or {}
        try:
            self.kombu = from_delivery(frame.body, headers)
        except InvalidEnvelope as exc:
            self.kombu = None
            self.error = exc


class Message(base.Message):
    """A kombu message received from brokerd."""

    def __init__(self, raw: RawDelivery, channel: Channel | None = None, **kwargs: Any) -> None:
        frame = raw.frame
        props = frame.props
        wire_headers: dict[str, Any] = props.get("headers") or {}
        km = raw.kombu
        if km is None:
            # Published by a brokerd client (or a broken envelope): its
            # headers are the message's, its body is opaque bytes.
            headers = {k: v for k, v in wire_headers.items() if k != ENVELOPE_HEADER}
            properties: dict[str, Any] = {}
            content_type: str | None = "application/data"
            content_encoding: str | None = "binary"
        else:
            headers = dict(km.headers)
            # brokerd's own headers (x-death-* after dead-lettering) too.
            for key, value in wire_headers.items():
                if key != ENVELOPE_HEADER:
                    headers.setdefault(key, value)
            properties = dict(km.properties)
            content_type = km.content_type or None
            content_encoding = km.content_encoding or None
        if "eta" in headers:
            # The broker held it until due (not_before): run it now.
            headers["eta"] = None
        priority = props.get("priority", 0)
        properties["priority"] = priority
        delivery_info = {
            "consumer_tag": raw.consumer_tag,
            "delivery_tag": frame.delivery,
            "redelivered": bool(props.get("redelivered", False)),
            "exchange": frame.exchange,
            "routing_key": frame.routing_key,
            "priority": priority,
        }
        super().__init__(  # type: ignore[no-untyped-call]
            body=frame.body,
            delivery_tag=frame.delivery,
            content_type=content_type,
            content_encoding=content_encoding,
            delivery_info=delivery_info,
            properties=properties,
            headers=headers,
            channel=channel,
            **kwargs,
        )
        if raw.error is not None:
            # kombu re-raises errors[0] when the consumer reads the message.
            self.errors.append((type(raw.error), raw.error, None))  # type: ignore[arg-type]


class _Consumer:
    __slots__ = ("callback", "consumer_id", "no_ack", "on_cancel", "prefetch", "queue")

    def __init__(
        self,
        queue: str,
        no_ack: bool,
        callback: Callable[[RawDelivery], Any] | None,
        on_cancel: Callable[[str], Any] | None,
    ) -> None:
        self.queue = queue
        self.no_ack = no_ack
        self.callback = callback
        self.on_cancel = on_cancel
        self.consumer_id = 0
        self.prefetch = 0


class Channel(base.StdChannel):
    """A kombu channel: consumers, prefetch and held deliveries on a shared connection."""

    def __init__(self, connection: TransportConnection) -> None:
        self.connection = connection
        self.channel_id = next(connection.channel_ids)
        self.no_ack_consumers: set[str] = set()  # type: ignore[assignment]
        self.events: dict[str, set[Any]] = {"basic_return": set()}
        self.is_open = True
        self.prefetch_count = 0
        self._consumers: dict[str, _Consumer] = {}
        self._held: set[int] = set()
        self._held_lock = threading.Lock()
        self._tags = itertools.count(1)
        connection.channels.append(self)

    # --- messages --------------------------------------------------------------

    def prepare_message(
        self,
        body: bytes | str,
        priority: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
    ) -> KombuMessage:
        if isinstance(body, str):
            body = body.encode(content_encoding or "utf-8")
        props = dict(properties or {})
        if priority is not None:
            props["priority"] = priority
        return KombuMessage(
            bytes(body), content_type or "", content_encoding or "", dict(headers or {}), props
        )

    def message_to_python(self, raw: RawDelivery) -> Message:
        return Message(raw, channel=self)

    def prepare_queue_arguments(self, arguments: dict[str, Any], **kwargs: Any) -> Any:
        return base.to_rabbitmq_queue_arguments(arguments, **kwargs)

    def basic_publish(
        self,
        message: KombuMessage,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        immediate: bool = False,
        **kwargs: Any,
    ) -> bool | None:
        """Publish; with ``confirm_publish`` (the default) return once the
        broker committed it: True if it routed to a queue, False if nowhere."""
        conn = self.connection
        msg = to_message(exchange or "", routing_key or "", message, mandatory=mandatory)
        wire = conn.wire
        if not conn.confirm_publish and wire.unconfirmed >= _MAX_UNCONFIRMED:
            while wire.unconfirmed > _MAX_UNCONFIRMED // 2:
                wire.read_until(None)
        seq = wire.publish(
            msg.exchange, msg.routing_key, msg.body, msg.props(), wait=conn.confirm_publish
        )
        if not conn.confirm_publish:
            return None
        timeout = kwargs.get("confirm_timeout") or kwargs.get("timeout")
        try:
            return wire.wait_confirm(seq, timeout)
        finally:
            conn.kick()

    # --- topology --------------------------------------------------------------

    def exchange_declare(
        self,
        exchange: str | None = None,
        type: str = "direct",  # kombu's keyword
        durable: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        passive: bool = False,
    ) -> None:
        """Declare an exchange. ``passive`` declares nothing (brokerd cannot
        test an exchange for existence); ``auto_delete`` is ignored."""
        if not exchange or passive:
            return
        if type not in EXCHANGE_TYPES:
            raise InvalidArgument(
                f"brokerd has no {type!r} exchanges (only {', '.join(sorted(EXCHANGE_TYPES))})"
            )
        self.connection.call(lambda req: DeclareExchange(req, exchange, type, bool(durable)))

    def exchange_delete(self, exchange: str, if_unused: bool = False, nowait: bool = False) -> None:
        self.connection.call(lambda req: DeleteExchange(req, exchange))

    def exchange_bind(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("brokerd has no exchange-to-exchange bindings")

    exchange_unbind = exchange_bind

    def queue_declare(
        self,
        queue: str = "",
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = True,
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        **kwargs: Any,
    ) -> queue_declare_ok_t:
        """Declare a queue (a name is made up for ``""``); returns its name,
        ready message count and consumer count."""
        name = queue or f"brokerd.gen-{uuid.uuid4().hex}"
        conn = self.connection
        if passive:
            stats = conn.call(lambda req: QueueStats(req, name))
        else:
            options = queue_options(arguments, auto_delete=auto_delete, exclusive=exclusive)
            reqs = conn.wire.requests(
                [
                    lambda req: DeclareQueue(req, name, bool(durable), options),
                    lambda req: QueueStats(req, name),
                ]
            )
            try:
                conn.wire.wait_reply(reqs[0])
            except BaseException:
                conn.wire.forget(reqs[1])
                conn.kick()
                raise
            stats = conn.wait(reqs[1])
        return queue_declare_ok_t(name, _count(stats, "ready"), _count(stats, "consumers"))

    def queue_stats(self, queue: str) -> dict[str, int]:
        """brokerd's counters of ``queue``: ready, leased, delayed, consumers."""
        stats = self.connection.call(lambda req: QueueStats(req, queue))
        return {key: _count(stats, key) for key in ("ready", "leased", "delayed", "consumers")}

    def queue_bind(
        self,
        queue: str,
        exchange: str = "",
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        **kwargs: Any,
    ) -> None:
        if not exchange:
            return  # every queue is bound to the default exchange
        self.connection.call(lambda req: Bind(req, queue, exchange, routing_key or ""))

    def queue_unbind(
        self,
        queue: str,
        exchange: str = "",
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        **kwargs: Any,
    ) -> None:
        if not exchange:
            return
        self.connection.call(lambda req: Unbind(req, queue, exchange, routing_key or ""))

    def queue_purge(self, queue: str, nowait: bool = False, **kwargs: Any) -> int:
        """Drop the ready messages; returns how many."""
        return int(self.connection.call(lambda req: PurgeQueue(req, queue)) or 0)

    def queue_delete(
        self,
        queue: str,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
        **kwargs: Any,
    ) -> int:
        """Delete the queue; returns the ready and delayed messages dropped.
        ``if_unused``/``if_empty`` are checked just before (not atomically)."""
        if if_unused or if_empty:
            stats = self.queue_stats(queue)
            if if_unused and stats["consumers"]:
                raise PreconditionFailed(f"queue {queue!r} has consumers", 11)
            if if_empty and (stats["ready"] or stats["delayed"] or stats["leased"]):
                raise PreconditionFailed(f"queue {queue!r} is not empty", 11)
        return int(self.connection.call(lambda req: DeleteQueue(req, queue)) or 0)

    # --- consuming -------------------------------------------------------------

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, a_global: bool = False, **kw: Any
    ) -> None:
        """Set the prefetch of this channel's consumers; running ones are
        re-consumed (Cancel + Consume) at the new value."""
        self.prefetch_count = int(prefetch_count or 0)
        prefetch = self._prefetch(no_ack=False)
        for tag, consumer in list(self._consumers.items()):
            if not consumer.no_ack and consumer.prefetch != prefetch and consumer.consumer_id:
                self._reconsume(tag, consumer, prefetch)

    def _prefetch(self, *, no_ack: bool) -> int:
        if no_ack or self.prefetch_count <= 0:
            return MAX_PREFETCH
        return min(self.prefetch_count, MAX_PREFETCH)

    def _reconsume(self, tag: str, consumer: _Consumer, prefetch: int) -> None:
        conn = self.connection
        old = consumer.consumer_id
        lease = conn.lease
        cancel_req, consume_req = conn.wire.requests(
            [
                lambda req: Cancel(req, old),
                lambda req: Consume(req, consumer.queue, prefetch, lease),
            ]
        )
        with contextlib.suppress(NotFound):  # the broker ended it (queue deleted)
            conn.wire.wait_reply(cancel_req)
        new = conn.wait(consume_req)
        # Deliveries of the old consumer read before its Cancel was answered
        # still go to this tag: the route of ``old`` stays.
        consumer.consumer_id = new
        consumer.prefetch = prefetch
        conn.routes[new] = (self, tag)

    def basic_consume(
        self,
        queue: str,
        no_ack: bool = False,
        callback: Callable[[RawDelivery], Any] | None = None,
        consumer_tag: str | None = None,
        on_cancel: Callable[[str], Any] | None = None,
        nowait: bool = False,
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> str:
        tag = consumer_tag or f"brokerd.ctag-{self.channel_id}.{next(self._tags)}"
        if tag in self._consumers:
            raise PreconditionFailed(f"consumer tag {tag!r} is already in use on this channel", 11)
        consumer = _Consumer(queue, no_ack, callback, on_cancel)
        prefetch = self._prefetch(no_ack=no_ack)
        conn = self.connection
        consumer_id = conn.call(lambda req: Consume(req, queue, prefetch, conn.lease))
        consumer.consumer_id = consumer_id
        consumer.prefetch = prefetch
        self._consumers[tag] = consumer
        if no_ack:
            self.no_ack_consumers.add(tag)
        conn.routes[consumer_id] = (self, tag)
        return tag

    def basic_cancel(self, consumer_tag: str, nowait: bool = False) -> None:
        consumer = self._consumers.pop(consumer_tag, None)
        self.no_ack_consumers.discard(consumer_tag)
        if consumer is None:
            return
        conn = self.connection
        try:
            conn.call(lambda req: Cancel(req, consumer.consumer_id))
        except NotFound:
            pass
        finally:
            # Deliveries still unread or undispatched for it go back, uncounted.
            for cid, (channel, tag) in list(conn.routes.items()):
                if channel is self and tag == consumer_tag:
                    del conn.routes[cid]
            conn.unready(self, consumer_tag)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> RawDelivery | None:
        """One ready message of ``queue``, or None (see the module docstring)."""
        conn = self.connection
        wire = conn.wire
        stats = conn.call(lambda req: QueueStats(req, queue))
        if not _count(stats, "ready"):
            return None
        consumer_id = conn.call(lambda req: Consume(req, queue, 1, conn.lease))
        deadline = time.monotonic() + conn.get_timeout
        found = conn.take(consumer_id)
        while found is None and wire.read_until(deadline):
            found = conn.take(consumer_id)
        with contextlib.suppress(NotFound):
            conn.call(lambda req: Cancel(req, consumer_id))
        if found is None:
            found = conn.take(consumer_id)
        conn.kick()
        if found is None:
            return None
        frame = found
        if no_ack:
            conn.settle(ACK, [frame.delivery])
        else:
            self._hold(frame)
        return RawDelivery(frame, "")

    def _hold(self, frame: Deliver) -> None:
        with self._held_lock:
            self._held.add(frame.delivery)
        self.connection.keeper.track(frame.delivery, frame.lease)

    def _release_held(self, ids: list[int]) -> list[int]:
        """Stop holding those of ``ids`` this channel holds; returns them."""
        with self._held_lock:
            held = [i for i in ids if i in self._held]
            self._held.difference_update(held)
        self.connection.keeper.untrack(held)
        return held

    def _release(self, delivery_tag: int, multiple: bool) -> list[int]:
        with self._held_lock:
            if multiple:
                ids = sorted(i for i in self._held if i <= delivery_tag)
                self._held.difference_update(ids)
            else:
                self._held.discard(delivery_tag)
                ids = [delivery_tag]
        self.connection.keeper.untrack(ids)
        return ids

    def basic_ack(self, delivery_tag: int, multiple: bool = False, **kwargs: Any) -> None:
        ids = self._release(delivery_tag, multiple)
        self.connection.settle(ACK, ids)

    def basic_reject(self, delivery_tag: int, requeue: bool = True, **kwargs: Any) -> None:
        """requeue: back to the queue (redelivered); else dead-letter or drop."""
        ids = self._release(delivery_tag, False)
        self.connection.wire.settle(NACK if requeue else REJECT, ids)

    def basic_recover(self, requeue: bool = True, **kwargs: Any) -> None:
        """Return every delivery this channel holds to its queue."""
        with self._held_lock:
            ids = sorted(self._held)
            self._held.clear()
        self.connection.keeper.untrack(ids)
        self.connection.wire.settle(NACK, ids)

    def flow(self, active: bool) -> None:
        raise NotImplementedError("brokerd has no channel flow control; use prefetch")

    def close(self) -> None:
        """Cancel this channel's consumers and requeue what it holds."""
        if not self.is_open:
            return
        self.is_open = False
        conn = self.connection
        try:
            if conn.connected:
                for tag in list(self._consumers):
                    self.basic_cancel(tag)
                self.basic_recover()
        except Transport.connection_errors:
            pass
        finally:
            if self in conn.channels:
                conn.channels.remove(self)

    def _on_broker_cancel(self, tag: str) -> None:
        consumer = self._consumers.pop(tag, None)
        self.no_ack_consumers.discard(tag)
        if consumer is not None and consumer.on_cancel is not None:
            consumer.on_cancel(tag)


def _count(stats: Any, key: str) -> int:
    value = stats.get(key, 0) if isinstance(stats, dict) else 0
    return value if type(value) is int else 0


class TransportConnection:
    """The transport's connection object (what kombu keeps as ``connection.connection``)."""

    def __init__(self, transport: Transport, wire: WireConnection, options: dict[str, Any]) -> None:
        self.client = transport.client
        self.wire = wire
        self.confirm_publish = bool(options.get("confirm_publish", True))
        lease = options.get("lease")
        self.lease: float | None = None if lease is None else float(lease)
        self.get_timeout = float(options.get("get_timeout", 1.0))
        self.channels: list[Channel] = []
        self.channel_ids = itertools.count(1)
        #: consumer id -> (channel, consumer tag)
        self.routes: dict[int, tuple[Channel, str]] = {}
        self.hub: Any = None
        self._binding: HubBinding | None = None
        #: Depth of :meth:`dispatch` calls running (no wake-up needed inside).
        self._dispatching = 0
        #: Seconds spent in consumer callbacks since deliveries were last routed.
        self._busy = 0.0
        #: Routed deliveries not yet handed to their consumer's callback.
        self._ready: deque[tuple[Channel, Callable[[RawDelivery], Any], RawDelivery]] = deque()
        self.keeper = LeaseKeeper(wire)
        wire.on_lost = self._on_lost
        self.keeper.start()

    @property
    def connected(self) -> bool:
        return self.wire.error is None

    def call(self, make: Callable[[int], Any]) -> Any:
        try:
            return self.wire.call(make)
        finally:
            self.kick()

    def wait(self, req: int) -> Any:
        try:
            return self.wire.wait_reply(req)
        finally:
            self.kick()

    def kick(self) -> None:
        """After a blocking call read frames for others: wake the hub to
        dispatch them (the socket will not become readable for them). Not
        needed inside :meth:`dispatch`, which loops until none are left."""
        wire = self.wire
        binding = self._binding
        pending = wire.deliveries or wire.cancelled or self._ready
        if binding is not None and not self._dispatching and pending:
            binding.wake()

    def _woken(self) -> None:
        if self.connected:
            self.dispatch()

    def settle(self, kind: int, ids: list[int]) -> None:
        """Settle ``ids``: deferred to the end of the loop turn on the hub's
        thread (one frame for the turn), written at once elsewhere."""
        binding = self._binding
        if binding is not None and binding.on_loop_thread():
            self.wire.settle_later(kind, ids)
        else:
            self.wire.settle(kind, ids)

    def bind_hub(self, hub: Any) -> None:
        """Register with ``hub`` (the socket's reader is the transport's)."""
        self.unbind_hub()
        self.hub = hub
        self._binding = HubBinding(hub, self._woken, self.wire.flush)

    def unbind_hub(self) -> None:
        binding, self._binding = self._binding, None
        self.hub = None
        if binding is not None:
            binding.close()
            if self.connected:
                self.wire.flush()

    def take(self, consumer_id: int) -> Deliver | None:
        """Remove and return the first read delivery for ``consumer_id``."""
        for delivery in self.wire.deliveries:
            if delivery.consumer == consumer_id:
                self.wire.deliveries.remove(delivery)
                return delivery
        return None

    def dispatch(self, limit: int | None = None) -> int:
        """Hand read deliveries to their consumers (also those read by blocking
        calls the callbacks make), all of them or at most ``limit``; returns
        how many. Re-entrant (a callback may drain events itself)."""
        self._dispatching += 1
        count = 0
        wire = self.wire
        try:
            while count != limit:
                if wire.deliveries or wire.cancelled:
                    self._prepare()
                if not self._ready:
                    return count
                _channel, callback, raw = self._ready.popleft()
                count += 1
                started = time.monotonic()
                try:
                    callback(raw)
                finally:
                    self._busy += time.monotonic() - started
            return count
        finally:
            self._dispatching -= 1

    def unready(self, channel: Channel, consumer_tag: str) -> None:
        """A consumer was cancelled: what was read for it and not handed over
        yet never will be. Those it would have had to settle go back to their
        queue, uncounted (the application never saw them); no_ack ones were
        acked when read and are dropped (AMQP's no_ack semantics)."""
        kept: deque[tuple[Channel, Callable[[RawDelivery], Any], RawDelivery]] = deque()
        dropped: list[int] = []
        for entry in self._ready:
            if entry[0] is channel and entry[2].consumer_tag == consumer_tag:
                dropped.append(entry[2].frame.delivery)
            else:
                kept.append(entry)
        if dropped:
            self._ready = kept
            self.wire.settle(RETURN, channel._release_held(dropped))

    def _prepare(self) -> None:
        """Route what was read: ack no_ack deliveries at once (one Ack),
        lease-track the others, return those nobody consumes, queue callbacks."""
        wire = self.wire
        while wire.cancelled:
            ended = wire.cancelled.popleft()
            route = self.routes.pop(ended.consumer, None)
            if route is not None:
                log.warning("brokerd ended consumer %s: %s", route[1], ended.reason)
                route[0]._on_broker_cancel(route[1])
        batch = list(wire.deliveries)
        wire.deliveries.clear()
        # Callbacks that ran since the last batch (a solo pool runs tasks in
        # them) kept this thread from reading: a delivery that waited in the
        # socket meanwhile may have lost its lease. Check those first.
        busy, self._busy = self._busy, 0.0
        stale = [frame for frame in batch if busy > frame.lease / 2]
        lapsed = self._lapsed(stale) if stale else set()
        acks: list[int] = []
        returns: list[int] = []
        for frame in batch:
            if frame.delivery in lapsed:
                continue
            route = self.routes.get(frame.consumer)
            consumer = route[0]._consumers.get(route[1]) if route is not None else None
            if route is None or consumer is None or consumer.callback is None:
                returns.append(frame.delivery)
                continue
            if consumer.no_ack:
                acks.append(frame.delivery)
            else:
                route[0]._hold(frame)
            self._ready.append((route[0], consumer.callback, RawDelivery(frame, route[1])))
        self.settle(ACK, acks)
        self.settle(RETURN, returns)

    def _lapsed(self, frames: list[Deliver]) -> set[int]:
        """Of deliveries that may have waited unread past their lease, the
        ones the broker took back (checked with an Extend)."""
        lapsed: set[int] = set()
        by_lease: dict[float, list[int]] = {}
        for frame in frames:
            by_lease.setdefault(frame.lease, []).append(frame.delivery)
        for lease, ids in by_lease.items():
            lapsed.update(self.wire.settle(EXTEND, ids, number=lease, wait=True))
        if lapsed:
            log.warning(
                "skipped %d deliveries whose lease ran out before this worker read them "
                "(it was busy); the broker redelivered them elsewhere",
                len(lapsed),
            )
        return lapsed

    def _on_lost(self, kind: int, ids: list[int]) -> None:
        self.keeper.untrack(ids)
        for channel in self.channels:
            with channel._held_lock:
                channel._held.difference_update(ids)
        log.warning(
            "brokerd: %s of deliveries %s came after their lease was lost; "
            "the broker has already returned them to their queue",
            KIND_NAMES.get(kind, "settle"),
            ids[:10],
        )

    def close(self) -> None:
        for channel in list(self.channels):
            channel.close()
        binding, self._binding = self._binding, None
        if binding is not None:
            binding.close()
        self.keeper.stop()
        self.wire.close()

    def detach(self) -> None:
        """After fork: forget the parent's connection without touching it."""
        binding, self._binding = self._binding, None
        if binding is not None:
            binding.detach()
        self.wire.detach()


class Transport(base.Transport):
    """kombu's entry point for ``brokerd://`` URLs (see the module docstring)."""

    default_port = DEFAULT_PORT  # type: ignore[assignment]
    driver_type = "brokerd"
    driver_name = "brokerd"
    #: TLS without ``broker_use_ssl``: the ``brokerds://`` scheme (:class:`TLSTransport`).
    tls = False

    implements = base.Transport.implements.extend(
        asynchronous=True,
        heartbeats=True,
        exchange_type=EXCHANGE_TYPES,
    )

    #: The connection is gone: reconnect (``ConnectionLost`` covers broker
    #: closes, heartbeat timeouts and protocol violations).
    recoverable_connection_errors = (ConnectionLost, OSError, KombuConnectionError)
    connection_errors = (  # type: ignore[assignment]
        *recoverable_connection_errors,
        AuthenticationError,
        ProtocolViolation,
        ResourceLimitExceeded,
    )
    recoverable_channel_errors = ()
    channel_errors = (  # type: ignore[assignment]
        KombuChannelError,
        NotFound,
        PreconditionFailed,
        InvalidArgument,
        Unroutable,
        QueueFull,
        InternalError,
        StorageFailed,
        LeaseLost,
        MessageTooLarge,
    )

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)  # type: ignore[no-untyped-call]
        if client is not None:
            _take_url(client)
        # ``brokerd://token@host`` puts the token in the user name, which
        # kombu prints in as_uri() (Celery's banner, its error logs). As the
        # password it is masked.
        if client is not None and client.userid and not client.password:
            client.password, client.userid = client.userid, None

    #: kombu hands us the URL as given (``conninfo.hostname``) instead of
    #: parsing it itself: its parser cannot read a failover URL's node list
    #: (``brokerd://h1:5673,h2:5673/``); :func:`_target` reads it.
    can_parse_url = True

    def driver_version(self) -> str:
        return "1"

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        """The URL for kombu's ``as_uri()`` (Celery's banner, its logs), from
        the connection's parameters: its secret (token or user password)
        masked unless ``include_password``."""
        c: Any = self.client
        scheme = "brokerds" if self.tls else "brokerd"
        if "://" in uri:
            where = uri.partition("://")[2]  # nodes and vhost; the secret was taken out
        else:
            vhost = c.virtual_host or "/"
            host = f"[{uri}]" if ":" in uri and not uri.startswith("[") else uri
            where = f"{host}:{c.port or DEFAULT_PORT}" + ("" if vhost == "/" else "/" + vhost)
        password = c.password() if callable(c.password) else c.password
        cred = ""
        if password:
            secret = quote(password, safe="") if include_password else mask
            cred = (f"{quote(c.userid, safe='')}:" if c.userid else "") + secret + "@"
        return f"{scheme}://{cred}{where}"

    @property
    def default_connection_params(self) -> dict[str, Any]:
        return {"hostname": "127.0.0.1", "port": DEFAULT_PORT}

    def establish_connection(self) -> TransportConnection:
        """Connect to the active node: a failover URL's nodes in turn, a
        standby's redirect followed once, rounds with jittered backoff for up
        to transport option ``failover_timeout`` seconds (default 30 with
        several nodes, one round with one). Past that, the ``ConnectionLost``
        goes to kombu, whose own retry (Celery's ``broker_connection_retry``,
        a producer's ``retry_policy``) calls this again."""
        conninfo: Any = self.client
        nodes, user, token, password, vhost = _target(conninfo)
        options = dict(conninfo.transport_options or {})
        timeout = options.get("failover_timeout")
        if timeout is None:
            timeout = FAILOVER_TIMEOUT if len(nodes) > 1 else 0.0
        host, port = nodes[0]
        # TLS: brokerds://, or Celery's broker_use_ssl (kombu's ``ssl``).
        context = from_celery(BrokerURL(host, port, tls=self.tls), conninfo.ssl)

        def open_node(host: str, port: int) -> WireConnection:
            return WireConnection.open(
                host,
                port,
                token=token,
                user=user,
                password=password if user is not None else None,
                client_name=f"kombu {socket.gethostname()} pid {os.getpid()}",
                vhost=vhost,
                heartbeat=float(conninfo.heartbeat or 0.0),
                connect_timeout=conninfo.connect_timeout,
                ssl_context=context,
            )

        wire = _open_any(nodes, open_node, float(timeout))
        return TransportConnection(self, wire, options)

    def close_connection(self, connection: TransportConnection) -> None:
        connection.close()

    def _collect(self, connection: TransportConnection | None) -> None:
        if connection is not None:
            connection.detach()

    def create_channel(self, connection: TransportConnection) -> Channel:
        return Channel(connection)

    def close_channel(self, channel: Channel) -> None:
        channel.close()

    def verify_connection(self, connection: TransportConnection) -> bool:
        return connection.connected

    def get_heartbeat_interval(self, connection: TransportConnection) -> float:
        return connection.wire.heartbeat

    def heartbeat_check(self, connection: TransportConnection, rate: int = 2) -> None:
        """Raise if the broker has been silent for two intervals; send a
        heartbeat if we have been (the keeper thread does too)."""
        wire = connection.wire
        if wire.error is not None:
            raise wire.error
        h = wire.heartbeat
        if h > 0 and time.monotonic() - wire.last_recv > 2 * h and not wire.readable_now():
            raise wire._fail(
                HeartbeatTimeout(
                    f"no data from brokerd for more than {2 * h:g}s; connection presumed dead"
                )
            )
        wire.heartbeat_if_idle()

    def qos_semantics_matches_spec(self, connection: TransportConnection) -> bool:
        return True  # prefetch is per consumer, never channel-global

    def register_with_event_loop(self, connection: TransportConnection, loop: Any) -> None:
        connection.bind_hub(loop)
        loop.add_reader(connection.wire.fileno(), self.on_readable, connection, loop)
        connection.kick()

    def unregister_from_event_loop(self, connection: TransportConnection, loop: Any) -> None:
        if connection.hub is loop:
            connection.unbind_hub()

    def on_readable(self, connection: TransportConnection, loop: Any) -> None:
        """Read what the socket holds and dispatch every delivery read so far."""
        connection.wire.read_available()
        connection.dispatch()

    def drain_events(
        self, connection: TransportConnection, timeout: float | None = None, **kwargs: Any
    ) -> None:
        """Hand one delivery to its consumer, waiting for it at most
        ``timeout`` seconds (``socket.timeout`` if none came).

        One per call, as every kombu transport does: kombu's pidbox counts
        replies by calls (``inspect --destination a,b`` stops after two).
        The others stay read, for the next call; the hub dispatches all."""
        if connection.dispatch(1):
            return
        wire = connection.wire
        wire.read_available()
        if connection.dispatch(1):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not wire.read_until(deadline):
                raise TimeoutError("timed out")  # socket.timeout
            if connection.dispatch(1):
                return


def _take_url(conninfo: Any) -> None:
    """kombu left the URL as given in ``conninfo.hostname`` (``can_parse_url``):
    move its secret to ``userid``/``password`` and its vhost to
    ``virtual_host``, as kombu's own parsing would, so ``info()`` (Celery's
    ``inspect stats``) never shows the secret. One node becomes ``hostname``
    and ``port`` as before; a failover URL stays a URL, without its secret."""
    raw = conninfo.hostname
    if not isinstance(raw, str) or "://" not in raw:
        return
    scheme, _, rest = raw.partition("://")
    for stop in "?#":
        rest = rest.partition(stop)[0]
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        name, colon, secret = userinfo.partition(":")
        if conninfo.userid is None and conninfo.password is None:
            conninfo.userid = unquote(name) or None
            conninfo.password = unquote(secret) if colon else None
    if slash and path:
        conninfo.virtual_host = unquote(path)
    try:
        nodes = parse_url(f"brokerd://{netloc}").candidates()
    except ValueError as exc:
        raise ValueError(f"invalid broker URL {redact(raw)!r}: {exc}") from None
    conninfo.port = nodes[0].port
    if len(nodes) == 1:
        conninfo.hostname = nodes[0].host  # as kombu has it: an IPv6 one without brackets
    else:
        conninfo.hostname = f"{scheme}://{netloc}" + (f"/{path}" if slash and path else "")


def _target(
    conninfo: Any,
) -> tuple[list[tuple[str, int]], str | None, str | None, str | None, str]:
    """The nodes (``(host, port)``), user, token, password and vhost of
    kombu's connection parameters: the URL itself in ``conninfo.hostname``
    (``can_parse_url``), or separate ``hostname``, ``port``, ``userid``,
    ``password`` and ``virtual_host`` given without a URL. The URL's path is
    the vhost as kombu reads it (``/name``; ``//`` is ``/``; none: ``/``); a
    query is ignored."""
    raw = conninfo.hostname or "127.0.0.1"
    userid = conninfo.userid
    password = conninfo.password
    vhost = conninfo.virtual_host or "/"
    if callable(password):
        password = password()
    if "://" in raw:
        rest = raw.partition("://")[2]
        for stop in "?#":
            rest = rest.partition(stop)[0]
        netloc, slash, path = rest.partition("/")
        if slash and path:
            vhost = unquote(path)
        if "@" in netloc:
            userinfo, _, netloc = netloc.rpartition("@")
            name, colon, secret = userinfo.partition(":")
            if userid is None and password is None:
                userid = unquote(name) or None
                password = unquote(secret) if colon else None
        hosts = netloc
    else:
        hosts = f"[{raw}]" if ":" in raw and not raw.startswith("[") else raw
        if conninfo.port is not None:
            hosts = f"{hosts}:{conninfo.port}"
    try:
        parsed = parse_url(f"brokerd://{hosts}")
    except ValueError as exc:
        raise ValueError(f"invalid broker URL {redact(raw)!r}: {exc}") from None
    nodes = [(n.host, n.port) for n in parsed.candidates()]
    # ``user:password@`` is a user of the broker; a lone secret is its token.
    if userid and password:
        return nodes, userid, None, password, vhost
    return nodes, None, password or userid or None, None, vhost


def _open_any(
    nodes: list[tuple[str, int]],
    open_node: Callable[[str, int], WireConnection],
    timeout: float,
) -> WireConnection:
    """The first node (or the one a standby redirects to) that accepts us;
    blocking twin of :func:`brokerd_client.failover.connect_any`."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        last: BrokerError | None = None
        for host, port in nodes:
            try:
                return open_node(host, port)
            except BrokerError as exc:
                if not retryable(exc):
                    raise
                last = exc
                if not isinstance(exc, Redirected) or not exc.address:
                    continue
                try:
                    target = BrokerURL(host, port).moved_to(exc.address)
                except ValueError:
                    continue
            try:
                return open_node(target.host, target.port)
            except BrokerError as exc:
                if not retryable(exc):
                    raise
                last = exc
        assert last is not None
        pause = backoff(attempt)
        if time.monotonic() + pause >= deadline:
            raise last
        log.info("no active brokerd node yet (%s); trying again in %.2f s", last, pause)
        time.sleep(pause)
        attempt += 1


class TLSTransport(Transport):
    """kombu's entry point for ``brokerds://`` URLs: the same transport over TLS,
    the broker's certificate verified against the URL's host (CA and client
    certificate from ``broker_use_ssl``)."""

    tls = True
