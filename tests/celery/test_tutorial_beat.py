"""``celery -A tutorial beat`` on brokerd: scheduled entries reach a real worker with their args.

The project's ``beat_schedule`` sends ``orders.heartbeat("beat-1s", 7)``
every second and ``web.ping("beat-2s", page="home")`` every two seconds (to
the ``web`` queue by ``task_routes``); beat keeps its state in a temporary
schedule file (``-s``).
"""

from __future__ import annotations

from pathlib import Path

from celerykit import wait_for
from tutorialkit import Fleet


def test_beat_entries_run_on_the_worker_with_their_args(fleet: Fleet, tmp_path: Path) -> None:
    fleet.worker()
    fleet.beat(tmp_path / "beat-schedule")
    wait_for(lambda: len(fleet.runs.of("beat", "beat-1s")) >= 3, "three heartbeats")
    wait_for(lambda: len(fleet.runs.of("ping", "beat-2s")) >= 2, "two web pings")
    assert {line[2] for line in fleet.runs.of("beat", "beat-1s")} == {"7"}
    assert {line[2] for line in fleet.runs.of("ping", "beat-2s")} == {"home"}
    assert (tmp_path / "beat-schedule").exists() or list(tmp_path.glob("beat-schedule*"))
