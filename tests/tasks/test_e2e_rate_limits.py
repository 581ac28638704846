"""End to end: rate limits are the fleet's, kept by the broker.

Celery keeps a limit in each worker process, so two workers run twice it.
Here two workers together stay within it. The checks read the start times
the tasks wrote themselves: a limit is a floor on how far apart starts are,
so a slow machine only spreads them further (the assertion never relies on
anything running fast). One slot of slack covers the wait each worker is
told travelling back to it at different speeds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from taskhelpers import BOUND, events

from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


def _starts(state_dir: Path, kind: str) -> list[float]:
    return sorted(e["t"] for e in events(state_dir, kind))


def test_two_workers_together_stay_within_a_tasks_rate_limit(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker("-c", "2")
    start_worker("-c", "2")
    results = [e2e.limited.delay(f"t{i}") for i in range(12)]
    assert [r.get(timeout=BOUND) for r in results] == [f"t{i}" for i in range(12)]
    starts = _starts(state_dir, "limited")
    assert len(starts) == 12
    assert len({e["pid"] for e in events(state_dir, "limited")}) == 2
    # 5/s: 12 starts span at least 11 intervals of 0.2 s, less one of slack.
    # Each worker keeping its own 5/s would have let them through in ~1 s.
    assert starts[-1] - starts[0] >= 10 * 0.2


def test_a_limit_set_at_runtime_reaches_running_workers_and_can_be_removed(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker("-c", "4")
    e2e.app.control.rate_limit("e2e.stamp", "4/s")
    limited = [e2e.stamp.delay(f"a{i}") for i in range(6)]
    for r in limited:
        r.get(timeout=BOUND)
    starts = _starts(state_dir, "stamp")
    assert starts[-1] - starts[0] >= 4 * 0.25
    e2e.app.control.rate_limit("e2e.stamp", None)
    free = [e2e.stamp.delay(f"b{i}") for i in range(6)]
    for r in free:
        r.get(timeout=BOUND)
    assert len(events(state_dir, "stamp")) == 12


def test_a_limit_for_one_worker_is_refused_with_the_reason(e2e: ModuleType) -> None:
    with pytest.raises(ValueError, match="every worker"):
        e2e.app.control.rate_limit("e2e.stamp", "1/s", destination=["w1"])
