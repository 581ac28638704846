"""One session's rights: a user's tags and patterns on its vhost, compiled once.

A session authenticated as a user holds an ``Access`` (one with the token,
on the control socket without a user, or on a broker without users holds
none: it may do everything). ``check(frame)`` applies the frame's rule
(``rules.py``) and raises ``ACCESS_REFUSED`` naming user, vhost, resource and
permission; a frame type without a rule is refused (fail-closed).

Cheap per frame: the patterns are compiled when the access is made, and
each (permission, name) decision is cached, so a publisher sending to one
exchange pays one dict lookup per frame after its first. The cache is
bounded (``MAX_CACHED``); when full it starts over.
"""

from __future__ import annotations

import re
from typing import Any

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

from ..errors import BrokerError
from .rules import CONFIGURE, READ, RULES, WRITE, exchange_resource
from .users import ADMINISTRATOR, MONITORING, Permission

__all__ = ["Access"]

#: Decisions cached per session and permission before the cache starts over.
MAX_CACHED = 4096


def _compile(pattern: str) -> re.Pattern[str] | None:
    # RabbitMQ's rule: the empty pattern matches nothing (not everything).
    return re.compile(pattern) if pattern else None


class Access:
    __slots__ = ("_cache", "_patterns", "admin", "tags", "user", "vhost")

    def __init__(
        self, user: str, vhost: str, tags: frozenset[str], permission: Permission | None
    ) -> None:
        self.user = user
        self.vhost = vhost
        self.tags = tags
        #: May send admin frames at all (the rule table says which).
        self.admin = bool(tags & {ADMINISTRATOR, MONITORING})
        p = permission or Permission("", "", "")
        self._patterns: dict[str, re.Pattern[str] | None] = {
            CONFIGURE: _compile(p.configure),
            WRITE: _compile(p.write),
            READ: _compile(p.read),
        }
        self._cache: dict[str, dict[str, bool]] = {CONFIGURE: {}, WRITE: {}, READ: {}}

    def allowed(self, permission: str, name: str) -> bool:
        cache = self._cache[permission]
        verdict = cache.get(name)
        if verdict is None:
            pattern = self._patterns[permission]
            verdict = pattern is not None and pattern.search(name) is not None
            if len(cache) >= MAX_CACHED:
                cache.clear()
            cache[name] = verdict
        return verdict

    def refused(self, permission: str, kind: str, name: str) -> BrokerError:
        return BrokerError(
            ErrorCode.ACCESS_REFUSED,
            f"access to {kind} '{name}' in vhost '{self.vhost}' refused for user "
            f"'{self.user}': {permission} permission needed",
        )

    def check_publish(self, exchange: str) -> None:
        """Publish's rule inlined: write on the exchange (the hot path)."""
        verdict = self._cache[WRITE].get(exchange)
        if verdict is None:
            name = exchange_resource(exchange)
            verdict = self.allowed(WRITE, name)
            self._cache[WRITE][exchange] = verdict
        if not verdict:
            raise self.refused(WRITE, "exchange", exchange_resource(exchange))

    def check(self, frame: bp.Frame) -> None:
        rule = RULES.get(type(frame))
        if rule is None:
            raise BrokerError(
                ErrorCode.ACCESS_REFUSED,
                f"{type(frame).__name__} has no access rule; refused for user '{self.user}'",
            )
        if rule.tags is not None and not rule.tags & self.tags:
            raise BrokerError(
                ErrorCode.ACCESS_REFUSED,
                f"{type(frame).__name__} refused for user '{self.user}': it needs the tag "
                f"{' or '.join(sorted(rule.tags))}",
            )
        for need in rule.needs:
            name = need.resource(frame)
            if not self.allowed(need.permission, name):
                raise self.refused(need.permission, need.kind, name)

    def describe(self) -> dict[str, Any]:
        return {"user": self.user, "vhost": self.vhost, "tags": sorted(self.tags)}
