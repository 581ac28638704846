"""The wire and worker side of the canvas (chains, groups, chords, links).

:mod:`.canvas` holds the objects users build; this module holds what
travels and what a worker does with it. Both work on **frozen** canvas
elements: plain dicts whose task ids were all chosen when the workflow was
applied, so every later step is named before it is sent.

Element shapes (``args`` lists, ``kwargs``/``options`` maps)::

    {"task": name, "args": [...], "kwargs": {...}, "options": {...}, "immutable": bool}
    {"subtask_type": "chain", "tasks": [element, ...]}
    {"subtask_type": "group", "tasks": [element, ...], "options": {"group_id": id}}
    {"subtask_type": "chord", "header": [element, ...], "body": element,
     "options": {"group_id": id}}

A task element's ``options`` are send options plus ``link``/``link_error``
(lists of elements) and, on the last task of a chord header member,
``chord`` = ``{"id": group id, "size": n, "body": element}``.

The **canvas header** (``canvas``, a msgpack ``bin``; header values cannot
be maps) of a task message carries what follows that task: ``chain`` (the
remaining chain, next step first), ``link``, ``link_error`` and ``chord``.

What a worker does once a task with a canvas header is final (its result
is stored first, and the message is acked only after all of this):

* SUCCESS: the next chain step is sent with the result as its first
  argument (unless immutable), then each ``link`` the same way;
* FAILURE or REVOKED: each ``link_error`` is sent with the failed task's id
  as its first argument (unless immutable); every remaining chain step's
  result is stored as the same failure, so ``chain.get()`` raises it;
* a chord member then joins the chord's broker group (GroupJoin). The one
  join the broker answers ``complete`` reads the header's results in order
  and sends the body with their list as first argument, through GroupFire:
  the body is published once. A failed member makes the body's result a
  :class:`ChordError` instead; the body does not run.

Every follow-up message is published **at most once** whatever happens to
the task that sends it: each one goes out through GroupFire of a one-member
broker group named after the message's own (frozen) task id, so a task
redelivered after it sent its follow-ups (its worker was killed before the
ack) sends nothing again, and a redelivered task whose result is already
stored redoes only the follow-ups (see the dispatcher's redelivery check).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from .. import errors
from ..message import Message
from . import states
from .declare import declare_async
from .exceptions import TaskError
from .producer import build_message
from .serialization import (
    DecodeError,
    EncodeError,
    decode_result,
    dumps,
    encode_error,
    loads,
)

if TYPE_CHECKING:
    from ..client import AsyncClient
    from .message import TaskMessage
    from .task import TaskApp

__all__ = [
    "CANVAS_HEADER",
    "CANVAS_OPTIONS",
    "ChordError",
    "build",
    "chord_member_id",
    "decode_canvas",
    "encode_canvas",
    "follow_up",
    "result_ids",
]

log = logging.getLogger("brokerd_client.tasks.canvas")

#: The message header that carries a task's canvas (msgpack ``bin``).
CANVAS_HEADER: Final = "canvas"
#: Options of a task element that are the canvas's, not ``apply_async``'s.
CANVAS_OPTIONS: Final = frozenset({"link", "link_error", "chord"})
#: A routing key no queue can have: GroupFire to it marks a group fired.
_NOWHERE: Final = ""
#: Seconds the broker remembers that a follow-up was sent (at most
#: ``result_expires``): a task redelivered later than that sends it again.
#: Each follow-up holds one broker group that long (SPEC §14.12 allows 1,000,000).
DEDUP_TTL: Final = 3600.0
#: Longest group id a chord may have (its members are ``<id>:<index>``).
MAX_GROUP_ID: Final = 240


class ChordError(TaskError):
    """A chord's header had a failed (or revoked, or lost) task: the body did
    not run, and this is its result."""


def encode_canvas(canvas: Mapping[str, Any]) -> bytes:
    return dumps(dict(canvas), "msgpack")


def decode_canvas(value: Any) -> dict[str, Any]:
    """The canvas header's map; ``ValueError`` if it is not one."""
    if type(value) is not bytes:
        raise ValueError(f"the {CANVAS_HEADER!r} header must be bin, got {type(value).__name__}")
    try:
        data = loads(value, "msgpack")
    except DecodeError as exc:
        raise ValueError(f"the {CANVAS_HEADER!r} header does not decode: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the {CANVAS_HEADER!r} header must be a map")
    return data


def chord_member_id(group_id: str, index: int) -> str:
    """The result id of a chord's ``index``-th header member (its last task)."""
    return f"{group_id}:{index}"


def _kind(element: Mapping[str, Any]) -> str | None:
    if not isinstance(element, Mapping):
        raise ValueError(f"a canvas element must be a map, got {type(element).__name__}")
    kind = element.get("subtask_type")
    if kind not in (None, "chain", "group", "chord"):
        raise ValueError(f"unknown canvas element type {kind!r}")
    return kind


def result_ids(element: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any] | None]]:
    """Every task id in a frozen element, with its chord membership (or None)."""
    kind = _kind(element)
    if kind is None:
        options = element.get("options") or {}
        return [(str(options["task_id"]), options.get("chord"))]
    out: list[tuple[str, Mapping[str, Any] | None]] = []
    if kind == "chord":
        for member in element["header"]:
            out.extend(result_ids(member))
        out.extend(result_ids(element["body"]))
    else:
        for member in element["tasks"]:
            out.extend(result_ids(member))
    return out


def build(
    app: TaskApp,
    element: Mapping[str, Any],
    partial: Sequence[Any] = (),
    chain_rest: Sequence[Mapping[str, Any]] = (),
) -> list[TaskMessage]:
    """The task messages that start a frozen ``element``.

    ``partial`` is prepended to the first task's arguments (to each header
    or group member's), unless that task is immutable; ``chain_rest`` is
    what follows the element in its chain.
    """
    kind = _kind(element)
    if kind == "chain":
        tasks = list(element["tasks"])
        if not tasks:
            return []
        return build(app, tasks[0], partial, [*tasks[1:], *chain_rest])
    if kind == "chord" and not element["header"]:  # nothing to wait for
        return build(app, element["body"], ([],), chain_rest)
    if kind in ("group", "chord"):
        if chain_rest:
            raise ValueError("a group or chord must be the last element of a chain")
        members = element["tasks"] if kind == "group" else element["header"]
        return [tm for member in members for tm in build(app, member, partial)]
    options = dict(element.get("options") or {})
    canvas: dict[str, Any] = {}
    if chain_rest:
        canvas["chain"] = [dict(e) for e in chain_rest]
    for key in CANVAS_OPTIONS:
        value = options.pop(key, None)
        if value:
            canvas[key] = value
    args = list(element.get("args") or ())
    if partial and not element.get("immutable"):
        args = [*partial, *args]
    if canvas:
        headers = dict(options.get("headers") or {})
        headers[CANVAS_HEADER] = encode_canvas(canvas)
        options["headers"] = headers
    name = str(element["task"])
    kwargs = dict(element.get("kwargs") or {})
    return [build_message(app, app.router, name, args, kwargs, options, app.tasks.get(name))]


# --- the worker side ----------------------------------------------------------------


def _group_key(prefix: str, ident: str) -> str:
    key = f"{prefix}:{ident}"
    if len(key) <= 255:
        return key
    return f"{prefix}#{hashlib.sha256(ident.encode()).hexdigest()}"


class _Context:
    """What the follow-ups of one finished task use."""

    def __init__(self, app: TaskApp, client: AsyncClient, member: str) -> None:
        self.app = app
        self.client = client
        self.member = member
        conf = app.conf
        self.ttl = max(float(conf.result_expires or 0.0), 86_400.0)
        self.dedup_ttl = max(1.0, min(float(conf.result_expires or DEDUP_TTL), DEDUP_TTL))
        self.result_ttl = conf.result_expires
        self.rser = conf.result_serializer

    async def declare(self, messages: Iterable[TaskMessage]) -> None:
        hook = self.app.clients.worker
        if hook is None:
            return
        topo = self.app.router.topology
        for route in {tm.route for tm in messages}:
            await declare_async(hook.client, topo, hook.declared, route)

    async def publish_once(self, messages: list[TaskMessage]) -> None:
        """Publish each message at most once, however often this runs."""
        if not messages:
            return
        await self.declare(messages)
        client = self.client
        # Pipelined: each join and fire is sent in this order on one connection,
        # and the broker decides each frame as it arrives, so a fire always
        # finds its group (the replies come after the commits).
        steps: list[asyncio.Future[Any]] = []
        for tm in messages:
            key = _group_key("canvas", tm.task_id)
            steps.append(
                asyncio.ensure_future(client.group_join(key, self.member, 1, ttl=self.dedup_ttl))
            )
            steps.append(asyncio.ensure_future(client.group_fire(key, tm.message)))
        results = await asyncio.gather(*steps, return_exceptions=True)
        plain: list[TaskMessage] = []
        for tm, joined, fired in zip(messages, results[::2], results[1::2], strict=True):
            if isinstance(joined, errors.InvalidArgument) and isinstance(fired, errors.NotFound):
                # The broker holds as many groups as it may: send it at least
                # once rather than not at all.
                log.warning(
                    "task %s: the broker refused a group for follow-up %s (%s); sending it "
                    "without the at-most-once guard",
                    self.member,
                    tm.task_id,
                    joined,
                )
                plain.append(tm)
                continue
            for outcome in (joined, fired):
                if isinstance(outcome, BaseException):
                    raise outcome
        if plain:
            await client.publish_many([tm.message for tm in plain])


async def follow_up(
    app: TaskApp,
    client: AsyncClient,
    task_id: str,
    headers: Mapping[str, Any],
    state: str,
    payload: bytes,
) -> None:
    """Do what follows task ``task_id`` (final ``state``, result ``payload``)
    per its canvas header; see the module docstring. Safe to run again."""
    try:
        canvas = decode_canvas(headers.get(CANVAS_HEADER))
    except ValueError as exc:
        log.error("task %s: %s; its canvas is dropped", task_id, exc)
        return
    ctx = _Context(app, client, task_id)
    try:
        messages: list[TaskMessage] = []
        failed: list[tuple[str, Mapping[str, Any] | None]] = []
        if state == states.SUCCESS:
            value = decode_result(payload).get("result") if payload else None
            chain = list(canvas.get("chain") or ())
            if chain:
                messages.extend(build(app, chain[0], (value,), chain[1:]))
            for link in canvas.get("link") or ():
                messages.extend(build(app, link, (value,)))
        else:
            for errback in canvas.get("link_error") or ():
                messages.extend(build(app, errback, (task_id,)))
            for element in canvas.get("chain") or ():
                failed.extend(result_ids(element))
        chord = canvas.get("chord")
        if chord is not None and not isinstance(chord, Mapping):
            raise ValueError("'chord' must be a map")
    except (KeyError, TypeError, ValueError, AttributeError, DecodeError) as exc:
        log.error("task %s: its canvas cannot be followed (%s); dropped", task_id, exc)
        return
    await ctx.publish_once(messages)
    joins: list[tuple[str, Mapping[str, Any]]] = []
    stores: list[asyncio.Future[Any]] = []
    for rid, member_of in failed:
        stores.append(ctx.client.result_set(rid, state, payload, ctx.result_ttl))
        if member_of:
            joins.append((rid, member_of))
    await _settle_all(stores)
    if chord:
        joins.append((task_id, chord))
    for member, info in joins:
        await _join(ctx, member, info)


async def _join(ctx: _Context, member: str, chord: Mapping[str, Any]) -> None:
    """Join ``member`` to its chord; the completer sends the body, once."""
    group_id, size, body = str(chord["id"]), int(chord["size"]), chord["body"]
    key = _group_key("chord", group_id)
    client = ctx.client
    _, complete = await client.group_join(key, member, size, ttl=ctx.ttl)
    if not complete:
        return
    ids = [chord_member_id(group_id, i) for i in range(size)]
    found = await client.result_get(ids)
    values: list[Any] = []
    error: str | None = None
    for rid in ids:
        record = found.get(rid)
        if record is None:
            error = f"Dependency {rid} has no result"
            break
        rstate, rpayload = record
        data = decode_result(rpayload) if rpayload else {}
        if rstate != states.SUCCESS:
            error = (
                f"Dependency {rid} raised {data.get('exc_type', rstate)}: "
                f"{data.get('exc_message', '')}"
            )
            break
        values.append(data.get("result"))
    if error is None:
        try:
            messages = build(ctx.app, body, (values,))
            await ctx.declare(messages)
            if len(messages) == 1:
                await client.group_fire(key, messages[0].message)
                return
            await ctx.publish_once(messages)
        except _NEVER_SENDABLE as exc:
            # Sending it again would be refused again: the chord fails.
            error = f"Callback error: {type(exc).__name__}: {exc}"
        else:
            await _mark_fired(client, key)
            return
    await _fail_body(ctx, key, group_id, body, error)


#: Errors sending a chord's body that another try would meet again.
_NEVER_SENDABLE = (
    EncodeError,
    errors.MessageTooLarge,
    errors.InvalidArgument,
    errors.Unroutable,
    errors.NotFound,
    errors.AccessRefused,
    errors.PreconditionFailed,
)


async def _fail_body(
    ctx: _Context, key: str, group_id: str, body: Mapping[str, Any], error: str
) -> None:
    """The chord failed: its body's results are a ChordError; mark it done."""
    client = ctx.client
    log.error("chord %s: %s; its body is not run", group_id, error)
    failure = encode_error("ChordError", ChordError.__module__, error, "", ctx.rser)
    ids_of_body = result_ids(body)
    await _settle_all(
        [client.result_set(rid, states.FAILURE, failure, ctx.result_ttl) for rid, _ in ids_of_body]
    )
    for rid, outer in ids_of_body:
        if outer:
            await _join(ctx, rid, outer)
    await _mark_fired(client, key)


async def _settle_all(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Wait for all; then raise the first failure, if any."""
    if not futures:
        return
    results = await asyncio.gather(*futures, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _mark_fired(client: AsyncClient, key: str) -> None:
    try:
        await client.group_fire(key, Message("", _NOWHERE, b""))
    except errors.BrokerError as exc:
        log.warning("chord group %r could not be marked done: %s", key, exc)
