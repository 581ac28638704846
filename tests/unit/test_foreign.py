"""Recognising and answering peers of another protocol (``brokerd.foreign``), no sockets."""

from __future__ import annotations

import struct

import pytest

import brokerd_protocol as bp
from brokerd.foreign import (
    MORE,
    TLS_ALERT,
    Foreign,
    Next,
    WarningGate,
    addresses,
    refusal_for,
    sniff,
)

WHERE = addresses("127.0.0.1", 5673, "127.0.0.1", 9673)


def test_a_brokerd_hello_is_never_taken_for_a_foreign_protocol() -> None:
    hello = bp.encode(bp.Hello([1], "t" * 4096, "c" * 200, 30.0))
    assert hello[0] == 0
    assert sniff(hello[:1]) is None
    assert sniff(hello) is None


@pytest.mark.parametrize(
    ("head", "protocol", "client"),
    [
        (b"AMQP\x00\x00\x09\x01", "amqp", "an AMQP 0-9-1 client"),
        (b"AMQP\x00\x01\x00\x00", "amqp", "an AMQP 1.0 client"),
        (b"AMQP\x03\x01\x00\x00", "amqp", "an AMQP 1.0 client"),
        (b"GET / HTTP/1.1\r\n", "http", "an HTTP client (GET)"),
        (b"OPTIONS * HTTP/1.1\r\n", "http", "an HTTP client (OPTIONS)"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "http", "an HTTP client (PRI)"),
        (b"\x16\x03\x01\x02\x00\x01", "tls", "a TLS client"),
    ],
)
def test_foreign_protocols_are_named_from_their_first_bytes(
    head: bytes, protocol: str, client: str
) -> None:
    found = sniff(head)
    assert isinstance(found, Foreign)
    assert (found.protocol, found.client) == (protocol, client)


@pytest.mark.parametrize("head", [b"A", b"AMQP", b"AMQP\x00\x00\x09", b"G", b"OPTIONS", b"\x16"])
def test_a_prefix_of_a_foreign_protocol_waits_for_more(head: bytes) -> None:
    assert sniff(head) is MORE


@pytest.mark.parametrize("head", [b"GEX", b"\x16\x04", b"\xff\xff\xff\xff", b"ZZZZ"])
def test_unknown_bytes_are_left_to_the_frame_decoder(head: bytes) -> None:
    assert sniff(head) is None


def amqp_frame(class_id: int, method_id: int, args: bytes = b"") -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def methods(data: bytes) -> list[tuple[int, int]]:
    found = []
    while data:
        _, _, size = struct.unpack_from(">BHI", data)
        found.append(struct.unpack_from(">HH", data, 7))
        assert data[7 + size] == 0xCE
        data = data[8 + size :]
    return found


def test_amqp_091_is_answered_start_then_close_after_a_whole_start_ok() -> None:
    found = sniff(b"AMQP\x00\x00\x09\x01")
    assert isinstance(found, Foreign)
    refusal = refusal_for(found, WHERE)
    reply, then = refusal.received(b"AMQP\x00\x00")
    assert (reply, then) == (b"", Next.LISTEN)
    reply, then = refusal.received(b"\x09\x01")
    assert methods(reply) == [(10, 10)] and then is Next.LISTEN
    start_ok = amqp_frame(10, 11, b"\x00" * 300)  # carries the password: never parsed
    reply, then = refusal.received(start_ok[:100])
    assert (reply, then) == (b"", Next.LISTEN)
    reply, then = refusal.received(start_ok[100:])
    assert methods(reply) == [(10, 50)] and then is Next.LISTEN
    text = reply[7 + 4 + 3 : 7 + 4 + 3 + reply[7 + 4 + 2]].decode()
    assert "broker_url='brokerd://127.0.0.1:5673'" in text
    reply, then = refusal.received(amqp_frame(10, 51))
    assert (reply, then) == (b"", Next.CLOSE)


def test_an_amqp_peer_announcing_a_huge_frame_is_closed() -> None:
    found = sniff(b"AMQP\x00\x00\x09\x01")
    assert isinstance(found, Foreign)
    refusal = refusal_for(found, WHERE)
    refusal.received(b"AMQP\x00\x00\x09\x01")
    _, then = refusal.received(struct.pack(">BHI", 1, 0, 1 << 30))
    assert then is Next.CLOSE


def test_the_close_text_fits_an_amqp_short_string_even_for_a_long_host() -> None:
    found = sniff(b"AMQP\x00\x00\x09\x01")
    assert isinstance(found, Foreign)
    refusal = refusal_for(found, addresses("é" * 200, 5673, "", 0))
    refusal.received(b"AMQP\x00\x00\x09\x01")
    reply, _ = refusal.received(amqp_frame(10, 11))
    size = reply[7 + 4 + 2]
    reply[7 + 4 + 3 : 7 + 4 + 3 + size].decode()  # whole UTF-8 sequences only
    assert methods(reply) == [(10, 50)]


def test_http_gets_a_400_with_the_metrics_urls_and_tls_an_alert() -> None:
    http = sniff(b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(http, Foreign)
    reply, then = refusal_for(http, WHERE).received(b"GET / HTTP/1.1\r\n\r\n")
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in head
    assert b"Content-Length: %d" % len(body) in head
    assert b"http://127.0.0.1:9673/metrics" in body
    assert then is Next.HANG_UP
    tls = sniff(b"\x16\x03\x01")
    assert isinstance(tls, Foreign)
    assert refusal_for(tls, WHERE).received(b"\x16\x03\x01") == (TLS_ALERT, Next.HANG_UP)


def test_urls_name_the_address_the_peer_reached_not_a_wildcard() -> None:
    where = addresses("::1", 5673, "0.0.0.0", 9000)
    assert where.broker_url == "brokerd://[::1]:5673"
    assert where.metrics_url == "http://[::1]:9000"
    assert addresses("10.0.0.5", 5673, "127.0.0.1", 0).metrics_url is None
    assert addresses("::ffff:10.0.0.5", 5673, "::", 0).broker_url == "brokerd://10.0.0.5:5673"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_warning_per_address_per_interval_then_the_suppressed_count() -> None:
    clock = Clock()
    gate = WarningGate(clock, interval=60.0)
    assert gate.admit("10.0.0.1") == 0
    assert gate.admit("10.0.0.1") is None
    assert gate.admit("10.0.0.1") is None
    assert gate.admit("10.0.0.2") == 0  # another address has its own line
    assert gate.admit("2001:db8::1") == 0
    assert gate.admit("2001:db8::2") is None  # the same /64
    clock.now = 60.0
    assert gate.admit("10.0.0.1") == 2


def test_the_warning_table_is_bounded() -> None:
    clock = Clock()
    gate = WarningGate(clock, interval=60.0, max_addresses=3)
    for i in range(10):
        assert gate.admit(f"10.0.0.{i}") == 0
    assert len(gate._seen) == 3
    assert gate.admit("10.0.0.0") == 0  # forgotten: warned again
