"""Publish option validation, wire props, and the error-code-to-exception table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import get_type_hints

import pytest

from brokerd_client import Message
from brokerd_client import errors as e
from brokerd_client.message import PublishOptions, build_props, check_body
from brokerd_protocol import CONNECTION_FATAL, ErrorCode


def test_publish_options_are_the_fields_of_a_message_after_its_body() -> None:
    names = [f.name for f in dataclasses.fields(Message)]
    assert names[:3] == ["exchange", "routing_key", "body"]
    hints = get_type_hints(Message)
    assert {name: hints[name] for name in names[3:]} == get_type_hints(PublishOptions)


def test_defaults_produce_an_empty_props_map() -> None:
    assert build_props() == {}
    assert build_props(priority=0, mandatory=False, delay=0, headers={}) == {}


def test_every_option_lands_under_its_wire_key() -> None:
    props = build_props(
        headers={"a": 1, "b": "x", "c": None, "d": b"\x00", "e": 1.5, "f": True},
        delay=2,
        priority=9,
        ttl=60,
        message_id="m-1",
        mandatory=True,
    )
    assert props == {
        "headers": {"a": 1, "b": "x", "c": None, "d": b"\x00", "e": 1.5, "f": True},
        "delay": 2.0,
        "priority": 9,
        "ttl": 60.0,
        "message_id": "m-1",
        "mandatory": True,
    }


def test_not_before_accepts_aware_datetimes_and_epoch_seconds() -> None:
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert build_props(not_before=when) == {"not_before": when.timestamp()}
    other_zone = when.astimezone(timezone(timedelta(hours=5)))
    assert build_props(not_before=other_zone) == {"not_before": when.timestamp()}
    assert build_props(not_before=1_900_000_000) == {"not_before": 1_900_000_000.0}


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"priority": 10}, ValueError),
        ({"priority": -1}, ValueError),
        ({"priority": 1.5}, TypeError),
        ({"priority": True}, TypeError),
        ({"delay": -1}, ValueError),
        ({"delay": float("nan")}, ValueError),
        ({"delay": "5"}, TypeError),
        ({"ttl": 0}, ValueError),
        ({"message_id": 5}, TypeError),
        ({"headers": {1: "x"}}, TypeError),
        ({"headers": {"x": [1, 2]}}, TypeError),
        ({"headers": {"x": {"nested": 1}}}, TypeError),
        ({"delay": 1, "not_before": 5.0}, ValueError),
        ({"not_before": datetime(2030, 1, 1)}, ValueError),
        ({"not_before": "tomorrow"}, TypeError),
    ],
)
def test_bad_options_are_refused_locally(kwargs: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        build_props(**kwargs)  # type: ignore[arg-type]


def test_body_must_be_bytes_like() -> None:
    assert check_body(b"x") == b"x"
    assert check_body(bytearray(b"xy")) == b"xy"
    assert check_body(memoryview(b"xyz")) == b"xyz"
    assert type(check_body(memoryview(b"xyz"))) is bytes
    for bad in ("text", 5, None, {"a": 1}):
        with pytest.raises(TypeError, match="encode it explicitly"):
            check_body(bad)


def test_message_props_match_publish_keywords() -> None:
    msg = Message("ex", "rk", b"b", headers={"h": 1}, priority=3, message_id="i")
    assert msg.props() == {"headers": {"h": 1}, "priority": 3, "message_id": "i"}


def test_every_error_code_maps_to_a_typed_exception() -> None:
    for code in ErrorCode:
        exc = e.error_from_code(code, "boom")
        assert type(exc) is not e.BrokerError, f"{code.name} has no typed exception"
        assert exc.code == code
        assert "boom" in str(exc)
        assert code.name in str(exc)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (ErrorCode.AUTH_FAILED, e.AuthenticationError),
        (ErrorCode.NOT_AUTHENTICATED, e.AuthenticationError),
        (ErrorCode.PROTOCOL_ERROR, e.ProtocolViolation),
        (ErrorCode.FRAME_TOO_LARGE, e.ProtocolViolation),
        (ErrorCode.UNSUPPORTED_VERSION, e.UnsupportedVersion),
        (ErrorCode.HEARTBEAT_TIMEOUT, e.HeartbeatTimeout),
        (ErrorCode.SHUTTING_DOWN, e.ServerShuttingDown),
        (ErrorCode.RESOURCE_LIMIT, e.ResourceLimitExceeded),
        (ErrorCode.NOT_FOUND, e.NotFound),
        (ErrorCode.PRECONDITION_FAILED, e.PreconditionFailed),
        (ErrorCode.INVALID_ARGUMENT, e.InvalidArgument),
        (ErrorCode.UNROUTABLE, e.Unroutable),
        (ErrorCode.QUEUE_FULL, e.QueueFull),
        (ErrorCode.LEASE_LOST, e.LeaseLost),
        (ErrorCode.INTERNAL, e.InternalError),
    ],
)
def test_error_from_code_builds_the_class_of_the_code(
    code: ErrorCode, cls: type[e.BrokerError]
) -> None:
    exc = e.error_from_code(code, "m")
    assert type(exc) is cls
    assert isinstance(exc, e.BrokerError)


def test_connection_fatal_codes_that_mean_the_link_is_gone_are_connection_lost() -> None:
    assert issubclass(e.HeartbeatTimeout, e.ConnectionLost)
    assert issubclass(e.ServerShuttingDown, e.ConnectionLost)
    assert issubclass(e.ClientClosed, e.ConnectionLost)
    assert ErrorCode.HEARTBEAT_TIMEOUT in CONNECTION_FATAL


def test_unknown_code_from_a_newer_broker_is_still_a_broker_error() -> None:
    exc = e.error_from_code(999, "new thing")
    assert type(exc) is e.BrokerError
    assert exc.code == 999
    assert "new thing" in str(exc)


def test_lease_lost_names_its_delivery() -> None:
    exc = e.LeaseLost(42)
    assert exc.delivery_id == 42
    assert "42" in str(exc)
    assert exc.code == ErrorCode.LEASE_LOST
