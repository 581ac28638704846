"""The asyncio client: ``await connect(url)`` and the methods applications call.

Each method turns its arguments into one frame and awaits the reply through
:class:`~brokerd_client.connection.Connection`; the protocol mechanics
(correlation, batching, confirms, heartbeats) live there, so this module reads
like the API reference it is.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import ssl
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack

from brokerd_protocol import (
    MAX_HELLO_FRAME,
    MAX_PREFETCH,
    MAX_RESULT_DELETE_IDS,
    MAX_RESULT_GET_IDS,
    MAX_REVOKE_IDS,
    MAX_SUBSCRIBE_TOPICS,
    SUPPORTED_VERSIONS,
    Bind,
    Consume,
    DeclareExchange,
    DeclareQueue,
    DeleteExchange,
    DeleteQueue,
    Event,
    Frame,
    GroupFire,
    GroupJoin,
    HeaderValue,
    Hello,
    PurgeQueue,
    QueueStats,
    RateAcquire,
    RateSet,
    ResultDelete,
    ResultGet,
    ResultSet,
    ResultWait,
    ResultWatch,
    Revoke,
    ScheduleDelete,
    ScheduleList,
    ScheduleSet,
    Subscribe,
    Unbind,
    encode_payload,
    result_digest,
)

from .connection import FLUSH_THRESHOLD, Connection, PublishBatch
from .consumer import Consumer
from .errors import (
    BrokerError,
    ConnectionLost,
    InvalidArgument,
    MessageTooLarge,
    ProtocolViolation,
)
from .failover import FAILOVER_TIMEOUT, connect_any
from .message import Message, PublishOptions, QueueInfo, build_props, check_body
from .recovery import Recovery
from .tls import client_context
from .url import BrokerURL, parse_url

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AsyncClient", "connect", "connect_unix"]


def _default_client_name() -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return f"{prog}[{os.getpid()}]"


async def connect(
    url: str | BrokerURL = "brokerd://localhost:5673",
    *,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    vhost: str | None = None,
    heartbeat: float = 30.0,
    client_name: str | None = None,
    timeout: float | None = 10.0,  # noqa: ASYNC109 - a connect timeout is public API
    max_inflight: int = 10_000,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    failover_timeout: float | None = None,
    recover: bool | None = None,
) -> AsyncClient:
    """Open a connection to brokerd and return a ready :class:`AsyncClient`.

    A failover URL (``brokerd://h1:5673,h2:5673``, nodes sharing one
    database, docs/ha.md) is tried node by node, following a standby's
    redirect to the active node, with backoff and jitter between rounds, for
    up to ``failover_timeout`` seconds (default 30 for a failover URL; 0, one
    round, for a single node, which still follows one redirect).

    ``recover``: when the connection is lost, reconnect through the URL
    (again for up to ``failover_timeout``, default 30 s), declare again what
    this client declared, consume again, and republish the publishes not
    yet confirmed, so application code sees no ``ConnectionLost``
    (:mod:`brokerd_client.recovery`, docs/ha.md). The default, ``None``,
    turns it on for a failover URL (several nodes) and off for a single
    node, where a lost connection is raised as before; ``True`` turns it on
    for a single node too (a broker restarted in place).

    ``token`` overrides one given in the URL (keeps secrets out of URLs);
    so do ``user`` and ``password`` (a user of the broker, docs/security.md)
    and ``vhost`` (the URL's path; default ``"/"``, docs/vhosts.md).
    ``heartbeat`` is the interval in seconds we ask for (0 disables; the
    broker has the final say). ``timeout`` bounds the TCP connect plus the
    handshakes. ``max_inflight`` caps unconfirmed publishes on this
    connection; publishers wait for confirms beyond it.

    TLS (``brokerds://`` URLs, or any of these options): ``cafile`` is the
    CA that signed the broker's certificate (default: the system's CAs),
    ``certfile``/``keyfile`` a client certificate for brokers that require
    one, ``ssl_context`` a context of your own instead of all three. The
    broker's certificate must name the URL's host (see
    :mod:`brokerd_client.tls`).
    """
    parsed = url if isinstance(url, BrokerURL) else parse_url(url)
    context = client_context(
        parsed, ssl_context=ssl_context, cafile=cafile, certfile=certfile, keyfile=keyfile
    )
    if user is not None or password is not None:
        parsed = replace(
            parsed,
            user=user if user is not None else parsed.user,
            password=password if password is not None else parsed.password,
        )
    if vhost is not None:
        parsed = replace(parsed, vhost=vhost)

    async def open_node(node: BrokerURL) -> Connection:
        return await _open_conn(
            node, token, heartbeat, client_name, timeout, max_inflight, None, context
        )

    if failover_timeout is None:
        failover_timeout = FAILOVER_TIMEOUT if parsed.alternates else 0.0
    nodes = parsed.candidates()
    conn = await connect_any(nodes, open_node, failover_timeout)
    client = AsyncClient(conn, parsed)
    if recover is None:
        recover = bool(parsed.alternates)
    if recover:
        client._recovery = recovery = Recovery(
            client, nodes, open_node, failover_timeout or FAILOVER_TIMEOUT
        )
        recovery.attach(conn)
    return client


async def connect_unix(
    path: str,
    *,
    heartbeat: float = 30.0,
    client_name: str | None = None,
    timeout: float | None = 10.0,  # noqa: ASYNC109 - a connect timeout is public API
    user: str | None = None,
    password: str | None = None,
    vhost: str = "/",
) -> AsyncClient:
    """Connect to a broker's control socket (``<data-dir>/brokerd.sock``).

    The broker trusts whoever can open that file (mode 0600: its own OS user)
    as an administrator, without a token. This is how brokerctl talks to a
    local broker; applications use :func:`connect`. With ``user`` and
    ``password`` the broker checks them and the connection has that user's
    rights only (brokerctl's ``authenticate_user``).
    """
    url = BrokerURL(host="localhost", user=user, password=password, vhost=vhost)
    conn = await _open_conn(url, None, heartbeat, client_name, timeout, 10_000, path, None)
    return AsyncClient(conn, url)


async def _open_conn(
    parsed: BrokerURL,
    token: str | None,
    heartbeat: float,
    client_name: str | None,
    timeout: float | None,  # noqa: ASYNC109 - passed on from connect()
    max_inflight: int,
    unix_path: str | None,
    context: ssl.SSLContext | None,
) -> Connection:
    if heartbeat < 0:
        raise ValueError("heartbeat must be >= 0 (0 disables heartbeats)")
    hello = Hello(
        versions=list(SUPPORTED_VERSIONS),
        token=token if token is not None else parsed.token,
        client_name=client_name if client_name is not None else _default_client_name(),
        heartbeat=float(heartbeat),
        user=parsed.user,
        password=parsed.password,
        vhost=parsed.vhost,
    )
    size = len(encode_payload(hello))
    if size > MAX_HELLO_FRAME:
        raise ValueError(
            f"the Hello (credentials and client_name) takes {size} bytes; brokerd reads at most "
            f"{MAX_HELLO_FRAME} bytes before the handshake"
        )
    conn = await Connection.open(
        parsed.host,
        parsed.port,
        hello,
        timeout=timeout,
        max_inflight=max_inflight,
        unix_path=unix_path,
        ssl_context=context,
    )
    return conn


class AsyncClient:
    """A connected client. Create it with :func:`connect`; use it from the
    event loop that created it. Methods may be called concurrently from many
    tasks; their frames share socket writes."""

    def __init__(self, conn: Connection, url: BrokerURL) -> None:
        self._conn = conn
        self.url = url
        #: Set by ``connect(..., recover=True)``: replaces a lost connection.
        self._recovery: Recovery | None = None

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open"
        return f"<AsyncClient {self.url} {state}>"

    @property
    def server_name(self) -> str:
        return self._conn.server_name

    async def wait_closed(self) -> BrokerError:
        """Wait until the connection has ended (the broker closed it, or it
        was lost) and return why, as the error calls in flight failed with.
        A client that recovers waits until it gives up (or is closed)."""
        while True:
            conn = self._conn
            error = await conn.wait_lost()
            recovery = self._recovery
            if recovery is None:
                return error
            try:
                await recovery.current(conn)
            except BrokerError as exc:
                return exc

    @property
    def recovering(self) -> bool:
        """True while a lost connection is being replaced (``recover``)."""
        return self._recovery is not None and self._recovery.recovering

    @property
    def recoveries(self) -> int:
        """How many times a lost connection was replaced."""
        return 0 if self._recovery is None else self._recovery.recoveries

    @property
    def heartbeat(self) -> float:
        """The negotiated heartbeat interval in seconds (0 = disabled)."""
        return self._conn.heartbeat

    @property
    def max_frame(self) -> int:
        """Largest frame payload the broker accepts; bounds message size."""
        return self._conn.max_frame

    @property
    def is_closed(self) -> bool:
        """True once the client cannot be used any more; not while it
        replaces a lost connection (``recover``)."""
        if not self._conn.is_closed:
            return False
        return not self.recovering

    @property
    def inflight(self) -> int:
        """Publishes sent and not yet confirmed."""
        return self._conn.inflight

    async def close(self) -> None:
        """Close the connection. Calls still in flight fail with ``ClientClosed``."""
        if self._recovery is not None:
            await self._recovery.close()
        await self._conn.close()

    async def _ready(self, conn: Connection) -> Connection:
        """Wait until a publisher may send (room in the window, the socket
        drained), on ``conn`` or, while recovering, on the connection that
        replaces it; the connection to publish on."""
        while True:
            try:
                await conn.wait_ready()
                return conn
            except ConnectionLost:
                if self._recovery is None:
                    raise
                conn = await self._recovery.current(conn)

    async def _request(
        self, make: Callable[[int], Frame], *, retry: bool, sink: Consumer | None = None
    ) -> Any:
        """Send ``make(req)``, and await its Ok value. While the client
        recovers, the request waits and goes on the new connection. One in
        flight when its connection is lost is sent again on the next if
        ``retry`` (sending it twice does no harm), else raises
        ``ConnectionLost`` (recovery.py says which are which)."""
        conn = self._conn
        recovery = self._recovery
        if recovery is None:
            return await conn.request(make, sink)
        if conn.is_closed:
            conn = await recovery.current(conn)
        if sink is not None:
            sink._resume(conn)
        try:
            return await conn.request(make, sink)
        except ConnectionLost:
            if not retry or not conn.is_closed:
                raise
        conn = await recovery.current(conn)
        if sink is not None:
            sink._resume(conn)
        return await conn.request(make, sink)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- topology ------------------------------------------------------------

    async def declare_exchange(self, name: str, type: str = "direct", durable: bool = True) -> None:
        """Create an exchange, or check that an existing one matches.

        ``type`` is ``"direct"``, ``"topic"`` or ``"fanout"``; the broker
        validates it (``InvalidArgument``), so a newer broker's types work.
        """

        def make(req: int) -> Frame:
            return DeclareExchange(req, name, type, durable)

        await self._request(make, retry=True)
        if self._recovery is not None:
            self._recovery.remember(("x", name), make)

    async def delete_exchange(self, name: str) -> None:
        await self._request(lambda req: DeleteExchange(req, name), retry=False)
        if self._recovery is not None:
            self._recovery.forget(
                lambda k: (k[0] == "x" and k[1] == name) or (k[0] == "b" and k[2] == name)
            )

    async def declare_queue(
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
        """Create a queue, or check that an existing one matches.

        ``lease`` is the default visibility timeout of its deliveries;
        past ``max_deliveries`` a message moves to ``dead_letter_queue``;
        at ``max_length`` new publishes are refused (``overflow=
        "reject_publish"``, the default) or handled as the broker's other
        ``overflow`` policies say. ``auto_delete``: the broker deletes the
        queue when its last consumer goes (once it has had one); ``expires``:
        after that many seconds unused (no consumer, no declare, no stats).
        ``max_priority`` (1-255, RabbitMQ's ``x-max-priority``): a publish
        with a higher priority enters this queue at it. Options are validated
        by the broker.
        """
        options: dict[str, Any] = {"lease": float(lease), "overflow": overflow}
        if max_deliveries is not None:
            options["max_deliveries"] = max_deliveries
        if dead_letter_queue is not None:
            options["dead_letter_queue"] = dead_letter_queue
        if max_length is not None:
            options["max_length"] = max_length
        if message_ttl is not None:
            options["message_ttl"] = float(message_ttl)
        if auto_delete:
            options["auto_delete"] = True
        if expires is not None:
            options["expires"] = float(expires)
        if max_priority is not None:
            options["max_priority"] = max_priority

        def make(req: int) -> Frame:
            return DeclareQueue(req, name, durable, options)

        await self._request(make, retry=True)
        if self._recovery is not None:
            self._recovery.remember(("q", name), make)

    async def delete_queue(self, name: str) -> int:
        """Delete a queue and its messages; its consumers are cancelled.

        Returns the number of ready and delayed messages discarded with it.
        """
        value = await self._request(lambda req: DeleteQueue(req, name), retry=False)
        if self._recovery is not None:
            self._recovery.forget(lambda k: k[0] in "qb" and k[1] == name)
        return value if type(value) is int else 0

    async def purge_queue(self, name: str) -> int:
        """Drop the queue's ready messages; return how many were dropped."""
        value = await self._request(lambda req: PurgeQueue(req, name), retry=False)
        if type(value) is not int:
            raise ProtocolViolation(f"PurgeQueue answered with {value!r}, expected a count")
        return value

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        def make(req: int) -> Frame:
            return Bind(req, queue, exchange, routing_key)

        await self._request(make, retry=True)
        if self._recovery is not None:
            self._recovery.remember(("b", queue, exchange, routing_key), make)

    async def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._request(lambda req: Unbind(req, queue, exchange, routing_key), retry=True)
        if self._recovery is not None:
            key = ("b", queue, exchange, routing_key)
            self._recovery.forget(lambda k: k == key)

    async def queue_stats(self, name: str) -> QueueInfo:
        value = await self._request(lambda req: QueueStats(req, name), retry=True)
        try:
            return QueueInfo(
                ready=_count(value["ready"]),
                leased=_count(value["leased"]),
                delayed=_count(value["delayed"]),
                consumers=_count(value["consumers"]),
            )
        except (KeyError, TypeError):
            raise ProtocolViolation(f"QueueStats answered with {value!r}") from None

    # --- publishing ----------------------------------------------------------

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, **options: Unpack[PublishOptions]
    ) -> bool:
        """Publish one message and wait for the broker's confirm.

        ``options`` are those of :class:`Message` (``headers``, ``delay``,
        ``priority``, ``ttl``, ``message_id``, ``mandatory``, ``not_before``);
        this is ``publish_message(Message(exchange, routing_key, body, **options))``.

        Returns ``True`` once it is durably stored in at least one queue,
        ``False`` if it routed to no queue (and ``mandatory`` was not set).
        Raises the typed error if the broker refused it (``QueueFull``,
        ``Unroutable`` for mandatory, ...), or ``ConnectionLost``, after which
        the message may or may not have been stored.

        Concurrent publishes from many tasks are pipelined and share socket
        writes; use :meth:`publish_many` for bulk loads from one task.
        """
        return await self.publish_message(Message(exchange, routing_key, body, **options))

    async def publish_message(self, message: Message) -> bool:
        """Publish ``message`` and wait for the broker's confirm; see :meth:`publish`."""
        body = check_body(message.body)
        props = message.props()
        conn = self._conn
        if conn.must_wait():
            conn = await self._ready(conn)
        fut = conn.publish(message.exchange, message.routing_key, body, props)
        assert fut is not None
        return await fut

    async def publish_many(
        self, messages: Iterable[Message | tuple[str, str, bytes]]
    ) -> list[bool]:
        """Publish many messages pipelined; wait for all confirms.

        ``messages`` is any iterable (a generator is fine: it is consumed
        lazily, so a million messages do not sit in memory at once) of
        :class:`Message` or ``(exchange, routing_key, body)`` tuples.

        Returns one bool per message, in order, as :meth:`publish` would. If
        any message failed, raises the first failure *after* all the others
        settled, with ``exc.results`` holding every outcome (bools and
        exceptions) so exactly the failed ones can be retried. A malformed
        message (a ``str`` body, a bad priority, one larger than the broker's
        ``max_frame``: :class:`MessageTooLarge`) raises ``TypeError`` /
        ``ValueError`` at once; messages before it are still sent.
        """
        conn = self._conn
        batch = PublishBatch(asyncio.get_running_loop())
        failure: BrokerError | None = None
        try:
            for msg in messages:
                if type(msg) is tuple and len(msg) == 3:
                    exchange, routing_key, body = msg
                    props: dict[str, Any] = {}
                elif isinstance(msg, Message):
                    exchange, routing_key, body = msg.exchange, msg.routing_key, msg.body
                    props = msg.props()
                elif isinstance(msg, tuple) and len(msg) == 3:
                    exchange, routing_key, body = msg
                    props = {}
                else:
                    raise TypeError(
                        f"publish_many takes Message objects or (exchange, routing_key, body) "
                        f"tuples, not {type(msg).__name__}"
                    )
                body = check_body(body)
                if conn.must_wait():
                    conn = await self._ready(conn)
                conn.publish(exchange, routing_key, body, props, batch)
                if conn.wbuf_bytes >= FLUSH_THRESHOLD:
                    conn.flush()
        except MessageTooLarge:
            raise  # a bad message, like a str body: at once, the others stay sent
        except BrokerError as exc:
            # The connection ended mid-way; everything sent has already been
            # failed by the connection. Report it like any other failure.
            failure = exc
        finally:
            batch.seal()
        await asyncio.shield(batch.done)
        results = batch.results
        for outcome in results:
            if isinstance(outcome, BrokerError):
                failure = outcome
                break
        if failure is not None:
            # A copy: the original may be shared by many calls (a lost
            # connection fails them all with one instance).
            raised = copy.copy(failure)
            raised.results = results
            raise raised.with_traceback(None) from failure.__cause__
        return results  # type: ignore[return-value]  # no BrokerError left in it

    # --- extension point (task layer) ----------------------------------------

    async def call(self, make: Callable[[int], Frame]) -> Any:
        """Send a request frame built by ``make(req)`` and return its Ok value.

        For protocol extensions such as the task layer's result and schedule
        frames: they get request ids, correlation, typed errors and
        connection-loss handling from the same machinery as built-in requests.
        While a recovering client replaces its connection the request waits
        for the new one; one in flight when the connection was lost raises
        ``ConnectionLost`` (what it was is not known here, so it is not sent
        twice).
        """
        return await self._request(make, retry=False)

    def set_frame_handler(
        self, frame_type: type[Frame], handler: Callable[[Any], None] | None
    ) -> None:
        """Receive pushed extension frames (e.g. task-layer ``Event``) of
        ``frame_type``; ``handler`` runs on the loop as each frame is read and
        must not block. ``None`` removes the handler."""
        self._conn.set_frame_handler(frame_type, handler)

    # --- task layer (results, revocation, schedules; SPEC §14) ---------------

    def result_set(
        self,
        task_id: str,
        state: str,
        payload: bytes = b"",
        ttl: float = 86_400.0,
        *,
        keep_final: bool = False,
    ) -> asyncio.Future[Any]:
        """Store a task's ``state`` and opaque ``payload`` for ``ttl`` seconds.

        ``keep_final``: store it only if the task has no final state stored
        (SPEC §14.2; the worker sets it for the final state of a redelivered
        run, so the first run's result wins).

        Returns the future of the broker's Ok (await it to know the state is
        committed). A plain method, not a coroutine, so a worker recording
        thousands of results per second needs no coroutine per result.
        """
        ttl_f = float(ttl)

        def make(req: int) -> Frame:
            return ResultSet(req, task_id, state, payload, ttl_f, keep_final)

        if self._recovery is None:
            return self._conn.request(make)
        return asyncio.ensure_future(self._request(make, retry=True))

    async def result_get(self, task_ids: Iterable[str]) -> dict[str, tuple[str, bytes]]:
        """``{task_id: (state, payload)}`` for the ids the broker knows.

        Any number of ids: they are asked for ``MAX_RESULT_GET_IDS`` (SPEC §13) at a time,
        and a batch whose results would not fit in one reply frame (the
        broker answers ``InvalidArgument``, SPEC §14.3) is asked for again in
        halves; one result always fits.
        """
        ids = list(dict.fromkeys(task_ids))
        found: dict[str, tuple[str, bytes]] = {}
        for i in range(0, len(ids), MAX_RESULT_GET_IDS):
            await self._result_get(ids[i : i + MAX_RESULT_GET_IDS], found)
        return found

    async def _result_get(self, ids: list[str], found: dict[str, tuple[str, bytes]]) -> None:
        try:
            value = await self._request(lambda req: ResultGet(req, ids), retry=True)
        except (InvalidArgument, MessageTooLarge):  # the reply, or the ids, too large
            if len(ids) < 2:
                raise
            half = len(ids) // 2
            await self._result_get(ids[:half], found)
            await self._result_get(ids[half:], found)
            return
        if not isinstance(value, dict):
            raise ProtocolViolation(f"ResultGet answered with {value!r}")
        for k, v in value.items():
            found[k] = (v[0], v[1])

    async def result_wait(
        self,
        task_id: str,
        timeout: float,  # noqa: ASYNC109 - the broker's wait bound, sent on the wire
    ) -> tuple[str, bytes] | None:
        """Wait until ``task_id`` reaches a final state; ``(state, payload)``,
        or ``None`` if ``timeout`` seconds pass first. The broker pushes the
        answer: nothing polls."""
        value = await self._request(
            lambda req: ResultWait(req, task_id, float(timeout)), retry=True
        )
        if value is None:
            return None
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ProtocolViolation(f"ResultWait answered with {value!r}")
        return value[0], value[1]

    async def result_watch(
        self,
        task_id: str,
        timeout: float,  # noqa: ASYNC109 - the broker's wait bound, sent on the wire
        known: tuple[str, bytes] | None = None,
    ) -> tuple[str, bytes] | None:
        """Wait until ``task_id``'s stored result is final or differs from
        ``known`` (the ``(state, payload)`` last seen; None: nothing seen),
        whatever its state; ``(state, payload)``, or ``None`` after
        ``timeout`` seconds. Pushed by the broker (SPEC §14.16): how progress
        states are followed without polling."""
        digest = result_digest(*known) if known is not None else b""
        value = await self._request(
            lambda req: ResultWatch(req, task_id, float(timeout), digest), retry=True
        )
        if value is None:
            return None
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ProtocolViolation(f"ResultWatch answered with {value!r}")
        return value[0], value[1]

    async def result_delete(self, task_ids: Iterable[str]) -> int:
        """Forget the results of ``task_ids``; the number of results there were.

        Any number of ids: ``MAX_RESULT_DELETE_IDS`` (SPEC §13) per frame, sent
        together; if one of them fails the others may have taken effect
        (deleting again is harmless). Waiters of a deleted task keep waiting."""
        values = await self._requests(ResultDelete, list(task_ids), MAX_RESULT_DELETE_IDS)
        try:
            return sum(_count(v) for v in values)
        except TypeError:
            raise ProtocolViolation(f"ResultDelete answered with {values!r}") from None

    async def group_join(
        self, group_id: str, member_id: str, size: int, *, ttl: float = 86_400.0
    ) -> tuple[int, bool]:
        """Add ``member_id`` to the group ``group_id`` of ``size`` members.

        Returns ``(joined, complete)``: the distinct members so far, and
        whether this member is the one that completed the group (true again
        for its later joins until the group is fired, SPEC §14)."""
        value = await self._request(
            lambda req: GroupJoin(req, group_id, member_id, size, float(ttl)), retry=True
        )
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or type(value[0]) is not int
            or type(value[1]) is not bool
        ):
            raise ProtocolViolation(f"GroupJoin answered with {value!r}")
        return value[0], value[1]

    async def group_fire(self, group_id: str, message: Message) -> bool:
        """Publish ``message`` once for the group: the broker publishes it and
        marks the group fired in one commit. True if this call published it,
        False if the group had already fired (nothing published). A refused
        publish raises as :meth:`publish` would and leaves the group unfired."""
        body = check_body(message.body)
        props = message.props()
        value = await self._request(
            lambda req: GroupFire(
                req, group_id, message.exchange, message.routing_key, body, props
            ),
            retry=True,
        )
        if type(value) is not bool:
            raise ProtocolViolation(f"GroupFire answered with {value!r}")
        return value

    async def rate_acquire(self, name: str, rate: float = 0.0) -> float:
        """Take the next slot of ``name``'s rate limit, kept by the broker for
        every client: the seconds to wait before using it (0.0: now).
        ``rate`` is this caller's own limit per second (0: none); a limit
        set with ``rate_set`` wins over it (SPEC §14.14)."""
        value = await self._request(lambda req: RateAcquire(req, name, float(rate)), retry=False)
        if type(value) is not float and type(value) is not int:
            raise ProtocolViolation(f"RateAcquire answered with {value!r}")
        return float(value)

    async def rate_set(self, name: str, rate: float | None) -> None:
        """Set (per second) or clear (None) the broker's own rate limit for
        ``name``; subscribed workers hear of it (SPEC §14.15)."""
        limit = None if rate is None else float(rate)
        await self._request(lambda req: RateSet(req, name, limit), retry=True)

    async def revoke(
        self, task_ids: Iterable[str], *, terminate: bool = False, ttl: float = 86_400.0
    ) -> None:
        """Revoke tasks (matched by message id) for ``ttl`` seconds; with
        ``terminate`` subscribed workers are told to stop running ones.

        More ids than one Revoke may carry (SPEC §13) go out in several frames,
        sent together; if one of them fails the others may have taken effect
        (revoking again is harmless)."""
        await self._requests(
            lambda req, ids: Revoke(req, ids, terminate, float(ttl)),
            list(task_ids),
            MAX_REVOKE_IDS,
            retry=True,
        )

    async def _requests(
        self,
        make: Callable[[int, list[str]], Frame],
        ids: list[str],
        cap: int,
        *,
        retry: bool = False,
    ) -> list[Any]:
        """One request per ``cap`` ids (at least one), pipelined; their Ok
        values in order, or the first error once all have answered. With
        ``retry``, all are sent again once on a recovered connection if it
        was lost meanwhile (as :meth:`_request`)."""
        chunks = [ids[i : i + cap] for i in range(0, len(ids), cap)] or [[]]
        recovery = self._recovery
        while True:
            conn = self._conn
            if recovery is not None and conn.is_closed:
                conn = await recovery.current(conn)
            futs = [conn.request(functools.partial(_chunk_frame, make, chunk)) for chunk in chunks]
            values = await asyncio.gather(*futs, return_exceptions=True)
            lost = any(isinstance(v, ConnectionLost) for v in values) and conn.is_closed
            if lost and retry and recovery is not None:
                retry = False
                continue
            for value in values:
                if isinstance(value, BaseException):
                    raise value
            return values

    async def subscribe(self, topics: Iterable[str], handler: Callable[[Event], None]) -> Any:
        """Receive ``Event`` frames for ``topics`` in ``handler`` (on the loop,
        must not block); returns the broker's Ok value (for ``"revoke"``:
        ``{"revoked": [ids]}``, what was revoked before we subscribed)."""
        names = list(topics)
        if len(names) > MAX_SUBSCRIBE_TOPICS:
            raise ValueError(f"at most {MAX_SUBSCRIBE_TOPICS} topics per subscribe")
        if self._recovery is not None and self._conn.is_closed:
            await self._recovery.current(self._conn)
        self._conn.set_frame_handler(Event, handler)
        value = await self._request(lambda req: Subscribe(req, names), retry=True)
        if self._recovery is not None:
            self._recovery.subscribed(names)
        return value

    async def schedule_set(
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
        """Create or replace the periodic publish ``name`` kept and fired by
        the broker. ``spec`` is ``"every <seconds>"`` or ``"cron m h dom mon
        dow"`` (UTC). Re-declaring an identical schedule changes nothing."""
        props = build_props(headers=headers, priority=priority, ttl=ttl)
        body = check_body(body)
        return await self._request(
            lambda req: ScheduleSet(req, name, spec, exchange, routing_key, body, props),
            retry=True,
        )

    async def schedule_delete(self, name: str) -> None:
        await self._request(lambda req: ScheduleDelete(req, name), retry=False)

    async def schedule_list(self) -> list[dict[str, Any]]:
        """Every schedule: ``name, spec, exchange, routing_key, next_run, last_run``."""
        value = await self._request(ScheduleList, retry=True)
        if not isinstance(value, list):
            raise ProtocolViolation(f"ScheduleList answered with {value!r}")
        return value

    # --- consuming -----------------------------------------------------------

    async def consume(self, queue: str, prefetch: int = 10, lease: float | None = None) -> Consumer:
        """Start receiving from ``queue``; iterate the returned :class:`Consumer`.

        ``prefetch`` caps unacked deliveries held by this consumer (1 really
        means one; at most ``MAX_PREFETCH``, SPEC §13). ``lease`` overrides the
        queue's lease for its deliveries.
        """
        if type(prefetch) is not int or not 1 <= prefetch <= MAX_PREFETCH:
            raise ValueError(f"prefetch must be between 1 and {MAX_PREFETCH}, got {prefetch!r}")
        if lease is not None and not lease > 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease!r}")
        consumer = Consumer(self._conn, queue, prefetch, lease)
        lease_f = None if lease is None else float(lease)
        consumer_id = await self._request(
            lambda req: Consume(req, queue, prefetch, lease_f), retry=True, sink=consumer
        )
        consumer.consumer_id = consumer_id
        return consumer


def _count(value: Any) -> int:
    if type(value) is not int:
        raise TypeError
    return value


def _chunk_frame(make: Callable[[int, list[str]], Frame], ids: list[str], req: int) -> Frame:
    return make(req, ids)
