"""Vhosts against a real brokerd (docs/vhosts.md, SPEC §6.6, §17.7): two
vhosts holding the same names stay apart for publish, consume, list, purge
and stats; an unknown vhost and a user without permissions there are
refused at Hello; deleting a vhost removes its data and closes its
connections; vhosts and their data survive a restart; brokerctl's
add/list/delete_vhost and ``-p``.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess

import brokerd_client
import brokerd_protocol as bp
from brokerd_client import AccessRefused, AsyncClient, BrokerError, Client
from brokerd_client.ctl.main import run

BOUND = 20.0


def ctl(broker: BrokerProcess, *args: str) -> tuple[int, str, str]:
    return run(["--data-dir", str(broker.data_dir), *args], env={})


def ok(broker: BrokerProcess, *args: str) -> str:
    code, out, err = ctl(broker, *args)
    assert code == 0, err
    return out


def rows(broker: BrokerProcess, *args: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(ok(broker, "--formatter", "json", *args))
    return listed


async def aok(broker: BrokerProcess, *args: str) -> str:
    """``ok`` from a coroutine (brokerctl runs its own event loop)."""
    return await asyncio.to_thread(ok, broker, *args)


async def arows(broker: BrokerProcess, *args: str) -> list[dict[str, Any]]:
    return await asyncio.to_thread(rows, broker, *args)


async def actl(broker: BrokerProcess, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(ctl, broker, *args)


async def on(broker: BrokerProcess, vhost: str, **kwargs: Any) -> AsyncClient:
    url = broker.url + "/" + vhost.replace("/", "%2F")
    return await brokerd_client.connect(url, timeout=BOUND, **kwargs)


async def test_same_names_in_two_vhosts_never_meet(broker: BrokerProcess) -> None:
    await aok(broker, "add_vhost", "a")
    await aok(broker, "add_vhost", "b")
    a, b, root = await on(broker, "a"), await on(broker, "b"), await on(broker, "/")
    try:
        for c in (a, b, root):
            await c.declare_queue("jobs")
            await c.declare_exchange("ev", "topic")
            await c.bind("jobs", "ev", "#")
        await a.publish("", "jobs", b"a-default")
        await a.publish("ev", "x", b"a-topic")
        await b.publish("", "jobs", b"b-default")
        assert (await a.queue_stats("jobs")).ready == 2
        assert (await b.queue_stats("jobs")).ready == 1
        assert (await root.queue_stats("jobs")).ready == 0

        consumer = await b.consume("jobs")
        d = await consumer.next(timeout=BOUND)
        # Names in a delivery are the vhost's own.
        assert (d.body, d.exchange, d.routing_key) == (b"b-default", "", "jobs")
        await d.ack()
        consumer = await a.consume("jobs", prefetch=2)
        got = [await consumer.next(timeout=BOUND) for _ in range(2)]
        assert sorted((x.body, x.exchange, x.routing_key) for x in got) == [
            (b"a-default", "", "jobs"),
            (b"a-topic", "ev", "x"),
        ]
        for x in got:
            await x.nack()
        await consumer.cancel()
        assert await a.purge_queue("jobs") == 2
        assert (await b.queue_stats("jobs")).ready == 0

        # An error names the vhost's name, never the internal one.
        with pytest.raises(BrokerError) as info:
            await a.queue_stats("missing")
        assert "\x1f" not in str(info.value) and "missing" in str(info.value)
        # No client can spell another vhost's internal name.
        with pytest.raises(BrokerError, match="control characters"):
            await root.queue_stats("\x1fv\x1fa\x1fjobs")
        with pytest.raises(BrokerError):
            await root.publish("", "\x1fv\x1fa\x1fjobs", b"sneak", mandatory=True)
        assert (await a.queue_stats("jobs")).ready == 0
    finally:
        for c in (a, b, root):
            await c.close()

    # Without -p or columns, rows of several vhosts show their vhost first.
    table = (await aok(broker, "list_queues")).splitlines()
    assert table[0].split()[:2] == ["vhost", "name"]
    queues = await arows(broker, "list_queues", "vhost", "name")
    assert sorted((r["vhost"], r["name"]) for r in queues) == [
        ("/", "jobs"),
        ("a", "jobs"),
        ("b", "jobs"),
    ]
    assert await arows(broker, "list_queues", "-p", "a", "name", "ready") == [
        {"name": "jobs", "ready": 0}
    ]
    bindings = await arows(broker, "list_bindings", "-p", "b", "vhost", "exchange", "queue")
    assert bindings == [{"vhost": "b", "exchange": "ev", "queue": "jobs"}]


async def test_unknown_vhost_and_a_user_without_permissions_are_refused(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BrokerError, match="vhost 'nope' does not exist"):
        await on(broker, "nope")
    await aok(broker, "add_vhost", "a")
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw-app-1\n"))
    await aok(broker, "add_user", "app")
    await aok(broker, "set_permissions", "-p", "a", "app", ".*", ".*", ".*")
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw-boss-1\n"))
    await aok(broker, "add_user", "boss")
    await aok(broker, "set_user_tags", "boss", "administrator")
    with pytest.raises(AccessRefused, match="vhost '/'"):
        await on(broker, "/", user="app", password="pw-app-1")
    c = await on(broker, "a", user="app", password="pw-app-1")
    await c.declare_queue("mine")
    await c.close()
    # An administrator needs no permissions to connect (as in RabbitMQ).
    boss = await on(broker, "/", user="boss", password="pw-boss-1")
    await boss.close()


async def test_delete_vhost_removes_its_data_and_closes_its_connections(
    broker: BrokerProcess,
) -> None:
    await aok(broker, "add_vhost", "gone")
    await aok(broker, "add_vhost", "kept")
    gone, kept = await on(broker, "gone"), await on(broker, "kept")
    for c in (gone, kept):
        await c.declare_queue("jobs")
        await c.publish("", "jobs", b"x")
        await c.result_set("t1", "SUCCESS", b"r")
        await c.schedule_set("tick", "every 60", "", "jobs", b"s")
    assert await aok(broker, "delete_vhost", "gone") == 'Deleting vhost "gone" ...\n'
    error = await gone.wait_closed()
    assert "vhost 'gone' was deleted" in str(error)
    assert [r["name"] for r in await arows(broker, "list_vhosts")] == ["/", "kept"]
    assert (await kept.queue_stats("jobs")).ready == 1
    assert set(await kept.result_get(["t1"])) == {"t1"}
    assert [s["name"] for s in await kept.schedule_list()] == ["tick"]
    await kept.close()
    # Made again, it is empty.
    await aok(broker, "add_vhost", "gone")
    again = await on(broker, "gone")
    try:
        with pytest.raises(BrokerError, match=r"not found|no queue"):
            await again.queue_stats("jobs")
        assert await again.result_get(["t1"]) == {}
        assert await again.schedule_list() == []
    finally:
        await again.close()
    code, _, err = await actl(broker, "delete_vhost", "/")
    assert code != 0 and "cannot be deleted" in err


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_vhosts_and_their_data_survive_a_restart(
    store: str, request: pytest.FixtureRequest
) -> None:
    broker: BrokerProcess = request.getfixturevalue("broker" if store == "sqlite" else "pg_broker")
    await aok(broker, "add_vhost", "a")
    c = await on(broker, "a")
    await c.declare_queue("jobs")
    await c.publish("", "jobs", b"kept")
    await c.close()
    broker.restart()
    assert [r["name"] for r in await arows(broker, "list_vhosts")] == ["/", "a"]
    c = await on(broker, "a")
    try:
        assert (await c.queue_stats("jobs")).ready == 1
    finally:
        await c.close()
    root = await on(broker, "/")
    try:
        with pytest.raises(BrokerError):
            await root.queue_stats("jobs")
    finally:
        await root.close()


def test_brokerctl_vhost_commands(broker: BrokerProcess) -> None:
    assert ok(broker, "add_vhost", "orders") == 'Adding vhost "orders" ...\n'
    code, _, err = ctl(broker, "add_vhost", "orders")
    assert code != 0 and "already exists" in err
    with Client(broker.url + "/orders") as c:
        c.declare_queue("q1")
        c.publish("", "q1", b"x")
    listed = rows(broker, "list_vhosts", "name", "queues", "messages")
    assert {"name": "orders", "queues": 1, "messages": 1} in listed
    assert {"name": "/", "queues": 0, "messages": 0} in listed
    assert "Purged 1 ready message(s)" in ok(broker, "purge_queue", "-p", "orders", "q1")
    ok(broker, "delete_queue", "-p", "orders", "q1")
    assert rows(broker, "list_queues", "-p", "orders") == []
    ok(broker, "delete_vhost", "orders")
    assert [r["name"] for r in rows(broker, "list_vhosts")] == ["/"]


def test_listing_frames_take_an_optional_trailing_vhost() -> None:
    # Old clients send no vhost field: they get every vhost they may see.
    assert bp.ListQueues(1).vhost is None
    assert bp.Hello([1]).vhost == "/"


async def test_revocations_events_and_rate_limits_stay_in_their_vhost(
    broker: BrokerProcess,
) -> None:
    await aok(broker, "add_vhost", "a")
    await aok(broker, "add_vhost", "b")
    a, b = await on(broker, "a"), await on(broker, "b")
    try:
        seen: dict[str, list[Any]] = {"a": [], "b": []}
        snapshot = await b.subscribe(["revoke"], lambda e: seen["b"].append(e.data))
        await a.subscribe(["revoke"], lambda e: seen["a"].append(e.data))
        assert snapshot["revoked"] == []
        await a.revoke(["t1"])
        await a.rate_set("task.x", 5.0)
        for c in (a, b):
            await c.declare_queue("jobs")
            await c.publish("", "jobs", b"x", message_id="t1")
            await c.publish("", "jobs", b"y", message_id="t2")
        # a's revocation drops a's t1 only.
        got = await (await b.consume("jobs", prefetch=2)).next(timeout=BOUND)
        assert got.message_id == "t1"
        d = await (await a.consume("jobs")).next(timeout=BOUND)
        assert d.message_id == "t2"
        # The event reached a's subscriber, with a's id, and not b's.
        assert {"task_id": "t1", "terminate": False} in seen["a"]
        assert seen["b"] == []
        assert (await b.subscribe(["revoke"], lambda e: None))["revoked"] == []
        assert (await a.subscribe(["ratelimit"], lambda e: None))["rate_limits"] == {"task.x": 5.0}
        assert (await b.subscribe(["ratelimit"], lambda e: None))["rate_limits"] == {}
        assert await b.rate_acquire("task.x") == 0.0
    finally:
        await a.close()
        await b.close()


async def test_definitions_round_trip_to_a_new_broker(
    broker: BrokerProcess, broker_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await aok(broker, "add_vhost", "orders")
    c = await on(broker, "orders")
    try:
        await c.declare_exchange("ev", "topic")
        await c.declare_queue("dead")
        await c.declare_queue("jobs", dead_letter_queue="dead", max_length=5)
        await c.bind("jobs", "ev", "a.#")
        await c.schedule_set("tick", "every 60", "ev", "a.b", b"\x00body", headers={"h": b"\x01"})
        await c.publish("", "jobs", b"not a definition")
    finally:
        await c.close()
    # Users last: from then on the broker takes only users over TCP.
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw-app-1\n"))
    await aok(broker, "add_user", "app")
    await aok(broker, "set_user_tags", "app", "monitoring")
    await aok(broker, "set_permissions", "-p", "orders", "app", "^o", ".*", ".*")
    exported = tmp_path / "defs.json"
    out = await aok(broker, "export_definitions", str(exported))
    assert "Exported definitions" in out
    assert exported.stat().st_mode & 0o777 == 0o600  # it holds password hashes
    defs = json.loads(exported.read_text())
    assert {"name": "orders"} in defs["vhosts"]
    (user,) = defs["users"]
    assert user["name"] == "app" and user["password_hash"].startswith("scrypt$")
    assert "pw-app-1" not in exported.read_text()
    queues = {(q["vhost"], q["name"]): q for q in defs["queues"]}
    assert queues["orders", "jobs"]["arguments"]["dead_letter_queue"] == "dead"

    other = broker_factory().start()
    assert "Imported definitions" in await aok(other, "import_definitions", str(exported))
    again = await aok(other, "import_definitions", str(exported))  # idempotent
    assert "1 users_kept" in again
    # The user logs in with its old password, on its vhost, with its rights.
    c = await on(other, "orders", user="app", password="pw-app-1")
    try:
        with pytest.raises(AccessRefused):
            await c.declare_queue("x")  # configure is "^o" only
        assert (await c.queue_stats("jobs")).ready == 0  # messages are not definitions
        [schedule] = await c.schedule_list()
        assert (schedule["name"], schedule["exchange"], schedule["routing_key"]) == (
            "tick",
            "ev",
            "a.b",
        )
    finally:
        await c.close()
    again_defs = tmp_path / "again.json"
    await aok(other, "export_definitions", str(again_defs))
    assert json.loads(again_defs.read_text()) == defs


async def test_dead_letters_stay_in_their_vhost_and_name_its_queue(broker: BrokerProcess) -> None:
    await aok(broker, "add_vhost", "a")
    a, root = await on(broker, "a"), await on(broker, "/")
    try:
        for c in (a, root):
            await c.declare_queue("dead")
        await a.declare_queue("work", dead_letter_queue="dead")
        await a.publish("", "work", b"x")
        d = await (await a.consume("work")).next(timeout=BOUND)
        await d.reject("bad")
        dead = await (await a.consume("dead")).next(timeout=BOUND)
        assert dead.body == b"x"
        assert dead.headers["x-death-queue"] == "work"
        assert (await root.queue_stats("dead")).ready == 0
        listed = await arows(broker, "list_queues", "-p", "a", "name", "options")
        assert {r["name"]: r["options"].get("dead_letter_queue") for r in listed} == {
            "dead": None,
            "work": "dead",
        }
    finally:
        await a.close()
        await root.close()


async def test_a_monitoring_user_sees_only_its_own_vhost(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    await aok(broker, "add_vhost", "a")
    root, a = await on(broker, "/"), await on(broker, "a")
    await root.declare_queue("root.q")
    await a.declare_queue("a.q")
    await root.close()
    await a.close()
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw-mon-1\n"))
    await aok(broker, "add_user", "mon")
    await aok(broker, "set_user_tags", "mon", "monitoring")
    await aok(broker, "set_permissions", "-p", "a", "mon", "", "", ".*")
    mon = await on(broker, "a", user="mon", password="pw-mon-1")
    try:
        status = await mon.call(bp.AdminStatus)
        assert status["counts"]["queues"] == 1
        page = await mon.call(bp.ListQueues)
        assert [(q["vhost"], q["name"]) for q in page["items"]] == [("a", "a.q")]
        vhosts = await mon.call(bp.ListVhosts)
        assert [v["name"] for v in vhosts["items"]] == ["a"]
        with pytest.raises(AccessRefused, match="this connection is on vhost 'a'"):
            await mon.call(lambda r: bp.ListQueues(r, vhost="/"))
        with pytest.raises(AccessRefused):
            await mon.call(lambda r: bp.AddVhost(r, "b"))
    finally:
        await mon.close()
    # The control socket sees every vhost.
    assert {r["name"] for r in await arows(broker, "list_vhosts")} == {"/", "a"}
