"""Python SDK for brokerd.

Async::

    client = await brokerd_client.connect("brokerd://token@localhost:5673")
    async with client:
        await client.declare_queue("jobs")
        await client.publish("", "jobs", b"hello")
        async with await client.consume("jobs", prefetch=10) as consumer:
            async for delivery in consumer:
                ...
                await delivery.ack()

Blocking (thread-safe; for web apps and scripts)::

    with brokerd_client.Client("brokerd://localhost:5673") as client:
        client.publish("", "jobs", b"hello")
"""

from __future__ import annotations

from importlib import metadata as _metadata

from . import errors
from .client import AsyncClient, connect
from .consumer import Consumer, Delivery
from .errors import (
    AccessRefused,
    AuthenticationError,
    BrokerError,
    ClientClosed,
    ConnectionLost,
    ConsumerClosed,
    HeartbeatTimeout,
    InternalError,
    InvalidArgument,
    LeaseLost,
    MessageTooLarge,
    NotFound,
    PreconditionFailed,
    ProtocolViolation,
    QueueFull,
    ResourceLimitExceeded,
    ServerShuttingDown,
    StorageFailed,
    TLSError,
    Unroutable,
    UnsupportedVersion,
)
from .message import Message, QueueInfo
from .sync import Client
from .url import BrokerURL, parse_url

try:
    __version__ = _metadata.version("brokerd")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

__all__ = [
    "AccessRefused",
    "AsyncClient",
    "AuthenticationError",
    "BrokerError",
    "BrokerURL",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "Consumer",
    "ConsumerClosed",
    "Delivery",
    "HeartbeatTimeout",
    "InternalError",
    "InvalidArgument",
    "LeaseLost",
    "Message",
    "MessageTooLarge",
    "NotFound",
    "PreconditionFailed",
    "ProtocolViolation",
    "QueueFull",
    "QueueInfo",
    "ResourceLimitExceeded",
    "ServerShuttingDown",
    "StorageFailed",
    "TLSError",
    "Unroutable",
    "UnsupportedVersion",
    "__version__",
    "connect",
    "errors",
    "parse_url",
]
