"""End to end: long tasks keep their lease, dead workers' tasks move on,
warm and cold shutdown."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskhelpers import BOUND, events, wait_events

import brokerd_client
from brokerd_client.tasks import states
from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


def queue_stats(broker: Any, name: str) -> brokerd_client.QueueInfo:
    with brokerd_client.Client(broker.url) as client:
        return client.queue_stats(name)


@pytest.mark.parametrize("pool", ["asyncio", "processes"])
def test_task_running_3x_its_lease_completes_exactly_once(
    e2e: ModuleType, start_worker: Start, state_dir: Path, broker: Any, pool: str
) -> None:
    # Queue "short" has a 1 s lease; the task runs 3 s. Two workers consume
    # it, so a lost lease would hand the message to the idle one at once.
    start_worker("-Q", "short", "-c", "1", "--pool", pool)
    start_worker("-Q", "short", "-c", "1", "--pool", pool)
    result = e2e.long_task.delay(3.0, "long")
    assert result.get(timeout=BOUND) == "long"
    time.sleep(1.5)  # one more lease period: a redelivery would show up now
    assert len(events(state_dir, "long")) == 1
    assert len(events(state_dir, "long_done")) == 1
    info = queue_stats(broker, "short")
    assert (info.ready, info.leased, info.delayed) == (0, 0, 0)


def test_sigkilled_workers_task_is_finished_by_a_second_worker(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    first = start_worker("-c", "1")
    result = e2e.sleep_sync.delay(2.0, tag="killed")
    started = wait_events(state_dir, "sleep", 1)
    assert started[0]["pid"] == first.pid
    first.kill()  # SIGKILL: its connection closes, the broker returns the message
    second = start_worker("-c", "1")
    assert result.get(timeout=BOUND) == 2.0
    runs = events(state_dir, "sleep")
    done = events(state_dir, "sleep_done")
    assert [e["pid"] for e in runs] == [first.pid, second.pid]
    assert [e["pid"] for e in done] == [second.pid]


def test_sigkilled_worker_child_process_dies_with_it(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    first = start_worker("-c", "1", "--pool", "processes")
    result = e2e.sleep_sync.delay(2.0, tag="orphan?")
    child_pid = wait_events(state_dir, "sleep", 1)[0]["pid"]
    first.kill()
    second = start_worker("-c", "1", "--pool", "processes")
    assert result.get(timeout=BOUND) == 2.0
    done = events(state_dir, "sleep_done")
    assert child_pid not in [e["pid"] for e in done], "the orphaned child kept running"
    assert len(done) == 1
    del second


def test_warm_shutdown_lets_the_running_task_finish_and_returns_the_rest(
    e2e: ModuleType, start_worker: Start, state_dir: Path, broker: Any
) -> None:
    worker = start_worker("-c", "1", "--prefetch", "2")
    running = e2e.sleep_sync.delay(1.5, tag="running")
    waiting = e2e.sleep_sync.delay(0.1, tag="waiting")
    wait_events(state_dir, "sleep", 1)
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(BOUND) == 0
    assert running.state == states.SUCCESS
    assert [e["tag"] for e in events(state_dir, "sleep_done")] == ["running"]
    assert waiting.state == states.PENDING
    assert queue_stats(broker, "default").ready == 1  # returned, not lost
    start_worker()
    assert waiting.get(timeout=BOUND) == 0.1
    assert "warm shutdown" in worker.log
    # The worker waited for the result's confirm before closing its connection.
    assert "not stored" not in worker.log


def test_second_signal_is_a_cold_shutdown(
    e2e: ModuleType, start_worker: Start, state_dir: Path, broker: Any
) -> None:
    worker = start_worker("-c", "1")
    result = e2e.sleep_async.delay(30.0, tag="cold")
    wait_events(state_dir, "asleep", 1)
    worker.signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(BOUND) == 1
    assert events(state_dir, "asleep_done") == []
    assert result.state == states.PENDING
    info = queue_stats(broker, "default")
    assert info.ready == 1  # unacked: back in the queue for the next worker


def test_worker_reconnects_after_the_broker_restarts(
    e2e: ModuleType, start_worker: Start, broker: Any
) -> None:
    worker = start_worker()
    assert e2e.add.delay(1, 1).get(timeout=BOUND) == 2
    broker.restart()  # SIGKILL and start again on the same port and data
    deadline = time.monotonic() + BOUND
    while True:
        try:
            result = e2e.add.delay(2, 2)
            break
        except brokerd_client.ConnectionLost:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert result.get(timeout=BOUND) == 4
    assert "reconnecting" in worker.log
