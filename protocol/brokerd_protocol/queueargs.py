"""RabbitMQ's queue arguments (``x-...``) as brokerd's DeclareQueue options.

One translation for both ends: the server's management API (``PUT
/api/queues``, definitions import) and the Python SDK's kombu transport
declare a RabbitMQ-described queue through it, so the same arguments always
make the same brokerd queue (a redeclare with other options is
PRECONDITION_FAILED). Pure: no I/O, nothing of the server or the client.

RabbitMQ counts milliseconds, brokerd seconds (at least one millisecond).

* ``x-message-ttl`` -> ``message_ttl``; ``x-expires`` -> ``expires``;
  ``x-max-length`` -> ``max_length``.
* ``x-overflow``: ``reject-publish`` / ``drop-head`` -> ``overflow``
  ``reject_publish`` / ``drop_head``. ``reject-publish-dlx`` has no
  equivalent (brokerd refuses such a publish without dead-lettering it).
* ``x-dead-letter-exchange: ""`` with ``x-dead-letter-routing-key: Q`` ->
  ``dead_letter_queue: Q``: the default exchange routes by queue name, so
  this is exactly brokerd's dead-lettering into one queue. Any other
  dead-letter exchange, or none with a key, is refused: brokerd dead-letters
  into a queue, not through an exchange.
* ``x-delivery-limit: N`` (quorum queues: N unsuccessful deliveries allowed,
  dead-lettered past them) -> ``max_deliveries: N + 1`` (brokerd counts
  every delivery); ``-1`` (RabbitMQ 4's "unlimited") -> no limit.
* ``x-queue-type``: ``classic`` and ``quorum`` are accepted (brokerd's
  queues are durable in the store, replicated with it); ``stream`` is
  refused (brokerd has no replayable log).
* ``x-max-priority`` (1-255) -> ``max_priority``: a publish above it enters
  the queue at it, as on RabbitMQ. brokerd orders priorities 0-9 (SPEC
  limits), also in a queue declared without it, where RabbitMQ would ignore
  them.
* ``x-queue-mode`` (``default`` or ``lazy``) is accepted and changes
  nothing: brokerd queues always page their backlog from the store.
* Any other argument is refused with its name and what brokerd offers.

Refusals are ``QueueArgumentError`` (a ``ValueError``); each end maps it to
its own error (the server to HTTP 400, the client to ``InvalidArgument``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["QueueArgumentError", "queue_options"]

DLX: Final = "x-dead-letter-exchange"
DLRK: Final = "x-dead-letter-routing-key"
#: Accepted and without effect (why: the module docstring).
_NO_EFFECT: Final = frozenset({"x-queue-mode"})
_OVERFLOW: Final = {"reject-publish": "reject_publish", "drop-head": "drop_head"}
#: What brokerd offers instead of an argument it refuses.
_INSTEAD: Final = {
    "x-max-length-bytes": "brokerd limits a queue by message count (x-max-length)",
    "x-single-active-consumer": (
        "brokerd has no single active consumer: run one consumer with prefetch 1"
    ),
    "x-queue-master-locator": "brokerd has one active node per store",
    "x-queue-leader-locator": "brokerd has one active node per store",
    "x-quorum-initial-group-size": "brokerd replicates through its store, not per queue",
    "x-dead-letter-strategy": "brokerd dead-letters within one store transaction",
}

_OPTIONS: Final = (
    "its queue options are lease, max_deliveries, dead_letter_queue, message_ttl, max_length, "
    "overflow, auto_delete, expires and max_priority"
)


class QueueArgumentError(ValueError):
    """A queue argument brokerd cannot honour; the message names it."""


def queue_options(arguments: Mapping[str, Any], *, native: bool = False) -> dict[str, Any]:
    """The brokerd queue options for RabbitMQ ``arguments``.

    With ``native`` a key without the ``x-`` prefix is taken as brokerd's own
    option (as brokerd's definitions export writes them) and passed on
    unchecked (the server's option check names a bad one); an option given
    both ways is refused. Without it such a key is refused. A ``None`` value
    is left out, as an absent argument."""
    options: dict[str, Any] = {}
    given = {k: v for k, v in arguments.items() if v is not None}
    dlx, dlrk = given.pop(DLX, None), given.pop(DLRK, None)
    if dlx is not None or dlrk is not None:
        options["dead_letter_queue"] = _dead_letter_queue(dlx, dlrk)
    own: dict[str, Any] = {}
    for key, value in given.items():
        if not key.startswith("x-"):
            if not native:
                raise QueueArgumentError(f"queue argument {key!r} is not supported by brokerd")
            own[key] = value
        elif key in _NO_EFFECT:
            _check_no_effect(key, value)
        elif key == "x-expires":
            options["expires"] = _millis(key, value)
        elif key == "x-message-ttl":
            options["message_ttl"] = _millis(key, value)
        elif key == "x-max-length":
            options["max_length"] = _count(key, value, 0)
        elif key == "x-max-priority":
            if _count(key, value, 1) > 255:
                raise QueueArgumentError("queue argument x-max-priority must be between 1 and 255")
            options["max_priority"] = value
        elif key == "x-overflow":
            if value not in _OVERFLOW:
                raise QueueArgumentError(
                    f"queue argument x-overflow={value!r} is not supported by brokerd: it "
                    "offers reject-publish and drop-head"
                )
            options["overflow"] = _OVERFLOW[value]
        elif key == "x-delivery-limit":
            limit = _count(key, value, -1)
            if limit >= 0:
                options["max_deliveries"] = limit + 1
        elif key == "x-queue-type":
            if value not in ("classic", "quorum"):
                raise QueueArgumentError(
                    f"brokerd has no {value!r} queues (x-queue-type): its queues are durable "
                    "in its store, as classic or quorum ones; a stream's replay is not offered"
                )
        else:
            instead = _INSTEAD.get(key, _OPTIONS)
            raise QueueArgumentError(f"queue argument {key!r} is not supported: {instead}")
    for key, value in own.items():
        if key in options:
            raise QueueArgumentError(f"queue option {key!r} is given twice (and as an x- argument)")
        options[key] = value
    return options


def _dead_letter_queue(exchange: object, routing_key: object) -> str:
    if exchange != "" or not isinstance(routing_key, str) or not routing_key:
        raise QueueArgumentError(
            f"brokerd dead-letters into a queue: use {DLX}='' (the default exchange) with "
            f"{DLRK}=<queue name>, not {DLX}={exchange!r}, {DLRK}={routing_key!r}"
        )
    return routing_key


def _check_no_effect(key: str, value: object) -> None:
    if value not in ("default", "lazy"):
        raise QueueArgumentError(f"queue argument {key} must be default or lazy")


def _count(key: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise QueueArgumentError(f"queue argument {key} must be an integer >= {low}")
    return value


def _millis(key: str, value: object) -> float:
    """A milliseconds argument as brokerd seconds (at least 1 ms)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueueArgumentError(f"queue argument {key} must be milliseconds, got {value!r}")
    ms = float(value)
    if not math.isfinite(ms) or ms <= 0:
        raise QueueArgumentError(f"queue argument {key} must be a positive number of milliseconds")
    return max(ms / 1000.0, 0.001)
