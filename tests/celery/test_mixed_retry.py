"""Mixed fleets: a Celery producer's task fails on a brokerd worker, is
retried over the management API, and Celery's ``AsyncResult`` (brokerd's
result backend) reads the new run's success; the Celery message is sent
again as it was (its kombu envelope included)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult as CeleryResult
from httpkit import call, management_broker
from mixedkit import celery_message
from test_mixed_e2e import BOUND, Start, events, mixed, send, start_worker, state_dir

from brokerd_client.celery.backend import BrokerdBackend
from brokerd_client.tasks.testing import BrokerProcess

__all__ = ["mixed", "start_worker", "state_dir"]  # fixtures, imported to be used here


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """This module's broker serves the management API on a free port."""
    with management_broker(tmp_path) as proc:
        yield proc


@pytest.fixture
def celery_app(broker: BrokerProcess) -> Iterator[Celery]:
    app = Celery("caller", broker=broker.url, backend=broker.url)
    app.conf.result_serializer = "json"
    yield app
    backend = app.backend
    assert isinstance(backend, BrokerdBackend)
    backend.close()


def retry(broker: BrokerProcess, task_id: str) -> Any:
    status, body = call(broker, "POST", f"/api/tasks/%2F/{task_id}/retry")
    assert status == 200, body
    return body


def test_a_celery_task_failed_on_a_brokerd_worker_is_retried_and_celery_reads_the_success(
    mixed: ModuleType,
    start_worker: Start,
    broker: BrokerProcess,
    celery_app: Celery,
    state_dir: Path,
) -> None:
    start_worker()
    [task_id] = send(broker, celery_message("m.fails_once", ("c",)))
    failed = CeleryResult(task_id, app=celery_app)
    with pytest.raises(RuntimeError, match="first run of c"):
        failed.get(timeout=BOUND)
    assert retry(broker, task_id)["retried"] == task_id
    again = CeleryResult(task_id, app=celery_app)
    assert again.get(timeout=BOUND) == "second run of c"
    assert [e["tag"] for e in events(state_dir, "fails_once")] == ["c", "c"]
