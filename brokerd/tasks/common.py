"""What the task layer's parts share: the client interface, states and limits."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

from ..errors import BrokerError, invalid
from ..vhosts import prefix_of

#: States a task result may be set to; the final ones wake ResultWait.
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
STATES = frozenset({"PENDING", "STARTED", "RETRY"}) | FINAL_STATES

#: Longest time a result, revocation or schedule interval may span.
MAX_TTL = 10 * 365 * 86_400.0
MIN_TTL = 1.0
MAX_TASK_ID = 255


class Client(Protocol):
    """What the task layer needs of a connection (``Session`` provides it)."""

    def reply_ok(self, req: int, value: Any = None) -> None: ...

    def reply_error(self, req: int, exc: BrokerError) -> None: ...

    def send(self, frame: bp.Frame) -> None: ...


#: Whether a client's connection is still open.
Alive = Callable[[Client], bool]


def internal(message: str) -> BrokerError:
    return BrokerError(ErrorCode.INTERNAL, message)


def check_task_id(task_id: str) -> str:
    if not task_id:
        raise invalid("task id must not be empty")
    if len(task_id) - len(prefix_of(task_id)) > MAX_TASK_ID:
        raise invalid(f"task id longer than {MAX_TASK_ID} characters")
    return task_id


def check_range(
    name: str, value: float, low: float, high: float, *, open_low: bool = False
) -> float:
    """``value`` within [low, high] (or (low, high] with ``open_low``), else INVALID_ARGUMENT."""
    ok = math.isfinite(value) and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise invalid(f"{name} must be in {bracket}{low:g}, {high:g}] seconds, got {value!r}")
    return value


def check_ttl(ttl: float) -> float:
    return check_range("ttl", ttl, MIN_TTL, MAX_TTL)
