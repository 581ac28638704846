"""Delayed messages (ETA, countdown, nack with a delay): held by the broker
until due, durable, never leased. A helper the broker owns, with no I/O: it
keeps them, says which load from disk to issue and takes its rows in, and
releases the due ones; the broker issues the loads and decides what becomes of
a released message.

Memory stays flat however many wait: at most ``DELAYED_WINDOW`` durable delayed
messages, and at most the budget's ``window`` of their bytes, are in the heap
(due soonest first); the rest stay on disk behind a *horizon*. Invariants:

* Every durable delayed message with ``(ready_at, id) <= horizon`` is in the
  heap; those beyond it are on disk only, counted in ``on_disk``, and come in
  by loads (``(ready_at, id) > horizon`` in that order) as the heap drains.
  Over the window the heap is trimmed to its soonest half and the horizon
  drawn back; a message trimmed away is on disk already.
* Transient delayed messages are always in the heap and say nothing about the
  durable ones on disk.
* The body bytes of every message in the heap, and of a load in flight
  (reserved when issued, settled when the rows arrive), count in the shared
  ``MemoryBudget``; ``durable_in_mem`` and ``durable_bytes`` count the durable
  part of the heap.
* One load at a time. It is asked for during an operation (``want_load``) and
  issued at the broker's flush (``start_load``), after the tick's batch: the broker
  numbers the batches it hands to the store (generations), and a load issued
  at generation g reads the rows of every batch up to g. A delayed message
  whose batch committed at or before the load's generation and that lies
  beyond the horizon is therefore counted on disk and arrives with the load
  (kept in memory too, it would load twice).
* Messages added while a load is in flight are kept in memory and, once the
  load has moved the horizon, those beyond it are evicted (they are on disk).
  Rows of queues deleted while a load ran belong to the old queue even if one
  of the same name exists now, and are dropped from the load.
* Progress never waits for room: with no room a load still reads one message
  once no durable delayed message is in memory (those on disk all fall due
  later than any in memory, so only then can one be due).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .memory import MemoryBudget
from .message import Message
from .queues import QueueState

#: Durable delayed messages kept in memory at most; the rest wait on disk.
DELAYED_WINDOW = 10_000


class DelayedLoad(NamedTuple):
    """One read of the delayed messages on disk: those after ``after`` in
    (ready_at, id) order, at most ``limit`` of them and about ``max_bytes``."""

    after: tuple[float, int]
    limit: int
    max_bytes: int


class DelayedSet:
    def __init__(
        self,
        queues: dict[str, QueueState],
        memory: MemoryBudget,
        touch: Callable[[], None],
    ) -> None:
        #: The broker's queues, by name (the same dict).
        self.queues = queues
        self.memory = memory
        #: Asks the broker for a flush, where a wanted load is issued.
        self._touch = touch
        # Delayed messages due soonest: (ready_at, id, message).
        self.heap: list[tuple[float, int, Message]] = []
        #: Durable delayed messages with (ready_at, id) <= horizon are all in the heap.
        self.horizon: tuple[float, int] = (math.inf, 0)
        self.on_disk = 0
        self.loading = False
        self.durable_in_mem = 0
        #: Body bytes of the durable delayed messages in the heap.
        self.durable_bytes = 0
        self._load_wanted = False
        #: Generation at which the load in flight was issued.
        self._load_gen = 0
        #: Durable delayed messages added while a load from disk was in flight.
        self._added_while_loading = 0
        #: Durable queues deleted while a load was in flight: that load may
        #: return their rows, already uncounted by ``drop_queue``.
        self._deleted_while_loading: set[str] = set()

    def restore(self, counts: dict[str, int]) -> None:
        """Delayed messages on disk at start-up, per queue: all beyond the horizon."""
        for qname, count in counts.items():
            q = self.queues.get(qname)
            if q is not None:
                q.delayed += count
                self.on_disk += count
        if self.on_disk:
            self.horizon = (-math.inf, 0)
            self.want_load()

    # --- adding and dropping ----------------------------------------------------

    def add(self, q: QueueState, m: Message) -> None:
        q.delayed += 1
        assert m.ready_at is not None
        entry = (m.ready_at, m.id, m)
        if not q.durable:
            heapq.heappush(self.heap, entry)
            self.memory.used += len(m.body)
            return
        if self.loading or (m.ready_at, m.id) <= self.horizon:
            self._push_durable(entry)
            if self.loading:
                self._added_while_loading += 1
            elif self.durable_in_mem > DELAYED_WINDOW or self.durable_bytes > self.memory.window:
                self._trim()
        else:
            self.on_disk += 1

    def add_arrived(self, q: QueueState, m: Message, generation: int) -> None:
        """A delayed message whose batch just committed. A delayed load issued
        after that batch reads its row, so beyond the horizon it counts as on
        disk and arrives with the load (kept in memory too, it would load twice)."""
        assert m.ready_at is not None
        if (
            q.durable
            and self.loading
            and self._load_gen >= generation
            and (m.ready_at, m.id) > self.horizon
        ):
            q.delayed += 1
            self.on_disk += 1
            return
        self.add(q, m)

    def drop_queue(self, q: QueueState) -> None:
        """A deleted queue's delayed messages go with it (its rows are deleted
        with the queue's)."""
        if not q.delayed:
            return
        name = q.name
        kept = [e for e in self.heap if e[2].queue != name]
        in_mem = len(self.heap) - len(kept)
        gone = sum(len(e[2].body) for e in self.heap if e[2].queue == name)
        self.memory.used -= gone
        if q.durable:
            self.durable_in_mem -= in_mem
            self.durable_bytes -= gone
            self.on_disk = max(0, self.on_disk - (q.delayed - in_mem))
            if self.loading:
                self._deleted_while_loading.add(name)
        heapq.heapify(kept)
        self.heap = kept

    def _push_durable(self, entry: tuple[float, int, Message]) -> None:
        heapq.heappush(self.heap, entry)
        n = len(entry[2].body)
        self.durable_in_mem += 1
        self.durable_bytes += n
        self.memory.used += n

    def _trim(self) -> None:
        """Keep the soonest half of the durable delayed window (by count and by
        bytes, at least one message) in memory; the rest is on disk already and
        reloads when its turn comes."""
        entries = sorted(self.heap)
        keep: list[tuple[float, int, Message]] = []
        durable_kept = kept_bytes = 0
        count_cap, bytes_cap = DELAYED_WINDOW // 2, self.memory.window // 2
        horizon = self.horizon
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
                self.on_disk += 1
                continue
            keep.append(entry)
            durable_kept += 1
            kept_bytes += n
            horizon = (entry[0], entry[1])
        self.horizon = horizon
        self._replace(keep)

    def _replace(self, keep: list[tuple[float, int, Message]]) -> None:
        """Make ``keep`` the delayed heap; durable entries left out are on disk.
        Recounts the bytes and durable entries it holds."""
        before = sum(len(e[2].body) for e in self.heap)
        heapq.heapify(keep)
        self.heap = keep
        held = durable_count = durable_bytes = 0
        for _, _, m in keep:
            n = len(m.body)
            held += n
            q = self.queues.get(m.queue)
            if q is not None and q.durable:
                durable_count += 1
                durable_bytes += n
        self.memory.used += held - before
        self.durable_in_mem = durable_count
        self.durable_bytes = durable_bytes

    # --- release ----------------------------------------------------------------

    def due(self, now: float) -> bool:
        heap = self.heap
        return bool(heap) and heap[0][0] <= now

    def next_due(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def pop_due(self, now: float) -> Iterator[tuple[QueueState, Message]]:
        """Take the messages due by ``now`` off the heap, soonest first, each
        with the queue it is due in (those of deleted queues are dropped).

        Lazily, one at a time: taking a message frees its bytes in the budget,
        and the caller's work on each (pushing it into its queue, which weighs
        the budget) must see exactly the messages taken before it."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, _, m = heapq.heappop(heap)
            n = len(m.body)
            self.memory.used -= n
            q = self.queues.get(m.queue)
            if q is None:
                continue
            q.delayed -= 1
            if q.durable:
                self.durable_in_mem -= 1
                self.durable_bytes -= n
            yield q, m

    # --- loading from disk ------------------------------------------------------

    def refill(self) -> None:
        """Load from disk when few durable delayed messages are in memory.
        Transient delayed messages in the heap say nothing about the durable
        ones on disk, so they are not counted."""
        if self.on_disk and self.durable_in_mem < DELAYED_WINDOW // 4:
            self.want_load()

    def want_load(self) -> None:
        if self.loading or self._load_wanted or not self.on_disk:
            return
        # Few enough in memory, counted in messages (callers check) and in bytes.
        if self.durable_bytes >= self.memory.low_water or not self._page_bytes():
            return
        self._load_wanted = True
        self._touch()

    def start_load(self, generation: int) -> DelayedLoad | None:
        """The load asked for this tick, if one is to be issued now, its bytes
        reserved in the budget until ``take_load``. ``generation`` is the
        number of batches handed to the store so far: the load reads them all."""
        if not self._load_wanted:
            return None
        self._load_wanted = False
        if self.loading or not self.on_disk:
            return None
        max_bytes = self._page_bytes()
        if not max_bytes:
            return None
        self.loading = True
        self._load_gen = generation
        self.memory.used += max_bytes  # reserved until the rows arrive
        return DelayedLoad(self.horizon, DELAYED_WINDOW // 2, max_bytes)

    def _page_bytes(self) -> int:
        """Body bytes the next delayed load may bring in. With no room left it
        still reads one message once no durable one is in memory: those on disk
        all come later than any in memory, so only then can one be due."""
        room = min(self.memory.window // 2, self.memory.room())
        if room <= 0 and not self.durable_in_mem:
            return 1
        return max(0, room)

    def take_load(self, load: DelayedLoad, result: list[Message] | BaseException) -> None:
        """A load returned: settle its reservation and take its rows in (a
        failure, which the caller reports, takes nothing)."""
        limit, max_bytes = load.limit, load.max_bytes
        self.loading = False
        self.memory.used -= max_bytes
        deleted, self._deleted_while_loading = self._deleted_while_loading, set()
        if not isinstance(result, BaseException):
            # Rows of a queue deleted while the load ran belong to the old
            # queue even if one of the same name exists now; drop_queue
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
                self._push_durable((m.ready_at, m.id, m))
            self.on_disk = max(0, self.on_disk - (len(result) - uncounted))
            if len(result) < limit and read < max_bytes:
                # The store stopped for want of rows, not of room: all loaded.
                self.horizon = (math.inf, 0)
                self.on_disk = 0
            elif result:
                last = result[-1]
                assert last.ready_at is not None
                self.horizon = (last.ready_at, last.id)
        if self._added_while_loading:
            self._added_while_loading = 0
            if self.horizon[0] != math.inf:
                self._evict_beyond_horizon()

    def _evict_beyond_horizon(self) -> None:
        """Durable delayed messages added while a load was in flight may lie
        beyond the new horizon. They are on disk, so drop them from memory and
        let them load in their turn: kept, they would load a second time, and
        they would hide earlier ones still on disk from the release check."""
        horizon = self.horizon
        keep: list[tuple[float, int, Message]] = []
        for entry in self.heap:
            q = self.queues.get(entry[2].queue)
            if q is not None and q.durable and (entry[0], entry[1]) > horizon:
                self.on_disk += 1
            else:
                keep.append(entry)
        self._replace(keep)
