"""End to end (real brokerd, real worker processes): chains, groups, chords, links.

Every wait is bounded only to fail instead of hanging; nothing asserts speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from taskhelpers import BOUND, events, wait_events

from brokerd_client.tasks import (
    ChordError,
    GroupResult,
    TaskRevokedError,
    chain,
    chord,
    group,
)
from brokerd_client.tasks.testing import WorkerHandle

Start = Callable[..., WorkerHandle]


@pytest.fixture
def cv(broker: Any) -> Iterator[ModuleType]:
    """The canvas test app, pointed at this test's broker (the producer side)."""
    import canvasapp

    canvasapp.app.conf.update(broker_url=broker.url, task_always_eager=False)
    try:
        yield canvasapp
    finally:
        canvasapp.app.close()


@pytest.fixture
def start_worker(start_app_worker: Start) -> Start:
    return partial(start_app_worker, "canvasapp")


@pytest.mark.parametrize("pool", ["asyncio", "processes"])
def test_a_chain_of_ten_passes_each_result_on(
    cv: ModuleType, start_worker: Start, pool: str
) -> None:
    start_worker("-c", "2", "-P", pool)
    result = chain(cv.add.s(1, 1), *[cv.inc.s() for _ in range(9)]).apply_async()
    assert result.get(timeout=BOUND) == 11
    # .parent leads back to the first task, each already stored.
    values = []
    node = result
    while node is not None:
        values.append(node.get(timeout=BOUND))
        node = node.parent
    assert values == list(range(11, 1, -1))


def test_pipe_partial_args_and_immutable_signatures(cv: ModuleType, start_worker: Start) -> None:
    start_worker()
    # (1 + 2) * 10, then an immutable step ignoring it, then + 5.
    flow = cv.add.s(1, 2) | cv.mul.s(10) | cv.add.si(7, 0) | cv.add.s(5)
    assert flow.delay().get(timeout=BOUND) == 12
    assert (cv.add.s(2) | cv.mul.s(3)).delay(1).get(timeout=BOUND) == 9


def test_a_group_gets_its_results_in_order(cv: ModuleType, start_worker: Start) -> None:
    start_worker("-c", "4")
    res = group(cv.add.s(i, i) for i in range(20)).apply_async()
    assert isinstance(res, GroupResult)
    assert res.get(timeout=BOUND) == [2 * i for i in range(20)]
    assert res.ready() and res.successful() and res.completed_count() == 20
    res.save()
    again = GroupResult.restore(res.id, app=cv.app)
    assert again is not None and again.get(timeout=BOUND) == res.get()


def test_a_chord_of_fifty_sums_its_header(
    cv: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker("-c", "4")
    res = chord(cv.inc.s(i) for i in range(50))(cv.tsum.s())
    assert res.get(timeout=BOUND) == sum(range(1, 51))
    assert isinstance(res.parent, GroupResult)
    assert res.parent.get(timeout=BOUND) == list(range(1, 51))
    [run] = events(state_dir, "tsum")
    assert run["values"] == list(range(1, 51))  # in header order


def test_a_chord_across_two_workers_reads_every_header_result(
    cv: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    # Header tasks finish on two connections: whichever completes the chord
    # must see the other worker's results (each stored before its join).
    start_worker("-c", "4")
    start_worker("-c", "4")
    for _ in range(3):
        res = chord((cv.inc.s(i) for i in range(60)), cv.tsum.s()).apply_async()
        assert res.get(timeout=BOUND) == sum(range(1, 61))
    assert len(events(state_dir, "tsum")) == 3


def test_a_failing_header_task_fails_the_chord_and_the_body_never_runs(
    cv: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker("-c", "2")
    res = chord([cv.inc.s(1), cv.fail.s("x"), cv.inc.s(2)], cv.tsum.s()).apply_async()
    with pytest.raises(ChordError, match="ValueError"):
        res.get(timeout=BOUND)
    # A chain member failing before its last task: that task's result is the
    # failure, and it joins the chord on the chain's behalf.
    member = chain(cv.fail.s("y"), cv.inc.s())
    res = chord([member, cv.inc.s(2)], cv.tsum.s()).apply_async()
    with pytest.raises(ChordError, match="bad y"):
        res.get(timeout=BOUND)
    assert events(state_dir, "tsum") == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_the_body_runs_once_when_the_completing_header_task_is_redelivered(
    cv: ModuleType, start_worker: Start, state_dir: Path, when: str
) -> None:
    # One worker, one task at a time: the fifth follow-up is the fifth header
    # task's, which completes the chord. The worker exits hard there, with
    # the result stored ("before": nothing joined yet; "after": the body was
    # fired, the ack not sent). A second worker gets the task again.
    first = start_worker("-c", "1", env={"CV_DIE": when, "CV_DIE_AT": "5"})
    res = chord([cv.inc.s(i) for i in range(5)], cv.tsum.s()).apply_async()
    first.proc.wait(BOUND)
    assert (state_dir / "died").exists()
    start_worker("-c", "2")
    assert res.get(timeout=BOUND) == sum(range(1, 6))
    # Anything still to come would be in the queue by now: the second worker
    # has acked the redelivered header task only after its follow-ups.
    wait_events(state_dir, "tsum", 1)
    chain(cv.add.s(0, 0), cv.record.s("fence")).apply_async().get(timeout=BOUND)
    assert len(events(state_dir, "tsum")) == 1


def test_a_chain_step_is_sent_once_when_its_parent_is_redelivered(
    cv: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    # The worker dies after the first step sent the second but before its ack.
    first = start_worker("-c", "1", env={"CV_DIE": "after", "CV_DIE_AT": "1"})
    res = chain(cv.add.s(1, 1), cv.record.s(tag="step")).apply_async()
    first.proc.wait(BOUND)
    start_worker("-c", "1")
    assert res.get(timeout=BOUND) == 2
    chain(cv.add.s(0, 0), cv.record.s(tag="fence")).apply_async().get(timeout=BOUND)
    assert [e["tag"] for e in events(state_dir, "record")] == ["step", "fence"]


def test_link_and_link_error(cv: ModuleType, start_worker: Start, state_dir: Path) -> None:
    start_worker("-c", "2")
    ok = cv.add.apply_async((2, 3), link=cv.record.s(tag="ok"), link_error=cv.errback.s("bad"))
    assert ok.get(timeout=BOUND) == 5
    bad = cv.fail.apply_async(("z",), link=cv.record.s(tag="no"), link_error=cv.errback.s("bad"))
    with pytest.raises(ValueError, match="bad z"):
        bad.get(timeout=BOUND)
    [err] = wait_events(state_dir, "errback", 1)
    assert err == {**err, "task_id": bad.id, "tag": "bad"}
    [rec] = wait_events(state_dir, "record", 1)
    assert rec["value"] == 5 and rec["tag"] == "ok"


def test_a_failed_chain_step_fails_the_rest_and_calls_the_chains_errback(
    cv: ModuleType, start_worker: Start, state_dir: Path
) -> None:
    start_worker()
    flow = chain(cv.add.s(1, 1), cv.fail.s(), cv.inc.s(), cv.inc.s())
    res = flow.apply_async(link_error=cv.errback.s("chain"))
    with pytest.raises(ValueError, match="bad 2"):
        res.get(timeout=BOUND)
    assert res.parent.failed()
    [err] = wait_events(state_dir, "errback", 1)
    assert err["task_id"] == res.parent.parent.id and err["tag"] == "chain"
    # The failed step's own follow-ups and the rest are done before its ack:
    # a later chain finishing means no other errback is on its way.
    chain(cv.add.s(0, 0), cv.inc.s()).apply_async().get(timeout=BOUND)
    assert len(events(state_dir, "errback")) == 1


def test_a_chain_step_that_expires_before_it_runs_revokes_the_rest(
    cv: ModuleType, start_worker: Start
) -> None:
    start_worker()
    # The broker holds the second step longer than it may live.
    late = cv.inc.s().set(countdown=1.5, expires=0.5)
    res = chain(cv.add.s(1, 1), late, cv.inc.s()).apply_async()
    with pytest.raises(TaskRevokedError):
        res.get(timeout=BOUND)
    assert res.parent.state == "REVOKED" and res.parent.parent.get(timeout=BOUND) == 2


def test_nesting_chain_in_group_group_in_chain_and_chord_in_chain(
    cv: ModuleType, start_worker: Start
) -> None:
    start_worker("-c", "4")
    in_group = group(chain(cv.add.s(i, i), cv.mul.s(10)) for i in range(4)).apply_async()
    assert in_group.get(timeout=BOUND) == [0, 20, 40, 60]
    # A group followed by a step is a chord; each member gets the parent's value.
    flow = chain(cv.add.s(1, 1), group(cv.mul.s(i) for i in range(3)), cv.tsum.s(), cv.inc.s())
    assert flow.apply_async().get(timeout=BOUND) == (0 + 2 + 4) + 1
    inner = chord([cv.inc.s(), cv.mul.s(3)], cv.tsum.s())
    assert (cv.add.s(2, 2) | inner | cv.inc.s()).delay().get(timeout=BOUND) == 5 + 12 + 1
    # A chain as a chord header member: its last task is the member.
    nested = chord([chain(cv.add.s(1, 1), cv.mul.s(5)), cv.inc.s(1)], cv.tsum.s())
    assert nested.delay().get(timeout=BOUND) == 10 + 2
    # A chord as a chord header member: its body's result is the member.
    inner = chord([cv.inc.s(1), cv.inc.s(2)], cv.tsum.s())
    outer = chord([inner, cv.inc.s(10)], cv.tsum.s())
    assert outer.delay().get(timeout=BOUND) == (2 + 3) + 11


async def test_async_code_applies_and_waits_without_blocking(
    cv: ModuleType, start_worker: Start
) -> None:
    start_worker("-c", "2")
    res = await chain(cv.add.s(1, 1), cv.inc.s()).aapply_async()
    assert await res.wait(timeout=BOUND) == 3
    g = await group(cv.inc.s(i) for i in range(3)).adelay()
    assert await g.wait(timeout=BOUND) == [1, 2, 3]
    await cv.app.aclose()
