"""The tutorial project when workers die or hand tasks back: results still
arrive, chord bodies still run exactly once.

Workers are real ``celery -A tutorial worker -P prefork -c 2`` processes; a
"kill" is SIGKILL to the worker's whole process group (the worker and its
pool), so its connection closes and brokerd returns its unsettled deliveries
at once. Header and body runs are counted in the runs file, across processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from celery import chord, states
from celerykit import wait_for
from tutorial.orders import tasks as orders
from tutorialkit import Fleet, idle

BOUND = 60.0
#: The lease of a queue declared without one (SPEC §9.2), as the project's are.
DEFAULT_LEASE = 30.0


def test_a_killed_workers_task_is_completed_by_another_and_its_result_arrives(
    tutorial: Any, fleet: Fleet
) -> None:
    workers = [fleet.worker(name="a"), fleet.worker(name="b")]
    r = orders.slow.delay("k1", 3)
    (started,) = wait_for(lambda: fleet.runs.of("start", "k1"), "the task to start")
    # The pid is a pool process's: its process group is its worker's.
    (running,) = [w for w in workers if w.pid == os.getpgid(int(started[2]))]
    running.kill()
    # Sooner than the queue's lease (brokerd's default, 30 s) could lapse:
    # only the closed connection can have handed the task back in time.
    assert r.get(timeout=DEFAULT_LEASE / 2) == "k1"
    assert r.state == states.SUCCESS
    assert len(fleet.runs.of("start", "k1")) == 2
    assert len(fleet.runs.of("done", "k1")) == 1


def test_a_chord_body_runs_once_when_a_worker_is_killed_mid_header(
    tutorial: Any, fleet: Fleet
) -> None:
    doomed = fleet.worker(name="doomed")
    fleet.worker(name="survivor")
    r = chord(orders.part.s(i, "kc", 0.2) for i in range(100))(orders.total.s("kc"))
    wait_for(lambda: len(fleet.runs.of("part", "kc")) >= 30, "a third of the header")
    doomed.kill()
    assert r.get(timeout=BOUND) == sum(range(100))
    wait_for(lambda: idle(tutorial), "the queues to drain")
    parts = [int(line[2]) for line in fleet.runs.of("part", "kc")]
    assert sorted(set(parts)) == list(range(100))
    # The killed worker's running header tasks ran again on the survivor.
    assert len(parts) > 100
    assert len(fleet.runs.of("body", "kc")) == 1


def test_a_chord_body_runs_once_when_header_tasks_are_requeued_by_reject(
    tutorial: Any, fleet: Fleet, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    fleet.worker()
    header = (orders.part_rejected_once.s(i, "rj", str(marks)) for i in range(100))
    r = chord(header)(orders.total.s("rj"))
    assert r.get(timeout=BOUND) == sum(range(100))
    wait_for(lambda: idle(tutorial), "the queues to drain")
    assert len(fleet.runs.of("rejected", "rj")) == 100
    assert sorted(int(line[2]) for line in fleet.runs.of("part", "rj")) == list(range(100))
    assert len(fleet.runs.of("body", "rj")) == 1


@pytest.mark.parametrize("crash_at", ["before_fire", "after_fire"])
def test_a_chord_body_runs_once_when_its_completer_dies_around_publishing_it(
    tutorial: Any, fleet: Fleet, tmp_path: Path, crash_at: str
) -> None:
    """The worst windows: the last header task learnt it completes the chord
    and dies before the body is published, or right after (before its ack).
    Its redelivery on the other worker publishes the body, or finds it fired."""
    mark = tmp_path / "crashed"
    env = {"CRASH_AT": crash_at, "CRASH_MARK": str(mark)}
    first = fleet.worker("-I", "crashplug", name="a", env=env)
    second = fleet.worker("-I", "crashplug", name="b", env=env)
    r = chord(orders.part.s(i, "cc") for i in range(20))(orders.total.s("cc"))
    assert r.get(timeout=BOUND) == sum(range(20))
    wait_for(lambda: idle(tutorial), "the queues to drain")
    assert mark.exists()
    assert (first.proc.poll() is None) != (second.proc.poll() is None)  # one died
    parts = [int(line[2]) for line in fleet.runs.of("part", "cc")]
    assert sorted(set(parts)) == list(range(20))
    assert len(parts) > 20  # the completer ran again on the other worker
    # Fired once: one GroupFire published the body. The body can reach the
    # dying worker before GroupFire's answer does (deliveries need no fsync)
    # and even start there; acks_late then runs it on the other worker as a
    # redelivery of the same message, not as a second one.
    assert len(fleet.runs.of("fired", "chord")) == 1
    bodies = [line[3] for line in fleet.runs.of("body", "cc")]
    assert bodies and bodies.count("first") <= 1, bodies
    assert set(bodies) <= {"first", "redelivered"}, bodies
    if len(bodies) > 1:
        assert crash_at == "after_fire" and bodies.count("redelivered") == len(bodies) - 1
