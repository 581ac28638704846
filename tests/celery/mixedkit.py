"""Celery task messages built as a Celery producer builds them, without a transport.

``celery_message(...)`` runs Celery's own ``app.amqp.as_task_v2`` (or v1),
kombu's serializer registry and compression, then wraps the result with
``envelope.to_message``: the bytes brokerd's kombu transport publishes for
``task.apply_async(...)``. Tests publish it with the native client.
"""

from __future__ import annotations

import uuid
from typing import Any

import celery
from kombu import compression as kombu_compression
from kombu import serialization as kombu_serialization

from brokerd_client import Message
from brokerd_client.celery.envelope import KombuMessage, to_message

#: The Celery app standing in for an unchanged producer (never connects).
producer = celery.Celery("mixedproducer", set_as_current=False)


def celery_message(
    name: str,
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str = "celery",
    task_id: str | None = None,
    serializer: str = "json",
    compression: str | None = None,
    protocol: int = 2,
    **options: Any,
) -> Message:
    """The brokerd message that carries ``name.apply_async(args, kwargs, **options)``."""
    task_id = task_id or str(uuid.uuid4())
    build = producer.amqp.as_task_v2 if protocol == 2 else producer.amqp.as_task_v1
    tm = build(task_id, name, args, kwargs or {}, **options)
    content_type, encoding, data = kombu_serialization.dumps(tm.body, serializer=serializer)
    body = data.encode(encoding) if isinstance(data, str) else data  # kombu leaves json a str
    headers = dict(tm.headers)
    if compression:
        body, headers["compression"] = kombu_compression.compress(body, compression)
    properties = {**tm.properties, "delivery_mode": 2, "priority": 0}
    kombu = KombuMessage(body, content_type, encoding, headers, properties)
    return to_message("", queue, kombu, mandatory=True)


def kombu_message(
    body: bytes,
    content_type: str,
    content_encoding: str,
    headers: dict[str, Any],
    properties: dict[str, Any] | None = None,
    *,
    queue: str = "celery",
) -> Message:
    """Any kombu message in the envelope (hand-made, for refusals)."""
    kombu = KombuMessage(body, content_type, content_encoding, headers, properties or {})
    return to_message("", queue, kombu, mandatory=True)
