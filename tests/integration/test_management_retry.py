"""POST /api/tasks/{vhost}/{id}/retry against a real broker (in this process,
port 0): the stored message is sent again as it was, the FAILURE is removed
so the new run's states are stored from nothing, and every refusal (tags,
permissions, CSRF, not failed, not retriable, routes nowhere, unknown)
changes nothing. The end-to-end run with a real worker is in
tests/tasks/test_e2e_task_retry.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from test_management_api import ADMIN, MANAGER, MONITOR, NOTAG, call, mgmt

import brokerd_client
from brokerd_client import AsyncClient
from brokerd_client.tasks.serialization import encode_error, pack_task_message

__all__ = ["mgmt"]  # the fixture, imported to be used here

ERROR = ("ValueError", "builtins", "bad input", "Traceback ...\nValueError: bad input")
HEADERS = {"task": "app.work", "id": "t-1", "retries": 0, "x-death-queue": "app.jobs"}
BODY = b'{"args": [1, 2], "kwargs": {}}'


async def failed(
    root: AsyncClient,
    task_id: str,
    exchange: str = "",
    key: str = "app.jobs",
    *,
    with_message: bool = True,
) -> bytes:
    """Store a FAILURE as a native worker does; its payload."""
    message = pack_task_message(exchange, key, HEADERS, BODY, 0) if with_message else None
    payload = encode_error(*ERROR, "json", message)
    await root.result_set(task_id, "FAILURE", payload)
    return payload


def retry_path(task_id: str) -> str:
    return f"/api/tasks/%2F/{task_id}/retry"


async def test_a_retry_sends_the_message_again_and_removes_the_failure(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.jobs")
    await failed(root, "t-1")
    status, _, body = await call(port, "POST", retry_path("t-1"))
    assert (status, json.loads(body)) == (
        200,
        {"retried": "t-1", "exchange": "amq.default", "routing_key": "app.jobs"},
    )

    consumer = await root.consume("app.jobs", prefetch=1)
    delivery = await consumer.next(timeout=10)
    assert delivery.body == BODY
    assert delivery.message_id == "t-1"
    assert delivery.headers == {"task": "app.work", "id": "t-1", "retries": 0}
    assert (delivery.exchange, delivery.routing_key) == ("", "app.jobs")
    await delivery.ack()
    # The failure is gone: the new run's STARTED is stored, then its outcome.
    assert await root.result_get(["t-1"]) == {}
    await root.result_set("t-1", "STARTED", b"")
    assert (await root.result_get(["t-1"]))["t-1"][0] == "STARTED"
    await root.result_set("t-1", "SUCCESS", b'j{"result": 3}')
    status, _, body = await call(port, "POST", retry_path("t-1"))
    assert status == 409 and "SUCCESS" in json.loads(body)["reason"]


async def test_a_waiter_on_the_old_id_is_answered_by_the_new_run(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.jobs")
    await failed(root, "t-2")
    status, _, _ = await call(port, "POST", retry_path("t-2"))
    assert status == 200
    wait = asyncio.ensure_future(root.result_wait("t-2", 10.0))
    await asyncio.sleep(0)  # its ResultWait is queued, ahead of the ResultSet below
    await root.result_set("t-2", "SUCCESS", b'j{"result": "again"}')
    assert await wait == ("SUCCESS", b'j{"result": "again"}')


async def test_a_retry_publishes_to_a_named_exchange_in_the_tasks_vhost(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_exchange("app.tasks", "direct")
    await root.declare_queue("app.jobs")
    await root.bind("app.jobs", "app.tasks", "work")
    await failed(root, "app.t-3", "app.tasks", "work")
    # A manager may: the task id and the exchange are within its patterns.
    status, _, body = await call(port, "POST", retry_path("app.t-3"), user=MANAGER)
    assert status == 200, body
    consumer = await root.consume("app.jobs", prefetch=1)
    delivery = await consumer.next(timeout=10)
    assert (delivery.exchange, delivery.routing_key, delivery.body) == ("app.tasks", "work", BODY)
    await delivery.ack()


@pytest.mark.parametrize(
    ("user", "task_id", "answer", "why"),
    [
        (MONITOR, "app.t", 403, "may only read"),
        (NOTAG, "app.t", 401, ""),  # no management access at all
        (MANAGER, "t-other", 403, "task 't-other'"),  # outside its task pattern
        (MANAGER, "app.t", 403, "exchange 'amq.default'"),  # may not publish there
    ],
)
async def test_a_retry_without_permission_is_refused_and_changes_nothing(
    mgmt: Any, user: tuple[str, str], task_id: str, answer: int, why: str
) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.jobs")
    payload = await failed(root, task_id)
    status, _, body = await call(port, "POST", retry_path(task_id), user=user)
    assert status == answer and why in json.loads(body)["reason"]
    assert (await root.queue_stats("app.jobs")).ready == 0
    assert await root.result_get([task_id]) == {task_id: ("FAILURE", payload)}


async def test_a_cookie_session_needs_the_csrf_token_to_retry(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.jobs")
    await failed(root, "t-4")
    _, headers, body = await call(
        port, "POST", "/api/login", {"username": ADMIN[0], "password": ADMIN[1]}, user=None
    )
    session = {"Cookie": headers["set-cookie"].split(";")[0]}
    status, _, _ = await call(port, "POST", retry_path("t-4"), user=None, headers=session)
    assert status == 403
    assert (await root.queue_stats("app.jobs")).ready == 0
    csrf = {**session, "X-CSRF-Token": json.loads(body)["csrf_token"]}
    status, _, _ = await call(port, "POST", retry_path("t-4"), user=None, headers=csrf)
    assert status == 200
    assert (await root.queue_stats("app.jobs")).ready == 1


async def test_what_cannot_be_retried_is_refused_and_changes_nothing(mgmt: Any) -> None:
    _server, root, port = mgmt
    await root.declare_queue("app.jobs")
    # No stored result.
    status, _, body = await call(port, "POST", retry_path("nobody"))
    assert status == 404 and "no stored result" in json.loads(body)["reason"]
    # Not failed.
    await root.result_set("t-ok", "SUCCESS", b'j{"result": 1}')
    status, _, body = await call(port, "POST", retry_path("t-ok"))
    assert status == 409 and "only a failed task" in json.loads(body)["reason"]
    # A FAILURE stored without its message (a Celery worker's, a canvas task's).
    bare = await failed(root, "t-bare", with_message=False)
    status, _, body = await call(port, "POST", retry_path("t-bare"))
    assert status == 409 and "without the task's message" in json.loads(body)["reason"]
    assert await root.result_get(["t-bare"]) == {"t-bare": ("FAILURE", bare)}
    # Its queue is gone: nothing to send it to.
    lost = await failed(root, "t-lost", key="app.gone")
    status, _, body = await call(port, "POST", retry_path("t-lost"))
    assert status == 409 and "routes to no queue" in json.loads(body)["reason"]
    assert await root.result_get(["t-lost"]) == {"t-lost": ("FAILURE", lost)}
    # An unknown vhost.
    status, _, _ = await call(port, "POST", "/api/tasks/nowhere/t-1/retry")
    assert status == 404
    assert (await root.queue_stats("app.jobs")).ready == 0


async def test_a_retry_in_another_vhost_stays_in_that_vhost(mgmt: Any) -> None:
    server, root, port = mgmt
    assert (await call(port, "PUT", "/api/vhosts/billing"))[0] == 201
    perms = {"configure": ".*", "write": ".*", "read": ".*"}
    assert (await call(port, "PUT", "/api/permissions/billing/admin", perms))[0] == 201
    client = await brokerd_client.connect(
        f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}/billing", timeout=10
    )
    try:
        await client.declare_exchange("tasks", "direct")
        await client.declare_queue("jobs")
        await client.bind("jobs", "tasks", "work")
        await root.declare_queue("jobs")  # the same name in "/": must stay empty
        await failed(client, "t-v", "tasks", "work")
        status, _, _ = await call(port, "POST", retry_path("t-v"))
        assert status == 404  # not a task of "/"
        status, _, body = await call(port, "POST", "/api/tasks/billing/t-v/retry")
        assert status == 200, body
        consumer = await client.consume("jobs", prefetch=1)
        delivery = await consumer.next(timeout=10)
        assert (delivery.exchange, delivery.routing_key, delivery.message_id) == (
            "tasks",
            "work",
            "t-v",
        )
        await delivery.ack()
        assert await client.result_get(["t-v"]) == {}
        assert (await root.queue_stats("jobs")).ready == 0
    finally:
        await client.close()
