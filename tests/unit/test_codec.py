"""brokerd_protocol codec: golden vectors, malformed input and decoder limits.

The golden vectors in protocol/vectors/ are the contract with clients in other
languages, so these tests check the Python codec against the committed JSON
(not against itself) and check that the JSON is what generate.py would write.
"""

from __future__ import annotations

import importlib.util
import json
import re
import struct
from dataclasses import MISSING, Field, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest

from brokerd_protocol import (
    CONNECTION_FATAL,
    DEFAULT_MAX_FRAME,
    FRAME_TYPES,
    HARD_MAX_FRAME,
    Ack,
    Close,
    Decoder,
    Deliver,
    ErrorCode,
    Frame,
    FrameTooLarge,
    Heartbeat,
    Hello,
    Ok,
    ProtocolError,
    Publish,
    decode_payload,
    encode,
    encode_deliver,
    encode_payload,
)
from brokerd_protocol.limits import MAX_DEPTH

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocol" / "vectors"
SPEC = ROOT / "protocol" / "SPEC.md"
BY_NAME: dict[str, type[Frame]] = {cls.__name__: cls for cls in FRAME_TYPES}
#: Frame codes 40-59 are the task layer: reserved in SPEC.md, specified later.
TASK_LAYER_CODES = range(40, 60)
CORE_FRAME_TYPES = [cls for cls in FRAME_TYPES if cls.TYPE not in TASK_LAYER_CODES]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "brokerd_vectors_generate", VECTORS / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return doc


FRAMES = _load("frames.json")
MALFORMED = _load("malformed.json")


def from_json(value: Any) -> Any:
    """Inverse of the generator's representation: {"hex": s} is bytes."""
    if isinstance(value, dict):
        if set(value) == {"hex"} and isinstance(value["hex"], str):
            return bytes.fromhex(value["hex"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def vector_frame(case: dict[str, Any]) -> Frame:
    cls = BY_NAME[case["frame"]]
    assert case["code"] == cls.TYPE
    assert list(case["fields"]) == [fl.name for fl in fields(cls)]
    return cls(**{k: from_json(v) for k, v in case["fields"].items()})


def decode_stream(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> list[Frame]:
    decoder = Decoder(max_frame)
    decoder.feed(data)
    return list(decoder)


def payload_of(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def nested(levels: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


# --- golden vectors ------------------------------------------------------------


def test_vector_files_match_generator() -> None:
    gen = _load_generator()
    for filename, build in gen.OUTPUTS.items():
        committed = (VECTORS / filename).read_text(encoding="utf-8")
        assert gen.render(build()) == committed, f"run protocol/vectors/generate.py ({filename})"


def test_every_core_frame_type_has_a_vector() -> None:
    covered = {case["frame"] for case in FRAMES["cases"]}
    assert covered == {cls.__name__ for cls in CORE_FRAME_TYPES}


@pytest.mark.parametrize("case", FRAMES["cases"], ids=ids(FRAMES["cases"]))
def test_vector_decodes_to_fields(case: dict[str, Any]) -> None:
    assert decode_stream(bytes.fromhex(case["hex"])) == [vector_frame(case)]


@pytest.mark.parametrize("case", FRAMES["cases"], ids=ids(FRAMES["cases"]))
def test_fields_encode_to_vector_bytes(case: dict[str, Any]) -> None:
    assert encode(vector_frame(case)).hex() == case["hex"]


DELIVER_CASES = [case for case in FRAMES["cases"] if case["frame"] == "Deliver"]


@pytest.mark.parametrize("case", DELIVER_CASES, ids=ids(DELIVER_CASES))
def test_the_fast_deliver_encoder_writes_the_vector_bytes(case: dict[str, Any]) -> None:
    frame = vector_frame(case)
    assert isinstance(frame, Deliver)
    fast = encode_deliver(**{fl.name: getattr(frame, fl.name) for fl in fields(Deliver)})
    assert fast == encode(frame)
    assert fast.hex() == case["hex"]


def test_the_fast_deliver_encoder_takes_delivers_fields_in_order() -> None:
    props = {"timestamp": 3, "redelivered": True}
    fast = encode_deliver(1, 2, "ex", "key", b"body", props, 2, 0.5)
    assert fast == encode(Deliver(1, 2, "ex", "key", b"body", props, 2, 0.5))


@pytest.mark.parametrize("case", FRAMES["decode_only"], ids=ids(FRAMES["decode_only"]))
def test_non_canonical_vector_decodes(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    frame = vector_frame(case)
    assert decode_stream(data) == [frame]
    assert encode(frame) != data


@pytest.mark.parametrize("case", MALFORMED["malformed"], ids=ids(MALFORMED["malformed"]))
def test_malformed_vector_is_rejected(case: dict[str, Any]) -> None:
    decoder = Decoder(case["max_frame"])
    decoder.feed(bytes.fromhex(case["hex"]))
    got: list[Frame] = []
    with pytest.raises(ProtocolError) as info:
        got.extend(decoder)
    assert info.value.code is ErrorCode[case["error"]]
    assert isinstance(info.value, FrameTooLarge) == (case["error"] == "FRAME_TOO_LARGE")
    assert len(got) == case["frames_before_error"]


@pytest.mark.parametrize("case", MALFORMED["incomplete"], ids=ids(MALFORMED["incomplete"]))
def test_incomplete_vector_waits(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    decoder = Decoder(case["max_frame"])
    decoder.feed(data)
    assert decoder.next_frame() is None
    assert decoder.buffered == len(data)


@pytest.mark.parametrize("case", FRAMES["cases"], ids=ids(FRAMES["cases"]))
def test_extra_trailing_fields_are_ignored(case: dict[str, Any]) -> None:
    obj = msgpack.unpackb(bytes.fromhex(case["hex"])[4:], raw=False)
    obj += ["a later revision's field", 7, None, {"k": [1]}]
    assert decode_stream(framed(payload_of(obj))) == [vector_frame(case)]


#: A non-default sample value per declared field type, so decoding a frame
#: with its defaulted fields omitted visibly yields the defaults instead.
SAMPLES: dict[str, Any] = {
    "int": 7,
    "str": "s",
    "bool": True,  # flipped by _sample where True is the default
    "float": 1.5,
    "bytes": b"b",
    "str | None": "t",
    "float | None": 2.5,
    "list[int]": [1],
    "list[list[int]]": [[1, 2]],
    "list[str]": ["a"],
    "list[str] | None": ["b"],
    "dict[str, Any]": {"k": 1},
    "Any": [1],
}


def _sample(fl: Field[Any]) -> Any:
    value = SAMPLES[str(fl.type)]
    if type(value) is bool and fl.default is value:
        return not value
    return value


def _default(fl: Field[Any]) -> Any:
    if fl.default is not MISSING:
        return fl.default
    assert fl.default_factory is not MISSING
    return fl.default_factory()


@pytest.mark.parametrize("cls", FRAME_TYPES, ids=[c.__name__ for c in FRAME_TYPES])
def test_omitted_defaulted_fields_take_defaults(cls: type[Frame]) -> None:
    flds = fields(cls)
    full = cls(*(_sample(fl) for fl in flds))
    required = [fl for fl in flds if fl.default is MISSING and fl.default_factory is MISSING]
    defaults = {fl.name: _default(fl) for fl in flds[len(required) :]}
    for fl in flds[len(required) :]:
        assert getattr(full, fl.name) != defaults[fl.name], f"sample for {fl.name} is the default"
    obj = [cls.TYPE, *(getattr(full, fl.name) for fl in required)]
    assert decode_payload(payload_of(obj)) == replace(full, **defaults)
    # Every defaulted field present round-trips as sent.
    assert decode_payload(encode_payload(full)) == full


# --- framing -------------------------------------------------------------------


def test_a_heartbeat_encodes_to_six_bytes() -> None:
    assert encode(Heartbeat()) == b"\x00\x00\x00\x02\x91\x03"
    assert encode_payload(Heartbeat()) == b"\x91\x03"


def test_oversized_header_fails_before_payload_arrives() -> None:
    decoder = Decoder(max_frame=1024)
    header = struct.pack(">I", 1025)
    decoder.feed(header[:3])
    assert decoder.next_frame() is None
    decoder.feed(header[3:])
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    # Only the header was ever buffered: nothing large was allocated.
    assert decoder.buffered == 4


def test_an_oversized_header_fails_at_the_default_limit() -> None:
    decoder = Decoder()
    decoder.feed(struct.pack(">I", DEFAULT_MAX_FRAME + 1))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    assert decoder.buffered == 4


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    base = len(encode_payload(Publish(seq=1, exchange="", routing_key="q", body=b"")))
    limit = 300
    # The body needs bin16, whose length header is one byte longer than bin8's.
    body = b"x" * (limit - base - 1)
    frame = Publish(seq=1, exchange="", routing_key="q", body=body)
    assert len(encode_payload(frame)) == limit
    assert decode_stream(encode(frame), max_frame=limit) == [frame]
    with pytest.raises(FrameTooLarge):
        decode_stream(encode(frame), max_frame=limit - 1)


def test_a_zero_length_frame_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_stream(b"\x00\x00\x00\x00")
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_truncated_payload_waits_until_complete() -> None:
    frame = Publish(seq=9, exchange="ex", routing_key="rk", body=b"\x00" * 50, props={"a": 1})
    data = encode(frame)
    decoder = Decoder()
    for byte in data[:-1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.feed(data[-1:])
    assert decoder.next_frame() == frame
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


def test_many_frames_in_one_feed_all_decode() -> None:
    sent = [Heartbeat(), Ack(req=1, deliveries=[1, 2]), Close(), Ok(req=2, value={"x": [1]})]
    decoder = Decoder()
    decoder.feed(b"".join(encode(fr) for fr in sent) + b"\x00\x00")
    assert list(decoder) == sent
    assert decoder.buffered == 2


@pytest.mark.parametrize("max_frame", [0, -1, HARD_MAX_FRAME + 1])
def test_decoder_limit_must_be_sane(max_frame: int) -> None:
    with pytest.raises(ValueError):
        Decoder(max_frame)


# --- payload validation --------------------------------------------------------

BAD_PAYLOADS: list[tuple[str, bytes]] = [
    ("not_an_array", payload_of(3)),
    ("map_payload", payload_of({"type": 3})),
    ("empty_array", payload_of([])),
    ("unknown_type", payload_of([99])),
    ("type_code_bool", payload_of([True])),
    ("too_few_fields", payload_of([5, 1, 10])),
    ("str_where_int", payload_of([31, "1", 7])),
    ("bool_where_int", payload_of([31, 1, True])),
    ("int_list_with_strings", payload_of([33, 1, [1, "2", "3"]])),
    ("int_where_str", payload_of([13, 1, 5])),
    ("str_where_bytes", payload_of([20, 1, "", "q", "text"])),
    ("nil_where_int", payload_of([38, None, "gone"])),
    ("float_for_int_list", payload_of([37, 1, [1.5]])),
    ("invalid_msgpack", b"\xc1"),
    ("truncated_msgpack", b"\x93\x06\x01"),
    ("trailing_bytes", b"\x91\x03\x03"),
    ("int_map_key", payload_of([20, 1, "", "q", b"", {1: 1}])),
    ("bin_map_key", payload_of([20, 1, "", "q", b"", {b"headers": {}}])),
    ("nested_bin_map_key", payload_of([6, 1, [{"a": {b"b": 1}}]])),
    ("deep_nesting_100", payload_of([20, 1, "", "q", b"", {"headers": nested(100, 0)}])),
    ("nesting_17", payload_of([6, 1, nested(MAX_DEPTH + 1, 0)])),
    ("ext_type", payload_of([6, 1, msgpack.ExtType(1, b"x")])),
    ("timestamp_ext", payload_of([20, 1, "", "q", b"", {"t": msgpack.Timestamp(1)}])),
    ("invalid_utf8", b"\x94\x05\x01\x0a\xa1\xff"),
]


@pytest.mark.parametrize("payload", [p for _, p in BAD_PAYLOADS], ids=[n for n, _ in BAD_PAYLOADS])
def test_bad_payload_raises_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_payload(payload)
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    # Through the stream decoder as well, where a server would meet it.
    with pytest.raises(ProtocolError):
        decode_stream(framed(payload))


def test_nesting_at_the_limit_is_accepted() -> None:
    value = nested(MAX_DEPTH - 1, [1])  # 16 arrays, the innermost holding a scalar
    assert decode_payload(payload_of([6, 1, value])) == Ok(req=1, value=value)
    props = {"a": nested(MAX_DEPTH - 2, [])}  # props is level 1, 15 arrays below
    frame = Publish(seq=1, exchange="", routing_key="q", body=b"", props=props)
    assert decode_payload(encode_payload(frame)) == frame


def test_int_is_accepted_for_a_number_field() -> None:
    frame = decode_payload(payload_of([1, [1], None, "c", 5]))
    assert frame == Hello(versions=[1], client_name="c", heartbeat=5.0)
    assert isinstance(frame, Hello)
    assert type(frame.heartbeat) is float


# --- error table ---------------------------------------------------------------


def test_fatal_codes_are_the_connection_level_ones() -> None:
    assert {c for c in ErrorCode if c.value < 10} == CONNECTION_FATAL


def test_spec_documents_every_frame_and_error_code() -> None:
    text = SPEC.read_text(encoding="utf-8")
    for cls in CORE_FRAME_TYPES:
        assert re.search(rf"^\| {cls.TYPE} \| `{cls.__name__}` \|", text, re.M), cls.__name__
    for code in ErrorCode:
        fatal = "yes" if code in CONNECTION_FATAL else "no"
        row = rf"^\| {code.value} \| `{code.name}` \| {fatal} \|"
        assert re.search(row, text, re.M), code.name


# --- per-frame caps (SPEC §13) -------------------------------------------------

#: The id caps SPEC §13 states, by frame: a list one longer is a protocol error.
LIST_CAPS: list[tuple[str, int, Any]] = [
    ("Ack", 10_000, lambda ids: [33, 1, ids]),
    ("Nack", 10_000, lambda ids: [34, 1, ids]),
    ("Reject", 10_000, lambda ids: [35, 1, ids]),
    ("Extend", 10_000, lambda ids: [36, 1, ids, 30.0]),
    ("ResultGet", 1_000, lambda ids: [41, 1, [str(i) for i in ids]]),
    ("Revoke", 10_000, lambda ids: [43, 1, [str(i) for i in ids]]),
    ("Subscribe", 64, lambda ids: [44, 1, ["revoke"] * len(ids)]),
    ("ResultDelete", 1_000, lambda ids: [49, 1, [str(i) for i in ids]]),
]


@pytest.mark.parametrize(("name", "cap", "build"), LIST_CAPS, ids=[c[0] for c in LIST_CAPS])
def test_a_list_longer_than_its_cap_is_a_protocol_error_naming_the_cap(
    name: str, cap: int, build: Any
) -> None:
    at_cap = decode_payload(payload_of(build(list(range(1, cap + 1)))))
    assert type(at_cap).__name__ == name
    with pytest.raises(ProtocolError) as info:
        decode_payload(payload_of(build(list(range(1, cap + 2)))))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    assert name in str(info.value)
    assert f"{cap}" in str(info.value).replace(",", "")


def test_an_oversized_list_is_refused_before_its_items_are_checked() -> None:
    # A million strings where ids belong: the cap, not the item type, is reported.
    with pytest.raises(ProtocolError, match="10000"):
        decode_payload(payload_of([33, 1, ["x"] * 1_000_000]))


def test_decoder_limit_can_be_raised_after_the_handshake() -> None:
    decoder = Decoder(max_frame=1024)
    big = encode(Publish(seq=1, exchange="", routing_key="q", body=b"x" * 2000))
    decoder.max_frame = 4096
    assert decoder.max_frame == 4096
    decoder.feed(big)
    assert isinstance(decoder.next_frame(), Publish)


@pytest.mark.parametrize("max_frame", [0, -1, HARD_MAX_FRAME + 1])
def test_decoder_limit_cannot_be_changed_to_a_senseless_value(max_frame: int) -> None:
    decoder = Decoder(max_frame=1024)
    with pytest.raises(ValueError):
        decoder.max_frame = max_frame
    assert decoder.max_frame == 1024
