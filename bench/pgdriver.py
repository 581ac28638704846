"""Which PostgreSQL driver the PostgreSQL store uses, decided by measuring.

The store's unit of work is a group commit: one transaction that inserts the
messages published during a few ticks and deletes the ones acked, by id. This
script runs exactly that against a PostgreSQL you point it at, with each way
of writing rows that asyncpg and psycopg 3 offer, and prints transactions per
second, rows per second, the median commit latency and the CPU seconds the
client process spent per 1000 rows (the broker's CPU is what runs out first).

    python -m bench.pgdriver postgresql://user@127.0.0.1:5432/db [--rows 1,100,1000]

It creates and drops its own table (``pgdriver_messages``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

COLUMNS = (
    "id",
    "queue",
    "priority",
    "seq",
    "ready_at",
    "expires_at",
    "attempts",
    "exchange",
    "routing_key",
    "headers",
    "message_id",
    "timestamp",
    "body",
)
TYPES = (
    "bigint",
    "text",
    "integer",
    "bigint",
    "double precision",
    "double precision",
    "integer",
    "text",
    "text",
    "bytea",
    "text",
    "bigint",
    "bytea",
)
TABLE = "pgdriver_messages"
DDL = (
    f"DROP TABLE IF EXISTS {TABLE}",
    f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, queue text NOT NULL, priority integer "
    "NOT NULL, seq bigint, ready_at double precision, expires_at double precision, "
    "attempts integer NOT NULL, exchange text NOT NULL, routing_key text NOT NULL, "
    "headers bytea, message_id text, timestamp bigint NOT NULL, body bytea NOT NULL)",
    f"CREATE INDEX ON {TABLE} (queue, priority, seq) WHERE seq IS NOT NULL",
)
COLS = ", ".join(COLUMNS)
UNNEST = (
    f"INSERT INTO {TABLE} ({COLS}) SELECT * FROM unnest("
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(TYPES))
    + ")"
)
DELETE_ANY = f"DELETE FROM {TABLE} WHERE id = ANY($1::bigint[])"
BODY = b"x" * 200


def rows(first: int, n: int) -> list[tuple[Any, ...]]:
    return [
        (i, "q", 0, i, None, None, 0, "", "q", None, None, 1_700_000_000, BODY)
        for i in range(first, first + n)
    ]


def columns(batch: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(c) for c in zip(*batch, strict=True)]


class Result:
    def __init__(self, name: str, n: int) -> None:
        self.name = name
        self.n = n
        self.latencies: list[float] = []
        self.cpu = 0.0
        self.wall = 0.0

    def line(self) -> str:
        txs = len(self.latencies)
        return (
            f"{self.name:<28} rows/tx {self.n:>5}  tx/s {txs / self.wall:>8.0f}  "
            f"rows/s {txs * self.n * 2 / self.wall:>9.0f}  "
            f"p50 commit {statistics.median(self.latencies) * 1e3:6.2f} ms  "
            f"cpu/1k rows {self.cpu / (txs * self.n * 2) * 1e3 * 1e3:6.1f} ms"
        )


# --- asyncpg (coroutines on the event loop) ---------------------------------------------


async def run_asyncpg(url: str, method: str, n: int, seconds: float) -> Result:
    import asyncpg

    conn = await asyncpg.connect(url)
    for sql in DDL:
        await conn.execute(sql)
    res = Result(f"asyncpg {method}", n)
    insert = f"INSERT INTO {TABLE} ({COLS}) VALUES ({', '.join(f'${i + 1}' for i in range(13))})"
    next_id = 1
    previous: list[int] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        batch = rows(next_id, n)
        next_id += n
        t0 = time.perf_counter()
        async with conn.transaction():
            if method == "executemany":
                await conn.executemany(insert, batch)
                if previous:
                    await conn.executemany(
                        f"DELETE FROM {TABLE} WHERE id = $1", [(i,) for i in previous]
                    )
            elif method == "copy":
                await conn.copy_records_to_table(TABLE, records=batch, columns=list(COLUMNS))
                if previous:
                    await conn.execute(DELETE_ANY, previous)
            else:  # unnest
                await conn.execute(UNNEST, *columns(batch))
                if previous:
                    await conn.execute(DELETE_ANY, previous)
        res.latencies.append(time.perf_counter() - t0)
        previous = [r[0] for r in batch]
    res.cpu, res.wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await conn.execute(f"DROP TABLE {TABLE}")
    await conn.close()
    return res


# --- psycopg 3 (blocking, on a thread of its own in the store) ----------------------------


def run_psycopg(url: str, method: str, n: int, seconds: float) -> Result:
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    for sql in DDL:
        conn.execute(sql)
    res = Result(f"psycopg {method}", n)
    marks = ", ".join(["%s"] * 13)
    insert = f"INSERT INTO {TABLE} ({COLS}) VALUES ({marks})"
    unnest = UNNEST
    for i in range(13, 0, -1):
        unnest = unnest.replace(f"${i}::", "%s::")
    next_id = 1
    previous: list[int] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        batch = rows(next_id, n)
        next_id += n
        t0 = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            if method == "executemany":
                cur.executemany(insert, batch)
                if previous:
                    cur.executemany(f"DELETE FROM {TABLE} WHERE id = %s", [(i,) for i in previous])
            elif method == "copy":
                with cur.copy(f"COPY {TABLE} ({COLS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(list(TYPES))
                    for r in batch:
                        copy.write_row(r)
                if previous:
                    cur.execute(f"DELETE FROM {TABLE} WHERE id = ANY(%s::bigint[])", (previous,))
            else:  # unnest
                cur.execute(unnest, columns(batch))
                if previous:
                    cur.execute(f"DELETE FROM {TABLE} WHERE id = ANY(%s::bigint[])", (previous,))
        res.latencies.append(time.perf_counter() - t0)
        previous = [r[0] for r in batch]
    res.cpu, res.wall = time.process_time() - cpu0, time.perf_counter() - wall0
    conn.execute(f"DROP TABLE {TABLE}")
    conn.close()
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.pgdriver", description=__doc__)
    p.add_argument("url", help="postgresql://user@host:port/db (a database you may write to)")
    p.add_argument("--rows", default="1,100,1000", help="rows inserted (and deleted) per tx")
    p.add_argument("--seconds", type=float, default=3.0, help="per driver, method and size")
    ns = p.parse_args(argv)
    sizes = [int(s) for s in ns.rows.split(",")]
    runs: list[Callable[[int], Result]] = []
    for method in ("executemany", "copy", "unnest"):
        runs.append(lambda n, m=method: asyncio.run(run_asyncpg(ns.url, m, n, ns.seconds)))
        runs.append(lambda n, m=method: run_psycopg(ns.url, m, n, ns.seconds))
    print("each transaction inserts N rows and deletes the N rows of the one before it")
    for n in sizes:
        for run in runs:
            print(run(n).line(), flush=True)


if __name__ == "__main__":
    main()
