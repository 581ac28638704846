"""Celery's events on brokerd: a worker started with ``-E``, the real
``celery events --dump`` and Flower.

Events are published to the topic exchange ``celeryev``; each monitor
declares its own auto_delete, expiring queue with a message TTL and consumes
it without acks. The tests check what the monitors show and that a
monitor's queue goes with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celerykit import DEADLINE, Worker, wait_for
from controlkit import MeteredBroker, free_port, node, record_queue_options, start_celery
from kombu import Connection


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MeteredBroker]:
    proc = MeteredBroker(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def monitors() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Monitor processes a test started; their groups are killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def event_queues(broker: MeteredBroker) -> dict[str, int]:
    return {q: n for q, n in broker.queues().items() if q.startswith("celeryev.")}


def test_an_event_receivers_queue_maps_to_an_auto_delete_expiring_brokerd_queue(
    app: Any, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared = record_queue_options(monkeypatch)
    with Connection(broker.url) as conn:
        receiver = app.events.Receiver(conn, handlers={})
        receiver.queue(conn.default_channel).declare()
    # Celery's defaults: event_queue_expires 60 s, event_queue_ttl 5 s.
    assert declared == [{"auto_delete": True, "expires": 60.0, "message_ttl": 5.0}]


def test_events_dump_shows_a_worker_and_its_task_from_start_to_shutdown(
    app: Any,
    broker: MeteredBroker,
    celery_env: dict[str, str],
    start_worker: Callable[..., Worker],
    monitors: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    out = tmp_path / "events.log"
    dump = start_celery(celery_env, "events", "--dump", out=out)
    monitors.append(dump)
    wait_for(lambda: list(event_queues(broker).values()) == [1], "the dump to consume events")
    worker = start_worker("solo", name="s", extra=("-E",))
    me = node("s0")
    task_id = app.send_task("task.record", args=["seen"]).id

    def text() -> str:
        return out.read_text(errors="replace")

    for kind in ("received", "started", "succeeded"):
        line = f"task {kind}: task.record({task_id})"
        wait_for(lambda line=line: line in text(), f"task-{kind}")
    wait_for(lambda: f"{me} [" in text() and "] started:" in text(), "worker-online")
    wait_for(lambda: "] heartbeat:" in text(), "a worker heartbeat")
    worker.stop()
    wait_for(lambda: "] shutdown:" in text(), "worker-offline")
    dump.send_signal(signal.SIGINT)
    dump.wait(DEADLINE)
    wait_for(lambda: event_queues(broker) == {}, "the dump's queue to go")


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ConnectionError):
        return None  # not listening yet


def test_flower_shows_the_worker_and_a_finished_task(
    app: Any,
    broker: MeteredBroker,
    celery_env: dict[str, str],
    start_worker: Callable[..., Worker],
    monitors: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    start_worker("solo", name="s", extra=("-E",))
    me = node("s0")
    port = free_port()
    env = dict(celery_env, FLOWER_UNAUTHENTICATED_API="1")
    flower = start_celery(
        env, "flower", f"--port={port}", "--address=127.0.0.1", out=tmp_path / "flower.log"
    )
    monitors.append(flower)
    base = f"http://127.0.0.1:{port}/api"
    workers = wait_for(
        lambda: (w := _get_json(f"{base}/workers?refresh=1")) and me in w and w,
        "Flower to list the worker",
    )
    assert workers[me]["stats"]["broker"]["transport"] == "brokerd"
    wait_for(lambda: event_queues(broker), "Flower to consume events")
    task_id = app.send_task("task.record", args=["flower"]).id
    task = wait_for(
        lambda: (
            (t := (_get_json(f"{base}/tasks") or {}).get(task_id)) and t["state"] == "SUCCESS" and t
        ),
        "Flower to show the finished task",
    )
    assert task["name"] == "task.record"
    assert task["worker"] == me
