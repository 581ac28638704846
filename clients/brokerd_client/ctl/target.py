"""Where brokerctl finds the broker, and with which credentials.

Locally it opens ``<data-dir>/brokerd.sock``, the broker's control socket:
whoever may open it (mode 0600) is the broker's OS user and needs no token.
Remotely it takes ``--url brokerd://host:port`` and reads the token from a
file (``--token-file``, ``BROKERD_TOKEN_FILE``; ``-`` is stdin). A token is
never taken from the command line, where every local user can read it
(``ps``, ``/proc/<pid>/cmdline``): a URL carrying one is refused.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from brokerd_protocol import MAX_TOKEN_BYTES

from ..url import BrokerURL, parse_url
from .exits import UNAVAILABLE, CtlError, usage

#: The control socket's name in the data dir (the broker's ``control.SOCKET_NAME``).
SOCKET_NAME = "brokerd.sock"
#: Longest password accepted (the broker's limit, SPEC §17.6).
MAX_PASSWORD_BYTES = 1024
#: Longest path a Unix socket address holds.
MAX_UNIX_PATH = 107


@dataclass(frozen=True)
class Target:
    """A broker to talk to: a control socket, or a URL with an optional token."""

    socket: Path | None = None
    url: BrokerURL | None = None
    token: str | None = field(default=None, repr=False)
    #: A user to log in as over --url (instead of the token), with its password.
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        return str(self.socket) if self.socket is not None else str(self.url)


def resolve(
    data_dir: str | None,
    url: str | None,
    token_file: str | None,
    env: dict[str, str],
    user: str | None = None,
    password_file: str | None = None,
) -> Target:
    if url is not None:
        if data_dir is not None:
            raise usage("give either --data-dir (local) or --url (remote), not both")
        try:
            parsed = parse_url(url)
        except ValueError as exc:
            raise usage(str(exc)) from None
        if parsed.password is not None:
            raise usage(
                "brokerctl does not take a password in --url: other local users can read "
                "command lines (ps, /proc/<pid>/cmdline). Give --user NAME and put the "
                "password in a file: --password-file FILE (or BROKERD_PASSWORD_FILE)"
            )
        if parsed.token is not None:
            raise usage(
                "brokerctl does not take a token in --url: other local users can read "
                "command lines (ps, /proc/<pid>/cmdline). Give the URL without it and put "
                "the token in a file: --token-file FILE (or BROKERD_TOKEN_FILE), or "
                "--token-file - to read it from stdin"
            )
        if user is not None:
            if token_file is not None:
                raise usage("give either --user (with --password-file) or --token-file")
            path = password_file or env.get("BROKERD_PASSWORD_FILE")
            if not path:
                raise usage("--user needs --password-file FILE (or BROKERD_PASSWORD_FILE)")
            return Target(url=parsed, user=user, password=read_token(path, "password"))
        if password_file is not None:
            raise usage("--password-file goes with --user")
        path = token_file if token_file is not None else env.get("BROKERD_TOKEN_FILE")
        token = read_token(path) if path else None
        return Target(url=parsed, token=token)
    if token_file is not None:
        raise usage("--token-file goes with --url; the control socket needs no token")
    if user is not None or password_file is not None:
        raise usage("--user and --password-file go with --url; the control socket needs none")
    directory = data_dir or env.get("BROKERD_DATA_DIR") or "./data"
    if directory == ":memory:":
        raise usage(
            "an in-memory broker has no data dir and no control socket: use "
            "--url brokerd://host:port"
        )
    return Target(socket=Path(directory).absolute() / SOCKET_NAME)


def read_token(path: str, what: str = "token") -> str:
    """The token (or password) in ``path`` (``-``: stdin), without
    surrounding whitespace."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_TOKEN_BYTES + 65)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_TOKEN_BYTES + 65)
    except OSError as exc:
        raise usage(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    try:
        token = data.decode().strip()
    except UnicodeDecodeError:
        raise usage(f"{what} file {path} is not UTF-8 text") from None
    if not token:
        raise usage(f"{what} file {path} is empty")
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise usage(f"{what} file {path} holds more than a {what} ({MAX_TOKEN_BYTES} bytes)")
    return token


def check_socket(path: Path) -> None:
    """Fail with a clear message when no broker can be listening at ``path``."""
    if not path.exists():
        raise CtlError(
            f"no brokerd is running with data dir {path.parent}: its control socket "
            f"{path} does not exist (start brokerd, or pass the --data-dir it runs with)",
            UNAVAILABLE,
        )


@contextlib.contextmanager
def reachable(path: Path) -> Iterator[str]:
    """A name for ``path`` short enough for a socket address: a longer one is
    reached through ``/proc/self/fd/<dir fd>/`` (Linux)."""
    if len(os.fsencode(path)) <= MAX_UNIX_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def read_password(prompt: str) -> str:
    """A password for add_user & co: typed at a prompt (not echoed) when stdin
    is a terminal, else the first line of stdin. Never from the command line."""
    if sys.stdin.isatty():
        password = getpass.getpass(prompt)
    else:
        password = sys.stdin.readline(MAX_PASSWORD_BYTES + 2).rstrip("\r\n")
    if not password:
        raise usage("the password is empty: give it on stdin or at the prompt")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise usage(f"a password is at most {MAX_PASSWORD_BYTES} bytes")
    return password
