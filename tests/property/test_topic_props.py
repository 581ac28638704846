"""Property test: TopicRouter agrees with a naive reference matcher.

The reference is written straight from RabbitMQ's rules as a recursive
function on word lists, deliberately sharing no code or structure with the
trie in brokerd.routing, so a bug in one is unlikely to hide in the other.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DataObject

from brokerd.routing import TopicRouter


def split(key: str) -> list[str]:
    # RabbitMQ: the empty key has zero words; otherwise split on every ".".
    return [] if key == "" else key.split(".")


def ref_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # zero words, or swallow one word and stay on "#"
        return ref_match(rest, words) or (bool(words) and ref_match(pattern, words[1:]))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return ref_match(rest, words[1:])
    return False


def ref_route(bindings: set[tuple[str, str]], key: str) -> set[str]:
    return {q for q, b in bindings if ref_match(split(b), split(key))}


pattern_words = st.sampled_from(["a", "b", "", "*", "#"])
key_words = st.sampled_from(["a", "b", ""])
patterns = st.lists(pattern_words, min_size=0, max_size=5).map(".".join)
keys = st.lists(key_words, min_size=0, max_size=5).map(".".join)
queues = st.sampled_from(["q0", "q1", "q2", "q3"])
binding_sets = st.sets(st.tuples(queues, patterns), max_size=12)


def test_the_reference_matcher_agrees_with_known_cases() -> None:
    assert ref_match(split("lazy.#"), split("lazy"))
    assert not ref_match(split("*"), split(""))
    assert ref_match(split("*.*"), split("."))
    assert ref_match(split("#"), split(""))


@settings(max_examples=300, deadline=None)
@given(bindings=binding_sets, probe=st.lists(keys, min_size=1, max_size=10))
def test_topic_router_matches_reference(bindings: set[tuple[str, str]], probe: list[str]) -> None:
    for cache_size in (0, 4):
        r = TopicRouter(cache_size=cache_size)
        for q, b in bindings:
            assert r.bind(q, b)
        for key in probe + probe:  # twice: second pass may come from the cache
            assert r.route(key) == ref_route(bindings, key), (key, bindings)


@settings(max_examples=300, deadline=None)
@given(bindings=binding_sets, probe=st.lists(keys, min_size=1, max_size=8), data=st.data())
def test_topic_router_after_unbinds_matches_reference(
    bindings: set[tuple[str, str]], probe: list[str], data: DataObject
) -> None:
    # Remove a random subset of what was bound, plus some pairs never bound.
    subset = (
        data.draw(st.sets(st.sampled_from(sorted(bindings))), label="subset") if bindings else set()
    )
    extra = data.draw(st.sets(st.tuples(queues, patterns), max_size=4), label="extra")
    removed = subset | extra
    r = TopicRouter()
    empty_nodes = r._node_count()
    for q, b in bindings:
        r.bind(q, b)
    for key in probe:
        r.route(key)  # warm the cache so a missed invalidation would show
    for q, b in removed:
        assert r.unbind(q, b) is ((q, b) in bindings)
    live = bindings - removed
    assert len(r) == len(live)
    assert set(r.bindings()) == live
    for key in probe:
        assert r.route(key) == ref_route(live, key), (key, live)
    for q, b in live:
        r.unbind(q, b)
    assert r._node_count() == empty_nodes
