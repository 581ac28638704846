"""Helpers shared by the task-layer end-to-end tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: Test apps (importable by workers via PYTHONPATH).
APPS = Path(__file__).parent / "apps"

#: Bound on every wait: fail instead of hanging. Not a timing assertion.
BOUND = 30.0


def events(state_dir: Path, kind: str) -> list[dict[str, Any]]:
    path = state_dir / f"{kind}.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_events(
    state_dir: Path, kind: str, count: int, timeout: float = BOUND
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = events(state_dir, kind)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(found)} {kind!r} events after {timeout}s, wanted {count}")
        time.sleep(0.02)
