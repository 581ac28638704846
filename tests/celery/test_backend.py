"""The Celery result backend against a real brokerd, with Celery in-process.

Results are written and read through ``app.backend`` and ``AsyncResult`` as
Celery's worker and callers do; the native SDK writes and reads the same
records to prove the two sides share one format. Chord bookkeeping is driven
the way Celery's worker drives it (``store_result`` then
``on_chord_part_return`` per header task), with duplicates, a completer that
"dies" after its join and concurrency, and the body message is consumed with
the native client. Waits are bounded only to fail instead of hanging.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kombu.serialization
import pytest
from celery import Celery, chain, states
from celery.app.task import Context
from celery.exceptions import ChordError, ImproperlyConfigured
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult, GroupResult

import brokerd_client
from brokerd_client.celery import chords
from brokerd_client.celery.backend import BrokerdBackend
from brokerd_client.celery.envelope import from_delivery
from brokerd_client.tasks import App
from brokerd_client.tasks.result import AsyncResult as NativeResult
from brokerd_client.tasks.serialization import decode_result, encode_error, encode_result

BOUND = 20.0


class PaymentDeclined(Exception):
    """A custom exception: rebuilt as itself (its module is imported)."""


@pytest.fixture
def app(broker: Any) -> Iterator[Celery]:
    app = Celery("t", broker=broker.url, backend=broker.url)
    app.conf.result_serializer = "json"
    yield app
    backend = app.backend
    assert isinstance(backend, BrokerdBackend)
    backend.close()


@pytest.fixture
def native(broker: Any) -> Iterator[brokerd_client.Client]:
    with brokerd_client.Client(broker.url) as client:
        yield client


def test_the_brokerd_scheme_selects_this_backend(app: Celery) -> None:
    assert isinstance(app.backend, BrokerdBackend)
    assert "brokerd://" in app.backend.as_uri()


def test_a_stored_result_is_read_by_async_result(app: Celery) -> None:
    app.backend.store_result("t1", {"answer": 42}, states.SUCCESS)
    r = AsyncResult("t1", app=app)
    assert r.state == states.SUCCESS
    assert r.ready() and r.successful()
    assert r.result == {"answer": 42} == r.info
    assert r.get(timeout=BOUND) == {"answer": 42}
    assert r.traceback is None


def test_get_is_answered_when_the_result_is_stored_later(app: Celery) -> None:
    r = AsyncResult("later", app=app)
    assert r.state == states.PENDING and not r.ready()
    writer = threading.Thread(
        target=lambda: app.backend.store_result("later", "done", states.SUCCESS)
    )
    writer.start()
    try:
        assert r.get(timeout=BOUND) == "done"
    finally:
        writer.join()


def test_get_with_a_timeout_raises_celerys_timeout_error(app: Celery) -> None:
    app.backend.store_result("slow", None, states.STARTED)
    with pytest.raises(CeleryTimeoutError):
        AsyncResult("slow", app=app).get(timeout=0.2)


def test_get_waits_with_result_wait_and_never_reads_in_a_loop(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = app.backend
    reads: list[str] = []
    waits: list[float] = []
    real_get, real_wait = backend.client.result_get, backend.client.result_wait

    def counting_get(ids: Any) -> Any:
        reads.append("get")
        return real_get(ids)

    def counting_wait(task_id: str, timeout: float) -> Any:
        waits.append(timeout)
        return real_wait(task_id, timeout)

    monkeypatch.setattr(backend.client, "result_get", counting_get)
    monkeypatch.setattr(backend.client, "result_wait", counting_wait)
    with pytest.raises(CeleryTimeoutError):
        AsyncResult("never", app=app).get(timeout=1.0)
    assert len(reads) == 1  # the first look
    assert len(waits) == 1 and 0.5 < waits[0] <= 1.0  # one pushed wait for the whole timeout


def test_custom_states_are_stored_as_started_with_the_real_state(
    app: Celery, native: brokerd_client.Client
) -> None:
    app.backend.store_result("p", {"done": 3, "of": 10}, "PROGRESS")
    r = AsyncResult("p", app=app)
    assert r.state == "PROGRESS"
    assert r.info == {"done": 3, "of": 10}
    state, payload = native.result_get(["p"])["p"]
    assert state == "STARTED"
    assert decode_result(payload)["state"] == "PROGRESS"


def test_exceptions_round_trip_with_their_type_and_traceback(app: Celery) -> None:
    app.backend.store_result(
        "f", PaymentDeclined("card expired"), states.FAILURE, traceback="Traceback: boom"
    )
    r = AsyncResult("f", app=app)
    assert r.state == states.FAILURE and r.failed()
    assert isinstance(r.result, PaymentDeclined) and r.result.args == ("card expired",)
    assert r.traceback == "Traceback: boom"
    with pytest.raises(PaymentDeclined, match="card expired"):
        r.get(timeout=BOUND)
    assert isinstance(r.get(timeout=BOUND, propagate=False), PaymentDeclined)


def test_result_extended_keeps_the_request_details(app: Celery) -> None:
    app.conf.result_extended = True
    request = Context(
        id="x1",
        task="t.add",
        args=[1, 2],
        kwargs={"k": 3},
        hostname="worker@a",
        retries=1,
        delivery_info={"routing_key": "celery"},
    )
    app.backend.store_result("x1", 3, states.SUCCESS, request=request)
    r = AsyncResult("x1", app=app)
    assert (r.name, r.args, r.kwargs, r.worker, r.retries, r.queue) == (
        "t.add",
        [1, 2],
        {"k": 3},
        "worker@a",
        1,
        "celery",
    )
    assert r.date_done is not None


def test_forget_deletes_the_result(app: Celery, native: brokerd_client.Client) -> None:
    app.backend.store_result("gone", 1, states.SUCCESS)
    r = AsyncResult("gone", app=app)
    assert r.get(timeout=BOUND) == 1
    r.forget()
    assert native.result_get(["gone"]) == {}
    assert AsyncResult("gone", app=app).state == states.PENDING


def test_a_result_written_by_the_native_sdk_is_read_by_celery(
    app: Celery, native: brokerd_client.Client
) -> None:
    native.result_set("n1", "SUCCESS", encode_result([1, "two"], "msgpack"))
    assert AsyncResult("n1", app=app).get(timeout=BOUND) == [1, "two"]
    native.result_set(
        "n2", "FAILURE", encode_error("KeyError", "builtins", "user", "tb text", "json")
    )
    r = AsyncResult("n2", app=app)
    with pytest.raises(KeyError) as info:
        r.get(timeout=BOUND)
    assert info.value.args == ("user",)
    assert r.traceback == "tb text"
    native.revoke(["n3"])  # the broker records REVOKED with an empty payload
    assert AsyncResult("n3", app=app).state == states.REVOKED


def test_a_result_written_by_celery_is_read_by_the_native_sdk(app: Celery, broker: Any) -> None:
    app.backend.store_result("c1", {"k": [1, 2]}, states.SUCCESS)
    app.backend.store_result("c2", ValueError("bad input"), states.FAILURE, traceback="tb")
    native_app = App("native", broker.url)
    try:
        assert NativeResult("c1", app=native_app).get(timeout=BOUND) == {"k": [1, 2]}
        with pytest.raises(ValueError, match="bad input") as info:
            NativeResult("c2", app=native_app).get(timeout=BOUND)
        assert getattr(info.value, "remote_traceback", None) == "tb"
    finally:
        native_app.close()


def test_pickle_is_refused_when_the_backend_is_created(broker: Any) -> None:
    app = Celery("p", broker=broker.url, backend=broker.url)
    app.conf.result_serializer = "pickle"
    with pytest.raises(ImproperlyConfigured, match="json or msgpack"):
        _ = app.backend


def test_groups_are_saved_restored_and_deleted(app: Celery) -> None:
    members = [AsyncResult(f"m{i}", app=app) for i in range(3)]
    saved = GroupResult("grp", members, app=app)
    saved.save(backend=app.backend)
    restored = GroupResult.restore("grp", app=app, backend=app.backend)
    assert restored is not None and [r.id for r in restored.results] == ["m0", "m1", "m2"]
    restored.delete(backend=app.backend)
    assert GroupResult.restore("grp", app=app, backend=app.backend) is None


def test_get_many_yields_ready_results_then_waits_for_the_rest(app: Celery) -> None:
    for i in range(3):
        app.backend.store_result(f"j{i}", i, states.SUCCESS)
    group = GroupResult("jg", [AsyncResult(f"j{i}", app=app) for i in range(4)], app=app)
    writer = threading.Thread(target=lambda: app.backend.store_result("j3", 3, states.SUCCESS))
    writer.start()
    try:
        assert group.join_native(timeout=BOUND) == [0, 1, 2, 3]
    finally:
        writer.join()


# --- chords ------------------------------------------------------------------------------


def _chord(app: Celery, size: int, gid: str = "chord-1") -> dict[str, Any]:
    """What chord.run does on the producer side; the body signature as a dict."""
    body = app.signature("t.body")
    body.freeze("body-task", group_id=gid)
    header = [AsyncResult(f"h{i}", app=app) for i in range(size)]
    app.backend.apply_chord((gid, header), body)
    app.backend.set_chord_size(gid, size)
    return dict(body)


def _finish(app: Celery, task_id: str, value: Any, chord: dict[str, Any], gid: str) -> None:
    """What a worker does when a chord header task returns."""
    request = Context(id=task_id, group=gid, chord=chord, ignore_result=False)
    app.backend.mark_as_done(task_id, value, request=request)


def _body_messages(native: brokerd_client.Client, queue: str = "celery") -> list[Any]:
    """Every message on ``queue`` (the chord bodies published so far: GroupFire
    answers after the commit, so the count is exact when the calls returned)."""
    count = native.queue_stats(queue).ready

    async def take() -> list[Any]:
        async with await brokerd_client.connect(native.url) as client:
            consumer = await client.consume(queue, prefetch=max(count, 1))
            got = []
            for _ in range(count):
                delivery = await consumer.next(timeout=BOUND)
                got.append(from_delivery(delivery.body, delivery.headers))
                await delivery.ack()
            return got

    return asyncio.run(take())


def test_a_chord_of_100_with_duplicates_and_a_redelivery_fires_its_body_once(
    app: Celery, native: brokerd_client.Client
) -> None:
    native.declare_queue("celery")
    gid = "chord-100"
    chord = _chord(app, 100, gid)
    size, run = chords._chord_size(app.backend, gid) or (0, "")
    assert size == 100
    others = [(f"h{i}", i) for i in range(100) if i != 42]
    duplicates = [(f"h{i}", i) for i in range(0, 100, 3) if i != 42]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: _finish(app, c[0], c[1], chord, gid), others + duplicates))
    assert _body_messages(native) == []  # one header task still running
    # The last one stores its result, joins, is told it completed the chord and
    # "dies" before firing the body; its delivery comes back to a worker.
    app.backend.store_result("h42", 42, states.SUCCESS)
    assert native.group_join(f"{gid}.{run}", "h42", 100) == (100, True)
    with ThreadPoolExecutor(8) as pool:
        redelivered = [("h42", 42), *duplicates[:10], ("h42", 42)]
        list(pool.map(lambda c: _finish(app, c[0], c[1], chord, gid), redelivered))
    messages = _body_messages(native)
    assert len(messages) == 1
    kombu_message = messages[0]
    assert kombu_message is not None
    assert kombu_message.headers["task"] == "t.body"
    assert kombu_message.headers["id"] == "body-task"
    args, kwargs, _embed = kombu.serialization.loads(
        kombu_message.body, kombu_message.content_type, kombu_message.content_encoding
    )
    assert args == [list(range(100))] and kwargs == {}
    # The saved header GroupResult is gone; the header results stay.
    assert native.result_get([gid]) == {}
    assert AsyncResult("h7", app=app).get(timeout=BOUND) == 7


def test_a_chord_whose_completer_is_redelivered_after_firing_fires_nothing_more(
    app: Celery, native: brokerd_client.Client
) -> None:
    native.declare_queue("celery")
    chord = _chord(app, 2, "c2")
    _finish(app, "h0", 0, chord, "c2")
    _finish(app, "h1", 1, chord, "c2")
    _finish(app, "h1", 1, chord, "c2")  # redelivered after it fired
    assert len(_body_messages(native)) == 1


def test_a_chord_whose_body_is_a_chain_fires_the_chains_first_task_once(
    app: Celery, native: brokerd_client.Client
) -> None:
    """``group | a | b`` is a chord whose body is the chain ``a | b``. Celery's
    chain applies its first task with the app's own producer (it drops a
    ``producer`` argument), yet the body must still go out through GroupFire."""
    native.declare_queue("celery")
    body = chain(app.signature("t.body"), app.signature("t.next"))
    last = body.freeze(group_id="cc")
    header = [AsyncResult(f"h{i}", app=app) for i in range(2)]
    app.backend.apply_chord(("cc", header), body)
    app.backend.set_chord_size("cc", 2)
    for i in range(2):
        _finish(app, f"h{i}", i, dict(body), "cc")
    _finish(app, "h1", 1, dict(body), "cc")  # redelivered after it fired
    [message] = _body_messages(native)
    assert message is not None and message.headers["task"] == "t.body"
    args, _kwargs, embed = kombu.serialization.loads(
        message.body, message.content_type, message.content_encoding
    )
    assert args == [[0, 1]]
    assert [step["task"] for step in embed["chain"]] == ["t.next"]
    assert AsyncResult(last.id, app=app).state == states.PENDING  # not failed


def test_a_failed_header_task_fails_the_body_with_a_chord_error(
    app: Celery, native: brokerd_client.Client
) -> None:
    native.declare_queue("celery")
    chord = _chord(app, 2, "cf")
    _finish(app, "h0", 0, chord, "cf")
    request = Context(id="h1", group="cf", chord=chord, ignore_result=False, errbacks=None)
    app.backend.mark_as_failure("h1", PaymentDeclined("no"), request=request)
    body = AsyncResult("body-task", app=app)
    assert body.state == states.FAILURE
    assert isinstance(body.result, ChordError)
    assert "h1" in str(body.result)
    assert _body_messages(native) == []


def test_the_url_path_puts_the_results_in_that_vhost(broker: Any) -> None:
    from brokerd_client.ctl.main import run

    code, _, err = run(["--data-dir", str(broker.data_dir), "add_vhost", "proj"], env={})
    assert code == 0, err
    app = Celery("t", broker=broker.url + "/proj", backend=broker.url + "/proj")
    app.conf.result_serializer = "json"
    try:
        app.backend.store_result("same-id", {"answer": 1}, states.SUCCESS)
        assert AsyncResult("same-id", app=app).get(timeout=BOUND) == {"answer": 1}
        assert app.backend.as_uri().endswith("/proj")
    finally:
        app.backend.close()
    with brokerd_client.Client(broker.url + "/proj") as there:
        assert set(there.result_get(["same-id"])) == {"same-id"}
    with brokerd_client.Client(broker.url) as root:
        assert root.result_get(["same-id"]) == {}
