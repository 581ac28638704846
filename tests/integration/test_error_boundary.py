"""The broker's one error rule (docs/ARCHITECTURE.md, Errors), against a broker
running in the test's own event loop so a handler can be made to fail.

A ``BrokerError`` answers its request with its code; any other exception in a
request handler, core or task layer, is logged with its traceback and answers
``INTERNAL`` while the connection stays open; a publish that fails that way
gets ``PublishError(INTERNAL)``. Only a protocol error ends the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import pytest
from clientkit import BOUND

import brokerd_client
from brokerd.broker import Broker
from brokerd.cli import build_server
from brokerd.config import Config
from brokerd.server import BrokerServer
from brokerd.tasks import results
from brokerd_client import AsyncClient, InternalError, NotFound
from brokerd_protocol import Decoder, Error, ErrorCode, Hello, QueueStats, Welcome, encode

INTERNAL_MESSAGE = "internal error; see the broker log"


@contextlib.asynccontextmanager
async def broker_and_client() -> AsyncIterator[tuple[BrokerServer, AsyncClient]]:
    config = Config(host="127.0.0.1", port=0, data_dir=":memory:", metrics_port=0)
    server = build_server(config.validate())
    await server.start()
    client = await brokerd_client.connect(f"brokerd://127.0.0.1:{server.port}", timeout=BOUND)
    try:
        yield server, client
    finally:
        await client.close()
        await server.stop()


def bug(*args: Any, **kwargs: Any) -> NoReturn:
    raise RuntimeError("a bug in a handler")


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]


async def test_a_core_handler_that_raises_answers_internal_and_the_connection_stays_open(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with broker_and_client() as (_, client):
        await client.declare_queue("q")
        with monkeypatch.context() as patch:
            patch.setattr(Broker, "queue_stats", bug)
            with pytest.raises(InternalError, match=INTERNAL_MESSAGE):
                await client.queue_stats("q")
        assert (await client.queue_stats("q")).ready == 0
        await client.declare_queue("after")
    assert len(tracebacks(caplog)) == 1


async def test_a_task_layer_handler_that_raises_answers_internal_and_the_connection_stays_open(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with broker_and_client() as (_, client):
        with monkeypatch.context() as patch:
            patch.setattr(results, "check_task_id", bug)  # called by the ResultSet handler
            with pytest.raises(InternalError, match=INTERNAL_MESSAGE):
                await client.result_set("t", "SUCCESS", b"lost")
        await client.result_set("t", "SUCCESS", b"kept")
        assert await client.result_get(["t"]) == {"t": ("SUCCESS", b"kept")}
    assert len(tracebacks(caplog)) == 1


async def test_a_publish_that_raises_gets_publish_error_internal_and_the_connection_stays_open(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with broker_and_client() as (_, client):
        await client.declare_queue("q")
        with monkeypatch.context() as patch:
            patch.setattr(Broker, "publish", bug)
            with pytest.raises(InternalError, match=INTERNAL_MESSAGE):
                await client.publish("", "q", b"lost")
        assert await client.publish("", "q", b"kept") is True
        assert (await client.queue_stats("q")).ready == 1
    assert len(tracebacks(caplog)) == 1


async def test_a_broker_error_answers_its_request_with_its_code() -> None:
    async with broker_and_client() as (_, client):
        with pytest.raises(NotFound):
            await client.queue_stats("no-such-queue")
        await client.declare_queue("after")


async def test_a_protocol_error_still_ends_the_connection() -> None:
    async with broker_and_client() as (server, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        decoder = Decoder()
        writer.write(encode(Hello([1], None, "raw", 0.0)) + encode(QueueStats(0, "q")))
        frames = []
        async with asyncio.timeout(BOUND):
            while data := await reader.read(65536):
                decoder.feed(data)
                frames.extend(decoder)
        writer.close()
        assert isinstance(frames[0], Welcome)
        assert isinstance(frames[-1], Error)
        assert (frames[-1].req, frames[-1].code) == (0, ErrorCode.PROTOCOL_ERROR)
