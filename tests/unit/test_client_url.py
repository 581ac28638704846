"""brokerd:// URL parsing: what is accepted, and that mistakes fail loudly."""

from __future__ import annotations

import pytest

from brokerd_client.url import DEFAULT_PORT, BrokerURL, parse_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("brokerd://localhost", BrokerURL("localhost", DEFAULT_PORT, None)),
        ("brokerd://localhost/", BrokerURL("localhost", DEFAULT_PORT, None)),
        ("brokerd://localhost:5673", BrokerURL("localhost", 5673, None)),
        ("brokerd://10.0.0.7:1234", BrokerURL("10.0.0.7", 1234, None)),
        ("brokerd://s3cret@broker.internal:7000", BrokerURL("broker.internal", 7000, "s3cret")),
        ("BROKERD://tok@host", BrokerURL("host", DEFAULT_PORT, "tok")),
        ("brokerd://[::1]", BrokerURL("::1", DEFAULT_PORT, None)),
        ("brokerd://[::1]:6000", BrokerURL("::1", 6000, None)),
        ("brokerd://t@[2001:db8::2]:6000/", BrokerURL("2001:db8::2", 6000, "t")),
        # Percent-encoding lets a token contain '@', ':' or '/'.
        ("brokerd://a%40b%3Ac%2Fd@host", BrokerURL("host", DEFAULT_PORT, "a@b:c/d")),
        # A name, a colon and a password: a user of the broker; ':secret' is a token.
        ("brokerd://user:pass@host", BrokerURL("host", DEFAULT_PORT, user="user", password="pass")),
        ("brokerd://a%3Ab:p%40ss@h:1", BrokerURL("h", 1, user="a:b", password="p@ss")),
        ("brokerd://:tok@host", BrokerURL("host", DEFAULT_PORT, "tok")),
        ("brokerds://u:p@host", BrokerURL("host", DEFAULT_PORT, tls=True, user="u", password="p")),
    ],
)
def test_good_urls_parse_to_their_parts(url: str, expected: BrokerURL) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("localhost:5673", "expected 'brokerd://"),
        ("amqp://localhost", "scheme must be 'brokerd'"),
        ("brokerd://", "missing host"),
        ("brokerd://tok@", "missing host"),
        ("brokerd://@host", "empty token"),
        ("brokerd://:@host", "empty token"),
        ("brokerd://user:@host", "empty password"),
        ("brokerd://host:", "port '' is not a number"),
        ("brokerd://host:abc", "port 'abc' is not a number"),
        ("brokerd://host:0", "out of range"),
        ("brokerd://host:65536", "out of range"),
        ("brokerd://host:-1", "not a number"),
        ("brokerd://::1", "IPv6 address in brackets"),
        ("brokerd://[::1", "unclosed '['"),
        ("brokerd://[nothex]:1", "is not an IPv6 address"),
        ("brokerd://[::1]x", "unexpected 'x'"),
        ("brokerd://host/a/b", "write a '/' in it as %2F"),
        ("brokerd://host/a%00b", "no control characters"),
        ("brokerd://host?heartbeat=1", "query strings"),
        ("brokerd://bad_host!", "not a valid host name"),
    ],
)
def test_bad_urls_raise_value_error_naming_the_problem(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid broker URL") as info:
        parse_url(url)
    assert fragment in str(info.value)


def test_errors_and_repr_never_show_the_token() -> None:
    with pytest.raises(ValueError) as info:
        parse_url("brokerd://topsecret@host:99999")
    assert "topsecret" not in str(info.value)
    url = parse_url("brokerd://topsecret@host")
    assert "topsecret" not in repr(url)
    assert "topsecret" not in str(url)
    assert str(url) == "brokerd://host:5673"
    assert str(parse_url("brokerd://[::1]:7")) == "brokerd://[::1]:7"


def test_errors_and_repr_never_show_the_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_url("brokerd://app:topsecret@host:99999")
    assert "topsecret" not in str(info.value)
    url = parse_url("brokerd://app:topsecret@host")
    assert "topsecret" not in repr(url)
    assert "topsecret" not in str(url)
    assert "user='app'" in repr(url)


def test_non_string_url_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_url(b"brokerd://host")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("brokerd://host", "/"),
        ("brokerd://host/", "/"),
        ("brokerd://host:5673/%2F", "/"),
        ("brokerd://u:p@host:5673/orders", "orders"),
        ("brokerd://host/a%2Fb", "a/b"),
        ("brokerd://h1:1,h2:2/orders", "orders"),
    ],
)
def test_the_path_is_the_vhost(url: str, vhost: str) -> None:
    parsed = parse_url(url)
    assert parsed.vhost == vhost
    # Every node of a failover URL, and a redirect, keep it.
    assert {c.vhost for c in parsed.candidates()} == {vhost}
    assert parsed.moved_to("other:9").vhost == vhost
    assert parse_url(str(parsed)).vhost == vhost
