"""The byte stream under the kombu transport's blocking connection: plain TCP or TLS.

:mod:`.wire` reads with ``MSG_DONTWAIT`` while other threads write with
``sendall``, and waits for readability with ``select`` on the socket.
Python's ``SSLSocket`` fits none of that (no flags on ``recv``, decrypted
bytes ``select`` cannot see, no safety for a read and a write at once), so
TLS runs here on an ``ssl.SSLObject`` over memory buffers and a plain socket.

Invariants:

* **The SSL object is touched under one lock** (``_tls``), held only while
  encrypting or decrypting, never across a blocking socket call: a writer
  blocked in ``sendall`` (the broker is not reading us) never stops the
  reader from decrypting (the broker waits for us to read before it reads
  again).
* **Records leave in the order they were made.** Ciphertext is taken out of
  the outgoing buffer only by a writer, under the caller's write lock
  (:mod:`.wire` ``_wlock``), and under ``_tls``; whatever the reader's
  decryption produced (a TLS alert, a key update answer) leaves with the
  next write.
* **No decrypted byte waits unseen.** A read drains the SSL object until it
  needs more ciphertext, so ``select`` on the socket stays the truth about
  whether there is more to read.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

__all__ = ["PlainStream", "Stream", "TLSStream"]

#: Bytes asked of the kernel (and of the SSL object) per call.
RECV_SIZE = 256 * 1024


class Stream:
    """What :mod:`.wire` needs of its connection's bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``; the caller holds the connection's write lock."""
        raise NotImplementedError

    def recv_nowait(self) -> bytes | None:
        """Bytes now, ``b""`` at the end of the stream, None if none are ready."""
        raise NotImplementedError

    def recv(self) -> bytes:
        """Bytes, waiting (up to the socket's timeout); ``b""`` at the end."""
        raise NotImplementedError


class PlainStream(Stream):
    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_nowait(self) -> bytes | None:
        try:
            return self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None

    def recv(self) -> bytes:
        return self.sock.recv(RECV_SIZE)


class TLSStream(Stream):
    """TLS over ``sock`` (see the module docstring). Make it with :meth:`handshake`."""

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:  # fmt: skip
        super().__init__(sock)
        self._obj = tls
        self._in = incoming
        self._out = outgoing
        self._tls = threading.Lock()

    @classmethod
    def handshake(
        cls, sock: socket.socket, context: ssl.SSLContext, server_hostname: str,
        timeout: float | None,
    ) -> TLSStream:  # fmt: skip
        """Run the TLS handshake on the blocking ``sock`` within ``timeout``.

        Raises ``ssl.SSLError`` (a refused certificate), ``TimeoutError``, or
        ``ConnectionError`` if the peer closes during the handshake.
        """
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not cls._step(tls):
            pending = outgoing.read()
            if pending:
                sock.sendall(pending)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("TLS handshake timed out")
                sock.settimeout(left)
            data = sock.recv(RECV_SIZE)
            if not data:
                raise ConnectionError("the broker closed the connection during the TLS handshake")
            incoming.write(data)
        pending = outgoing.read()
        if pending:
            sock.sendall(pending)
        sock.settimeout(timeout)
        return cls(sock, tls, incoming, outgoing)

    @staticmethod
    def _step(tls: ssl.SSLObject) -> bool:
        """One handshake step: True when done, False when it needs to read."""
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def sendall(self, data: bytes) -> None:
        with self._tls:
            self._obj.write(data)
            records = self._out.read()
        self.sock.sendall(records)

    def _decrypt(self, data: bytes) -> bytes | None:
        """Feed ciphertext; the plaintext it completes (``b""`` when the
        broker closed TLS, None when it completes nothing yet)."""
        chunks: list[bytes] = []
        with self._tls:
            self._in.write(data)
            while True:
                try:
                    chunk = self._obj.read(RECV_SIZE)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    return b"".join(chunks) or b""
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks) if chunks else None

    def recv_nowait(self) -> bytes | None:
        while True:
            try:
                data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return None
            if not data:
                return b""
            plain = self._decrypt(data)
            if plain is not None:
                return plain

    def recv(self) -> bytes:
        while True:
            data = self.sock.recv(RECV_SIZE)
            if not data:
                return b""
            plain = self._decrypt(data)
            if plain is not None:
                return plain
