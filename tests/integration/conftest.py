"""The ``client`` fixture: an async client connected to the test's broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from clientkit import connect

from brokerd_client import AsyncClient


@pytest.fixture
async def client(broker: Any) -> AsyncIterator[AsyncClient]:
    c = await connect(broker)
    try:
        yield c
    finally:
        await c.close()
