"""Unchanged Celery workers (prefork, threads, solo) on brokerd, as processes.

The project in ``proj/`` is configured from an object, autodiscovers named
tasks, routes ``web.*`` through a topic exchange, sends msgpack + zlib, and
uses acks_late and time limits. Every task appends a line to a runs file.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celerykit import CELERY, Runs, Worker, wait_for
from kombu import Connection


def stats(broker: Any, queue: str) -> dict[str, int]:
    with Connection(broker.url) as conn:
        result: dict[str, int] = conn.default_channel.queue_stats(queue)
        return result


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_each_pool_runs_tasks_routed_through_a_topic_exchange(
    pool: str, app: Any, start_worker: Callable[..., Worker], runs: Runs
) -> None:
    start_worker(pool)
    app.send_task("task.record", args=["a"])
    app.send_task("web.render", args=["b"])
    app.send_task("task.record", args=["c"])
    wait_for(lambda: len(runs.lines()) == 3, "three runs")
    assert sorted((w[0], w[1]) for w in runs.lines()) == [("ran", "a"), ("ran", "c"), ("web", "b")]


def test_a_countdown_task_is_held_by_the_broker_and_runs_after_its_countdown(
    app: Any, broker: Any, start_worker: Callable[..., Worker], runs: Runs
) -> None:
    start_worker("solo")
    sent = time.time()
    app.send_task("task.record", args=["later"], countdown=2)
    # The broker holds it (delayed), not the worker's memory.
    assert stats(broker, "tasks")["delayed"] == 1
    assert stats(broker, "tasks")["leased"] == 0
    (line,) = wait_for(lambda: runs.of("ran", "later"), "the countdown task")
    assert float(line[-1]) >= sent + 2 - 0.05


def test_a_retry_with_countdown_runs_the_task_twice(
    app: Any, start_worker: Callable[..., Worker], runs: Runs
) -> None:
    start_worker("threads")
    app.send_task("task.flaky", args=["f", 1])
    wait_for(lambda: len(runs.of("try", "f")) == 2, "the retried run")
    assert [w[2] for w in runs.of("try", "f")] == ["0", "1"]


def test_a_killed_workers_task_is_completed_by_another_worker_without_waiting_for_its_lease(
    app: Any, broker: Any, start_worker: Callable[..., Worker], runs: Runs, tmp_path: Path
) -> None:
    # A lease far longer than the wait below: only the closed connection
    # can bring the task back in time. The task runs until the gate file
    # exists, so the first worker is still running it when it is killed,
    # however long the second worker takes to start.
    gate = tmp_path / "gate"
    first = start_worker("solo", lease=300)
    app.send_task("task.gate", args=["long", str(gate)])
    (started,) = wait_for(lambda: runs.of("start", "long"), "the task to start")
    assert int(started[2]) == first.pid
    second = start_worker("solo", lease=300)
    first.kill()
    restarted = wait_for(
        lambda: [r for r in runs.of("start", "long") if int(r[2]) == second.pid],
        "another worker to start it",
    )
    assert len(restarted) == 1
    gate.touch()
    (done,) = wait_for(lambda: runs.of("done", "long"), "another worker to complete it")
    assert int(done[2]) == second.pid
    assert len(runs.of("start", "long")) == 2


def test_a_task_longer_than_its_lease_runs_exactly_once(
    app: Any, broker: Any, start_worker: Callable[..., Worker], runs: Runs
) -> None:
    start_worker("solo", lease=2)
    start_worker("solo", lease=2)  # would take the task if its lease lapsed
    app.send_task("task.sleep", args=["slow", 6])
    wait_for(lambda: runs.of("done", "slow"), "the slow task", timeout=60)
    wait_for(lambda: stats(broker, "tasks")["leased"] == 0, "the ack")
    assert stats(broker, "tasks")["ready"] == 0
    assert len(runs.of("start", "slow")) == 1


def test_celery_brokerd_queues_shows_the_apps_queues(app: Any, celery_env: dict[str, str]) -> None:
    with app.connection_for_write() as conn:
        for queue in app.amqp.queues.values():
            queue(conn.default_channel).declare()
    app.send_task("task.record", args=["x"], countdown=60)
    app.send_task("web.render", args=["y"])
    out = subprocess.run(
        [CELERY, "-A", "proj", "brokerd", "queues"],
        env=celery_env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert rows["queue"] == ["ready", "leased", "delayed", "consumers"]
    assert rows["tasks"] == ["0", "0", "1", "0"]
    assert rows["web"] == ["1", "0", "0", "0"]
