"""Flow control: when the broker stops reading a connection, and when it reads again.

Not reading a socket is the broker's only brake on a client (TCP pushes back
on the sender from there). A connection can be held for several independent
reasons, each a bit in ``Session.holds``; it is read again once none is left:

* ``OWN``: the connection's own publishes not yet committed exceed
  ``CONNECTION_BUDGET``; it is read again below half of that. Batches commit in
  submission order, so every byte queued for the writer thread is ahead of the
  next client's confirm. Capping each connection's share keeps that queue, and
  so everyone's publish-to-confirm time, short whoever else is publishing: a
  publisher with no confirm window used to fill the whole broker-wide budget
  (64 MiB, seconds of commits) in front of a light client's single publish.
* ``BACKLOG``: the broker's total uncommitted bytes exceed ``max_uncommitted``
  (many publishers at once). Only connections with uncommitted publishes of
  their own are held, until the total is under half; connections that only
  consume keep being read, so their acks keep flowing.
* ``DISK``: the free-disk alarm is raised (:mod:`brokerd.diskfree`): every
  connection that has published is held until free space returns.
* ``STORE``: the database is away (PostgreSQL restarting or failing over):
  the store keeps its pending commits and retries them, and every connection
  that has published is held until it is back, so nothing piles up behind it.

A session's share is charged once per read (the growth of the tick's batch),
never per message, and released by the batch's commit callback. Time held by
us is not the peer's silence: heartbeats are not checked on a held connection.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .broker import Broker
from .storage.base import Batch

log = logging.getLogger("brokerd.flow")

OWN = 1
BACKLOG = 2
DISK = 4
STORE = 8

#: Uncommitted publish bytes one connection may have before it stops being
#: read. It is checked after each socket read (up to 256 KB), so a connection
#: has at most about twice this in the writer's queue; measured with bench W9
#: (docs/ARCHITECTURE.md, Flow control): 1 MiB gave the light client a p99 of
#: ~90 ms, 256 KiB ~35-60 ms, with the blaster's own rate unchanged.
CONNECTION_BUDGET = 256 * 1024
#: A held connection (or the broker) is read again below this share of its budget.
RESUME_SHARE = 0.5


class Reader(Protocol):
    """What flow control needs of a connection it reads (``Session``)."""

    @property
    def uncommitted(self) -> int:
        """Body bytes it published that are not yet committed."""
        ...

    def hold(self, reason: int) -> None: ...

    def release(self, reason: int) -> None: ...


class Share:
    """One connection's uncommitted bytes in one batch."""

    __slots__ = ("batch", "nbytes")

    def __init__(self, batch: Batch) -> None:
        self.batch: Batch | None = batch
        self.nbytes = 0


class FlowControl:
    """The broker-wide side: the backlog budget and the free-disk alarm."""

    def __init__(self, broker: Broker, max_uncommitted: int) -> None:
        self.broker = broker
        self.max_uncommitted = max_uncommitted
        #: Sessions held for the broker-wide backlog.
        self.backlogged: set[Reader] = set()
        #: Sessions that have published (held while the disk alarm is raised).
        self.publishers: set[Reader] = set()
        self.disk_alarm = False
        #: The store cannot reach its database (``STORE``).
        self.store_alarm = False
        #: Times the store alarm was raised.
        self.store_outages = 0
        broker.commit_listeners.append(self._after_commit)

    def after_read(self, session: Reader) -> None:
        """Decide whether to keep reading ``session`` once a read was handled."""
        if session.uncommitted > CONNECTION_BUDGET:
            session.hold(OWN)
        if session.uncommitted and self.broker.uncommitted_bytes > self.max_uncommitted:
            self.backlogged.add(session)
            session.hold(BACKLOG)

    def first_publish(self, session: Reader) -> None:
        self.publishers.add(session)
        if self.disk_alarm:
            session.hold(DISK)
        if self.store_alarm:
            session.hold(STORE)

    def settled(self, session: Reader) -> None:
        """A batch holding part of ``session``'s publishes committed (or failed)."""
        if session.uncommitted < CONNECTION_BUDGET * RESUME_SHARE:
            session.release(OWN)

    def forget(self, session: Reader) -> None:
        self.backlogged.discard(session)
        self.publishers.discard(session)

    def set_disk_alarm(self, raised: bool) -> None:
        if raised == self.disk_alarm:
            return
        self.disk_alarm = raised
        for session in list(self.publishers):
            if raised:
                session.hold(DISK)
            else:
                session.release(DISK)

    def set_store_alarm(self, raised: bool) -> None:
        """The database went away (True) or came back (False)."""
        if raised == self.store_alarm:
            return
        self.store_alarm = raised
        if raised:
            self.store_outages += 1
        for session in list(self.publishers):
            if raised:
                session.hold(STORE)
            else:
                session.release(STORE)

    def _after_commit(self) -> None:
        if self.backlogged and self.broker.uncommitted_bytes < self.max_uncommitted * RESUME_SHARE:
            held, self.backlogged = self.backlogged, set()
            for session in held:
                session.release(BACKLOG)
