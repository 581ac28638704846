"""Turning a task call into a brokerd message.

The message format itself (body, message id, headers) is owned by
:mod:`.message`, which builds the headers here and parses them in the worker.
What this module adds:

* ``countdown``/``eta`` become the publish ``delay``/``not_before``: the broker
  holds the message durably until then; no worker sleeps on it;
* ``mandatory``: a message that routes to no queue is refused (an error at
  ``delay()``), never silently dropped;
* a message larger than the broker's frame limit is refused by the client
  before it is sent (``MessageTooLarge``), also at ``delay()``.

Where it goes is declared by :mod:`.declare` before it is sent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..checks import epoch
from ..message import Message
from .message import TaskMessage, build_headers
from .serialization import content_type_of, encode_body
from .task import SEND_OPTIONS

if TYPE_CHECKING:
    from .routing import Router
    from .task import Task, TaskApp

__all__ = ["TaskMessage", "build_message"]


def build_message(
    app: TaskApp,
    router: Router,
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    task: Task[Any, Any] | None,
) -> TaskMessage:
    """Validate ``options`` and build the message for one task call."""
    unknown = set(options) - SEND_OPTIONS
    if unknown:
        raise TypeError(f"apply_async got unknown options {sorted(unknown)}")
    conf = app.conf
    task_id = options.get("task_id") or str(uuid.uuid4())
    route = router.route(
        name,
        queue=options.get("queue"),
        routing_key=options.get("routing_key"),
        exchange=options.get("exchange"),
        task_options=task.routing_options if task is not None else None,
    )
    serializer = (
        options.get("serializer") or (task.serializer if task else None) or conf.task_serializer
    )
    compression = options.get("compression", conf.task_compression)
    expires = options.get("expires", task.expires if task is not None else None)
    if expires is not None:
        expires = (
            time.time() + float(expires)
            if isinstance(expires, int | float) and not isinstance(expires, bool)
            else epoch("expires", expires)
        )
    ignore = options.get("ignore_result")
    if ignore is None and task is not None:
        ignore = task.ignore_result
    headers = build_headers(
        task=name,
        task_id=task_id,
        retries=int(options.get("retries", 0)),
        content_type=content_type_of(serializer),
        compression=compression,
        expires=expires,
        time_limit=options.get("time_limit"),
        soft_time_limit=options.get("soft_time_limit"),
        parent_id=options.get("parent_id"),
        root_id=options.get("root_id"),
        ignore_result=ignore,
        extra=options.get("headers"),
    )
    body = encode_body(args, kwargs, serializer, compression)
    countdown = options.get("countdown")
    eta = options.get("eta")
    if countdown is not None and eta is not None:
        raise ValueError("give either countdown or eta, not both")
    priority = options.get("priority")
    if priority is None:
        priority = route.priority
    if priority is None and task is not None:
        priority = task.priority
    if priority is None:
        priority = conf.task_default_priority
    message = Message(
        route.exchange,
        route.routing_key,
        body,
        headers=headers,
        delay=float(countdown) if countdown else None,
        not_before=epoch("eta", eta) if eta is not None else None,
        priority=priority or 0,
        message_id=task_id,
        mandatory=True,
    )
    return TaskMessage(task_id, message, route)
