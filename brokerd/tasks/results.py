"""Task results: ResultSet, ResultGet, ResultWait and ResultWatch.

Results are stored rows written through the broker's batch (``put_result``,
``revoke_result``), so a ResultSet rides the same group commit as the
publishes around it and is answered only once durable. Recent *final* results
are also kept in a bounded LRU cache: a client waiting for a task that has
just finished is answered without touching the disk.

Consistency rests on one property of the ``Store``: operations complete, and
their callbacks run on the loop, in submission order. So

- a read submitted after ``broker.flush()`` sees every write requested before
  it, and its callback runs after theirs and before those of later writes; the
  cache may therefore always take what a read returns;
- a ResultWait registers its waiter *before* it submits its lookup: a final
  result committed before the lookup is seen by it, one committed after wakes
  the waiter from its commit callback. No waiter is stranded either way.

No reply is larger than SPEC §2.1 allows (``max_frame`` + 64 KiB): a
ResultGet whose results would not fit in one frame is refused with
``INVALID_ARGUMENT`` (the client asks again for fewer ids; one result always
fits, since it arrived in a ResultSet no larger than ``max_frame``), and a
result stored while ``max_frame`` was larger is refused rather than sent.
Sizes are checked in the store before payloads are read: every read of
results caps the payload it returns (a larger one comes back as its size
only), and a ResultGet missing several ids in the cache reads their sizes
first and reads payloads only if they fit one reply together. So no request
makes the broker hold a payload it could not send (the one exception, a
result replaced between the two reads by a larger one, still holds at most
one reply's worth per id).

A final state is never replaced by a non-final one (a redelivered task that
reports STARTED after it already succeeded leaves SUCCESS in place, as Celery
does); a final state replaces anything. Revoke records REVOKED only for tasks
that have not already succeeded or failed. A retry from the management API
does not bend that rule: it removes the FAILURE (as ResultDelete does) in
the batch right behind the message it sends again, so the new run's states,
STARTED included, are stored from nothing, and a waiter is answered by the
new run's final state, not the old one.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import brokerd_protocol as bp

from ..broker import Broker
from ..errors import BrokerError, invalid
from ..storage.base import Query, Row
from .common import (
    FINAL_STATES,
    STATES,
    Alive,
    Client,
    check_range,
    check_task_id,
    check_ttl,
    internal,
)

log = logging.getLogger("brokerd.tasks.results")

#: Size of a ResultWatch ``known`` digest.
DIGEST_SIZE = 16
#: Longest ResultWait, in seconds.
MAX_WAIT = 3600.0
#: Outstanding ResultWait requests one connection may hold.
MAX_WAITS_PER_CLIENT = 100_000
#: Bounds of the cache of recent final results.
CACHE_ENTRIES = 10_000
CACHE_BYTES = 64 * 1024 * 1024
#: Larger payloads are not cached (they are read from disk when asked for).
CACHE_MAX_PAYLOAD = 1024 * 1024
#: How far a server-to-client frame may exceed max_frame (SPEC §2.1).
REPLY_ALLOWANCE = 65536
#: Upper bounds of the msgpack framing around a reply and around one result
#: in it (array and map headers, the state string, the bin header).
_REPLY_OVERHEAD = 32
_ENTRY_OVERHEAD = 32


class Result(NamedTuple):
    state: str
    payload: bytes
    expires_at: float


class Waiter:
    """A ResultWait (``known`` None: woken by a final state only) or a
    ResultWatch (woken by any stored result whose digest is not ``known``)."""

    __slots__ = ("client", "deadline", "done", "known", "req", "task_id")

    def __init__(
        self,
        client: Client,
        req: int,
        task_id: str,
        deadline: float,
        known: bytes | None = None,
    ) -> None:
        self.client = client
        self.req = req
        self.task_id = task_id
        self.deadline = deadline
        self.done = False
        self.known = known


def _entry_size(task_id: str, result: Result) -> int:
    """Bytes ``task_id: [state, payload]`` takes in a reply, at most (no encoding:
    a UTF-8 character is at most 4 bytes)."""
    return _sized_entry(task_id, result.state, len(result.payload))


def _sized_entry(task_id: str, state: str, size: int) -> int:
    """``_entry_size`` of a result known by its payload's size only."""
    return 4 * len(task_id) + len(state) + size + _ENTRY_OVERHEAD


class Results:
    def __init__(self, broker: Broker, alive: Alive, max_frame: int = bp.DEFAULT_MAX_FRAME) -> None:
        self.broker = broker
        self.alive = alive
        #: The broker's frame limit; replies stay within it plus REPLY_ALLOWANCE.
        self.max_frame = max_frame
        self._cache: OrderedDict[str, Result] = OrderedDict()
        self._cache_bytes = 0
        self._waiters: dict[str, list[Waiter]] = {}
        self._deadlines: list[tuple[float, int, Waiter]] = []
        self._order = itertools.count()
        self._waits_per_client: dict[Client, int] = {}
        #: Ids with a store lookup in flight on behalf of waiters.
        self._lookups: set[str] = set()
        #: Ids with result writes requested but not yet committed: their cache
        #: entries may be stale, so reads of them go to the store.
        self._pending: dict[str, int] = {}
        #: No row on disk expires before this (inf: none known).
        self._earliest = math.inf
        self._expiring = False

    # --- start-up ---------------------------------------------------------------

    #: What ``loaded`` takes (the extension reads it at start-up).
    LOAD = Query.EARLIEST_RESULT_EXPIRY

    def loaded(self, rows: list[Row]) -> None:
        earliest = rows[0][0] if rows else None
        if earliest is not None:
            self._earliest = min(self._earliest, float(earliest))

    # --- requests ---------------------------------------------------------------

    def set(self, client: Client, f: bp.ResultSet) -> None:
        task_id = check_task_id(f.task_id)
        if f.state not in STATES:
            raise invalid(f"state must be one of {', '.join(sorted(STATES))}, got {f.state!r}")
        ttl = check_ttl(f.ttl)
        now = self.broker.clock.now()
        expires_at = now + ttl
        result = Result(f.state, f.payload, expires_at)
        req = f.req
        keep = f.keep_final and f.state in FINAL_STATES
        if keep and task_id not in self._pending and self._cached(task_id, now) is not None:
            # A final result is stored (the cache holds final ones only): it stays.
            client.reply_ok(req)
            return
        batch = self.broker.batch
        if keep:
            batch.put_result_keep_final(task_id, f.state, f.payload, expires_at, now)
        else:
            batch.put_result(task_id, f.state, f.payload, expires_at, now)
        self._earliest = min(self._earliest, expires_at)
        self._begin(task_id)

        def committed(error: BaseException | None) -> None:
            self._end(task_id)
            if error is not None:
                self._reply_error(client, req, internal(f"storing the result failed: {error}"))
                return
            if self.alive(client):
                client.reply_ok(req)
            if keep:
                self._kept_committed(task_id)
            elif result.state in FINAL_STATES:
                self._remember(task_id, result)
                self._wake(task_id, result)
            elif (
                task_id in self._waiters and self._cached(task_id, self.broker.clock.now()) is None
            ):
                # (A cached final result was not replaced: §14.1.)
                self._wake_watchers(task_id, result)

        batch.after_commit(committed)

    def get(self, client: Client, f: bp.ResultGet) -> None:
        # The codec refuses more than MAX_RESULT_GET_IDS ids (SPEC §13).
        now = self.broker.clock.now()
        found: dict[str, list[object]] = {}
        size = _REPLY_OVERHEAD
        misses: list[str] = []
        for task_id in dict.fromkeys(f.task_ids):
            cached = self._cached(task_id, now) if task_id not in self._pending else None
            if cached is not None:
                found[task_id] = [cached.state, cached.payload]
                size += _entry_size(task_id, cached)
            elif task_id:
                misses.append(task_id)
        if not misses:
            self._reply_found(client, f.req, found, size)
            return
        req = f.req

        def loaded(rows: list[Row] | BaseException) -> None:
            nonlocal size
            if isinstance(rows, BaseException):
                self._reply_error(client, req, internal(f"reading results failed: {rows}"))
                return
            too_large: tuple[str, int] | None = None
            for task_id, state, payload, expires_at, length in rows:
                if payload is None:  # larger than any reply: not read
                    too_large = (task_id, int(length))
                    continue
                result = Result(state, bytes(payload), expires_at)
                found[task_id] = [result.state, result.payload]
                size += _entry_size(task_id, result)
                if state in FINAL_STATES:
                    self._remember(task_id, result)
            if too_large is not None:
                self._reply_error(client, req, self._too_large(*too_large))
            else:
                self._reply_found(client, req, found, size)

        if len(misses) == 1:
            self._select(misses, now, loaded)
            return

        def sized(rows: list[Row] | BaseException) -> None:
            if isinstance(rows, BaseException):
                self._reply_error(client, req, internal(f"reading results failed: {rows}"))
                return
            budget = self._budget
            total = size
            for task_id, state, length in rows:
                entry = _sized_entry(task_id, state, int(length))
                if entry + _REPLY_OVERHEAD > budget:
                    self._reply_error(client, req, self._too_large(task_id, int(length)))
                    return
                total += entry
            if total > budget:
                self._reply_error(client, req, self._fewer(len(found) + len(rows), total))
                return
            self._select(misses, self.broker.clock.now(), loaded)

        self.broker.flush()
        self.broker.store.read(Query.RESULT_SIZES, (tuple(misses), now), sized)

    def _reply_found(
        self, client: Client, req: int, found: dict[str, list[object]], size: int
    ) -> None:
        """Answer a ResultGet, or refuse it if the answer would be too large a frame."""
        if not self.alive(client):
            return
        if size <= self._budget:
            client.reply_ok(req, found)
        elif len(found) == 1:
            ((task_id, (_, payload)),) = found.items()
            assert isinstance(payload, bytes)
            client.reply_error(req, self._too_large(task_id, len(payload)))
        else:
            client.reply_error(req, self._fewer(len(found), size))

    @property
    def _budget(self) -> int:
        """The largest reply frame (SPEC §2.1)."""
        return self.max_frame + REPLY_ALLOWANCE

    @property
    def _max_payload(self) -> int:
        """The largest payload a store read returns: any larger one could not
        be sent even alone (the reply and entry framing take the rest)."""
        return self._budget - _REPLY_OVERHEAD - _ENTRY_OVERHEAD

    def _fewer(self, count: int, size: int) -> BrokerError:
        return invalid(
            f"the results of these {count} tasks take about {size} bytes, more "
            f"than one reply may carry ({self._budget}); ask for fewer task ids at once"
        )

    def _too_large(self, task_id: str, size: int) -> BrokerError:
        return invalid(
            f"the result of task {task_id!r} is {size} bytes, more than a reply may "
            f"carry ({self._budget} bytes); it was stored when the "
            "broker's max_frame was larger"
        )

    def _reply_result(self, client: Client, req: int, task_id: str, result: Result) -> None:
        """Answer a ResultWait with ``[state, payload]`` if that fits in a reply."""
        if _entry_size(task_id, result) + _REPLY_OVERHEAD > self._budget:
            client.reply_error(req, self._too_large(task_id, len(result.payload)))
        else:
            client.reply_ok(req, [result.state, result.payload])

    def wait(self, client: Client, f: bp.ResultWait | bp.ResultWatch) -> None:
        task_id = check_task_id(f.task_id)
        timeout = check_range("timeout", f.timeout, 0.0, MAX_WAIT, open_low=True)
        known: bytes | None = None
        if isinstance(f, bp.ResultWatch):
            known = f.known
            if len(known) not in (0, DIGEST_SIZE):
                raise invalid(f"known must be empty or {DIGEST_SIZE} bytes, got {len(known)}")
        now = self.broker.clock.now()
        cached = self._cached(task_id, now) if task_id not in self._pending else None
        if cached is not None:
            self._reply_result(client, f.req, task_id, cached)
            return
        count = self._waits_per_client.get(client, 0)
        if count >= MAX_WAITS_PER_CLIENT:
            raise invalid(
                f"more than {MAX_WAITS_PER_CLIENT} ResultWait/ResultWatch requests outstanding"
            )
        self._waits_per_client[client] = count + 1
        waiter = Waiter(client, f.req, task_id, now + timeout, known)
        self._waiters.setdefault(task_id, []).append(waiter)
        heapq.heappush(self._deadlines, (waiter.deadline, next(self._order), waiter))
        if task_id not in self._lookups:
            # Registered first, then looked up: see the module docstring.
            self._lookup([task_id])

    #: ResultWatch: answered like ResultWait, and also by a non-final result
    #: other than the one the client knows (SPEC §14.16). Watchers share
    #: ResultWait's registry, limits, deadlines and lookups.
    watch = wait

    def delete(self, client: Client, f: bp.ResultDelete) -> None:
        """Forget results; Ok(req, how many unexpired ones there were) after the commit.

        The batch before is handed over first and the count is read right
        after it, then the deletes open the next batch: the read sees every
        write requested before this frame and none after, and the deletes
        commit in this connection's frame order. Waiters are not answered:
        a deleted result is as if never set, so they keep waiting.
        """
        # The codec refuses more than MAX_RESULT_DELETE_IDS ids (SPEC §13).
        task_ids = [t for t in dict.fromkeys(f.task_ids) if t]
        req = f.req
        if not task_ids:
            client.reply_ok(req, 0)
            return

        def done(outcome: int | BaseException) -> None:
            if isinstance(outcome, BaseException):
                self._reply_error(client, req, internal(f"deleting results failed: {outcome}"))
            elif self.alive(client):
                client.reply_ok(req, outcome)

        self.remove(task_ids, done)

    def remove(self, task_ids: list[str], done: Callable[[int | BaseException], None]) -> None:
        """ResultDelete's work (see :meth:`delete`) for any caller: ``done``
        gets how many unexpired results there were, after the commit, or
        the error."""
        for task_id in task_ids:
            self._forget(task_id)
        counted: list[int] = []
        failures: list[BaseException] = []

        def read(rows: list[Row] | BaseException) -> None:
            if isinstance(rows, BaseException):
                failures.append(rows)
            else:
                counted.append(len(rows))

        # Counted by their sizes' rows: no payload is read.
        self.broker.flush()
        self.broker.store.read(Query.RESULT_SIZES, (tuple(task_ids), self.broker.clock.now()), read)
        batch = self.broker.batch
        for task_id in task_ids:
            batch.delete_result(task_id)
            self._begin(task_id)

        def committed(error: BaseException | None) -> None:
            for task_id in task_ids:
                self._end(task_id)
                # A lookup read before the deletes may have cached the old result.
                self._forget(task_id)
            error = error or (failures[0] if failures else None)
            done(error if error is not None else (counted[0] if counted else 0))

        batch.after_commit(committed)

    def read(self, task_id: str, done: Callable[[Result | BaseException | None], None]) -> None:
        """The unexpired stored result of ``task_id`` (None: there is none),
        for the broker's own readers (the management API), as consistent as
        a ResultGet: from the cache, else from the store after every write
        requested so far. ``done`` may run before this returns."""
        now = self.broker.clock.now()
        cached = self._cached(task_id, now) if task_id not in self._pending else None
        if cached is not None:
            done(cached)
            return

        def got(rows: list[Row] | BaseException) -> None:
            if isinstance(rows, BaseException):
                done(rows)
                return
            for _task_id, state, payload, expires_at, length in rows:
                if payload is None:  # larger than any reply: not read
                    done(self._too_large(task_id, int(length)))
                    return
                done(Result(state, bytes(payload), expires_at))
                return
            done(None)

        self._select([task_id], now, got)

    # --- revocations ------------------------------------------------------------

    def add_revoked(self, task_ids: list[str], expires_at: float, now: float) -> None:
        """Record REVOKED for ``task_ids`` in the current batch (Revoke)."""
        batch = self.broker.batch
        for task_id in task_ids:
            batch.revoke_result(task_id, expires_at, now)
            self._begin(task_id)
        self._earliest = min(self._earliest, expires_at)

        def committed(error: BaseException | None) -> None:
            for task_id in task_ids:
                self._end(task_id)
            if error is None:
                self._revoked_committed(task_ids, expires_at)

        batch.after_commit(committed)

    def _revoked_committed(self, task_ids: list[str], expires_at: float) -> None:
        """Bring the cache and waiters up to date once REVOKED rows committed.

        Whether REVOKED was written depends on the row it met (SUCCESS and
        FAILURE stay), which only the cache or the disk knows: a cached final
        result answers it; otherwise waiters get a fresh lookup.
        """
        now = self.broker.clock.now()
        unknown: list[str] = []
        for task_id in task_ids:
            cached = self._cached(task_id, now)
            if cached is not None:
                if cached.state == "REVOKED":
                    until = max(expires_at, cached.expires_at)
                    self._remember(task_id, Result("REVOKED", b"", until))
            elif task_id in self._waiters:
                unknown.append(task_id)
        if unknown:
            self._lookup(unknown)

    def _kept_committed(self, task_id: str) -> None:
        """After a ``keep_final`` result committed: whether it was written
        depends on the row it met, which only the cache or the disk knows. A
        cached final result stayed; otherwise waiters get a fresh lookup."""
        if self._cached(task_id, self.broker.clock.now()) is not None:
            return
        if task_id in self._waiters:
            self._lookup([task_id])

    # --- time ---------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Answer waiters whose timeout passed with Ok(req, None)."""
        heap = self._deadlines
        if not heap or heap[0][0] > now:
            return
        touched: set[str] = set()
        while heap and heap[0][0] <= now:
            waiter = heapq.heappop(heap)[2]
            if waiter.done:
                continue
            self._finish(waiter)
            touched.add(waiter.task_id)
            if self.alive(waiter.client):
                waiter.client.reply_ok(waiter.req, None)
        for task_id in touched:
            waiters = self._waiters.get(task_id)
            if waiters is None:
                continue
            live = [w for w in waiters if not w.done]
            if live:
                self._waiters[task_id] = live
            else:
                del self._waiters[task_id]

    def sweep(self, now: float) -> None:
        """Forget expired results (cache and disk) and waiters of closed connections."""
        for task_id in [k for k, r in self._cache.items() if r.expires_at <= now]:
            self._forget(task_id)
        if self._earliest <= now and not self._expiring:
            self._expiring = True
            self._earliest = math.inf
            broker = self.broker
            broker.batch.expire_results(now)
            broker.flush()
            broker.store.read(self.LOAD, (), self._expired)
        dead = [c for c in self._waits_per_client if not self.alive(c)]
        if dead:
            gone = set(dead)
            for task_id in list(self._waiters):
                waiters = self._waiters[task_id]
                keep = [w for w in waiters if w.client not in gone]
                for w in waiters:
                    if w.client in gone:
                        w.done = True
                if keep:
                    self._waiters[task_id] = keep
                else:
                    del self._waiters[task_id]
            for client in dead:
                del self._waits_per_client[client]
        live = sum(self._waits_per_client.values())
        if len(self._deadlines) > 2 * live + 1000:
            self._deadlines = [e for e in self._deadlines if not e[2].done]
            heapq.heapify(self._deadlines)

    def _expired(self, rows: list[Row] | BaseException) -> None:
        self._expiring = False
        if isinstance(rows, BaseException):
            log.error("expiring results failed: %s", rows)
            self._earliest = 0.0  # try again at the next sweep
            return
        self.loaded(rows)

    # --- stats ----------------------------------------------------------------------

    def recent(self, limit: int) -> list[tuple[str, str, bytes]]:
        """Up to ``limit`` recent final results held in memory, newest first:
        ``(task_id, state, payload)`` (the management API's task list; older
        ones are on disk only and not listed)."""
        out: list[tuple[str, str, bytes]] = []
        for task_id in reversed(self._cache):
            if len(out) >= limit:
                break
            result = self._cache[task_id]
            out.append((task_id, result.state, result.payload))
        return out

    @property
    def waiting(self) -> int:
        return sum(self._waits_per_client.values())

    @property
    def cached(self) -> int:
        return len(self._cache)

    # --- internals --------------------------------------------------------------

    def _select(
        self, task_ids: list[str], now: float, done: Callable[[list[Row] | BaseException], None]
    ) -> None:
        # Everything requested so far must reach the store before this read.
        self.broker.flush()
        self.broker.store.read(Query.RESULTS, (tuple(task_ids), now, self._max_payload), done)

    def _lookup(self, task_ids: list[str]) -> None:
        """Read ``task_ids`` from disk and wake their waiters with final results."""
        self._lookups.update(task_ids)

        def done(rows: list[Row] | BaseException) -> None:
            self._lookups.difference_update(task_ids)
            if isinstance(rows, BaseException):
                log.error("result lookup failed: %s", rows)
                error = internal(f"reading the result failed: {rows}")
                for task_id in task_ids:
                    for w in self._waiters.pop(task_id, ()):
                        if not w.done:
                            self._finish(w)
                            self._reply_error(w.client, w.req, error)
                return
            for task_id, state, payload, expires_at, length in rows:
                if payload is None:  # larger than any reply: not read
                    self._refuse_waiters(task_id, state in FINAL_STATES, int(length))
                    continue
                result = Result(state, bytes(payload), expires_at)
                if state in FINAL_STATES:
                    self._remember(task_id, result)
                    self._wake(task_id, result)
                elif task_id in self._waiters:
                    self._wake_watchers(task_id, result)

        self._select(task_ids, self.broker.clock.now(), done)

    def _wake_watchers(self, task_id: str, result: Result) -> None:
        """Answer the ResultWatch requests that do not know this (non-final) result."""
        waiters = self._waiters.get(task_id)
        if not waiters:
            return
        digest: bytes | None = None
        keep: list[Waiter] = []
        for w in waiters:
            if w.done:
                continue
            if w.known is None:
                keep.append(w)
                continue
            if digest is None:
                digest = bp.result_digest(result.state, result.payload)
            if w.known == digest:
                keep.append(w)
                continue
            self._finish(w)
            if self.alive(w.client):
                self._reply_result(w.client, w.req, task_id, result)
        if keep:
            self._waiters[task_id] = keep
        else:
            del self._waiters[task_id]

    def _refuse_waiters(self, task_id: str, final: bool, size: int) -> None:
        """A stored result too large for any reply: the waiters it would have
        answered (all for a final one, ResultWatch for another) get the error."""
        waiters = self._waiters.get(task_id)
        if not waiters:
            return
        error = self._too_large(task_id, size)
        keep: list[Waiter] = []
        for w in waiters:
            if w.done:
                continue
            if not final and w.known is None:
                keep.append(w)
                continue
            self._finish(w)
            self._reply_error(w.client, w.req, error)
        if keep:
            self._waiters[task_id] = keep
        else:
            del self._waiters[task_id]

    def _wake(self, task_id: str, result: Result) -> None:
        waiters = self._waiters.pop(task_id, None)
        if not waiters:
            return
        for w in waiters:
            if w.done:
                continue
            self._finish(w)
            if self.alive(w.client):
                self._reply_result(w.client, w.req, task_id, result)

    def _begin(self, task_id: str) -> None:
        self._pending[task_id] = self._pending.get(task_id, 0) + 1

    def _end(self, task_id: str) -> None:
        left = self._pending[task_id] - 1
        if left:
            self._pending[task_id] = left
        else:
            del self._pending[task_id]

    def _finish(self, waiter: Waiter) -> None:
        waiter.done = True
        count = self._waits_per_client.get(waiter.client, 0) - 1
        if count > 0:
            self._waits_per_client[waiter.client] = count
        else:
            self._waits_per_client.pop(waiter.client, None)

    def _reply_error(self, client: Client, req: int, exc: BrokerError) -> None:
        if self.alive(client):
            client.reply_error(req, exc)

    def _cached(self, task_id: str, now: float) -> Result | None:
        result = self._cache.get(task_id)
        if result is None:
            return None
        if result.expires_at <= now:
            self._forget(task_id)
            return None
        self._cache.move_to_end(task_id)
        return result

    def _remember(self, task_id: str, result: Result) -> None:
        self._forget(task_id)
        if len(result.payload) > CACHE_MAX_PAYLOAD:
            return
        self._cache[task_id] = result
        self._cache_bytes += len(result.payload)
        while len(self._cache) > CACHE_ENTRIES or self._cache_bytes > CACHE_BYTES:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= len(old.payload)

    def _forget(self, task_id: str) -> None:
        old = self._cache.pop(task_id, None)
        if old is not None:
            self._cache_bytes -= len(old.payload)

    def forget_prefix(self, prefix: str) -> None:
        """Drop the cached results of ids starting with ``prefix`` (a vhost
        deleted; its rows go with the same batch)."""
        for task_id in [t for t in self._cache if t.startswith(prefix)]:
            self._forget(task_id)
