"""POST /api/definitions with vhosts, users and permissions against a real
broker: what is imported logs in with its rights, a bad item refuses the
whole document before anything is applied, only administrators import, and
no export ever carries a password."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_management_api import ADMIN, BOUND, MANAGER, MONITOR, call, get_json, mgmt, running

import brokerd_client
from brokerd.auth.passwords import hash_password, verify

__all__ = ["mgmt"]  # the fixture, shared with test_management_api


def _document() -> dict[str, Any]:
    return {
        "vhosts": [{"name": "billing", "description": "ignored"}],
        "users": [
            # RabbitMQ before 3.12: tags as a comma-separated string.
            {"name": "ivy", "password": "ivy-pw", "tags": "management,monitoring"},
            {
                "name": "jay",
                "password_hash": hash_password("jay-pw"),
                "hashing_algorithm": "brokerd_scrypt",
                "tags": [],
            },
        ],
        "permissions": [
            {"user": "jay", "vhost": "billing", "configure": ".*", "write": ".*", "read": ".*"},
            {"user": "ivy", "vhost": "/", "configure": "", "write": "", "read": "^app\\."},
        ],
        "exchanges": [{"name": "invoices", "vhost": "billing", "type": "topic", "durable": True}],
        "queues": [{"name": "due", "vhost": "billing", "durable": True, "arguments": {}}],
        "bindings": [
            {
                "source": "invoices",
                "vhost": "billing",
                "destination": "due",
                "destination_type": "queue",
                "routing_key": "due.#",
            }
        ],
    }


async def test_imported_vhosts_users_and_permissions_log_in_with_their_rights(mgmt: Any) -> None:
    server, _root, port = mgmt
    status, _, body = await call(port, "POST", "/api/definitions", _document())
    assert status == 204, body
    assert server.vhosts.exists("billing")
    assert server.users.get("ivy").tags == frozenset({"management", "monitoring"})
    assert verify("ivy-pw", server.users.get("ivy").password_hash)
    # jay's hash was stored as given, and its permission on billing applies.
    jay = await brokerd_client.connect(
        f"brokerd://jay:jay-pw@127.0.0.1:{server.port}/billing", timeout=BOUND
    )
    try:
        await jay.publish("invoices", "due.today", b"pay")
        assert (await jay.queue_stats("due")).ready == 1
    finally:
        await jay.close()
    # ivy reads app.* on "/" over HTTP (management tag), but cannot see billing.
    status, _, _ = await call(port, "GET", "/api/queues/billing", user=("ivy", "ivy-pw"))
    assert status == 200  # monitoring reads everything
    assert server.users.permission("ivy", "/").read == "^app\\."
    assert server.users.permission("ivy", "billing") is None


async def test_the_export_never_carries_a_password(mgmt: Any) -> None:
    _server, _root, port = mgmt
    status, _, body = await call(port, "POST", "/api/definitions", _document())
    assert status == 204, body
    status, _, raw = await call(port, "GET", "/api/definitions")
    assert status == 200
    assert b"ivy-pw" not in raw
    exported = json.loads(raw)
    for user in exported["users"]:
        assert "password" not in user
        assert user["password_hash"].startswith("scrypt$")
        assert user["hashing_algorithm"] == "brokerd_scrypt"
    assert {"name": "billing"} in exported["vhosts"]


async def test_a_round_trip_gives_the_same_users_and_passwords_on_another_broker(
    mgmt: Any,
) -> None:
    _server, _root, port = mgmt
    assert (await call(port, "POST", "/api/definitions", _document()))[0] == 204
    exported = await get_json(port, "/api/definitions")
    async with running(users=False) as (server2, _root2, port2):
        status, _, body = await call(port2, "POST", "/api/definitions", exported, user=None)
        assert status == 204, body
        again = await get_json(port2, "/api/definitions", user=ADMIN)
        assert (await call(port2, "GET", "/api/overview", user=("ivy", "ivy-pw")))[0] == 200
        for key in ("vhosts", "users", "permissions", "exchanges", "queues", "bindings"):
            assert again[key] == exported[key], key
        assert server2.users.get("admin") is not None


async def test_one_bad_item_refuses_the_whole_document_naming_each(mgmt: Any) -> None:
    server, _root, port = mgmt
    doc = _document()
    doc["users"].append(
        {
            "name": "rabbit",
            "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ["administrator"],
        }
    )
    doc["users"].append({"name": "wiz", "password": "w", "tags": ["policymaker"]})
    doc["permissions"].append(
        {"user": "nobody", "vhost": "/", "configure": "", "write": "", "read": ""}
    )
    doc["permissions"].append(
        {"user": "ivy", "vhost": "billing", "configure": "(", "write": "", "read": ""}
    )
    doc["queues"].append({"name": "lost", "vhost": "nowhere", "arguments": {}})
    doc["queues"].append({"name": "odd", "arguments": {"x-queue-type": "stream"}})
    doc["bindings"].append({"source": "missing", "destination": "due", "vhost": "billing"})
    status, _, body = await call(port, "POST", "/api/definitions", doc)
    assert status == 400, body
    reason = json.loads(body)["reason"]
    for named in (
        "user 'rabbit'",
        "rabbit_password_hashing_sha256",
        "give a password instead",
        "user 'wiz'",
        "policymaker",
        "permission of 'nobody'",
        "permission of 'ivy' on 'billing'",
        "queue 'lost': no vhost 'nowhere'",
        "queue 'odd'",
        "x-queue-type",
        "binding 'missing' -> 'due'",
        "nothing was applied",
    ):
        assert named in reason, (named, reason)
    assert not server.vhosts.exists("billing")
    assert server.users.get("ivy") is None and server.users.get("jay") is None
    assert server.users.get("rabbit") is None
    assert not any(name.endswith("due") for name in server.broker.queues)


@pytest.mark.parametrize(
    "bad",
    [
        {"users": "not a list"},
        {"users": [{"name": "x", "tags": []}]},  # a new user needs a password
        {"users": [{"name": "x", "password": "p", "password_hash": "h"}]},
        {"users": [{"name": "x", "password_hash": "not-a-hash"}]},
        {"users": [{"name": "x", "password": ""}]},
        {"users": [{"name": "x", "password": "p"}, {"name": "x", "password": "q"}]},
        {"vhosts": [{"name": ""}]},
        {"permissions": [{"user": "admin", "vhost": "/", "configure": ".*"}]},
        {"exchanges": [{"name": "e", "type": "headers"}]},
    ],
)
async def test_bad_items_are_400_and_change_nothing(mgmt: Any, bad: dict[str, Any]) -> None:
    server, _root, port = mgmt
    users_before = dict(server.users.users)
    status, _, body = await call(port, "POST", "/api/definitions", bad)
    assert status == 400, (bad, body)
    assert json.loads(body)["reason"]
    assert server.users.users == users_before
    assert "e" not in server.broker.exchanges


async def test_too_many_plaintext_passwords_are_refused_before_any_is_hashed(
    mgmt: Any,
) -> None:
    server, _root, port = mgmt
    doc = {"users": [{"name": f"u{i}", "password": "pw", "tags": ""} for i in range(101)]}
    status, _, body = await call(port, "POST", "/api/definitions", doc)
    assert status == 400
    assert "at most 100 per import" in json.loads(body)["reason"]
    assert server.users.get("u0") is None


async def test_an_existing_user_is_updated_and_keeps_its_password_without_one(
    mgmt: Any,
) -> None:
    server, _root, port = mgmt
    stored = server.users.get("watcher").password_hash
    doc = {"users": [{"name": "watcher", "tags": ["monitoring", "management"]}]}
    status, _, body = await call(port, "POST", "/api/definitions", doc)
    assert status == 204, body
    assert server.users.get("watcher").password_hash == stored
    assert server.users.get("watcher").tags == frozenset({"monitoring", "management"})
    # With a password, as RabbitMQ's import does: the user is replaced.
    doc = {"users": [{"name": "watcher", "password": "new-pw", "tags": "monitoring"}]}
    assert (await call(port, "POST", "/api/definitions", doc))[0] == 204
    status, _, _ = await call(port, "GET", "/api/overview", user=MONITOR)
    assert status == 401
    status, _, _ = await call(port, "GET", "/api/overview", user=("watcher", "new-pw"))
    assert status == 200


async def test_a_vhost_path_puts_permissions_and_topology_in_that_vhost(mgmt: Any) -> None:
    server, _root, port = mgmt
    assert (await call(port, "PUT", "/api/vhosts/billing"))[0] == 201
    doc = {
        "users": [{"name": "kim", "password": "kim-pw", "tags": ""}],
        "permissions": [{"user": "kim", "configure": ".*", "write": ".*", "read": ".*"}],
        "queues": [{"name": "due", "arguments": {}}],
    }
    status, _, body = await call(port, "POST", "/api/definitions/billing", doc)
    assert status == 204, body
    assert server.users.permission("kim", "billing") is not None
    assert server.users.permission("kim", "/") is None
    kim = await brokerd_client.connect(
        f"brokerd://kim:kim-pw@127.0.0.1:{server.port}/billing", timeout=BOUND
    )
    try:
        assert (await kim.queue_stats("due")).ready == 0
    finally:
        await kim.close()


async def test_only_administrators_import_definitions(mgmt: Any) -> None:
    server, _root, port = mgmt
    for who in (MONITOR, MANAGER):
        for path in ("/api/definitions", "/api/definitions/%2F"):
            status, _, _ = await call(port, "POST", path, _document(), user=who)
            assert status == 403, (who, path)
            status, _, _ = await call(port, "GET", path, user=who)
            assert status == 403, (who, path)
    assert server.users.get("ivy") is None
    assert not server.vhosts.exists("billing")
    status, _, _ = await call(port, "POST", "/api/definitions", _document(), user=ADMIN)
    assert status == 204


async def test_brokerctl_and_http_definitions_are_one_format(mgmt: Any) -> None:
    """A brokerctl export imports over HTTP, and an HTTP export with brokerctl."""
    from brokerd_client.ctl import definitions as ctl_definitions

    server, root, port = mgmt
    doc = _document()
    all_of = {"configure": ".*", "write": ".*", "read": ".*"}
    doc["permissions"].append({"user": "admin", "vhost": "billing", **all_of})
    assert (await call(port, "POST", "/api/definitions", doc))[0] == 204

    def connect_to(url: str) -> Any:
        async def connect(vhost: str) -> brokerd_client.AsyncClient:
            path = vhost.replace("/", "%2F")
            return await brokerd_client.connect(f"{url}/{path}", timeout=BOUND)

        return connect

    admin_url = f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}"
    by_ctl = await ctl_definitions.export(root, connect_to(admin_url))
    by_http = await get_json(port, "/api/definitions")
    async with running(users=False) as (_s2, _root2, port2):
        status, _, body = await call(port2, "POST", "/api/definitions", by_ctl, user=None)
        assert status == 204, body
        copy = await get_json(port2, "/api/definitions")
        for key in ("vhosts", "users", "permissions", "exchanges", "queues", "bindings"):
            assert copy[key] == by_http[key], key
    async with running(users=False) as (server3, root3, _port3):
        # Users come first: the per-vhost connections then log in as admin.
        url3 = f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server3.port}"
        counts = await ctl_definitions.import_(root3, connect_to(url3), by_http)
        assert counts["users"] == 6 and counts["permissions"] == len(by_http["permissions"])
        assert verify("jay-pw", server3.users.get("jay").password_hash)
        assert server3.vhosts.exists("billing")


async def test_what_brokerd_has_no_equivalent_for_is_named_not_dropped_silently(
    mgmt: Any,
) -> None:
    """A RabbitMQ export's policies, parameters and topic permissions: the rest
    is imported, and both importers say which of those were not."""
    from brokerd_client.ctl import definitions as ctl_definitions

    server, root, port = mgmt
    doc = _document()
    all_of = {"configure": ".*", "write": ".*", "read": ".*"}
    doc["permissions"].append({"user": "admin", "vhost": "billing", **all_of})
    doc["policies"] = [
        {"vhost": "billing", "name": "ttl", "pattern": "^due$", "apply-to": "queues",
         "definition": {"message-ttl": 60000}, "priority": 0},
    ]  # fmt: skip
    doc["topic_permissions"] = [{"user": "ivy", "vhost": "/", "exchange": "amq.topic",
                                 "write": ".*", "read": ".*"}]  # fmt: skip
    status, _, body = await call(port, "POST", "/api/definitions", doc)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["not_imported"] == {
        "policies": ["billing ttl"],
        "topic_permissions": ["/ ivy on exchange 'amq.topic'"],
    }
    assert "message-ttl" not in json.dumps(await get_json(port, "/api/queues/billing/due"))
    assert server.users.get("ivy") is not None  # the rest was imported

    async def connect(vhost: str) -> brokerd_client.AsyncClient:
        path = vhost.replace("/", "%2F")
        url = f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}/{path}"
        return await brokerd_client.connect(url, timeout=BOUND)

    counts = await ctl_definitions.import_(root, connect, doc)
    assert counts["not_imported"] == answer["not_imported"]
