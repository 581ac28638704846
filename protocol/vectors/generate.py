"""Regenerate brokerd's language-neutral golden vectors.

Run ``python protocol/vectors/generate.py`` from anywhere; it rewrites
``frames.json`` and ``malformed.json`` next to this file. The output depends on
nothing but the cases below and the codec, so running it twice gives the same
bytes; ``tests/unit/test_codec.py`` checks that the committed files are what
this script would write, so a codec change that alters the wire shows up as a
vector diff in review.

The vectors exist for implementers in other languages: a client passes when it
decodes every ``hex`` to the listed fields, encodes the fields back to the same
``hex`` (``cases``), decodes non-canonical encodings (``decode_only``), and
rejects every ``malformed`` input. Every vector is checked against the Python
codec here before it is written, so a vector can never disagree with the
reference implementation.
"""

from __future__ import annotations

import json
import struct
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Let the script run from a fresh clone without an editable install.
sys.path.insert(0, str(HERE.parent))

import msgpack  # noqa: E402

from brokerd_protocol import (  # noqa: E402
    DEFAULT_MAX_FRAME,
    FRAME_TYPES,
    Ack,
    AddUser,
    AddVhost,
    AdminStatus,
    AdminStop,
    Bind,
    Cancel,
    ClearPermissions,
    Close,
    CloseConnection,
    Confirm,
    Consume,
    ConsumerCancelled,
    DeclareExchange,
    DeclareQueue,
    Decoder,
    DeleteExchange,
    DeleteQueue,
    DeleteUser,
    DeleteVhost,
    Deliver,
    Error,
    ErrorCode,
    Extend,
    Frame,
    FrameTooLarge,
    Heartbeat,
    Hello,
    ListBindings,
    ListConnections,
    ListConsumers,
    ListExchanges,
    ListPermissions,
    ListQueues,
    ListUsers,
    ListVhosts,
    Nack,
    Ok,
    ProtocolError,
    Publish,
    PublishError,
    PurgeQueue,
    QueueStats,
    Redirect,
    Reject,
    SetPermissions,
    Settled,
    Unbind,
    UpdateUser,
    Welcome,
    decode_payload,
    encode,
)
from brokerd_protocol.limits import MAX_DEPTH  # noqa: E402

#: Codes 40-59 belong to the task layer, which SPEC.md reserves but does not
#: specify yet; its frames get vectors once their section is written.
TASK_LAYER_CODES = range(40, 60)
CORE_FRAME_TYPES = tuple(cls for cls in FRAME_TYPES if cls.TYPE not in TASK_LAYER_CODES)

# --- helpers -----------------------------------------------------------------


def pack(obj: Any) -> bytes:
    """Canonical msgpack, as the reference encoder writes it."""
    return msgpack.packb(obj, use_bin_type=True)


def framed(payload: bytes) -> bytes:
    """Prefix ``payload`` with its 4-byte big-endian length."""
    return struct.pack(">I", len(payload)) + payload


def nested(levels: int, leaf: Any) -> Any:
    """``leaf`` wrapped in arrays so the result is ``levels`` containers deep."""
    value: Any = leaf
    for _ in range(levels):
        value = [value]
    return value


def nested_maps(levels: int) -> Any:
    """``levels`` maps, each the only value of the one around it."""
    value: Any = 1
    for _ in range(levels):
        value = {"n": value}
    return value


def to_json(value: Any) -> Any:
    """Bytes become ``{"hex": ...}``; everything else maps to JSON directly."""
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, dict):
        # A real map shaped like {"hex": "<str>"} would read back as bytes.
        if set(value) == {"hex"} and isinstance(value["hex"], str):
            raise ValueError("ambiguous map {'hex': str} in a vector")
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def sorted_maps(value: Any) -> Any:
    """``value`` with every map's keys in bytewise order of their UTF-8 form.

    Receivers ignore key order, but encoders in languages whose maps are
    unordered can reproduce a vector's exact bytes only by sorting keys, so
    every vector uses that order.
    """
    if isinstance(value, dict):
        return {k: sorted_maps(value[k]) for k in sorted(value, key=lambda k: k.encode())}
    if isinstance(value, list):
        return [sorted_maps(v) for v in value]
    return value


def canonical(frame: Frame) -> Frame:
    return type(frame)(*(sorted_maps(getattr(frame, fl.name)) for fl in fields(frame)))


def frame_fields(frame: Frame) -> dict[str, Any]:
    return {fl.name: to_json(getattr(frame, fl.name)) for fl in fields(frame)}


def decode_all(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[Frame]:
    decoder = Decoder(max_frame)
    decoder.feed(data)
    return list(decoder)


# --- well-formed frames ------------------------------------------------------

# Bodies and strings long enough to need the 8- and 16-bit length forms.
BODY_BIN8 = bytes(range(256))[:200]
BODY_BIN16 = bytes(range(256)) + b"\x00\xff"
STR8 = "q" * 40
STR16 = "routing." * 40

CASES: list[tuple[str, Frame]] = [
    ("hello_minimal", Hello(versions=[1])),
    (
        "hello_full",
        # A sample credential for the vector, not a real secret.
        Hello(versions=[1, 2], token="s3cret", client_name="worker-1", heartbeat=15.0),  # noqa: S106
    ),
    ("hello_heartbeat_disabled", Hello(versions=[1], token=None, heartbeat=0.0)),
    (
        "hello_user_password",
        # A sample credential for the vector, not a real secret.
        Hello(versions=[1], client_name="app", user="app", password="pw"),  # noqa: S106
    ),
    (
        "hello_vhost",
        # A sample credential for the vector, not a real secret.
        Hello(versions=[1], client_name="app", user="app", password="pw", vhost="orders"),  # noqa: S106
    ),
    ("welcome", Welcome(version=1, server_name="brokerd", heartbeat=30.0, max_frame=16777216)),
    ("heartbeat", Heartbeat()),
    ("close_normal", Close()),
    ("close_shutting_down", Close(code=ErrorCode.SHUTTING_DOWN, message="server stopping")),
    ("error_auth_failed", Error(req=0, code=ErrorCode.AUTH_FAILED, message="bad token")),
    ("error_not_found", Error(req=42, code=ErrorCode.NOT_FOUND, message="no queue 'jobs'")),
    ("ok_nil", Ok(req=1)),
    ("redirect", Redirect(address="10.0.0.2:5673", message="standby; the active node is there")),
    ("redirect_unknown", Redirect(address="")),
    ("ok_consumer_id", Ok(req=2, value=7)),
    ("ok_purged_count", Ok(req=3, value=1250)),
    (
        "ok_queue_stats",
        Ok(req=4, value={"ready": 5, "leased": 2, "delayed": 1, "consumers": 1}),
    ),
    ("ok_nesting_at_limit", Ok(req=5, value=nested(MAX_DEPTH - 1, [1]))),
    ("declare_exchange_defaults", DeclareExchange(req=1, name="events")),
    (
        "declare_exchange_topic_transient",
        DeclareExchange(req=2, name="logs", type="topic", durable=False),
    ),
    ("delete_exchange", DeleteExchange(req=3, name="logs")),
    ("declare_queue_defaults", DeclareQueue(req=4, name="jobs")),
    (
        "declare_queue_options",
        DeclareQueue(
            req=5,
            name="jobs",
            durable=True,
            options={
                "lease": 60.0,
                "max_deliveries": 5,
                "dead_letter_queue": "jobs.dlq",
                "max_length": 10000,
                "overflow": "reject_publish",
                "message_ttl": None,
            },
        ),
    ),
    ("delete_queue", DeleteQueue(req=6, name="jobs")),
    ("purge_queue", PurgeQueue(req=7, name="jobs")),
    ("bind", Bind(req=8, queue="jobs", exchange="events", routing_key="orders.*.created")),
    ("unbind", Unbind(req=9, queue="jobs", exchange="events", routing_key="orders.#")),
    ("queue_stats", QueueStats(req=10, name="jobs")),
    ("publish_minimal", Publish(seq=1, exchange="", routing_key="jobs", body=b"")),
    (
        "publish_binary_body",
        Publish(seq=2, exchange="", routing_key="jobs", body=b"\x00\x01\xfe\xff"),
    ),
    (
        "publish_all_props",
        Publish(
            seq=3,
            exchange="events",
            routing_key="orders.eu.created",
            body=b'{"id": 1}',
            props={
                "headers": {
                    "trace": "abc",
                    "count": 42,
                    "neg": -129,
                    "ratio": 0.5,
                    "flag": True,
                    "none": None,
                    "raw": b"\x01\x02",
                },
                "delay": 2.5,
                "priority": 9,
                "ttl": 60.0,
                "message_id": "m-1",
                "mandatory": True,
            },
        ),
    ),
    (
        "publish_not_before",
        Publish(
            seq=4,
            exchange="",
            routing_key="jobs",
            body=b"x",
            props={"not_before": 1700000000.0},
        ),
    ),
    ("publish_body_bin8", Publish(seq=5, exchange="", routing_key=STR8, body=BODY_BIN8)),
    ("publish_body_bin16", Publish(seq=6, exchange="", routing_key=STR16, body=BODY_BIN16)),
    (
        "publish_unicode_and_large_seq",
        Publish(seq=2**32, exchange="ünïcode", routing_key="€.日本", body=b"\xc3\xa9"),
    ),
    ("publish_max_int64_seq", Publish(seq=2**63 - 1, exchange="", routing_key="q", body=b"")),
    ("confirm_one_range", Confirm(ranges=[[1, 5]])),
    ("confirm_ranges_and_unroutable", Confirm(ranges=[[1, 3], [5, 9]], unroutable=[4])),
    ("confirm_only_unroutable", Confirm(ranges=[], unroutable=[10, 11])),
    (
        "publish_error_unroutable",
        PublishError(seq=7, code=ErrorCode.UNROUTABLE, message="no queue bound"),
    ),
    (
        "publish_error_queue_full",
        PublishError(seq=8, code=ErrorCode.QUEUE_FULL, message="queue 'jobs' is full"),
    ),
    (
        "publish_error_no_exchange",
        PublishError(seq=9, code=ErrorCode.NOT_FOUND, message="no exchange 'x'"),
    ),
    ("consume_defaults", Consume(req=11, queue="jobs")),
    ("consume_prefetch_one_lease", Consume(req=12, queue="jobs", prefetch=1, lease=3600.0)),
    ("cancel", Cancel(req=13, consumer=7)),
    (
        "deliver_first",
        Deliver(
            consumer=7,
            delivery=1,
            exchange="",
            routing_key="jobs",
            body=b'{"id": 1}',
            props={
                "headers": {"trace": "abc"},
                "message_id": "m-1",
                "priority": 0,
                "timestamp": 1700000000123,
                "redelivered": False,
            },
            attempt=1,
            lease=30.0,
        ),
    ),
    (
        "deliver_redelivered",
        Deliver(
            consumer=7,
            delivery=300,
            exchange="events",
            routing_key="orders.eu.created",
            body=b"",
            props={"timestamp": 1700000000123, "redelivered": True},
            attempt=3,
            lease=0.5,
        ),
    ),
    ("ack_one", Ack(req=14, deliveries=[1])),
    ("ack_many", Ack(req=15, deliveries=[2, 3, 127, 128, 255, 256, 65535, 65536])),
    ("nack_defaults", Nack(req=16, deliveries=[4])),
    ("nack_requeue_delay", Nack(req=17, deliveries=[5, 6], requeue=True, delay=5.0)),
    ("nack_dead_letter", Nack(req=18, deliveries=[7], requeue=False)),
    ("nack_return_unseen", Nack(req=18, deliveries=[12, 13], counted=False)),
    ("reject", Reject(req=19, deliveries=[8, 9])),
    ("reject_with_reason", Reject(req=19, deliveries=[8], reason="no usable task id")),
    ("extend", Extend(req=20, deliveries=[10, 11], seconds=120.0)),
    ("settled_all", Settled(req=21)),
    ("settled_lost", Settled(req=22, lost=[10])),
    ("consumer_cancelled", ConsumerCancelled(consumer=7, reason="queue deleted")),
    # Admin frames (SPEC §17).
    ("admin_status", AdminStatus(req=60)),
    ("admin_stop", AdminStop(req=61)),
    ("list_queues_first_page", ListQueues(req=62)),
    ("list_queues_next_page", ListQueues(req=63, cursor="jobs", limit=100)),
    ("list_exchanges", ListExchanges(req=64)),
    ("list_bindings_next_page", ListBindings(req=65, cursor=["events", "jobs", "a.#"])),
    ("list_connections_next_page", ListConnections(req=66, cursor=12, limit=2)),
    ("list_consumers_next_page", ListConsumers(req=67, cursor=[12, 1])),
    ("close_connection", CloseConnection(req=68, connection=12, reason="maintenance")),
    # Users and permissions (SPEC §17.6); sample credentials, not real secrets.
    ("add_user", AddUser(req=69, name="app", password="pw", tags=["monitoring"])),  # noqa: S106
    ("delete_user", DeleteUser(req=70, name="app")),
    ("update_user_password", UpdateUser(req=71, name="app", password="new")),  # noqa: S106
    ("update_user_tags", UpdateUser(req=72, name="app", tags=["administrator"])),
    ("list_users", ListUsers(req=73)),
    (
        "set_permissions",
        SetPermissions(req=74, user="app", vhost="/", configure="^app\\.", write=".*", read=".*"),
    ),
    ("clear_permissions", ClearPermissions(req=75, user="app", vhost="/")),
    ("list_permissions_vhost", ListPermissions(req=76, vhost="/")),
    ("list_permissions_user", ListPermissions(req=77, user="app", cursor=["app", "/"])),
    ("add_vhost", AddVhost(req=78, name="orders")),
    ("delete_vhost", DeleteVhost(req=79, name="orders")),
    ("list_vhosts", ListVhosts(req=80)),
    ("list_queues_vhost", ListQueues(req=81, vhost="orders")),
    ("list_users_hashes", ListUsers(req=82, hashes=True)),
    (
        "add_user_hash",
        # A made-up hash for the vector, not a real one.
        AddUser(req=83, name="app", password="", password_hash="scrypt$16384$8$1$c2FsdA$a2V5"),  # noqa: S106
    ),
    (
        "ok_list_page",
        Ok(req=62, value={"items": [{"name": "jobs", "ready": 3}], "next": None}),
    ),
]


def _raw(*parts: bytes) -> bytes:
    return b"".join(parts)


# (name, payload bytes, expected frame, why the bytes are not canonical)
DECODE_ONLY: list[tuple[str, bytes, Frame, str]] = [
    (
        "hello_extra_trailing_fields",
        pack([1, [1], None, "", 30.0, None, None, "/", "a field from a later revision", 7]),
        Hello(versions=[1]),
        "fields after the last known one are ignored",
    ),
    (
        "hello_only_required",
        pack([1, [1]]),
        Hello(versions=[1]),
        "trailing fields with defaults may be omitted",
    ),
    ("close_no_fields", pack([4]), Close(), "both Close fields have defaults"),
    (
        "publish_without_props",
        pack([20, 1, "", "jobs", b"x"]),
        Publish(seq=1, exchange="", routing_key="jobs", body=b"x"),
        "props defaults to an empty map",
    ),
    (
        "consume_without_prefetch_and_lease",
        pack([30, 1, "jobs"]),
        Consume(req=1, queue="jobs"),
        "prefetch defaults to 10, lease to nil",
    ),
    (
        "confirm_without_unroutable",
        pack([21, [[1, 2]]]),
        Confirm(ranges=[[1, 2]]),
        "unroutable defaults to an empty array",
    ),
    (
        "nack_without_requeue_and_delay",
        pack([34, 1, [3]]),
        Nack(req=1, deliveries=[3]),
        "requeue defaults to true, delay to nil",
    ),
    (
        "settled_without_lost",
        pack([37, 9]),
        Settled(req=9),
        "lost defaults to an empty array",
    ),
    (
        "ok_req_as_uint32",
        _raw(b"\x93\x06", b"\xce\x00\x00\x00\x01", b"\xc0"),
        Ok(req=1),
        "an integer in a wider encoding than needed is still that integer",
    ),
    (
        "ack_ids_as_int64",
        _raw(b"\x93\x21\x01\x91", b"\xd3\x00\x00\x00\x00\x00\x00\x00\x05"),
        Ack(req=1, deliveries=[5]),
        "int64 encoding of a small non-negative integer",
    ),
    (
        "extend_seconds_as_float32",
        _raw(b"\x94\x24\x01\x91\x05", b"\xca\x40\x20\x00\x00"),
        Extend(req=1, deliveries=[5], seconds=2.5),
        "float32 is accepted for a number field",
    ),
    (
        "reject_without_reason",
        pack([35, 19, [8, 9]]),
        Reject(req=19, deliveries=[8, 9]),
        "a Reject from a sender that predates the reason field: it defaults to nil",
    ),
    (
        "welcome_heartbeat_as_int",
        pack([2, 1, "brokerd", 30, 16777216]),
        Welcome(version=1, server_name="brokerd", heartbeat=30.0, max_frame=16777216),
        "an integer is accepted for a number field and means the same value",
    ),
    (
        "queue_stats_name_as_str16",
        _raw(b"\x93\x11\x01", b"\xda\x00\x04jobs"),
        QueueStats(req=1, name="jobs"),
        "str16 encoding of a short string",
    ),
    (
        "publish_body_as_bin32",
        _raw(b"\x96\x14\x01\xa0\xa4jobs", b"\xc6\x00\x00\x00\x02hi", b"\x80"),
        Publish(seq=1, exchange="", routing_key="jobs", body=b"hi"),
        "bin32 encoding of a short byte string",
    ),
    (
        "declare_queue_options_as_map16",
        _raw(b"\x95\x0c\x01\xa4jobs\xc3", b"\xde\x00\x01\xa5lease\x1e"),
        DeclareQueue(req=1, name="jobs", options={"lease": 30}),
        "map16 encoding of a one-entry map",
    ),
]


def build_frames() -> dict[str, Any]:
    cases = []
    for name, written in CASES:
        frame = canonical(written)
        data = encode(frame)
        if decode_all(data) != [frame]:
            raise AssertionError(f"{name}: does not round-trip")
        cases.append(
            {
                "name": name,
                "frame": type(frame).__name__,
                "code": frame.TYPE,
                "fields": frame_fields(frame),
                "hex": data.hex(),
            }
        )
    covered = {type(frame) for _, frame in CASES}
    missing = [cls.__name__ for cls in CORE_FRAME_TYPES if cls not in covered]
    if missing:
        raise AssertionError(f"no golden vector for {missing}")

    decode_only = []
    for name, payload, frame, note in DECODE_ONLY:
        data = framed(payload)
        if decode_all(data) != [frame]:
            raise AssertionError(f"{name}: does not decode to {frame!r}")
        if encode(frame) == data:
            raise AssertionError(f"{name}: is canonical, move it to CASES")
        decode_only.append(
            {
                "name": name,
                "frame": type(frame).__name__,
                "code": frame.TYPE,
                "fields": frame_fields(frame),
                "hex": data.hex(),
                "note": note,
            }
        )
    return {
        "protocol_version": 1,
        "description": (
            "Golden vectors for brokerd protocol version 1 (see protocol/SPEC.md). "
            "'hex' is the whole frame: 4-byte big-endian payload length, then the "
            "msgpack payload. 'fields' lists the frame's fields in wire order; a byte "
            'string is written as {"hex": ...}; a JSON number with a fraction is a '
            "msgpack float, one without is an integer (integers may exceed 2^53: parse "
            "them as 64-bit). Map keys are listed, and encoded, in bytewise order of "
            "their UTF-8 form, so an encoder that sorts map keys reproduces 'hex'. "
            "'cases': decode hex to fields, and encode fields to exactly hex. "
            "'decode_only': valid but non-canonical encodings; decode hex to fields "
            "(re-encoding gives the canonical form instead)."
        ),
        "cases": cases,
        "decode_only": decode_only,
    }


# --- malformed input ---------------------------------------------------------

PE = "PROTOCOL_ERROR"
TOO_LARGE = "FRAME_TOO_LARGE"

HEARTBEAT = encode(Heartbeat())

# (name, whole input bytes, expected error, frames decoded before it, reason, max_frame)
MALFORMED: list[tuple[str, bytes, str, int, str, int]] = [
    ("zero_length", b"\x00\x00\x00\x00", PE, 0, "a frame length of zero is invalid", 0),
    (
        "length_over_default_max",
        struct.pack(">I", DEFAULT_MAX_FRAME + 1),
        TOO_LARGE,
        0,
        "the header alone declares more than max_frame; reject before reading the payload",
        0,
    ),
    (
        "length_uint32_max",
        b"\xff\xff\xff\xff",
        TOO_LARGE,
        0,
        "declared length far above max_frame",
        0,
    ),
    (
        "length_over_small_max",
        struct.pack(">I", 4097),
        TOO_LARGE,
        0,
        "max_frame is 4096 for this case",
        4096,
    ),
    ("payload_is_int", framed(pack(3)), PE, 0, "the payload must be an array", 0),
    ("payload_is_map", framed(pack({"t": 3})), PE, 0, "the payload must be an array", 0),
    ("payload_is_str", framed(pack("heartbeat")), PE, 0, "the payload must be an array", 0),
    ("payload_is_nil", framed(pack(None)), PE, 0, "the payload must be an array", 0),
    ("empty_array", framed(pack([])), PE, 0, "the array must hold a type code", 0),
    ("type_code_str", framed(pack(["3"])), PE, 0, "the type code must be an integer", 0),
    ("type_code_bool", framed(pack([True])), PE, 0, "a boolean is not an integer", 0),
    ("type_code_float", framed(pack([3.0])), PE, 0, "a float is not an integer", 0),
    ("type_code_nil", framed(pack([None])), PE, 0, "the type code must be an integer", 0),
    ("unknown_type_0", framed(pack([0])), PE, 0, "type code 0 is not a frame", 0),
    ("unknown_type_200", framed(pack([200, 1])), PE, 0, "type code 200 is not assigned", 0),
    ("unknown_type_negative", framed(pack([-3])), PE, 0, "type codes are positive", 0),
    ("too_few_fields_hello", framed(pack([1])), PE, 0, "Hello requires versions", 0),
    (
        "too_few_fields_welcome",
        framed(pack([2, 1, "brokerd"])),
        PE,
        0,
        "Welcome requires 4 fields",
        0,
    ),
    ("too_few_fields_error", framed(pack([5, 1])), PE, 0, "Error requires 3 fields", 0),
    (
        "too_few_fields_publish",
        framed(pack([20, 1, "", "jobs"])),
        PE,
        0,
        "Publish requires a body",
        0,
    ),
    (
        "str_where_int",
        framed(pack([5, "1", 10, "x"])),
        PE,
        0,
        "Error.req must be an integer",
        0,
    ),
    ("bool_where_int", framed(pack([6, True])), PE, 0, "Ok.req must not be a boolean", 0),
    ("float_where_int", framed(pack([33, 1.0, [1]])), PE, 0, "Ack.req must be an integer", 0),
    (
        "int_where_bool",
        framed(pack([12, 1, "jobs", 1, {}])),
        PE,
        0,
        "DeclareQueue.durable must be a boolean",
        0,
    ),
    (
        "nil_where_bool",
        framed(pack([34, 1, [1], None])),
        PE,
        0,
        "Nack.requeue is not nullable",
        0,
    ),
    (
        "nil_where_str",
        framed(pack([5, 1, 10, None])),
        PE,
        0,
        "Error.message is not nullable",
        0,
    ),
    (
        "str_where_bin",
        framed(pack([20, 1, "", "jobs", "body as text"])),
        PE,
        0,
        "Publish.body must use the msgpack bin family, not str",
        0,
    ),
    (
        "bin_where_str",
        framed(pack([20, 1, "", b"jobs", b"body"])),
        PE,
        0,
        "Publish.routing_key must use the msgpack str family, not bin",
        0,
    ),
    (
        "bool_where_number",
        framed(pack([2, 1, "brokerd", True, 1024])),
        PE,
        0,
        "Welcome.heartbeat must be a number",
        0,
    ),
    (
        "str_where_number",
        framed(pack([36, 1, [1], "5"])),
        PE,
        0,
        "Extend.seconds must be a number",
        0,
    ),
    (
        "int_list_with_str",
        framed(pack([33, 1, [1, "2"]])),
        PE,
        0,
        "Ack.deliveries must hold integers only",
        0,
    ),
    (
        "int_list_with_bool",
        framed(pack([33, 1, [1, True]])),
        PE,
        0,
        "a boolean is not an integer",
        0,
    ),
    (
        "int_list_not_a_list",
        framed(pack([33, 1, 1])),
        PE,
        0,
        "Ack.deliveries must be an array",
        0,
    ),
    ("versions_not_a_list", framed(pack([1, 1])), PE, 0, "Hello.versions must be an array", 0),
    (
        "range_of_three",
        framed(pack([21, [[1, 2, 3]]])),
        PE,
        0,
        "a Confirm range is exactly [first, last]",
        0,
    ),
    (
        "range_not_a_list",
        framed(pack([21, [1, 2]])),
        PE,
        0,
        "Confirm.ranges holds arrays, not integers",
        0,
    ),
    (
        "range_with_str",
        framed(pack([21, [["1", 2]]])),
        PE,
        0,
        "range bounds must be integers",
        0,
    ),
    (
        "props_not_a_map",
        framed(pack([20, 1, "", "jobs", b"", []])),
        PE,
        0,
        "Publish.props must be a map",
        0,
    ),
    (
        "props_nil",
        framed(pack([20, 1, "", "jobs", b"", None])),
        PE,
        0,
        "Publish.props is not nullable (omit it instead)",
        0,
    ),
    (
        "props_int_key",
        framed(pack([20, 1, "", "jobs", b"", {1: "x"}])),
        PE,
        0,
        "map keys must be str",
        0,
    ),
    (
        "props_bin_key",
        framed(pack([20, 1, "", "jobs", b"", {b"priority": 1}])),
        PE,
        0,
        "map keys must be str, not bin",
        0,
    ),
    (
        "nested_bin_key",
        framed(pack([20, 1, "", "jobs", b"", {"headers": {b"k": 1}}])),
        PE,
        0,
        "map keys must be str at every depth",
        0,
    ),
    (
        "nested_int_key",
        framed(pack([6, 1, {"a": {1: 2}}])),
        PE,
        0,
        "map keys must be str at every depth",
        0,
    ),
    (
        "deep_nesting_100",
        framed(pack([20, 1, "", "jobs", b"", {"headers": nested(100, 1)}])),
        PE,
        0,
        "100 nested arrays inside props: deeper than 16 levels",
        0,
    ),
    (
        "nesting_one_over_limit",
        framed(pack([6, 1, nested(MAX_DEPTH, [])])),
        PE,
        0,
        "17 nested arrays in a field value; 16 is the limit",
        0,
    ),
    (
        "map_nesting_one_over_limit",
        framed(pack([20, 1, "", "jobs", b"", nested_maps(MAX_DEPTH + 1)])),
        PE,
        0,
        "props is level 1, so 16 maps inside it make 17 levels",
        0,
    ),
    (
        "msgpack_nesting_2000",
        framed(b"\x91" * 2000 + b"\x01"),
        PE,
        0,
        "2000 nested arrays: must be refused without exhausting the decoder's stack",
        0,
    ),
    ("msgpack_reserved_byte", framed(b"\xc1"), PE, 0, "0xc1 is never used in msgpack", 0),
    (
        "msgpack_truncated_inside_frame",
        framed(b"\x92\x03"),
        PE,
        0,
        "the array declares 2 items but the frame ends after 1",
        0,
    ),
    (
        "msgpack_trailing_bytes",
        framed(b"\x91\x03\xc0"),
        PE,
        0,
        "one frame payload holds exactly one msgpack value",
        0,
    ),
    (
        "invalid_utf8_str",
        framed(b"\x94\x05\x01\x0a\xa2\xff\xfe"),
        PE,
        0,
        "msgpack str must be valid UTF-8",
        0,
    ),
    (
        "ext_type_value",
        framed(b"\x92\x06\xd4\x05\x00"),
        PE,
        0,
        "msgpack extension types are not part of the protocol",
        0,
    ),
    (
        "timestamp_ext_in_headers",
        framed(
            b"\x96\x14\x01\xa0\xa4jobs\xc4\x00\x81\xa7headers\x81\xa1t"
            + b"\xd6\xff\x00\x00\x00\x01"
        ),
        PE,
        0,
        "the msgpack timestamp extension (-1) is not allowed either",
        0,
    ),
    (
        "array32_count_beyond_payload",
        framed(b"\xdd\xff\xff\xff\xff"),
        PE,
        0,
        "declares 4294967295 items in a 5-byte payload; must not allocate them",
        0,
    ),
    (
        "str32_length_beyond_payload",
        framed(b"\x94\x05\x01\x0a\xdb\xff\xff\xff\xff"),
        PE,
        0,
        "declares a 4 GiB string in a 9-byte payload",
        0,
    ),
    (
        "heartbeat_then_zero_length",
        HEARTBEAT + b"\x00\x00\x00\x00",
        PE,
        1,
        "a valid frame, then an invalid one",
        0,
    ),
    (
        "heartbeat_then_oversized_header",
        HEARTBEAT + b"\x7f\xff\xff\xff",
        TOO_LARGE,
        1,
        "a valid frame, then a header over max_frame",
        0,
    ),
]

# (name, bytes, reason): valid prefixes; a decoder yields nothing and raises nothing.
INCOMPLETE: list[tuple[str, bytes, str]] = [
    ("empty", b"", "no bytes yet"),
    ("partial_header", b"\x00\x00\x00", "3 of the 4 header bytes"),
    ("header_only", HEARTBEAT[:4], "a header with no payload yet"),
    ("partial_payload", encode(Ack(req=1, deliveries=[1, 2]))[:-1], "payload one byte short"),
    (
        "header_at_max_frame",
        struct.pack(">I", DEFAULT_MAX_FRAME),
        "a length equal to max_frame is allowed; the payload has not arrived",
    ),
]


def build_malformed() -> dict[str, Any]:
    cases = []
    for name, data, error, before, reason, max_frame in MALFORMED:
        limit = max_frame or DEFAULT_MAX_FRAME
        decoder = Decoder(limit)
        decoder.feed(data)
        got: list[Frame] = []
        try:
            got.extend(decoder)
        except ProtocolError as exc:
            expected_cls = FrameTooLarge if error == TOO_LARGE else ProtocolError
            if not isinstance(exc, expected_cls) or exc.code.name != error:
                raise AssertionError(f"{name}: raised {exc!r}, expected {error}") from None
        else:
            raise AssertionError(f"{name}: was accepted")
        if len(got) != before:
            raise AssertionError(f"{name}: {len(got)} frames before the error")
        cases.append(
            {
                "name": name,
                "hex": data.hex(),
                "max_frame": limit,
                "error": error,
                "frames_before_error": before,
                "reason": reason,
            }
        )
    incomplete = []
    for name, data, reason in INCOMPLETE:
        if decode_all(data) != []:
            raise AssertionError(f"{name}: produced a frame")
        incomplete.append(
            {"name": name, "hex": data.hex(), "max_frame": DEFAULT_MAX_FRAME, "reason": reason}
        )
    # The truncated-payload case must really be a prefix of something valid.
    decode_payload(encode(Ack(req=1, deliveries=[1, 2]))[4:])
    return {
        "protocol_version": 1,
        "description": (
            "Inputs a brokerd protocol version 1 decoder must reject (see "
            "protocol/SPEC.md). Feed 'hex' as a byte stream to a decoder whose frame "
            "limit is 'max_frame'; it must yield 'frames_before_error' valid frames and "
            "then fail with 'error' (the error code a server sends before closing). "
            "'incomplete' lists valid prefixes: a decoder must yield no frame and raise "
            "no error, and wait for more bytes."
        ),
        "malformed": cases,
        "incomplete": incomplete,
    }


# --- output ------------------------------------------------------------------


def render(doc: dict[str, Any]) -> str:
    """Stable JSON text: fixed indentation, insertion order, trailing newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


OUTPUTS = {"frames.json": build_frames, "malformed.json": build_malformed}


def main() -> None:
    # Build (and so verify) everything before writing anything.
    texts = {filename: render(build()) for filename, build in OUTPUTS.items()}
    for filename, text in texts.items():
        path = HERE / filename
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
