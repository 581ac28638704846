"""Screenshots of the management page's screens for docs/ (not a test).

    python tests/browser/take_screenshots.py [--out docs/img]

Starts a broker in this process with a few queues, a dead-letter queue, a
binding, a consumer and a trickle of publishes (so the rates and the chart
have something to show), a ``brokerd-worker`` with events on running a small
shop app (a schedule, tasks that succeed and one that fails), logs in as an
administrator in headless Chromium and saves one PNG per screen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

import brokerd_client
import brokerd_protocol as bp
from brokerd.cli import build_server
from brokerd.config import Config
from brokerd_client.tasks import App
from brokerd_client.tasks.testing import WorkerHandle

SCREENS = (
    ("overview", "#/overview"),
    ("queues", "#/queues"),
    ("queue", "#/queue/%2F/orders.dead"),
    ("exchanges", "#/exchanges"),
    ("connections", "#/connections"),
    ("users", "#/users"),
    ("tasks", "#/tasks"),
)

#: The worker's app: what a small shop's tasks look like on the tasks screen.
SHOP_APP = """
from datetime import timedelta

from brokerd_client.tasks import App

app = App("shop")
app.conf.worker_send_task_events = True
app.conf.beat_schedule = {
    "nightly-report": {"task": "shop.report", "schedule": timedelta(hours=24)},
}


@app.task(name="shop.send_receipt")
def send_receipt(order_id: int) -> str:
    return f"receipt for order {order_id} sent"


@app.task(name="shop.charge_card")
def charge_card(order_id: int) -> None:
    raise ValueError(f"card declined for order {order_id}")


@app.task(name="shop.report")
def report() -> int:
    return 42
"""


def send_shop_tasks(url: str) -> None:
    """Blocking (the SDK's producer): run in a thread, off the broker's loop."""
    producer = App("shop", broker=url)
    try:
        results = [producer.send_task("shop.send_receipt", args=(n,)) for n in (1041, 1042)]
        results.append(producer.send_task("shop.charge_card", args=(1043,)))
        for r in results:
            r.get(timeout=30, propagate=False)
    finally:
        producer.close()


async def run_shop(url: str, workdir: Path) -> WorkerHandle:
    """A worker with events on (its tasks are sent once the page watches events)."""
    (workdir / "shopapp.py").write_text(SHOP_APP)
    handle = WorkerHandle(
        "shopapp", url, "--without-banner", "-c", "2", "-n", "shop@box",
        workdir=workdir, env={"PYTHONPATH": str(workdir)},
    )  # fmt: skip
    await asyncio.to_thread(handle.wait_ready)
    return handle


async def trickle(client: brokerd_client.AsyncClient, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for key in ("orders", "emails", "orders"):
            await client.publish("", key, b'{"id": 1}')
        await asyncio.sleep(0.05)


async def main(out: Path) -> None:
    config = Config(host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0, http_port=0)
    server = build_server(config.validate())
    await server.start()
    url = f"brokerd://127.0.0.1:{server.port}"
    root = await brokerd_client.connect(url)
    await root.call(lambda req: bp.AddUser(req, "admin", "admin-pw", ["administrator"]))
    await root.call(lambda req: bp.SetPermissions(req, "admin", "/", ".*", ".*", ".*"))
    await root.call(lambda req: bp.AddUser(req, "grafana", "pw", ["monitoring"]))
    await root.close()
    client = await brokerd_client.connect(
        f"brokerd://admin:admin-pw@127.0.0.1:{server.port}", client_name="screenshots"
    )
    await client.declare_queue("orders.dead")
    await client.declare_queue("orders", dead_letter_queue="orders.dead")
    await client.declare_queue("emails")
    await client.declare_queue("reports", lease=600)
    await client.declare_exchange("events", "topic")
    await client.bind("emails", "events", "user.*.signup")
    for i in range(3):
        await client.publish("", "orders", b'{"id": %d, "poison": true}' % i)
    consumer = await client.consume("orders", prefetch=3)
    for _ in range(3):
        d = await consumer.__anext__()
        await d.reject("ValueError: bad order")
    await consumer.cancel()
    worker = await client.consume("orders", prefetch=50)

    async def drain() -> None:
        async for d in worker:
            await d.ack()

    stop = asyncio.Event()
    tasks = [asyncio.create_task(trickle(client, stop)), asyncio.create_task(drain())]
    chromium = shutil.which("chromium")
    workdir = Path(tempfile.mkdtemp(prefix="screenshots-"))
    shop: WorkerHandle | None = None
    try:
        shop_url = f"brokerd://admin:admin-pw@127.0.0.1:{server.port}"
        shop = await run_shop(shop_url, workdir)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1200, "height": 720})
            base = f"http://127.0.0.1:{server.management.port}/"
            await page.goto(base)
            await page.fill("#login-user", "admin")
            await page.fill("#login-password", "admin-pw")
            await page.click("#login-submit")
            await page.wait_for_selector("#who >> text=admin")
            # The tasks screen's first poll attaches the broker to the workers'
            # events: open it before the tasks run, so their events are seen.
            await page.goto(base + "#/tasks")
            await page.wait_for_selector("#workers-table >> text=shop@box", timeout=30_000)
            await asyncio.to_thread(send_shop_tasks, shop_url)
            await asyncio.sleep(16)  # three rate samples for the chart
            for name, fragment in SCREENS:
                await page.goto(base + fragment)
                await asyncio.sleep(2.5)  # one poll
                if name == "queue":
                    await page.click("#peek")
                    await asyncio.sleep(1)
                await page.screenshot(path=str(out / f"management-{name}.png"))
                print("wrote", out / f"management-{name}.png")
            await browser.close()
    finally:
        if shop is not None:
            shop.kill()
        shutil.rmtree(workdir, ignore_errors=True)
        stop.set()
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await client.close()
        await server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    out = p.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(out))
