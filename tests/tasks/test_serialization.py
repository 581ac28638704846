"""Task bodies and result payloads round-trip through json and msgpack (and
zlib); nothing else is accepted, and no decoder runs code."""

from __future__ import annotations

import datetime as dt
import json
import tracemalloc
import uuid
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokerd_client.tasks.exceptions import ContentDisallowed
from brokerd_client.tasks.serialization import (
    DEFAULT_MAX_DECOMPRESSED,
    MAX_DEPTH,
    DecodeError,
    EncodeError,
    decode_body,
    decode_result,
    encode_body,
    encode_error,
    encode_result,
    serializer_for_content_type,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize("compression", [None, "zlib"])
@given(
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
def test_a_body_round_trips(
    serializer: str, compression: str | None, args: list[Any], kwargs: dict[str, Any]
) -> None:
    body = encode_body(args, kwargs, serializer, compression)
    assert decode_body(body, serializer, compression) == (args, kwargs)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@given(value=json_values)
def test_a_result_round_trips(serializer: str, value: Any) -> None:
    assert decode_result(encode_result(value, serializer)) == {"result": value}


def test_msgpack_carries_bytes_json_refuses_them() -> None:
    body = encode_body([b"\x00\xff"], {}, "msgpack", None)
    assert decode_body(body, "msgpack", None) == ([b"\x00\xff"], {})
    with pytest.raises(EncodeError):
        encode_body([b"\x00"], {}, "json", None)


def test_common_types_become_strings_others_fail_at_send_time() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    uid = uuid.UUID(int=1)
    args, _ = decode_body(encode_body([when, uid], {}, "json", None), "json", None)
    assert args == [when.isoformat(), str(uid)]
    with pytest.raises(EncodeError, match="object"):
        encode_body([object()], {}, "json", None)


def test_an_error_payload_decodes_to_its_fields() -> None:
    payload = encode_error("ValueError", "builtins", "bad", "Traceback...", "msgpack")
    assert payload[:1] == b"m"
    assert decode_result(payload) == {
        "exc_type": "ValueError",
        "exc_module": "builtins",
        "exc_message": "bad",
        "traceback": "Traceback...",
    }
    assert decode_result(b"") == {}


@pytest.mark.parametrize(
    ("body", "serializer", "compression"),
    [
        (b"not json", "json", None),
        (b'["args"]', "json", None),
        (b'{"args": 1, "kwargs": {}}', "json", None),
        (b"\xc1", "msgpack", None),
        (b"plain", "json", "zlib"),
        (zlib.compress(b"{}"), "json", "gzip"),
    ],
)
def test_malformed_bodies_are_decode_errors(
    body: bytes, serializer: str, compression: str | None
) -> None:
    with pytest.raises(DecodeError):
        decode_body(body, serializer, compression)


def test_an_unknown_result_tag_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_result(b"p\x80\x04")


def test_content_types_outside_accept_are_refused_before_decoding() -> None:
    accept = frozenset({"json"})
    assert serializer_for_content_type("application/json", accept) == "json"
    for ctype in ("application/x-msgpack", "application/x-python-serialize", "text/yaml"):
        with pytest.raises(ContentDisallowed):
            serializer_for_content_type(ctype, accept)


# --- hostile bodies: bounded depth, bounded inflation ---------------------------------


@pytest.mark.parametrize(
    ("body", "serializer"),
    [
        (b'{"args":' + b"[" * 100_000 + b"]" * 100_000 + b',"kwargs":{}}', "json"),
        (b"\x82\xa4args" + b"\x91" * 100_000 + b"\xc0" + b"\xa6kwargs\x80", "msgpack"),
    ],
)
def test_a_body_nested_without_bound_is_a_decode_error_not_a_recursion_error(
    body: bytes, serializer: str
) -> None:
    with pytest.raises(DecodeError, match="nested deeper than"):
        decode_body(body, serializer, None)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_nesting_up_to_the_limit_round_trips_and_one_more_level_is_refused(
    serializer: str,
) -> None:
    def nested(levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = [value]
        return value

    # The body map and its args list are two levels of the limit.
    fits = nested(MAX_DEPTH - 2)
    body = encode_body([fits], {}, serializer, None)
    assert decode_body(body, serializer, None) == ([fits], {})
    with pytest.raises(EncodeError, match="nested deeper than"):
        encode_body([nested(MAX_DEPTH - 1)], {}, serializer, None)
    with pytest.raises(EncodeError, match="nested deeper than"):
        encode_result(nested(MAX_DEPTH), serializer)


def test_a_result_nested_without_bound_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="nested deeper than"):
        decode_result(b'j{"result":' + b"[" * 50_000 + b"]" * 50_000 + b"}")


def test_a_zlib_bomb_is_refused_without_inflating_it() -> None:
    inner = b'{"args":["' + b"a" * (16 << 20) + b'"],"kwargs":{}}'
    bomb = zlib.compress(inner, 9)
    del inner
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=r"more than 1048576 bytes"):
            decode_body(bomb, "json", "zlib", max_decompressed=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_the_default_inflation_cap_is_the_frame_limit() -> None:
    assert DEFAULT_MAX_DECOMPRESSED == 16 * 1024 * 1024
    inner = b'{"args":["' + b"a" * DEFAULT_MAX_DECOMPRESSED + b'"],"kwargs":{}}'
    with pytest.raises(DecodeError, match="more than"):
        decode_body(zlib.compress(inner), "json", "zlib")


def test_a_body_that_inflates_to_exactly_the_cap_is_accepted() -> None:
    body = encode_body(["a" * 1000], {}, "json", None)
    assert decode_body(zlib.compress(body), "json", "zlib", max_decompressed=len(body)) == (
        ["a" * 1000],
        {},
    )
    with pytest.raises(DecodeError, match="more than"):
        decode_body(zlib.compress(body), "json", "zlib", max_decompressed=len(body) - 1)


def test_a_truncated_zlib_body_is_a_decode_error() -> None:
    body = zlib.compress(encode_body(["a" * 1000], {}, "json", None))
    with pytest.raises(DecodeError, match="zlib"):
        decode_body(body[:-5], "json", "zlib")


# --- fuzz: hostile bodies only ever raise DecodeError ---------------------------------

_containers = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
_hostile_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(0, 3000)),
    st.builds(lambda n: b"\x91" * n + b"\xc0", st.integers(0, 3000)),
    st.builds(msgpack.packb, _containers),
    st.builds(lambda v: json.dumps(v).encode(), _containers),
    st.builds(lambda a: msgpack.packb({"args": a, "kwargs": {}}), st.lists(_containers)),
    st.builds(lambda a: json.dumps({"args": a, "kwargs": {}}).encode(), st.lists(_containers)),
)


def _check_decode(body: bytes, serializer: str, compress: bool) -> None:
    data = zlib.compress(body) if compress else body
    try:
        args, kwargs = decode_body(data, serializer, "zlib" if compress else None, 4096)
    except DecodeError:
        return
    assert type(args) is list and type(kwargs) is dict


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_hostile_bodies, serializer=st.sampled_from(["json", "msgpack"]), z=st.booleans())
def test_hostile_bodies_only_raise_decode_error(body: bytes, serializer: str, z: bool) -> None:
    _check_decode(body, serializer, z)


@pytest.mark.fuzz
@settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_hostile_bodies, serializer=st.sampled_from(["json", "msgpack"]), z=st.booleans())
def test_fuzz_the_body_decoder_at_length(body: bytes, serializer: str, z: bool) -> None:
    _check_decode(body, serializer, z)
