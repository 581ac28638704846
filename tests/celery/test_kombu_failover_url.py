"""The kombu transport takes a failover URL (``brokerd://h1:5673,h2:5673/``):
kombu hands it over unparsed (``can_parse_url``) and the transport tries the
nodes in turn. The standby-node case is in tests/fault/test_pg_failover.py."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from kombu import Connection, Producer, Queue

from brokerd_client.celery.transport import _target
from brokerd_client.errors import AuthenticationError, ConnectionLost


def _dead_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_node_that_is_down_is_skipped(broker: Any) -> None:
    url = f"brokerd://127.0.0.1:{_dead_port()},127.0.0.1:{broker.port}/"
    with Connection(url) as conn:
        conn.connect()
        q = Queue("fo-q")
        Producer(conn).publish(b"hello", routing_key="fo-q", declare=[q])
        assert conn.default_channel.queue_stats("fo-q")["ready"] == 1


def test_the_token_of_a_failover_url_is_used_and_never_shown(broker_factory: Any) -> None:
    proc = broker_factory(token="s3cret-token").start()
    url = f"brokerd://s3cret-token@127.0.0.1:{_dead_port()},127.0.0.1:{proc.port}/"
    with Connection(url) as good:
        good.connect()
        assert "s3cret-token" not in good.as_uri()
        assert "127.0.0.1" in good.as_uri()
        info = good.info()  # what Celery's inspect stats shows, less the password
        assert "s3cret-token" not in str(info["hostname"])
        assert info["port"] == int(url.split(":")[2].split(",", maxsplit=1)[0])
        assert "s3cret-token@" in good.as_uri(include_password=True)
    with (
        Connection(url.replace("s3cret-token", "wrong")) as bad,
        pytest.raises(AuthenticationError),
    ):
        bad.transport.establish_connection()  # refused: raised at once, not retried


def test_no_node_up_is_a_connection_error_after_the_failover_timeout() -> None:
    url = f"brokerd://127.0.0.1:{_dead_port()},127.0.0.1:{_dead_port()}"
    with (
        Connection(url, transport_options={"failover_timeout": 0.3}) as conn,
        pytest.raises(ConnectionLost),
    ):
        conn.transport.establish_connection()


class _Info:
    def __init__(self, hostname: str, port: int | None = None, **kw: Any) -> None:
        self.hostname = hostname
        self.port = port
        self.userid = kw.get("userid")
        self.password = kw.get("password")
        self.virtual_host = kw.get("vhost", "/")


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (_Info("brokerd://h1"), ([("h1", 5673)], None, None, None, "/")),
        (_Info("brokerd://h1/"), ([("h1", 5673)], None, None, None, "/")),
        (_Info("brokerd://tok@h1:1,h2:2//"), ([("h1", 1), ("h2", 2)], None, "tok", None, "/")),
        (_Info("brokerd://:tok@h1/v%2F1"), ([("h1", 5673)], None, "tok", None, "v/1")),
        (
            _Info("brokerds://u:p%40w@[::1]:7,h2/va"),
            ([("::1", 7), ("h2", 5673)], "u", None, "p@w", "va"),
        ),
        (_Info("h1", 9, userid="u", password="p", vhost="vb"), ([("h1", 9)], "u", None, "p", "vb")),
    ],
)
def test_what_the_transport_reads_from_kombus_parameters(
    info: _Info, expected: tuple[Any, ...]
) -> None:
    assert _target(info) == expected
