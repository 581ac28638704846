"""The core's event counts and cheap histograms, read by the metrics endpoint.

``prometheus_client.Histogram.observe`` takes a lock per call; on the delivery
path that is a measurable share of CPU. These are plain counts and bucket
counts that the metrics collector turns into Prometheus metrics at scrape time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


class Buckets:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        #: One count per bound, plus the +Inf bucket; not cumulative.
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_fmt(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _fmt(bound: float) -> str:
    return repr(float(bound))


LATENCY_BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
ATTEMPT_BOUNDS = (1.0, 2.0, 3.0, 5.0, 10.0, 25.0)


@dataclass
class Counters:
    """Monotonic event counts read by the metrics endpoint."""

    published: int = 0
    confirmed: int = 0
    routed: int = 0
    unroutable: int = 0
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    nacked: int = 0
    rejected: int = 0
    expired: int = 0
    #: Leases that ran out (each returned its message and stalled its connection).
    leases_expired: int = 0
    #: Publishes refused because their commit failed (nothing stored or delivered).
    store_failed: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    #: Queues that ended on their own, by reason: ``auto_delete``, ``expires``.
    queues_deleted: dict[str, int] = field(default_factory=lambda: {"auto_delete": 0, "expires": 0})
    #: Attempt number of each delivery (1 = first delivery).
    attempts: Buckets = field(default_factory=lambda: Buckets(ATTEMPT_BOUNDS))
    #: From the first publish of a commit group to its confirm.
    publish_confirm: Buckets = field(default_factory=lambda: Buckets(LATENCY_BOUNDS))
