"""Signals: Celery's names and keyword arguments, ``sender=`` filtering,
receivers that raise. The task and worker signals are observed in real
worker processes (``apps/hooksapp.py`` connects recording receivers when
``HOOKS_SIGNALS`` is set); the publish signals in this process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hookfixtures import hooks, start_hooks_worker
from taskhelpers import BOUND, events, wait_events

from brokerd_client.tasks import App, signals
from brokerd_client.tasks.signals import Signal, watch
from brokerd_client.tasks.testing import WorkerHandle

__all__ = ["hooks", "start_hooks_worker"]

Start = Callable[..., WorkerHandle]
ON = {"HOOKS_SIGNALS": "1"}

TASK_KEYS = {
    "task_prerun": ["args", "kwargs", "task", "task_id"],
    "task_postrun": ["args", "kwargs", "retval", "state", "task", "task_id"],
    "task_success": ["result"],
    "task_failure": ["args", "einfo", "exception", "kwargs", "task_id", "traceback"],
    "task_retry": ["einfo", "reason", "request"],
    "task_revoked": ["expired", "request", "signum", "terminated"],
}


def _of(state_dir: Path, signal: str, task_id: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in events(state_dir, "signals")
        if e["signal"] == signal and (task_id is None or e["task_id"] == task_id)
    ]


def test_task_and_worker_signals_fire_with_celerys_kwargs(
    hooks: ModuleType, start_hooks_worker: Start, state_dir: Path
) -> None:
    worker = start_hooks_worker("-c", "2", env=ON)
    ok = hooks.add.delay(1, 2)
    assert ok.get(timeout=BOUND) == 3
    failed = hooks.fail.delay("bad")
    with pytest.raises(ValueError):
        failed.get(timeout=BOUND)
    retried = hooks.flaky.delay(5)
    assert retried.get(timeout=BOUND) == 5
    slow = hooks.slow.delay()
    wait_events(state_dir, "slow", 1)
    slow.revoke(terminate=True)
    deadline = time.monotonic() + BOUND
    while not _of(state_dir, "task_revoked", slow.id):  # sent on the worker's loop
        assert time.monotonic() < deadline, "no task_revoked"
        time.sleep(0.02)
    assert worker.stop() == 0

    assert [e["keys"] for e in _of(state_dir, "task_revoked", slow.id)] == [
        TASK_KEYS["task_revoked"]
    ]
    assert _of(state_dir, "task_revoked", slow.id)[0]["terminated"] is True
    for name in ("task_prerun", "task_postrun", "task_success"):
        (e,) = (
            _of(state_dir, name, ok.id)
            if name != "task_success"
            else [x for x in _of(state_dir, name) if x["sender"] == "hooks.add"]
        )
        assert e["keys"] == TASK_KEYS[name] and e["sender"] == "hooks.add"
    assert _of(state_dir, "task_postrun", ok.id)[0]["state"] == "SUCCESS"
    assert [x["result"] for x in _of(state_dir, "task_success") if x["sender"] == "hooks.add"] == [
        3
    ]
    (failure,) = _of(state_dir, "task_failure", failed.id)
    assert failure["keys"] == TASK_KEYS["task_failure"]
    assert failure["exception"] == "ValueError('bad')"
    assert _of(state_dir, "task_postrun", failed.id)[0]["state"] == "FAILURE"
    (retry,) = _of(state_dir, "task_retry", retried.id)
    assert retry["keys"] == TASK_KEYS["task_retry"]
    assert [e["state"] for e in _of(state_dir, "task_postrun", retried.id)] == ["RETRY", "SUCCESS"]
    # sender= filter: the receiver connected for hooks.add saw only that task.
    assert [(e["sender"], e["result"]) for e in events(state_dir, "filtered")] == [("hooks.add", 3)]
    # The raising receiver was logged; results were stored all the same.
    assert "receiver" in worker.log and "a receiver that raises" in worker.log
    # Worker lifecycle, in order, in the worker process.
    lifecycle = [
        e["signal"] for e in events(state_dir, "signals") if e["signal"].startswith("worker_")
    ]
    assert lifecycle == ["worker_init", "worker_ready", "worker_shutdown"]
    assert {e["pid"] for e in events(state_dir, "signals")} == {worker.pid}


def test_worker_process_init_fires_in_each_child(
    hooks: ModuleType, start_hooks_worker: Start, state_dir: Path
) -> None:
    worker = start_hooks_worker("-P", "processes", "-c", "2", env=ON)
    inits = wait_events(state_dir, "signals", 2)
    children = {e["pid"] for e in inits if e["signal"] == "worker_process_init"}
    assert len(children) == 2 and worker.pid not in children
    r = hooks.add.delay(4, 4)
    assert r.get(timeout=BOUND) == 8
    (pre,) = _of(state_dir, "task_prerun", r.id)
    assert pre["pid"] in children  # task signals fire where the task runs


@pytest.fixture
def producer(broker: Any) -> Iterator[App]:
    app = App("publisher", broker=broker.url, task_default_queue="hooks")
    try:
        yield app
    finally:
        app.close()


def test_publish_signals_fire_and_headers_can_be_added(
    hooks: ModuleType, start_hooks_worker: Start, producer: App
) -> None:
    start_hooks_worker()
    seen: list[tuple[str, Any, dict[str, Any]]] = []

    def before(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        seen.append(("before", sender, kwargs))
        headers["x-added"] = "by a receiver"

    def after(sender: Any = None, **kwargs: Any) -> None:
        seen.append(("after", sender, kwargs))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after, sender="hooks.header")
    try:
        r = producer.send_task("hooks.header", args=["x-added"])
        assert r.get(timeout=BOUND) == "by a receiver"
        producer.send_task("hooks.add", args=[1, 1]).get(timeout=BOUND)
    finally:
        assert signals.before_task_publish.disconnect(before)
        assert signals.after_task_publish.disconnect(after)
    assert [(kind, sender) for kind, sender, _ in seen] == [
        ("before", "hooks.header"),
        ("after", "hooks.header"),
        ("before", "hooks.add"),
    ]
    assert sorted(seen[0][2]) == [
        "body", "declare", "exchange", "properties", "retry_policy", "routing_key", "signal",
    ]  # fmt: skip
    assert seen[0][2]["routing_key"] == "hooks" and isinstance(seen[0][2]["body"], bytes)
    assert sorted(seen[1][2]) == ["body", "exchange", "headers", "routing_key", "signal"]


def test_connect_forms_sender_filter_disconnect_and_raising_receivers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sig = Signal("demo")
    got: list[tuple[str, Any]] = []

    @sig.connect
    def anyone(sender: Any = None, **kwargs: Any) -> None:
        got.append(("anyone", sender))

    @sig.connect(sender="a")
    def only_a(sender: Any = None, **kwargs: Any) -> str:
        got.append(("only_a", sender))
        return "reply"

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver broke")

    sig.connect(broken)
    sig.connect(broken)  # connected once
    assert len(sig.receivers) == 3
    replies = sig.send("a", value=1)
    assert got == [("anyone", "a"), ("only_a", "a")]
    assert [r for _, r in replies][1] == "reply" and isinstance(replies[2][1], RuntimeError)
    assert "receiver broke" in caplog.text
    sig.send("b")
    assert got[-1] == ("anyone", "b")
    assert sig.disconnect(broken) and not sig.disconnect(broken)
    assert sig.disconnect(only_a, sender="a")
    got.clear()
    sig.send("a")
    assert got == [("anyone", "a")]

    # A task object and its name match each other as senders.
    app = App("signals_eager", task_always_eager=True)

    @app.task(name="sig.add")
    def add(x: int, y: int) -> int:
        return x + y

    results: list[Any] = []

    def on_success(sender: Any = None, result: Any = None, **kwargs: Any) -> None:
        results.append((sender.name, result))

    signals.task_success.connect(on_success, sender=add)
    try:
        assert add.delay(2, 2).get() == 4
    finally:
        signals.task_success.disconnect(on_success)
    assert results == [("sig.add", 4)]


def test_no_receivers_means_the_execute_path_skips_signals() -> None:
    assert not watch.task_run

    def receiver(**kwargs: Any) -> None: ...

    signals.task_postrun.connect(receiver, dispatch_uid="uid")
    assert watch.task_run
    signals.task_postrun.connect(receiver, dispatch_uid="uid")
    assert len(signals.task_postrun.receivers) == 1
    signals.task_postrun.disconnect(dispatch_uid="uid")
    assert not watch.task_run
