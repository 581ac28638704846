"""``PostgresStore``: the broker's queues in a PostgreSQL database.

Why asyncpg on a thread of its own rather than on the broker's event loop:
asyncpg was chosen by measuring (bench/pgdriver.py, docs/postgresql.md); it
needs an event loop, and the broker's loop is the process's busiest core. The
store runs its own loop on a writer thread, as ``SqliteStore`` runs its
writer thread: the broker hands over a batch with one thread-safe append and
gets its callbacks back through ``post`` (``loop.call_soon_threadsafe``), so
the Store contract holds unchanged: callbacks run from the loop's schedule,
never inside the submitting call, and every job completes in submission
order (one connection, one coroutine taking jobs in order).

Group commit: the writer takes every commit queued while its previous
transaction ran (within ``GROUP_BYTES`` / ``GROUP_ROWS``) into one
transaction. A group holding a batch that promises durability commits with
the server's ``synchronous_commit`` (``on`` at least: the commit returns once
its WAL is flushed; ``remote_apply`` with a synchronous standby adds "and
applied on the standby"); so *written* and *done* are reported together when
``COMMIT`` returns. Every other group (acks, returns, expiries) commits with
``synchronous_commit = off``: a crash of brokerd keeps it, a crash of the
database server may undo it, as a power cut may undo SQLite's unsynced
commits. PostgreSQL's WAL is one sequence, so the durable state is always a
prefix of the commits.

A group that fails applies nothing (the transaction is rolled back) and
every batch in it is told the error, so nothing is confirmed that was not
committed. A connection found closed is opened again before the next job.

Every write transaction is fenced by the leadership lease (``leader.py``):
it opens by renewing the lease under this node's epoch, in the same message
as ``BEGIN``. Once another node holds a newer epoch, that transaction and
every later job fail with ``Fenced``, and ``on_fenced`` tells the broker once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ...stats import LATENCY_BOUNDS, Buckets
from ..base import Batch, Done, Loaded, Queried, Query, Recovered, Written, read_messages
from ..errors import StorageOpenError
from ..lock import DataDirLock
from ..sqlite import batch_rows
from . import leader
from .mapping import apply_batches, delayed_sql, query_sql, ready_sql
from .mapping import recover as recover_database
from .schema import SchemaTooNew, migrate
from .url import check_url, redact

log = logging.getLogger("brokerd.storage")

T = TypeVar("T")

#: A group commit takes queued batches up to this many body bytes or rows
#: (a single larger batch still commits, alone and whole).
GROUP_BYTES = 4 * 1024 * 1024
GROUP_ROWS = 20_000
#: Seconds to wait for the database at start-up.
CONNECT_TIMEOUT = 10.0
#: Seconds to wait at start-up for another node's lease to run out (a node
#: killed a moment ago still holds it): a little over one lease.
LEASE_WAIT = leader.LEASE + 2.0

_COMMIT = 1
_READ = 2
_STOP = 3

#: (kind, batch or read arguments, done, written: commits only).
Job = tuple[int, Any, Any, Written | None]
Post = Callable[..., Any]


class PostgresStore:
    """A ``Store`` over one PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        durability: str = "full",
        connect_timeout: float = CONNECT_TIMEOUT,
        lease_wait: float = LEASE_WAIT,
        lock_dir: Path | None = None,
        node: str | None = None,
        address: str | None = None,
        standby: bool = False,
    ) -> None:
        """``lock_dir``: a directory this broker holds alone for its life
        (the data dir, home of the control socket). ``node``: this node's
        name in the leadership lease (default: kept in ``lock_dir``, or new
        for each store); ``address``: where clients reach it. ``standby``:
        when another node holds the lease, open as a standby (``active``
        false; ``take_over`` waits for the lease) instead of refusing."""
        if durability not in ("full", "normal"):
            raise ValueError("durability must be 'full' or 'normal'")
        check_url(url)
        #: The URL as logs and errors show it (no password).
        self.shown = redact(url)
        self._lock: DataDirLock | None = None
        self.durability = durability
        try:
            import asyncpg
        except ImportError:
            raise StorageOpenError(
                self.shown,
                "the PostgreSQL driver (asyncpg) is not installed",
                "pip install 'brokerd[postgresql]'",
            ) from None
        self._asyncpg: Any = asyncpg
        #: What a statement raises when the connection under it is gone: the
        #: protocol left idle by the server's parting error, the socket's end,
        #: or the server shutting the session down (terminate, restart).
        self._lost: tuple[type[BaseException], ...] = (
            asyncpg.exceptions.InternalClientError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,
            OSError,
        )
        #: What says the database is away (a lost connection, or connecting
        #: failed or timed out) rather than refusing the job itself.
        self._away: tuple[type[BaseException], ...] = (*self._lost, TimeoutError)
        #: This node's name in the lease: the data dir's, so a restart of
        #: the same node takes its lease back at once.
        self.node = node or uuid.uuid4().hex
        if lock_dir is not None:
            lock_dir.mkdir(parents=True, exist_ok=True)
            self._lock = DataDirLock(lock_dir, lock_dir)
            if node is None:
                try:
                    self.node = node_name(lock_dir)
                except OSError:
                    self._lock.release()
                    raise
        self._url = url
        self._connect_timeout = connect_timeout
        self._lease_wait = lease_wait
        #: ``host:port`` clients reach this node at, kept in the lease row.
        self.address = address
        self._standby = standby
        #: This node holds the lease and may write.
        self.active = False
        #: While standing by: the active node's advertised address, as last
        #: read from the lease row (None: unknown).
        self.holder_address: str | None = None
        self._waiting: Any = None
        #: The fencing epoch this node writes under (``leader.py``).
        self.epoch = 0
        #: Another node took the lease: every later job fails with ``Fenced``.
        self.fenced: leader.Fenced | None = None
        #: monotonic() of the last renewal of the lease.
        self._renewed_at = time.monotonic()
        #: Called on the broker's loop, once, when this node is fenced.
        self.on_fenced: Callable[[leader.Fenced], None] | None = None
        #: Called on the broker's loop with True when the database goes away
        #: (commits wait and are retried) and False when it is back.
        self.on_unavailable: Callable[[bool], None] | None = None
        #: monotonic() since the database is away, or None.
        self.unavailable_since: float | None = None
        #: Times the database went away.
        self.outages = 0
        #: Group commits so far (each group's number, its commit marker).
        self._groups = 0
        #: close() was called: stop waiting for an absent database.
        self._closing = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="brokerd-pg-writer", daemon=True
        )
        self._thread.start()
        self._jobs: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._runner: Any = None
        self._post: Post | None = None
        self._conn: Any = None
        self.commits = 0
        #: Group commits that waited for the WAL flush (synchronous_commit on).
        self.synced_commits = 0
        #: Body bytes committed so far.
        self.committed_bytes = 0
        #: Seconds per group commit (BEGIN..COMMIT).
        self.commit_seconds = Buckets(LATENCY_BOUNDS)
        #: (schema version found, schema version now), after opening.
        self.schema_versions = (0, 0)
        try:
            self.schema_versions = self._call(self._open())
        except Exception as exc:
            self._shutdown()
            raise self._open_error(exc) from None
        except BaseException:
            self._shutdown()
            raise
        log.info(
            "store: PostgreSQL %s (node %s, %s, schema version %d%s)",
            self.shown,
            self.node,
            f"epoch {self.epoch}" if self.active else "standing by",
            self.schema_versions[1],
            ""
            if self.schema_versions[0] == self.schema_versions[1]
            else f", migrated from {self.schema_versions[0]}",
        )

    # --- the writer thread's loop ----------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the writer loop and wait for it (start-up, close)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _connect(self) -> Any:
        conn = await self._asyncpg.connect(
            self._url,
            timeout=self._connect_timeout,
            server_settings={"application_name": "brokerd"},
        )
        # A confirm means committed: never let a server-wide "off" apply to
        # the groups that promise durability (stronger settings stay).
        if await conn.fetchval("SHOW synchronous_commit") == "off":
            await conn.execute("SET synchronous_commit = on")
        return conn

    async def _open(self) -> tuple[int, int]:
        self._wake = asyncio.Event()
        self._conn = await self._connect()
        versions = await migrate(self._conn)
        deadline = time.monotonic() + self._lease_wait
        while True:
            epoch = await leader.take(self._conn, self.node, self.address)
            if epoch is not None:
                self.epoch = epoch
                self.active = True
                return versions
            if self._standby:
                held = await leader.holder(self._conn)
                self.holder_address = held[1] if held else None
                return versions
            if time.monotonic() >= deadline:
                held = await leader.holder(self._conn)
                who = f"node {held[0]} at {held[1] or 'an unknown address'}" if held else "?"
                raise StorageOpenError(
                    self.shown,
                    f"another brokerd ({who}) holds this database's lease",
                    "stop that one first, or start this one as a standby",
                )
            await asyncio.sleep(0.1)

    def _open_error(self, exc: BaseException) -> StorageOpenError:
        if isinstance(exc, StorageOpenError):
            return exc
        if isinstance(exc, leader.Fenced):
            return StorageOpenError(self.shown, str(exc), "another node runs the queues now")
        if isinstance(exc, SchemaTooNew):
            return StorageOpenError(
                self.shown,
                str(exc),
                "run the newer brokerd, or restore a backup taken before it migrated",
            )
        if isinstance(exc, OSError | TimeoutError):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return StorageOpenError(
                self.shown,
                f"cannot reach the database server ({reason or type(exc).__name__})",
                "check that PostgreSQL runs and listens at that host and port",
            )
        pg = self._asyncpg
        if isinstance(exc, pg.InvalidCatalogNameError):
            return StorageOpenError(
                self.shown, "the database does not exist", "create it (createdb), then start again"
            )
        if isinstance(exc, pg.InvalidPasswordError | pg.InvalidAuthorizationSpecificationError):
            return StorageOpenError(
                self.shown,
                "the server refused the user or password",
                "check the user, and give the password in PGPASSWORD or ~/.pgpass",
            )
        if isinstance(exc, pg.InsufficientPrivilegeError):
            return StorageOpenError(
                self.shown,
                f"permission denied ({exc})",
                "brokerd needs to create tables in the database: grant CREATE, or run the "
                "first start as the database's owner",
            )
        return StorageOpenError(
            self.shown, f"{type(exc).__name__}: {exc}", "check the database and its log"
        )

    # --- standing by -----------------------------------------------------------

    def take_over(self) -> bool:
        """Block (off the broker's loop) until this standby holds the lease:
        True once it does (a new epoch; ``recover`` next), False when
        ``stop_waiting`` ended the wait. Meanwhile ``holder_address`` follows
        the active node's advertised address."""
        if self.active:
            return True
        self._waiting = asyncio.run_coroutine_threadsafe(self._wait_for_lease(), self._loop)
        try:
            return bool(self._waiting.result())
        except concurrent.futures.CancelledError:
            return False

    def stop_waiting(self) -> None:
        """End a ``take_over`` wait (the node is stopping)."""
        if self._waiting is not None:
            self._waiting.cancel()

    async def _wait_for_lease(self) -> bool:
        while True:
            try:
                conn = await self._connection()
                epoch = await leader.take(conn, self.node, self.address)
                if epoch is not None:
                    self.epoch = epoch
                    self._renewed_at = time.monotonic()
                    self.active = True
                    return True
                held = await leader.holder(conn)
                self.holder_address = held[1] if held else None
            except self._lost as exc:
                log.warning("standby: the database is unreachable (%s); trying again", exc)
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
            await asyncio.sleep(leader.POLL)

    def advertise(self, address: str) -> None:
        """Keep ``address`` in the lease row (once the listener is bound)."""
        self.address = address
        self._submit(
            (_READ, (leader.ADDRESS_SQL, (address, self.epoch), False, None), _ignore, None)
        )

    # --- start-up -----------------------------------------------------------

    def recover(self, now: float) -> Recovered:
        """Read topology and counts; make delayed messages that fell due
        ready. Runs before ``start``; ``StorageOpenError`` when it fails."""
        try:
            return self._call(recover_database(self._conn, now, self.epoch))
        except Exception as exc:
            raise self._open_error(exc) from None

    def start(self, post: Post) -> None:
        """Begin applying jobs; ``post`` schedules a callback on the broker's
        loop thread (``loop.call_soon_threadsafe``)."""
        self._post = post
        self._runner = asyncio.run_coroutine_threadsafe(self._run(), self._loop)

    # --- Store protocol -----------------------------------------------------

    def _submit(self, job: Job) -> None:
        self._jobs.append(job)
        wake = self._wake
        if wake is not None:
            self._loop.call_soon_threadsafe(wake.set)

    def commit(self, batch: Batch, done: Done, written: Written | None = None) -> None:
        self._submit((_COMMIT, batch, done, written))

    def load_ready(
        self,
        queue: str,
        priority: int,
        after_seq: int,
        limit: int,
        done: Loaded,
        *,
        max_bytes: int | None = None,
    ) -> None:
        sql, args = ready_sql(queue, priority, after_seq, limit, max_bytes)
        self._submit((_READ, (sql, args, True, max_bytes), done, None))

    def load_delayed(
        self, after: tuple[float, int], limit: int, done: Loaded, *, max_bytes: int | None = None
    ) -> None:
        sql, args = delayed_sql(after, limit, max_bytes)
        self._submit((_READ, (sql, args, True, max_bytes), done, None))

    def read(self, query: Query, params: tuple[Any, ...], done: Queried) -> None:
        sql, args = query_sql(query, params)
        self._submit((_READ, (sql, args, False, None), done, None))

    def close(self) -> None:
        """Finish every queued job, then close the connection."""
        self._closing = True
        if self._runner is not None:
            self._submit((_STOP, None, None, None))
            self._runner.result()
            self._runner = None
        self._shutdown()

    def _shutdown(self) -> None:
        if self._loop.is_closed():
            return
        if self._conn is not None:
            try:
                self._call(self._conn.close(timeout=5))
            except Exception as exc:
                log.warning("closing the PostgreSQL connection: %s", exc)
            self._conn = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        if self._lock is not None:
            self._lock.release()

    # --- writer -----------------------------------------------------------

    async def _run(self) -> None:
        jobs = self._jobs
        wake = self._wake
        assert wake is not None
        while True:
            if time.monotonic() - self._renewed_at >= leader.RENEW:
                await self._renew()
            if not jobs:
                wake.clear()
                if not jobs:
                    try:
                        await asyncio.wait_for(wake.wait(), leader.RENEW)
                    except TimeoutError:
                        await self._renew()
                continue
            job = jobs.popleft()
            kind = job[0]
            if kind == _STOP:
                return
            if kind == _READ:
                await self._read(job)
                continue
            group = [job]
            nbytes, rows = job[1].nbytes, batch_rows(job[1])
            while jobs and jobs[0][0] == _COMMIT and nbytes < GROUP_BYTES and rows < GROUP_ROWS:
                nxt = jobs[0]
                more_bytes, more_rows = nxt[1].nbytes, batch_rows(nxt[1])
                if nbytes + more_bytes > GROUP_BYTES or rows + more_rows > GROUP_ROWS:
                    break
                group.append(jobs.popleft())
                nbytes += more_bytes
                rows += more_rows
            await self._commit_group(group, nbytes)

    async def _connection(self) -> Any:
        """The connection, opened again if it was lost."""
        if self._conn is None or self._conn.is_closed():
            log.warning("PostgreSQL connection lost; connecting again to %s", self.shown)
            self._conn = None
            self._conn = await self._connect()
        return self._conn

    async def _begin(self, sql: str) -> tuple[Any, str]:
        """Open a group's transaction, on a new connection if the server went
        away while this one sat idle.

        ``is_closed()`` turns true only once the socket's end is read; the
        server's parting error can come first and leave the connection
        refusing every statement. A refused or failed BEGIN committed nothing,
        so the group is tried once more on a fresh connection instead of
        failing its publishers. Failures later in the transaction are not
        retried here: they reach the group's publishers (nothing confirmed).
        """
        conn = await self._connection()
        try:
            return conn, await conn.execute(sql)
        except self._lost as exc:
            conn = await self._replace(conn, exc)
            return conn, await conn.execute(sql)

    async def _replace(self, conn: Any, exc: BaseException) -> Any:
        log.warning("PostgreSQL connection found dead (%s); connecting again", exc)
        conn.terminate()
        self._conn = None
        return await self._connection()

    async def _commit_group(self, group: list[Job], nbytes: int) -> None:
        """Commit ``group`` in one transaction, and tell its batches.

        While the database is away (restarting, failing over) the group is
        kept and tried again, with backoff, until it commits: its publishers
        wait (flow control holds them, ``on_unavailable``) rather than fail.
        A COMMIT whose connection broke may have committed or not; the
        group's number, written by the fencing statement inside the same
        transaction, says which, so a group is never applied twice.
        """
        started = time.perf_counter()
        sync = self.durability == "full" and any(batch.sync for _, batch, _, _ in group)
        dones = [done for _, _, done, _ in group]
        written = [w for _, _, _, w in group if w is not None]
        batches = [batch for _, batch, _, _ in group]
        assert self._post is not None
        self._groups += 1
        number = self._groups
        attempt = 0
        while True:
            try:
                await self._try_commit(batches, sync, number)
                break
            except BaseException as exc:
                if isinstance(exc, self._away) and not self._closing:
                    self._set_unavailable(exc)
                    await asyncio.sleep(_retry_delay(attempt))
                    attempt += 1
                    done = await self._committed(number)
                    if done is None:
                        continue  # still away, or not committed: try the group again
                    if done:
                        break
                    exc = self._fence()
                if exc is not self.fenced:
                    log.critical("commit failed: %s", exc)
                self._post(_finish, [], dones, exc)
                if not isinstance(exc, Exception):
                    raise
                return
        self._set_available()
        self.commits += 1
        if sync:
            self.synced_commits += 1
        self.committed_bytes += nbytes
        self.commit_seconds.observe(time.perf_counter() - started)
        self._post(_finish, written, dones, None)

    async def _try_commit(self, batches: list[Batch], sync: bool, number: int) -> None:
        conn: Any = None
        try:
            if self.fenced is not None:
                raise self.fenced
            # One message: begin, and renew the lease if the epoch is still ours.
            begin = "BEGIN; " if sync else "BEGIN; SET LOCAL synchronous_commit = off; "
            renewing = time.monotonic()
            conn, status = await self._begin(begin + leader.fence_group_sql(self.epoch, number))
            if not leader.still_ours(status):
                raise self._fence()
            self._renewed_at = renewing
            await apply_batches(conn, batches)
            await conn.execute("COMMIT")
        except BaseException as exc:
            if isinstance(exc, self._away):
                self._drop(conn)
            elif conn is not None and not conn.is_closed():
                try:
                    await conn.execute("ROLLBACK")
                except Exception as rollback_exc:
                    log.error("rollback failed: %s", rollback_exc)
                    self._drop(conn)
            raise

    async def _committed(self, number: int) -> bool | None:
        """After a group failed with the database away: True if it committed
        all the same (its COMMIT went through before the connection broke),
        False if another node took the lease meanwhile, None if it did not
        commit or the database is still away."""
        try:
            conn = await self._connection()
            last = await leader.committed_group(conn, self.epoch)
        except self._away as exc:
            self._drop(self._conn)
            log.debug("the database is still away: %s", exc)
            return None
        if last is None:
            return False
        return True if last == number else None

    def _drop(self, conn: Any) -> None:
        """Forget a connection the database side broke; the next job reconnects."""
        if conn is not None:
            conn.terminate()
        if self._conn is conn:
            self._conn = None

    def _set_unavailable(self, exc: BaseException) -> None:
        if self.unavailable_since is not None:
            return
        self.unavailable_since = time.monotonic()
        self.outages += 1
        log.error(
            "PostgreSQL is unavailable (%s): holding publishers and retrying; nothing "
            "accepted is dropped",
            exc,
        )
        if self.on_unavailable is not None and self._post is not None:
            self._post(self.on_unavailable, True)

    def _set_available(self) -> None:
        since = self.unavailable_since
        if since is None:
            return
        self.unavailable_since = None
        log.warning(
            "PostgreSQL is back after %.1f s: resuming publishers", time.monotonic() - since
        )
        if self.on_unavailable is not None and self._post is not None:
            self._post(self.on_unavailable, False)

    def _fence(self) -> leader.Fenced:
        """Another node holds a newer epoch: stop writing, and say so once."""
        if self.fenced is None:
            self.fenced = leader.Fenced(self.epoch)
            log.critical("%s", self.fenced)
            if self.on_fenced is not None and self._post is not None:
                self._post(self.on_fenced, self.fenced)
        return self.fenced

    async def _renew(self) -> None:
        """Keep the lease while idle (a commit renews it too)."""
        if self.fenced is not None:
            return
        try:
            conn = await self._connection()
            renewing = time.monotonic()
            if not leader.still_ours(await conn.execute(leader.fence_sql(self.epoch))):
                self._fence()
            self._renewed_at = renewing
        except self._away as exc:
            self._drop(self._conn)
            self._set_unavailable(exc)
            return
        except Exception as exc:  # the next commit reports it to its batches
            log.warning("renewing the lease failed: %s", exc)
            return
        self._set_available()

    async def _read(self, job: Job) -> None:
        sql, args, as_messages, max_bytes = job[1]
        result: Any
        try:
            if self.fenced is not None:
                raise self.fenced
            attempt = 0
            while True:  # a read changes nothing: ask again until the database is back
                try:
                    conn = await self._connection()
                    rows = await conn.fetch(sql, *args)
                    break
                except self._away as exc:
                    self._drop(self._conn)
                    if self._closing:
                        raise
                    self._set_unavailable(exc)
                    await asyncio.sleep(_retry_delay(attempt))
                    attempt += 1
            result = read_messages(rows, max_bytes) if as_messages else [tuple(r) for r in rows]
        except Exception as exc:
            log.error("read failed: %s", exc)
            result = exc
        assert self._post is not None
        self._post(job[2], result)


#: Seconds between tries while the database is away: doubling up to the last.
RETRY_FIRST = 0.05
RETRY_MAX = 1.0


def _retry_delay(attempt: int) -> float:
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** min(attempt, 16))


def _ignore(result: object) -> None:
    """A job whose outcome nobody waits for (a failure is logged where it ran)."""


def _finish(written: list[Written], dones: list[Done], error: BaseException | None) -> None:
    """On the loop: report a group written (its batches in order), then done."""
    for callback in written:
        callback()
    for done in dones:
        done(error)


#: The file in the data dir holding the node's name.
NODE_FILE = "node-id"


def node_name(data_dir: Path) -> str:
    """This node's name, kept in its data dir (made on first use)."""
    path = data_dir / NODE_FILE
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        name = ""
    if not name:
        name = uuid.uuid4().hex
        tmp = path.with_name(NODE_FILE + ".new")
        tmp.write_text(name + "\n")
        tmp.replace(path)
    return name[:64]
