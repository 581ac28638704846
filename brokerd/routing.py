"""Exchange routing: which queues a routing key reaches. Pure data structures.

The broker core keeps one router per exchange and asks it, on every publish,
for the set of queue names a routing key reaches. No I/O and no asyncio live
here, so the core can call a router synchronously on its hot path and the
tests can exercise the rules exhaustively.

Three exchange types are provided (the default exchange, which routes by queue
name, is a special case the core handles without a router):

* ``direct``: the routing key must equal the binding key.
* ``fanout``: every bound queue receives every message; binding keys are kept
  (so bindings list and persist faithfully) but ignored when routing.
* ``topic``: RabbitMQ's topic rules, matched with a trie of binding words so a
  publish costs time in proportion to the key and the matching part of the
  trie, not to the number of bindings.

Routers return frozensets that may be shared between calls (cached results, or
the per-key sets of a direct router); callers must not rely on mutating them,
and cannot.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

__all__ = [
    "EXCHANGE_TYPES",
    "DirectRouter",
    "FanoutRouter",
    "Router",
    "TopicRouter",
    "make_router",
]

EXCHANGE_TYPES: frozenset[str] = frozenset({"direct", "topic", "fanout"})

#: Default size of a topic router's route cache. Publishers tend to reuse a
#: small set of routing keys, so a few hundred entries cover the common case
#: while bounding memory when keys are unique (e.g. carry an id).
DEFAULT_CACHE_SIZE = 1024

_EMPTY: frozenset[str] = frozenset()


class Router(Protocol):
    """What the broker core needs from an exchange's routing table."""

    def bind(self, queue: str, key: str) -> bool:
        """Add a binding; return True if it did not exist yet."""
        ...

    def unbind(self, queue: str, key: str) -> bool:
        """Remove a binding; return True if it existed."""
        ...

    def unbind_queue(self, queue: str) -> int:
        """Remove every binding of ``queue`` (queue deleted); return how many."""
        ...

    def route(self, key: str) -> set[str] | frozenset[str]:
        """Return the names of the queues ``key`` reaches, each once."""
        ...

    def bindings(self) -> list[tuple[str, str]]:
        """Return all (queue, key) pairs, in the order they were bound."""
        ...

    def __len__(self) -> int: ...


class _BindingTable:
    """Bookkeeping shared by all routers: the exact set of (queue, key) pairs.

    Keeping it separate from each router's lookup structure means duplicate
    binds and unknown unbinds are detected in one place, ``bindings()`` lists
    exactly what was bound (a topic binding ``a.#.#`` stays ``a.#.#``), and
    ``unbind_queue`` finds a queue's keys without scanning the whole table.
    Subclasses implement ``_added`` and ``_removed`` to maintain their index.
    """

    __slots__ = ("_by_queue", "_pairs")

    def __init__(self) -> None:
        # dict, not set: preserves bind order for listing and persistence.
        self._pairs: dict[tuple[str, str], None] = {}
        self._by_queue: dict[str, set[str]] = {}

    def bind(self, queue: str, key: str) -> bool:
        pair = (queue, key)
        if pair in self._pairs:
            return False
        self._pairs[pair] = None
        self._by_queue.setdefault(queue, set()).add(key)
        self._added(queue, key)
        return True

    def unbind(self, queue: str, key: str) -> bool:
        pair = (queue, key)
        if pair not in self._pairs:
            return False
        del self._pairs[pair]
        keys = self._by_queue[queue]
        keys.discard(key)
        if not keys:
            del self._by_queue[queue]
        self._removed(queue, key)
        return True

    def unbind_queue(self, queue: str) -> int:
        keys = self._by_queue.pop(queue, None)
        if not keys:
            return 0
        for key in keys:
            del self._pairs[(queue, key)]
            self._removed(queue, key)
        return len(keys)

    def bindings(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def _added(self, queue: str, key: str) -> None:
        raise NotImplementedError

    def _removed(self, queue: str, key: str) -> None:
        raise NotImplementedError


class DirectRouter(_BindingTable):
    """Exact key match: a dict from binding key to the frozenset of its queues.

    The per-key sets are frozen and rebuilt on bind/unbind (rare) so that
    ``route`` (hot) can hand out the stored set itself: one dict lookup, no
    copy, and no risk of a caller mutating the table.
    """

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        super().__init__()
        self._by_key: dict[str, frozenset[str]] = {}

    def _added(self, queue: str, key: str) -> None:
        self._by_key[key] = self._by_key.get(key, _EMPTY) | {queue}

    def _removed(self, queue: str, key: str) -> None:
        rest = self._by_key[key] - {queue}
        if rest:
            self._by_key[key] = rest
        else:
            del self._by_key[key]

    def route(self, key: str) -> frozenset[str]:
        return self._by_key.get(key, _EMPTY)


class FanoutRouter(_BindingTable):
    """Every bound queue, whatever the key.

    A queue bound several times (with different, ignored keys) still receives
    one copy. The answer only changes on bind/unbind, so it is computed once
    then and shared by every publish.
    """

    __slots__ = ("_all",)

    def __init__(self) -> None:
        super().__init__()
        self._all: frozenset[str] = _EMPTY

    def _added(self, queue: str, key: str) -> None:
        if queue not in self._all:
            self._all = self._all | {queue}

    def _removed(self, queue: str, key: str) -> None:
        # The table has already forgotten this pair: the queue stays routed
        # only while it has another binding left.
        if queue not in self._by_queue:
            self._all = self._all - {queue}

    def route(self, key: str) -> frozenset[str]:
        return self._all


class _Node:
    """One trie node: the binding words seen so far along the path from the root.

    Wildcard children live in their own slots rather than in ``children`` so a
    routing key whose word happens to be ``*`` or ``#`` is matched literally
    against literal children only (a key has no wildcards; RabbitMQ treats them
    as plain text there).
    """

    __slots__ = ("children", "hash", "is_hash", "queues", "star")

    def __init__(self, is_hash: bool = False) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        # Queues whose binding key ends exactly at this node.
        self.queues: set[str] = set()
        # A "#" node loops on itself: it may swallow any number of words.
        self.is_hash = is_hash

    def is_empty(self) -> bool:
        return not (self.children or self.queues) and self.star is None and self.hash is None


def _words(key: str) -> list[str]:
    """Split a topic key into words; the empty key has none (RabbitMQ's rule).

    ``str.split`` alone would turn "" into [""] (one empty word), which would
    make binding ``*`` match the empty key; RabbitMQ says it does not.
    """
    return key.split(".") if key else []


class TopicRouter(_BindingTable):
    """RabbitMQ topic matching over a trie of binding words, with a route cache.

    Rules (RabbitMQ's, exactly): keys split on "." into words, the empty key
    having zero words and "a..b" having an empty middle word; a binding word
    "*" matches exactly one word (possibly empty); "#" matches zero or more
    words; wildcards count only as whole words ("a*" is literal text);
    matching is case-sensitive.

    Why a trie: a publish then visits only the trie paths its words can
    follow, instead of testing every binding (exchanges with thousands of
    per-tenant or per-host bindings are normal).

    Why the memo: a "#" node loops on itself, so with several "#" in one
    binding (or many bindings sharing prefixes with "#") the same
    (node, word index) state is reachable along many paths, which is
    exponential without deduplication. Only "#" nodes need remembering:
    below the deepest "#" on a path, the trie is a tree and the word index is
    fixed by depth, so every other state is reached at most once per visit
    of its nearest "#" ancestor state.

    Why the cache: the common workload publishes the same few keys over and
    over; a hit is one dict lookup. It is an LRU bounded by ``cache_size``
    (0 disables it) and is cleared on every effective bind/unbind, which are
    rare compared with publishes.
    """

    __slots__ = ("_cache", "_cache_size", "_root")

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__()
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._root = _Node()
        self._cache_size = cache_size
        self._cache: OrderedDict[str, frozenset[str]] = OrderedDict()

    # -- maintenance -------------------------------------------------------

    def _added(self, queue: str, key: str) -> None:
        node = self._root
        for word in _words(key):
            if word == "*":
                if node.star is None:
                    node.star = _Node()
                node = node.star
            elif word == "#":
                if node.hash is None:
                    node.hash = _Node(is_hash=True)
                node = node.hash
            else:
                child = node.children.get(word)
                if child is None:
                    child = node.children[word] = _Node()
                node = child
        node.queues.add(queue)
        self._cache.clear()

    def _removed(self, queue: str, key: str) -> None:
        # Walk down remembering the path, then prune nodes left empty from the
        # leaf upward so the trie's size tracks the live bindings, not the
        # history of bind/unbind churn.
        path: list[tuple[_Node, str]] = []
        node = self._root
        for word in _words(key):
            path.append((node, word))
            if word == "*":
                nxt = node.star
            elif word == "#":
                nxt = node.hash
            else:
                nxt = node.children.get(word)
            # The binding table guarantees the pair was bound, so its path exists.
            assert nxt is not None, "trie out of sync with binding table"
            node = nxt
        node.queues.discard(queue)
        while path and node.is_empty():
            parent, word = path.pop()
            if word == "*":
                parent.star = None
            elif word == "#":
                parent.hash = None
            else:
                del parent.children[word]
            node = parent
        self._cache.clear()

    # -- hot path ----------------------------------------------------------

    def route(self, key: str) -> frozenset[str]:
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        result = self._match(key)
        if self._cache_size:
            cache[key] = result
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return result

    def _match(self, key: str) -> frozenset[str]:
        """Walk the trie as an NFA over the key's words (iteratively: keys may be long)."""
        words = _words(key)
        n = len(words)
        out: set[str] = set()
        seen: set[tuple[_Node, int]] = set()  # states of "#" nodes only; see class doc
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        push = stack.append
        while stack:
            node, i = stack.pop()
            h = node.hash
            if h is not None and (h, i) not in seen:
                # Enter "#" having consumed zero words so far.
                seen.add((h, i))
                push((h, i))
            if i == n:
                if node.queues:
                    out.update(node.queues)
                continue
            if node.is_hash and (node, i + 1) not in seen:
                # "#" swallows one more word and stays put.
                seen.add((node, i + 1))
                push((node, i + 1))
            child = node.children.get(words[i])
            if child is not None:
                push((child, i + 1))
            if node.star is not None:
                push((node.star, i + 1))
        return frozenset(out) if out else _EMPTY

    # -- introspection -----------------------------------------------------

    def _node_count(self) -> int:
        """Number of trie nodes including the root (tests check pruning with it)."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
            if node.star is not None:
                stack.append(node.star)
            if node.hash is not None:
                stack.append(node.hash)
        return count


def make_router(exchange_type: str) -> Router:
    """Build the router for an exchange type; ValueError names the valid ones."""
    if exchange_type == "direct":
        return DirectRouter()
    if exchange_type == "topic":
        return TopicRouter()
    if exchange_type == "fanout":
        return FanoutRouter()
    raise ValueError(
        f"unknown exchange type {exchange_type!r}; expected one of {sorted(EXCHANGE_TYPES)}"
    )
