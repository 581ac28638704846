"""The control socket: ``<data-dir>/brokerd.sock``, where brokerctl talks to
the broker as its own OS user.

A connection accepted here speaks the ordinary protocol and is an admin
connection without a token (``Session.local``), the way rabbitmqctl trusts
whoever can read the Erlang cookie: whoever may open this file is the
broker's user (or root). Invariants:

* The socket has mode 0600 before it accepts anyone: it is bound, then
  chmod-ed, and only then listens (a connect to a socket that does not listen
  yet is refused), so no other user can slip in between.
* A leftover socket from a broker that crashed is replaced at start. This is
  safe because the data-dir lock (``storage/lock.py``) is held first: no
  other broker can be serving it. Anything that is not a socket is left
  alone and stops the start with a message.
* A clean stop removes it, so brokerctl can tell "stopped" from "running".
* An in-memory broker (``--data-dir :memory:``) has no data dir and no
  control socket; it is administered over TCP (``brokerctl --url``).

Unix socket paths are limited to 107 bytes. A longer path is reached through
``/proc/self/fd/<dir fd>/brokerd.sock`` (Linux), which names the same file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

#: The control socket's name inside the data dir (brokerctl looks for it there).
SOCKET_NAME = "brokerd.sock"
#: Longest path ``sun_path`` holds (108 bytes with its terminating NUL).
MAX_UNIX_PATH = 107


def control_path(data_dir: str) -> Path | None:
    """Where the control socket of a broker with this data dir lives."""
    if data_dir == ":memory:":
        return None
    return Path(data_dir).absolute() / SOCKET_NAME


@contextlib.contextmanager
def reachable(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits in a socket address (see module doc)."""
    text = os.fsencode(path)
    if len(text) <= MAX_UNIX_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def bind_control_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600, replacing a stale one."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(
                f"{path} exists and is not a socket; brokerd keeps its control socket there: "
                "move that file away"
            )
        path.unlink()  # a crashed broker's: the data-dir lock proves it is not in use
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with reachable(path) as name:
            sock.bind(name)
            os.chmod(name, 0o600)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return sock


def remove_control_socket(path: Path) -> None:
    """Remove the socket at a clean stop (nothing if it is already gone)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
