"""End to end: Celery producers, brokerd workers (mixed fleets).

Messages are built by Celery itself (``app.amqp.as_task_v2``, kombu's
serializers and compression) and wrapped in the kombu envelope exactly as
brokerd's kombu transport publishes them (``mixedkit``); the native client
publishes them to a real brokerd, a real ``brokerd-worker`` process runs
them, and the stored results are read with the native ``AsyncResult``
under the Celery task id.

Every wait is bounded only to fail instead of hanging; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from celery import signature
from mixedkit import celery_message

import brokerd_client
from brokerd_client import Message
from brokerd_client.tasks import AsyncResult, InvalidTaskMessage, TaskRevokedError, states
from brokerd_client.tasks.testing import WorkerHandle

HERE = Path(__file__).parent
#: Bound on every wait: fail instead of hanging. Not a timing assertion.
BOUND = 30.0

Start = Callable[..., WorkerHandle]


@pytest.fixture
def mixed(broker: Any) -> Iterator[ModuleType]:
    """The native app (the result reader's side), pointed at this test's broker."""
    sys.path.insert(0, str(HERE))
    import mixedapp

    mixedapp.app.conf.update(broker_url=broker.url)
    try:
        yield mixedapp
    finally:
        mixedapp.app.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def start_worker(broker: Any, state_dir: Path, tmp_path: Path) -> Iterator[Start]:
    """``start_worker("-c", "1")``: a ready ``brokerd-worker -A mixedapp``."""
    started: list[WorkerHandle] = []

    def start(*args: str) -> WorkerHandle:
        handle = WorkerHandle(
            "mixedapp",
            broker.url,
            "-l",
            "info",
            "--without-banner",
            *args,
            workdir=tmp_path,
            env={"PYTHONPATH": str(HERE), "MIXED_STATE_DIR": str(state_dir)},
        )
        started.append(handle)
        return handle.wait_ready()

    try:
        yield start
    finally:
        for handle in started:
            handle.kill()


def send(broker: Any, *messages: Message) -> list[str]:
    """Publish as the kombu transport would; the Celery task ids."""
    with brokerd_client.Client(broker.url) as client:
        for message in messages:
            assert client.publish_message(message)
    return [m.message_id or "" for m in messages]


def result(app: ModuleType, task_id: str) -> Any:
    return AsyncResult(task_id, app=app.app).get(timeout=BOUND, propagate=False)


def events(state_dir: Path, kind: str) -> list[dict[str, Any]]:
    path = state_dir / f"{kind}.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def stamps(state_dir: Path) -> list[str]:
    return [e["tag"] for e in events(state_dir, "stamp")]


@pytest.mark.parametrize("pool", ["asyncio", "processes"])
@pytest.mark.parametrize(
    ("serializer", "compression"),
    [("json", None), ("json", "zlib"), ("msgpack", None), ("msgpack", "zlib")],
)
def test_a_celery_call_runs_on_a_brokerd_worker_and_its_result_is_stored_under_its_id(
    mixed: ModuleType,
    start_worker: Start,
    broker: Any,
    pool: str,
    serializer: str,
    compression: str | None,
) -> None:
    start_worker("-P", pool)
    [task_id] = send(
        broker,
        celery_message("m.add", (2,), {"y": 40}, serializer=serializer, compression=compression),
    )
    assert result(mixed, task_id) == 42
    assert AsyncResult(task_id, app=mixed.app).state == states.SUCCESS


def test_kwargs_with_kombu_typed_values_reach_the_task_as_celery_would_pass_them(
    mixed: ModuleType, start_worker: Start, broker: Any
) -> None:
    start_worker()
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    [task_id] = send(
        broker, celery_message("m.describe", ("a", 1), {"when": when, "n": [1, {"k": None}]})
    )
    assert result(mixed, task_id) == {
        "args": ["a", 1],
        "kwargs": {"when": when.isoformat(), "n": [1, {"k": None}]},
        "types": {"when": "datetime", "n": "list"},
    }


def test_a_failing_task_is_a_failure_with_its_exception_type(
    mixed: ModuleType, start_worker: Start, broker: Any
) -> None:
    start_worker()
    [task_id] = send(broker, celery_message("m.fail", ("boom",)))
    exc = result(mixed, task_id)
    assert isinstance(exc, ValueError)
    assert "boom" in str(exc)
    assert AsyncResult(task_id, app=mixed.app).state == states.FAILURE


def test_a_retried_celery_task_runs_again_under_the_same_id(
    mixed: ModuleType, start_worker: Start, broker: Any, state_dir: Path
) -> None:
    start_worker()
    [task_id] = send(broker, celery_message("m.flaky", (2,)))
    assert result(mixed, task_id) == 2
    assert [e["retries"] for e in events(state_dir, "flaky")] == [0, 1, 2]


def test_a_retry_with_new_arguments_carries_them(
    mixed: ModuleType, start_worker: Start, broker: Any
) -> None:
    start_worker("-P", "processes")
    [task_id] = send(broker, celery_message("m.flaky_args", (0,), compression="zlib"))
    assert result(mixed, task_id) == 2


def test_a_pickle_message_is_refused_clearly_and_the_worker_keeps_running(
    mixed: ModuleType, start_worker: Start, broker: Any
) -> None:
    worker = start_worker()
    with brokerd_client.Client(broker.url) as client:
        client.declare_queue("celery.dlq")
    [task_id] = send(broker, celery_message("m.add", (1, 2), serializer="pickle"))
    exc = result(mixed, task_id)
    assert isinstance(exc, InvalidTaskMessage)
    assert "application/x-python-serialize (pickle) is refused" in str(exc)
    [dead] = asyncio.run(_take("celery.dlq", broker.url, 1))
    assert "(pickle) is refused" in str(dead["x-death-detail"])
    [good] = send(broker, celery_message("m.add", (1, 2)))
    assert result(mixed, good) == 3
    assert worker.proc.poll() is None


def test_a_canvas_message_is_refused_clearly_and_not_run(
    mixed: ModuleType, start_worker: Start, broker: Any, state_dir: Path
) -> None:
    start_worker("-c", "1")
    callback = dict(signature("m.stamp", args=("callback",)))
    chained = celery_message("m.stamp", ("chained",), callbacks=[callback])
    in_chain = celery_message("m.stamp", ("in-chain",), chain=[callback])
    after = celery_message("m.stamp", ("after",))
    ids = send(broker, chained, in_chain, after)
    for task_id in ids[:2]:
        exc = result(mixed, task_id)
        assert isinstance(exc, InvalidTaskMessage)
        assert "Celery canvas (chain/chord callbacks) needs a Celery worker" in str(exc)
    assert result(mixed, ids[2]) == "after"
    assert stamps(state_dir) == ["after"]


def test_an_expired_celery_task_is_revoked_not_run(
    mixed: ModuleType, start_worker: Start, broker: Any, state_dir: Path
) -> None:
    start_worker("-c", "1")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    ids = send(
        broker,
        celery_message("m.stamp", ("expired",), expires=past),
        celery_message("m.stamp", ("fresh",), expires=3600),
    )
    with pytest.raises(TaskRevokedError):
        AsyncResult(ids[0], app=mixed.app).get(timeout=BOUND)
    assert AsyncResult(ids[0], app=mixed.app).state == states.REVOKED
    assert result(mixed, ids[1]) == "fresh"
    assert stamps(state_dir) == ["fresh"]


def test_a_revoked_celery_task_is_not_run(
    mixed: ModuleType, start_worker: Start, broker: Any, state_dir: Path
) -> None:
    start_worker("-c", "1")
    [revoked] = send(broker, celery_message("m.stamp", ("revoked",), countdown=1))
    AsyncResult(revoked, app=mixed.app).revoke()
    assert AsyncResult(revoked, app=mixed.app).state == states.REVOKED
    [kept] = send(broker, celery_message("m.stamp", ("kept",), countdown=1))
    assert result(mixed, kept) == "kept"
    assert stamps(state_dir) == ["kept"]


def test_an_eta_the_broker_did_not_hold_is_not_run_early(
    mixed: ModuleType, start_worker: Start, broker: Any, state_dir: Path
) -> None:
    """A producer (or clock) that let an ETA task through early: the worker
    hands it back to the broker, delayed until its eta, instead of running it."""
    start_worker()
    held = celery_message("m.stamp", ("later",), countdown=3)
    assert isinstance(held.not_before, float)
    eta = held.not_before
    [task_id] = send(broker, dataclasses.replace(held, not_before=None))
    assert result(mixed, task_id) == "later"
    [run] = events(state_dir, "stamp")
    assert run["t"] >= eta


async def _take(queue: str, url: str, count: int) -> list[dict[str, Any]]:
    """The headers of the next ``count`` messages of ``queue`` (acked)."""
    async with await brokerd_client.connect(url) as client:
        consumer = await client.consume(queue, prefetch=count)
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(BOUND):
            async for d in consumer:
                out.append(dict(d.headers))
                await d.ack()
                if len(out) == count:
                    break
        return out
