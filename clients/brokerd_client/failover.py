"""Finding the active node of a failover URL (``brokerd://h1,h2,h3``).

Several brokerd nodes may share one PostgreSQL database; one is active, the
others stand by and answer a Hello with ``Redirect`` to the active node's
address (SPEC §6.1, docs/ha.md). ``connect_any`` tries the URL's nodes in
order, follows a redirect once per node (never in a loop: a redirect from
where a redirect pointed means "no node is active yet"), and starts another
round after a backoff with full jitter, until ``timeout`` has passed.

Errors that another node cannot fix (a refused token, a TLS certificate
that is not trusted, an unsupported version) are raised at once; only a
connection that could not be made or was redirected moves on to the next.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import BrokerError, ConnectionLost, Redirected, TLSError
from .url import BrokerURL

__all__ = ["FAILOVER_TIMEOUT", "backoff", "connect_any", "retryable"]

log = logging.getLogger("brokerd_client")

T = TypeVar("T")

#: Seconds ``connect`` keeps trying the nodes of a failover URL: more than a
#: standby needs to take over (the lease, 4 s, plus loading the queues).
FAILOVER_TIMEOUT = 30.0
#: First and largest pause between rounds over the nodes, in seconds.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 0.5


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """The pause before round ``attempt`` (0-based): exponential with a cap,
    and full jitter, so clients that lost one node do not return in step."""
    return rng() * min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(attempt, 16))


def retryable(exc: BrokerError) -> bool:
    """A failure another node (or the same one, a moment later) may not have."""
    if not isinstance(exc, ConnectionLost) or isinstance(exc, TLSError):
        return False
    cause = exc.__cause__
    # A typed refusal by a broker (authentication, version) arrives wrapped.
    return not (isinstance(cause, BrokerError) and not isinstance(cause, ConnectionLost))


async def connect_any(
    nodes: list[BrokerURL],
    open_node: Callable[[BrokerURL], Awaitable[T]],
    timeout: float,  # noqa: ASYNC109 - a budget for several attempts, not one await
) -> T:
    """The first node (or the node a standby redirects to) that accepts us.

    ``timeout`` 0 makes one round. Raises the last failure once the time is
    up, or at once a failure no other node could fix.
    """
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        last: BrokerError | None = None
        for node in nodes:
            try:
                return await open_node(node)
            except BrokerError as exc:
                if not retryable(exc):
                    raise
                last = exc
                if not isinstance(exc, Redirected) or not exc.address:
                    continue
                target = node.moved_to(exc.address)
            try:
                return await open_node(target)
            except BrokerError as exc:
                if not retryable(exc):
                    raise
                last = exc
        assert last is not None
        pause = backoff(attempt)
        if time.monotonic() + pause >= deadline:
            raise last
        log.info("no active brokerd node yet (%s); trying again in %.2f s", last, pause)
        await asyncio.sleep(pause)
        attempt += 1
