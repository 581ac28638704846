"""The admin list frames' rows and pages (brokerd/admin/listing.py), on the
fake clock: what brokerctl shows is computed here, without a socket."""

from __future__ import annotations

from typing import Any

import pytest
from corekit import Env

from brokerd.admin import listing
from brokerd.errors import BrokerError
from brokerd.vhosts import Names
from brokerd_protocol import MAX_LIST_LIMIT, ErrorCode


def rows(n: int) -> list[listing.Row]:
    return [(f"q{i:03d}", {"name": f"q{i:03d}"}) for i in range(n)]


def names(page: dict[str, Any]) -> list[str]:
    return [item["name"] for item in page["items"]]


def test_a_page_holds_at_most_limit_rows_and_names_the_last_as_next() -> None:
    page = listing.page(rows(5), None, 2, 10_000, listing.QUEUE_KEY)
    assert names(page) == ["q000", "q001"]
    assert page["next"] == "q001"


def test_paging_from_each_next_lists_every_row_once_in_order() -> None:
    seen: list[str] = []
    cursor = None
    while True:
        page = listing.page(rows(7), cursor, 3, 10_000, listing.QUEUE_KEY)
        seen += names(page)
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"q{i:03d}" for i in range(7)]


def test_the_last_page_has_no_next() -> None:
    assert listing.page(rows(3), "q000", 5, 10_000, listing.QUEUE_KEY)["next"] is None


def test_a_page_stays_within_its_byte_budget_but_always_holds_one_row() -> None:
    big = [(f"q{i}", {"name": f"q{i}", "pad": "x" * 100}) for i in range(5)]
    page = listing.page(big, None, 1000, 250, listing.QUEUE_KEY)
    assert len(page["items"]) == 2 and page["next"] == "q1"
    tiny = listing.page(big, None, 1000, 1, listing.QUEUE_KEY)
    assert len(tiny["items"]) == 1 and tiny["next"] == "q0"


def test_rows_created_or_removed_between_pages_never_repeat_a_row() -> None:
    first = listing.page(rows(4), None, 2, 10_000, listing.QUEUE_KEY)
    changed = [r for r in rows(4) if r[0] != "q000"] + [("a-new", {"name": "a-new"})]
    second = listing.page(changed, first["next"], 2, 10_000, listing.QUEUE_KEY)
    assert names(second) == ["q002", "q003"]


@pytest.mark.parametrize("limit", [0, -1, MAX_LIST_LIMIT + 1])
def test_a_limit_out_of_range_is_invalid_argument(limit: int) -> None:
    with pytest.raises(BrokerError) as err:
        listing.page(rows(1), None, limit, 10_000, listing.QUEUE_KEY)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("check", "cursor"),
    [
        (listing.QUEUE_KEY, 3),
        (listing.BINDING_KEY, ["ex", "q"]),
        (listing.BINDING_KEY, "ex"),
        (listing.CONNECTION_KEY, "1"),
        (listing.CONNECTION_KEY, True),
        (listing.CONSUMER_KEY, [1, "2"]),
    ],
)
def test_a_cursor_of_the_wrong_shape_is_invalid_argument(check: Any, cursor: Any) -> None:
    with pytest.raises(BrokerError) as err:
        listing.page([], cursor, 10, 10_000, check)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT


def test_binding_rows_page_by_exchange_queue_and_key() -> None:
    env = Env()
    b = env.broker
    b.declare_exchange("ev", "topic", True)
    for q in ("b", "a"):
        b.declare_queue(q, True, {})
        b.bind(q, "ev", "x.#")
    b.bind("a", "ev", "a.*")
    page = listing.page(listing.binding_rows(b.exchanges), None, 2, 10_000, listing.BINDING_KEY)
    assert [(r["queue"], r["routing_key"]) for r in page["items"]] == [("a", "a.*"), ("a", "x.#")]
    assert page["next"] == ["ev", "a", "x.#"]
    rest = listing.page(
        listing.binding_rows(b.exchanges), page["next"], 2, 10_000, listing.BINDING_KEY
    )
    assert rest["items"] == [{"vhost": "/", "exchange": "ev", "queue": "b", "routing_key": "x.#"}]


def test_queue_rows_count_ready_leased_delayed_and_consumers() -> None:
    env = Env()
    b = env.broker
    b.declare_queue("jobs", True, {"max_deliveries": 3})
    conn, _ = env.connect()
    for body in (b"1", b"2", b"3"):
        env.publish(conn, "jobs", body)
    env.publish(conn, "jobs", b"later", delay=60.0)
    env.settle()
    env.consuming("jobs", prefetch=1)
    [row] = [r for _, r in listing.queue_rows(b.queues, env.clock.now())]
    assert row["name"] == "jobs" and row["durable"] is True
    assert (row["ready"], row["leased"], row["delayed"], row["consumers"]) == (2, 1, 1, 1)
    assert row["options"]["max_deliveries"] == 3


def test_oldest_ready_age_is_the_age_of_the_oldest_ready_message() -> None:
    env = Env()
    b = env.broker
    b.declare_queue("jobs", True, {})
    conn, _ = env.connect()
    env.publish(conn, "jobs", b"old")
    env.settle()
    env.advance(10.0)
    env.publish(conn, "jobs", b"new", priority=5)
    env.settle()
    env.advance(2.5)
    q = b.queues["jobs"]
    assert listing.oldest_ready_age(q, env.clock.now()) == pytest.approx(12.5)


def test_oldest_ready_age_is_none_for_an_empty_queue() -> None:
    env = Env()
    env.broker.declare_queue("jobs", True, {})
    assert listing.oldest_ready_age(env.broker.queues["jobs"], env.clock.now()) is None


def test_the_default_exchange_is_listed_first() -> None:
    env = Env()
    env.broker.declare_exchange("ev", "fanout", False)
    got = [r for _, r in listing.exchange_rows(env.broker.exchanges)]
    assert got == [
        {"vhost": "/", "name": "", "type": "direct", "durable": True},
        {"vhost": "/", "name": "ev", "type": "fanout", "durable": False},
    ]


def test_rows_of_a_vhost_carry_client_names_and_filter_by_vhost() -> None:
    env = Env()
    b = env.broker
    inner = Names.of("orders")
    b.declare_queue("jobs", True, {})
    b.declare_queue(inner.inn("jobs"), True, {"dead_letter_queue": inner.inn("dead")})
    b.declare_exchange(inner.inn("ev"), "topic", True)
    b.bind(inner.inn("jobs"), inner.inn("ev"), "a.*")
    queues = [r for _, r in listing.queue_rows(b.queues, 0.0)]
    assert sorted((r["vhost"], r["name"]) for r in queues) == [("/", "jobs"), ("orders", "jobs")]
    only = [r for _, r in listing.queue_rows(b.queues, 0.0, "orders")]
    assert [(r["vhost"], r["name"]) for r in only] == [("orders", "jobs")]
    assert only[0]["options"]["dead_letter_queue"] == "dead"
    exchanges = [r for _, r in listing.exchange_rows(b.exchanges, "orders", ["/", "orders"])]
    assert [(r["vhost"], r["name"]) for r in exchanges] == [("orders", ""), ("orders", "ev")]
    bindings = [r for _, r in listing.binding_rows(b.exchanges, "orders")]
    assert bindings == [
        {"vhost": "orders", "exchange": "ev", "queue": "jobs", "routing_key": "a.*"}
    ]
    assert listing.binding_rows(b.exchanges, "/") == []
