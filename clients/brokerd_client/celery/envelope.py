"""How a kombu message travels in a brokerd message: the one place that knows it.

A kombu (Celery) message is a body plus content type, content encoding,
application headers and AMQP-style properties. brokerd headers hold only
scalars (SPEC §10.2), and Celery's protocol-v2 headers hold lists and maps
(``timelimit``, ``stamps``), so the transport carries them in one header:

* body: the body exactly as kombu encoded it (serializer and compression applied);
* header ``x-kombu`` (bin): a msgpack map ``{"content_type": str,
  "content_encoding": str, "headers": map, "properties": map}``;
  ``properties`` omits kombu's per-delivery keys (``delivery_info``,
  ``delivery_tag``, ``body_encoding``);
* brokerd ``message_id`` = ``properties["correlation_id"]`` (Celery's task id),
  or ``headers["id"]``: the broker revokes by message id, so ``revoke()``
  from any client also stops Celery tasks before delivery;
* brokerd ``priority`` = the AMQP priority clamped to brokerd's 0-9;
* brokerd ``ttl`` = ``properties["expiration"]`` (milliseconds, as AMQP),
  except for a Celery task that has an ``expires`` header: Celery sets
  ``expiration`` from it, and a broker TTL drops the message unseen (always
  when a countdown outlasts ``expires``, since the broker counts the delay),
  leaving its result PENDING forever. The worker (Celery's or brokerd's)
  checks ``expires`` itself and records REVOKED, as callers expect;
* brokerd ``not_before`` = ``headers["eta"]`` when it is in the future: the broker
  holds countdown/ETA tasks durably, and the worker receives them when due.

Both the kombu transport (publishing and consuming) and ``brokerd-worker``
(running tasks sent by Celery producers) read messages through
:func:`from_delivery`, so the two sides cannot drift. This module imports
neither kombu nor Celery.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgpack

from brokerd_protocol import MAX_PRIORITY, HeaderValue

from ..message import Message

__all__ = [
    "ENVELOPE_HEADER",
    "InvalidEnvelope",
    "KombuMessage",
    "from_delivery",
    "to_message",
]

#: The brokerd header that carries a kombu message's metadata.
ENVELOPE_HEADER: Final = "x-kombu"
#: kombu property keys that describe one delivery, not the message.
_PER_DELIVERY: Final = frozenset({"delivery_info", "delivery_tag", "body_encoding"})
#: Longest task / correlation id the broker takes as a message id (SPEC §14.1).
_MAX_MESSAGE_ID: Final = 255


class InvalidEnvelope(ValueError):
    """An ``x-kombu`` header that is not the map this module writes."""


@dataclass(frozen=True, slots=True)
class KombuMessage:
    """A kombu message as a producer published it."""

    body: bytes
    content_type: str
    content_encoding: str
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)


def to_message(
    exchange: str,
    routing_key: str,
    message: KombuMessage,
    *,
    mandatory: bool = False,
    now: float | None = None,
) -> Message:
    """The brokerd message that carries ``message`` (see the module docstring).

    Raises ``TypeError`` when a header or property cannot be encoded (msgpack
    takes None, bool, int, float, str, bytes, lists and str-keyed maps).
    """
    properties = {k: v for k, v in message.properties.items() if k not in _PER_DELIVERY}
    meta = {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": message.headers,
        "properties": properties,
    }
    try:
        packed = msgpack.packb(meta, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"kombu message headers/properties cannot be encoded: {exc}") from None
    headers: dict[str, HeaderValue] = {ENVELOPE_HEADER: packed}
    return Message(
        exchange,
        routing_key,
        message.body,
        headers=headers,
        message_id=_message_id(message.headers, properties),
        priority=_priority(properties.get("priority")),
        ttl=None if _worker_expires(message.headers) else _ttl(properties.get("expiration")),
        not_before=_not_before(message.headers.get("eta"), now),
        mandatory=mandatory,
    )


def from_delivery(body: bytes, headers: Mapping[str, HeaderValue]) -> KombuMessage | None:
    """The kombu message a delivery carries, or None when it carries none.

    None means a message published by brokerd's own clients (no ``x-kombu``
    header). A malformed envelope raises :class:`InvalidEnvelope`.
    """
    if ENVELOPE_HEADER not in headers:
        return None
    packed = headers[ENVELOPE_HEADER]
    if type(packed) is not bytes:
        raise InvalidEnvelope(f"{ENVELOPE_HEADER} header must be bin, not {type(packed).__name__}")
    try:
        meta = msgpack.unpackb(packed, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise InvalidEnvelope(f"{ENVELOPE_HEADER} header is not msgpack: {exc}") from None
    if type(meta) is not dict:
        raise InvalidEnvelope(f"{ENVELOPE_HEADER} header must be a map")
    content_type = meta.get("content_type")
    content_encoding = meta.get("content_encoding")
    kheaders = meta.get("headers")
    properties = meta.get("properties")
    if type(content_type) is not str or type(content_encoding) is not str:
        raise InvalidEnvelope(f"{ENVELOPE_HEADER}: content_type and content_encoding must be str")
    if type(kheaders) is not dict or type(properties) is not dict:
        raise InvalidEnvelope(f"{ENVELOPE_HEADER}: headers and properties must be maps")
    _check_plain(kheaders, 1)
    _check_plain(properties, 1)
    return KombuMessage(body, content_type, content_encoding, kheaders, properties)


#: Deepest nesting of maps and lists accepted in an envelope's headers and
#: properties (Celery's own nest two or three levels).
_MAX_DEPTH: Final = 32
_PLAIN_SCALARS: Final = frozenset({str, bytes, int, float, bool, type(None)})


def _check_plain(value: Any, depth: int) -> None:
    """Only what ``to_message`` writes: str-keyed maps, lists and msgpack
    scalars. msgpack extension values (its Timestamp, ExtType) and non-str
    keys never reach kombu or Celery."""
    if depth > _MAX_DEPTH:
        raise InvalidEnvelope(f"{ENVELOPE_HEADER}: nested deeper than {_MAX_DEPTH} levels")
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidEnvelope(f"{ENVELOPE_HEADER}: map keys must be str")
            if type(item) not in _PLAIN_SCALARS:
                _check_plain(item, depth + 1)
    elif kind is list:
        for item in value:
            if type(item) not in _PLAIN_SCALARS:
                _check_plain(item, depth + 1)
    elif kind not in _PLAIN_SCALARS:
        raise InvalidEnvelope(f"{ENVELOPE_HEADER}: unsupported value of type {kind.__name__}")


def _message_id(headers: Mapping[str, Any], properties: Mapping[str, Any]) -> str | None:
    for candidate in (properties.get("correlation_id"), headers.get("id")):
        if type(candidate) is str and 0 < len(candidate) <= _MAX_MESSAGE_ID:
            return candidate
    return None


def _priority(value: object) -> int:
    if type(value) is not int or value <= 0:
        return 0
    return min(value, MAX_PRIORITY)


def _worker_expires(headers: Mapping[str, Any]) -> bool:
    """A Celery task whose worker enforces ``expires`` (see the module docstring)."""
    return bool(headers.get("task")) and bool(headers.get("expires"))


def _ttl(value: object) -> float | None:
    """AMQP ``expiration``: milliseconds as a string (or a number)."""
    if value is None:
        return None
    try:
        ms = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"expiration must be milliseconds, got {value!r}") from None
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"expiration must be a non-negative number of milliseconds, got {value!r}")
    return max(ms / 1000.0, 0.001)


def _not_before(eta: object, now: float | None) -> float | None:
    """Epoch seconds of a future ISO-8601 ``eta``; None when absent or due."""
    if type(eta) is not str or not eta:
        return None
    try:
        when = datetime.fromisoformat(eta)
    except ValueError:
        return None  # the worker reports a malformed eta; the broker just delivers
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    at = when.timestamp()
    current = datetime.now(UTC).timestamp() if now is None else now
    return at if at > current else None
