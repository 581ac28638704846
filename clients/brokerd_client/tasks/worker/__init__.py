"""The worker: ``brokerd-worker -A proj.tasks`` (see :mod:`.engine` for how it runs)."""

from __future__ import annotations

from .cli import main
from .engine import Worker, run_worker

__all__ = ["Worker", "main", "run_worker"]
