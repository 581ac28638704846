"""Failover URLs and finding the active node (``brokerd_client.failover``):
several nodes in one URL, a standby's redirect followed once, refusals that
another node cannot fix raised at once, rounds with jittered backoff."""

from __future__ import annotations

import pytest

from brokerd_client.errors import (
    AuthenticationError,
    BrokerError,
    ConnectionLost,
    Redirected,
    TLSError,
)
from brokerd_client.failover import BACKOFF_MAX, backoff, connect_any
from brokerd_client.url import BrokerURL, parse_url


def test_a_failover_url_lists_every_node_in_order() -> None:
    url = parse_url("brokerd://s3cret@h1:5673,h2,[::1]:6000/")
    assert [(n.host, n.port, n.token) for n in url.candidates()] == [
        ("h1", 5673, "s3cret"),
        ("h2", 5673, "s3cret"),
        ("::1", 6000, "s3cret"),
    ]
    assert str(url) == "brokerd://h1:5673,h2:5673,[::1]:6000"
    assert "s3cret" not in repr(url) and "s3cret" not in str(url)


def test_a_single_node_url_has_no_alternates() -> None:
    url = parse_url("brokerd://h1:7000")
    assert url.alternates == () and url.candidates() == [url]


@pytest.mark.parametrize("url", ["brokerd://h1,,h2", "brokerd://h1,", "brokerd://,h1"])
def test_an_empty_node_in_the_list_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="empty host in the list of nodes"):
        parse_url(url)


def test_a_bad_port_in_any_node_is_refused() -> None:
    with pytest.raises(ValueError, match="port 'x' is not a number"):
        parse_url("brokerd://h1:5673,h2:x")


def test_a_redirect_address_keeps_the_token_and_tls() -> None:
    url = parse_url("brokerds://tok@h1,h2")
    moved = url.moved_to("10.0.0.9:7001")
    assert (moved.host, moved.port, moved.token, moved.tls, moved.alternates) == (
        "10.0.0.9",
        7001,
        "tok",
        True,
        (),
    )
    assert url.moved_to("[::2]:5").host == "::2"


def test_backoff_is_jittered_and_capped() -> None:
    assert backoff(0, lambda: 1.0) == pytest.approx(0.1)
    assert backoff(2, lambda: 1.0) == pytest.approx(0.4)
    assert backoff(40, lambda: 1.0) == BACKOFF_MAX
    assert backoff(5, lambda: 0.0) == 0.0


class Nodes:
    """A fake cluster: each address answers with a result or an error."""

    def __init__(self, answers: dict[str, list[str | BrokerError]]) -> None:
        self.answers = answers
        self.tried: list[str] = []

    async def open(self, node: BrokerURL) -> str:
        where = f"{node.host}:{node.port}"
        self.tried.append(where)
        queue = self.answers[where]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BrokerError):
            raise answer
        return answer


def _lost(where: str) -> ConnectionLost:
    return ConnectionLost(f"cannot connect to brokerd at {where}")


async def test_a_standby_redirect_is_followed_to_the_active_node() -> None:
    nodes = Nodes(
        {
            "a:1": [Redirected("standby", "c:3")],
            "c:3": ["client on c"],
        }
    )
    url = parse_url("brokerd://a:1,b:2")
    assert await connect_any(url.candidates(), nodes.open, 0) == "client on c"
    assert nodes.tried == ["a:1", "c:3"]


async def test_a_redirect_is_followed_once_never_in_a_loop() -> None:
    nodes = Nodes(
        {
            "a:1": [Redirected("standby", "b:2")],
            "b:2": [Redirected("standby", "a:1")],
        }
    )
    with pytest.raises(Redirected):
        await connect_any(parse_url("brokerd://a:1").candidates(), nodes.open, 0)
    assert nodes.tried == ["a:1", "b:2"]


async def test_dead_nodes_are_skipped_and_rounds_repeat_until_one_answers() -> None:
    nodes = Nodes(
        {
            "a:1": [_lost("a:1")],
            "b:2": [Redirected("standby, loading", ""), Redirected("standby", ""), "client"],
        }
    )
    got = await connect_any(parse_url("brokerd://a:1,b:2").candidates(), nodes.open, 30)
    assert got == "client"
    assert nodes.tried == ["a:1", "b:2"] * 3


async def test_the_last_failure_is_raised_when_the_time_is_up() -> None:
    nodes = Nodes({"a:1": [_lost("a:1")], "b:2": [_lost("b:2")]})
    with pytest.raises(ConnectionLost, match="b:2"):
        await connect_any(parse_url("brokerd://a:1,b:2").candidates(), nodes.open, 0)


@pytest.mark.parametrize(
    "refusal",
    [
        AuthenticationError("invalid token"),
        TLSError("certificate not trusted"),
    ],
)
async def test_a_refusal_no_other_node_can_fix_is_raised_at_once(refusal: BrokerError) -> None:
    nodes = Nodes({"a:1": [refusal], "b:2": ["client"]})
    with pytest.raises(type(refusal)):
        await connect_any(parse_url("brokerd://a:1,b:2").candidates(), nodes.open, 30)
    assert nodes.tried == ["a:1"]


async def test_a_wrapped_broker_refusal_is_raised_at_once() -> None:
    wrapped = ConnectionLost("broker closed the connection: invalid token")
    wrapped.__cause__ = AuthenticationError("invalid token")
    nodes = Nodes({"a:1": [wrapped], "b:2": ["client"]})
    with pytest.raises(ConnectionLost):
        await connect_any(parse_url("brokerd://a:1,b:2").candidates(), nodes.open, 30)
    assert nodes.tried == ["a:1"]
