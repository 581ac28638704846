"""The kombu transport's lease keeper, against a fake connection: what it
renews, and that tracking a delivery rarely needs to wake it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celerykit import wait_for

from brokerd_client.celery.keeper import LeaseKeeper
from brokerd_client.celery.wire import EXTEND


class FakeWire:
    """Records the keeper's Extends; ``during_write`` runs while it writes."""

    heartbeat = 0.0
    last_write = 0.0

    def __init__(self) -> None:
        self.extended: list[tuple[list[int], float]] = []
        self.lock = threading.Lock()
        self.during_write: Callable[[], None] | None = None

    def settle(self, kind: int, ids: list[int], *, number: float | None = None) -> list[int]:
        assert kind == EXTEND and number is not None
        with self.lock:
            self.extended.append((list(ids), number))
        return []

    def heartbeat_if_idle(self) -> None:
        hook, self.during_write = self.during_write, None
        if hook is not None:
            hook()

    def ids_extended(self) -> set[int]:
        with self.lock:
            return {i for ids, _ in self.extended for i in ids}


@pytest.fixture
def wire() -> FakeWire:
    return FakeWire()


@pytest.fixture
def keeper(wire: FakeWire) -> Iterator[LeaseKeeper]:
    k = LeaseKeeper(wire)  # type: ignore[arg-type]
    yield k
    k.stop()


def _count_wakeups(keeper: LeaseKeeper) -> list[int]:
    count = [0]
    cond: Any = keeper._cond
    notify = cond.notify

    def counting(n: int = 1) -> None:
        count[0] += 1
        notify(n)

    cond.notify = counting
    return count


def test_only_a_new_lease_length_wakes_the_keeper(keeper: LeaseKeeper) -> None:
    wakeups = _count_wakeups(keeper)
    keeper.track(1, 30.0)
    assert wakeups == [1]
    keeper.untrack([1])
    keeper.track(2, 30.0)  # one task at a time: the group was emptied, not dropped
    keeper.track(3, 30.0)
    assert wakeups == [1]
    keeper.track(4, 60.0)
    assert wakeups == [2]


def test_a_delivery_tracked_into_an_emptied_group_is_renewed(
    keeper: LeaseKeeper, wire: FakeWire
) -> None:
    keeper.start()
    keeper.track(1, 0.3)
    keeper.untrack([1])
    keeper.track(2, 0.3)
    wait_for(lambda: 2 in wire.ids_extended(), "delivery 2 to be extended")
    assert 1 not in wire.ids_extended()
    assert len(keeper) == 1


def test_a_lease_tracked_while_the_keeper_writes_is_in_its_plan(
    keeper: LeaseKeeper, wire: FakeWire
) -> None:
    # Nothing tracked and no heartbeat: the keeper would sleep until woken.
    # A delivery tracked just as it finishes a turn must still be renewed.
    wire.during_write = lambda: keeper.track(7, 0.3)
    keeper.start()
    wait_for(lambda: 7 in wire.ids_extended(), "delivery 7 to be extended")
