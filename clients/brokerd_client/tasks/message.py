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

It also reads the one foreign format a worker runs: a Celery task message
(protocol 2) sent through brokerd's kombu transport, which carries it in the
``x-kombu`` header (:mod:`brokerd_client.celery.envelope`, whose
``from_delivery`` is the only reader of that header). Its headers are mapped
onto the same :class:`TaskHeaders` (``protocol`` = :data:`CELERY_V2`) through
the same checks, so a Celery producer can reach no timer or request a native
one could not. What a brokerd worker cannot honour is refused here, by name:
pickle and yaml bodies, protocol-1 messages, compressions other than zlib.

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
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .exceptions import InvalidTaskMessage

if TYPE_CHECKING:
    from ..message import Message
    from .routing import Route

__all__ = [
    "BROKERD",
    "CELERY_V2",
    "DEFAULT_CONTENT_TYPE",
    "KOMBU_HEADER",
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
#: ``TaskHeaders.protocol`` of a message in brokerd's own format ...
BROKERD: Final = "brokerd"
#: ... and of a Celery protocol-2 message (body ``[args, kwargs, embed]``).
CELERY_V2: Final = "celery-v2"
#: The header a kombu message travels in: ``envelope.ENVELOPE_HEADER`` (a test
#: holds the two together). Not imported from there, because importing
#: ``brokerd_client.celery`` imports kombu, which no native process needs.
KOMBU_HEADER: Final = "x-kombu"


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
    ``eta`` (epoch seconds) is set only by Celery messages, whose ETA the
    broker has already held; ``protocol`` says which body shape to decode.
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
    eta: float | None = None
    protocol: str = BROKERD


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
    if headers.get(KOMBU_HEADER) is not None:  # a nil header is an absent one
        return _parse_celery(headers, message_id)
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


# --- Celery protocol 2 (mixed fleets) ------------------------------------------------

#: Body content types a brokerd worker decodes, with the content encodings
#: kombu gives them.
_CELERY_ENCODINGS: Final = {
    "application/json": frozenset({"utf-8", "utf8"}),
    "application/x-msgpack": frozenset({"binary"}),
}
#: Serializers Celery offers that a brokerd worker refuses, by content type.
_REFUSED_SERIALIZERS: Final = {
    "application/x-python-serialize": "pickle",
    "application/x-yaml": "yaml",
}
#: kombu's ``compression`` header value for zlib (its "gzip"/"zlib" codec).
_KOMBU_ZLIB: Final = "application/x-gzip"
#: Longest ISO-8601 ``eta``/``expires`` accepted (real ones are 32 characters).
_MAX_ISO: Final = 64


def _parse_celery(headers: Mapping[str, Any], message_id: Any) -> TaskHeaders:
    """The :class:`TaskHeaders` of a Celery protocol-2 message in a kombu envelope.

    The task id is the delivery's message id (the transport sets it to
    Celery's task id), else the ``id`` header, else ``correlation_id``.
    """
    from ..celery.envelope import InvalidEnvelope, from_delivery

    try:
        kombu = from_delivery(b"", headers)
    except InvalidEnvelope as exc:
        task_id = message_id if _usable_id(message_id) else None
        raise InvalidTaskMessage(str(exc), header=KOMBU_HEADER, task_id=task_id) from None
    assert kombu is not None  # the header is there
    kh = kombu.headers
    task_id = next(
        (c for c in (message_id, kh.get("id"), kombu.properties.get("correlation_id")) if c),
        None,
    )
    where = "message_id" if message_id else "id"
    try:
        task_id = _id(task_id)
    except _Bad as exc:
        raise InvalidTaskMessage(f"no usable task id ({where} {exc})", header=where) from None
    if "task" not in kh or "id" not in kh:
        raise InvalidTaskMessage(
            "a kombu message without Celery protocol-2 headers ('task' and 'id'): brokerd "
            "workers run only Celery task protocol 2 (Celery's default; protocol 1 messages "
            "and plain kombu messages are not supported)",
            header="task",
            task_id=task_id,
        )
    get = kh.get
    header = "task"
    try:
        name = _name(get("task"))
        header = "lang"
        lang = get("lang")
        if lang is not None and type(lang) is not str:
            raise _Bad(f"must be a str, got {_show(lang)}")
        header = "content_type"
        content_type = _celery_content_type(kombu.content_type, kombu.content_encoding)
        header = "compression"
        compression = _celery_compression(get("compression"))
        header = "retries"
        value = get("retries")
        retries = 0 if value is None else _retries(value)
        header = "timelimit"
        hard, soft = _timelimit(get("timelimit"))
        header = "expires"
        expires = _iso(get("expires"))
        header = "eta"
        eta = _iso(get("eta"))
        header = "ignore_result"
        ignore = _flag(get("ignore_result"))
        header = "parent_id"
        parent = _opt_id(get("parent_id"))
        header = "root_id"
        root = _opt_id(get("root_id"))
    except _Bad as exc:
        raise InvalidTaskMessage(
            f"Celery header {header!r} {exc.args[0]}", header=header, task_id=task_id
        ) from None
    return TaskHeaders(
        name,
        task_id,
        retries,
        content_type,
        compression,
        expires,
        hard,
        soft,
        ignore,
        parent,
        root,
        eta,
        CELERY_V2,
    )


def _usable_id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_TASK_ID


def _celery_content_type(content_type: str, encoding: str) -> str:
    content_type = _content_type(content_type)
    refused = _REFUSED_SERIALIZERS.get(content_type)
    if refused is not None:
        raise _Bad(
            f"{content_type} ({refused}) is refused: brokerd workers decode only json and "
            "msgpack bodies (set task_serializer = 'json' in the Celery app)"
        )
    encodings = _CELERY_ENCODINGS.get(content_type)
    if encodings is None:
        raise _Bad(
            f"{_show(content_type)} is not supported: brokerd workers decode only "
            "application/json and application/x-msgpack bodies"
        )
    if encoding.lower() not in encodings:
        raise _Bad(
            f"{content_type} with content encoding {_show(encoding)} is not supported "
            f"(expected {' or '.join(sorted(encodings))})"
        )
    return content_type


def _celery_compression(value: Any) -> str | None:
    if value is None:
        return None
    if value != _KOMBU_ZLIB:
        raise _Bad(
            f"{_show(value)} is not supported: brokerd workers inflate only {_KOMBU_ZLIB} (zlib)"
        )
    return "zlib"


def _timelimit(value: Any) -> tuple[float | None, float | None]:
    """Celery's ``[hard, soft]`` limits; 0 or None means the task's own, as in Celery."""
    if value is None:
        return None, None
    if type(value) is not list or len(value) != 2:
        raise _Bad(f"must be a list [hard, soft] of seconds or nulls, got {_show(value)}")
    hard, soft = (None if v is None else _limit(v) for v in value)
    return hard or None, soft or None


def _iso(value: Any) -> float | None:
    """Epoch seconds of an ISO-8601 date-time (naive ones are UTC); None when absent."""
    if value is None:
        return None
    if type(value) is not str or not 0 < len(value) <= _MAX_ISO:
        raise _Bad(f"must be an ISO-8601 date-time string, got {_show(value)}")
    try:
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        at = when.timestamp()
    except (ValueError, OverflowError, OSError):
        raise _Bad(f"must be an ISO-8601 date-time string, got {_show(value)}") from None
    return at


def _celery_retry_envelope(packed: Any, retries: int, countdown: float) -> bytes:
    """The ``x-kombu`` header of a Celery message's next attempt: ``retries``
    set and ``eta`` its due time (None when it is due at once), as a Celery
    worker would send it, so a worker of either kind can run it."""
    from ..celery.envelope import KombuMessage, from_delivery, to_message

    kombu = from_delivery(b"", {KOMBU_HEADER: packed})
    assert kombu is not None
    eta = None
    if countdown > 0:
        eta = datetime.fromtimestamp(time.time() + countdown, UTC).isoformat()
    again = KombuMessage(
        b"",
        kombu.content_type,
        kombu.content_encoding,
        {**kombu.headers, "retries": retries, "eta": eta},
        kombu.properties,
    )
    header = (to_message("", "", again).headers or {}).get(KOMBU_HEADER)
    assert type(header) is bytes
    return header


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


def retry_headers(
    headers: Mapping[str, Any], task_id: str, retries: int, countdown: float = 0.0
) -> dict[str, Any]:
    """The headers of a retry: the original ones, without the dead-letter
    history (a retried message starts afresh), with ``retries`` and ``id`` set.

    A Celery message's retry stays a Celery message (its envelope gets the
    new ``retries`` and ``eta``), so either kind of worker in a mixed fleet
    can run the next attempt.
    """
    out = {k: v for k, v in headers.items() if not k.startswith("x-death-")}
    if out.get(KOMBU_HEADER) is not None:
        out[KOMBU_HEADER] = _celery_retry_envelope(out[KOMBU_HEADER], retries, countdown)
        return out
    out["retries"] = retries
    out["id"] = task_id
    return out
