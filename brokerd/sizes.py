"""Byte sizes as operators write them: ``1GB``, ``500MB``, ``128MiB``, ``0``.

Decimal units (kB, MB, GB, TB: powers of 1000) and binary ones (K, KiB, M,
MiB, ...: powers of 1024) as RabbitMQ reads ``disk_free_limit``; letters are
case-insensitive, a bare number is bytes.
"""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "k": 2**10,
    "kib": 2**10,
    "m": 2**20,
    "mib": 2**20,
    "g": 2**30,
    "gib": 2**30,
    "t": 2**40,
    "tib": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: str | int) -> int:
    """Bytes in ``value``; ``ValueError`` naming it when it is not a size."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"not a size: {value!r}")
    match = _SIZE.fullmatch(value)
    factor = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise ValueError(
            f"not a size: {value!r} (bytes, or a number with kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    number = match.group(1)
    if "." in number:
        return int(float(number) * factor)
    return int(number) * factor


def format_size(n: int) -> str:
    """``n`` bytes for a log line, in binary units."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
