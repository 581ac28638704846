"""How brokerctl prints: aligned tables for people, JSON for scripts.

JSON is exactly what the broker answered (restricted to the columns asked
for), one document per command, so scripts never parse a table. Tables make
values readable: epoch times as UTC, nil as ``-``, the empty string (the
default exchange's name) as ``""``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .commands import Result

#: Columns holding epoch seconds, shown as UTC times in tables.
_TIMES = frozenset({"connected_at"})


def render(result: Result, formatter: str) -> str:
    if formatter == "json":
        return _json(result)
    if result.kind == "rows":
        return table(result.value, result.columns)
    if result.kind == "map":
        return "\n".join(_flatten(result.value, ""))
    return result.text


def _json(result: Result) -> str:
    if result.kind == "rows":
        value: Any = [{c: row.get(c) for c in result.columns} for row in result.value]
    else:
        value = result.value
    return json.dumps(value, indent=2, sort_keys=False)


def cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if column in _TIMES and isinstance(value, int | float):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") or "0"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    text = str(value)
    return text if text else '""'


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    cells = [[cell(c, row.get(c)) for c in columns] for row in rows]
    widths = [len(c) for c in columns]
    for line in cells:
        widths = [max(w, len(v)) for w, v in zip(widths, line, strict=True)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for line in cells:
        out.append("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(out)


def _flatten(value: dict[str, Any], prefix: str) -> list[str]:
    """``status`` as ``key: value`` lines, nested maps as dotted keys."""
    lines: list[str] = []
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            lines.extend(_flatten(item, name + "."))
        elif isinstance(item, list) and item and all(isinstance(x, dict) for x in item):
            for x in item:
                lines.append(f"{name}: " + " ".join(str(v) for v in x.values()))
        else:
            lines.append(f"{name}: {cell(key, item)}")
    return lines
