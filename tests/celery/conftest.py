"""Fixtures for the Celery compatibility tests: kombu connections to a real
brokerd, and real ``celery worker`` processes running ``proj/``.

Workers run in their own process group (killed with it at teardown, so pool
children go too); tasks record each run as a line in a file, so tests count
executions across processes without a result backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from celerykit import CELERY, Runs, Worker, wait_for  # noqa: E402

import brokerd_client.celery  # noqa: E402, F401  (registers brokerd://)


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
