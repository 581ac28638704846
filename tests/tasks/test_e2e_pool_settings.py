"""End to end (real brokerd, real worker processes): a setting the chosen pool
cannot apply stops the worker at start, naming it; the pool that can apply it
does (``worker_max_tasks_per_child`` recycles child processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskhelpers import APPS, BOUND

from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


def _refused(broker: Any, tmp_path: Path, *args: str, app: str = "e2eapp") -> str:
    handle = WorkerHandle(
        app,
        broker.url,
        *args,
        workdir=tmp_path,
        env={"PYTHONPATH": f"{APPS}:{tmp_path}"},
    )
    with pytest.raises(RuntimeError, match="worker exited with 2"):
        handle.wait_ready()
    return handle.log


@pytest.mark.parametrize("pool", ["asyncio", "threads"])
def test_max_tasks_per_child_flag_is_refused_by_an_in_process_pool(
    broker: Any, tmp_path: Path, pool: str
) -> None:
    log = _refused(broker, tmp_path, "-P", pool, "--max-tasks-per-child", "10")
    assert f"--max-tasks-per-child=10 recycles child processes, and the '{pool}' pool" in log
    assert "use -P processes" in log


def test_max_tasks_per_child_setting_is_refused_by_the_default_pool(
    broker: Any, tmp_path: Path
) -> None:
    (tmp_path / "recycling.py").write_text(
        "from e2eapp import app\napp.conf.worker_max_tasks_per_child = 5\n"
    )
    log = _refused(broker, tmp_path, app="recycling:app")
    assert "worker_max_tasks_per_child=5 recycles child processes" in log


def test_the_processes_pool_applies_max_tasks_per_child(
    e2e: ModuleType, start_worker: Start
) -> None:
    start_worker("-P", "prefork", "-c", "1", "--max-tasks-per-child", "3")
    pids = [e2e.pid.delay().get(timeout=BOUND) for _ in range(9)]
    assert len(set(pids)) == 3  # a fresh child every three tasks
