"""Shared fixtures: a real brokerd on port 0 with a temporary data directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The broker helper lives in brokerd_client.tasks.testing, which is also a pytest
# plugin (test_testing_plugin.py loads it): register it for assert rewriting
# before the import below.
pytest.register_assert_rewrite("brokerd_client.tasks.testing")

from brokerproc import BrokerProcess  # noqa: E402  (after the rewrite registration)
from pgcluster import ENV_URL, Cluster, cluster_or_skip, database_for  # noqa: E402


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL server of the session's own (tests/pgcluster.py): skips
    without server binaries, unless BROKERD_POSTGRES_TESTS=1 (then fails).
    Its URL is in the environment (``ENV_URL``) for child processes."""
    with cluster_or_skip() as cluster:
        os.environ[ENV_URL] = cluster.url()
        try:
            yield cluster
        finally:
            os.environ.pop(ENV_URL, None)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A running brokerd; ``broker.url`` to connect, ``broker.restart()`` to bounce it."""
    proc = BrokerProcess(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[type[BrokerProcess]]:
    """Start brokers with extra flags: ``broker_factory(path, "--token", "x").start()``."""
    started: list[BrokerProcess] = []

    class Factory(BrokerProcess):
        def __init__(self, *extra: str, token: str | None = None) -> None:
            super().__init__(tmp_path / f"data{len(started)}", *extra, token=token)
            started.append(self)

    try:
        yield Factory
    finally:
        for proc in started:
            proc.kill()


@pytest.fixture
def pg_broker(postgres: Cluster, tmp_path: Path) -> Iterator[BrokerProcess]:
    """A running brokerd keeping its queues in a fresh database of the
    session's PostgreSQL (``--store postgresql://...``)."""
    url = database_for(str(tmp_path))
    proc = BrokerProcess(tmp_path / "data", "--store", url).start()
    try:
        yield proc
    finally:
        proc.kill()
