"""A brokerd child process with its management API on a free port, and one
way to call that API, for tests that drive real workers (tests/tasks,
tests/celery). No users: the API is open on loopback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from brokerd_client.tasks.testing import BrokerProcess

BOUND = 20.0


@contextmanager
def management_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker serving the management API (``--http-port 0``), killed after."""
    proc = BrokerProcess(tmp_path / "data", "--http-port", "0").start()
    try:
        yield proc
    finally:
        proc.kill()


def call(broker: BrokerProcess, method: str, path: str) -> tuple[int, Any]:
    """``(status, JSON body)`` of one request; an error status is returned, not raised."""
    port = int((broker.data_dir / "port.http").read_text())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=BOUND) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
