"""The broker's own connection, for messages the task layer publishes itself.

Schedule runs and fired groups are published by the server, not by a client:
they go through ``Broker.publish`` exactly as a client's ``Publish`` does
(same validation, routing, queue limits and durability), on a connection
whose peer reads nothing. ``Broker.publish`` raises ``BrokerError`` when
nothing of the message was stored, before it records anything, and never
flushes: whatever the caller records in ``broker.batch`` right before or
after it lands in the same transaction as the message.
"""

from __future__ import annotations

import logging
from typing import Any

from brokerd_protocol import ErrorCode

from ..broker import Broker
from ..errors import invalid
from ..options import check_name
from ..queues import Connection, Consumer, Delivery
from ..vhosts import prefix_of

log = logging.getLogger("brokerd.tasks.publisher")

#: Longest routing key a message published by the server may carry (it is
#: stored with schedules; the same bound for every server publish).
MAX_ROUTING_KEY = 255


class _BrokerPeer:
    """The peer of the broker's own connection: nobody reads what it is sent."""

    def __init__(self) -> None:
        self.writable = True

    def send_delivery(self, consumer: Consumer, delivery: Delivery) -> None:
        pass

    def send_confirms(self, routed: list[int], unroutable: list[int]) -> None:
        pass

    def send_publish_error(self, seq: int, code: ErrorCode, message: str) -> None:
        log.error("a message published by the broker was not stored: %s (%s)", message, code.name)

    def send_consumer_cancelled(self, consumer_id: int, reason: str) -> None:
        pass


def check_target(exchange: str, routing_key: str) -> None:
    """INVALID_ARGUMENT unless ``exchange`` and ``routing_key`` may be published to."""
    check_name("exchange", exchange, allow_empty=True)
    # A vhost's queue name as a default-exchange key: its client part counts.
    if len(routing_key) - len(prefix_of(routing_key)) > MAX_ROUTING_KEY:
        raise invalid(f"routing key longer than {MAX_ROUTING_KEY} characters")


class ServerPublisher:
    """Publishes on the broker's own connection (one per task-layer part)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.conn: Connection = broker.open(_BrokerPeer())
        self._seq = 0

    def publish(self, exchange: str, routing_key: str, body: bytes, props: dict[str, Any]) -> None:
        """``Broker.publish`` on this connection; raises ``BrokerError`` if refused."""
        self._seq += 1
        self.broker.publish(self.conn, self._seq, exchange, routing_key, body, props)
