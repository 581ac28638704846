"""The broker core: exchanges, queues, consumers, leases and delays.

No sockets, no event loop, no threads. Sessions call in with decoded requests
and receive their effects through the ``Peer`` interface; time comes from a
``Clock`` and durability from a ``Store``. Each call records its row changes
in the current ``Batch``; the server commits one batch per event-loop tick
(``flush``) and publisher confirms follow that commit. This keeps the hot path
free of awaits and per-message tasks, and lets unit tests drive every rule
with a fake clock.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from brokerd_protocol import MAX_REJECT_REASON, ErrorCode

from .clock import Clock
from .errors import BrokerError, invalid, not_found
from .leases import LeaseWheel
from .memory import DEFAULT_MEMORY_LIMIT, MemoryBudget
from .message import Message
from .options import MAX_LEASE, PublishProps, QueueOptions, check_name, parse_props
from .queues import WINDOW, Consumer, Delivery, QueueState
from .routing import EXCHANGE_TYPES, Router, make_router
from .stats import ATTEMPT_BOUNDS, LATENCY_BOUNDS, Buckets
from .storage.base import Batch, Recovered, Store

log = logging.getLogger("brokerd.broker")

#: Durable delayed messages kept in memory at most; the rest wait on disk.
DELAYED_WINDOW = 10_000
MAX_PREFETCH = 65_535
#: Seconds between sweeps for expired messages at queue heads.
TTL_SWEEP = 1.0

#: What a publish in a batch needs from the commit (``Batch.confirms``):
#: unroutable and transient-only publishes need nothing stored.
UNROUTED, IN_MEMORY, STORED = 0, 1, 2


class Peer(Protocol):
    """What the core needs from a connection (implemented by the session)."""

    writable: bool

    def send_delivery(self, consumer: Consumer, delivery: Delivery) -> None: ...

    def send_confirms(self, routed: list[int], unroutable: list[int]) -> None: ...

    def send_publish_error(self, seq: int, code: ErrorCode, message: str) -> None: ...

    def send_consumer_cancelled(self, consumer_id: int, reason: str) -> None: ...


class Connection:
    """The core's per-connection state: its consumers and leased deliveries."""

    __slots__ = (
        "closed",
        "consumers",
        "deliveries",
        "next_consumer",
        "next_delivery",
        "peer",
        "stalled",
    )

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.consumers: dict[int, Consumer] = {}
        self.deliveries: dict[int, Delivery] = {}
        self.next_consumer = 1
        self.next_delivery = 1
        self.closed = False
        #: A lease of this connection expired and nothing has arrived from it
        #: since: its consumers get no deliveries until it shows life
        #: (``Broker.heard_from``), so a frozen process does not take back
        #: the messages it just lost, burning their attempts.
        self.stalled = False

    @property
    def writable(self) -> bool:
        return self.peer.writable


@dataclass(slots=True)
class Exchange:
    name: str
    type: str
    durable: bool
    router: Router


@dataclass
class Counters:
    """Monotonic event counts read by the metrics endpoint."""

    published: int = 0
    confirmed: int = 0
    routed: int = 0
    unroutable: int = 0
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    nacked: int = 0
    rejected: int = 0
    expired: int = 0
    #: Leases that ran out (each returned its message and stalled its connection).
    leases_expired: int = 0
    #: Publishes refused because their commit failed (nothing stored or delivered).
    store_failed: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    #: Attempt number of each delivery (1 = first delivery).
    attempts: Buckets = field(default_factory=lambda: Buckets(ATTEMPT_BOUNDS))
    #: From the first publish of a commit group to its confirm.
    publish_confirm: Buckets = field(default_factory=lambda: Buckets(LATENCY_BOUNDS))


class Broker:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        on_dirty: Callable[[], None] | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ):
        self.store = store
        self.clock = clock
        #: Body bytes of ready and delayed messages held in memory (see memory.py).
        self.memory = MemoryBudget(memory_limit)
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, QueueState] = {}
        self.counters = Counters()
        self.batch = Batch(self._touch)
        self._on_dirty = on_dirty or (lambda: None)
        self._dirty = False
        self._next_id = 1
        self._next_seq = 1
        self.leases: LeaseWheel[Delivery] = LeaseWheel()
        # Delayed messages due soonest: (ready_at, id, message).
        self._delayed: list[tuple[float, int, Message]] = []
        #: Durable delayed messages with (ready_at, id) <= horizon are all in _delayed.
        self._horizon: tuple[float, int] = (math.inf, 0)
        self._delayed_on_disk = 0
        self._delayed_loading = False
        self._durable_delayed_in_mem = 0
        #: Body bytes of the durable delayed messages in _delayed.
        self._durable_delayed_bytes = 0
        self._delayed_load_wanted = False
        #: Queues that asked for a page this tick (issued by ``flush``).
        self._page_requests: dict[int, QueueState] = {}
        self._last_sweep = 0.0
        #: Messages of this tick's batch that enter their queues on its commit:
        #: (queue, queue epoch at publish, message).
        self._arrivals: list[tuple[QueueState, int, Message]] = []
        #: Batches handed to the store so far; a read issued at generation g
        #: sees the rows of every batch up to g.
        self._generation = 0
        #: Generation at which the delayed load in flight was issued.
        self._delayed_load_gen = 0
        #: Body bytes in batches handed to the store and not yet committed.
        self._inflight_bytes = 0
        #: Durable delayed messages added while a load from disk was in flight.
        self._added_while_loading = 0
        #: Durable queues deleted while a delayed load was in flight: that load
        #: may return their rows, already uncounted by ``delete_queue``.
        self._deleted_while_loading: set[str] = set()
        self.commit_listeners: list[Callable[[], None]] = []
        #: Consulted before each delivery when set: a reason string means the
        #: message is settled without delivery (the task layer's revocations).
        self.delivery_filter: Callable[[Message], str | None] | None = None
        #: Set by a graceful stop: connections it closes do not count as
        #: failed deliveries (a stop, like a crash, burns no attempt).
        self.stopping = False

    # --- start-up -------------------------------------------------------------

    def restore(self, rec: Recovered) -> None:
        """Rebuild state from storage; message bodies stay on disk until paged."""
        self._next_id = rec.max_id + 1
        self._next_seq = rec.max_seq + 1
        for name, etype in rec.exchanges:
            self.exchanges[name] = Exchange(name, etype, True, make_router(etype))
        for qr in rec.queues:
            self.queues[qr.name] = QueueState(
                qr.name, True, QueueOptions.from_wire(qr.options), self.memory
            )
        for queue, exchange, key in rec.bindings:
            ex = self.exchanges.get(exchange)
            if ex is not None and queue in self.queues:
                ex.router.bind(queue, key)
        for (qname, prio), count in rec.ready_counts.items():
            q = self.queues.get(qname)
            if q is not None:
                q.disk[prio] += count
        for qname, count in rec.delayed_counts.items():
            q = self.queues.get(qname)
            if q is not None:
                q.delayed += count
                self._delayed_on_disk += count
        if self._delayed_on_disk:
            self._horizon = (-math.inf, 0)
            self._load_delayed()
        for q in self.queues.values():
            self._maybe_page(q)

    # --- batching -------------------------------------------------------------

    @property
    def uncommitted_bytes(self) -> int:
        """Body bytes bound for the store and not yet committed (flow control)."""
        return self._inflight_bytes + self.batch.nbytes

    def _touch(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._on_dirty()

    def flush(self) -> None:
        """Hand this tick's batch to the store, then issue the reads the tick
        asked for; confirms go out on commit.

        Reads are issued here, never in the middle of an operation, so a
        publish that fans out to several queues always lands in one batch, and
        a read submitted after the commit sees every row the tick wrote.
        """
        self._dirty = False
        batch = self.batch
        if batch:
            self.batch = Batch(self._touch)
            arrivals, self._arrivals = self._arrivals, []
            self._inflight_bytes += batch.nbytes
            self._generation = gen = self._generation + 1
            self.store.commit(batch, lambda err: self._committed(batch, arrivals, gen, err))
        if self._page_requests:
            requests, self._page_requests = self._page_requests, {}
            for q in requests.values():
                self._request_page(q)
        if self._delayed_load_wanted:
            self._delayed_load_wanted = False
            self._request_delayed()

    def _committed(
        self,
        batch: Batch,
        arrivals: list[tuple[QueueState, int, Message]],
        generation: int,
        error: BaseException | None,
    ) -> None:
        self._inflight_bytes -= batch.nbytes
        counters = self.counters
        if arrivals:
            self._arrive(arrivals, generation, error is None)
        if error is None and batch.first_publish:
            counters.publish_confirm.observe(time.perf_counter() - batch.first_publish)
        by_conn: dict[Connection, tuple[list[int], list[int]]] = {}
        for conn, seq, outcome in batch.confirms:
            if outcome == STORED and error is not None:
                # Refused: none of its messages entered a queue (``_arrive``),
                # so a client that publishes it again creates no duplicate.
                counters.store_failed += 1
                if not conn.closed:
                    conn.peer.send_publish_error(
                        seq,
                        ErrorCode.STORAGE_FAILED,
                        f"storage failed, nothing was stored: {error}",
                    )
                continue
            # Transient-only and unroutable publishes needed no commit.
            if outcome:
                counters.routed += 1
            if conn.closed:
                continue
            entry = by_conn.get(conn)
            if entry is None:
                entry = by_conn[conn] = ([], [])
            entry[0 if outcome else 1].append(seq)
        for conn, (routed_seqs, unroutable) in by_conn.items():
            counters.confirmed += len(routed_seqs) + len(unroutable)
            conn.peer.send_confirms(routed_seqs, unroutable)
        for callback in batch.on_commit:
            callback(error)
        for listener in self.commit_listeners:
            listener()

    def _arrive(
        self, arrivals: list[tuple[QueueState, int, Message]], generation: int, committed: bool
    ) -> None:
        """Messages of a committed batch enter their queues; those of a failed
        one are dropped. A purge or delete since the publish took them already."""
        touched: dict[int, QueueState] = {}
        for q, epoch, m in arrivals:
            if q.deleted:
                continue
            if m.ready_at is None:
                if q.epoch != epoch:  # purged since
                    continue
                q.arriving.popleft()
                if committed:
                    q.push(m)
                    touched[id(q)] = q
            else:
                q.arriving_delayed -= 1
                if committed:
                    self._add_arrived_delayed(q, m, generation)
        for q in touched.values():
            self._enforce_max_length(q)
            if q.consumers:
                self._dispatch(q)
            else:
                self._maybe_page(q)

    def _new_id(self) -> int:
        n = self._next_id
        self._next_id = n + 1
        return n

    def _new_seq(self) -> int:
        n = self._next_seq
        self._next_seq = n + 1
        return n

    # --- topology -------------------------------------------------------------

    def declare_exchange(self, name: str, etype: str, durable: bool) -> None:
        check_name("exchange", name)
        if etype not in EXCHANGE_TYPES:
            raise invalid(f"exchange type must be one of {', '.join(sorted(EXCHANGE_TYPES))}")
        ex = self.exchanges.get(name)
        if ex is not None:
            if ex.type != etype or ex.durable != durable:
                raise BrokerError(
                    ErrorCode.PRECONDITION_FAILED,
                    f"exchange {name!r} exists as {'durable' if ex.durable else 'transient'} "
                    f"{ex.type}",
                )
            return
        self.exchanges[name] = Exchange(name, etype, durable, make_router(etype))
        if durable:
            self.batch.put_exchange(name, etype)

    def delete_exchange(self, name: str) -> None:
        if not name:
            raise invalid("the default exchange cannot be deleted")
        ex = self.exchanges.pop(name, None)
        if ex is None:
            raise not_found(f"no exchange {name!r}")
        if ex.durable:
            self.batch.delete_exchange(name)

    def declare_queue(self, name: str, durable: bool, raw_options: dict[str, Any]) -> None:
        check_name("queue", name)
        options = QueueOptions.from_wire(raw_options)
        q = self.queues.get(name)
        if q is not None:
            if q.durable != durable or q.options != options:
                raise BrokerError(
                    ErrorCode.PRECONDITION_FAILED,
                    f"queue {name!r} exists with different settings "
                    f"(durable={q.durable}, {q.options.to_wire()})",
                )
            return
        self.queues[name] = QueueState(name, durable, options, self.memory)
        if durable:
            self.batch.put_queue(name, options.to_wire())

    def delete_queue(self, name: str) -> int:
        q = self._queue(name)
        del self.queues[name]
        q.deleted = True
        count = q.ready_count + len(q.arriving) + q.arriving_delayed + q.delayed
        q.clear_ready()
        if q.delayed:
            kept = [e for e in self._delayed if e[2].queue != name]
            in_mem = len(self._delayed) - len(kept)
            gone = sum(len(e[2].body) for e in self._delayed if e[2].queue == name)
            self.memory.used -= gone
            if q.durable:
                self._durable_delayed_in_mem -= in_mem
                self._durable_delayed_bytes -= gone
                self._delayed_on_disk = max(0, self._delayed_on_disk - (q.delayed - in_mem))
                if self._delayed_loading:
                    self._deleted_while_loading.add(name)
            heapq.heapify(kept)
            self._delayed = kept
        for c in list(q.consumers):
            self._drop_consumer(c)
            c.conn.peer.send_consumer_cancelled(c.id, f"queue {name!r} was deleted")
        for ex in self.exchanges.values():
            ex.router.unbind_queue(name)
        if q.durable:
            self.batch.delete_queue(name)
        return count

    def purge_queue(self, name: str) -> int:
        """Drop the queue's ready messages; leased and delayed ones stay."""
        q = self._queue(name)
        count = q.ready_count + len(q.arriving)
        cursors = list(q.cursor)
        dropped = q.clear_ready()
        dropped.extend(q.arriving)
        q.arriving.clear()
        if q.durable:
            for m in dropped:
                self.batch.delete(m.id)
            for p in range(len(cursors)):
                self.batch.purge_ready(name, p, cursors[p])
        return count

    def bind(self, queue: str, exchange: str, key: str) -> None:
        q = self._queue(queue)
        ex = self._exchange_for_binding(exchange)
        if ex.router.bind(queue, key) and ex.durable and q.durable:
            self.batch.put_binding(queue, exchange, key)

    def unbind(self, queue: str, exchange: str, key: str) -> None:
        self._queue(queue)
        ex = self._exchange_for_binding(exchange)
        if not ex.router.unbind(queue, key):
            raise not_found(f"no binding of {queue!r} to {exchange!r} with key {key!r}")
        if ex.durable:
            self.batch.delete_binding(queue, exchange, key)

    def _exchange_for_binding(self, name: str) -> Exchange:
        if not name:
            raise invalid("queues are bound to the default exchange implicitly")
        ex = self.exchanges.get(name)
        if ex is None:
            raise not_found(f"no exchange {name!r}")
        return ex

    def _queue(self, name: str) -> QueueState:
        q = self.queues.get(name)
        if q is None:
            raise not_found(f"no queue {name!r}")
        return q

    def queue_stats(self, name: str) -> dict[str, Any]:
        return self._queue(name).stats()

    # --- publishing -----------------------------------------------------------

    def route(self, exchange: str, key: str) -> list[QueueState]:
        if not exchange:
            q = self.queues.get(key)
            return [q] if q is not None else []
        ex = self.exchanges.get(exchange)
        if ex is None:
            raise not_found(f"no exchange {exchange!r}")
        queues = self.queues
        return [queues[n] for n in ex.router.route(key) if n in queues]

    def publish(
        self,
        conn: Connection,
        seq: int,
        exchange: str,
        key: str,
        body: bytes,
        raw_props: dict[str, Any],
    ) -> None:
        """Accept one message; raises BrokerError if nothing of it was stored."""
        counters = self.counters
        counters.published += 1
        if not self.batch.first_publish:
            self.batch.first_publish = time.perf_counter()
        now = self.clock.now()
        props = parse_props(raw_props, now) if raw_props else _PLAIN
        targets = self.route(exchange, key)
        if not targets:
            if props.mandatory:
                raise BrokerError(ErrorCode.UNROUTABLE, f"no queue bound for {key!r}")
            counters.unroutable += 1
            self.batch.confirm(conn, seq, UNROUTED)
            return
        durable = False
        for q in targets:
            limit = q.options.max_length
            if (
                limit is not None
                and q.options.overflow == "reject_publish"
                and q.ready_count + len(q.arriving) >= limit
            ):
                raise BrokerError(ErrorCode.QUEUE_FULL, f"queue {q.name!r} is full ({limit})")
            if not q.durable and self.memory.full():
                raise self._memory_full(q)
            durable = durable or q.durable
        timestamp = int(now * 1000)
        batch = self.batch
        arrivals = self._arrivals
        for q in targets:
            ttl = props.ttl
            if q.options.message_ttl is not None:
                ttl = q.options.message_ttl if ttl is None else min(ttl, q.options.message_ttl)
            m = Message(
                self._new_id(),
                q.name,
                exchange,
                key,
                body,
                props.headers,
                props.message_id,
                props.priority,
                timestamp,
                None if ttl is None else now + ttl,
            )
            if props.ready_at is not None:
                m.ready_at = props.ready_at
            else:
                m.seq = self._new_seq()
            if durable:
                # Held back until the batch commits (``_arrive``): a publish
                # that is refused must not have been delivered.
                if q.durable:
                    batch.insert(m)
                if m.seq is not None:
                    q.arriving.append(m)
                else:
                    q.arriving_delayed += 1
                arrivals.append((q, q.epoch, m))
            elif m.ready_at is not None:
                self._add_delayed(q, m)
            else:
                # Transient queues only: nothing to store, nothing can fail.
                q.push(m)
                self._enforce_max_length(q)
                if q.consumers:
                    self._dispatch(q)
        batch.confirm(conn, seq, STORED if durable else IN_MEMORY)

    def _memory_full(self, q: QueueState) -> BrokerError:
        """A transient queue cannot move messages to disk: at the memory limit
        it takes no more until consumers or expiry free some."""
        return BrokerError(
            ErrorCode.QUEUE_FULL,
            f"transient queue {q.name!r} refused the message: the broker holds "
            f"{self.memory.used} bytes of messages in memory, its memory limit is "
            f"{self.memory.limit} (durable queues keep the excess on disk)",
        )

    def _enforce_max_length(self, q: QueueState) -> None:
        limit = q.options.max_length
        if limit is None or q.options.overflow != "drop_head":
            return
        # max_length bounds ready messages, as in RabbitMQ: delayed ones count
        # once they fall due.
        excess = q.ready_count - limit
        while excess > 0:
            victim = q.pop_tail_victim()
            if victim is None:
                # The oldest ready messages are on disk: drop them once paged in.
                q.drops_owed = min(q.drops_owed + excess, q.on_disk)
                return
            self._dead_letter(q, victim, "max_length")
            excess -= 1

    def _pay_drops(self, q: QueueState) -> None:
        """Drop messages owed to max_length once they are in memory to drop."""
        while q.drops_owed and q.mem:
            victim = q.pop_tail_victim()
            assert victim is not None
            q.drops_owed -= 1
            self._dead_letter(q, victim, "max_length")

    # --- delayed messages ---------------------------------------------------

    def _add_delayed(self, q: QueueState, m: Message) -> None:
        q.delayed += 1
        assert m.ready_at is not None
        entry = (m.ready_at, m.id, m)
        if not q.durable:
            heapq.heappush(self._delayed, entry)
            self.memory.used += len(m.body)
            return
        if self._delayed_loading or (m.ready_at, m.id) <= self._horizon:
            self._push_durable_delayed(entry)
            if self._delayed_loading:
                self._added_while_loading += 1
            elif (
                self._durable_delayed_in_mem > DELAYED_WINDOW
                or self._durable_delayed_bytes > self.memory.window
            ):
                self._trim_delayed()
        else:
            self._delayed_on_disk += 1

    def _add_arrived_delayed(self, q: QueueState, m: Message, generation: int) -> None:
        """A delayed message whose batch just committed. A delayed load issued
        after that batch reads its row, so beyond the horizon it counts as on
        disk and arrives with the load (kept in memory too, it would load twice)."""
        assert m.ready_at is not None
        if (
            q.durable
            and self._delayed_loading
            and self._delayed_load_gen >= generation
            and (m.ready_at, m.id) > self._horizon
        ):
            q.delayed += 1
            self._delayed_on_disk += 1
            return
        self._add_delayed(q, m)

    def _push_durable_delayed(self, entry: tuple[float, int, Message]) -> None:
        heapq.heappush(self._delayed, entry)
        n = len(entry[2].body)
        self._durable_delayed_in_mem += 1
        self._durable_delayed_bytes += n
        self.memory.used += n

    def _trim_delayed(self) -> None:
        """Keep the soonest half of the durable delayed window (by count and by
        bytes, at least one message) in memory; the rest is on disk already and
        reloads when its turn comes."""
        entries = sorted(self._delayed)
        keep: list[tuple[float, int, Message]] = []
        durable_kept = kept_bytes = 0
        count_cap, bytes_cap = DELAYED_WINDOW // 2, self.memory.window // 2
        horizon = self._horizon
        full = False
        for entry in entries:
            q = self.queues.get(entry[2].queue)
            if q is None or not q.durable:
                keep.append(entry)
                continue
            n = len(entry[2].body)
            full = full or (
                durable_kept > 0 and (durable_kept >= count_cap or kept_bytes + n > bytes_cap)
            )
            if full:
                self._delayed_on_disk += 1
                continue
            keep.append(entry)
            durable_kept += 1
            kept_bytes += n
            horizon = (entry[0], entry[1])
        self._horizon = horizon
        self._replace_delayed(keep)

    def _replace_delayed(self, keep: list[tuple[float, int, Message]]) -> None:
        """Make ``keep`` the delayed heap; durable entries left out are on disk.
        Recounts the bytes and durable entries it holds."""
        before = sum(len(e[2].body) for e in self._delayed)
        heapq.heapify(keep)
        self._delayed = keep
        held = durable_count = durable_bytes = 0
        for _, _, m in keep:
            n = len(m.body)
            held += n
            q = self.queues.get(m.queue)
            if q is not None and q.durable:
                durable_count += 1
                durable_bytes += n
        self.memory.used += held - before
        self._durable_delayed_in_mem = durable_count
        self._durable_delayed_bytes = durable_bytes

    def _load_delayed(self) -> None:
        if self._delayed_loading or self._delayed_load_wanted or not self._delayed_on_disk:
            return
        # Few enough in memory, counted in messages (callers check) and in bytes.
        if self._durable_delayed_bytes >= self.memory.low_water or not self._delayed_page_bytes():
            return
        self._delayed_load_wanted = True
        self._touch()

    def _delayed_page_bytes(self) -> int:
        """Body bytes the next delayed load may bring in. With no room left it
        still reads one message once no durable one is in memory: those on disk
        all come later than any in memory, so only then can one be due."""
        room = min(self.memory.window // 2, self.memory.room())
        if room <= 0 and not self._durable_delayed_in_mem:
            return 1
        return max(0, room)

    def _request_delayed(self) -> None:
        if self._delayed_loading or not self._delayed_on_disk:
            return
        max_bytes = self._delayed_page_bytes()
        if not max_bytes:
            return
        self._delayed_loading = True
        self._delayed_load_gen = self._generation
        after = self._horizon
        limit = DELAYED_WINDOW // 2
        self.memory.used += max_bytes  # reserved until the rows arrive
        self.store.load_delayed(
            after,
            limit,
            lambda r: self._delayed_loaded(r, limit, max_bytes),
            max_bytes=max_bytes,
        )

    def _delayed_loaded(
        self, result: list[Message] | BaseException, limit: int, max_bytes: int
    ) -> None:
        self._delayed_loading = False
        self.memory.used -= max_bytes
        deleted, self._deleted_while_loading = self._deleted_while_loading, set()
        if isinstance(result, BaseException):
            log.error("loading delayed messages failed: %s", result)
        else:
            # Rows of a queue deleted while the load ran belong to the old
            # queue even if one of the same name exists now; delete_queue
            # already took them off the disk count.
            uncounted = 0
            read = 0
            for m in result:
                assert m.ready_at is not None
                read += len(m.body)
                if m.queue in deleted:
                    uncounted += 1
                    continue
                if m.queue not in self.queues:  # defensive: no such rows remain
                    continue
                self._push_durable_delayed((m.ready_at, m.id, m))
            self._delayed_on_disk = max(0, self._delayed_on_disk - (len(result) - uncounted))
            if len(result) < limit and read < max_bytes:
                # The store stopped for want of rows, not of room: all loaded.
                self._horizon = (math.inf, 0)
                self._delayed_on_disk = 0
            elif result:
                last = result[-1]
                assert last.ready_at is not None
                self._horizon = (last.ready_at, last.id)
        if self._added_while_loading:
            self._added_while_loading = 0
            if self._horizon[0] != math.inf:
                self._evict_beyond_horizon()

    def _evict_beyond_horizon(self) -> None:
        """Durable delayed messages added while a load was in flight may lie
        beyond the new horizon. They are on disk, so drop them from memory and
        let them load in their turn: kept, they would load a second time, and
        they would hide earlier ones still on disk from the release check."""
        horizon = self._horizon
        keep: list[tuple[float, int, Message]] = []
        for entry in self._delayed:
            q = self.queues.get(entry[2].queue)
            if q is not None and q.durable and (entry[0], entry[1]) > horizon:
                self._delayed_on_disk += 1
            else:
                keep.append(entry)
        self._replace_delayed(keep)

    def _release_due(self, now: float) -> None:
        heap = self._delayed
        touched: set[QueueState] = set()
        while heap and heap[0][0] <= now:
            _, _, m = heapq.heappop(heap)
            n = len(m.body)
            self.memory.used -= n
            q = self.queues.get(m.queue)
            if q is None:
                continue
            q.delayed -= 1
            if q.durable:
                self._durable_delayed_in_mem -= 1
                self._durable_delayed_bytes -= n
            m.ready_at = None
            m.seq = self._new_seq()
            if q.durable:
                self.batch.update(m)
            q.push(m)
            touched.add(q)
        for q in touched:
            self._enforce_max_length(q)
            self._dispatch(q)
        if self._delayed_on_disk and self._durable_delayed_in_mem < DELAYED_WINDOW // 4:
            self._load_delayed()

    # --- consuming ------------------------------------------------------------

    def check_consume(
        self, queue: str, prefetch: int, lease: float | None
    ) -> tuple[QueueState, float]:
        q = self._queue(queue)
        if not 1 <= prefetch <= MAX_PREFETCH:
            raise invalid(f"prefetch must be between 1 and {MAX_PREFETCH}")
        if lease is None:
            lease = q.options.lease
        elif not 0.001 <= lease <= MAX_LEASE:
            raise invalid(f"lease must be between 0.001 and {MAX_LEASE:g} seconds")
        return q, lease

    def consume(self, conn: Connection, queue: str, prefetch: int, lease: float | None) -> int:
        """Start a consumer; its id is the connection's next consumer number."""
        q, lease = self.check_consume(queue, prefetch, lease)
        cid = conn.next_consumer
        conn.next_consumer += 1
        c = Consumer(cid, conn, q, prefetch, lease)
        conn.consumers[cid] = c
        q.consumers.append(c)
        self._dispatch(q)
        return cid

    def cancel(self, conn: Connection, consumer_id: int) -> None:
        c = conn.consumers.get(consumer_id)
        if c is None:
            raise not_found(f"no consumer {consumer_id}")
        self._drop_consumer(c)

    def _drop_consumer(self, c: Consumer) -> None:
        c.active = False
        c.conn.consumers.pop(c.id, None)
        with contextlib.suppress(ValueError):
            c.queue.consumers.remove(c)

    def _dispatch(self, q: QueueState) -> None:
        """Hand ready messages to consumers with credit, round-robin."""
        if q.drops_owed:
            self._pay_drops(q)
        if q.consumers and q.mem:
            now = self.clock.now()
            counters = self.counters
            while q.mem:
                c = q.next_consumer()
                if c is None:
                    break
                m = q.pop()
                assert m is not None
                if m.expires_at is not None and m.expires_at <= now:
                    self._expire(q, m)
                    continue
                if self.delivery_filter is not None and self._filtered(q, m):
                    continue
                conn = c.conn
                did = conn.next_delivery
                conn.next_delivery = did + 1
                d = Delivery(did, m, c, q, now + c.lease)
                conn.deliveries[did] = d
                c.unacked += 1
                q.leased += 1
                self.leases.add(d, d.deadline)
                counters.delivered += 1
                counters.attempts.observe(m.attempts + 1)
                if m.attempts:
                    counters.redelivered += 1
                conn.peer.send_delivery(c, d)
        self._maybe_page(q)

    def _filtered(self, q: QueueState, m: Message) -> bool:
        assert self.delivery_filter is not None
        reason = self.delivery_filter(m)
        if reason is None:
            return False
        self.counters.dropped[reason] = self.counters.dropped.get(reason, 0) + 1
        if q.durable:
            self.batch.delete(m.id)
        return True

    def _maybe_page(self, q: QueueState) -> None:
        if not q.wants_page():
            return
        q.loading = True
        self._page_requests[id(q)] = q
        self._touch()

    def _request_page(self, q: QueueState) -> None:
        if q.deleted or not q.loading:
            return
        # Sized now, not when asked for: other pages may have used the room since.
        max_bytes = q.page_bytes()
        if not q.on_disk or not max_bytes:
            q.loading = False
            return
        p = q.page_priority()
        epoch = q.epoch
        limit = WINDOW - q.mem
        self.memory.used += max_bytes  # reserved until the rows arrive
        self.store.load_ready(
            q.name,
            p,
            q.cursor[p],
            limit,
            lambda r: self._paged(q, p, epoch, max_bytes, r),
            max_bytes=max_bytes,
        )

    def _paged(
        self,
        q: QueueState,
        p: int,
        epoch: int,
        reserved: int,
        result: list[Message] | BaseException,
    ) -> None:
        self.memory.used -= reserved
        if q.epoch != epoch or q.deleted:
            return
        q.loading = False
        if isinstance(result, BaseException):
            log.error("paging queue %r failed: %s", q.name, result)
            return
        q.add_page(p, result)
        self._dispatch(q)

    # --- settling deliveries ------------------------------------------------

    def _take(self, conn: Connection, ids: Iterable[int], lost: list[int]) -> list[Delivery]:
        taken: list[Delivery] = []
        deliveries = conn.deliveries
        leases = self.leases
        for did in ids:
            d = deliveries.pop(did, None)
            if d is None:
                lost.append(did)
                continue
            leases.discard(d)
            d.consumer.unacked -= 1
            d.queue.leased -= 1
            taken.append(d)
        return taken

    def _redispatch(self, taken: list[Delivery]) -> None:
        seen: set[QueueState] = set()
        for d in taken:
            q = d.queue
            if q not in seen:
                seen.add(q)
                if not q.deleted:
                    self._dispatch(q)

    def ack(self, conn: Connection, ids: list[int]) -> list[int]:
        lost: list[int] = []
        taken = self._take(conn, ids, lost)
        batch = self.batch
        for d in taken:
            if d.queue.durable and not d.queue.deleted:
                batch.delete(d.message.id)
        self.counters.acked += len(taken)
        self._redispatch(taken)
        return lost

    def nack(
        self,
        conn: Connection,
        ids: list[int],
        requeue: bool,
        delay: float | None,
        *,
        counted: bool = True,
    ) -> list[int]:
        if delay is not None and not 0 <= delay <= 10 * 365 * 86_400:
            raise invalid("delay must be between 0 and ten years")
        lost: list[int] = []
        taken = self._take(conn, ids, lost)
        self.counters.nacked += len(taken)
        if requeue:
            self._return_all(taken, delay, counted=counted)
        else:
            self._reject_all(taken)
        self._redispatch(taken)
        return lost

    def reject(self, conn: Connection, ids: list[int], reason: str | None = None) -> list[int]:
        """Dead-letter (or drop) deliveries; ``reason`` is the client's word on
        why, kept as ``x-death-detail`` (its first ``MAX_REJECT_REASON`` characters)."""
        lost: list[int] = []
        taken = self._take(conn, ids, lost)
        self.counters.rejected += len(taken)
        self._reject_all(taken, reason[:MAX_REJECT_REASON] if reason else None)
        self._redispatch(taken)
        return lost

    def _reject_all(self, taken: list[Delivery], detail: str | None = None) -> None:
        """Dead-letter rejected deliveries. A deleted queue's messages went
        with it (rows included), so they are not dead-lettered, as on expiry."""
        for d in taken:
            if not d.queue.deleted:
                self._dead_letter(d.queue, d.message, "rejected", detail)

    def extend(self, conn: Connection, ids: list[int], seconds: float) -> list[int]:
        if not 0.001 <= seconds <= MAX_LEASE:
            raise invalid(f"extension must be between 0.001 and {MAX_LEASE:g} seconds")
        deadline = self.clock.now() + seconds
        lost: list[int] = []
        deliveries = conn.deliveries
        for did in ids:
            d = deliveries.get(did)
            if d is None:
                lost.append(did)
                continue
            d.deadline = deadline
            self.leases.add(d, deadline)
        return lost

    def _return_all(
        self, taken: list[Delivery], delay: float | None, *, counted: bool = True
    ) -> None:
        """End deliveries without an ack. Messages going back to the head of
        their queue are pushed there last-first, so they keep queue order.

        ``counted`` false: the consumer never worked on them (a client handing
        back its prefetch buffer, or the broker itself stopping), so the
        attempt count and the stored row stay as they are."""
        if counted:
            front = [d for d in taken if self._return(d, delay)]
        else:
            front = [d for d in taken if not d.queue.deleted]
        front.sort(key=lambda d: d.message.seq or 0, reverse=True)
        for d in front:
            d.queue.push_front(d.message)

    def _return(self, d: Delivery, delay: float | None) -> bool:
        """A delivery ended without an ack: count it and decide where the
        message goes. True means back to the head of its queue (the caller
        pushes it, see ``_return_all``)."""
        q = d.queue
        if q.deleted:
            return False
        m = d.message
        m.attempts += 1
        limit = q.options.max_deliveries
        if limit is not None and m.attempts >= limit:
            self._dead_letter(q, m, "max_deliveries")
            return False
        if delay:
            m.ready_at = self.clock.now() + delay
            m.seq = None
            if q.durable:
                self.batch.update(m)
            self._add_delayed(q, m)
            return False
        if q.durable:
            self.batch.update(m)
        return True

    def _expire(self, q: QueueState, m: Message) -> None:
        self.counters.expired += 1
        self._dead_letter(q, m, "ttl")

    def _dead_letter(
        self, q: QueueState, m: Message, reason: str, detail: str | None = None
    ) -> None:
        """Move ``m`` out of ``q`` to its dead-letter queue, or drop it.

        ``detail`` (a rejecting client's reason) replaces any earlier
        ``x-death-detail``; without one, an earlier detail is removed so it
        never describes a later death."""
        target_name = q.options.dead_letter_queue
        target = self.queues.get(target_name) if target_name else None
        batch = self.batch
        # A dead-letter queue at its max_length takes no more: the message is
        # dropped rather than cascading drops (two full drop_head queues that
        # dead-letter into each other would otherwise trade messages forever).
        # A transient one at the memory limit likewise.
        full = target is not None and (
            (
                target.options.max_length is not None
                and target.ready_count >= target.options.max_length
            )
            or (not target.durable and self.memory.full())
        )
        if target is None or target is q or full:
            self.counters.dropped[reason] = self.counters.dropped.get(reason, 0) + 1
            if q.durable:
                batch.delete(m.id)
            return
        self.counters.dead_lettered[reason] = self.counters.dead_lettered.get(reason, 0) + 1
        headers = dict(m.headers) if m.headers else {}
        count = headers.get("x-death-count")
        headers["x-death-count"] = (count if isinstance(count, int) else 0) + 1
        headers["x-death-reason"] = reason
        headers["x-death-queue"] = q.name
        if detail:
            headers["x-death-detail"] = detail
        else:
            headers.pop("x-death-detail", None)
        m.headers = headers
        m.queue = target.name
        m.attempts = 0
        m.ready_at = None
        ttl = target.options.message_ttl
        m.expires_at = None if ttl is None else self.clock.now() + ttl
        m.seq = self._new_seq()
        if q.durable and target.durable:
            batch.update(m)
        elif q.durable:
            batch.delete(m.id)
        elif target.durable:
            batch.insert(m)
        target.push(m)
        if target.consumers:
            self._dispatch(target)
        else:
            self._maybe_page(target)

    # --- connections ----------------------------------------------------------

    def open(self, peer: Peer) -> Connection:
        return Connection(peer)

    def close(self, conn: Connection) -> None:
        """A connection ended: every delivery it held returns at once."""
        if conn.closed:
            return
        conn.closed = True
        for c in list(conn.consumers.values()):
            self._drop_consumer(c)
        taken = self._take(conn, list(conn.deliveries), [])
        if self.stopping:
            # The broker is shutting down, not the consumer failing: leave
            # each message's row as it is (ready, same attempt count), exactly
            # as after a crash, instead of counting the delivery (which could
            # dead-letter or drop it under max_deliveries).
            self._return_all(taken, None, counted=False)
            return
        self._return_all(taken, None)
        self._redispatch(taken)

    def resume(self, conn: Connection) -> None:
        """The peer can take writes again: feed its consumers."""
        for c in list(conn.consumers.values()):
            self._dispatch(c.queue)

    def heard_from(self, conn: Connection) -> None:
        """Something arrived from the connection: if it was stalled, it is
        alive after all and its consumers get deliveries again."""
        if conn.stalled:
            conn.stalled = False
            self.resume(conn)

    # --- time -----------------------------------------------------------------

    def tick(self) -> None:
        """Expire leases and release delayed messages that are due."""
        now = self.clock.now()
        expired = self.leases.pop_due(now)
        if expired:
            touched: list[Delivery] = []
            for d in expired:
                conn = d.consumer.conn
                if conn.deliveries.pop(d.id, None) is None:
                    continue
                conn.stalled = True
                self.counters.leases_expired += 1
                d.consumer.unacked -= 1
                d.queue.leased -= 1
                touched.append(d)
            self._return_all(touched, None)
            self._redispatch(touched)
        if self._delayed and self._delayed[0][0] <= now:
            self._release_due(now)
        elif self._delayed_on_disk and self._durable_delayed_in_mem < DELAYED_WINDOW // 4:
            # Transient delayed messages in the heap say nothing about the
            # durable ones on disk: load those whenever few are in memory.
            self._load_delayed()
        if now - self._last_sweep >= TTL_SWEEP:
            self._last_sweep = now
            self._sweep_expired(now)

    def _sweep_expired(self, now: float) -> None:
        """Dead-letter expired messages at queue heads even with no consumers."""
        for q in list(self.queues.values()):
            if not q.mem:
                continue
            for m in q.pop_expired(now):
                self._expire(q, m)
            self._maybe_page(q)

    def next_deadline(self) -> float | None:
        times = [t for t in (self.leases.next_deadline(),) if t is not None]
        if self._delayed:
            times.append(self._delayed[0][0])
        return min(times) if times else None


_PLAIN = PublishProps()
