"""Encoding of task bodies and result payloads: json or msgpack, never pickle.

Task message body: ``{"args": [...], "kwargs": {...}}`` serialized with the
task serializer, optionally zlib-compressed; the ``content-type`` and
``compression`` headers say which, so a worker can refuse what it does not
accept *before* decoding anything.

Result payload: one tag byte (``b"j"`` json, ``b"m"`` msgpack) followed by the
serialized map ``{"result": value}`` or ``{"exc_type", "exc_module",
"exc_message", "traceback"}``. The broker stores it opaque; the tag lets any
reader decode it without knowing which app wrote it. A FAILURE written by a
native worker may add ``"task_message"``: the task's message as delivered
(:func:`pack_task_message`), which lets the management API send it again
(retry). Readers that do not know the key ignore it.

Bounds, so that no message can make a reader recurse or allocate without
limit: a body or payload nests at most ``MAX_DEPTH`` containers deep (the
encoder refuses deeper values in the caller, the decoder refuses them as a
:class:`DecodeError` instead of a ``RecursionError``), and a zlib body is
inflated incrementally up to ``max_decompressed`` bytes (the App setting
``task_max_decompressed_size``, by default the broker's frame limit) and
refused past it, before the rest is ever produced.

A Celery protocol-2 body (``celery=True``, see ``message.CELERY_V2``) is
``[args, kwargs, embed]``; its json may hold kombu's typed values
(``{"__type__": "datetime", "__value__": ...}``), which are decoded to the
values a Celery worker would pass (datetime, date, time, Decimal, UUID,
bytes) and nothing else. ``embed`` holds Celery's canvas (callbacks,
errbacks, chain, chord), which a brokerd worker cannot run: a body with any
is refused (:data:`CANVAS_REFUSED`) rather than run with the rest of its
workflow silently dropped.

Values that json and msgpack cannot carry natively (datetimes, UUIDs,
decimals) are sent as ISO strings / plain strings, one way: a task receives a
``str`` where the caller passed a ``datetime``, as with Celery's json.
Anything else unserializable raises :class:`EncodeError` at ``delay()`` time,
in the caller, not later in a worker.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import decimal
import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack

from brokerd_protocol import DEFAULT_MAX_FRAME

from .exceptions import ContentDisallowed, InvalidTaskMessage, TaskError

__all__ = [
    "CANVAS_REFUSED",
    "CONTENT_TYPES",
    "DEFAULT_MAX_DECOMPRESSED",
    "MAX_DEPTH",
    "SERIALIZERS",
    "DecodeError",
    "EncodeError",
    "content_type_of",
    "decode_body",
    "decode_result",
    "decompress",
    "encode_body",
    "encode_error",
    "encode_result",
    "pack_task_message",
    "serializer_for_content_type",
]

#: Serializer name -> MIME type carried in the ``content-type`` header.
CONTENT_TYPES: Final[dict[str, str]] = {
    "json": "application/json",
    "msgpack": "application/x-msgpack",
}
SERIALIZERS: Final = frozenset(CONTENT_TYPES)
_BY_MIME: Final = {mime: name for name, mime in CONTENT_TYPES.items()}
_TAGS: Final = {"json": b"j", "msgpack": b"m"}
_TAG_J: Final = ord("j")
_TAG_M: Final = ord("m")

#: Containers a body or result may nest, the outermost included (serde_json's
#: default too): far beyond real arguments, far below the interpreter's
#: recursion limit that json decoding, repr() and task code run into.
MAX_DEPTH: Final = 128
#: Default cap on an inflated zlib body: the broker's default frame limit.
DEFAULT_MAX_DECOMPRESSED: Final = DEFAULT_MAX_FRAME

#: ``bytes.translate`` deletion tables leaving only the bytes that can open a
#: container, so ``len()`` of the rest bounds the nesting depth from above in
#: one C-speed pass; only a value with more containers than ``MAX_DEPTH`` is
#: walked to measure its real depth.
_JSON_NOT_OPENERS: Final = bytes(b for b in range(256) if b not in b"[{")
_MSGPACK_NOT_OPENERS: Final = bytes(
    b for b in range(256) if not (0x80 <= b <= 0x9F or b in (0xDC, 0xDD, 0xDE, 0xDF))
)
_NOT_OPENERS: Final = {"json": _JSON_NOT_OPENERS, "msgpack": _MSGPACK_NOT_OPENERS}


#: Why a Celery message carrying canvas is refused (the FAILURE's message).
CANVAS_REFUSED: Final = (
    "Celery canvas (chain/chord callbacks) needs a Celery worker; run this task on a Celery worker"
)
#: The keys of a Celery body's ``embed`` that hold canvas.
_CANVAS_KEYS: Final = ("callbacks", "errbacks", "chain", "chord")
#: The empty ``embed`` of a Celery body this worker writes (a retry's new arguments).
_NO_CANVAS: Final = dict.fromkeys(_CANVAS_KEYS)


class EncodeError(TaskError, TypeError):
    """Arguments or a return value cannot be serialized with the chosen serializer."""


class DecodeError(TaskError, ValueError):
    """A body or payload is not valid for its declared content type."""


def _default(obj: Any) -> Any:
    """Lossy but predictable conversions for common non-JSON types."""
    if isinstance(obj, _dt.datetime | _dt.date | _dt.time):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID | decimal.Decimal):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not serializable")


_json_encoder = json.JSONEncoder(separators=(",", ":"), default=_default, ensure_ascii=False)
_json_decoder = json.JSONDecoder()


def _uuid(value: Any) -> uuid.UUID:
    if type(value) is not dict or type(value.get("hex")) is not str:
        raise ValueError("a kombu uuid value must be a map with a 'hex' string")
    return uuid.UUID(hex=value["hex"])


def _b64(value: Any) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64 value: {exc}") from None


#: kombu's typed json values (``{"__type__": t, "__value__": v}``): how each
#: ``t`` is decoded. Constructors of plain value types only.
_KOMBU_TYPES: Final[dict[str, Any]] = {
    "datetime": _dt.datetime.fromisoformat,
    "date": lambda v: _dt.datetime.fromisoformat(v).date(),
    "time": _dt.time.fromisoformat,
    "decimal": decimal.Decimal,
    "uuid": _uuid,
    "bytes": lambda v: v.encode(),
    "base64": _b64,
}
_KOMBU_TYPE_KEYS: Final = frozenset({"__type__", "__value__"})


def _kombu_value(obj: dict[str, Any]) -> Any:
    if len(obj) != 2 or obj.keys() != _KOMBU_TYPE_KEYS:
        return obj
    kind = obj["__type__"]
    decode = _KOMBU_TYPES.get(kind) if type(kind) is str else None
    if decode is None:
        raise ValueError(f"unsupported kombu json type {str(kind)[:40]!r}")
    try:
        return decode(obj["__value__"])
    except (TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        raise ValueError(f"invalid kombu json {kind} value: {str(exc)[:80]}") from None


_kombu_json_decoder = json.JSONDecoder(object_hook=_kombu_value)


def _msgpack_default(obj: Any) -> Any:
    return _default(obj)


def _too_deep(obj: Any, limit: int) -> bool:
    """True if ``obj`` nests more than ``limit`` containers (an iterative walk)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        items = value.values() if isinstance(value, Mapping) else value
        for item in items:
            if isinstance(item, Mapping | list | tuple | set | frozenset):
                stack.append((item, depth + 1))
    return False


def _check_depth(data: bytes, serializer: str, obj: Any, error: type[TaskError]) -> None:
    if len(data.translate(None, _NOT_OPENERS[serializer])) <= MAX_DEPTH:
        return  # fewer containers in all than the limit: nothing to walk
    if isinstance(obj, Mapping | list | tuple | set | frozenset) and _too_deep(obj, MAX_DEPTH):
        raise error(f"{serializer} value nested deeper than {MAX_DEPTH} levels")


def dumps(obj: Any, serializer: str) -> bytes:
    """Serialize ``obj``; :class:`EncodeError` names what could not be encoded
    (also a value nested deeper than ``MAX_DEPTH``, which no reader accepts)."""
    try:
        if serializer == "json":
            data = _json_encoder.encode(obj).encode()
        elif serializer == "msgpack":
            data = msgpack.packb(obj, use_bin_type=True, default=_msgpack_default)
        else:
            raise ContentDisallowed(f"unknown serializer {serializer!r}")
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            raise EncodeError(
                f"cannot encode with {serializer}: value nested deeper than {MAX_DEPTH} levels"
            ) from None
        raise EncodeError(f"cannot encode with {serializer}: {exc}") from exc
    _check_depth(data, serializer, obj, EncodeError)
    return data


def loads(data: bytes, serializer: str, *, kombu_types: bool = False) -> Any:
    """Deserialize ``data``; msgpack without object hooks (no code runs on load).

    ``kombu_types`` decodes kombu's typed json values (Celery bodies only).

    Nesting deeper than ``MAX_DEPTH`` is a :class:`DecodeError`, however deep:
    the json decoder's own recursion guard and msgpack's stack limit stop
    what is deeper than they can take, the depth check the rest.
    """
    try:
        if serializer == "json":
            decoder = _kombu_json_decoder if kombu_types else _json_decoder
            obj = decoder.decode(data.decode())
        elif serializer == "msgpack":
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        else:
            raise ContentDisallowed(f"unknown serializer {serializer!r}")
    except RecursionError:
        raise DecodeError(f"{serializer} value nested deeper than {MAX_DEPTH} levels") from None
    except msgpack.StackError:
        raise DecodeError(f"{serializer} value nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, TypeError, UnicodeDecodeError, msgpack.ExtraData) as exc:
        raise DecodeError(f"invalid {serializer} data: {exc}") from exc
    _check_depth(data, serializer, obj, DecodeError)
    return obj


def decompress(data: bytes, limit: int) -> bytes:
    """Inflate a zlib body, refusing it as soon as it passes ``limit`` bytes.

    The output is produced incrementally and never beyond ``limit + 1``
    bytes, so a bomb (1 MiB that inflates to 1 GiB) costs at most the cap.
    Trailing bytes after the zlib stream are ignored, as by ``zlib.decompress``.
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise DecodeError(f"invalid zlib data: {exc}") from exc
    if len(out) > limit:
        raise DecodeError(
            f"zlib body inflates to more than {limit} bytes "
            "(the worker's task_max_decompressed_size)"
        )
    if not inflater.eof:
        raise DecodeError("invalid zlib data: incomplete or truncated stream")
    return out


def content_type_of(serializer: str) -> str:
    return CONTENT_TYPES[serializer]


def serializer_for_content_type(content_type: str, accept: frozenset[str]) -> str:
    """The serializer for a message's ``content-type`` if ``accept`` allows it.

    Raises :class:`ContentDisallowed` otherwise, so the worker refuses the
    message without decoding a byte of it.
    """
    name = _BY_MIME.get(content_type)
    if name is None or name not in accept:
        allowed = ", ".join(sorted(accept))
        raise ContentDisallowed(
            f"refusing message with content-type {content_type!r}: accept_content is [{allowed}]"
        )
    return name


# --- task bodies --------------------------------------------------------------


def encode_body(
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    serializer: str,
    compression: str | None,
    *,
    celery: bool = False,
) -> bytes:
    """The message body for one task call (``celery``: a Celery protocol-2
    body without canvas, for the retry of a Celery message)."""
    if not isinstance(args, list | tuple):
        raise TypeError(f"task args must be a list or tuple, not {type(args).__name__}")
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"task kwargs must be a mapping, not {type(kwargs).__name__}")
    if celery:
        data = dumps([args, kwargs, _NO_CANVAS], serializer)
    else:
        data = dumps({"args": args, "kwargs": kwargs}, serializer)
    if compression == "zlib":
        return zlib.compress(data)
    return data


def decode_body(
    body: bytes,
    serializer: str,
    compression: str | None,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
    *,
    celery: bool = False,
) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` from a message body; :class:`DecodeError` if malformed,
    nested too deep, or inflating to more than ``max_decompressed`` bytes.

    ``celery``: a Celery protocol-2 body; one carrying canvas raises
    :class:`InvalidTaskMessage` (:data:`CANVAS_REFUSED`).
    """
    if compression:
        if compression != "zlib":
            raise DecodeError(f"unsupported compression {compression!r}")
        body = decompress(body, max_decompressed)
    if celery:
        args, kwargs = _celery_body(loads(body, serializer, kombu_types=True))
    else:
        obj = loads(body, serializer)
        if type(obj) is not dict:
            raise DecodeError("task body must be a map with 'args' and 'kwargs'")
        args = obj.get("args", [])
        kwargs = obj.get("kwargs", {})
    if type(args) is not list or type(kwargs) is not dict:
        raise DecodeError("task body 'args' must be a list and 'kwargs' a map")
    if any(type(k) is not str for k in kwargs):
        raise DecodeError("task body 'kwargs' keys must be strings")
    return args, kwargs


def _celery_body(obj: Any) -> tuple[Any, Any]:
    """``args, kwargs`` of a decoded Celery body, refusing canvas."""
    if type(obj) is not list or len(obj) != 3:
        raise DecodeError("Celery task body must be a list [args, kwargs, embed]")
    args, kwargs, embed = obj
    if embed is not None:
        if type(embed) is not dict:
            raise DecodeError("Celery task body 'embed' must be a map")
        canvas = [key for key in _CANVAS_KEYS if embed.get(key)]
        if canvas:
            raise InvalidTaskMessage(
                f"{CANVAS_REFUSED} (it carries {', '.join(canvas)})", header="embed"
            )
    return args, kwargs


# --- result payloads ------------------------------------------------------------


def encode_result(value: Any, serializer: str) -> bytes:
    """Payload of a SUCCESS state."""
    return _TAGS[serializer] + dumps({"result": value}, serializer)


def encode_error(
    exc_type: str,
    exc_module: str,
    exc_message: str,
    traceback: str,
    serializer: str,
    task_message: bytes | None = None,
) -> bytes:
    """Payload of a FAILURE / RETRY / REVOKED state; ``task_message`` (from
    :func:`pack_task_message`) is stored under ``"task_message"``, as bin in
    msgpack and as base64 text in json (which has no bytes)."""
    data: dict[str, Any] = {
        "exc_type": exc_type,
        "exc_module": exc_module,
        "exc_message": exc_message,
        "traceback": traceback,
    }
    if task_message is not None:
        if serializer == "json":
            data["task_message"] = base64.b64encode(task_message).decode("ascii")
        else:
            data["task_message"] = task_message
    return _TAGS[serializer] + dumps(data, serializer)


def pack_task_message(
    exchange: str,
    routing_key: str,
    headers: Mapping[str, Any],
    body: bytes,
    priority: int,
) -> bytes:
    """A task message as a worker received it, for the FAILURE that stores it.

    msgpack, whatever the result serializer, because headers may hold bytes
    that json cannot carry: the map ``{"exchange", "routing_key", "headers",
    "body", "priority"}``. The broker's management plane reads it (without
    object hooks) to send the message again; ``brokerd.management.retry``
    is its one reader, and a test holds the two together.
    """
    return msgpack.packb(
        {
            "exchange": exchange,
            "routing_key": routing_key,
            "headers": dict(headers),
            "body": body,
            "priority": priority,
        },
        use_bin_type=True,
    )


def decode_result(payload: bytes) -> dict[str, Any]:
    """The map inside a result payload; ``{}`` for an empty payload (the
    broker records REVOKED itself, without one)."""
    if not payload:
        return {}
    tag = payload[0]
    if tag == _TAG_J:
        obj = loads(payload[1:], "json")
    elif tag == _TAG_M:
        obj = loads(payload[1:], "msgpack")
    else:
        raise DecodeError(f"unknown result payload tag {payload[:1]!r}")
    if type(obj) is not dict:
        raise DecodeError("result payload must be a map")
    return obj
