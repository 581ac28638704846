"""Value types users build or receive (``Message``, ``QueueInfo``) and the
translation of publish keyword arguments into the wire ``props`` map.

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
from typing import Any

from brokerd_protocol import MAX_PRIORITY, HeaderValue

from .checks import epoch, seconds

__all__ = ["Message", "QueueInfo", "build_props", "check_body"]

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


@dataclass(frozen=True, slots=True)
class Message:
    """One message for ``publish_many``; the fields mirror ``publish``'s arguments.

    Plain ``(exchange, routing_key, body)`` tuples are accepted too, for the
    common case with no options.
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
        """The wire ``props`` map for this message (validated)."""
        return build_props(
            headers=self.headers,
            delay=self.delay,
            not_before=self.not_before,
            priority=self.priority,
            ttl=self.ttl,
            message_id=self.message_id,
            mandatory=self.mandatory,
        )


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


def build_props(
    *,
    headers: Mapping[str, HeaderValue] | None = None,
    delay: float | None = None,
    not_before: datetime | float | None = None,
    priority: int = 0,
    ttl: float | None = None,
    message_id: str | None = None,
    mandatory: bool = False,
) -> dict[str, Any]:
    """Validate publish options and return the minimal wire ``props`` map."""
    props: dict[str, Any] = {}
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
    if delay is not None and not_before is not None:
        raise ValueError("give either delay or not_before, not both")
    if delay is not None:
        d = seconds("delay", delay, allow_zero=True)
        if d > 0:
            props["delay"] = d
    if not_before is not None:
        props["not_before"] = epoch("not_before", not_before)
    if priority:
        if type(priority) is not int:
            raise TypeError(f"priority must be an int, not {type(priority).__name__}")
        if not 0 <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be within 0..{MAX_PRIORITY}, got {priority}")
        props["priority"] = priority
    if ttl is not None:
        props["ttl"] = seconds("ttl", ttl)
    if message_id is not None:
        if type(message_id) is not str:
            raise TypeError(f"message_id must be a str, not {type(message_id).__name__}")
        props["message_id"] = message_id
    if mandatory:
        props["mandatory"] = True
    return props
