"""The kombu envelope (``x-kombu``) and the queue-argument mapping, without a broker."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokerd_client.celery.envelope import (
    ENVELOPE_HEADER,
    InvalidEnvelope,
    KombuMessage,
    from_delivery,
    to_message,
)
from brokerd_client.celery.queueargs import SEND_LIFETIME_OPTIONS, queue_options
from brokerd_client.errors import InvalidArgument


def test_a_kombu_message_survives_the_round_trip_through_a_brokerd_message() -> None:
    sent = KombuMessage(
        b"\x78\x9c body",
        "application/x-msgpack",
        "binary",
        {"id": "t-1", "task": "task.record", "timelimit": [10, None], "compression": "zlib"},
        {"correlation_id": "t-1", "priority": 12, "delivery_tag": 5, "reply_to": "r"},
    )
    message = to_message("jobs", "task.x", sent, mandatory=True)
    assert message.message_id == "t-1"
    assert message.priority == 9
    assert message.mandatory
    props = message.props()
    got = from_delivery(message.body, props["headers"])
    assert got == KombuMessage(
        sent.body,
        sent.content_type,
        sent.content_encoding,
        sent.headers,
        {"correlation_id": "t-1", "priority": 12, "reply_to": "r"},
    )


def test_a_future_eta_becomes_not_before_and_a_past_one_does_not() -> None:
    future = KombuMessage(b"", "", "", {"eta": "2030-01-01T00:00:00+00:00"}, {})
    past = KombuMessage(b"", "", "", {"eta": "2000-01-01T00:00:00+00:00"}, {})
    assert to_message("", "q", future, now=1_800_000_000.0).not_before == 1_893_456_000.0
    assert to_message("", "q", past, now=1_800_000_000.0).not_before is None


def test_an_amqp_expiration_becomes_the_brokerd_ttl() -> None:
    plain = KombuMessage(b"", "", "", {}, {"expiration": "1500"})
    assert to_message("", "q", plain).ttl == 1.5


def test_a_celery_task_with_expires_gets_no_broker_ttl_so_its_worker_records_revoked() -> None:
    """Celery sets ``expiration`` from ``expires``; a broker TTL would drop the
    task silently (a countdown longer than ``expires`` always), leaving its
    result PENDING forever. The worker checks ``expires`` itself and records
    REVOKED, as Celery's workers do on RabbitMQ (ETA tasks) and Redis."""
    task = KombuMessage(
        b"",
        "application/json",
        "utf-8",
        {"id": "t-2", "task": "orders.add", "expires": "2030-01-01T00:00:00+00:00"},
        {"correlation_id": "t-2", "expiration": "1000"},
    )
    assert to_message("", "q", task).ttl is None


def test_a_message_without_the_header_is_not_a_kombu_message() -> None:
    assert from_delivery(b"x", {"other": 1}) is None


@pytest.mark.parametrize(
    "value",
    [
        "text",
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"content_type": 1, "content_encoding": "", "headers": {}, "properties": {}}),
        msgpack.packb(
            {"content_type": "", "content_encoding": "", "headers": [], "properties": {}}
        ),
        msgpack.packb(
            {"content_type": "", "content_encoding": "", "headers": {b"k": 1}, "properties": {}}
        ),
        msgpack.packb(
            {
                "content_type": "",
                "content_encoding": "",
                "headers": {"t": msgpack.ExtType(5, b"x")},
                "properties": {},
            }
        ),
    ],
)
def test_a_malformed_envelope_is_invalid(value: Any) -> None:
    with pytest.raises(InvalidEnvelope):
        from_delivery(b"", {ENVELOPE_HEADER: value})


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text() | st.binary() | st.integers(-100, 100), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _values.map(msgpack.packb), _values))
def test_any_x_kombu_header_gives_a_kombu_message_or_invalid_envelope(value: Any) -> None:
    try:
        got = from_delivery(b"body", {ENVELOPE_HEADER: value})
    except InvalidEnvelope:
        return
    assert isinstance(got, KombuMessage)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["content_type", "content_encoding", "headers", "properties", "x"]),
        _values,
    )
)
def test_any_envelope_map_gives_a_kombu_message_or_invalid_envelope(meta: Any) -> None:
    try:
        packed = msgpack.packb(meta)
    except (TypeError, ValueError):
        return
    try:
        got = from_delivery(b"", {ENVELOPE_HEADER: packed})
    except InvalidEnvelope:
        return
    assert isinstance(got, KombuMessage)


def test_queue_arguments_map_onto_brokerd_options_in_seconds() -> None:
    options = queue_options(
        {"x-message-ttl": 300_000, "x-max-length": 10, "x-max-priority": 10, "x-expires": 10_000},
        auto_delete=True,
        exclusive=False,
    )
    expected: dict[str, Any] = {"message_ttl": 300.0, "max_length": 10, "max_priority": 10}
    if SEND_LIFETIME_OPTIONS:
        expected.update(auto_delete=True, expires=10.0)
    assert options == expected


def test_the_client_maps_arguments_as_the_broker_does() -> None:
    """One mapping (brokerd_protocol.queueargs) for kombu and for RabbitMQ's
    management API: quorum queues, overflow and delivery limits included."""
    arguments = {"x-queue-type": "quorum", "x-overflow": "drop-head", "x-delivery-limit": 2}
    options = queue_options(arguments, auto_delete=False, exclusive=False)
    assert options == {"overflow": "drop_head", "max_deliveries": 3}


def test_dead_lettering_through_the_default_exchange_names_the_dead_letter_queue() -> None:
    """RabbitMQ's way to dead-letter into one queue: the default exchange
    routes by queue name, so the routing key is brokerd's dead_letter_queue
    (a Celery producer can then declare a queue a brokerd worker declared)."""
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "celery.dlq"}
    options = queue_options(arguments, auto_delete=False, exclusive=False)
    assert options == {"dead_letter_queue": "celery.dlq"}


@pytest.mark.parametrize(
    "arguments",
    [
        {"x-dead-letter-exchange": "dlx"},
        {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "q"},
        {"x-dead-letter-exchange": ""},
        {"x-dead-letter-routing-key": "q"},
        {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": ""},
        {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": 5},
        {"x-queue-type": "stream"},
        {"x-overflow": "reject-publish-dlx"},
        {"x-single-active-consumer": True},
        {"x-message-ttl": -1},
        {"lease": 30},
    ],
)
def test_unsupported_queue_arguments_are_refused_not_dropped(arguments: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        queue_options(arguments, auto_delete=False, exclusive=False)
