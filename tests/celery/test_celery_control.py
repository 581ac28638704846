"""Celery's remote control on brokerd: the real ``celery inspect`` and
``celery control`` CLI against real prefork and solo workers.

Remote control rides on a fanout exchange (``celery.pidbox``) bound to one
auto_delete, expiring queue per worker node, and replies come back through a
direct exchange (``reply.celery.pidbox``) to a queue per client. The tests
check what the CLI shows, what the workers do, and that the broker keeps no
queue a finished command declared.

A solo worker runs its task on the thread that reads the socket, so it
answers remote control only between tasks (as on any broker); the tests that
talk to a busy solo worker wait for the reply past the task's end.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celerykit import CELERY, DEADLINE, Runs, Worker, wait_for
from controlkit import (
    MeteredBroker,
    celery,
    inspect,
    json_reply,
    node,
    record_queue_options,
    start_celery,
)
from kombu import Connection, Queue

from brokerd_client.celery.transport import Channel


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MeteredBroker]:
    proc = MeteredBroker(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


def queue_stats(broker: Any, queue: str) -> dict[str, int]:
    with Connection(broker.url) as conn:
        channel: Channel = conn.default_channel
        return channel.queue_stats(queue)


def settled(broker: Any, queue: str) -> bool:
    """Nothing ready, leased or delayed in ``queue``."""
    stats = queue_stats(broker, queue)
    return stats["ready"] == stats["leased"] == stats["delayed"] == 0


def test_the_pidbox_and_reply_queues_map_to_auto_delete_expiring_brokerd_queues(
    app: Any, broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared = record_queue_options(monkeypatch)
    mailbox = app.control.mailbox
    with Connection(broker.url) as conn:
        channel = conn.default_channel
        mailbox.get_queue("n@h")(channel).declare()
        mailbox.get_reply_queue()(channel).declare()
    # Celery's defaults: control_queue_expires 10 s, control_queue_ttl 300 s
    # for the node queue (exclusive); the reply queue expires after 10 s.
    assert declared == [
        {"auto_delete": True, "expires": 10.0, "message_ttl": 300.0},
        {"auto_delete": True, "expires": 10.0, "message_ttl": 300.0},
    ]


def test_inspect_ping_and_stats_answer_for_every_worker_and_leave_no_reply_queue(
    broker: MeteredBroker, celery_env: dict[str, str], start_worker: Callable[..., Worker]
) -> None:
    start_worker("prefork", name="p")
    start_worker("solo", name="s")
    replies = inspect(celery_env, "ping")
    assert replies == {node("p0"): {"ok": "pong"}, node("s1"): {"ok": "pong"}}
    stats = inspect(celery_env, "stats", node("p0"), node("s1"))
    for name, pool in ((node("p0"), "prefork"), (node("s1"), "solo")):
        assert stats[name]["broker"]["transport"] == "brokerd"
        assert stats[name]["broker"]["port"] == broker.port
        assert stats[name]["pool"]["implementation"] == f"celery.concurrency.{pool}:TaskPool"
        assert stats[name]["prefetch_count"] == 1
    queues = broker.queues()
    assert queues[f"{node('p0')}.celery.pidbox"] == 1
    assert queues[f"{node('s1')}.celery.pidbox"] == 1
    assert not [q for q in queues if q.endswith(".reply.celery.pidbox")], queues


def test_inspect_active_shows_the_running_task_and_reserved_the_prefetched_ones(
    app: Any,
    celery_env: dict[str, str],
    start_worker: Callable[..., Worker],
    runs: Runs,
    tmp_path: Path,
) -> None:
    start_worker("prefork", name="p", extra=("--prefetch-multiplier", "3"))
    gate = str(tmp_path / "gate")
    ids = [app.send_task("task.gate", args=[tag, gate]).id for tag in ("a", "b", "c")]
    wait_for(lambda: runs.of("start", "a"), "the first task to start")
    me = node("p0")
    (active,) = inspect(celery_env, "active", me)[me]
    assert active["id"] == ids[0]
    assert active["name"] == "task.gate"
    assert active["acknowledged"] is False  # acks_late: held by the worker, leased
    assert active["delivery_info"]["exchange"] == "jobs"
    reserved = wait_for(
        lambda: (r := inspect(celery_env, "reserved", me)[me]) and len(r) == 2 and r,
        "two prefetched tasks",
    )
    assert sorted(r["id"] for r in reserved) == sorted(ids[1:])
    assert runs.of("start", "b") == []


def test_inspect_scheduled_is_empty_because_the_broker_holds_eta_tasks(
    app: Any,
    broker: Any,
    celery_env: dict[str, str],
    start_worker: Callable[..., Worker],
) -> None:
    start_worker("solo", name="s")
    app.send_task("task.record", args=["later"], countdown=600)
    me = node("s0")
    assert inspect(celery_env, "scheduled", me) == {me: []}
    assert inspect(celery_env, "reserved", me) == {me: []}
    stats = queue_stats(broker, "tasks")
    assert (stats["delayed"], stats["ready"], stats["leased"]) == (1, 0, 0)


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_control_revoke_keeps_a_queued_task_from_running(
    pool: str,
    app: Any,
    broker: Any,
    celery_env: dict[str, str],
    start_worker: Callable[..., Worker],
    runs: Runs,
    tmp_path: Path,
) -> None:
    worker = start_worker(pool, name="w")
    me = node("w0")
    gate = tmp_path / "gate"
    app.send_task("task.gate", args=["busy", str(gate)])
    wait_for(lambda: runs.of("start", "busy"), "the first task to start")
    queued = app.send_task("task.record", args=["revoked"]).id
    assert queue_stats(broker, "tasks")["ready"] == 1  # prefetch 1: still in the broker
    revoke = subprocess.Popen(
        [CELERY, "-A", "proj", "control", "revoke", queued, "--json", "-d", me, "-t", "30"],
        env=celery_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # A solo worker reads the command only once its task is over: the
        # command has reached it when its pidbox queue holds a delivery.
        pidbox = f"{me}.celery.pidbox"
        wait_for(
            lambda: revoke.poll() is not None or queue_stats(broker, pidbox)["leased"],
            "the revoke command to reach the worker",
        )
        gate.touch()
        out, _ = revoke.communicate(timeout=60)
    finally:
        if revoke.poll() is None:
            revoke.kill()
            revoke.wait()
    assert revoke.returncode == 0, out
    assert "flagged as revoked" in out
    app.send_task("task.record", args=["after"])
    wait_for(lambda: runs.of("ran", "after"), "the task sent after the revoked one")
    assert runs.of("ran", "revoked") == []
    assert f"Discarding revoked task: task.record[{queued}]" in worker.text()
    wait_for(lambda: settled(broker, "tasks"), "the revoked task to be acked")
    assert queued in inspect(celery_env, "revoked", me)[me]


def test_control_terminate_kills_a_running_task_on_prefork(
    app: Any,
    broker: Any,
    celery_env: dict[str, str],
    start_worker: Callable[..., Worker],
    runs: Runs,
    tmp_path: Path,
) -> None:
    worker = start_worker("prefork", name="p")
    me = node("p0")
    gate = tmp_path / "gate"
    task_id = app.send_task("task.gate", args=["doomed", str(gate)]).id
    wait_for(lambda: runs.of("start", "doomed"), "the task to start")
    # ``revoke --terminate`` of older Celery; the 5.x CLI spells it so.
    done = celery(celery_env, "control", "terminate", "SIGKILL", task_id, "--json", "-d", me)
    assert json_reply(done) == [{me: {"ok": f"terminate: {task_id}"}}]
    wait_for(lambda: inspect(celery_env, "active", me)[me] == [], "the task to end")
    gate.touch()
    app.send_task("task.record", args=["after"])  # the pool still works
    wait_for(lambda: runs.of("ran", "after"), "the next task")
    assert runs.of("done", "doomed") == []
    assert f"Terminating {task_id}" in worker.text()
    # acks_late without reject_on_worker_lost: the killed task is acked, not redelivered.
    wait_for(lambda: settled(broker, "tasks"), "the terminated task to be settled")


def test_control_shutdown_stops_every_worker_cleanly_and_their_queues_go(
    broker: MeteredBroker, celery_env: dict[str, str], start_worker: Callable[..., Worker]
) -> None:
    workers = [start_worker("prefork", name="p"), start_worker("solo", name="s")]
    assert f"{node('p0')}.celery.pidbox" in broker.queues()
    done = celery(celery_env, "control", "shutdown")
    # Celery's shutdown command never replies, so the CLI always reports
    # "No nodes replied" (on every broker); the workers do stop.
    assert "No nodes replied" in done.stdout + done.stderr
    for worker in workers:
        assert worker.proc.wait(DEADLINE) == 0, worker.text()
        assert "Got shutdown from remote" in worker.text()
    queues = broker.queues()
    assert not [q for q in queues if q.endswith("celery.pidbox")], queues


def test_control_shutdown_waits_for_the_running_task_and_returns_the_prefetched_one(
    app: Any,
    broker: Any,
    celery_env: dict[str, str],
    start_worker: Callable[..., Worker],
    runs: Runs,
    tmp_path: Path,
) -> None:
    worker = start_worker("prefork", name="p", extra=("--prefetch-multiplier", "2"))
    me = node("p0")
    gate = tmp_path / "gate"
    app.send_task("task.gate", args=["running", str(gate)])
    held = app.send_task("task.record", args=["held"]).id
    wait_for(lambda: runs.of("start", "running"), "the task to start")
    wait_for(lambda: inspect(celery_env, "reserved", me)[me], "the prefetched task")
    shutdown = start_celery(celery_env, "control", "shutdown", out=tmp_path / "shutdown.log")
    try:
        wait_for(lambda: "Got shutdown from remote" in worker.text(), "the shutdown command")
        gate.touch()
        assert worker.proc.wait(DEADLINE) == 0, worker.text()
    finally:
        shutdown.kill()
        shutdown.wait()
    assert len(runs.of("done", "running")) == 1  # warm shutdown: it finished
    assert runs.of("ran", "held") == []
    stats = queue_stats(broker, "tasks")
    assert (stats["ready"], stats["leased"]) == (1, 0), held  # back in the broker, not lost


def test_drain_events_hands_over_one_message_per_call_like_every_kombu_transport(
    broker: Any,
) -> None:
    # kombu's pidbox counts replies by drain_events calls (``limit``): a
    # call that dispatched two replies left ``inspect --destination a,b``
    # waiting for a third until its timeout.
    q = Queue("one-by-one")
    got: list[Any] = []
    with Connection(broker.url) as conn:
        producer = conn.Producer(serializer="json")
        for n in range(3):
            producer.publish({"n": n}, routing_key=q.name, declare=[q])
        with conn.Consumer([q], callbacks=[lambda body, m: got.append(body)], no_ack=True):
            read_without_dispatching(conn, 3)
            for n in range(3):
                conn.drain_events(timeout=10)
                assert got == [{"n": i} for i in range(n + 1)]
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=0.2)


def test_a_cancelled_consumer_gets_nothing_more_and_its_unhandled_messages_go_back(
    broker: Any,
) -> None:
    q = Queue("cancelled")
    got: list[Any] = []
    with Connection(broker.url) as conn:
        producer = conn.Producer(serializer="json")
        for n in range(3):
            producer.publish({"n": n}, routing_key=q.name, declare=[q])
        with conn.Consumer([q], callbacks=[lambda body, m: got.append(body)]):
            read_without_dispatching(conn, 3)
            conn.drain_events(timeout=10)
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=0.2)
        assert got == [{"n": 0}]
        stats = queue_stats(broker, q.name)
        assert (stats["ready"], stats["leased"]) == (2, 1)  # the one handled is not acked


def read_without_dispatching(conn: Connection, count: int) -> None:
    """Read from the socket until ``count`` deliveries wait to be dispatched."""
    wire = conn.connection.wire

    def read() -> bool:
        wire.read_available()
        return len(wire.deliveries) >= count

    wait_for(read, f"{count} deliveries read")
