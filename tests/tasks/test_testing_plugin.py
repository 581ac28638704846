"""The pytest plugin users enable with ``pytest_plugins``: a real broker and
real workers for their own app, from fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from brokerd_client.tasks import App

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here first
    # would stop pytest from rewriting its asserts
    from brokerd_client.tasks.testing import BrokerProcess, InProcessBroker, WorkerHandle

pytest_plugins = ["brokerd_client.tasks.testing"]

APPS = str(Path(__file__).parent / "apps")


def test_fixtures_run_a_users_app(
    brokerd_broker: BrokerProcess, brokerd_worker: Callable[..., WorkerHandle]
) -> None:
    brokerd_worker("e2eapp", "-c", "2", env={"PYTHONPATH": APPS})
    app = App("client-side", broker=brokerd_broker.url, task_default_queue="default")
    try:
        assert app.send_task("e2e.add", (20, 22)).get(timeout=30) == 42
    finally:
        app.close()


def test_worker_refuses_to_start_on_a_bad_setting(
    brokerd_broker: BrokerProcess, tmp_path: Path
) -> None:
    (tmp_path / "badapp.py").write_text(
        "from brokerd_client.tasks import App\n"
        "app = App('bad')\n"
        "app.conf.update({'task_acks_late': True})\n"
        "app.config_from_object({'worker_prefetch_multiplier': 4})\n"
    )
    from brokerd_client.tasks.testing import WorkerHandle

    handle = WorkerHandle(
        "badapp", brokerd_broker.url, workdir=tmp_path, env={"PYTHONPATH": str(tmp_path)}
    )
    with pytest.raises(RuntimeError, match="worker exited with 2"):
        handle.wait_ready()
    assert "worker_prefetch_multiplier" in handle.log


def test_unknown_queue_or_option_is_a_start_error(
    brokerd_broker: BrokerProcess, tmp_path: Path
) -> None:
    from brokerd_client.tasks.testing import WorkerHandle

    handle = WorkerHandle(
        "e2eapp", brokerd_broker.url, "-c", "0", workdir=tmp_path, env={"PYTHONPATH": APPS}
    )
    with pytest.raises(RuntimeError, match="worker exited with 2"):
        handle.wait_ready()
    assert "--concurrency must be at least 1" in handle.log


def test_in_process_broker_serves_a_worker(
    brokerd_inprocess_broker: InProcessBroker, tmp_path: Path
) -> None:
    from brokerd_client.tasks.testing import WorkerHandle

    worker = WorkerHandle(
        "e2eapp", brokerd_inprocess_broker.url, workdir=tmp_path, env={"PYTHONPATH": APPS}
    )
    app = App("client-side", broker=brokerd_inprocess_broker.url, task_default_queue="default")
    try:
        worker.wait_ready()
        assert app.send_task("e2e.add", (1, 2)).get(timeout=30) == 3
    finally:
        app.close()
        worker.stop()


def test_the_broker_process_answers_to_its_old_name_too() -> None:
    from brokerd_client.tasks import testing

    assert testing.BrokerServer is testing.BrokerProcess
