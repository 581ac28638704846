"""ResultDelete, GroupJoin and GroupFire on a fake clock and an in-memory store.

The harness is test_task_ext's: replies wait for ``settle()``, a "restart" is
a new broker and task layer over what the store committed.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_task_ext import TaskEnv

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

DAY = 86_400.0


@pytest.fixture
def env() -> TaskEnv:
    e = TaskEnv()
    e.broker.declare_queue("body", True, {})
    return e


def join(c: Any, group: str, member: str, size: int, ttl: float = DAY) -> list[Any]:
    value: list[Any] = c.ok(lambda r: bp.GroupJoin(r, group, member, size, ttl))
    return value


def fire(c: Any, group: str, body: bytes = b"go", props: dict[str, Any] | None = None) -> Any:
    return c.ok(lambda r: bp.GroupFire(r, group, "", "body", body, props or {}))


def stored_bodies(env: TaskEnv) -> list[bytes]:
    return [bytes(r[0]) for r in env.rows("SELECT body FROM messages WHERE queue = 'body'")]


# --- ResultDelete --------------------------------------------------------------------------


def test_result_delete_answers_how_many_results_it_forgot(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "done", "SUCCESS", b"1"))
    c.ok(lambda r: bp.ResultSet(r, "running", "STARTED", b""))
    c.ok(lambda r: bp.ResultSet(r, "old", "SUCCESS", b"2", 1.0))
    env.advance(2.0)  # "old" expired: it does not count
    ids = ["done", "running", "old", "never", "done"]
    assert c.ok(lambda r: bp.ResultDelete(r, ids)) == 2
    assert c.ok(lambda r: bp.ResultGet(r, ["done", "running"])) == {}
    assert env.rows("SELECT task_id FROM results WHERE task_id != 'old'") == []
    assert c.ok(lambda r: bp.ResultDelete(r, [])) == 0
    # Forgotten on disk too: a restart does not bring them back.
    assert env.restart().client().ok(lambda r: bp.ResultGet(r, ["done"])) == {}


def test_result_delete_drops_a_cached_final_result(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"1"))
    assert env.ext.results.cached == 1
    assert c.ok(lambda r: bp.ResultDelete(r, ["t"])) == 1
    assert env.ext.results.cached == 0
    assert c.ok(lambda r: bp.ResultGet(r, ["t"])) == {}


def test_result_delete_keeps_the_frame_order_of_its_connection(env: TaskEnv) -> None:
    """Set, delete, set sent back to back: the later set survives; the delete
    counts the earlier one."""
    c = env.client()
    first = c.request(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"old"))
    delete = c.request(lambda r: bp.ResultDelete(r, ["t"]))
    again = c.request(lambda r: bp.ResultSet(r, "t", "STARTED", b"new"))
    env.settle()
    assert c.reply(first) == bp.Ok(first, None)
    assert c.reply(delete) == bp.Ok(delete, 1)
    assert c.reply(again) == bp.Ok(again, None)
    assert c.ok(lambda r: bp.ResultGet(r, ["t"])) == {"t": ["STARTED", b"new"]}


def test_result_delete_leaves_waiters_waiting(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b""))
    waiter = env.client()
    req = waiter.request(lambda r: bp.ResultWait(r, "t", 10.0))
    env.settle()
    assert c.ok(lambda r: bp.ResultDelete(r, ["t"])) == 1
    assert waiter.reply(req) is None
    c.ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"42"))
    assert waiter.reply(req) == bp.Ok(req, ["SUCCESS", b"42"])


def test_result_delete_commit_failure_is_internal(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"1"))
    env.store.fail_commits = 1
    assert c.error(lambda r: bp.ResultDelete(r, ["t"])) == ErrorCode.INTERNAL


# --- GroupJoin ---------------------------------------------------------------------------------


def test_joins_count_distinct_members_and_only_the_completing_join_completes(
    env: TaskEnv,
) -> None:
    c = env.client()
    assert join(c, "g", "a", 3) == [1, False]
    assert join(c, "g", "b", 3) == [2, False]
    assert join(c, "g", "a", 3) == [2, False]  # a set: again changes nothing
    assert join(c, "g", "c", 3) == [3, True]
    assert join(c, "g", "a", 3) == [3, False]
    assert join(c, "g", "d", 3) == [4, False]  # past the size: counted, never complete


def test_the_completer_completes_again_until_the_group_fires(env: TaskEnv) -> None:
    c = env.client()
    join(c, "g", "a", 2)
    assert join(c, "g", "b", 2) == [2, True]
    assert join(c, "g", "b", 2) == [2, True]  # redelivered before it fired
    assert fire(c, "g") is True
    assert join(c, "g", "b", 2) == [2, False]
    assert join(c, "g", "a", 2) == [2, False]


def test_joins_in_one_tick_have_exactly_one_completer(env: TaskEnv) -> None:
    clients = [env.client() for _ in range(5)]
    reqs = [
        cl.request(lambda r, m=f"m{i % 4}": bp.GroupJoin(r, "g", m, 4, DAY))
        for i, cl in enumerate(clients)
    ]
    env.settle()
    values = [cl.reply(req) for cl, req in zip(clients, reqs, strict=True)]
    assert [v.value for v in values if isinstance(v, bp.Ok)] == [
        [1, False],
        [2, False],
        [3, False],
        [4, True],
        [4, False],
    ]


def test_the_first_joins_size_stands(env: TaskEnv) -> None:
    c = env.client()
    join(c, "g", "a", 2)
    assert join(c, "g", "b", 5) == [2, True]


def test_a_join_is_answered_only_after_the_commit(env: TaskEnv) -> None:
    c = env.client()
    req = c.request(lambda r: bp.GroupJoin(r, "g", "a", 1, DAY))
    assert c.frames == []
    env.settle()
    assert c.reply(req) == bp.Ok(req, [1, True])


def test_invalid_joins_are_refused_and_change_nothing(env: TaskEnv) -> None:
    c = env.client()
    for make in (
        lambda r: bp.GroupJoin(r, "", "a", 1, DAY),
        lambda r: bp.GroupJoin(r, "g", "", 1, DAY),
        lambda r: bp.GroupJoin(r, "g" * 256, "a", 1, DAY),
        lambda r: bp.GroupJoin(r, "g", "a", 0, DAY),
        lambda r: bp.GroupJoin(r, "g", "a", 1_000_001, DAY),
        lambda r: bp.GroupJoin(r, "g", "a", 1, 0.5),
    ):
        assert c.error(make) == ErrorCode.INVALID_ARGUMENT
    assert env.ext.groups.groups == {}


def test_groups_expire_after_their_ttl_and_a_later_join_starts_afresh(env: TaskEnv) -> None:
    c = env.client()
    join(c, "g", "a", 2, ttl=10.0)
    env.advance(5.0)
    join(c, "g", "b", 3, ttl=10.0)  # lengthens: expires 10 s from now
    env.advance(9.0)
    assert join(c, "g", "c", 3, ttl=10.0) == [3, False]  # still the first join's size (2)
    env.advance(10.0)
    env.settle()
    assert env.ext.groups.groups == {}
    assert env.rows("SELECT * FROM groups") == []
    assert env.rows("SELECT * FROM group_members") == []
    assert join(c, "g", "a", 1, ttl=10.0) == [1, True]


def test_a_group_and_its_completer_survive_a_restart(env: TaskEnv) -> None:
    c = env.client()
    join(c, "g", "a", 3)
    join(c, "g", "b", 3)
    c2 = env.restart().client()
    assert join(c2, "g", "a", 3) == [2, False]
    assert join(c2, "g", "c", 3) == [3, True]
    c3 = c2.env.restart().client()
    assert join(c3, "g", "c", 3) == [3, True]


def test_a_join_commit_failure_is_internal_and_a_retry_repairs_it(env: TaskEnv) -> None:
    c = env.client()
    env.store.fail_commits = 1
    assert c.error(lambda r: bp.GroupJoin(r, "g", "a", 1, DAY)) == ErrorCode.INTERNAL
    assert join(c, "g", "a", 1) == [1, True]
    assert env.rows("SELECT group_id, member_id FROM group_members") == [("g", "a")]


# --- GroupFire --------------------------------------------------------------------------------


def test_group_fire_publishes_once_and_marks_the_group_in_the_same_commit(env: TaskEnv) -> None:
    c = env.client()
    join(c, "g", "a", 1)
    props = {"headers": {"k": "v"}, "message_id": "body-task"}
    first = c.request(lambda r: bp.GroupFire(r, "g", "", "body", b"go", props))
    second = c.request(lambda r: bp.GroupFire(r, "g", "", "body", b"again", props))
    assert c.frames == []
    env.settle()
    assert c.reply(first) == bp.Ok(first, True)
    assert c.reply(second) == bp.Ok(second, False)
    assert stored_bodies(env) == [b"go"]
    assert env.rows("SELECT fired FROM groups") == [(1,)]
    assert env.rows("SELECT * FROM group_members") == []  # not needed once fired
    assert [m.message_id for dq in env.broker.queues["body"].ready for m in dq] == ["body-task"]


def test_a_fired_group_stays_fired_across_a_restart(env: TaskEnv) -> None:
    c = env.client()
    join(c, "g", "a", 1)
    assert fire(c, "g") is True
    c2 = env.restart().client()
    assert fire(c2, "g", b"twice") is False
    assert join(c2, "g", "a", 1) == [1, False]
    assert stored_bodies(c2.env) == [b"go"]


def test_a_refused_fire_publishes_nothing_and_leaves_the_group_unfired(env: TaskEnv) -> None:
    c = env.client()
    join(c, "g", "a", 1)
    bad = c.call(lambda r: bp.GroupFire(r, "g", "no-such-exchange", "k", b"x", {}))
    assert isinstance(bad, bp.Error) and bad.code == ErrorCode.NOT_FOUND
    unroutable = c.call(lambda r: bp.GroupFire(r, "g", "", "nowhere", b"x", {"mandatory": True}))
    assert isinstance(unroutable, bp.Error) and unroutable.code == ErrorCode.UNROUTABLE
    invalid = c.call(lambda r: bp.GroupFire(r, "g", "", "body", b"x", {"bogus": 1}))
    assert isinstance(invalid, bp.Error) and invalid.code == ErrorCode.INVALID_ARGUMENT
    assert join(c, "g", "a", 1) == [1, True]  # still the completer: may fire
    assert fire(c, "g") is True
    assert stored_bodies(env) == [b"go"]


def test_firing_an_unknown_or_expired_group_is_not_found(env: TaskEnv) -> None:
    c = env.client()
    assert c.error(lambda r: bp.GroupFire(r, "nope", "", "body", b"", {})) == ErrorCode.NOT_FOUND
    join(c, "g", "a", 1, ttl=5.0)
    env.advance(5.0)
    assert c.error(lambda r: bp.GroupFire(r, "g", "", "body", b"", {})) == ErrorCode.NOT_FOUND
    assert stored_bodies(env) == []


def test_a_failed_fire_commit_stores_neither_and_the_group_may_fire_again(env: TaskEnv) -> None:
    c = env.client()
    join(c, "g", "a", 1)
    env.store.fail_commits = 1
    assert c.error(lambda r: bp.GroupFire(r, "g", "", "body", b"lost", {})) == ErrorCode.INTERNAL
    assert stored_bodies(env) == []
    assert env.rows("SELECT fired FROM groups") == [(0,)]
    assert join(c, "g", "a", 1) == [1, True]
    assert fire(c, "g") is True
    assert stored_bodies(env) == [b"go"]


def test_a_hundred_completions_with_duplicates_fire_exactly_once(env: TaskEnv) -> None:
    """Every member joins, some twice (redelivered); each join that answers
    complete fires; the body is published once."""
    c = env.client()
    completed = []
    for round_ in range(2):
        for i in range(100):
            if round_ == 1 and i % 3:
                continue
            member = f"t{i}"
            if join(c, "chord", member, 100)[1]:
                completed.append(member)
                fire(c, "chord", f"body from {member}".encode())
    assert completed == ["t99"]
    assert stored_bodies(env) == [b"body from t99"]
