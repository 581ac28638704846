"""RabbitMQ queue arguments as brokerd options (``brokerd_protocol.queueargs``),
the one mapping the management API and the kombu transport share."""

from __future__ import annotations

from typing import Any

import pytest

from brokerd.options import QueueOptions
from brokerd_protocol.queueargs import QueueArgumentError, queue_options


def test_milliseconds_become_seconds_and_every_result_is_a_valid_option_set() -> None:
    arguments = {
        "x-message-ttl": 1500,
        "x-expires": 0.5,
        "x-max-length": 0,
        "x-overflow": "reject-publish",
        "x-delivery-limit": 0,
        "x-queue-type": "classic",
        "x-max-priority": 255,
        "x-queue-mode": "lazy",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "dlq",
    }
    options = queue_options(arguments)
    assert options == {
        "message_ttl": 1.5,
        "expires": 0.001,  # at least one millisecond
        "max_length": 0,
        "overflow": "reject_publish",
        "max_deliveries": 1,  # no redelivery: one delivery in all
        "max_priority": 255,
        "dead_letter_queue": "dlq",
    }
    QueueOptions.from_wire(options)


def test_rabbitmq_4s_unlimited_delivery_limit_sets_no_limit() -> None:
    assert queue_options({"x-delivery-limit": -1}) == {}


def test_brokerds_own_names_pass_only_when_native_and_never_twice() -> None:
    assert queue_options({"lease": 60, "x-max-length": 3}, native=True) == {
        "lease": 60,
        "max_length": 3,
    }
    with pytest.raises(QueueArgumentError, match="lease"):
        queue_options({"lease": 60})
    with pytest.raises(QueueArgumentError, match="max_length"):
        queue_options({"max_length": 3, "x-max-length": 3}, native=True)


def test_none_values_are_absent_arguments() -> None:
    assert queue_options({"x-message-ttl": None, "message_ttl": None}, native=True) == {}


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"x-queue-type": "stream"}, "stream"),
        ({"x-max-priority": 256}, "x-max-priority"),
        ({"x-max-priority": True}, "x-max-priority"),
        ({"x-queue-mode": "eager"}, "x-queue-mode"),
        ({"x-delivery-limit": -2}, "x-delivery-limit"),
        ({"x-max-length": 1.5}, "x-max-length"),
        ({"x-expires": float("inf")}, "x-expires"),
        ({"x-max-length-bytes": 1}, "message count"),
        ({"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "q"}, "into a queue"),
    ],
)
def test_what_does_not_map_is_refused_naming_it(arguments: dict[str, Any], named: str) -> None:
    with pytest.raises(QueueArgumentError, match=named):
        queue_options(arguments)
