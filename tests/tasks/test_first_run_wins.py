"""After a failover a task may run twice: the first run goes on while the
message, whose lease died with the broker's connection, is delivered again.
The first run's result is stored through the worker's new connection, and the
redelivered run's final state (sent with ``keep_final``, SPEC §14.2) never
replaces it. A single broker killed with SIGKILL and started again stands in
for a failover here (tests/fault/test_pg_failover.py has the real one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskhelpers import BOUND, events, wait_events

import brokerd_client
from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


def _settled(broker: Any, deadline: float) -> None:
    """Until the queue holds nothing: the last run's ack, sent right behind
    its ResultSet on the same connection, committed after it."""
    with brokerd_client.Client(broker.url) as client:
        while True:
            info = client.queue_stats("default")
            if (info.ready, info.leased, info.delayed) == (0, 0, 0):
                return
            assert time.monotonic() < deadline, info
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("first", "again"),
    [
        pytest.param(3.0, 6.0, id="first-run-finishes-first"),
        pytest.param(6.0, 0.2, id="redelivered-run-finishes-first"),
    ],
)
def test_the_first_runs_result_wins_after_the_broker_restarts(
    e2e: ModuleType,
    start_worker: Start,
    state_dir: Path,
    broker: Any,
    first: float,
    again: float,
) -> None:
    worker = start_worker("-c", "2")
    result = e2e.first_wins.delay(first, again)
    wait_events(state_dir, "first_wins", 1)
    broker.restart()  # SIGKILL: the lease is lost, the message is ready again
    # The message comes back (attempt 1 again: the count died with the broker)
    # and runs a second time, unless the worker reconnected after the first
    # run's result was stored: then it is acked without running.
    wait_events(state_dir, "first_wins_done", 1, timeout=BOUND)
    deadline = time.monotonic() + BOUND
    _settled(broker, deadline)
    runs = events(state_dir, "first_wins")
    assert 1 <= len(runs) <= 2, runs
    # The first run's result reaches the broker on the worker's new connection.
    while True:
        stored = e2e.app.AsyncResult(result.id)  # a fresh one: a final state is cached
        if stored.state == "SUCCESS" and stored.result == "run 1":
            break
        assert time.monotonic() < deadline, (stored.state, stored.result, worker.log[-3000:])
        time.sleep(0.05)
    if len(runs) == 2:  # whichever finished first, the second run's state is not kept
        wait_events(state_dir, "first_wins_done", 2, timeout=BOUND)
        _settled(broker, deadline)
    assert e2e.app.AsyncResult(result.id).get(timeout=BOUND) == "run 1"
