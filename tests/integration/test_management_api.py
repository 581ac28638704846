"""The management HTTP API against a real broker (in this process, port 0 for
both the broker and the API): every endpoint, RabbitMQ's field names, tag
refusals, CSRF, bad requests that never break the server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import brokerd_client
import brokerd_protocol as bp
from brokerd.cli import build_server
from brokerd.config import Config
from brokerd.management.http import MAX_BODY, MAX_HEAD
from brokerd.management.lists import shape
from brokerd.server import BrokerServer
from brokerd_client import AsyncClient

BOUND = 10.0
ADMIN = ("admin", "admin-pw")
MONITOR = ("watcher", "watcher-pw")
MANAGER = ("manager", "manager-pw")
NOTAG = ("plain", "plain-pw")

Reply = tuple[int, dict[str, str], bytes]


async def raw(port: int, data: bytes) -> Reply:
    """Send ``data`` as is and read one response (the connection then closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(_read_response(reader), BOUND)
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.lower(), value.strip())
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def _auth(user: tuple[str, str] | None) -> dict[str, str]:
    if user is None:
        return {}
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    user: tuple[str, str] | None = ADMIN,
    headers: dict[str, str] | None = None,
) -> Reply:
    data = b"" if body is None else json.dumps(body).encode()
    all_headers = {"Host": "localhost", "Content-Length": str(len(data)), **_auth(user)}
    all_headers.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in all_headers.items()
    )
    return await raw(port, head.encode() + b"\r\n" + data)


async def get_json(port: int, path: str, user: tuple[str, str] | None = ADMIN) -> Any:
    status, _, body = await call(port, "GET", path, user=user)
    assert status == 200, body
    return json.loads(body)


@contextlib.asynccontextmanager
async def running(users: bool = True) -> AsyncIterator[tuple[BrokerServer, AsyncClient, int]]:
    config = Config(host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0, http_port=0)
    server = build_server(config.validate())
    await server.start()
    root = await brokerd_client.connect(f"brokerd://127.0.0.1:{server.port}", timeout=BOUND)
    try:
        if users:
            await add_user(root, *ADMIN, ["administrator"], (".*", ".*", ".*"))
            await add_user(root, *MONITOR, ["monitoring"], None)
            await add_user(root, *MANAGER, ["management"], ("^app\\.", "^app\\.", "^app\\."))
            await add_user(root, *NOTAG, [], (".*", ".*", ".*"))
            await root.close()
            root = await brokerd_client.connect(
                f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}", timeout=BOUND
            )
        port = server.management.port
        assert port
        yield server, root, port
    finally:
        await root.close()
        await server.stop()


async def add_user(
    root: AsyncClient, name: str, password: str, tags: list[str], perms: tuple[str, str, str] | None
) -> None:
    await root.call(lambda req: bp.AddUser(req, name, password, tags))
    if perms is not None:
        await root.call(lambda req: bp.SetPermissions(req, name, "/", *perms))


@pytest.fixture
async def mgmt() -> AsyncIterator[tuple[BrokerServer, AsyncClient, int]]:
    async with running() as triple:
        yield triple


async def test_queue_fields_follow_rabbitmq_and_counts_change(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.q")
    for i in range(3):
        await root.publish("", "app.q", b"m%d" % i)
    q = await get_json(port, "/api/queues/%2F/app.q")
    assert q["name"] == "app.q" and q["vhost"] == "/"
    assert (q["messages_ready"], q["messages_unacknowledged"], q["messages"]) == (3, 0, 3)
    assert q["messages_delayed"] == 0 and q["consumers"] == 0
    assert q["oldest_ready_age"] is not None and q["oldest_lease_age"] is None
    assert q["message_stats"]["publish"] == 3
    assert "rate" in q["message_stats"]["publish_details"]

    consumer = await root.consume("app.q", prefetch=1)
    delivery = await asyncio.wait_for(consumer.__anext__(), BOUND)
    q = await get_json(port, "/api/queues/%2F/app.q")
    assert (q["messages_ready"], q["messages_unacknowledged"], q["consumers"]) == (2, 1, 1)
    assert q["oldest_lease_age"] is not None
    await delivery.ack()
    listed = await get_json(port, "/api/queues")
    assert [x["name"] for x in listed] == ["app.q"]
    assert listed == await get_json(port, "/api/queues/%2F") or len(listed) == 1

    consumers = await get_json(port, "/api/consumers")
    assert consumers[0]["queue"] == {"name": "app.q", "vhost": "/"}
    assert consumers[0]["prefetch_count"] == 1
    connections = await get_json(port, "/api/connections")
    assert any(c["user"] == "admin" for c in connections)
    assert all({"name", "peer_host", "recv_oct", "send_oct"} <= c.keys() for c in connections)


async def test_rates_are_differences_of_samples(mgmt: Any) -> None:
    server, root, port = mgmt
    await root.declare_queue("app.r")
    rates = server.management.rates
    # Samples "in the future", so the tick's own sampling stays away meanwhile.
    t0 = time.time() + 10_000
    rates.sample(t0, server.broker.counters, server.broker.queues)
    for _ in range(10):
        await root.publish("", "app.r", b"x")
    rates.sample(t0 + 5, server.broker.counters, server.broker.queues)
    q = await get_json(port, "/api/queues/%2F/app.r")
    assert q["message_stats"]["publish_details"]["rate"] == 2.0
    overview = await get_json(port, "/api/overview")
    assert overview["message_stats"]["publish_details"]["rate"] == 2.0
    history = await get_json(port, "/api/rates")
    assert history[-1]["publish"] == 2.0


async def test_overview_exchanges_bindings_vhosts_users_permissions_whoami(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_exchange("app.ex", "topic")
    await root.declare_queue("app.b")
    await root.bind("app.b", "app.ex", "a.#")
    overview = await get_json(port, "/api/overview")
    assert overview["object_totals"]["queues"] == 1
    assert overview["queue_totals"]["messages_ready"] == 0
    assert overview["product_name"] == "brokerd"
    exchanges = await get_json(port, "/api/exchanges")
    names = {e["name"]: e["type"] for e in exchanges}
    assert names["app.ex"] == "topic" and names["amq.default"] == "direct"
    assert (await get_json(port, "/api/exchanges/%2F/app.ex"))["type"] == "topic"
    bindings = await get_json(port, "/api/bindings")
    assert {
        "source": "app.ex",
        "destination": "app.b",
        "destination_type": "queue",
        "routing_key": "a.#",
    }.items() <= bindings[0].items()
    assert await get_json(port, "/api/bindings/%2F") == bindings
    assert [v["name"] for v in await get_json(port, "/api/vhosts")] == ["/"]
    users = {u["name"]: u["tags"] for u in await get_json(port, "/api/users")}
    assert users["watcher"] == ["monitoring"] and users["admin"] == ["administrator"]
    assert "password_hash" not in json.dumps(await get_json(port, "/api/users"))
    perms = await get_json(port, "/api/permissions")
    assert {"user": "manager", "vhost": "/", "configure": "^app\\."}.items() <= next(
        p for p in perms if p["user"] == "manager"
    ).items()
    me = await get_json(port, "/api/whoami", user=MONITOR)
    assert me["name"] == "watcher" and me["tags"] == ["monitoring"]
    assert (await get_json(port, "/api/health/checks/alarms"))["status"] == "ok"
    doc = await get_json(port, "/api/openapi.json", user=None)
    assert "/api/queues/{vhost}/{name}/get" in doc["paths"]


async def test_alarm_check_is_503_with_an_alarm(mgmt: Any) -> None:
    server, _, port = mgmt
    server.flow.set_store_alarm(True)
    try:
        status, _, body = await call(port, "GET", "/api/health/checks/alarms")
        assert status == 503 and json.loads(body)["status"] == "failed"
        assert "store" in json.loads(body)["alarms"]
        status, _, body = await call(
            port, "POST", "/api/exchanges/%2F/amq.default/publish",
            {"routing_key": "q", "payload": "x"},
        )  # fmt: skip
        assert status == 503 and b"held" in body
    finally:
        server.flow.set_store_alarm(False)


async def test_peek_purge_publish(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.p")
    status, _, body = await call(
        port,
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        {"routing_key": "app.p", "payload": "hello", "payload_encoding": "string",
         "properties": {"headers": {"k": "v"}}},
    )  # fmt: skip
    assert status == 200 and json.loads(body) == {"routed": True}
    status, _, body = await call(
        port,
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        {"routing_key": "nowhere", "payload": "AAEC", "payload_encoding": "base64"},
    )
    assert json.loads(body) == {"routed": False}
    await root.publish("", "app.p", b"\xff\x00")
    status, _, body = await call(
        port, "POST", "/api/queues/%2F/app.p/get", {"count": 5, "ackmode": "ack_requeue_true",
                                                      "encoding": "auto"}
    )  # fmt: skip
    assert status == 200
    got = json.loads(body)
    assert [m["payload"] for m in got] == ["hello", base64.b64encode(b"\xff\x00").decode()]
    assert [m["payload_encoding"] for m in got] == ["string", "base64"]
    assert got[0]["properties"]["headers"] == {"k": "v"} and got[0]["routing_key"] == "app.p"
    # A peek consumes nothing.
    assert (await get_json(port, "/api/queues/%2F/app.p"))["messages_ready"] == 2
    status, _, _ = await call(
        port, "POST", "/api/queues/%2F/app.p/get", {"count": 1, "ackmode": "ack_requeue_false"}
    )
    assert status == 400
    status, _, _ = await call(port, "DELETE", "/api/queues/%2F/app.p/contents")
    assert status == 204
    assert (await get_json(port, "/api/queues/%2F/app.p"))["messages_ready"] == 0
    assert (await root.queue_stats("app.p")).ready == 0


async def test_redrive_moves_dead_letters_back_to_their_source(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.dlq")
    await root.declare_queue("app.work", dead_letter_queue="app.dlq")
    for i in range(5):
        await root.publish("", "app.work", b"job%d" % i)
    consumer = await root.consume("app.work", prefetch=5)
    for _ in range(5):
        d = await asyncio.wait_for(consumer.__anext__(), BOUND)
        await d.reject("broken")
    await consumer.cancel()
    assert (await get_json(port, "/api/queues/%2F/app.dlq"))["messages_ready"] == 5
    status, _, body = await call(port, "POST", "/api/queues/%2F/app.dlq/redrive", {"count": 2})
    assert status == 200 and json.loads(body) == {"moved": 2, "remaining": 3}
    status, _, body = await call(port, "POST", "/api/queues/%2F/app.dlq/redrive", {})
    assert json.loads(body)["moved"] == 3
    work = await get_json(port, "/api/queues/%2F/app.work")
    assert work["messages_ready"] == 5
    assert (await get_json(port, "/api/queues/%2F/app.dlq"))["messages_ready"] == 0
    peeked = json.loads((await call(port, "POST", "/api/queues/%2F/app.work/get", {"count": 5}))[2])
    assert [m["payload"] for m in peeked] == [f"job{i}" for i in range(5)]
    # An explicit target.
    await root.declare_queue("app.other")
    await root.publish("", "app.dlq", b"plain")
    status, _, body = await call(
        port, "POST", "/api/queues/%2F/app.dlq/redrive", {"to": "app.other"}
    )
    assert json.loads(body)["moved"] == 1
    assert (await root.queue_stats("app.other")).ready == 1


async def test_tags_are_enforced(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.t")
    await root.declare_queue("other.t")
    await root.publish("", "app.t", b"x")
    # Monitoring reads everything but changes nothing.
    assert len(await get_json(port, "/api/queues", user=MONITOR)) == 2
    status, _, _ = await call(port, "DELETE", "/api/queues/%2F/app.t/contents", user=MONITOR)
    assert status == 403
    status, _, _ = await call(port, "GET", "/api/users", user=MONITOR)
    assert status == 403
    # Management changes within its patterns only.
    status, _, _ = await call(port, "DELETE", "/api/queues/%2F/other.t/contents", user=MANAGER)
    assert status == 403
    status, _, _ = await call(port, "DELETE", "/api/queues/%2F/app.t/contents", user=MANAGER)
    assert status == 204
    # No tag, unknown user, wrong password, nothing at all: 401 with a challenge.
    for who in (NOTAG, ("nobody", "x"), (ADMIN[0], "wrong"), None):
        status, headers, _body = await call(port, "GET", "/api/overview", user=who)
        assert status == 401, who
        assert headers["www-authenticate"].startswith("Basic")
    _, _, unknown = await call(port, "GET", "/api/overview", user=("nobody", "x"))
    _, _, wrong = await call(port, "GET", "/api/overview", user=(ADMIN[0], "wrong"))
    assert unknown == wrong
    assert (await root.queue_stats("other.t")).ready == 0


async def test_cookie_sessions_need_the_csrf_token(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.c")
    await root.publish("", "app.c", b"x")
    status, headers, body = await call(
        port, "POST", "/api/login", {"username": ADMIN[0], "password": ADMIN[1]}, user=None
    )
    assert status == 200
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = cookie.split(";")[0]
    csrf = json.loads(body)["csrf_token"]
    session = {"Cookie": token}
    me = json.loads((await call(port, "GET", "/api/whoami", user=None, headers=session))[2])
    assert me["name"] == "admin" and me["csrf_token"] == csrf
    status, _, _ = await call(
        port, "DELETE", "/api/queues/%2F/app.c/contents", user=None, headers=session
    )
    assert status == 403
    status, _, _ = await call(
        port, "DELETE", "/api/queues/%2F/app.c/contents", user=None,
        headers={**session, "X-CSRF-Token": "forged"},
    )  # fmt: skip
    assert status == 403
    assert (await root.queue_stats("app.c")).ready == 1
    status, _, _ = await call(
        port, "DELETE", "/api/queues/%2F/app.c/contents", user=None,
        headers={**session, "X-CSRF-Token": csrf},
    )  # fmt: skip
    assert status == 204
    status, _, _ = await call(port, "POST", "/api/logout", user=None, headers=session)
    assert status == 204
    status, _, _ = await call(port, "GET", "/api/whoami", user=None, headers=session)
    assert status == 401
    status, _, _ = await call(
        port, "POST", "/api/login", {"username": MONITOR[0], "password": "bad"}, user=None
    )
    assert status == 401


async def test_bad_requests_get_4xx_and_the_server_keeps_serving(mgmt: Any) -> None:
    _server, root, port = mgmt
    status, _, _ = await call(port, "GET", "/api/nothing-here")
    assert status == 404
    status, _, _ = await call(port, "GET", "/api/queues/%2F/missing")
    assert status == 404
    status, _, _ = await call(port, "GET", "/api/queues/other-vhost")
    assert status == 404
    bad_json = b"POST /api/queues/%2F/x/get HTTP/1.1\r\nContent-Length: 3\r\n" + (
        b"Authorization: " + _auth(ADMIN)["Authorization"].encode() + b"\r\n\r\n{{{"
    )
    await root.declare_queue("x")
    assert (await raw(port, bad_json))[0] == 400
    big = f"POST /api/login HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode()
    assert (await raw(port, big))[0] == 413
    huge_head = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n"
    assert (await raw(port, huge_head))[0] == 431
    assert (await raw(port, b"NOT HTTP AT ALL\r\n\r\n"))[0] == 400
    assert (await raw(port, b"GET / HTTP/2.0\r\n\r\n"))[0] == 505
    chunked = b"POST /api/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert (await raw(port, chunked))[0] == 501
    assert (await raw(port, b"GET /api/%ff HTTP/1.1\r\n\r\n"))[0] in (400, 401)
    status, _, _ = await call(port, "PATCH", "/api/queues")
    assert status == 405
    # A peer that goes away mid-request does no harm.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/login HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    writer.close()
    # Still serving, with the security headers.
    status, headers, _ = await call(port, "GET", "/api/overview")
    assert status == 200
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in headers["content-security-policy"]


async def test_keep_alive_serves_several_requests_on_one_connection(mgmt: Any) -> None:
    _server, _root, port = mgmt
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = _auth(ADMIN)["Authorization"]
    try:
        for _ in range(3):
            writer.write(f"GET /api/whoami HTTP/1.1\r\nAuthorization: {auth}\r\n\r\n".encode())
            status, headers, body = await asyncio.wait_for(_read_response(reader), BOUND)
            assert status == 200 and headers["connection"] == "keep-alive"
            assert json.loads(body)["name"] == "admin"
    finally:
        writer.close()


async def test_without_users_on_loopback_it_is_open_and_serves_the_page() -> None:
    async with running(users=False) as (_server, root, port):
        await root.declare_queue("q")
        assert [q["name"] for q in await get_json(port, "/api/queues", user=None)] == ["q"]
        status, headers, body = await call(port, "GET", "/", user=None)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"<title>" in body
        status, _, _ = await call(port, "GET", "/../pyproject.toml", user=None)
        assert status == 404


async def test_default_port_taken_leaves_the_broker_running() -> None:
    # Two brokers on the default management port: the second logs and goes on.
    cfg = Config(host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0)
    first = build_server(cfg)
    second = build_server(cfg)
    await first.start()
    try:
        await second.start()
        assert second.port
        assert first.management.port is None or second.management.port is None
        await second.stop()
    finally:
        await first.stop()


async def test_schedules_list_and_run_now(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.beat")
    await root.call(
        lambda req: bp.ScheduleSet(req, "app.nightly", "every 3600", "", "app.beat", b"tick")
    )
    listed = await get_json(port, "/api/schedules")
    assert [(s["name"], s["spec"]) for s in listed] == [("app.nightly", "every 3600")]
    next_run = listed[0]["next_run"]
    status, _, body = await call(port, "POST", "/api/schedules/%2F/app.nightly/run")
    assert status == 200, body
    for _ in range(100):
        if (await root.queue_stats("app.beat")).ready == 1:
            break
        await asyncio.sleep(0.02)
    assert (await root.queue_stats("app.beat")).ready == 1
    assert (await get_json(port, "/api/schedules"))[0]["next_run"] == next_run
    status, _, _ = await call(port, "POST", "/api/schedules/%2F/app.nightly/run", user=MONITOR)
    assert status == 403
    status, _, _ = await call(port, "POST", "/api/schedules/%2F/missing/run")
    assert status == 404


async def test_recent_task_results_show_tracebacks_and_revoke_records_revoked(mgmt: Any) -> None:
    _server, root, port = mgmt
    failure = b"j" + json.dumps(
        {"exc_type": "ValueError", "exc_module": "builtins", "exc_message": "bad input",
         "traceback": "Traceback (most recent call last):\n  ...\nValueError: bad input"}
    ).encode()  # fmt: skip
    await root.call(lambda req: bp.ResultSet(req, "t-fail", "FAILURE", failure))
    await root.call(lambda req: bp.ResultSet(req, "t-ok", "SUCCESS", b'j{"result": 42}'))
    tasks = await get_json(port, "/api/tasks")
    by_id = {t["task_id"]: t for t in tasks}
    assert by_id["t-fail"]["state"] == "FAILURE"
    assert by_id["t-fail"]["exc_type"] == "ValueError"
    assert "ValueError: bad input" in by_id["t-fail"]["traceback"]
    assert by_id["t-ok"] == {"task_id": "t-ok", "vhost": "/", "state": "SUCCESS", "result": "42"}
    assert tasks[0]["task_id"] == "t-ok"  # newest first
    status, _, body = await call(port, "POST", "/api/tasks/%2F/t-new/revoke", {"terminate": True})
    assert status == 200 and json.loads(body) == {"revoked": "t-new"}
    got = await root.call(lambda req: bp.ResultGet(req, ["t-new"]))
    assert got["t-new"][0] == "REVOKED"
    status, _, _ = await call(port, "POST", "/api/tasks/%2F/t-x/revoke", {}, user=MONITOR)
    assert status == 403


async def test_the_page_gets_no_basic_challenge(mgmt: Any) -> None:
    _server, _root, port = mgmt
    status, headers, _ = await call(
        port, "GET", "/api/whoami", user=None, headers={"X-Brokerd-Page": "1"}
    )
    assert status == 401 and "www-authenticate" not in headers


async def test_lists_filter_sort_page_and_pick_columns(mgmt: Any) -> None:
    _server, root, port = mgmt
    for name, n in (("app.a", 3), ("app.b", 1), ("app.c", 2), ("other", 5)):
        await root.declare_queue(name)
        for _ in range(n):
            await root.publish("", name, b"x")
    page = await get_json(
        port,
        "/api/queues?page=1&page_size=2&name=app.&sort=messages_ready&sort_reverse=true"
        "&columns=name,messages_ready,message_stats.publish_details.rate",
    )
    assert page["filtered_count"] == 3 and page["total_count"] == 4
    assert page["page_count"] == 2 and page["item_count"] == 2
    assert page["items"] == [
        {"name": "app.a", "messages_ready": 3, "message_stats": {"publish_details": {"rate": 0.0}}},
        {"name": "app.c", "messages_ready": 2, "message_stats": {"publish_details": {"rate": 0.0}}},
    ]
    second = await get_json(port, "/api/queues?page=2&page_size=2&name=app.&sort=messages_ready")
    assert [q["name"] for q in second["items"]] == ["app.a"]  # ascending: b, c | a
    plain = await get_json(port, "/api/queues?sort=name&columns=name")
    assert plain == [{"name": n} for n in ("app.a", "app.b", "app.c", "other")]
    status, _, _ = await call(port, "GET", "/api/queues?page=0")
    assert status == 400


async def test_cross_site_browser_requests_are_refused_even_when_open() -> None:
    async with running(users=False) as (_server, root, port):
        await root.declare_queue("q")
        await root.publish("", "q", b"x")
        for headers in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Origin": "http://evil.example", "Host": f"127.0.0.1:{port}"},
        ):
            status, _, body = await call(
                port, "DELETE", "/api/queues/%2F/q/contents", user=None, headers=headers
            )
            assert status == 403, body
        # A DNS-rebinding page: its own name, resolved to 127.0.0.1.
        status, _, _ = await call(
            port, "GET", "/api/queues", user=None, headers={"Host": f"evil.example:{port}"}
        )
        assert status == 403
        assert (await root.queue_stats("q")).ready == 1
        # The page itself (same origin) and scripts (no Origin) pass.
        same = {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}",
                "Sec-Fetch-Site": "same-origin"}  # fmt: skip
        status, _, _ = await call(
            port, "DELETE", "/api/queues/%2F/q/contents", user=None, headers=same
        )
        assert status == 204


async def test_failed_logins_are_throttled_per_address(mgmt: Any) -> None:
    server, _root, port = mgmt
    for _ in range(3):
        status, _, _ = await call(port, "GET", "/api/overview", user=(ADMIN[0], "wrong"))
        assert status == 401
    # The broker port's throttle counts them: this address must now wait.
    assert server.auth_throttle.wait("127.0.0.1") > 0
    assert server.auth_throttle.failures_total >= 3


async def test_workers_and_task_progress_from_worker_events(mgmt: Any) -> None:
    _server, root, port = mgmt
    assert await get_json(port, "/api/workers") == []  # attaches to the events
    now = time.time()
    events = [
        ("worker.heartbeat", {"type": "worker-heartbeat", "hostname": "w1@box", "pid": 42,
                              "freq": 2.0, "active": 1, "processed": 7, "timestamp": now,
                              "pool": "processes", "concurrency": 4}),
        ("task.received", {"type": "task-received", "hostname": "w1@box", "uuid": "u1",
                           "name": "app.add", "args": "(1, 2)", "timestamp": now}),
        ("task.failed", {"type": "task-failed", "hostname": "w1@box", "uuid": "u1",
                         "exception": "ValueError('x')", "traceback": "Traceback ...",
                         "runtime": 0.5, "timestamp": now}),
        ("worker.heartbeat", {"type": "worker-heartbeat", "hostname": "w0@old",
                              "freq": 2.0, "timestamp": now - 60}),
    ]  # fmt: skip
    for key, event in events:
        assert await root.publish("brokerd.events", key, json.dumps(event).encode())
    workers: list[dict[str, Any]] = []
    for _ in range(200):
        workers = await get_json(port, "/api/workers")
        if len(workers) == 2:
            break
        await asyncio.sleep(0.02)
    by_host = {w["hostname"]: w for w in workers}
    assert by_host["w1@box"]["online"] is True and by_host["w1@box"]["pid"] == 42
    assert by_host["w1@box"]["active"] == 1 and by_host["w1@box"]["processed"] == 7
    assert by_host["w1@box"]["pool"] == "processes" and by_host["w1@box"]["concurrency"] == 4
    assert by_host["w0@old"]["online"] is False and by_host["w0@old"]["pool"] is None
    tasks = await get_json(port, "/api/tasks")
    (task,) = [t for t in tasks if t["task_id"] == "u1"]
    assert task["state"] == "FAILURE" and task["name"] == "app.add"
    assert task["traceback"] == "Traceback ..." and task["hostname"] == "w1@box"
    assert task["args"] == "(1, 2)" and task["runtime"] == 0.5
    # Consumed and acked: nothing piles up in the events queue.
    queue = await get_json(port, "/api/queues/%2F/brokerd.management.events")
    assert queue["messages"] == 0


async def test_definitions_export_and_import_round_trip(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_exchange("app.ex", "topic")
    await root.declare_queue("app.dlq")
    await root.declare_queue("app.work", dead_letter_queue="app.dlq", max_deliveries=3)
    await root.bind("app.work", "app.ex", "jobs.#")
    exported = await get_json(port, "/api/definitions")
    assert {u["name"] for u in exported["users"]} == {"admin", "watcher", "manager", "plain"}
    work = next(q for q in exported["queues"] if q["name"] == "app.work")
    assert work["arguments"]["dead_letter_queue"] == "app.dlq"
    assert work["arguments"]["max_deliveries"] == 3
    assert [e["name"] for e in exported["exchanges"]] == ["app.ex"]
    assert exported["bindings"][0]["routing_key"] == "jobs.#"
    status, _, _ = await call(port, "GET", "/api/definitions", user=MONITOR)
    assert status == 403

    async with running(users=False) as (server2, root2, port2):
        status, _, body = await call(port2, "POST", "/api/definitions", exported, user=None)
        assert status == 204, body
        # The users came with their hashes: the broker now asks for them.
        status, _, _ = await call(port2, "GET", "/api/definitions", user=None)
        assert status == 401
        copy = await get_json(port2, "/api/definitions", user=ADMIN)
        for key in ("queues", "exchanges", "bindings", "users", "permissions", "vhosts"):
            assert copy[key] == exported[key], key
        assert server2.users.get("watcher").tags == frozenset({"monitoring"})
        # Applied again: nothing changes. A mismatch is named, the rest applied.
        status, _, _ = await call(port2, "POST", "/api/definitions", exported)
        assert status == 204
        clash = {
            "exchanges": [{"name": "app.ex", "type": "fanout"}],
            "queues": [{"name": "app.new", "durable": True, "arguments": {}}],
        }
        status, _, body = await call(port2, "POST", "/api/definitions", clash)
        assert status == 400 and b"app.ex" in body and b"the rest was applied" in body
        assert (await root2.queue_stats("app.new")).ready == 0


async def test_the_token_is_an_administrator_with_or_without_users() -> None:
    config = Config(
        host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0, http_port=0, token="tok"
    )
    server = build_server(config.validate())
    await server.start()
    try:
        port = server.management.port
        assert port
        status, _, _ = await call(port, "GET", "/api/overview", user=None)
        assert status == 401
        status, _, _ = await call(port, "GET", "/api/overview", user=("any", "wrong"))
        assert status == 401
        status, _, body = await call(port, "GET", "/api/users", user=("any", "tok"))
        assert status == 200 and json.loads(body) == []
    finally:
        await server.stop()


async def test_vhosts_are_separate_in_every_endpoint(mgmt: Any) -> None:
    server, root, port = mgmt
    await root.call(lambda req: bp.AddVhost(req, "orders"))
    await root.call(lambda req: bp.SetPermissions(req, "admin", "orders", ".*", ".*", ".*"))
    await root.call(lambda req: bp.SetPermissions(req, "manager", "orders", ".*", ".*", ".*"))
    other = await brokerd_client.connect(
        f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}/orders", timeout=BOUND
    )
    try:
        await root.declare_queue("app.jobs")
        await other.declare_queue("jobs.dlq")
        await other.declare_queue("jobs", dead_letter_queue="jobs.dlq")
        await other.declare_exchange("events", "topic")
        await other.bind("jobs", "events", "job.#")
        await other.publish("", "jobs", b"in orders")
        everything = await get_json(port, "/api/queues?columns=vhost,name,messages_ready")
        assert everything == [
            {"vhost": "/", "name": "app.jobs", "messages_ready": 0},
            {"vhost": "orders", "name": "jobs", "messages_ready": 1},
            {"vhost": "orders", "name": "jobs.dlq", "messages_ready": 0},
        ]
        assert [q["name"] for q in await get_json(port, "/api/queues/orders")] == [
            "jobs",
            "jobs.dlq",
        ]
        jobs = await get_json(port, "/api/queues/orders/jobs")
        assert jobs["vhost"] == "orders" and jobs["dead_letter_queue"] == "jobs.dlq"
        status, _, _ = await call(port, "GET", "/api/queues/%2F/jobs")
        assert status == 404
        assert {(e["vhost"], e["name"]) for e in await get_json(port, "/api/exchanges")} >= {
            ("/", "amq.default"),
            ("orders", "amq.default"),
            ("orders", "events"),
        }
        (binding,) = await get_json(port, "/api/bindings/orders")
        assert (binding["source"], binding["destination"]) == ("events", "jobs")
        assert {v["name"]: v["messages_ready"] for v in await get_json(port, "/api/vhosts")} == {
            "/": 0,
            "orders": 1,
        }
        # Publish through the vhost's default exchange and its own exchange.
        status, _, body = await call(
            port, "POST", "/api/exchanges/orders/amq.default/publish",
            {"routing_key": "jobs", "payload": "by http"},
        )  # fmt: skip
        assert json.loads(body) == {"routed": True}
        status, _, body = await call(
            port, "POST", "/api/exchanges/orders/events/publish",
            {"routing_key": "job.new", "payload": "routed"},
        )  # fmt: skip
        assert json.loads(body) == {"routed": True}
        peeked = json.loads(
            (await call(port, "POST", "/api/queues/orders/jobs/get", {"count": 3}))[2]
        )
        assert [(m["payload"], m["exchange"], m["routing_key"]) for m in peeked] == [
            ("in orders", "", "jobs"),
            ("by http", "", "jobs"),
            ("routed", "events", "job.new"),
        ]
        # The monitoring user (no permissions anywhere) reads all; a management
        # user only its vhosts; nobody changes the wrong vhost's queue by name.
        assert len(await get_json(port, "/api/queues", user=MONITOR)) == 3
        status, _, _ = await call(port, "DELETE", "/api/queues/orders/jobs/contents")
        assert status == 204
        assert (await other.queue_stats("jobs")).ready == 0
        exported = await get_json(port, "/api/definitions/orders")
        assert {q["name"] for q in exported["queues"]} == {"jobs", "jobs.dlq"}
        assert (
            next(q for q in exported["queues"] if q["name"] == "jobs")["arguments"][
                "dead_letter_queue"
            ]
            == "jobs.dlq"
        )
        status, _, _ = await call(port, "GET", "/api/queues/nowhere")
        assert status == 404
    finally:
        await other.close()


async def test_a_paused_schedule_stays_paused_across_a_restart_and_resumes(
    tmp_path: Path,
) -> None:
    config = Config(
        host="127.0.0.1", port=0, data_dir=str(tmp_path), metrics_port=0, http_port=0
    ).validate()
    server = build_server(config)
    await server.start()
    try:
        port = server.management.port
        assert port
        root = await brokerd_client.connect(f"brokerd://127.0.0.1:{server.port}", timeout=BOUND)
        await root.declare_queue("beat")
        await root.call(lambda req: bp.ScheduleSet(req, "nightly", "every 3600", "", "beat", b"t"))
        await root.close()
        status, _, _ = await call(port, "POST", "/api/schedules/%2F/nightly/pause", user=None)
        assert status == 200
        (row,) = await get_json(port, "/api/schedules", user=None)
        assert row["paused"] is True and row["next_run"] is None
    finally:
        await server.stop()
    again = build_server(config)
    await again.start()
    try:
        port = again.management.port
        assert port
        (row,) = await get_json(port, "/api/schedules", user=None)
        assert row["paused"] is True
        # A worker declaring it again, unchanged, leaves it paused.
        root = await brokerd_client.connect(f"brokerd://127.0.0.1:{again.port}", timeout=BOUND)
        await root.call(lambda req: bp.ScheduleSet(req, "nightly", "every 3600", "", "beat", b"t"))
        await root.close()
        assert (await get_json(port, "/api/schedules", user=None))[0]["paused"] is True
        before = time.time()
        status, _, _ = await call(port, "POST", "/api/schedules/%2F/nightly/resume", user=None)
        assert status == 200
        (row,) = await get_json(port, "/api/schedules", user=None)
        assert row["paused"] is False and row["next_run"] >= before + 3600 - 1
        status, _, _ = await call(port, "POST", "/api/schedules/%2F/other/pause", user=None)
        assert status == 404
    finally:
        await again.stop()


async def test_a_browser_on_the_broker_port_is_pointed_at_the_management_page(mgmt: Any) -> None:
    server, _root, port = mgmt
    status, _, body = await raw(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400
    assert f"the management page is at http://127.0.0.1:{port}/".encode() in body


async def test_workers_of_another_vhost_are_shown_with_their_vhost(mgmt: Any) -> None:
    server, root, port = mgmt
    await root.call(lambda req: bp.AddVhost(req, "jobs"))
    await root.call(lambda req: bp.SetPermissions(req, "admin", "jobs", ".*", ".*", ".*"))
    assert await get_json(port, "/api/workers") == []  # watches every vhost
    other = await brokerd_client.connect(
        f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}/jobs", timeout=BOUND
    )
    try:
        beat = {"type": "worker-heartbeat", "hostname": "w@jobs", "freq": 2.0,
                "timestamp": time.time()}  # fmt: skip
        assert await other.publish("brokerd.events", "worker.heartbeat", json.dumps(beat).encode())
        for _ in range(200):
            workers = await get_json(port, "/api/workers")
            if workers:
                break
            await asyncio.sleep(0.02)
        assert [(w["vhost"], w["hostname"]) for w in workers] == [("jobs", "w@jobs")]
        # The events queues are the management plane's: not in definitions.
        exported = await get_json(port, "/api/definitions")
        assert all(q["name"] != "brokerd.management.events" for q in exported["queues"])
    finally:
        await other.close()


async def test_expect_100_continue_is_answered_before_the_body(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.big")
    payload = json.dumps({"routing_key": "app.big", "payload": "x" * 5000}).encode()
    auth = _auth(ADMIN)["Authorization"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /api/exchanges/%2F/amq.default/publish HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: {auth}\r\nContent-Length: {len(payload)}\r\n".encode()
            + b"Expect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
        assert interim.startswith(b"HTTP/1.1 100 ")
        writer.write(payload)
        status, _, body = await asyncio.wait_for(_read_response(reader), BOUND)
        assert status == 200 and json.loads(body) == {"routed": True}
    finally:
        writer.close()
    status, _, _ = await raw(port, b"GET / HTTP/1.1\r\nExpect: magic\r\n\r\n")
    assert status == 417


async def test_the_pages_fast_queue_listing_answers_as_the_general_one(
    mgmt: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, root, _port = mgmt
    await root.call(lambda req: bp.AddVhost(req, "b"))
    await root.call(lambda req: bp.SetPermissions(req, "admin", "b", ".*", ".*", ".*"))
    other = await brokerd_client.connect(
        f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}/b", timeout=BOUND
    )
    try:
        for i in (3, 1, 2, 11):
            await root.declare_queue(f"q{i}")
            await root.publish("", f"q{i}", b"x" * i)
        for i in (2, 5):
            await other.declare_queue(f"q{i}")
        api = server.management.api
        me = await api.gate._check_basic(*ADMIN, "127.0.0.1")  # an administrator
        now = server.broker.clock.now()
        monkeypatch.setattr(server.broker.clock, "now", lambda: now)  # ages stand still
        queries: list[dict[str, str]] = [
            {"page": "1"},
            {"page": "1", "page_size": "2", "sort": "name"},
            {"page": "2", "page_size": "2", "sort": "name", "sort_reverse": "true"},
            {"page": "1", "sort": "name", "sort_reverse": "true", "name": "q1"},
            {"page": "1", "page_size": "3", "columns": "vhost,name,messages_ready"},
            {"page": "9", "page_size": "3"},
        ]

        def same() -> None:
            for query in queries:
                for vhost in (None, "/", "b"):
                    fast = api.queue_page(me, vhost, query)
                    assert fast is not None
                    assert fast == shape(api.queues(me, vhost), query), (query, vhost)

        same()
        # The sorted names are kept between requests: a queue deleted and
        # another declared (the same count) shows at once.
        await root.delete_queue("q3")
        await root.declare_queue("q0")
        same()
        await other.delete_queue("q2")
        same()
        assert api.queue_page(me, None, {"page": "1", "sort": "messages_ready"}) is None
        assert api.queue_page(me, None, {"sort": "name"}) is None
    finally:
        await other.close()


async def test_users_created_over_http_log_in_and_their_permissions_apply(mgmt: Any) -> None:
    server, root, port = mgmt
    await root.declare_queue("app.in")
    await root.declare_queue("other.in")
    url = f"127.0.0.1:{server.port}"
    # Tags as RabbitMQ's comma-separated string; 201 for a creation.
    status, _, body = await call(
        port, "PUT", "/api/users/carol", {"password": "carol-pw", "tags": "monitoring,management"}
    )
    assert status == 201, body
    carol = await get_json(port, "/api/users/carol")
    assert carol["tags"] == ["management", "monitoring"]
    # No permissions yet: the login on the broker port is refused on "/".
    with pytest.raises(brokerd_client.BrokerError):
        await brokerd_client.connect(f"brokerd://carol:carol-pw@{url}", timeout=BOUND)
    status, _, body = await call(
        port, "PUT", "/api/permissions/%2F/carol", {"configure": "", "write": "^app\\.", "read": ""}
    )
    assert status == 201, body
    assert await get_json(port, "/api/permissions/%2F/carol") == {
        "user": "carol",
        "vhost": "/",
        "configure": "",
        "write": "^app\\.",
        "read": "",
    }
    client = await brokerd_client.connect(f"brokerd://carol:carol-pw@{url}", timeout=BOUND)
    try:
        with pytest.raises(brokerd_client.AccessRefused):
            await client.publish("", "app.in", b"x")  # amq.default is not ^app\.
        # Widen the write pattern: the open connection follows at once (204: an update).
        status, _, _ = await call(
            port, "PUT", "/api/permissions/%2F/carol", {"configure": "", "write": ".*", "read": ""}
        )
        assert status == 204
        await client.publish("", "app.in", b"x")
        assert (await root.queue_stats("app.in")).ready == 1
        # Cleared: refused again; clearing again is 404.
        status, _, _ = await call(port, "DELETE", "/api/permissions/%2F/carol")
        assert status == 204
        with pytest.raises(brokerd_client.AccessRefused):
            await client.publish("", "other.in", b"x")
        status, _, _ = await call(port, "DELETE", "/api/permissions/%2F/carol")
        assert status == 404
        status, _, _ = await call(port, "GET", "/api/permissions/%2F/carol")
        assert status == 404
    finally:
        await client.close()
    assert (await root.queue_stats("other.in")).ready == 0
    # An update: tags as a list, a new password (the old one stops working).
    status, _, _ = await call(
        port, "PUT", "/api/users/carol", {"password": "new-pw", "tags": ["monitoring"]}
    )
    assert status == 204
    assert (await get_json(port, "/api/users/carol"))["tags"] == ["monitoring"]
    status, _, _ = await call(port, "GET", "/api/overview", user=("carol", "carol-pw"))
    assert status == 401
    status, _, _ = await call(port, "GET", "/api/overview", user=("carol", "new-pw"))
    assert status == 200
    # An update with neither password keeps it; the tags change.
    stored = server.users.get("carol").password_hash
    status, _, _ = await call(port, "PUT", "/api/users/carol", {"tags": ""})
    assert status == 204
    assert server.users.get("carol").password_hash == stored
    assert (await get_json(port, "/api/users/carol"))["tags"] == []


async def test_password_hash_is_stored_as_given(mgmt: Any) -> None:
    server, _root, port = mgmt
    from brokerd.auth.passwords import hash_password

    stored = hash_password("hashed-pw")
    status, _, body = await call(
        port, "PUT", "/api/users/dave", {"password_hash": stored, "tags": ["monitoring"]}
    )
    assert status == 201, body
    assert server.users.get("dave").password_hash == stored
    assert (await get_json(port, "/api/overview", user=("dave", "hashed-pw")))["node"]


async def test_deleting_a_user_over_http_closes_its_connections(mgmt: Any) -> None:
    server, _root, port = mgmt
    url = f"127.0.0.1:{server.port}"
    status, _, _ = await call(port, "PUT", "/api/users/erin", {"password": "erin-pw", "tags": ""})
    assert status == 201
    status, _, _ = await call(
        port, "PUT", "/api/permissions/%2F/erin", {"configure": ".*", "write": ".*", "read": ".*"}
    )
    assert status == 201
    erin = await brokerd_client.connect(f"brokerd://erin:erin-pw@{url}", timeout=BOUND)
    try:
        status, _, _ = await call(port, "DELETE", "/api/users/erin")
        assert status == 204
        await asyncio.wait_for(erin.wait_closed(), BOUND)
    finally:
        await erin.close()
    assert server.users.get("erin") is None
    assert ("erin", "/") not in server.users.permissions
    with pytest.raises(brokerd_client.AuthenticationError):
        await brokerd_client.connect(f"brokerd://erin:erin-pw@{url}", timeout=BOUND)
    status, _, _ = await call(port, "DELETE", "/api/users/erin")
    assert status == 404


async def test_vhosts_are_created_and_deleted_over_http(mgmt: Any) -> None:
    server, _root, port = mgmt
    status, _, _ = await call(port, "PUT", "/api/vhosts/billing")
    assert status == 201
    status, _, _ = await call(port, "PUT", "/api/vhosts/billing", {"description": "x"})
    assert status == 204  # idempotent
    assert "billing" in {v["name"] for v in await get_json(port, "/api/vhosts")}
    status, _, _ = await call(
        port,
        "PUT",
        "/api/permissions/billing/admin",
        {"configure": ".*", "write": ".*", "read": ".*"},
    )
    assert status == 201
    client = await brokerd_client.connect(
        f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}/billing", timeout=BOUND
    )
    try:
        await client.declare_queue("invoices")
        status, _, _ = await call(port, "DELETE", "/api/vhosts/billing")
        assert status == 204
        await asyncio.wait_for(client.wait_closed(), BOUND)
    finally:
        await client.close()
    assert not server.vhosts.exists("billing")
    assert ("admin", "billing") not in server.users.permissions
    status, _, _ = await call(port, "GET", "/api/queues/billing/invoices")
    assert status == 404
    status, _, _ = await call(port, "DELETE", "/api/vhosts/billing")
    assert status == 404
    status, _, body = await call(port, "DELETE", "/api/vhosts/%2F")
    assert status == 400 and b"cannot be deleted" in body
    status, _, _ = await call(
        port, "PUT", "/api/permissions/nowhere/admin", {"configure": "", "write": "", "read": ""}
    )
    assert status == 404


async def test_only_administrators_change_users_permissions_and_vhosts(mgmt: Any) -> None:
    server, _root, port = mgmt
    attempts: list[tuple[str, str, Any]] = [
        ("PUT", "/api/users/mallory", {"password": "m-pw", "tags": "administrator"}),
        ("PUT", "/api/users/manager", {"password": "taken", "tags": "administrator"}),
        ("DELETE", "/api/users/admin", None),
        ("PUT", "/api/permissions/%2F/manager", {"configure": ".*", "write": ".*", "read": ".*"}),
        ("DELETE", "/api/permissions/%2F/admin", None),
        ("GET", "/api/permissions/%2F/admin", None),
        ("PUT", "/api/vhosts/sneaky", None),
        ("DELETE", "/api/vhosts/%2F", None),
    ]
    for who in (MONITOR, MANAGER):
        for method, path, body in attempts:
            status, _, _ = await call(port, method, path, body, user=who)
            assert status == 403, (who, method, path, status)
    assert server.users.get("mallory") is None
    assert server.users.get("admin") is not None
    assert server.users.permission("manager", "/").configure == "^app\\."
    assert not server.vhosts.exists("sneaky")


async def test_bad_user_and_permission_bodies_are_400(mgmt: Any) -> None:
    server, _root, port = mgmt
    bad: list[tuple[str, Any]] = [
        ("/api/users/x", ["not", "an", "object"]),
        ("/api/users/x", {"tags": "monitoring"}),  # a new user needs a password
        ("/api/users/x", {"password": "p", "password_hash": "h", "tags": ""}),
        ("/api/users/x", {"password": 5, "tags": ""}),
        ("/api/users/x", {"password": "pw", "tags": "wizard"}),
        ("/api/users/x", {"password": "pw", "tags": 7}),
        ("/api/users/x", {"password_hash": "not-a-hash", "tags": ""}),
        ("/api/users/x", {"password": "", "tags": ""}),
        ("/api/permissions/%2F/admin", {"configure": ".*", "write": ".*"}),
        ("/api/permissions/%2F/admin", {"configure": "(", "write": ".*", "read": ".*"}),
    ]
    for path, body in bad:
        status, _, reply = await call(port, "PUT", path, body)
        assert status == 400, (path, body, status, reply)
        assert json.loads(reply)["reason"]
    status, _, _ = await call(
        port, "PUT", "/api/permissions/%2F/nobody", {"configure": "", "write": "", "read": ""}
    )
    assert status == 404
    assert server.users.get("x") is None
    assert server.users.permission("admin", "/").configure == ".*"


async def test_one_connection_and_its_channel_by_name_and_closing_it(mgmt: Any) -> None:
    """RabbitMQ's per-connection endpoints: read one by its listed name, its
    channel, a vhost's connections and channels, and DELETE to close it."""
    server, _root, port = mgmt
    url = f"127.0.0.1:{server.port}"
    worker = await brokerd_client.connect(
        f"brokerd://{MANAGER[0]}:{MANAGER[1]}@{url}", timeout=BOUND
    )
    try:
        [row] = [c for c in await get_json(port, "/api/connections") if c["user"] == MANAGER[0]]
        path = "/api/connections/" + quote(row["name"], safe="")
        assert await get_json(port, path) == row
        [channel] = await get_json(port, path + "/channels")
        assert channel["connection_details"]["name"] == row["name"]
        assert channel in await get_json(port, "/api/channels")
        channel_path = "/api/channels/" + quote(channel["name"], safe="")
        assert await get_json(port, channel_path) == channel
        assert row in await get_json(port, "/api/vhosts/%2F/connections")
        assert channel in await get_json(port, "/api/vhosts/%2F/channels")
        status, _, _ = await call(port, "GET", "/api/vhosts/nowhere/connections")
        assert status == 404
        # A user sees and closes only its own connections; others' do not exist for it.
        listed = await get_json(port, "/api/connections")
        admin_row = next(c for c in listed if c["user"] == "admin")
        admin_path = "/api/connections/" + quote(admin_row["name"], safe="")
        for method in ("GET", "DELETE"):
            status, _, _ = await call(port, method, admin_path, user=MANAGER)
            assert status == 404
        assert await get_json(port, path, user=MANAGER) == row
        # Monitoring sees every connection but closes none but its own.
        assert await get_json(port, admin_path, user=MONITOR) == admin_row
        status, _, _ = await call(port, "DELETE", admin_path, user=MONITOR)
        assert status == 403
        status, _, _ = await call(port, "DELETE", path, headers={"X-Reason": "moving this worker"})
        assert status == 204
        error = await asyncio.wait_for(worker.wait_closed(), BOUND)
        assert "moving this worker" in str(error)
    finally:
        await worker.close()
    for p in (path, channel_path, path + "/channels"):
        status, _, _ = await call(port, "GET", p)
        assert status == 404
    status, _, _ = await call(port, "DELETE", path)
    assert status == 404
