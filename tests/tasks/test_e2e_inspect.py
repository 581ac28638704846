"""End to end: inspect, control and events against real workers.

Celery's call shapes (``app.control.inspect().active()``, ``ping``,
``pool_grow``, ``add_consumer``, ``shutdown``) and its CLI
(``brokerd-worker inspect ping``), answered by every live worker through
the broker. Events are read from the ``brokerd.events`` exchange as a
monitor would.
"""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskhelpers import BOUND, wait_events

import brokerd_client
from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


def _until(probe: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + BOUND
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_every_live_worker_answers_ping_and_a_dead_one_does_not(
    e2e: ModuleType, start_worker: Start
) -> None:
    a = start_worker("-n", "alpha@test")
    start_worker("-n", "beta@test")
    inspect = e2e.app.control.inspect(timeout=2.0)
    assert inspect.ping() == {"alpha@test": {"ok": "pong"}, "beta@test": {"ok": "pong"}}
    a.kill()
    assert e2e.app.control.ping(timeout=1.0) == {"beta@test": {"ok": "pong"}}
    # A destination names who answers (and the wait ends when they have).
    assert e2e.app.control.inspect(destination=["beta@test"]).registered() is not None


def test_active_reserved_registered_and_stats_describe_the_worker(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker("-n", "w@test", "-c", "1", "--prefetch", "2")
    running = e2e.sleep_sync.delay(3.0, tag="running")
    waiting = e2e.sleep_sync.delay(0.1, tag="waiting")
    wait_events(state_dir, "sleep", 1)
    inspect = e2e.app.control.inspect(timeout=2.0)
    active = _until(lambda: (inspect.active() or {}).get("w@test"), "an active task")
    assert [(t["id"], t["name"], t["args"]) for t in active] == [(running.id, "e2e.sleep", [3.0])]
    assert active[0]["time_start"] is not None
    reserved = inspect.reserved()
    assert reserved is not None
    assert [(t["id"], t["kwargs"]) for t in reserved["w@test"]] == [
        (waiting.id, {"tag": "waiting"})
    ]
    assert inspect.scheduled() == {"w@test": []}
    registered = inspect.registered()
    assert registered is not None and "e2e.add" in registered["w@test"]
    assert running.get(timeout=BOUND) == 3.0
    waiting.get(timeout=BOUND)
    stats = inspect.stats()
    assert stats is not None
    mine = stats["w@test"]
    assert mine["total"] == {"e2e.sleep": 2}
    assert mine["pool"]["max-concurrency"] == 1
    assert mine["prefetch_count"] == 2


def test_pool_grow_and_shrink_change_how_many_tasks_run_at_once(
    e2e: ModuleType, start_worker: Start
) -> None:
    start_worker("-n", "w@test", "-c", "1")
    control = e2e.app.control
    assert control.pool_grow(2, reply=True, timeout=2.0) == {
        "w@test": {"ok": "pool will grow (concurrency 3)"}
    }
    stats = control.inspect(timeout=2.0).stats()
    assert stats is not None and stats["w@test"]["pool"]["max-concurrency"] == 3
    assert control.pool_shrink(5, reply=True, timeout=2.0) == {
        "w@test": {"ok": "pool will shrink (concurrency 1)"}
    }
    bad = control.broadcast("pool_grow", {"n": "x"}, reply=True, timeout=2.0)
    assert bad is not None and "error" in bad["w@test"]


def test_add_and_cancel_consumer(e2e: ModuleType, start_worker: Start, broker: Any) -> None:
    start_worker("-n", "w@test", "-Q", "default")
    control = e2e.app.control
    assert control.add_consumer("web_tasks", reply=True, timeout=2.0) == {
        "w@test": {"ok": "add consumer web_tasks"}
    }
    assert e2e.web_echo.delay("hi").get(timeout=BOUND) == "hi"
    assert control.cancel_consumer("web_tasks", reply=True, timeout=2.0) == {
        "w@test": {"ok": "no longer consuming from web_tasks"}
    }
    e2e.web_echo.delay("left")
    with brokerd_client.Client(broker.url) as client:
        assert client.queue_stats("web_tasks").ready == 1
    assert control.cancel_consumer("web_tasks", reply=True, timeout=2.0) == {
        "w@test": {"error": "not consuming from web_tasks"}
    }


def test_remote_shutdown_is_a_warm_shutdown(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    worker = start_worker("-n", "w@test")
    task = e2e.sleep_sync.delay(1.0, tag="finishing")
    wait_events(state_dir, "sleep", 1)
    assert e2e.app.control.shutdown(reply=True, timeout=2.0) == {"w@test": {"ok": "shutting down"}}
    assert worker.proc.wait(BOUND) == 0
    assert task.get(timeout=BOUND) == 1.0


def _cli(broker: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "brokerd_client.worker", *args, "-b", broker.url],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


def test_the_command_line_speaks_celerys_words_and_exit_codes(
    e2e: ModuleType, start_worker: Start, broker: Any
) -> None:
    none = _cli(broker, "inspect", "ping", "-t", "0.5")
    assert none.returncode == 69
    assert "No nodes replied" in none.stderr
    start_worker("-n", "w@test")
    ping = _cli(broker, "inspect", "ping")
    assert ping.returncode == 0, ping.stderr
    assert "->  w@test: OK" in ping.stdout and "pong" in ping.stdout
    assert "1 node online." in ping.stdout
    as_json = _cli(broker, "inspect", "registered", "--json")
    assert "e2e.add" in json.loads(as_json.stdout)["w@test"]
    grow = _cli(broker, "control", "pool_grow", "2", "-d", "w@test")
    assert grow.returncode == 0 and "pool will grow" in grow.stdout
    usage = _cli(broker, "control", "add_consumer")
    assert usage.returncode == 64
    assert "add_consumer takes queue" in usage.stderr


def _event_queue(client: brokerd_client.Client) -> str:
    client.declare_exchange("brokerd.events", "topic", durable=False)
    client.declare_queue("monitor", durable=False)
    client.bind("monitor", "brokerd.events", "#")
    return "monitor"


def _events(
    url: str, queue: str, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Read the monitor queue until ``until(events so far)``."""

    async def read() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with await brokerd_client.connect(url) as client:
            consumer = await client.consume(queue, prefetch=100)
            async with asyncio.timeout(BOUND):
                async for delivery in consumer:
                    await delivery.ack()
                    seen.append(json.loads(delivery.body))
                    if until(seen):
                        break
        return seen

    return asyncio.run(read())


def test_events_are_off_by_default(e2e: ModuleType, start_worker: Start, broker: Any) -> None:
    with brokerd_client.Client(broker.url) as client:
        queue = _event_queue(client)
        start_worker("-n", "quiet@test")
        assert e2e.add.delay(1, 2).get(timeout=BOUND) == 3
        assert client.queue_stats(queue).ready == 0


def test_with_dash_e_a_worker_sends_celerys_task_and_worker_events(
    e2e: ModuleType, start_worker: Start, broker: Any
) -> None:
    with brokerd_client.Client(broker.url) as client:
        queue = _event_queue(client)
        start_worker("-n", "loud@test", "-E", "-c", "2")
        ok = e2e.add.delay(2, 3)
        bad = e2e.boom.delay("no")
        assert ok.get(timeout=BOUND) == 5
        with pytest.raises(ValueError):
            bad.get(timeout=BOUND)

        def complete(seen: list[dict[str, Any]]) -> bool:
            kinds = {(e["type"], e.get("uuid")) for e in seen}
            return {
                ("task-received", ok.id),
                ("task-started", ok.id),
                ("task-succeeded", ok.id),
                ("task-failed", bad.id),
            } <= kinds and any(e["type"] == "worker-heartbeat" for e in seen)

        seen = _events(broker.url, queue, complete)
    by = {(e["type"], e.get("uuid")): e for e in seen}
    received = by[("task-received", ok.id)]
    assert received["name"] == "e2e.add"
    assert received["args"] == "[2, 3]"
    assert received["hostname"] == "loud@test"
    succeeded = by[("task-succeeded", ok.id)]
    assert succeeded["result"] == "5" and succeeded["runtime"] >= 0
    failed = by[("task-failed", bad.id)]
    assert failed["exception"] == "ValueError('no')" and "Traceback" in failed["traceback"]
    online = [e for e in seen if e["type"] in ("worker-online", "worker-heartbeat")]
    assert online and online[0]["hostname"] == "loud@test" and online[0]["freq"] == 2.0
    # Beside Celery's fields: the pool's name and size (the default pool, -c 2).
    assert online[0]["pool"] == "asyncio" and online[0]["concurrency"] == 2
    assert online[0]["sw_ident"] == "brokerd-worker" and online[0]["pid"] > 0
    assert {"active", "processed", "loadavg", "sw_ver", "sw_sys"} <= set(online[0])


def test_pool_grow_starts_child_processes_and_shrink_retires_idle_ones(
    e2e: ModuleType, start_worker: Start
) -> None:
    start_worker("-n", "p@test", "-P", "processes", "-c", "1")
    inspect = e2e.app.control.inspect(timeout=2.0)

    def pids() -> list[int]:
        stats = inspect.stats() or {}
        found: list[int] = stats.get("p@test", {}).get("pool", {}).get("processes", [])
        return found

    assert len(pids()) == 1
    e2e.app.control.pool_grow(2, reply=True, timeout=2.0)
    grown = _until(lambda: len(pids()) == 3 and pids(), "three child processes")
    assert e2e.add.delay(1, 1).get(timeout=BOUND) == 2
    e2e.app.control.pool_shrink(2, reply=True, timeout=2.0)
    left = _until(lambda: len(pids()) == 1 and pids(), "one child process")
    assert set(left) <= set(grown)


def test_brokerd_worker_events_prints_events_live(
    e2e: ModuleType, start_worker: Start, broker: Any
) -> None:
    dump = subprocess.Popen(
        [sys.executable, "-m", "brokerd_client.worker", "events", "--json", "-b", broker.url],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert dump.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(x) for x in dump.stdout or ()], daemon=True)
    reader.start()
    try:
        assert "dumping events" in lines.get(timeout=BOUND)
        start_worker("-n", "loud@test", "-E")
        task = e2e.add.delay(20, 22)
        assert task.get(timeout=BOUND) == 42
        while True:
            event = json.loads(lines.get(timeout=BOUND))  # queue.Empty fails the test
            if event["type"] == "task-succeeded" and event["uuid"] == task.id:
                assert event["result"] == "42"
                break
    finally:
        dump.kill()
        dump.wait()
