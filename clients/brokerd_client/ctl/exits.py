"""brokerctl's exit codes: rabbitmqctl's, which are the BSD ``sysexits`` ones.

A script can tell "you called me wrong" (64) from "that queue does not exist"
(65) from "the broker is not there" (69) without reading the message.
"""

from __future__ import annotations

#: Done.
OK = 0
#: The command line was wrong: unknown command or column, missing or extra
#: arguments, a token in the URL.
USAGE = 64
#: The broker refused the request: no such queue or connection, a bad value.
DATAERR = 65
#: The broker could not be reached: not running, wrong data dir or address,
#: authentication failed, or the connection was lost.
UNAVAILABLE = 69
#: The broker failed unexpectedly (INTERNAL), or brokerctl did.
SOFTWARE = 70
#: No answer within ``--timeout``.
TEMPFAIL = 75


class CtlError(Exception):
    """A failure brokerctl reports in one line, with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def usage(message: str) -> CtlError:
    return CtlError(message, USAGE)
