"""Build the message Celery would publish for a signature, without publishing it.

A chord's body must be published by the broker itself (GroupFire), in the
same commit that marks the chord fired, so it goes out exactly once. The
message must be the one Celery's producer would send: same routing, headers
(protocol v2), properties, serializer and compression. Rather than rebuild
Celery's ``send_task`` logic, the signature is applied with a stand-in
producer that records what ``amqp.send_task_message`` hands it; the body is
then encoded with kombu's serializer and compressor, as ``Producer.publish``
would, and carried in the kombu envelope (``envelope.to_message``) the
brokerd transport uses.

Only task messages are kept (they carry the ``task`` header); anything else
published through the stand-in (a ``task-sent`` event) is dropped.

Passing ``producer=`` to ``apply_async`` is not enough: a chain applies its
first task with the app's own producer (Celery drops the argument), so a
chord whose body is a chain (``group | a | b``) would be published directly.
``capturing(app, producer)`` therefore also routes every task message the
current thread (context) sends through ``app`` to the stand-in, at
``app.amqp.send_task_message``, whichever producer Celery acquired. Other
threads' sends are untouched (a context variable selects the stand-in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from kombu import compression as kombu_compression
from kombu import serialization

from ..message import Message
from .envelope import KombuMessage, to_message

#: kombu's serializer and compressor, typed (kombu's own functions are not).
_dumps: Callable[..., tuple[str, str, bytes | str]] = serialization.dumps
_compress: Callable[[bytes, str], tuple[bytes, str]] = kombu_compression.compress

__all__ = ["Captured", "CapturingProducer", "capturing"]


class Captured:
    """One task message as the producer was asked to publish it."""

    __slots__ = ("exchange", "message", "routing_key")

    def __init__(self, exchange: str, routing_key: str, message: KombuMessage) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.message = message

    def to_brokerd(self, *, mandatory: bool = True) -> Message:
        return to_message(self.exchange, self.routing_key, self.message, mandatory=mandatory)


class _Connection:
    """What Celery asks of a producer's connection while sending a task."""

    recoverable_connection_errors: tuple[type[BaseException], ...] = ()
    connection_errors: tuple[type[BaseException], ...] = ()
    transport_options: dict[str, Any] = {}

    @contextmanager
    def _reraise_as_library_errors(self, *args: Any, **kwargs: Any) -> Iterator[None]:
        yield


class CapturingProducer:
    """A kombu ``Producer`` stand-in that records task messages."""

    def __init__(self, default_serializer: str) -> None:
        self.connection = _Connection()
        self.serializer = default_serializer
        self.captured: list[Captured] = []

    def revive(self, channel: Any) -> None:
        pass

    def publish(
        self,
        body: Any,
        routing_key: str | None = None,
        delivery_mode: Any = None,
        mandatory: bool = False,
        immediate: bool = False,
        priority: int = 0,
        content_type: str | None = None,
        content_encoding: str | None = None,
        serializer: str | None = None,
        headers: dict[str, Any] | None = None,
        compression: str | None = None,
        exchange: Any = None,
        retry: bool = False,
        retry_policy: Any = None,
        declare: Any = None,
        expiration: float | None = None,
        timeout: float | None = None,
        confirm_timeout: float | None = None,
        **properties: Any,
    ) -> None:
        headers = dict(headers or {})
        if "task" not in headers:
            return  # an event, not a task message
        if content_type:
            data: bytes | str = body
            encoding = content_encoding or ("utf-8" if isinstance(body, str) else "binary")
        else:
            content_type, encoding, data = _dumps(body, serializer=serializer or self.serializer)
        raw = data.encode(encoding) if isinstance(data, str) else bytes(data)
        if compression:
            raw, headers["compression"] = _compress(raw, compression)
        props = dict(properties)
        props["delivery_mode"] = _delivery_mode(delivery_mode)
        props["priority"] = priority or 0
        if expiration is not None:
            props["expiration"] = str(int(expiration * 1000))
        name = getattr(exchange, "name", exchange) or ""
        message = KombuMessage(raw, content_type, encoding, headers, props)
        self.captured.append(Captured(str(name), routing_key or "", message))


#: The stand-in this context's task messages go to, while capturing.
_stand_in: ContextVar[CapturingProducer | None] = ContextVar("brokerd_capture", default=None)
#: Marks an ``app.amqp`` whose ``send_task_message`` honours ``_stand_in``.
_INSTALLED = "_brokerd_capture_installed"


@contextmanager
def capturing(app: Any, producer: CapturingProducer) -> Iterator[CapturingProducer]:
    """Within the block, every task message this context sends through
    ``app`` is recorded by ``producer`` instead of published."""
    amqp = app.amqp
    if not getattr(amqp, _INSTALLED, False):
        send = amqp.send_task_message

        def send_task_message(chosen: Any, *args: Any, **kwargs: Any) -> Any:
            stand_in = _stand_in.get()
            return send(chosen if stand_in is None else stand_in, *args, **kwargs)

        amqp.send_task_message = send_task_message
        setattr(amqp, _INSTALLED, True)
    token = _stand_in.set(producer)
    try:
        yield producer
    finally:
        _stand_in.reset(token)


def _delivery_mode(value: Any) -> int:
    if value in (1, "transient"):
        return 1
    return 2
