"""Two task-SDK projects on two vhosts of one broker (docs/vhosts.md): the
same task name, the same queue ``celery``, the same schedule name; neither
ever runs, sees or answers the other's tasks, results or schedules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from taskhelpers import APPS

import brokerd_client
from brokerd_client.ctl.main import run
from brokerd_client.tasks.testing import WorkerHandle

BOUND = 30.0


def events(state_dir: Path, kind: str) -> list[dict[str, Any]]:
    path = state_dir / f"{kind}.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def two_vhosts(broker: Any) -> tuple[str, str]:
    for name in ("proj-a", "proj-b"):
        code, _, err = run(["--data-dir", str(broker.data_dir), "add_vhost", name], env={})
        assert code == 0, err
    return broker.url + "/proj-a", broker.url + "/proj-b"


@pytest.fixture
def workers(
    two_vhosts: tuple[str, str], state_dir: Path, tmp_path: Path
) -> Iterator[list[WorkerHandle]]:
    started: list[WorkerHandle] = []
    for project, url in zip(("a", "b"), two_vhosts, strict=True):
        started.append(
            WorkerHandle(
                "vhostapp",
                url,
                "-l",
                "info",
                "--without-banner",
                workdir=tmp_path,
                env={
                    "PYTHONPATH": str(APPS),
                    "E2E_STATE_DIR": str(state_dir),
                    "VH_PROJECT": project,
                    "VH_BEAT": "1",
                },
            )
        )
    try:
        yield [w.wait_ready() for w in started]
    finally:
        for w in started:
            w.kill()


def test_two_projects_on_two_vhosts_never_see_each_other(
    broker: Any, two_vhosts: tuple[str, str], workers: list[WorkerHandle], state_dir: Path
) -> None:
    import vhostapp

    url_a, url_b = two_vhosts
    ids: dict[str, list[str]] = {"a": [], "b": []}
    try:
        for project, url in (("a", url_a), ("b", url_b)):
            vhostapp.app.conf.update(broker_url=url)
            for _ in range(5):
                result = vhostapp.whoami.delay(project)
                assert result.get(timeout=BOUND) == project
                ids[project].append(result.id)
            vhostapp.app.close()
    finally:
        vhostapp.app.close()
    ran = events(state_dir, "ran")
    assert len(ran) == 10
    # Every task ran on the worker of the vhost it was sent to.
    assert all(e["project"] == e["sent_to"] for e in ran)

    # Results and schedules are per vhost too.
    with brokerd_client.Client(url_a) as a, brokerd_client.Client(url_b) as b:
        assert set(a.result_get(ids["a"] + ids["b"])) == set(ids["a"])
        assert set(b.result_get(ids["a"] + ids["b"])) == set(ids["b"])
        deadline = time.monotonic() + BOUND
        while len({e["project"] for e in events(state_dir, "tick")}) < 2:
            assert time.monotonic() < deadline, "both schedules should fire"
            time.sleep(0.05)
        for client in (a, b):
            assert [s["name"] for s in client.schedule_list()] == ["tick"]
            assert client.schedule_list()[0]["routing_key"] == "celery"
    ticks = events(state_dir, "tick")
    # Each vhost's schedule named "tick" fired into its own vhost only.
    assert all(t["project"] == t["scheduled_by"] for t in ticks)
    with brokerd_client.Client(broker.url) as root:
        assert root.schedule_list() == []
        assert root.result_get(ids["a"] + ids["b"]) == {}
