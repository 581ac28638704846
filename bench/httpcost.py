"""What one poll of the management API costs the broker, in CPU.

    python -m bench.httpcost [--queues 10 100 1000] [--polls 200]
    python -m bench.httpcost --w1 [--count 50000] [--rounds 2]

Starts brokerd (a child process, SQLite in a temp dir, ``--http-port 0``),
declares N durable queues with a message each, then sends ``--polls`` GET
/api/queues (and /api/overview) on one keep-alive connection and reads the
broker process's CPU time (``/proc/<pid>/stat``, user + system) before and
after. The figure is broker CPU per request, which does not depend on this
process (the client) sharing the machine; the page polls two or three
endpoints every 2 s, so its cost per second is about that figure times 1.5.

``--w1``: W1's shape (one producer publishing 256-byte messages with confirms
in batches of 100 to a durable queue while one consumer acks each), run
alternately without and with a poller asking for /api/overview, /api/rates
and the page's /api/queues page every second, as a page left open and a
monitoring script would; prints msg/s and the broker's CPU per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import brokerd_client

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, int]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return int(head.split(b" ")[1]), length


async def measure(http_port: int, pid: int, path: str, polls: int) -> tuple[float, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    try:
        await _request(reader, writer, path)  # warm-up
        before = cpu_seconds(pid)
        size = 0
        for _ in range(polls):
            status, size = await _request(reader, writer, path)
            assert status == 200, status
        return (cpu_seconds(pid) - before) / polls, size
    finally:
        writer.close()


def start_broker(tmp: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """brokerd in ``tmp``: the process, its broker port and its HTTP port."""
    port_file = Path(tmp) / "port"
    cmd = [sys.executable, "-m", "brokerd", "--port", "0", "--data-dir", tmp]
    cmd += ["--port-file", str(port_file), "--metrics-port", "0", "--http-port", "0"]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"])
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("brokerd did not start")
        time.sleep(0.05)
    http_port = int(Path(str(port_file) + ".http").read_text())
    return proc, int(port_file.read_text()), http_port


async def load_and_measure(
    port: int, http_port: int, pid: int, queues: int, polls: int, paths: list[str]
) -> None:
    client = await brokerd_client.connect(f"brokerd://127.0.0.1:{port}")
    for i in range(queues):
        await client.declare_queue(f"q{i:05d}")
        await client.publish("", f"q{i:05d}", b"x" * 100)
    await client.close()
    for path in paths:
        per, size = await measure(http_port, pid, path, polls)
        print(
            f"{queues:>6} queues  {path[:40]:<40} {per * 1e3:8.3f} ms CPU per request  "
            f"{size / 1024:8.1f} KiB"
        )


#: The full list, the page's own request (one page of its columns), the overview.
PATHS = (
    "/api/queues",
    "/api/queues?page=1&page_size=100&sort=name&columns=name,messages_ready,"
    "messages_unacknowledged,messages_delayed,consumers,oldest_ready_age,"
    "message_stats.publish_details.rate,message_stats.deliver_get_details.rate",
    "/api/overview",
)


def run(queues: int, polls: int, paths: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="httpcost-") as tmp:
        proc, port, http_port = start_broker(tmp)
        try:
            asyncio.run(load_and_measure(port, http_port, proc.pid, queues, polls, paths))
        finally:
            proc.terminate()
            proc.wait(30)


async def _w1(port: int, http_port: int, count: int, polled: bool) -> float:
    client = await brokerd_client.connect(f"brokerd://127.0.0.1:{port}")
    await client.declare_queue("w1")
    await client.purge_queue("w1")
    consumer = await client.consume("w1", prefetch=500)
    stop = asyncio.Event()

    async def poll() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        try:
            while not stop.is_set():
                for path in ("/api/overview", "/api/rates", PATHS[1]):
                    await _request(reader, writer, path)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            writer.close()

    async def consume() -> None:
        got = 0
        async for d in consumer:
            d.ack_nowait()
            got += 1
            if got == count:
                return

    poller = asyncio.create_task(poll()) if polled else None
    started = time.perf_counter()
    receiving = asyncio.create_task(consume())
    body = b"x" * 256
    for start in range(0, count, 100):
        await client.publish_many(("", "w1", body) for _ in range(min(100, count - start)))
    await receiving
    elapsed = time.perf_counter() - started
    stop.set()
    if poller is not None:
        await poller
    await consumer.cancel()
    await client.close()
    return count / elapsed


def run_w1(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="httpcost-w1-") as tmp:
        proc, port, http_port = start_broker(tmp)
        try:
            results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(rounds):
                for polled in (False, True):
                    before = cpu_seconds(proc.pid)
                    rate = asyncio.run(_w1(port, http_port, count, polled))
                    cpu = (cpu_seconds(proc.pid) - before) / count
                    results[polled].append((rate, cpu))
                    print(
                        f"W1 {'polled' if polled else 'quiet '}  {rate:9,.0f} msg/s  "
                        f"broker {cpu * 1e6:6.1f} us CPU per message"
                    )
            for polled, rows in results.items():
                rates = [r for r, _ in rows]
                print(
                    f"{'polled' if polled else 'quiet '} mean {sum(rates) / len(rates):9,.0f} msg/s"
                )
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queues", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--polls", type=int, default=200)
    p.add_argument("--w1", action="store_true", help="W1 with and without polling")
    p.add_argument("--count", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--paths", nargs="+", default=list(PATHS), help="GET paths to measure")
    args = p.parse_args()
    if args.w1:
        run_w1(args.count, args.rounds)
        return
    for n in args.queues:
        run(n, args.polls, args.paths)


if __name__ == "__main__":
    main()
