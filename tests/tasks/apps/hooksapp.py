"""The app of the hooks, shared_task, update_state and signals tests.

Run in real worker processes. Hooks and signal receivers append JSON lines to
``$E2E_STATE_DIR/<kind>.log`` (with the pid of the process they ran in), so a
test sees what ran where without trusting the worker's own report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from brokerd_client.tasks import App, Task, shared_task, signals

app = App("hooks", broker=os.environ.get("BROKERD_URL", "brokerd://127.0.0.1:5673"))
app.conf.update(task_default_queue="hooks")


def mark(kind: str, **data: Any) -> None:
    """Append one event line (atomic for short lines with O_APPEND)."""
    state = os.environ.get("E2E_STATE_DIR")
    if not state:
        return
    line = json.dumps({"kind": kind, "pid": os.getpid(), **data}, default=repr)
    with (Path(state) / f"{kind}.log").open("a") as f:
        f.write(line + "\n")


def wait_for_file(name: str, timeout: float = 30.0) -> None:
    """Block until the test creates ``$E2E_STATE_DIR/<name>`` (a gate)."""
    path = Path(os.environ.get("E2E_STATE_DIR", ".")) / name
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {name} never opened")
        time.sleep(0.01)


class Recording(Task):  # type: ignore[type-arg]
    """Records every hook call, in order, with its arguments."""

    max_retries = 1

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        mark("hooks", hook="before_start", task_id=task_id, args=args, kwargs=kwargs,
             request_id=self.request.id)  # fmt: skip

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        mark("hooks", hook="on_success", retval=retval, task_id=task_id, args=args, kwargs=kwargs)

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        mark(
            "hooks",
            hook="on_failure",
            exc=repr(exc),
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            einfo_type=einfo.type.__name__,
            einfo_tb="Traceback" in str(einfo),
        )

    def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        mark("hooks", hook="on_retry", exc=repr(exc), task_id=task_id, args=args, kwargs=kwargs)

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        mark("hooks", hook="after_return", status=status, retval=repr(retval), task_id=task_id,
             einfo=einfo is not None)  # fmt: skip


class Broken(Task):  # type: ignore[type-arg]
    """Every hook raises: the task's result must survive."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        raise RuntimeError("before_start is broken")

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        raise RuntimeError("on_success is broken")

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        raise RuntimeError("on_failure is broken")

    def after_return(self, *args: Any) -> None:
        raise RuntimeError("after_return is broken")


class AsyncRecording(Task):  # type: ignore[type-arg]
    async def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        mark("ahooks", hook="before_start", task_id=task_id)

    async def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        mark("ahooks", hook="on_success", retval=retval)

    def after_return(self, status: str, retval: Any, *args: Any) -> None:
        mark("ahooks", hook="after_return", status=status)


@app.task(name="hooks.add", base=Recording)
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="hooks.fail", base=Recording)
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="hooks.flaky", base=Recording, bind=True)
def flaky(self: Task, value: int) -> int:  # type: ignore[type-arg]
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("first try"), countdown=0)
    return value


@app.task(name="hooks.broken_ok", base=Broken)
def broken_ok(value: int) -> int:
    return value * 10


@app.task(name="hooks.broken_fail", base=Broken)
def broken_fail() -> None:
    raise LookupError("the task's own error")


@app.task(name="hooks.async_add", base=AsyncRecording)
async def async_add(x: int, y: int) -> int:
    return x + y


@app.task(name="hooks.progress", bind=True)
def progress(self: Task, steps: int) -> str:  # type: ignore[type-arg]
    """Reports PROGRESS ``steps`` times, each after the test opens gate-<i>."""
    for i in range(1, steps + 1):
        wait_for_file(f"gate-{i}")
        self.update_state(state="PROGRESS", meta={"done": i, "of": steps})
        mark("progress", done=i)
    wait_for_file("gate-end")
    return "finished"


@app.task(name="hooks.aprogress", bind=True)
async def aprogress(self: Task, steps: int) -> str:  # type: ignore[type-arg]
    for i in range(1, steps + 1):
        await self.aupdate_state(state="PROGRESS", meta={"done": i})
    self.update_state(state="ALMOST", meta={"done": steps})
    return "async finished"


@app.task(name="hooks.slow", bind=True)
def slow(self: Task) -> str:  # type: ignore[type-arg]
    mark("slow", task_id=self.request.id)
    wait_for_file("gate-slow", timeout=60.0)
    return "slow done"


@shared_task(name="hooks.shared_mul")
def shared_mul(x: int, y: int) -> int:
    return x * y


# --- signal receivers (only when the test asks for them) ---------------------------

if os.environ.get("HOOKS_SIGNALS"):

    def _record(kind: str) -> Any:
        def receiver(signal: Any = None, sender: Any = None, **kwargs: Any) -> None:
            mark(
                "signals",
                signal=signal.name,
                sender=getattr(sender, "name", sender),
                keys=sorted(kwargs),
                task_id=kwargs.get("task_id") or getattr(kwargs.get("request"), "id", None),
                state=kwargs.get("state"),
                result=kwargs.get("result") if kind == "task_success" else None,
                exception=repr(kwargs.get("exception")) if "exception" in kwargs else None,
                terminated=kwargs.get("terminated"),
            )

        return receiver

    for _name in (
        "task_prerun",
        "task_postrun",
        "task_success",
        "task_failure",
        "task_retry",
        "task_revoked",
        "worker_init",
        "worker_ready",
        "worker_shutdown",
        "worker_process_init",
    ):
        getattr(signals, _name).connect(_record(_name), weak=False)

    @signals.task_success.connect(sender="hooks.add")
    def _only_add(sender: Any = None, result: Any = None, **kwargs: Any) -> None:
        mark("filtered", sender=sender.name, result=result)

    @signals.task_success.connect
    def _raises(sender: Any = None, **kwargs: Any) -> None:
        raise RuntimeError("a receiver that raises")


@app.task(name="hooks.header", bind=True)
def header(self: Task, key: str) -> Any:  # type: ignore[type-arg]
    return self.request.headers.get(key)
