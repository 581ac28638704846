"""Spawning producer/consumer child processes and waiting for them.

Children are started with the ``spawn`` method, so each is a fresh interpreter with its
own event loop; nothing is shared with the parent but a counter, two events and a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from .clock import now
from .progress import Progress
from .roles import child_main
from .systems import Target

_MP = multiprocessing.get_context("spawn")


class ChildFailed(Exception):
    """A child process raised, died, or stopped making progress."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass
class Child:
    name: str
    process: BaseProcess
    conn: Any
    counter: Any
    ready: Any
    go: Any
    result: dict[str, Any] | None = None
    error: str | None = field(default=None)

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None
        return pid

    def poll(self) -> bool:
        """Pick up the child's report if it has one. True once the child is finished."""
        if self.result is not None or self.error is not None:
            return True
        try:
            if self.conn.poll():
                status, payload = self.conn.recv()
                if status == "ok":
                    self.result = payload
                else:
                    self.error = str(payload)
                return True
        except (EOFError, OSError):
            pass
        if not self.process.is_alive():
            self.error = f"exited with code {self.process.exitcode} before reporting"
            return True
        return False

    def kill(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.process.join(5)


def spawn(name: str, role: str, target: Target, **params: Any) -> Child:
    """Start ``role`` (see :data:`bench.roles.ROLES`) in a new spawned process."""
    reader, writer = _MP.Pipe(duplex=False)
    counter = _MP.RawValue("q", 0)
    ready, go = _MP.Event(), _MP.Event()
    process = _MP.Process(
        target=child_main,
        args=(role, target, params, writer, counter, ready, go),
        name=f"bench-{name}",
        daemon=True,
    )
    process.start()
    writer.close()
    return Child(name, process, reader, counter, ready, go)


def _raise_failed(child: Child) -> None:
    error = child.error or "failed"
    summary = error.splitlines()[0] if error else "failed"
    raise ChildFailed(f"{child.name}: {summary}", error)


async def wait_ready(children: Sequence[Child], within: float = 60.0) -> None:
    """Wait until every child has set its ``ready`` event."""
    deadline = now() + within
    while True:
        pending = [c for c in children if not c.ready.is_set()]
        if not pending:
            return
        for child in pending:
            if child.poll() and not child.ready.is_set():
                _raise_failed(child)
        if now() > deadline:
            names = ", ".join(c.name for c in pending)
            raise ChildFailed(f"not ready after {within:.0f}s: {names}")
        await asyncio.sleep(0.01)


async def collect(
    children: Sequence[Child],
    *,
    progress: Progress | None = None,
    stall_timeout: float = 60.0,
    limit: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Wait for every child's result, showing progress.

    Fails (after killing the others) when a child fails, when no counter has moved for
    ``stall_timeout`` seconds, or after ``limit`` seconds overall.
    """
    started = last_move = now()
    last_total = -1
    try:
        while True:
            finished = True
            for child in children:
                if not child.poll():
                    finished = False
                elif child.error is not None:
                    _raise_failed(child)
            if finished:
                return {c.name: c.result or {} for c in children}
            total = sum(int(c.counter.value) for c in children)
            t = now()
            if total != last_total:
                last_total, last_move = total, t
            elif t - last_move > stall_timeout:
                raise ChildFailed(f"stalled: no progress for {stall_timeout:.0f}s")
            if limit is not None and t - started > limit:
                raise ChildFailed(f"timed out after {limit:.0f}s")
            if progress is not None:
                progress.tick()
            await asyncio.sleep(0.02)
    finally:
        if progress is not None:
            progress.finish()
        for child in children:
            child.kill()


def kill_all(children: Sequence[Child]) -> None:
    for child in children:
        child.kill()
