"""Typed exceptions for every way a brokerd call can fail.

The wire carries an integer error code (``brokerd_protocol.ErrorCode``); users
should not have to compare integers, so each code maps to one exception class
here and :func:`error_from_code` is the single place that mapping happens.

The hierarchy is shaped by what a caller can *do* about a failure:

* :class:`ConnectionLost` and its subclasses mean the connection is gone and
  every call that was in flight failed with it. The outcome of an unconfirmed
  publish is unknown (it may or may not have been stored), so retrying it is
  at-least-once. Reconnect and retry.
* Request-level errors (:class:`NotFound`, :class:`PreconditionFailed`, ...)
  leave the connection open; only the one call failed.
* :class:`LeaseLost` says an ack/nack/reject/extend came too late: the broker
  already took the delivery back and will (or did) hand it out again.
"""

from __future__ import annotations

from brokerd_protocol import ErrorCode

__all__ = [
    "AccessRefused",
    "AuthenticationError",
    "BrokerError",
    "ClientClosed",
    "ConnectionLost",
    "ConsumerClosed",
    "HeartbeatTimeout",
    "InternalError",
    "InvalidArgument",
    "LeaseLost",
    "MessageTooLarge",
    "NotFound",
    "PreconditionFailed",
    "ProtocolViolation",
    "QueueFull",
    "Redirected",
    "ResourceLimitExceeded",
    "ServerShuttingDown",
    "StorageFailed",
    "TLSError",
    "Unroutable",
    "UnsupportedVersion",
    "error_from_code",
]


class BrokerError(Exception):
    """Base class of every error this client raises on the broker's behalf.

    ``code`` is the wire error code when the broker sent one, or ``None`` when
    the failure was detected locally (for example a dropped socket).

    ``results`` is filled in by ``publish_many`` only: one entry per message
    that was handed to the broker, in order, each ``True`` (routed), ``False``
    (unroutable) or the exception that message failed with. It lets a caller
    retry exactly the messages that did not make it.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code: ErrorCode | int | None = _as_code(code)
        self.results: list[bool | BrokerError] | None = None

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        name = self.code.name if isinstance(self.code, ErrorCode) else str(self.code)
        return f"{self.message} [{name}]"


def _as_code(code: int | None) -> ErrorCode | int | None:
    if code is None:
        return None
    try:
        return ErrorCode(code)
    except ValueError:
        return code


# --- the connection is gone -------------------------------------------------


class ConnectionLost(BrokerError):
    """The connection ended; every call in flight on it failed with this.

    Raised for pending publishes (their outcome is unknown), requests, acks and
    consumer iterators alike, so one ``except ConnectionLost`` covers them all.
    """


class ClientClosed(ConnectionLost):
    """The application closed the client; calls made afterwards raise this."""


class HeartbeatTimeout(ConnectionLost):
    """Nothing arrived from the peer for two heartbeat intervals."""


class TLSError(ConnectionLost):
    """The TLS layer failed: the broker's certificate was not trusted, had
    expired or named another host, the broker refused our certificate, or
    one side spoke TLS and the other did not. The message says which."""


class Redirected(ConnectionLost):
    """A standby brokerd node answered: the active node is at ``address``
    (``host:port``; empty while the standby does not know). ``connect``
    follows it by itself (docs/ha.md)."""

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message)
        self.address = address


class ServerShuttingDown(ConnectionLost):
    """The broker is stopping and closed the connection; reconnect later."""


# --- refused before or instead of a session -------------------------------


class AuthenticationError(BrokerError):
    """The token was missing or wrong. Retrying with the same token will not help."""


class ProtocolViolation(BrokerError):
    """One side sent bytes the other could not accept; the connection is closed.

    Seeing this usually means a client/server version mismatch or a bug.
    """


class UnsupportedVersion(ProtocolViolation):
    """The broker speaks none of the protocol versions this client offered."""


class ResourceLimitExceeded(BrokerError):
    """The broker refused because a server-side limit (connections, memory) was hit."""


# --- request-level: the connection stays open ------------------------------


class NotFound(BrokerError):
    """The queue, exchange or consumer named in the request does not exist."""


class PreconditionFailed(BrokerError):
    """The request conflicts with existing state, e.g. redeclaring a queue
    with different options."""


class AccessRefused(BrokerError):
    """The connection may not make this request (an admin frame from a
    connection that is not an admin one); nothing was done."""


class InvalidArgument(BrokerError):
    """The broker rejected an argument (bad name, out-of-range value, ...)."""


class Unroutable(BrokerError):
    """A ``mandatory`` publish matched no queue, so the broker refused it."""


class QueueFull(BrokerError):
    """The target queue is at ``max_length`` with ``overflow="reject_publish"``."""


class InternalError(BrokerError):
    """The broker failed unexpectedly while handling the request."""


class StorageFailed(BrokerError):
    """The broker could not store the message (e.g. its disk is full), so it
    stored and delivered none of it: publishing it again makes no duplicate.

    One exception (SPEC §10.4): when the broker's fsync failed after the
    write, the message may have been delivered (the error's message says so),
    and publishing it again is at-least-once."""


class LeaseLost(BrokerError):
    """An ack/nack/reject/extend arrived after the delivery's lease was lost.

    The broker has already returned the message to its queue (or dead-lettered
    it), so the work done for this delivery may be repeated elsewhere.
    """

    def __init__(self, delivery_id: int | None, message: str | None = None) -> None:
        if message is None:
            message = f"lease of delivery {delivery_id} was already lost"
        super().__init__(message, ErrorCode.LEASE_LOST)
        #: The delivery whose lease was lost (``None`` if the broker did not say).
        self.delivery_id = delivery_id


class MessageTooLarge(BrokerError, ValueError):
    """A publish or request is larger than the broker accepts (``Welcome.max_frame``).

    Raised by the client *before* anything is sent: the frame would make the
    broker close the connection (``FRAME_TOO_LARGE``) and fail every other
    call in flight on it. Nothing was sent and the connection stays open.
    ``size`` is the frame's payload in bytes and ``limit`` the broker's
    limit (both ``None`` when rebuilt from a stored task error). Also a
    ``ValueError``: the argument is what is wrong.
    """

    def __init__(self, message: str, *, size: int | None = None, limit: int | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class ConsumerClosed(BrokerError):
    """The consumer has ended (cancelled by the application or by the broker,
    e.g. because its queue was deleted) and will yield no more deliveries."""


_BY_CODE: dict[int, type[BrokerError]] = {
    ErrorCode.PROTOCOL_ERROR: ProtocolViolation,
    ErrorCode.FRAME_TOO_LARGE: ProtocolViolation,
    ErrorCode.UNSUPPORTED_VERSION: UnsupportedVersion,
    ErrorCode.AUTH_FAILED: AuthenticationError,
    ErrorCode.NOT_AUTHENTICATED: AuthenticationError,
    ErrorCode.HEARTBEAT_TIMEOUT: HeartbeatTimeout,
    ErrorCode.SHUTTING_DOWN: ServerShuttingDown,
    ErrorCode.RESOURCE_LIMIT: ResourceLimitExceeded,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.PRECONDITION_FAILED: PreconditionFailed,
    ErrorCode.INVALID_ARGUMENT: InvalidArgument,
    ErrorCode.UNROUTABLE: Unroutable,
    ErrorCode.QUEUE_FULL: QueueFull,
    ErrorCode.INTERNAL: InternalError,
    ErrorCode.STORAGE_FAILED: StorageFailed,
    ErrorCode.ACCESS_REFUSED: AccessRefused,
}


def error_from_code(code: int, message: str) -> BrokerError:
    """The typed exception for a wire error ``code``.

    ``LEASE_LOST`` sent as a plain error carries no delivery id, so that
    :class:`LeaseLost` has ``delivery_id=None``. Codes from a newer broker that
    this client does not know fall back to :class:`BrokerError`.
    """
    if code == ErrorCode.LEASE_LOST:
        return LeaseLost(None, message or "lease lost")
    cls = _BY_CODE.get(code, BrokerError)
    return cls(message or "broker error", code)
