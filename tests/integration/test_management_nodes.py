"""RabbitMQ's /api/nodes, /api/channels, the per-user and per-vhost
permission lists, users without permissions and bulk-delete, against a real
broker: real values, RabbitMQ's field names, and the tag refusals."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from clientkit import take
from test_management_api import (
    ADMIN,
    BOUND,
    MANAGER,
    MONITOR,
    NOTAG,
    call,
    get_json,
    mgmt,
    running,
)

import brokerd_client

__all__ = ["mgmt"]  # the fixture, shared with test_management_api


async def test_the_node_reports_its_memory_disk_descriptors_and_sockets(mgmt: Any) -> None:
    server, root, port = mgmt
    await root.declare_queue("app.mem", durable=False)
    await root.publish("", "app.mem", b"x" * 1000)
    nodes = await get_json(port, "/api/nodes", user=MONITOR)
    assert len(nodes) == 1
    node = nodes[0]
    overview = await get_json(port, "/api/overview")
    assert node["name"] == overview["node"]
    assert node["running"] is True
    assert node["os_pid"] == str(os.getpid())
    assert node["uptime"] > 0  # milliseconds, as RabbitMQ's
    memory = server.broker.memory
    assert node["mem_used"] >= 1000 and node["mem_used"] == memory.used
    assert node["mem_limit"] == memory.limit
    assert node["mem_alarm"] is False
    assert node["rss_bytes"] > 0
    assert node["fd_used"] > node["sockets_used"]  # listening sockets, the store, ...
    assert node["fd_total"] is None or node["fd_total"] >= node["fd_used"]
    assert node["sockets_used"] == 1  # the root client's connection
    assert node["sockets_total"] == server.config.max_connections
    disk = server.disk
    assert node["disk_free_alarm"] is bool(disk is not None and disk.alarm)
    assert node["disk_free_limit"] == (disk.limit if disk is not None else None)
    one = await get_json(port, f"/api/nodes/{node['name']}", user=ADMIN)
    assert one["name"] == node["name"] and one["mem_limit"] == node["mem_limit"]
    status, _, _ = await call(port, "GET", "/api/nodes/rabbit@elsewhere")
    assert status == 404


async def test_the_node_shows_the_memory_alarm() -> None:
    async with running() as (server, _root, port):
        server.broker.memory.used = server.broker.memory.limit  # the alarm's condition
        try:
            node = (await get_json(port, "/api/nodes"))[0]
        finally:
            server.broker.memory.used = 0
        assert node["mem_alarm"] is True and node["mem_used"] >= node["mem_limit"]


async def test_nodes_need_monitoring_or_administrator(mgmt: Any) -> None:
    _server, _root, port = mgmt
    for path in ("/api/nodes", "/api/nodes/x"):
        status, _, body = await call(port, "GET", path, user=MANAGER)
        assert status == 403, (path, body)
        status, _, _ = await call(port, "GET", path, user=NOTAG)
        assert status == 401
        status, _, _ = await call(port, "GET", path, user=None)
        assert status == 401


async def test_each_connection_is_one_channel_with_its_consumers(mgmt: Any) -> None:
    server, root, port = mgmt
    await root.declare_queue("app.work")
    for _ in range(3):
        await root.publish("", "app.work", b"job")
    manager = await brokerd_client.connect(
        f"brokerd://{MANAGER[0]}:{MANAGER[1]}@127.0.0.1:{server.port}", timeout=BOUND
    )
    try:
        consumer = await manager.consume("app.work", prefetch=2)
        await take(consumer, 2)
        channels = await get_json(port, "/api/channels", user=MONITOR)
        connections = await get_json(port, "/api/connections", user=MONITOR)
        assert len(channels) == len(connections) == 2
        by_user = {c["user"]: c for c in channels}
        mine = by_user["manager"]
        conn = next(c for c in connections if c["user"] == "manager")
        assert mine["name"] == f"{conn['name']} (1)"
        assert mine["connection_details"]["name"] == conn["name"]
        assert mine["connection_details"]["peer_port"] == conn["peer_port"]
        assert mine["vhost"] == "/"
        assert mine["consumer_count"] == 1
        assert mine["prefetch_count"] == 2
        assert mine["messages_unacknowledged"] == 2
        assert mine["state"] == "running"
        assert by_user["admin"]["consumer_count"] == 0
        assert by_user["admin"]["prefetch_count"] == 0
        # A management user sees its own channel only; RabbitMQ's list parameters apply.
        own = await get_json(port, "/api/channels", user=MANAGER)
        assert [c["user"] for c in own] == ["manager"]
        picked = await get_json(port, "/api/channels?columns=name,user", user=MONITOR)
        assert all(set(c) == {"name", "user"} for c in picked)
    finally:
        await manager.close()


async def test_permission_lists_per_user_and_per_vhost(mgmt: Any) -> None:
    _server, _root, port = mgmt
    assert (await call(port, "PUT", "/api/vhosts/billing"))[0] == 201
    perm = {"configure": "", "write": "", "read": ".*"}
    assert (await call(port, "PUT", "/api/permissions/billing/manager", perm))[0] == 201
    rows = await get_json(port, "/api/users/manager/permissions")
    assert rows == [
        {"user": "manager", "vhost": "/", "configure": "^app\\.", "write": "^app\\.",
         "read": "^app\\."},
        {"user": "manager", "vhost": "billing", **perm},
    ]  # fmt: skip
    rows = await get_json(port, "/api/vhosts/billing/permissions")
    assert rows == [{"user": "manager", "vhost": "billing", **perm}]
    assert {r["user"] for r in await get_json(port, "/api/vhosts/%2F/permissions")} == {
        "admin",
        "manager",
        "plain",
    }
    assert await get_json(port, "/api/users/watcher/permissions") == []
    status, _, _ = await call(port, "GET", "/api/users/nobody/permissions")
    assert status == 404
    status, _, _ = await call(port, "GET", "/api/vhosts/nowhere/permissions")
    assert status == 404


async def test_users_without_permissions_and_bulk_delete(mgmt: Any) -> None:
    server, _root, port = mgmt
    url = f"127.0.0.1:{server.port}"
    for name in ("u1", "u2"):
        body = {"password": f"{name}-pw", "tags": ""}
        assert (await call(port, "PUT", f"/api/users/{name}", body))[0] == 201
    without = await get_json(port, "/api/users/without-permissions")
    assert [u["name"] for u in without] == ["u1", "u2", "watcher"]
    assert without[0] == {"name": "u1", "tags": [], "hashing_algorithm": "scrypt"}
    # Deleting closes the user's connections, drops its permissions; unknown names are skipped.
    perm = {"configure": ".*", "write": ".*", "read": ".*"}
    assert (await call(port, "PUT", "/api/permissions/%2F/u1", perm))[0] == 201
    u1 = await brokerd_client.connect(f"brokerd://u1:u1-pw@{url}", timeout=BOUND)
    try:
        status, _, body = await call(
            port, "POST", "/api/users/bulk-delete", {"users": ["u1", "u2", "ghost"]}
        )
        assert status == 204, body
        await asyncio.wait_for(u1.wait_closed(), BOUND)
    finally:
        await u1.close()
    assert server.users.get("u1") is None and server.users.get("u2") is None
    assert ("u1", "/") not in server.users.permissions
    assert server.users.get("watcher") is not None


async def test_bad_bulk_deletes_are_400_and_delete_nothing(mgmt: Any) -> None:
    server, _root, port = mgmt
    for body in ({"users": "watcher"}, {"users": ["watcher", 7]}, {}, ["watcher"]):
        status, _, reply = await call(port, "POST", "/api/users/bulk-delete", body)
        assert status == 400, (body, reply)
        assert json.loads(reply)["reason"]
    assert server.users.get("watcher") is not None


async def test_only_administrators_list_permissions_and_delete_users(mgmt: Any) -> None:
    server, _root, port = mgmt
    reads = (
        "/api/users/without-permissions",
        "/api/users/admin/permissions",
        "/api/vhosts/%2F/permissions",
    )
    for who in (MONITOR, MANAGER):
        for path in reads:
            status, _, _ = await call(port, "GET", path, user=who)
            assert status == 403, (who, path)
        status, _, _ = await call(
            port, "POST", "/api/users/bulk-delete", {"users": ["admin"]}, user=who
        )
        assert status == 403, who
    assert server.users.get("admin") is not None
