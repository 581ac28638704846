"""A PostgreSQL server of the tests' own, started from the installed server
binaries (``initdb``, ``pg_ctl``) in a temp dir on a free port.

Tests never use a PostgreSQL they did not start (the machine's own service
on 5432 included): they must be free to restart and kill it. The cluster
uses trust authentication on 127.0.0.1 only, with ``fsync`` on, so a commit
brokerd is told about is on disk as in production.

Where no server binaries are installed the tests that need one skip, saying
so; with ``BROKERD_POSTGRES_TESTS=1`` (CI) they fail instead. PostgreSQL
refuses to run as root, so under root (CI) the cluster runs as an
unprivileged user (``postgres`` if it exists, else ``nobody``).

Also a command, to start one by hand (for bench runs): ``python
tests/pgcluster.py`` prints its URL and runs until interrupted (Ctrl-C stops
and removes it); with a DIR (which, under root, the ``postgres`` user must be
able to reach) it keeps the cluster there.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

OPT_IN = "BROKERD_POSTGRES_TESTS"
USER = "brokerd"
#: The session cluster's URL (database ``postgres``), for child processes.
ENV_URL = "BROKERD_TEST_POSTGRES_URL"


class NoServer(Exception):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: on PATH, else the
    newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2].split(".")[0])
    )
    for bindir in reversed(candidates):
        if (Path(bindir) / "initdb").exists() and (Path(bindir) / "pg_ctl").exists():
            return Path(bindir)
    raise NoServer(
        "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """One temporary PostgreSQL server: ``start()``, ``url(db)``, ``stop()``."""

    def __init__(self, root: Path | None = None) -> None:
        self.bindir = find_bindir()
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="brokerd-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._runas: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                entry = pwd.getpwnam("nobody")
            self._runas = (entry.pw_uid, entry.pw_gid)
            # Its parents must be passable for that user (mkdtemp makes 0700).
            os.chmod(self.root, 0o700)
            os.chown(self.root, *self._runas)

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=self._demote if self._runas is not None else None,
            env={**os.environ, "LC_ALL": "C"},
        )

    def _demote(self) -> None:
        assert self._runas is not None
        uid, gid = self._runas
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    def _check(self, done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{what} failed: {done.stdout}{done.stderr}{tail}")

    def start(self) -> Cluster:
        if not self.data.exists():
            self._check(
                self._run(
                    "initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync",
                    "-E", "UTF8",
                ),
                "initdb",
            )  # fmt: skip
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on "
            "-c synchronous_commit=on -c max_connections=200 -c shared_buffers=64MB"
        )
        self._check(
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                      "-o", opts, "start"),
            "pg_ctl start",
        )  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash: no checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """kill -9 the postmaster (its children follow)."""
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database (dropped first if it exists); its URL."""
        for sql in (f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'):
            self._check(
                self._run("psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                          "-d", "postgres", "-c", sql),
                sql,
            )  # fmt: skip
        return self.url(name)


def database_for(key: str) -> str:
    """The URL of a database of the session cluster named after ``key`` (a
    test's temp path), created empty on first use, kept afterwards."""
    import asyncio
    import hashlib

    import asyncpg

    base = os.environ[ENV_URL]
    name = "t_" + hashlib.sha1(key.encode()).hexdigest()[:20]

    async def ensure() -> None:
        conn = await asyncpg.connect(base)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    # On a thread of its own: callers may be inside a running event loop.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, ensure()).result()
    return base.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def cluster_or_skip() -> Iterator[Cluster]:
    """A started cluster, removed afterwards; a skip (or, with
    ``BROKERD_POSTGRES_TESTS=1``, a failure) when no server is installed."""
    import pytest

    try:
        cluster = Cluster()
    except NoServer as exc:
        if os.environ.get(OPT_IN) == "1":
            pytest.fail(f"{OPT_IN}=1 but {exc}")
        pytest.skip(f"{exc}; install PostgreSQL's server package to run these tests")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


if __name__ == "__main__":
    c = Cluster(Path(sys.argv[1]) if len(sys.argv) > 1 else None).start()
    print(c.url(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        if len(sys.argv) > 1:
            c.stop()  # keep the given DIR
        else:
            c.remove()
