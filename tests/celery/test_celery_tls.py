"""kombu and Celery over TLS: ``brokerds://`` and Celery's ``broker_use_ssl``.

The transport's blocking connection runs TLS on its own (celery/stream.py);
these tests prove it carries kombu's traffic both ways, that Celery's setting
reaches it, and that an untrusted broker is refused with the TLS reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message as KombuMessage
from tlskit import Pki

import brokerd_client
from brokerd_client.errors import TLSError


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(broker_factory: Any, pki: Pki) -> Iterator[Any]:
    yield broker_factory(*pki.server().flags()).start()


def url(broker: Any) -> str:
    return f"brokerds://127.0.0.1:{broker.port}"


def test_kombu_publishes_and_consumes_over_brokerds(tls_broker: Any, pki: Pki) -> None:
    queue = Queue("tls-jobs")
    count = 300  # several TLS records per read, and reads split across records
    with Connection(url(tls_broker), ssl={"ssl_ca_certs": str(pki.ca_file)}) as conn:
        conn.connect()
        producer = Producer(conn, serializer="json")
        for n in range(count):
            producer.publish({"n": n, "pad": "x" * 2000}, routing_key="tls-jobs", declare=[queue])
        got: list[int] = []

        def on_message(body: Any, message: KombuMessage) -> None:
            got.append(body["n"])
            message.ack()

        with Consumer(conn, [queue], callbacks=[on_message], accept=["json"]) as consumer:
            consumer.qos(prefetch_count=50)
            while len(got) < count:
                conn.drain_events(timeout=10)
    assert got == list(range(count))


def test_kombu_refuses_a_broker_it_cannot_verify(tls_broker: Any) -> None:
    with Connection(url(tls_broker), connect_timeout=10) as conn, pytest.raises(TLSError) as raised:
        conn.connect()
    assert "not signed by a CA this client trusts" in str(raised.value)


def test_celery_broker_use_ssl_turns_tls_on_for_a_brokerd_url(tls_broker: Any, pki: Pki) -> None:
    app = Celery("tlsproj", set_as_current=False)
    app.conf.broker_url = f"brokerd://localhost:{tls_broker.port}"
    app.conf.broker_use_ssl = {"ssl_ca_certs": str(pki.ca_file)}
    try:
        app.send_task("proj.add", args=(1, 2), queue="tls-celery")
    finally:
        app.close()
    with brokerd_client.Client(url(tls_broker), cafile=str(pki.ca_file)) as client:
        assert client.queue_stats("tls-celery").ready == 1


def _backend_app(broker: Any, **conf: Any) -> Celery:
    app = Celery("tlsresults", set_as_current=False)
    app.conf.result_backend = url(broker)
    app.conf.update(conf)
    return app


def test_the_result_backend_speaks_tls_with_brokerd_backend_use_ssl(
    tls_broker: Any, pki: Pki
) -> None:
    app = _backend_app(tls_broker, brokerd_backend_use_ssl={"ssl_ca_certs": str(pki.ca_file)})
    try:
        app.backend.store_result("tls-task-1", 42, "SUCCESS")
        assert app.AsyncResult("tls-task-1").get(timeout=10) == 42
    finally:
        app.close()


def test_the_result_backend_falls_back_to_broker_use_ssl_for_a_brokerd_broker(
    tls_broker: Any, pki: Pki
) -> None:
    app = _backend_app(
        tls_broker,
        broker_url=url(tls_broker),
        broker_use_ssl={"ssl_ca_certs": str(pki.ca_file)},
    )
    try:
        app.backend.store_result("tls-task-2", "ok", "SUCCESS")
        assert app.AsyncResult("tls-task-2").result == "ok"
    finally:
        app.close()


def test_the_result_backend_refuses_a_broker_it_cannot_verify(tls_broker: Any) -> None:
    app = _backend_app(tls_broker)
    try:
        with pytest.raises(TLSError):
            app.backend.store_result("tls-task-3", 1, "SUCCESS")
    finally:
        app.close()
