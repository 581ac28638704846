"""Adapters for the measured systems. Each is imported lazily: a missing client library
makes only that system unreachable."""

from __future__ import annotations

import os

from .base import Adapter, Target, Unreachable

SYSTEMS = ("brokerd", "rabbitmq", "redis")
DISPLAY = {"brokerd": "brokerd", "rabbitmq": "RabbitMQ", "redis": "Redis"}

DEFAULT_URLS = {
    "rabbitmq": os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    "redis": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
}


def make_adapter(target: Target) -> Adapter:
    """Build the adapter for ``target``; raises :class:`Unreachable` if its client library
    cannot be imported."""
    try:
        if target.system == "brokerd":
            from .brokerd import BrokerdAdapter

            return BrokerdAdapter(target)
        if target.system == "rabbitmq":
            from .rabbitmq import RabbitMQAdapter

            return RabbitMQAdapter(target)
        if target.system == "redis":
            from .redis import RedisAdapter

            return RedisAdapter(target)
    except ImportError as exc:
        raise Unreachable(f"client library not importable: {exc}") from exc
    raise ValueError(f"unknown system {target.system!r}")


__all__ = ["DEFAULT_URLS", "DISPLAY", "SYSTEMS", "Adapter", "Target", "Unreachable", "make_adapter"]
