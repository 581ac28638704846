"""A small HTTP/1.1 server for the management API, on the broker's loop.

Deliberately minimal and strict (no h11 dependency; the subset is small):

* The request head (request line + headers) is at most ``MAX_HEAD`` bytes,
  read with a bounded ``StreamReader``; more is 431 and the connection ends.
* A body is accepted only with ``Content-Length`` (no chunked uploads: 411 /
  501), at most ``MAX_BODY`` bytes, checked before a byte of it is read (413).
* Keep-alive by default (HTTP/1.1), ``Connection: close`` honoured; an idle
  connection is closed after ``IDLE_TIMEOUT`` seconds, a slow head after
  ``HEAD_TIMEOUT``.
* Anything malformed is a 400 with a one-line reason, then the connection
  closes (its framing can no longer be trusted). A handler that raises is a
  500 logged once; the server itself never stops over a request.

The handler is a plain coroutine ``handle(request) -> Response``; what it
reads is the loop's own state, so it must not block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

log = logging.getLogger("brokerd.management")

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
BODY_TIMEOUT = 30.0
#: Open HTTP connections at once; more are answered 503 and closed.
MAX_CONNECTIONS = 256

REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

#: Sent with every response (the page and the API alike).
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

_TOKEN_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


class HTTPError(Exception):
    """A request answered with ``status`` and a JSON error body."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(slots=True)
class Request:
    method: str
    #: The raw path (percent-escapes kept: ``%2F`` in a vhost must not split).
    raw_path: str
    query: dict[str, str]
    #: Header names lower-cased; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes
    peer: str = ""

    @property
    def peer_host(self) -> str:
        """The peer's address without its port."""
        return self.peer.rpartition(":")[0] or self.peer

    @property
    def segments(self) -> list[str]:
        """The path split on ``/`` first, then each part unescaped."""
        parts = self.raw_path.split("/")[1:]
        if parts and parts[-1] == "":
            parts.pop()
        return [unquote(p, errors="strict") for p in parts]

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"the body is not JSON: {exc}") from None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (none is ``{}``); 400 for anything else."""
        body = self.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return body

    def cookie(self, name: str) -> str | None:
        raw = self.headers.get("cookie")
        if not raw:
            return None
        for part in raw.split(";"):
            key, eq, value = part.strip().partition("=")
            if eq and key == name:
                return value
        return None


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(value, separators=(",", ":")).encode())

    @classmethod
    def error(cls, status: int, reason: str) -> Response:
        text = REASONS.get(status, "Error").lower().replace(" ", "_")
        return cls.json({"error": text, "reason": reason}, status)


Handler = Callable[[Request], Awaitable[Response]]


def _bad(reason: str) -> HTTPError:
    return HTTPError(400, reason)


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Method, target, version and headers of a request head (ending CRLFCRLF)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise _bad("undecodable request head") from None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _bad("malformed request line")
    method, target, version = parts
    if not method or not all(ord(c) in _TOKEN_CHARS for c in method):
        raise _bad("malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise HTTPError(505, f"{version} is not supported")
        raise _bad("malformed request line")
    if not target.startswith("/") or any(ord(c) <= 32 or ord(c) >= 127 for c in target):
        raise _bad("the request target must be an absolute path")
    if len(lines) - 1 > MAX_HEADERS:
        raise HTTPError(431, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or not all(ord(c) in _TOKEN_CHARS for c in name):
            raise _bad("malformed header line")
        if any(ord(c) < 32 and c != "\t" for c in value):
            raise _bad("control character in a header value")
        key = name.lower()
        if key in ("content-length", "host", "transfer-encoding") and key in headers:
            raise _bad(f"repeated {name} header")
        headers[key] = value.strip(" \t")
    return method, target, version, headers


def body_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise HTTPError(501, "Transfer-Encoding is not supported: send Content-Length")
    raw = headers.get("content-length")
    if raw is None:
        return 0
    if not raw.isdigit() or len(raw) > 12:
        raise _bad("malformed Content-Length")
    n = int(raw)
    if n > MAX_BODY:
        raise HTTPError(413, f"the body is larger than {MAX_BODY} bytes")
    return n


def encode_response(resp: Response, keep_alive: bool, head_only: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Error')}",
        f"Content-Type: {resp.content_type}",
        f"Content-Length: {len(resp.body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    given = {name.lower() for name, _ in resp.headers}
    lines.extend(f"{n}: {v}" for n, v in SECURITY_HEADERS if n.lower() not in given)
    lines.extend(f"{n}: {v}" for n, v in resp.headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + resp.body


class HTTPServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._listener: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        #: Requests answered (metrics for tests and the cost bench).
        self.requests = 0

    async def start(self, host: str, port: int) -> None:
        self._listener = await asyncio.start_server(
            self._serve, host, port, limit=MAX_HEAD, reuse_address=True
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for w in list(self._writers):
            w.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS:
            await self._send(writer, Response.error(503, "too many management connections"))
            writer.close()
            return
        self._writers.add(writer)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        try:
            first = True
            while True:
                keep = await self._one(
                    reader, writer, peer, HEAD_TIMEOUT if first else IDLE_TIMEOUT
                )
                first = False
                if not keep:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str, wait: float
    ) -> bool:
        """Read and answer one request; False when the connection should end."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        except asyncio.LimitOverrunError:
            await self._send(writer, Response.error(431, f"request head over {MAX_HEAD} bytes"))
            return False
        except (asyncio.IncompleteReadError, TimeoutError):
            return False
        if len(head) > MAX_HEAD:
            await self._send(writer, Response.error(431, f"request head over {MAX_HEAD} bytes"))
            return False
        try:
            method, target, version, headers = parse_head(head)
            length = body_length(headers)
        except HTTPError as exc:
            await self._send(writer, Response.error(exc.status, exc.reason))
            return False
        body = b""
        expect = headers.get("expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                await self._send(writer, Response.error(417, f"cannot meet Expect: {expect}"))
                return False
            if length:
                # curl asks before sending a body over 1 KiB: go ahead (the
                # size was checked above).
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length:
            try:
                body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT)
            except (asyncio.IncompleteReadError, TimeoutError):
                return False
        conn = headers.get("connection", "").lower()
        keep_alive = (version == "HTTP/1.1" and "close" not in conn) or (
            version == "HTTP/1.0" and "keep-alive" in conn
        )
        path, _, qs = target.partition("?")
        try:
            query = dict(parse_qsl(qs, keep_blank_values=True, max_num_fields=50))
        except ValueError:
            await self._send(writer, Response.error(400, "malformed query string"))
            return False
        request = Request(method, path, query, headers, body, peer)
        try:
            resp = await self.handler(request)
        except HTTPError as exc:
            resp = Response.error(exc.status, exc.reason)
            resp.headers.extend(exc.headers)
        except Exception:
            log.exception("management request %s %s failed", method, path)
            resp = Response.error(500, "internal error (logged by the broker)")
        self.requests += 1
        await self._send(writer, resp, keep_alive, head_only=method == "HEAD")
        return keep_alive

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter,
        resp: Response,
        keep_alive: bool = False,
        head_only: bool = False,
    ) -> None:
        writer.write(encode_response(resp, keep_alive, head_only))
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
