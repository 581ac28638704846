"""The broker core: the life cycle of a message, from its publish to its end.

A publish is routed (``Topology``), enters its queues when its batch commits
and is confirmed then; ready messages are dispatched to consumers with credit
as leased deliveries; a delivery is settled (ack, nack, reject, extend) or
returns to its queue when its lease runs out or its connection closes; a
message leaves by dead-lettering past ``max_deliveries``, its TTL or its
queue's ``max_length``. Delayed messages wait in a ``DelayedSet`` until due;
each queue's window and paging are its ``QueueState``'s.

No sockets, no event loop, no threads. Sessions call in with decoded requests
and receive their effects through the ``Peer`` interface; time comes from a
``Clock`` and durability from a ``Store``. Each call records its row changes
in the current ``Batch``; the server commits one batch per event-loop tick
(``flush``) and publisher confirms follow that commit. This keeps the hot path
free of awaits and per-message tasks, and lets unit tests drive every rule
with a fake clock. Invariants:

* A message published to a durable queue enters it, and so can reach a
  consumer, only once its batch's commit is written (``_arrive``), which may
  be before the fsync that makes it durable; when the write fails nothing of
  the batch is delivered and its publishes are refused. Confirms wait for
  the fsync (``commits.py``).
* Except while ``deliver_before_write`` says the write cannot fail for want
  of space (the server asks its free-disk reading; an in-memory store cannot
  fail): then a message enters its queue in its publish's own tick (and is
  dispatched at the tick's end, once per queue, by ``flush``), as
  RabbitMQ delivers before its disk write, which saves a task the two thread
  hops and the commit. Its batch's write failing after all (an I/O error, a
  disk filled by another writer between two readings) withdraws the copies
  still ready; one already delivered stays delivered, and its refusal says
  so. A failed write turns this off until a write succeeds, and a queue
  with messages still arriving takes a new one behind them, in order.
* Reads (queue pages, delayed loads) are asked for during an operation and
  issued by ``flush`` after the tick's batch, so they see every row it wrote.
* A delivery is in its connection's ``deliveries`` and in the lease wheel
  until it is settled, its lease runs out or its connection closes; its
  message counts as ``leased`` in its queue, never as ready.
* A delivery that ends without an ack counts an attempt, stored with its row,
  unless the consumer never saw it (``counted=False``) or the broker is
  stopping: a stop, like a crash, burns no attempt.
* A queue ends on its own (``auto_delete``, ``expires``) exactly as by
  DeleteQueue; ``Lifetimes`` decides when. Consumers that a stopping broker
  detaches delete no ``auto_delete`` queue: a stop, like a crash, changes
  nothing stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from brokerd_protocol import MAX_REJECT_REASON, ErrorCode

from .clock import Clock
from .commits import IN_MEMORY, STORED, UNROUTED, Arrival, Commits, Early
from .delayed import DelayedLoad, DelayedSet
from .errors import BrokerError, not_found
from .leases import LeaseWheel
from .lifetimes import Lifetimes
from .memory import DEFAULT_MEMORY_LIMIT, MemoryBudget
from .message import Message, death_headers
from .options import PublishProps, check_delay, check_lease, check_prefetch, parse_props
from .queues import Connection, Consumer, Delivery, PageRead, Peer, QueueState
from .stats import Counters
from .storage.base import Batch, Recovered, Store
from .topology import Topology
from .unacked import DEFAULT_PER_CONNECTION, DEFAULT_TOTAL, UnackedBytes

log = logging.getLogger("brokerd.broker")

#: Seconds between sweeps for expired messages at queue heads.
TTL_SWEEP = 1.0


class Broker:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        on_dirty: Callable[[], None] | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        max_unacked_bytes: int = DEFAULT_PER_CONNECTION,
        max_unacked_bytes_total: int = DEFAULT_TOTAL,
    ):
        self.store = store
        self.clock = clock
        #: Body bytes of ready and delayed messages held in memory (see memory.py).
        self.memory = MemoryBudget(memory_limit)
        #: Body bytes of leased messages and their limits (see unacked.py).
        self.unacked = UnackedBytes(max_unacked_bytes, max_unacked_bytes_total)
        self.topology = Topology(self.memory, self)
        self.exchanges = self.topology.exchanges
        self.queues = self.topology.queues
        self.counters = Counters()
        self.batch = Batch(self._touch)
        self._on_dirty = on_dirty or (lambda: None)
        self._dirty = False
        self._next_id = 1
        self._next_seq = 1
        self.leases: LeaseWheel[Delivery] = LeaseWheel()
        #: ``auto_delete`` and ``expires`` (see lifetimes.py).
        self.lifetimes = Lifetimes(clock)
        self.delayed = DelayedSet(self.queues, self.memory, self._touch)
        #: Queues that asked for a page this tick (issued by ``flush``).
        self._page_requests: dict[int, QueueState] = {}
        self._last_sweep = 0.0
        #: Messages of this tick's batch that enter their queues on its commit.
        self._arrivals: list[Arrival] = []
        #: Messages of this tick's batch that entered their queues before its
        #: write (``deliver_before_write``), withdrawn if the write fails.
        self._early: list[Early] = []
        #: Queues those messages entered this tick, dispatched by ``flush``.
        self._landed: dict[int, QueueState] = {}
        #: Ids of messages delivered before a write that then failed and
        #: still leased: their publishers were refused (and publish again), so
        #: when the lease ends they are dropped, never requeued or
        #: dead-lettered as messages only memory would hold.
        self._unwritten: set[int] = set()
        #: Whether this tick's publishes may enter their queues before the
        #: batch's write: asked once per batch, None until its first publish.
        self._early_ok: bool | None = None
        #: Set by the server: True when the store's next write cannot fail for
        #: want of space, so a publish may be delivered before it is written.
        #: The default (never) keeps every delivery behind its write.
        self.deliver_before_write: Callable[[], bool] = _never
        #: Set by the server: writes every frame queued so far to its socket.
        self.write_out: Callable[[], None] = _nothing
        self.commits = Commits(
            store,
            self.counters,
            arrive=self._arrive,
            paged=self._paged,
            loaded=self._delayed_loaded,
        )
        #: Called after every commit (flow control).
        self.commit_listeners = self.commits.listeners
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
        self.topology.restore(rec)
        self.delayed.restore(rec.delayed_counts)
        for q in self.queues.values():
            self.lifetimes.used(q)
            self._maybe_page(q)

    # --- batching -------------------------------------------------------------

    @property
    def uncommitted_bytes(self) -> int:
        """Body bytes bound for the store and not yet committed (flow control)."""
        return self.commits.inflight_bytes + self.batch.nbytes

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

        First, queues that took messages before their write this tick are
        dispatched, once each: what that changes (an expiry, a dead-letter)
        goes into this batch.
        """
        if self._landed:
            landed, self._landed = self._landed, {}
            for q in landed.values():
                if q.deleted:
                    continue
                self._enforce_max_length(q)
                if q.consumers:
                    self._dispatch(q)
                else:
                    self._maybe_page(q)
            # Those deliveries leave now, before the writer thread wakes
            # for this batch and competes with the loop (``outbox.py``).
            self.write_out()
        self._dirty = False
        batch = self.batch
        commits = self.commits
        if batch:
            self.batch = Batch(self._touch)
            arrivals, self._arrivals = self._arrivals, []
            early, self._early = self._early, []
            self._early_ok = None
            commits.submit(batch, arrivals, early)
        if self._page_requests:
            requests, self._page_requests = self._page_requests, {}
            for q in requests.values():
                commits.read_page(q)
        load = self.delayed.start_load(commits.generation)
        if load is not None:
            commits.load_delayed(load)

    def _arrive(
        self, arrivals: list[Arrival], early: list[Early], generation: int, committed: bool
    ) -> None:
        """Messages of a committed batch enter their queues; those of a failed
        one are dropped, and those that entered before the write are withdrawn
        where still ready. A purge or delete since the publish took them already."""
        if not committed:
            gone: set[int] = set()
            for q, epoch, m, in_memory in early:
                if q.deleted or q.epoch != epoch or not q.withdraw(m, in_memory):
                    gone.add(m.id)
            if gone:  # delivered already: those still leased end unwritten
                self._unwritten.update(d.message.id for d in self.leases if d.message.id in gone)
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
                    self.delayed.add_arrived(q, m, generation)
        for q in touched.values():
            self._enforce_max_length(q)
            if q.consumers:
                self._dispatch(q)
            else:
                self._maybe_page(q)

    def _delayed_loaded(self, load: DelayedLoad, result: list[Message] | BaseException) -> None:
        if isinstance(result, BaseException):
            log.error("loading delayed messages failed: %s", result)
        self.delayed.take_load(load, result)

    def _new_id(self) -> int:
        n = self._next_id
        self._next_id = n + 1
        return n

    def _new_seq(self) -> int:
        n = self._next_seq
        self._next_seq = n + 1
        return n

    # --- topology (see topology.py) ------------------------------------------

    def declare_exchange(self, name: str, etype: str, durable: bool) -> None:
        self.topology.declare_exchange(name, etype, durable)

    def delete_exchange(self, name: str) -> None:
        self.topology.delete_exchange(name)

    def declare_queue(self, name: str, durable: bool, raw_options: dict[str, Any]) -> None:
        self.topology.declare_queue(name, durable, raw_options)
        self.lifetimes.used(self.queues[name])

    def delete_queue(self, name: str) -> int:
        """Delete the queue with everything in it; its consumers are cancelled."""
        q, count = self.topology.delete_queue(name)
        self.lifetimes.forget(q)
        self.delayed.drop_queue(q)
        for c in list(q.consumers):
            c.detach()
            c.conn.peer.send_consumer_cancelled(c.id, f"queue {name!r} was deleted")
        return count

    def _consumer_gone(self, q: QueueState) -> None:
        """A consumer of ``q`` was cancelled or its connection closed."""
        if self.lifetimes.consumer_gone(q):
            self._end_queue(q, "auto_delete")

    def _end_queue(self, q: QueueState, reason: str) -> None:
        """Delete a queue that ended on its own (``reason``: the option)."""
        if self.queues.get(q.name) is not q:
            return
        count = self.delete_queue(q.name)
        self.counters.queues_deleted[reason] += 1
        log.info("queue %r deleted (%s) with %d message(s)", q.name, reason, count)

    def purge_queue(self, name: str) -> int:
        return self.topology.purge_queue(name)

    def bind(self, queue: str, exchange: str, key: str) -> None:
        self.topology.bind(queue, exchange, key)

    def unbind(self, queue: str, exchange: str, key: str) -> None:
        self.topology.unbind(queue, exchange, key)

    def _queue(self, name: str) -> QueueState:
        return self.topology.queue(name)

    def queue_stats(self, name: str) -> dict[str, Any]:
        q = self.topology.queue(name)
        self.lifetimes.used(q)
        return q.stats()

    # --- publishing -----------------------------------------------------------

    def route(self, exchange: str, key: str) -> list[QueueState]:
        return self.topology.route(exchange, key)

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
        targets = self.topology.route(exchange, key)
        if not targets:
            if props.mandatory:
                raise BrokerError(ErrorCode.UNROUTABLE, f"no queue bound for {key!r}")
            counters.unroutable += 1
            self.batch.confirm(conn, seq, UNROUTED, durable=False)
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
                raise self.memory.refusal(q.name)
            durable = durable or q.durable
        timestamp = int(now * 1000)
        batch = self.batch
        arrivals = self._arrivals
        before_write = False
        if durable:
            ok = self._early_ok
            if ok is None:
                ok = self._early_ok = self.deliver_before_write()
            # A failed write reported since the batch began counts at once.
            before_write = ok and not self.commits.write_failed
        for q in targets:
            q.published += 1
            priority = props.priority
            cap = q.options.max_priority
            if cap is not None and priority > cap:
                priority = cap
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
                priority,
                timestamp,
                None if ttl is None else now + ttl,
            )
            if props.ready_at is not None:
                m.ready_at = props.ready_at
            else:
                m.seq = self._new_seq()
            if durable:
                if q.durable:
                    batch.insert(m)
                if m.seq is None:
                    q.arriving_delayed += 1
                    arrivals.append((q, q.epoch, m))
                elif before_write and not q.arriving:
                    # In its queue before the write (see the invariants),
                    # dispatched once per queue at the end of the tick.
                    self._early.append((q, q.epoch, m, q.push(m)))
                    self._landed[id(q)] = q
                else:
                    # Held back until the batch is written (``_arrive``): a
                    # publish that is refused must not have been delivered.
                    q.arriving.append(m)
                    arrivals.append((q, q.epoch, m))
            elif m.ready_at is not None:
                self.delayed.add(q, m)
            else:
                # Transient queues only: nothing to store, nothing can fail.
                q.push(m)
                self._enforce_max_length(q)
                if q.consumers:
                    self._dispatch(q)
        batch.confirm(conn, seq, STORED if durable else IN_MEMORY, durable=durable)

    def _enforce_max_length(self, q: QueueState) -> None:
        for victim in q.over_max_length():
            self._dead_letter(q, victim, "max_length")

    # --- consuming ------------------------------------------------------------

    def add_consumer(
        self, conn: Connection, queue: str, prefetch: int, lease: float | None
    ) -> Consumer:
        """Attach a consumer to ``queue`` without delivering to it yet.

        Its id is the connection's next consumer number. The session answers
        Consume with that id and only then calls ``start_consumer``, so the
        client knows the consumer before its first Deliver arrives.
        """
        q = self._queue(queue)
        check_prefetch(prefetch)
        lease = q.options.lease if lease is None else check_lease(lease)
        self.lifetimes.consumer_added(q)
        return q.attach(conn, prefetch, lease)

    def start_consumer(self, consumer: Consumer) -> None:
        """Deliver to a consumer made by ``add_consumer`` (cancelled: nothing)."""
        if consumer.active:
            self._dispatch(consumer.queue)

    def consume(self, conn: Connection, queue: str, prefetch: int, lease: float | None) -> int:
        """``add_consumer`` then ``start_consumer``; returns the consumer's id."""
        c = self.add_consumer(conn, queue, prefetch, lease)
        self.start_consumer(c)
        return c.id

    def cancel(self, conn: Connection, consumer_id: int) -> None:
        c = conn.consumers.get(consumer_id)
        if c is None:
            raise not_found(f"no consumer {consumer_id}")
        c.detach()
        self._consumer_gone(c.queue)

    def _dispatch(self, q: QueueState) -> None:
        """Hand ready messages to consumers with credit, round-robin."""
        if q.drops_owed:
            for victim in q.owed_drops():
                self._dead_letter(q, victim, "max_length")
        if q.consumers and q.mem:
            now = self.clock.now()
            counters = self.counters
            unacked = self.unacked
            total_limit = unacked.limit
            first = q.delivered
            while q.mem:
                if unacked.held >= total_limit:
                    unacked.hold_back(q, fed=q.delivered != first)
                    break
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
                size = len(m.body)
                conn.leased_bytes += size
                unacked.held += size
                q.leased += 1
                self.leases.add(d, d.deadline)
                counters.delivered += 1
                q.delivered += 1
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
        if q.ask_page():
            self._page_requests[id(q)] = q
            self._touch()

    def _paged(self, q: QueueState, read: PageRead, result: list[Message] | BaseException) -> None:
        if not q.take_page(read, result):
            return
        if isinstance(result, BaseException):
            log.error("paging queue %r failed: %s", q.name, result)
            return
        self._dispatch(q)

    # --- settling deliveries ------------------------------------------------

    def _take(self, conn: Connection, ids: Iterable[int], lost: list[int]) -> list[Delivery]:
        taken: list[Delivery] = []
        deliveries = conn.deliveries
        leases = self.leases
        freed = 0
        for did in ids:
            d = deliveries.pop(did, None)
            if d is None:
                lost.append(did)
                continue
            leases.discard(d)
            d.consumer.unacked -= 1
            d.queue.leased -= 1
            freed += len(d.message.body)
            taken.append(d)
        if freed:
            self.unacked.release(conn, freed)
        return taken

    def _redispatch(self, taken: list[Delivery]) -> None:
        seen: set[QueueState] = set()
        unacked = self.unacked
        # Those that waited for freed bytes first (unacked.py): queues held
        # back by the total limit, then connections back under their own.
        if unacked.starved:
            while (q := unacked.next_starved()) is not None:
                if not q.deleted:
                    seen.add(q)
                    self._dispatch(q)
        if unacked.reopened:
            for q in unacked.take_reopened():
                if q not in seen and not q.deleted:
                    seen.add(q)
                    self._dispatch(q)
        for d in taken:
            q = d.queue
            if q not in seen:
                seen.add(q)
                if not q.deleted:
                    self._dispatch(q)

    def ack(self, conn: Connection, ids: list[int]) -> list[int]:
        lost: list[int] = []
        taken = self._take(conn, ids, lost)
        if self._unwritten:  # settled: nothing more to forget
            self._unwritten.difference_update(d.message.id for d in taken)
        batch = self.batch
        for d in taken:
            d.queue.acked += 1
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
        check_delay(delay)
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

    def _forget_unwritten(self, taken: list[Delivery]) -> list[Delivery]:
        """``taken`` without the messages whose write failed (``_unwritten``),
        which are forgotten: nothing of them is stored, nothing requeued."""
        unwritten = self._unwritten
        kept = []
        for d in taken:
            if d.message.id in unwritten:
                unwritten.discard(d.message.id)
            else:
                kept.append(d)
        return kept

    def _reject_all(self, taken: list[Delivery], detail: str | None = None) -> None:
        """Dead-letter rejected deliveries. A deleted queue's messages went
        with it (rows included), so they are not dead-lettered, as on expiry."""
        if self._unwritten:
            taken = self._forget_unwritten(taken)
        for d in taken:
            if not d.queue.deleted:
                self._dead_letter(d.queue, d.message, "rejected", detail)

    def extend(self, conn: Connection, ids: list[int], seconds: float) -> list[int]:
        check_lease(seconds, "extension")
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
        if self._unwritten:
            taken = self._forget_unwritten(taken)
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
            self.delayed.add(q, m)
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
        """Move ``m`` out of ``q`` to its dead-letter queue (``death_headers``
        say why), or drop it."""
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
        m.headers = death_headers(m.headers, reason, q.name, detail)
        self._move(m, q, target, batch)
        if target.consumers:
            self._dispatch(target)
        else:
            self._maybe_page(target)

    def _move(self, m: Message, source: QueueState, target: QueueState, batch: Batch) -> None:
        """``m``, taken from ``source``, becomes a new ready message of
        ``target`` (dead-lettering, redrive): its attempts start over, the
        target's TTL applies, and its row follows the two queues' durability."""
        m.queue = target.name
        m.attempts = 0
        m.ready_at = None
        ttl = target.options.message_ttl
        m.expires_at = None if ttl is None else self.clock.now() + ttl
        m.seq = self._new_seq()
        if source.durable and target.durable:
            batch.update(m)
        elif source.durable:
            batch.delete(m.id)
        elif target.durable:
            batch.insert(m)
        target.push(m)

    def redrive(self, name: str, count: int | None, to: str | None = None) -> int:
        """Move up to ``count`` (None: all) ready messages of ``name``, a
        dead-letter queue, back to the queue each one left (its
        ``x-death-queue`` header, see ``death_headers``) or to ``to``.

        Only messages in the ready window move in one call (the rest are on
        disk and page in afterwards, so a caller repeats until done). A
        message whose source is gone (or is this queue, or is full) stays,
        in its order. Its headers are kept (the death history stays); its
        attempts start over. Returns how many moved.
        """
        q = self.topology.queue(name)
        fixed = self.topology.queue(to) if to is not None else None
        kept: list[Message] = []
        moved = 0
        batch = self.batch
        touched: dict[QueueState, None] = {}
        while q.mem and (count is None or moved < count):
            m = q.pop()
            assert m is not None
            target = fixed
            if target is None:
                source = m.headers.get("x-death-queue") if m.headers else None
                target = self.queues.get(source) if isinstance(source, str) else None
            limit = target.options.max_length if target is not None else None
            if (
                target is None
                or target is q
                or (limit is not None and target.ready_count >= limit)
                or (not target.durable and self.memory.full())
            ):
                kept.append(m)
                continue
            self._move(m, q, target, batch)
            touched[target] = None
            moved += 1
        for m in reversed(kept):
            q.push_front(m)
        for target in touched:
            if target.consumers:
                self._dispatch(target)
            else:
                self._maybe_page(target)
        self._maybe_page(q)
        return moved

    # --- connections ----------------------------------------------------------

    def open(self, peer: Peer) -> Connection:
        return Connection(peer, self.unacked.per_connection)

    def close(self, conn: Connection) -> None:
        """A connection ended: every delivery it held returns at once."""
        if conn.closed:
            return
        conn.closed = True
        consumed: dict[QueueState, None] = {}
        for c in list(conn.consumers.values()):
            c.detach()
            consumed[c.queue] = None
        if not self.stopping:
            # Before the deliveries return: those of an auto_delete queue
            # deleted here go with it, as with DeleteQueue.
            for q in consumed:
                self._consumer_gone(q)
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
            freed: dict[Connection, int] = {}
            for d in expired:
                conn = d.consumer.conn
                if conn.deliveries.pop(d.id, None) is None:
                    continue
                conn.stalled = True
                self.counters.leases_expired += 1
                d.consumer.unacked -= 1
                d.queue.leased -= 1
                freed[conn] = freed.get(conn, 0) + len(d.message.body)
                touched.append(d)
            for conn, n in freed.items():
                self.unacked.release(conn, n)
            self._return_all(touched, None)
            self._redispatch(touched)
        if self.delayed.due(now):
            self._release_due(now)
        else:
            self.delayed.refill()
        for q in self.lifetimes.expired(now):
            self._end_queue(q, "expires")
        if now - self._last_sweep >= TTL_SWEEP:
            self._last_sweep = now
            self._sweep_expired(now)

    def _release_due(self, now: float) -> None:
        """Due delayed messages become ready at the tail of their queues."""
        touched: set[QueueState] = set()
        for q, m in self.delayed.pop_due(now):
            m.ready_at = None
            m.seq = self._new_seq()
            if q.durable:
                self.batch.update(m)
            q.push(m)
            touched.add(q)
        for q in touched:
            self._enforce_max_length(q)
            self._dispatch(q)
        self.delayed.refill()

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
        due = self.delayed.next_due()
        if due is not None:
            times.append(due)
        return min(times) if times else None


_PLAIN = PublishProps()


def _never() -> bool:
    return False


def _nothing() -> None:
    pass
