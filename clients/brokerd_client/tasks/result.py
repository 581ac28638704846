"""Task results: :class:`AsyncResult` (stored in brokerd) and :class:`EagerResult`.

Results live in the broker (``ResultSet``/``ResultGet``/``ResultWait``): no
second service to run. Waiting is a single ``ResultWait`` request that the
broker answers the moment the task reaches a final state, so ``.get()`` and
``await .wait()`` never poll.

A failed task's error comes back as text (type, module, message, traceback).
``get()`` re-raises it as the original type when that type can be rebuilt
without importing anything (built-in exceptions, this package's, and classes
of modules already imported here), otherwise as a :class:`RemoteTaskError`
subclass of the same name. The remote traceback is attached as a note and as
``exc.remote_traceback``. Nothing from the payload is ever imported or
executed.
"""

from __future__ import annotations

import builtins
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from . import states
from .exceptions import RemoteTaskError, TaskRevokedError
from .outcome import ExcInfo
from .serialization import decode_result

if TYPE_CHECKING:
    from .clients import Clients
    from .control import Control

__all__ = [
    "AsyncResult",
    "EagerResult",
    "ResultApp",
    "default_app",
    "rebuild_exception",
    "set_default_app",
]


class ResultApp(Protocol):
    """What a result uses of its app: the connections to read it through and
    the remote control to revoke it. :class:`~brokerd_client.tasks.App` is
    the implementation; naming a protocol here instead of importing App
    keeps every arrow between them pointing from the app to its results."""

    @property
    def clients(self) -> Clients: ...

    @property
    def control(self) -> Control: ...


_default: ResultApp | None = None


def set_default_app(app: ResultApp) -> None:
    """Make ``app`` the one ``AsyncResult(task_id)`` uses (every new App does)."""
    global _default
    _default = app


def default_app() -> ResultApp:
    """The app made last: what ``AsyncResult(task_id)`` uses without ``app=``."""
    if _default is None:
        raise RuntimeError("no brokerd_client.tasks.App has been created yet")
    return _default


#: Longest single ResultWait; ``get(timeout=None)`` chains them (each is one
#: pushed answer, not a poll).
_MAX_WAIT = 3600.0


def rebuild_exception(info: ExcInfo) -> BaseException:
    """An exception object standing for ``info`` (see the module docstring)."""
    cls = _find_class(info.exc_module, info.exc_type)
    exc: BaseException | None = None
    if cls is not None:
        try:
            exc = cls(info.exc_message)
        except Exception:
            exc = None
    if exc is None:
        remote = type(info.exc_type, (RemoteTaskError,), {"__module__": __name__})
        exc = remote(info.exc_message)
    setattr(exc, "remote_traceback", info.traceback)  # noqa: B010 - any exception type
    if isinstance(exc, RemoteTaskError):
        exc.exc_type, exc.exc_module = info.exc_type, info.exc_module
    if info.traceback:
        exc.add_note(f"Remote traceback (the task's own):\n{info.traceback.rstrip()}")
    return exc


def _find_class(module: str, name: str) -> type[BaseException] | None:
    if not name.isidentifier():
        return None
    if module == "builtins":
        obj = getattr(builtins, name, None)
    else:
        mod = sys.modules.get(module)  # only modules already imported here
        obj = getattr(mod, name, None) if mod is not None else None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


class _ResultBase:
    """What :class:`AsyncResult` and :class:`EagerResult` share."""

    id: str
    #: The result before this one in a chain (or a chord's header), if any.
    parent: Any = None

    @property
    def task_id(self) -> str:
        return self.id

    @property
    def state(self) -> str:
        raise NotImplementedError

    @property
    def status(self) -> str:
        return self.state

    def ready(self) -> bool:
        """True once the task reached a final state (SUCCESS, FAILURE, REVOKED)."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _ResultBase):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)


class AsyncResult(_ResultBase):
    """The result of a task sent to a worker; ``AsyncResult(task_id, app=app)``.

    ``state`` asks the broker each time until the task is final, then the
    final record is kept (final states never change), except FAILURE, which
    is asked for again: the management API may retry a failed task under the
    same id, and this handle then sees the new run's outcome.
    """

    def __init__(self, id: str, app: ResultApp | None = None) -> None:
        self.id = id
        self.app = app if app is not None else default_app()
        self._final: tuple[str, dict[str, Any]] | None = None

    # --- reading ---------------------------------------------------------------

    def _decode(self, record: tuple[str, bytes] | None) -> tuple[str, dict[str, Any]]:
        if record is None:
            return states.PENDING, {}
        state, payload = record
        data = decode_result(payload)
        if state == states.STARTED and isinstance(data.get("state"), str):
            state = data["state"]  # a custom state (update_state), see .progress
        if state in states.READY_STATES:
            self._final = (state, data)
        return state, data

    def _kept(self) -> tuple[str, dict[str, Any]] | None:
        """The final record this handle may answer from without asking: not
        a FAILURE (a retry over the management API replaces it)."""
        final = self._final
        if final is not None and final[0] == states.FAILURE:
            self._final = None
            return None
        return final

    def _fetch(self) -> tuple[str, dict[str, Any]]:
        final = self._kept()
        if final is not None:
            return final
        found = self.app.clients.producer.result_get([self.id])
        return self._decode(found.get(self.id))

    async def _afetch(self) -> tuple[str, dict[str, Any]]:
        final = self._kept()
        if final is not None:
            return final
        client = await self.app.clients.async_client()
        found = await client.result_get([self.id])
        return self._decode(found.get(self.id))

    @property
    def state(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED, or a custom
        state set with ``update_state`` (asks the broker)."""
        return self._fetch()[0]

    @property
    def result(self) -> Any:
        """The return value, or the exception for FAILURE/RETRY/REVOKED, or
        the ``meta`` of a custom state, or None."""
        return _value_of(*self._fetch())

    info = result

    @property
    def traceback(self) -> str | None:
        state, data = self._fetch()
        return data.get("traceback") if state in states.EXCEPTION_STATES else None

    async def astate(self) -> str:
        return (await self._afetch())[0]

    # --- waiting -----------------------------------------------------------------

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Any:
        """Block until the task is final and return its value.

        Raises ``TimeoutError`` after ``timeout`` seconds; re-raises the task's
        error if it failed or was revoked, unless ``propagate=False`` (then the
        exception is returned). ``on_message(meta)`` is called with each state
        the task reports (``update_state``) and the final one, ``meta`` being
        ``{"task_id", "status", "result"}`` (see :mod:`.progress`).
        ``interval`` is accepted for Celery compatibility and ignored: the
        broker pushes every answer.
        """
        del interval
        if on_message is not None:
            self._check_not_on_worker_loop()
            final = self._kept()
            if final is None:
                for state, data in self._updates(timeout):
                    on_message(self._message(state, data))
            else:
                on_message(self._message(*final))
            assert self._final is not None
            return _final_value(self.id, *self._final, propagate)
        if self._kept() is None:
            self._check_not_on_worker_loop()
            client = self.app.clients.producer
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = _MAX_WAIT if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"task {self.id} not ready after {timeout} s")
                record = client.result_wait(self.id, max(0.001, min(left, _MAX_WAIT)))
                if record is not None:
                    self._decode(record)
                    break
        assert self._final is not None
        return _final_value(self.id, *self._final, propagate)

    def _check_not_on_worker_loop(self) -> None:
        if self.app.clients.worker_on_this_loop() is not None:
            raise RuntimeError(
                "result.get() would block the worker's event loop (and the task it "
                "waits for may need this worker): use 'await result.wait()' in async tasks"
            )

    def iter_progress(
        self, timeout: float | None = None, interval: float | None = None
    ) -> Iterator[tuple[str, Any]]:
        """Yield ``(state, info)`` each time the task reports a new state or
        meta (``update_state``), the final state last; ``info`` is what
        :attr:`info` would be. Does not raise for a failed task (its info is
        the exception); ``TimeoutError`` after ``timeout`` seconds. Pushed by
        the broker; ``interval`` is accepted and ignored, as in :meth:`get`."""
        del interval
        self._check_not_on_worker_loop()
        final = self._kept()
        if final is not None:
            yield final[0], _value_of(*final)
            return
        for state, data in self._updates(timeout):
            yield state, _value_of(state, data)

    async def aiter_progress(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - Celery-style API
        interval: float | None = None,
    ) -> AsyncIterator[tuple[str, Any]]:
        """:meth:`iter_progress` for async code."""
        del interval
        final = self._kept()
        if final is not None:
            yield final[0], _value_of(*final)
            return
        async for state, data in self._aupdates(timeout):
            yield state, _value_of(state, data)

    # --- following (update_state progress, see .progress) -------------------------

    def _message(self, state: str, data: dict[str, Any]) -> dict[str, Any]:
        """Celery's ``on_message`` argument: the task's meta as a map."""
        return {"task_id": self.id, "status": state, "result": _value_of(state, data)}

    def _updates(self, timeout: float | None) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(state, data)`` each time the stored result changes, the final one
        last; ``TimeoutError`` after ``timeout``.

        Each step is one ``ResultWatch`` naming the result last seen: the
        broker answers as soon as another one is stored (at once if that
        already happened), so nothing polls and no lasting state is missed.
        """
        client = self.app.clients.producer
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[str, bytes] | None = None
        while True:
            record = client.result_watch(self.id, _watch_slice(deadline, timeout, self.id), last)
            if record is None or record == last:
                continue
            last = record
            yield self._decode(record)
            if self._final is not None:
                return

    async def _aupdates(self, timeout: float | None) -> AsyncIterator[tuple[str, dict[str, Any]]]:  # noqa: ASYNC109
        """:meth:`_updates` for async code."""
        client = await self.app.clients.async_client()
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[str, bytes] | None = None
        while True:
            left = _watch_slice(deadline, timeout, self.id)
            record = await client.result_watch(self.id, left, last)
            if record is None or record == last:
                continue
            last = record
            yield self._decode(record)
            if self._final is not None:
                return

    async def wait(self, timeout: float | None = None, propagate: bool = True) -> Any:  # noqa: ASYNC109 - Celery-style API
        """``get`` for async code: awaits the broker's push without blocking the loop."""
        if self._kept() is None:
            client = await self.app.clients.async_client()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = _MAX_WAIT if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"task {self.id} not ready after {timeout} s")
                record = await client.result_wait(self.id, max(0.001, min(left, _MAX_WAIT)))
                if record is not None:
                    self._decode(record)
                    break
        assert self._final is not None
        return _final_value(self.id, *self._final, propagate)

    # --- control -------------------------------------------------------------------

    def revoke(self, terminate: bool = False) -> None:
        """Revoke this task: dropped if not started; with ``terminate`` a
        running one is stopped where its pool allows (see docs/tasks.md)."""
        self.app.control.revoke(self.id, terminate=terminate)
        self._final = None

    def forget(self) -> None:
        """Delete this task's result from the broker (``ResultDelete``): its
        state reads PENDING again. A waiter keeps waiting for a final state
        stored later; a task still running stores its result anew."""
        self.app.clients.producer.result_delete([self.id])
        self._final = None

    async def aforget(self) -> None:
        """:meth:`forget` for async code."""
        client = await self.app.clients.async_client()
        await client.result_delete([self.id])
        self._final = None


def _watch_slice(deadline: float | None, timeout: float | None, task_id: str) -> float:
    """The next ResultWatch's timeout (the broker's bound is _MAX_WAIT)."""
    if deadline is None:
        return _MAX_WAIT
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"task {task_id} not ready after {timeout} s")
    return max(0.001, min(left, _MAX_WAIT))


def _value_of(state: str, data: dict[str, Any]) -> Any:
    if state in states.EXCEPTION_STATES:
        return _exception_of(state, data)
    # SUCCESS: the value; a custom state: its meta; PENDING/STARTED: None.
    return data.get("result")


def _exception_of(state: str, data: dict[str, Any]) -> BaseException:
    if state == states.REVOKED and "exc_type" not in data:
        return TaskRevokedError("revoked")
    return rebuild_exception(ExcInfo.from_dict(data))


def _final_value(task_id: str, state: str, data: dict[str, Any], propagate: bool) -> Any:
    if state == states.SUCCESS:
        return data.get("result")
    exc = _exception_of(state, data)
    if state == states.REVOKED and not isinstance(exc, TaskRevokedError):
        revoked = TaskRevokedError(f"task {task_id} was revoked: {exc}")
        revoked.__cause__ = exc
        exc = revoked
    if propagate:
        raise exc
    return exc


class EagerResult(AsyncResult):
    """The result of a task run in-process (``task_always_eager`` or ``apply``);
    the same reading API as :class:`AsyncResult`, with nothing to wait for."""

    def __init__(  # nothing of AsyncResult's broker state applies
        self,
        id: str,
        state: str,
        value: Any = None,
        exception: BaseException | None = None,
        traceback: str | None = None,
    ) -> None:
        self.id = id
        self._final = None
        self._state = state
        self._value = value
        self._exception = exception
        self._traceback = traceback

    @property
    def state(self) -> str:
        return self._state

    @property
    def result(self) -> Any:
        return self._exception if self._exception is not None else self._value

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback

    async def astate(self) -> str:
        return self._state

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Any:
        del timeout, interval
        if on_message is not None:
            on_message({"task_id": self.id, "status": self._state, "result": self.result})
        if self._exception is not None:
            if propagate:
                raise self._exception
            return self._exception
        return self._value

    async def wait(self, timeout: float | None = None, propagate: bool = True) -> Any:  # noqa: ASYNC109
        return self.get(timeout, propagate)

    def revoke(self, terminate: bool = False) -> None:
        """Nothing to revoke: an eager task has already run."""

    def forget(self) -> None:
        """Nothing stored to forget: an eager result lives in this object."""

    async def aforget(self) -> None:
        """Nothing stored to forget."""

    def iter_progress(
        self, timeout: float | None = None, interval: float | None = None
    ) -> Iterator[tuple[str, Any]]:
        yield self._state, self.result

    async def aiter_progress(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - Celery-style API
        interval: float | None = None,
    ) -> AsyncIterator[tuple[str, Any]]:
        yield self._state, self.result
