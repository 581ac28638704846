"""Who may write: a leadership lease row with a fencing epoch.

Several brokerd nodes may point at one database; exactly one may write. The
one row of ``brokerd_leader`` names the node holding the lease, until when
(the database's clock, so the nodes' clocks never have to agree), and its
epoch: a number that grows by one at every change of holder.

* **Taking the lease** is one statement: insert the row, or take it over if
  it expired, or if this same node held it (a node is its data dir, held by
  one process at a time with ``flock``, so a restarted node need not wait
  for the lease of the process it replaces). The new holder gets epoch + 1.
* **Fencing.** Every write transaction starts by renewing the lease *on
  condition that the epoch is still ours* (``WHERE epoch = $ours``). The
  update locks the row until the transaction ends, so no takeover can
  happen in between: a transaction either sees its epoch and commits under
  it, or sees a newer one and writes nothing. A node paused past its lease
  (SIGSTOP, a long GC, a partition) and resumed finds the newer epoch at its
  next write, commits nothing, and steps down.
* **Renewal.** The writer renews the lease with every commit and, when idle,
  every ``RENEW`` seconds, so a live node keeps it and a dead node's lease
  runs out after ``LEASE`` seconds.

* **Standing by.** A node that finds the lease held polls it every ``POLL``
  seconds, reading the holder's advertised address (its clients are
  redirected there), and takes it once it has run out.
"""

from __future__ import annotations

from typing import Any

#: Seconds a lease lasts without renewal (a dead node's lease is taken over
#: after this long).
LEASE = 4.0
#: Seconds between renewals while the writer is idle.
RENEW = 1.0
#: Seconds between a standby's tries to take the lease.
POLL = 0.1

MIGRATION = """
CREATE TABLE brokerd_leader (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch bigint NOT NULL,
    node text NOT NULL,
    address text,
    expires_at timestamptz NOT NULL
);
"""
#: Migration 3: the number of the holder's last committed group, so a group
#: whose COMMIT lost its connection can be told committed or not
#: (``committed_group``).
MIGRATION_GROUP = """
ALTER TABLE brokerd_leader ADD COLUMN last_group bigint NOT NULL DEFAULT 0;
"""

TAKE_SQL = (
    "INSERT INTO brokerd_leader (epoch, node, address, expires_at) "
    "VALUES (1, $1, $2, clock_timestamp() + $3 * interval '1 second') "
    "ON CONFLICT (one) DO UPDATE SET epoch = brokerd_leader.epoch + 1, node = excluded.node, "
    "address = excluded.address, expires_at = excluded.expires_at "
    "WHERE brokerd_leader.expires_at < clock_timestamp() OR brokerd_leader.node = excluded.node "
    "RETURNING epoch"
)
ADDRESS_SQL = "UPDATE brokerd_leader SET address = $1 WHERE epoch = $2"
HOLDER_SQL = (
    "SELECT node, address, epoch, "
    "extract(epoch FROM expires_at - clock_timestamp())::float8 FROM brokerd_leader"
)


class Fenced(Exception):
    """Another node took the lease: this one must not write anything more."""

    def __init__(self, epoch: int) -> None:
        super().__init__(
            f"another brokerd node took over the database (this node's epoch {epoch} is "
            "stale): nothing more is written here"
        )
        self.epoch = epoch


def fence_sql(epoch: int, lease: float = LEASE) -> str:
    """The statement that opens every write transaction: renew the lease if
    the epoch is still ``epoch`` (status ``UPDATE 1``), else ``UPDATE 0``.
    Literals, not parameters, so it rides in the same simple-query message as
    ``BEGIN`` (no extra round trip); both are numbers this module made."""
    return (
        f"UPDATE brokerd_leader SET expires_at = clock_timestamp() + interval "
        f"'{float(lease)} seconds' WHERE epoch = {int(epoch)}"
    )


def fence_group_sql(epoch: int, group: int, lease: float = LEASE) -> str:
    """``fence_sql`` that also records ``group`` as this holder's last one:
    it commits with the group or not at all."""
    return (
        f"UPDATE brokerd_leader SET expires_at = clock_timestamp() + interval "
        f"'{float(lease)} seconds', last_group = {int(group)} WHERE epoch = {int(epoch)}"
    )


async def committed_group(conn: Any, epoch: int) -> int | None:
    """The number of the last group committed under ``epoch`` (None: another
    node holds the lease now)."""
    value = await conn.fetchval("SELECT last_group FROM brokerd_leader WHERE epoch = $1", epoch)
    return None if value is None else int(value)


def still_ours(status: str) -> bool:
    return status == "UPDATE 1"


async def take(conn: Any, node: str, address: str | None, lease: float = LEASE) -> int | None:
    """Take the lease for ``node``; its new epoch, or None while another
    node's lease runs."""
    epoch = await conn.fetchval(TAKE_SQL, node, address, float(lease))
    return None if epoch is None else int(epoch)


async def holder(conn: Any) -> tuple[str, str | None, int, float] | None:
    """(node, address, epoch, seconds its lease has left) of the holder."""
    row = await conn.fetchrow(HOLDER_SQL)
    return None if row is None else (row[0], row[1], int(row[2]), float(row[3]))
