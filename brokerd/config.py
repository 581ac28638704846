"""Settings from flags, environment and an optional TOML file.

Precedence: command-line flag, then ``BROKERD_*`` environment variable, then
the config file, then the default. Every value is validated here so that a
typo stops the broker at start with a message naming the setting.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from brokerd_protocol import DEFAULT_MAX_FRAME, HARD_MAX_FRAME

from .sizes import parse_size


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 5673
    data_dir: str = "./data"
    durability: str = "full"
    token: str | None = None
    log_level: str = "info"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9673
    max_connections: int = 10_000
    max_frame: int = DEFAULT_MAX_FRAME
    #: Bytes queued for a slow client before deliveries to it pause.
    max_write_buffer: int = 4 * 1024 * 1024
    #: Accepted-but-uncommitted body bytes before sockets stop being read.
    max_uncommitted: int = 64 * 1024 * 1024
    #: Below this many free bytes on the data dir's disk, publishers are held
    #: (0 = off). About what the broker may still write once it stops reading:
    #: max_uncommitted, once in the WAL and once in the database.
    min_free_disk: int = 128 * 1024 * 1024
    heartbeat: float = 30.0
    shutdown_grace: float = 10.0
    server_name: str = "brokerd"
    port_file: str | None = None

    @property
    def in_memory(self) -> bool:
        return self.data_dir == ":memory:"

    def validate(self) -> Config:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be 0..65535 (0 = off), got {self.metrics_port}")
        if self.durability not in ("full", "normal"):
            raise ConfigError(f"durability must be 'full' or 'normal', got {self.durability!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"log_level {self.log_level!r} is not a logging level")
        # A Deliver carries up to 64 KiB more than the Publish it came from.
        if not 1024 <= self.max_frame <= HARD_MAX_FRAME - 65536:
            raise ConfigError(f"max_frame must be within 1024..{HARD_MAX_FRAME - 65536}")
        if self.max_connections < 1:
            raise ConfigError("max_connections must be at least 1")
        if self.min_free_disk < 0:
            raise ConfigError("min_free_disk must be >= 0 (0 disables the free-disk alarm)")
        if self.heartbeat < 0:
            raise ConfigError("heartbeat must be >= 0 (0 disables)")
        if self.token is not None and not self.token:
            raise ConfigError("token must not be empty")
        for host, what in ((self.host, "host"), (self.metrics_host, "metrics_host")):
            if self.token is None and not is_loopback(host):
                raise ConfigError(
                    f"refusing to bind {what} {host!r} without a token: set --token or "
                    "BROKERD_TOKEN, or bind 127.0.0.1"
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
#: Settings given as byte sizes with optional units (``1GB``).
_SIZES = frozenset({"min_free_disk"})


def _coerce(name: str, value: Any) -> Any:
    if name in _SIZES and value is not None:
        try:
            return parse_size(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    default = getattr(Config, name, None)
    kind: type = type(default) if default is not None else str
    if value is None:
        return None
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
        help="where the SQLite database lives (default ./data; ':memory:' keeps nothing)",
    )
    p.add_argument(
        "--durability",
        choices=["full", "normal"],
        help="full: fsync every commit (default); normal: fsync at checkpoints",
    )
    p.add_argument(
        "--token", help="shared secret clients must present (required for non-loopback binds)"
    )
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.add_argument("--metrics-host", help="address for /metrics and /healthz (default 127.0.0.1)")
    p.add_argument("--metrics-port", type=int, help="port for /metrics (default 9673; 0 = off)")
    p.add_argument("--max-connections", type=int)
    p.add_argument("--max-frame", type=int, help="largest frame accepted, bytes")
    p.add_argument("--heartbeat", type=float, help="heartbeat interval in seconds (0 = off)")
    p.add_argument("--port-file", help="write the bound port here once listening (for port 0)")
    p.add_argument(
        "--min-free-disk",
        help="hold publishers while the data dir's disk has less free space than this "
        "(bytes, or e.g. 500MB, 1GB, 2GiB; default 128MiB; 0 = off)",
    )
    return p


def load(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
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
    return Config(**values).validate()
