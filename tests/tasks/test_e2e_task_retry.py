"""Retrying a failed task over the management API, end to end: a real native
worker stores the FAILURE with the task's message, ``POST .../retry`` sends
it again under the same id, and the caller's old ``AsyncResult`` gets the new
run's outcome. Against a brokerd child process with ``--http-port 0`` (no
users: the API is open on loopback; refusals by tag are in
tests/integration/test_management_retry.py)."""

from __future__ import annotations

import json
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


def runs(state_dir: Path, tag: str) -> int:
    log = state_dir / "fails_once.log"
    if not log.exists():
        return 0
    return sum(json.loads(line)["tag"] == tag for line in log.read_text().splitlines())


def test_a_failed_task_retried_over_http_succeeds_and_its_old_handle_sees_it(
    e2e: ModuleType, start_worker: Callable[..., Any], broker: BrokerProcess, state_dir: Path
) -> None:
    start_worker()
    result = e2e.fails_once.delay("a")
    with pytest.raises(RuntimeError, match="first run of a"):
        result.get(timeout=BOUND)
    tasks = {t["task_id"]: t for t in call(broker, "GET", "/api/tasks")[1]}
    assert tasks[result.id]["state"] == "FAILURE"
    assert tasks[result.id]["retriable"] is True

    status, body = call(broker, "POST", f"/api/tasks/%2F/{result.id}/retry")
    assert (status, body) == (
        200,
        {"retried": result.id, "exchange": "amq.default", "routing_key": "default"},
    ), body

    assert result.get(timeout=BOUND) == "second run of a"
    assert result.state == "SUCCESS"
    assert runs(state_dir, "a") == 2
    # It succeeded: nothing left to retry.
    status, body = call(broker, "POST", f"/api/tasks/%2F/{result.id}/retry")
    assert status == 409 and "SUCCESS" in body["reason"]
    assert runs(state_dir, "a") == 2


def test_a_task_that_has_not_failed_or_is_unknown_is_not_retried(
    e2e: ModuleType, start_worker: Callable[..., Any], broker: BrokerProcess, state_dir: Path
) -> None:
    start_worker()
    ok = e2e.add.delay(2, 3)
    assert ok.get(timeout=BOUND) == 5
    status, body = call(broker, "POST", f"/api/tasks/%2F/{ok.id}/retry")
    assert status == 409 and "only a failed task" in body["reason"]
    status, body = call(broker, "POST", "/api/tasks/%2F/no-such-task/retry")
    assert status == 404 and "no stored result" in body["reason"]
    assert ok.get(timeout=BOUND) == 5
