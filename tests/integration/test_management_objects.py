"""Declaring and deleting single queues, exchanges and bindings over HTTP
against a real broker, as rabbitmqadmin and Terraform's rabbitmq provider
do: 201 made, 204 equivalent, 400 different or not offered (named), the
frames' own permission rules, RabbitMQ queue arguments that behave as their
brokerd options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from test_management_api import (
    ADMIN,
    BOUND,
    MANAGER,
    MONITOR,
    add_user,
    call,
    get_json,
    mgmt,
    running,
)

import brokerd_client
import brokerd_protocol as bp
from brokerd.cli import build_server
from brokerd.config import Config

__all__ = ["mgmt"]  # the fixture, shared with test_management_api


async def _reason(reply: tuple[int, dict[str, str], bytes]) -> str:
    return str(json.loads(reply[2])["reason"])


async def test_a_queue_is_created_then_equivalent_then_refused_with_other_settings(
    mgmt: Any,
) -> None:
    _server, root, port = mgmt
    body = {"durable": True, "auto_delete": False, "arguments": {"x-message-ttl": 60000}}
    status, _, raw = await call(port, "PUT", "/api/queues/%2F/app.q", body)
    assert status == 201, raw
    assert (await root.queue_stats("app.q")).ready == 0
    shown = await get_json(port, "/api/queues/%2F/app.q")
    assert shown["durable"] is True and shown["arguments"]["message_ttl"] == 60.0
    status, _, raw = await call(port, "PUT", "/api/queues/%2F/app.q", body)
    assert status == 204, raw
    # The same queue as the protocol declares it is equivalent too.
    await root.declare_queue("app.q", message_ttl=60.0)
    reply = await call(port, "PUT", "/api/queues/%2F/app.q", {"arguments": {"x-max-length": 5}})
    assert reply[0] == 400
    assert "app.q" in await _reason(reply) and "different settings" in await _reason(reply)
    assert (await get_json(port, "/api/queues/%2F/app.q"))["arguments"]["max_length"] is None


async def test_rabbitmq_arguments_behave_as_the_brokerd_options_they_map_to(mgmt: Any) -> None:
    _server, root, port = mgmt
    status, _, raw = await call(port, "PUT", "/api/queues/%2F/app.dead", {"durable": True})
    assert status == 201, raw
    arguments = {
        "x-queue-type": "quorum",
        "x-max-length": 2,
        "x-overflow": "drop-head",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "app.dead",
        "x-delivery-limit": 4,
        "x-max-priority": 10,
        "x-expires": 3_600_000,
    }
    status, _, raw = await call(port, "PUT", "/api/queues/%2F/app.work", {"arguments": arguments})
    assert status == 201, raw
    shown = (await get_json(port, "/api/queues/%2F/app.work"))["arguments"]
    assert shown["max_length"] == 2 and shown["overflow"] == "drop_head"
    assert shown["dead_letter_queue"] == "app.dead"
    # RabbitMQ allows 4 failed deliveries: brokerd counts every one, so 5.
    assert shown["max_deliveries"] == 5
    assert shown["expires"] == 3600.0
    assert shown["max_priority"] == 10
    # As on RabbitMQ, the same queue with another x-max-priority is another queue.
    other = {**arguments, "x-max-priority": 5}
    reply = await call(port, "PUT", "/api/queues/%2F/app.work", {"arguments": other})
    assert reply[0] == 400 and "different settings" in await _reason(reply)
    for n in range(3):
        await root.publish("", "app.work", f"m{n}".encode())
    # drop-head: the oldest went to the dead-letter queue.
    assert (await root.queue_stats("app.work")).ready == 2
    assert (await root.queue_stats("app.dead")).ready == 1
    status, _, raw = await call(port, "POST", "/api/queues/%2F/app.dead/get", {"count": 5})
    assert status == 200 and [m["payload"] for m in json.loads(raw)] == ["m0"]


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"x-queue-type": "stream"}, "stream"),
        ({"x-overflow": "reject-publish-dlx"}, "x-overflow"),
        ({"x-dead-letter-exchange": "dlx"}, "x-dead-letter-exchange"),
        ({"x-single-active-consumer": True}, "x-single-active-consumer"),
        ({"x-max-length-bytes": 1024}, "x-max-length-bytes"),
        ({"x-message-ttl": -1}, "x-message-ttl"),
        ({"lease": 1, "x-made-up": 1}, "x-made-up"),
        ({"message_ttl": 1, "x-message-ttl": 1000}, "message_ttl"),
    ],
)
async def test_arguments_brokerd_cannot_honour_are_refused_by_name(
    mgmt: Any, arguments: dict[str, Any], named: str
) -> None:
    _server, _root, port = mgmt
    reply = await call(port, "PUT", "/api/queues/%2F/app.no", {"arguments": arguments})
    assert reply[0] == 400
    assert named in await _reason(reply)
    status, _, _ = await call(port, "GET", "/api/queues/%2F/app.no")
    assert status == 404


async def test_exchanges_are_declared_checked_and_deleted_if_unused(mgmt: Any) -> None:
    _server, root, port = mgmt
    status, _, raw = await call(port, "PUT", "/api/exchanges/%2F/app.ex", {"type": "topic"})
    assert status == 201, raw
    status, _, _ = await call(port, "PUT", "/api/exchanges/%2F/app.ex", {"type": "topic"})
    assert status == 204
    reply = await call(port, "PUT", "/api/exchanges/%2F/app.ex", {"type": "fanout"})
    assert reply[0] == 400 and "topic" in await _reason(reply)
    refused = [
        ({"type": "headers"}, "headers"),
        ({"type": "direct", "auto_delete": True}, "auto-delete"),
        ({"type": "direct", "internal": True}, "internal"),
        ({"type": "direct", "arguments": {"alternate-exchange": "ae"}}, "alternate-exchange"),
        ({}, "type"),
    ]
    for body, named in refused:
        reply = await call(port, "PUT", "/api/exchanges/%2F/app.other", body)
        assert reply[0] == 400 and named in await _reason(reply), body
    assert (await call(port, "GET", "/api/exchanges/%2F/app.other"))[0] == 404
    reply = await call(port, "PUT", "/api/exchanges/%2F/amq.default", {"type": "direct"})
    assert reply[0] == 400
    await root.declare_queue("app.q")
    await root.bind("app.q", "app.ex", "a.#")
    reply = await call(port, "DELETE", "/api/exchanges/%2F/app.ex?if-unused=true")
    assert reply[0] == 400 and "in use" in await _reason(reply)
    status, _, _ = await call(port, "DELETE", "/api/exchanges/%2F/app.ex")
    assert status == 204
    assert (await call(port, "GET", "/api/exchanges/%2F/app.ex"))[0] == 404
    assert await get_json(port, "/api/bindings/%2F") == []
    assert (await call(port, "DELETE", "/api/exchanges/%2F/app.ex"))[0] == 404


async def test_a_binding_is_made_listed_found_by_its_location_and_deleted(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_exchange("app.ex", "direct")
    await root.declare_queue("app.q")
    pair = "/api/bindings/%2F/e/app.ex/q/app.q"
    for key in ("", "plain", "a b/c~+%"):
        status, headers, raw = await call(port, "POST", pair, {"routing_key": key})
        assert status == 201, raw
        location = headers["location"]
        assert location.startswith(pair + "/")
        status, _, raw = await call(port, "GET", location)
        assert status == 200, (key, raw)
        row = json.loads(raw)
        assert row["routing_key"] == key and row["destination"] == "app.q"
        assert location.endswith("/" + quote(row["properties_key"], safe=""))
        assert await root.publish("app.ex", key, b"routed")
    assert (await root.queue_stats("app.q")).ready == 3
    assert sorted(r["routing_key"] for r in await get_json(port, pair)) == ["", "a b/c~+%", "plain"]
    # Binding again is 201 and changes nothing (RabbitMQ's answer).
    assert (await call(port, "POST", pair, {"routing_key": "plain"}))[0] == 201
    assert len(await get_json(port, pair)) == 3
    assert [r["properties_key"] for r in await get_json(port, pair) if not r["routing_key"]] == [
        "~"
    ]
    status, _, _ = await call(port, "DELETE", pair + "/plain")
    assert status == 204
    assert (await call(port, "GET", pair + "/plain"))[0] == 404
    assert (await call(port, "DELETE", pair + "/plain"))[0] == 404
    assert await root.publish("app.ex", "plain", b"unrouted") is False
    reply = await call(port, "POST", pair, {"routing_key": "k", "arguments": {"x-match": "all"}})
    assert reply[0] == 400 and "arguments" in await _reason(reply)
    for path in (
        "/api/bindings/%2F/e/nope/q/app.q",
        "/api/bindings/%2F/e/app.ex/q/nope",
    ):
        assert (await call(port, "POST", path, {"routing_key": "k"}))[0] == 404, path
    reply = await call(port, "POST", "/api/bindings/%2F/e/amq.default/q/app.q", {})
    assert reply[0] == 400
    reply = await call(port, "POST", "/api/bindings/%2F/e/app.ex/e/app.ex", {})
    assert reply[0] == 400 and "exchanges to exchanges" in await _reason(reply)


async def test_queue_and_exchange_binding_lists(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_exchange("app.ex", "topic")
    await root.declare_queue("app.q")
    await root.declare_queue("app.r")
    await root.bind("app.q", "app.ex", "q.#")
    await root.bind("app.r", "app.ex", "r.#")
    rows = await get_json(port, "/api/queues/%2F/app.q/bindings")
    assert [(r["source"], r["routing_key"]) for r in rows] == [("", "app.q"), ("app.ex", "q.#")]
    rows = await get_json(port, "/api/exchanges/%2F/app.ex/bindings/source")
    assert [(r["destination"], r["routing_key"]) for r in rows] == [
        ("app.q", "q.#"),
        ("app.r", "r.#"),
    ]
    assert await get_json(port, "/api/exchanges/%2F/app.ex/bindings/destination") == []
    rows = await get_json(port, "/api/exchanges/%2F/amq.default/bindings/source")
    assert [r["destination"] for r in rows] == ["app.q", "app.r"]
    assert (await call(port, "GET", "/api/queues/%2F/nope/bindings"))[0] == 404
    assert (await call(port, "GET", "/api/exchanges/%2F/nope/bindings/source"))[0] == 404


async def test_a_queue_delete_honours_if_empty_and_if_unused(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.q")
    await root.publish("", "app.q", b"x")
    reply = await call(port, "DELETE", "/api/queues/%2F/app.q?if-empty=true")
    assert reply[0] == 400 and "not empty" in await _reason(reply)
    await root.purge_queue("app.q")
    consumer = await root.consume("app.q")
    reply = await call(port, "DELETE", "/api/queues/%2F/app.q?if-unused=true")
    assert reply[0] == 400 and "consumer" in await _reason(reply)
    status, _, _ = await call(port, "DELETE", "/api/queues/%2F/app.q?if-empty=true")
    assert status == 204
    del consumer
    assert (await call(port, "GET", "/api/queues/%2F/app.q"))[0] == 404
    assert (await call(port, "DELETE", "/api/queues/%2F/app.q"))[0] == 404


async def test_changes_need_the_permissions_their_frames_need(mgmt: Any) -> None:
    server, root, port = mgmt
    # configure anything, write app.* queues, read src.* exchanges.
    binder = ("binder", "binder-pw")
    await add_user(root, *binder, ["management"], (".*", "^app\\.", "^src\\."))
    await root.declare_exchange("src.ex", "direct")
    await root.declare_exchange("other.ex", "direct")
    await root.declare_queue("app.q")
    await root.declare_queue("other.q")
    ok = await call(port, "POST", "/api/bindings/%2F/e/src.ex/q/app.q", {}, user=binder)
    assert ok[0] == 201
    reply = await call(port, "POST", "/api/bindings/%2F/e/other.ex/q/app.q", {}, user=binder)
    assert reply[0] == 403 and "read permission" in await _reason(reply)
    reply = await call(port, "POST", "/api/bindings/%2F/e/src.ex/q/other.q", {}, user=binder)
    assert reply[0] == 403 and "write permission" in await _reason(reply)
    # MANAGER configures ^app\. only; monitoring changes nothing.
    assert (await call(port, "PUT", "/api/queues/%2F/app.m", {}, user=MANAGER))[0] == 201
    assert (await call(port, "PUT", "/api/queues/%2F/other.m", {}, user=MANAGER))[0] == 403
    ex = {"type": "fanout"}
    assert (await call(port, "PUT", "/api/exchanges/%2F/other.x", ex, user=MANAGER))[0] == 403
    assert (await call(port, "DELETE", "/api/queues/%2F/other.q", user=MANAGER))[0] == 403
    assert (await call(port, "PUT", "/api/queues/%2F/app.w", {}, user=MONITOR))[0] == 403
    assert "app.w" not in {q for q in server.broker.queues}
    assert (await root.queue_stats("other.q")).ready == 0


async def test_a_cookie_session_declares_only_with_its_csrf_token(mgmt: Any) -> None:
    _server, _root, port = mgmt
    status, headers, body = await call(
        port, "POST", "/api/login", {"username": ADMIN[0], "password": ADMIN[1]}, user=None
    )
    assert status == 200
    session = {"Cookie": headers["set-cookie"].split(";")[0]}
    csrf = json.loads(body)["csrf_token"]
    reply = await call(port, "PUT", "/api/queues/%2F/app.c", {}, user=None, headers=session)
    assert reply[0] == 403 and "CSRF" in await _reason(reply)
    assert (await call(port, "GET", "/api/queues/%2F/app.c"))[0] == 404
    with_token = {**session, "X-CSRF-Token": csrf}
    status, _, _ = await call(
        port, "PUT", "/api/queues/%2F/app.c", {}, user=None, headers=with_token
    )
    assert status == 201


async def test_queues_in_a_vhost_name_their_dead_letter_queue_in_that_vhost(mgmt: Any) -> None:
    server, root, port = mgmt
    await root.call(lambda req: bp.AddVhost(req, "orders"))
    await root.call(lambda req: bp.SetPermissions(req, "admin", "orders", ".*", ".*", ".*"))
    assert (await call(port, "PUT", "/api/queues/orders/dead", {}))[0] == 201
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
    status, _, raw = await call(port, "PUT", "/api/queues/orders/jobs", {"arguments": arguments})
    assert status == 201, raw
    assert (await get_json(port, "/api/queues/orders/jobs"))["dead_letter_queue"] == "dead"
    reply = await call(port, "PUT", "/api/queues/orders/jobs", {"durable": False})
    assert reply[0] == 400
    assert "'jobs'" in await _reason(reply) and "\x1f" not in await _reason(reply)
    assert (await call(port, "GET", "/api/queues/%2F/jobs"))[0] == 404
    other = await brokerd_client.connect(
        f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}/orders", timeout=BOUND
    )
    try:
        assert (await other.queue_stats("jobs")).ready == 0
    finally:
        await other.close()


def _rabbitmq_export() -> dict[str, Any]:
    """What RabbitMQ 3.13 exports for a quorum queue, a classic one with
    dead-lettering, a topic exchange and a binding."""
    return {
        "rabbit_version": "3.13.7",
        "vhosts": [{"name": "/"}],
        "queues": [
            {
                "name": "orders",
                "vhost": "/",
                "durable": True,
                "auto_delete": False,
                "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 2},
            },
            {
                "name": "orders.dlq",
                "vhost": "/",
                "durable": True,
                "auto_delete": False,
                "arguments": {"x-queue-type": "classic"},
            },
            {
                "name": "mail",
                "vhost": "/",
                "durable": True,
                "auto_delete": False,
                "arguments": {
                    "x-queue-type": "classic",
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": "orders.dlq",
                    "x-message-ttl": 1500,
                },
            },
        ],
        "exchanges": [
            {
                "name": "events",
                "vhost": "/",
                "type": "topic",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
        ],
        "bindings": [
            {
                "source": "events",
                "vhost": "/",
                "destination": "orders",
                "destination_type": "queue",
                "routing_key": "order.*",
                "arguments": {},
            }
        ],
    }


async def test_a_rabbitmq_export_imports_and_brokerds_export_imports_again(mgmt: Any) -> None:
    _server, root, port = mgmt
    status, _, raw = await call(port, "POST", "/api/definitions", _rabbitmq_export())
    assert status == 204, raw
    orders = await get_json(port, "/api/queues/%2F/orders")
    assert orders["arguments"]["max_deliveries"] == 3
    mail = await get_json(port, "/api/queues/%2F/mail")
    assert mail["dead_letter_queue"] == "orders.dlq" and mail["arguments"]["message_ttl"] == 1.5
    assert await root.publish("events", "order.new", b"o")
    assert (await root.queue_stats("orders")).ready == 1
    exported = await get_json(port, "/api/definitions")
    async with running(users=False) as (_server2, _root2, port2):
        status, _, raw = await call(port2, "POST", "/api/definitions", exported, user=None)
        assert status == 204, raw
        copy = await get_json(port2, "/api/definitions", user=ADMIN)
        for key in ("queues", "exchanges", "bindings"):
            assert copy[key] == exported[key], key
    # The same document again is equivalent; RabbitMQ's form of it too.
    assert (await call(port, "POST", "/api/definitions", exported))[0] == 204
    assert (await call(port, "POST", "/api/definitions", _rabbitmq_export()))[0] == 204


async def test_an_import_with_arguments_brokerd_does_not_offer_applies_nothing(mgmt: Any) -> None:
    _server, _root, port = mgmt
    document = _rabbitmq_export()
    document["queues"].append(
        {"name": "log", "vhost": "/", "durable": True, "arguments": {"x-queue-type": "stream"}}
    )
    document["exchanges"].append(
        {"name": "ae", "vhost": "/", "type": "fanout", "arguments": {"alternate-exchange": "x"}}
    )
    reply = await call(port, "POST", "/api/definitions", document)
    assert reply[0] == 400
    reason = await _reason(reply)
    assert "'log'" in reason and "stream" in reason
    assert "'ae'" in reason and "alternate-exchange" in reason and "nothing was applied" in reason
    assert (await call(port, "GET", "/api/queues/%2F/orders"))[0] == 404


async def test_what_http_declares_is_stored_and_what_it_deletes_stays_gone(tmp_path: Path) -> None:
    config = Config(
        host="127.0.0.1", port=0, data_dir=str(tmp_path), metrics_port=0, http_port=0
    ).validate()
    server = build_server(config)
    await server.start()
    try:
        port = server.management.port
        assert port
        arguments = {
            "x-message-ttl": 5000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dlq",
        }
        for path, body in (
            ("/api/queues/%2F/dlq", {}),
            ("/api/queues/%2F/work", {"arguments": arguments}),
            ("/api/queues/%2F/gone", {}),
            ("/api/exchanges/%2F/jobs", {"type": "topic"}),
        ):
            assert (await call(port, "PUT", path, body, user=None))[0] == 201, path
        pair = "/api/bindings/%2F/e/jobs/q/work"
        assert (await call(port, "POST", pair, {"routing_key": "a.#"}, user=None))[0] == 201
        assert (await call(port, "POST", pair, {"routing_key": "b.#"}, user=None))[0] == 201
        assert (await call(port, "DELETE", pair + "/b.%2523", user=None))[0] == 204
        assert (await call(port, "DELETE", "/api/queues/%2F/gone", user=None))[0] == 204
    finally:
        await server.stop()
    again = build_server(config)
    await again.start()
    try:
        port = again.management.port
        assert port
        names = [q["name"] for q in await get_json(port, "/api/queues/%2F", user=None)]
        assert names == ["dlq", "work"]
        work = await get_json(port, "/api/queues/%2F/work", user=None)
        assert work["arguments"]["message_ttl"] == 5.0 and work["dead_letter_queue"] == "dlq"
        rows = await get_json(port, pair, user=None)
        assert [r["routing_key"] for r in rows] == ["a.#"]
        assert (await get_json(port, "/api/exchanges/%2F/jobs", user=None))["type"] == "topic"
    finally:
        await again.stop()
