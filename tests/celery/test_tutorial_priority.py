"""Message priority from ``apply_async(priority=...)`` on the tutorial project:
a waiting task with a higher priority runs before lower ones sent earlier
(brokerd queues all have priorities 0-9; 9 runs first, as on RabbitMQ)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celerykit import wait_for
from tutorial.orders import tasks as orders
from tutorialkit import Fleet

BOUND = 30.0


def test_a_higher_priority_task_overtakes_waiting_lower_ones(
    tutorial: Any, fleet: Fleet, tmp_path: Path
) -> None:
    fleet.worker(concurrency=1)
    gate = tmp_path / "gate"
    busy = orders.progress.delay("busy", str(gate))
    wait_for(lambda: busy.state == "PROGRESS", "the worker to be busy")
    low = [orders.record_task.apply_async((f"low{i}",), priority=0) for i in range(3)]
    high = orders.record_task.apply_async(("high",), priority=9)
    gate.touch()
    for r in [busy, *low, high]:
        r.get(timeout=BOUND)
    order = [line[1] for line in fleet.runs.of_kind("ran")]
    assert order[0] == "high", order
