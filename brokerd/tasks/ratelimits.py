"""RateAcquire and RateSet: task rate limits kept by the broker for every worker.

A worker runs N processes and a fleet runs M workers; a limit kept in each of
them lets through N*M times the rate. Here there is one schedule per task
name, in the broker, so ``rate_limit="10/s"`` means 10 per second over the
whole fleet.

Each name's schedule is a single "theoretical arrival time" (GCRA, a token
bucket of capacity one, as kombu's): a slot is granted at
``max(now, next_free)`` and the next one is ``1/rate`` later. A worker asks
once per task it holds and is told how long to wait, so waiting costs the
broker nothing (no polling, no timer). Names whose schedule is in the past
hold no information and are forgotten at each sweep: memory is bounded by the
names used in the last few seconds, and capped.

RateSet sets a limit of the broker's own for a name, which wins over the
workers' (Celery's ``control.rate_limit``, but for the fleet); subscribers of
"ratelimit" (workers) hear of it so a task with no limit of its own starts
asking. Like Celery's runtime changes, these live in memory: a broker
restart forgets them (the tasks' own limits apply again).
"""

from __future__ import annotations

import math

import brokerd_protocol as bp

from ..broker import Broker
from ..errors import invalid
from ..vhosts import prefix_of
from .common import Client
from .topics import Topics

#: Highest rate accepted (slots per second); above it a limit means nothing.
MAX_RATE = 1_000_000.0
#: Longest task name a limit may be kept for.
MAX_NAME = 255
#: Most names with a live schedule or a broker limit at once.
MAX_NAMES = 100_000


def check_name(name: str) -> str:
    if not name:
        raise invalid("rate limit name must not be empty")
    if len(name) - len(prefix_of(name)) > MAX_NAME:
        raise invalid(f"rate limit name longer than {MAX_NAME} characters")
    return name


def check_rate(rate: float, *, zero_ok: bool) -> float:
    low_ok = rate >= 0 if zero_ok else rate > 0
    if not (math.isfinite(rate) and low_ok and rate <= MAX_RATE):
        low = "[0" if zero_ok else "(0"
        raise invalid(f"rate must be in {low}, {MAX_RATE:g}] per second, got {rate!r}")
    return rate


class RateLimits:
    def __init__(self, broker: Broker, topics: Topics) -> None:
        self.clock = broker.clock
        self.topics = topics
        #: name -> the clock second its next slot is free (only future ones kept).
        self.next_free: dict[str, float] = {}
        #: name -> the broker's own limit (slots per second), from RateSet.
        self.limits: dict[str, float] = {}
        self.granted = 0
        topics.add("ratelimit", self.snapshot)

    def snapshot(self) -> dict[str, object]:
        """The "ratelimit" topic's part of a Subscribe reply: the limits in force."""
        return {"rate_limits": dict(self.limits)}

    def rate(self, name: str, own: float) -> float:
        """The limit that applies to ``name`` for a caller whose own is ``own``."""
        return self.limits.get(name, own)

    def acquire(self, client: Client, f: bp.RateAcquire) -> None:
        name = check_name(f.name)
        rate = self.rate(name, check_rate(f.rate, zero_ok=True))
        if rate <= 0:
            client.reply_ok(f.req, 0.0)
            return
        now = self.clock.now()
        next_free = self.next_free.get(name)
        if next_free is None:
            if len(self.next_free) >= MAX_NAMES:
                raise invalid(f"more than {MAX_NAMES} rate-limited names at once")
            next_free = now
        slot = max(now, next_free)
        self.next_free[name] = slot + 1.0 / rate
        self.granted += 1
        client.reply_ok(f.req, slot - now)

    def set(self, client: Client, f: bp.RateSet) -> None:
        name = check_name(f.name)
        if f.rate is None:
            self.limits.pop(name, None)
        else:
            rate = check_rate(f.rate, zero_ok=False)
            if name not in self.limits and len(self.limits) >= MAX_NAMES:
                raise invalid(f"more than {MAX_NAMES} rate limits set")
            self.limits[name] = rate
            # Slots already handed out stand; a faster rate spaces the next
            # ones by its own interval rather than the old, slower one.
            next_free = self.next_free.get(name)
            now = self.clock.now()
            if next_free is not None and next_free > now + 1.0 / rate:
                self.next_free[name] = now + 1.0 / rate
        client.reply_ok(f.req)
        self.topics.publish("ratelimit", [{"name": name, "rate": f.rate}])

    def sweep(self) -> None:
        """Forget schedules already in the past: they constrain nothing."""
        now = self.clock.now()
        ended = [name for name, at in self.next_free.items() if at <= now]
        for name in ended:
            del self.next_free[name]
