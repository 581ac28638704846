"""What one poll of the management API costs the broker, in CPU.

    python -m bench.httpcost [--queues 10 100 1000] [--polls 200]
    python -m bench.httpcost --w1 [--count 50000] [--rounds 2]
    python -m bench.httpcost --callgrind [--queues 1000 100 1] [--count 40000] [--rounds 2]

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
monitoring script would; prints msg/s and the broker's CPU per message. On a
shared machine both swing by ±20% from run to run, more than polling costs.

``--callgrind``: the figure that does resolve it, in instructions
(``bench/callgrind.py``). For each ``--queues`` count: W1's real msg/s R
natively; then brokerd under callgrind (uvloop), where one poll round is
counted alone on a broker in W1's state, and W1 runs ``--count`` messages
quiet and polled (one round per R messages consumed, i.e. per second of the
broker's real work), ``--rounds`` times each, alternating. Prints instructions
per message, the A/B difference, and a round's cost as W1 messages' worth and
as a share of a second of W1. docs/management.md has the method and figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import brokerd_client

from . import callgrind

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


def start_broker(
    tmp: str, wrap: list[str] | None = None, timeout: float = 30
) -> tuple[subprocess.Popen[bytes], int, int]:
    """brokerd in ``tmp``: the process, its broker port and its HTTP port.

    ``wrap`` is an argv prefix the broker runs under (callgrind's)."""
    port_file = Path(tmp) / "port"
    cmd = [sys.executable, "-m", "brokerd", "--port", "0", "--data-dir", tmp]
    cmd += ["--port-file", str(port_file), "--metrics-port", "0", "--http-port", "0"]
    proc = subprocess.Popen([*(wrap or []), *cmd, "--log-level", "warning"])
    deadline = time.monotonic() + timeout
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


#: The columns the page's queues screen asks for (``QUEUE_COLUMNS`` in app.js).
PAGE_COLUMNS = (
    "vhost,name,messages_ready,messages_unacknowledged,messages_delayed,consumers,"
    "oldest_ready_age,message_stats.publish_details.rate,message_stats.deliver_get_details.rate"
)
#: The queues screen's request, as app.js builds it (first page of 100, by name).
PAGE_QUEUES = (
    f"/api/queues?page=1&page_size=100&sort=name&sort_reverse=false&columns={PAGE_COLUMNS}"
)

#: The full list, the page's own request (one page of its columns), the overview
#: and the rates history (the overview screen's chart).
PATHS = ("/api/queues", PAGE_QUEUES, "/api/overview", "/api/rates")

#: One poll round: what the overview screen asks for (/api/overview and
#: /api/rates) and what the queues screen asks for. The page polls one screen's
#: requests every 2 s (``POLL_MS``); a round a second of both screens' requests is
#: four times that, so it also covers a monitoring script polling beside the page.
POLL_ROUND = ("/api/overview", "/api/rates", PAGE_QUEUES)


def run(queues: int, polls: int, paths: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="httpcost-") as tmp:
        proc, port, http_port = start_broker(tmp)
        try:
            asyncio.run(load_and_measure(port, http_port, proc.pid, queues, polls, paths))
        finally:
            proc.terminate()
            proc.wait(30)


async def _w1(
    port: int, http_port: int, count: int, polled: bool, every: int | None = None
) -> tuple[float, int]:
    """W1's shape for ``count`` messages: msg/s and the poll rounds made.

    With ``polled``, a poller sends ``POLL_ROUND`` once per wall-clock second
    or, with ``every``, once each time the consumer has received another
    ``every`` messages (poll rounds paced by the broker's work rather than the
    clock, for a broker slowed by callgrind). Each round on a new keep-alive
    connection: under callgrind a round's gap is longer than the broker's idle
    timeout (60 s), and a fresh connection a round is the same in both modes
    (it costs the broker a little more than the page's reused one).
    """
    client = await brokerd_client.connect(f"brokerd://127.0.0.1:{port}")
    await client.declare_queue("w1")
    await client.purge_queue("w1")
    consumer = await client.consume("w1", prefetch=100)
    stop = asyncio.Event()
    due = asyncio.Event()
    owed = 0
    rounds = 0

    async def poll() -> None:
        nonlocal owed, rounds
        while True:
            if every is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                owed += not stop.is_set()
            else:
                await due.wait()
                due.clear()
            while owed:
                owed -= 1
                await _poll_rounds(http_port, 1)
                rounds += 1
            if stop.is_set():
                return

    async def consume() -> None:
        nonlocal owed
        got = 0
        async for d in consumer:
            d.ack_nowait()
            got += 1
            if every is not None and polled and got % every == 0:
                owed += 1
                due.set()
            if got == count:
                return

    poller = asyncio.create_task(poll()) if polled else None
    started = time.perf_counter()
    receiving = asyncio.create_task(consume())
    body = b"x" * 256
    for start in range(0, count, 100):
        await client.publish_many(("", "w1", body) for _ in range(min(100, count - start)))
    await receiving
    # A round trip, so the broker has handled the last ack before the clock stops.
    await client.declare_queue("w1")
    elapsed = time.perf_counter() - started
    stop.set()
    due.set()
    if poller is not None:
        await poller
    await consumer.cancel()
    await client.close()
    return count / elapsed, rounds


def run_w1(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="httpcost-w1-") as tmp:
        proc, port, http_port = start_broker(tmp)
        try:
            results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(rounds):
                for polled in (False, True):
                    before = cpu_seconds(proc.pid)
                    rate, _ = asyncio.run(_w1(port, http_port, count, polled))
                    cpu = (cpu_seconds(proc.pid) - before) / count
                    results[polled].append((rate, cpu))
                    print(
                        f"W1 {'polled' if polled else 'quiet '}  {rate:9,.0f} msg/s  "
                        f"broker {cpu * 1e6:6.1f} us CPU per message"
                    )
            for polled, rows in results.items():
                rates = sorted(r for r, _ in rows)
                cpus = sorted(c for _, c in rows)
                print(
                    f"{'polled' if polled else 'quiet '} median {statistics.median(rates):9,.0f} "
                    f"msg/s ({rates[0]:,.0f}-{rates[-1]:,.0f}), broker CPU per message median "
                    f"{statistics.median(cpus) * 1e6:.1f} us ({cpus[0] * 1e6:.1f}-"
                    f"{cpus[-1] * 1e6:.1f})"
                )
        finally:
            proc.terminate()
            proc.wait(30)


async def _declare_queues(port: int, queues: int) -> None:
    """``queues`` queues in all: W1's own and ``queues - 1`` others holding a
    message each (what the page lists and the overview counts)."""
    client = await brokerd_client.connect(f"brokerd://127.0.0.1:{port}")
    await client.declare_queue("w1")
    names = [f"q{i:05d}" for i in range(queues - 1)]
    for name in names:
        await client.declare_queue(name)
    for start in range(0, len(names), 100):
        await client.publish_many(("", name, b"x" * 100) for name in names[start : start + 100])
    await client.close()


async def _poll_rounds(http_port: int, n: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    try:
        for _ in range(n):
            for path in POLL_ROUND:
                status, _ = await _request(reader, writer, path)
                assert status == 200, (path, status)
    finally:
        writer.close()


async def _rounds_under_load(
    port: int, http_port: int, counter: callgrind.Counter, n: int
) -> float:
    """Instructions of one poll round, alone but on a broker in W1's state: a
    backlog on ``w1`` and a consumer holding a full prefetch of 100 unacked
    deliveries (what the listings go over). Nothing else runs while it is
    counted, so the count does not move with the machine's timing; the
    broker's clock-driven work is counted over as long an idle spell after
    and taken off."""
    client = await brokerd_client.connect(f"brokerd://127.0.0.1:{port}")
    await client.declare_queue("w1")
    await client.purge_queue("w1")
    body = b"x" * 256
    for _ in range(10):
        await client.publish_many(("", "w1", body) for _ in range(100))
    consumer = await client.consume("w1", prefetch=100)
    held = []
    async for d in consumer:
        held.append(d)
        if len(held) == 100:
            break
    await client.declare_queue("w1")  # a round trip: the broker is idle now
    counter.dump("before-rounds")
    started = time.perf_counter()
    for _ in range(n):
        await _poll_rounds(http_port, 1)
    rounds = counter.dump("poll-rounds")
    # What the broker does by the clock (its ticks: rates samples, expiry
    # scans over every queue) weighs ~50x more per request under callgrind;
    # it is not the rounds' cost: count as long an idle spell and take it off.
    await asyncio.sleep(time.perf_counter() - started)
    idle = counter.dump("idle")
    per_round = (rounds - idle) / n
    print(f"  {n} rounds {rounds:,} instructions, as long idle {idle:,}")
    await consumer.cancel()
    await client.purge_queue("w1")
    await client.close()
    return per_round


def native_rate(queues: int, count: int, tries: int) -> float:
    """W1's real msg/s (median of ``tries``) on a broker with ``queues`` queues."""
    with tempfile.TemporaryDirectory(prefix="httpcost-rate-") as tmp:
        proc, port, http_port = start_broker(tmp)
        try:
            asyncio.run(_declare_queues(port, queues))
            rates = [asyncio.run(_w1(port, http_port, count, False))[0] for _ in range(tries)]
        finally:
            proc.terminate()
            proc.wait(30)
    return statistics.median(rates)


def run_callgrind(queues: int, count: int, pairs: int, native_count: int) -> dict[str, float]:
    """Instructions per W1 message, quiet and polled once a second, for ``queues``.

    The poll rounds are paced by messages: one per R messages, R being W1's
    msg/s measured natively first, so a round still comes once per second of
    the broker's real work although callgrind runs it ~50x slower.
    """
    rate = native_rate(queues, native_count, 3)
    every = max(1, round(rate))
    print(f"{queues} queue(s): W1 natively {rate:,.0f} msg/s: one poll round per {every} messages")
    with tempfile.TemporaryDirectory(prefix="httpcost-cg-") as tmp:
        out = Path(tmp) / "cg"
        out.mkdir()
        data = Path(tmp) / "data"
        data.mkdir()
        proc, port, http_port = start_broker(str(data), callgrind.prefix(out), timeout=600)
        counter = callgrind.Counter(proc.pid, out)
        try:
            asyncio.run(_declare_queues(port, queues))
            # Warm-up (imports, caches, the first SQLite pages), not counted.
            asyncio.run(_w1(port, http_port, min(count, 2000), True, every=min(count, 1000)))
            per_round = asyncio.run(_rounds_under_load(port, http_port, counter, 5))
            quiet: list[float] = []
            polled: list[float] = []
            made = 0
            for _ in range(pairs):
                for on in (False, True):
                    counter.dump("idle")
                    _, made_now = asyncio.run(_w1(port, http_port, count, on, every=every))
                    per_msg = counter.dump("polled" if on else "quiet") / count
                    (polled if on else quiet).append(per_msg)
                    made = made_now if on else made
                    print(
                        f"  {'polled' if on else 'quiet '} {per_msg:12,.0f} instructions/message"
                        + (f"  ({made_now} poll rounds)" if on else "")
                    )
        finally:
            proc.terminate()
            proc.wait(120)
    q = statistics.median(quiet)
    p = statistics.median(polled)
    row = {
        "queues": queues,
        "rate": rate,
        "every": every,
        "rounds": made,
        "quiet": q,
        "polled": p,
        "diff_pct": (p - q) / q * 100,
        # The difference as the cost of one round a second: extra instructions
        # per round over the instructions of one second of W1 (R messages).
        "per_second_pct": (p - q) * count / made / (every * q) * 100 if made else float("nan"),
        "quiet_spread_pct": (max(quiet) - min(quiet)) / q * 100,
        "round": per_round,
        "round_pct": per_round / (every * q) * 100,
        "round_msgs": per_round / q,
    }
    print(
        f"  {queues} queue(s): quiet {q:,.0f}, polled {p:,.0f} instructions/message: "
        f"{row['diff_pct']:+.2f}% with {made} rounds, {row['per_second_pct']:+.2f}% at one "
        f"round a second (quiet runs spread {row['quiet_spread_pct']:.2f}%); "
        f"one poll round alone {per_round:,.0f} instructions = {per_round / q:,.0f} messages' "
        f"worth = {row['round_pct']:.2f}% of a second of W1 ({every} messages)"
    )
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queues", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--polls", type=int, default=200)
    p.add_argument("--w1", action="store_true", help="W1 with and without polling")
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="W1 under callgrind: instructions per message, quiet and polled",
    )
    p.add_argument("--count", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=2, help="--w1/--callgrind: A/B pairs")
    p.add_argument("--native-count", type=int, default=20_000)
    p.add_argument("--paths", nargs="+", default=list(PATHS), help="GET paths to measure")
    args = p.parse_args()
    if args.callgrind:
        if not callgrind.available():
            raise SystemExit("--callgrind needs valgrind (callgrind_control) installed")
        rows = [run_callgrind(n, args.count, args.rounds, args.native_count) for n in args.queues]
        print(
            "| queues | W1 msg/s natively (R) | poll rounds | quiet Ir/msg | polled Ir/msg "
            "| difference | per second (1 round per R msgs) | quiet spread "
            "| one round alone: Ir, W1 messages' worth, % of a second of W1 |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['queues']:,} | {r['rate']:,.0f} | {r['rounds']} | {r['quiet']:,.0f} | "
                f"{r['polled']:,.0f} | {r['diff_pct']:+.2f}% | {r['per_second_pct']:+.2f}% | "
                f"{r['quiet_spread_pct']:.2f}% | "
                f"{r['round']:,.0f}, {r['round_msgs']:,.0f}, {r['round_pct']:.2f}% |"
            )
        return
    if args.w1:
        run_w1(args.count, args.rounds)
        return
    for n in args.queues:
        run(n, args.polls, args.paths)


if __name__ == "__main__":
    main()
