"""The task layer's frames at the vhost boundary (``brokerd/vhosts.py``).

Every task-layer handler is wrapped (``wrap``): the frame's names (task ids,
schedule names and targets, group ids, rate-limit names) are mapped into the
session's vhost before the handler sees them, and the handler talks to a
``VhostClient`` that maps its replies and Event frames out, dropping the
events and listing rows of other vhosts. The handlers themselves know
nothing of vhosts. A ``VhostClient`` equals (and hashes as) its session, so
the layer's ``alive`` check and its subscriber sets treat it as the session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import brokerd_protocol as bp

from ..errors import BrokerError
from ..vhosts import DEFAULT_NAMES, Names
from .common import Client

#: Maps one reply value out.
ReplyMap = Callable[[Names, Any], Any]
#: Maps one frame in; with the reply's mapping (None: the value as it is).
FrameMap = Callable[[Names, Any], tuple[Any, ReplyMap | None]]


class NamedClient(Client, Protocol):
    """A connection that knows its vhost (``Session``)."""

    names: Names


class VhostClient:
    """A session as one task-layer request sees it: replies mapped out."""

    __slots__ = ("_reply", "names", "session")

    def __init__(self, session: Client, names: Names, reply: ReplyMap | None) -> None:
        self.session = session
        self.names = names
        self._reply = reply

    def __getattr__(self, name: str) -> Any:
        # Anything else (what ``alive`` checks, say) is the session's.
        return getattr(self.session, name)

    def __hash__(self) -> int:
        return hash(self.session)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VhostClient):
            return other.session is self.session
        return other is self.session

    def reply_ok(self, req: int, value: Any = None) -> None:
        if self._reply is not None:
            value = self._reply(self.names, value)
        self.session.reply_ok(req, value)

    def reply_error(self, req: int, exc: BrokerError) -> None:
        self.session.reply_error(req, exc)

    def send(self, frame: bp.Frame) -> None:
        if type(frame) is bp.Event:
            data = _event_out(self.names, frame.data)
            if data is None:
                return
            frame = bp.Event(frame.topic, data)
        self.session.send(frame)


def _event_out(names: Names, data: dict[str, Any]) -> dict[str, Any] | None:
    """An event's data as this vhost sees it; None if it is another vhost's."""
    for key in ("task_id", "name"):
        value = data.get(key)
        if isinstance(value, str):
            if not names.owns(value):
                return None
            return {**data, key: names.out(value)}
    return data


# --- replies ------------------------------------------------------------------------


def _found_out(names: Names, value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {names.out(k): v for k, v in value.items()}


def _snapshot_out(names: Names, value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out = dict(value)
    revoked = out.get("revoked")
    if isinstance(revoked, list):
        out["revoked"] = [names.out(t) for t in revoked if names.owns(t)]
    limits = out.get("rate_limits")
    if isinstance(limits, dict):
        out["rate_limits"] = {names.out(n): r for n, r in limits.items() if names.owns(n)}
    return out


def _schedules_out(names: Names, value: Any) -> Any:
    if not isinstance(value, list):
        return value
    rows = []
    for row in value:
        if not names.owns(row["name"]):
            continue
        exchange, key = names.route_out(row["exchange"], row["routing_key"])
        rows.append(
            {**row, "name": names.out(row["name"]), "exchange": exchange, "routing_key": key}
        )
    return rows


# --- frames -----------------------------------------------------------------------


def _task_id(names: Names, f: Any) -> tuple[Any, ReplyMap | None]:
    return replace(f, task_id=names.inn(f.task_id)), None


def _task_ids(names: Names, f: Any) -> tuple[Any, ReplyMap | None]:
    return replace(f, task_ids=[names.inn(t) for t in f.task_ids]), None


def _result_get(names: Names, f: bp.ResultGet) -> tuple[Any, ReplyMap | None]:
    return replace(f, task_ids=[names.inn(t) for t in f.task_ids]), _found_out


def _subscribe(names: Names, f: bp.Subscribe) -> tuple[Any, ReplyMap | None]:
    return f, _snapshot_out


def _named(names: Names, f: Any) -> tuple[Any, ReplyMap | None]:
    return replace(f, name=names.inn(f.name)), None


def _schedule_set(names: Names, f: bp.ScheduleSet) -> tuple[Any, ReplyMap | None]:
    exchange, key = names.route_in(f.exchange, f.routing_key)
    return replace(f, name=names.inn(f.name), exchange=exchange, routing_key=key), None


def _schedule_list(names: Names, f: bp.ScheduleList) -> tuple[Any, ReplyMap | None]:
    return f, _schedules_out


def _group_join(names: Names, f: bp.GroupJoin) -> tuple[Any, ReplyMap | None]:
    return replace(f, group_id=names.inn(f.group_id)), None


def _group_fire(names: Names, f: bp.GroupFire) -> tuple[Any, ReplyMap | None]:
    exchange, key = names.route_in(f.exchange, f.routing_key)
    return replace(f, group_id=names.inn(f.group_id), exchange=exchange, routing_key=key), None


FRAME_MAPS: dict[type[bp.Frame], FrameMap] = {
    bp.ResultSet: _task_id,
    bp.ResultGet: _result_get,
    bp.ResultWait: _task_id,
    bp.ResultWatch: _task_id,
    bp.ResultDelete: _task_ids,
    bp.Revoke: _task_ids,
    bp.Subscribe: _subscribe,
    bp.ScheduleSet: _schedule_set,
    bp.ScheduleDelete: _named,
    bp.ScheduleList: _schedule_list,
    bp.GroupJoin: _group_join,
    bp.GroupFire: _group_fire,
    bp.RateAcquire: _named,
    bp.RateSet: _named,
}

Handler = Callable[[Any, Any], None]


def wrap(frame_type: type[bp.Frame], handler: Handler) -> Handler:
    """``handler`` behind the vhost mapping of ``frame_type``'s names."""
    mapping = FRAME_MAPS[frame_type]

    def namespaced(session: Any, frame: Any) -> None:
        names: Names = getattr(session, "names", DEFAULT_NAMES)
        mapped, reply = mapping(names, frame)
        handler(VhostClient(session, names, reply), mapped)

    namespaced.__name__ = getattr(handler, "__name__", "handler")
    return namespaced
