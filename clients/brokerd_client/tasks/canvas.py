"""The canvas: signatures, chains, groups and chords, with Celery's names.

::

    from brokerd_client.tasks import chain, chord, group

    chain(add.s(1, 2), mul.s(10), add.s(5)).apply_async().get()  # (1 + 2) * 10 + 5
    (add.s(1, 2) | mul.s(10)).delay().get()                      # 30
    group(add.s(i, i) for i in range(10)).apply_async().get()    # [0, 2, ..., 18]
    chord((add.s(i, i) for i in range(10)), tsum.s()).delay().get()  # 90
    add.apply_async((2, 2), link=mul.s(10), link_error=report.s())

A signature serializes to a plain dict (no pickle): the rest of a chain, a
task's links and its chord travel in its message (see :mod:`.canvasio`, which
also says what a worker does with them). Applying a canvas **freezes** it:
every task id is chosen before anything is sent, so the result of the last
step is known at once (``.parent`` links lead back to the first) and every
follow-up has an id the worker can publish at most once.

Shapes that are rewritten when a chain is built, as in Celery: a group
followed by more steps becomes a chord whose body is the rest of the chain;
a chord followed by more steps gets them appended to its body.

Not supported (a ``TypeError`` when applied): a group directly inside a
chord's header (put its members in the header instead).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from . import states
from .canvasio import (
    MAX_GROUP_ID,
    ChordError,
    build,
    chord_member_id,
)
from .declare import declare_async, declare_sync
from .eager import apply_eagerly
from .exceptions import NotRegistered
from .result import AsyncResult, EagerResult, default_app
from .serialization import decode_result, encode_result
from .task import Signature as _BaseSignature

if TYPE_CHECKING:
    from .message import TaskMessage
    from .task import TaskApp

__all__ = [
    "ChordError",
    "GroupResult",
    "Signature",
    "chain",
    "chord",
    "group",
    "maybe_signature",
    "signature",
]


def _app_of(obj: Any) -> TaskApp:
    app = getattr(obj, "app", None)
    if app is None:
        app = default_app()
    return cast("TaskApp", app)


def _new_id() -> str:
    return str(uuid.uuid4())


class _Canvas:
    """What signatures, chains, groups and chords share."""

    app: Any
    options: dict[str, Any]

    # --- composing --------------------------------------------------------------

    def __or__(self, other: Any) -> _Canvas:
        if not isinstance(other, _Canvas):
            return NotImplemented
        if isinstance(self, group):
            return chord(self.tasks, other, app=self.app)
        left = self.tasks if isinstance(self, chain) else [self]
        right = other.tasks if isinstance(other, chain) else [other]
        return chain(*left, *right, app=self.app or other.app)

    # --- freezing ---------------------------------------------------------------

    def _freeze(
        self, chord_info: dict[str, Any] | None = None, last_id: str | None = None
    ) -> tuple[dict[str, Any], Any]:
        raise NotImplementedError

    def freeze(self) -> Any:
        """The result this canvas will have, ids chosen now (nothing is sent).

        A later ``apply_async()``/``delay()`` without arguments or options
        sends exactly what was frozen, so the result's ids hold.
        """
        frozen = self._freeze()
        self.__dict__["_frozen"] = frozen
        return frozen[1]

    def to_dict(self) -> dict[str, Any]:
        """The frozen wire form (fresh task ids each call)."""
        return self._freeze()[0]

    # --- applying ---------------------------------------------------------------

    def _partial(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> _Canvas:
        return self

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send it. ``args`` are partial arguments for the first task(s).

        ``options`` are send options for every task (``queue``, ``priority``,
        ``link_error``, ...), except: ``countdown``/``eta`` delay only the
        first task(s); ``link`` is attached to the last task(s) (a chord's
        body); ``task_id`` names the result returned (the last task, the
        body, or the group's id).
        """
        target, task_id = self._prepared(args, kwargs, options)
        app = _app_of(target)
        if app.conf.task_always_eager:
            return target._eager(app, ())
        element, result = self._frozen_or(target, task_id)
        _send(app, build(app, element))
        return result

    def _frozen_or(self, target: _Canvas, task_id: str | None) -> tuple[dict[str, Any], Any]:
        """What :meth:`freeze` chose, if it was called and ``target`` is this
        canvas unchanged; else ``target`` frozen now."""
        frozen = getattr(self, "__dict__", {}).get("_frozen")
        if frozen is not None and target is self and task_id is None:
            return frozen  # type: ignore[no-any-return]
        return target._freeze(None, task_id)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """:meth:`apply_async` for async code: the confirms are awaited, not
        blocked on."""
        target, task_id = self._prepared(args, kwargs, options)
        app = _app_of(target)
        if app.conf.task_always_eager:
            return target._eager(app, ())
        element, result = self._frozen_or(target, task_id)
        messages = build(app, element)
        hook = app.clients.worker_on_this_loop()
        if hook is not None:
            hook.publish(messages)
            return result
        client, declared = await app.clients.on_this_loop()
        for route in {tm.route for tm in messages}:
            await declare_async(client, app.router.topology, declared, route)
        await client.publish_many([tm.message for tm in messages])
        return result

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        return await self.aapply_async(args, kwargs)

    def _prepared(
        self,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> tuple[_Canvas, str | None]:
        """This canvas with ``options`` placed (see :meth:`apply_async`) and
        ``args`` applied, and the id asked for its result."""
        opts = dict(options)
        last: dict[str, Any] = {k: opts.pop(k) for k in ("link",) if k in opts}
        first: dict[str, Any] = {k: opts.pop(k) for k in ("countdown", "eta") if k in opts}
        task_id = opts.pop("task_id", None)
        target = (
            self._with_options(opts, "all")
            ._with_options(first, "first")
            ._with_options(last, "last")
            ._partial(args, kwargs)
        )
        if task_id is not None and isinstance(target, Signature):  # (eager runs)
            target = target._with_options({"task_id": task_id}, "last")
        return target, task_id

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        """Run it here and now, as eager mode does."""
        target = self._partial(args, kwargs)
        return target._eager(_app_of(target), ())

    def link(self, callback: Any) -> Any:
        """Run ``callback`` with the result after the last task(s) succeed."""
        self._set_from(self._with_options({"link": [callback]}, "last"))
        return callback

    def link_error(self, errback: Any) -> Any:
        """Run ``errback`` with a task's id after any of its tasks fails."""
        self._set_from(self._with_options({"link_error": [errback]}, "all"))
        return errback

    def _set_from(self, other: _Canvas) -> None:
        """Take ``other``'s parts (``link``/``link_error`` change a canvas in place)."""
        self.__dict__.update(other.__dict__)
        self.__dict__.pop("_frozen", None)  # what freeze() chose no longer holds

    def _with_options(self, options: Mapping[str, Any], where: str = "all") -> _Canvas:
        """A copy with ``options`` set on ``where``: every task, the ``first``
        task(s) to run, or the ``last`` (whose results the canvas returns)."""
        return self

    def _eager(self, app: TaskApp, partial: Sequence[Any]) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Signature(_BaseSignature, _Canvas):
    """One task call, not sent yet: ``add.s(2, 2)``, ``add.si(2, 2)``,
    ``app.signature("tasks.add", args=(2, 2), queue="q")``.

    ``set`` and ``link``/``link_error`` change the signature's options in
    place and return it (as in Celery); everything else returns a copy.
    """

    immutable: bool = False
    app: Any = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.task

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{'%' if self.immutable else ''}{self.task}({', '.join(parts)})"

    @property
    def id(self) -> str | None:
        task_id = self.options.get("task_id")
        return None if task_id is None else str(task_id)

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set send options (in place, as in Celery); ``immutable`` too."""
        if immutable is not None:
            object.__setattr__(self, "immutable", bool(immutable))  # in place, as Celery's set()
        self.options.update(options)
        return self

    def link(self, callback: Any) -> Any:
        """Run ``callback`` with this task's result after it succeeds."""
        self.options["link"] = [*self._callbacks("link"), callback]
        return callback

    def link_error(self, errback: Any) -> Any:
        """Run ``errback`` with this task's id after it fails."""
        self.options["link_error"] = [*self._callbacks("link_error"), errback]
        return errback

    def clone(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A copy; ``args`` are prepended (unless immutable), ``kwargs`` and
        ``options`` merged."""
        new_args = self.args
        if args and not self.immutable:
            new_args = (*args, *self.args)
        return replace(
            self,
            args=new_args,
            kwargs={**self.kwargs, **(kwargs or {})} if not self.immutable else dict(self.kwargs),
            options={**self.options, **options},
        )

    def replace(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Signature:
        return replace(
            self,
            args=tuple(args) if args is not None else self.args,
            kwargs=dict(kwargs) if kwargs is not None else dict(self.kwargs),
            options=dict(options) if options is not None else dict(self.options),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task function here, now (as calling the task does)."""
        app = _app_of(self)
        task = app.tasks.get(self.task)
        if task is None:
            raise NotRegistered(self.task)
        sig = self.clone(args, kwargs)
        return task(*sig.args, **sig.kwargs)

    def freeze(self) -> AsyncResult:
        """Choose this signature's task id now (in place, as Celery does) and
        return its result; applying it later keeps that id."""
        self.options.setdefault("task_id", _new_id())
        return self._freeze()[1]

    def _partial(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> Signature:
        if not args and not kwargs:
            return self
        return self.clone(args, kwargs)

    def _with_options(self, options: Mapping[str, Any], where: str = "all") -> Signature:
        if not options:
            return self
        merged = {**self.options, **options}
        for key in ("link", "link_error"):  # callbacks add up
            if key in options and key in self.options:
                merged[key] = [
                    *self._callbacks(key),
                    *replace(self, options=dict(options))._callbacks(key),
                ]
        return replace(self, options=merged)

    def _freeze(
        self, chord_info: dict[str, Any] | None = None, last_id: str | None = None
    ) -> tuple[dict[str, Any], AsyncResult]:
        options = dict(self.options)
        task_id = last_id or options.get("task_id") or _new_id()
        options["task_id"] = task_id
        for key in ("link", "link_error"):
            if key in options:
                options[key] = [c._freeze()[0] for c in self._callbacks(key)]
        if chord_info is not None:
            options["chord"] = chord_info
        element = {
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "options": options,
            "immutable": self.immutable,
        }
        return element, AsyncResult(task_id, _app_of(self))

    def _callbacks(self, key: str) -> list[_Canvas]:
        """The ``link`` or ``link_error`` option as canvas objects (one or a list)."""
        value = self.options.get(key)
        if not value:
            return []
        items = value if isinstance(value, list | tuple) else [value]
        return [maybe_signature(c, self.app) for c in items]

    def _eager(self, app: TaskApp, partial: Sequence[Any]) -> EagerResult:
        task = app.tasks.get(self.task)
        if task is None:
            raise NotRegistered(f"task {self.task!r} is not registered (eager canvas)")
        args = list(self.args)
        if partial and not self.immutable:
            args = [*partial, *args]
        result = apply_eagerly(task, args, dict(self.kwargs), self.options.get("task_id"))
        if result.successful():
            for callback in self._callbacks("link"):
                callback._eager(app, (result.result,))
        else:
            for errback in self._callbacks("link_error"):
                errback._eager(app, (result.id,))
        return result


def signature(
    name: str | Mapping[str, Any] | _Canvas,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    app: Any = None,
    immutable: bool = False,
    **options: Any,
) -> _Canvas:
    """A signature by task name (or from its dict form, or as given)."""
    if isinstance(name, _Canvas):
        return name
    if isinstance(name, Mapping):
        return from_dict(name, app)
    return Signature(name, tuple(args), dict(kwargs or {}), dict(options), immutable, app)


def maybe_signature(obj: Any, app: Any = None) -> _Canvas:
    """``obj`` as a canvas object (signatures and their dict forms)."""
    if isinstance(obj, _Canvas):
        return obj
    if isinstance(obj, Mapping):
        return from_dict(obj, app)
    raise TypeError(f"not a signature: {obj!r}")


def from_dict(data: Mapping[str, Any], app: Any = None) -> _Canvas:
    """The canvas object of a dict made by :meth:`_Canvas.to_dict`."""
    kind = data.get("subtask_type")
    options = dict(data.get("options") or {})
    if kind == "chain":
        return chain(*(from_dict(t, app) for t in data["tasks"]), app=app)
    if kind == "group":
        return group([from_dict(t, app) for t in data["tasks"]], app=app, **options)
    if kind == "chord":
        return chord(
            [from_dict(t, app) for t in data["header"]],
            from_dict(data["body"], app),
            app=app,
            **options,
        )
    return Signature(
        str(data["task"]),
        tuple(data.get("args") or ()),
        dict(data.get("kwargs") or {}),
        options,
        bool(data.get("immutable", False)),
        app,
    )


def _first_app(tasks: Iterable[_Canvas]) -> Any:
    for t in tasks:
        if getattr(t, "app", None) is not None:
            return t.app
    return None


def _tasks_of(tasks: tuple[Any, ...]) -> list[_Canvas]:
    if len(tasks) == 1 and not isinstance(tasks[0], _Canvas | Mapping):
        tasks = tuple(tasks[0])  # group([a, b]) / group(a for ...)
    return [maybe_signature(t) for t in tasks]


class chain(_Canvas):
    """Tasks run one after another, each given the previous one's result
    as its first argument (unless immutable): ``chain(a.s(1), b.s(), c.s())``
    or ``a.s(1) | b.s() | c.s()``. Applying it returns the last task's result."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any) -> None:
        flat: list[_Canvas] = []
        for t in _tasks_of(tasks):
            flat.extend(t.tasks if isinstance(t, chain) else [t])
        self.tasks: list[_Canvas] = flat
        self.app = app or _first_app(flat)
        self.options = options

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"

    def _normalized(self) -> list[_Canvas]:
        """Groups and chords followed by more steps become chords whose body
        carries the rest (as Celery does)."""
        tasks = list(self.tasks)
        for i, t in enumerate(tasks):
            rest = tasks[i + 1 :]
            if not rest:
                break
            if isinstance(t, group):
                return [*tasks[:i], chord(t.tasks, chain(*rest, app=self.app), app=t.app)]
            if isinstance(t, chord):
                return [*tasks[:i], chord(t.tasks, chain(t.body, *rest), app=t.app, **t.options)]
        return tasks

    def _partial(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> chain:
        if not self.tasks or (not args and not kwargs):
            return self
        first = self.tasks[0]._partial(args, kwargs)
        return chain(first, *self.tasks[1:], app=self.app, **self.options)

    def _with_options(self, options: Mapping[str, Any], where: str = "all") -> chain:
        if not options or not self.tasks:
            return self
        tasks = list(self.tasks)
        if where == "first":
            tasks[0] = tasks[0]._with_options(options, where)
        elif where == "last":
            tasks[-1] = tasks[-1]._with_options(options, where)
        else:
            tasks = [t._with_options(options, where) for t in tasks]
        return chain(*tasks, app=self.app, **self.options)

    def _freeze(
        self, chord_info: dict[str, Any] | None = None, last_id: str | None = None
    ) -> tuple[dict[str, Any], Any]:
        tasks = self._normalized()
        elements: list[dict[str, Any]] = []
        previous: Any = None
        for i, t in enumerate(tasks):
            last = i == len(tasks) - 1
            element, result = t._freeze(chord_info if last else None, last_id if last else None)
            _set_parent(result, previous)
            elements.append(element)
            previous = result
        return {"subtask_type": "chain", "tasks": elements}, previous

    def _eager(self, app: TaskApp, partial: Sequence[Any]) -> Any:
        previous: Any = None
        tasks = self._normalized()
        for i, t in enumerate(tasks):
            result = t._eager(app, partial if i == 0 else (previous.get(),))
            _set_parent(result, previous)
            previous = result
            if not result.successful():
                # The rest does not run; its results are this failure.
                for _ in tasks[i + 1 :]:
                    failed = EagerResult(
                        _new_id(), result.state, None, _failure(result), result.traceback
                    )
                    _set_parent(failed, previous)
                    previous = failed
                break
        return previous


class group(_Canvas):
    """Tasks run in parallel: ``group(add.s(i, i) for i in range(10))``;
    applying it returns a :class:`GroupResult`."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any) -> None:
        self.tasks: list[_Canvas] = _tasks_of(tasks)
        self.app = app or _first_app(self.tasks)
        self.options = options

    def __repr__(self) -> str:
        return f"group({self.tasks!r})"

    def __len__(self) -> int:
        return len(self.tasks)

    def _partial(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> group:
        if not args and not kwargs:
            return self
        return group([t._partial(args, kwargs) for t in self.tasks], app=self.app, **self.options)

    def _with_options(self, options: Mapping[str, Any], where: str = "all") -> group:
        if not options:
            return self
        return group(
            [t._with_options(options, where) for t in self.tasks], app=self.app, **self.options
        )

    def _freeze(
        self, chord_info: dict[str, Any] | None = None, last_id: str | None = None
    ) -> tuple[dict[str, Any], GroupResult]:
        if chord_info is not None:
            raise TypeError(
                "a group directly inside a chord header is not supported: put its tasks in "
                "the header itself"
            )
        group_id = str(last_id or self.options.get("group_id") or _new_id())
        elements, results = [], []
        for t in self.tasks:
            element, result = t._freeze()
            elements.append(element)
            results.append(result)
        element = {"subtask_type": "group", "tasks": elements, "options": {"group_id": group_id}}
        return element, GroupResult(group_id, results, app=_app_of(self))

    def _eager(self, app: TaskApp, partial: Sequence[Any]) -> GroupResult:
        group_id = str(self.options.get("group_id") or _new_id())
        return GroupResult(group_id, [t._eager(app, partial) for t in self.tasks], app=app)


class chord(_Canvas):
    """A group (the header) whose results, in order, are passed as a list to
    one more task (the body) once all succeeded: ``chord(header)(body)`` or
    ``chord(header, body).apply_async()``; the result is the body's.

    The body runs exactly once: the broker counts the header (GroupJoin) and
    publishes the body for the header task that completed it (GroupFire).
    If a header task fails (or is revoked), the body does not run and the
    chord's result is a FAILURE, :class:`ChordError` naming that task.
    """

    def __init__(self, header: Any, body: Any = None, *, app: Any = None, **options: Any) -> None:
        if isinstance(header, group):
            header = header.tasks
        self.tasks: list[_Canvas] = (
            _tasks_of((header,)) if not isinstance(header, _Canvas) else [header]
        )
        self.body: _Canvas | None = None if body is None else maybe_signature(body)
        self.app = app or _first_app([*self.tasks, *([self.body] if self.body else [])])
        self.options = options

    def __repr__(self) -> str:
        return f"chord({self.tasks!r}, {self.body!r})"

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header)(body)``: apply with this body."""
        target = self if body is None else chord(self.tasks, body, app=self.app, **self.options)
        return target.apply_async(**options)

    def _need_body(self) -> _Canvas:
        if self.body is None:
            raise TypeError("this chord has no body: chord(header)(body) or chord(header, body)")
        return self.body

    def _partial(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> chord:
        if not args and not kwargs:
            return self
        return chord(
            [t._partial(args, kwargs) for t in self.tasks], self.body, app=self.app, **self.options
        )

    def _with_options(self, options: Mapping[str, Any], where: str = "all") -> chord:
        if not options:
            return self
        body = self._need_body()
        return chord(
            self.tasks
            if where == "last"
            else [t._with_options(options, where) for t in self.tasks],
            body if where == "first" else body._with_options(options, where),
            app=self.app,
            **self.options,
        )

    def _freeze(
        self, chord_info: dict[str, Any] | None = None, last_id: str | None = None
    ) -> tuple[dict[str, Any], Any]:
        body = self._need_body()
        group_id = str(self.options.get("group_id") or _new_id())
        if len(group_id) > MAX_GROUP_ID:
            raise ValueError(f"a chord's group_id has at most {MAX_GROUP_ID} characters")
        body_element, body_result = body._freeze(chord_info, last_id)
        info = {"id": group_id, "size": len(self.tasks), "body": body_element}
        elements, results = [], []
        for i, t in enumerate(self.tasks):
            element, result = t._freeze(info, chord_member_id(group_id, i))
            elements.append(element)
            results.append(result)
        element = {
            "subtask_type": "chord",
            "header": elements,
            "body": body_element,
            "options": {"group_id": group_id},
        }
        _set_parent(body_result, GroupResult(group_id, results, app=_app_of(self)))
        return element, body_result

    def _eager(self, app: TaskApp, partial: Sequence[Any]) -> Any:
        body = self._need_body()
        group_id = str(self.options.get("group_id") or _new_id())
        header = GroupResult(group_id, [t._eager(app, partial) for t in self.tasks], app=app)
        failed = next((r for r in header.leaves() if not r.successful()), None)
        if failed is None:
            result = body._eager(app, (header.get(),))
        else:
            exc = ChordError(f"Dependency {failed.id} raised {_failure(failed)!r}")
            if app.conf.task_eager_propagates:
                raise exc
            result = EagerResult(_new_id(), states.FAILURE, None, exc)
        _set_parent(result, header)
        return result


def _failure(result: Any) -> BaseException:
    value = result.get(propagate=False)
    return value if isinstance(value, BaseException) else RuntimeError(repr(value))


def _set_parent(result: Any, parent: Any) -> None:
    if result is not None:
        result.parent = parent


def _send(app: TaskApp, messages: list[TaskMessage]) -> None:
    """Publish the first messages of an applied canvas (pipelined)."""
    if not messages:
        return
    clients = app.clients
    hook = clients.worker_on_this_loop()
    if hook is not None:
        hook.publish(messages)
        return
    client = clients.producer
    for route in {tm.route for tm in messages}:
        declare_sync(client, app.router.topology, clients.producer_declared, route)
    client.publish_many([tm.message for tm in messages])


class GroupResult:
    """The results of a group, in order: ``.get()`` is the list of values.

    ``save()`` stores its member ids in the broker under the group id, so
    ``GroupResult.restore(group_id, app=app)`` rebuilds it (flat: a nested
    group's members are restored as plain results).
    """

    def __init__(self, id: str, results: Sequence[Any], app: Any = None) -> None:
        self.id = id
        self.results: list[Any] = list(results)
        self.app: Any = app if app is not None else default_app()
        self.parent: Any = None

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    @property
    def children(self) -> list[Any]:
        return self.results

    def leaves(self) -> list[Any]:
        out: list[Any] = []
        for r in self.results:
            out.extend(r.leaves() if isinstance(r, GroupResult) else [r])
        return out

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(1 for r in self.leaves() if r.successful())

    def get(
        self, timeout: float | None = None, propagate: bool = True, interval: float | None = None
    ) -> list[Any]:
        """The members' values in order (waits for each; ``timeout`` bounds the whole)."""
        del interval
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for r in self.results:
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            out.append(r.get(timeout=left, propagate=propagate))
        return out

    join = get

    async def wait(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:  # noqa: ASYNC109
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for r in self.results:
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            out.append(await r.wait(timeout=left, propagate=propagate))
        return out

    def revoke(self, terminate: bool = False) -> None:
        for r in self.results:
            r.revoke(terminate=terminate)

    def save(self) -> None:
        """Store the member ids under the group id (for :meth:`restore`)."""
        ids = [r.id for r in self.leaves()]
        conf = self.app.conf
        payload = encode_result({"group": ids}, conf.result_serializer)
        self.app.clients.producer.result_set(self.id, states.SUCCESS, payload, conf.result_expires)

    @classmethod
    def restore(cls, group_id: str, app: Any = None) -> GroupResult | None:
        """The saved group ``group_id``, or None if there is none."""
        app = app if app is not None else default_app()
        record = app.clients.producer.result_get([group_id]).get(group_id)
        if record is None:
            return None
        value = decode_result(record[1]).get("result")
        if not isinstance(value, dict) or not isinstance(value.get("group"), list):
            return None
        return cls(group_id, [AsyncResult(str(i), app) for i in value["group"]], app=app)

    def delete(self) -> None:
        self.app.clients.producer.result_delete([self.id])
