"""kombu queue and exchange declarations as brokerd DeclareQueue options.

kombu describes a queue the AMQP way: ``durable``, ``exclusive``,
``auto_delete`` and an ``x-...`` arguments map with milliseconds. brokerd's
queues (SPEC §9.2) take seconds and a fixed set of option keys, and refuse any
key they do not know. This module is the one place that translates, so a
kombu ``Queue`` always declares the same brokerd queue (redeclaring with other
options is PRECONDITION_FAILED, which kombu reports as a channel error).

* ``auto_delete=True`` and ``exclusive=True`` -> ``auto_delete``;
  ``x-expires`` (ms) -> ``expires`` (s). :data:`SEND_LIFETIME_OPTIONS` turns
  these two off for a broker that predates them (such queues then live until
  deleted).
* ``x-message-ttl`` (ms) -> ``message_ttl`` (s); ``x-max-length`` ->
  ``max_length``.
* ``x-dead-letter-exchange: ""`` with ``x-dead-letter-routing-key: Q`` ->
  ``dead_letter_queue: Q``: the default exchange routes by queue name, so
  this is exactly brokerd's dead-lettering into one queue (and how a Celery
  producer declares a queue a brokerd worker declared with a
  ``dead_letter_queue``). Any other dead-letter exchange, or one without a
  routing key, is refused: brokerd dead-letters to a queue, not an exchange.
* Any other ``x-`` argument is an ``InvalidArgument``, never silently dropped.
* ``x-max-priority`` is accepted and ignored: every brokerd queue has
  priorities 0-9. ``x-queue-type`` ``classic`` is accepted (it is what
  brokerd queues are); others are refused.

Imports neither kombu nor Celery.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from ..errors import InvalidArgument

__all__ = ["EXCHANGE_TYPES", "SEND_LIFETIME_OPTIONS", "queue_options"]

#: Send ``auto_delete`` and ``expires`` to the broker (DeclareQueue options
#: since issue 9).
SEND_LIFETIME_OPTIONS: Final = True

#: kombu exchange types that map 1:1 onto brokerd's (SPEC §9.1).
EXCHANGE_TYPES: Final = frozenset({"direct", "topic", "fanout"})

_IGNORED: Final = frozenset({"x-max-priority"})
_DLX: Final = "x-dead-letter-exchange"
_DLRK: Final = "x-dead-letter-routing-key"


def queue_options(
    arguments: Mapping[str, Any] | None, *, auto_delete: bool, exclusive: bool
) -> dict[str, Any]:
    """The DeclareQueue ``options`` for a kombu queue declaration."""
    options: dict[str, Any] = {}
    if (auto_delete or exclusive) and SEND_LIFETIME_OPTIONS:
        options["auto_delete"] = True
    arguments = dict(arguments or {})
    dlx, dlrk = arguments.pop(_DLX, None), arguments.pop(_DLRK, None)
    if dlx is not None or dlrk is not None:
        options["dead_letter_queue"] = _dead_letter_queue(dlx, dlrk)
    for key, value in arguments.items():
        if value is None or key in _IGNORED:
            continue
        if key == "x-expires":
            if SEND_LIFETIME_OPTIONS:
                options["expires"] = _millis(key, value)
        elif key == "x-message-ttl":
            options["message_ttl"] = _millis(key, value)
        elif key == "x-max-length":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"queue argument {key} must be an integer >= 0")
            options["max_length"] = value
        elif key == "x-queue-type":
            if value != "classic":
                raise InvalidArgument(f"brokerd has no {value!r} queues ({key})")
        else:
            raise InvalidArgument(f"queue argument {key!r} is not supported by brokerd")
    return options


def _dead_letter_queue(exchange: object, routing_key: object) -> str:
    if exchange != "" or not isinstance(routing_key, str) or not routing_key:
        raise InvalidArgument(
            f"brokerd dead-letters into a queue: use {_DLX}='' (the default exchange) with "
            f"{_DLRK}=<queue name>, not {_DLX}={exchange!r}, {_DLRK}={routing_key!r}"
        )
    return routing_key


def _millis(key: str, value: object) -> float:
    """An AMQP milliseconds argument as brokerd seconds (at least 1 ms)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"queue argument {key} must be milliseconds, got {value!r}")
    ms = float(value)
    if not math.isfinite(ms) or ms <= 0:
        raise InvalidArgument(f"queue argument {key} must be a positive number of milliseconds")
    return max(ms / 1000.0, 0.001)
