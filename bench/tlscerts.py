"""A throwaway certificate for ``--brokerd-tls``: brokerd serves ``brokerds://`` with it.

One CA and one server certificate (for 127.0.0.1) per bench run, made with
``trustme`` in a private temporary directory. The directory is handed to the
broker processes and to the spawned producer and consumer processes through
the ``BENCH_BROKERD_TLS_DIR`` environment variable (``brokerd_tls_dir``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "BENCH_BROKERD_TLS_DIR"
CERT, KEY, CA = "server.crt", "server.key", "ca.pem"


def make_certificates() -> Path:
    """Write a CA and a 127.0.0.1 server certificate; return their directory."""
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - trustme is in the bench extra
        raise SystemExit(f"--brokerd-tls needs trustme (pip install trustme): {exc}") from None
    root = Path(tempfile.mkdtemp(prefix="brokerd-bench-tls-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(root / CA))
    (root / CERT).write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    (root / KEY).write_bytes(leaf.private_key_pem.bytes())
    (root / KEY).chmod(0o600)
    return root


def brokerd_tls_dir() -> Path | None:
    """The certificates of this run, when brokerd is benchmarked over TLS."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def server_flags() -> list[str]:
    root = brokerd_tls_dir()
    if root is None:
        return []
    return ["--tls-cert", str(root / CERT), "--tls-key", str(root / KEY)]


def client_cafile() -> str | None:
    root = brokerd_tls_dir()
    return None if root is None else str(root / CA)
