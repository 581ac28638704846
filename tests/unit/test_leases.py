"""Unit tests for the lease timer wheel."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokerd.leases import RESOLUTION, LeaseWheel

T0 = 1_700_000_000.0


def test_an_empty_wheel_has_nothing_due() -> None:
    w: LeaseWheel[str] = LeaseWheel()
    assert len(w) == 0
    assert w.next_deadline() is None
    assert w.pop_due(T0 + 1e9) == []
    w.discard("unknown")  # a no-op, not an error


def test_add_then_pop_due_at_and_after_the_deadline() -> None:
    w: LeaseWheel[str] = LeaseWheel()
    w.add("a", T0 + 10)
    w.add("b", T0 + 20)
    assert len(w) == 2
    assert w.pop_due(T0 + 9.99) == []
    assert w.pop_due(T0 + 10 + RESOLUTION) == ["a"]
    assert len(w) == 1
    assert w.pop_due(T0 + 10 + RESOLUTION) == []  # popped items are gone
    assert w.pop_due(T0 + 20 + RESOLUTION) == ["b"]
    assert len(w) == 0
    assert w.next_deadline() is None


def test_discard_removes_the_item() -> None:
    w: LeaseWheel[str] = LeaseWheel()
    w.add("a", T0 + 1)
    w.add("b", T0 + 1)
    w.discard("a")
    w.discard("a")
    assert len(w) == 1
    assert w.pop_due(T0 + 2) == ["b"]


def test_readd_moves_the_item() -> None:
    w: LeaseWheel[str] = LeaseWheel()
    w.add("a", T0 + 10)
    w.add("a", T0 + 30)  # extend
    assert len(w) == 1
    assert w.pop_due(T0 + 20) == []
    assert w.pop_due(T0 + 30 + RESOLUTION) == ["a"]
    w.add("b", T0 + 100)
    w.add("b", T0 + 40)  # a shorter deadline moves it earlier too
    assert w.pop_due(T0 + 40 + RESOLUTION) == ["b"]
    assert w.pop_due(T0 + 200) == []


def test_items_due_together_come_out_in_insertion_order() -> None:
    w: LeaseWheel[int] = LeaseWheel()
    for i in range(10):
        w.add(i, T0 + 5 + i * 0.001)  # all in one bucket
    assert w.pop_due(T0 + 6) == list(range(10))


def test_pop_due_returns_buckets_in_deadline_order() -> None:
    w: LeaseWheel[str] = LeaseWheel()
    w.add("late", T0 + 3)
    w.add("early", T0 + 1)
    w.add("mid", T0 + 2)
    assert w.pop_due(T0 + 5) == ["early", "mid", "late"]


def test_next_deadline_skips_emptied_buckets() -> None:
    w: LeaseWheel[str] = LeaseWheel()
    w.add("a", T0 + 1)
    w.add("b", T0 + 5)
    nd = w.next_deadline()
    assert nd is not None and T0 + 1 <= nd <= T0 + 1 + RESOLUTION + 1e-6
    w.discard("a")
    nd = w.next_deadline()
    assert nd is not None and T0 + 5 <= nd <= T0 + 5 + RESOLUTION + 1e-6
    w.discard("b")
    assert w.next_deadline() is None


def test_next_deadline_is_due_at_its_own_time() -> None:
    """A timer armed for next_deadline() must find the item due, or the
    server's tick would spin without progress."""
    w: LeaseWheel[int] = LeaseWheel()
    for i in range(2000):
        deadline = T0 + 30 + i * 0.0137
        w.add(i, deadline)
        nd = w.next_deadline()
        assert nd is not None and nd >= deadline - 1e-6
        assert w.pop_due(nd) == [i]


@pytest.mark.parametrize("resolution", [0.01, 0.05, 1.0])
def test_custom_resolution_bounds_lateness(resolution: float) -> None:
    w: LeaseWheel[str] = LeaseWheel(resolution)
    w.add("a", T0 + 7.3)
    assert w.pop_due(T0 + 7.29) == []
    assert w.pop_due(T0 + 7.3 + resolution + 1e-6) == ["a"]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["add", "discard", "advance"]),
            st.integers(0, 15),
            st.floats(0.0, 5.0, allow_nan=False),
        ),
        max_size=80,
    )
)
def test_never_early_never_lost_at_most_one_step_late(
    ops: list[tuple[str, int, float]],
) -> None:
    w: LeaseWheel[int] = LeaseWheel()
    model: dict[int, float] = {}
    now = T0
    for op, item, amount in ops:
        if op == "add":
            w.add(item, now + amount)
            model[item] = now + amount
        elif op == "discard":
            w.discard(item)
            model.pop(item, None)
        else:
            now += amount
            due = w.pop_due(now)
            assert len(due) == len(set(due))
            for it in due:
                assert model[it] <= now, "popped before its deadline"
                del model[it]
            for deadline in model.values():
                assert deadline > now - RESOLUTION - 1e-6, "more than one step late"
        assert len(w) == len(model)
    rest = w.pop_due(now + 10)
    assert sorted(rest) == sorted(model)
