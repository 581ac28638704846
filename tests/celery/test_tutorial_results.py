"""The tutorial project on brokerd, asserted through Celery's own ``AsyncResult``.

One brokerd and one real ``celery -A tutorial worker -P prefork -c 2`` serve
the whole module; the project sends msgpack + zlib through a topic exchange,
acks late, stores results with ``result_backend = "brokerd://..."``. Every
wait is bounded only to fail instead of hanging; nothing asserts speed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import chain, chord, group, states
from celery.exceptions import ChordError, TaskRevokedError, TimeLimitExceeded
from celery.result import AsyncResult
from celerykit import wait_for
from tutorial.orders import tasks as orders
from tutorial.web import tasks as web
from tutorialkit import Fleet, idle, project_app

BOUND = 30.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("tutorial"))
    try:
        fleet.worker()
        yield fleet
    finally:
        fleet.close()


@pytest.fixture(scope="module")
def tutorial(fleet: Fleet) -> Iterator[Any]:
    app = project_app(fleet.url)
    try:
        yield app
    finally:
        app.close()


def test_a_result_is_read_with_get_state_and_its_request_details(tutorial: Any) -> None:
    r = orders.add.delay(2, 40)
    assert r.get(timeout=BOUND) == 42
    assert r.state == states.SUCCESS and r.successful()
    assert r.info == 42
    assert r.name == "orders.add"
    assert list(r.args) == [2, 40]
    assert r.queue == "task.#"  # the routing key: the default queue's own


def test_send_task_by_name_is_routed_to_the_web_queue_by_task_routes(
    tutorial: Any, fleet: Fleet
) -> None:
    r = tutorial.send_task("web.render", args=["home"])
    assert r.get(timeout=BOUND) == "<p>home</p>"
    assert r.queue == "web.render"
    assert len(fleet.runs.of("web", "home")) == 1


def test_a_custom_progress_state_is_seen_with_its_info_then_the_result(
    tutorial: Any, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    r = orders.progress.delay("p1", str(gate))
    wait_for(lambda: r.state == "PROGRESS", "the PROGRESS state")
    assert r.info == {"tag": "p1", "done": 1, "of": 2}
    assert not r.ready()
    gate.touch()
    assert r.get(timeout=BOUND) == "p1 finished"
    assert r.state == states.SUCCESS


def test_forget_deletes_the_result(tutorial: Any) -> None:
    r = orders.add.delay(1, 1)
    assert r.get(timeout=BOUND) == 2
    r.forget()
    assert AsyncResult(r.id, app=tutorial).state == states.PENDING
    assert r.state == states.PENDING


def test_a_failing_task_raises_its_own_exception_type(tutorial: Any) -> None:
    r = orders.charge.delay("4242")
    with pytest.raises(orders.PaymentDeclined, match="card 4242 declined"):
        r.get(timeout=BOUND)
    assert r.state == states.FAILURE and r.failed()
    assert isinstance(r.result, orders.PaymentDeclined)
    assert "PaymentDeclined" in (r.traceback or "")


def test_a_task_retried_with_a_countdown_succeeds_on_its_second_run(
    tutorial: Any, fleet: Fleet
) -> None:
    r = orders.flaky.delay("r1")
    assert r.get(timeout=BOUND) == 1
    assert r.state == states.SUCCESS
    assert [w[2] for w in fleet.runs.of("try", "r1")] == ["0", "1"]


def test_a_task_past_its_hard_time_limit_fails_with_time_limit_exceeded(tutorial: Any) -> None:
    r = orders.stuck.delay("h1")
    with pytest.raises(TimeLimitExceeded):
        r.get(timeout=BOUND)
    assert r.state == states.FAILURE
    # The pool replaced the killed process: the worker still runs tasks.
    assert orders.add.delay(3, 4).get(timeout=BOUND) == 7


def test_a_task_past_its_soft_time_limit_can_clean_up_and_return(
    tutorial: Any, fleet: Fleet
) -> None:
    assert orders.careful.delay("s1").get(timeout=BOUND) == "cleaned up"
    assert len(fleet.runs.of("soft", "s1")) == 1


def test_countdown_and_eta_run_no_earlier_than_asked(tutorial: Any, fleet: Fleet) -> None:
    sent = time.time()
    by_countdown = orders.record_task.apply_async(("cd1",), countdown=1)
    by_eta = orders.record_task.apply_async(
        ("eta1",), eta=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    )
    assert by_countdown.get(timeout=BOUND) == "cd1"
    assert by_eta.get(timeout=BOUND) == "eta1"
    for tag in ("cd1", "eta1"):
        (line,) = fleet.runs.of("ran", tag)
        assert float(line[-1]) >= sent + 1 - 0.05


def test_a_task_delivered_after_it_expires_is_revoked_not_run(tutorial: Any, fleet: Fleet) -> None:
    r = orders.record_task.apply_async(("x1",), countdown=2, expires=1)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=BOUND)
    assert r.state == states.REVOKED
    kept = orders.record_task.apply_async(("x2",), expires=60)
    assert kept.get(timeout=BOUND) == "x2"
    assert fleet.runs.of("ran", "x1") == []


@pytest.mark.parametrize(
    ("options", "routing_key"),
    [
        ({"priority": 9}, "task.#"),
        ({"queue": "web"}, "web.#"),
        ({"exchange": "jobs", "routing_key": "task.urgent"}, "task.urgent"),
        ({"exchange": "jobs", "routing_key": "web.orders"}, "web.orders"),
        ({"routing_key": "task.plain"}, "task.plain"),
    ],
)
def test_apply_async_routing_options_reach_a_queue_and_run(
    tutorial: Any, options: dict[str, Any], routing_key: str
) -> None:
    r = orders.add.apply_async((5, 6), **options)
    assert r.get(timeout=BOUND) == 11
    assert r.queue == routing_key


def test_a_chain_passes_each_result_on(tutorial: Any) -> None:
    r = chain(orders.add.s(1, 2), orders.add.s(3), orders.add.s(4)).delay()
    assert r.get(timeout=BOUND) == 10
    assert r.parent.get(timeout=BOUND) == 6


def test_a_group_returns_every_result_in_order(tutorial: Any) -> None:
    r = group(orders.add.s(i, i) for i in range(10)).delay()
    assert r.get(timeout=BOUND) == [2 * i for i in range(10)]


def test_a_chord_of_a_hundred_fires_its_body_exactly_once(tutorial: Any, fleet: Fleet) -> None:
    r = chord(orders.part.s(i, "c100") for i in range(100))(orders.total.s("c100"))
    assert r.get(timeout=60) == sum(range(100))
    wait_for(lambda: idle(tutorial), "the queues to drain")
    assert len(fleet.runs.of("part", "c100")) == 100
    assert len(fleet.runs.of("body", "c100")) == 1


def test_a_group_piped_into_a_task_is_a_chord_and_its_chain_goes_on(
    tutorial: Any, fleet: Fleet
) -> None:
    flow = group(orders.part.s(i, "gc") for i in range(10)) | orders.total.s("gc")
    r = (flow | orders.add.s(5)).delay()
    assert r.get(timeout=BOUND) == sum(range(10)) + 5
    wait_for(lambda: idle(tutorial), "the queues to drain")
    assert len(fleet.runs.of("body", "gc")) == 1


def test_a_chord_whose_body_is_a_group_runs_each_body_task_once(
    tutorial: Any, fleet: Fleet
) -> None:
    # json: msgpack cannot encode a group signature (Celery's group has a
    # __len__, the number of its tasks, which msgpack takes as the size of
    # the map), so header messages embedding it do not decode, on any broker.
    body = group(orders.total.s("gb1"), orders.total.s("gb2"))
    r = chord(orders.part.s(i, "gb") for i in range(10))(body, serializer="json")
    assert r.get(timeout=BOUND) == [sum(range(10))] * 2
    wait_for(lambda: idle(tutorial), "the queues to drain")
    assert len(fleet.runs.of("body", "gb1")) == 1
    assert len(fleet.runs.of("body", "gb2")) == 1


def test_a_group_of_chords_fires_each_body_once(tutorial: Any, fleet: Fleet) -> None:
    chords = [
        chord(orders.part.s(i, f"gk{k}") for i in range(5))(orders.total.s(f"gk{k}"))
        for k in range(3)
    ]
    assert [r.get(timeout=BOUND) for r in chords] == [sum(range(5))] * 3
    nested = group(
        chord([orders.part.s(i, f"nk{k}") for i in range(5)], orders.total.s(f"nk{k}"))
        for k in range(3)
    ).delay()
    assert nested.get(timeout=BOUND) == [sum(range(5))] * 3
    wait_for(lambda: idle(tutorial), "the queues to drain")
    for k in range(3):
        assert len(fleet.runs.of("body", f"gk{k}")) == 1
        assert len(fleet.runs.of("body", f"nk{k}")) == 1


def test_a_failure_in_a_chain_stops_it_and_reaches_the_caller(tutorial: Any, fleet: Fleet) -> None:
    r = chain(orders.add.s(1, 1), orders.charge.si("chain"), orders.record_task.si("after")).delay()
    with pytest.raises(orders.PaymentDeclined):
        r.get(timeout=BOUND)
    assert fleet.runs.of("ran", "after") == []


def test_a_chord_with_a_failed_header_task_fails_without_running_its_body(
    tutorial: Any, fleet: Fleet
) -> None:
    header = [*(orders.part.s(i, "cf") for i in range(5)), orders.charge.si("cf")]
    r = chord(header)(orders.total.s("cf"))
    # Celery's get() raises the failed header task's own error, or the
    # body's ChordError if that is stored by the time it looks.
    with pytest.raises((orders.PaymentDeclined, ChordError), match="card cf declined"):
        r.get(timeout=BOUND)
    body = AsyncResult(r.id, app=tutorial)
    wait_for(lambda: body.state == states.FAILURE, "the body to be failed")
    assert isinstance(body.result, ChordError)
    assert "card cf declined" in str(body.result)
    wait_for(lambda: idle(tutorial), "the queues to drain")
    assert fleet.runs.of("body", "cf") == []


def test_a_web_task_sent_by_signature_runs(tutorial: Any) -> None:
    assert web.render.s("sig").delay().get(timeout=BOUND) == "<p>sig</p>"
