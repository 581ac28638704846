"""From delivery to ack: accept, run, hand the outcome on.

The per-message path is kept short because it is the worker's throughput:
no coroutine or asyncio task per message for plain functions (async
functions get the one task they need), no per-task log line at INFO, acks and
lease extensions coalesced per loop tick by the connection.

What happens to a finished job (its result stored before its ack, its retry
confirmed before its ack) is :mod:`.recorder`'s; this module decides which
deliveries run, when and where:

* a message the worker refuses (a malformed header, unknown task, content
  type not accepted, undecodable or too deep a body, a zlib body inflating
  past ``task_max_decompressed_size``, a Celery message this worker cannot
  run: pickle, protocol 1, canvas) is rejected with the reason, which
  dead-letters it if its queue has a dead-letter queue, and a FAILURE is
  recorded so callers are not left waiting; a message without a usable task
  id has nothing to record a result under and is only rejected. Headers are
  read through ``message.parse`` only, so no header can reach a timer or a
  request unchecked, and no message can stop the worker;
* at most ``concurrency`` jobs run at once; the rest wait in arrival order,
  their leases kept alive by one :class:`LeaseKeeper`; a job of a
  rate-limited task first waits for its slot from the broker (:mod:`.ratelimits`);
* time limits, revocations and lost leases stop or drop the jobs they concern.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ...client import AsyncClient
from ...consumer import Delivery
from ...errors import BrokerError, MessageTooLarge
from .. import states
from ..canvasio import CANVAS_HEADER, follow_up
from ..declare import declare_async
from ..exceptions import (
    ContentDisallowed,
    InvalidTaskMessage,
    NotRegistered,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from ..execution import execute_async
from ..hooks import revoked as revoked_signal
from ..interrupt import Interruptible
from ..message import CELERY_V2, MAX_TIME_LIMIT, TaskMessage, parse
from ..outcome import Outcome
from ..request import Request
from ..serialization import CONTENT_TYPES, DecodeError, decode_body
from ..signals import task_revoked
from . import settle
from .events import EventSender
from .job import Job
from .leases import LeaseKeeper
from .processes import ProcessPool
from .ratelimits import RateGate
from .recorder import Recorder
from .stats import Stats
from .tasklog import TaskLog
from .threads import ThreadRunner

if TYPE_CHECKING:
    from ..app import App
    from ..declare import Declared
    from ..task import Task

__all__ = ["Dispatcher"]

log = logging.getLogger("brokerd_client.tasks.worker")

#: How far in the future a Celery message's ``eta`` may be and the task still
#: run at once: the broker held it until then by its own clock, and a worker's
#: clock a little behind is no reason to send it round again.
ETA_SLACK = 1.0

#: The job whose async task is running in this context (tasks sending tasks).
_current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar(
    "brokerd_current_job", default=None
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

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def add(self, task_id: str) -> None:
        ids = self._ids
        ids[task_id] = None
        if len(ids) > self.LIMIT:
            for old in list(ids)[: self.LIMIT // 2]:
                del ids[old]

    def update(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            self.add(task_id)


#: Finished first runs of lost connections remembered, and for how long (s).
FIRST_RUNS_KEPT = 10_000
FIRST_RUNS_SECONDS = 3600.0


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
        task_events: bool = False,
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
        #: Jobs still running whose connection died (their leases went with
        #: it, so their messages may be running again elsewhere), and how
        #: many of them run each task id.
        self._orphaned: set[Job] = set()
        self.orphans: dict[str, int] = {}
        #: Task ids of orphans that finished, and when (``FIRST_RUNS_KEPT``
        #: of them for ``FIRST_RUNS_SECONDS``): a delivery of one of them
        #: soon after is a second run of a task whose first run is done.
        self._first_runs: OrderedDict[str, float] = OrderedDict()
        self.declared: Declared | None = None
        self.leases = LeaseKeeper(loop, self.held, self._lease_lost)
        self.threads = ThreadRunner(loop, concurrency, self.finish, conf.result_serializer)
        self.processes = process_pool
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.tasklog = TaskLog()
        self.rates = RateGate(app, loop, self._queue)
        self.events = EventSender(hostname, task_events, self.max_decompressed)
        self.recorder = Recorder(
            conf,
            self.stats,
            self.tasklog,
            spawn=self._spawn,
            settled=self._done_settling,
            current_client=lambda: self.client,
        )

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
            TaskLog.discarded(name, task_id)
            self.stats.revoked += 1
            if self.events.enabled:
                self.events.revoked(task_id, terminated=False, expired=False)
            if task_revoked.receivers:
                revoked_signal(self.tasks.get(name), None, task_id, terminated=False, expired=False)
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
            if self.events.enabled:
                self.events.revoked(task_id, terminated=False, expired=True)
            if task_revoked.receivers:
                revoked_signal(task, None, task_id, terminated=False, expired=True)
            outcome = Outcome.revoked("expired before it could run")
            if CANVAS_HEADER in d.headers:  # what follows it learns it was revoked
                self._spawn(self._revoked_canvas(d, client, task, task_id, outcome))
                return
            self.recorder.record(client, task_id, outcome)
            settle.ack(d)
            return
        if meta.eta is not None and meta.eta - time.time() > ETA_SLACK:
            # A Celery message due later than the broker released it (the
            # clocks differ): the broker holds it again, not this worker.
            settle.nack(d, requeue=True, delay=min(meta.eta - time.time(), MAX_TIME_LIMIT))
            return
        job = Job(d, client, task, meta, serializer)
        ignore = meta.ignore_result
        job.ignore_result = ignore if ignore is not None else task.ignore_result
        hard, soft = task.effective_time_limits
        job.hard_limit = meta.time_limit if meta.time_limit is not None else hard
        job.soft_limit = meta.soft_time_limit if meta.soft_time_limit is not None else soft
        self.held[d.delivery_id] = job
        # A redelivered run, or one of a task that ran (or still runs) here
        # from a lost connection: its final state must not replace the first
        # run's. (A broker that crashed delivers again with the same attempt.)
        second = self._second_run(job.task_id)
        job.keep_final = second or d.attempt > 1
        self.leases.track(job)
        if self.tasklog.info:
            self.tasklog.received(job)
        if self.events.enabled:
            self.events.received(job)
        if (d.redelivered or second) and (not job.ignore_result or CANVAS_HEADER in d.headers):
            # Its ack may have been lost after its final result was stored:
            # look before running it a second time.
            self._spawn(self._check_redelivered(job))
            return
        self._admit(job)

    def _admit(self, job: Job) -> None:
        """Queue ``job`` now, or once the broker gives its rate-limited task a slot."""
        rates = self.rates
        if rates.enabled and rates.admit(job):
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
        payload = b""
        try:
            found = await job.client.result_get([job.task_id])
            state, payload = found.get(job.task_id, (None, b""))
        except Exception as exc:  # run it: at-least-once, as without the check
            log.warning("cannot look up the result of redelivered %r: %s", job, exc)
        d = job.delivery
        if job.finished or d.settled or self.held.get(d.delivery_id) is not job:
            return  # revoked meanwhile, or returned
        if job.client.is_closed:  # the broker has taken it back
            job.finished = True
            self._unhold(job)
        elif not self.accepting:
            job.finished = True
            self._unhold(job)
            settle.nack(d, requeue=True)
        elif state in states.READY_STATES:
            log.warning(
                "%r was delivered again but already has a final result (%s): its ack was "
                "lost; acking it without running it again",
                job,
                state,
            )
            job.finished = True
            if CANVAS_HEADER in d.headers:  # what follows it may not have been sent
                self.settling += 1
                self._spawn(self.recorder.follow_up(job, state, payload, self.recorder.ack))
                return
            self._unhold(job)
            settle.ack(d)
        else:
            self._admit(job)

    async def _revoked_canvas(
        self,
        d: Delivery,
        client: AsyncClient,
        task: Task[Any, Any],
        task_id: str,
        outcome: Outcome,
    ) -> None:
        """Store REVOKED for a canvas task that will not run, then do what
        follows a revoked task (errbacks, the rest of its chain, its chord)."""
        payload = self.recorder.error_payload(outcome.exc)
        try:
            await client.result_set(task_id, states.REVOKED, payload, self.recorder.result_ttl)
            await follow_up(task.app, client, task_id, d.headers, states.REVOKED, payload)
        except Exception as exc:  # given back: the next delivery tries again
            log.warning("the canvas of revoked task %s was not followed: %s", task_id, exc)
            settle.nack(d, requeue=True)
            return
        settle.ack(d)

    def _refuse(self, d: Delivery, client: AsyncClient, task_id: str, exc: Exception) -> None:
        log.error("rejecting task %s: %s", task_id, exc)
        self.stats.rejected += 1
        if self.events.enabled:
            self.events.rejected(task_id)
        self.recorder.record(client, task_id, Outcome.failure(exc))
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
        job.started_at = time.perf_counter()
        d = job.delivery
        task = job.task
        total = self.stats.total
        total[task.name] = total.get(task.name, 0) + 1
        if self.events.enabled:
            self.events.started(job)
        acks_late = task.acks_late if task.acks_late is not None else self.acks_late
        if not acks_late:
            # At-most-once, by request: the message is gone before the task runs.
            settle.ack(d)
            self._unhold(job)
        if (task.track_started if task.track_started is not None else self.track_started) and (
            not job.ignore_result
        ):
            self.recorder.record(job.client, job.task_id, Outcome(states.STARTED), quiet=True)
        meta = job.meta
        use_children = self.processes is not None and not task.is_async
        if not use_children:
            try:
                job.args, job.kwargs = decode_body(
                    d.body,
                    job.serializer,
                    job.compression,
                    self.max_decompressed,
                    celery=meta.protocol == CELERY_V2,
                )
            except (DecodeError, InvalidTaskMessage) as exc:
                job.finished = True
                self.running -= 1
                self._unhold(job)
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

    def resize(self, delta: int) -> int:
        """Run ``delta`` more (or fewer) tasks at once, never fewer than one;
        the new concurrency. Shrinking lets running tasks finish."""
        self.concurrency = max(1, self.concurrency + delta)
        self.threads.resize(self.concurrency)
        if self.processes is not None:
            self.processes.resize(self.concurrency)
        self._start_waiting()
        self.events.changed()
        return self.concurrency

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
        for job in [*self.held.values(), *self._orphaned]:
            if job.task_id != task_id or job.finished:
                continue
            if not job.started:
                TaskLog.discarded(job.task.name, job.task_id)
                job.finished = True
                self.stats.revoked += 1
                if self.events.enabled:
                    self.events.revoked(job.task_id, terminated=False, expired=False)
                if task_revoked.receivers:
                    revoked_signal(job.task, None, job.task_id, terminated=False, expired=False)
                self._unhold(job)
                settle.ack(job.delivery)
            elif terminate:
                log.warning("terminating revoked task %r", job)
                job.kill_reason = "revoked"
                self._stop_job(job, TaskRevokedError)
                if task_revoked.receivers:
                    revoked_signal(
                        job.task, job.request, job.task_id, terminated=True, expired=False
                    )
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
        if self.events.enabled:
            self.events.finished(job, outcome)
        self.settling += 1
        try:
            self.recorder.complete(job, outcome)
        finally:
            if self.waiting:
                self._start_waiting()

    # --- settling -------------------------------------------------------------------

    def _unhold(self, job: Job) -> None:
        """``job`` is no longer held (an orphan is no longer running)."""
        held = self.held
        delivery_id = job.delivery.delivery_id
        if held.get(delivery_id) is job:
            del held[delivery_id]
        elif job in self._orphaned:
            self._orphaned.discard(job)
            left = self.orphans[job.task_id] - 1
            if left:
                self.orphans[job.task_id] = left
            else:
                del self.orphans[job.task_id]
            first_runs = self._first_runs
            first_runs[job.task_id] = self.loop.time()
            first_runs.move_to_end(job.task_id)
            if len(first_runs) > FIRST_RUNS_KEPT:
                first_runs.popitem(last=False)

    def _second_run(self, task_id: str) -> bool:
        """Whether a delivery of ``task_id`` is a second run of a task this
        worker ran (or runs) from a lost connection."""
        if task_id in self.orphans:
            return True
        first_runs = self._first_runs
        if not first_runs:
            return False
        since = first_runs.get(task_id)
        return since is not None and self.loop.time() - since < FIRST_RUNS_SECONDS

    def _done_settling(self, job: Job) -> None:
        self._unhold(job)
        self.settling -= 1
        if not self.running and not self.settling and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

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
            self._unhold(job)
            settle.nack(job.delivery, requeue=True)
            n += 1
        for job in self.rates.take_all():
            if job.finished:
                continue
            job.finished = True
            self._unhold(job)
            settle.nack(job.delivery, requeue=True)
            n += 1
        return n

    def forget_connection(self, client: AsyncClient) -> None:
        """The connection ``client`` died: the broker has taken its deliveries back.

        Jobs of it that still run go on (orphans): they are no longer held
        (the next connection's delivery ids start again), their result is
        stored through the next connection, and a delivery of the same task
        id meanwhile is a second run whose final state must not replace the
        first's (``keep_final``).
        """
        for job in [j for j in self.held.values() if j.client is client and j.started]:
            if job.finished:
                continue
            del self.held[job.delivery.delivery_id]
            job.keep_final = False  # the first run
            self._orphaned.add(job)
            self.orphans[job.task_id] = self.orphans.get(job.task_id, 0) + 1
        for job in [j for j in self.waiting if j.client is client]:
            job.finished = True
            self._unhold(job)
        self.waiting = deque(j for j in self.waiting if not j.finished)
        for job in [j for j in self.rates.holding if j.client is client]:
            self.rates.holding.discard(job)
            job.finished = True
            self._unhold(job)

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
        for job in [*self.held.values(), *self._orphaned]:
            if job.started and not job.finished and job.aio_task is not None:
                job.aio_task.cancel()
        if self.processes is not None:
            self.processes.kill_all()
        self.threads.shutdown()
        self.leases.stop()
