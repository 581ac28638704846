"""The management plane's pure parts: the HTTP request head parser, rates
from counter samples, RabbitMQ's list parameters, the OpenAPI document."""

from __future__ import annotations

import pytest

from brokerd.admin.extension import _queue_totals
from brokerd.auth import Users, Verifier
from brokerd.management.auth import Gate
from brokerd.management.events import MAX_TASKS, EventWatcher
from brokerd.management.http import (
    MAX_BODY,
    HTTPError,
    Request,
    Response,
    body_length,
    encode_response,
    parse_head,
)
from brokerd.management.lists import project, projector, shape
from brokerd.management.names import NameIndex
from brokerd.management.openapi import document
from brokerd.management.rates import Rates
from brokerd.options import QueueOptions
from brokerd.queues import QueueState
from brokerd.stats import Counters
from brokerd.vhosts import Names, split


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


def test_a_projector_projects_every_row_as_project_does() -> None:
    rows = [{"name": "a", "s": {"r": 1}}, {"name": "b", "s": 3}, {"other": 1}]
    columns = ["name", "s.r", "missing.too", "other"]
    assert list(map(projector(columns), rows)) == [project(r, columns) for r in rows]
    assert project(rows[0], ["s.r", "name"]) == {"s": {"r": 1}, "name": "a"}
    assert project(rows[1], ["s.r"]) == {"s": {"r": None}}


def test_a_column_and_a_path_inside_it_are_answered_as_the_column_alone() -> None:
    # ``columns=s.r,s.r.deep`` (either order) used to fail with a TypeError, a 500.
    rows = [{"name": "a", "s": {"r": 5}}, {"name": "b", "s": {"r": {"deep": 1, "x": 2}}}]
    for columns in (["s.r", "s.r.deep"], ["s.r.deep", "s.r"], ["s", "s.r", "name"]):
        for row in rows:
            whole = [c for c in columns if not any(c.startswith(o + ".") for o in columns)]
            assert project(row, columns) == project(row, whole)
    assert project(rows[0], ["s.r.deep", "s.r"]) == {"s": {"r": 5}}
    page = shape(rows, {"columns": "s.r,s.r.deep"})
    assert page == [{"s": {"r": 5}}, {"s": {"r": {"deep": 1, "x": 2}}}]


def _fresh_sort(queues: dict[str, object]) -> list[tuple[str, str, str]]:
    return sorted(((*reversed(split(i)), i) for i in queues), key=lambda e: (e[0], e[1]))


def test_the_name_index_answers_as_a_fresh_sort_after_every_declare_and_delete() -> None:
    names = {v: Names.of(v) for v in ("/", "b", "c")}
    queues: dict[str, object] = {names[v].inn(f"q{i}"): None for v in names for i in (3, 1, 2)}
    index = NameIndex()
    assert index.entries(queues) == _fresh_sort(queues)
    assert index.vhosts(queues) == {"/", "b", "c"}
    # Same count, other names: a cache keyed on the count would answer stale.
    del queues[names["b"].inn("q1")]
    queues[names["b"].inn("q0")] = None
    assert index.entries(queues) == _fresh_sort(queues)
    for i in (3, 1, 2):
        del queues[names["c"].inn(f"q{i}")]
    assert index.entries(queues) == _fresh_sort(queues)
    assert index.vhosts(queues) == {"/", "b"}
    mine = index.entries(queues)
    mine.clear()  # the caller's own list: the index is unchanged
    assert index.entries(queues) == _fresh_sort(queues)
    assert index.entries({}) == [] and index.vhosts({}) == frozenset()


def test_the_overview_totals_add_up_every_queue() -> None:
    a, b = QueueState("a", True, QueueOptions()), QueueState("b", True, QueueOptions())
    a.mem, a.leased, a.delayed, a.consumers = 3, 2, 1, [object(), object()]  # type: ignore[list-item]
    b.mem, b.disk[0], b.leased, b.delayed = 4, 5, 1, 7
    assert _queue_totals([a, b]) == {"consumers": 2, "ready": 12, "leased": 3, "delayed": 8}
    assert _queue_totals([]) == {"consumers": 0, "ready": 0, "leased": 0, "delayed": 0}


def test_the_openapi_document_names_every_path_with_its_parameters() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.")
    op = doc["paths"]["/api/queues/{vhost}/{name}/contents"]["delete"]
    assert [p["name"] for p in op["parameters"]] == ["vhost", "name"]
    assert "204" in op["responses"]


def _watcher(now: list[float]) -> EventWatcher:
    from corekit import Env

    return EventWatcher(Env().broker, clock=lambda: now[0])


def test_workers_go_offline_after_three_missed_heartbeats_or_on_worker_offline() -> None:
    now = [1000.0]
    w = _watcher(now)
    w.apply({"type": "worker-online", "hostname": "a", "freq": 2.0, "pid": 1, "timestamp": 1000.0})
    w.apply({"type": "worker-heartbeat", "hostname": "b", "freq": 2.0, "timestamp": 1000.0})
    assert [(r["hostname"], r["online"]) for r in w.worker_rows()] == [("a", True), ("b", True)]
    now[0] = 1007.0
    w.apply({"type": "worker-heartbeat", "hostname": "a", "freq": 2.0, "timestamp": 1007.0})
    assert {r["hostname"]: r["online"] for r in w.worker_rows()} == {"a": True, "b": False}
    w.apply({"type": "worker-offline", "hostname": "a", "timestamp": 1007.5})
    assert {r["hostname"]: r["online"] for r in w.worker_rows()} == {"a": False, "b": False}
    assert w.worker_rows()[0]["pid"] == 1


def test_worker_rows_carry_pool_and_concurrency_the_latest_event_gave() -> None:
    w = _watcher([1000.0])
    base = {"hostname": "n", "freq": 2.0, "timestamp": 1000.0}
    w.apply({**base, "type": "worker-online", "pool": "threads", "concurrency": 3})
    w.apply({**base, "type": "worker-heartbeat", "pool": "threads", "concurrency": 5})
    # A Celery worker's events name no pool: the row says null, not a guess.
    w.apply({"type": "worker-heartbeat", "hostname": "celery@c", "freq": 2.0, "active": 1,
             "timestamp": 1000.0})  # fmt: skip
    rows = {r["hostname"]: r for r in w.worker_rows()}
    assert (rows["n"]["pool"], rows["n"]["concurrency"]) == ("threads", 5)
    assert (rows["celery@c"]["pool"], rows["celery@c"]["concurrency"]) == (None, None)
    assert rows["celery@c"]["active"] == 1


def test_task_events_make_one_row_per_task_bounded_and_malformed_ones_are_ignored() -> None:
    w = _watcher([0.0])
    for bad in (
        {},
        {"type": "task-started"},
        {"type": 3, "hostname": "h"},
        {"type": "x", "hostname": "h"},
    ):
        w.apply(bad)
    w.apply(
        {"type": "task-received", "hostname": "h", "uuid": "t", "name": "add", "timestamp": 1.0}
    )
    w.apply(
        {"type": "task-failed", "hostname": "h", "uuid": "t", "traceback": "tb", "timestamp": 2.0}
    )
    (row,) = w.task_rows(10)
    assert row["state"] == "FAILURE" and row["name"] == "add" and row["traceback"] == "tb"
    assert (row["received"], row["failed"]) == (1.0, 2.0)
    for i in range(MAX_TASKS + 5):
        w.apply({"type": "task-succeeded", "hostname": "h", "uuid": f"u{i}", "timestamp": 3.0})
    assert len(w.tasks) == MAX_TASKS
    assert w.task_rows(1)[0]["uuid"] == f"u{MAX_TASKS + 4}"


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, False),
        ({"sec-fetch-site": "same-origin", "origin": "http://h:1", "host": "h:1"}, False),
        ({"sec-fetch-site": "none"}, False),
        ({"sec-fetch-site": "cross-site"}, True),
        ({"sec-fetch-site": "same-site"}, True),
        ({"origin": "http://evil:1", "host": "h:1"}, True),
    ],
)
def test_cross_site_mutations_are_refused(headers: dict[str, str], refused: bool) -> None:
    request = Request("POST", "/api/x", {}, headers, b"")
    if refused:
        with pytest.raises(HTTPError) as info:
            Gate.check_origin(request)
        assert info.value.status == 403
    else:
        Gate.check_origin(request)


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("localhost:15673", False),
        ("127.0.0.1:15673", False),
        ("[::1]:15673", False),
        ("app.localhost", False),
        ("10.0.0.5", False),
        ("evil.example:15673", True),
        ("127.0.0.1.evil.example", True),
    ],
)
def test_without_users_only_loopback_names_and_addresses_are_answered(
    host: str, refused: bool
) -> None:
    gate = Gate(Users(), Verifier(Users()), None)
    request = Request("GET", "/api/overview", {}, {"host": host}, b"")
    if refused:
        with pytest.raises(HTTPError):
            gate.check_host(request, "127.0.0.1")
    else:
        gate.check_host(request, "127.0.0.1")
