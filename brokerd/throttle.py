"""Slowing down token guessing, per peer address.

Invariants:

* An address's first ``free`` failed authentications cost nothing (typos,
  a client started with an old token). After that, each further token check
  from the address waits ``base * 2**k`` seconds after the previous failure,
  capped at ``cap``; so one address gets at most one guess per ``cap``
  seconds, however many connections it opens in parallel.
* What waits is the *check* of the next Hello, not only the reply: delaying
  only the AUTH_FAILED reply would let a client that opens many connections
  at once learn "wrong" from the silence and keep guessing at full speed.
* ``quiet`` seconds without a failure forgive an address; a successful
  authentication forgives its own address, never another one.
* The table holds at most ``max_entries`` addresses (least recently failed
  evicted first), so an attacker spraying addresses cannot grow it. While it
  is full, a newly failing address starts at the first throttled step rather
  than with free attempts. IPv6 addresses count per /64, the block one host
  usually owns.

No I/O and no timers here: the session asks how long to wait and schedules
its own loop timer. Time comes from an injected monotonic clock, so tests
run it on a fake one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

__all__ = ["AuthThrottle", "address_key"]

#: Failures per address before checks start to wait.
FREE_FAILURES = 3
#: The first wait, in seconds; doubled for each further failure.
BASE_DELAY = 0.5
#: The longest wait between two checks from one address, in seconds.
MAX_DELAY = 5.0
#: Seconds without a failure after which an address is forgotten.
QUIET_PERIOD = 60.0
#: Addresses remembered at once.
MAX_ADDRESSES = 10_000


def address_key(host: str) -> str:
    """The throttling key of a peer host: the IPv4 address, or the /64 of an
    IPv6 one (IPv4-mapped IPv6 addresses count as their IPv4 address)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Entry:
    __slots__ = ("failures", "last_failure", "not_before")

    def __init__(self, failures: int, now: float) -> None:
        self.failures = failures
        self.last_failure = now
        self.not_before = now


class AuthThrottle:
    def __init__(
        self,
        now: Callable[[], float],
        *,
        free: int = FREE_FAILURES,
        base: float = BASE_DELAY,
        cap: float = MAX_DELAY,
        quiet: float = QUIET_PERIOD,
        max_entries: int = MAX_ADDRESSES,
    ) -> None:
        self._now = now
        self.free = free
        self.base = base
        self.cap = cap
        self.quiet = quiet
        self.max_entries = max_entries
        #: Oldest failure first: insertion order is kept by re-inserting on
        #: every failure, so pruning and eviction look at the front only.
        self._table: dict[str, _Entry] = {}
        #: Failed authentications since start (the metric).
        self.failures_total = 0
        #: Hellos that had to wait for their address's turn (the metric).
        self.deferred_total = 0

    def __len__(self) -> int:
        return len(self._table)

    def delay(self, failures: int) -> float:
        """Seconds the next check waits after an address's ``failures``-th failure."""
        if failures < self.free:
            return 0.0
        return min(self.base * 2.0 ** min(failures - self.free, 64), self.cap)

    def wait(self, host: str) -> float:
        """Seconds until a token from ``host`` may be checked (0: now)."""
        entry = self._live(address_key(host))
        if entry is None:
            return 0.0
        return max(0.0, entry.not_before - self._now())

    def failed(self, host: str) -> float:
        """Record a failed authentication; return how long the address's next
        check must wait."""
        self.failures_total += 1
        key = address_key(host)
        now = self._now()
        entry = self._live(key)
        if entry is None:
            self._prune(now)
            start = 0
            if len(self._table) >= self.max_entries:
                # Under an address-spraying attack: no free attempts.
                del self._table[next(iter(self._table))]
                start = self.free - 1
            entry = _Entry(start, now)
        else:
            del self._table[key]
        self._table[key] = entry
        entry.failures += 1
        entry.last_failure = now
        delay = self.delay(entry.failures)
        entry.not_before = now + delay
        return delay

    def succeeded(self, host: str) -> None:
        """A right token forgives its own address."""
        self._table.pop(address_key(host), None)

    def deferred(self) -> None:
        """Count a Hello that waits for its address's turn."""
        self.deferred_total += 1

    def _live(self, key: str) -> _Entry | None:
        entry = self._table.get(key)
        if entry is not None and self._now() - entry.last_failure >= self.quiet:
            del self._table[key]
            return None
        return entry

    def _prune(self, now: float) -> None:
        table = self._table
        while table:
            key = next(iter(table))
            if now - table[key].last_failure < self.quiet:
                return
            del table[key]
