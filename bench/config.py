"""Run settings: the same numbers are used for every system."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .payload import MIN_SIZE
from .systems import DEFAULT_URLS, SYSTEMS

WORKLOAD_IDS = ("W1", "W2", "W3", "W4", "W4c", "W5", "W6", "W6b", "W7", "W8", "W9")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Settings:
    quick: bool
    workloads: tuple[str, ...]
    systems: tuple[str, ...]
    count: int  # W1-W3: messages
    size: int  # W1-W3, W5, W8: body bytes
    prefetch: int  # every consumer
    batch: int  # messages per pipelined, confirmed publish batch
    task_count: int  # W4: tasks per mode
    rate: float  # W5: messages per second
    duration: float  # W5: seconds
    backlog: int  # W6/W7: queued messages
    backlog_size: int  # W6/W7: body bytes
    big_backlog: int  # W6b: queued messages
    big_size: int  # W6b: body bytes
    blast_seconds: float  # W9: seconds the light client runs beside the blaster
    stall_timeout: float  # seconds without progress before a workload is failed
    out: Path
    chart: bool
    keep_temp: bool
    brokerd_ack: str  # "nowait" (fire-and-forget, like AMQP) | "wait"
    brokerd_tls: bool  # brokerd serves brokerds:// with a throwaway certificate
    brokerd_store: str | None  # postgresql://... : brokerd keeps its queues there
    brokerd_user: bool  # brokerd clients log in as a user holding permission patterns
    urls: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        if self.brokerd_store:
            from brokerd.storage.postgres import redact

            data["brokerd_store"] = redact(self.brokerd_store)
        return data


FULL = {
    "count": 100_000,
    "size": 256,
    "prefetch": 100,
    "batch": 100,
    "task_count": 10_000,
    "rate": 1000.0,
    "duration": 30.0,
    "backlog": 1_000_000,
    "backlog_size": 1024,
    "big_backlog": 1024,
    "big_size": 1024 * 1024,
    "blast_seconds": 20.0,
}
QUICK = {
    "count": 2_000,
    "size": 256,
    "prefetch": 100,
    "batch": 100,
    "task_count": 500,
    "rate": 200.0,
    "duration": 2.0,
    "backlog": 20_000,
    "backlog_size": 1024,
    "big_backlog": 256,
    "big_size": 1024 * 1024,
    "blast_seconds": 3.0,
}


def _csv(value: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    # Workload ids match whatever their case ("w6b" is W6b).
    by_upper = {a.upper(): a for a in allowed}
    norm = tuple(by_upper.get(i.upper(), i) if what == "workload" else i.lower() for i in items)
    bad = [i for i in norm if i not in allowed]
    if bad or not norm:
        raise argparse.ArgumentTypeError(
            f"unknown {what}(s) {', '.join(bad) or '(none)'}; choose from {','.join(allowed)}"
        )
    return norm


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark brokerd side by side with RabbitMQ and Redis.",
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes, finishes in well under a minute"
    )
    p.add_argument(
        "--workloads",
        type=lambda v: _csv(v, WORKLOAD_IDS, "workload"),
        default=WORKLOAD_IDS,
        help="comma-separated subset of " + ",".join(WORKLOAD_IDS),
    )
    p.add_argument(
        "--systems",
        type=lambda v: _csv(v, SYSTEMS, "system"),
        default=SYSTEMS,
        help="comma-separated subset of " + ",".join(SYSTEMS),
    )
    p.add_argument("--count", type=int, help="messages for W1-W3 (default 100000; quick 2000)")
    p.add_argument("--size", type=int, help="message body bytes for W1-W3, W5, W8 (default 256)")
    p.add_argument("--prefetch", type=int, help="consumer prefetch (default 100)")
    p.add_argument(
        "--batch", type=int, help="publishes in flight per confirmed batch (default 100)"
    )
    p.add_argument("--tasks", type=int, dest="task_count", help="W4 tasks per mode (default 10000)")
    p.add_argument("--rate", type=float, help="W5 messages per second (default 1000)")
    p.add_argument("--duration", type=float, help="W5 seconds (default 30)")
    p.add_argument("--backlog", type=int, help="W6/W7 queued messages (default 1000000)")
    p.add_argument("--backlog-size", type=int, help="W6/W7 body bytes (default 1024)")
    p.add_argument("--big-backlog", type=int, help="W6b queued messages (default 1024; quick 256)")
    p.add_argument("--big-size", type=int, help="W6b body bytes (default 1048576)")
    p.add_argument(
        "--blast-seconds",
        type=float,
        help="W9 seconds the light client runs beside the blaster (default 20; quick 3)",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=60.0,
        help="fail a workload after this many seconds without progress (default 60)",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="results directory (default bench/results)"
    )
    p.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    p.add_argument(
        "--brokerd-ack",
        choices=("nowait", "wait"),
        default="nowait",
        help="brokerd consumers ack fire-and-forget like AMQP (nowait, default) or wait for "
        "each ack's answer (wait)",
    )
    p.add_argument(
        "--brokerd-tls",
        action="store_true",
        help="run brokerd over TLS (brokerds://, a throwaway certificate; needs trustme)",
    )
    p.add_argument(
        "--brokerd-store",
        metavar="URL",
        help="run brokerd on PostgreSQL: postgresql://user@host:port/db (each workload gets a "
        "fresh database created on that server and dropped after; the role needs CREATEDB)",
    )
    p.add_argument(
        "--brokerd-user",
        action="store_true",
        help="brokerd clients log in as a user whose permissions are patterns, so every "
        "frame is checked (docs/security.md); default: no users, as on a fresh broker",
    )
    p.add_argument("--keep-temp", action="store_true", help="keep brokerd temp data dirs and logs")
    return p


def settings_from_args(argv: list[str] | None = None) -> Settings:
    parser = build_parser()
    ns = parser.parse_args(argv)
    base = QUICK if ns.quick else FULL
    values: dict[str, Any] = {}
    for key, default in base.items():
        given = getattr(ns, key, None)
        values[key] = default if given is None else type(default)(given)
    for key in ("count", "prefetch", "batch", "task_count", "backlog", "big_backlog"):
        if values[key] < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if values["rate"] <= 0 or values["duration"] <= 0:
        parser.error("--rate and --duration must be positive")
    if values["blast_seconds"] <= 0:
        parser.error("--blast-seconds must be positive")
    for key in ("size", "backlog_size", "big_size"):
        if values[key] < MIN_SIZE:
            parser.error(f"--{key.replace('_', '-')} must be at least {MIN_SIZE} bytes")
    # Keep the stated workload and system order whatever order they were given in.
    workloads = tuple(w for w in WORKLOAD_IDS if w in ns.workloads)
    systems = tuple(s for s in SYSTEMS if s in ns.systems)
    return Settings(
        quick=ns.quick,
        workloads=workloads,
        systems=systems,
        stall_timeout=ns.stall_timeout,
        out=ns.out,
        chart=not ns.no_chart,
        keep_temp=ns.keep_temp,
        brokerd_ack=ns.brokerd_ack,
        brokerd_tls=ns.brokerd_tls,
        brokerd_store=ns.brokerd_store,
        brokerd_user=ns.brokerd_user,
        urls=dict(DEFAULT_URLS),
        **values,
    )
