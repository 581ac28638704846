"""The ``--store`` URL: which store a broker uses, checked at start, and shown
without its password.

``postgresql://user[:password]@host[:port]/database[?param=value...]`` (or
``postgres://``) selects the PostgreSQL store; its parameters are libpq's as
the driver understands them (``sslmode``, ``connect_timeout``, ...). The
password is best kept out of the URL altogether (``PGPASSWORD`` or a
``~/.pgpass`` file, which the driver reads): a URL on the command line is
readable by every local user. Whatever the URL holds, brokerd logs and
reports it through ``redact`` only.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")


class StoreURLError(ValueError):
    """The store URL cannot be used (said without its password)."""


def is_postgres_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES and "://" in url


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{user}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str:
    """``url`` if it names a PostgreSQL database brokerd can try; otherwise
    ``StoreURLError`` saying what is wrong."""
    shown = redact(url)
    if not is_postgres_url(url):
        raise StoreURLError(
            f"store {shown!r} is not a postgresql:// URL (leave --store unset for SQLite "
            "in --data-dir)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise StoreURLError(f"store URL {shown!r} is malformed: {exc}") from None
    if not parts.path.strip("/"):
        raise StoreURLError(
            f"store URL {shown!r} names no database: postgresql://user@host:5432/database"
        )
    return url
