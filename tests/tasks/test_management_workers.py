"""The management API shows a real ``-E`` worker and its finished tasks (from
the worker's events), against a brokerd child process with ``--http-port 0``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from httpkit import BOUND, call, management_broker

from brokerd_client.tasks.testing import BrokerProcess


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """This module's broker serves the management API on a free port."""
    with management_broker(tmp_path) as proc:
        yield proc


def api(broker: BrokerProcess, path: str) -> Any:
    status, body = call(broker, "GET", path)
    assert status == 200, body
    return body


def test_a_worker_with_events_and_its_tasks_are_listed(
    e2e: ModuleType, start_worker: Callable[..., Any], broker: BrokerProcess
) -> None:
    assert api(broker, "/api/workers") == []  # starts listening to the events
    start_worker("-n", "seen@test", "-E")
    ok = e2e.add.delay(2, 3)
    bad = e2e.boom.delay("no")
    assert ok.get(timeout=BOUND) == 5
    with pytest.raises(ValueError):
        bad.get(timeout=BOUND)
    deadline = time.monotonic() + BOUND
    while True:
        workers = api(broker, "/api/workers")
        tasks = {t["task_id"]: t for t in api(broker, "/api/tasks")}
        done = tasks.get(ok.id, {}).get("state") == "SUCCESS"
        failed = tasks.get(bad.id, {}).get("state") == "FAILURE"
        if workers and done and failed:
            break
        assert time.monotonic() < deadline, (workers, tasks)
        time.sleep(0.1)
    (worker,) = workers
    assert worker["hostname"] == "seen@test" and worker["online"] is True
    assert isinstance(worker["pid"], int) and worker["last_heartbeat"] > 0
    assert tasks[ok.id]["name"] == "e2e.add" and tasks[ok.id]["hostname"] == "seen@test"
    assert "Traceback" in tasks[bad.id]["traceback"]
    assert tasks[bad.id]["exception"] == "ValueError('no')"


def test_a_threads_worker_shows_its_pool_and_concurrency_and_a_resize(
    e2e: ModuleType, start_worker: Callable[..., Any], broker: BrokerProcess
) -> None:
    assert api(broker, "/api/workers") == []  # starts listening to the events
    start_worker("-n", "pooled@test", "-E", "-P", "threads", "-c", "3")

    def row(concurrency: int) -> dict[str, Any]:
        deadline = time.monotonic() + BOUND
        while True:
            rows = api(broker, "/api/workers")
            if rows and rows[0].get("concurrency") == concurrency:
                return dict(rows[0])
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)

    worker = row(3)
    assert worker["hostname"] == "pooled@test" and worker["online"] is True
    assert worker["pool"] == "threads" and worker["active"] == 0
    assert worker["sw_ident"] == "brokerd-worker" and worker["freq"] == 2.0
    assert isinstance(worker["last_heartbeat"], float)
    # pool_grow changes the concurrency the events (and so the view) report.
    reply = e2e.app.control.pool_grow(2, reply=True, timeout=BOUND)
    assert reply == {"pooled@test": {"ok": "pool will grow (concurrency 5)"}}
    grown = row(5)
    assert grown["pool"] == "threads"
    e2e.app.control.pool_shrink(4, reply=True, timeout=BOUND)
    assert row(1)["pool"] == "threads"
