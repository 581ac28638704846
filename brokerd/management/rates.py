"""Message rates for the management API: differences of monotonic counters.

Every ``INTERVAL`` seconds (from the server's tick) the sampler reads the
broker's counters and each queue's ``published``/``delivered``/``acked``
counts, once: O(queues), never O(messages), and nothing on the message path.
A rate is the difference between the last two samples over their interval.
The overview also keeps the last ``HISTORY`` samples for the page's chart.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from ..queues import QueueState
from ..stats import Counters

#: Seconds between samples (RabbitMQ's default collect interval).
INTERVAL = 5.0
#: Overview samples kept (10 minutes at 5 s).
HISTORY = 120

QUEUE_FIELDS = ("publish", "deliver_get", "ack")
OVERVIEW_FIELDS = ("publish", "confirm", "deliver_get", "redeliver", "ack", "return_unroutable")


@dataclass(slots=True)
class Sample:
    at: float
    values: tuple[int, ...]


def _overview_values(c: Counters) -> tuple[int, ...]:
    return (c.published, c.confirmed, c.delivered, c.redelivered, c.acked, c.unroutable)


def _queue_values(q: QueueState) -> tuple[int, ...]:
    return (q.published, q.delivered, q.acked)


def _rates(old: Sample | None, new: Sample | None) -> tuple[float, ...] | None:
    if old is None or new is None or new.at <= old.at:
        return None
    dt = new.at - old.at
    return tuple(round(max(0, b - a) / dt, 2) for a, b in zip(old.values, new.values, strict=True))


class Rates:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._last_at = -1e18
        self.overview: deque[Sample] = deque(maxlen=HISTORY)
        #: Queue identity -> its last two samples (identity, so a queue
        #: deleted and declared again under the same name starts over).
        self._queues: dict[int, tuple[Sample | None, Sample]] = {}

    def tick(self, now: float, counters: Counters, queues: Mapping[str, QueueState]) -> None:
        if now - self._last_at < self.interval:
            return
        self.sample(now, counters, queues)

    def sample(self, now: float, counters: Counters, queues: Mapping[str, QueueState]) -> None:
        self._last_at = now
        self.overview.append(Sample(now, _overview_values(counters)))
        old = self._queues
        new: dict[int, tuple[Sample | None, Sample]] = {}
        for q in queues.values():
            key = id(q)
            prev = old.get(key)
            new[key] = (prev[1] if prev is not None else None, Sample(now, _queue_values(q)))
        self._queues = new

    def overview_stats(self, counters: Counters) -> dict[str, object]:
        values = _overview_values(counters)
        n = len(self.overview)
        rates = _rates(self.overview[-2], self.overview[-1]) if n >= 2 else None
        return _stats(OVERVIEW_FIELDS, values, rates)

    def queue_stats(self, q: QueueState) -> dict[str, object]:
        pair = self._queues.get(id(q))
        rates = _rates(pair[0], pair[1]) if pair is not None else None
        return _stats(QUEUE_FIELDS, _queue_values(q), rates)

    def history(self) -> list[dict[str, float]]:
        """Overview rates between consecutive samples, oldest first (the chart)."""
        out: list[dict[str, float]] = []
        samples = list(self.overview)
        for old, new in itertools.pairwise(samples):
            rates = _rates(old, new)
            if rates is None:
                continue
            row: dict[str, float] = {"at": round(new.at, 3)}
            row.update(zip(OVERVIEW_FIELDS, rates, strict=True))
            out.append(row)
        return out


def _stats(
    names: tuple[str, ...], values: tuple[int, ...], rates: tuple[float, ...] | None
) -> dict[str, object]:
    out: dict[str, object] = {}
    for i, name in enumerate(names):
        out[name] = values[i]
        out[f"{name}_details"] = {"rate": rates[i] if rates is not None else 0.0}
    return out
