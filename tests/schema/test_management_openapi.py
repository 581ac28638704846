"""Schemathesis against the management API's own OpenAPI document: generated
requests to every operation of a real brokerd (a child process, no users, the
API open on loopback) never get a server error or an undocumented status.
A short run (a few examples per operation), as CI runs it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerd.management.openapi import document
from brokerd_client.tasks.testing import BrokerProcess

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: E402

schema = schemathesis.openapi.from_dict(document())
EXAMPLES = int(os.environ.get("BROKERD_SCHEMA_EXAMPLES", "5"))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("schema") / "data"
    proc = BrokerProcess(data, "--http-port", "0").start()
    try:
        yield f"http://127.0.0.1:{int((data / 'port.http').read_text())}"
    finally:
        proc.kill()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_only_documented_statuses(case: object, base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=10)  # type: ignore[attr-defined]
    case.validate_response(  # type: ignore[attr-defined]
        response, checks=[not_a_server_error, status_code_conformance]
    )
