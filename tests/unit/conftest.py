"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from corekit import Env


@pytest.fixture
def env() -> Env:
    """The broker core on a fake clock over a MemoryStore (see corekit)."""
    return Env()
