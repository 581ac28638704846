"""``python -m bench.edge``: what hostile peers do to the server's edge.

Not a benchmark: four short probes against a fresh brokerd, each printing the
figure that shows whether the broker holds:

* ``prehello``: 12 unauthenticated peers each send 15 MiB of a frame before
  any Hello. Prints the broker's RSS before and with them, and how many it
  answered and closed.
* ``ack``: one authenticated peer sends an Ack of 4,000,000 delivery ids while
  a healthy client keeps asking for queue stats. Prints the answer and the
  healthy client's worst round trip.
* ``slowloris``: ``--peers`` (1000) peers trickle a Hello one byte every 4 s
  into a broker started with ``--max-connections`` = peers. Prints how many are
  still open 15 s after connecting, and whether a healthy client gets in.
* ``guesses``: ``--peers`` (1) clients guess the token for 10 s. Prints the
  AUTH_FAILED answers per second.

``--brokerd PYTHON`` runs ``PYTHON -m brokerd`` (another checkout's venv, to
measure a build before a change); by default this interpreter's.

    python -m bench.edge prehello
    python -m bench.edge ack
    python -m bench.edge slowloris --peers 1000
    python -m bench.edge guesses --peers 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import brokerd_client
import brokerd_protocol as bp

MIB = 1024 * 1024


@contextlib.contextmanager
def brokerd(
    python: str, *flags: str, env: dict[str, str] | None = None
) -> Iterator[tuple[int, int]]:
    """A fresh brokerd on a temporary data dir: (pid, port)."""
    with tempfile.TemporaryDirectory(prefix="brokerd-edge-") as tmp:
        port_file = Path(tmp) / "port"
        data = str(Path(tmp) / "data")
        cmd = [python, "-m", "brokerd", "--port", "0", "--metrics-port", "0",
               "--data-dir", data, "--port-file", str(port_file), *flags]  # fmt: skip
        with (Path(tmp) / "log").open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        try:
            while not port_file.exists():
                if proc.poll() is not None:
                    raise SystemExit((Path(tmp) / "log").read_text())
                time.sleep(0.02)
            time.sleep(0.05)
            yield proc.pid, int(port_file.read_text())
        finally:
            proc.kill()
            proc.wait()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def prehello(python: str) -> None:
    with brokerd(python) as (pid, port):
        idle = rss_mib(pid)
        peers = []
        chunk = bytes(MIB)
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", port))
            s.settimeout(5)
            with contextlib.suppress(OSError):
                s.sendall(struct.pack(">I", 16 * MIB))
                for _ in range(15):
                    s.sendall(chunk)
            peers.append(s)
        time.sleep(1.0)
        loaded = rss_mib(pid)
        answered = 0
        for s in peers:
            s.setblocking(False)
            try:
                answered += s.recv(65536) is not None
            except BlockingIOError:
                pass
            except OSError:
                answered += 1
            s.close()
        print(
            f"prehello: RSS {idle:.0f} MiB idle, {loaded:.0f} MiB with 12 peers each 15 MiB "
            f"into a frame before Hello; {answered}/12 answered and closed by the broker"
        )


async def _ack(port: int) -> None:
    healthy = await brokerd_client.connect(f"brokerd://127.0.0.1:{port}")
    await healthy.declare_queue("edge")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bp.encode(bp.Hello([1], None, "edge", 30.0)))
    await writer.drain()
    await reader.read(65536)
    frame = bp.encode(bp.Ack(1, [i % 100 + 1 for i in range(4_000_000)]))
    worst = 0.0
    stop = False

    async def ping() -> None:
        nonlocal worst
        while not stop:
            started = time.perf_counter()
            await healthy.queue_stats("edge")
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.001)

    pinger = asyncio.create_task(ping())
    await asyncio.sleep(0.2)
    writer.write(frame)
    await writer.drain()
    reply = await reader.read(300)
    await asyncio.sleep(0.5)
    stop = True
    await pinger
    decoder = bp.Decoder()
    decoder.feed(reply)
    answer: object = decoder.next_frame()
    if answer is None and len(reply) >= 4:
        answer = f"<a frame of {struct.unpack('>I', reply[:4])[0]:,} bytes>"
    print(f"ack: a 4,000,000-id Ack is answered {answer!r:.120}; "
          f"the healthy client's worst round trip {worst * 1000:.0f} ms")  # fmt: skip
    await healthy.close()
    writer.close()


async def _slowloris(port: int, peers: int) -> None:
    hello = bp.encode(bp.Hello([1], None, "x" * 200, 30.0))
    still = [0]

    async def trickle() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        still[0] += 1
        try:
            for byte in hello[:-1]:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    if not await asyncio.wait_for(reader.read(65536), 4.0):
                        break
                except TimeoutError:
                    continue
        except OSError:
            pass
        finally:
            still[0] -= 1
            writer.close()

    tasks = [asyncio.create_task(trickle()) for _ in range(peers)]
    await asyncio.sleep(15)
    open_now = still[0]
    try:
        client = await brokerd_client.connect(f"brokerd://127.0.0.1:{port}", timeout=10)
        healthy = "connects"
        await client.close()
    except Exception as exc:
        healthy = f"is refused ({type(exc).__name__}: {exc})"
    print(f"slowloris: {open_now} of {peers} trickling peers still open 15 s after connecting; "
          f"a healthy client {healthy}")  # fmt: skip
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _guesses(port: int, peers: int, seconds: float = 10.0) -> None:
    failed = [0]
    deadline = time.monotonic() + seconds

    async def guesser() -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(bp.encode(bp.Hello([1], f"guess{failed[0]}", "g", 30.0)))
                await writer.drain()
                left = max(deadline - time.monotonic(), 0.01)
                data = await asyncio.wait_for(reader.read(4096), left)
                writer.close()
            except (TimeoutError, OSError):
                continue
            decoder = bp.Decoder()
            decoder.feed(data)
            frame = decoder.next_frame()
            if isinstance(frame, bp.Error) and frame.code == bp.ErrorCode.AUTH_FAILED:
                failed[0] += 1

    await asyncio.gather(*(guesser() for _ in range(peers)))
    print(f"guesses: {peers} client(s) got {failed[0]} AUTH_FAILED answers in {seconds:g} s "
          f"= {failed[0] / seconds:.1f} guesses/s")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n")[0])
    p.add_argument("probe", choices=["prehello", "ack", "slowloris", "guesses"])
    p.add_argument("--peers", type=int, help="slowloris: 1000; guesses: 1")
    p.add_argument("--brokerd", default=sys.executable, help="the python that runs -m brokerd")
    args = p.parse_args(argv)
    if args.probe == "prehello":
        prehello(args.brokerd)
    elif args.probe == "ack":
        with brokerd(args.brokerd) as (_, port):
            asyncio.run(_ack(port))
    elif args.probe == "slowloris":
        peers = args.peers or 1000
        with brokerd(args.brokerd, "--max-connections", str(peers)) as (_, port):
            asyncio.run(_slowloris(port, peers))
    else:
        with brokerd(args.brokerd, env={"BROKERD_TOKEN": "the-real-secret"}) as (_, port):
            asyncio.run(_guesses(port, args.peers or 1))


if __name__ == "__main__":
    main()
