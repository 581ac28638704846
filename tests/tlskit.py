"""Throwaway certificate authorities and certificates for the TLS tests (trustme).

Each ``Pki`` is a fresh CA; ``server`` writes a broker certificate (chain +
key as PEM files brokerd reads), ``client`` a client certificate for mTLS.
Nothing here touches the system trust store.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path

    def flags(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]


class Pki:
    """One CA and the files it issued, under ``root``."""

    def __init__(self, root: Path, name: str = "ca") -> None:
        self.root = root
        self.name = name
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name=f"brokerd tests {name}")
        self.ca_file = root / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def _write(self, leaf: trustme.LeafCert, stem: str) -> CertFiles:
        files = CertFiles(self.root / f"{stem}.crt", self.root / f"{stem}.key")
        # The chain file: leaf first, then any intermediates (none here).
        files.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        files.key.write_bytes(leaf.private_key_pem.bytes())
        files.key.chmod(0o600)
        return files

    def server(
        self,
        stem: str = "server",
        *names: str,
        not_after: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
    ) -> CertFiles:
        """A broker certificate for ``names`` (default: 127.0.0.1 and localhost)."""
        leaf = self.ca.issue_cert(
            *(names or ("127.0.0.1", "localhost")),
            not_before=not_before,
            not_after=not_after,
        )
        return self._write(leaf, f"{self.name}-{stem}")

    def client(self, stem: str = "client", common_name: str = "worker-1") -> CertFiles:
        leaf = self.ca.issue_cert("client.example", common_name=common_name)
        return self._write(leaf, f"{self.name}-{stem}")


def expired(pki: Pki) -> CertFiles:
    """A broker certificate whose validity ended yesterday."""
    now = dt.datetime.now(dt.UTC)
    return pki.server(
        "expired", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
    )
