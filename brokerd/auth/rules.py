"""What each client frame needs of a user: the rule table (docs/security.md).

One row per frame type a client may send after Welcome. A rule names the
permissions it needs, each on a resource taken from the frame, and/or the
tags one of which the user must carry. RabbitMQ's rules for the core:
declare/delete need configure, publish needs write on the exchange,
consume/purge/stats need read on the queue, bind/unbind need write on the
queue and read on the exchange. The default exchange ``""`` is named
``amq.default``, as in RabbitMQ, so patterns written for it carry over.

The task layer names its resources too: a schedule by its name (and, as it
publishes later, write on its exchange); state without names of its own as
``brokerd.results``, ``brokerd.revocations``, ``brokerd.events``,
``brokerd.schedules``, ``brokerd.groups`` and ``brokerd.rate_limits``.

Fail-closed: a frame type without a row is refused (``Access.check``), and
tests/unit/test_auth_rules.py proves every client frame the full broker
handles has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import brokerd_protocol as bp

from .users import ADMINISTRATOR, MONITORING

__all__ = ["CONFIGURE", "FREE", "READ", "RULES", "WRITE", "Need", "Rule", "exchange_resource"]

CONFIGURE = "configure"
WRITE = "write"
READ = "read"

#: How RabbitMQ names the default exchange in permission checks.
DEFAULT_EXCHANGE = "amq.default"

RESULTS = "brokerd.results"
REVOCATIONS = "brokerd.revocations"
EVENTS = "brokerd.events"
SCHEDULES = "brokerd.schedules"
GROUPS = "brokerd.groups"
RATE_LIMITS = "brokerd.rate_limits"


def exchange_resource(name: str) -> str:
    return name or DEFAULT_EXCHANGE


@dataclass(frozen=True, slots=True)
class Need:
    """``permission`` on the ``kind`` resource ``resource(frame)`` names."""

    permission: str
    kind: str
    resource: Callable[[Any], str]


@dataclass(frozen=True, slots=True)
class Rule:
    needs: tuple[Need, ...] = ()
    #: The user must carry one of these tags (None: no tag needed).
    tags: frozenset[str] | None = None


def _fixed(name: str) -> Callable[[Any], str]:
    return lambda _frame: name


def _exchange(f: Any) -> str:
    return exchange_resource(f.exchange)


def _name_exchange(f: Any) -> str:
    return exchange_resource(f.name)


def _name(f: Any) -> str:
    return str(f.name)


def _queue(f: Any) -> str:
    return str(f.queue)


def configure_exchange() -> Rule:
    return Rule((Need(CONFIGURE, "exchange", _name_exchange),))


def configure_queue() -> Rule:
    return Rule((Need(CONFIGURE, "queue", _name),))


def read_queue(field: Callable[[Any], str] = _name) -> Rule:
    return Rule((Need(READ, "queue", field),))


def on(permission: str, resource: str) -> Rule:
    return Rule((Need(permission, "resource", _fixed(resource)),))


#: Needs nothing: the frame acts only on this connection's own consumers,
#: deliveries or state, which an allowed request made.
FREE = Rule()
#: Admin frames anyone tagged monitoring may send (read-only views).
MONITOR = Rule(tags=frozenset({ADMINISTRATOR, MONITORING}))
#: Admin frames only administrators may send.
ADMIN = Rule(tags=frozenset({ADMINISTRATOR}))

_BIND = Rule((Need(WRITE, "queue", _queue), Need(READ, "exchange", _exchange)))

RULES: dict[type[bp.Frame], Rule] = {
    # connection
    bp.Heartbeat: FREE,
    bp.Close: FREE,
    # topology
    bp.DeclareExchange: configure_exchange(),
    bp.DeleteExchange: configure_exchange(),
    bp.DeclareQueue: configure_queue(),
    bp.DeleteQueue: configure_queue(),
    bp.PurgeQueue: read_queue(),
    bp.Bind: _BIND,
    bp.Unbind: _BIND,
    bp.QueueStats: read_queue(),
    # publishing and consuming
    bp.Publish: Rule((Need(WRITE, "exchange", _exchange),)),
    bp.Consume: read_queue(_queue),
    bp.Cancel: FREE,
    bp.Ack: FREE,
    bp.Nack: FREE,
    bp.Reject: FREE,
    bp.Extend: FREE,
    # task layer (SPEC §14)
    bp.ResultSet: on(WRITE, RESULTS),
    bp.ResultGet: on(READ, RESULTS),
    bp.ResultWait: on(READ, RESULTS),
    bp.ResultWatch: on(READ, RESULTS),
    bp.ResultDelete: on(WRITE, RESULTS),
    bp.Revoke: on(WRITE, REVOCATIONS),
    bp.Subscribe: on(READ, EVENTS),
    bp.ScheduleSet: Rule((Need(CONFIGURE, "schedule", _name), Need(WRITE, "exchange", _exchange))),
    bp.ScheduleDelete: Rule((Need(CONFIGURE, "schedule", _name),)),
    bp.ScheduleList: on(READ, SCHEDULES),
    bp.GroupJoin: on(WRITE, GROUPS),
    bp.GroupFire: Rule(
        (Need(WRITE, "resource", _fixed(GROUPS)), Need(WRITE, "exchange", _exchange))
    ),
    bp.RateAcquire: on(READ, RATE_LIMITS),
    bp.RateSet: on(CONFIGURE, RATE_LIMITS),
    # admin (SPEC §17)
    bp.AdminStatus: MONITOR,
    bp.ListQueues: MONITOR,
    bp.ListExchanges: MONITOR,
    bp.ListBindings: MONITOR,
    bp.ListConnections: MONITOR,
    bp.ListConsumers: MONITOR,
    bp.AdminStop: ADMIN,
    bp.CloseConnection: ADMIN,
    bp.AddUser: ADMIN,
    bp.DeleteUser: ADMIN,
    bp.UpdateUser: ADMIN,
    bp.ListUsers: ADMIN,
    bp.SetPermissions: ADMIN,
    bp.ClearPermissions: ADMIN,
    bp.ListPermissions: ADMIN,
    bp.AddVhost: ADMIN,
    bp.DeleteVhost: ADMIN,
    bp.ListVhosts: MONITOR,
}
