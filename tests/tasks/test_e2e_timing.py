"""End to end: countdown/ETA and retries wait in the broker; periodic entries
fire once per due time however many workers run.

The windows asserted here are the issue's own acceptance bounds (2-3 s for a
2 s countdown, 3-5 runs of a 1 s schedule in ~4 s), each with a full second
of slack.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskhelpers import APPS, BOUND, events, wait_events

import brokerd_client
from brokerd_client.tasks import states
from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


def test_countdown_of_2s_runs_between_2_and_3s_later(
    e2e: ModuleType, start_worker: Start, state_dir: Path, broker: Any
) -> None:
    start_worker()
    sent = time.time()
    result = e2e.stamp.apply_async(("cd",), countdown=2)
    with brokerd_client.Client(broker.url) as client:
        assert client.queue_stats("default").delayed == 1  # held by the broker
    ran_at = result.get(timeout=BOUND)
    assert 2.0 <= ran_at - sent < 3.0
    assert len(events(state_dir, "stamp")) == 1


def test_eta_runs_at_its_time(e2e: ModuleType, start_worker: Start) -> None:
    start_worker()
    eta = datetime.now(UTC) + timedelta(seconds=1.5)
    ran_at = e2e.stamp.apply_async(("eta",), eta=eta).get(timeout=BOUND)
    assert eta.timestamp() <= ran_at < eta.timestamp() + 1.0


def test_autoretry_with_backoff_records_each_attempt_then_the_failure(
    e2e: ModuleType, start_worker: Start, state_dir: Path, broker: Any
) -> None:
    start_worker("-c", "2")
    result = e2e.flaky.delay("retry")
    seen: set[str] = set()
    deadline = time.monotonic() + BOUND
    while not result.ready():
        seen.add(result.state)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert states.RETRY in seen
    with pytest.raises(ConnectionError, match="backend down"):
        result.get(timeout=BOUND)
    attempts = events(state_dir, "flaky")
    assert [a["retries"] for a in attempts] == [0, 1, 2, 3]  # max_retries=3, then FAILURE
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(attempts)]
    for n, gap in enumerate(gaps):
        nominal = min(10.0, 0.5 * 2**n)  # retry_backoff=0.5, retry_backoff_max=10
        assert nominal / 2 <= gap < nominal + 1.0, (n, gaps)
    with brokerd_client.Client(broker.url) as client:
        info = client.queue_stats("default")
    assert (info.ready, info.leased, info.delayed) == (0, 0, 0)


def test_a_manual_retry_runs_again_until_it_succeeds(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker()
    assert e2e.manual_retry.delay("m").get(timeout=BOUND) == "done after 2"
    assert [e["retries"] for e in events(state_dir, "manual")] == [0, 1, 2]


def test_one_second_schedule_fires_once_per_second_with_two_workers(
    e2e: ModuleType, start_worker: Start, state_dir: Path, broker: Any
) -> None:
    beat = {"E2E_BEAT": "1"}
    first = start_worker("-c", "2", env=beat)
    second = start_worker("-c", "2", env=beat)
    wait_events(state_dir, "tick", 1)
    window_start = time.time()
    time.sleep(4.0)
    window_end = time.time()
    first.stop()
    second.stop()
    ticks = events(state_dir, "tick")
    due = [t["at"] for t in ticks]
    assert len(due) == len(set(due)), "a due time ran twice"
    assert len({t["id"] for t in ticks}) == len(ticks)
    in_window = [t for t in ticks if window_start <= t["at"] < window_end]
    assert 3 <= len(in_window) <= 5, [t["at"] for t in ticks]
    steps = sorted(due)
    assert all(0.5 < b - a < 1.5 for a, b in itertools.pairwise(steps))
    with brokerd_client.Client(broker.url) as client:
        schedules = client.schedule_list()
    assert [(s["name"], s["spec"]) for s in schedules] == [("every-second", "every 1")]


def test_beat_command_registers_and_lists_schedules(broker: Any, state_dir: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(APPS), "E2E_BEAT": "1"}
    cmd = [sys.executable, "-m", "brokerd_client.tasks.beat", "-A", "e2eapp", "-b", broker.url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "registered 1 schedule(s): every-second" in out.stdout
    out = subprocess.run([*cmd, "--list"], env=env, capture_output=True, text=True, check=True)
    assert "registered" not in out.stdout
    assert "every-second: every 1 -> (default)/default" in out.stdout
    with brokerd_client.Client(broker.url) as client:
        client.schedule_set("stale", "every 60", "", "default", b"{}")
    del env["E2E_BEAT"]
    out = subprocess.run([*cmd, "--prune"], env=env, capture_output=True, text=True, check=True)
    assert "deleted schedule 'every-second'" in out.stdout
    assert "deleted schedule 'stale'" in out.stdout


def test_beat_list_changes_nothing(broker: Any) -> None:
    import os
    import subprocess
    import sys

    # The app's beat_schedule differs from the broker's: a listing must neither
    # register the app's entry nor replace the broker's (its next_run stays).
    with brokerd_client.Client(broker.url) as client:
        client.schedule_set("every-second", "every 3600", "", "default", b"{}")
        before = client.schedule_list()
    env = {**os.environ, "PYTHONPATH": str(APPS), "E2E_BEAT": "1"}
    cmd = [sys.executable, "-m", "brokerd_client.tasks.beat", "-A", "e2eapp", "-b", broker.url]
    out = subprocess.run([*cmd, "--list"], env=env, capture_output=True, text=True, check=True)
    assert "every-second: every 3600 -> (default)/default" in out.stdout
    with brokerd_client.Client(broker.url) as client:
        assert client.schedule_list() == before
        client.schedule_delete("every-second")
    out = subprocess.run([*cmd, "--list"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "no schedules"
    with brokerd_client.Client(broker.url) as client:
        assert client.schedule_list() == []
