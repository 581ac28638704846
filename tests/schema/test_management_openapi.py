"""Schemathesis against the management API's own OpenAPI document: generated
requests to every operation of a real brokerd (a child process, no users, the
API open on loopback) never get a server error or an undocumented status.
A short run (a few examples per operation), as CI runs it.

A generated request may create a user (``PUT /api/users/{name}``, ``POST
/api/definitions``): every user is deleted again after each example, so the
API stays open as the run assumes (with users, each generated credential is
a failed login, and the throttle makes every later request wait seconds)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import brokerd_protocol as bp
from brokerd.management.openapi import document
from brokerd_client.client import connect_unix
from brokerd_client.tasks.testing import BrokerProcess

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import status_code_conformance  # noqa: E402

schema = schemathesis.openapi.from_dict(document())
EXAMPLES = int(os.environ.get("BROKERD_SCHEMA_EXAMPLES", "5"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("schema") / "data"


@pytest.fixture(scope="module")
def base_url(data_dir: Path) -> Iterator[str]:
    proc = BrokerProcess(data_dir, "--http-port", "0").start()
    try:
        yield f"http://127.0.0.1:{int((data_dir / 'port.http').read_text())}"
    finally:
        proc.kill()


def _delete_users(data_dir: Path) -> None:
    """Delete every user, over the control socket (no credentials needed)."""

    async def run() -> None:
        client = await connect_unix(str(data_dir / "brokerd.sock"))
        try:
            page = await client.call(bp.ListUsers)
            for row in page["items"]:
                name = row["name"]
                await client.call(lambda req, name=name: bp.DeleteUser(req, name))
        finally:
            await client.close()

    asyncio.run(run())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_only_documented_statuses(
    case: object, base_url: str, data_dir: Path
) -> None:
    response = case.call(base_url=base_url, timeout=10)  # type: ignore[attr-defined]
    if case.method != "GET":  # type: ignore[attr-defined]
        _delete_users(data_dir)
    case.validate_response(  # type: ignore[attr-defined]
        response, checks=[not_a_server_error, status_code_conformance]
    )
