"""A real brokerd in a child process, for integration and fault tests.

Started on port 0 with a temporary data directory; the port is read from the
file the broker writes once it listens. ``kill()`` is SIGKILL: nothing gets a
chance to flush, exactly like a power cut for the process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT = 20.0


class BrokerProcess:
    def __init__(self, data_dir: Path, *extra: str, token: str | None = None) -> None:
        self.data_dir = data_dir
        self.extra = list(extra)
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = data_dir / "brokerd.log"

    @property
    def url(self) -> str:
        auth = f"{self.token}@" if self.token else ""
        return f"brokerd://{auth}127.0.0.1:{self.port}"

    def start(self) -> BrokerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / "port"
        port_file.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "brokerd",
            "--host", "127.0.0.1",
            # Reuse the last port on restart so clients can reconnect to the same URL.
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--port-file", str(port_file),
            "--metrics-port", "0",
            "--log-level", "info",
            *self.extra,
        ]  # fmt: skip
        if self.token:
            cmd += ["--token", self.token]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"brokerd exited at start:\n{self.log_path.read_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"brokerd did not start:\n{self.log_path.read_text()}")
            time.sleep(0.01)
        self.port = int(port_file.read_text())
        return self

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the graceful stop; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def restart(self, *, hard: bool = True) -> BrokerProcess:
        if hard:
            self.kill()
        elif self.proc is not None:
            self.terminate()
        return self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid
