"""The canvas without a broker: shapes, the wire form, and eager mode."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from brokerd_client.errors import InvalidArgument, MessageTooLarge, NotFound
from brokerd_client.tasks import (
    App,
    ChordError,
    EagerResult,
    GroupResult,
    Signature,
    chain,
    chord,
    group,
    maybe_signature,
    signature,
)
from brokerd_client.tasks.canvasio import (
    CANVAS_HEADER,
    build,
    chord_member_id,
    decode_canvas,
    encode_canvas,
    follow_up,
)
from brokerd_client.tasks.serialization import (
    decode_body,
    decode_result,
    encode_error,
    encode_result,
)


def make_app(eager: bool = False) -> tuple[App, dict[str, Any]]:
    app = App("cv", task_always_eager=eager)
    seen: dict[str, Any] = {"errbacks": [], "records": []}

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="tsum")
    def tsum(values: list[int]) -> int:
        seen["records"].append(("tsum", values))
        return sum(values)

    @app.task(name="boom")
    def boom(*args: Any) -> None:
        raise ValueError(f"boom {args}")

    @app.task(name="errback")
    def errback(task_id: str) -> None:
        seen["errbacks"].append(task_id)

    @app.task(name="record")
    def record(value: Any) -> Any:
        seen["records"].append(("record", value))
        return value

    return app, seen


# --- signatures ----------------------------------------------------------------------


def test_signatures_are_partial_unless_immutable() -> None:
    app, _ = make_app()
    add = app.tasks["add"]
    s = add.s(2)
    assert isinstance(s, Signature) and s.task == "add" and s.args == (2,)
    assert s.clone((1,)).args == (1, 2)  # a parent's result comes first
    frozen = add.si(2, 3)
    assert frozen.immutable and frozen.clone((1,)).args == (2, 3)
    assert s.set(queue="q") is s and s.options == {"queue": "q"}
    sig = app.signature("add", args=(1, 2), queue="other")
    assert sig == Signature("add", (1, 2), {}, {"queue": "other"})
    assert sig.app is app and signature("add", (1,), app=app).args == (1,)


def test_the_wire_form_round_trips_through_msgpack_and_json() -> None:
    app, _ = make_app()
    add, mul, tsum = app.tasks["add"], app.tasks["mul"], app.tasks["tsum"]
    s = add.s(1, 2).set(task_id="t1", countdown=5)
    s.link(mul.si(3, 4).set(task_id="t2"))
    data = s.to_dict()
    assert data["options"]["task_id"] == "t1"
    assert data["options"]["link"][0]["immutable"] is True
    back = maybe_signature(data, app)
    assert back.to_dict() == data
    assert decode_canvas(encode_canvas(data)) == data
    assert json.loads(json.dumps(data)) == data  # plain values only: no pickle anywhere
    flow = chain(add.s(1, 1), group(mul.s(i) for i in range(2)), tsum.s())
    element = flow.to_dict()
    assert maybe_signature(element, app).to_dict().keys() == element.keys()


def test_a_bad_canvas_header_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="bin"):
        decode_canvas("x")
    with pytest.raises(ValueError, match="map"):
        decode_canvas(encode_canvas({})[:0] + b"\x91\x01")


# --- composition -------------------------------------------------------------------


def test_pipes_compose_chains_and_chords() -> None:
    app, _ = make_app()
    add, mul, tsum = app.tasks["add"], app.tasks["mul"], app.tasks["tsum"]
    two = add.s(1, 1) | mul.s(2)
    assert isinstance(two, chain) and [t.task for t in two.tasks] == ["add", "mul"]
    three = two | add.s(3)
    assert isinstance(three, chain) and len(three.tasks) == 3  # flat, not nested
    assert len((two | (add.s(1) | mul.s(2))).tasks) == 4
    ch = group(add.s(i, i) for i in range(3)) | tsum.s()
    assert isinstance(ch, chord) and len(ch.tasks) == 3 and ch.body == tsum.s()


def test_a_group_followed_by_steps_becomes_a_chord_whose_body_is_the_rest() -> None:
    app, _ = make_app()
    add, mul, tsum = app.tasks["add"], app.tasks["mul"], app.tasks["tsum"]
    element = chain(add.s(1, 1), group(mul.s(i) for i in range(2)), tsum.s(), add.s(1)).to_dict()
    first, second = element["tasks"]
    assert first["task"] == "add"
    assert second["subtask_type"] == "chord"
    body = second["body"]
    assert body["subtask_type"] == "chain" and [t["task"] for t in body["tasks"]] == [
        "tsum",
        "add",
    ]
    # A chord followed by a step gets it appended to its body.
    element = chain(chord([add.s(1, 1)], tsum.s()), mul.s(2)).to_dict()
    [only] = element["tasks"]
    assert [t["task"] for t in only["body"]["tasks"]] == ["tsum", "mul"]


def test_freezing_names_every_task_and_links_results() -> None:
    app, _ = make_app()
    add, mul, tsum = app.tasks["add"], app.tasks["mul"], app.tasks["tsum"]
    res = chain(add.s(1, 1), mul.s(2), add.s(3)).freeze()
    assert res.parent.parent is not None and res.parent.parent.parent is None
    assert len({res.id, res.parent.id, res.parent.parent.id}) == 3
    # A chord's header members are named after the group; a chain member's
    # last task is the one that joins.
    c = chord([chain(add.s(1, 1), mul.s(2)), add.s(2, 2)], tsum.s(), group_id="g1")
    element = c.to_dict()
    member_chain, member_task = element["header"]
    last = member_chain["tasks"][-1]
    assert last["options"]["task_id"] == chord_member_id("g1", 0)
    assert last["options"]["chord"]["size"] == 2
    assert "chord" not in member_chain["tasks"][0]["options"]
    assert member_task["options"]["task_id"] == "g1:1"
    result = c.freeze()
    assert isinstance(result.parent, GroupResult) and [r.id for r in result.parent] == [
        "g1:0",
        "g1:1",
    ]
    with pytest.raises(TypeError, match="group directly inside a chord header"):
        chord([group(add.s(1, 1))], tsum.s()).freeze()


def test_build_puts_the_rest_of_the_chain_in_the_first_message() -> None:
    app, _ = make_app()
    add, mul = app.tasks["add"], app.tasks["mul"]
    element = chain(add.s(1, 1), mul.s(2), mul.si(3, 3)).to_dict()
    [tm] = build(app, element, (9,))
    message = tm.message
    assert message.message_id == element["tasks"][0]["options"]["task_id"]
    assert decode_body(message.body, "json", None) == ([9, 1, 1], {})
    canvas = decode_canvas(message.headers[CANVAS_HEADER])
    assert [e["task"] for e in canvas["chain"]] == ["mul", "mul"]
    assert "link" not in canvas
    # A plain task carries no canvas header at all.
    [plain] = build(app, add.s(1, 2).to_dict())
    assert CANVAS_HEADER not in (plain.message.headers or {})


# --- eager mode ----------------------------------------------------------------------


def test_eager_chain_group_and_chord() -> None:
    app, seen = make_app(eager=True)
    add, mul, tsum = app.tasks["add"], app.tasks["mul"], app.tasks["tsum"]
    res = (add.s(1, 2) | mul.s(10) | add.s(5)).delay()
    assert isinstance(res, EagerResult) and res.get() == 35
    assert res.parent.get() == 30 and res.parent.parent.get() == 3
    g = group(add.s(i, i) for i in range(4)).apply_async()
    assert isinstance(g, GroupResult) and g.get() == [0, 2, 4, 6] and g.completed_count() == 4
    c = chord(add.s(i, i) for i in range(4))(tsum.s())
    assert c.get() == 12 and seen["records"] == [("tsum", [0, 2, 4, 6])]
    nested = chain(add.s(1, 1), group(mul.s(i) for i in range(3)), tsum.s()).apply_async()
    assert nested.get() == 0 + 2 + 4
    in_group = group(chain(add.s(i, 1), mul.s(2)) for i in range(3)).apply_async()
    assert in_group.get() == [2, 4, 6]
    outer = chord([chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(5, 5)], tsum.s())
    assert outer.delay().get() == 6 + 10


def test_eager_failures_links_and_errbacks() -> None:
    app, seen = make_app(eager=True)
    add, boom, tsum = app.tasks["add"], app.tasks["boom"], app.tasks["tsum"]
    ok = add.apply_async((2, 3), link=app.tasks["record"].s(), link_error=app.tasks["errback"].s())
    assert ok.get() == 5 and seen["records"] == [("record", 5)] and seen["errbacks"] == []
    bad = boom.apply_async((1,), link_error=app.tasks["errback"].s())
    assert bad.failed() and seen["errbacks"] == [bad.id]
    res = chain(add.s(1, 1), boom.s(), add.s(1)).apply_async()
    assert res.failed() and isinstance(res.result, ValueError)
    failing = chain(boom.s(), add.s(1), add.s(2))
    with_errback = failing.apply_async(link_error=app.tasks["errback"].s())
    assert seen["errbacks"][-1] == with_errback.parent.parent.id  # the first task failed
    c = chord([add.s(1, 1), boom.s()], tsum.s()).apply_async()
    assert c.failed() and isinstance(c.result, ChordError)
    assert all(r[0] != "tsum" for r in seen["records"])  # the body never ran


def test_eager_propagates_when_asked() -> None:
    app, _ = make_app(eager=True)
    app.conf.task_eager_propagates = True
    with pytest.raises(ValueError, match="boom"):
        (app.tasks["add"].s(1, 1) | app.tasks["boom"].s()).delay()


def test_apply_runs_here_even_without_eager_mode() -> None:
    app, _ = make_app()
    assert (app.tasks["add"].s(1, 1) | app.tasks["mul"].s(4)).apply().get() == 8


def test_the_docs_canvas_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "tasks.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    [example] = [b for b in blocks if b.startswith("# canvas example\n")]
    exec(compile(example, "docs/tasks.md#canvas", "exec"), {"__name__": "canvas_doc"})
    out = capsys.readouterr().out
    assert "chord failed: Dependency" in out and out.count("failed") == 2


def test_apply_options_go_to_every_first_or_last_task() -> None:
    app, _ = make_app()
    add, mul, tsum = app.tasks["add"], app.tasks["mul"], app.tasks["tsum"]
    flow = chain(add.s(1, 1), mul.s(2), add.s(3))
    target = (
        flow._with_options({"queue": "q"}, "all")
        ._with_options({"countdown": 5}, "first")
        ._with_options({"link": mul.s(7)}, "last")
    )
    element, result = target._freeze(None, "the-end")
    first, middle, last = element["tasks"]
    assert [t["options"].get("queue") for t in element["tasks"]] == ["q", "q", "q"]
    assert first["options"]["countdown"] == 5 and "countdown" not in middle["options"]
    assert [c["task"] for c in last["options"]["link"]] == ["mul"]
    assert "link" not in first["options"]
    assert result.id == "the-end" == last["options"]["task_id"]
    # A chord's last task is its body's; a group's id can be chosen.
    c = chord([add.s(1, 1)], tsum.s())._with_options({"link": mul.s(2)}, "last")
    assert "link" in c.to_dict()["body"]["options"]
    assert "link" not in c.to_dict()["header"][0]["options"]
    assert group(add.s(1, 1))._freeze(None, "gid")[1].id == "gid"
    linked = chain(add.s(1, 1), mul.s(2))
    linked.link(tsum.s())
    linked.link_error(add.s(0))
    first, last = linked.to_dict()["tasks"]
    assert "link" not in first["options"] and len(last["options"]["link"]) == 1
    assert len(first["options"]["link_error"]) == len(last["options"]["link_error"]) == 1
    s = add.s(1)
    s.set(immutable=True, priority=3)
    assert s.immutable and s.options == {"priority": 3}
    s.link(mul.s(2))
    assert len(s._with_options({"link": tsum.s()})._callbacks("link")) == 2


class _FullBroker:
    """A client whose broker holds no more groups (GroupJoin refused)."""

    def __init__(self) -> None:
        self.published: list[Any] = []
        self.joins: list[tuple[str, str, float]] = []

    async def group_join(self, key: str, member: str, size: int, *, ttl: float) -> Any:
        self.joins.append((key, member, ttl))
        raise InvalidArgument("at most 1000000 groups")

    async def group_fire(self, key: str, message: Any) -> bool:
        raise NotFound(f"no group {key!r}")

    async def publish_many(self, messages: list[Any]) -> list[bool]:
        self.published.extend(messages)
        return [True] * len(messages)

    def result_set(self, *args: Any) -> Any:
        raise AssertionError("nothing to store on success")


async def test_a_follow_up_is_still_sent_when_the_broker_holds_no_more_groups() -> None:
    app, _ = make_app()
    app.conf.result_expires = 60.0
    add, mul = app.tasks["add"], app.tasks["mul"]
    element = chain(add.s(1, 1), mul.s(2)).to_dict()
    [first] = build(app, element)
    client = _FullBroker()
    payload = encode_result(2, "json")
    await follow_up(app, client, first.task_id, first.message.headers, "SUCCESS", payload)  # type: ignore[arg-type]
    [sent] = client.published
    assert sent.message_id == element["tasks"][1]["options"]["task_id"]
    assert decode_body(sent.body, "json", None) == ([2, 2], {})
    # The guard is kept no longer than results are.
    assert [ttl for _, _, ttl in client.joins] == [60.0]


def test_a_chord_with_an_empty_header_sends_its_body_with_an_empty_list() -> None:
    app, seen = make_app()
    tsum = app.tasks["tsum"]
    [tm] = build(app, chord([], tsum.s()).to_dict())
    assert tm.message.headers["task"] == "tsum"
    assert decode_body(tm.message.body, "json", None) == ([[]], {})
    app.conf.task_always_eager = True
    assert chord([], tsum.s()).delay().get() == 0 and seen["records"] == [("tsum", [])]


@pytest.mark.parametrize(
    "header",
    [
        "not bin",
        b"\xc1",  # not msgpack
        encode_canvas({"chain": [{"subtask_type": "spiral"}]}),
        encode_canvas({"chain": [{"args": []}]}),  # no task name
        encode_canvas({"link": "x"}),
    ],
)
async def test_a_hostile_canvas_header_is_dropped_not_followed(header: Any) -> None:
    app, _ = make_app()
    client = _FullBroker()
    payload = encode_result(1, "json")
    headers = {"task": "add", CANVAS_HEADER: header}
    await follow_up(app, client, "t", headers, "SUCCESS", payload)  # type: ignore[arg-type]
    assert client.published == [] and client.joins == []


def test_applying_a_frozen_canvas_sends_the_ids_freeze_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import brokerd_client.tasks.canvas as canvas_module

    sent: list[Any] = []
    monkeypatch.setattr(canvas_module, "_send", lambda app, messages: sent.extend(messages))
    app, _ = make_app()
    add, mul, tsum = app.tasks["add"], app.tasks["mul"], app.tasks["tsum"]
    flow = chain(add.s(1, 1), mul.s(2))
    frozen = flow.freeze()
    applied = flow.apply_async()
    assert applied.id == frozen.id and sent[-1].task_id == frozen.parent.id
    c = chord([add.s(1, 1), add.s(2, 2)], tsum.s())
    body = c.freeze()
    assert c.delay().id == body.id and [tm.task_id for tm in sent[-2:]] == [
        r.id for r in body.parent
    ]
    s = add.s(1, 2)
    assert s.freeze().id == s.delay().id == sent[-1].task_id
    # Changing it after freeze() sends it afresh.
    flow.link(tsum.s())
    assert flow.apply_async().id != frozen.id


class _Completer:
    """A client for the task that completes a chord whose body cannot be sent."""

    def __init__(self, results: dict[str, tuple[str, bytes]]) -> None:
        self.results = results
        self.stored: dict[str, tuple[str, bytes]] = {}
        self.fired: list[tuple[str, Any]] = []

    async def group_join(self, key: str, member: str, size: int, *, ttl: float) -> Any:
        return size, True

    async def result_get(self, ids: list[str]) -> dict[str, tuple[str, bytes]]:
        return {i: self.results[i] for i in ids if i in self.results}

    async def group_fire(self, key: str, message: Any) -> bool:
        self.fired.append((key, message))
        if message.routing_key:  # the body itself, not the "done" mark
            raise MessageTooLarge("too large", size=10, limit=1)
        return True

    def result_set(self, task_id: str, state: str, payload: bytes, ttl: float) -> Any:
        self.stored[task_id] = (state, payload)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_a_chord_body_that_cannot_be_sent_fails_the_chord() -> None:
    app, _ = make_app()
    add, tsum = app.tasks["add"], app.tasks["tsum"]
    element = chord([add.s(1, 1), add.s(2, 2)], tsum.s(), group_id="g").to_dict()
    body_id = element["body"]["options"]["task_id"]
    ok = encode_result(2, "json")
    client = _Completer({"g:0": ("SUCCESS", ok), "g:1": ("SUCCESS", ok)})
    [_, last] = build(app, element)
    await follow_up(app, client, "g:1", last.message.headers, "SUCCESS", ok)  # type: ignore[arg-type]
    state, payload = client.stored[body_id]
    assert state == "FAILURE"
    error = decode_result(payload)
    assert error["exc_type"] == "ChordError" and "Callback error" in error["exc_message"]
    assert [m.routing_key for _, m in client.fired][-1] == ""  # then marked done
    # A failed header task: the body's result names it; nothing is fired but the mark.
    client = _Completer(
        {
            "g:0": ("SUCCESS", ok),
            "g:1": ("FAILURE", encode_error("KeyError", "builtins", "k", "", "json")),
        }
    )
    await follow_up(app, client, "g:1", last.message.headers, "FAILURE", b"")  # type: ignore[arg-type]
    assert (
        "Dependency g:1 raised KeyError: k"
        in decode_result(client.stored[body_id][1])["exc_message"]
    )
    assert [m.routing_key for _, m in client.fired] == [""]
