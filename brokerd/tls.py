"""TLS on the broker port: the server's ``SSLContext``, built and reloaded from PEM files.

TLS is transport only: over it the protocol is byte for byte the one of
SPEC §2 onwards, and authentication is still the Hello's token.

Invariants:

* **One clear error.** Every way the files can be wrong (missing,
  unreadable, not PEM, an encrypted key, a key that does not belong to the
  certificate, a CA file without certificates) is a ``TLSFileError`` whose
  message names the file and the fix; the command prints it as one line.
* **Files are read once per load.** The PEM bytes are read (with a size cap,
  before anything is parsed) and both the check and the load use those bytes,
  so a file replaced half-way through a reload cannot leave the live context
  with one file's certificate and another's key.
* **A reload changes new connections only.** ``ServerTLS.reload`` checks the
  new files on a throwaway context first and only then loads them into the
  live context, which OpenSSL copies into every *new* connection at accept;
  established connections keep the certificate they were opened with. A
  reload that fails leaves the live context untouched.
* **Secure defaults.** TLS 1.2 at least, the ``ssl`` module's default
  ciphers, no compression, no renegotiation; with a CA file every client must
  present a certificate it signed (mTLS): the TLS layer verifies any
  certificate presented, and the session refuses a connection without one
  (``Session.connection_made``) before reading anything from it. A CA file given again on reload
  adds its certificates; certificates it no longer holds stay trusted until
  a restart (OpenSSL cannot remove from a live trust store).
* No key material is logged; private keys may not be encrypted (the broker
  could only ask for a passphrase on a terminal it does not have).
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_PEM_BYTES", "ServerTLS", "TLSFileError", "server_context"]

log = logging.getLogger("brokerd.tls")

#: Largest certificate, key or CA file read; a bundle of every public CA is ~250 KB.
MAX_PEM_BYTES = 4 * 1024 * 1024


class TLSFileError(ValueError):
    """A certificate, key or CA file that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Where the server's certificate chain, key and (for mTLS) client CA live."""

    cert: str
    key: str
    ca: str | None = None


def _read_pem(path: str, what: str, marker: bytes) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TLSFileError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise TLSFileError(f"TLS {what} {path} is larger than {MAX_PEM_BYTES} bytes")
    if b"-----BEGIN " not in data or marker not in data:
        raise TLSFileError(f"TLS {what} {path} holds no PEM {marker.decode().lower()} block")
    return data


def _refuse_passphrase() -> bytes:
    raise TLSFileError("encrypted")


class _Loaded:
    """The PEM bytes of one load, in private temporary files (``load_cert_chain``
    and ``load_verify_locations`` read paths), removed on exit."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self.cert = _read_pem(files.cert, "certificate", b"CERTIFICATE")
        self.key = _read_pem(files.key, "key", b"PRIVATE KEY")
        self.ca = None if files.ca is None else _read_pem(files.ca, "CA file", b"CERTIFICATE")
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> _Loaded:
        self._dir = tempfile.TemporaryDirectory(prefix="brokerd-tls-")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _path(self, name: str, data: bytes) -> str:
        assert self._dir is not None
        path = os.path.join(self._dir.name, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def load_into(self, ctx: ssl.SSLContext) -> None:
        """Load this certificate chain and key (and the CA) into ``ctx``."""
        files = self.files
        cert = self._path("cert.pem", self.cert)
        key = self._path("key.pem", self.key)
        try:
            ctx.load_cert_chain(cert, key, password=_refuse_passphrase)
        except TLSFileError:
            raise TLSFileError(
                f"TLS key {files.key} is encrypted; give brokerd an unencrypted key "
                "(openssl pkey -in KEY -out KEY.plain) readable only by its user"
            ) from None
        except ssl.SSLError as exc:
            raise TLSFileError(_chain_error(files, exc)) from None
        finally:
            os.unlink(cert)
            os.unlink(key)
        if self.ca is not None:
            assert files.ca is not None
            try:
                ctx.load_verify_locations(cadata=self.ca.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise TLSFileError(
                    f"TLS CA file {files.ca} holds no usable certificate: {_reason(exc)}"
                ) from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc)


def _chain_error(files: TLSFiles, exc: ssl.SSLError) -> str:
    reason = str(exc.reason or "")
    if reason == "KEY_VALUES_MISMATCH":
        return f"TLS key {files.key} does not belong to certificate {files.cert}"
    if exc.library == "PEM" or "PEM" in reason or reason in ("NO_START_LINE", "BAD_BASE64_DECODE"):
        return f"TLS certificate {files.cert} or key {files.key} is not valid PEM: {_reason(exc)}"
    return f"TLS certificate {files.cert} and key {files.key} cannot be used: {_reason(exc)}"


def _new_context(require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if require_client_cert:
        # OPTIONAL, not REQUIRED: a certificate that is presented must still
        # verify, but a client presenting none completes the handshake and the
        # session refuses it with a brokerd Error naming the fix. (A refused
        # TLS handshake gives the client no reason at all: the server closes
        # without flushing its alert.)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """A server context for ``files``; ``TLSFileError`` if they cannot be used."""
    ctx = _new_context(files.ca is not None)
    with _Loaded(files) as loaded:
        loaded.load_into(ctx)
    return ctx


class ServerTLS:
    """The listener's TLS context and its reload (see the module docstring)."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        #: The one context the listener was created with; reloads change it in place.
        self.context = server_context(files)
        #: Reloads that took effect since start.
        self.reloads = 0

    def reload(self) -> bool:
        """Load the files again for new connections; False (and one error
        line, the old certificate kept) if they cannot be used."""
        try:
            with _Loaded(self.files) as loaded:
                loaded.load_into(_new_context(self.files.ca is not None))  # the check
                loaded.load_into(self.context)
        except TLSFileError as exc:
            log.error("TLS reload failed, keeping the current certificate: %s", exc)
            return False
        self.reloads += 1
        log.info("TLS certificate reloaded from %s (new connections use it)", self.files.cert)
        return True


def certificate_user(peercert: object) -> str | None:
    """The common name (CN) of a verified client certificate: the user a
    ``--tls-cert-login`` broker logs it in as (RabbitMQ's EXTERNAL
    mechanism). None if the certificate has no CN. ``peercert`` is what
    ``SSLObject.getpeercert()`` returns: subject as RDNs of (key, value)."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for pair in rdn:
            if len(pair) == 2 and pair[0] == "commonName" and isinstance(pair[1], str):
                return pair[1]
    return None


def describe(files: TLSFiles) -> str:
    """How the listener is secured, for the start-up line."""
    mtls = f", client certificates from CA {Path(files.ca).name}" if files.ca else ""
    return f"TLS ({Path(files.cert).name}{mtls})"
