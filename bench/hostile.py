"""``python -m bench.hostile``: what hostile or faulty task messages do to a worker.

Not a benchmark: three short probes against a fresh brokerd and one
``brokerd-worker`` (threads pool), each printing the figure that shows whether a
worker survives input it should refuse:

* ``headers``: one message each with ``time_limit`` NaN / inf / -1 / 1e308, a
  100,000-deep JSON body and a binary task name. Prints, per message, the
  state recorded for it and whether the worker is still running.
* ``result``: a task returning a result larger than the broker's frame limit
  (100 MB by default). Prints how many times the task ran within ``--seconds``
  and the state recorded.
* ``zlib``: a 1 MiB zlib body that inflates to 1 GiB. Prints the worker's peak
  RSS (``VmHWM``) before and after, and the state recorded.

    python -m bench.hostile headers
    python -m bench.hostile result --seconds 20
    python -m bench.hostile zlib
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brokerd_client import Client
from brokerd_client.tasks.testing import BrokerProcess, WorkerHandle

_APP = """
import os
from pathlib import Path
from brokerd_client.tasks import App

app = App("hostile", broker=os.environ["HOSTILE_BROKER"])
app.conf.update(task_default_queue="hostile")


@app.task(name="hostile.echo")
def echo(value=None):
    return value


@app.task(name="hostile.big")
def big(size):
    with (Path(os.environ["HOSTILE_DIR"]) / "runs").open("a") as f:
        f.write("run\\n")
    return "x" * size
"""

_BOUND = 30.0


def _state(client: Client, task_id: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = client.result_get([task_id])
        if task_id in found and found[task_id][0] in ("SUCCESS", "FAILURE", "REVOKED"):
            state, payload = found[task_id]
            detail = ""
            if payload[:1] == b"j":
                data: dict[str, Any] = json.loads(payload[1:])
                if "exc_type" in data:
                    detail = f" {data['exc_type']}: {str(data.get('exc_message', ''))[:120]}"
            return f"{state}{detail}"
        if time.monotonic() > deadline:
            return "no result (the caller would wait until its timeout)"
        time.sleep(0.05)


def _hwm(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return "gone"
    return "?"


def _alive(worker: WorkerHandle) -> str:
    code = worker.proc.poll()
    return "running" if code is None else f"EXITED with code {code}"


def _publish(client: Client, task_id: str, body: bytes, **headers: Any) -> None:
    base: dict[str, Any] = {"task": "hostile.echo", "id": task_id}
    client.publish(
        "", "hostile", body, message_id=task_id, headers={**base, **headers}, mandatory=True
    )


def probe_headers(client: Client, start: Callable[[], WorkerHandle]) -> None:
    """One fresh worker per message, so each case shows its own effect."""
    ok = b'{"args":[1],"kwargs":{}}'
    cases: list[tuple[str, bytes, dict[str, Any]]] = [
        ("time_limit=NaN", ok, {"time_limit": float("nan")}),
        ("time_limit=inf", ok, {"time_limit": float("inf")}),
        ("time_limit=-1", ok, {"time_limit": -1.0}),
        ("soft_time_limit=-1", ok, {"soft_time_limit": -1.0}),
        ("time_limit=1e308", ok, {"time_limit": 1e308}),
        ("100000-deep JSON", b"[" * 100_000 + b"]" * 100_000, {}),
        ("binary task name", ok, {"task": b"hostile.echo"}),
    ]
    for n, (what, body, headers) in enumerate(cases):
        worker = start()
        task_id = f"hostile-{n}"
        _publish(client, task_id, body, **headers)
        state = _state(client, task_id)
        time.sleep(0.5)
        print(f"{what:20s} -> {state}; worker {_alive(worker)}")
        if worker.proc.poll() is None:
            _publish(client, f"{task_id}-next", ok)
            print(f"{'  next valid task':20s} -> {_state(client, f'{task_id}-next')}")
        worker.kill()


def probe_result(client: Client, worker: WorkerHandle, size: int, seconds: float, d: Path) -> None:
    body = json.dumps({"args": [size], "kwargs": {}}).encode()
    client.publish(
        "",
        "hostile",
        body,
        message_id="big-1",
        headers={"task": "hostile.big", "id": "big-1"},
        mandatory=True,
    )
    time.sleep(seconds)
    runs_file = d / "runs"
    runs = len(runs_file.read_text().splitlines()) if runs_file.exists() else 0
    print(f"result of {size} bytes: the task ran {runs} time(s) in {seconds:g} s")
    print(f"state: {_state(client, 'big-1', timeout=1.0)}; worker {_alive(worker)}")


def probe_zlib(client: Client, worker: WorkerHandle) -> None:
    print(f"worker peak RSS before: {_hwm(worker.pid)}")
    inner = b'{"args":["' + b"a" * (1 << 30) + b'"],"kwargs":{}}'
    bomb = zlib.compress(inner, 9)
    del inner
    print(f"body: {len(bomb)} bytes compressed")
    _publish(client, "bomb-1", bomb, compression="zlib")
    state = _state(client, "bomb-1", timeout=60.0)
    print(f"state: {state}")
    print(f"worker peak RSS after: {_hwm(worker.pid)}; worker {_alive(worker)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n")[0])
    p.add_argument("probe", choices=("headers", "result", "zlib"))
    p.add_argument("--size", type=int, default=100_000_000, help="result bytes (result)")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to watch (result)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the last worker's log")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        d = Path(tmp)
        (d / "hostileapp.py").write_text(_APP)
        broker = BrokerProcess(d / "data").start()
        workers: list[WorkerHandle] = []

        def start() -> WorkerHandle:
            env = {"PYTHONPATH": str(d), "HOSTILE_BROKER": broker.url, "HOSTILE_DIR": str(d)}
            worker = WorkerHandle(
                "hostileapp",
                broker.url,
                *("-P", "threads", "-c", "2", "--without-banner"),
                workdir=d,
                env=env,
            )
            workers.append(worker)
            return worker.wait_ready(_BOUND)

        try:
            with Client(broker.url, timeout=120.0) as client:
                if args.probe == "headers":
                    probe_headers(client, start)
                elif args.probe == "result":
                    probe_result(client, start(), args.size, args.seconds, d)
                else:
                    probe_zlib(client, start())
        finally:
            for worker in workers:
                worker.kill()
            if workers and args.verbose:
                print(workers[-1].log, file=sys.stderr)
            broker.kill()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
