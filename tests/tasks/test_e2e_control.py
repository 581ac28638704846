"""End to end: revoke, hard and soft time limits, child recycling."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskhelpers import BOUND, events, wait_events

import brokerd_client
from brokerd_client.tasks import (
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
    states,
)
from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


def test_revoke_before_start_prevents_the_run(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker()
    result = e2e.stamp.apply_async(("revoked",), countdown=1)
    result.revoke()
    assert result.state == states.REVOKED
    with pytest.raises(TaskRevokedError):
        result.get(timeout=BOUND)
    kept = e2e.stamp.apply_async(("kept",), countdown=1)
    kept.get(timeout=BOUND)
    time.sleep(0.5)
    assert [e["tag"] for e in events(state_dir, "stamp")] == ["kept"]


def test_revoke_reaches_a_task_already_in_the_prefetch_window(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker("-c", "1", "--prefetch", "2")
    blocker = e2e.sleep_sync.delay(1.0, tag="blocker")
    queued = e2e.sleep_sync.delay(0.1, tag="queued")
    wait_events(state_dir, "sleep", 1)
    queued.revoke()  # the worker already holds it, not started
    assert blocker.get(timeout=BOUND) == 1.0
    time.sleep(0.5)
    assert [e["tag"] for e in events(state_dir, "sleep")] == ["blocker"]
    assert queued.state == states.REVOKED


@pytest.mark.parametrize(
    ("pool", "task"), [("asyncio", "sleep_async"), ("processes", "sleep_sync")]
)
def test_revoke_with_terminate_stops_a_running_task(
    e2e: ModuleType, start_worker: Start, state_dir: Path, pool: str, task: str
) -> None:
    start_worker("-c", "1", "--pool", pool)
    kind = "asleep" if task == "sleep_async" else "sleep"
    result = getattr(e2e, task).delay(30.0, tag="terminate")
    wait_events(state_dir, kind, 1)
    result.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=BOUND)
    assert e2e.add.delay(1, 2).get(timeout=BOUND) == 3  # the slot (or child) is back
    assert events(state_dir, f"{kind}_done") == []


@pytest.mark.parametrize(
    ("pool", "task"), [("asyncio", "sleep_async"), ("processes", "sleep_sync")]
)
def test_hard_time_limit_stops_the_task_and_records_the_failure(
    e2e: ModuleType, start_worker: Start, state_dir: Path, pool: str, task: str
) -> None:
    start_worker("-c", "1", "--pool", pool)
    kind = "asleep" if task == "sleep_async" else "sleep"
    result = getattr(e2e, task).apply_async((30.0,), {"tag": "hard"}, time_limit=0.5)
    with pytest.raises(TimeLimitExceeded, match="hard time limit"):
        result.get(timeout=BOUND)
    assert result.state == states.FAILURE
    # The worker goes on (processes: with a replacement child).
    assert e2e.add.delay(2, 2).get(timeout=BOUND) == 4
    assert events(state_dir, f"{kind}_done") == []


def test_hard_time_limit_replaces_the_child_process(e2e: ModuleType, start_worker: Start) -> None:
    start_worker("-c", "1", "--pool", "processes")
    before = e2e.pid.delay().get(timeout=BOUND)
    with pytest.raises(TimeLimitExceeded):
        e2e.sleep_sync.apply_async((30.0,), time_limit=0.5).get(timeout=BOUND)
    after = e2e.pid.delay().get(timeout=BOUND)
    assert after != before


@pytest.mark.parametrize(
    ("pool", "task"),
    [("asyncio", "soft"), ("threads", "soft"), ("processes", "soft"), ("asyncio", "asoft")],
)
def test_soft_time_limit_raises_inside_the_task_first(
    e2e: ModuleType, start_worker: Start, state_dir: Path, pool: str, task: str
) -> None:
    start_worker("--pool", pool)
    assert getattr(e2e, task).delay(pool).get(timeout=BOUND) == "cleaned up"
    assert [e["tag"] for e in events(state_dir, "soft_caught")] == [pool]


def test_uncaught_soft_limit_is_a_failure(e2e: ModuleType, start_worker: Start) -> None:
    start_worker()
    result = e2e.sleep_async.apply_async((30.0,), soft_time_limit=0.3, time_limit=5)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=BOUND)


def test_max_tasks_per_child_recycles_processes(e2e: ModuleType, start_worker: Start) -> None:
    start_worker("-c", "1", "--pool", "processes", "--max-tasks-per-child", "2")
    pids = [e2e.pid.delay().get(timeout=BOUND) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_expired_task_is_not_run_and_recorded_revoked(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker()
    result = e2e.stamp.apply_async(("expired",), countdown=1, expires=0.5)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=BOUND)
    assert events(state_dir, "stamp") == []


def test_acks_early_is_at_most_once(
    e2e: ModuleType, start_worker: Start, state_dir: Path, broker: Any
) -> None:
    worker = start_worker("-c", "1", env={"E2E_ACKS_EARLY": "1"})
    result = e2e.sleep_sync.delay(2.0, tag="early")
    wait_events(state_dir, "sleep", 1)
    worker.kill()
    with brokerd_client.Client(broker.url) as client:
        info = client.queue_stats("default")
    assert (info.ready, info.leased) == (0, 0)  # acked before it ran: not redelivered
    assert result.state == states.PENDING


@pytest.mark.parametrize(
    ("kind", "error"), [("interrupt", "KeyboardInterrupt"), ("unprintable", "RuntimeError")]
)
def test_a_task_raising_oddly_fails_and_keeps_its_child_process(
    e2e: ModuleType, start_worker: Start, kind: str, error: str
) -> None:
    # Both used to kill the child: WorkerLostError instead of the task's error.
    start_worker("-c", "1", "--pool", "processes")
    child = e2e.pid.delay().get(timeout=BOUND)
    with pytest.raises(BaseException) as info:
        e2e.raise_sync.delay(kind).get(timeout=BOUND)
    assert type(info.value).__name__ == error
    assert e2e.pid.delay().get(timeout=BOUND) == child
