"""Helpers for the remote control and events tests: the real ``celery`` CLI
as a subprocess, and the broker's own view of its queues.

Why metrics: brokerd has no "list queues" request, and the queues Celery's
remote control declares are named after random ids (``<oid>.reply.celery.pidbox``,
``celeryev.<uuid>``) made up inside another process. The broker's Prometheus
endpoint lists every queue it holds, so a test can prove none is left behind.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from celerykit import CELERY

from brokerd_client.tasks.testing import BrokerProcess

#: Seconds the CLI waits for replies when it knows how many to expect (it
#: returns as soon as they are in).
REPLY_TIMEOUT = 20.0

_QUEUE_LINE = re.compile(
    r'^brokerd_queue_consumers\{queue="((?:[^"\\]|\\.)*)",vhost="(?:[^"\\]|\\.)*"\} (\S+)$'
)


def free_port() -> int:
    """A port nobody listens on right now (for brokerd's metrics, Flower)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MeteredBroker(BrokerProcess):
    """A brokerd whose metrics endpoint is on, to list the queues it holds."""

    def __init__(self, data_dir: Path) -> None:
        self.metrics_port = free_port()
        super().__init__(data_dir, "--metrics-port", str(self.metrics_port))

    def queues(self) -> dict[str, int]:
        """Every queue the broker holds, with its number of consumers."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        found: dict[str, int] = {}
        for line in text.splitlines():
            match = _QUEUE_LINE.match(line)
            if match:
                found[match.group(1)] = int(float(match.group(2)))
        return found


def node(name: str) -> str:
    """The node name ``celery worker -n name@%h`` gets."""
    return f"{name}@{socket.gethostname()}"


def celery(
    env: dict[str, str], *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``celery -A proj <args>`` to completion."""
    return subprocess.run(
        [CELERY, "-A", "proj", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_celery(env: dict[str, str], *args: str, out: Path) -> subprocess.Popen[bytes]:
    """Start ``celery -A proj <args>`` in its own process group, output to ``out``."""
    with out.open("wb") as sink:
        return subprocess.Popen(
            [CELERY, "-A", "proj", *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def json_reply(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON the CLI printed with ``--json`` (its first line)."""
    assert done.returncode == 0, f"celery exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[0])


def inspect(env: dict[str, str], command: str, *nodes: str) -> dict[str, Any]:
    """``celery inspect <command> --json``: the replies by node name. With
    ``nodes`` it asks those only and returns once they all answered."""
    args = ["inspect", command, "--json", "--timeout", str(REPLY_TIMEOUT if nodes else 3.0)]
    if nodes:
        args += ["--destination", ",".join(nodes)]
    replies: dict[str, Any] = json_reply(celery(env, *args))
    return replies


def record_queue_options(monkeypatch: Any) -> list[dict[str, Any]]:
    """Every DeclareQueue options map the kombu transport builds from now on."""
    from brokerd_client.celery import transport

    declared: list[dict[str, Any]] = []
    real = transport.queue_options

    def recording(*args: Any, **kwargs: Any) -> dict[str, Any]:
        options = real(*args, **kwargs)
        declared.append(options)
        return options

    monkeypatch.setattr(transport, "queue_options", recording)
    return declared
