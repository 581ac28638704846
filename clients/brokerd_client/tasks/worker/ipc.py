"""Messages between a worker and its child processes: length-prefixed msgpack.

Not ``multiprocessing`` pipes, which pickle: the project never unpickles
anything, not even from its own children. Each message is a 4-byte big-endian
length and a msgpack map; bodies travel as the raw bytes the broker
delivered, so the parent never decodes arguments it only passes on.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

__all__ = ["MAX_MESSAGE", "Reader", "pack", "recv_message"]

_LEN = struct.Struct(">I")
#: Largest IPC message accepted (a task body is bounded by the broker's frame).
MAX_MESSAGE = 256 * 1024 * 1024


def pack(message: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return _LEN.pack(len(data)) + data


def _unpack(data: bytes) -> dict[str, Any]:
    obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if type(obj) is not dict:
        raise ValueError("IPC message must be a map")
    return obj


class Reader:
    """Incremental parser for the stream of one peer."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buf
        buf += data
        out: list[dict[str, Any]] = []
        while len(buf) >= 4:
            (size,) = _LEN.unpack_from(buf)
            if size > MAX_MESSAGE:
                raise ValueError(f"IPC message of {size} bytes exceeds the limit")
            if len(buf) < 4 + size:
                break
            out.append(_unpack(bytes(buf[4 : 4 + size])))
            del buf[: 4 + size]
        return out


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    """Blocking read of one message (the child side); None at end of stream."""
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (size,) = _LEN.unpack(head)
    if size > MAX_MESSAGE:
        raise ValueError(f"IPC message of {size} bytes exceeds the limit")
    data = _recv_exact(sock, size)
    if data is None:
        return None
    return _unpack(data)
