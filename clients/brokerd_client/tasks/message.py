"""The task message format: built by producers, parsed by workers, rebuilt for retries.

This module is the one place that knows the format (the contract between
producers, workers, the broker's revocation filter and its scheduler):

* body: ``{"args": [...], "kwargs": {...}}`` serialized with the task
  serializer, optionally zlib-compressed (see :mod:`.serialization`);
* ``message_id`` = the task id (the broker revokes by message id; a schedule
  firing gets its message id from the broker);
* headers: ``task``, ``id``, ``retries``, ``content-type``, and when set
  ``compression``, ``expires`` (epoch seconds) or, on schedule firings,
  ``expires_in`` (seconds after ``x-scheduled-at``), ``time_limit``,
  ``soft_time_limit``, ``ignore_result``, ``parent_id``, ``root_id``.

:func:`parse` is the worker's single gate: every header the worker acts on
is checked there, and the result is a :class:`TaskHeaders` whose values are
known to be of the right type and within bounds (a time limit is a finite
number of seconds, ``0 <= x <= MAX_TIME_LIMIT``, so no timer can be armed
with NaN). Anything else is one :class:`InvalidTaskMessage` naming the header,
carrying the task id when that one is usable, so the worker records a
FAILURE under it (or, without one, dead-letters the message with the reason).

:func:`build_headers` uses the same checks, so what a producer sends a worker
accepts, and a mistake is a ``ValueError`` in the caller at ``delay()`` time.
The wire values are written as given (an ``int`` time limit stays an int).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .exceptions import InvalidTaskMessage

if TYPE_CHECKING:
    from ..message import Message
    from .routing import Route

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "MAX_RETRIES",
    "MAX_TASK_ID",
    "MAX_TASK_NAME",
    "MAX_TIME_LIMIT",
    "TaskHeaders",
    "TaskMessage",
    "build_headers",
    "parse",
    "retry_headers",
]

#: Longest task id the broker stores (SPEC §14.1); also bounds parent/root ids.
MAX_TASK_ID: Final = 255
#: Longest task name accepted: far above any real one, short enough to quote.
MAX_TASK_NAME: Final = 1024
#: Longest time limit, in seconds: ten years, as the broker's longest delay.
MAX_TIME_LIMIT: Final = 315_360_000.0
#: Most retries a message may say it has had.
MAX_RETRIES: Final = 2**31 - 1
#: Longest content-type accepted.
MAX_CONTENT_TYPE: Final = 255
#: The content type of a message that names none.
DEFAULT_CONTENT_TYPE: Final = "application/json"
COMPRESSIONS: Final = frozenset({"zlib"})


class TaskMessage:
    """A built task message: the wire :class:`~brokerd_client.Message`, its
    task id and its route (which queue to declare before publishing it)."""

    __slots__ = ("message", "route", "task_id")

    def __init__(self, task_id: str, message: Message, route: Route) -> None:
        self.task_id = task_id
        self.message = message
        self.route = route


class TaskHeaders(NamedTuple):
    """A task message's headers, validated (a tuple: cheap to build per message).

    ``expires`` is absolute (epoch seconds) whichever header carried it;
    ``None`` for a limit or flag means "not set: use the task's own".
    """

    task: str
    id: str
    retries: int = 0
    content_type: str = DEFAULT_CONTENT_TYPE
    compression: str | None = None
    expires: float | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    ignore_result: bool | None = None
    parent_id: str | None = None
    root_id: str | None = None


class _Bad(ValueError):
    """A header value a checker refuses; the text says what was expected."""


def _show(value: Any) -> str:
    """``repr(value)``, cut short: an error must never carry a huge value."""
    text = repr(value)
    if len(text) <= 80:
        return text
    size = f" ({len(value)} long)" if isinstance(value, str | bytes) else ""
    return f"{text[:60]}...{size}"


def _id(value: Any) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_TASK_ID:
        raise _Bad(f"must be a str of 1..{MAX_TASK_ID} characters, got {_show(value)}")
    return value


def _name(value: Any) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_TASK_NAME:
        raise _Bad(f"must be a str of 1..{MAX_TASK_NAME} characters, got {_show(value)}")
    return value


def _opt_id(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not str or len(value) > MAX_TASK_ID:
        raise _Bad(f"must be a str of at most {MAX_TASK_ID} characters, got {_show(value)}")
    return value


def _retries(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_RETRIES:
        raise _Bad(f"must be an int within 0..{MAX_RETRIES}, got {_show(value)}")
    return value


def _number(value: Any) -> float:
    """A finite int or float (never a bool), as a float."""
    if (type(value) is not float and type(value) is not int) or not math.isfinite(value):
        raise _Bad(f"must be a finite number, got {_show(value)}")
    return float(value)


def _limit(value: Any) -> float:
    if (
        (type(value) is not float and type(value) is not int)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_TIME_LIMIT
    ):
        raise _Bad(
            f"must be a finite number of seconds within 0..{MAX_TIME_LIMIT:.0f}, got {_show(value)}"
        )
    return float(value)


def _content_type(value: Any) -> str:
    if type(value) is not str or len(value) > MAX_CONTENT_TYPE:
        raise _Bad(f"must be a str of at most {MAX_CONTENT_TYPE} characters, got {_show(value)}")
    return value


def _compression(value: Any) -> str | None:
    if value is not None and value not in COMPRESSIONS:
        raise _Bad(f"must be one of {sorted(COMPRESSIONS)} or absent, got {_show(value)}")
    return None if value is None else str(value)


def _flag(value: Any) -> bool | None:
    if value is not None and type(value) is not bool:
        raise _Bad(f"must be true or false, got {_show(value)}")
    return value


# --- parsing (the worker) ---------------------------------------------------------


def parse(
    headers: Mapping[str, Any], message_id: Any = None, timestamp: float | None = None
) -> TaskHeaders:
    """Validate a delivered task message's headers; see the module docstring.

    ``message_id`` and ``timestamp`` are the delivery's: the message id names
    the task (the ``id`` header only when there is none), and the timestamp
    is the base of a schedule firing's ``expires_in`` without ``x-scheduled-at``.
    Raises :class:`InvalidTaskMessage`.
    """
    get = headers.get
    where = "message_id" if message_id else "id"
    try:
        task_id = _id(message_id if message_id else get("id"))
    except _Bad as exc:
        raise InvalidTaskMessage(f"no usable task id ({where} {exc})", header=where) from None
    header = "task"
    try:
        if "task" not in headers:
            raise _Bad("is missing")
        name = _name(get("task"))
        header = "retries"
        value = get("retries")
        retries = 0 if value is None else _retries(value)
        header = "content-type"
        value = get("content-type", DEFAULT_CONTENT_TYPE)
        content_type = _content_type(value)
        header = "compression"
        compression = _compression(get("compression"))
        expires = _expires(headers, timestamp)
        header = "time_limit"
        value = get("time_limit")
        hard = None if value is None else _limit(value)
        header = "soft_time_limit"
        value = get("soft_time_limit")
        soft = None if value is None else _limit(value)
        header = "ignore_result"
        ignore = _flag(get("ignore_result"))
        header = "parent_id"
        parent = _opt_id(get("parent_id"))
        header = "root_id"
        root = _opt_id(get("root_id"))
    except _Bad as exc:
        where = exc.args[1] if len(exc.args) > 1 else header
        raise InvalidTaskMessage(
            f"header {where!r} {exc.args[0]}", header=where, task_id=task_id
        ) from None
    return TaskHeaders(
        name, task_id, retries, content_type, compression, expires, hard, soft, ignore, parent, root
    )


def _expires(headers: Mapping[str, Any], timestamp: float | None) -> float | None:
    """Absolute expiry: ``expires``, or a schedule firing's ``expires_in`` after
    its due time (``x-scheduled-at``, else the publish ``timestamp``)."""
    value = headers.get("expires")
    if value is not None:
        try:
            return _number(value)
        except _Bad as exc:
            raise _Bad(exc.args[0], "expires") from None
    value = headers.get("expires_in")
    if value is None:
        return None
    try:
        relative = _number(value)
    except _Bad as exc:
        raise _Bad(exc.args[0], "expires_in") from None
    base: Any = headers.get("x-scheduled-at")
    if base is not None:
        try:
            base = _number(base)
        except _Bad as exc:
            raise _Bad(exc.args[0], "x-scheduled-at") from None
    elif type(timestamp) is float and math.isfinite(timestamp):
        base = timestamp
    else:
        return None
    expires = base + relative
    if not math.isfinite(expires):
        raise _Bad(f"puts the expiry out of range ({_show(relative)})", "expires_in")
    return float(expires)


# --- building (producers, schedules, retries) ------------------------------------------


def _checked(name: str, check: Any, value: Any) -> Any:
    try:
        return check(value)
    except _Bad as exc:
        raise ValueError(f"{name} {exc.args[0]}") from None


def build_headers(
    *,
    task: str,
    task_id: str | None,
    content_type: str,
    retries: int = 0,
    compression: str | None = None,
    expires: float | None = None,
    expires_in: float | None = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    parent_id: str | None = None,
    root_id: str | None = None,
    ignore_result: bool | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The headers of a task message, checked as :func:`parse` will check them.

    ``task_id`` is ``None`` for schedule firings (the broker names each one);
    ``extra`` headers are kept but never override the task's own. Raises
    ``ValueError`` naming the option.
    """
    headers: dict[str, Any] = {"task": _checked("task name", _name, task)}
    if task_id is not None:
        headers["id"] = _checked("task_id", _id, task_id)
    headers["retries"] = _checked("retries", _retries, retries)
    headers["content-type"] = _checked("content-type", _content_type, content_type)
    if compression:
        headers["compression"] = _checked("compression", _compression, compression)
    if expires is not None:
        headers["expires"] = _checked("expires", _number, expires)
    if expires_in is not None:
        headers["expires_in"] = _checked("expires", _number, expires_in)
    for key, limit in (("time_limit", time_limit), ("soft_time_limit", soft_time_limit)):
        if limit is not None:
            _checked(key, _limit, limit)
            headers[key] = limit  # as given: an int stays an int on the wire
    for key, ident in (("parent_id", parent_id), ("root_id", root_id)):
        if ident is not None:
            headers[key] = _checked(key, _opt_id, ident)
    if ignore_result is not None:
        headers["ignore_result"] = bool(ignore_result)
    if extra:
        headers = {**extra, **headers}
    return headers


def retry_headers(headers: Mapping[str, Any], task_id: str, retries: int) -> dict[str, Any]:
    """The headers of a retry: the original ones, without the dead-letter
    history (a retried message starts afresh), with ``retries`` and ``id`` set."""
    out = {k: v for k, v in headers.items() if not k.startswith("x-death-")}
    out["retries"] = retries
    out["id"] = task_id
    return out
