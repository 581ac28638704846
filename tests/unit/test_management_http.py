"""The management plane's pure parts: the HTTP request head parser, rates
from counter samples, RabbitMQ's list parameters, the OpenAPI document."""

from __future__ import annotations

import pytest

from brokerd.management.api import shape
from brokerd.management.http import (
    MAX_BODY,
    HTTPError,
    Request,
    Response,
    body_length,
    encode_response,
    parse_head,
)
from brokerd.management.openapi import document
from brokerd.management.rates import Rates
from brokerd.options import QueueOptions
from brokerd.queues import QueueState
from brokerd.stats import Counters


def test_a_request_head_parses_into_method_target_and_lowercased_headers() -> None:
    method, target, version, headers = parse_head(
        b"GET /api/queues/%2F/q?x=1 HTTP/1.1\r\nHost: h\r\nX-Thing:  v \r\n\r\n"
    )
    assert (method, target, version) == ("GET", "/api/queues/%2F/q?x=1", "HTTP/1.1")
    assert headers == {"host": "h", "x-thing": "v"}


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\n\r\n", 400),
        (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/3\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    ],
)
def test_malformed_heads_are_refused_with_a_status(head: bytes, status: int) -> None:
    with pytest.raises(HTTPError) as info:
        parse_head(head)
    assert info.value.status == status


def test_body_length_is_checked_before_reading() -> None:
    assert body_length({}) == 0
    assert body_length({"content-length": "12"}) == 12
    for bad, status in (("-1", 400), ("1e3", 400), (str(MAX_BODY + 1), 413)):
        with pytest.raises(HTTPError) as info:
            body_length({"content-length": bad})
        assert info.value.status == status
    with pytest.raises(HTTPError) as info:
        body_length({"transfer-encoding": "chunked"})
    assert info.value.status == 501


def test_path_segments_are_split_before_unescaping() -> None:
    r = Request("GET", "/api/queues/%2F/a%2Fb/", {}, {}, b"")
    assert r.segments == ["api", "queues", "/", "a/b"]
    assert Request("GET", "/", {}, {"cookie": "a=1; s=tok"}, b"").cookie("s") == "tok"
    with pytest.raises(HTTPError):
        Request("POST", "/", {}, {}, b"{nope").json()


def test_every_response_carries_the_security_headers() -> None:
    raw = encode_response(Response.json({"a": 1}), keep_alive=True)
    head = raw.split(b"\r\n\r\n")[0].decode()
    assert "X-Frame-Options: DENY" in head and "X-Content-Type-Options: nosniff" in head
    assert "Content-Security-Policy: default-src 'self'" in head
    assert raw.endswith(b'{"a":1}')
    assert encode_response(Response.json({"a": 1}), False, head_only=True).endswith(b"\r\n\r\n")


def test_rates_are_the_difference_of_the_last_two_samples_per_second() -> None:
    c = Counters()
    q = QueueState("q", True, QueueOptions())
    rates = Rates(interval=5)
    rates.tick(100.0, c, {"q": q})
    c.published, q.published, q.acked = 50, 50, 10
    rates.tick(102.0, c, {"q": q})  # within the interval: no sample
    rates.tick(105.0, c, {"q": q})
    stats = rates.queue_stats(q)
    assert stats["publish"] == 50 and stats["publish_details"] == {"rate": 10.0}
    assert stats["ack_details"] == {"rate": 2.0}
    assert rates.overview_stats(c)["publish_details"] == {"rate": 10.0}
    assert [h["publish"] for h in rates.history()] == [10.0]
    # A queue declared again under the same name starts over.
    fresh = QueueState("q", True, QueueOptions())
    assert rates.queue_stats(fresh)["publish_details"] == {"rate": 0.0}


def test_shape_filters_sorts_pages_and_projects() -> None:
    rows = [{"name": f"q{i}", "n": i % 3, "s": {"r": i}} for i in range(7)]
    assert shape(rows, {}) is rows
    got = shape(rows, {"name": "q", "sort": "s.r", "sort_reverse": "true", "columns": "name"})
    assert got == [{"name": f"q{i}"} for i in range(6, -1, -1)]
    page = shape(rows, {"page": "3", "page_size": "3", "columns": "s.r"})
    assert page["items"] == [{"s": {"r": 6}}]
    assert (page["page_count"], page["filtered_count"], page["total_count"]) == (3, 7, 7)
    with pytest.raises(HTTPError):
        shape(rows, {"page": "1", "page_size": "100000"})


def test_the_openapi_document_names_every_path_with_its_parameters() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.")
    op = doc["paths"]["/api/queues/{vhost}/{name}/contents"]["delete"]
    assert [p["name"] for p in op["parameters"]] == ["vhost", "name"]
    assert "204" in op["responses"]
