"""Message bodies: a 16-byte header (sequence number, send timestamp) plus padding."""

from __future__ import annotations

import struct

HEADER = struct.Struct("<QQ")
MIN_SIZE = HEADER.size


class BodyFactory:
    """Builds bodies of exactly ``size`` bytes whose first 16 bytes are (seq, stamp_ns)."""

    __slots__ = ("_pad", "size")

    def __init__(self, size: int) -> None:
        if size < MIN_SIZE:
            raise ValueError(f"message size must be at least {MIN_SIZE} bytes")
        self.size = size
        self._pad = b"." * (size - MIN_SIZE)

    def make(self, seq: int, stamp_ns: int = 0) -> bytes:
        return HEADER.pack(seq, stamp_ns) + self._pad

    def batch(self, start: int, stop: int) -> list[bytes]:
        pack, pad = HEADER.pack, self._pad
        return [pack(seq, 0) + pad for seq in range(start, stop)]


def parse(body: bytes) -> tuple[int, int]:
    """Return (seq, stamp_ns) from a body made by :class:`BodyFactory`."""
    seq, stamp = HEADER.unpack_from(body)
    return seq, stamp
