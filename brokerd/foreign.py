"""Peers that speak another protocol on brokerd's port: recognised, answered, logged once.

The commonest misconfiguration is a Celery/kombu app still pointed at an
``amqp://`` URL, a browser or ``curl`` aimed at the wrong port, or a client
that wraps the connection in TLS while the port is plain (a TLS port never
sees a ClientHello here: the TLS layer has consumed it). Without this module all of them would hit
the frame decoder, whose only verdict is "frame too large".

Invariants:

* A brokerd client's first byte is always 0x00: every frame starts with its
  32-bit big-endian length, and before Welcome no frame may exceed
  ``MAX_HELLO_FRAME`` (16 KiB). So ``sniff`` only ever looks at a connection
  whose first byte is not zero, needs at most ``SNIFF_BYTES`` bytes, and
  costs a brokerd client nothing beyond one comparison on its first read.
* A recognised peer gets an answer in its own protocol where one exists
  (``Refusal``), then the connection ends. Nothing it sends is interpreted
  beyond counting AMQP frames; the AMQP 0-9-1 ``Connection.StartOk`` carries
  the client's password, which is skipped unread and never logged.
* Nothing here does I/O or keeps time: the session writes what a refusal
  returns, and ``WarningGate`` takes the time from an injected clock.

The AMQP 0-9-1 answer was chosen by trying what clients print (see
docs/ARCHITECTURE.md, "Wrong-protocol peers"): replying with only a protocol
header, as the AMQP spec suggests for an unsupported version, makes py-amqp
(kombu's ``pyamqp``) report "Server unexpectedly closed connection" and
aiormq "Unexpected AMQP protocol header". A ``Connection.Start`` followed,
after the client's ``StartOk``, by a ``Connection.Close`` whose reply text
says what to do makes both raise that text.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .throttle import address_key

__all__ = [
    "MORE",
    "SNIFF_BYTES",
    "Foreign",
    "Next",
    "Refusal",
    "WarningGate",
    "refusal_for",
    "sniff",
]

#: The most bytes ``sniff`` needs to name a protocol ("OPTIONS ", an AMQP header).
SNIFF_BYTES = 8

AMQP_091_HEADER = b"AMQP\x00\x00\x09\x01"
#: The HTTP methods recognised (request line "METHOD "); PRI opens HTTP/2.
HTTP_METHODS = (
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI ",
)
#: A TLS record of type handshake (22) with a 3.x record version.
TLS_HANDSHAKE = b"\x16\x03"
#: A fatal TLS alert record, handshake_failure (40).
TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"
#: AMQP 0-9-1 reply code NOT_IMPLEMENTED: py-amqp raises ``AMQPNotImplementedError``.
AMQP_NOT_IMPLEMENTED = 540
#: The largest AMQP frame we skip while waiting for StartOk / CloseOk; a
#: StartOk is a few hundred bytes of client properties.
MAX_AMQP_FRAME = 65536


class _More:
    """``sniff``'s answer when the bytes so far could still start a foreign protocol."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MORE"


MORE = _More()


@dataclass(frozen=True, slots=True)
class Foreign:
    """A protocol recognised from a connection's first bytes."""

    #: Metric label: ``amqp``, ``http`` or ``tls``.
    protocol: str
    #: Who connected, for the log line: "an AMQP 0-9-1 client".
    client: str
    #: The first bytes, as far as sniffed (the AMQP header's version).
    head: bytes


def sniff(prefix: bytes) -> Foreign | _More | None:
    """Name the protocol a connection's first bytes belong to.

    ``None``: not a protocol we recognise (a brokerd client, or garbage the
    frame decoder will refuse); ``MORE``: undecided until more bytes arrive.
    """
    if not prefix or prefix[0] == 0:
        return None
    head = prefix[:SNIFF_BYTES]
    if head.startswith(TLS_HANDSHAKE[: len(head)]):
        if len(head) < len(TLS_HANDSHAKE):
            return MORE
        return Foreign("tls", "a TLS client", head[:2])
    if head.startswith(b"AMQP"[: len(head)]):
        if len(head) < len(AMQP_091_HEADER):
            return MORE
        return Foreign("amqp", _amqp_client(head), head)
    undecided = False
    for method in HTTP_METHODS:
        if head.startswith(method):
            return Foreign("http", f"an HTTP client ({method.decode().strip()})", method)
        if method.startswith(head):
            undecided = True
    return MORE if undecided else None


def _amqp_client(header: bytes) -> str:
    version = header[4:8]
    if version == AMQP_091_HEADER[4:]:
        return "an AMQP 0-9-1 client"
    if version in (b"\x00\x01\x00\x00", b"\x03\x01\x00\x00", b"\x02\x01\x00\x00"):
        return "an AMQP 1.0 client"
    return f"an AMQP client (protocol header {version.hex()})"


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where the peer should have gone, as the peer can reach it."""

    #: The ``brokerd://host:port`` URL of this listener.
    broker_url: str
    #: ``http://host:port`` of /metrics and /healthz, or None when that is off.
    metrics_url: str | None
    #: ``http://host:port/`` of the management page, or None when that is off.
    management_url: str | None = None


def addresses(
    local_host: str,
    local_port: int,
    metrics_host: str,
    metrics_port: int | None,
    management: tuple[str, int] | None = None,
) -> Addresses:
    """The URLs to point a foreign peer at.

    ``local_host`` is the address the peer reached us on, so it is one the
    peer can reach; the metrics host is used unless it is a wildcard.
    """
    host = _url_host(local_host)
    metrics_url = None
    if metrics_port:
        m_host = local_host if metrics_host in _WILDCARDS else metrics_host
        metrics_url = f"http://{_url_host(m_host)}:{metrics_port}"
    management_url = None
    if management is not None:
        h_host = local_host if management[0] in _WILDCARDS else management[0]
        management_url = f"http://{_url_host(h_host)}:{management[1]}/"
    return Addresses(f"brokerd://{host}:{local_port}", metrics_url, management_url)


#: Listen addresses that name no host a peer could dial.
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (compared, not bound)


def _url_host(host: str) -> str:
    """``host`` as written in a URL; an IPv4-mapped IPv6 address (a dual-stack
    listener) as the IPv4 address the peer dialled."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else f"[{ip}]"
    return host


def advice(foreign: Foreign, where: Addresses) -> str:
    """What the operator (log) and the client (reply) are told to do instead."""
    if foreign.protocol == "amqp":
        return (
            f"use brokerd_client, or Celery/kombu with broker_url='{where.broker_url}' "
            "(pip install 'brokerd[celery]')"
        )
    if foreign.protocol == "http":
        page = (
            f"; the management page is at {where.management_url}"
            if where.management_url is not None
            else ""
        )
        if where.metrics_url is None:
            return (
                "this is the message port; the metrics and health endpoint is off "
                f"(--metrics-port){page}"
            )
        return (
            f"this is the message port; metrics and health are at {where.metrics_url}/metrics "
            f"and {where.metrics_url}/healthz{page}"
        )
    return (
        f"this port is not TLS; connect with {where.broker_url}, or start brokerd with "
        "--tls-cert and --tls-key to serve brokerds://"
    )


class Next(enum.Enum):
    """What the session does after writing a refusal's reply."""

    #: Keep the connection; feed the refusal what arrives next.
    LISTEN = 1
    #: Everything is said: half-close, discard what arrives, close on the
    #: peer's EOF (or at the handshake deadline).
    HANG_UP = 2
    #: Close now.
    CLOSE = 3


class Refusal:
    """Answers one foreign peer in its own protocol; bytes in, reply out."""

    def received(self, data: bytes) -> tuple[bytes, Next]:
        raise NotImplementedError


class _Once(Refusal):
    """Says one thing and hangs up (HTTP, TLS, an AMQP version other than 0-9-1)."""

    def __init__(self, reply: bytes) -> None:
        self._reply = reply

    def received(self, data: bytes) -> tuple[bytes, Next]:
        reply, self._reply = self._reply, b""
        return reply, Next.HANG_UP


class _Amqp091(Refusal):
    """AMQP 0-9-1: Start, then Close with the advice after the client's StartOk,
    then close after its CloseOk.

    Only frame boundaries are read (type, channel, size, end octet), so a
    StartOk split across reads is not mistaken for the CloseOk.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._buffer = b""
        self._frames = 0
        self._started = False
        self._closing = False

    def received(self, data: bytes) -> tuple[bytes, Next]:
        buffer = self._buffer + data
        reply = b""
        if not self._started:
            if len(buffer) < len(AMQP_091_HEADER):
                self._buffer = buffer
                return b"", Next.LISTEN
            buffer = buffer[len(AMQP_091_HEADER) :]
            self._started = True
            reply = _amqp_start()
        if not self._count(buffer) or self._frames >= 2:  # oversized, or the CloseOk came
            return reply, Next.CLOSE
        if self._frames == 1 and not self._closing:  # the StartOk came
            self._closing = True
            reply += _amqp_close(self._text)
        return reply, Next.LISTEN

    def _count(self, buffer: bytes) -> bool:
        """Count the complete frames in ``buffer`` and keep a partial one;
        False for a frame larger than any StartOk or CloseOk."""
        while len(buffer) >= 7:
            (size,) = struct.unpack_from(">I", buffer, 3)
            if size > MAX_AMQP_FRAME:
                return False
            end = 7 + size + 1
            if len(buffer) < end:
                break
            buffer = buffer[end:]
            self._frames += 1
        self._buffer = buffer
        return True


def _amqp_method(class_id: int, method_id: int, args: bytes) -> bytes:
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def _shortstr(text: str) -> bytes:
    raw = text.encode()[:255]
    # Never cut a UTF-8 sequence in half.
    raw = raw.decode("utf-8", "ignore").encode()
    return bytes([len(raw)]) + raw


def _longstr(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def _amqp_start() -> bytes:
    """Connection.Start offering every common mechanism, so any client answers."""
    properties = b"\x07product" + b"S" + _longstr(b"brokerd")
    return _amqp_method(
        10,
        10,
        bytes([0, 9])
        + _longstr(properties)
        + _longstr(b"PLAIN AMQPLAIN EXTERNAL")
        + _longstr(b"en_US"),
    )


def _amqp_close(text: str) -> bytes:
    return _amqp_method(
        10, 50, struct.pack(">H", AMQP_NOT_IMPLEMENTED) + _shortstr(text) + b"\x00\x00\x00\x00"
    )


def _http_400(text: str) -> bytes:
    body = f"{text}\n".encode()
    return (
        b"HTTP/1.1 400 Bad Request\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(body)
    ) + body


def refusal_for(foreign: Foreign, where: Addresses) -> Refusal:
    """The conversation that answers ``foreign``; feed it the sniffed bytes first."""
    if foreign.protocol == "amqp":
        if foreign.head == AMQP_091_HEADER:
            return _Amqp091(f"brokerd speaks its own protocol, not AMQP: {advice(foreign, where)}")
        # Another AMQP version: the header of the one version the refusal
        # speaks, then close (AMQP's rule for an unsupported version).
        return _Once(AMQP_091_HEADER)
    if foreign.protocol == "http":
        return _Once(
            _http_400(
                "This is brokerd's message port: it speaks brokerd's own binary protocol, "
                f"not HTTP; {advice(foreign, where).removeprefix('this is the message port; ')}."
            )
        )
    return _Once(TLS_ALERT)


def warning_text(foreign: Foreign, peer: str, where: Addresses) -> str:
    return f"{foreign.client} connected from {peer}; brokerd speaks its own protocol: " + advice(
        foreign, where
    )


#: Seconds between two warnings about the same peer address.
WARN_INTERVAL = 60.0
#: Addresses remembered at once (oldest forgotten first).
MAX_ADDRESSES = 10_000


class WarningGate:
    """At most one wrong-protocol warning per peer address per ``interval``.

    A scanner hitting the port in a loop costs one log line a minute per
    address; the next line says how many were not logged. IPv6 addresses
    count per /64, like the authentication throttle. The table is bounded.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        interval: float = WARN_INTERVAL,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._max = max_addresses
        #: address key -> [last warning time, connections not logged since]
        self._seen: dict[str, list[float]] = {}

    def admit(self, host: str) -> int | None:
        """None to stay quiet; else the count of warnings suppressed since the last one."""
        key = address_key(host)
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return None
        suppressed = int(entry[1]) if entry is not None else 0
        self._seen.pop(key, None)
        if len(self._seen) >= self._max:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = [now, 0]
        return suppressed
