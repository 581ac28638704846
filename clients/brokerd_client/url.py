"""Parse ``brokerd://[token@]host[:port][,host[:port]...][/vhost]``,
``brokerd://user:password@host[:port][/vhost]`` and ``brokerds://`` (TLS) connection URLs.

A URL is how an operator hands credentials and an address to an application
(an environment variable, a settings file), so a bad one must fail at startup
with a message that names the problem, not later as a confusing socket error.
That is why this parser is strict: anything it does not understand (a path of
more than one segment, a query, a stray character in the port) is a
``ValueError``, never silently ignored. The path is the vhost (docs/vhosts.md):
none or empty is ``"/"``, which is also written ``%2F``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote

__all__ = ["DEFAULT_PORT", "SCHEME", "TLS_SCHEME", "BrokerURL", "parse_url"]

SCHEME = "brokerd"
#: The same protocol inside TLS (SPEC §1.1), on the same default port.
TLS_SCHEME = "brokerds"
DEFAULT_PORT = 5673
#: The vhost of a URL without a path.
DEFAULT_VHOST = "/"

# RFC 1123 host names: dot-separated labels of letters, digits and hyphens.
_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """Where to connect, with which token or user and password, and whether
    over TLS (``brokerds://``). ``host`` has no IPv6 brackets."""

    host: str
    port: int = DEFAULT_PORT
    token: str | None = None
    tls: bool = False
    user: str | None = None
    password: str | None = None
    #: Further ``(host, port)`` nodes of a failover URL
    #: (``brokerd://h1:5673,h2:5673``), tried after ``host`` (docs/ha.md).
    alternates: tuple[tuple[str, int], ...] = ()
    #: The vhost the connection works in (the URL's path; ``"/"`` without one).
    vhost: str = DEFAULT_VHOST

    def candidates(self) -> list[BrokerURL]:
        """One single-host URL per node, in the order given."""
        nodes = [(self.host, self.port), *self.alternates]
        return [replace(self, host=h, port=p, alternates=()) for h, p in nodes]

    def moved_to(self, address: str) -> BrokerURL:
        """This URL pointed at ``address`` (``host:port``, a standby's Redirect)."""
        host, port = _split_host_port(address, address)
        if port is None:
            raise ValueError(f"invalid node address {address!r}: expected host:port")
        return replace(self, host=host, port=_parse_port(port, address), alternates=())

    @property
    def scheme(self) -> str:
        return TLS_SCHEME if self.tls else SCHEME

    def __str__(self) -> str:
        """The URL without its token, safe to log."""
        nodes = ",".join(
            f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
            for h, p in ((self.host, self.port), *self.alternates)
        )
        path = "" if self.vhost == DEFAULT_VHOST else "/" + quote(self.vhost, safe="")
        return f"{self.scheme}://{nodes}{path}"

    def __repr__(self) -> str:
        # Never print the secret, even in tracebacks and debug logs.
        token = "'***'" if self.token is not None else "None"
        password = "'***'" if self.password is not None else "None"
        return (
            f"BrokerURL(host={self.host!r}, port={self.port}, token={token}, tls={self.tls}, "
            f"user={self.user!r}, password={password}, vhost={self.vhost!r})"
        )


def parse_url(url: str) -> BrokerURL:
    """Split a ``brokerd://`` or ``brokerds://`` URL into host, port, token and TLS.

    Accepted forms: ``brokerd://host``, ``brokerd://host:5673``,
    ``brokerd://token@host:5673``, ``brokerd://user:password@host:5673``,
    ``brokerd://[::1]:5673``, and each with ``brokerds://`` (the same over
    TLS, the host name verified against the broker's certificate). Before
    the ``@``, a colon after a non-empty name means a user and its password;
    otherwise it is the broker's token (``brokerd://:token@host`` too). Each
    part may be percent-encoded (``%40`` for ``@``, ``%3A`` for ``:``). A
    failover URL lists several nodes sharing one database,
    ``brokerd://h1:5673,h2:5673,h3:5673``: clients try them in turn and follow
    a standby's redirect (docs/ha.md). The path names the vhost,
    percent-encoded (``brokerd://h/orders``; ``brokerd://h``, ``brokerd://h/``
    and ``brokerd://h/%2F`` are all the default vhost ``"/"``).
    """
    if not isinstance(url, str):
        raise TypeError(f"broker URL must be a str, not {type(url).__name__}")
    shown = _redact(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"invalid broker URL {shown!r}: expected 'brokerd://[token@]host[:port]'")
    if scheme.lower() not in (SCHEME, TLS_SCHEME):
        raise ValueError(
            f"invalid broker URL {shown!r}: scheme must be 'brokerd' or 'brokerds' (TLS), "
            f"not {scheme!r}"
        )
    if "?" in rest or "#" in rest:
        raise ValueError(f"invalid broker URL {shown!r}: query strings and fragments are not used")
    netloc, _, path = rest.partition("/")
    vhost = DEFAULT_VHOST
    if path:
        if "/" in path:
            raise ValueError(
                f"invalid broker URL {shown!r}: the path is one vhost name; write a '/' in "
                "it as %2F"
            )
        vhost = unquote(path)
        if any(ord(c) < 32 or ord(c) == 127 for c in vhost) or len(vhost) > 255:
            raise ValueError(
                f"invalid broker URL {shown!r}: a vhost has 1 to 255 characters, "
                "no control characters"
            )

    token: str | None = None
    user: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        raw_user, colon, raw_password = userinfo.partition(":")
        if colon and raw_user:
            if not raw_password:
                raise ValueError(f"invalid broker URL {shown!r}: empty password after ':'")
            user, password = unquote(raw_user), unquote(raw_password)
        else:
            raw_token = raw_password if colon else userinfo
            if not raw_token:
                raise ValueError(f"invalid broker URL {shown!r}: empty token before '@'")
            token = unquote(raw_token)

    if not netloc:
        raise ValueError(f"invalid broker URL {shown!r}: missing host")
    nodes: list[tuple[str, int]] = []
    for node in netloc.split(","):  # a failover URL lists several nodes
        if not node:
            raise ValueError(f"invalid broker URL {shown!r}: empty host in the list of nodes")
        host, port_text = _split_host_port(node, shown)
        nodes.append((host, DEFAULT_PORT if port_text is None else _parse_port(port_text, shown)))
    (host, port), *alternates = nodes
    return BrokerURL(
        host=host,
        port=port,
        token=token,
        tls=scheme.lower() == TLS_SCHEME,
        user=user,
        password=password,
        alternates=tuple(alternates),
        vhost=vhost,
    )


def _split_host_port(netloc: str, shown: str) -> tuple[str, str | None]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError(f"invalid broker URL {shown!r}: unclosed '[' in IPv6 address")
        host = netloc[1:end]
        after = netloc[end + 1 :]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(
                f"invalid broker URL {shown!r}: {host!r} is not an IPv6 address"
            ) from None
        if not after:
            return host, None
        if not after.startswith(":"):
            raise ValueError(f"invalid broker URL {shown!r}: unexpected {after!r} after ']'")
        return host, after[1:]
    if netloc.count(":") > 1:
        raise ValueError(
            f"invalid broker URL {shown!r}: put an IPv6 address in brackets, e.g. brokerd://[::1]"
        )
    host, colon, port_text = netloc.partition(":")
    if not host:
        raise ValueError(f"invalid broker URL {shown!r}: missing host")
    if not _HOSTNAME.match(host):
        raise ValueError(f"invalid broker URL {shown!r}: {host!r} is not a valid host name")
    return host, (port_text if colon else None)


def _parse_port(text: str, shown: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"invalid broker URL {shown!r}: port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid broker URL {shown!r}: port {port} is out of range 1-65535")
    return port


def redact(url: str) -> str:
    """The URL as logs and messages may show it (any secret replaced)."""
    return _redact(url)


def _redact(url: str) -> str:
    """The URL with any token replaced, so error messages never leak it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***@" + url.rpartition("@")[2]
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{tail}"
