"""Where a task call goes: to a worker through the broker, or run here.

One :class:`Sender` per app, reached as ``app.sender`` by the app's
``send_task``/``send_many`` and by every task's ``delay``/``apply_async``.
A call is built into a message (:mod:`.producer`), its route declared on the
connection it leaves by (:mod:`.declare`), and published on:

* the running worker's connection, when called from the worker's own loop
  (a task sending tasks): the worker acks the sending task only once these
  are confirmed;
* the app's async connection for this event loop (``adelay``, ``asend_task``);
* the app's blocking client otherwise, waiting for the confirm unless
  ``wait_confirm=False``.

With ``task_always_eager`` nothing is sent: the task runs here at once
(:mod:`.eager`), as ``Task.apply`` always does.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .declare import declare_async, declare_sync
from .eager import apply_eagerly, apply_eagerly_async
from .exceptions import NotRegistered
from .message import TaskMessage
from .producer import build_message
from .result import AsyncResult, EagerResult
from .signals import after_task_publish, before_task_publish
from .task import Signature, Task, TaskApp

__all__ = ["Sender"]

log = logging.getLogger("brokerd_client.tasks")


def _announce(built: list[TaskMessage], after: bool) -> None:
    """Send ``before_task_publish`` (or ``after_task_publish``) for each
    message; the caller checks ``receivers`` first, so this costs nothing
    unless someone listens. ``headers`` is the message's own dict: a
    ``before_task_publish`` receiver may add headers and they are sent."""
    for tm in built:
        m = tm.message
        headers = m.headers if m.headers is not None else {}
        name = headers.get("task")
        if after:
            after_task_publish.send(
                name, body=m.body, exchange=m.exchange, routing_key=m.routing_key, headers=headers
            )
        else:
            before_task_publish.send(
                name,
                body=m.body,
                exchange=m.exchange,
                routing_key=m.routing_key,
                headers=headers,
                properties={"message_id": m.message_id, "priority": m.priority},
                declare=[],
                retry_policy=None,
            )


def _log_unconfirmed(name: str, task_id: str) -> Callable[[concurrent.futures.Future[bool]], None]:
    def done(fut: concurrent.futures.Future[bool]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("task %s[%s] was not sent: %s", name, task_id, fut.exception())

    return done


class Sender:
    """Sends (or, eagerly, runs) the calls of ``app``'s tasks; see the module docstring."""

    def __init__(self, app: TaskApp) -> None:
        self.app = app

    def _build_many(self, signatures: list[Signature]) -> list[TaskMessage]:
        app = self.app
        router, tasks = app.router, app.tasks
        return [
            build_message(app, router, s.task, s.args, s.kwargs, s.options, tasks.get(s.task))
            for s in signatures
        ]

    def _eager_task(self, name: str, task: Task[Any, Any] | None) -> Task[Any, Any]:
        if task is None:
            task = self.app.tasks.get(name)
        if task is None:
            raise NotRegistered(f"task {name!r} is not registered (task_always_eager is on)")
        return task

    def apply(
        self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], task_id: str | None
    ) -> EagerResult:
        """Run ``task`` here and now, as a worker would (``Task.apply``)."""
        return apply_eagerly(task, args, kwargs, task_id)

    def send(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        task: Task[Any, Any] | None,
    ) -> AsyncResult:
        """Send one call of task ``name`` (``task``: its registered object, if any)."""
        app = self.app
        if app.conf.task_always_eager:
            return apply_eagerly(
                self._eager_task(name, task), list(args), dict(kwargs), options.get("task_id")
            )
        tm = build_message(app, app.router, name, args, kwargs, options, task)
        if before_task_publish.receivers:
            _announce([tm], after=False)
        clients = app.clients
        hook = clients.worker_on_this_loop()
        if hook is not None:
            hook.publish([tm])
        else:
            client = clients.producer
            declare_sync(client, app.router.topology, clients.producer_declared, tm.route)
            if options.get("wait_confirm", True):
                client.publish_message(tm.message)
            else:
                sent = client.publish_message_nowait(tm.message)
                sent.add_done_callback(_log_unconfirmed(name, tm.task_id))
        if after_task_publish.receivers:
            _announce([tm], after=True)
        return AsyncResult(tm.task_id, app)

    async def asend(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        task: Task[Any, Any] | None,
    ) -> AsyncResult:
        """:meth:`send` for async code: the confirm is awaited, not blocked on."""
        app = self.app
        if app.conf.task_always_eager:
            return await apply_eagerly_async(
                self._eager_task(name, task), list(args), dict(kwargs), options.get("task_id")
            )
        tm = build_message(app, app.router, name, args, kwargs, options, task)
        if before_task_publish.receivers:
            _announce([tm], after=False)
        client, declared = await app.clients.on_this_loop()
        await declare_async(client, app.router.topology, declared, tm.route)
        await client.publish_many([tm.message])
        if after_task_publish.receivers:
            _announce([tm], after=True)
        return AsyncResult(tm.task_id, app)

    def send_many(
        self, signatures: Iterable[Signature], *, timeout: float | None = None
    ) -> list[AsyncResult]:
        """Send many calls pipelined, waiting once for all confirms (``app.send_many``)."""
        app = self.app
        sigs = list(signatures)
        if app.conf.task_always_eager:
            return [self.send(s.task, s.args, s.kwargs, s.options, None) for s in sigs]
        built = self._build_many(sigs)
        if before_task_publish.receivers:
            _announce(built, after=False)
        clients = app.clients
        hook = clients.worker_on_this_loop()
        if hook is not None:
            hook.publish(built)
        else:
            client = clients.producer
            for route in {tm.route for tm in built}:
                declare_sync(client, app.router.topology, clients.producer_declared, route)
            client.publish_many([tm.message for tm in built], timeout=timeout)
        if after_task_publish.receivers:
            _announce(built, after=True)
        return [AsyncResult(tm.task_id, app) for tm in built]

    async def asend_many(self, signatures: Iterable[Signature]) -> list[AsyncResult]:
        """:meth:`send_many` for async code."""
        app = self.app
        built = self._build_many(list(signatures))
        if before_task_publish.receivers:
            _announce(built, after=False)
        client, declared = await app.clients.on_this_loop()
        for route in {tm.route for tm in built}:
            await declare_async(client, app.router.topology, declared, route)
        await client.publish_many(tm.message for tm in built)
        if after_task_publish.receivers:
            _announce(built, after=True)
        return [AsyncResult(tm.task_id, app) for tm in built]
