"""Unit tests for brokerd.routing: direct, fanout and topic routers."""

from __future__ import annotations

import random

import pytest

from brokerd.routing import (
    EXCHANGE_TYPES,
    DirectRouter,
    FanoutRouter,
    Router,
    TopicRouter,
    make_router,
)


def topic(*bindings: str, cache_size: int = 1024) -> TopicRouter:
    """A topic router with one queue per binding, named after its binding key."""
    r = TopicRouter(cache_size=cache_size)
    for b in bindings:
        r.bind(b, b)
    return r


def matches(binding: str, key: str) -> bool:
    """Does a single topic binding match a key? (cache off: exercise the trie)"""
    return topic(binding, cache_size=0).route(key) == {binding}


# ---------------------------------------------------------------- make_router


def test_make_router_builds_each_exchange_type() -> None:
    assert frozenset({"direct", "topic", "fanout"}) == EXCHANGE_TYPES
    assert isinstance(make_router("direct"), DirectRouter)
    assert isinstance(make_router("topic"), TopicRouter)
    assert isinstance(make_router("fanout"), FanoutRouter)


@pytest.mark.parametrize("bad", ["headers", "Direct", "", "x-delayed"])
def test_make_router_rejects_unknown(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown exchange type"):
        make_router(bad)


# ------------------------------------------------ behaviour common to all types


@pytest.mark.parametrize("kind", sorted(EXCHANGE_TYPES))
def test_bind_and_unbind_report_what_changed(kind: str) -> None:
    r: Router = make_router(kind)
    assert len(r) == 0
    assert r.bind("q1", "k") is True
    assert r.bind("q1", "k") is False  # duplicate
    assert r.bind("q1", "other") is True
    assert r.bind("q2", "k") is True
    assert len(r) == 3
    assert r.bindings() == [("q1", "k"), ("q1", "other"), ("q2", "k")]
    assert r.unbind("q1", "k") is True
    assert r.unbind("q1", "k") is False
    assert r.unbind("nope", "k") is False
    assert len(r) == 2
    assert r.bindings() == [("q1", "other"), ("q2", "k")]


@pytest.mark.parametrize("kind", sorted(EXCHANGE_TYPES))
def test_unbind_queue_removes_all_its_bindings(kind: str) -> None:
    r = make_router(kind)
    for key in ("a", "b", "c"):
        r.bind("q1", key)
    r.bind("q2", "a")
    assert r.unbind_queue("q1") == 3
    assert r.unbind_queue("q1") == 0
    assert r.unbind_queue("never-bound") == 0
    assert r.bindings() == [("q2", "a")]
    assert len(r) == 1
    for key in ("a", "b", "c"):
        assert "q1" not in r.route(key)
    assert r.route("a") == {"q2"}


@pytest.mark.parametrize("kind", sorted(EXCHANGE_TYPES))
def test_a_queue_can_bind_again_after_unbind_queue(kind: str) -> None:
    r = make_router(kind)
    r.bind("q", "a")
    r.unbind_queue("q")
    assert r.route("a") == set()
    assert r.bind("q", "a") is True
    assert r.route("a") == {"q"}


@pytest.mark.parametrize("kind", sorted(EXCHANGE_TYPES))
def test_route_result_is_immutable(kind: str) -> None:
    r = make_router(kind)
    r.bind("q", "a")
    assert isinstance(r.route("a"), frozenset)
    assert isinstance(r.route("zzz"), frozenset)


# ---------------------------------------------------------------------- direct


def test_direct_routes_by_exact_match() -> None:
    r = DirectRouter()
    r.bind("q1", "orange")
    r.bind("q2", "black")
    r.bind("q2", "green")
    r.bind("q3", "black")
    assert r.route("orange") == {"q1"}
    assert r.route("black") == {"q2", "q3"}
    assert r.route("green") == {"q2"}
    assert r.route("Orange") == set()
    assert r.route("") == set()
    assert r.route("orange.x") == set()


def test_direct_wildcards_are_literal() -> None:
    r = DirectRouter()
    r.bind("q", "#")
    r.bind("q2", "a.*")
    assert r.route("anything") == set()
    assert r.route("#") == {"q"}
    assert r.route("a.b") == set()
    assert r.route("a.*") == {"q2"}


def test_direct_routes_the_empty_key_exactly() -> None:
    r = DirectRouter()
    r.bind("q", "")
    assert r.route("") == {"q"}
    assert r.route(".") == set()


def test_direct_unbind_last_queue_forgets_key() -> None:
    r = DirectRouter()
    r.bind("q1", "k")
    r.bind("q2", "k")
    r.unbind("q1", "k")
    assert r.route("k") == {"q2"}
    r.unbind("q2", "k")
    assert r.route("k") == set()
    assert r._by_key == {}


def test_a_direct_route_set_is_not_shared_with_the_table() -> None:
    r = DirectRouter()
    r.bind("q1", "k")
    before = r.route("k")
    r.bind("q2", "k")
    assert before == {"q1"}  # an earlier answer is not changed behind the caller's back
    assert r.route("k") == {"q1", "q2"}


# ---------------------------------------------------------------------- fanout


def test_fanout_ignores_key() -> None:
    r = FanoutRouter()
    assert r.route("x") == set()
    r.bind("q1", "")
    r.bind("q2", "whatever")
    for key in ("", "x", "a.b.c", "#", "*"):
        assert r.route(key) == {"q1", "q2"}


def test_fanout_queue_bound_twice_routes_once_until_last_unbind() -> None:
    r = FanoutRouter()
    r.bind("q", "k1")
    r.bind("q", "k2")
    assert r.route("x") == {"q"}
    assert r.bindings() == [("q", "k1"), ("q", "k2")]
    r.unbind("q", "k1")
    assert r.route("x") == {"q"}
    r.unbind("q", "k2")
    assert r.route("x") == set()


# ----------------------------------------------------------------------- topic

# RabbitMQ tutorial 5 ("Topics"): Q1 is bound with "*.orange.*", Q2 with
# "*.*.rabbit" and "lazy.#".
TUTORIAL = [
    ("quick.orange.rabbit", {"Q1", "Q2"}),
    ("lazy.orange.elephant", {"Q1", "Q2"}),
    ("quick.orange.fox", {"Q1"}),
    ("lazy.brown.fox", {"Q2"}),
    ("lazy.pink.rabbit", {"Q2"}),  # matches both Q2 bindings, delivered once
    ("quick.brown.fox", set()),
    ("orange", set()),
    ("quick.orange.new.rabbit", set()),
    ("lazy.orange.new.rabbit", {"Q2"}),
    ("quick.orange.male.rabbit", set()),
    ("lazy", {"Q2"}),
]


@pytest.fixture
def tutorial() -> TopicRouter:
    r = TopicRouter()
    r.bind("Q1", "*.orange.*")
    r.bind("Q2", "*.*.rabbit")
    r.bind("Q2", "lazy.#")
    return r


@pytest.mark.parametrize(("key", "expected"), TUTORIAL)
def test_topic_routes_the_rabbitmq_tutorial_examples(
    tutorial: TopicRouter, key: str, expected: set[str]
) -> None:
    assert tutorial.route(key) == expected
    assert tutorial.route(key) == expected  # second time from the cache


@pytest.mark.parametrize(
    ("binding", "key", "expected"),
    [
        # literal words
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
        ("a.b", "a.b.c", False),
        ("a", "a", True),
        # "*": exactly one word, which may be empty
        ("*", "a", True),
        ("*", "", False),  # the empty key has zero words
        ("*", ".", False),  # "." is two empty words
        ("*.*", ".", True),
        ("*", "a.b", False),
        ("a.*.c", "a..c", True),  # middle word is empty
        ("a.*", "a.", True),
        ("*.a", ".a", True),
        ("a.*", "a", False),
        # "#": zero or more words
        ("#", "", True),
        ("#", "a", True),
        ("#", ".", True),
        ("#", "a.b.c", True),
        ("#.#", "", True),
        ("#.#", "a.b.c", True),
        ("#.#.#.#", "a", True),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("#.a", "a", True),
        ("#.a", "x.y.a", True),
        ("#.a", "a.x", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.b", True),
        ("a.#.b", "a.x.y.z.b", True),
        ("a.#.b", "a.b.b", True),
        ("a.#.b", "a.b.c", False),
        ("a.#.b", "a", False),
        ("a.#.b.#.c", "a.b.c", True),
        ("a.#.b.#.c", "a.x.b.y.c", True),
        ("a.#.b.#.c", "a.c.b", False),
        ("*.#", "", False),  # needs at least one word
        ("*.#", "a", True),
        ("*.#", "a.b.c", True),
        ("*.#", ".", True),
        ("#.*", "", False),
        ("#.*", "a.b", True),
        ("#.*.#", "a", True),
        # empty words in bindings are literal empty words
        ("", "", True),
        ("", "a", False),
        ("a..b", "a..b", True),
        ("a..b", "a.b", False),
        ("a..b", "a.x.b", False),
        (".", ".", True),
        (".", "", False),
        # wildcards count only as whole words; elsewhere they are literal text
        ("a*", "a*", True),
        ("a*", "ab", False),
        ("#b", "#b", True),
        ("#b", "b", False),
        ("#b", "a.b", False),
        ("*a.b", "xa.b", False),
        ("a.b#", "a.b#", True),
        ("a.b#", "a.b.c", False),
        ("**", "x", False),
        ("##", "", False),
        # case-sensitive
        ("A.b", "a.b", False),
        ("a.B", "a.B", True),
        ("Lazy.#", "lazy.x", False),
    ],
)
def test_topic_matching_follows_the_amqp_rules(binding: str, key: str, expected: bool) -> None:
    assert matches(binding, key) is expected


def test_topic_key_words_are_never_wildcards() -> None:
    # A routing key is plain text: "*" or "#" in a key only matches literally
    # (or via a wildcard in the binding), never widens the match.
    assert not matches("a.b", "a.*")
    assert not matches("a.b", "#")
    assert matches("a.*", "a.*")  # binding "*" matches the word "*"
    assert matches("#", "*.#")


def test_topic_queue_matched_by_several_bindings_appears_once() -> None:
    r = TopicRouter()
    for b in ("#", "a.#", "*.b", "a.b", "#.b", "a.*", "#.#"):
        r.bind("q", b)
    r.bind("other", "x")
    assert r.route("a.b") == {"q"}
    assert r.route("x") == {"q", "other"}


def test_topic_many_consecutive_hashes_are_not_exponential() -> None:
    # Without memoisation this is ~C(60, 30) paths; with it, a few thousand states.
    r = TopicRouter(cache_size=0)
    r.bind("q", ".".join(["#"] * 30 + ["z"]))
    r.bind("q2", ".".join(["#", "a"] * 30))
    key = ".".join(["a"] * 60)
    assert r.route(key) == {"q2"}
    assert r.route(key + ".z") == {"q"}


def test_a_topic_key_of_thousands_of_words_hits_no_recursion_limit() -> None:
    r = TopicRouter(cache_size=0)
    r.bind("q", "#.end")
    r.bind("q2", "#")
    key = ".".join(["w"] * 5000)
    assert r.route(key) == {"q2"}
    assert r.route(key + ".end") == {"q", "q2"}


def test_topic_unbind_prunes_trie_to_baseline() -> None:
    rng = random.Random(1234)
    alphabet = ["a", "b", "c", "", "*", "#", "foo", "A"]
    r = TopicRouter()
    r.bind("keep", "stay.here.#")
    baseline = r._node_count()

    pairs: set[tuple[str, str]] = set()
    while len(pairs) < 1000:
        words = [rng.choice(alphabet) for _ in range(rng.randint(0, 6))]
        pairs.add((f"q{rng.randint(0, 20)}", ".".join(words)))
    for q, k in pairs:
        assert r.bind(q, k) is True
    assert r._node_count() > baseline
    assert len(r) == 1001

    order = list(pairs)
    rng.shuffle(order)
    for q, k in order:
        assert r.unbind(q, k) is True
    assert r._node_count() == baseline
    assert r.bindings() == [("keep", "stay.here.#")]
    assert r.route("stay.here.x") == {"keep"}


def test_topic_unbind_queue_prunes_trie() -> None:
    r = TopicRouter()
    baseline = r._node_count()
    assert baseline == 1  # just the root
    for k in ("a.b.c", "a.*.#", "#", "x..y"):
        r.bind("q", k)
    r.bind("q2", "a.b.c")
    assert r.unbind_queue("q") == 4
    assert r.route("a.b.c") == {"q2"}
    assert r.route("a.z") == set()
    r.unbind("q2", "a.b.c")
    assert r._node_count() == baseline


def test_topic_unbind_keeps_shared_prefix() -> None:
    r = TopicRouter()
    r.bind("q1", "a.b")
    r.bind("q2", "a.b.c")
    r.bind("q3", "a")
    r.unbind("q2", "a.b.c")
    assert r.route("a.b") == {"q1"}
    assert r.route("a") == {"q3"}
    assert r.route("a.b.c") == set()
    r.unbind("q1", "a.b")
    assert r.route("a") == {"q3"}
    assert r._node_count() == 2


def test_topic_cache_invalidated_on_bind_and_unbind() -> None:
    r = TopicRouter()
    assert r.route("a.b") == set()  # cached miss
    r.bind("q1", "a.*")
    assert r.route("a.b") == {"q1"}  # cached hit
    r.bind("q2", "#")
    assert r.route("a.b") == {"q1", "q2"}
    r.unbind("q1", "a.*")
    assert r.route("a.b") == {"q2"}
    r.unbind_queue("q2")
    assert r.route("a.b") == set()


def test_topic_cache_not_cleared_by_noop_changes() -> None:
    r = TopicRouter()
    r.bind("q", "a")
    r.route("a")
    assert "a" in r._cache
    assert r.bind("q", "a") is False
    assert r.unbind("q", "zzz") is False
    assert r.unbind_queue("nobody") == 0
    assert "a" in r._cache


def test_topic_cache_is_bounded_lru() -> None:
    r = TopicRouter(cache_size=3)
    r.bind("q", "#")
    for k in ("k1", "k2", "k3"):
        r.route(k)
    r.route("k1")  # k1 is now most recent; k2 is least
    r.route("k4")
    assert list(r._cache) == ["k3", "k1", "k4"]
    assert r.route("k2") == {"q"}
    assert len(r._cache) == 3


def test_a_topic_cache_of_size_zero_stays_empty() -> None:
    r = TopicRouter(cache_size=0)
    r.bind("q", "a")
    assert r.route("a") == {"q"}
    assert len(r._cache) == 0


def test_a_negative_topic_cache_size_is_refused() -> None:
    with pytest.raises(ValueError):
        TopicRouter(cache_size=-1)


def test_topic_bindings_keep_original_keys() -> None:
    r = TopicRouter()
    r.bind("q", "a.#.#")
    r.bind("q", "a.#")
    assert r.bindings() == [("q", "a.#.#"), ("q", "a.#")]
    r.unbind("q", "a.#.#")
    assert r.route("a.x") == {"q"}
    r.unbind("q", "a.#")
    assert r.route("a.x") == set()
