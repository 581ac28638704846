"""A worker's counters: what the periodic summary line and the final report print."""

from __future__ import annotations

__all__ = ["Stats"]


class Stats:
    """Counters for the periodic summary line and the final report."""

    __slots__ = ("failed", "received", "rejected", "retried", "revoked", "succeeded", "total")

    def __init__(self) -> None:
        self.received = self.succeeded = self.failed = self.retried = 0
        self.revoked = self.rejected = 0
        #: task name -> tasks of it started (``inspect stats``' "total").
        self.total: dict[str, int] = {}

    def snapshot(self) -> tuple[int, int, int, int, int, int]:
        return (
            self.received,
            self.succeeded,
            self.failed,
            self.retried,
            self.revoked,
            self.rejected,
        )
