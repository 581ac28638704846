"""RateAcquire and RateSet on a fake clock: one schedule per task name for
the whole fleet, whatever connection asks."""

from __future__ import annotations

import pytest
from test_task_ext import TaskEnv

import brokerd_protocol as bp
from brokerd.tasks import ratelimits
from brokerd_protocol import ErrorCode


@pytest.fixture
def env() -> TaskEnv:
    return TaskEnv()


def acquire(c: object, name: str, rate: float) -> float:
    wait: float = c.ok(lambda r: bp.RateAcquire(r, name, rate))  # type: ignore[attr-defined]
    return wait


def test_slots_are_spaced_by_the_rate_over_every_connection(env: TaskEnv) -> None:
    one, two = env.client(), env.client()
    waits = [acquire(c, "send", 10.0) for c in (one, two, one, two)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_a_slot_in_the_past_is_not_saved_up(env: TaskEnv) -> None:
    """Capacity one, as kombu's bucket: idling does not buy a burst."""
    c = env.client()
    assert acquire(c, "send", 2.0) == 0.0
    env.advance(10.0)
    assert acquire(c, "send", 2.0) == 0.0
    assert acquire(c, "send", 2.0) == pytest.approx(0.5)


def test_the_wait_counts_down_with_the_clock(env: TaskEnv) -> None:
    c = env.client()
    acquire(c, "send", 1.0)
    acquire(c, "send", 1.0)
    env.clock.advance(0.25)
    assert acquire(c, "send", 1.0) == pytest.approx(1.75)


def test_names_have_separate_schedules_and_no_rate_means_no_wait(env: TaskEnv) -> None:
    c = env.client()
    assert acquire(c, "a", 1.0) == 0.0
    assert acquire(c, "b", 1.0) == 0.0
    assert acquire(c, "c", 0.0) == 0.0
    assert acquire(c, "c", 0.0) == 0.0
    assert acquire(c, "a", 1.0) == pytest.approx(1.0)


def test_the_brokers_own_limit_wins_and_subscribers_hear_of_it(env: TaskEnv) -> None:
    worker, admin = env.client(), env.client()
    assert worker.ok(lambda r: bp.Subscribe(r, ["ratelimit"])) == {"rate_limits": {}}
    admin.ok(lambda r: bp.RateSet(r, "send", 4.0))
    assert worker.frames == [bp.Event("ratelimit", {"name": "send", "rate": 4.0})]
    # A task with no limit of its own is limited now, and so is one with another.
    assert acquire(worker, "send", 0.0) == 0.0
    assert acquire(worker, "send", 100.0) == pytest.approx(0.25)
    late = env.client()
    assert late.ok(lambda r: bp.Subscribe(r, ["revoke", "ratelimit"])) == {
        "revoked": [],
        "rate_limits": {"send": 4.0},
    }
    admin.ok(lambda r: bp.RateSet(r, "send", None))
    assert worker.frames[-1] == bp.Event("ratelimit", {"name": "send", "rate": None})
    env.advance(1.0)
    assert acquire(worker, "send", 0.0) == 0.0
    assert acquire(worker, "send", 0.0) == 0.0


def test_a_faster_limit_takes_effect_for_the_next_slot(env: TaskEnv) -> None:
    c = env.client()
    acquire(c, "slow", 0.1)  # the next slot would be 10 s away
    c.ok(lambda r: bp.RateSet(r, "slow", 100.0))
    assert acquire(c, "slow", 0.1) == pytest.approx(0.01)


def test_past_schedules_are_forgotten_at_the_sweep(env: TaskEnv) -> None:
    c = env.client()
    for i in range(50):
        acquire(c, f"t{i}", 1.0)
    assert len(env.ext.rate_limits.next_free) == 50
    env.advance(6.0)
    assert env.ext.rate_limits.next_free == {}


@pytest.mark.parametrize(
    "frame",
    [
        lambda r: bp.RateAcquire(r, "", 1.0),
        lambda r: bp.RateAcquire(r, "x" * 256, 1.0),
        lambda r: bp.RateAcquire(r, "x", -1.0),
        lambda r: bp.RateAcquire(r, "x", float("nan")),
        lambda r: bp.RateAcquire(r, "x", float("inf")),
        lambda r: bp.RateAcquire(r, "x", 2_000_000.0),
        lambda r: bp.RateSet(r, "x", 0.0),
        lambda r: bp.RateSet(r, "x", -5.0),
        lambda r: bp.RateSet(r, "", 1.0),
    ],
)
def test_bad_arguments_are_refused_and_change_nothing(env: TaskEnv, frame: object) -> None:
    c = env.client()
    assert c.error(frame) == ErrorCode.INVALID_ARGUMENT  # type: ignore[arg-type]
    assert env.ext.rate_limits.limits == {}
    assert env.ext.rate_limits.next_free == {}


def test_the_number_of_live_schedules_is_capped(
    env: TaskEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimits, "MAX_NAMES", 3)
    c = env.client()
    for name in ("a", "b", "c"):
        acquire(c, name, 1.0)
    assert c.error(lambda r: bp.RateAcquire(r, "d", 1.0)) == ErrorCode.INVALID_ARGUMENT
    assert acquire(c, "a", 1.0) == pytest.approx(1.0)  # known names still served
