"""Every frame of brokerd protocol version 1, as frozen slotted dataclasses.

A frame travels as a msgpack array ``[type_code, field1, field2, ...]`` in the
order the dataclass declares its fields. Keeping the field order in one place
(the dataclass) lets the codec encode and validate every frame type with one
table instead of a hand-written function per type.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

HeaderValue = str | int | float | bool | bytes | None
Headers = dict[str, HeaderValue]


@dataclass(frozen=True, slots=True)
class Frame:
    """Base class; ``TYPE`` is the code that leads the frame on the wire."""

    TYPE: ClassVar[int] = 0


# --- connection ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Frame):
    """First frame a client sends: the versions it speaks and its credentials
    (the broker's shared ``token``, or a ``user`` and its ``password``), and
    the ``vhost`` the connection works in (SPEC §6.6)."""

    TYPE: ClassVar[int] = 1
    versions: list[int]
    token: str | None = None
    client_name: str = ""
    heartbeat: float = 30.0
    user: str | None = None
    password: str | None = None
    vhost: str = "/"


@dataclass(frozen=True, slots=True)
class Welcome(Frame):
    """The server's answer to Hello: the chosen version and connection limits."""

    TYPE: ClassVar[int] = 2
    version: int
    server_name: str
    heartbeat: float
    max_frame: int


@dataclass(frozen=True, slots=True)
class Heartbeat(Frame):
    TYPE: ClassVar[int] = 3


@dataclass(frozen=True, slots=True)
class Close(Frame):
    """Either side ends the connection; code 0 is a normal close."""

    TYPE: ClassVar[int] = 4
    code: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class Error(Frame):
    """A failed request (``req`` > 0) or a connection-level failure (``req`` = 0)."""

    TYPE: ClassVar[int] = 5
    req: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Ok(Frame):
    """Successful reply to request ``req``; ``value`` depends on the request."""

    TYPE: ClassVar[int] = 6
    req: int
    value: Any = None


@dataclass(frozen=True, slots=True)
class Redirect(Frame):
    """A standby node's answer to Hello: the active node is at ``address``
    (``host:port``; empty when the standby does not know it yet). The server
    closes the connection after it."""

    TYPE: ClassVar[int] = 7
    address: str
    message: str = ""


# --- topology --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeclareExchange(Frame):
    TYPE: ClassVar[int] = 10
    req: int
    name: str
    type: str = "direct"
    durable: bool = True


@dataclass(frozen=True, slots=True)
class DeleteExchange(Frame):
    TYPE: ClassVar[int] = 11
    req: int
    name: str


@dataclass(frozen=True, slots=True)
class DeclareQueue(Frame):
    """Declare (idempotently) a queue; ``options`` holds lease, limits and DLQ."""

    TYPE: ClassVar[int] = 12
    req: int
    name: str
    durable: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeleteQueue(Frame):
    TYPE: ClassVar[int] = 13
    req: int
    name: str


@dataclass(frozen=True, slots=True)
class PurgeQueue(Frame):
    TYPE: ClassVar[int] = 14
    req: int
    name: str


@dataclass(frozen=True, slots=True)
class Bind(Frame):
    TYPE: ClassVar[int] = 15
    req: int
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class Unbind(Frame):
    TYPE: ClassVar[int] = 16
    req: int
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class QueueStats(Frame):
    TYPE: ClassVar[int] = 17
    req: int
    name: str


# --- publishing ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish(Frame):
    """A message; ``seq`` numbers publishes per connection for confirms.

    ``props`` carries the optional per-message properties: headers, delay,
    not_before, priority, ttl, message_id, mandatory.
    """

    TYPE: ClassVar[int] = 20
    seq: int
    exchange: str
    routing_key: str
    body: bytes
    props: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Confirm(Frame):
    """Publishes now durably stored (``ranges`` of inclusive seq pairs) and
    publishes accepted but routed to no queue (``unroutable``)."""

    TYPE: ClassVar[int] = 21
    ranges: list[list[int]]
    unroutable: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PublishError(Frame):
    """Publish ``seq`` was refused and nothing of it was stored."""

    TYPE: ClassVar[int] = 22
    seq: int
    code: int
    message: str


# --- consuming -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Consume(Frame):
    TYPE: ClassVar[int] = 30
    req: int
    queue: str
    prefetch: int = 10
    lease: float | None = None


@dataclass(frozen=True, slots=True)
class Cancel(Frame):
    TYPE: ClassVar[int] = 31
    req: int
    consumer: int


@dataclass(frozen=True, slots=True)
class Deliver(Frame):
    """One leased message for ``consumer``; ``lease`` is seconds until it expires."""

    TYPE: ClassVar[int] = 32
    consumer: int
    delivery: int
    exchange: str
    routing_key: str
    body: bytes
    props: dict[str, Any]
    attempt: int
    lease: float


@dataclass(frozen=True, slots=True)
class Ack(Frame):
    TYPE: ClassVar[int] = 33
    req: int
    deliveries: list[int]


@dataclass(frozen=True, slots=True)
class Nack(Frame):
    """Give deliveries back. ``counted`` false says the application never saw
    them (a client returning its prefetch buffer): the return does not count
    as a delivery attempt towards max_deliveries."""

    TYPE: ClassVar[int] = 34
    req: int
    deliveries: list[int]
    requeue: bool = True
    delay: float | None = None
    counted: bool = True


@dataclass(frozen=True, slots=True)
class Reject(Frame):
    """Refuse deliveries for good. ``reason`` (optional, added in a minor
    revision) says why; the server keeps it in the dead-lettered message's
    ``x-death-detail`` header."""

    TYPE: ClassVar[int] = 35
    req: int
    deliveries: list[int]
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Extend(Frame):
    TYPE: ClassVar[int] = 36
    req: int
    deliveries: list[int]
    seconds: float


@dataclass(frozen=True, slots=True)
class Settled(Frame):
    """Reply to Ack/Nack/Reject/Extend: ``lost`` lists deliveries whose lease
    had already been lost, for which the request had no effect."""

    TYPE: ClassVar[int] = 37
    req: int
    lost: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConsumerCancelled(Frame):
    """The broker ended a consumer (its queue was deleted)."""

    TYPE: ClassVar[int] = 38
    consumer: int
    reason: str


# --- task layer: results, revocation, events, schedules ------------------------


@dataclass(frozen=True, slots=True)
class ResultSet(Frame):
    """Store a task's state; ``payload`` is opaque to the broker (serialized by
    the SDK). ``ttl`` seconds until the broker forgets it. Answered with Ok
    once committed; waiters on a final state are woken then. ``keep_final``:
    store it only if no unexpired final state is stored (a redelivered run's
    result never replaces the first run's)."""

    TYPE: ClassVar[int] = 40
    req: int
    task_id: str
    state: str
    payload: bytes = b""
    ttl: float = 86_400.0
    keep_final: bool = False


@dataclass(frozen=True, slots=True)
class ResultGet(Frame):
    """Answered with Ok(req, {task_id: [state, payload]}) for the ids known."""

    TYPE: ClassVar[int] = 41
    req: int
    task_ids: list[str]


@dataclass(frozen=True, slots=True)
class ResultWait(Frame):
    """Answered with Ok(req, [state, payload]) as soon as the task reaches a
    final state (SUCCESS, FAILURE, REVOKED), or Ok(req, None) after
    ``timeout`` seconds. The broker pushes; the client does not poll."""

    TYPE: ClassVar[int] = 42
    req: int
    task_id: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Revoke(Frame):
    """Revoke tasks (by message_id = task id) for ``ttl`` seconds: the broker
    drops them instead of delivering them and records REVOKED. Subscribed
    workers get an Event("revoke") so they skip tasks already prefetched; with
    ``terminate`` they also stop running ones."""

    TYPE: ClassVar[int] = 43
    req: int
    task_ids: list[str]
    terminate: bool = False
    ttl: float = 86_400.0


@dataclass(frozen=True, slots=True)
class Subscribe(Frame):
    """Receive Event frames for ``topics`` (currently: "revoke")."""

    TYPE: ClassVar[int] = 44
    req: int
    topics: list[str]


@dataclass(frozen=True, slots=True)
class Event(Frame):
    TYPE: ClassVar[int] = 45
    topic: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScheduleSet(Frame):
    """Create or replace a periodic publish kept and fired by the broker.

    ``spec`` is ``every <seconds>`` or a five-field crontab expression
    (``cron <m> <h> <dom> <mon> <dow> [<zone>]``, evaluated in UTC or in the
    IANA time zone given last; SPEC §14.8)."""

    TYPE: ClassVar[int] = 46
    req: int
    name: str
    spec: str
    exchange: str
    routing_key: str
    body: bytes
    props: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScheduleDelete(Frame):
    TYPE: ClassVar[int] = 47
    req: int
    name: str


@dataclass(frozen=True, slots=True)
class ScheduleList(Frame):
    """Answered with Ok(req, [{name, spec, exchange, routing_key, next_run, last_run}]);
    with ``full`` each row also has the ``body`` and ``props`` it publishes
    (brokerctl export_definitions)."""

    TYPE: ClassVar[int] = 48
    req: int
    full: bool = False


@dataclass(frozen=True, slots=True)
class ResultDelete(Frame):
    """Forget the stored results of ``task_ids``; answered with
    Ok(req, number deleted) after the commit. Waiters keep waiting."""

    TYPE: ClassVar[int] = 49
    req: int
    task_ids: list[str]


@dataclass(frozen=True, slots=True)
class GroupJoin(Frame):
    """Add ``member_id`` to the group ``group_id`` of ``size`` members (a set).

    Answered after the commit with Ok(req, [joined, complete]): ``complete``
    is true for the join that made the group reach ``size``, and again for
    later joins by that same member until the group is fired."""

    TYPE: ClassVar[int] = 50
    req: int
    group_id: str
    member_id: str
    size: int
    ttl: float = 86_400.0


@dataclass(frozen=True, slots=True)
class GroupFire(Frame):
    """Publish one message (as Publish would) and mark the group fired in the
    same commit; Ok(req, False) and nothing published if it already was."""

    TYPE: ClassVar[int] = 51
    req: int
    group_id: str
    exchange: str
    routing_key: str
    body: bytes
    props: dict[str, Any] = field(default_factory=dict)


def result_digest(state: str, payload: bytes) -> bytes:
    """The 16-byte digest naming one stored result in ``ResultWatch.known``
    (SPEC §14.16): BLAKE2b-128 of the state's UTF-8, a zero byte, the payload."""
    return hashlib.blake2b(state.encode() + b"\0" + payload, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class ResultWatch(Frame):
    """Answered with Ok(req, [state, payload]) as soon as the task's stored
    result is not the one the client knows (``known``: the 16-byte digest of
    SPEC §14.16, empty for none), whatever its state, or at once if it is
    final; Ok(req, None) after ``timeout`` seconds. How a client follows a
    task's progress (custom states) without polling."""

    TYPE: ClassVar[int] = 54
    req: int
    task_id: str
    timeout: float
    known: bytes = b""


@dataclass(frozen=True, slots=True)
class RateAcquire(Frame):
    """Take the next slot of the rate limit ``name`` (a task name).

    ``rate`` is the caller's own limit in slots per second (0: none of its
    own; a limit set with RateSet applies either way). Answered with
    Ok(req, wait): the seconds until the slot is the caller's, 0.0 if now."""

    TYPE: ClassVar[int] = 56
    req: int
    name: str
    rate: float = 0.0


@dataclass(frozen=True, slots=True)
class RateSet(Frame):
    """Set (``rate`` > 0) or clear (``rate`` nil) the broker's own limit for
    ``name``, which then wins over every caller's; subscribers of the topic
    "ratelimit" are told. Answered with Ok(req, nil)."""

    TYPE: ClassVar[int] = 57
    req: int
    name: str
    rate: float | None = None


# --- admin layer: what brokerctl asks (SPEC §17, codes 60-79) ------------------
#
# Every admin frame is a request answered by Ok or Error. The list frames page:
# ``cursor`` is nil for the first page, else the ``next`` value of the previous
# reply, passed back unchanged; the server answers with at most ``limit`` items
# and never more than half the connection's frame limit.


@dataclass(frozen=True, slots=True)
class AdminStatus(Frame):
    """Answered with Ok(req, {version, uptime, pid, data_dir, listeners, ...})."""

    TYPE: ClassVar[int] = 60
    req: int


@dataclass(frozen=True, slots=True)
class AdminStop(Frame):
    """Stop the broker gracefully (as SIGTERM does), after the Ok."""

    TYPE: ClassVar[int] = 61
    req: int


@dataclass(frozen=True, slots=True)
class ListQueues(Frame):
    TYPE: ClassVar[int] = 62
    req: int
    cursor: Any = None
    limit: int = 1000
    #: Only this vhost's rows (nil: every vhost the connection may see).
    vhost: str | None = None


@dataclass(frozen=True, slots=True)
class ListExchanges(Frame):
    TYPE: ClassVar[int] = 63
    req: int
    cursor: Any = None
    limit: int = 1000
    #: Only this vhost's rows (nil: every vhost the connection may see).
    vhost: str | None = None


@dataclass(frozen=True, slots=True)
class ListBindings(Frame):
    TYPE: ClassVar[int] = 64
    req: int
    cursor: Any = None
    limit: int = 1000
    #: Only this vhost's rows (nil: every vhost the connection may see).
    vhost: str | None = None


@dataclass(frozen=True, slots=True)
class ListConnections(Frame):
    TYPE: ClassVar[int] = 65
    req: int
    cursor: Any = None
    limit: int = 1000
    #: Only this vhost's rows (nil: every vhost the connection may see).
    vhost: str | None = None


@dataclass(frozen=True, slots=True)
class ListConsumers(Frame):
    TYPE: ClassVar[int] = 66
    req: int
    cursor: Any = None
    limit: int = 1000
    #: Only this vhost's rows (nil: every vhost the connection may see).
    vhost: str | None = None


@dataclass(frozen=True, slots=True)
class CloseConnection(Frame):
    """Close connection ``connection`` (an id from ListConnections): the server
    sends it Close(0, reason) and ends it."""

    TYPE: ClassVar[int] = 67
    req: int
    connection: int
    reason: str = ""


# --- users and permissions (SPEC §17.6, codes 68-74) ---------------------------
#
# Answered by Ok or Error like every admin frame; they need an administrator
# (or the control socket). Passwords travel in these frames only to be hashed:
# the broker never stores, logs or returns them.


@dataclass(frozen=True, slots=True)
class AddUser(Frame):
    """Create user ``name`` with ``password`` and ``tags``; PRECONDITION_FAILED
    if it exists. With ``password_hash`` (a hash as ListUsers with ``hashes``
    returns it, for brokerctl import_definitions) ``password`` must be empty
    and the hash is stored as it is."""

    TYPE: ClassVar[int] = 68
    req: int
    name: str
    password: str
    tags: list[str] = field(default_factory=list)
    password_hash: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteUser(Frame):
    """Delete user ``name`` with its permissions; its connections are closed."""

    TYPE: ClassVar[int] = 69
    req: int
    name: str


@dataclass(frozen=True, slots=True)
class UpdateUser(Frame):
    """Change user ``name``'s password, tags, or both (nil leaves one as it is)."""

    TYPE: ClassVar[int] = 70
    req: int
    name: str
    password: str | None = None
    tags: list[str] | None = None


@dataclass(frozen=True, slots=True)
class ListUsers(Frame):
    """Answered with a page of ``{name, tags}`` rows (paged as §17.3); with
    ``hashes`` each row also has the user's ``password_hash``."""

    TYPE: ClassVar[int] = 71
    req: int
    cursor: Any = None
    limit: int = 1000
    hashes: bool = False


@dataclass(frozen=True, slots=True)
class SetPermissions(Frame):
    """Set ``user``'s configure, write and read patterns on ``vhost``."""

    TYPE: ClassVar[int] = 72
    req: int
    user: str
    vhost: str
    configure: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class ClearPermissions(Frame):
    """Remove ``user``'s permissions on ``vhost``."""

    TYPE: ClassVar[int] = 73
    req: int
    user: str
    vhost: str


@dataclass(frozen=True, slots=True)
class ListPermissions(Frame):
    """A page of ``{user, vhost, configure, write, read}`` rows, of one vhost,
    one user, or both when given (nil: any)."""

    TYPE: ClassVar[int] = 74
    req: int
    vhost: str | None = None
    user: str | None = None
    cursor: Any = None
    limit: int = 1000


# --- vhosts (SPEC §17.7, codes 75-77) --------------------------------------------


@dataclass(frozen=True, slots=True)
class AddVhost(Frame):
    """Create vhost ``name``; PRECONDITION_FAILED if it exists."""

    TYPE: ClassVar[int] = 75
    req: int
    name: str


@dataclass(frozen=True, slots=True)
class DeleteVhost(Frame):
    """Delete vhost ``name`` and everything in it; its connections are closed."""

    TYPE: ClassVar[int] = 76
    req: int
    name: str


@dataclass(frozen=True, slots=True)
class ListVhosts(Frame):
    """A page of ``{name, queues, messages}`` rows keyed by name."""

    TYPE: ClassVar[int] = 77
    req: int
    cursor: Any = None
    limit: int = 1000
