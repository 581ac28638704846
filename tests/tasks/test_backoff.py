"""Retry delays: exponential, capped, jittered within [delay/2, delay]."""

from __future__ import annotations

import random

import pytest

from brokerd_client.tasks import App
from brokerd_client.tasks.backoff import backoff_delay


def test_without_jitter_it_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 1.0, 10.0, jitter=False) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(10_000, 0.5, 600.0, jitter=False) == 600.0  # no overflow


def test_jitter_is_reproducible_with_a_seed_and_keeps_half() -> None:
    rng = random.Random(42)
    delays = [backoff_delay(n, 1.0, 600.0, jitter=True, rng=rng) for n in range(8)]
    again = random.Random(42)
    assert delays == [backoff_delay(n, 1.0, 600.0, jitter=True, rng=again) for n in range(8)]
    for n, d in enumerate(delays):
        nominal = min(600.0, 2.0**n)
        assert nominal / 2 <= d <= nominal
    assert delays == pytest.approx(
        [0.8197, 1.025, 2.5501, 4.8928, 13.8918, 26.8272, 60.5497, 69.5641], abs=1e-4
    )


def test_task_retry_countdown_uses_backoff_or_the_default_delay() -> None:
    app = App("t")

    @app.task(retry_backoff=2, retry_backoff_max=5, retry_jitter=False)
    def f() -> None: ...

    @app.task(default_retry_delay=7)
    def g() -> None: ...

    @app.task
    def h() -> None: ...

    assert [f.retry_countdown(n) for n in range(4)] == [2, 4, 5, 5]
    assert g.retry_countdown(3) == 7
    assert h.retry_countdown(0) == 180.0  # task_default_retry_delay, as in Celery
