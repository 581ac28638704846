"""A mixed fleet with the real kombu transport: Celery and brokerd workers on one broker.

* The tutorial project (a Celery producer, msgpack + zlib) calls ``m.add``
  with ``delay()``-style sends through ``brokerd://``; a ``brokerd-worker -A
  mixedapp`` (the native SDK registering the same task name) runs it; the
  project reads the result with Celery's ``AsyncResult`` through the brokerd
  result backend.
* The reverse: a Celery worker's result read by the native SDK's
  ``brokerd_client.tasks.AsyncResult``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from celery import shared_task, states
from celery.result import AsyncResult
from kombu import Exchange, Queue
from tutorial.orders import tasks as orders
from tutorialkit import Fleet, project_app

from brokerd_client.tasks import AsyncResult as NativeResult
from brokerd_client.tasks import states as native_states
from brokerd_client.tasks.testing import WorkerHandle

HERE = Path(__file__).parent
BOUND = 30.0

#: The queue the brokerd worker consumes, declared the way that worker
#: declares it (``mixedapp``: a dead-letter queue), in kombu's words.
CELERY_QUEUE = Queue(
    "celery",
    Exchange("celery"),
    "celery",
    queue_arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "celery.dlq"},
)


@shared_task(name="m.add")
def mixed_add(x: int, y: int) -> int:
    """The Celery side's definition of a task the brokerd worker now runs."""
    raise AssertionError("runs on the brokerd worker, never here")


@pytest.fixture
def tutorial(fleet: Fleet) -> Iterator[Any]:
    app = project_app(fleet.url)
    # The producer routes the moved task to the brokerd worker's queue.
    app.conf.task_queues = (*app.conf.task_queues, CELERY_QUEUE)
    app.conf.task_routes = {**app.conf.task_routes, "m.*": {"queue": "celery"}}
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def native(fleet: Fleet) -> Iterator[ModuleType]:
    """The native app of the mixed fleet, pointed at this fleet's broker."""
    import mixedapp

    mixedapp.app.conf.update(broker_url=fleet.url)
    try:
        yield mixedapp
    finally:
        mixedapp.app.close()


@pytest.fixture
def brokerd_worker(fleet: Fleet, tmp_path: Path) -> Iterator[WorkerHandle]:
    state = tmp_path / "state"
    state.mkdir()
    handle = WorkerHandle(
        "mixedapp",
        fleet.url,
        "-l",
        "info",
        "--without-banner",
        workdir=tmp_path,
        env={"PYTHONPATH": str(HERE), "MIXED_STATE_DIR": str(state)},
    )
    try:
        yield handle.wait_ready()
    finally:
        handle.kill()


def test_a_celery_producers_call_runs_on_a_brokerd_worker_and_celery_reads_the_result(
    tutorial: Any, brokerd_worker: WorkerHandle
) -> None:
    sent = mixed_add.delay(2, y=40)
    assert sent.get(timeout=BOUND) == 42
    assert AsyncResult(sent.id, app=tutorial).state == states.SUCCESS
    failed = tutorial.send_task("m.fail", args=("boom",))  # by name, routed the same way
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=BOUND)
    assert failed.state == states.FAILURE


def test_a_celery_workers_result_is_read_by_the_native_async_result(
    tutorial: Any, fleet: Fleet, native: ModuleType
) -> None:
    fleet.worker()
    sent = orders.add.delay(20, 22)
    result = NativeResult(sent.id, app=native.app)
    assert result.get(timeout=BOUND) == 42
    assert result.state == native_states.SUCCESS
    failed = orders.charge.delay("1111")
    with pytest.raises(orders.PaymentDeclined, match="card 1111 declined"):
        NativeResult(failed.id, app=native.app).get(timeout=BOUND)
