"""A confirm means committed, and a publish reaches consumers only once it is.

A publisher confirm says the message is durable in every queue it routed to,
so it goes out when the store reports the commit, to the publishing connection
only; a publish that routed nowhere is confirmed as unroutable at that point
too, never dropped silently.

A refused publish (``PublishError``) must mean that nothing of it was stored
and nothing of it was delivered: a client that follows SPEC §10.4 publishes it
again, and a copy already handed to a consumer would be a duplicate. So the
core holds a publish's messages back from their queues until its batch
commits, and drops them if the commit fails. The store here can be made to
fail its next commits (``corekit.FlakyStore``).

A commit that promises durability is written first and synced (fsync) after:
the messages are delivered once the write succeeded (a failed write is where
a full disk shows), the confirms and the replies that promise durability go
out only once the sync did. The store here can hold its syncs back, or fail
them after the write.

While the server knows the write cannot fail for want of space (the broker's
``deliver_before_write``, from its free-disk reading), a message is delivered
before its write instead, as RabbitMQ does; these tests set that predicate.
A write that fails all the same withdraws what is still ready and refuses
saying the message may have been delivered, and turns this off until a write
succeeds.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from corekit import DiskEnv, Env, FakePeer, FlakyStore

from brokerd.errors import BrokerError
from brokerd.queues import WINDOW, Connection
from brokerd_protocol import ErrorCode


@pytest.fixture
def env() -> Env:
    return Env(FlakyStore(sqlite3.OperationalError("database or disk is full")))


def failing(env: Env) -> FlakyStore:
    assert isinstance(env.store, FlakyStore)
    return env.store


def test_confirm_follows_store_commit(env: Env) -> None:
    env.broker.declare_queue("q", True, {})
    conn, peer = env.connect()
    s1 = env.publish(conn, "q", b"1")
    s2 = env.publish(conn, "q", b"2")
    assert peer.confirm_calls == []
    assert env.store.count_rows() == 0  # nothing handed to the store yet
    env.broker.flush()
    assert env.store.count_rows() == 2
    assert peer.confirm_calls == []  # committed, but the store has not reported back
    env.store.drain()
    # One batch, one confirm call covering both publishes.
    assert peer.confirm_calls == [([s1, s2], [])]


def test_unroutable_is_confirmed_as_unroutable_only_after_commit(env: Env) -> None:
    env.broker.declare_exchange("d", "direct", True)
    conn, peer = env.connect()
    seq = env.publish(conn, "nobody", b"x", exchange="d")
    assert peer.confirm_calls == []
    env.broker.flush()
    assert peer.confirm_calls == []
    env.store.drain()
    assert peer.confirm_calls == [([], [seq])]
    assert env.broker.counters.unroutable == 1


def test_confirms_for_transient_queue_also_wait_for_flush(env: Env) -> None:
    env.broker.declare_queue("t", False, {})
    conn, peer = env.connect()
    seq = env.publish(conn, "t", b"x")
    env.store.drain()
    assert peer.confirm_calls == []
    env.settle()
    assert peer.confirmed == [seq]
    assert env.store.count_rows() == 0  # transient messages never reach the store


def test_confirms_go_to_the_publishing_connection_only(env: Env) -> None:
    env.broker.declare_queue("q", True, {})
    c1, p1 = env.connect()
    c2, p2 = env.connect()
    s1 = env.publish(c1, "q", b"1")
    s2 = env.publish(c2, "q", b"2")
    env.settle()
    assert p1.confirmed == [s1]
    assert p2.confirmed == [s2]


def test_no_confirms_for_a_connection_closed_before_commit(env: Env) -> None:
    env.broker.declare_queue("q", True, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"1")
    env.broker.flush()
    env.broker.close(conn)
    env.store.drain()
    assert peer.confirm_calls == []
    assert env.stats("q")["ready"] == 1  # the message itself was accepted


def test_failed_commit_refuses_stored_publishes_and_confirms_the_rest(env: Env) -> None:
    """Only a publish that needed the commit is refused; a transient-only or
    unroutable one needed nothing stored and was confirmed (or delivered) anyway."""
    failing(env).fail_commits = 1
    env.broker.declare_queue("q", True, {})
    env.broker.declare_queue("t", False, {})
    conn, peer = env.connect()
    s1 = env.publish(conn, "q", b"1")
    s2 = env.publish(conn, "nowhere", b"2")
    s3 = env.publish(conn, "t", b"3")
    env.settle()
    assert peer.confirm_calls == [([s3], [s2])]
    assert [(s, c) for s, c, _ in peer.publish_errors] == [(s1, ErrorCode.STORAGE_FAILED)]
    assert "disk is full" in peer.publish_errors[0][2]


def test_uncommitted_bytes_return_to_zero_after_commit(env: Env) -> None:
    """Flow control must not leak: transient and durable publishes both settle to 0."""
    b = env.broker
    b.declare_queue("durable", True, {})
    b.declare_queue("transient", False, {"dead_letter_queue": "dlq"})
    b.declare_queue("dlq", True, {})
    b.declare_exchange("f", "fanout", False)
    b.bind("durable", "f", "")
    b.bind("transient", "f", "")
    conn, peer = env.connect()
    env.publish(conn, "durable", b"12345")
    assert b.uncommitted_bytes >= 5  # counted while the commit is outstanding
    env.publish(conn, "transient", b"1234567")
    env.publish(conn, "", b"123", exchange="f")
    env.settle()
    assert b.uncommitted_bytes == 0
    # A transient message dead-lettered into a durable queue is inserted there.
    b.consume(conn, "transient", 10, None)
    ids = [g.delivery for g in peer.take()]
    b.reject(conn, ids)
    env.settle()
    assert env.stats("dlq")["ready"] == 2
    assert b.uncommitted_bytes == 0


# --- delivery after commit ---------------------------------------------------


def _consuming(env: Env) -> tuple[Connection, FakePeer]:
    """A durable queue "q" and a connection consuming from it."""
    env.broker.declare_queue("q", True, {})
    env.settle()
    return env.consuming("q")


def test_a_durable_publish_is_delivered_only_after_its_commit(env: Env) -> None:
    conn, peer = _consuming(env)
    seq = env.publish(conn, "q", b"one")
    assert peer.got == []
    assert peer.confirmed == []
    env.settle()
    assert peer.bodies() == [b"one"]
    assert peer.confirmed == [seq]


def test_a_publish_whose_commit_fails_is_neither_delivered_nor_stored(env: Env) -> None:
    b = env.broker
    conn, peer = _consuming(env)
    failing(env).fail_commits = 1
    seq = env.publish(conn, "q", b"lost")
    env.settle()
    assert [(s, code) for s, code, _ in peer.publish_errors] == [(seq, ErrorCode.STORAGE_FAILED)]
    assert "disk is full" in peer.publish_errors[0][2]
    assert peer.got == []
    assert peer.confirmed == []
    assert env.stats("q")["ready"] == 0
    assert env.store.count_rows() == 0
    assert b.counters.routed == 0
    assert b.counters.store_failed == 1
    # Storage recovers: the client's republish is delivered exactly once.
    assert failing(env).fail_commits == 0
    seq2 = env.publish(conn, "q", b"again")
    env.settle()
    assert peer.bodies() == [b"again"]
    assert peer.confirmed == [seq2]
    assert b.counters.routed == 1


def test_a_failed_fan_out_delivers_no_copy_not_even_to_a_transient_queue(env: Env) -> None:
    b = env.broker
    b.declare_exchange("fan", "fanout", True)
    b.declare_queue("durable", True, {})
    b.declare_queue("transient", False, {})
    b.bind("durable", "fan", "")
    b.bind("transient", "fan", "")
    env.settle()
    conn, peer = env.consuming("durable")
    b.consume(conn, "transient", 10, None)
    failing(env).fail_commits = 1
    env.publish(conn, "k", b"x", exchange="fan")
    env.settle()
    assert len(peer.publish_errors) == 1
    assert peer.got == []
    assert env.stats("transient")["ready"] == 0


def test_a_publish_to_transient_queues_only_is_delivered_at_once(env: Env) -> None:
    b = env.broker
    b.declare_queue("t", False, {})
    conn, peer = env.consuming("t")
    env.publish(conn, "t", b"now")
    assert peer.bodies() == [b"now"]


@pytest.mark.parametrize("before_write", [False, True], ids=["arriving", "entered"])
def test_a_purge_before_the_commit_removes_the_message_and_its_row(
    env: Env, before_write: bool
) -> None:
    """Whether the message waits for its write or entered its queue already."""
    if before_write:
        _roomy(env)
    b = env.broker
    b.declare_queue("q", True, {})
    env.settle()
    conn, peer = env.connect()
    env.publish(conn, "q", b"purged")
    assert b.purge_queue("q") == 1
    env.settle()
    b.consume(conn, "q", 10, None)
    env.settle()
    assert peer.got == []
    assert env.stats("q")["ready"] == 0
    assert env.store.count_rows() == 0
    assert env.restart().stats("q")["ready"] == 0


def test_a_queue_deleted_before_the_commit_gets_no_arriving_message(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {})
    env.settle()
    conn, peer = env.connect()
    env.publish(conn, "q", b"gone")
    b.delete_queue("q")
    b.declare_queue("q", True, {})
    env.settle()
    b.consume(conn, "q", 10, None)
    env.settle()
    assert peer.got == []
    assert env.store.count_rows() == 0


def test_max_length_counts_messages_still_arriving(env: Env) -> None:
    b = env.broker
    b.declare_queue("q", True, {"max_length": 1, "overflow": "reject_publish"})
    env.settle()
    conn, peer = env.connect()
    first = env.publish(conn, "q", b"1")
    with pytest.raises(BrokerError) as refused:
        env.publish(conn, "q", b"2")
    assert refused.value.code == ErrorCode.QUEUE_FULL
    env.settle()
    assert peer.confirmed == [first]
    assert env.stats("q")["ready"] == 1


def test_a_message_arriving_behind_a_newer_one_in_a_full_window_is_still_delivered(
    env: Env,
) -> None:
    """A dead-lettered message takes a newer seq and enters the window at once,
    while an older publish is still arriving. When the older one lands in a
    full window it must not be left on disk below the paging cursor, where no
    page load would ever find it."""
    from brokerd.queues import WINDOW

    b = env.broker
    b.declare_queue("dlq", True, {})
    b.declare_queue("work", True, {"dead_letter_queue": "dlq"})
    env.settle()
    conn, peer = env.connect()
    for i in range(WINDOW - 1):
        env.publish(conn, "dlq", b"old%d" % i)
    env.publish(conn, "work", b"rejected")
    env.settle()
    b.consume(conn, "work", 1, None)
    [g] = peer.take()
    env.publish(conn, "dlq", b"arriving")  # older seq, lands after the commit
    b.reject(conn, [g.delivery])  # newer seq, enters the window now
    env.settle()
    b.consume(conn, "dlq", 100, None)
    bodies: list[bytes] = []
    for _ in range(WINDOW * 2):
        env.settle()
        got = peer.take()
        if not got:
            break
        bodies += [x.body for x in got]
        b.ack(conn, [x.delivery for x in got])
    expected = [b"old%d" % i for i in range(WINDOW - 1)] + [b"arriving", b"rejected"]
    assert sorted(bodies) == sorted(expected)
    assert env.stats("dlq") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 1}


# --- delivery after the write, confirm after the sync -----------------------------------


def test_a_durable_publish_is_delivered_once_written_and_confirmed_once_synced(
    env: Env,
) -> None:
    conn, peer = _consuming(env)
    failing(env).hold_syncs = True
    seq = env.publish(conn, "q", b"one")
    env.settle()
    assert peer.bodies() == [b"one"]  # written: delivered while the sync runs
    assert peer.confirmed == []  # not durable yet: no confirm
    assert env.broker.counters.confirmed == 0
    failing(env).finish_syncs()
    env.settle()
    assert peer.confirmed == [seq]
    assert peer.bodies() == [b"one"]  # delivered once


def test_replies_that_promise_durability_wait_for_the_sync_others_only_for_the_write(
    env: Env,
) -> None:
    failing(env).hold_syncs = True
    ran: list[str] = []
    batch = env.broker.batch
    batch.after_commit(lambda e: ran.append(f"durable {e}"))
    batch.after_commit(lambda e: ran.append(f"written {e}"), durable=False)
    env.settle()
    assert ran == ["written None"]
    failing(env).finish_syncs()
    env.settle()
    assert ran == ["written None", "durable None"]


def test_a_sync_that_fails_after_delivery_refuses_the_confirm(env: Env) -> None:
    """The message was written and delivered; its fsync failed, so it is not
    known to be durable: the publish is refused with STORAGE_FAILED, saying
    it may have been delivered (the client's republish is at-least-once)."""
    b = env.broker
    conn, peer = _consuming(env)
    failing(env).fail_syncs = 1
    ran: list[BaseException | None] = []
    b.batch.after_commit(ran.append)
    seq = env.publish(conn, "q", b"written")
    env.settle()
    assert peer.bodies() == [b"written"]
    assert peer.confirmed == []
    [(refused, code, text)] = peer.publish_errors
    assert (refused, code) == (seq, ErrorCode.STORAGE_FAILED)
    assert "may have been delivered" in text and "disk is full" in text
    assert len(ran) == 1 and ran[0] is failing(env).error
    assert b.counters.store_failed == 1
    assert b.uncommitted_bytes == 0
    # The delivery stands and settles as any other.
    [g] = peer.take()
    b.ack(conn, [g.delivery])
    env.settle()
    assert env.store.count_rows() == 0


def test_a_failed_write_under_held_syncs_delivers_nothing(env: Env) -> None:
    conn, peer = _consuming(env)
    failing(env).hold_syncs = True
    failing(env).fail_commits = 1
    seq = env.publish(conn, "q", b"lost")
    env.settle()
    assert peer.got == []
    assert [(s, c) for s, c, _ in peer.publish_errors] == [(seq, ErrorCode.STORAGE_FAILED)]
    assert "nothing was stored" in peer.publish_errors[0][2]


def test_on_sqlite_a_delivery_goes_out_before_the_fsync_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = DiskEnv(tmp_path / "data" / "brokerd.sqlite3")
    release = threading.Event()
    try:
        env.broker.declare_queue("q", True, {})
        env.settle()
        conn, peer = env.consuming("q")
        wal = env.store.wal
        assert wal is not None
        sync = wal.sync

        def held() -> None:
            assert release.wait(30)
            sync()

        monkeypatch.setattr(wal, "sync", held)
        seq = env.publish(conn, "q", b"early")
        env.broker.flush()
        while not peer.got:  # the loop's side, while the writer waits in its fsync
            fn, args = env.posted.get(timeout=30)
            fn(*args)
        assert peer.bodies() == [b"early"]
        assert peer.confirmed == []
        release.set()
        env.settle()
        assert peer.confirmed == [seq]
        assert env.store.synced_commits >= 1
    finally:
        release.set()
        env.crash()


# --- delivery before the write, while the disk has room ------------------------------------


def _roomy(env: Env) -> list[bool]:
    """Let publishes go out before their write; the list's last value is what
    ``deliver_before_write`` answers (the test flips it)."""
    answer = [True]
    env.broker.deliver_before_write = lambda: answer[-1]
    return answer


def _early_with_a_failing_write(env: Env) -> tuple[Connection, FakePeer]:
    """Deliveries before the write, a consumer on "q", and the next write failing."""
    _roomy(env)
    conn, peer = _consuming(env)
    failing(env).fail_commits = 1
    return conn, peer


def test_with_room_a_durable_publish_is_delivered_before_its_write_and_confirmed_after(
    env: Env,
) -> None:
    _roomy(env)
    conn, peer = _consuming(env)
    seq = env.publish(conn, "q", b"one")
    env.broker.flush()  # the tick's end: dispatched, and the batch handed to the store
    assert peer.bodies() == [b"one"]  # before the store reported the write
    assert peer.confirmed == []
    env.settle()
    assert peer.confirmed == [seq]
    assert peer.bodies() == [b"one"]  # delivered once
    assert env.store.count_rows() == 1


def test_early_deliveries_are_written_out_before_the_batch_reaches_the_store(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick's end puts them on the wire first: the writer thread, woken by
    the commit, would otherwise compete with the loop before they leave."""
    _roomy(env)
    conn, peer = _consuming(env)
    events: list[tuple[str, list[bytes]]] = []
    commit = env.store.commit
    monkeypatch.setattr(
        env.store,
        "commit",
        lambda *a: (events.append(("commit", peer.bodies())), commit(*a))[-1],
    )
    env.broker.write_out = lambda: events.append(("write_out", peer.bodies()))
    env.publish(conn, "q", b"one")
    env.broker.flush()
    assert events == [("write_out", [b"one"]), ("commit", [b"one"])]


def test_without_early_deliveries_the_tick_end_asks_for_no_extra_write(env: Env) -> None:
    _consuming(env)  # no room: deliveries wait for their write
    conn, _ = env.connect()
    asked: list[None] = []
    env.broker.write_out = lambda: asked.append(None)
    env.publish(conn, "q", b"one")
    env.broker.flush()
    assert asked == []


def test_a_failed_write_after_an_early_delivery_refuses_saying_it_may_have_been_delivered(
    env: Env,
) -> None:
    _roomy(env)
    b = env.broker
    conn, peer = _consuming(env)
    failing(env).fail_commits = 1
    seq = env.publish(conn, "q", b"early")
    env.broker.flush()
    [g] = peer.take()
    env.settle()
    assert [(s, code) for s, code, _ in peer.publish_errors] == [(seq, ErrorCode.STORAGE_FAILED)]
    text = peer.publish_errors[0][2]
    assert "may have been delivered" in text and "disk is full" in text
    assert peer.confirmed == []
    # The delivery stands and settles (its row was never stored: nothing to delete).
    assert b.ack(conn, [g.delivery]) == []
    env.settle()
    assert env.store.count_rows() == 0
    assert env.stats("q") == {"ready": 0, "leased": 0, "delayed": 0, "consumers": 1}


def test_a_failed_write_withdraws_the_copies_still_ready_in_memory_and_on_disk(env: Env) -> None:
    """More than a window's worth: the queue kept some in memory and counted the
    rest as on disk; none of them exists after the failed write."""
    _roomy(env)
    b = env.broker
    b.declare_queue("q", True, {})
    env.settle()
    conn, peer = env.connect()
    failing(env).fail_commits = 1
    for i in range(WINDOW + 5):
        env.publish(conn, "q", b"m%d" % i)
    assert env.stats("q")["ready"] == WINDOW + 5
    env.settle()
    assert len(peer.publish_errors) == WINDOW + 5
    assert env.stats("q")["ready"] == 0
    assert env.store.count_rows() == 0
    _, consumer = env.consuming("q")
    env.settle()
    assert consumer.got == []
    # What is published next is delivered as usual.
    env.publish(conn, "q", b"next")
    env.settle()
    assert consumer.bodies() == [b"next"]


def _leased_when_its_write_failed(
    env: Env, options: dict[str, Any] | None = None
) -> tuple[Connection, FakePeer, int]:
    """A message delivered before its write, still leased when the write fails;
    returns the consuming connection, its peer and the delivery id."""
    _roomy(env)
    env.broker.declare_queue("q", True, options or {})
    env.settle()
    conn, peer = env.consuming("q")
    failing(env).fail_commits = 1
    env.publish(conn, "q", b"unwritten")
    env.broker.flush()
    [g] = peer.take()
    env.settle()
    assert [code for _, code, _ in peer.publish_errors] == [ErrorCode.STORAGE_FAILED]
    return conn, peer, g.delivery


def _nothing_left(env: Env) -> None:
    """No copy of it anywhere: not ready, not on disk, not for a new consumer."""
    env.settle()
    assert env.stats("q")["ready"] == 0
    assert env.stats("q")["leased"] == 0
    assert env.store.count_rows() == 0
    _, other = env.consuming("q")
    env.settle()
    assert other.got == []


def test_a_refused_message_returned_with_requeue_is_dropped_not_requeued(env: Env) -> None:
    """Its publisher was told it was not stored (and publishes it again): the
    consumer's copy must not come back as a message only memory holds."""
    conn, _, delivery = _leased_when_its_write_failed(env)
    assert env.broker.nack(conn, [delivery], True, None) == []
    _nothing_left(env)


def test_a_refused_message_is_dropped_when_its_consumer_goes(env: Env) -> None:
    conn, _, _ = _leased_when_its_write_failed(env)
    env.broker.close(conn)
    _nothing_left(env)


def test_a_refused_message_is_dropped_when_its_lease_runs_out(env: Env) -> None:
    _leased_when_its_write_failed(env)
    env.clock.advance(3600)
    env.broker.tick()
    _nothing_left(env)


def test_a_refused_message_rejected_is_not_dead_lettered(env: Env) -> None:
    b = env.broker
    b.declare_queue("dlq", True, {})
    conn, _, delivery = _leased_when_its_write_failed(env, {"dead_letter_queue": "dlq"})
    assert b.reject(conn, [delivery]) == []
    env.settle()
    assert env.stats("dlq")["ready"] == 0
    _nothing_left(env)


def test_after_a_failed_write_deliveries_wait_for_their_write_until_one_succeeds(
    env: Env,
) -> None:
    conn, peer = _early_with_a_failing_write(env)
    env.publish(conn, "q", b"lost")
    env.settle()
    peer.take()
    env.publish(conn, "q", b"held")
    env.broker.flush()
    assert peer.got == []  # the last write failed: this one waits for its own
    env.settle()
    assert peer.bodies() == [b"held"]
    env.publish(conn, "q", b"early")
    env.broker.flush()
    assert peer.bodies() == [b"held", b"early"]  # a write succeeded since


def test_a_failed_write_reported_while_a_batch_fills_holds_its_next_publishes(
    env: Env,
) -> None:
    conn, peer = _early_with_a_failing_write(env)
    env.publish(conn, "q", b"a")
    env.broker.flush()
    env.publish(conn, "q", b"b")  # the next batch: went in before the failure was known
    env.drain()  # the first batch's write fails
    assert len(peer.publish_errors) == 1
    env.publish(conn, "q", b"c")  # same batch as "b", after the failure: waits for its write
    env.broker.flush()
    assert peer.bodies() == [b"a", b"b"]
    env.settle()
    assert peer.bodies() == [b"a", b"b", b"c"]


def test_without_room_deliveries_wait_for_their_write(env: Env) -> None:
    answer = _roomy(env)
    answer.append(False)
    conn, peer = _consuming(env)
    env.publish(conn, "q", b"held")
    env.broker.flush()
    assert peer.got == []
    env.settle()
    assert peer.bodies() == [b"held"]


def test_a_publish_behind_messages_still_arriving_keeps_their_order(env: Env) -> None:
    answer = _roomy(env)
    answer.append(False)
    conn, peer = _consuming(env)
    env.publish(conn, "q", b"first")
    env.broker.flush()  # its batch is with the store, not yet written
    answer.append(True)
    env.publish(conn, "q", b"second")
    env.broker.flush()
    assert peer.got == []  # behind "first", which waits for its write
    env.settle()
    assert peer.bodies() == [b"first", b"second"]


def test_the_question_is_asked_once_per_batch(env: Env) -> None:
    asked: list[None] = []

    def roomy() -> bool:
        asked.append(None)
        return True

    env.broker.deliver_before_write = roomy
    conn, _ = _consuming(env)
    for i in range(10):
        env.publish(conn, "q", b"%d" % i)
    assert len(asked) == 1
    env.settle()
    env.publish(conn, "q", b"next")
    assert len(asked) == 2
