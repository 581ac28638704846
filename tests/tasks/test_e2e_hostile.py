"""End to end (real brokerd, real worker processes): hostile and faulty input.

A task message the worker cannot use becomes a FAILURE result (or, without a
usable task id, a dead-lettered message with the reason); a result or a
message larger than the broker's frame limit fails its task once with a clear
error; a zlib bomb is refused without being inflated. Through all of it the
worker keeps running and keeps its connection.

Every wait is bounded only to fail instead of hanging; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from taskhelpers import APPS, BOUND, events

import brokerd_client
from brokerd_client.tasks import App, AsyncResult, InvalidTaskMessage, states
from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]
GOOD_BODY = b'{"args":[1],"kwargs":{}}'


@pytest.fixture
def hostile(broker: Any) -> Iterator[App]:
    import hostileapp

    hostileapp.app.conf.update(broker_url=broker.url)
    try:
        yield hostileapp.app
    finally:
        hostileapp.app.close()


@pytest.fixture
def start_hostile_worker(state_dir: Path, tmp_path: Path) -> Iterator[Callable[..., WorkerHandle]]:
    started: list[WorkerHandle] = []

    def start(url: str, *args: str) -> WorkerHandle:
        handle = WorkerHandle(
            "hostileapp",
            url,
            "-l",
            "info",
            "--without-banner",
            *args,
            workdir=tmp_path,
            env={"PYTHONPATH": str(APPS), "E2E_STATE_DIR": str(state_dir)},
        )
        started.append(handle)
        return handle.wait_ready()

    try:
        yield start
    finally:
        for handle in started:
            handle.kill()


def _publish(
    client: brokerd_client.Client, body: bytes, message_id: str | None, **headers: Any
) -> None:
    client.publish("", "guarded", body, message_id=message_id, headers=headers, mandatory=True)


def _failure(app: App, task_id: str) -> BaseException:
    exc = AsyncResult(task_id, app=app).get(timeout=BOUND, propagate=False)
    assert isinstance(exc, BaseException), exc
    return exc


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_malformed_task_messages_fail_their_task_and_the_worker_keeps_running(
    hostile: App, start_hostile_worker: Start, broker: Any, pool: str
) -> None:
    worker = start_hostile_worker(broker.url, "-P", pool, "-c", "2")
    cases: list[tuple[str, bytes, dict[str, Any], str]] = [
        ("nan", GOOD_BODY, {"time_limit": math.nan}, "time_limit"),
        ("inf", GOOD_BODY, {"soft_time_limit": math.inf}, "soft_time_limit"),
        ("negative", GOOD_BODY, {"time_limit": -1.0}, "time_limit"),
        ("huge", GOOD_BODY, {"time_limit": 1e308}, "time_limit"),
        ("binary-name", GOOD_BODY, {"task": b"h.echo"}, "'task'"),
        ("retries", GOOD_BODY, {"retries": "2"}, "retries"),
        ("deep", b"[" * 100_000 + b"]" * 100_000, {}, "nested deeper than"),
    ]
    with brokerd_client.Client(broker.url) as client:
        for task_id, body, headers, _ in cases:
            _publish(client, body, task_id, **{"task": "h.echo", "id": task_id, **headers})
    for task_id, _, _, why in cases:
        exc = _failure(hostile, task_id)
        assert why in str(exc), (task_id, exc)
        if task_id != "deep":
            assert isinstance(exc, InvalidTaskMessage)
    assert worker.proc.poll() is None
    assert hostile.tasks["h.echo"].delay(7).get(timeout=BOUND) == 7
    assert "connection to the broker lost" not in worker.log


def test_a_message_without_a_usable_task_id_is_dead_lettered_with_the_reason(
    hostile: App, start_hostile_worker: Start, broker: Any
) -> None:
    worker = start_hostile_worker(broker.url)
    with brokerd_client.Client(broker.url) as client:
        client.declare_queue("guarded.dlq")  # the worker declares only what it consumes
        _publish(client, GOOD_BODY, None, task="h.echo")
        _publish(client, GOOD_BODY, None, task="h.echo", id=b"\x00binary")
    dead = asyncio.run(_take("guarded.dlq", broker.url, 2))
    for headers in dead:
        assert headers["x-death-reason"] == "rejected"
        assert "task id" in str(headers["x-death-detail"])
    assert worker.proc.poll() is None
    assert hostile.tasks["h.echo"].delay(8).get(timeout=BOUND) == 8


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


def test_a_zlib_bomb_fails_its_task_without_being_inflated(
    hostile: App, start_hostile_worker: Start, broker: Any
) -> None:
    worker = start_hostile_worker(broker.url)
    inner = b'{"args":["' + b"a" * (64 << 20) + b'"],"kwargs":{}}'
    bomb = zlib.compress(inner, 9)
    del inner
    with brokerd_client.Client(broker.url) as client:
        _publish(client, bomb, "bomb", task="h.echo", id="bomb", compression="zlib")
    exc = _failure(hostile, "bomb")
    assert "more than 16777216 bytes" in str(exc)
    assert "task_max_decompressed_size" in str(exc)
    assert worker.proc.poll() is None


def test_the_inflation_cap_is_a_worker_flag(
    hostile: App, start_hostile_worker: Start, broker: Any
) -> None:
    start_hostile_worker(broker.url, "--max-decompressed-size", "4096")
    small = zlib.compress(json.dumps({"args": ["a" * 5000], "kwargs": {}}).encode())
    with brokerd_client.Client(broker.url) as client:
        _publish(client, small, "over", task="h.echo", id="over", compression="zlib")
    assert "more than 4096 bytes" in str(_failure(hostile, "over"))


def test_results_and_messages_larger_than_the_frame_limit_fail_their_task_once(
    broker_factory: Any, start_hostile_worker: Start, state_dir: Path
) -> None:
    import hostileapp

    small = broker_factory("--max-frame", "1048576").start()
    app = hostileapp.app
    app.conf.update(broker_url=small.url)
    try:
        worker = start_hostile_worker(small.url, "-c", "4")
        size = 2 * 1024 * 1024
        big, abig = app.tasks["h.big"].delay(size), app.tasks["h.abig"].delay(size)
        spawn, retry = app.tasks["h.spawn_big"].delay(size), app.tasks["h.retry_big"].delay(size)
        for result in (big, abig):
            exc = _failure(app, result.id)
            assert "result of 2097" in str(exc) and "exceeds the limit of 10" in str(exc), exc
        assert "exceeds" in str(_failure(app, spawn.id))
        assert "exceeds" in str(_failure(app, retry.id))
        with pytest.raises(brokerd_client.MessageTooLarge, match="exceeds the limit"):
            app.tasks["h.echo"].delay("x" * size)  # refused in the caller, nothing sent
        assert app.tasks["h.echo"].delay(9).get(timeout=BOUND) == 9
        for kind in ("big", "abig", "spawn_big", "retry_big"):
            assert len(events(state_dir, kind)) == 1, kind
        assert big.state == states.FAILURE
        assert worker.proc.poll() is None
        assert "connection to the broker lost" not in worker.log
    finally:
        app.close()
        small.kill()


def test_a_task_whose_own_send_is_invalid_fails_once_instead_of_running_again(
    hostile: App, start_hostile_worker: Start, broker: Any, state_dir: Path
) -> None:
    """A task message the worker refuses to publish for the sending task (an
    invalid option) would be refused on every run: the sending task fails,
    once, rather than being given back until its delivery limit."""
    worker = start_hostile_worker(broker.url)
    result = hostile.tasks["h.spawn_invalid"].delay()
    exc = _failure(hostile, result.id)
    assert "countdown" in str(exc) or "delay" in str(exc), exc
    assert hostile.tasks["h.echo"].delay(7).get(timeout=BOUND) == 7
    assert len(events(state_dir, "spawn_invalid")) == 1
    assert worker.proc.poll() is None
