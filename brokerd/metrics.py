"""Prometheus metrics endpoint (filled in by the metrics work)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import BrokerServer


async def start_metrics(server: BrokerServer) -> Any:
    return None
