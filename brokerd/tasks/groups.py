"""Groups kept by the broker: GroupJoin counts members, GroupFire publishes once.

A group (a Celery chord header, say) is a set of member ids with a size. Why
in the broker: "the last member to finish runs the callback" needs a counter
that is atomic across workers and crashes, and "the callback is published
exactly once" needs the publish and the "fired" mark to commit together. The
broker has both: one event loop that decides every join in arrival order,
and one transaction per tick.

Invariants:

* A group's members are a set: joining twice changes nothing. ``joined`` is
  the number of distinct members. The size is the first join's (while the
  group exists); later joins' sizes are ignored.
* Exactly one member is the group's **completer**: the one whose join made
  the set reach the size. Its joins answer ``complete`` true until the group
  is fired, so a completer that died before firing may try again when its
  task is redelivered; every other join answers false.
* GroupFire publishes its message through ``Broker.publish`` (the same
  validation, routing and limits as a client's Publish) and records the group
  as fired in the same batch, so both commit or neither does. A fired group
  publishes nothing more: a second GroupFire answers false. A refused publish
  (missing exchange, full queue, unroutable ``mandatory``) raises before
  anything is recorded: the group stays unfired.
* Every decision is taken here on the loop, from memory, as the frame
  arrives; the state is written through the batch and every reply goes out
  after the commit. At start-up the state is read back from the store, so a
  group (and whether it fired) survives restarts. Members of a fired group
  are dropped (memory and disk): only the count and the mark are needed.
* Groups expire ``ttl`` seconds after their latest join; a join after expiry
  starts a new group of the same id.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import brokerd_protocol as bp

from ..broker import Broker
from ..errors import invalid, not_found
from ..storage.base import Query, Row
from .common import MAX_TASK_ID, Alive, Client, check_ttl, internal
from .publisher import ServerPublisher, check_target

log = logging.getLogger("brokerd.tasks.groups")

#: Largest group size.
MAX_GROUP_SIZE = 1_000_000
#: Groups held at once (fired or not, until they expire).
MAX_GROUPS = 1_000_000
#: Members held at once, over all groups not yet fired.
MAX_MEMBERS = 10_000_000


@dataclass(slots=True)
class Group:
    size: int
    expires_at: float
    joined: int = 0
    completer: str | None = None
    fired: bool = False
    #: Members until the group fires (then only ``joined`` is kept).
    members: set[str] = field(default_factory=set)
    #: A GroupFire is committing (the group counts as fired meanwhile).
    firing: bool = False


def _check_id(kind: str, value: str) -> str:
    if not value:
        raise invalid(f"{kind} must not be empty")
    if len(value) > MAX_TASK_ID:
        raise invalid(f"{kind} longer than {MAX_TASK_ID} characters")
    return value


class Groups:
    def __init__(self, broker: Broker, alive: Alive) -> None:
        self.broker = broker
        self.alive = alive
        self.groups: dict[str, Group] = {}
        #: Members held in memory, over all groups.
        self.members = 0
        self.publisher = ServerPublisher(broker)
        self.fired = 0
        #: No group expires before this (inf: none known).
        self._earliest = math.inf

    # --- start-up ---------------------------------------------------------------

    #: What ``loaded`` and ``members_loaded`` take (read at start-up, in this order).
    LOAD = Query.GROUPS
    LOAD_MEMBERS = Query.GROUP_MEMBERS

    def loaded(self, rows: list[Row]) -> None:
        for group_id, size, joined, completer, fired, expires_at in rows:
            self.groups[group_id] = Group(
                int(size), float(expires_at), int(joined), completer, bool(fired)
            )
            self._earliest = min(self._earliest, float(expires_at))
        if self.groups:
            log.info("loaded %d group(s)", len(self.groups))

    def members_loaded(self, rows: list[Row]) -> None:
        for group_id, member_id in rows:
            group = self.groups.get(group_id)
            if group is not None and not group.fired and member_id not in group.members:
                group.members.add(member_id)
                self.members += 1

    # --- requests -------------------------------------------------------------------

    def join(self, client: Client, f: bp.GroupJoin) -> None:
        group_id = _check_id("group id", f.group_id)
        member_id = _check_id("member id", f.member_id)
        if not 1 <= f.size <= MAX_GROUP_SIZE:
            raise invalid(f"group size must be within 1..{MAX_GROUP_SIZE}, got {f.size}")
        ttl = check_ttl(f.ttl)
        now = self.broker.clock.now()
        batch = self.broker.batch
        group = self.groups.get(group_id)
        if group is not None and group.expires_at <= now and not group.firing:
            self._drop(group_id)
            batch.delete_group_members(group_id)
            group = None
        new_member = group is None or (not group.fired and member_id not in group.members)
        if group is None and len(self.groups) >= MAX_GROUPS:
            raise invalid(f"at most {MAX_GROUPS} groups")
        if new_member and self.members >= MAX_MEMBERS:
            raise invalid(f"at most {MAX_MEMBERS} group members held at once")
        if group is None:
            group = self.groups[group_id] = Group(f.size, now + ttl)
        if not group.fired:
            if member_id not in group.members:
                group.members.add(member_id)
                group.joined += 1
                self.members += 1
                if group.completer is None and group.joined >= group.size:
                    group.completer = member_id
            # Written at every join, so a join retried after a failed commit
            # repairs the row (the insert ignores a member already stored).
            batch.put_group_member(group_id, member_id)
        complete = not group.fired and group.completer == member_id
        group.expires_at = max(group.expires_at, now + ttl)
        self._earliest = min(self._earliest, group.expires_at)
        self._store(group_id, group)
        req = f.req
        value = [group.joined, complete]

        def committed(error: BaseException | None) -> None:
            if not self.alive(client):
                return
            if error is not None:
                client.reply_error(req, internal(f"storing the group failed: {error}"))
            else:
                client.reply_ok(req, value)

        batch.after_commit(committed)

    def fire(self, client: Client, f: bp.GroupFire) -> None:
        group_id = _check_id("group id", f.group_id)
        check_target(f.exchange, f.routing_key)
        now = self.broker.clock.now()
        group = self.groups.get(group_id)
        if group is None or (group.expires_at <= now and not group.firing):
            raise not_found(f"no group {group_id!r}")
        broker = self.broker
        batch = broker.batch
        req = f.req
        if group.fired:
            # Answered after a commit, so never before the fire that marked it
            # is durable.
            def unchanged(error: BaseException | None) -> None:
                if not self.alive(client):
                    return
                if error is not None:
                    client.reply_error(req, internal(f"committing failed: {error}"))
                else:
                    client.reply_ok(req, False)

            batch.after_commit(unchanged)
            return
        self.publisher.publish(f.exchange, f.routing_key, f.body, f.props)
        # Nothing flushed since the publish: the mark shares its transaction.
        assert broker.batch is batch
        group.fired = group.firing = True
        self._store(group_id, group)
        batch.delete_group_members(group_id)

        def committed(error: BaseException | None) -> None:
            group.firing = False
            if error is not None:
                # Neither the message nor the mark is stored: it may fire again.
                group.fired = False
                if self.alive(client):
                    client.reply_error(req, internal(f"firing the group failed: {error}"))
                return
            self.fired += 1
            self.members -= len(group.members)
            group.members = set()
            if self.alive(client):
                client.reply_ok(req, True)

        batch.after_commit(committed)

    # --- time ---------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Forget expired groups (memory and disk)."""
        if self._earliest > now:
            return
        earliest = math.inf
        expired = False
        for group_id, group in list(self.groups.items()):
            if group.expires_at <= now and not group.firing:
                self._drop(group_id)
                expired = True
            else:
                earliest = min(earliest, group.expires_at)
        self._earliest = earliest
        if expired:
            self.broker.batch.expire_groups(now)

    # --- internals --------------------------------------------------------------

    def _store(self, group_id: str, group: Group) -> None:
        self.broker.batch.put_group(
            group_id, group.size, group.joined, group.completer, group.fired, group.expires_at
        )

    def drop(self, group_id: str) -> None:
        """Forget a group held in memory (its rows are the caller's)."""
        self._drop(group_id)

    def _drop(self, group_id: str) -> None:
        group = self.groups.pop(group_id)
        self.members -= len(group.members)
