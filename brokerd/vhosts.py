"""Virtual hosts: one broker, separate namespaces (docs/vhosts.md, SPEC §6.6).

A vhost other than the default ``"/"`` keeps every name it owns (exchanges,
queues, dead-letter targets, schedules, task ids of results and
revocations, group ids, rate-limit names) under the internal prefix
``"\\x1fv\\x1f" + vhost + "\\x1f"``; the default vhost keeps bare names, so
a broker's existing data is the ``"/"`` vhost without any migration.

The mapping happens at the session boundary only (``Session`` and the task
layer's ``VhostClient``): names in client frames are mapped in, names in
replies, deliveries and listings mapped out. The core (queues, routing,
storage) sees internal names and needs no notion of vhosts.

Why this cannot collide: U+001F (and every control character) is refused in
client names (``check_client_name``; ``options.check_name`` refuses it in
declared names), and in vhost names (``check_vhost``), so an internal name
splits one way only (``split``) and no client can spell another vhost's
internal name. The cost per name is one ``in`` test and one concatenation
with a string made once per session (no regular expression).

Invariants:
* ``split(Names(v).inn(n)) == (v, n)`` for every valid vhost ``v`` and
  client name ``n``; ``Names(v).out(Names(v).inn(n)) == n``.
* Names of different vhosts never map to the same internal name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .errors import invalid
from .storage.base import Batch, Query, Store

__all__ = [
    "DEFAULT_VHOST",
    "MARK",
    "MAX_VHOST",
    "Names",
    "Registry",
    "check_client_name",
    "check_vhost",
    "prefix_of",
    "split",
    "vhost_prefix",
]

#: The vhost that always exists; its names are stored bare.
DEFAULT_VHOST = "/"
#: The separator of internal names (ASCII unit separator).
SEP = "\x1f"
#: How every internal name of a vhost other than "/" starts.
MARK = "\x1fv\x1f"
MAX_VHOST = 255


def _has_control(name: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in name)


def check_vhost(name: str) -> str:
    """A vhost name: 1 to 255 characters, none of them a control character."""
    if not isinstance(name, str) or not name:
        raise invalid("a vhost name must not be empty")
    if len(name) > MAX_VHOST:
        raise invalid(f"a vhost name has at most {MAX_VHOST} characters")
    if _has_control(name):
        raise invalid("a vhost name must not contain control characters")
    return name


def vhost_prefix(vhost: str) -> str:
    """The internal prefix of ``vhost``'s names ("" for the default vhost)."""
    return "" if vhost == DEFAULT_VHOST else MARK + vhost + SEP


def check_client_name(name: str) -> str:
    """Refuse a name a client sends that holds U+001F (it could spell an
    internal name); every other check is the handler's."""
    if SEP in name:
        raise invalid("names must not contain control characters")
    return name


def split(internal: str) -> tuple[str, str]:
    """(vhost, client name) of an internal name."""
    if not internal.startswith(MARK):
        return DEFAULT_VHOST, internal
    end = internal.find(SEP, len(MARK))
    if end < 0:  # not made by ``Names.inn``: treat as a bare name
        return DEFAULT_VHOST, internal
    return internal[len(MARK) : end], internal[end + 1 :]


def prefix_of(internal: str) -> str:
    """The vhost prefix an internal name starts with ("" for "/")."""
    if not internal.startswith(MARK):
        return ""
    end = internal.find(SEP, len(MARK))
    return "" if end < 0 else internal[: end + 1]


@dataclass(frozen=True, slots=True)
class Names:
    """One vhost's mapping of names, made once per session."""

    vhost: str
    prefix: str

    @classmethod
    def of(cls, vhost: str) -> Names:
        return cls(vhost, vhost_prefix(vhost))

    def inn(self, name: str) -> str:
        """A client's name as stored (U+001F refused)."""
        if SEP in name:
            raise invalid("names must not contain control characters")
        return self.prefix + name

    def exchange_in(self, name: str) -> str:
        """An exchange name: the default exchange ``""`` stays itself."""
        return self.inn(name) if name else ""

    def out(self, internal: str) -> str:
        """An internal name of this vhost as its clients know it."""
        p = self.prefix
        if p and internal.startswith(p):
            return internal[len(p) :]
        return internal

    def owns(self, internal: str) -> bool:
        """Whether ``internal`` is one of this vhost's names."""
        p = self.prefix
        if p:
            return internal.startswith(p)
        return not internal.startswith(MARK)

    def route_in(self, exchange: str, routing_key: str) -> tuple[str, str]:
        """A publish's (exchange, routing key) as routed: a named exchange is
        the vhost's; the default exchange ``""`` is shared and routes by queue
        name, so the key is the one mapped."""
        if SEP in exchange:
            raise invalid("names must not contain control characters")
        if exchange:
            return self.prefix + exchange, routing_key
        if SEP in routing_key:
            raise invalid("names must not contain control characters")
        return exchange, self.prefix + routing_key

    def route_out(self, exchange: str, routing_key: str) -> tuple[str, str]:
        if exchange:
            return self.out(exchange), routing_key
        return exchange, self.out(routing_key)

    def text_out(self, text: str) -> str:
        """A message (an error's, a cancel reason) with internal names mapped
        out, also where the message quotes a name with ``repr`` (which shows
        the prefix's separators escaped)."""
        p = self.prefix
        if not p:
            return text
        if p in text:
            text = text.replace(p, "")
        escaped = repr(p)[1:-1]
        return text.replace(escaped, "") if escaped in text else text


#: The default vhost's mapping (bare names).
DEFAULT_NAMES = Names.of(DEFAULT_VHOST)


class Registry:
    """The vhosts that exist: the store's ``vhosts`` table in memory, loaded
    at start (``load``) and changed only with the batch that stores the
    change. ``"/"`` always exists and is not stored."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def exists(self, name: str) -> bool:
        return name == DEFAULT_VHOST or name in self.names

    def all(self) -> list[str]:
        return sorted({DEFAULT_VHOST, *self.names})

    def add(self, name: str, batch: Batch) -> None:
        self.names.add(name)
        batch.put_vhost(name)

    def delete(self, name: str, batch: Batch) -> None:
        """Forget ``name`` and, in the store, its permissions and the task
        layer's rows under its prefix (its queues and exchanges are the
        caller's to delete first)."""
        self.names.discard(name)
        batch.delete_vhost(name, vhost_prefix(name))

    async def load(self, store: Store) -> None:
        future: asyncio.Future[list[tuple[object, ...]] | BaseException] = (
            asyncio.get_running_loop().create_future()
        )
        store.read(Query.VHOSTS, (), future.set_result)
        rows = await future
        if isinstance(rows, BaseException):
            raise RuntimeError(f"loading vhosts failed: {rows}") from rows
        self.names = {str(row[0]) for row in rows if row[0] != DEFAULT_VHOST}
