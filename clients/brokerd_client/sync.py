"""The blocking, thread-safe client for code without an event loop (Flask,
Django, scripts, and the task layer's ``.delay()``).

It is a thin shell around :class:`~brokerd_client.client.AsyncClient`: a
private event loop runs in a daemon thread and every method submits a
coroutine to it with ``asyncio.run_coroutine_threadsafe`` and waits for the
result. So there is exactly one implementation of the protocol, and calls
from many threads are pipelined on one connection (their frames even share
socket writes) instead of serialising behind a lock.

The connection is opened lazily on first use and reopened on the next call
after it was lost, because web processes live long and brokers restart. A
call that fails because the connection dropped still raises
``ConnectionLost``: only the caller knows whether retrying is safe. With a
failover URL (``brokerd://h1,h2``) the async client underneath recovers by
itself (:mod:`brokerd_client.recovery`): calls wait for the standby instead,
unconfirmed publishes are sent again, and only requests that are not safe
to send twice raise ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

from brokerd_protocol import Frame, HeaderValue

from .client import AsyncClient, connect
from .errors import ClientClosed
from .message import Message, PublishOptions, QueueInfo
from .tls import client_context
from .url import BrokerURL, parse_url

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Client"]

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class Client:
    """A blocking brokerd client, safe to share between threads.

    ``timeout`` bounds every call (seconds; ``None`` waits forever) and raises
    ``TimeoutError`` when exceeded. Other keywords are those of
    :func:`brokerd_client.connect` (TLS: ``brokerds://`` URLs and
    ``ssl_context``/``cafile``/``certfile``/``keyfile``; ``recover``, on by
    default for a failover URL).
    """

    def __init__(
        self,
        url: str | BrokerURL = "brokerd://localhost:5673",
        *,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        vhost: str | None = None,
        heartbeat: float = 30.0,
        client_name: str | None = None,
        connect_timeout: float | None = 10.0,
        timeout: float | None = 30.0,
        max_inflight: int = 10_000,
        ssl_context: ssl.SSLContext | None = None,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        recover: bool | None = None,
    ) -> None:
        # Parse now so a bad URL (or TLS file) fails where the client is configured.
        self.url = url if isinstance(url, BrokerURL) else parse_url(url)
        self.timeout = timeout
        self._connect_kwargs: dict[str, Any] = {
            "token": token,
            "user": user,
            "password": password,
            "vhost": vhost,
            "heartbeat": heartbeat,
            "client_name": client_name,
            "timeout": connect_timeout,
            "max_inflight": max_inflight,
            "recover": recover,
            # One context for every reconnect.
            "ssl_context": client_context(
                self.url, ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile
            ),
        }
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: AsyncClient | None = None
        self._connecting: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"<Client {self.url}{' closed' if self._closed else ''}>"

    # --- the background loop ---------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise ClientClosed("the client was closed")
            if self._pid != os.getpid():
                # We are in a forked child: the parent's loop thread does not
                # exist here and its socket is shared with the parent. Start
                # afresh rather than corrupt the parent's connection.
                self._pid = os.getpid()
                self._loop = self._thread = self._client = self._connecting = None
            if self._loop is None:
                loop = _new_loop()
                thread = threading.Thread(
                    target=self._run_loop, args=(loop,), name="brokerd-client", daemon=True
                )
                self._loop, self._thread = loop, thread
                thread.start()
            return self._loop

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def _call(self, make: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        try:
            loop = self._ensure_loop()
        except BaseException:
            make.close()  # never scheduled; avoid "coroutine was never awaited"
            raise
        if self._thread is threading.current_thread():
            make.close()
            raise RuntimeError("brokerd_client.Client cannot be called from its own loop thread")
        future = asyncio.run_coroutine_threadsafe(make, loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def _connected(self) -> AsyncClient:
        """The live async client, (re)connecting if there is none. Runs on the loop."""
        client = self._client
        if client is not None and not client.is_closed:
            return client
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            client = self._client
            if client is None or client.is_closed:
                if client is not None:
                    await client.close()
                client = self._client = await connect(self.url, **self._connect_kwargs)
            return client

    def _run(self, op: Callable[[AsyncClient], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``op(async_client)`` on the loop thread and wait for its result."""

        async def run() -> T:
            return await op(await self._connected())

        return self._call(run(), timeout)

    def run_async(
        self, op: Callable[[AsyncClient], Awaitable[T]], timeout: float | None = None
    ) -> T:
        """Run ``op(async_client)`` on this client's loop thread and wait for
        it: for code written against :class:`AsyncClient` (inspect, control)."""
        return self._run(op, timeout)

    # --- lifecycle -----------------------------------------------------------

    def connect(self) -> None:
        """Connect now instead of on first use (to fail fast at startup)."""
        self._call(self._connected())

    def close(self) -> None:
        """Close the connection and stop the background thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            if self._pid != os.getpid():
                return  # a forked child: the loop belongs to the parent
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._client is not None:
                await self._client.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10.0)
        except Exception:  # noqa: S110 - closing must not fail the caller
            pass
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)
            if not thread.is_alive():
                loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the API (mirrors AsyncClient) ---------------------------------------

    def declare_exchange(self, name: str, type: str = "direct", durable: bool = True) -> None:
        self._run(lambda c: c.declare_exchange(name, type, durable))

    def delete_exchange(self, name: str) -> None:
        self._run(lambda c: c.delete_exchange(name))

    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        *,
        lease: float = 30.0,
        max_deliveries: int | None = None,
        dead_letter_queue: str | None = None,
        max_length: int | None = None,
        overflow: str = "reject_publish",
        message_ttl: float | None = None,
        auto_delete: bool = False,
        expires: float | None = None,
        max_priority: int | None = None,
    ) -> None:
        self._run(
            lambda c: c.declare_queue(
                name,
                durable,
                lease=lease,
                max_deliveries=max_deliveries,
                dead_letter_queue=dead_letter_queue,
                max_length=max_length,
                overflow=overflow,
                message_ttl=message_ttl,
                auto_delete=auto_delete,
                expires=expires,
                max_priority=max_priority,
            )
        )

    def delete_queue(self, name: str) -> int:
        return self._run(lambda c: c.delete_queue(name))

    def purge_queue(self, name: str) -> int:
        return self._run(lambda c: c.purge_queue(name))

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self._run(lambda c: c.bind(queue, exchange, routing_key))

    def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        self._run(lambda c: c.unbind(queue, exchange, routing_key))

    def queue_stats(self, name: str) -> QueueInfo:
        return self._run(lambda c: c.queue_stats(name))

    def publish(
        self, exchange: str, routing_key: str, body: bytes, **options: Unpack[PublishOptions]
    ) -> bool:
        """Publish and wait for the confirm; see ``AsyncClient.publish``."""
        return self.publish_message(Message(exchange, routing_key, body, **options))

    def publish_message(self, message: Message) -> bool:
        """Publish ``message`` and wait for the confirm; see ``AsyncClient.publish``."""
        return self._run(lambda c: c.publish_message(message))

    def call(self, make: Callable[[int], Frame], *, timeout: float | None = None) -> Any:
        """Send an extension request frame; see ``AsyncClient.call``."""
        return self._run(lambda c: c.call(make), timeout)

    def publish_many(
        self,
        messages: Iterable[Message | tuple[str, str, bytes]],
        *,
        timeout: float | None = None,
    ) -> list[bool]:
        """Pipeline many publishes; see ``AsyncClient.publish_many``.

        The iterable is consumed on the client's loop thread, so a generator
        passed here must not depend on thread-local state. ``timeout``
        overrides the client's per-call timeout (bulk loads take longer).
        """
        return self._run(lambda c: c.publish_many(messages), timeout)

    # --- task layer (see the AsyncClient methods of the same names) -----------

    def publish_nowait(
        self, exchange: str, routing_key: str, body: bytes, **options: Unpack[PublishOptions]
    ) -> concurrent.futures.Future[bool]:
        """Hand a publish to the loop thread and return at once.

        The returned future resolves to the confirm (or raises as ``publish``
        would); callers that may not wait (``apply_async(wait_confirm=False)``)
        can still check it later.
        """
        return self.publish_message_nowait(Message(exchange, routing_key, body, **options))

    def publish_message_nowait(self, message: Message) -> concurrent.futures.Future[bool]:
        """:meth:`publish_nowait` for a :class:`Message`."""

        async def run() -> bool:
            client = await self._connected()
            return await client.publish_message(message)

        coro = run()
        try:
            loop = self._ensure_loop()
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def result_set(
        self,
        task_id: str,
        state: str,
        payload: bytes = b"",
        ttl: float = 86_400.0,
        *,
        keep_final: bool = False,
    ) -> None:
        async def op(c: AsyncClient) -> None:
            await c.result_set(task_id, state, payload, ttl, keep_final=keep_final)

        self._run(op)

    def result_get(self, task_ids: Iterable[str]) -> dict[str, tuple[str, bytes]]:
        ids = list(task_ids)
        return self._run(lambda c: c.result_get(ids))

    def result_wait(self, task_id: str, timeout: float) -> tuple[str, bytes] | None:
        """Block until a final state or ``timeout`` seconds (then ``None``)."""
        # The call itself must outlive the broker-side wait.
        return self._run(lambda c: c.result_wait(task_id, timeout), timeout + 30.0)

    def result_watch(
        self, task_id: str, timeout: float, known: tuple[str, bytes] | None = None
    ) -> tuple[str, bytes] | None:
        """Block until the result is final or not ``known`` (``AsyncClient.result_watch``)."""
        return self._run(lambda c: c.result_watch(task_id, timeout, known), timeout + 30.0)

    def result_delete(self, task_ids: Iterable[str]) -> int:
        """Forget results; the number there were (see ``AsyncClient.result_delete``)."""
        ids = list(task_ids)
        return self._run(lambda c: c.result_delete(ids))

    def group_join(
        self, group_id: str, member_id: str, size: int, *, ttl: float = 86_400.0
    ) -> tuple[int, bool]:
        """``(joined, complete)``; see ``AsyncClient.group_join``."""
        return self._run(lambda c: c.group_join(group_id, member_id, size, ttl=ttl))

    def group_fire(self, group_id: str, message: Message) -> bool:
        """Publish ``message`` once for the group; see ``AsyncClient.group_fire``."""
        return self._run(lambda c: c.group_fire(group_id, message))

    def rate_set(self, name: str, rate: float | None) -> None:
        """Set or clear the broker's own rate limit; see ``AsyncClient.rate_set``."""
        self._run(lambda c: c.rate_set(name, rate))

    def revoke(
        self, task_ids: Iterable[str], *, terminate: bool = False, ttl: float = 86_400.0
    ) -> None:
        ids = list(task_ids)
        self._run(lambda c: c.revoke(ids, terminate=terminate, ttl=ttl))

    def schedule_set(
        self,
        name: str,
        spec: str,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, HeaderValue] | None = None,
        priority: int = 0,
        ttl: float | None = None,
    ) -> Any:
        return self._run(
            lambda c: c.schedule_set(
                name, spec, exchange, routing_key, body, headers=headers, priority=priority, ttl=ttl
            )
        )

    def schedule_delete(self, name: str) -> None:
        self._run(lambda c: c.schedule_delete(name))

    def schedule_list(self) -> list[dict[str, Any]]:
        return self._run(lambda c: c.schedule_list())
