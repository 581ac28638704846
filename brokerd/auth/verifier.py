"""Checking and making password hashes off the event loop.

scrypt costs tens of milliseconds and 16 MiB per call; run on the loop it
would stall every connection. Two worker threads do it (hashlib releases
the GIL inside scrypt), which also bounds the memory a burst of logins can
take: Hellos beyond two wait in the pool's queue, each within its own
handshake deadline.

An unknown user is checked against ``passwords.dummy_hash()``, so it costs
what a wrong password costs and gets the same answer (None).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import passwords
from .users import User, Users

__all__ = ["Verifier"]

#: Threads hashing at once.
THREADS = 2


class Verifier:
    def __init__(self, users: Users) -> None:
        self.users = users
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="brokerd-auth")
        return self._pool

    def check(self, name: str, password: str, done: Callable[[User | None], None]) -> None:
        """Call ``done(user)`` on the loop if ``password`` is ``name``'s, else
        ``done(None)``; the user is looked up again after hashing, so one
        deleted or changed meanwhile does not pass with its old password."""
        user = self.users.get(name)
        stored = user.password_hash if user is not None else passwords.dummy_hash()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor(), passwords.verify, password, stored)

        def finished(fut: asyncio.Future[bool]) -> None:
            ok = not fut.cancelled() and fut.exception() is None and fut.result()
            now = self.users.get(name)
            done(now if ok and now is not None and now.password_hash == stored else None)

        future.add_done_callback(finished)

    def hash(self, password: str, done: Callable[[str | BaseException], None]) -> None:
        """Call ``done(hash)`` on the loop with the stored form of ``password``."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor(), passwords.hash_password, password)

        def finished(fut: asyncio.Future[str]) -> None:
            if fut.cancelled():
                done(RuntimeError("hashing was cancelled"))
                return
            exc = fut.exception()
            done(exc if exc is not None else fut.result())

        future.add_done_callback(finished)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
