"""The tests' own PostgreSQL: without server binaries its tests skip saying
why, unless BROKERD_POSTGRES_TESTS=1 (CI), where that is a failure."""

from __future__ import annotations

import pgcluster
import pytest


def _no_server() -> None:
    raise pgcluster.NoServer("no PostgreSQL server binaries (test)")


def test_without_server_binaries_the_tests_skip_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pgcluster, "find_bindir", _no_server)
    monkeypatch.delenv(pgcluster.OPT_IN, raising=False)
    skipped = pytest.raises(pytest.skip.Exception, match="install PostgreSQL's server package")
    with skipped, pgcluster.cluster_or_skip():
        pass


def test_with_the_opt_in_missing_server_binaries_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgcluster, "find_bindir", _no_server)
    monkeypatch.setenv(pgcluster.OPT_IN, "1")
    failed = pytest.raises(
        pytest.fail.Exception, match="BROKERD_POSTGRES_TESTS=1 but no PostgreSQL"
    )
    with failed, pgcluster.cluster_or_skip():
        pass
