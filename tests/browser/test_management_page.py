"""The management page in headless Chromium (Playwright driving Debian's
``chromium``): log in, watch a queue's ready count follow a publish, purge it,
publish and redrive from the page, be refused as a monitoring user, revoke a
running task and retry a failed one (buttons a monitoring user does not get).

Skipped, saying why, when Playwright or Chromium is missing; mandatory (a
failure) with ``BROKERD_BROWSER_TESTS=1``, as CI runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import brokerd_client
import brokerd_protocol as bp
from brokerd.cli import build_server
from brokerd.config import Config
from brokerd.server import BrokerServer
from brokerd_client import AsyncClient

try:
    from playwright.async_api import Page, async_playwright, expect
except ImportError:  # pragma: no cover - depends on the environment
    async_playwright = None

BOUND = 10.0
WAIT_MS = 15_000
REQUIRED = os.environ.get("BROKERD_BROWSER_TESTS") == "1"
ADMIN = ("admin", "admin-pw")
MONITOR = ("watcher", "watcher-pw")


def _chromium() -> str | None:
    for candidate in (os.environ.get("BROKERD_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
    return None


def _missing() -> str | None:
    if async_playwright is None:
        return "playwright is not installed (pip install -e '.[browser]')"
    if _chromium() is None:
        return "no chromium on PATH (apt-get install -y chromium, or set BROKERD_CHROMIUM)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    why = _missing()
    if why is not None:
        if REQUIRED:
            pytest.fail(f"BROKERD_BROWSER_TESTS=1 but {why}")
        pytest.skip(why)
    assert async_playwright is not None
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=_chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield b
        finally:
            await b.close()


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[tuple[BrokerServer, AsyncClient, str]]:
    config = Config(host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0, http_port=0)
    server = build_server(config.validate())
    await server.start()
    root = await brokerd_client.connect(f"brokerd://127.0.0.1:{server.port}", timeout=BOUND)
    try:
        for (name, password), tags in ((ADMIN, ["administrator"]), (MONITOR, ["monitoring"])):
            await root.call(lambda req, n=name, p=password, t=tags: bp.AddUser(req, n, p, t))
        await root.call(lambda req: bp.SetPermissions(req, "admin", "/", ".*", ".*", ".*"))
        await root.close()
        root = await brokerd_client.connect(
            f"brokerd://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{server.port}", timeout=BOUND
        )
        yield server, root, f"http://127.0.0.1:{server.management.port}/"
    finally:
        await root.close()
        await server.stop()


async def log_in(page: Page, url: str, user: tuple[str, str]) -> None:
    await page.goto(url)
    await page.fill("#login-user", user[0])
    await page.fill("#login-password", user[1])
    await page.click("#login-submit")
    await expect(page.locator("#who")).to_contain_text(user[0], timeout=WAIT_MS)


async def test_log_in_watch_a_publish_and_purge(browser: Any) -> None:
    async with running() as (_server, root, url):
        await root.declare_queue("orders")
        page = await browser.new_page()
        await log_in(page, url, ADMIN)
        await page.click("nav a[data-view=queues]")
        ready = page.locator("#queues-table tr[data-queue=orders] td.ready")
        await expect(ready).to_have_text("0", timeout=WAIT_MS)
        for _ in range(3):
            await root.publish("", "orders", b"x")
        await expect(ready).to_have_text("3", timeout=WAIT_MS)

        await page.click("#queues-table tr[data-queue=orders] a")
        await expect(page.locator("#queue-ready b")).to_have_text("3", timeout=WAIT_MS)
        await page.fill("#publish-payload", "from the page")
        await page.click("#publish")
        await expect(page.locator("#queue-ready b")).to_have_text("4", timeout=WAIT_MS)
        page.on("dialog", lambda dialog: dialog.accept())
        await page.click("#purge")
        await expect(page.locator("#queue-ready b")).to_have_text("0", timeout=WAIT_MS)
        assert (await root.queue_stats("orders")).ready == 0


async def test_redrive_from_the_page(browser: Any) -> None:
    async with running() as (_server, root, url):
        await root.declare_queue("dead")
        await root.declare_queue("work", dead_letter_queue="dead")
        await root.publish("", "work", b"job")
        consumer = await root.consume("work", prefetch=1)
        delivery = await consumer.__anext__()
        await delivery.reject("broken")
        await consumer.cancel()
        page = await browser.new_page()
        await log_in(page, url, ADMIN)
        await page.goto(url + "#/queue/%2F/dead")
        await expect(page.locator("#queue-ready b")).to_have_text("1", timeout=WAIT_MS)
        await page.click("#redrive")
        await expect(page.locator("#notice")).to_contain_text("moved 1", timeout=WAIT_MS)
        assert (await root.queue_stats("work")).ready == 1


async def test_monitoring_user_is_refused_a_purge(browser: Any) -> None:
    async with running() as (_server, root, url):
        await root.declare_queue("orders")
        await root.publish("", "orders", b"x")
        page = await browser.new_page()
        await log_in(page, url, MONITOR)
        await page.goto(url + "#/queue/orders")
        await expect(page.locator("#queue-ready b")).to_have_text("1", timeout=WAIT_MS)
        page.on("dialog", lambda dialog: dialog.accept())
        await page.click("#purge")
        await expect(page.locator("#notice")).to_contain_text("refused", timeout=WAIT_MS)
        assert (await root.queue_stats("orders")).ready == 1


async def test_workers_and_finished_tasks_are_shown(browser: Any) -> None:
    async with running() as (server, root, url):
        page = await browser.new_page()
        await log_in(page, url, ADMIN)
        await page.goto(url + "#/tasks")
        # The screen's first poll attaches the broker to the workers' events.
        await expect(page.locator("#workers-table")).to_be_visible(timeout=WAIT_MS)
        for _ in range(200):
            if "brokerd.management.events" in server.broker.queues:
                break
            await asyncio.sleep(0.05)
        now = time.time()
        for key, event in (
            ("worker.heartbeat", {"type": "worker-heartbeat", "hostname": "w1@box", "pid": 7,
                                  "freq": 2.0, "active": 0, "processed": 1, "timestamp": now,
                                  "pool": "threads", "concurrency": 3}),
            ("task.succeeded", {"type": "task-succeeded", "hostname": "w1@box", "uuid": "t-42",
                                "result": "5", "runtime": 0.01, "timestamp": now}),
            ("task.started", {"type": "task-started", "hostname": "w1@box", "uuid": "t-43",
                              "timestamp": now}),
        ):  # fmt: skip
            await root.publish("brokerd.events", key, json.dumps(event).encode())
        await expect(page.locator("#workers-table tbody")).to_contain_text(
            "w1@box", timeout=WAIT_MS
        )
        await expect(page.locator("#workers-table tbody")).to_contain_text("online")
        await expect(page.locator("#workers-table tbody")).to_contain_text("threads")
        await expect(page.locator("#tasks-table tbody")).to_contain_text("t-42", timeout=WAIT_MS)
        await expect(page.locator("#tasks-table tbody")).to_contain_text("SUCCESS")
        # A running task can be revoked from its row; a finished one has no button.
        await expect(page.locator('button[data-task="t-42"]')).to_have_count(0)
        await page.click('button[data-action="revoke"][data-task="t-43"]')
        await expect(page.locator("#notice")).to_contain_text("revoked: t-43", timeout=WAIT_MS)
        assert (await root.result_get(["t-43"]))["t-43"][0] == "REVOKED"


async def test_retry_a_failed_task_from_the_page_and_monitoring_users_see_no_button(
    browser: Any,
) -> None:
    from brokerd_client.tasks.serialization import encode_error, pack_task_message

    async with running() as (_server, root, url):
        await root.declare_queue("jobs")
        message = pack_task_message("", "jobs", {"task": "app.t", "id": "t-f"}, b"{}", 0)
        error = ("ValueError", "builtins", "bad", "Traceback ...\nValueError: bad")
        await root.result_set("t-f", "FAILURE", encode_error(*error, "json", message))
        await root.result_set("t-bare", "FAILURE", encode_error(*error, "json"))
        retry = 'button[data-action="retry"][data-task="t-f"]'

        watcher = await browser.new_page()
        await log_in(watcher, url, MONITOR)
        await watcher.goto(url + "#/tasks")
        await expect(watcher.locator("#tasks-table tbody")).to_contain_text("t-f", timeout=WAIT_MS)
        await expect(watcher.locator("#tasks-table button")).to_have_count(0)

        page = await browser.new_page()
        await log_in(page, url, ADMIN)
        await page.goto(url + "#/tasks")
        await expect(page.locator("#tasks-table tbody")).to_contain_text("t-bare", timeout=WAIT_MS)
        # Stored without its message: no button for it.
        await expect(page.locator('button[data-task="t-bare"]')).to_have_count(0)
        await page.click(retry)
        await expect(page.locator("#notice")).to_contain_text("sent again: t-f", timeout=WAIT_MS)
        assert (await root.queue_stats("jobs")).ready == 1
        assert await root.result_get(["t-f"]) == {}
