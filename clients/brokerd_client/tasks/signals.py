"""Signals with Celery's names and keyword arguments.

::

    from brokerd_client.tasks.signals import task_success

    @task_success.connect
    def count(sender=None, result=None, **kwargs): ...

    @task_success.connect(sender="proj.tasks.add")   # only for this task
    def count_add(sender=None, result=None, **kwargs): ...

A receiver is called with ``signal=`` and ``sender=`` plus the signal's own
keyword arguments (listed on each signal below), so it should take
``**kwargs`` for arguments added later. ``sender=`` filtering compares with
``==`` and also matches a task *object* against its name, so both
``sender=add`` and ``sender="proj.tasks.add"`` work for task signals.

A receiver that raises is logged (with its traceback) and the others still
run; the task, the publish or the worker carries on as if nothing happened.
Receivers are held strongly (no weak references) and run in the process and
thread where the event happens: task signals in the process that runs the
task (the child process with ``--pool processes``), in eager mode too.

Nothing is paid when no receiver is connected: the code that sends a signal
first checks ``signal.receivers`` (a plain list, empty by default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = [
    "Signal",
    "after_task_publish",
    "before_task_publish",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_retry",
    "task_revoked",
    "task_success",
    "worker_init",
    "worker_process_init",
    "worker_ready",
    "worker_shutdown",
]

log = logging.getLogger("brokerd_client.tasks.signals")

Receiver = Callable[..., Any]

_ANY: Any = object()


def _matches(wanted: Any, sender: Any) -> bool:
    if wanted is _ANY or wanted is sender or wanted == sender:
        return True
    # A task object and its name stand for each other.
    name = getattr(sender, "name", None)
    if isinstance(name, str) and wanted == name:
        return True
    wanted_name = getattr(wanted, "name", None)
    return isinstance(wanted_name, str) and wanted_name == sender


class Signal:
    """A named event that receivers connect to (see the module docstring).

    ``receivers`` is a list of ``(receiver, sender filter)``; it is empty
    until something connects, which is what senders test first.
    """

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.providing_args = providing_args
        self.receivers: list[tuple[Receiver, Any]] = []
        self._entries: list[tuple[Any, Receiver, Any]] = []

    def __repr__(self) -> str:
        return f"<Signal: {self.name} receivers={len(self.receivers)}>"

    def connect(
        self,
        receiver: Receiver | None = None,
        /,
        *,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: str | None = None,
    ) -> Any:
        """Connect ``receiver`` (``sig.connect(fn)``), or decorate:
        ``@sig.connect`` and ``@sig.connect(sender=...)``. ``sender=None``
        means any sender. Connecting the same receiver (or the same
        ``dispatch_uid``) with the same sender filter again keeps one.
        ``weak`` is accepted for Celery compatibility: receivers are always
        held strongly."""
        del weak
        wanted = _ANY if sender is None else sender

        def add(fn: Receiver) -> Receiver:
            if not callable(fn):
                raise TypeError(f"{self.name}.connect needs a callable, got {fn!r}")
            key = dispatch_uid if dispatch_uid is not None else fn
            if not any(k == key and s is wanted for k, _, s in self._entries):
                # New lists: a send() iterating the old one is not disturbed.
                self._entries = [*self._entries, (key, fn, wanted)]
                self.receivers = [(r, s) for _, r, s in self._entries]
                _changed()
            return fn

        if receiver is None:
            return add
        return add(receiver)

    def disconnect(
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: str | None = None,
    ) -> bool:
        """Disconnect ``receiver`` (or the one connected with ``dispatch_uid``);
        with ``sender`` only its connection for that sender. True if one was
        connected."""
        del weak
        key = dispatch_uid if dispatch_uid is not None else receiver
        kept = [
            (k, r, s)
            for k, r, s in self._entries
            if not (k == key and (sender is None or s is sender or s == sender))
        ]
        found = len(kept) != len(self._entries)
        self._entries = kept
        self.receivers = [(r, s) for _, r, s in kept]
        _changed()
        return found

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every matching receiver; ``[(receiver, its return value or the
        exception it raised)]``. Never raises because of a receiver."""
        replies: list[tuple[Receiver, Any]] = []
        for receiver, wanted in self.receivers:
            try:
                if not _matches(wanted, sender):
                    continue
                value = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                log.exception("signal %s: receiver %r raised", self.name, receiver)
                value = exc
            replies.append((receiver, value))
        return replies

    send_robust = send


#: Before a task message is published: ``body`` (bytes, encoded), ``exchange``,
#: ``routing_key``, ``headers`` (the message's header dict: changes are sent),
#: ``properties``, ``declare``, ``retry_policy``. ``sender`` is the task name.
before_task_publish = Signal(
    "before_task_publish",
    ("body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"),
)
#: After the broker confirmed a task message (or it was handed to the
#: worker's connection): ``body``, ``exchange``, ``routing_key``, ``headers``.
after_task_publish = Signal("after_task_publish", ("body", "exchange", "routing_key", "headers"))
#: Before a task runs: ``task_id``, ``task``, ``args``, ``kwargs``. ``sender``: the task.
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
#: After a task ran (whatever the outcome): ``task_id``, ``task``, ``args``,
#: ``kwargs``, ``retval``, ``state``.
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
#: A task succeeded: ``result``.
task_success = Signal("task_success", ("result",))
#: A task failed: ``task_id``, ``exception``, ``args``, ``kwargs``, ``traceback``, ``einfo``.
task_failure = Signal(
    "task_failure", ("task_id", "exception", "args", "kwargs", "traceback", "einfo")
)
#: A task asked to be retried: ``request``, ``reason``, ``einfo``.
task_retry = Signal("task_retry", ("request", "reason", "einfo"))
#: A task was revoked (in the worker that held or ran it): ``request``,
#: ``terminated``, ``signum``, ``expired``.
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
#: The worker is starting, before it connects. ``sender``: the worker.
worker_init = Signal("worker_init")
#: The worker consumes its queues. ``sender``: the worker.
worker_ready = Signal("worker_ready")
#: The worker is stopping (after its running tasks ended). ``sender``: the worker.
worker_shutdown = Signal("worker_shutdown")
#: In each child process of ``--pool processes``, once the app is imported.
worker_process_init = Signal("worker_process_init")

#: The signals a task run sends (the execute path checks these).
TASK_RUN_SIGNALS = (task_prerun, task_postrun, task_success, task_failure, task_retry)


class _Watch:
    """What the execute path tests before doing any signal work."""

    __slots__ = ("task_run",)

    def __init__(self) -> None:
        #: Some signal sent while a task runs has a receiver.
        self.task_run = False


watch = _Watch()


def _changed() -> None:
    watch.task_run = any(sig.receivers for sig in TASK_RUN_SIGNALS)
