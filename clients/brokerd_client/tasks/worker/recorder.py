"""What became of a job: its result stored, its retry sent, its message settled.

The dispatcher hands every finished job here with its :class:`Outcome`. The
order of effects is what makes the worker's guarantees hold:

* a result is committed *before* the message is acked, so a crash in between
  re-runs the task rather than losing its result (the ack follows the
  ResultSet on the same connection without waiting, see
  :meth:`Recorder._store_then_ack`);
* a retry message is confirmed *before* the original is acked, so a retry is
  never lost; it is a delayed message held by the broker, not a timer here;
* task messages a task sent from the worker's loop are confirmed before its
  own message is acked;
* a result, retry or task message larger than the broker's frame limit is
  refused by the client before it is sent (the connection and every other
  task on it carry on) and the task is recorded as FAILURE, once;
* a final result whose connection died (before it was sent, or before its
  Ok came) is stored through the worker's next connection
  (:meth:`Recorder._store_later`): after a failover the first run's result
  is not dropped. Its message cannot be acked any more (it comes back, and
  the worker acks it unrun once it finds the final result). The final state
  of a *second* run (a redelivered message, or a task id this worker still
  runs from a lost connection: ``Job.keep_final``) is sent with
  ``keep_final`` (SPEC §14.2): it never replaces a final state already
  stored, while the first run's replaces anything, so the first run's
  result wins.
* a FAILURE stores the task's message as delivered beside the error
  (``task_message``, see :func:`~..serialization.pack_task_message`), so
  the management API can send it again; not when it would make the
  ResultSet larger than the broker's frame limit, and not for a task of a
  canvas (whose chord or chain already counted the failure).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ...client import AsyncClient
from ...errors import (
    BrokerError,
    ConnectionLost,
    InternalError,
    MessageTooLarge,
    QueueFull,
    ResourceLimitExceeded,
    StorageFailed,
)
from .. import states
from ..canvasio import CANVAS_HEADER, follow_up
from ..message import CELERY_V2, retry_headers
from ..outcome import ExcInfo, Outcome
from ..serialization import (
    DecodeError,
    EncodeError,
    decode_result,
    encode_body,
    encode_error,
    encode_result,
    pack_task_message,
)
from . import settle
from .job import Job
from .stats import Stats
from .tasklog import TaskLog

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Recorder"]

log = logging.getLogger("brokerd_client.tasks.worker")

#: Bytes a ResultSet frame adds around its payload and task id, at most
#: (the frame's array, type, request number, state, ttl and flag).
_RESULT_SET_OVERHEAD = 64

#: Seconds a result whose connection died waits for the worker's next one.
STORE_LATER_BOUND = 120.0

#: Failures of a task's own sends that a later run may not meet (the broker or
#: its disk or the connection had trouble): the task's message is given back so
#: it runs again. Any other failure would repeat on every run: the task fails.
_WORTH_ANOTHER_RUN = (
    ConnectionLost,
    StorageFailed,
    InternalError,
    QueueFull,
    ResourceLimitExceeded,
    TimeoutError,
    asyncio.CancelledError,
)


class Recorder:
    """Records outcomes and settles messages for one worker (see the module docstring).

    ``settled(job)`` is called once a job's message is settled (or given
    up on); ``spawn`` runs a coroutine in the background.
    """

    def __init__(
        self,
        conf: Settings,
        stats: Stats,
        tasklog: TaskLog,
        *,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        settled: Callable[[Job], None],
        current_client: Callable[[], AsyncClient | None] = lambda: None,
    ) -> None:
        self.result_ttl = conf.result_expires
        self.rser = conf.result_serializer
        self.store_errors_if_ignored = conf.task_store_errors_even_if_ignored
        self.acks_on_failure = conf.task_acks_on_failure_or_timeout
        self.reject_on_worker_lost = conf.task_reject_on_worker_lost
        self.stats = stats
        self.tasklog = tasklog
        self._spawn = spawn
        self._settled = settled
        #: The worker's connection now (a new one after a reconnect).
        self._current_client = current_client
        #: ResultSets sent and not yet confirmed (a warm shutdown waits for them).
        self._unconfirmed: set[asyncio.Future[Any]] = set()

    def complete(self, job: Job, outcome: Outcome) -> None:
        """Record how ``job`` ended and settle its message, once the task
        messages it sent (if any) are confirmed."""
        if job.pending:
            self._spawn(self._after_pending(job, outcome))
        else:
            self._complete(job, outcome)

    async def _after_pending(self, job: Job, outcome: Outcome) -> None:
        pending = job.pending or []
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        refused = [r for r in failed if not isinstance(r, _WORTH_ANOTHER_RUN)]
        if refused:
            # Sending it again would be refused again (too large, an invalid
            # option, no such exchange): fail the task, once.
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
            self.give_back(job)
            return
        self._complete(job, outcome)

    def _complete(self, job: Job, outcome: Outcome) -> None:
        state = outcome.state
        if state == states.SUCCESS:
            self.stats.succeeded += 1
            if self.tasklog.info:
                self.tasklog.succeeded(job, time.perf_counter() - job.started_at, _value(outcome))
            if job.ignore_result and CANVAS_HEADER not in job.delivery.headers:
                self.ack(job)
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
            self._store_then_ack(job, states.REVOKED, self.error_payload(outcome.exc))
        else:
            self.stats.failed += 1
            info = outcome.exc
            TaskLog.failed(job, info)
            if (
                info is not None
                and info.exc_type == "WorkerLostError"
                and self.reject_on_worker_lost
            ):
                self.give_back(job)
                return
            settle_how = self.ack if self.acks_on_failure else self.reject
            if (
                job.ignore_result
                and not self.store_errors_if_ignored
                and CANVAS_HEADER not in job.delivery.headers
            ):
                settle_how(job)
                return
            self._store_then_ack(job, states.FAILURE, self.failure_payload(job, info), settle_how)

    def error_payload(self, exc: ExcInfo | None) -> bytes:
        if exc is None:
            return b""
        return encode_error(exc.exc_type, exc.exc_module, exc.exc_message, exc.traceback, self.rser)

    def failure_payload(self, job: Job, exc: ExcInfo | None) -> bytes:
        """A FAILURE's payload with the task's message, when it may be sent
        again and the ResultSet carrying it fits the broker's frame limit;
        the bare error otherwise (the management API then says the task
        cannot be retried)."""
        plain = self.error_payload(exc)
        d = job.delivery
        if exc is None or CANVAS_HEADER in d.headers:
            return plain
        # The message alone would not fit: do not even build it.
        room = job.client.max_frame - len(plain) - _RESULT_SET_OVERHEAD - 4 * len(job.task_id)
        if len(d.body) >= room:
            return plain
        message = pack_task_message(d.exchange, d.routing_key, d.headers, d.body, d.priority)
        try:
            payload = encode_error(
                exc.exc_type, exc.exc_module, exc.exc_message, exc.traceback, self.rser, message
            )
        except EncodeError:
            return plain
        if len(payload) > job.client.max_frame - _RESULT_SET_OVERHEAD - 4 * len(job.task_id):
            return plain
        return payload

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

        A task of a canvas (a chain step, a chord member, a task with links)
        waits for its result, then sends what follows it, then is settled.
        """
        if CANVAS_HEADER in job.delivery.headers:
            self._spawn(self._store_then_follow(job, state, payload, then or self.ack))
            return
        # A second run's final state never replaces one already stored.
        keep = job.keep_final
        try:
            try:
                fut = job.client.result_set(
                    job.task_id, state, payload, self.result_ttl, keep_final=keep
                )
            except MessageTooLarge as exc:
                state, payload = self._too_large(job, state, payload, exc)
                then = self.ack if self.acks_on_failure else self.reject
                fut = job.client.result_set(
                    job.task_id, state, payload, self.result_ttl, keep_final=keep
                )
        except ConnectionLost as exc:
            log.warning("connection of %r lost (%s): storing its result on the next one", job, exc)
            self._spawn(self._store_later(job.client, job.task_id, state, payload, keep))
        except BrokerError as exc:
            log.warning("result of %r not stored: %s", job, exc)
        else:
            self._track_result(fut, job.task_id, state)
            fut.add_done_callback(
                self._retry_if_lost(job.client, job.task_id, state, payload, keep)
            )
        (then or self.ack)(job)

    def _retry_if_lost(
        self, client: AsyncClient, task_id: str, state: str, payload: bytes, keep: bool
    ) -> Callable[[asyncio.Future[Any]], None]:
        def done(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and isinstance(fut.exception(), ConnectionLost):
                self._spawn(self._store_later(client, task_id, state, payload, keep))

        return done

    async def _store_later(
        self, dead: AsyncClient, task_id: str, state: str, payload: bytes, keep: bool
    ) -> None:
        """Store a final result whose connection died through the worker's
        next connection, once it has one (for up to ``STORE_LATER_BOUND`` s).
        Sending it twice is harmless: a final state replaces itself."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STORE_LATER_BOUND
        while loop.time() < deadline:
            client = self._current_client()
            if client is not None and client is not dead and not client.is_closed:
                try:
                    await client.result_set(
                        task_id, state, payload, self.result_ttl, keep_final=keep
                    )
                except ConnectionLost:
                    dead = client
                    continue
                except BrokerError as exc:
                    log.warning("state %s of task %s not stored: %s", state, task_id, exc)
                    return
                log.info("state %s of task %s stored on the new connection", state, task_id)
                return
            await asyncio.sleep(0.1)
        log.warning("state %s of task %s not stored: no connection to the broker", state, task_id)

    async def _store_then_follow(
        self, job: Job, state: str, payload: bytes, then: Callable[[Job], None]
    ) -> None:
        """Store the result, send the canvas follow-ups, then settle (see :mod:`..canvasio`).

        The follow-ups do not wait for the ResultSet's Ok: they follow it on
        the same connection, whose requests the broker commits in order, so
        a chord member's result is stored before its join counts. The
        message is settled only once both are confirmed.
        """
        try:
            try:
                fut = job.client.result_set(
                    job.task_id, state, payload, self.result_ttl, keep_final=job.keep_final
                )
            except MessageTooLarge as exc:
                state, payload = self._too_large(job, state, payload, exc)
                then = self.ack if self.acks_on_failure else self.reject
                fut = job.client.result_set(
                    job.task_id, state, payload, self.result_ttl, keep_final=job.keep_final
                )
        except BrokerError as exc:
            log.error("result of %r not stored (%s); returning its message", job, exc)
            self.give_back(job)
            return

        followed: list[Job] = []
        await self.follow_up(job, state, payload, followed.append)
        await asyncio.wait([fut])
        error = None if fut.cancelled() else fut.exception()
        if not followed:
            return  # given back: it runs again
        if isinstance(error, _WORTH_ANOTHER_RUN):
            log.error("result of %r not stored (%s); returning its message", job, error)
            self.give_back(job)
            return
        if error is not None:
            log.warning("result of %r not stored: %s", job, error)
        then(job)

    async def follow_up(
        self, job: Job, state: str, payload: bytes, then: Callable[[Job], None]
    ) -> None:
        """Send what follows ``job`` in its canvas (its result is stored), then settle."""
        try:
            await follow_up(
                job.task.app, job.client, job.task_id, job.delivery.headers, state, payload
            )
        except _WORTH_ANOTHER_RUN as exc:
            log.error("the canvas of %r was not followed (%s); returning its message", job, exc)
            self.give_back(job)
            return
        except Exception:
            log.exception("the canvas of %r cannot be followed; dropped", job)
        then(job)

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
        return states.FAILURE, self.error_payload(ExcInfo.from_exception(error))

    def record(
        self, client: AsyncClient, task_id: str, outcome: Outcome, *, quiet: bool = False
    ) -> None:
        """Store a state without waiting (refusals, STARTED, expiry)."""
        started = outcome.state == states.STARTED
        payload = b"" if started else self.error_payload(outcome.exc)
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
        TaskLog.retry(job, outcome.countdown, exc)
        try:
            body = d.body
            if outcome.args is not None or outcome.kwargs is not None:
                args = outcome.args if outcome.args is not None else job.args
                kwargs = outcome.kwargs if outcome.kwargs is not None else job.kwargs
                body = encode_body(
                    args,
                    kwargs,
                    job.serializer,
                    job.compression,
                    celery=job.meta.protocol == CELERY_V2,
                )
            headers = retry_headers(d.headers, job.task_id, retries, outcome.countdown)
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
        except _WORTH_ANOTHER_RUN as err:
            log.error("could not schedule the retry of %r (%s); returning its message", job, err)
            self.give_back(job, delay=outcome.countdown)
            return
        except Exception as err:
            # Sending it again would be refused again: fail the task, once.
            log.error("the retry of %r cannot be sent (%s); failing the task", job, err)
            self.stats.retried -= 1
            self._complete(job, Outcome.failure(err))
            return
        if not job.ignore_result:
            try:
                await job.client.result_set(
                    job.task_id, states.RETRY, self.error_payload(exc), self.result_ttl
                )
            except BrokerError as err:
                log.warning("RETRY state of %r not stored: %s", job, err)
        self.ack(job)

    # --- settling; then the dispatcher forgets the job ---------------------------

    def ack(self, job: Job) -> None:
        if not job.delivery.settled:
            settle.ack(job.delivery)
        self._settled(job)

    def reject(self, job: Job) -> None:
        if not job.delivery.settled:
            settle.reject(job.delivery)
        self._settled(job)

    def give_back(self, job: Job, delay: float | None = None) -> None:
        if not job.delivery.settled:
            settle.nack(job.delivery, requeue=True, delay=delay or None)
        self._settled(job)


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


def _value(outcome: Outcome) -> Any:
    """A success's value for the log: a child process sends it encoded."""
    if outcome.payload is None:
        return outcome.value
    try:
        return decode_result(outcome.payload).get("result")
    except (DecodeError, ValueError):
        return "<result not decodable>"
