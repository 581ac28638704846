"""From delivery to ack: accept, run, record, settle.

The per-message path is kept short because it is the worker's throughput:
no coroutine or asyncio task per message for plain functions (async
functions get the one task they need), no per-task log line at INFO, acks and
lease extensions coalesced per loop tick by the connection.

Order of effects, which is what makes the guarantees hold:

* a result is committed *before* the message is acked, so a crash in between
  re-runs the task rather than losing its result;
* a retry message is confirmed *before* the original is acked, so a retry is
  never lost; it is a delayed message held by the broker, not a timer here;
* task messages a task sends from the worker's loop are confirmed before its
  own message is acked;
* a message the worker refuses (a malformed header, unknown task, content
  type not accepted, undecodable or too deep a body, a zlib body inflating
  past ``task_max_decompressed_size``) is rejected with the reason, which
  dead-letters it if its queue has a dead-letter queue, and a FAILURE is
  recorded so callers are not left waiting; a message without a usable task
  id has nothing to record a result under and is only rejected. Headers are
  read through ``message.parse`` only, so no header can reach a timer or a
  request unchecked, and no message can stop the worker;
* a result, retry or task message larger than the broker's frame limit is
  refused by the client before it is sent (the connection and every other
  task on it carry on) and the task is recorded as FAILURE, once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...client import AsyncClient
from ...consumer import Delivery
from ...errors import BrokerError, MessageTooLarge
from .. import states
from ..exceptions import (
    ContentDisallowed,
    InvalidTaskMessage,
    NotRegistered,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from ..execution import execute_async
from ..interrupt import Interruptible
from ..message import parse, retry_headers
from ..outcome import ExcInfo, Outcome
from ..producer import TaskMessage, declare_async
from ..request import Request
from ..serialization import (
    CONTENT_TYPES,
    DecodeError,
    EncodeError,
    decode_body,
    encode_body,
    encode_error,
    encode_result,
)
from . import settle
from .job import Job
from .leases import LeaseKeeper
from .processes import ProcessPool
from .threads import ThreadRunner

if TYPE_CHECKING:
    from ..app import App
    from ..producer import Declared

__all__ = ["Dispatcher", "Stats"]

log = logging.getLogger("brokerd_client.tasks.worker")

#: The job whose async task is running in this context (tasks sending tasks).
_current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar(
    "brokerd_current_job", default=None
)


class Stats:
    """Counters for the periodic summary line and the final report."""

    __slots__ = ("failed", "received", "rejected", "retried", "revoked", "succeeded")

    def __init__(self) -> None:
        self.received = self.succeeded = self.failed = self.retried = 0
        self.revoked = self.rejected = 0

    def snapshot(self) -> tuple[int, int, int, int, int, int]:
        return (
            self.received,
            self.succeeded,
            self.failed,
            self.retried,
            self.revoked,
            self.rejected,
        )


class RevokedIds:
    """Task ids revoked while this worker runs (to skip prefetched messages).

    Bounded: the broker itself drops revoked messages before delivery, so
    this only has to cover messages already delivered, i.e. recent revokes;
    past the limit the oldest half is forgotten.
    """

    LIMIT = 100_000

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, task_id: str) -> None:
        ids = self._ids
        ids[task_id] = None
        if len(ids) > self.LIMIT:
            for old in list(ids)[: self.LIMIT // 2]:
                del ids[old]

    def update(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            self.add(task_id)


class Dispatcher:
    """Runs the jobs of one worker process (see the module docstring)."""

    def __init__(
        self,
        app: App,
        loop: asyncio.AbstractEventLoop,
        *,
        concurrency: int,
        pool: str,
        hostname: str,
        process_pool: ProcessPool | None = None,
    ) -> None:
        self.app = app
        self.loop = loop
        self.concurrency = concurrency
        self.pool = pool
        self.hostname = hostname
        conf = app.conf
        self.tasks = app.tasks
        self.acks_late = conf.task_acks_late
        self.track_started = conf.task_track_started
        self.result_ttl = conf.result_expires
        self.rser = conf.result_serializer
        self.store_errors_if_ignored = conf.task_store_errors_even_if_ignored
        self.acks_on_failure = conf.task_acks_on_failure_or_timeout
        self.reject_on_worker_lost = conf.task_reject_on_worker_lost
        self.accept = {CONTENT_TYPES[name]: name for name in conf.accept_content}
        self.max_decompressed = conf.task_max_decompressed_size
        self.held: dict[int, Job] = {}
        self.waiting: deque[Job] = deque()
        self.running = 0
        #: Jobs finished but not yet acked (waiting for a result or a retry confirm).
        self.settling = 0
        self.revoked = RevokedIds()
        self.stats = Stats()
        self.accepting = True
        self.client: AsyncClient | None = None
        self.declared: Declared | None = None
        self.leases = LeaseKeeper(loop, self.held, self._lease_lost)
        self.threads = ThreadRunner(loop, concurrency, self.finish, self.rser)
        self.processes = process_pool
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._background: set[asyncio.Task[Any]] = set()
        #: ResultSets sent and not yet confirmed (a warm shutdown waits for them).
        self._unconfirmed: set[asyncio.Future[Any]] = set()

    # --- receiving ---------------------------------------------------------------

    def accept_delivery(self, d: Delivery) -> None:
        """Take one delivery from a consumer: refuse it, drop it, or queue a job."""
        client = self.client
        assert client is not None
        if not self.accepting:
            settle.nack(d, requeue=True)
            return
        self.stats.received += 1
        try:
            meta = parse(d.headers, d.message_id, d.timestamp)
        except InvalidTaskMessage as exc:
            self._refuse_invalid(d, client, exc)
            return
        task_id, name = meta.id, meta.task
        if task_id in self.revoked:
            log.info("discarding revoked task %s[%s]", name, task_id)
            self.stats.revoked += 1
            settle.ack(d)
            return
        task = self.tasks.get(name)
        if task is None:
            self._refuse(d, client, task_id, NotRegistered(f"task {name!r} is not registered"))
            return
        serializer = self.accept.get(meta.content_type)
        if serializer is None:
            allowed = ", ".join(sorted(self.accept.values()))
            self._refuse(
                d,
                client,
                task_id,
                ContentDisallowed(
                    f"content-type {meta.content_type!r} is not accepted "
                    f"(accept_content: {allowed})"
                ),
            )
            return
        if meta.expires is not None and time.time() > meta.expires:
            log.info("task %s[%s] expired before it ran; revoking", name, task_id)
            self.stats.revoked += 1
            self._record(client, task_id, Outcome.revoked("expired before it could run"))
            settle.ack(d)
            return
        job = Job(d, client, task, meta, serializer)
        ignore = meta.ignore_result
        job.ignore_result = ignore if ignore is not None else task.ignore_result
        hard, soft = task.effective_time_limits
        job.hard_limit = meta.time_limit if meta.time_limit is not None else hard
        job.soft_limit = meta.soft_time_limit if meta.soft_time_limit is not None else soft
        self.held[d.delivery_id] = job
        self.leases.track(job)
        if d.redelivered and not job.ignore_result:
            # Its ack may have been lost after its final result was stored:
            # look before running it a second time.
            self._spawn(self._check_redelivered(job))
            return
        self._queue(job)

    def _queue(self, job: Job) -> None:
        if self.running < self.concurrency:
            self._start(job)
        else:
            self.waiting.append(job)

    async def _check_redelivered(self, job: Job) -> None:
        """Ack unrun a redelivered task that already has a final result."""
        state = None
        try:
            found = await job.client.result_get([job.task_id])
            state = found.get(job.task_id, (None,))[0]
        except Exception as exc:  # run it: at-least-once, as without the check
            log.warning("cannot look up the result of redelivered %r: %s", job, exc)
        d = job.delivery
        if job.finished or d.settled or self.held.get(d.delivery_id) is not job:
            return  # revoked meanwhile, or returned
        if job.client.is_closed:  # the broker has taken it back
            job.finished = True
            self.held.pop(d.delivery_id, None)
        elif not self.accepting:
            job.finished = True
            self.held.pop(d.delivery_id, None)
            settle.nack(d, requeue=True)
        elif state in states.READY_STATES:
            log.warning(
                "%r was delivered again but already has a final result (%s): its ack was "
                "lost; acking it without running it again",
                job,
                state,
            )
            job.finished = True
            self.held.pop(d.delivery_id, None)
            settle.ack(d)
        else:
            self._queue(job)

    def _refuse(self, d: Delivery, client: AsyncClient, task_id: str, exc: Exception) -> None:
        log.error("rejecting task %s: %s", task_id, exc)
        self.stats.rejected += 1
        self._record(client, task_id, Outcome.failure(exc))
        settle.reject(d, f"{type(exc).__name__}: {exc}")

    def _refuse_invalid(self, d: Delivery, client: AsyncClient, exc: InvalidTaskMessage) -> None:
        """A malformed message: a FAILURE under its task id, if it has a usable one."""
        if exc.task_id is None:
            log.error("rejecting message %s: %s", d.message_id, exc)
            self.stats.rejected += 1
            settle.reject(d, f"{type(exc).__name__}: {exc}")
        elif exc.task_id in self.revoked:
            self.stats.revoked += 1
            settle.ack(d)
        else:
            self._refuse(d, client, exc.task_id, exc)

    # --- starting -------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        self.running += 1
        job.started = True
        d = job.delivery
        task = job.task
        acks_late = task.acks_late if task.acks_late is not None else self.acks_late
        if not acks_late:
            # At-most-once, by request: the message is gone before the task runs.
            settle.ack(d)
            self.held.pop(d.delivery_id, None)
        if (task.track_started if task.track_started is not None else self.track_started) and (
            not job.ignore_result
        ):
            self._record(job.client, job.task_id, Outcome(states.STARTED), quiet=True)
        meta = job.meta
        use_children = self.processes is not None and not task.is_async
        if not use_children:
            try:
                job.args, job.kwargs = decode_body(
                    d.body, job.serializer, job.compression, self.max_decompressed
                )
            except DecodeError as exc:
                job.finished = True
                self.running -= 1
                self.held.pop(d.delivery_id, None)
                self._refuse(d, job.client, job.task_id, exc)
                self._start_waiting()
                return
        job.request = Request(
            id=job.task_id,
            task=task.name,
            args=job.args,
            kwargs=job.kwargs,
            retries=meta.retries,
            attempt=d.attempt,
            called_directly=False,
            hostname=self.hostname,
            parent_id=meta.parent_id,
            root_id=meta.root_id,
            delivery_info={
                "exchange": d.exchange,
                "routing_key": d.routing_key,
                "priority": d.priority,
                "redelivered": d.redelivered,
            },
            headers=d.headers,
            time_limit=(job.hard_limit, job.soft_limit),
        )
        if task.is_async:
            if job.soft_limit is not None:
                job.interruptible = Interruptible()
            aio = self.loop.create_task(self._run_async(job))
            job.aio_task = aio
        elif use_children:
            assert self.processes is not None
            self.processes.submit(job)
        else:
            self.threads.submit(job)
        if job.hard_limit is not None or (job.soft_limit is not None and not use_children):
            timers = []
            if job.soft_limit is not None and not use_children:
                timers.append(self.loop.call_later(job.soft_limit, self._soft_limit, job))
            if job.hard_limit is not None:
                timers.append(self.loop.call_later(job.hard_limit, self._hard_limit, job))
            job.timers = timers

    async def _run_async(self, job: Job) -> None:
        _current_job.set(job)
        assert job.request is not None
        try:
            outcome = await execute_async(
                job.task, job.request, job.args, job.kwargs, job.interruptible
            )
        except asyncio.CancelledError:
            # Stopped by us: a hard limit or revoke already recorded its
            # outcome; a cold shutdown leaves the message to be redelivered.
            return
        self.finish(job, outcome)

    def _start_waiting(self) -> None:
        waiting = self.waiting
        while waiting and self.running < self.concurrency:
            job = waiting.popleft()
            if job.finished:
                continue
            self._start(job)

    # --- limits, revocation, lost leases ---------------------------------------------

    def _soft_limit(self, job: Job) -> None:
        if job.finished:
            return
        log.warning("soft time limit (%gs) exceeded for %r", job.soft_limit or 0, job)
        if job.interruptible is not None:
            job.interruptible.throw(SoftTimeLimitExceeded("soft time limit exceeded"))
        elif not job.task.is_async:
            self.threads.interrupt(job, SoftTimeLimitExceeded)

    def _hard_limit(self, job: Job) -> None:
        if job.finished:
            return
        log.error("hard time limit (%gs) exceeded for %r; stopping it", job.hard_limit or 0, job)
        job.kill_reason = "time_limit"
        self._stop_job(job, TimeLimitExceeded)
        self.finish(
            job,
            Outcome.failure(TimeLimitExceeded(f"hard time limit ({job.hard_limit:g}s) exceeded")),
        )

    def _stop_job(self, job: Job, exc_type: type[BaseException]) -> None:
        if job.aio_task is not None:
            job.aio_task.cancel()
        elif job.child is not None and self.processes is not None:
            self.processes.kill(job)
        elif self.threads.interrupt(job, exc_type):
            # The thread stays busy until the exception lands; allow another.
            self.threads.grow()

    def revoke(self, task_id: str, terminate: bool) -> None:
        """A revocation pushed by the broker (or learnt at subscribe time)."""
        self.revoked.add(task_id)
        for job in list(self.held.values()):
            if job.task_id != task_id or job.finished:
                continue
            if not job.started:
                log.info("discarding revoked task %r", job)
                job.finished = True
                self.stats.revoked += 1
                self.held.pop(job.delivery.delivery_id, None)
                settle.ack(job.delivery)
            elif terminate:
                log.warning("terminating revoked task %r", job)
                job.kill_reason = "revoked"
                self._stop_job(job, TaskRevokedError)
                self.finish(job, Outcome.revoked("terminated by revoke(terminate=True)"))

    def _lease_lost(self, d: Delivery) -> None:
        job = self.held.get(d.delivery_id)
        log.warning(
            "lease of %s was lost (the worker was too slow to extend it?); the broker may "
            "deliver it to another worker",
            job if job is not None else d,
        )

    # --- finishing ------------------------------------------------------------------

    def finish(self, job: Job, outcome: Outcome) -> None:
        """A job ended (any pool, any reason); record it and settle its message."""
        if job.finished:
            return
        job.finished = True
        if job.timers is not None:
            job.cancel_timers()
        self.running -= 1
        self.settling += 1
        try:
            if job.pending:
                self._spawn(self._after_pending(job, outcome))
            else:
                self._complete(job, outcome)
        finally:
            if self.waiting:
                self._start_waiting()

    async def _after_pending(self, job: Job, outcome: Outcome) -> None:
        pending = job.pending or []
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        refused = [r for r in failed if isinstance(r, MessageTooLarge | EncodeError)]
        if refused:
            # Sending it again would be refused again: fail the task, once.
            log.error("%r: a task message it sent was refused: %s", job, refused[0])
            self._complete(job, Outcome.failure(refused[0]))
            return
        if failed:
            log.error(
                "%r: %d task message(s) it sent were not confirmed (%s); returning its message "
                "so it runs again",
                job,
                len(failed),
                failed[0],
            )
            self._give_back(job)
            return
        self._complete(job, outcome)

    def _complete(self, job: Job, outcome: Outcome) -> None:
        state = outcome.state
        if state == states.SUCCESS:
            self.stats.succeeded += 1
            if self._debug:
                log.debug("task %r succeeded: %r", job, outcome.value)
            if job.ignore_result:
                self._ack(job)
                return
            payload = outcome.payload
            if payload is None:
                try:
                    payload = encode_result(outcome.value, self.rser)
                except EncodeError as exc:
                    self.stats.succeeded -= 1
                    self._complete(job, Outcome.failure(exc))
                    return
            self._store_then_ack(job, states.SUCCESS, payload)
        elif state == states.RETRY:
            self.stats.retried += 1
            self._spawn(self._retry(job, outcome))
        elif state == states.REVOKED:
            self.stats.revoked += 1
            self._store_then_ack(job, states.REVOKED, self._error_payload(outcome.exc))
        else:
            self.stats.failed += 1
            info = outcome.exc
            if info is not None:
                log.error(
                    "task %r failed: %s: %s\n%s",
                    job,
                    info.exc_type,
                    info.exc_message,
                    info.traceback.rstrip(),
                )
            if (
                info is not None
                and info.exc_type == "WorkerLostError"
                and self.reject_on_worker_lost
            ):
                self._give_back(job)
                return
            settle_how = self._ack if self.acks_on_failure else self._reject
            if job.ignore_result and not self.store_errors_if_ignored:
                settle_how(job)
                return
            self._store_then_ack(job, states.FAILURE, self._error_payload(info), settle_how)

    def _error_payload(self, exc: ExcInfo | None) -> bytes:
        if exc is None:
            return b""
        return encode_error(exc.exc_type, exc.exc_module, exc.exc_message, exc.traceback, self.rser)

    def _store_then_ack(
        self,
        job: Job,
        state: str,
        payload: bytes,
        then: Callable[[Job], None] | None = None,
    ) -> None:
        """Send the ResultSet, then the ack right behind it on the same connection.

        The ack does not wait for the ResultSet's Ok: brokerd writes both
        through one batch pipeline whose commits complete in submission order
        (a ResultSet rides the same group commit as the frames around it), so
        the ack can never become durable before the result. Not waiting keeps
        the prefetch window moving: with results stored, throughput would
        otherwise be ``concurrency / commit latency``.
        """
        try:
            try:
                fut = job.client.result_set(job.task_id, state, payload, self.result_ttl)
            except MessageTooLarge as exc:
                state, payload = self._too_large(job, state, payload, exc)
                then = self._ack if self.acks_on_failure else self._reject
                fut = job.client.result_set(job.task_id, state, payload, self.result_ttl)
        except BrokerError as exc:
            log.warning("result of %r not stored: %s", job, exc)
        else:
            self._track_result(fut, job.task_id, state)
        (then or self._ack)(job)

    def _too_large(
        self, job: Job, state: str, payload: bytes, exc: MessageTooLarge
    ) -> tuple[str, bytes]:
        """The FAILURE to store instead of a result the broker would not take.

        Nothing was sent (the client checks sizes first), so the connection
        and the other tasks on it are unaffected; this failure is small.
        """
        limit = _payload_limit(exc, len(payload))
        error = MessageTooLarge(
            f"result of {len(payload)} bytes exceeds the limit of {limit} bytes "
            f"(the broker's max_frame of {exc.limit} bytes, less the ResultSet frame around it)",
            size=len(payload),
            limit=limit,
        )
        log.error("task %r: %s; recording a FAILURE instead", job, error)
        if state == states.SUCCESS:
            self.stats.succeeded -= 1
            self.stats.failed += 1
        return states.FAILURE, self._error_payload(ExcInfo.from_exception(error))

    def _record(
        self, client: AsyncClient, task_id: str, outcome: Outcome, *, quiet: bool = False
    ) -> None:
        """Store a state without waiting (refusals, STARTED, expiry)."""
        started = outcome.state == states.STARTED
        payload = b"" if started else self._error_payload(outcome.exc)
        try:
            fut = client.result_set(task_id, outcome.state, payload, self.result_ttl)
        except BrokerError as exc:
            if not quiet:
                log.warning("state %s of task %s not stored: %s", outcome.state, task_id, exc)
            return
        self._track_result(fut, task_id, outcome.state)

    def _track_result(self, fut: asyncio.Future[Any], task_id: str, state: str) -> None:
        self._unconfirmed.add(fut)
        fut.add_done_callback(self._unconfirmed.discard)
        fut.add_done_callback(_log_failure(task_id, state))

    async def wait_results(self, timeout: float) -> None:  # noqa: ASYNC109 - bounded wait
        """Wait (bounded) for the confirms of results already sent."""
        if self._unconfirmed:
            await asyncio.wait(set(self._unconfirmed), timeout=timeout)

    async def _retry(self, job: Job, outcome: Outcome) -> None:
        """Publish the next attempt (delayed in the broker), record RETRY, then ack."""
        d = job.delivery
        retries = job.retries + 1
        exc = outcome.exc
        log.info(
            "task %r will be retried in %.3gs (attempt %d): %s",
            job,
            outcome.countdown,
            retries + 1,
            f"{exc.exc_type}: {exc.exc_message}" if exc else "retry requested",
        )
        try:
            body = d.body
            if outcome.args is not None or outcome.kwargs is not None:
                args = outcome.args if outcome.args is not None else job.args
                kwargs = outcome.kwargs if outcome.kwargs is not None else job.kwargs
                body = encode_body(args, kwargs, job.serializer, job.compression)
            headers = retry_headers(d.headers, job.task_id, retries)
            await job.client.publish(
                d.exchange,
                d.routing_key,
                body,
                headers=headers,
                delay=outcome.countdown if outcome.countdown > 0 else None,
                priority=d.priority,
                message_id=job.task_id,
                mandatory=True,
            )
        except (MessageTooLarge, EncodeError) as err:
            # Sending it again would be refused again: fail the task, once.
            log.error("the retry of %r cannot be sent (%s); failing the task", job, err)
            self.stats.retried -= 1
            self._complete(job, Outcome.failure(err))
            return
        except Exception as err:
            log.error("could not schedule the retry of %r (%s); returning its message", job, err)
            self._give_back(job, delay=outcome.countdown)
            return
        if not job.ignore_result:
            try:
                await job.client.result_set(
                    job.task_id, states.RETRY, self._error_payload(exc), self.result_ttl
                )
            except BrokerError as err:
                log.warning("RETRY state of %r not stored: %s", job, err)
        self._ack(job)

    # --- settling -------------------------------------------------------------------

    def _done_settling(self, job: Job) -> None:
        self.held.pop(job.delivery.delivery_id, None)
        self.settling -= 1
        if not self.running and not self.settling and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _ack(self, job: Job) -> None:
        if not job.delivery.settled:
            settle.ack(job.delivery)
        self._done_settling(job)

    def _reject(self, job: Job) -> None:
        if not job.delivery.settled:
            settle.reject(job.delivery)
        self._done_settling(job)

    def _give_back(self, job: Job, delay: float | None = None) -> None:
        if not job.delivery.settled:
            settle.nack(job.delivery, requeue=True, delay=delay or None)
        self._done_settling(job)

    # --- tasks sending tasks (WorkerHook) ---------------------------------------------

    def publish(self, messages: list[TaskMessage]) -> None:
        """Send task messages from code running on the worker's loop.

        A body larger than the broker's frame limit raises
        :class:`MessageTooLarge` here, in the task's ``delay()`` call; one that
        only the headers push over the limit fails the task when it is sent.
        """
        client = self.client
        if client is not None:
            for tm in messages:
                if len(tm.message.body) > client.max_frame:
                    raise MessageTooLarge(
                        f"task message of {len(tm.message.body)} bytes exceeds the limit of "
                        f"{client.max_frame} bytes (the broker's max_frame); nothing was sent",
                        size=len(tm.message.body),
                        limit=client.max_frame,
                    )
        job = _current_job.get()
        task = self.loop.create_task(self._publish(messages))
        if job is not None and not job.finished:
            if job.pending is None:
                job.pending = []
            job.pending.append(task)
        else:
            self._background.add(task)
            task.add_done_callback(self._background_done)

    async def _publish(self, messages: list[TaskMessage]) -> None:
        client = self.client
        if client is None or self.declared is None:
            raise BrokerError("the worker is not connected")
        topo = self.app.router.topology
        for route in {tm.route for tm in messages}:
            await declare_async(client, topo, self.declared, route)
        await client.publish_many([tm.message for tm in messages])

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sending a task failed: %s", task.exception())

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- shutdown -------------------------------------------------------------------

    def return_waiting(self) -> int:
        """Give back jobs that never started (warm shutdown); returns how many."""
        n = 0
        while self.waiting:
            job = self.waiting.popleft()
            if job.finished:
                continue
            job.finished = True
            self.held.pop(job.delivery.delivery_id, None)
            settle.nack(job.delivery, requeue=True)
            n += 1
        return n

    def forget_connection(self, client: AsyncClient) -> None:
        """The connection ``client`` died: the broker has taken its deliveries back."""
        for job in [j for j in self.waiting if j.client is client]:
            job.finished = True
            self.held.pop(job.delivery.delivery_id, None)
        self.waiting = deque(j for j in self.waiting if not j.finished)

    async def wait_idle(self, timeout: float | None) -> bool:  # noqa: ASYNC109 - a grace period
        """Wait until nothing runs or settles; False on timeout."""
        if not self.running and not self.settling:
            return True
        fut: asyncio.Future[None] = self.loop.create_future()
        self._idle_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        return True

    def stop_all(self) -> None:
        """Cold shutdown: stop every running task without recording anything."""
        for job in list(self.held.values()):
            if job.started and not job.finished and job.aio_task is not None:
                job.aio_task.cancel()
        if self.processes is not None:
            self.processes.kill_all()
        self.threads.shutdown()
        self.leases.stop()


def _payload_limit(exc: MessageTooLarge, payload_size: int) -> int:
    """The largest payload that would have fit in the frame ``exc`` refused."""
    if exc.limit is None or exc.size is None:
        return 0
    return max(0, exc.limit - (exc.size - payload_size))


def _log_failure(task_id: str, state: str) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("state %s of task %s not stored: %s", state, task_id, fut.exception())

    return done
