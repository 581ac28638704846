"""``--brokerd-store postgresql://...``: brokerd keeps its queues in PostgreSQL.

Every workload starts a fresh brokerd; on PostgreSQL it gets a fresh database
too (``brokerd_bench_<pid>_<n>``, created on the server the URL names and
dropped when that brokerd closes), so no workload sees another's queues and
the database the URL names is never written. The role needs CREATEDB.
The URL reaches the broker processes through ``BENCH_BROKERD_STORE``.
"""

from __future__ import annotations

import itertools
import os
from urllib.parse import urlsplit, urlunsplit

ENV = "BENCH_BROKERD_STORE"
_numbers = itertools.count(1)


def store_url() -> str | None:
    return os.environ.get(ENV) or None


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def _admin(url: str, sql: str) -> None:
    try:
        import psycopg
    except ImportError as exc:
        raise SystemExit(
            f"--brokerd-store needs psycopg (pip install -e '.[bench]'): {exc}"
        ) from None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def fresh_database() -> str | None:
    """A new empty database for one brokerd, or None without ``--brokerd-store``."""
    url = store_url()
    if url is None:
        return None
    name = f"brokerd_bench_{os.getpid()}_{next(_numbers)}"
    _admin(url, f'DROP DATABASE IF EXISTS "{name}"')
    _admin(url, f'CREATE DATABASE "{name}"')
    return _with_database(url, name)


def drop_database(database_url: str) -> None:
    url = store_url()
    if url is None:
        return
    name = urlsplit(database_url).path.strip("/")
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
