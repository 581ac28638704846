"""Settings from flags, environment and an optional TOML file.

Precedence: command-line flag, then ``BROKERD_*`` environment variable, then
the config file, then the default. Every value is validated here so that a
typo stops the broker at start with a message naming the setting.

The token is best given as a file (``--token-file``, ``BROKERD_TOKEN_FILE``,
``token_file``): a ``--token`` flag is readable by every local user in
``/proc/<pid>/cmdline``. It is never part of the config's ``repr``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from brokerd_protocol import DEFAULT_MAX_FRAME, HARD_MAX_FRAME, MAX_TOKEN_BYTES

from .memory import DEFAULT_MEMORY_LIMIT, MIN_MEMORY_LIMIT
from .sizes import parse_size
from .storage.postgres.url import StoreURLError, check_url, redact
from .unacked import DEFAULT_PER_CONNECTION, DEFAULT_TOTAL


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 5673
    data_dir: str = "./data"
    #: Where the queues live: None for SQLite in data_dir, or a
    #: ``postgresql://`` URL (docs/postgresql.md). Never in the repr: it may
    #: hold a password.
    store: str | None = field(default=None, repr=False)
    #: ``host:port`` clients are sent to while this node is active (a
    #: standby's Redirect, docs/ha.md); default the listen address.
    advertise: str | None = None
    durability: str = "full"
    token: str | None = field(default=None, repr=False)
    #: File holding the token (read at load time into ``token``).
    token_file: str | None = None
    log_level: str = "info"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9673
    #: The management HTTP API and page (brokerd/management): loopback unless
    #: users are configured. ``http_port``: None = the default port 15673,
    #: given up with a warning when taken; 0 = any free port (logged, and
    #: written to ``<port_file>.http``); -1 = off; else exactly that port.
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    #: Authenticated connections at once.
    max_connections: int = 10_000
    #: Connections still in the handshake at once; apart from max_connections.
    max_handshakes: int = 1024
    #: Seconds from connect by which a connection must have been welcomed.
    handshake_timeout: float = 10.0
    max_frame: int = DEFAULT_MAX_FRAME
    #: Bytes queued for a slow client before deliveries to it pause.
    max_write_buffer: int = 4 * 1024 * 1024
    #: Accepted-but-uncommitted body bytes before sockets stop being read.
    max_uncommitted: int = 64 * 1024 * 1024
    #: Body bytes of ready and delayed messages held in memory (see memory.py).
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    #: Body bytes of messages delivered to one connection and not yet settled
    #: before its consumers get no more; and the same over all connections
    #: (see unacked.py).
    max_unacked_bytes: int = DEFAULT_PER_CONNECTION
    max_unacked_bytes_total: int = DEFAULT_TOTAL
    #: Below this many free bytes on the data dir's disk, publishers are held
    #: (0 = off). About what the broker may still write once it stops reading:
    #: max_uncommitted, once in the WAL and once in the database.
    min_free_disk: int = 128 * 1024 * 1024
    heartbeat: float = 30.0
    shutdown_grace: float = 10.0
    server_name: str = "brokerd"
    port_file: str | None = None
    #: PEM certificate chain and private key: the broker port speaks TLS (brokerd/tls.py).
    tls_cert: str | None = None
    tls_key: str | None = None
    #: PEM CA certificates: clients must present a certificate one of them signed (mTLS).
    tls_ca: str | None = None
    #: A client certificate's CN names the user it logs in as, with no
    #: password (needs tls_ca; applies once users exist).
    tls_cert_login: bool = False

    @property
    def in_memory(self) -> bool:
        return self.data_dir == ":memory:" and self.store is None

    @property
    def store_shown(self) -> str:
        """Where the queues live, as logs may show it (no password)."""
        if self.store is not None:
            return redact(self.store)
        return self.data_dir

    def validate(self) -> Config:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be 0..65535 (0 = off), got {self.metrics_port}")
        if self.http_port is not None and not -1 <= self.http_port <= 65535:
            raise ConfigError(
                f"http_port must be 0..65535 (0 = any free port, -1 = off), got {self.http_port}"
            )
        if self.durability not in ("full", "normal"):
            raise ConfigError(f"durability must be 'full' or 'normal', got {self.durability!r}")
        if self.store is not None:
            try:
                check_url(self.store)
            except StoreURLError as exc:
                raise ConfigError(str(exc)) from None
            if self.data_dir == ":memory:":
                raise ConfigError(
                    "--store postgresql://... keeps the queues in PostgreSQL; data_dir "
                    "':memory:' cannot go with it (data_dir holds the control socket)"
                )
        if self.advertise is not None:
            host, colon, port = self.advertise.rpartition(":")
            if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ConfigError(
                    f"advertise must be host:port (an IPv6 host in brackets), got "
                    f"{self.advertise!r}"
                )
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"log_level {self.log_level!r} is not a logging level")
        # A Deliver carries up to 64 KiB more than the Publish it came from.
        if not 1024 <= self.max_frame <= HARD_MAX_FRAME - 65536:
            raise ConfigError(f"max_frame must be within 1024..{HARD_MAX_FRAME - 65536}")
        if self.memory_limit < MIN_MEMORY_LIMIT:
            raise ConfigError(
                f"memory_limit must be at least {MIN_MEMORY_LIMIT // (1024 * 1024)} MiB, "
                f"got {self.memory_limit} bytes"
            )
        for name in ("max_unacked_bytes", "max_unacked_bytes_total"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 byte")
        if self.max_connections < 1:
            raise ConfigError("max_connections must be at least 1")
        if self.max_handshakes < 1:
            raise ConfigError("max_handshakes must be at least 1")
        if not 0 < self.handshake_timeout <= 3600:
            raise ConfigError("handshake_timeout must be within 0..3600 seconds (exclusive of 0)")
        if self.min_free_disk < 0:
            raise ConfigError("min_free_disk must be >= 0 (0 disables the free-disk alarm)")
        if self.heartbeat < 0:
            raise ConfigError("heartbeat must be >= 0 (0 disables)")
        if self.token is not None and not self.token:
            raise ConfigError("token must not be empty")
        if self.token is not None and len(self.token.encode()) > MAX_TOKEN_BYTES:
            raise ConfigError(f"token must be at most {MAX_TOKEN_BYTES} bytes")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together: give both, or neither")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ConfigError("tls_ca (client certificates) needs tls_cert and tls_key")
        if self.tls_cert_login and self.tls_ca is None:
            raise ConfigError(
                "tls_cert_login (the certificate's CN as the user) needs tls_ca: "
                "only a certificate the broker verified may name a user"
            )
        # The broker port may bind elsewhere with users instead of a token; the
        # users are in the store, so the server checks that once it is open.
        if self.token is None and not is_loopback(self.metrics_host):
            raise ConfigError(
                f"refusing to bind metrics_host {self.metrics_host!r} without a token: set "
                "--token-file (or BROKERD_TOKEN_FILE, BROKERD_TOKEN), or bind 127.0.0.1"
            )
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


_NAMES = frozenset(f.name for f in fields(Config))
#: Settings given as byte sizes with optional units (``128MiB``, ``1GB``).
_SIZES = frozenset(
    {"memory_limit", "min_free_disk", "max_unacked_bytes", "max_unacked_bytes_total"}
)


def _coerce(name: str, value: Any) -> Any:
    default = getattr(Config, name, None)
    kind: type = type(default) if default is not None else str
    if value is None:
        return None
    if name in _SIZES:
        try:
            return parse_size(value)
        except ValueError:
            raise ConfigError(
                f"{name} must be a size in bytes such as 134217728, 128MiB or 1GB, got {value!r}"
            ) from None
    if name == "http_port":
        text = str(value).strip().lower()
        if text == "off":
            return -1
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"http_port must be a port number or 'off', got {value!r}") from None
    try:
        if kind is bool:
            return str(value).lower() in ("1", "true", "yes", "on")
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="brokerd",
        description="brokerd: a message broker and task queue with durable SQLite queues.",
    )
    p.add_argument("--config", help="TOML file with settings (keys as below, with underscores)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 5673; 0 = any free)")
    p.add_argument(
        "--data-dir",
        help="where the SQLite database lives (default ./data; ':memory:' keeps nothing); "
        "with --store, where the control socket lives",
    )
    p.add_argument(
        "--store",
        help="postgresql://user@host:5432/database keeps the queues in PostgreSQL "
        "(default: SQLite in --data-dir); give the password in PGPASSWORD or ~/.pgpass, "
        "not here: other local users can read command lines",
    )
    p.add_argument(
        "--advertise",
        help="with --store: host:port where clients reach this node when it is the active "
        "one; standby nodes redirect clients there (default: the listen address)",
    )
    p.add_argument(
        "--durability",
        choices=["full", "normal"],
        help="full: fsync every commit (default); normal: fsync at checkpoints",
    )
    p.add_argument(
        "--token-file",
        help="file holding the shared secret clients must present (required for non-loopback "
        "binds); surrounding whitespace is ignored",
    )
    p.add_argument(
        "--token",
        help="the shared secret itself; prefer --token-file or BROKERD_TOKEN_FILE: other local "
        "users can read command lines",
    )
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument("--metrics-host", help="address for /metrics and /healthz (default 127.0.0.1)")
    p.add_argument("--metrics-port", type=int, help="port for /metrics (default 9673; 0 = off)")
    p.add_argument(
        "--http-host",
        help="address for the management API and page (default 127.0.0.1; another "
        "address needs users: brokerctl add_user)",
    )
    p.add_argument(
        "--http-port",
        help="port for the management API and page (default 15673; 0 = any free port, "
        "written to PORT_FILE.http; off = none)",
    )
    p.add_argument("--max-connections", type=int, help="authenticated connections at once")
    p.add_argument(
        "--max-handshakes",
        type=int,
        help="connections still in the (TLS or brokerd) handshake at once (default 1024); "
        "when full, the "
        "oldest is dropped",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        help="seconds from connect to complete the handshake (default 10)",
    )
    p.add_argument("--max-frame", type=int, help="largest frame accepted, bytes")
    p.add_argument(
        "--memory-limit",
        help="body bytes of queued messages kept in memory, e.g. 128MiB (default); "
        "durable queues keep the rest on disk",
    )
    p.add_argument(
        "--max-unacked-bytes",
        help="body bytes of messages one connection may hold delivered and not yet acked, "
        "whatever its consumers' prefetch, e.g. 64MiB (default); past it they get no more "
        "until it acks",
    )
    p.add_argument(
        "--max-unacked-bytes-total",
        help="the same over all connections, e.g. 512MiB (default)",
    )
    p.add_argument("--heartbeat", type=float, help="heartbeat interval in seconds (0 = off)")
    p.add_argument("--port-file", help="write the bound port here once listening (for port 0)")
    p.add_argument(
        "--min-free-disk",
        help="hold publishers while the data dir's disk has less free space than this "
        "(bytes, or e.g. 500MB, 1GB, 2GiB; default 128MiB; 0 = off)",
    )
    p.add_argument(
        "--tls-cert",
        help="PEM certificate chain: the broker port speaks TLS (with --tls-key); "
        "reloaded on SIGHUP",
    )
    p.add_argument("--tls-key", help="PEM private key of --tls-cert (unencrypted)")
    p.add_argument(
        "--tls-ca",
        help="PEM CA certificates: clients must present a certificate signed by one (mTLS)",
    )
    p.add_argument(
        "--tls-cert-login",
        action="store_true",
        default=None,
        help="with --tls-ca and users: a client that gives no user name logs in as the "
        "user its certificate's CN names, without a password",
    )
    return p


def load(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    return load_config(argv, env)[0]


def load_config(
    argv: list[str] | None = None, env: dict[str, str] | None = None
) -> tuple[Config, list[str]]:
    """The validated settings, and warnings to log once logging is set up."""
    env = dict(os.environ) if env is None else env
    warnings: list[str] = []
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    config_file = args.config or env.get("BROKERD_CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        section = data.get("brokerd", data)
        for key, value in section.items():
            name = key.replace("-", "_")
            if name not in _NAMES:
                raise ConfigError(f"unknown setting {key!r} in {path}")
            values[name] = _coerce(name, value)
    for name in _NAMES:
        env_value = env.get(f"BROKERD_{name.upper()}")
        if env_value is not None:
            values[name] = _coerce(name, env_value)
    for name in _NAMES:
        flag_value = getattr(args, name, None)
        if flag_value is not None:
            values[name] = _coerce(name, flag_value)
    if values.get("token_file") is not None:
        if values.get("token") is not None:
            raise ConfigError("set either token or token_file, not both")
        values["token"] = read_token_file(values["token_file"])
    elif args.token is not None:
        warnings.append(
            "the token was given with --token, which other local users can read in the "
            "process list; use --token-file or BROKERD_TOKEN_FILE instead"
        )
    return Config(**values).validate(), warnings


def read_token_file(path: str) -> str:
    """The token a file holds, without surrounding whitespace.

    Reads at most one byte more than a token may have, so pointing it at a
    large file (or a device) cannot make the broker allocate much.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_BYTES + 64 + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc.strerror or exc}") from None
    try:
        token = data.decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"token file {path} is not UTF-8 text") from None
    if not token:
        raise ConfigError(f"token file {path} is empty")
    if len(data) > MAX_TOKEN_BYTES + 64 or len(token.encode()) > MAX_TOKEN_BYTES:
        raise ConfigError(
            f"token file {path} holds more than a token: longer than {MAX_TOKEN_BYTES} bytes"
        )
    return token
