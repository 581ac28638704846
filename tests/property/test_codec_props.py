"""Property tests for the brokerd_protocol codec.

Two promises matter to the server and clients: a byte stream of valid frames
decodes to exactly those frames however TCP happens to split it, and hostile
bytes can only ever produce ``ProtocolError`` while the decoder buffers no more
than one frame's worth. Strategies are derived from each frame type's declared
field types, so a frame type added later is covered as soon as it is listed in
``FRAME_TYPES``.
"""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokerd_protocol import (
    FRAME_TYPES,
    HEADER_SIZE,
    Decoder,
    Frame,
    ProtocolError,
    decode_payload,
    encode,
)

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1

ints = st.integers(min_value=INT64_MIN, max_value=UINT64_MAX)
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
# NaN never equals itself, so it cannot take part in an equality round-trip.
floats = st.floats(allow_nan=False)
scalars = st.none() | st.booleans() | ints | floats | texts | st.binary(max_size=40)
# Generic values for ``Any`` and map fields: str-keyed maps and arrays, kept
# far below the nesting limit by the leaf budget.
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)

FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "int": ints,
    "str": texts,
    "bool": st.booleans(),
    "float": floats,
    "bytes": st.binary(max_size=300),
    "str | None": st.none() | texts,
    "float | None": st.none() | floats,
    "list[int]": st.lists(ints, max_size=8),
    "list[list[int]]": st.lists(st.lists(ints, min_size=2, max_size=2), max_size=5),
    "list[str]": st.lists(texts, max_size=5),
    "list[str] | None": st.none() | st.lists(texts, max_size=5),
    "dict[str, Any]": st.dictionaries(texts, values, max_size=5),
    "Any": values,
}


def frame_strategy(cls: type[Frame]) -> st.SearchStrategy[Frame]:
    return st.builds(cls, *(FIELD_STRATEGIES[str(fl.type)] for fl in fields(cls)))


FRAME_STRATEGIES = {cls: frame_strategy(cls) for cls in FRAME_TYPES}
any_frame = st.one_of(*FRAME_STRATEGIES.values())


def feed_in_chunks(data: bytes, cuts: list[int]) -> list[Frame]:
    decoder = Decoder()
    out: list[Frame] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        decoder.feed(data[start:cut])
        out.extend(decoder)
        start = cut
    assert decoder.buffered == 0
    return out


@pytest.mark.parametrize("cls", FRAME_TYPES, ids=[c.__name__ for c in FRAME_TYPES])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_each_frame_type_round_trips(cls: type[Frame], data: st.DataObject) -> None:
    frame = data.draw(FRAME_STRATEGIES[cls])
    encoded = encode(frame)
    assert decode_payload(encoded[HEADER_SIZE:]) == frame
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=4))
    assert feed_in_chunks(encoded, cuts) == [frame]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_split_stream_yields_the_same_frames(data: st.DataObject) -> None:
    frames = data.draw(st.lists(any_frame, max_size=12))
    stream = b"".join(encode(fr) for fr in frames)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    assert feed_in_chunks(stream, cuts) == frames


# --- hostile input ---------------------------------------------------------------

SMALL_MAX = 4096
KNOWN_CODES = [cls.TYPE for cls in FRAME_TYPES]

# Anything msgpack can carry, including what the protocol forbids: non-str
# keys and extension types.
raw_keys = st.integers(-5, 5) | texts | st.binary(max_size=4)
raw_scalars = scalars | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4))
raw_values = st.recursive(
    raw_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(raw_keys, inner, max_size=3),
    max_leaves=10,
)


def _framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


# A plausible-looking frame: a known or unknown type code, then random fields.
frame_like = st.builds(
    lambda code, rest: _framed(msgpack.packb([code, *rest], use_bin_type=True)),
    st.sampled_from(KNOWN_CODES) | st.integers(-2, 300),
    st.lists(raw_values, max_size=9),
)
segments = st.one_of(
    st.binary(max_size=64),
    st.builds(encode, any_frame),
    frame_like,
    st.builds(_framed, st.binary(min_size=1, max_size=64)),
    st.builds(lambda n: struct.pack(">I", n), st.integers(0, 2**32 - 1)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_bytes_only_raise_protocol_error(data: st.DataObject) -> None:
    stream = b"".join(data.draw(st.lists(segments, max_size=8)))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = Decoder(SMALL_MAX)
    start = 0
    for cut in [*cuts, len(stream)]:
        chunk = stream[start:cut]
        start = cut
        decoder.feed(chunk)
        assert decoder.buffered <= SMALL_MAX + HEADER_SIZE + len(chunk)
        try:
            for frame in decoder:
                assert isinstance(frame, Frame)
        except ProtocolError:
            return  # a real peer is disconnected here; the decoder is discarded
        # Between feeds at most one incomplete frame (header included) waits.
        assert decoder.buffered < SMALL_MAX + HEADER_SIZE
