"""RabbitMQ's list parameters over rows of the management API (pure).

``name`` (substring filter), ``sort`` (a field, dotted for nested ones) and
``sort_reverse``, ``columns`` (the fields to return, comma-separated) and
``page``/``page_size``, with which the answer is a page object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .http import HTTPError


def int_param(
    body: dict[str, Any], name: str, default: int | None, low: int, high: int
) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HTTPError(400, f"{name} must be an integer within {low}..{high}")
    return value


#: Largest page (RabbitMQ's limit too).
MAX_PAGE_SIZE = 500


def _path(row: dict[str, Any], dotted: str) -> Any:
    value: Any = row
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def projector(columns: list[str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``project`` for many rows: each column's path split once, not per row.
    A column inside another asked for (``s.r.deep`` with ``s.r``) is in it
    already: only the outer one is projected."""
    asked = set(columns)
    paths = [
        parts
        for parts in (dotted.split(".") for dotted in dict.fromkeys(columns))
        if not any(".".join(parts[:i]) in asked for i in range(1, len(parts)))
    ]

    def one(row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for parts in paths:
            value: Any = row
            for part in parts:
                if not isinstance(value, dict):
                    value = None
                    break
                value = value.get(part)
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = value
        return out

    return one


def project(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """The ``columns`` (dotted for nested fields) of ``row``, nested alike;
    None where a path is missing."""
    return projector(columns)(row)


def shape(rows: list[dict[str, Any]], query: dict[str, str]) -> Any:
    """RabbitMQ's list parameters: ``name`` (substring filter), ``sort`` (a
    field, dotted for nested ones) and ``sort_reverse``, ``columns`` (the
    fields to return, comma-separated), and ``page``/``page_size``, with which
    the answer is a page object (``items``, ``page_count``, ...)."""
    total = len(rows)
    name = query.get("name")
    if name:
        rows = [r for r in rows if name in str(r.get("name", ""))]
    key = query.get("sort")
    if key:

        def sort_key(row: dict[str, Any]) -> tuple[int, Any]:
            v = _path(row, key)
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                return (0, 0)
            return (1, v) if isinstance(v, int | float) else (2, v)

        rows = sorted(rows, key=sort_key, reverse=query.get("sort_reverse") == "true")
    columns = [c for c in query.get("columns", "").split(",") if c]
    if "page" not in query:
        return list(map(projector(columns), rows)) if columns else rows
    page = int_param(query, "page", 1, 1, 1 << 31)
    size = int_param(query, "page_size", 100, 1, MAX_PAGE_SIZE)
    assert page is not None and size is not None
    filtered = len(rows)
    items = rows[(page - 1) * size : page * size]
    if columns:
        items = list(map(projector(columns), items))
    return {
        "items": items,
        "page": page,
        "page_size": size,
        "page_count": max(1, -(-filtered // size)),
        "item_count": len(items),
        "filtered_count": filtered,
        "total_count": total,
    }


def stable_reverse_by_name(
    named: list[tuple[str, str, str]],
) -> list[tuple[str, str, str]]:
    """Names descending, equal names in ascending vhost order (what a stable
    ``sorted(reverse=True)`` of rows in (vhost, name) order gives)."""
    out: list[tuple[str, str, str]] = []
    i = 0
    while i < len(named):
        j = i
        while j < len(named) and named[j][0] == named[i][0]:
            j += 1
        out.extend(sorted(named[i:j], key=lambda e: e[1]))
        i = j
    return out
