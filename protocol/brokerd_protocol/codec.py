"""Sans-IO codec: frames to bytes and bytes to frames, nothing else.

No sockets and no event loop live here, so the same code serves the asyncio
server, the async client, the blocking client and the tests. The decoder
checks every declared length against the frame limit before it buffers the
payload, and validates each field's type, so a hostile peer can make it raise
``ProtocolError`` but never allocate more than one frame or crash. List
fields that carry batches (delivery ids, task ids, topics) have a cap per
frame family (``limits.py``, SPEC §13), checked before their items are, so
no handler ever sees, and no peer can make it walk, an oversized list.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import MISSING, fields
from typing import Any

import msgpack

from . import frames as f
from .errors import FrameTooLarge, ProtocolError
from .limits import (
    DEFAULT_MAX_FRAME,
    HARD_MAX_FRAME,
    HEADER_SIZE,
    MAX_DEPTH,
    MAX_RESULT_DELETE_IDS,
    MAX_RESULT_GET_IDS,
    MAX_REVOKE_IDS,
    MAX_SETTLE_IDS,
    MAX_SUBSCRIBE_TOPICS,
)

_LENGTH = struct.Struct(">I")

Checker = Callable[[Any], Any]


def _int(v: Any) -> int:
    if type(v) is not int:
        raise ProtocolError(f"expected an integer, got {type(v).__name__}")
    return v


def _str(v: Any) -> str:
    if type(v) is not str:
        raise ProtocolError(f"expected a string, got {type(v).__name__}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise ProtocolError(f"expected a boolean, got {type(v).__name__}")
    return v


def _float(v: Any) -> float:
    if type(v) is float:
        return v
    if type(v) is int:
        return float(v)
    raise ProtocolError(f"expected a number, got {type(v).__name__}")


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise ProtocolError(f"expected binary data, got {type(v).__name__}")
    return v


def _opt(check: Checker) -> Checker:
    def checked(v: Any) -> Any:
        return None if v is None else check(v)

    return checked


def _int_list(v: Any) -> list[int]:
    if type(v) is not list:
        raise ProtocolError(f"expected a list, got {type(v).__name__}")
    for item in v:
        if type(item) is not int:
            raise ProtocolError("expected a list of integers")
    return v


def _str_list(v: Any) -> list[str]:
    if type(v) is not list:
        raise ProtocolError(f"expected a list, got {type(v).__name__}")
    for item in v:
        if type(item) is not str:
            raise ProtocolError("expected a list of strings")
    return v


def _ranges(v: Any) -> list[list[int]]:
    if type(v) is not list:
        raise ProtocolError(f"expected a list of ranges, got {type(v).__name__}")
    for item in v:
        if type(item) is not list or len(item) != 2:
            raise ProtocolError("a range is a list of two integers")
        _int(item[0])
        _int(item[1])
    return v


#: Python types msgpack produces for the scalars the protocol allows. Anything
#: else (``ExtType``, ``Timestamp``) comes from an extension type, which the
#: protocol forbids: peers in other languages could not agree on its meaning.
_SCALAR_TYPES = frozenset({str, int, float, bool, bytes, type(None)})


def _check_value(v: Any, depth: int) -> None:
    """Reject forbidden types, non-str map keys and nesting past ``MAX_DEPTH``.

    ``depth`` counts the containers already enclosing ``v`` inside the field,
    so a field's own map or array is level 1 and only containers count as
    levels: a scalar never makes a value "deeper". msgpack's ``strict_map_key``
    lets bytes keys through, so key types are checked here at every level.
    """
    t = type(v)
    if t is dict:
        if depth >= MAX_DEPTH:
            raise ProtocolError(f"value nested deeper than {MAX_DEPTH} levels")
        for key, item in v.items():
            if type(key) is not str:
                raise ProtocolError("map keys must be strings")
            _check_value(item, depth + 1)
    elif t is list:
        if depth >= MAX_DEPTH:
            raise ProtocolError(f"value nested deeper than {MAX_DEPTH} levels")
        for item in v:
            _check_value(item, depth + 1)
    elif t not in _SCALAR_TYPES:
        raise ProtocolError(f"msgpack extension types are not allowed ({t.__name__})")


def _any(v: Any) -> Any:
    _check_value(v, 0)
    return v


def _map(v: Any) -> dict[str, Any]:
    if type(v) is not dict:
        raise ProtocolError(f"expected a map, got {type(v).__name__}")
    _check_value(v, 0)
    return v


_CHECKERS: dict[str, Checker] = {
    "int": _int,
    "str": _str,
    "bool": _bool,
    "float": _float,
    "bytes": _bytes,
    "str | None": _opt(_str),
    "float | None": _opt(_float),
    "list[int]": _int_list,
    "list[list[int]]": _ranges,
    "list[str]": _str_list,
    "list[str] | None": _opt(_str_list),
    "dict[str, Any]": _map,
    "Any": _any,
}


#: The most items each batch-carrying list field may hold (SPEC §13).
LIST_CAPS: dict[tuple[type[f.Frame], str], int] = {
    (f.Ack, "deliveries"): MAX_SETTLE_IDS,
    (f.Nack, "deliveries"): MAX_SETTLE_IDS,
    (f.Reject, "deliveries"): MAX_SETTLE_IDS,
    (f.Extend, "deliveries"): MAX_SETTLE_IDS,
    (f.ResultGet, "task_ids"): MAX_RESULT_GET_IDS,
    (f.Revoke, "task_ids"): MAX_REVOKE_IDS,
    (f.ResultDelete, "task_ids"): MAX_RESULT_DELETE_IDS,
    (f.Subscribe, "topics"): MAX_SUBSCRIBE_TOPICS,
}


def _too_long(where: str, length: int, cap: int) -> ProtocolError:
    return ProtocolError(f"{where} holds {length} items; the limit is {cap} (SPEC §13)")


#: Field types whose common case is one ``type(x) is T`` test; the checker
#: runs only when that test fails (to convert an int to float, or to raise).
_FAST_TYPES = {
    "int": "int",
    "str": "str",
    "bool": "bool",
    "bytes": "bytes",
    "float": "float",
}
_FAST_OPTIONAL = {"str | None": "str", "float | None": "float"}


class _FrameSpec:
    """Per frame type: field names, their checkers, how many are required, and
    ``build``: a function generated for this type that validates a decoded
    array and constructs the frame.

    Generating the function (as ``dataclasses`` does for ``__init__``) keeps
    the per-field work to one inline type test and one slot store: a generic
    loop over checkers plus the frozen dataclass ``__init__`` cost about three
    times as much, and decoding is the largest share of the broker's loop.
    """

    __slots__ = ("build", "checkers", "cls", "names", "required")

    def __init__(self, cls: type[f.Frame]) -> None:
        self.cls = cls
        flds = fields(cls)
        self.names = tuple(fl.name for fl in flds)
        self.checkers = tuple(_CHECKERS[str(fl.type)] for fl in flds)
        self.required = sum(
            1 for fl in flds if fl.default is MISSING and fl.default_factory is MISSING
        )
        self.build = self._compile(flds)

    def _compile(self, flds: tuple[Any, ...]) -> Callable[[list[Any]], f.Frame]:
        env: dict[str, Any] = {
            "ProtocolError": ProtocolError,
            "NEW": object.__new__,
            "TOO_LONG": _too_long,
        }
        env["CLS"] = self.cls
        name = self.cls.__name__
        lines = [
            "def build(obj):",
            "    n = len(obj) - 1",
            f"    if n < {self.required}:",
            f"        raise ProtocolError('{name} needs {self.required} fields, got %d' % n)",
        ]
        for i, fl in enumerate(flds):
            kind = str(fl.type)
            env[f"C{i}"] = self.checkers[i]
            env[f"S{i}"] = self.cls.__dict__[fl.name].__set__
            if fl.default is not MISSING:
                env[f"D{i}"] = fl.default
                lines.append(f"    x{i} = obj[{i + 1}] if n > {i} else D{i}")
            elif fl.default_factory is not MISSING:
                env[f"F{i}"] = fl.default_factory
                lines.append(f"    x{i} = obj[{i + 1}] if n > {i} else F{i}()")
            else:
                lines.append(f"    x{i} = obj[{i + 1}]")
            cap = LIST_CAPS.get((self.cls, fl.name))
            if cap is not None:
                # The length before the items: an oversized list costs O(1).
                env[f"W{i}"] = f"{name}.{fl.name}"
                lines.append(
                    f"    if type(x{i}) is list and len(x{i}) > {cap}: "
                    f"raise TOO_LONG(W{i}, len(x{i}), {cap})"
                )
            if kind in _FAST_TYPES:
                lines.append(f"    if type(x{i}) is not {_FAST_TYPES[kind]}: x{i} = C{i}(x{i})")
            elif kind in _FAST_OPTIONAL:
                t = _FAST_OPTIONAL[kind]
                lines.append(
                    f"    if x{i} is not None and type(x{i}) is not {t}: x{i} = C{i}(x{i})"
                )
            else:
                lines.append(f"    x{i} = C{i}(x{i})")
        lines.append("    o = NEW(CLS)")
        lines.extend(f"    S{i}(o, x{i})" for i in range(len(flds)))
        lines.append("    return o")
        exec("\n".join(lines), env)  # noqa: S102 - source built above from field specs only
        build: Callable[[list[Any]], f.Frame] = env["build"]
        return build


FRAME_TYPES: tuple[type[f.Frame], ...] = (
    f.Hello,
    f.Welcome,
    f.Heartbeat,
    f.Close,
    f.Error,
    f.Ok,
    f.Redirect,
    f.DeclareExchange,
    f.DeleteExchange,
    f.DeclareQueue,
    f.DeleteQueue,
    f.PurgeQueue,
    f.Bind,
    f.Unbind,
    f.QueueStats,
    f.Publish,
    f.Confirm,
    f.PublishError,
    f.Consume,
    f.Cancel,
    f.Deliver,
    f.Ack,
    f.Nack,
    f.Reject,
    f.Extend,
    f.Settled,
    f.ConsumerCancelled,
    f.ResultSet,
    f.ResultGet,
    f.ResultWait,
    f.Revoke,
    f.Subscribe,
    f.Event,
    f.ScheduleSet,
    f.ScheduleDelete,
    f.ScheduleList,
    f.ResultDelete,
    f.GroupJoin,
    f.GroupFire,
    f.ResultWatch,
    f.RateAcquire,
    f.RateSet,
    f.AdminStatus,
    f.AdminStop,
    f.ListQueues,
    f.ListExchanges,
    f.ListBindings,
    f.ListConnections,
    f.ListConsumers,
    f.CloseConnection,
    f.AddUser,
    f.DeleteUser,
    f.UpdateUser,
    f.ListUsers,
    f.SetPermissions,
    f.ClearPermissions,
    f.ListPermissions,
    f.AddVhost,
    f.DeleteVhost,
    f.ListVhosts,
)

_SPECS: dict[int, _FrameSpec] = {}


def register(cls: type[f.Frame]) -> type[f.Frame]:
    """Add a frame type to the codec (used by protocol extensions)."""
    if cls.TYPE in _SPECS and _SPECS[cls.TYPE].cls is not cls:
        raise ValueError(f"frame type {cls.TYPE} already registered")
    _SPECS[cls.TYPE] = _FrameSpec(cls)
    return cls


for _cls in FRAME_TYPES:
    register(_cls)

_packb = msgpack.Packer(use_bin_type=True).pack


def encode_payload(frame: f.Frame) -> bytes:
    """The msgpack payload of ``frame`` without its length prefix."""
    spec = _SPECS[frame.TYPE]
    return _packb([frame.TYPE, *[getattr(frame, n) for n in spec.names]])


def encode(frame: f.Frame) -> bytes:
    """One frame as it travels: 4-byte big-endian length, then the payload."""
    payload = encode_payload(frame)
    return _LENGTH.pack(len(payload)) + payload


_DELIVER = f.Deliver.TYPE


def encode_deliver(
    consumer: int,
    delivery: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    props: dict[str, Any],
    attempt: int,
    lease: float,
) -> bytes:
    """The bytes of ``encode(Deliver(...))`` without building the frame.

    Deliver is the one frame the broker sends per message. Building the
    frozen frame and reading it back field by field made ``encode`` about
    3.5 times as costly as packing the fields directly (``python -m
    bench.delivercheck``), so servers pack them here instead of by hand,
    which kept the field order in a second place. The parameters are
    ``Deliver``'s fields in order; tests hold the bytes to the golden vectors.
    """
    payload = _packb(
        [_DELIVER, consumer, delivery, exchange, routing_key, body, props, attempt, lease]
    )
    return _LENGTH.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> f.Frame:
    """Validate and build the frame held by one payload."""
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"malformed frame payload: {exc}") from None
    except Exception as exc:  # any other unpacker failure is still bad input
        raise ProtocolError(f"malformed frame payload: {type(exc).__name__}") from None
    if type(obj) is not list or not obj:
        raise ProtocolError("a frame payload must be a non-empty array")
    code = obj[0]
    if type(code) is not int:
        raise ProtocolError("a frame must start with its integer type code")
    spec = _SPECS.get(code)
    if spec is None:
        raise ProtocolError(f"unknown frame type {code}")
    # Fields added by later minor revisions are appended; ``build`` reads
    # only the fields it knows, so older peers ignore the rest.
    return spec.build(obj)


class Decoder:
    """Incremental decoder: ``feed`` bytes as they arrive, iterate for frames.

    Raises ``FrameTooLarge`` as soon as a header declares a payload larger than
    ``max_frame``, before buffering it, and ``ProtocolError`` for any payload
    that is not a valid frame. After an error the decoder must be discarded.

    ``max_frame`` may be changed between frames: a server starts with a small
    limit until the handshake completes (SPEC §2.1), a client raises its limit
    to what Welcome announced.
    """

    __slots__ = ("_buf", "_max_frame", "_pos")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._max_frame = _checked_limit(max_frame)
        self._buf = bytearray()
        self._pos = 0

    @property
    def max_frame(self) -> int:
        """The largest payload accepted, in bytes (1 to ``HARD_MAX_FRAME``)."""
        return self._max_frame

    @max_frame.setter
    def max_frame(self, value: int) -> None:
        self._max_frame = _checked_limit(value)

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def next_frame(self) -> f.Frame | None:
        """The next complete frame, or None until more bytes arrive."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_SIZE:
            self._compact()
            return None
        (length,) = _LENGTH.unpack_from(buf, pos)
        if length == 0:
            raise ProtocolError("zero-length frame")
        if length > self._max_frame:
            raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self._max_frame}")
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            self._compact()
            return None
        payload = bytes(buf[pos + HEADER_SIZE : end])
        self._pos = end
        return decode_payload(payload)

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def __iter__(self) -> Iterator[f.Frame]:
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame


def _checked_limit(max_frame: int) -> int:
    if type(max_frame) is not int or not 0 < max_frame <= HARD_MAX_FRAME:
        raise ValueError(f"max_frame must be an integer within 1..{HARD_MAX_FRAME}")
    return max_frame
