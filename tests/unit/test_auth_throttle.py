"""The per-address throttle of failed authentications, on a fake clock.

What it must guarantee: a few honest typos cost nothing; after that each
further attempt from the same address waits exponentially longer, up to a
cap; a quiet period forgives; one address never slows another; and the
table stays bounded whatever number of addresses an attacker sprays.
"""

from __future__ import annotations

import pytest

from brokerd.clock import FakeClock
from brokerd.throttle import AuthThrottle, address_key

A = "192.0.2.1"
B = "192.0.2.2"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


def throttle(clock: FakeClock, **kwargs: float) -> AuthThrottle:
    params: dict[str, float] = {"free": 3, "base": 0.5, "cap": 5.0, "quiet": 60.0}
    params.update(kwargs)
    return AuthThrottle(
        clock.now,
        free=int(params["free"]),
        base=params["base"],
        cap=params["cap"],
        quiet=params["quiet"],
    )


def test_the_first_failures_cost_nothing(clock: FakeClock) -> None:
    t = throttle(clock)
    assert t.wait(A) == 0.0
    assert t.failed(A) == 0.0
    assert t.failed(A) == 0.0
    assert t.wait(A) == 0.0
    assert t.failures_total == 2


def test_after_the_free_failures_each_attempt_waits_twice_as_long_up_to_the_cap(
    clock: FakeClock,
) -> None:
    t = throttle(clock)
    delays = []
    for _ in range(9):
        delays.append(t.failed(A))
        assert t.wait(A) == delays[-1]
        clock.advance(delays[-1])  # the next attempt comes exactly when allowed
        assert t.wait(A) == 0.0
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_the_wait_shrinks_as_time_passes(clock: FakeClock) -> None:
    t = throttle(clock)
    for _ in range(4):
        t.failed(A)
    assert t.wait(A) == 1.0
    clock.advance(0.25)
    assert t.wait(A) == 0.75


def test_a_quiet_period_forgives_an_address(clock: FakeClock) -> None:
    t = throttle(clock)
    for _ in range(6):
        t.failed(A)
    clock.advance(59.0)
    assert t.failed(A) == 5.0  # still remembered: not quiet long enough
    clock.advance(60.0)
    assert t.wait(A) == 0.0
    assert t.failed(A) == 0.0  # counting starts afresh
    assert len(t) == 1


def test_one_address_never_slows_another(clock: FakeClock) -> None:
    t = throttle(clock)
    for _ in range(8):
        t.failed(A)
    assert t.wait(A) > 0
    assert t.wait(B) == 0.0
    assert t.failed(B) == 0.0


def test_a_success_forgives_only_its_own_address(clock: FakeClock) -> None:
    t = throttle(clock)
    for _ in range(5):
        t.failed(A)
        t.failed(B)
    t.succeeded(B)
    assert t.wait(B) == 0.0
    assert t.wait(A) > 0


def test_the_table_stays_bounded_and_sprayed_addresses_get_no_free_attempts(
    clock: FakeClock,
) -> None:
    t = AuthThrottle(clock.now, free=3, base=0.5, cap=5.0, quiet=60.0, max_entries=100)
    for i in range(100):
        t.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(t) == 100
    # The table is full: a new address takes the oldest one's place, and starts
    # at the first throttled step instead of with free attempts.
    assert t.failed("203.0.113.9") == 0.5
    assert len(t) == 100
    for i in range(10_000):
        t.failed(f"198.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(t) == 100


def test_forgotten_entries_are_pruned_so_honest_addresses_keep_free_attempts(
    clock: FakeClock,
) -> None:
    t = AuthThrottle(clock.now, free=3, base=0.5, cap=5.0, quiet=60.0, max_entries=100)
    for i in range(100):
        t.failed(f"10.0.0.{i}")
    clock.advance(61.0)
    assert t.failed(A) == 0.0
    assert len(t) == 1


def test_deferrals_are_counted(clock: FakeClock) -> None:
    t = throttle(clock)
    t.deferred()
    t.deferred()
    assert t.deferred_total == 2


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_ipv6_addresses_are_throttled_per_64_prefix(host: str, key: str) -> None:
    """One IPv6 host usually owns a whole /64: per-address keys would let it
    spray 2**64 addresses."""
    assert address_key(host) == key
