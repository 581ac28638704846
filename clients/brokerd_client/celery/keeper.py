"""The lease keeper: one small thread per connection that renews leases and
sends heartbeats, so a worker busy in a long task keeps what it holds.

Why a thread: Celery's solo pool runs the task on the thread that also reads
the socket, so nothing on that thread can renew a lease or send a heartbeat
until the task returns. RabbitMQ closes such a channel after
``consumer_timeout``; Redis hands the task to a second worker after
``visibility_timeout``. With brokerd, this thread keeps the leases alive for
as long as the process lives, and a dead process loses them at once (its
connection closes).

Invariants:

* The keeper only **writes** (Extend and Heartbeat frames, through the
  connection's write lock). It never reads: replies (``Settled`` with lost
  ids) are read by the consumer's thread, which calls :meth:`LeaseKeeper.untrack`.
* Every tracked delivery is renewed about every ``lease / 3`` seconds; all the
  deliveries with the same lease length go in **one** Extend request (split
  into frames of at most ``MAX_SETTLE_IDS`` ids, SPEC §13, sent in one write).
* Tracking is cheap and thread-safe: ``track``/``untrack`` take a short lock
  and wake the keeper only for a lease length it has not seen before. A
  group stays (empty) when its last delivery is untracked, its renewal time
  still kept: the keeper's next wake-up is never later than that, so a
  delivery tracked into it later needs no wake-up. A worker taking one task
  at a time would otherwise wake this thread for every task, and the two
  threads would trade the GIL on the way to running it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from ..errors import BrokerError
from .wire import EXTEND, WireConnection

__all__ = ["LeaseKeeper"]

log = logging.getLogger("brokerd_client.celery")


class _Group:
    """The tracked deliveries that share one lease length."""

    __slots__ = ("due", "ids")

    def __init__(self, due: float) -> None:
        self.ids: set[int] = set()
        self.due = due


class LeaseKeeper:
    """Renews the leases of tracked deliveries and keeps the connection alive."""

    def __init__(self, wire: WireConnection, *, name: str = "brokerd-lease-keeper") -> None:
        self._wire = wire
        self._cond = threading.Condition(threading.Lock())
        self._groups: dict[float, _Group] = {}
        self._where: dict[int, float] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __len__(self) -> int:
        with self._cond:
            return len(self._where)

    def track(self, delivery_id: int, lease: float) -> None:
        """Keep ``delivery_id`` leased until :meth:`untrack`."""
        with self._cond:
            group = self._groups.get(lease)
            if group is None:  # the only case where the keeper's plan changes
                group = self._groups[lease] = _Group(time.monotonic() + lease / 3)
                self._cond.notify()
            group.ids.add(delivery_id)
            self._where[delivery_id] = lease

    def untrack(self, ids: Iterable[int]) -> None:
        """Stop renewing these deliveries (settled, or their lease is lost)."""
        with self._cond:
            for delivery_id in ids:
                lease = self._where.pop(delivery_id, None)
                if lease is None:
                    continue
                self._groups[lease].ids.discard(delivery_id)

    def _run(self) -> None:
        wire = self._wire
        try:
            while True:
                with self._cond:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    due: list[tuple[float, list[int]]] = []
                    for lease, group in self._groups.items():
                        if group.due <= now:
                            if group.ids:
                                due.append((lease, sorted(group.ids)))
                            group.due = now + lease / 3
                for lease, ids in due:
                    wire.settle(EXTEND, ids, number=lease)
                wire.heartbeat_if_idle()
                with self._cond:
                    if self._stopped:
                        return
                    # Planned under the lock a new group is added under, so
                    # one added while we were writing is in the plan.
                    wake = [group.due for group in self._groups.values()]
                    if wire.heartbeat > 0:
                        wake.append(wire.last_write + wire.heartbeat / 2)
                    timeout = (min(wake) - time.monotonic()) if wake else None
                    if timeout is None or timeout > 0:
                        self._cond.wait(timeout)
        except BrokerError as exc:
            # The connection is gone; the consumer's thread reports it.
            log.debug("lease keeper stopped: %s", exc)
        except Exception:  # pragma: no cover - a bug; the leases now lapse
            log.exception("brokerd lease keeper failed; leases will no longer be renewed")
