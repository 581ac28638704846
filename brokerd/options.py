"""Validation of what clients ask for: queue options and publish properties.

Everything a client sends is checked here, once, into typed values, so the
core can trust its inputs and every bad value gets an INVALID_ARGUMENT that
names the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from brokerd_protocol import MAX_PREFETCH, MAX_PRIORITY

from .errors import invalid
from .vhosts import MARK, split

#: Longest lease or extension a client may ask for (one day).
MAX_LEASE = 86_400.0
MAX_NAME = 255
#: Longest TTL or delay accepted (ten years); beyond it a value is a mistake.
TEN_YEARS = 10 * 365 * 86_400.0
#: Latest ``not_before`` accepted: the end of year 9999.
LATEST_EPOCH = 253_402_300_799.0
OVERFLOW_MODES = ("reject_publish", "drop_head")


def _number(name: str, value: Any, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{name} must be a number")
    v = float(value)
    if not math.isfinite(v) or not low <= v <= high:
        raise invalid(f"{name} must be between {low:g} and {high:g}")
    return v


def _opt_int(name: str, value: Any, low: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise invalid(f"{name} must be an integer >= {low}")
    return value


def check_prefetch(prefetch: int) -> int:
    if not 1 <= prefetch <= MAX_PREFETCH:
        raise invalid(f"prefetch must be between 1 and {MAX_PREFETCH}")
    return prefetch


def check_lease(seconds: float, what: str = "lease") -> float:
    """A lease or an extension: 0.001 s to ``MAX_LEASE``."""
    if not 0.001 <= seconds <= MAX_LEASE:
        raise invalid(f"{what} must be between 0.001 and {MAX_LEASE:g} seconds")
    return seconds


def check_delay(delay: float | None) -> float | None:
    """A nack's delay: none, or 0 to ten years."""
    if delay is not None and not 0 <= delay <= TEN_YEARS:
        raise invalid("delay must be between 0 and ten years")
    return delay


def check_name(kind: str, name: str, *, allow_empty: bool = False) -> str:
    """A name as stored: a vhost's internal name (``vhosts.py``) is checked
    on its client part, which must not be empty, too long or hold a control
    character."""
    bare = split(name)[1] if name.startswith(MARK) else name
    if not bare and not allow_empty:
        raise invalid(f"{kind} name must not be empty")
    if len(bare) > MAX_NAME:
        raise invalid(f"{kind} name longer than {MAX_NAME} characters")
    if not bare.isprintable() and any(ord(c) < 32 or ord(c) == 127 for c in bare):
        raise invalid(f"{kind} name must not contain control characters")
    return name


@dataclass(frozen=True, slots=True)
class QueueOptions:
    lease: float = 30.0
    max_deliveries: int | None = None
    dead_letter_queue: str | None = None
    max_length: int | None = None
    overflow: str = "reject_publish"
    message_ttl: float | None = None
    #: Deleted when its last consumer goes, once it has had one (``lifetimes.py``).
    auto_delete: bool = False
    #: Deleted after this many seconds unused: no consumer, no declare, no stats.
    expires: float | None = None
    #: RabbitMQ's ``x-max-priority`` (1-255), as declared: a publish above it
    #: enters this queue at it. None: every priority 0-9 counts as given.
    max_priority: int | None = None

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> QueueOptions:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise invalid(f"unknown queue option(s): {', '.join(sorted(unknown))}")
        lease = _number("lease", raw.get("lease", 30.0), low=0.001, high=MAX_LEASE)
        dlq = raw.get("dead_letter_queue")
        if dlq is not None and (not isinstance(dlq, str) or not dlq):
            raise invalid("dead_letter_queue must be a queue name")
        overflow = raw.get("overflow", "reject_publish")
        if overflow not in OVERFLOW_MODES:
            raise invalid(f"overflow must be one of {', '.join(OVERFLOW_MODES)}")
        ttl = raw.get("message_ttl")
        if ttl is not None:
            ttl = _number("message_ttl", ttl, low=0.001, high=TEN_YEARS)
        auto_delete = raw.get("auto_delete", False)
        if not isinstance(auto_delete, bool):
            raise invalid("auto_delete must be a boolean")
        expires = raw.get("expires")
        if expires is not None:
            expires = _number("expires", expires, low=0.001, high=TEN_YEARS)
        max_priority = raw.get("max_priority")
        if max_priority is not None and (
            isinstance(max_priority, bool)
            or not isinstance(max_priority, int)
            or not 1 <= max_priority <= 255
        ):
            raise invalid("max_priority must be an integer from 1 to 255")
        return cls(
            lease=lease,
            max_deliveries=_opt_int("max_deliveries", raw.get("max_deliveries"), 1),
            dead_letter_queue=dlq,
            max_length=_opt_int("max_length", raw.get("max_length"), 0),
            overflow=overflow,
            message_ttl=ttl,
            auto_delete=auto_delete,
            expires=expires,
            max_priority=max_priority,
        )

    def to_wire(self) -> dict[str, Any]:
        # Every field is a scalar: a plain dict (``asdict`` deep-copies, and
        # dominated the cost of listing a thousand queues).
        wire = {name: getattr(self, name) for name in _QUEUE_OPTION_FIELDS}
        if self.max_priority is None:
            # Written only when set: a queue without it is stored as before,
            # and a brokerd from before it still reads the options back.
            del wire["max_priority"]
        return wire


_QUEUE_OPTION_FIELDS = tuple(f.name for f in fields(QueueOptions))
_SCALARS = (str, int, float, bool, bytes, type(None))
_PROPS = frozenset({"headers", "delay", "not_before", "priority", "ttl", "message_id", "mandatory"})


@dataclass(frozen=True, slots=True)
class PublishProps:
    headers: dict[str, Any] | None = None
    #: Absolute wall-clock second before which the message must not be delivered.
    ready_at: float | None = None
    priority: int = 0
    ttl: float | None = None
    message_id: str | None = None
    mandatory: bool = False


_PLAIN = PublishProps()


def parse_props(raw: dict[str, Any], now: float) -> PublishProps:
    if not raw:
        return _PLAIN
    unknown = raw.keys() - _PROPS
    if unknown:
        raise invalid(f"unknown publish propert(y/ies): {', '.join(sorted(unknown))}")
    headers = raw.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise invalid("headers must be a map")
        for k, v in headers.items():
            if not isinstance(v, _SCALARS):
                raise invalid(f"header {k!r} must be a string, number, boolean, bytes or null")
        headers = headers or None
    ready_at: float | None = None
    delay = raw.get("delay")
    if delay is not None:
        d = _number("delay", delay, low=0.0, high=TEN_YEARS)
        if d > 0:
            ready_at = now + d
    not_before = raw.get("not_before")
    if not_before is not None:
        nb = _number("not_before", not_before, low=0.0, high=LATEST_EPOCH)
        if nb > now:
            ready_at = nb if ready_at is None else max(ready_at, nb)
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise invalid("priority must be an integer")
    if not 0 <= priority <= MAX_PRIORITY:
        raise invalid(f"priority must be between 0 and {MAX_PRIORITY}")
    ttl = raw.get("ttl")
    if ttl is not None:
        ttl = _number("ttl", ttl, low=0.001, high=TEN_YEARS)
    message_id = raw.get("message_id")
    if message_id is not None and not isinstance(message_id, str):
        raise invalid("message_id must be a string")
    mandatory = raw.get("mandatory", False)
    if not isinstance(mandatory, bool):
        raise invalid("mandatory must be a boolean")
    return PublishProps(headers, ready_at, priority, ttl, message_id, mandatory)
