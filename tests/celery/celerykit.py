"""What the Celery compatibility tests share besides fixtures: the ``celery``
command, a deadline for what they wait for, run records and worker processes.
A module of its own (not conftest.py) so that test modules import it by a
name no other test directory uses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

CELERY = str(Path(sys.executable).with_name("celery"))
#: Generous deadline for events a test waits for (not a timing assertion).
DEADLINE = 30.0


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Runs:
    """The lines tasks appended to the runs file: ``<kind> <tag> ... <pid> <time>``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [line.split() for line in self.path.read_text().splitlines() if line]

    def of(self, kind: str, tag: str) -> list[list[str]]:
        return [w for w in self.lines() if w[0] == kind and w[1] == tag]

    def of_kind(self, kind: str) -> list[list[str]]:
        return [w for w in self.lines() if w[0] == kind]


class Worker:
    """One ``celery -A proj worker`` process in its own process group."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole group (the worker and its pool children)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()
