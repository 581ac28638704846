"""Fixtures of the hooks/signals tests: ``apps/hooksapp.py`` in real workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from types import ModuleType
from typing import Any

import pytest

from brokerd_client.tasks.testing import WorkerHandle


@pytest.fixture
def hooks(broker: Any) -> Iterator[ModuleType]:
    """The hooks app, pointed at this test's broker (the producer side)."""
    import hooksapp

    hooksapp.app.conf.update(broker_url=broker.url, task_always_eager=False)
    try:
        yield hooksapp
    finally:
        hooksapp.app.close()


@pytest.fixture
def start_hooks_worker(
    start_app_worker: Callable[..., WorkerHandle],
) -> Callable[..., WorkerHandle]:
    """``start_hooks_worker("-c", "2", env={...})``: a ready worker running hooksapp."""
    return partial(start_app_worker, "hooksapp", "-Q", "hooks")
