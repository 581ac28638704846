"""The Celery protocol-2 branch of the task message parser (mixed fleets).

A Celery message that reaches a brokerd worker through the kombu envelope is
mapped onto the same ``TaskHeaders`` a native message yields, through the same
checks; what a brokerd worker cannot honour (pickle, yaml, protocol 1, other
compressions, canvas) is one clear ``InvalidTaskMessage`` naming it, never a
crash. Messages here are built by Celery itself (``mixedkit``).

The fuzz tests feed arbitrary envelopes and bodies; a short run is part of
the default suite, ``pytest -m fuzz`` runs the long one.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
import zlib
from typing import Any

import msgpack
import pytest
from celery import signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mixedkit import celery_message, kombu_message

from brokerd_client.celery.envelope import ENVELOPE_HEADER
from brokerd_client.tasks import InvalidTaskMessage
from brokerd_client.tasks.message import (
    CELERY_V2,
    KOMBU_HEADER,
    MAX_TIME_LIMIT,
    TaskHeaders,
    parse,
    retry_headers,
)
from brokerd_client.tasks.serialization import (
    CANVAS_REFUSED,
    DecodeError,
    decode_body,
    encode_body,
)

EXPIRES = dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.UTC)


def parsed(message: Any) -> TaskHeaders:
    return parse(dict(message.headers), message.message_id, None)


def body_of(message: Any, limit: int = 1 << 20) -> tuple[list[Any], dict[str, Any]]:
    meta = parsed(message)
    serializer = {"application/json": "json", "application/x-msgpack": "msgpack"}[meta.content_type]
    return decode_body(message.body, serializer, meta.compression, limit, celery=True)


def refusal(message: Any) -> InvalidTaskMessage:
    with pytest.raises(InvalidTaskMessage) as info:
        parsed(message)
    return info.value


def good_headers(**overrides: Any) -> dict[str, Any]:
    return {"lang": "py", "task": "m.add", "id": "tid-1", "retries": 0, **overrides}


# --- what Celery sends ------------------------------------------------------------------


def test_the_envelope_header_is_the_one_the_transport_writes() -> None:
    assert KOMBU_HEADER == ENVELOPE_HEADER


def test_a_celery_call_maps_onto_the_native_task_headers() -> None:
    msg = celery_message(
        "m.add",
        (1, 2),
        task_id="tid-1",
        time_limit=30,
        soft_time_limit=20.5,
        expires=EXPIRES,
        parent_id="p",
        root_id="r",
        ignore_result=True,
        retries=2,
    )
    assert parsed(msg) == TaskHeaders(
        task="m.add",
        id="tid-1",
        retries=2,
        content_type="application/json",
        compression=None,
        expires=EXPIRES.timestamp(),
        time_limit=30.0,
        soft_time_limit=20.5,
        ignore_result=True,
        parent_id="p",
        root_id="r",
        eta=None,
        protocol=CELERY_V2,
    )
    assert body_of(msg) == ([1, 2], {})


def test_defaults_leave_limits_and_flags_to_the_task() -> None:
    meta = parsed(celery_message("m.add", task_id="tid-2"))
    assert (meta.time_limit, meta.soft_time_limit, meta.expires, meta.eta) == (None,) * 4
    assert meta.ignore_result is False  # Celery always says; False stores the result
    assert meta.root_id == "tid-2"  # Celery's own default


@pytest.mark.parametrize(("serializer", "compression"), [("json", "zlib"), ("msgpack", None)])
def test_json_msgpack_and_zlib_bodies_decode_to_args_and_kwargs(
    serializer: str, compression: str | None
) -> None:
    msg = celery_message(
        "m.add", [1, "two"], {"x": [3.5, None]}, serializer=serializer, compression=compression
    )
    meta = parsed(msg)
    assert meta.compression == compression
    assert body_of(msg) == ([1, "two"], {"x": [3.5, None]})


def test_kombu_typed_json_values_decode_as_a_celery_worker_would_pass_them() -> None:
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    ident = uuid.uuid4()
    kwargs = {
        "when": when,
        "day": when.date(),
        "at": dt.time(7, 8),
        "amount": decimal.Decimal("1.10"),
        "ident": ident,
        "text": b"abc",
        "raw": b"\xff\x00",
    }
    assert body_of(celery_message("m.add", (), kwargs)) == ([], kwargs)


def test_a_countdown_becomes_an_eta_the_broker_holds() -> None:
    msg = celery_message("m.add", countdown=60)
    assert msg.not_before is not None
    assert parsed(msg).eta == pytest.approx(msg.not_before)


def test_timelimit_zero_means_the_tasks_own_limit_as_in_celery() -> None:
    msg = kombu_message(
        b"[[],{},null]", "application/json", "utf-8", good_headers(timelimit=[0, 5])
    )
    meta = parsed(msg)
    assert (meta.time_limit, meta.soft_time_limit) == (None, 5.0)


def test_a_naive_expires_is_taken_as_utc() -> None:
    headers = good_headers(expires="2031-02-03T04:05:06")
    assert parsed(kombu_message(b"", "application/json", "utf-8", headers)).expires == (
        EXPIRES.timestamp()
    )


def test_the_task_id_falls_back_from_message_id_to_id_to_correlation_id() -> None:
    msg = celery_message("m.add", task_id="tid-9")
    headers = dict(msg.headers or {})
    assert parse(headers, "from-broker", None).id == "from-broker"
    assert parse(headers, None, None).id == "tid-9"


# --- refusals ----------------------------------------------------------------------------


def test_a_pickle_body_is_refused_naming_pickle() -> None:
    exc = refusal(celery_message("m.add", (1,), serializer="pickle", task_id="tid-p"))
    assert "application/x-python-serialize (pickle) is refused" in str(exc)
    assert exc.task_id == "tid-p"
    assert exc.header == "content_type"


def test_a_yaml_body_is_refused_naming_yaml() -> None:
    msg = kombu_message(b"[]", "application/x-yaml", "utf-8", good_headers())
    assert "application/x-yaml (yaml) is refused" in str(refusal(msg))


@pytest.mark.parametrize(
    ("content_type", "encoding", "words"),
    [
        ("application/data", "binary", "is not supported"),
        ("text/plain", "utf-8", "is not supported"),
        ("application/json", "latin-1", "content encoding 'latin-1'"),
        ("application/x-msgpack", "utf-8", "content encoding 'utf-8'"),
    ],
)
def test_other_content_types_and_encodings_are_refused(
    content_type: str, encoding: str, words: str
) -> None:
    exc = refusal(kombu_message(b"", content_type, encoding, good_headers()))
    assert words in str(exc)
    assert exc.task_id == "tid-1"


@pytest.mark.parametrize("compression", ["bzip2", "lzma"])
def test_compressions_other_than_zlib_are_refused(compression: str) -> None:
    exc = refusal(celery_message("m.add", compression=compression, task_id="tid-c"))
    assert exc.header == "compression"
    assert "only application/x-gzip (zlib)" in str(exc)


def test_a_protocol_1_message_is_refused_under_its_task_id() -> None:
    exc = refusal(celery_message("m.add", (1,), protocol=1, task_id="tid-v1"))
    assert "protocol 1" in str(exc)
    assert exc.task_id == "tid-v1"


def test_a_plain_kombu_message_without_an_id_has_nothing_to_record_under() -> None:
    exc = refusal(kombu_message(b"{}", "application/json", "utf-8", {}))
    assert exc.task_id is None


def test_an_envelope_that_is_not_msgpack_is_refused() -> None:
    with pytest.raises(InvalidTaskMessage) as info:
        parse({KOMBU_HEADER: b"\xc1"}, "tid-x", None)
    assert info.value.header == KOMBU_HEADER
    assert info.value.task_id == "tid-x"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("task", b"m.add"),
        ("task", ""),
        ("task", "x" * 5000),
        ("lang", 7),
        ("retries", -1),
        ("retries", True),
        ("retries", 1.5),
        ("timelimit", [math.nan, None]),
        ("timelimit", [None, math.inf]),
        ("timelimit", [-1, None]),
        ("timelimit", [MAX_TIME_LIMIT + 1, None]),
        ("timelimit", [1]),
        ("timelimit", "30"),
        ("timelimit", {"hard": 1}),
        ("expires", 1234.0),
        ("expires", "tomorrow"),
        ("expires", "2030-01-01T00:00:00" + "0" * 500),
        ("eta", "not a date"),
        ("ignore_result", "yes"),
        ("parent_id", 5),
        ("root_id", "r" * 300),
        ("compression", 1),
    ],
)
def test_each_malformed_celery_header_is_named_and_the_task_id_kept(
    header: str, value: Any
) -> None:
    exc = refusal(kombu_message(b"", "application/json", "utf-8", good_headers(**{header: value})))
    assert exc.header == header
    assert exc.task_id == "tid-1"
    assert repr(header) in str(exc)
    assert len(str(exc)) < 400


# --- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "canvas",
    [
        {"link": signature("m.after")},
        {"link_error": signature("m.on_error")},
        {"chain": [dict(signature("m.next"))]},
        {"chord": dict(signature("m.join"))},
    ],
)
def test_a_body_carrying_canvas_is_refused_not_run_without_it(canvas: dict[str, Any]) -> None:
    options = {
        "callbacks": [dict(canvas["link"])] if "link" in canvas else None,
        "errbacks": [dict(canvas["link_error"])] if "link_error" in canvas else None,
        "chain": canvas.get("chain"),
        "chord": canvas.get("chord"),
    }
    msg = celery_message("m.add", (1,), **options)
    with pytest.raises(InvalidTaskMessage, match="needs a Celery worker") as info:
        body_of(msg)
    assert str(info.value).startswith(CANVAS_REFUSED)


@pytest.mark.parametrize(
    "body",
    [b"{}", b"[[],{}]", b"[{},{},null]", b"[[],[],null]", b"[[],{},5]", b"[[],{1:2},null]"],
)
def test_a_body_that_is_not_args_kwargs_embed_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_body(body, "json", None, 1 << 20, celery=True)


@pytest.mark.parametrize(
    "value",
    [
        '{"__type__":"pickle","__value__":"x"}',
        '{"__type__":"datetime","__value__":5}',
        '{"__type__":"decimal","__value__":"abc"}',
        '{"__type__":"uuid","__value__":"nothex"}',
        '{"__type__":"base64","__value__":"***"}',
        '{"__type__":["x"],"__value__":1}',
    ],
)
def test_an_unknown_or_malformed_kombu_typed_value_is_a_decode_error(value: str) -> None:
    with pytest.raises(DecodeError):
        decode_body(f"[[{value}],{{}},null]".encode(), "json", None, 1 << 20, celery=True)


def test_a_zlib_bomb_in_a_celery_body_is_refused_at_the_cap() -> None:
    bomb = zlib.compress(b"[[" + b" " * (4 << 20) + b"],{},null]")
    with pytest.raises(DecodeError, match="inflates to more than"):
        decode_body(bomb, "json", "zlib", 1 << 20, celery=True)


# --- retries --------------------------------------------------------------------------------


def test_the_retry_of_a_celery_message_stays_a_celery_message() -> None:
    msg = celery_message("m.add", (1,), task_id="tid-r", time_limit=9, expires=EXPIRES)
    headers = {**dict(msg.headers or {}), "x-death-reason": "rejected"}
    again = retry_headers(headers, "tid-r", 3, countdown=30.0)
    assert set(again) == {KOMBU_HEADER}
    meta = parse(again, "tid-r", None)
    assert meta.retries == 3
    assert meta.eta is not None and meta.eta > dt.datetime.now(dt.UTC).timestamp() + 20
    assert (meta.time_limit, meta.expires, meta.protocol) == (9.0, EXPIRES.timestamp(), CELERY_V2)
    now = retry_headers(headers, "tid-r", 4)
    assert parse(now, "tid-r", None).eta is None


def test_new_retry_arguments_are_written_as_a_celery_body() -> None:
    body = encode_body([1], {"y": 2}, "json", "zlib", celery=True)
    assert decode_body(body, "json", "zlib", 1 << 20, celery=True) == ([1], {"y": 2})


# --- fuzz --------------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=80)
    | st.binary(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_celery_names = st.sampled_from(
    [
        "lang",
        "task",
        "id",
        "retries",
        "timelimit",
        "expires",
        "eta",
        "ignore_result",
        "parent_id",
        "root_id",
        "compression",
        "group",
        "shadow",
        "stamps",
    ]
)
_kombu_headers = st.dictionaries(_celery_names | st.text(max_size=10), _values, max_size=14)
_content_types = st.sampled_from(
    [
        "application/json",
        "application/x-msgpack",
        "application/x-python-serialize",
        "application/x-yaml",
        "text/plain",
    ]
) | st.text(max_size=30)
_encodings = st.sampled_from(["utf-8", "binary", "UTF-8"]) | st.text(max_size=10)


_iso_times = st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
_limits = st.none() | st.integers(-5, 10**10) | st.floats()
_plausible: dict[str, st.SearchStrategy[Any]] = {
    "lang": st.just("py"),
    "retries": st.integers(-2, 2**40),
    "timelimit": st.lists(_limits, min_size=1, max_size=3),
    "expires": _iso_times,
    "eta": _iso_times,
    "ignore_result": st.booleans() | st.none(),
    "parent_id": st.none() | st.text(max_size=300),
    "root_id": st.none() | st.text(max_size=300),
    "compression": st.just("application/x-gzip"),
}
_required = {
    "task": st.just("m.add") | st.text(max_size=20),
    "id": st.text(min_size=1, max_size=40),
}
#: Headers close to what Celery sends (values plausible, or anything at all),
#: so the accepting path is exercised as well as the refusals.
_celery_like_headers = st.fixed_dictionaries(_required, optional=_plausible) | (
    st.fixed_dictionaries(_required, optional={k: v | _values for k, v in _plausible.items()})
)
_content = st.sampled_from(
    [("application/json", "utf-8"), ("application/x-msgpack", "binary")]
) | st.tuples(_content_types, _encodings)
_envelope_maps = st.builds(
    lambda content, headers, properties: {
        "content_type": content[0],
        "content_encoding": content[1],
        "headers": headers,
        "properties": properties,
    },
    _content,
    _celery_like_headers | _kombu_headers,
    st.dictionaries(st.sampled_from(["correlation_id", "x"]), _values),
)
#: A msgpack ``x-kombu`` header: a well-formed map, or any other value.
_envelopes = (_envelope_maps | _values).map(lambda m: bytes(msgpack.packb(m, use_bin_type=True)))
_plausible_envelopes = st.builds(
    lambda content, headers: {
        "content_type": content[0],
        "content_encoding": content[1],
        "headers": headers,
        "properties": {},
    },
    st.sampled_from([("application/json", "utf-8"), ("application/x-msgpack", "binary")]),
    st.fixed_dictionaries(_required, optional=_plausible),
).map(lambda m: bytes(msgpack.packb(m, use_bin_type=True)))
_header_values = _plausible_envelopes | _envelopes | st.binary(max_size=40) | _scalars
_message_ids = st.none() | st.text(max_size=300) | st.integers()


def _check_celery_parse(packed: Any, message_id: Any) -> None:
    try:
        meta = parse({KOMBU_HEADER: packed}, message_id, None)
    except InvalidTaskMessage as exc:
        assert exc.header is not None
        assert exc.task_id is None or (type(exc.task_id) is str and 0 < len(exc.task_id) <= 255)
        assert len(str(exc)) < 1000
        return
    assert meta.protocol == CELERY_V2
    assert type(meta.task) is str and meta.task
    assert type(meta.id) is str and 0 < len(meta.id) <= 255
    assert type(meta.retries) is int and meta.retries >= 0
    assert meta.content_type in ("application/json", "application/x-msgpack")
    assert meta.compression in (None, "zlib")
    for limit in (meta.time_limit, meta.soft_time_limit):
        assert limit is None or (math.isfinite(limit) and 0 < limit <= MAX_TIME_LIMIT)
    for when in (meta.expires, meta.eta):
        assert when is None or math.isfinite(when)
    assert meta.ignore_result in (None, True, False)


_bodies = st.builds(
    lambda v, ser: msgpack.packb(v, use_bin_type=True) if ser == "msgpack" else repr(v).encode(),
    _values,
    st.sampled_from(["json", "msgpack"]),
) | st.binary(max_size=60)


def _check_celery_body(body: bytes, serializer: str, compress: bool) -> None:
    data = zlib.compress(body) if compress else body
    try:
        args, kwargs = decode_body(
            data, serializer, "zlib" if compress else None, 1 << 16, celery=True
        )
    except (DecodeError, InvalidTaskMessage):
        return
    assert type(args) is list
    assert type(kwargs) is dict and all(type(k) is str for k in kwargs)


_fuzz_short = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
_fuzz_long = settings(max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))


@_fuzz_short
@given(packed=_header_values, message_id=_message_ids)
def test_any_envelope_parses_or_is_refused_with_invalid_task_message(
    packed: Any, message_id: Any
) -> None:
    _check_celery_parse(packed, message_id)


@_fuzz_short
@given(body=_bodies, serializer=st.sampled_from(["json", "msgpack"]), compress=st.booleans())
def test_any_celery_body_decodes_or_is_refused(
    body: bytes, serializer: str, compress: bool
) -> None:
    _check_celery_body(body, serializer, compress)


@pytest.mark.fuzz
@_fuzz_long
@given(packed=_header_values, message_id=_message_ids)
def test_fuzz_the_celery_envelope_parser_at_length(packed: Any, message_id: Any) -> None:
    _check_celery_parse(packed, message_id)


@pytest.mark.fuzz
@_fuzz_long
@given(body=_bodies, serializer=st.sampled_from(["json", "msgpack"]), compress=st.booleans())
def test_fuzz_celery_bodies_at_length(body: bytes, serializer: str, compress: bool) -> None:
    _check_celery_body(body, serializer, compress)
