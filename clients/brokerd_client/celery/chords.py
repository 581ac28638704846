"""Chords on brokerd: the header counted by the broker, the body fired by it, once.

Celery's key-value backends count a chord's finished header tasks with a
counter they increment and compare; a worker that dies between "I was last"
and "body published", or a header task redelivered after it counted, can
lose or duplicate the body. Here the broker does both parts atomically:

1. ``apply_chord`` (producer side, before the header is sent) saves the
   header's GroupResult under the group id: the completer reads the header's
   task ids, in order and with nested groups, from it.
2. ``set_chord_size`` (producer side, before the last header task is sent)
   stores ``{"size": n, "run": <random id>}`` under ``<group id>.chord``. The
   run id names the broker group (``<group id>.<run>``), so re-applying a
   frozen chord (same group id) counts afresh.
3. ``on_chord_part_return`` (each header task, after its result is stored):
   GroupJoin(group, task id, size). Joins are a set, so a redelivered header
   task does not count twice; exactly one task, the completer, is answered
   ``complete`` (again on its redelivery until the group fires). A header task
   that finishes before the size is stored waits for it with ResultWait (it is
   stored before the last header task is even sent).
4. The completer reads the header results (ResultGet, a thousand at a time),
   builds the body's message as Celery would publish it for
   ``body.delay(results)`` (``capture.py``) and publishes it with GroupFire,
   which marks the group fired in the same commit: the body goes out exactly
   once. A failed or revoked header task makes a ChordError instead, handled
   as Celery does (``chord_error_from_stack``), and the group is then marked
   fired without a message (GroupFire to a routing key no queue has).

When the app's broker is not brokerd, GroupFire cannot carry the body: the
completer publishes it through Celery's own producer, then marks the group
fired; the count is still exact, but a completer that dies between the two
may publish the body again when redelivered.

A body that publishes several messages (a group) has its first message fired
and the others published right after, only by the call that fired.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Final, Protocol

from celery import states
from celery.canvas import maybe_signature
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult, allow_join_result

from ..errors import BrokerError
from ..message import Message
from ..sync import Client
from .capture import CapturingProducer, capturing

__all__ = ["apply_chord", "on_chord_part_return", "set_chord_size"]

log = logging.getLogger("brokerd_client.celery.chords")

#: Suffix of the record holding a chord's size and run id.
SIZE_SUFFIX: Final = ".chord"
#: How long a header task that finished first waits for the chord's size.
SIZE_WAIT: Final = 60.0
#: A routing key no queue can have (names are 1-255 characters): GroupFire
#: to it marks a group fired without publishing anything.
NOWHERE: Final = ""
#: Ids per ResultGet (SPEC §13).
CHUNK: Final = 1000


class ChordBackend(Protocol):
    """What the chord steps use of the backend (``BrokerdBackend``)."""

    app: Any

    @property
    def client(self) -> Client: ...

    def put_meta(self, task_id: str, meta: dict[str, Any], ttl: float | None = None) -> None: ...

    def meta_from_record(
        self, task_id: str, record: tuple[str, bytes] | None
    ) -> dict[str, Any]: ...

    def chord_ttl(self) -> float: ...

    def chord_error_from_stack(self, callback: Any, exc: BaseException | None = None) -> Any: ...


def apply_chord(backend: ChordBackend, header_result_args: Any) -> None:
    group_id, results = header_result_args[0], header_result_args[1]
    header = backend.app.GroupResult(group_id, list(results), *header_result_args[2:])
    header.save(backend=backend)


def set_chord_size(backend: ChordBackend, group_id: str, chord_size: int) -> None:
    meta = {"status": states.SUCCESS, "result": {"size": chord_size, "run": uuid.uuid4().hex}}
    backend.put_meta(group_id + SIZE_SUFFIX, meta, ttl=backend.chord_ttl())


def on_chord_part_return(backend: ChordBackend, request: Any, state: str, result: Any) -> None:
    app = backend.app
    task_id, group_id = request.id, request.group
    if not task_id or not group_id:
        return
    size_record = _chord_size(backend, group_id)
    if size_record is None:
        log.error(
            "chord %r: its size was never stored; header task %s not counted", group_id, task_id
        )
        return
    size, run = size_record
    key = f"{group_id}.{run}"
    client = backend.client
    _, complete = client.group_join(key, task_id, size, ttl=backend.chord_ttl())
    if not complete:
        return
    callback = maybe_signature(request.chord, app=app)
    try:
        values = _gather(backend, group_id)
    except ChordError as exc:
        log.error("chord %r: %s", group_id, exc)
        backend.chord_error_from_stack(callback, exc)
        _mark_fired(backend, key)
        return
    except Exception as exc:
        log.exception("chord %r: gathering the header results failed", group_id)
        backend.chord_error_from_stack(callback, ChordError(f"Join error: {exc!r}"))
        _mark_fired(backend, key)
        return
    try:
        fired = _fire_body(backend, key, callback, values)
    except Exception as exc:
        log.exception("chord %r: publishing the body failed", group_id)
        backend.chord_error_from_stack(callback, ChordError(f"Callback error: {exc!r}"))
        _mark_fired(backend, key)
        return
    if fired:
        # The size record stays until it expires: a header task redelivered
        # now still finds it, joins and is told the chord is done.
        client.result_delete([group_id])


def _chord_size(backend: ChordBackend, group_id: str) -> tuple[int, str] | None:
    """``(size, run)`` of the chord; waits (pushed) for it if not stored yet."""
    name = group_id + SIZE_SUFFIX
    client = backend.client
    record = client.result_get([name]).get(name) or client.result_wait(name, SIZE_WAIT)
    if record is None:
        return None
    value = backend.meta_from_record(name, record)["result"]
    if not isinstance(value, dict):
        return None
    size, run = value.get("size"), value.get("run")
    if type(size) is not int or size < 1 or not isinstance(run, str):
        return None
    return size, run


def _gather(backend: ChordBackend, group_id: str) -> list[Any]:
    """The header's results in order (nested groups as lists), as Celery's
    join would return them; ChordError for a failed or revoked header task."""
    header = GroupResult.restore(group_id, app=backend.app, backend=backend)
    if header is None:
        raise ChordError(f"GroupResult {group_id} no longer exists")
    ids = _leaf_ids(header)
    metas: dict[str, dict[str, Any]] = {}
    client = backend.client
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        found = client.result_get(chunk)
        for task_id in chunk:
            metas[task_id] = backend.meta_from_record(task_id, found.get(task_id))
    with allow_join_result():
        values: list[Any] = _values(header, metas)
    return values


def _leaf_ids(result: Any) -> list[str]:
    if isinstance(result, GroupResult):
        return [i for r in result.results for i in _leaf_ids(r)]
    return [result.id]


def _values(result: Any, metas: dict[str, dict[str, Any]]) -> Any:
    if isinstance(result, GroupResult):
        return [_values(r, metas) for r in result.results]
    assert isinstance(result, AsyncResult)
    meta = metas[result.id]
    status = meta["status"]
    if status in states.PROPAGATE_STATES:
        value = meta["result"]
        error = ChordError(f"Dependency {result.id} raised {value!r}")
        if isinstance(value, BaseException):
            error.__cause__ = value
        raise error
    if status != states.SUCCESS:
        raise ChordError(f"Dependency {result.id} has no result (state {status})")
    return meta["result"]


def _fire_body(backend: ChordBackend, key: str, callback: Any, values: list[Any]) -> bool:
    """Publish the body for ``values``; True if this call published it."""
    app = backend.app
    if not _broker_is_brokerd(app):
        app.amqp._retry_publish(callback.delay, values)
        return _mark_fired(backend, key)
    with capturing(app, CapturingProducer(app.conf.task_serializer)) as producer:
        callback.apply_async((values,), producer=producer)
    if not producer.captured:
        raise ChordError("the chord body produced no task message")
    first, *rest = producer.captured
    fired = backend.client.group_fire(key, first.to_brokerd())
    if fired:
        for extra in rest:
            backend.client.publish_message(extra.to_brokerd())
    return fired


def _mark_fired(backend: ChordBackend, key: str) -> bool:
    try:
        return backend.client.group_fire(key, Message("", NOWHERE, b""))
    except BrokerError as exc:
        log.error("chord group %r could not be marked done: %s", key, exc)
        return False


def _broker_is_brokerd(app: Any) -> bool:
    if app.conf.broker_transport == "brokerd":
        return True
    url = app.conf.broker_write_url or app.conf.broker_url or ""
    if isinstance(url, list | tuple):
        url = url[0] if url else ""
    return str(url).startswith("brokerd://")
