"""Result records shared by the runner, the workloads and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
UNREACHABLE = "unreachable"
NOT_AVAILABLE = "not available"
NOT_APPLICABLE = "n/a"


class Skip(Exception):
    """Raised by a workload that does not apply to a system (not a failure)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class MetricSpec:
    key: str
    label: str
    unit: str  # "msg/s" | "tasks/s" | "ms" | "s" | "bytes"
    higher_is_better: bool


@dataclass(frozen=True)
class WorkloadSpec:
    id: str
    title: str
    metrics: tuple[MetricSpec, ...]
    measures: str


@dataclass
class Outcome:
    workload: str
    system: str
    status: str
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "system": self.system,
            "status": self.status,
            "values": self.values,
            "note": self.note,
            "details": self.details,
            "elapsed_s": round(self.elapsed_s, 3),
        }
