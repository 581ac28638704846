"""Unit tests for validation of queue options and publish properties."""

from __future__ import annotations

import math
from typing import Any

import pytest

from brokerd.errors import BrokerError
from brokerd.options import MAX_LEASE, PublishProps, QueueOptions, check_name, parse_props
from brokerd_protocol import MAX_PRIORITY, ErrorCode

NOW = 1_700_000_000.0


# --- queue options -------------------------------------------------------------


def test_missing_queue_options_take_their_defaults() -> None:
    o = QueueOptions.from_wire({})
    assert o == QueueOptions()
    assert o.lease == 30.0
    assert o.overflow == "reject_publish"
    assert o.max_deliveries is None and o.dead_letter_queue is None
    assert o.max_length is None and o.message_ttl is None


def test_queue_options_round_trip() -> None:
    raw = {
        "lease": 12.5,
        "max_deliveries": 4,
        "dead_letter_queue": "dlq",
        "max_length": 0,
        "overflow": "drop_head",
        "message_ttl": 60,
        "auto_delete": True,
        "expires": 30,
    }
    o = QueueOptions.from_wire(raw)
    assert o.lease == 12.5 and isinstance(o.lease, float)
    assert o.message_ttl == 60.0 and isinstance(o.message_ttl, float)
    assert o.auto_delete is True
    assert o.expires == 30.0 and isinstance(o.expires, float)
    assert QueueOptions.from_wire(o.to_wire()) == o


def test_max_priority_is_kept_as_given_and_written_only_when_set() -> None:
    """RabbitMQ's ``x-max-priority`` (1-255), kept as declared so a redeclare
    with another value is refused and an export carries it; a queue without
    it writes no key, so an older brokerd still reads the stored options."""
    assert QueueOptions.from_wire({"max_priority": 10}).max_priority == 10
    assert QueueOptions.from_wire({"max_priority": 10}).to_wire()["max_priority"] == 10
    assert "max_priority" not in QueueOptions().to_wire()
    assert QueueOptions.from_wire({"max_priority": None}) == QueueOptions()
    for bad in (0, 256, True, "5", 2.5):
        with pytest.raises(BrokerError, match="max_priority must be an integer from 1 to 255"):
            QueueOptions.from_wire({"max_priority": bad})


def test_int_and_float_lease_are_the_same_options() -> None:
    assert QueueOptions.from_wire({"lease": 30}) == QueueOptions.from_wire({"lease": 30.0})


def test_none_means_unset() -> None:
    o = QueueOptions.from_wire(
        {"max_deliveries": None, "message_ttl": None, "max_length": None, "expires": None}
    )
    assert o == QueueOptions()
    assert o.auto_delete is False and o.expires is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"lease": 0}, "lease must be between 0.001 and 86400"),
        ({"lease": MAX_LEASE + 1}, "lease must be between"),
        ({"lease": -1}, "lease must be between"),
        ({"lease": math.nan}, "lease must be between"),
        ({"lease": math.inf}, "lease must be between"),
        ({"lease": "30"}, "lease must be a number"),
        ({"lease": True}, "lease must be a number"),
        ({"lease": None}, "lease must be a number"),
        ({"max_deliveries": 0}, "max_deliveries must be an integer >= 1"),
        ({"max_deliveries": 2.5}, "max_deliveries must be an integer >= 1"),
        ({"max_deliveries": True}, "max_deliveries must be an integer >= 1"),
        ({"max_deliveries": "3"}, "max_deliveries must be an integer >= 1"),
        ({"max_length": -1}, "max_length must be an integer >= 0"),
        ({"max_length": False}, "max_length must be an integer >= 0"),
        ({"dead_letter_queue": ""}, "dead_letter_queue must be a queue name"),
        ({"dead_letter_queue": 5}, "dead_letter_queue must be a queue name"),
        ({"overflow": "drop_tail"}, "overflow must be one of reject_publish, drop_head"),
        ({"overflow": None}, "overflow must be one of"),
        ({"message_ttl": 0}, "message_ttl must be between"),
        ({"message_ttl": "1"}, "message_ttl must be a number"),
        ({"auto_delete": 1}, "auto_delete must be a boolean"),
        ({"auto_delete": None}, "auto_delete must be a boolean"),
        ({"expires": 0}, "expires must be between 0.001 and"),
        ({"expires": 0.0005}, "expires must be between"),
        ({"expires": -1}, "expires must be between"),
        ({"expires": math.inf}, "expires must be between"),
        ({"expires": True}, "expires must be a number"),
        ({"expires": "60"}, "expires must be a number"),
        ({"mystery": 1}, "unknown queue option(s): mystery"),
        ({"b": 1, "a": 2}, "unknown queue option(s): a, b"),
    ],
)
def test_bad_queue_options_are_refused_naming_the_problem(
    raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(BrokerError) as exc:
        QueueOptions.from_wire(raw)
    assert exc.value.code == ErrorCode.INVALID_ARGUMENT
    assert message in exc.value.message


def test_check_name_refuses_empty_and_overlong_names() -> None:
    assert check_name("queue", "q") == "q"
    assert check_name("exchange", "", allow_empty=True) == ""
    assert check_name("queue", "x" * 255) == "x" * 255
    with pytest.raises(BrokerError, match="queue name must not be empty"):
        check_name("queue", "")
    with pytest.raises(BrokerError, match="exchange name longer than 255"):
        check_name("exchange", "x" * 256)


# --- publish properties ---------------------------------------------------------


def test_empty_props_are_plain() -> None:
    assert parse_props({}, NOW) == PublishProps()


def test_every_publish_property_is_parsed() -> None:
    p = parse_props(
        {
            "headers": {"a": 1, "b": "x", "c": None, "d": b"\x00", "e": 1.5, "f": True},
            "priority": MAX_PRIORITY,
            "ttl": 5,
            "message_id": "m-1",
            "mandatory": True,
            "delay": 10,
        },
        NOW,
    )
    assert p.headers == {"a": 1, "b": "x", "c": None, "d": b"\x00", "e": 1.5, "f": True}
    assert p.priority == MAX_PRIORITY
    assert p.ttl == 5.0
    assert p.message_id == "m-1"
    assert p.mandatory is True
    assert p.ready_at == NOW + 10


def test_empty_headers_become_none() -> None:
    assert parse_props({"headers": {}}, NOW).headers is None


@pytest.mark.parametrize(
    ("raw", "ready_at"),
    [
        ({"delay": 0}, None),
        ({"delay": 5}, NOW + 5),
        ({"not_before": NOW - 1}, None),
        ({"not_before": NOW}, None),
        ({"not_before": NOW + 7}, NOW + 7),
        ({"delay": 5, "not_before": NOW + 7}, NOW + 7),
        ({"delay": 9, "not_before": NOW + 7}, NOW + 9),
        ({"delay": None, "not_before": None}, None),
    ],
)
def test_delay_and_not_before_set_ready_at(raw: dict[str, Any], ready_at: float | None) -> None:
    assert parse_props(raw, NOW).ready_at == ready_at


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"headers": [1, 2]}, "headers must be a map"),
        ({"headers": {"k": [1]}}, "header 'k' must be a string, number"),
        ({"headers": {"k": {"nested": 1}}}, "header 'k' must be"),
        ({"delay": -1}, "delay must be between"),
        ({"delay": 11 * 365 * 86_400}, "delay must be between"),
        ({"delay": "10"}, "delay must be a number"),
        ({"delay": math.nan}, "delay must be between"),
        ({"not_before": -1}, "not_before must be between"),
        ({"not_before": math.inf}, "not_before must be between"),
        ({"ttl": math.inf}, "ttl must be between"),
        ({"not_before": True}, "not_before must be a number"),
        ({"priority": -1}, f"priority must be between 0 and {MAX_PRIORITY}"),
        ({"priority": MAX_PRIORITY + 1}, "priority must be between"),
        ({"priority": 1.0}, "priority must be an integer"),
        ({"priority": True}, "priority must be an integer"),
        ({"ttl": 0}, "ttl must be between"),
        ({"ttl": "5"}, "ttl must be a number"),
        ({"message_id": 5}, "message_id must be a string"),
        ({"mandatory": 1}, "mandatory must be a boolean"),
        ({"mandatory": "yes"}, "mandatory must be a boolean"),
        ({"expiration": 5}, "unknown publish propert(y/ies): expiration"),
    ],
)
def test_bad_props_are_refused_naming_the_problem(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(BrokerError) as exc:
        parse_props(raw, NOW)
    assert exc.value.code == ErrorCode.INVALID_ARGUMENT
    assert message in exc.value.message
