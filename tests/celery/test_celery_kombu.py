"""kombu on brokerd: ``kombu.Connection("brokerd://...")`` against a real broker."""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celerykit import wait_for
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message as KombuMessage

from brokerd_client.ctl.main import run
from brokerd_client.errors import (
    AccessRefused,
    AuthenticationError,
    MessageTooLarge,
    NotFound,
    PreconditionFailed,
    Unroutable,
)


@pytest.fixture
def conn(broker: Any) -> Iterator[Connection]:
    with Connection(broker.url) as connection:
        connection.connect()
        yield connection


def drain(conn: Connection, consumer_queues: list[Queue], count: int, *, ack: bool = True,
          qos: int | None = None) -> list[KombuMessage]:  # fmt: skip
    got: list[KombuMessage] = []

    def on_message(body: Any, message: KombuMessage) -> None:
        got.append(message)
        if ack:
            message.ack()

    with Consumer(conn, consumer_queues, callbacks=[on_message], accept=["json"]) as consumer:
        if qos is not None:
            consumer.qos(prefetch_count=qos)
        while len(got) < count:
            conn.drain_events(timeout=10)
    return got


def test_direct_topic_and_fanout_exchanges_route_like_amqp(conn: Connection) -> None:
    direct = Exchange("d", "direct")
    topic = Exchange("t", "topic")
    fanout = Exchange("f", "fanout")
    qd = Queue("qd", direct, routing_key="k")
    qt = Queue("qt", topic, routing_key="a.*.c")
    qf1, qf2 = Queue("qf1", fanout), Queue("qf2", fanout)
    for q in (qd, qt, qf1, qf2):
        q(conn.default_channel).declare()
    producer = Producer(conn, serializer="json")
    producer.publish({"n": 1}, exchange=direct, routing_key="k")
    producer.publish({"n": 2}, exchange=direct, routing_key="other")
    producer.publish({"n": 3}, exchange=topic, routing_key="a.b.c")
    producer.publish({"n": 4}, exchange=topic, routing_key="a.c")
    producer.publish({"n": 5}, exchange=fanout, routing_key="ignored")
    producer.publish({"n": 6}, exchange="", routing_key="qd")  # the default exchange
    assert [m.payload["n"] for m in drain(conn, [qd], 2)] == [1, 6]
    assert [m.payload["n"] for m in drain(conn, [qt], 1)] == [3]
    assert [m.payload["n"] for m in drain(conn, [qf1], 1)] == [5]
    assert [m.payload["n"] for m in drain(conn, [qf2], 1)] == [5]
    assert conn.default_channel.queue_stats("qt")["ready"] == 0


def test_a_rejected_message_with_requeue_comes_back_redelivered(conn: Connection) -> None:
    q = Queue("rq")
    Producer(conn, serializer="json").publish({"n": 1}, routing_key="rq", declare=[q])
    (first,) = drain(conn, [q], 1, ack=False)
    assert not first.delivery_info["redelivered"]
    first.reject(requeue=True)
    (again,) = drain(conn, [q], 1)
    assert again.delivery_info["redelivered"]
    assert again.payload == {"n": 1}


def test_a_rejected_message_without_requeue_is_gone(conn: Connection) -> None:
    q = Queue("gone")
    Producer(conn, serializer="json").publish({"n": 1}, routing_key="gone", declare=[q])
    (first,) = drain(conn, [q], 1, ack=False)
    first.reject(requeue=False)
    wait_for(lambda: conn.default_channel.queue_stats("gone")["leased"] == 0, "the reject")
    assert conn.default_channel.queue_stats("gone")["ready"] == 0


def test_higher_priorities_are_delivered_first(conn: Connection) -> None:
    q = Queue("prio", queue_arguments={"x-max-priority": 10})
    producer = Producer(conn, serializer="json")
    for priority in (1, 5, 9, 0):
        producer.publish({"p": priority}, routing_key="prio", priority=priority, declare=[q])
    assert [m.payload["p"] for m in drain(conn, [q], 4)] == [9, 5, 1, 0]


def test_prefetch_is_exact_and_an_ack_lets_the_next_one_in(conn: Connection) -> None:
    q = Queue("pf")
    producer = Producer(conn, serializer="json")
    for n in range(5):
        producer.publish({"n": n}, routing_key="pf", declare=[q])
    got: list[KombuMessage] = []
    on_message = got.append
    with Consumer(conn, [q], on_message=on_message, accept=["json"], prefetch_count=3) as c:
        wait_for(lambda: _drain_once(conn) or len(got) >= 3, "three deliveries")
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.5)
        assert len(got) == 3
        stats = conn.default_channel.queue_stats("pf")
        assert (stats["leased"], stats["ready"]) == (3, 2)
        got[0].ack()
        conn.drain_events(timeout=10)
        assert len(got) == 4
        # Raising the prefetch on the fly re-consumes at the new value.
        c.qos(prefetch_count=10)
        conn.drain_events(timeout=10)
        assert len(got) == 5


def _drain_once(conn: Connection) -> bool:
    with contextlib.suppress(socket.timeout):
        conn.drain_events(timeout=0.2)
    return False


def test_basic_get_returns_one_ready_message_or_none(conn: Connection) -> None:
    q = Queue("get")
    bound = q(conn.default_channel)
    bound.declare()
    assert bound.get() is None
    Producer(conn, serializer="json").publish({"n": 1}, routing_key="get")
    message = bound.get(accept=["json"])
    assert message is not None
    assert message.payload == {"n": 1}
    assert conn.default_channel.queue_stats("get")["leased"] == 1
    message.ack()
    wait_for(lambda: conn.default_channel.queue_stats("get")["leased"] == 0, "the ack")
    assert bound.get() is None


def test_drain_events_times_out_when_nothing_comes(conn: Connection) -> None:
    q = Queue("quiet")
    with Consumer(conn, [q], callbacks=[lambda body, m: None]), pytest.raises(socket.timeout):
        conn.drain_events(timeout=0.3)


def test_a_future_eta_is_held_by_the_broker_and_delivered_with_eta_cleared(
    conn: Connection,
) -> None:
    from datetime import UTC, datetime, timedelta

    q = Queue("eta")
    eta = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    Producer(conn, serializer="json").publish(
        {"n": 1}, routing_key="eta", declare=[q], headers={"eta": eta, "id": "task-1"}
    )
    stats = conn.default_channel.queue_stats("eta")
    assert (stats["delayed"], stats["ready"]) == (1, 0)
    (message,) = drain(conn, [q], 1)
    assert message.headers["eta"] is None
    assert message.headers["id"] == "task-1"


def test_no_ack_consumers_are_acked_by_the_transport(conn: Connection) -> None:
    q = Queue("noack")
    Producer(conn, serializer="json").publish({"n": 1}, routing_key="noack", declare=[q])
    got: list[Any] = []
    with Consumer(conn, [q], callbacks=[lambda body, m: got.append(body)], no_ack=True):
        conn.drain_events(timeout=10)
    assert got == [{"n": 1}]
    wait_for(lambda: conn.default_channel.queue_stats("noack")["leased"] == 0, "the auto-ack")


def test_redeclaring_a_queue_with_other_options_is_a_channel_error(conn: Connection) -> None:
    Queue("strict", message_ttl=10)(conn.default_channel).declare()
    with pytest.raises(PreconditionFailed) as info:
        Queue("strict", message_ttl=20)(conn.default_channel).declare()
    assert isinstance(info.value, conn.channel_errors)
    assert "PRECONDITION_FAILED" in str(info.value)


def test_a_mandatory_publish_that_routes_nowhere_raises(conn: Connection) -> None:
    with pytest.raises(Unroutable):
        Producer(conn).publish(b"x", routing_key="no-such-queue", mandatory=True)
    # Not mandatory: accepted and reported as unroutable, no error.
    Producer(conn).publish(b"x", routing_key="no-such-queue")


def test_a_message_over_the_frame_limit_is_refused_before_sending(conn: Connection) -> None:
    q = Queue("big")
    q(conn.default_channel).declare()
    limit = conn.connection.wire.max_frame
    with pytest.raises(MessageTooLarge):
        Producer(conn).publish(b"x" * (limit + 1), routing_key="big")
    Producer(conn).publish(b"small", routing_key="big")  # the connection is still fine
    assert conn.default_channel.queue_stats("big")["ready"] == 1


def test_the_token_is_used_and_never_shown(broker_factory: Any) -> None:
    proc = broker_factory(token="s3cret-token").start()
    with Connection(proc.url) as good:
        good.connect()
        assert "s3cret-token" not in good.as_uri()
        assert "s3cret-token" not in repr(good)
    bad_url = proc.url.replace("s3cret-token", "wrong")
    with Connection(bad_url) as bad, pytest.raises(AuthenticationError):
        bad.connection  # noqa: B018
        bad.transport.establish_connection()


def test_every_confirmed_publish_survives_a_kill_9_of_the_broker(broker: Any) -> None:
    q = Queue("durable-q", durable=True)
    confirmed = 0
    with Connection(broker.url) as connection:
        q(connection.default_channel).declare()
        producer = Producer(connection)
        killer = threading.Timer(0.5, broker.kill)
        killer.start()
        try:
            while True:
                producer.publish(b"m%d" % confirmed, routing_key="durable-q")
                confirmed += 1
        except connection.connection_errors:
            pass
        finally:
            killer.join()
    assert confirmed > 0
    broker.start()
    with Connection(broker.url) as connection:
        _, ready, _ = q(connection.default_channel).queue_declare(passive=True)
    assert ready >= confirmed


def test_a_delivery_whose_lease_lapsed_while_the_consumer_was_busy_runs_once(
    broker: Any,
) -> None:
    q = Queue("busy")
    seen: list[tuple[Any, bool]] = []
    with (
        Connection(broker.url, transport_options={"lease": 1.0}) as consumer_conn,
        Connection(broker.url) as publisher_conn,
    ):
        q(consumer_conn.default_channel).declare()
        producer = Producer(publisher_conn, serializer="json")

        def on_message(body: Any, message: KombuMessage) -> None:
            seen.append((body, message.delivery_info["redelivered"]))
            if body == {"n": 1}:
                # While this thread is busy, n=2 arrives and its lease runs out
                # in the socket buffer; the broker then delivers it again.
                producer.publish({"n": 2}, routing_key="busy")
                time.sleep(2.5)
            message.ack()

        producer.publish({"n": 1}, routing_key="busy")
        with Consumer(consumer_conn, [q], callbacks=[on_message], accept=["json"]):
            wait_for(lambda: _drain_once(consumer_conn) or len(seen) >= 2, "both messages")
            with pytest.raises(TimeoutError):
                consumer_conn.drain_events(timeout=1.0)
    assert seen == [({"n": 1}, False), ({"n": 2}, True)]


def test_an_auto_delete_queue_goes_away_with_its_last_consumer(conn: Connection) -> None:
    q = Queue("ephemeral", durable=False, auto_delete=True, expires=30)
    with Consumer(conn, [q], callbacks=[lambda body, m: None]):
        assert conn.default_channel.queue_stats("ephemeral")["consumers"] == 1
    with pytest.raises(NotFound):
        conn.default_channel.queue_stats("ephemeral")


def test_a_user_and_password_log_in_with_that_users_rights(
    broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("app-pw\n"))
    ctl = ["--data-dir", str(broker.data_dir)]
    assert run([*ctl, "add_user", "app"], env={})[0] == 0
    assert run([*ctl, "set_permissions", "app", "^app", "^app|amq.default", "^app"], env={})[0] == 0
    url = broker.url.replace("brokerd://", "brokerd://app:app-pw@")
    with Connection(url) as conn:
        assert "app-pw" not in conn.as_uri()
        Queue("app.jobs")(conn.default_channel).declare()
        Producer(conn).publish(b"x", routing_key="app.jobs")
        assert conn.default_channel.queue_stats("app.jobs")["ready"] == 1
        with pytest.raises(AccessRefused, match="configure permission"):
            Queue("other")(conn.default_channel).declare()
    with Connection(url.replace("app-pw", "wrong")) as bad, pytest.raises(AuthenticationError):
        bad.connection  # noqa: B018
        bad.transport.establish_connection()


def test_the_url_path_is_the_vhost_kombu_passes_as_virtual_host(broker: Any) -> None:
    import brokerd_client

    for name in ("va", "vb"):
        code, _, err = run(["--data-dir", str(broker.data_dir), "add_vhost", name], env={})
        assert code == 0, err
    queue = Queue("celery", Exchange("celery", "direct"), routing_key="celery")
    with Connection(broker.url + "/va") as a, Connection(broker.url + "/vb") as b:
        for c in (a, b):
            with c.channel() as channel:
                queue(channel).declare()
        with Producer(a) as producer:
            producer.publish({"to": "va"}, exchange=queue.exchange, routing_key="celery")
        with brokerd_client.Client(broker.url + "/va") as native:
            wait_for(lambda: native.queue_stats("celery").ready == 1, "the message in va")
        with brokerd_client.Client(broker.url + "/vb") as native:
            assert native.queue_stats("celery").ready == 0
        with brokerd_client.Client(broker.url) as native, pytest.raises(NotFound):
            native.queue_stats("celery")
        got = drain(a, [queue], 1)
        assert [m.payload for m in got] == [{"to": "va"}]
