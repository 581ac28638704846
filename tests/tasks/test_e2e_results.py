"""End to end (real brokerd, real worker processes): results, routing, refusals.

Every wait is bounded only to fail instead of hanging; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskhelpers import BOUND, events

import brokerd_client
from brokerd_client.tasks import AsyncResult, ContentDisallowed, NotRegistered, states
from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


def test_get_returns_the_value_or_reraises_the_error(e2e: ModuleType, start_worker: Start) -> None:
    start_worker("-c", "2")
    ok = e2e.add.delay(2, 3)
    assert ok.get(timeout=BOUND) == 5
    assert (ok.state, ok.ready(), ok.successful(), ok.result) == (states.SUCCESS, True, True, 5)

    failed = e2e.boom.delay("kaboom")
    with pytest.raises(ValueError, match="kaboom") as info:
        failed.get(timeout=BOUND)
    remote_tb = info.value.remote_traceback  # type: ignore[attr-defined]
    assert "raise ValueError(message)" in remote_tb and "e2eapp.py" in remote_tb
    assert failed.state == states.FAILURE and failed.failed() and not failed.successful()
    assert isinstance(failed.result, ValueError)
    assert "ValueError: kaboom" in (failed.traceback or "")
    assert isinstance(failed.get(propagate=False), ValueError)

    assert AsyncResult("never-sent", app=e2e.app).state == states.PENDING
    with pytest.raises(TimeoutError):
        AsyncResult("never-sent", app=e2e.app).get(timeout=0.2)


def test_async_wait_is_pushed(e2e: ModuleType, start_worker: Start) -> None:
    start_worker()

    async def main() -> list[Any]:
        results = [await e2e.sleep_async.adelay(0.2, tag=str(i)) for i in range(3)]
        values = await asyncio.gather(*(r.wait(timeout=BOUND) for r in results))
        await e2e.app.aclose()
        return values

    assert asyncio.run(main()) == [0.2, 0.2, 0.2]


def test_routes_send_tasks_to_the_right_queue(
    e2e: ModuleType, start_worker: Start, broker: Any
) -> None:
    start_worker("-Q", "default")
    routed = e2e.web_echo.delay({"x": [1, 2]})
    with brokerd_client.Client(broker.url) as client:
        deadline = time.monotonic() + BOUND
        while client.queue_stats("web_tasks").ready != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert routed.state == states.PENDING  # the default-queue worker never sees it
    start_worker("-Q", "web_tasks")
    assert routed.get(timeout=BOUND) == {"x": [1, 2]}


def test_delay_from_many_threads_and_send_many_all_complete(
    e2e: ModuleType, start_worker: Start
) -> None:
    start_worker("-c", "8")
    results: list[AsyncResult] = []
    lock = threading.Lock()

    def producer(n: int) -> None:
        for i in range(20):
            r = e2e.add.delay(n, i)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.id for r in results}) == 160
    assert sorted(r.get(timeout=BOUND) for r in results) == sorted(
        n + i for n in range(8) for i in range(20)
    )
    many = e2e.add.delay_many([(i, i) for i in range(50)])
    assert [r.get(timeout=BOUND) for r in many] == [2 * i for i in range(50)]
    unconfirmed = e2e.add.apply_async((5, 5), wait_confirm=False)
    assert unconfirmed.get(timeout=BOUND) == 10


def test_a_task_can_send_a_task_from_the_worker_loop(e2e: ModuleType, start_worker: Start) -> None:
    start_worker()
    child_id = e2e.spawn.delay(21).get(timeout=BOUND)
    assert AsyncResult(child_id, app=e2e.app).get(timeout=BOUND) == 42


def test_refused_messages_record_a_failure(
    e2e: ModuleType, start_worker: Start, broker: Any
) -> None:
    start_worker()
    with brokerd_client.Client(broker.url) as client:
        client.publish(
            "",
            "default",
            b"\x80\x04K\x01.",  # a pickle: never decoded
            message_id="pickled",
            headers={
                "task": "e2e.add",
                "id": "pickled",
                "content-type": "application/x-python-serialize",
            },
        )
        client.publish(
            "",
            "default",
            b'{"args":[],"kwargs":{}}',
            message_id="unknown-task",
            headers={"task": "e2e.nope", "id": "unknown-task", "content-type": "application/json"},
        )
    with pytest.raises(ContentDisallowed, match="not accepted"):
        AsyncResult("pickled", app=e2e.app).get(timeout=BOUND)
    with pytest.raises(NotRegistered, match=r"e2e\.nope"):
        AsyncResult("unknown-task", app=e2e.app).get(timeout=BOUND)


def test_results_expire_on_the_broker(
    e2e: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker(env={"E2E_RESULT_EXPIRES": "1"})
    result = e2e.add.delay(1, 1)
    assert result.get(timeout=BOUND) == 2
    time.sleep(2.5)
    assert AsyncResult(result.id, app=e2e.app).state == states.PENDING
    assert events(state_dir, "add") == []


def test_started_is_recorded_when_tracked(e2e: ModuleType, start_worker: Start) -> None:
    start_worker()
    result = e2e.tracked.delay(1.0)
    deadline = time.monotonic() + BOUND
    while result.state != states.STARTED:
        assert time.monotonic() < deadline and not result.ready()
        time.sleep(0.02)
    assert result.get(timeout=BOUND) == 1.0
    assert e2e.add.delay(1, 1).state in (states.PENDING, states.SUCCESS)  # untracked


def test_blocking_get_inside_an_async_task_is_refused(e2e: ModuleType, start_worker: Start) -> None:
    start_worker()
    assert "await result.wait()" in e2e.blocking_get.delay().get(timeout=BOUND)


def test_settings_the_broker_refuses_stop_the_worker_at_start(
    start_worker: Start, broker: Any
) -> None:
    bad_cron = start_worker(env={"E2E_BAD_CRON": "1"}, wait=False)
    assert bad_cron.proc.wait(BOUND) == 2
    assert "beat_schedule entry 'bad' (cron 61 * * * *) was refused by the broker" in bad_cron.log
    with brokerd_client.Client(broker.url) as client:
        client.declare_queue("adhoc", lease=5.0)  # e2eapp would declare it with 30 s
    mismatch = start_worker("-Q", "adhoc", wait=False)
    assert mismatch.proc.wait(BOUND) == 2
    assert "queue 'adhoc' or its exchange already exists" in mismatch.log


async def test_a_redelivered_task_that_already_has_a_final_result_is_not_run_again(
    e2e: ModuleType, start_worker: Start, state_dir: Path, broker: Any
) -> None:
    # A worker ran "twice" and stored its result, then lost its connection
    # before the ack arrived; it had not finished "once". The broker delivers
    # both again.
    from brokerd_client.tasks.serialization import encode_result

    done = await e2e.stamp.adelay("twice")
    not_done = await e2e.stamp.adelay("once")
    client = await brokerd_client.connect(broker.url)
    consumer = await client.consume("default", prefetch=2)
    got = [(await asyncio.wait_for(consumer.__anext__(), BOUND)).message_id for _ in range(2)]
    assert got == [done.id, not_done.id]
    await client.result_set(done.id, states.SUCCESS, encode_result(1.5, "json"))
    await client.close()  # no acks: the messages go back to the queue

    start_worker("-c", "1")
    assert isinstance(await not_done.wait(timeout=BOUND), float)
    deadline = time.monotonic() + BOUND
    while (await asyncio.to_thread(queue_counts, broker)) != (0, 0):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert [e["tag"] for e in events(state_dir, "stamp")] == ["once"]
    assert await done.wait(timeout=BOUND) == 1.5


def queue_counts(broker: Any) -> tuple[int, int]:
    with brokerd_client.Client(broker.url) as client:
        info = client.queue_stats("default")
    return info.ready, info.leased


@pytest.mark.parametrize("kind", ["cancelled", "interrupt"])
def test_an_async_task_raising_a_base_exception_fails_and_the_worker_lives_on(
    e2e: ModuleType, start_worker: Start, kind: str
) -> None:
    # CancelledError the task raises itself used to leave its slot taken and
    # its message unacked forever; KeyboardInterrupt stopped the worker.
    worker = start_worker("-c", "1")
    result = e2e.araise.delay(kind)
    with pytest.raises(BaseException) as info:
        result.get(timeout=BOUND)
    assert type(info.value).__name__ == (
        "CancelledError" if kind == "cancelled" else "KeyboardInterrupt"
    )
    assert result.state == states.FAILURE
    assert e2e.add.delay(1, 1).get(timeout=BOUND) == 2
    assert worker.proc.poll() is None
