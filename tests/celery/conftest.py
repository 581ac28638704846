"""Fixtures for the Celery compatibility tests.

Celery builds kombu ``Connection`` objects for the broker URL even where
nothing connects (its event dispatcher, made when a task message is built),
and kombu resolves the transport class to do so. Until the brokerd kombu
transport (``brokerd_client.celery.transport``) is in this tree, the
``brokerd`` alias points at kombu's in-memory transport for these tests, so
such objects can be built; the result backend never uses them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from kombu import transport as kombu_transports

from brokerd_client.celery import TRANSPORT


@pytest.fixture(autouse=True)
def _kombu_can_resolve_brokerd_urls() -> Iterator[None]:
    module = TRANSPORT.split(":", 1)[0]
    if importlib.util.find_spec(module) is not None:
        yield
        return
    aliases = kombu_transports.TRANSPORT_ALIASES
    before = aliases.get("brokerd")
    aliases["brokerd"] = "kombu.transport.memory:Transport"
    kombu_transports._transport_cache.pop("brokerd", None)
    try:
        yield
    finally:
        kombu_transports._transport_cache.pop("brokerd", None)
        if before is not None:
            aliases["brokerd"] = before
