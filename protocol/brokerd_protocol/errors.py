"""Wire error codes and the exceptions the codec raises.

One table of codes serves both sides: the server maps its failures to a code at
exactly one boundary, and the client maps codes back to typed exceptions.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    # Connection-level: the sender closes the connection after the error frame.
    PROTOCOL_ERROR = 1
    FRAME_TOO_LARGE = 2
    UNSUPPORTED_VERSION = 3
    AUTH_FAILED = 4
    NOT_AUTHENTICATED = 5
    HEARTBEAT_TIMEOUT = 6
    SHUTTING_DOWN = 7
    RESOURCE_LIMIT = 8
    # Request-level: the connection stays open.
    NOT_FOUND = 10
    PRECONDITION_FAILED = 11
    INVALID_ARGUMENT = 12
    UNROUTABLE = 13
    QUEUE_FULL = 14
    LEASE_LOST = 15
    INTERNAL = 16
    STORAGE_FAILED = 17
    ACCESS_REFUSED = 18


#: Codes after which the connection is closed by the side that sent them.
CONNECTION_FATAL = frozenset(
    {
        ErrorCode.PROTOCOL_ERROR,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.AUTH_FAILED,
        ErrorCode.NOT_AUTHENTICATED,
        ErrorCode.HEARTBEAT_TIMEOUT,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.RESOURCE_LIMIT,
    }
)


class ProtocolError(Exception):
    """Bytes that are not a valid brokerd frame. The connection cannot continue."""

    code: ErrorCode = ErrorCode.PROTOCOL_ERROR


class FrameTooLarge(ProtocolError):
    """A frame header declared more bytes than the negotiated maximum."""

    code = ErrorCode.FRAME_TOO_LARGE
