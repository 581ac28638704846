"""End to end (real brokerd, real worker processes): task class hooks,
shared_task, update_state with custom states, and forget.

Every wait is bounded only to fail instead of hanging; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hookfixtures import hooks, start_hooks_worker
from taskhelpers import BOUND, events, wait_events

from brokerd_client.tasks import App, AsyncResult, Task, shared_task, states
from brokerd_client.tasks.testing import WorkerHandle

__all__ = ["hooks", "start_hooks_worker"]

Start = Callable[..., WorkerHandle]


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _calls(state_dir: Path, task_id: str, kind: str = "hooks") -> list[dict[str, Any]]:
    return [e for e in events(state_dir, kind) if e.get("task_id") == task_id]


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_hooks_run_in_celerys_order_with_their_arguments(
    hooks: ModuleType, start_hooks_worker: Start, state_dir: Path, pool: str
) -> None:
    worker = start_hooks_worker("-P", pool, "-c", "1")
    ok = hooks.add.delay(2, 3)
    assert ok.get(timeout=BOUND) == 5
    failed = hooks.fail.delay("kaboom")
    with pytest.raises(ValueError, match="kaboom"):
        failed.get(timeout=BOUND)
    wait_events(state_dir, "hooks", 6)

    calls = _calls(state_dir, ok.id)
    assert [c["hook"] for c in calls] == ["before_start", "on_success", "after_return"]
    before, success, after = calls
    assert (before["args"], before["kwargs"], before["request_id"]) == ([2, 3], {}, ok.id)
    assert (success["retval"], success["args"]) == (5, [2, 3])
    assert (after["status"], after["retval"], after["einfo"]) == ("SUCCESS", "5", False)

    calls = _calls(state_dir, failed.id)
    assert [c["hook"] for c in calls] == ["before_start", "on_failure", "after_return"]
    assert calls[1]["exc"] == "ValueError('kaboom')"
    assert (calls[1]["einfo_type"], calls[1]["einfo_tb"]) == ("ValueError", True)
    assert (calls[2]["status"], calls[2]["einfo"]) == ("FAILURE", True)

    # The hooks ran in the process that ran the task.
    pids = {c["pid"] for c in events(state_dir, "hooks")}
    if pool == "threads":
        assert pids == {worker.pid}
    else:
        assert worker.pid not in pids and len(pids) == 1


def test_on_retry_then_success_and_class_attribute_options(
    hooks: ModuleType, start_hooks_worker: Start, state_dir: Path
) -> None:
    start_hooks_worker()
    assert hooks.flaky.max_retries == 1  # from the base class attribute
    r = hooks.flaky.delay(7)
    assert r.get(timeout=BOUND) == 7
    wait_events(state_dir, "hooks", 6)
    calls = _calls(state_dir, r.id)
    assert [c["hook"] for c in calls] == [
        "before_start",
        "on_retry",
        "after_return",
        "before_start",
        "on_success",
        "after_return",
    ]
    assert calls[1]["exc"] == "KeyError('first try')"
    assert calls[2]["status"] == "RETRY"


def test_a_failing_hook_is_logged_and_keeps_the_result(
    hooks: ModuleType, start_hooks_worker: Start
) -> None:
    worker = start_hooks_worker()
    assert hooks.broken_ok.delay(4).get(timeout=BOUND) == 40
    failed = hooks.broken_fail.delay()
    with pytest.raises(LookupError, match="the task's own error"):
        failed.get(timeout=BOUND)
    assert failed.state == states.FAILURE
    log = worker.log
    assert "on_success of task hooks.broken_ok raised; ignored" in log
    assert "RuntimeError: on_success is broken" in log
    assert "before_start of task hooks.broken_ok raised" in log
    assert "on_failure of task hooks.broken_fail raised" in log


def test_async_task_awaits_async_hooks(
    hooks: ModuleType, start_hooks_worker: Start, state_dir: Path
) -> None:
    start_hooks_worker()
    r = hooks.async_add.delay(1, 2)
    assert r.get(timeout=BOUND) == 3
    found = wait_events(state_dir, "ahooks", 3)
    assert [e["hook"] for e in found] == ["before_start", "on_success", "after_return"]
    assert found[1]["retval"] == 3 and found[2]["status"] == "SUCCESS"


def test_hooks_run_in_eager_mode_too() -> None:
    seen: list[tuple[str, Any]] = []

    class Watch(Task):  # type: ignore[type-arg]
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            seen.append(("before_start", list(args)))

        def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            seen.append(("on_failure", type(exc).__name__))

        def after_return(self, status: str, retval: Any, *rest: Any) -> None:
            seen.append(("after_return", status))

    app = App("eager_hooks", task_always_eager=True, task_eager_propagates=False)

    @app.task(base=app.Task)
    def plain(x: int) -> int:
        return x

    @app.task(base=Watch)
    def div(x: int, y: int) -> float:
        return x / y

    assert type(plain) is Task
    assert div.delay(1, 0).state == states.FAILURE
    assert seen == [("before_start", [1, 0]), ("on_failure", "ZeroDivisionError"),
                    ("after_return", "FAILURE")]  # fmt: skip
    with pytest.raises(TypeError, match="base= must be a subclass"):
        app.task(base=dict)(lambda: None)


def test_shared_task_is_bound_to_apps_made_before_and_after(
    hooks: ModuleType, start_hooks_worker: Start, broker: Any
) -> None:
    start_hooks_worker()
    # hooksapp's app existed before the module-level @shared_task ran: bound.
    assert hooks.app.tasks["hooks.shared_mul"].fn is hooks.shared_mul.fn
    other = App("other", broker=broker.url, task_default_queue="hooks")
    try:
        # An app made after the task was defined gets it too, and becomes current.
        assert other.tasks["hooks.shared_mul"] is hooks.shared_mul.bind_to(other)
        assert hooks.shared_mul.app is other
        r = hooks.shared_mul.delay(6, 7)
        assert r.app is other and r.get(timeout=BOUND) == 42
        # The first app's own task object still sends through it.
        mine = hooks.shared_mul.bind_to(hooks.app)
        assert mine is not other.tasks["hooks.shared_mul"]
        assert mine.delay(2, 5).get(timeout=BOUND) == 10
        assert hooks.shared_mul(3, 3) == 9  # called directly
    finally:
        other.close()


def test_shared_task_defined_after_the_app_and_with_options() -> None:
    app = App("late", task_always_eager=True)

    @shared_task(bind=True, name="late.who")
    def who(self: Task) -> str:  # type: ignore[type-arg]
        return self.name

    assert app.tasks["late.who"].bind is True
    assert who.delay().get() == "late.who"


def test_update_state_progress_is_seen_by_waiters_and_info(
    hooks: ModuleType, start_hooks_worker: Start, state_dir: Path
) -> None:
    start_hooks_worker("-c", "2")
    r = hooks.progress.delay(2)
    messages: list[dict[str, Any]] = []
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(r.get(timeout=BOUND, on_message=messages.append, interval=0.05))
    )
    follower = AsyncResult(r.id, app=hooks.app)
    waiter.start()
    for i in (1, 2):
        (state_dir / f"gate-{i}").touch()
        wait_events(state_dir, "progress", i)
        # Readable while it runs: a custom state, its meta as .info.
        assert follower.state == "PROGRESS"
        assert follower.info == {"done": i, "of": 2}
        assert not follower.ready()
        # The waiter is told (bounded wait, not a timing assertion).
        told = {"task_id": r.id, "status": "PROGRESS", "result": {"done": i, "of": 2}}
        wait_until(lambda told=told: told in messages)  # type: ignore[misc]
    assert waiter.is_alive()  # a custom state is not final: get() keeps waiting
    (state_dir / "gate-end").touch()
    waiter.join(BOUND)
    assert got == ["finished"]
    statuses = [(m["status"], m["result"]) for m in messages]
    assert statuses[-1] == ("SUCCESS", "finished")
    # Each progress state the waiter saw came in order, and it saw the last one.
    progress = [m["result"]["done"] for m in messages if m["status"] == "PROGRESS"]
    assert progress == [1, 2]
    assert all(m["task_id"] == r.id for m in messages)
    assert follower.state == states.SUCCESS and follower.result == "finished"


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_iter_progress_yields_each_state_then_the_final_one(
    hooks: ModuleType, start_hooks_worker: Start, state_dir: Path, pool: str
) -> None:
    start_hooks_worker("-P", pool, "-c", "1")
    r = hooks.progress.delay(1)
    updates = r.iter_progress(timeout=BOUND, interval=0.05)
    (state_dir / "gate-1").touch()
    first = next(updates)
    while first[0] != "PROGRESS":  # PENDING or STARTED may come first
        first = next(updates)
    assert first == ("PROGRESS", {"done": 1, "of": 1})
    (state_dir / "gate-end").touch()
    assert list(updates)[-1] == (states.SUCCESS, "finished")


def test_async_update_state_and_aiter_progress(
    hooks: ModuleType, start_hooks_worker: Start
) -> None:
    start_hooks_worker()

    async def main() -> list[tuple[str, Any]]:
        r = await hooks.aprogress.adelay(3)
        assert await r.wait(timeout=BOUND) == "async finished"
        seen = [u async for u in r.aiter_progress(timeout=BOUND)]
        await hooks.app.aclose()
        return seen

    # Once final, iterating gives just the final state.
    assert asyncio.run(main()) == [(states.SUCCESS, "async finished")]


def test_forget_deletes_the_result(hooks: ModuleType, start_hooks_worker: Start) -> None:
    start_hooks_worker()
    r = hooks.add.delay(20, 22)
    assert r.get(timeout=BOUND) == 42
    again = AsyncResult(r.id, app=hooks.app)
    assert again.state == states.SUCCESS
    r.forget()
    assert AsyncResult(r.id, app=hooks.app).state == states.PENDING
    assert r.state == states.PENDING  # the cached final record went too
    with pytest.raises(TimeoutError):
        r.get(timeout=0.2)

    async def aforget() -> str:
        r2 = await hooks.add.adelay(1, 1)
        assert await r2.wait(timeout=BOUND) == 2
        await r2.aforget()
        state = await AsyncResult(r2.id, app=hooks.app).astate()
        await hooks.app.aclose()
        return state

    assert asyncio.run(aforget()) == states.PENDING


def test_the_docs_hooks_example_runs_as_written(tmp_path: Path) -> None:
    """docs/tasks.md's ``hooks_demo.py`` block, run in a fresh interpreter."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "tasks.md").read_text()
    blocks = [
        b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "# hooks_demo.py" in b
    ]
    assert len(blocks) == 1
    (tmp_path / "hooks_demo.py").write_text(blocks[0])
    run = subprocess.run(
        [sys.executable, "hooks_demo.py"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_eager_retries_call_on_retry_and_async_hooks_of_sync_tasks_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    class Hooks(Task):  # type: ignore[type-arg]
        def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            seen.append(f"on_retry {exc!r} {einfo.type.__name__}")

        def after_return(self, status: str, *rest: Any) -> None:
            seen.append(f"after_return {status}")

        async def on_success(self, *args: Any) -> None:  # cannot run for a sync task
            seen.append("async on_success")

    app = App("eager_retry_hooks", task_always_eager=True)

    @app.task(base=Hooks, bind=True, max_retries=2)
    def twice(self: Task) -> int:  # type: ignore[type-arg]
        if self.request.retries < 2:
            raise self.retry(exc=OSError(f"try {self.request.retries}"), countdown=0)
        return self.request.retries

    assert twice.delay().get() == 2
    assert seen == [
        "on_retry OSError('try 0') Retry",
        "after_return RETRY",
        "on_retry OSError('try 1') Retry",
        "after_return RETRY",
        "after_return SUCCESS",
    ]
    assert "Hooks.on_success is async def but task" in caplog.text
