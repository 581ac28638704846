"""The parent side of ``--pool processes``: child processes it starts, feeds,
kills and replaces.

Each child is a fresh interpreter (``python -m brokerd_client.tasks.worker.child``)
connected by a socket pair that the event loop reads like any other stream:
no helper thread per child, no pickle. A child runs one job at a time; the
worker never hands out more jobs than there are children.

* Hard time limit and ``revoke(terminate=True)``: the child is SIGKILLed and a
  replacement started; the worker has already recorded the outcome.
* ``worker_max_tasks_per_child``: after that many tasks the child is told to
  exit and a replacement is started, so leaky task code cannot grow forever.
* A child that dies on its own (segfault, OOM killer) fails its task with
  ``WorkerLostError`` (or requeues it with ``task_reject_on_worker_lost``) and
  is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import states
from ..exceptions import WorkerLostError
from ..message import CELERY_V2
from ..outcome import ExcInfo, Outcome
from .ipc import Reader, pack
from .job import Job

__all__ = ["ProcessPool"]

log = logging.getLogger("brokerd_client.tasks.worker")

#: Seconds a new child has to import the app and say it is ready.
START_TIMEOUT = 120.0


class _Child:
    __slots__ = ("done", "job", "pid", "proc", "protocol", "ready", "retiring", "transport")

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.transport: asyncio.Transport | None = None
        self.protocol: _ChildProtocol | None = None
        self.ready: asyncio.Future[list[str]] | None = None
        self.job: Job | None = None
        self.done = 0
        self.retiring = False

    def __repr__(self) -> str:
        return f"<child {self.pid}>"


class _ChildProtocol(asyncio.Protocol):
    def __init__(self, pool: ProcessPool, child: _Child) -> None:
        self.pool = pool
        self.child = child
        self.reader = Reader()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.reader.feed(data)
        except ValueError as exc:
            log.error("child %s sent garbage (%s); killing it", self.child.pid, exc)
            self.child.proc.kill()
            return
        for msg in messages:
            self.pool._on_message(self.child, msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._on_lost(self.child)


class ProcessPool:
    """``size`` children running sync task functions; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app_spec: str,
        size: int,
        on_done: Callable[[Job, Outcome], None],
        *,
        max_tasks_per_child: int | None = None,
        loglevel: str = "WARNING",
        broker_url: str | None = None,
        result_serializer: str = "json",
        max_decompressed: int | None = None,
    ) -> None:
        self._loop = loop
        self._spec = app_spec
        self.size = size
        self._on_done = on_done
        self._max_tasks = max_tasks_per_child
        self._loglevel = loglevel
        self._broker = broker_url
        self._rser = result_serializer
        self._max_decompressed = max_decompressed
        self._children: set[_Child] = set()
        self._idle: deque[_Child] = deque()
        self._backlog: deque[Job] = deque()
        self._stopping = False
        self._all_gone: asyncio.Future[None] | None = None
        self.replaced = 0

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start all children and wait until each has imported the app."""
        children = [await self._spawn() for _ in range(self.size)]
        for child in children:
            assert child.ready is not None
            async with asyncio.timeout(START_TIMEOUT):
                await child.ready

    async def _spawn(self) -> _Child:
        parent_sock, child_sock = socket.socketpair()
        cmd = [
            sys.executable,
            "-m",
            "brokerd_client.tasks.worker.child",
            "--fd",
            str(child_sock.fileno()),
            "-A",
            self._spec,
            "--loglevel",
            self._loglevel,
        ]
        if self._broker:
            cmd += ["--broker", self._broker]
        if self._max_decompressed is not None:
            cmd += ["--max-decompressed-size", str(self._max_decompressed)]
        try:
            # Popen returns once the child is forked and exec'd; nothing here waits on it.
            proc = subprocess.Popen(  # noqa: ASYNC220
                cmd, pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL
            )
        finally:
            child_sock.close()
        child = _Child(proc)
        child.ready = self._loop.create_future()
        self._children.add(child)
        transport, protocol = await self._loop.create_unix_connection(
            lambda: _ChildProtocol(self, child), sock=parent_sock
        )
        child.transport = transport
        child.protocol = protocol
        return child

    def pids(self) -> list[int]:
        return sorted(c.pid for c in self._children if not c.retiring)

    def resize(self, size: int) -> None:
        """Keep ``size`` children (``pool_grow``/``pool_shrink``): new ones
        start now; surplus ones exit when idle (at once if they are)."""
        self.size = max(size, 1)
        live = [c for c in self._children if not c.retiring]
        for _ in range(self.size - len(live)):
            self._start_one()
        surplus = len(live) - self.size
        for child in list(self._idle):
            if surplus <= 0:
                break
            self._idle.remove(child)
            self._exit(child)
            surplus -= 1

    def _exit(self, child: _Child) -> None:
        child.retiring = True
        if child.transport is not None:
            child.transport.write(pack({"t": "exit"}))
            child.transport.close()

    def _live(self) -> int:
        return sum(1 for c in self._children if not c.retiring)

    def _surplus(self) -> bool:
        return self._live() > self.size

    def _replace(self) -> None:
        if self._stopping:
            return
        self.replaced += 1
        self._start_one()

    def _start_one(self) -> None:
        if self._stopping:
            return

        async def spawn() -> None:
            try:
                await self._spawn()
            except Exception:
                log.exception("could not start a replacement child process")

        self._loop.create_task(spawn())

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 - a grace period
        """Ask idle children to exit; kill whatever is still alive after ``timeout``."""
        self._stopping = True
        for child in list(self._children):
            if child.job is None and child.transport is not None:
                child.transport.write(pack({"t": "exit"}))
                child.transport.close()
        if self._children:
            self._all_gone = self._loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._all_gone), timeout)
        self.kill_all()

    def kill_all(self) -> None:
        self._stopping = True
        for child in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            with contextlib.suppress(Exception):
                child.proc.wait(1.0)

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if self._idle:
            self._send(self._idle.popleft(), job)
        else:
            self._backlog.append(job)

    def _send(self, child: _Child, job: Job) -> None:
        child.job = job
        job.child = child
        d = job.delivery
        assert child.transport is not None and job.request is not None
        req = job.request
        child.transport.write(
            pack(
                {
                    "t": "run",
                    "id": job.task_id,
                    "name": job.task.name,
                    "body": d.body,
                    "ser": job.serializer,
                    "comp": job.compression,
                    "celery": job.meta.protocol == CELERY_V2,
                    "rser": None if job.ignore_result else self._rser,
                    "ignore": job.ignore_result,
                    "soft": job.soft_limit,
                    "hard": job.hard_limit,
                    "req": {
                        "retries": req.retries,
                        "attempt": req.attempt,
                        "hostname": req.hostname,
                        "parent_id": req.parent_id,
                        "root_id": req.root_id,
                        "delivery_info": req.delivery_info,
                    },
                }
            )
        )

    def kill(self, job: Job) -> None:
        """Kill the child running ``job`` (its outcome is already recorded)."""
        child = job.child
        if child is not None and child.job is job:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()

    def _on_message(self, child: _Child, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "ready":
            log.debug("child %s ready", child.pid)
            if child.ready is not None and not child.ready.done():
                child.ready.set_result(list(msg.get("tasks") or []))
            self._make_idle(child)
        elif kind == "done":
            job, child.job = child.job, None
            child.done += 1
            if job is not None:
                job.child = None
                self._on_done(job, _outcome(msg))
            if self._max_tasks is not None and child.done >= self._max_tasks:
                self._retire(child)
            else:
                self._make_idle(child)
        elif kind == "fatal":
            error = str(msg.get("error"))
            log.error("child process %s could not start: %s", child.pid, error)
            if child.ready is not None and not child.ready.done():
                child.ready.set_exception(RuntimeError(f"child process failed to start: {error}"))

    def _make_idle(self, child: _Child) -> None:
        if self._stopping:
            if child.transport is not None:
                child.transport.write(pack({"t": "exit"}))
                child.transport.close()
            return
        if self._surplus():
            self._exit(child)
            return
        if self._backlog:
            self._send(child, self._backlog.popleft())
        else:
            self._idle.append(child)

    def _retire(self, child: _Child) -> None:
        log.debug("child %s ran %d tasks: recycling it", child.pid, child.done)
        child.retiring = True
        if child.transport is not None:
            child.transport.write(pack({"t": "exit"}))
            child.transport.close()
        self._replace()

    def _on_lost(self, child: _Child) -> None:
        self._children.discard(child)
        if not self._children and self._all_gone is not None and not self._all_gone.done():
            self._all_gone.set_result(None)
        with contextlib.suppress(ValueError):
            self._idle.remove(child)
        if child.ready is not None and not child.ready.done():
            child.ready.set_exception(RuntimeError("child process exited during start-up"))
            child.ready.exception()
        # Reap without blocking the loop for long: the child is dead or dying.
        self._loop.call_later(0.01, _reap, child.proc)
        job, child.job = child.job, None
        if job is not None:
            job.child = None
            if not job.finished:
                code = child.proc.poll()
                log.error("child process %s died (exit code %s) running %r", child.pid, code, job)
                self._on_done(
                    job,
                    Outcome(
                        states.FAILURE,
                        exc=ExcInfo(
                            "WorkerLostError",
                            WorkerLostError.__module__,
                            f"worker process {child.pid} exited with code {code} while running "
                            f"the task",
                            "",
                        ),
                    ),
                )
        if not child.retiring and not self._surplus() and self._live() < self.size:
            self._replace()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(2.0)


def _outcome(msg: dict[str, Any]) -> Outcome:
    state = msg.get("s", states.FAILURE)
    exc = msg.get("e")
    return Outcome(
        state,
        exc=ExcInfo.from_dict(exc) if isinstance(exc, dict) else None,
        countdown=float(msg.get("c") or 0.0),
        args=msg.get("a"),
        kwargs=msg.get("k"),
        payload=msg.get("p"),
    )
