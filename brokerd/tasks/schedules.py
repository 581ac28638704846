"""Periodic publishes kept and fired by the broker (the task layer's "beat").

Why in the broker: a schedule fires by publishing a message, and the broker
can commit "this entry's next run is T" in the *same transaction* as the
message it published for the previous run. So each due time is published
exactly once, with no lock, no leader election and no separate beat process:
a crash before the commit loses both (the entry fires again after restart), a
crash after keeps both. Any number of workers may declare the same schedule
at start-up; an identical declaration changes nothing.

Specs: ``every <seconds>`` (0.1 s up to ten years; runs stay on the grid
``created + k * seconds`` without drift) or ``cron <m> <h> <dom> <mon> <dow>
[<zone>]`` (in UTC, or in the IANA time zone named last: ``cron.py`` matches
wall times, ``crontz.py`` places them around daylight-saving transitions).
The zone is part of the spec string, so it is stored, compared and listed
with it and a stored schedule keeps its zone across restarts with no column
of its own. After downtime an entry fires once for everything it missed, then
continues from the present.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import msgpack

import brokerd_protocol as bp

from ..broker import Broker
from ..errors import BrokerError, invalid, not_found
from ..options import check_name, parse_props
from ..storage.base import Batch, Query, Row
from . import cron, crontz
from .common import MAX_TTL, Alive, Client, internal
from .publisher import ServerPublisher, check_target

log = logging.getLogger("brokerd.tasks.schedules")

MIN_EVERY = 0.1
MAX_SCHEDULES = 10_000


# --- specs ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Every:
    seconds: float
    canonical: str

    def first_run(self, now: float) -> float:
        return now + self.seconds

    def following(self, due: float, now: float) -> float:
        step = self.seconds
        nxt = due + step
        if nxt <= now:
            # Missed runs (downtime): skip to the first slot of the grid after now.
            nxt = due + (math.floor((now - due) / step) + 1) * step
            if nxt <= now:
                nxt += step
        return nxt


@dataclass(frozen=True, slots=True)
class Cron:
    spec: cron.CronSpec
    canonical: str
    #: None: UTC (no transitions, the plain calendar).
    zone: ZoneInfo | None = None

    def first_run(self, now: float) -> float:
        return self._next(now)

    def following(self, due: float, now: float) -> float:
        return self._next(max(due, now))

    def _next(self, t: float) -> float:
        if self.zone is None:
            return self.spec.next_after(t)
        return crontz.next_run(self.spec, self.zone, t)


def parse_spec(text: str) -> Every | Cron:
    """``every <seconds>`` or ``cron <5 fields>``; ``ValueError`` otherwise."""
    words = text.split(None, 1)
    kind = words[0] if words else ""
    rest = words[1].strip() if len(words) > 1 else ""
    if kind == "every":
        try:
            seconds = float(rest)
        except ValueError:
            raise ValueError(f"'every' needs a number of seconds, got {rest!r}") from None
        if not (math.isfinite(seconds) and MIN_EVERY <= seconds <= MAX_TTL):
            raise ValueError(f"'every' seconds must be within {MIN_EVERY:g}..{MAX_TTL:g}")
        return Every(seconds, f"every {seconds:.12g}")
    if kind == "cron":
        fields = rest.split()
        zone_key = fields.pop() if len(fields) == 6 else "UTC"
        spec = cron.parse(" ".join(fields))
        if zone_key == "UTC":
            return Cron(spec, f"cron {spec.expression}")
        zone = crontz.load_zone(zone_key)
        return Cron(spec, f"cron {spec.expression} {zone_key}", zone)
    raise ValueError(
        "a schedule spec is 'every <seconds>' or 'cron <m> <h> <dom> <mon> <dow> [<zone>]', "
        f"got {text!r}"
    )


# --- entries ----------------------------------------------------------------------


@dataclass(slots=True)
class Entry:
    name: str
    timing: Every | Cron
    exchange: str
    routing_key: str
    body: bytes
    props: dict[str, Any]
    last_run: float | None
    next_run: float
    #: The last publish failure, logged once rather than at every run.
    last_error: str | None = None

    def same_as(self, other: Entry) -> bool:
        return (
            self.timing.canonical == other.timing.canonical
            and self.exchange == other.exchange
            and self.routing_key == other.routing_key
            and self.body == other.body
            and self.props == other.props
        )

    def store(self, batch: Batch) -> None:
        """Record the entry in ``batch`` (its props as msgpack, which ``loaded`` reads)."""
        batch.put_schedule(
            self.name,
            self.timing.canonical,
            self.exchange,
            self.routing_key,
            self.body,
            msgpack.packb(self.props, use_bin_type=True),
            self.last_run,
            self.next_run,
        )

    def listing(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.timing.canonical,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "next_run": self.next_run,
            "last_run": self.last_run,
        }


class Schedules:
    def __init__(self, broker: Broker, alive: Alive) -> None:
        self.broker = broker
        self.alive = alive
        self.entries: dict[str, Entry] = {}
        self.publisher = ServerPublisher(broker)
        #: No entry is due before this.
        self._next_due = math.inf
        self.fired = 0
        self.failed = 0

    # --- start-up ---------------------------------------------------------------

    #: What ``loaded`` takes (the extension reads it at start-up).
    LOAD = Query.SCHEDULES

    def loaded(self, rows: list[Row]) -> None:
        for name, spec, exchange, key, body, props, last_run, next_run in rows:
            try:
                timing = parse_spec(spec)
                raw = msgpack.unpackb(props, raw=False)
                if not isinstance(raw, dict):
                    raise ValueError("props is not a map")
            except (ValueError, msgpack.UnpackException) as exc:
                log.error("schedule %r cannot be loaded (%s); it stays stored but idle", name, exc)
                continue
            self.entries[name] = Entry(
                name, timing, exchange, key, bytes(body), raw, last_run, float(next_run)
            )
            self._next_due = min(self._next_due, float(next_run))
        if self.entries:
            log.info("loaded %d schedule(s)", len(self.entries))

    # --- requests -------------------------------------------------------------------

    def set(self, client: Client, f: bp.ScheduleSet) -> None:
        name = check_name("schedule", f.name)
        try:
            timing = parse_spec(f.spec)
        except ValueError as exc:
            raise invalid(f"schedule spec: {exc}") from None
        check_target(f.exchange, f.routing_key)
        now = self.broker.clock.now()
        parse_props(f.props, now)  # validate now rather than at every firing
        candidate = Entry(name, timing, f.exchange, f.routing_key, f.body, f.props, None, 0.0)
        current = self.entries.get(name)
        batch = self.broker.batch
        if current is not None and current.same_as(candidate):
            # Re-declared unchanged (every worker does it at start): keep its
            # timing. The reply still waits for a commit, so Ok never comes
            # before an earlier, identical declaration is durable.
            entry, updated = current, False
        else:
            if current is None and len(self.entries) >= MAX_SCHEDULES:
                raise invalid(f"at most {MAX_SCHEDULES} schedules")
            candidate.last_run = current.last_run if current is not None else None
            candidate.next_run = timing.first_run(now)
            self.entries[name] = entry = candidate
            self._next_due = min(self._next_due, entry.next_run)
            entry.store(batch)
            updated = True
        req = f.req
        value = {"next_run": entry.next_run, "updated": updated}

        def committed(error: BaseException | None) -> None:
            if not self.alive(client):
                return
            if error is not None:
                client.reply_error(req, internal(f"storing the schedule failed: {error}"))
            else:
                client.reply_ok(req, value)

        batch.after_commit(committed)

    def delete(self, client: Client, f: bp.ScheduleDelete) -> None:
        if self.entries.pop(f.name, None) is None:
            raise not_found(f"no schedule {f.name!r}")
        batch = self.broker.batch
        batch.delete_schedule(f.name)
        req = f.req

        def committed(error: BaseException | None) -> None:
            if not self.alive(client):
                return
            if error is not None:
                client.reply_error(req, internal(f"deleting the schedule failed: {error}"))
            else:
                client.reply_ok(req)

        batch.after_commit(committed)

    def list(self, client: Client, f: bp.ScheduleList) -> None:
        rows = [self.entries[n].listing() for n in sorted(self.entries)]
        if f.full:
            for row in rows:
                entry = self.entries[row["name"]]
                row["body"], row["props"] = entry.body, entry.props
        client.reply_ok(f.req, rows)

    # --- firing -----------------------------------------------------------------------

    def pause(self, name: str) -> None:
        """Stop firing ``name`` until resumed: its next run is stored as
        infinity, so the pause survives a restart, and an identical
        re-declaration (a worker starting) leaves it paused."""
        entry = self.entries.get(name)
        if entry is None:
            raise not_found(f"no schedule {name!r}")
        if math.isinf(entry.next_run):
            return
        entry.next_run = math.inf
        entry.store(self.broker.batch)

    def resume(self, name: str) -> None:
        """Fire ``name`` again from now on (the runs missed while paused are
        skipped, not caught up)."""
        entry = self.entries.get(name)
        if entry is None:
            raise not_found(f"no schedule {name!r}")
        if not math.isinf(entry.next_run):
            return
        entry.next_run = entry.timing.first_run(self.broker.clock.now())
        self._next_due = min(self._next_due, entry.next_run)
        entry.store(self.broker.batch)

    def run_now(self, name: str) -> None:
        """Publish ``name``'s message once now (the management API's "run
        now"), leaving its next run where it is. Its message id says so
        (``name@manual:<time>``), so it never collides with a due run's."""
        entry = self.entries.get(name)
        if entry is None:
            raise not_found(f"no schedule {name!r}")
        now = self.broker.clock.now()
        props = dict(entry.props)
        headers = dict(props.get("headers") or {})
        headers["x-schedule"] = entry.name
        headers["x-scheduled-at"] = now
        props["headers"] = headers
        props["message_id"] = f"{entry.name}@manual:{now:.3f}"
        self.publisher.publish(entry.exchange, entry.routing_key, entry.body, props)
        self.fired += 1

    def tick(self, now: float) -> None:
        if now < self._next_due:
            return
        next_due = math.inf
        for entry in list(self.entries.values()):
            if entry.next_run <= now:
                self._fire(entry, now)
            next_due = min(next_due, entry.next_run)
        self._next_due = next_due

    def _fire(self, entry: Entry, now: float) -> None:
        due = entry.next_run
        last_run = entry.last_run
        entry.last_run = due
        entry.next_run = nxt = entry.timing.following(due, now)
        broker = self.broker
        batch = broker.batch

        def committed(error: BaseException | None) -> None:
            if error is None:
                return
            # Neither the message nor the new next_run is stored: run again.
            log.error("schedule %r: committing its run failed: %s", entry.name, error)
            if self.entries.get(entry.name) is entry and entry.next_run == nxt:
                entry.next_run = due
                entry.last_run = last_run
                self._next_due = min(self._next_due, due)

        # The new next_run goes into the batch before the publish, so both land
        # in the same transaction even if the publish makes the core flush.
        batch.schedule_ran(entry.name, due, nxt)
        batch.after_commit(committed)
        props = dict(entry.props)
        headers = dict(props.get("headers") or {})
        headers["x-schedule"] = entry.name
        headers["x-scheduled-at"] = due
        props["headers"] = headers
        props["message_id"] = f"{entry.name}@{due:.3f}"
        try:
            self.publisher.publish(entry.exchange, entry.routing_key, entry.body, props)
        except BrokerError as exc:
            self.failed += 1
            if exc.message != entry.last_error:
                entry.last_error = exc.message
                log.warning("schedule %r could not publish: %s", entry.name, exc.message)
        else:
            self.fired += 1
            entry.last_error = None
