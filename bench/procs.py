"""Broker processes: start/stop a fresh brokerd, find the peers' server processes, RSS."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .clock import now
from .pgstore import drop_database, fresh_database
from .tlscerts import brokerd_tls_dir, server_flags

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0

_LIVE: set[BrokerdProcess] = set()

#: --brokerd-user: set (by bench/__main__) when clients log in as a user.
USER_ENV = "BENCH_BROKERD_USER"
BENCH_USER = "bench"
#: A throwaway user's password on a loopback broker the bench made and deletes.
BENCH_PASSWORD = "bench-password"
#: Its configure, write and read patterns: a real regular expression to
#: evaluate (not ".*"), which allows every name the workloads use.
BENCH_PATTERN = "^(?!forbidden\\.).*"


def bench_user() -> bool:
    return bool(os.environ.get(USER_ENV))


@atexit.register
def _kill_leftovers() -> None:
    """Never leave a broker running behind an interrupted harness."""
    for broker in list(_LIVE):
        if broker.proc is not None and broker.proc.poll() is None:
            broker.proc.kill()
        if not broker.keep_dir:
            shutil.rmtree(broker.workdir, ignore_errors=True)


class BrokerStartError(Exception):
    pass


def child_env() -> dict[str, str]:
    """The environment for ``python -m brokerd``: the repo's import roots on PYTHONPATH so
    it works from a plain checkout as well as from an editable install."""
    env = dict(os.environ)
    roots = [str(REPO_ROOT), str(REPO_ROOT / "protocol"), str(REPO_ROOT / "clients")]
    if env.get("PYTHONPATH"):
        roots.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(roots)
    return env


class BrokerdProcess:
    """One brokerd server on a temporary data dir, bound to an ephemeral loopback port.

    Started as ``python -m brokerd --host 127.0.0.1 --port 0 --data-dir TMP
    --port-file TMP/port``; the bound port is read from the port file once it appears.
    """

    def __init__(self, keep_dir: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="brokerd-bench-"))
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir()
        self.port_file = self.data_dir / "port"
        self.log_path = self.workdir / "brokerd.log"
        self.keep_dir = keep_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.port_seen_at: float | None = None
        self.starts = 0
        #: --brokerd-store: this brokerd's own database (None: SQLite in data_dir).
        self.store = fresh_database()
        _LIVE.add(self)

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("brokerd not started")
        scheme = "brokerds" if brokerd_tls_dir() is not None else "brokerd"
        login = f"{BENCH_USER}:{BENCH_PASSWORD}@" if bench_user() else ""
        return f"{scheme}://{login}127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("brokerd not started")
        return self.proc.pid

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        with contextlib.suppress(FileNotFoundError):
            self.port_file.unlink()
        self.port = None
        self.port_seen_at = None
        self.starts += 1
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "brokerd",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--data-dir",
                    str(self.data_dir),
                    "--port-file",
                    str(self.port_file),
                    # A brokerd already running here (the README's) holds 9673.
                    "--metrics-port",
                    "0",
                    *server_flags(),  # --brokerd-tls
                ],
                cwd=REPO_ROOT,
                # --brokerd-store: in the environment, not argv (a URL may hold a password).
                env={**child_env(), **({"BROKERD_STORE": self.store} if self.store else {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def wait_port(self, timeout: float = START_TIMEOUT) -> int:
        """Block until the port file holds a port; fail if the process exits first."""
        assert self.proc is not None
        deadline = now() + timeout
        while now() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise BrokerStartError(
                    f"brokerd exited with code {code} during startup: {self.log_tail()}"
                )
            try:
                text = self.port_file.read_text().strip()
            except OSError:
                text = ""
            if text.isdigit() and int(text) > 0:
                self.port = int(text)
                self.port_seen_at = now()
                return self.port
            time.sleep(0.005)
        raise BrokerStartError(
            f"brokerd wrote no port file within {timeout:.0f}s: {self.log_tail()}"
        )

    def start(self, timeout: float = START_TIMEOUT) -> int:
        self.spawn()
        port = self.wait_port(timeout)
        if bench_user() and self.starts == 1:
            self.add_user()
        return port

    def add_user(self) -> None:
        """--brokerd-user: the user the clients log in as, with patterns, made
        with brokerctl over the control socket (kept by the store on restarts)."""
        ctl = [sys.executable, "-m", "brokerd_client.ctl", "--data-dir", str(self.data_dir)]
        steps: list[tuple[list[str], str | None]] = [
            (["add_user", BENCH_USER], BENCH_PASSWORD + "\n"),
            (["set_permissions", BENCH_USER, *[BENCH_PATTERN] * 3], None),
        ]
        for args, stdin in steps:
            done = subprocess.run(
                [*ctl, *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=child_env(),
                timeout=60,
                check=False,
            )
            if done.returncode != 0:
                raise BrokerStartError(f"brokerctl {args[0]} failed: {done.stderr.strip()}")

    async def astart(self) -> int:
        """:meth:`start` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.start)

    def terminate(self, timeout: float = 60.0) -> tuple[float, bool]:
        """SIGTERM, wait for exit (SIGKILL after ``timeout``). Returns (seconds, clean)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0, True
        t0 = now()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return now() - t0, True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return now() - t0, False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        return rss_of_pid(self.pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = text.strip().splitlines()[-lines:]
        return " | ".join(tail) if tail else "(empty log)"

    def close(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its temporary directory."""
        with contextlib.suppress(Exception):
            self.terminate(timeout=10.0)
        _LIVE.discard(self)
        if self.store is not None:
            with contextlib.suppress(Exception):
                drop_database(self.store)
        if not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def rss_of_pid(pid: int) -> int:
    """Resident set size in bytes, from ``VmRSS`` in ``/proc/<pid>/status``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def find_pid(comm: str, cmdline_contains: str = "") -> int | None:
    """The pid of the oldest process named ``comm`` whose command line contains
    ``cmdline_contains`` (e.g. RabbitMQ's ``beam.smp`` running ``rabbit boot``)."""
    found: list[tuple[int, int]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != comm:
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as fb:
                cmdline = fb.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                start_time = int(f.read().rsplit(")", 1)[1].split()[19])
        except (OSError, ValueError, IndexError):
            continue
        if cmdline_contains in cmdline:
            found.append((start_time, int(entry)))
    return min(found)[1] if found else None


def rabbitmq_pid() -> int | None:
    return find_pid("beam.smp", "rabbit")
