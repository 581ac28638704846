"""Fixtures for the Celery compatibility tests: kombu connections to a real
brokerd, and real ``celery worker`` processes running ``proj/``.

Workers run in their own process group (killed with it at teardown, so pool
children go too); tasks record each run as a line in a file, so tests count
executions across processes without a result backend.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import brokerd_client.celery  # noqa: E402, F401  (registers brokerd://)

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


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    return Runs(tmp_path / "runs")


@pytest.fixture
def celery_env(broker: Any, runs: Runs) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BROKERD_TEST_URL=broker.url,
        BROKERD_TEST_RUNS=str(runs.path),
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    )
    return env


@pytest.fixture
def start_worker(celery_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(
        pool: str = "solo",
        *,
        lease: float | None = None,
        name: str = "w",
        extra: tuple[str, ...] = (),
    ) -> Worker:
        env = dict(celery_env)
        if lease is not None:
            env["BROKERD_TEST_LEASE"] = str(lease)
        log = tmp_path / f"worker-{len(started)}.log"
        cmd = [
            CELERY, "-A", "proj", "worker", "-P", pool, "-c", "1",
            "-Q", "tasks,web", "-n", f"{name}{len(started)}@%h", "--loglevel=INFO", *extra,
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = Worker(proc, log)
        started.append(worker)
        wait_for(
            lambda: " ready." in worker.text() or proc.poll() is not None,
            f"worker {pool} to start",
        )
        assert proc.poll() is None, worker.text()
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def app(broker: Any) -> Iterator[Any]:
    """The test project's Celery app, connected to the test's broker."""
    from proj.celery import make_app

    celery_app = make_app(broker.url)
    try:
        yield celery_app
    finally:
        celery_app.close()


# The tutorial project's fleet (one brokerd, real celery workers and beat) and
# its app, for the test_tutorial_* modules; test_tutorial_results.py shares one
# fleet per module with its own module-scoped pair. tutorialkit imports this
# module, hence the imports inside.


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Any]:
    from tutorialkit import Fleet

    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def tutorial(fleet: Any) -> Iterator[Any]:
    from tutorialkit import project_app

    app = project_app(fleet.url)
    try:
        yield app
    finally:
        app.close()
