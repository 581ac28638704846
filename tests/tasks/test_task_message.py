"""The task message format, owned by ``brokerd_client.tasks.message``: what a
producer writes is what a worker parses, and anything else is one clear
``InvalidTaskMessage`` naming the header, never a crash.

The fuzz tests feed arbitrary header maps to the parser; a short run is part
of the default suite, ``pytest -m fuzz`` runs the long one.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokerd_client.tasks import App, InvalidTaskMessage
from brokerd_client.tasks.message import (
    MAX_TIME_LIMIT,
    TaskHeaders,
    parse,
    retry_headers,
)
from brokerd_client.tasks.producer import build_message

OK = {"task": "t.add", "id": "abc"}
EXPIRES = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_app() -> App:
    app = App("msgfmt")

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


# --- valid messages ----------------------------------------------------------------


def test_a_producer_built_message_parses_to_what_the_caller_asked_for() -> None:
    app = make_app()
    tm = build_message(
        app,
        app.router,
        "t.add",
        (1, 2),
        {},
        {
            "task_id": "abc",
            "time_limit": 30,
            "soft_time_limit": 20.5,
            "parent_id": "p",
            "root_id": "r",
            "ignore_result": True,
            "expires": EXPIRES,
            "compression": "zlib",
        },
        app.tasks["t.add"],
    )
    parsed = parse(dict(tm.message.headers or {}), tm.message.message_id, None)
    assert parsed == TaskHeaders(
        task="t.add",
        id="abc",
        retries=0,
        content_type="application/json",
        compression="zlib",
        expires=EXPIRES.timestamp(),
        time_limit=30.0,
        soft_time_limit=20.5,
        ignore_result=True,
        parent_id="p",
        root_id="r",
    )


def test_the_wire_headers_of_a_task_call_are_unchanged() -> None:
    app = make_app()
    tm = build_message(app, app.router, "t.add", (1, 2), {}, {"task_id": "abc"}, None)
    assert tm.message.headers == {
        "task": "t.add",
        "id": "abc",
        "retries": 0,
        "content-type": "application/json",
    }


def test_headers_a_message_leaves_out_take_their_defaults() -> None:
    parsed = parse({"task": "t.add"}, "id-1", None)
    assert parsed == TaskHeaders("t.add", "id-1", 0, "application/json", None, None, None, None)


def test_the_message_id_names_the_task_before_the_id_header() -> None:
    assert parse({**OK, "id": "header-id"}, "message-id", None).id == "message-id"
    assert parse(OK, None, None).id == "abc"


def test_a_schedule_firing_expires_relative_to_its_due_time() -> None:
    headers = {"task": "t.add", "expires_in": 30.0, "x-scheduled-at": 1000.0}
    assert parse(headers, "fire-1", 999.0).expires == 1030.0
    assert parse({"task": "t.add", "expires_in": 30}, "fire-1", 999.0).expires == 1029.0
    assert parse({"task": "t.add", "expires_in": 30}, "fire-1", None).expires is None


def test_a_retry_keeps_every_header_but_the_dead_letter_ones() -> None:
    original = {
        **OK,
        "retries": 1,
        "custom": "kept",
        "x-death-reason": "rejected",
        "x-death-count": 1,
        "x-death-detail": "why",
    }
    assert retry_headers(original, "abc", 2) == {
        "task": "t.add",
        "id": "abc",
        "retries": 2,
        "custom": "kept",
    }


# --- invalid messages ---------------------------------------------------------------


@pytest.mark.parametrize("header", ["time_limit", "soft_time_limit"])
@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, -1.0, 1e308, MAX_TIME_LIMIT + 1, "10", True, b"1"]
)
def test_time_limits_must_be_finite_non_negative_numbers_within_bounds(
    header: str, value: Any
) -> None:
    with pytest.raises(InvalidTaskMessage, match=header) as info:
        parse({**OK, header: value}, "abc", None)
    assert info.value.header == header
    assert info.value.task_id == "abc"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("task", b"t.add"),
        ("task", ""),
        ("task", 7),
        ("task", "x" * 5000),
        ("retries", -1),
        ("retries", 1.5),
        ("retries", True),
        ("retries", 2**40),
        ("content-type", b"application/json"),
        ("compression", "gzip"),
        ("compression", 1),
        ("expires", math.nan),
        ("expires", "tomorrow"),
        ("expires_in", math.inf),
        ("ignore_result", "yes"),
        ("parent_id", 5),
        ("root_id", b"r"),
        ("parent_id", "p" * 300),
    ],
)
def test_each_malformed_header_is_named_and_the_task_id_kept(header: str, value: Any) -> None:
    with pytest.raises(InvalidTaskMessage) as info:
        parse({**OK, header: value}, "abc", 1.0)
    assert info.value.header == header
    assert info.value.task_id == "abc"
    assert repr(header) in str(info.value)
    assert len(str(info.value)) < 400  # a huge value is not copied into the error


def test_a_missing_task_name_is_invalid_but_the_id_is_still_usable() -> None:
    with pytest.raises(InvalidTaskMessage, match="'task'") as info:
        parse({"id": "abc"}, None, None)
    assert info.value.task_id == "abc"


@pytest.mark.parametrize(
    ("headers", "message_id"),
    [
        ({"task": "t.add"}, None),
        ({"task": "t.add", "id": 5}, None),
        ({"task": "t.add", "id": ""}, None),
        ({"task": "t.add", "id": b"abc"}, None),
        ({"task": "t.add"}, "x" * 256),
        ({"task": b"t.add", "id": None}, None),
    ],
)
def test_without_a_usable_task_id_there_is_nothing_to_record_a_result_under(
    headers: dict[str, Any], message_id: Any
) -> None:
    with pytest.raises(InvalidTaskMessage) as info:
        parse(headers, message_id, None)
    assert info.value.task_id is None
    assert info.value.header in ("id", "message_id")


def test_a_producer_refuses_time_limits_a_worker_would_refuse() -> None:
    app = make_app()
    for bad in (math.nan, -1, math.inf):
        with pytest.raises(ValueError, match="time_limit"):
            build_message(app, app.router, "t.add", (), {}, {"time_limit": bad}, None)


# --- fuzz ----------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=300)
    | st.binary(max_size=40)
)
_header_names = st.sampled_from(
    [
        "task",
        "id",
        "retries",
        "content-type",
        "compression",
        "expires",
        "expires_in",
        "x-scheduled-at",
        "time_limit",
        "soft_time_limit",
        "ignore_result",
        "parent_id",
        "root_id",
    ]
) | st.text(max_size=12)
_headers = st.dictionaries(_header_names, _scalars, max_size=14)
_message_ids = st.none() | st.text(max_size=300) | st.integers() | st.binary(max_size=8)
_timestamps = st.none() | st.floats()


def _check_parse(headers: dict[str, Any], message_id: Any, timestamp: Any) -> None:
    try:
        parsed = parse(headers, message_id, timestamp)
    except InvalidTaskMessage as exc:
        assert exc.header is not None
        assert exc.task_id is None or (type(exc.task_id) is str and 0 < len(exc.task_id) <= 255)
        return
    assert type(parsed.task) is str and parsed.task
    assert type(parsed.id) is str and 0 < len(parsed.id) <= 255
    assert type(parsed.retries) is int and parsed.retries >= 0
    for limit in (parsed.time_limit, parsed.soft_time_limit):
        assert limit is None or (math.isfinite(limit) and 0 <= limit <= MAX_TIME_LIMIT)
    assert parsed.expires is None or math.isfinite(parsed.expires)
    assert parsed.compression in (None, "zlib")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=_headers, message_id=_message_ids, timestamp=_timestamps)
def test_any_header_map_parses_or_is_refused_with_invalid_task_message(
    headers: dict[str, Any], message_id: Any, timestamp: Any
) -> None:
    _check_parse(headers, message_id, timestamp)


@pytest.mark.fuzz
@settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=_headers, message_id=_message_ids, timestamp=_timestamps)
def test_fuzz_the_task_message_parser_at_length(
    headers: dict[str, Any], message_id: Any, timestamp: Any
) -> None:
    _check_parse(headers, message_id, timestamp)
