"""Fixtures of the hooks/signals tests: ``apps/hooksapp.py`` in real workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskhelpers import APPS

from brokerd_client.tasks.testing import WorkerHandle


@pytest.fixture
def hooks(broker: Any) -> Iterator[ModuleType]:
    """The hooks app, pointed at this test's broker (the producer side)."""
    import hooksapp

    hooksapp.app.conf.update(broker_url=broker.url, task_always_eager=False)
    try:
        yield hooksapp
    finally:
        hooksapp.app.close()


@pytest.fixture
def start_hooks_worker(
    broker: Any, state_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., WorkerHandle]]:
    """``start_hooks_worker("-c", "2", env={...})``: a ready worker running hooksapp."""
    started: list[WorkerHandle] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerHandle:
        handle = WorkerHandle(
            "hooksapp",
            broker.url,
            "-l",
            "info",
            "--without-banner",
            "-Q",
            "hooks",
            *args,
            workdir=tmp_path,
            env={"PYTHONPATH": str(APPS), "E2E_STATE_DIR": str(state_dir), **(env or {})},
        )
        started.append(handle)
        return handle.wait_ready()

    try:
        yield start
    finally:
        for handle in started:
            handle.kill()
