"""The kombu transport on an event loop (kombu's hub, as Celery's worker runs
it): deliveries read by blocking calls are dispatched without waiting for the
loop to time out, every buffered delivery goes out on one readable event, and
the acks of one loop turn leave in one Ack frame."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celerykit import wait_for
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.asynchronous import Hub
from kombu.message import Message as KombuMessage

from brokerd_client.celery.transport import TransportConnection
from brokerd_client.celery.wire import ACK
from brokerd_client.errors import ConnectionLost
from brokerd_protocol import Ack, Decoder, Frame, Publish


class RecordingSocket:
    """Wraps the transport's socket and decodes every frame written to it."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._decoder = Decoder()
        self.frames: list[Frame] = []
        self.writes: list[list[Frame]] = []

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)
        self._decoder.feed(data)
        batch: list[Frame] = []
        while (frame := self._decoder.next_frame()) is not None:
            batch.append(frame)
        self.frames.extend(batch)
        self.writes.append(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class FakeHub:
    """Just what the transport uses of a kombu hub; the test turns it by hand."""

    def __init__(self) -> None:
        self.readers: dict[int, Callable[..., Any]] = {}
        self.on_tick: set[Callable[[], None]] = set()
        self.soon: list[Callable[[], Any]] = []

    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        self.readers[fd] = lambda: callback(*args)

    def remove(self, fd: int) -> None:
        self.readers.pop(fd, None)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.soon.append(lambda: callback(*args))

    def end_turn(self) -> None:
        """Run what was scheduled, then the end-of-turn callbacks (as a hub
        turn does before it polls)."""
        todo, self.soon = self.soon, []
        for item in todo:
            item()
        for tick in list(self.on_tick):
            tick()


@pytest.fixture
def conn(broker: Any) -> Iterator[Connection]:
    with Connection(broker.url) as connection:
        connection.connect()
        yield connection


def _transport_conn(conn: Connection) -> TransportConnection:
    tc = conn.connection
    assert isinstance(tc, TransportConnection)
    return tc


def _fill(conn: Connection, name: str, count: int) -> Queue:
    queue = Queue(name, Exchange(name, "direct"), name)
    with Producer(conn.default_channel, exchange=queue.exchange, routing_key=name) as producer:
        for i in range(count):
            producer.publish({"i": i}, declare=[queue], serializer="json")
    return queue


def _leased(broker: Any, name: str) -> int:
    with Connection(broker.url) as other:
        return int(other.default_channel.queue_stats(name)["leased"])


def _buffer_deliveries(broker: Any, conn: Connection, name: str, count: int) -> None:
    """Wait until the broker leased ``count`` deliveries to ``conn``, then make a
    blocking call on it: its reply comes after them, so they are read (and
    held in user space) by the time it returns."""
    wait_for(lambda: _leased(broker, name) == count, f"{count} deliveries leased")
    conn.default_channel.queue_stats(name)
    assert len(_transport_conn(conn).wire.deliveries) == count


def test_deliveries_read_by_a_blocking_call_never_leave_their_acks_waiting_on_poll(
    broker: Any, conn: Connection
) -> None:
    count = 20
    queue = _fill(conn, "hub-wake", count)
    hub = Hub()
    loop = hub.create_loop()
    polls_with_acks_waiting: list[int] = []
    state = {"dispatched": 0, "acked": 0}
    poll = hub.poller.poll

    def watched_poll(timeout: float) -> Any:
        # Celery acks with hub.call_soon: an ack scheduled and not yet run
        # while the hub blocks is the stall this test guards against.
        polls_with_acks_waiting.append(state["dispatched"] - state["acked"])
        return poll(timeout)

    hub.poller.poll = watched_poll  # type: ignore[method-assign]

    def ack(message: KombuMessage) -> None:
        message.ack()
        state["acked"] += 1

    def on_message(body: Any, message: KombuMessage) -> None:
        state["dispatched"] += 1
        hub.call_soon(ack, message)

    try:
        conn.transport.register_with_event_loop(conn.connection, hub)
        with Consumer(conn, [queue], callbacks=[on_message], accept=["json"]) as consumer:
            consumer.qos(prefetch_count=count)
            # Deliveries arrive with (and after) the Consume reply and wait in user space.
            _buffer_deliveries(broker, conn, "hub-wake", count)
            wire = _transport_conn(conn).wire
            turns = 0
            while state["acked"] < count or wire._settling:
                next(loop)
                turns += 1
                assert turns < 1000, "the hub never settled every delivery"
    finally:
        hub.close()
    assert state == {"dispatched": count, "acked": count}
    assert not any(polls_with_acks_waiting), polls_with_acks_waiting
    wait_for(lambda: _leased(broker, "hub-wake") == 0, "the broker to see every ack")


def test_one_readable_event_dispatches_every_buffered_delivery_and_one_ack_frame_settles_them(
    broker: Any, conn: Connection
) -> None:
    count = 30
    queue = _fill(conn, "hub-batch", count)
    tc = _transport_conn(conn)
    hub = FakeHub()
    conn.transport.register_with_event_loop(tc, hub)
    recorder = RecordingSocket(tc.wire._stream.sock)
    tc.wire._stream.sock = recorder  # type: ignore[assignment]
    got: list[KombuMessage] = []

    def on_message(body: Any, message: KombuMessage) -> None:
        got.append(message)
        hub.call_soon(message.ack)  # as Celery acks a finished task

    with Consumer(conn, [queue], callbacks=[on_message], accept=["json"]) as consumer:
        consumer.qos(prefetch_count=count)
        _buffer_deliveries(broker, conn, "hub-batch", count)
        recorder.frames.clear()
        conn.transport.on_readable(tc, hub)
        assert [m.payload["i"] for m in got] == list(range(count))
        assert recorder.frames == [], "nothing is written while the turn dispatches"
        hub.end_turn()
        acks = [f for f in recorder.frames if isinstance(f, Ack)]
        assert len(acks) == 1
        assert sorted(acks[0].deliveries) == sorted(m.delivery_tag for m in got)
        wait_for(lambda: _leased(broker, "hub-batch") == 0, "the broker to see the ack")
    conn.transport.unregister_from_event_loop(tc, hub)


def test_a_deferred_ack_goes_out_before_any_later_frame(broker: Any, conn: Connection) -> None:
    queue = _fill(conn, "hub-order", 1)
    tc = _transport_conn(conn)
    hub = FakeHub()
    conn.transport.register_with_event_loop(tc, hub)
    recorder = RecordingSocket(tc.wire._stream.sock)
    tc.wire._stream.sock = recorder  # type: ignore[assignment]
    got: list[KombuMessage] = []
    with Consumer(conn, [queue], callbacks=[lambda b, m: got.append(m)], accept=["json"]):
        while not got:
            conn.transport.on_readable(tc, hub)
        got[0].ack()
        assert not any(isinstance(f, Ack) for f in recorder.frames)  # deferred
        recorder.writes.clear()
        with Producer(conn.default_channel, exchange=queue.exchange, routing_key="hub-order") as p:
            p.publish({"i": 1}, serializer="json")
        kinds = [type(f) for f in recorder.writes[0]]
        assert kinds[:2] == [Ack, Publish]
    conn.transport.unregister_from_event_loop(tc, hub)


def test_an_ack_from_another_thread_is_written_at_once(broker: Any, conn: Connection) -> None:
    queue = _fill(conn, "hub-thread", 1)
    tc = _transport_conn(conn)
    hub = FakeHub()
    conn.transport.register_with_event_loop(tc, hub)
    recorder = RecordingSocket(tc.wire._stream.sock)
    tc.wire._stream.sock = recorder  # type: ignore[assignment]
    got: list[KombuMessage] = []
    with Consumer(conn, [queue], callbacks=[lambda b, m: got.append(m)], accept=["json"]):
        while not got:
            conn.transport.on_readable(tc, hub)
        acker = threading.Thread(target=got[0].ack)  # a threads-pool worker
        acker.start()
        acker.join()
        assert [f for f in recorder.frames if isinstance(f, Ack)] != []
        wait_for(lambda: _leased(broker, "hub-thread") == 0, "the broker to see the ack")
    conn.transport.unregister_from_event_loop(tc, hub)


def test_acks_deferred_on_a_connection_that_died_are_dropped_and_new_ones_raise(
    conn: Connection,
) -> None:
    wire = _transport_conn(conn).wire
    wire.settle_later(ACK, [1, 2])
    wire._fail(ConnectionLost("the broker went away"))
    wire.flush()  # the hub's end of turn: nothing to write to, nothing raised
    with pytest.raises(ConnectionLost):
        wire.settle_later(ACK, [3])
