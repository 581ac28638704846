"""ResultWatch (54) on a fake clock and an in-memory store: answered by any
stored result the client does not know, final or not (SPEC §14.16).

The harness is test_task_ext's: replies wait for ``settle()``, a "restart" is
a new broker and task layer over what the store committed.
"""

from __future__ import annotations

import pytest
from test_task_ext import TaskEnv

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

digest = bp.result_digest


@pytest.fixture
def env() -> TaskEnv:
    return TaskEnv()


def test_digest_is_blake2b_128_of_state_zero_byte_payload() -> None:
    import hashlib

    assert digest("PROGRESS", b"x") == hashlib.blake2b(b"PROGRESS\0x", digest_size=16).digest()
    assert len(digest("", b"")) == 16
    assert digest("A", b"BC") != digest("AB", b"C")


def test_a_watch_is_answered_by_a_non_final_state_from_another_client(env: TaskEnv) -> None:
    watcher, worker = env.client(), env.client()
    req = watcher.request(lambda r: bp.ResultWatch(r, "t", 60.0))
    env.settle()
    assert watcher.frames == []  # no result yet: it waits
    worker.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b"p1"))
    assert watcher.frames == [bp.Ok(req, ["STARTED", b"p1"])]
    assert env.ext.results.waiting == 0


def test_a_watch_knowing_the_current_result_waits_for_the_next(env: TaskEnv) -> None:
    watcher, worker = env.client(), env.client()
    worker.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b"p1"))
    # Knowing nothing: the current result answers at once (read from the store).
    assert watcher.ok(lambda r: bp.ResultWatch(r, "t", 60.0)) == ["STARTED", b"p1"]
    req = watcher.request(lambda r: bp.ResultWatch(r, "t", 60.0, digest("STARTED", b"p1")))
    env.settle()
    assert watcher.frames == []
    # The same result stored again is not news.
    worker.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b"p1"))
    assert watcher.frames == []
    worker.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b"p2"))
    assert watcher.frames == [bp.Ok(req, ["STARTED", b"p2"])]


def test_an_update_stored_before_the_watch_is_answered_at_once(env: TaskEnv) -> None:
    """The client knew p1; p2 was stored before its next watch arrived: not lost."""
    watcher, worker = env.client(), env.client()
    worker.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b"p1"))
    worker.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b"p2"))
    assert watcher.ok(lambda r: bp.ResultWatch(r, "t", 60.0, digest("STARTED", b"p1"))) == [
        "STARTED",
        b"p2",
    ]


def test_a_final_result_answers_a_watch_whatever_it_knows(env: TaskEnv) -> None:
    watcher, worker = env.client(), env.client()
    worker.ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"v"))
    known = digest("SUCCESS", b"v")
    assert watcher.ok(lambda r: bp.ResultWatch(r, "t", 60.0, known)) == ["SUCCESS", b"v"]
    req = watcher.request(lambda r: bp.ResultWatch(r, "u", 60.0, digest("STARTED", b"")))
    env.settle()
    worker.ok(lambda r: bp.Revoke(r, ["u"]))
    assert watcher.reply(req) == bp.Ok(req, ["REVOKED", b""])


def test_watches_and_waits_side_by_side(env: TaskEnv) -> None:
    """A progress state answers the watch only; the final one answers the wait."""
    c, worker = env.client(), env.client()
    wait = c.request(lambda r: bp.ResultWait(r, "t", 60.0))
    watch = c.request(lambda r: bp.ResultWatch(r, "t", 60.0))
    env.settle()
    worker.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b"p"))
    assert c.reply(watch) == bp.Ok(watch, ["STARTED", b"p"]) and c.reply(wait) is None
    assert env.ext.results.waiting == 1
    worker.ok(lambda r: bp.ResultSet(r, "t", "FAILURE", b"e"))
    assert c.reply(wait) == bp.Ok(wait, ["FAILURE", b"e"])


def test_a_watch_times_out_with_nil_and_checks_its_fields(env: TaskEnv) -> None:
    c = env.client()
    req = c.request(lambda r: bp.ResultWatch(r, "t", 5.0))
    env.settle()
    env.advance(5.1)
    assert c.reply(req) == bp.Ok(req, None)
    assert env.ext.results.waiting == 0
    assert c.error(lambda r: bp.ResultWatch(r, "t", 0.0)) == ErrorCode.INVALID_ARGUMENT
    assert c.error(lambda r: bp.ResultWatch(r, "t", 3600.5)) == ErrorCode.INVALID_ARGUMENT
    assert c.error(lambda r: bp.ResultWatch(r, "", 1.0)) == ErrorCode.INVALID_ARGUMENT
    assert c.error(lambda r: bp.ResultWatch(r, "t", 1.0, b"short")) == ErrorCode.INVALID_ARGUMENT


def test_watches_end_with_their_connection(env: TaskEnv) -> None:
    c, worker = env.client(), env.client()
    c.request(lambda r: bp.ResultWatch(r, "t", 60.0))
    env.settle()
    c.closed = True
    env.ext.results.sweep(env.clock.now())
    assert env.ext.results.waiting == 0
    worker.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b"p"))
    assert c.frames == []
