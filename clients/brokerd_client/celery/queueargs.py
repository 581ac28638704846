"""kombu queue and exchange declarations as brokerd DeclareQueue options.

kombu describes a queue the AMQP way: ``durable``, ``exclusive``,
``auto_delete`` and an ``x-...`` arguments map with milliseconds. brokerd's
queues (SPEC §9.2) take seconds and a fixed set of option keys, and refuse any
key they do not know. The ``x-`` arguments are translated by
``brokerd_protocol.queueargs``, the mapping the broker's management API uses
for RabbitMQ's ``PUT /api/queues`` and definitions, so a kombu ``Queue`` and
the same queue declared over HTTP are one brokerd queue (redeclaring with
other options is PRECONDITION_FAILED, which kombu reports as a channel
error). What that mapping refuses is an ``InvalidArgument`` here, never
silently dropped (its docstring lists what maps and how).

This module adds kombu's own flags: ``auto_delete=True`` and
``exclusive=True`` -> ``auto_delete``. :data:`SEND_LIFETIME_OPTIONS` turns
``auto_delete`` and ``expires`` (from ``x-expires``) off for a broker that
predates them (such queues then live until deleted).

Imports neither kombu nor Celery.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from brokerd_protocol.queueargs import QueueArgumentError
from brokerd_protocol.queueargs import queue_options as translate

from ..errors import InvalidArgument

__all__ = ["EXCHANGE_TYPES", "SEND_LIFETIME_OPTIONS", "queue_options"]

#: Send ``auto_delete`` and ``expires`` to the broker (DeclareQueue options
#: since issue 9).
SEND_LIFETIME_OPTIONS: Final = True

#: kombu exchange types that map 1:1 onto brokerd's (SPEC §9.1).
EXCHANGE_TYPES: Final = frozenset({"direct", "topic", "fanout"})


def queue_options(
    arguments: Mapping[str, Any] | None, *, auto_delete: bool, exclusive: bool
) -> dict[str, Any]:
    """The DeclareQueue ``options`` for a kombu queue declaration."""
    try:
        options = translate(arguments or {})
    except QueueArgumentError as exc:
        raise InvalidArgument(str(exc)) from None
    if SEND_LIFETIME_OPTIONS:
        if auto_delete or exclusive:
            options["auto_delete"] = True
    else:
        options.pop("expires", None)
    return options
