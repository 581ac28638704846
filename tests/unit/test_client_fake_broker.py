"""The async and sync clients against a scripted fake broker.

The fake speaks the real codec (``brokerd_protocol``) on 127.0.0.1, records
every frame it receives, and answers with canned replies, so these tests pin
the client's protocol behaviour (correlation, confirms, settle batching,
failure propagation, heartbeats) without the real server. No test asserts on
timing: waits are bounded by ``asyncio.timeout`` only to fail instead of hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

import brokerd_client
from brokerd_client import (
    AuthenticationError,
    ClientClosed,
    ConnectionLost,
    ConsumerClosed,
    HeartbeatTimeout,
    InvalidArgument,
    LeaseLost,
    Message,
    MessageTooLarge,
    NotFound,
    PreconditionFailed,
    ProtocolViolation,
    QueueFull,
    QueueInfo,
    ServerShuttingDown,
    Unroutable,
    UnsupportedVersion,
)
from brokerd_protocol import (
    Ack,
    Cancel,
    Close,
    Confirm,
    Consume,
    ConsumerCancelled,
    DeclareQueue,
    Decoder,
    Deliver,
    Error,
    ErrorCode,
    Extend,
    Frame,
    Heartbeat,
    Hello,
    Nack,
    Ok,
    Publish,
    PublishError,
    PurgeQueue,
    QueueStats,
    Reject,
    ResultSet,
    Settled,
    Welcome,
    encode,
)

BOUND = 5.0  # seconds; only a guard against hangs, never a timing assertion


class FakeSession(asyncio.Protocol):
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.decoder = Decoder()
        self.transport: asyncio.Transport | None = None
        self.frames: list[Frame] = []
        self.hello: Hello | None = None
        self.next_consumer = 100
        self.next_delivery = 1
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.broker.sessions.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, *frames: Frame) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(encode(f) for f in frames))

    def drop(self) -> None:
        """Close the socket without any goodbye frame."""
        assert self.transport is not None
        self.transport.close()

    def deliver(self, consumer: int, body: bytes = b"m", **props: Any) -> int:
        delivery = self.next_delivery
        self.next_delivery += 1
        self.send(Deliver(consumer, delivery, "ex", "rk", body, props, 1, 30.0))
        return delivery

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        batch = [frame for frame in self.decoder]
        self.frames.extend(batch)
        self.broker.frames.extend(batch)
        self.broker.arrived.set()
        if self.broker.silent:
            return
        publishes: list[Publish] = []
        for frame in batch:
            if isinstance(frame, Publish):
                publishes.append(frame)
            elif self.broker.on_frame is None or not self.broker.on_frame(self, frame):
                self.default_reply(frame)
        if publishes:
            self.broker.on_publishes(self, publishes)

    def default_reply(self, frame: Frame) -> None:
        broker = self.broker
        if isinstance(frame, Hello):
            self.hello = frame
            if broker.token is not None and frame.token != broker.token:
                self.send(Error(0, ErrorCode.AUTH_FAILED, "invalid token"))
                self.drop()
                return
            self.send(Welcome(1, "fake-broker", broker.heartbeat, broker.max_frame))
        elif isinstance(frame, Consume):
            self.send(Ok(frame.req, self.next_consumer))
            self.next_consumer += 1
        elif isinstance(frame, QueueStats):
            self.send(Ok(frame.req, {"ready": 3, "leased": 2, "delayed": 1, "consumers": 4}))
        elif isinstance(frame, PurgeQueue):
            self.send(Ok(frame.req, 7))
        elif isinstance(frame, Ack | Nack | Reject | Extend):
            lost = [d for d in frame.deliveries if d in broker.lost]
            self.send(Settled(frame.req, lost))
        elif isinstance(frame, Close):
            self.send(Close(0, "bye"))
            self.drop()
        elif hasattr(frame, "req"):
            name = getattr(frame, "name", "")
            code = broker.errors_by_name.get(name)
            if code is not None:
                self.send(Error(frame.req, code, f"canned failure for {name!r}"))
            else:
                self.send(Ok(frame.req, None))


def confirm_all(session: FakeSession, publishes: list[Publish]) -> None:
    """Default publish handling: routing key picks the outcome."""
    ok: list[int] = []
    unroutable: list[int] = []
    for p in publishes:
        if p.routing_key == "full":
            session.send(PublishError(p.seq, ErrorCode.QUEUE_FULL, "queue is full"))
        elif p.routing_key == "mandatory-nowhere":
            session.send(PublishError(p.seq, ErrorCode.UNROUTABLE, "no route"))
        elif p.routing_key == "nowhere":
            unroutable.append(p.seq)
        else:
            ok.append(p.seq)
    ranges: list[list[int]] = []
    for s in ok:
        if ranges and ranges[-1][1] + 1 == s:
            ranges[-1][1] = s
        else:
            ranges.append([s, s])
    if ranges or unroutable:
        session.send(Confirm(ranges, unroutable))


class FakeBroker:
    def __init__(self) -> None:
        self.token: str | None = None
        self.heartbeat = 0.0
        self.max_frame = 1024 * 1024
        self.silent = False
        self.sessions: list[FakeSession] = []
        self.frames: list[Frame] = []
        self.arrived = asyncio.Event()
        self.lost: set[int] = set()
        self.errors_by_name: dict[str, int] = {}
        #: Return True from on_frame to suppress the default reply.
        self.on_frame: Callable[[FakeSession, Frame], bool] | None = None
        self.on_publishes: Callable[[FakeSession, list[Publish]], None] = confirm_all
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"brokerd://127.0.0.1:{self.port}"

    @property
    def session(self) -> FakeSession:
        return self.sessions[-1]

    def of_type(self, cls: type[Frame]) -> list[Any]:
        return [f for f in self.frames if isinstance(f, cls)]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(BOUND):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBroker]:
    broker = FakeBroker()
    loop = asyncio.get_running_loop()
    broker.server = await loop.create_server(lambda: FakeSession(broker), "127.0.0.1", 0)
    broker.port = broker.server.sockets[0].getsockname()[1]
    yield broker
    for s in broker.sessions:
        if s.transport is not None:
            s.transport.abort()
    broker.server.close()
    await broker.server.wait_closed()


async def connect(fake: FakeBroker, **kwargs: Any) -> brokerd_client.AsyncClient:
    return await brokerd_client.connect(fake.url, timeout=BOUND, **kwargs)


# --- handshake -----------------------------------------------------------------


async def test_handshake_sends_hello_and_reads_welcome(fake: FakeBroker) -> None:
    fake.token = "tok"
    client = await brokerd_client.connect(
        f"brokerd://tok@127.0.0.1:{fake.port}", client_name="tests", heartbeat=12
    )
    async with client:
        hello = fake.session.hello
        assert hello == Hello([1], "tok", "tests", 12.0)
        assert client.server_name == "fake-broker"
        assert client.heartbeat == 0.0
        assert client.max_frame == fake.max_frame
    assert client.is_closed


async def test_token_keyword_overrides_the_url(fake: FakeBroker) -> None:
    fake.token = "right"
    client = await connect(fake, token="right")
    await client.close()


async def test_wrong_token_raises_authentication_error(fake: FakeBroker) -> None:
    fake.token = "right"
    with pytest.raises(AuthenticationError, match="invalid token"):
        await brokerd_client.connect(f"brokerd://wrong@127.0.0.1:{fake.port}", timeout=BOUND)
    with pytest.raises(AuthenticationError):
        await connect(fake)  # no token at all


async def test_unsupported_version_is_reported(fake: FakeBroker) -> None:
    def refuse(session: FakeSession, frame: Frame) -> bool:
        session.send(Error(0, ErrorCode.UNSUPPORTED_VERSION, "speaks v7 only"))
        session.drop()
        return True

    fake.on_frame = refuse
    with pytest.raises(UnsupportedVersion, match="v7"):
        await connect(fake)


async def test_broker_hanging_up_during_handshake_is_connection_lost(fake: FakeBroker) -> None:
    def hang_up(session: FakeSession, frame: Frame) -> bool:
        session.drop()
        return True

    fake.on_frame = hang_up
    with pytest.raises(ConnectionLost):
        await connect(fake)


async def test_connect_refused_is_connection_lost(fake: FakeBroker) -> None:
    port = fake.port
    assert fake.server is not None
    fake.server.close()
    await fake.server.wait_closed()
    with pytest.raises(ConnectionLost, match="cannot connect"):
        await brokerd_client.connect(f"brokerd://127.0.0.1:{port}", timeout=BOUND)


async def test_silent_broker_hits_the_connect_timeout(fake: FakeBroker) -> None:
    fake.silent = True
    with pytest.raises(ConnectionLost, match="timed out"):
        await brokerd_client.connect(fake.url, timeout=0.05)


# --- requests ------------------------------------------------------------------


async def test_topology_requests_get_their_replies(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        await client.declare_exchange("ex", "topic")
        await client.declare_queue("q", max_deliveries=5, dead_letter_queue="dlq")
        await client.bind("q", "ex", "a.#")
        await client.unbind("q", "ex", "a.#")
        assert await client.purge_queue("q") == 7
        assert await client.queue_stats("q") == QueueInfo(ready=3, leased=2, delayed=1, consumers=4)
        await client.delete_queue("q")
        await client.delete_exchange("ex")
    declares = fake.of_type(DeclareQueue)
    assert declares[0].options == {
        "lease": 30.0,
        "overflow": "reject_publish",
        "max_deliveries": 5,
        "dead_letter_queue": "dlq",
    }
    reqs = [f.req for f in fake.frames if hasattr(f, "req")]
    assert len(reqs) == len(set(reqs)), "request ids must be unique"
    assert all(r > 0 for r in reqs)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (ErrorCode.NOT_FOUND, NotFound),
        (ErrorCode.PRECONDITION_FAILED, PreconditionFailed),
        (ErrorCode.INVALID_ARGUMENT, InvalidArgument),
        (ErrorCode.QUEUE_FULL, QueueFull),
    ],
)
async def test_request_errors_raise_typed_exceptions(
    fake: FakeBroker, code: ErrorCode, cls: type[Exception]
) -> None:
    fake.errors_by_name["bad"] = code
    async with await connect(fake) as client:
        with pytest.raises(cls, match="canned failure") as info:
            await client.declare_queue("bad")
        assert getattr(info.value, "code", None) == code
        # A request-level error leaves the connection usable.
        await client.declare_queue("good")
        assert not client.is_closed


async def test_concurrent_requests_are_matched_by_req(fake: FakeBroker) -> None:
    pending: list[Frame] = []

    def hold(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, QueueStats):
            pending.append(frame)
            if len(pending) == 3:  # answer in reverse order
                for f in reversed(pending):
                    assert isinstance(f, QueueStats)
                    n = int(f.name[1:])
                    stats = {"ready": n, "leased": 0, "delayed": 0, "consumers": 0}
                    session.send(Ok(f.req, stats))
            return True
        return False

    fake.on_frame = hold
    async with await connect(fake) as client:
        infos = await asyncio.gather(*(client.queue_stats(f"q{i}") for i in range(3)))
    assert [i.ready for i in infos] == [0, 1, 2]


async def test_malformed_stats_reply_is_a_protocol_violation(fake: FakeBroker) -> None:
    def odd(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, QueueStats):
            session.send(Ok(frame.req, {"ready": "many"}))
            return True
        return False

    fake.on_frame = odd
    async with await connect(fake) as client:
        with pytest.raises(ProtocolViolation):
            await client.queue_stats("q")


# --- publishing ----------------------------------------------------------------


async def test_publish_returns_routed_flag_and_sends_minimal_props(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        assert await client.publish("", "jobs", b"hello") is True
        assert await client.publish("", "nowhere", b"lost") is False
        assert await client.publish("ex", "k", b"x", headers={"h": 1}, priority=4, delay=1.5)
    pubs = fake.of_type(Publish)
    assert [p.seq for p in pubs] == [1, 2, 3]
    assert pubs[0].props == {}
    assert pubs[2].props == {"headers": {"h": 1}, "priority": 4, "delay": 1.5}


async def test_publish_rejects_non_bytes_body(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        with pytest.raises(TypeError):
            await client.publish("", "q", "text")  # type: ignore[arg-type]
        assert fake.of_type(Publish) == []


async def test_publish_and_publish_many_refuse_the_same_options(fake: FakeBroker) -> None:
    # A zero ttl is no ttl the broker accepts: publish() used to drop it
    # silently (with every other option that compares false) while
    # publish_many() refused it.
    async with await connect(fake) as client:
        with pytest.raises(ValueError, match="ttl must be a finite number of seconds > 0"):
            await client.publish("", "q", b"x", ttl=0)
        with pytest.raises(ValueError, match="ttl must be a finite number of seconds > 0"):
            await client.publish_many([Message("", "q", b"x", ttl=0)])
        assert fake.of_type(Publish) == []


async def test_confirm_ranges_and_unroutable_resolve_the_right_publishes(
    fake: FakeBroker,
) -> None:
    held: list[Publish] = []

    def hold(session: FakeSession, publishes: list[Publish]) -> None:
        held.extend(publishes)
        if len(held) == 6:
            # 3 is unroutable; 6 is listed both as unroutable and in a range.
            session.send(Confirm([[1, 2], [4, 6]], [3, 6]))

    fake.on_publishes = hold
    async with await connect(fake) as client:
        results = await asyncio.gather(*(client.publish("", f"k{i}", b"") for i in range(6)))
    assert results == [True, True, False, True, True, False]


async def test_confirms_can_arrive_in_several_frames(fake: FakeBroker) -> None:
    held: list[Publish] = []

    def hold(session: FakeSession, publishes: list[Publish]) -> None:
        held.extend(publishes)
        if len(held) == 4:
            session.send(Confirm([[3, 4]]), Confirm([], [2]), Confirm([[1, 1]]))

    fake.on_publishes = hold
    async with await connect(fake) as client:
        results = await asyncio.gather(*(client.publish("", "k", b"") for _ in range(4)))
    assert results == [True, False, True, True]


async def test_publish_error_fails_only_its_publish(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        results = await asyncio.gather(
            client.publish("", "a", b""),
            client.publish("", "full", b""),
            client.publish("", "b", b""),
            client.publish("", "mandatory-nowhere", b"", mandatory=True),
            return_exceptions=True,
        )
        assert results[0] is True
        assert isinstance(results[1], QueueFull)
        assert results[2] is True
        assert isinstance(results[3], Unroutable)
        assert await client.publish("", "c", b"") is True
    assert fake.of_type(Publish)[3].props == {"mandatory": True}


async def test_publish_many_returns_results_in_order(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        msgs: list[Message | tuple[str, str, bytes]] = [
            ("", "a", b"1"),
            Message("", "nowhere", b"2", priority=2),
            ("", "b", bytearray(b"3")),  # type: ignore[list-item]
        ]
        assert await client.publish_many(msgs) == [True, False, True]
        assert await client.publish_many([]) == []
    pubs = fake.of_type(Publish)
    assert [p.body for p in pubs] == [b"1", b"2", b"3"]
    assert pubs[1].props == {"priority": 2}


async def test_publish_many_raises_first_error_after_all_settle(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        msgs = [("", "a", b""), ("", "full", b""), ("", "nowhere", b""), ("", "full", b"")]
        with pytest.raises(QueueFull) as info:
            await client.publish_many(msgs)
        results = info.value.results
        assert results is not None
        assert results[0] is True
        assert isinstance(results[1], QueueFull)
        assert results[2] is False
        assert isinstance(results[3], QueueFull)


async def test_publish_many_consumes_a_generator_lazily_with_bounded_inflight(
    fake: FakeBroker,
) -> None:
    """With max_inflight=8 the broker never sees more than 8 unconfirmed
    publishes, however many the generator yields."""
    max_seen = 0
    confirmed = 0

    def confirm_later(session: FakeSession, publishes: list[Publish]) -> None:
        nonlocal max_seen, confirmed
        outstanding = publishes[-1].seq - confirmed
        max_seen = max(max_seen, outstanding)
        first, last = confirmed + 1, publishes[-1].seq
        confirmed = last
        asyncio.get_running_loop().call_soon(session.send, Confirm([[first, last]]))

    fake.on_publishes = confirm_later
    async with await connect(fake, max_inflight=8) as client:
        results = await client.publish_many(("", "q", b"%d" % i) for i in range(500))
    assert results == [True] * 500
    assert 0 < max_seen <= 8
    assert [p.seq for p in fake.of_type(Publish)] == list(range(1, 501))


async def test_publish_writes_are_coalesced(fake: FakeBroker) -> None:
    """Publishes issued in one tick leave in one socket write."""
    async with await connect(fake) as client:
        session = fake.session
        reads: list[int] = []
        orig = session.data_received

        def counting(data: bytes) -> None:
            reads.append(len(data))
            orig(data)

        session.data_received = counting  # type: ignore[method-assign]
        await asyncio.gather(*(client.publish("", "q", b"x" * 10) for _ in range(50)))
    # 50 frames in a single write; TCP may still split it, but not into 50 reads.
    assert len(fake.of_type(Publish)) == 50
    assert len(reads) < 50


async def test_oversized_message_is_refused_locally(fake: FakeBroker) -> None:
    fake.max_frame = 1000
    async with await connect(fake) as client:
        with pytest.raises(MessageTooLarge, match="exceeds the limit of 1000 bytes") as info:
            await client.publish("", "q", b"x" * 2000)
        assert isinstance(info.value, ValueError)  # a bad argument, as before
        assert info.value.limit == 1000 and info.value.size == 2000
        # The sequence number was not consumed and the connection lives on.
        assert await client.publish("", "q", b"small") is True
    assert [p.seq for p in fake.of_type(Publish)] == [1]


async def test_publish_many_refuses_an_oversized_message_without_losing_the_others(
    fake: FakeBroker,
) -> None:
    fake.max_frame = 1000
    async with await connect(fake) as client:
        with pytest.raises(MessageTooLarge):
            await client.publish_many([("", "q", b"a"), ("", "q", b"x" * 2000), ("", "q", b"c")])
        assert await client.publish_many([("", "q", b"d")]) == [True]
    assert [p.body for p in fake.of_type(Publish)] == [b"a", b"d"]


async def test_an_oversized_request_is_refused_locally_and_the_connection_stays_up(
    fake: FakeBroker,
) -> None:
    fake.max_frame = 1000
    async with await connect(fake) as client:
        with pytest.raises(MessageTooLarge, match="exceeds the limit of 1000 bytes"):
            client.result_set("t1", "SUCCESS", b"x" * 2000)
        with pytest.raises(MessageTooLarge):
            await client.schedule_set("s", "every 1", "", "q", b"x" * 2000)
        await client.result_set("t2", "SUCCESS", b"fits")
        assert not client.is_closed
    assert [f.task_id for f in fake.of_type(ResultSet)] == ["t2"]


async def test_a_reject_can_say_why(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        consumer = await client.consume("q", prefetch=5)
        first = fake.session.deliver(100)
        second = fake.session.deliver(100)
        d1 = await consumer.next()
        d2 = await consumer.next()
        await asyncio.gather(d1.reject(reason="header 'task' is not a str"), d2.reject())
    rejects = fake.of_type(Reject)
    assert sorted((r.deliveries, r.reason) for r in rejects) == sorted(
        [([first], "header 'task' is not a str"), ([second], None)]
    )


# --- consuming -----------------------------------------------------------------


async def test_deliveries_carry_their_properties(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        consumer = await client.consume("q", prefetch=5, lease=12)
        assert fake.of_type(Consume)[0] == Consume(fake.of_type(Consume)[0].req, "q", 5, 12.0)
        assert consumer.consumer_id == 100
        fake.session.send(
            Deliver(
                100,
                9,
                "ex",
                "rk.1",
                b"body",
                {
                    "headers": {"h": "v"},
                    "message_id": "mid",
                    "priority": 3,
                    "timestamp": 1500,  # milliseconds on the wire
                    "redelivered": True,
                },
                2,
                12.0,
            )
        )
        d = await consumer.next(timeout=BOUND)
        assert (d.delivery_id, d.body, d.exchange, d.routing_key) == (9, b"body", "ex", "rk.1")
        assert (d.headers, d.message_id, d.priority, d.timestamp) == ({"h": "v"}, "mid", 3, 1.5)
        assert (d.attempt, d.redelivered, d.lease) == (2, True, 12.0)
        await d.ack()
        with pytest.raises(RuntimeError, match="already settled"):
            await d.ack()


@pytest.mark.parametrize("prefetch", [0, 65536, 1_000_000])
async def test_a_prefetch_outside_the_protocol_range_is_refused_without_a_round_trip(
    fake: FakeBroker, prefetch: int
) -> None:
    async with await connect(fake) as client:
        with pytest.raises(ValueError, match=r"prefetch must be between 1 and 65535"):
            await client.consume("q", prefetch=prefetch)
        assert not client.is_closed
    assert fake.of_type(Consume) == []


async def test_deliveries_sent_with_the_consume_ok_are_not_lost(fake: FakeBroker) -> None:
    """The broker may send Deliver right behind the Consume's Ok (same read)."""

    def ok_and_deliver(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, Consume):
            session.send(
                Ok(frame.req, 5),
                Deliver(5, 1, "", "q", b"a", {}, 1, 30.0),
                Deliver(5, 2, "", "q", b"b", {}, 1, 30.0),
            )
            return True
        return False

    fake.on_frame = ok_and_deliver
    async with await connect(fake) as client:
        consumer = await client.consume("q")
        bodies = [(await consumer.next(timeout=BOUND)).body for _ in range(2)]
    assert bodies == [b"a", b"b"]
    assert fake.of_type(Nack) == []


async def test_acks_in_one_tick_become_one_frame_and_lost_ids_raise(fake: FakeBroker) -> None:
    fake.lost = {3}
    async with await connect(fake) as client:
        consumer = await client.consume("q", prefetch=10)
        for i in range(5):
            fake.session.deliver(100, b"%d" % i)
        deliveries = [await consumer.next(timeout=BOUND) for _ in range(5)]
        results = await asyncio.gather(*(d.ack() for d in deliveries), return_exceptions=True)
    acks = fake.of_type(Ack)
    assert len(acks) == 1
    assert acks[0].deliveries == [1, 2, 3, 4, 5]
    assert [r is None for r in results] == [True, True, False, True, True]
    lost = results[2]
    assert isinstance(lost, LeaseLost)
    assert lost.delivery_id == 3


async def test_settles_that_do_not_wait_return_the_answer_as_a_future(fake: FakeBroker) -> None:
    fake.lost = {2}
    async with await connect(fake) as client:
        consumer = await client.consume("q", prefetch=10)
        for _ in range(4):
            fake.session.deliver(100)
        d1, d2, d3, d4 = [await consumer.next(timeout=BOUND) for _ in range(4)]
        extended = d4.extend_nowait(60)
        futs = [d1.ack_nowait(), d2.ack_nowait(), d3.nack_nowait(delay=5), d4.reject_nowait("bad")]
        assert all(d.settled for d in (d1, d2, d3, d4))
        with pytest.raises(RuntimeError, match="already settled"):
            d1.ack_nowait()
        results = await asyncio.gather(extended, *futs, return_exceptions=True)
        assert d4.lease == 30.0  # not waited for: nothing learnt about the extension
    assert results[0] is None and results[1] is None and results[3:] == [None, None]
    assert isinstance(results[2], LeaseLost) and results[2].delivery_id == 2
    assert [f.deliveries for f in fake.of_type(Ack)] == [[1, 2]]
    assert [(f.deliveries, f.delay) for f in fake.of_type(Nack)] == [([3], 5.0)]
    assert [(f.deliveries, f.reason) for f in fake.of_type(Reject)] == [([4], "bad")]
    assert [(f.deliveries, f.seconds) for f in fake.of_type(Extend)] == [([4], 60.0)]


async def test_settle_kinds_are_batched_separately(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        consumer = await client.consume("q")
        for _ in range(6):
            fake.session.deliver(100)
        ds = [await consumer.next(timeout=BOUND) for _ in range(6)]
        await asyncio.gather(
            ds[0].nack(),
            ds[1].nack(),
            ds[2].nack(delay=5),
            ds[3].reject(),
            ds[4].extend(60),
            ds[5].extend(60),
        )
        assert ds[4].lease == 60.0
        with pytest.raises(ValueError):
            await ds[5].nack(delay=-1)
    nacks = sorted(fake.of_type(Nack), key=lambda n: n.deliveries)
    assert [(n.deliveries, n.requeue, n.delay) for n in nacks] == [
        ([1, 2], True, None),
        ([3], True, 5.0),
    ]
    assert [r.deliveries for r in fake.of_type(Reject)] == [[4]]
    assert [(x.deliveries, x.seconds) for x in fake.of_type(Extend)] == [([5, 6], 60.0)]


async def test_settle_request_error_fails_the_whole_batch(fake: FakeBroker) -> None:
    def refuse(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, Extend):
            session.send(Error(frame.req, ErrorCode.INVALID_ARGUMENT, "too long"))
            return True
        return False

    fake.on_frame = refuse
    async with await connect(fake) as client:
        consumer = await client.consume("q")
        fake.session.deliver(100)
        d = await consumer.next(timeout=BOUND)
        with pytest.raises(InvalidArgument, match="too long"):
            await d.extend(10**9)
        await d.ack()


async def test_many_tasks_can_share_one_consumer(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        consumer = await client.consume("q")
        got: list[int] = []

        async def worker() -> None:
            async for d in consumer:
                got.append(d.delivery_id)
                await d.ack()

        tasks = [asyncio.create_task(worker()) for _ in range(3)]
        await asyncio.sleep(0)
        for _ in range(30):
            fake.session.deliver(100)
        await fake.wait_for(lambda: sum(len(a.deliveries) for a in fake.of_type(Ack)) == 30)
        await consumer.cancel()
        async with asyncio.timeout(BOUND):
            await asyncio.gather(*tasks)
    assert sorted(got) == list(range(1, 31))


async def test_broker_cancelling_a_consumer_ends_iteration(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        consumer = await client.consume("q")
        fake.session.send(ConsumerCancelled(100, "queue deleted"))
        async with asyncio.timeout(BOUND):
            seen = [d async for d in consumer]
        assert seen == []
        assert consumer.closed
        assert consumer.cancel_reason == "queue deleted"
        with pytest.raises(ConsumerClosed, match="queue deleted"):
            await consumer.next(timeout=BOUND)
        await consumer.cancel()  # no-op, must not raise
    assert fake.of_type(Cancel) == []


async def test_cancel_returns_buffered_deliveries(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        async with await client.consume("q") as consumer:
            for _ in range(3):
                fake.session.deliver(100)
            first = await consumer.next(timeout=BOUND)
            async with asyncio.timeout(BOUND):
                while consumer.buffered < 2:  # noqa: ASYNC110 - no event to wait on
                    await asyncio.sleep(0.001)
        await fake.wait_for(lambda: bool(fake.of_type(Nack)))
        await first.ack()  # still ours after cancel
        # Iteration of a cancelled consumer ends.
        assert [d async for d in consumer] == []
    assert [c.consumer for c in fake.of_type(Cancel)] == [100]
    nack = fake.of_type(Nack)[0]
    assert (nack.deliveries, nack.requeue) == ([2, 3], True)
    assert fake.of_type(Ack)[0].deliveries == [1]


async def test_deliveries_for_unknown_consumers_are_handed_back(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        fake.session.deliver(555)
        await fake.wait_for(lambda: bool(fake.of_type(Nack)))
        assert not client.is_closed
    assert fake.of_type(Nack)[0].deliveries == [1]


async def test_next_times_out_without_ending_the_consumer(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        consumer = await client.consume("q")
        with pytest.raises(TimeoutError):
            await consumer.next(timeout=0.01)
        fake.session.deliver(100, b"late")
        assert (await consumer.next(timeout=BOUND)).body == b"late"


# --- failures --------------------------------------------------------------------


async def test_dropped_connection_fails_everything_with_connection_lost(
    fake: FakeBroker,
) -> None:
    fake.on_publishes = lambda session, publishes: None  # never confirm
    client = await connect(fake)
    consumer = await client.consume("q")
    fake.session.deliver(100)
    delivery = await consumer.next(timeout=BOUND)

    async def iterate() -> None:
        async for _ in consumer:
            pass

    iterating = asyncio.create_task(iterate())
    publishes = [asyncio.create_task(client.publish("", "q", b"x")) for _ in range(3)]
    many = asyncio.create_task(client.publish_many([("", "q", b"y")] * 4))
    await fake.wait_for(lambda: len(fake.of_type(Publish)) == 7)

    fake.session.drop()

    async with asyncio.timeout(BOUND):
        for task in publishes:
            with pytest.raises(ConnectionLost):
                await task
        with pytest.raises(ConnectionLost) as info:
            await many
        assert info.value.results is not None
        assert len(info.value.results) == 4
        assert all(isinstance(r, ConnectionLost) for r in info.value.results)
        with pytest.raises(ConnectionLost):
            await iterating
    with pytest.raises(ConnectionLost):
        await delivery.ack()
    with pytest.raises(ConnectionLost):
        await client.queue_stats("q")
    with pytest.raises(ConnectionLost):
        await client.publish("", "q", b"z")
    assert client.is_closed
    await client.close()


async def test_broker_close_frame_fails_pending_calls_with_its_message(
    fake: FakeBroker,
) -> None:
    fake.on_publishes = lambda session, publishes: None
    async with await connect(fake) as client:
        pending = asyncio.create_task(client.publish("", "q", b"x"))
        await fake.wait_for(lambda: bool(fake.of_type(Publish)))
        fake.session.send(Close(ErrorCode.SHUTTING_DOWN, "restarting for upgrade"))
        with pytest.raises(ServerShuttingDown, match="restarting for upgrade"):
            await pending
        with pytest.raises(ConnectionLost, match="restarting for upgrade"):
            await client.queue_stats("q")


async def test_connection_level_error_frame_fails_pending_calls(fake: FakeBroker) -> None:
    def explode(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, QueueStats):
            session.send(Error(0, ErrorCode.PROTOCOL_ERROR, "you sent garbage"))
            session.drop()
            return True
        return False

    fake.on_frame = explode
    async with await connect(fake) as client:
        with pytest.raises(ConnectionLost, match="you sent garbage") as info:
            await client.queue_stats("q")
        assert isinstance(info.value.__cause__, ProtocolViolation)


async def test_garbage_from_the_broker_is_a_protocol_violation(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        pending = asyncio.create_task(client.queue_stats("q"))
        fake.on_frame = lambda session, frame: True  # swallow the request
        assert fake.session.transport is not None
        fake.session.transport.write(b"\x00\x00\x00\x02\xc1\xc1")
        with pytest.raises(ConnectionLost, match="invalid frame") as info:
            await pending
        assert isinstance(info.value.__cause__, ProtocolViolation)


async def test_a_silent_broker_is_a_heartbeat_timeout(fake: FakeBroker) -> None:
    fake.heartbeat = 0.05
    client = await connect(fake, heartbeat=0.05)
    assert client.heartbeat == 0.05
    fake.silent = True
    async with asyncio.timeout(BOUND):
        with pytest.raises(HeartbeatTimeout, match="no data from brokerd"):
            await client.queue_stats("q")
    assert client.is_closed
    await client.close()


async def test_idle_client_sends_heartbeats(fake: FakeBroker) -> None:
    fake.heartbeat = 0.05

    def pong(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, Heartbeat):
            session.send(Heartbeat())
            return True
        return False

    fake.on_frame = pong
    async with await connect(fake, heartbeat=0.05) as client:
        await fake.wait_for(lambda: len(fake.of_type(Heartbeat)) >= 3)
        assert not client.is_closed


async def test_close_fails_pending_calls_and_later_calls(fake: FakeBroker) -> None:
    fake.on_publishes = lambda session, publishes: None
    client = await connect(fake)
    pending = asyncio.create_task(client.publish("", "q", b"x"))
    await fake.wait_for(lambda: bool(fake.of_type(Publish)))
    await client.close()
    with pytest.raises(ClientClosed):
        await pending
    with pytest.raises(ClientClosed):
        await client.declare_queue("q")
    assert fake.of_type(Close) == [Close(0, "client closing")]
    await client.close()  # idempotent


# --- the blocking client ---------------------------------------------------------


async def test_sync_client_works_from_a_plain_thread(fake: FakeBroker) -> None:
    def use_it() -> tuple[bool, bool, QueueInfo, int, list[bool]]:
        with brokerd_client.Client(fake.url, timeout=BOUND) as client:
            client.declare_queue("q")
            routed = client.publish("", "q", b"hello", headers={"k": "v"})
            unroutable = client.publish("", "nowhere", b"hello")
            stats = client.queue_stats("q")
            purged = client.purge_queue("q")
            many = client.publish_many([("", "q", b"1"), Message("", "q", b"2")])
            return routed, unroutable, stats, purged, many

    routed, unroutable, stats, purged, many = await asyncio.to_thread(use_it)
    assert (routed, unroutable, purged, many) == (True, False, 7, [True, True])
    assert stats == QueueInfo(3, 2, 1, 4)
    assert len(fake.sessions) == 1
    assert fake.of_type(Close) == [Close(0, "client closing")]


async def test_sync_client_is_thread_safe_and_shares_one_connection(fake: FakeBroker) -> None:
    import threading

    client = brokerd_client.Client(fake.url, timeout=BOUND)
    errors: list[BaseException] = []

    def publisher(n: int) -> None:
        try:
            for i in range(20):
                assert client.publish("", "q", b"%d-%d" % (n, i)) is True
        except BaseException as exc:
            errors.append(exc)

    def run_all() -> None:
        threads = [threading.Thread(target=publisher, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()

    await asyncio.to_thread(run_all)
    assert errors == []
    assert len(fake.sessions) == 1
    assert len(fake.of_type(Publish)) == 160
    with pytest.raises(ClientClosed):
        client.publish("", "q", b"after close")


async def test_sync_client_raises_typed_errors_and_reconnects(fake: FakeBroker) -> None:
    fake.errors_by_name["missing"] = ErrorCode.NOT_FOUND
    loop = asyncio.get_running_loop()

    def use_it() -> None:
        with brokerd_client.Client(fake.url, timeout=BOUND) as client:
            with pytest.raises(NotFound):
                client.delete_queue("missing")
            client.connect()
            first = fake.session
            # The fake broker lives on the test's loop: drop from there.
            asyncio.run_coroutine_threadsafe(drop(first), loop).result(BOUND)
            # The drop may or may not be noticed before the next call: either
            # that call fails with ConnectionLost or it already reconnects.
            try:
                client.declare_queue("q")
            except ConnectionLost:
                client.declare_queue("q")
            assert fake.session is not first

    async def drop(session: FakeSession) -> None:
        session.drop()
        await session.closed

    await asyncio.to_thread(use_it)
    assert len(fake.sessions) == 2


def test_sync_client_rejects_bad_urls_at_construction() -> None:
    with pytest.raises(ValueError, match="invalid broker URL"):
        brokerd_client.Client("http://localhost")


def test_sync_client_connect_failure_is_connection_lost() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        client = brokerd_client.Client(f"brokerd://127.0.0.1:{port}", connect_timeout=BOUND)
        with pytest.raises(ConnectionLost):
            client.declare_queue("q")
        client.close()


# --- extension frames, orphaned consumers, backpressure, uvloop -------------------


async def test_call_and_frame_handler_serve_protocol_extensions(fake: FakeBroker) -> None:
    from brokerd_protocol import Event, ResultGet

    def results(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, ResultGet):
            session.send(
                Ok(frame.req, {"t1": ["SUCCESS", b"42"]}),
                Event("revoke", {"task_ids": ["t1"]}),
            )
            return True
        return False

    fake.on_frame = results
    events: list[Event] = []
    async with await connect(fake) as client:
        client.set_frame_handler(Event, events.append)
        value = await client.call(lambda req: ResultGet(req, ["t1"]))
        assert value == {"t1": ["SUCCESS", b"42"]}
        await fake.wait_for(lambda: True)
        async with asyncio.timeout(BOUND):
            while not events:  # noqa: ASYNC110 - the handler has no event to await
                await asyncio.sleep(0.001)
        with pytest.raises(ValueError):
            client.set_frame_handler(Deliver, lambda f: None)
    assert events == [Event("revoke", {"task_ids": ["t1"]})]


async def test_unhandled_extension_frame_is_a_protocol_violation(fake: FakeBroker) -> None:
    from brokerd_protocol import Event

    async with await connect(fake) as client:
        pending = asyncio.create_task(client.queue_stats("q"))
        fake.on_frame = lambda session, frame: True
        await fake.wait_for(lambda: bool(fake.of_type(QueueStats)))
        fake.session.send(Event("revoke", {}))
        with pytest.raises(ConnectionLost, match="unexpected Event"):
            await pending


async def test_consume_cancelled_before_its_ok_cancels_the_orphan(fake: FakeBroker) -> None:
    held: list[Consume] = []

    def hold(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, Consume):
            held.append(frame)
            return True
        return False

    fake.on_frame = hold
    async with await connect(fake) as client:
        task = asyncio.create_task(client.consume("q"))
        await fake.wait_for(lambda: bool(held))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fake.session.send(Ok(held[0].req, 77), Deliver(77, 1, "", "q", b"x", {}, 1, 30.0))
        await fake.wait_for(lambda: bool(fake.of_type(Cancel)) and bool(fake.of_type(Nack)))
    assert fake.of_type(Cancel)[0].consumer == 77
    assert fake.of_type(Nack)[0].deliveries == [1]


async def test_broker_close_is_answered_with_close(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        fake.session.send(Close(0, "maintenance"))
        await fake.wait_for(lambda: bool(fake.of_type(Close)))
        with pytest.raises(ConnectionLost, match="maintenance"):
            await client.queue_stats("q")
    assert fake.of_type(Close)[0].code == 0


async def test_publish_many_stops_producing_while_the_socket_is_full(fake: FakeBroker) -> None:
    """Transport backpressure: when the broker stops reading, publish_many stops
    pulling messages from its iterable instead of buffering them all."""
    produced = 0
    total = 400

    def messages() -> Any:
        nonlocal produced
        for _ in range(total):
            produced += 1
            yield ("", "q", b"x" * 65536)

    async with await connect(fake, max_inflight=total) as client:
        transport = fake.session.transport
        assert transport is not None
        transport.pause_reading()
        task = asyncio.create_task(client.publish_many(messages()))
        conn = client._conn
        async with asyncio.timeout(BOUND):
            while not conn.must_wait():  # noqa: ASYNC110 - polling a private flag
                await asyncio.sleep(0.001)
        stalled_at = produced
        for _ in range(20):
            await asyncio.sleep(0)
        assert produced == stalled_at < total
        transport.resume_reading()
        async with asyncio.timeout(BOUND):
            assert await task == [True] * total
    assert produced == total


def test_the_async_client_runs_on_uvloop() -> None:
    """The same core flow on uvloop, whose transports differ from asyncio's."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        broker = FakeBroker()
        loop = asyncio.get_running_loop()
        broker.server = await loop.create_server(lambda: FakeSession(broker), "127.0.0.1", 0)
        broker.port = broker.server.sockets[0].getsockname()[1]
        fake_lost = {2}
        broker.lost = fake_lost
        async with await connect(broker) as client:
            assert await client.publish_many([("", "q", b"1"), ("", "nowhere", b"2")]) == [
                True,
                False,
            ]
            consumer = await client.consume("q")
            broker.session.deliver(100)
            broker.session.deliver(100)
            ds = [await consumer.next(timeout=BOUND) for _ in range(2)]
            results = await asyncio.gather(*(d.ack() for d in ds), return_exceptions=True)
            assert results[0] is None and isinstance(results[1], LeaseLost)
            assert len(broker.of_type(Ack)) == 1
            pending = asyncio.create_task(client.queue_stats("q"))
            broker.on_frame = lambda session, frame: True
            await broker.wait_for(lambda: bool(broker.of_type(QueueStats)))
            broker.session.drop()
            with pytest.raises(ConnectionLost):
                await pending
        broker.server.close()
        await broker.server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


# --- per-frame caps (SPEC §13): the SDK never exceeds them --------------------------

SETTLE_CAP = 10_000


async def test_settles_of_more_deliveries_than_the_cap_leave_in_frames_within_the_cap(
    fake: FakeBroker,
) -> None:
    n = SETTLE_CAP + 17
    async with await connect(fake) as client:
        consumer = await client.consume("q", prefetch=65535)
        for _ in range(n):
            fake.session.deliver(100)
        deliveries = [await consumer.next(timeout=BOUND) for _ in range(n)]
        await asyncio.gather(*(d.extend(60) for d in deliveries))
        await asyncio.gather(*(d.ack() for d in deliveries))
    for kind in (Extend, Ack):
        frames = fake.of_type(kind)
        assert len(frames) == 2, kind
        assert all(len(f.deliveries) <= SETTLE_CAP for f in frames), kind
        assert sorted(i for f in frames for i in f.deliveries) == list(range(1, n + 1)), kind


async def test_result_get_of_more_ids_than_the_cap_is_split_and_merged(fake: FakeBroker) -> None:
    from brokerd_protocol import ResultGet

    def results(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, ResultGet):
            known = {t: ["SUCCESS", t.encode()] for t in frame.task_ids if t.endswith("7")}
            session.send(Ok(frame.req, known))
            return True
        return False

    fake.on_frame = results
    ids = [f"task-{i}" for i in range(2_500)]
    async with await connect(fake) as client:
        found = await client.result_get(ids)
    frames = fake.of_type(ResultGet)
    assert [len(f.task_ids) for f in frames] == [1_000, 1_000, 500]
    assert [t for f in frames for t in f.task_ids] == ids
    assert found == {t: ("SUCCESS", t.encode()) for t in ids if t.endswith("7")}


async def test_revoke_of_more_ids_than_the_cap_is_split(fake: FakeBroker) -> None:
    from brokerd_protocol import Revoke

    ids = [f"task-{i}" for i in range(25_000)]
    async with await connect(fake) as client:
        await client.revoke(ids, terminate=True, ttl=60)
    frames = fake.of_type(Revoke)
    assert [len(f.task_ids) for f in frames] == [10_000, 10_000, 5_000]
    assert [t for f in frames for t in f.task_ids] == ids
    assert all(f.terminate and f.ttl == 60.0 for f in frames)


async def test_a_hello_too_large_for_the_handshake_is_refused_before_connecting(
    fake: FakeBroker,
) -> None:
    with pytest.raises(ValueError, match="16384"):
        await connect(fake, client_name="x" * 20_000)
    assert fake.sessions == []


# --- recovery (connect(..., recover=True); docs/ha.md) --------------------------


def _drop_first(kind: type[Frame]) -> Callable[[FakeSession, Frame], bool]:
    """On the first session, drop the connection when a ``kind`` frame arrives
    (unanswered: the client cannot know whether it took effect)."""

    def on_frame(session: FakeSession, frame: Frame) -> bool:
        if isinstance(frame, kind) and session is session.broker.sessions[0]:
            session.drop()
            return True
        return False

    return on_frame


async def test_recovery_sends_an_idempotent_request_again(fake: FakeBroker) -> None:
    fake.on_frame = _drop_first(QueueStats)
    async with await connect(fake, recover=True) as client:
        await client.declare_queue("q")
        info = await client.queue_stats("q")  # lost with the first connection, asked again
        assert info.ready == 3
        assert client.recoveries == 1
        second = fake.sessions[1].frames
        # Declared again before anything else, then the stats asked again.
        assert [type(f) for f in second] == [Hello, DeclareQueue, QueueStats]


async def test_recovery_fails_a_request_that_is_not_safe_to_send_twice(fake: FakeBroker) -> None:
    fake.on_frame = _drop_first(PurgeQueue)
    async with await connect(fake, recover=True) as client:
        with pytest.raises(ConnectionLost):
            await client.purge_queue("q")
        assert await client.purge_queue("q") == 7  # the next one goes on the new connection
        assert len(fake.of_type(PurgeQueue)) == 2
        assert not client.is_closed


async def test_recovery_gives_up_at_once_when_the_token_is_refused(fake: FakeBroker) -> None:
    fake.token = "right"
    client = await brokerd_client.connect(
        f"brokerd://right@127.0.0.1:{fake.port}", timeout=BOUND, recover=True
    )
    try:
        consumer = await client.consume("q")
        fake.token = "changed"
        fake.session.drop()
        async with asyncio.timeout(BOUND):
            # The refusal itself, raised where the lost connection would be.
            with pytest.raises(AuthenticationError, match="invalid token"):
                await consumer.next()
            with pytest.raises(AuthenticationError):
                await client.publish("", "q", b"x")
        assert client.is_closed
        assert len(fake.sessions) == 2  # one try, not retried
    finally:
        await client.close()


async def test_without_recovery_a_lost_connection_fails_the_consumer(fake: FakeBroker) -> None:
    async with await connect(fake) as client:
        consumer = await client.consume("q")
        fake.session.drop()
        async with asyncio.timeout(BOUND):
            with pytest.raises(ConnectionLost):
                await consumer.next()
        assert len(fake.sessions) == 1


async def test_recovery_declares_again_only_what_was_not_deleted(fake: FakeBroker) -> None:
    async with await connect(fake, recover=True) as client:
        await client.declare_exchange("ex", "topic")
        await client.declare_exchange("gone-ex", "fanout")
        await client.declare_queue("q")
        await client.declare_queue("gone-q")
        await client.bind("q", "ex", "a.#")
        await client.bind("gone-q", "ex", "b.#")  # goes with its queue
        await client.bind("q", "gone-ex", "")  # goes with its exchange
        await client.bind("q", "ex", "c.#")
        await client.unbind("q", "ex", "c.#")
        await client.delete_queue("gone-q")
        await client.delete_exchange("gone-ex")
        fake.session.drop()
        await client.queue_stats("q")  # waits for the recovered connection
        second = fake.sessions[1].frames
        assert [(type(f).__name__, getattr(f, "name", None)) for f in second[1:-1]] == [
            ("DeclareExchange", "ex"),
            ("DeclareQueue", "q"),
            ("Bind", None),
        ]
        assert (second[3].queue, second[3].exchange, second[3].routing_key) == ("q", "ex", "a.#")


async def test_recovery_remembers_a_bounded_number_of_declarations(
    fake: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brokerd_client import recovery

    monkeypatch.setattr(recovery, "MAX_REMEMBERED", 2)
    async with await connect(fake, recover=True) as client:
        for name in ("a", "b", "c"):
            await client.declare_queue(name)
        await client.declare_queue("a")  # already remembered: still fine
        fake.session.drop()
        await client.queue_stats("a")
        names = [f.name for f in fake.sessions[1].frames if isinstance(f, DeclareQueue)]
        assert names == ["a", "b"]
