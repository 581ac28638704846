"""Lease deadlines kept in a bucketed timer wheel.

A heap with lazy deletion would keep one stale entry per acked delivery until
its deadline passed: at 50k msg/s and 30 s leases, over a million dead
entries. Buckets of ``RESOLUTION`` seconds hold live deliveries only: an ack
or extend removes the delivery from its bucket in O(1), and a small heap of
bucket keys says which bucket falls due next. Expiry is therefore late by at
most one resolution step.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)

RESOLUTION = 0.05


class LeaseWheel(Generic[T]):
    def __init__(self, resolution: float = RESOLUTION) -> None:
        self._res = resolution
        self._buckets: dict[int, dict[T, None]] = {}
        self._keys: list[int] = []
        self._where: dict[T, int] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __iter__(self) -> Iterator[T]:
        """Every item in the wheel, in no particular order."""
        return iter(self._where)

    def _key(self, deadline: float) -> int:
        return math.ceil(deadline / self._res)

    def add(self, item: T, deadline: float) -> None:
        self.discard(item)
        key = self._key(deadline)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            heapq.heappush(self._keys, key)
        bucket[item] = None
        self._where[item] = key

    def discard(self, item: T) -> None:
        key = self._where.pop(item, None)
        if key is None:
            return
        bucket = self._buckets[key]
        del bucket[item]
        # Empty buckets stay keyed in the heap; pop_due drops them in passing.

    def pop_due(self, now: float) -> list[T]:
        """Every item whose bucket has ended by ``now``."""
        due: list[T] = []
        limit = math.floor(now / self._res)
        keys = self._keys
        while keys and keys[0] <= limit:
            key = heapq.heappop(keys)
            bucket = self._buckets.pop(key)
            for item in bucket:
                del self._where[item]
                due.append(item)
        return due

    def next_deadline(self) -> float | None:
        keys = self._keys
        while keys and not self._buckets.get(keys[0]):
            self._buckets.pop(heapq.heappop(keys), None)
        return keys[0] * self._res if keys else None
