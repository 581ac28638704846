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
  ``max_length``; ``x-dead-letter-routing-key`` is not supported (brokerd
  dead-letters to a queue, not an exchange), nor is any other ``x-`` argument:
  those are an ``InvalidArgument``, never silently dropped.
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


def queue_options(
    arguments: Mapping[str, Any] | None, *, auto_delete: bool, exclusive: bool
) -> dict[str, Any]:
    """The DeclareQueue ``options`` for a kombu queue declaration."""
    options: dict[str, Any] = {}
    if (auto_delete or exclusive) and SEND_LIFETIME_OPTIONS:
        options["auto_delete"] = True
    for key, value in (arguments or {}).items():
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


def _millis(key: str, value: object) -> float:
    """An AMQP milliseconds argument as brokerd seconds (at least 1 ms)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"queue argument {key} must be milliseconds, got {value!r}")
    ms = float(value)
    if not math.isfinite(ms) or ms <= 0:
        raise InvalidArgument(f"queue argument {key} must be a positive number of milliseconds")
    return max(ms / 1000.0, 0.001)
