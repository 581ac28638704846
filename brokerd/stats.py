"""Cheap histograms for hot paths.

``prometheus_client.Histogram.observe`` takes a lock per call; on the delivery
path that is a measurable share of CPU. These are plain bucket counts that the
metrics collector turns into Prometheus histograms at scrape time.
"""

from __future__ import annotations

import bisect


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
