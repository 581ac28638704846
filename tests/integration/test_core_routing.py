"""Routing through real exchanges: direct, topic (RabbitMQ's rules), fanout,
unbinding, deleting exchanges and the publish/declare errors of SPEC §8-§10."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from clientkit import BOUND

from brokerd_client import (
    AsyncClient,
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    QueueInfo,
    Unroutable,
)


async def bodies(client: AsyncClient, queue: str) -> list[bytes]:
    """Everything ready in ``queue``, in delivery order (acked)."""
    n = (await client.queue_stats(queue)).ready
    out: list[bytes] = []
    if n:
        consumer = await client.consume(queue, prefetch=n)
        for _ in range(n):
            d = await consumer.next(timeout=BOUND)
            out.append(d.body)
            await d.ack()
        await consumer.cancel()
    assert await client.queue_stats(queue) == QueueInfo(0, 0, 0, 0)
    return out


async def test_direct_and_fanout_route_to_every_bound_queue_once(client: AsyncClient) -> None:
    await client.declare_exchange("core.direct", "direct")
    await client.declare_exchange("core.fanout", "fanout")
    for q in ("q1", "q2", "q3"):
        await client.declare_queue(q)
    await client.bind("q1", "core.direct", "red")
    await client.bind("q1", "core.direct", "green")
    await client.bind("q2", "core.direct", "green")
    await client.bind("q2", "core.direct", "green")  # binding twice changes nothing
    await client.bind("q1", "core.fanout", "ignored")
    await client.bind("q3", "core.fanout", "")

    assert await client.publish("core.direct", "red", b"r") is True
    assert await client.publish("core.direct", "green", b"g") is True
    assert await client.publish("core.direct", "blue", b"b") is False
    assert await client.publish("core.direct", "Red", b"R") is False  # case-sensitive
    assert await client.publish("core.fanout", "whatever", b"f") is True
    # The default exchange routes by queue name only.
    assert await client.publish("", "q3", b"default") is True
    assert await client.publish("", "red", b"x") is False

    assert await bodies(client, "q1") == [b"r", b"g", b"f"]
    assert await bodies(client, "q2") == [b"g"]
    assert await bodies(client, "q3") == [b"f", b"default"]


# pattern -> the keys (of KEYS) it must match, by SPEC §9.1 / AMQP 0-9-1 rules.
TOPIC_CASES: dict[str, set[str]] = {
    "orders.*.created": {"orders.eu.created"},
    "orders.#": {
        "orders",
        "orders.eu",
        "orders.created",
        "orders.eu.created",
        "orders.eu.x.created",
    },
    "#.created": {"created", "orders.created", "orders.eu.created", "orders.eu.x.created"},
    "a.#.z": {"a.z", "a.b.z", "a..z", "a.b.c.z"},
    "*": {"orders", "created", "order", "ordersx"},
    "*.*": {
        ".",
        "a.b",
        "a*.b",
        "ab.b",
        "a.z",
        "orders.eu",
        "orders.created",
        "Orders.eu",
        "zzz.yyy",
    },
    "a.*.z": {"a.b.z", "a..z"},
    "a*.b": {"a*.b"},
    "": {""},
    "Orders.#": {"Orders.eu"},
}
KEYS = [
    "orders.eu.created",
    "orders.created",
    "orders.eu.x.created",
    "orders",
    "orders.eu",
    "order",
    "ordersx",
    "created",
    "",
    ".",
    "a.b",
    "a*.b",
    "ab.b",
    "a.z",
    "a.b.z",
    "a..z",
    "a.b.c.z",
    "Orders.eu",
    "zzz.yyy",
]


async def test_topic_wildcards_follow_the_amqp_rules(client: AsyncClient) -> None:
    await client.declare_exchange("core.topic", "topic")
    queues = {}
    for i, pattern in enumerate(TOPIC_CASES):
        queues[pattern] = f"topic-{i}"
        await client.declare_queue(queues[pattern])
        await client.bind(queues[pattern], "core.topic", pattern)
    await client.declare_queue("topic-all")
    await client.bind("topic-all", "core.topic", "#")

    for key in KEYS:
        # "#" matches every key, the empty one included.
        assert await client.publish("core.topic", key, key.encode()) is True, key

    assert await bodies(client, "topic-all") == [k.encode() for k in KEYS]
    for pattern, expected in TOPIC_CASES.items():
        got = await bodies(client, queues[pattern])
        assert {b.decode() for b in got} == expected, pattern
        assert len(got) == len(expected), pattern


async def test_one_message_per_queue_whatever_number_of_bindings_match(
    client: AsyncClient,
) -> None:
    await client.declare_exchange("core.topic", "topic")
    await client.declare_queue("multi")
    for pattern in ("a.*", "*.b", "a.b", "#"):
        await client.bind("multi", "core.topic", pattern)
    assert await client.publish("core.topic", "a.b", b"once") is True
    assert await bodies(client, "multi") == [b"once"]


async def test_unbinding_one_binding_keeps_the_others_and_a_deleted_exchange_is_gone(
    client: AsyncClient,
) -> None:
    await client.declare_exchange("core.x", "direct")
    await client.declare_queue("qa")
    await client.declare_queue("qb")
    await client.bind("qa", "core.x", "k")
    await client.bind("qb", "core.x", "k")
    await client.bind("qa", "core.x", "other")
    await client.unbind("qa", "core.x", "k")
    with pytest.raises(NotFound):
        await client.unbind("qa", "core.x", "k")
    assert await client.publish("core.x", "k", b"1") is True  # still qb
    assert await client.publish("core.x", "other", b"2") is True  # qa's other binding
    assert await bodies(client, "qa") == [b"2"]
    assert await bodies(client, "qb") == [b"1"]

    await client.delete_exchange("core.x")
    with pytest.raises(NotFound):
        await client.publish("core.x", "k", b"x")
    with pytest.raises(NotFound):
        await client.bind("qa", "core.x", "k")
    with pytest.raises(NotFound):
        await client.delete_exchange("core.x")
    with pytest.raises(InvalidArgument):
        await client.delete_exchange("")
    # Redeclared, it starts without the old bindings.
    await client.declare_exchange("core.x", "direct")
    assert await client.publish("core.x", "k", b"x") is False
    assert await client.publish("core.x", "other", b"x") is False

    # Deleting a queue removes its bindings too.
    await client.bind("qa", "core.x", "k")
    await client.delete_queue("qa")
    assert await client.publish("core.x", "k", b"x") is False


async def test_an_unroutable_publish_is_refused_only_with_mandatory_and_a_missing_exchange_always(
    client: AsyncClient,
) -> None:
    await client.declare_exchange("core.fan", "fanout")
    await client.declare_exchange("core.dir", "direct")
    await client.declare_queue("bound")
    await client.bind("bound", "core.dir", "yes")
    # Unroutable without mandatory: confirmed as False, nothing stored.
    assert await client.publish("core.fan", "k", b"x") is False
    assert await client.publish("", "no-such-queue", b"x") is False
    # With mandatory: refused as Unroutable, connection stays usable.
    with pytest.raises(Unroutable):
        await client.publish("core.fan", "k", b"x", mandatory=True)
    with pytest.raises(Unroutable):
        await client.publish("", "no-such-queue", b"x", mandatory=True)
    with pytest.raises(Unroutable):
        await client.publish("core.dir", "no", b"x", mandatory=True)
    assert await client.publish("core.dir", "yes", b"m", mandatory=True) is True
    # A missing exchange is NotFound, mandatory or not.
    with pytest.raises(NotFound):
        await client.publish("core.missing", "k", b"x")
    with pytest.raises(NotFound):
        await client.publish("core.missing", "k", b"x", mandatory=True)
    results = await asyncio.gather(
        client.publish("core.dir", "yes", b"ok"),
        client.publish("core.missing", "k", b"x"),
        client.publish("core.dir", "no", b"x"),
        return_exceptions=True,
    )
    assert results[0] is True
    assert isinstance(results[1], NotFound)
    assert results[2] is False
    assert await bodies(client, "bound") == [b"m", b"ok"]
    assert not client.is_closed


async def test_redeclaring_with_different_settings_is_precondition_failed(
    client: AsyncClient,
) -> None:
    await client.declare_exchange("core.ex", "topic")
    with pytest.raises(PreconditionFailed):
        await client.declare_exchange("core.ex", "direct")
    with pytest.raises(PreconditionFailed):
        await client.declare_exchange("core.ex", "topic", durable=False)
    await client.declare_exchange("core.ex", "topic")

    opts: dict[str, Any] = {
        "lease": 5.0,
        "max_deliveries": 3,
        "dead_letter_queue": "dlq",
        "max_length": 10,
        "overflow": "drop_head",
        "message_ttl": 60.0,
    }
    await client.declare_queue("core.q", **opts)
    changes: list[dict[str, Any]] = [
        {"max_deliveries": 4},
        {"max_deliveries": None},
        {"dead_letter_queue": "other"},
        {"max_length": 11},
        {"overflow": "reject_publish"},
        {"message_ttl": 61.0},
        {"lease": 5.5},
    ]
    for change in changes:
        with pytest.raises(PreconditionFailed):
            await client.declare_queue("core.q", **{**opts, **change})
    with pytest.raises(PreconditionFailed):
        await client.declare_queue("core.q", False, **opts)
    await client.declare_queue("core.q", **opts)  # unchanged by the failed attempts

    await client.declare_queue("core.tq", durable=False)
    with pytest.raises(PreconditionFailed):
        await client.declare_queue("core.tq")
    await client.declare_queue("core.tq", durable=False)
