"""Clients of another protocol on brokerd's port, against a real brokerd.

An ``amqp://`` app (py-amqp, which kombu's ``pyamqp`` uses; aiormq), a browser
and a TLS client each get an answer they can show their user, the broker logs
one line saying what connected and what to use instead, and the port keeps
serving brokerd clients.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiormq
import aiormq.exceptions
import amqp
import amqp.exceptions
import kombu
import pytest

import brokerd_client

BOUND = 20.0
ADVICE = "brokerd speaks its own protocol"


def warnings(log_path: Path, what: str) -> list[str]:
    return [line for line in log_path.read_text().splitlines() if what in line]


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), BOUND)


def amqp_frame(payload: bytes) -> bytes:
    """An AMQP 0-9-1 method frame on channel 0."""
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


async def read_amqp_method(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """(class id, method id, arguments) of the next AMQP method frame."""
    kind, channel, size = struct.unpack(">BHI", await reader.readexactly(7))
    assert (kind, channel) == (1, 0)
    payload = await reader.readexactly(size)
    assert await reader.readexactly(1) == b"\xce"
    class_id, method_id = struct.unpack_from(">HH", payload)
    return class_id, method_id, payload[4:]


async def assert_still_serving(broker: Any) -> None:
    client = await brokerd_client.connect(broker.url, timeout=BOUND)
    try:
        await client.declare_queue("after-foreign")
        await client.publish("", "after-foreign", b"still here")
        consumer = await client.consume("after-foreign")
        delivery = await asyncio.wait_for(consumer.__anext__(), BOUND)
        assert delivery.body == b"still here"
        await delivery.ack()
    finally:
        await client.close()


async def test_an_amqp_header_gets_start_then_a_close_saying_what_to_use(broker: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(b"AMQP\x00\x00\x09\x01")
    class_id, method_id, args = await asyncio.wait_for(read_amqp_method(reader), BOUND)
    assert (class_id, method_id) == (10, 10)  # Connection.Start
    assert args[:2] == bytes([0, 9])
    # A StartOk, split across two writes: only a whole frame brings the Close.
    start_ok = amqp_frame(struct.pack(">HH", 10, 11) + b"\x00" * 20)
    writer.write(start_ok[:5])
    await writer.drain()
    writer.write(start_ok[5:])
    class_id, method_id, args = await asyncio.wait_for(read_amqp_method(reader), BOUND)
    assert (class_id, method_id) == (10, 50)  # Connection.Close
    (code,) = struct.unpack_from(">H", args)
    text = args[3 : 3 + args[2]].decode()
    assert code == 540
    assert text.startswith(ADVICE)
    assert f"broker_url='brokerd://127.0.0.1:{broker.port}'" in text
    writer.write(amqp_frame(struct.pack(">HH", 10, 51)))  # CloseOk
    assert await read_until_closed(reader) == b""
    writer.close()

    [line] = warnings(broker.log_path, "AMQP 0-9-1 client connected from 127.0.0.1:")
    assert "WARNING" in line
    assert "brokerd_client" in line and "pip install 'brokerd[celery]'" in line
    await assert_still_serving(broker)


async def test_another_amqp_version_gets_the_091_header_and_a_close(broker: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(b"AMQP\x00\x01\x00\x00")  # AMQP 1.0
    assert await read_until_closed(reader) == b"AMQP\x00\x00\x09\x01"
    writer.close()
    assert warnings(broker.log_path, "an AMQP 1.0 client connected from 127.0.0.1:")


def test_py_amqp_raises_the_brokers_advice(broker: Any) -> None:
    conn = amqp.Connection(f"127.0.0.1:{broker.port}", connect_timeout=BOUND)
    with pytest.raises(amqp.exceptions.AMQPNotImplementedError) as raised:
        conn.connect()
    assert ADVICE in str(raised.value)
    assert f"brokerd://127.0.0.1:{broker.port}" in str(raised.value)


def test_kombu_pyamqp_tells_a_celery_user_to_use_brokerd_url(broker: Any) -> None:
    with (
        kombu.Connection(f"pyamqp://guest:guest@127.0.0.1:{broker.port}//") as conn,
        # kombu passes py-amqp's error through (it is not a recoverable one).
        pytest.raises(amqp.exceptions.AMQPNotImplementedError) as raised,
    ):
        conn.ensure_connection(max_retries=1)
    assert ADVICE in str(raised.value)
    assert f"broker_url='brokerd://127.0.0.1:{broker.port}'" in str(raised.value)


async def test_aiormq_raises_the_brokers_advice(broker: Any) -> None:
    with pytest.raises(aiormq.exceptions.ConnectionClosed) as raised:
        url = f"amqp://guest:guest@127.0.0.1:{broker.port}/"
        await asyncio.wait_for(aiormq.connect(url), BOUND)
    assert ADVICE in str(raised.value)
    assert f"brokerd://127.0.0.1:{broker.port}" in str(raised.value)


def get(url: str) -> urllib.error.HTTPError:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(url, timeout=BOUND)
    return raised.value


async def test_an_http_request_gets_400_naming_the_metrics_port(broker_factory: Any) -> None:
    metrics_port = free_port()
    proc = broker_factory("--metrics-port", str(metrics_port)).start()
    error = await asyncio.to_thread(get, f"http://127.0.0.1:{proc.port}/metrics")
    body = error.read().decode()
    assert error.code == 400
    assert error.headers["Connection"] == "close"
    assert error.headers["Content-Type"].startswith("text/plain")
    assert "brokerd's message port" in body
    assert f"http://127.0.0.1:{metrics_port}/metrics" in body
    assert f"http://127.0.0.1:{metrics_port}/healthz" in body
    [line] = warnings(proc.log_path, "an HTTP client (GET) connected from 127.0.0.1:")
    assert f"http://127.0.0.1:{metrics_port}/metrics" in line

    samples = await asyncio.to_thread(scrape, metrics_port)
    assert samples['brokerd_wrong_protocol_connections_total{protocol="http"}'] == 1
    assert samples['brokerd_wrong_protocol_connections_total{protocol="amqp"}'] == 0
    await assert_still_serving(proc)


async def test_without_metrics_the_http_answer_says_the_endpoint_is_off(broker: Any) -> None:
    error = await asyncio.to_thread(get, f"http://127.0.0.1:{broker.port}/")
    assert error.code == 400
    assert "endpoint is off (--metrics-port)" in error.read().decode()


def tls_handshake(port: int) -> ssl.SSLError:
    context = ssl.create_default_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock,
        pytest.raises(ssl.SSLError) as raised,
    ):
        context.wrap_socket(sock, server_hostname="localhost")
    return raised.value


async def test_a_tls_client_on_a_plain_port_gets_an_alert_and_the_log_says_it_is_not_tls(
    broker: Any,
) -> None:
    error = await asyncio.to_thread(tls_handshake, broker.port)
    assert "HANDSHAKE_FAILURE" in str(error).upper()
    [line] = warnings(broker.log_path, "a TLS client connected from 127.0.0.1:")
    assert "this port is not TLS" in line
    assert "--tls-cert" in line
    await assert_still_serving(broker)


async def test_a_peer_that_keeps_coming_back_is_logged_once(broker_factory: Any) -> None:
    metrics_port = free_port()
    proc = broker_factory("--metrics-port", str(metrics_port)).start()
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await read_until_closed(reader)
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        writer.close()
    assert len(warnings(proc.log_path, "an HTTP client (GET) connected")) == 1
    samples = await asyncio.to_thread(scrape, metrics_port)
    assert samples['brokerd_wrong_protocol_connections_total{protocol="http"}'] == 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=BOUND) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples
