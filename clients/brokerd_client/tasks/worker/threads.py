"""A thread pool for plain (blocking) task functions, built for many tiny tasks.

``concurrent.futures`` costs a Future, a lock and a loop wake-up per task.
Here jobs go through one ``queue.SimpleQueue`` (C, lock-free for us) to up to
``max_threads`` daemon threads, started only when needed; finished jobs are
appended to a deque and the loop is woken *once* for everything that finished
since it last looked, so a burst of a thousand noop tasks costs a handful of
wake-ups rather than a thousand.

Time limits: a thread cannot be killed. The soft limit raises
``SoftTimeLimitExceeded`` inside the task with ``PyThreadState_SetAsyncExc``
(it lands at the next Python bytecode; a task blocked in C code, e.g. in
``time.sleep`` or a socket read, sees it when that call returns). The hard
limit raises ``TimeLimitExceeded`` the same way, and the worker records the
failure and frees the slot at once without waiting for the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable

from .. import states
from ..exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded
from ..execution import execute
from ..outcome import Outcome
from ..serialization import EncodeError, encode_result
from .job import Job

__all__ = ["ThreadRunner"]

log = logging.getLogger("brokerd_client.tasks.worker")

_INTERRUPTS = (SoftTimeLimitExceeded, TimeLimitExceeded, TaskRevokedError)


class ThreadRunner:
    """Runs jobs' sync functions on threads; results come back in batches."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_threads: int,
        on_done: Callable[[Job, Outcome], None],
        result_serializer: str | None = None,
    ) -> None:
        self._loop = loop
        #: Results are encoded here, on the pool thread, not on the worker's loop.
        self._rser = result_serializer
        self._max = max_threads
        self._on_done = on_done
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._done: deque[tuple[Job, Outcome]] = deque()
        self._wake_pending = False
        self._threads: list[threading.Thread] = []
        self._busy = 0
        #: Guards job.thread so an interrupt never hits a thread that moved on.
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def size(self) -> int:
        return len(self._threads)

    def submit(self, job: Job) -> None:
        """Queue ``job`` (called on the loop)."""
        self._busy += 1
        if self._busy > len(self._threads) and len(self._threads) < self._max:
            self._spawn()
        self._jobs.put(job)

    def grow(self) -> None:
        """Allow one more thread (a hard time limit left one stuck in a task)."""
        self._max += 1

    def resize(self, size: int) -> None:
        """At most ``size`` threads from now on (``pool_grow``/``pool_shrink``);
        threads already started stay, idle, when shrinking."""
        self._max = max(size, 1)

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"brokerd-task-{len(self._threads) + 1}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    # --- in the pool threads ----------------------------------------------------------

    def _work(self) -> None:
        get = self._jobs.get
        while True:
            try:
                job = get()
                if job is None:
                    return
                self._run(job)
            except _INTERRUPTS:
                # An interrupt that arrived after its task had finished.
                continue

    def _run(self, job: Job) -> None:
        with self._lock:
            job.thread = threading.get_ident()
        try:
            assert job.request is not None
            outcome = execute(job.task, job.request, job.args, job.kwargs)
        except BaseException as exc:
            outcome = Outcome.failure(exc)
        if outcome.state == states.SUCCESS and self._rser is not None and not job.ignore_result:
            try:
                outcome.payload = encode_result(outcome.value, self._rser)
            except EncodeError as exc:
                outcome = Outcome.failure(exc)
            except _INTERRUPTS:
                pass  # the loop encodes it
        # Past this point no new interrupt targets us for this job; one already
        # queued may still land, so retry until the job is detached and posted.
        while True:
            try:
                with self._lock:
                    job.thread = None
                break
            except _INTERRUPTS:
                continue
        while True:
            try:
                self._post(job, outcome)
                return
            except _INTERRUPTS:
                continue

    def _post(self, job: Job, outcome: Outcome) -> None:
        self._done.append((job, outcome))
        if not self._wake_pending:
            self._wake_pending = True
            # RuntimeError: the loop is closed, the worker is gone.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._drain)

    # --- back on the loop ------------------------------------------------------------

    def _drain(self) -> None:
        # Clear the flag *before* draining: a thread that appends after this
        # sees it clear and schedules another drain.
        self._wake_pending = False
        done = self._done
        on_done = self._on_done
        while done:
            job, outcome = done.popleft()
            self._busy -= 1
            try:
                on_done(job, outcome)
            except Exception:
                log.exception("internal error finishing %r", job)

    def interrupt(self, job: Job, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` in the thread running ``job``; False if it is not running."""
        with self._lock:
            ident = job.thread
            if ident is None:
                return False
            n = ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(exc_type)
            )
            return bool(n == 1)

    def shutdown(self) -> None:
        """Let idle threads exit; busy ones finish their task first (daemon threads)."""
        if self._stopping:
            return
        self._stopping = True
        for _ in self._threads:
            self._jobs.put(None)

    def busy(self) -> int:
        return self._busy
