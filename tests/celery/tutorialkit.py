"""Real ``celery`` processes running the tutorial project (``tutorial/``) on a real brokerd.

A ``Fleet`` owns one brokerd and every ``celery -A tutorial worker`` / ``beat``
started for it, each in its own process group (so prefork pool children die
with their worker); ``close()`` kills them all, then the broker.

The test process's own Celery app is built from the project's own settings
(``tutorial.celeryconfig``) and autodiscovery, with the two URLs pointed at
this fleet's broker: what a web process importing the project does, with
``brokerd_client.celery`` imported once (tests/celery/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from celery import Celery
from celerykit import CELERY, HERE, Runs, Worker, wait_for

from brokerd_client.tasks.testing import BrokerProcess

__all__ = ["Fleet", "project_app"]


def project_app(url: str) -> Celery:
    """The tutorial's app as its ``tutorial/celery.py`` builds it, on ``url``."""
    app = Celery("tutorial")  # the current app: shared tasks bind to it
    app.config_from_object("tutorial.celeryconfig")
    app.conf.update(broker_url=url, result_backend=url)
    app.autodiscover_tasks(["tutorial.orders", "tutorial.web"], force=True)
    return app


class Fleet:
    """One brokerd and the celery processes started against it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker = BrokerProcess(workdir / "data").start()
        self.url: str = self.broker.url
        self.runs = Runs(workdir / "runs")
        self.procs: list[Worker] = []
        self.env = dict(os.environ)
        self.env.update(
            TUTORIAL_BROKER_URL=self.url,
            TUTORIAL_RUNS=str(self.runs.path),
            PYTHONPATH=os.pathsep.join([str(HERE), self.env.get("PYTHONPATH", "")]),
        )

    def _start(
        self, args: list[str], ready: str, what: str, env: dict[str, str] | None = None
    ) -> Worker:
        log = self.workdir / f"celery-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [CELERY, "-A", "tutorial", *args],
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        handle = Worker(proc, log)
        self.procs.append(handle)
        wait_for(lambda: ready in handle.text() or proc.poll() is not None, what)
        assert proc.poll() is None, handle.text()
        return handle

    def worker(
        self,
        *extra: str,
        concurrency: int = 2,
        name: str = "w",
        env: dict[str, str] | None = None,
    ) -> Worker:
        """``celery -A tutorial worker -P prefork -c N [extra]``, once it is ready."""
        node = f"{name}{len(self.procs)}@%h"
        args = ["worker", "-P", "prefork", "-c", str(concurrency), "-n", node, "-l", "INFO"]
        return self._start([*args, *extra], " ready.", f"worker {node}", env)

    def beat(self, schedule: Path) -> Worker:
        """``celery -A tutorial beat -s <schedule>``, once it is sending."""
        args = ["beat", "-s", str(schedule), "-l", "INFO", "--max-interval", "1"]
        return self._start(args, "beat: Starting", "beat")

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
            # Pool children outliving their worker are still in its group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.broker.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.text()}" for p in self.procs)


def idle(app: Any, *queues: str) -> bool:
    """No message ready, leased or delayed in ``queues`` (default: the app's)."""
    names = queues or tuple(app.amqp.queues)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in names:
            stats = channel.queue_stats(name)
            if stats["ready"] or stats["leased"] or stats["delayed"]:
                return False
    return True
