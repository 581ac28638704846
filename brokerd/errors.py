"""The broker's own failure type, carrying the wire code it maps to.

The core raises ``BrokerError`` and knows nothing of frames; the session turns
it into an Error or PublishError frame. That is the one place where failures
meet the wire.
"""

from __future__ import annotations

from brokerd_protocol import ErrorCode


class BrokerError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(what: str) -> BrokerError:
    return BrokerError(ErrorCode.NOT_FOUND, what)


def invalid(message: str) -> BrokerError:
    return BrokerError(ErrorCode.INVALID_ARGUMENT, message)
