"""RabbitMQ's declaration bodies as brokerd's declare arguments: a queue's
(``PUT /api/queues`` and a definitions document's queues), an exchange's,
and a binding's properties key.

Both the single-object endpoints (``topology.py``) and the definitions
import (``definitions.py``) read bodies here, so a queue imported from a
RabbitMQ export and the same queue PUT one by one are the same brokerd
queue. The x-argument mapping itself is ``brokerd_protocol.queueargs``,
shared with the SDK's kombu transport. Pure: nothing here changes the
broker; every refusal is a ``ValueError`` whose message names the field.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus, unquote_plus

from brokerd_protocol.queueargs import queue_options

from ..errors import BrokerError
from ..options import QueueOptions
from ..routing import EXCHANGE_TYPES
from ..vhosts import Names

#: RabbitMQ's queue types brokerd's queues stand for (durable in the store).
QUEUE_TYPES = ("classic", "quorum")
#: The properties key of a binding with the empty routing key (RabbitMQ's).
EMPTY_KEY = "~"


def _flag(item: dict[str, Any], key: str, default: bool) -> bool:
    value = item.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be a boolean")
    return value


def queue_settings(item: dict[str, Any], names: Names) -> tuple[bool, dict[str, Any]]:
    """``durable`` and the DeclareQueue options (names as stored) of a
    RabbitMQ queue body: ``durable``, ``auto_delete``, ``arguments`` (``x-``
    arguments translated, brokerd's own option names, as its export writes
    them, taken as they are) and, from newer exports, ``type``."""
    durable = _flag(item, "durable", True)
    arguments = item.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ValueError("arguments must be an object")
    qtype = item.get("type")
    if qtype is not None and qtype not in QUEUE_TYPES:
        raise ValueError(
            f"brokerd has no {qtype!r} queues (type): its queues are durable in its store, "
            "as classic or quorum ones"
        )
    options = queue_options(arguments, native=True)
    if item.get("auto_delete") is not None:
        auto_delete = _flag(item, "auto_delete", False)
        if options.get("auto_delete", auto_delete) != auto_delete:
            raise ValueError("auto_delete and arguments.auto_delete disagree")
        if auto_delete:
            options["auto_delete"] = True
    try:
        dlq = options.get("dead_letter_queue")
        if isinstance(dlq, str) and dlq:
            options["dead_letter_queue"] = names.inn(dlq)
        QueueOptions.from_wire(options)
    except BrokerError as exc:
        raise ValueError(exc.message) from None
    return durable, options


def exchange_settings(item: dict[str, Any]) -> tuple[str, bool]:
    """``type`` and ``durable`` of a RabbitMQ exchange body; what brokerd's
    exchanges do not have (auto-delete, internal, arguments) is refused
    rather than dropped."""
    etype = item.get("type")
    if not isinstance(etype, str) or etype not in EXCHANGE_TYPES:
        raise ValueError(
            f"type must be one of {', '.join(sorted(EXCHANGE_TYPES))} (brokerd has no "
            f"{etype!r} exchanges)"
        )
    durable = _flag(item, "durable", True)
    if _flag(item, "auto_delete", False):
        raise ValueError("brokerd has no auto-delete exchanges: an exchange lives until deleted")
    if _flag(item, "internal", False):
        raise ValueError(
            "brokerd has no internal exchanges: refuse publishing to it with the users' "
            "write permissions instead"
        )
    arguments = item.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ValueError("arguments must be an object")
    for name in sorted(k for k, v in arguments.items() if v is not None):
        instead = (
            "brokerd has no alternate exchanges; a publish that routes nowhere is confirmed "
            "as unroutable, or refused when mandatory"
            if name == "alternate-exchange"
            else "brokerd's exchanges take no arguments"
        )
        raise ValueError(f"exchange argument {name!r} is not supported: {instead}")
    return etype, durable


def binding_arguments(item: dict[str, Any]) -> None:
    """brokerd's bindings are a routing key only: arguments are refused."""
    arguments = item.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ValueError("arguments must be an object")
    if any(v is not None for v in arguments.values()):
        raise ValueError(
            "brokerd's bindings take no arguments (it has no headers exchange): bind with a "
            "routing key"
        )


def properties_key(routing_key: str) -> str:
    """RabbitMQ's ``properties_key`` of a binding without arguments: ``~``
    for the empty key, else the key form-escaped (``~`` too, so no key
    looks like the empty one). A path carries it percent-escaped once more."""
    if not routing_key:
        return EMPTY_KEY
    return quote_plus(routing_key, safe="").replace("~", "%7E")


def routing_key_of(props: str) -> str:
    """The routing key a ``properties_key`` (as a path segment decodes to) names."""
    return "" if props == EMPTY_KEY else unquote_plus(props, errors="strict")
