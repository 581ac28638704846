"""End to end (real brokerd, real worker processes): the per-task lines a
worker logs at ``-l info``, in Celery's shapes, and none below INFO."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from types import ModuleType

import pytest
from taskhelpers import BOUND

from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


def _wait_for_line(worker: WorkerHandle, pattern: str) -> str:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        found = re.search(pattern, worker.log)
        if found:
            return found.group(0)
        time.sleep(0.05)
    raise AssertionError(f"no line matching {pattern!r} in:\n{worker.log}")


@pytest.mark.parametrize("pool", ["asyncio", "threads", "processes"])
def test_info_logs_received_and_succeeded_lines_like_celery(
    e2e: ModuleType, start_worker: Start, pool: str
) -> None:
    worker = start_worker("-P", pool, "-c", "2")
    result = e2e.add.delay(2, 3)
    assert result.get(timeout=BOUND) == 5
    tid = re.escape(result.id)
    _wait_for_line(worker, rf"Task e2e\.add\[{tid}\] received")
    line = _wait_for_line(worker, rf"Task e2e\.add\[{tid}\] succeeded in \S+s: .*")
    runtime = re.search(r"succeeded in (\S+)s: (.*)", line)
    assert runtime is not None
    assert float(runtime.group(1)) >= 0
    assert runtime.group(2) == "5"


def test_failures_and_retries_are_logged_like_celery(e2e: ModuleType, start_worker: Start) -> None:
    worker = start_worker()
    failed = e2e.boom.delay("no luck")
    with pytest.raises(ValueError, match="no luck"):
        failed.get(timeout=BOUND)
    retried = e2e.manual_retry.delay("again")
    assert retried.get(timeout=BOUND) == "done after 2"
    _wait_for_line(
        worker,
        rf"Task e2e\.boom\[{re.escape(failed.id)}\] raised unexpected: "
        r"ValueError\('no luck'\)\nTraceback",
    )
    _wait_for_line(
        worker,
        rf"Task e2e\.manual_retry\[{re.escape(retried.id)}\] retry: Retry in 0\.2s: "
        r"KeyError\('again'\)",
    )
    _wait_for_line(
        worker,
        rf"Task e2e\.manual_retry\[{re.escape(retried.id)}\] succeeded in \S+s: 'done after 2'",
    )


def test_below_info_no_per_task_lines_are_logged(e2e: ModuleType, start_worker: Start) -> None:
    worker = start_worker("-l", "warning")
    assert e2e.add.delay(1, 1).get(timeout=BOUND) == 2
    failed = e2e.boom.delay("still an error")
    with pytest.raises(ValueError, match="still an error"):
        failed.get(timeout=BOUND)
    _wait_for_line(worker, rf"Task e2e\.boom\[{re.escape(failed.id)}\] raised unexpected")
    assert " received" not in worker.log
    assert " succeeded in " not in worker.log
