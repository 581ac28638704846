"""Testing helpers for apps built on :mod:`brokerd_client.tasks`.

Enable the fixtures in your ``conftest.py``::

    pytest_plugins = ["brokerd_client.tasks.testing"]

Fixtures:

* ``brokerd_broker``: a real brokerd on a free port with a temporary data
  directory (a :class:`BrokerProcess`: a child process of the test run,
  SIGKILLed at the end); ``.url`` to connect, ``.restart()``, ``.kill()``.
* ``brokerd_inprocess_broker``: brokerd running inside the test process (a
  thread with its own event loop) on a temporary data directory: no process
  to start, for tests that do not need to kill the broker.
* ``brokerd_worker``: a factory starting real ``brokerd-worker`` processes
  against that broker: ``brokerd_worker("proj.tasks", "-c", "2")`` returns a
  :class:`WorkerHandle` once the worker consumes; all are stopped at the end.

For tests that need no broker at all, run tasks in-process::

    with eager(app):
        assert add.delay(2, 2).get() == 4
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import pytest

if TYPE_CHECKING:
    from .app import App

__all__ = [
    "BrokerProcess",
    "BrokerServer",
    "InProcessBroker",
    "WorkerHandle",
    "brokerd_broker",
    "brokerd_inprocess_broker",
    "brokerd_worker",
    "eager",
]

START_TIMEOUT = 30.0


class BrokerProcess:
    """``python -m brokerd`` as a child process on 127.0.0.1, port 0 (any free
    port), a given data dir. (Not the server itself, ``brokerd.server.BrokerServer``:
    this starts and stops one.)

    ``kill()`` is SIGKILL (like a power cut for the process); ``terminate()`` is
    the graceful SIGTERM stop. A restart reuses the port, so clients can
    reconnect to the same URL.
    """

    def __init__(self, data_dir: Path, *extra: str, token: str | None = None) -> None:
        self.data_dir = data_dir
        self.extra = list(extra)
        self.token = token
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "brokerd.log"

    @property
    def url(self) -> str:
        auth = f"{self.token}@" if self.token else ""
        return f"brokerd://{auth}127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / "port"
        port_file.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "brokerd",
            "--host", "127.0.0.1",
            "--port", str(self.port),  # the same port again on restart
            "--data-dir", str(self.data_dir),
            "--port-file", str(port_file),
            "--metrics-port", "0",
            *self.extra,
        ]  # fmt: skip
        if self.token:
            # A file, as in production: a --token flag is readable by every
            # local user in the process list.
            token_file = self.data_dir / "token"
            token_file.touch(mode=0o600)
            token_file.write_text(self.token)
            cmd += ["--token-file", str(token_file)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"brokerd did not start:\n{self.log_path.read_text()}")
            time.sleep(0.01)
        self.port = int(port_file.read_text())
        return self

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the graceful stop; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def restart(self, *, hard: bool = True) -> Self:
        """Stop (SIGKILL, or SIGTERM with ``hard=False``) and start again."""
        if hard:
            self.kill()
        elif self.proc is not None:
            self.terminate()
        return self.start()


#: The name :class:`BrokerProcess` had before; deprecated, kept for existing tests.
BrokerServer = BrokerProcess


class InProcessBroker:
    """brokerd in a daemon thread of this process, listening on a free port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"brokerd://127.0.0.1:{self.port}"

    def start(self) -> InProcessBroker:
        from brokerd.cli import build_server
        from brokerd.config import Config

        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = Config(host="127.0.0.1", port=0, data_dir=str(self.data_dir), metrics_port=0)
        ready = threading.Event()

        async def serve() -> None:
            server = self._server = build_server(config.validate())
            await server.start()
            self.port = server.port or 0
            ready.set()
            await server.serve_until_stopped()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # reported to start()
                self._error = exc
            finally:
                ready.set()
                loop.close()

        self._thread = threading.Thread(target=run, name="brokerd-inprocess", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT) or self._error is not None or not self.port:
            raise RuntimeError(f"in-process brokerd did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or server is None or thread is None or not thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(START_TIMEOUT)
        thread.join(START_TIMEOUT)


class WorkerHandle:
    """A ``brokerd-worker`` child process; ``stop()`` is a warm shutdown."""

    def __init__(
        self,
        app: str,
        broker_url: str,
        *args: str,
        workdir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.ready_file = workdir / f"worker-{time.monotonic_ns()}.ready"
        self.log_path = self.ready_file.with_suffix(".log")
        cmd = [
            sys.executable, "-m", "brokerd_client.worker",
            "-A", app, "-b", broker_url, "--ready-file", str(self.ready_file),
            *args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> WorkerHandle:
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log}")
            time.sleep(0.01)
        return self

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """Warm shutdown (SIGTERM), then SIGKILL if it takes longer than ``timeout``."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: the broker returns the worker's unfinished messages at once."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def brokerd_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A running brokerd for this test (see the module docstring)."""
    server = BrokerProcess(tmp_path_factory.mktemp("brokerd") / "data").start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def brokerd_inprocess_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[InProcessBroker]:
    """brokerd running inside the test process (see the module docstring)."""
    server = InProcessBroker(tmp_path_factory.mktemp("brokerd") / "data").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def brokerd_worker(
    brokerd_broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., WorkerHandle]]:
    """``brokerd_worker("proj.tasks", *worker_args, env={...})`` -> a ready worker."""
    workdir = tmp_path_factory.mktemp("workers")
    started: list[WorkerHandle] = []

    def start(app: str, *args: str, env: Mapping[str, str] | None = None) -> WorkerHandle:
        handle = WorkerHandle(app, brokerd_broker.url, *args, workdir=workdir, env=env)
        started.append(handle)
        return handle.wait_ready()

    try:
        yield start
    finally:
        for handle in started:
            handle.stop(timeout=10)


@contextlib.contextmanager
def eager(app: App, propagate: bool = True) -> Iterator[App]:
    """Run ``app``'s tasks in-process inside the block (``task_always_eager``)."""
    before: dict[str, Any] = {
        "task_always_eager": app.conf.task_always_eager,
        "task_eager_propagates": app.conf.task_eager_propagates,
    }
    app.conf.update(task_always_eager=True, task_eager_propagates=propagate)
    try:
        yield app
    finally:
        app.conf.update(before)
