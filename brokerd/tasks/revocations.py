"""Revoke: tasks that must not run, and workers that must know.

Every revocation is a stored row (``put_revocation``) and an entry of an
in-memory dict (all of them, loaded at start-up), so the broker's delivery
filter answers "is this message revoked?" with one dict lookup, and with no
work at all while nothing is revoked. A revoked message is settled (deleted)
when its turn to be delivered comes, instead of being delivered; that covers
delayed (ETA) messages too, whenever they fall due.

A task already delivered is in a worker's hands: with ``terminate`` the broker
sends Event("revoke") to every connection subscribed to the "revoke" topic,
and Subscribe answers with the ids revoked so far, so a worker that starts
later knows them as well.
"""

from __future__ import annotations

import logging

import brokerd_protocol as bp

from ..broker import Broker
from ..errors import invalid
from ..message import Message
from ..storage.base import Query, Row
from ..vhosts import MARK, prefix_of
from .common import Alive, Client, check_task_id, check_ttl, internal
from .results import Results
from .topics import Topics

log = logging.getLogger("brokerd.tasks.revocations")

#: Most revocations held at once (each costs a little memory).
MAX_REVOKED = 1_000_000
#: Share of ``max_frame`` the id list in a Subscribe reply may fill.
SUBSCRIBE_REPLY_SHARE = 0.5


class Revocations:
    def __init__(
        self, broker: Broker, results: Results, topics: Topics, alive: Alive, max_frame: int
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.results = results
        self.alive = alive
        self.max_frame = max_frame
        #: task id -> wall-clock second the revocation ends; oldest first.
        self.revoked: dict[str, float] = {}
        topics.add("revoke", self.snapshot)

    # --- start-up ---------------------------------------------------------------

    #: What ``loaded`` takes (the extension reads it at start-up).
    LOAD = Query.REVOCATIONS

    def loaded(self, rows: list[Row]) -> None:
        for task_id, expires_at in rows:
            self.revoked[task_id] = float(expires_at)

    # --- the delivery filter ------------------------------------------------------

    def filter(self, m: Message) -> str | None:
        """``broker.delivery_filter``: "revoked" drops the message."""
        revoked = self.revoked
        if not revoked:
            return None
        task_id = m.message_id
        if task_id is None:
            return None
        if m.queue.startswith(MARK):  # a vhost's task ids are stored under its prefix
            task_id = prefix_of(m.queue) + task_id
        until = revoked.get(task_id)
        if until is None or until <= self.broker.clock.now():
            return None
        return "revoked"

    def is_revoked(self, task_id: str) -> bool:
        until = self.revoked.get(task_id)
        return until is not None and until > self.broker.clock.now()

    # --- requests -------------------------------------------------------------------

    def revoke(self, client: Client, f: bp.Revoke) -> None:
        # The codec refuses more than MAX_REVOKE_IDS ids (SPEC §13).
        task_ids = list(dict.fromkeys(check_task_id(t) for t in f.task_ids))
        ttl = check_ttl(f.ttl)
        new = sum(1 for t in task_ids if t not in self.revoked)
        if len(self.revoked) + new > MAX_REVOKED:
            raise invalid(f"more than {MAX_REVOKED} revoked tasks; revoke with a shorter ttl")
        broker = self.broker
        now = broker.clock.now()
        expires_at = now + ttl
        batch = broker.batch
        revoked = self.revoked
        for task_id in task_ids:
            until = max(expires_at, revoked.pop(task_id, expires_at))
            revoked[task_id] = until
            batch.put_revocation(task_id, expires_at)
        self.results.add_revoked(task_ids, expires_at, now)
        req = f.req
        terminate = f.terminate

        def committed(error: BaseException | None) -> None:
            if error is not None:
                if self.alive(client):
                    client.reply_error(req, internal(f"storing the revocation failed: {error}"))
                return
            if self.alive(client):
                client.reply_ok(req)
            # Every revoke is announced: a worker may hold the task in its
            # prefetch window and must skip it; ``terminate`` also stops a
            # running one.
            events: list[dict[str, object]] = [
                {"task_id": t, "terminate": terminate} for t in task_ids
            ]
            self.topics.publish("revoke", events)

        batch.after_commit(committed)

    def snapshot(self) -> dict[str, object]:
        """The "revoke" topic's part of a Subscribe reply (SPEC §14.6)."""
        value: dict[str, object] = {}
        ids, truncated = self._current(self.broker.clock.now())
        value["revoked"] = ids
        if truncated:
            value["truncated"] = True
        return value

    def _current(self, now: float) -> tuple[list[str], bool]:
        """Ids revoked now, newest first, as many as fit a reply."""
        budget = int(self.max_frame * SUBSCRIBE_REPLY_SHARE)
        ids: list[str] = []
        for task_id in reversed(self.revoked):
            if self.revoked[task_id] <= now:
                continue
            budget -= len(task_id.encode()) + 3
            if budget < 0:
                return ids, True
            ids.append(task_id)
        return ids, False

    # --- time -----------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Forget ended revocations (memory and disk)."""
        ended = [t for t, until in self.revoked.items() if until <= now]
        if ended:
            for task_id in ended:
                del self.revoked[task_id]
            self.broker.batch.expire_revocations(now)
