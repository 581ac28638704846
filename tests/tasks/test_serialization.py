"""Task bodies and result payloads round-trip through json and msgpack (and
zlib); nothing else is accepted, and no decoder runs code."""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokerd_client.tasks.exceptions import ContentDisallowed
from brokerd_client.tasks.serialization import (
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
def test_body_round_trip(
    serializer: str, compression: str | None, args: list[Any], kwargs: dict[str, Any]
) -> None:
    body = encode_body(args, kwargs, serializer, compression)
    assert decode_body(body, serializer, compression) == (args, kwargs)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@given(value=json_values)
def test_result_round_trip(serializer: str, value: Any) -> None:
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


def test_error_payload() -> None:
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


def test_unknown_result_tag() -> None:
    with pytest.raises(DecodeError):
        decode_result(b"p\x80\x04")


def test_content_types_outside_accept_are_refused_before_decoding() -> None:
    accept = frozenset({"json"})
    assert serializer_for_content_type("application/json", accept) == "json"
    for ctype in ("application/x-msgpack", "application/x-python-serialize", "text/yaml"):
        with pytest.raises(ContentDisallowed):
            serializer_for_content_type(ctype, accept)
