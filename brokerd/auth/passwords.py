"""Password hashes: scrypt with a random salt, the parameters kept in the hash.

A stored hash reads ``scrypt$<n>$<r>$<p>$<salt>$<key>`` (salt and key in
unpadded URL-safe base64), so the cost can be raised later: hashes made with
older parameters still verify, with the parameters they name. A password is
never kept, logged or returned; only what ``hash_password`` makes is stored.

``verify`` of an unknown user runs against ``dummy_hash()`` (the same
parameters, a password nobody knows), so an unknown user and a wrong password
cost the same time and get the same answer.

scrypt at these parameters takes tens of milliseconds and 16 MiB of memory:
callers on the event loop run it in ``Verifier``'s small thread pool.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import cache

__all__ = [
    "N",
    "P",
    "R",
    "check_hash",
    "dummy_hash",
    "hash_password",
    "needs_rehash",
    "verify",
]

SCHEME = "scrypt"
#: CPU/memory cost, block size and parallelism for new hashes (at least
#: n=2**14, r=8, p=1: the figures recommended for interactive logins).
N = 2**14
R = 8
P = 1
SALT_BYTES = 16
KEY_BYTES = 32
#: Largest cost a stored hash may name (a damaged or hostile row must not make
#: the broker allocate gigabytes): n up to 2**20, r up to 32, p up to 16.
MAX_N = 2**20
MAX_R = 32
MAX_P = 16
#: Longest password accepted (bytes of UTF-8).
MAX_PASSWORD_BYTES = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # maxmem: what these parameters need (128 * r * n for V, and the rest), with room.
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=2 * 128 * r * (n + p + 2)
    )


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    """The stored form of ``password``: a fresh random salt and the scrypt key."""
    salt = os.urandom(SALT_BYTES)
    key = _scrypt(password.encode(), salt, n, r, p, KEY_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if not (1 < n <= MAX_N and n & (n - 1) == 0 and 0 < r <= MAX_R and 0 < p <= MAX_P):
        return None
    if not salt or not 16 <= len(key) <= 64:
        return None
    return n, r, p, salt, key


def verify(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (constant-time
    comparison; a malformed ``stored`` matches nothing)."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    n, r, p, salt, key = parsed
    given = _scrypt(password.encode(), salt, n, r, p, len(key))
    return hmac.compare_digest(given, key)


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with weaker parameters than new hashes get."""
    parsed = _parse(stored)
    return parsed is None or parsed[0] < N or parsed[1] < R or parsed[2] < P


@cache
def dummy_hash() -> str:
    """A hash of a random password nobody knows, with today's parameters."""
    return hash_password(secrets.token_urlsafe(32))


def check_password(password: str) -> str:
    """``password`` if it may be set, else ``ValueError`` saying why."""
    if not password:
        raise ValueError("a password must not be empty")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValueError(f"a password is at most {MAX_PASSWORD_BYTES} bytes")
    return password


def check_hash(stored: str) -> str:
    """``stored`` if it is a hash ``hash_password`` could have made (imported
    definitions), else ``ValueError``."""
    if _parse(stored) is None:
        raise ValueError(
            "a password hash reads scrypt$<n>$<r>$<p>$<salt>$<key>, as list_users exports it"
        )
    return stored
