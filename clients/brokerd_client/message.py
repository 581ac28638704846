"""Value types users build or receive (``Message``, ``QueueInfo``) and the
translation of a message's options into the wire ``props`` map.

Validation happens here, on the client, for arguments whose mistakes are
programming errors (a ``str`` body, priority 12, a naive datetime): the caller
gets a ``TypeError``/``ValueError`` pointing at its own line instead of a
broker error after a round trip. Keys with default values are left out of
``props`` because every byte of a Publish frame is paid per message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, Unpack

from brokerd_protocol import MAX_PRIORITY, HeaderValue

from .checks import epoch, seconds

__all__ = ["Message", "PublishOptions", "QueueInfo", "build_props", "check_body"]

_SCALARS = (str, int, float, bool, bytes, type(None))


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A snapshot of a queue's counters, as returned by ``queue_stats``.

    ``ready`` messages can be delivered now, ``leased`` are out with consumers
    awaiting an ack, ``delayed`` wait for their ETA, ``consumers`` is the
    number of attached consumers.
    """

    ready: int
    leased: int
    delayed: int
    consumers: int


class PublishOptions(TypedDict, total=False):
    """What a publish may carry besides its address and body.

    ``publish(exchange, routing_key, body, **options)`` takes these, and they
    are the fields of :class:`Message` after ``body``, with the same defaults
    (a test holds the two lists together).
    """

    headers: Mapping[str, HeaderValue] | None
    delay: float | None
    priority: int
    ttl: float | None
    message_id: str | None
    mandatory: bool
    not_before: datetime | float | None


@dataclass(frozen=True, slots=True)
class Message:
    """One outgoing message: ``publish_message(msg)``, or many with ``publish_many``.

    ``publish(exchange, routing_key, body, **options)`` builds one of these.
    For ``publish_many``, plain ``(exchange, routing_key, body)`` tuples are
    accepted too, for the common case with no options.
    """

    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, HeaderValue] | None = None
    delay: float | None = None
    priority: int = 0
    ttl: float | None = None
    message_id: str | None = None
    mandatory: bool = False
    not_before: datetime | float | None = None

    def props(self) -> dict[str, Any]:
        """Validate the options and return the minimal wire ``props`` map."""
        props: dict[str, Any] = {}
        headers = self.headers
        if headers:
            if not isinstance(headers, Mapping):
                raise TypeError(f"headers must be a mapping, not {type(headers).__name__}")
            hdrs: dict[str, HeaderValue] = {}
            for key, value in headers.items():
                if type(key) is not str:
                    raise TypeError(f"header names must be str, got {key!r}")
                if not isinstance(value, _SCALARS):
                    raise TypeError(
                        f"header {key!r} must be str, int, float, bool, bytes or None, "
                        f"not {type(value).__name__}"
                    )
                hdrs[key] = value
            props["headers"] = hdrs
        delay, not_before = self.delay, self.not_before
        if delay is not None and not_before is not None:
            raise ValueError("give either delay or not_before, not both")
        if delay is not None:
            d = seconds("delay", delay, allow_zero=True)
            if d > 0:
                props["delay"] = d
        if not_before is not None:
            props["not_before"] = epoch("not_before", not_before)
        priority = self.priority
        if priority:
            if type(priority) is not int:
                raise TypeError(f"priority must be an int, not {type(priority).__name__}")
            if not 0 <= priority <= MAX_PRIORITY:
                raise ValueError(f"priority must be within 0..{MAX_PRIORITY}, got {priority}")
            props["priority"] = priority
        if self.ttl is not None:
            props["ttl"] = seconds("ttl", self.ttl)
        message_id = self.message_id
        if message_id is not None:
            if type(message_id) is not str:
                raise TypeError(f"message_id must be a str, not {type(message_id).__name__}")
            props["message_id"] = message_id
        if self.mandatory:
            props["mandatory"] = True
        return props


def check_body(body: object) -> bytes:
    """Return ``body`` as ``bytes``; anything but a bytes-like object is a TypeError.

    ``str`` is refused on purpose: silently choosing an encoding hides bugs
    (and it is the first step towards pickling arbitrary objects). Encode
    explicitly, e.g. ``json.dumps(x).encode()``.
    """
    if type(body) is bytes:
        return body
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError(
        f"message body must be bytes, bytearray or memoryview, not {type(body).__name__}; "
        "encode it explicitly (e.g. text.encode() or json.dumps(obj).encode())"
    )


def build_props(**options: Unpack[PublishOptions]) -> dict[str, Any]:
    """Validate publish options and return the minimal wire ``props`` map."""
    return Message("", "", b"", **options).props()
