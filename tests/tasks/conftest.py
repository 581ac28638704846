"""Fixtures for the task-layer tests: real workers against the real broker.

Workers run the app in ``apps/e2eapp.py`` as separate processes (started with
``python -m brokerd_client.worker``); its tasks append JSON lines to files in
a per-test state directory, so a test counts executions across processes
without trusting the worker's own report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from brokerd_client.tasks.testing import WorkerHandle

sys.path.insert(0, str(Path(__file__).parent))
from taskhelpers import APPS

sys.path.insert(0, str(APPS))


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def e2e(broker: Any) -> Iterator[ModuleType]:
    """The test app, pointed at this test's broker (the producer side)."""
    import e2eapp

    e2eapp.app.conf.update(broker_url=broker.url, task_always_eager=False)
    try:
        yield e2eapp
    finally:
        e2eapp.app.close()


@pytest.fixture
def start_app_worker(
    broker: Any, state_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., WorkerHandle]]:
    """``start_app_worker("canvasapp", "-c", "2", env={...})``: a ready worker
    running one of the apps in ``apps/``; every one started is killed at the end."""
    from brokerd_client.tasks.testing import WorkerHandle

    started: list[WorkerHandle] = []

    def start(
        app: str, *args: str, env: dict[str, str] | None = None, wait: bool = True
    ) -> WorkerHandle:
        handle = WorkerHandle(
            app,
            broker.url,
            "-l",
            "info",
            "--without-banner",
            *args,
            workdir=tmp_path,
            env={"PYTHONPATH": str(APPS), "E2E_STATE_DIR": str(state_dir), **(env or {})},
        )
        started.append(handle)
        return handle.wait_ready() if wait else handle

    try:
        yield start
    finally:
        for handle in started:
            handle.kill()


@pytest.fixture
def start_worker(start_app_worker: Callable[..., WorkerHandle]) -> Callable[..., WorkerHandle]:
    """``start_worker("-c", "2", env={...})``: a ready worker running e2eapp."""
    return partial(start_app_worker, "e2eapp")
