"""``python -m bench.memcheck``: brokerd's resident memory with big bodies queued.

Fills durable queues with ``--count`` messages of ``--size`` bytes (spread over
``--queues`` queues), reads the broker's RSS, restarts it on the same data dir
(SIGTERM) and reads it again once the restarted broker has paged its windows in;
with ``--drain`` it then consumes everything and checks that each message arrives
exactly once and in order. RSS is ``VmRSS`` from ``/proc/<pid>/status``; the peak
(``VmHWM``) is reported too, since a transient peak is what an OOM killer sees.

Not part of the timed benchmark: a quick check of the "memory stays flat" promise
for one configuration, e.g.::

    python -m bench.memcheck --count 1200 --size 1MiB
    python -m bench.memcheck --count 1800 --size 1MiB --queues 3
    python -m bench.memcheck --count 1024 --size 1MiB --drain -- --memory-limit 64MiB

Arguments after ``--`` go to brokerd.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from brokerd.sizes import parse_size

MIB = 1024 * 1024
SETTLE = 2.0
#: Messages per publish_many call (bounds the client's own memory).
CHUNK = 64


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class Broker:
    """One ``python -m brokerd`` on a temporary data dir (kept across restarts)."""

    def __init__(self, workdir: Path, extra: list[str]) -> None:
        self.data_dir = workdir / "data"
        self.port_file = workdir / "port"
        self.log = workdir / "brokerd.log"
        self.extra = extra
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port_file.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "brokerd", "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--port-file", str(self.port_file),
            "--metrics-port", "0", *self.extra,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"brokerd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.01)
        self.port = int(self.port_file.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(120)

    @property
    def url(self) -> str:
        return f"brokerd://127.0.0.1:{self.port}"

    def mem(self) -> dict[str, int]:
        assert self.proc is not None
        return proc_status(self.proc.pid)


def body(queue: int, i: int, size: int) -> bytes:
    head = b"%04d:%08d:" % (queue, i)
    return head + b"x" * (size - len(head))


async def fill(url: str, queues: list[str], per_queue: int, size: int) -> None:
    import brokerd_client

    async with await brokerd_client.connect(url, timeout=120) as c:
        for name in queues:
            await c.declare_queue(name)
        # Interleave the queues, as producers feeding several queues would.
        for start in range(0, per_queue, CHUNK):
            stop = min(per_queue, start + CHUNK)
            msgs = [
                ("", name, body(qi, i, size))
                for i in range(start, stop)
                for qi, name in enumerate(queues)
            ]
            await c.publish_many(msgs)


async def drain(url: str, queues: list[str], per_queue: int, size: int) -> None:
    import brokerd_client

    async with await brokerd_client.connect(url, timeout=120) as c:
        for qi, name in enumerate(queues):
            consumer = await c.consume(name, prefetch=16, lease=300)
            for i in range(per_queue):
                d = await consumer.next(timeout=120)
                if d.body != body(qi, i, size):
                    raise RuntimeError(f"{name}: expected message {i}, got {d.body[:14]!r}")
                await d.ack(wait=False)
            await consumer.cancel()
            info = await c.queue_stats(name)
            if info.ready or info.leased:
                raise RuntimeError(f"{name}: {info} left after draining")


def fmt(mem: dict[str, int]) -> str:
    return f"RSS {mem['VmRSS'] / MIB:7.1f} MiB (peak {mem['VmHWM'] / MIB:7.1f} MiB)"


async def run(ns: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="brokerd-memcheck-"))
    broker = Broker(workdir, extra)
    queues = [f"memcheck.{i}" for i in range(ns.queues)]
    per_queue = ns.count // ns.queues
    report: dict[str, Any] = {}
    try:
        broker.start()
        await asyncio.sleep(SETTLE)
        report["idle"] = broker.mem()
        print(f"idle                       {fmt(report['idle'])}", flush=True)
        await fill(broker.url, queues, per_queue, ns.size)
        await asyncio.sleep(SETTLE)
        report["filled"] = broker.mem()
        total = per_queue * ns.queues * ns.size / MIB
        print(f"filled ({total:,.0f} MiB queued) {fmt(report['filled'])}", flush=True)
        if not ns.no_restart:
            broker.stop()
            broker.start()
            await asyncio.sleep(SETTLE * 2)
            report["restarted"] = broker.mem()
            print(f"after restart              {fmt(report['restarted'])}", flush=True)
        if ns.drain:
            await drain(broker.url, queues, per_queue, ns.size)
            await asyncio.sleep(SETTLE)
            report["drained"] = broker.mem()
            print(f"drained, order checked     {fmt(report['drained'])}", flush=True)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(prog="python -m bench.memcheck", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=1024, help="messages in all (default 1024)")
    p.add_argument("--size", type=parse_size, default=MIB, help="body bytes (default 1MiB)")
    p.add_argument("--queues", type=int, default=1, help="durable queues (default 1)")
    p.add_argument("--no-restart", action="store_true", help="skip the restart")
    p.add_argument("--drain", action="store_true", help="consume all and check order")
    ns = p.parse_args(argv)
    if ns.count < ns.queues or ns.size < 16:
        p.error("need at least one message per queue and 16-byte bodies")
    asyncio.run(run(ns, extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
