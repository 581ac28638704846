"""The task layer's server side on a fake clock and an in-memory store.

Store callbacks wait until ``settle()`` (flush + drain), so a test decides
exactly when "the commit completes" or "the read returns", which is how the
races between ResultWait lookups and ResultSet commits are pinned down. A
"restart" is a new broker and extension over the same store, restored from
what was committed (``corekit.Env``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from corekit import Env, FlakyStore

import brokerd_protocol as bp
from brokerd.clock import FakeClock
from brokerd.errors import BrokerError
from brokerd.session import failure_reply
from brokerd.tasks import TaskExtension
from brokerd.tasks import results as results_mod
from brokerd_protocol import ErrorCode

DAY = 86_400.0

# --- harness -------------------------------------------------------------------------


class FakeClient:
    """Records every frame the task layer sends to one connection."""

    def __init__(self, env: TaskEnv) -> None:
        self.env = env
        self.frames: list[bp.Frame] = []
        self.closed = False
        self.handlers = env.ext.handlers()
        self._req = 0

    # Client interface
    def reply_ok(self, req: int, value: Any = None) -> None:
        self.frames.append(bp.Ok(req, value))

    def reply_error(self, req: int, exc: BrokerError) -> None:
        self.frames.append(bp.Error(req, int(exc.code), exc.message))

    def send(self, frame: bp.Frame) -> None:
        self.frames.append(frame)

    # helpers
    def request(self, make: Callable[[int], bp.Frame]) -> int:
        self._req += 1
        frame = make(self._req)
        try:
            self.handlers[type(frame)](self, frame)
        except Exception as exc:  # answered as the session answers it
            self.send(failure_reply(frame, exc))
        return self._req

    def reply(self, req: int) -> bp.Ok | bp.Error | None:
        """The reply to ``req`` if it has arrived (removed from ``frames``)."""
        for i, f in enumerate(self.frames):
            if isinstance(f, bp.Ok | bp.Error) and f.req == req:
                self.frames.pop(i)
                return f
        return None

    def call(self, make: Callable[[int], bp.Frame]) -> bp.Ok | bp.Error:
        """Send a request, let the store catch up, return its reply."""
        req = self.request(make)
        self.env.settle()
        reply = self.reply(req)
        assert reply is not None, f"no reply to {req}: {self.frames}"
        return reply

    def ok(self, make: Callable[[int], bp.Frame]) -> Any:
        reply = self.call(make)
        assert isinstance(reply, bp.Ok), reply
        return reply.value

    def error(self, make: Callable[[int], bp.Frame]) -> ErrorCode:
        reply = self.call(make)
        assert isinstance(reply, bp.Error), reply
        return ErrorCode(reply.code)


class TaskEnv(Env):
    """The core and its task extension on a fake clock over a ``FlakyStore``."""

    store: FlakyStore

    def __init__(
        self,
        store: FlakyStore | None = None,
        *,
        clock: FakeClock | None = None,
        recover: bool = False,
    ) -> None:
        super().__init__(store if store is not None else FlakyStore(), clock=clock, recover=recover)
        self.ext = TaskExtension(self.broker, alive=lambda c: not getattr(c, "closed", False))
        loaded: list[BaseException | None] = []
        self.ext.load(loaded.append)
        self.settle()
        assert loaded == [None]

    def restart(self) -> TaskEnv:
        """A new broker and extension over the same store (whatever was not
        committed is lost)."""
        return TaskEnv(self.store, clock=self.clock, recover=True)

    def advance(self, seconds: float) -> None:
        """Move the clock and run the core's and the extension's timers."""
        super().advance(seconds)
        self.ext.tick(self.clock.now())

    def client(self) -> FakeClient:
        return FakeClient(self)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self.store._conn.execute(sql).fetchall())


@pytest.fixture
def env() -> TaskEnv:
    return TaskEnv()


# --- results -------------------------------------------------------------------------


def _reply_size(frame: bp.Frame) -> int:
    return len(bp.encode(frame)) - bp.HEADER_SIZE


def test_a_result_get_reply_never_exceeds_the_frame_limit_plus_its_allowance(env: TaskEnv) -> None:
    """SPEC §2.1: nothing the server sends is larger than max_frame + 65536."""
    env.ext.results.max_frame = 30_000
    budget = 30_000 + 65_536
    c = env.client()
    for task_id in ("a", "b", "c", "d"):
        c.ok(lambda r, t=task_id: bp.ResultSet(r, t, "SUCCESS", t.encode() * 34_000))
    for ids in (["a", "b", "c", "d"], ["a", "b", "c"]):
        for fresh in (c, env.restart().client()):  # from the cache, and from disk
            fresh.env.ext.results.max_frame = 30_000
            reply = fresh.call(lambda r, ids=ids: bp.ResultGet(r, ids))
            assert _reply_size(reply) <= budget
            assert isinstance(reply, bp.Error) and reply.code == ErrorCode.INVALID_ARGUMENT
            assert "ask for fewer" in reply.message
    reply = c.call(lambda r: bp.ResultGet(r, ["a", "b"]))
    assert isinstance(reply, bp.Ok) and sorted(reply.value) == ["a", "b"]
    assert _reply_size(reply) <= budget


def test_a_result_too_large_for_any_reply_is_an_error_not_an_oversized_frame(env: TaskEnv) -> None:
    """A result stored under a larger max_frame than the broker now runs with."""
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "huge", "SUCCESS", b"x" * 200_000))
    later = env.restart()
    later.ext.results.max_frame = 1024
    c2 = later.client()
    for make in (
        lambda r: bp.ResultGet(r, ["huge"]),
        lambda r: bp.ResultWait(r, "huge", 5.0),
    ):
        reply = c2.call(make)
        assert isinstance(reply, bp.Error) and reply.code == ErrorCode.INVALID_ARGUMENT
        assert "200000 bytes" in reply.message


def test_results_larger_than_a_reply_are_refused_without_their_payloads_read(
    env: TaskEnv,
) -> None:
    """Sizes are checked in the store: a reply that cannot carry what was
    asked for is refused before any payload it could not carry is read."""
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "huge", "SUCCESS", b"x" * 200_000))
    for task_id in ("a", "b", "c"):
        c.ok(lambda r, t=task_id: bp.ResultSet(r, t, "SUCCESS", b"y" * 40_000))
    later = env.restart()
    later.ext.results.max_frame = 1024
    budget = 1024 + results_mod.REPLY_ALLOWANCE
    read_sizes: list[int] = []
    store_read = later.store.read

    def spying_read(query: Any, params: Any, done: Any) -> None:
        def seen(rows: Any) -> None:
            if not isinstance(rows, BaseException):
                read_sizes.append(sum(len(v) for row in rows for v in row if isinstance(v, bytes)))
            done(rows)

        store_read(query, params, seen)

    later.store.read = spying_read  # type: ignore[method-assign]
    c2 = later.client()
    for make in (
        lambda r: bp.ResultGet(r, ["huge"]),
        lambda r: bp.ResultGet(r, ["a", "huge"]),
        lambda r: bp.ResultWait(r, "huge", 5.0),
        lambda r: bp.ResultWatch(r, "huge", 5.0, b""),
    ):
        reply = c2.call(make)
        assert isinstance(reply, bp.Error) and reply.code == ErrorCode.INVALID_ARGUMENT
        assert "200000 bytes" in reply.message
    reply = c2.call(lambda r: bp.ResultGet(r, ["a", "b", "c"]))
    assert isinstance(reply, bp.Error) and "ask for fewer" in reply.message
    reply = c2.call(lambda r: bp.ResultGet(r, ["a"]))
    assert isinstance(reply, bp.Ok) and reply.value == {"a": ["SUCCESS", b"y" * 40_000]}
    assert c2.ok(lambda r: bp.ResultDelete(r, ["huge", "b"])) == 2
    assert read_sizes and max(read_sizes) <= budget


def test_result_set_is_answered_only_after_the_commit(env: TaskEnv) -> None:
    c = env.client()
    req = c.request(lambda r: bp.ResultSet(r, "t1", "SUCCESS", b"42"))
    assert c.frames == []
    env.settle()
    assert c.reply(req) == bp.Ok(req, None)
    assert env.rows("SELECT task_id, state, payload FROM results") == [("t1", "SUCCESS", b"42")]


def test_result_get_answers_from_the_cache_and_from_disk(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "done", "SUCCESS", b"1"))
    c.ok(lambda r: bp.ResultSet(r, "running", "STARTED", b""))
    want = {"done": ["SUCCESS", b"1"], "running": ["STARTED", b""]}
    assert c.ok(lambda r: bp.ResultGet(r, ["done", "running", "nope"])) == want
    assert env.ext.results.cached == 1  # only final results are cached
    c2 = env.restart().client()
    assert c2.ok(lambda r: bp.ResultGet(r, ["done", "running", "nope", "done"])) == want


def test_result_get_of_cached_ids_needs_no_read(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "t", "FAILURE", b"x"))
    req = c.request(lambda r: bp.ResultGet(r, ["t"]))
    assert c.reply(req) == bp.Ok(req, {"t": ["FAILURE", b"x"]})


def test_result_get_sees_a_set_requested_just_before(env: TaskEnv) -> None:
    c = env.client()
    set_req = c.request(lambda r: bp.ResultSet(r, "t", "STARTED"))
    get_req = c.request(lambda r: bp.ResultGet(r, ["t"]))
    env.settle()
    assert c.frames == [bp.Ok(set_req, None), bp.Ok(get_req, {"t": ["STARTED", b""]})]


def test_reads_do_not_return_a_cached_result_being_replaced(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "t", "FAILURE", b"first"))  # cached
    c.request(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"second"))
    get_req = c.request(lambda r: bp.ResultGet(r, ["t"]))
    wait_req = c.request(lambda r: bp.ResultWait(r, "t", 5.0))
    env.settle()
    assert c.reply(get_req) == bp.Ok(get_req, {"t": ["SUCCESS", b"second"]})
    assert c.reply(wait_req) == bp.Ok(wait_req, ["SUCCESS", b"second"])


def test_the_brokers_own_read_of_a_result_not_cached_comes_from_the_store(env: TaskEnv) -> None:
    # Only final results are cached: a STARTED one is read from the store
    # (the management API's retry reads results this way).
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "t", "STARTED", b"progress"))
    got: list[Any] = []
    env.ext.results.read("t", got.append)
    env.ext.results.read("missing", got.append)
    env.settle()
    assert [(r.state, r.payload) if r is not None else None for r in got] == [
        ("STARTED", b"progress"),
        None,
    ]


def test_invalid_result_sets_and_waits_are_refused(env: TaskEnv) -> None:
    c = env.client()
    bad: list[Callable[[int], bp.Frame]] = [
        lambda r: bp.ResultSet(r, "t", "success"),
        lambda r: bp.ResultSet(r, "t", "SUCCESS", b"", 0.5),
        lambda r: bp.ResultSet(r, "t", "SUCCESS", b"", 11 * 365 * DAY),
        lambda r: bp.ResultSet(r, "t", "SUCCESS", b"", float("nan")),
        lambda r: bp.ResultSet(r, "", "SUCCESS"),
        lambda r: bp.ResultSet(r, "x" * 256, "SUCCESS"),
        lambda r: bp.ResultWait(r, "t", 0.0),
        lambda r: bp.ResultWait(r, "t", 3600.5),
        lambda r: bp.ResultWait(r, "t", -1.0),
    ]
    for make in bad:
        assert c.error(make) == ErrorCode.INVALID_ARGUMENT
    for state in ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"):
        c.ok(lambda r, s=state: bp.ResultSet(r, "t", s))
    c.ok(lambda r: bp.ResultWait(r, "t", 3600.0))


def test_a_final_state_is_not_replaced_by_a_later_non_final_one(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"v"))
    c.ok(lambda r: bp.ResultSet(r, "t", "STARTED"))  # a redelivered copy starting
    assert c.ok(lambda r: bp.ResultGet(r, ["t"])) == {"t": ["SUCCESS", b"v"]}
    assert env.rows("SELECT state FROM results") == [("SUCCESS",)]
    # ...but a final state replaces a final state.
    c.ok(lambda r: bp.ResultSet(r, "t", "FAILURE", b"e"))
    assert c.ok(lambda r: bp.ResultGet(r, ["t"])) == {"t": ["FAILURE", b"e"]}
    c2 = env.restart().client()
    assert c2.ok(lambda r: bp.ResultGet(r, ["t"])) == {"t": ["FAILURE", b"e"]}


def test_result_set_commit_failure_is_internal(env: TaskEnv) -> None:
    c = env.client()
    env.store.fail_commits = 1
    assert c.error(lambda r: bp.ResultSet(r, "t", "SUCCESS")) == ErrorCode.INTERNAL
    assert c.ok(lambda r: bp.ResultGet(r, ["t"])) == {}


def test_results_expire(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "short", "SUCCESS", b"", 10.0))
    c.ok(lambda r: bp.ResultSet(r, "long", "PENDING", b"", 100.0))
    env.advance(11.0)
    env.settle()
    assert c.ok(lambda r: bp.ResultGet(r, ["short", "long"])) == {"long": ["PENDING", b""]}
    assert env.ext.results.cached == 0
    assert env.rows("SELECT task_id FROM results") == [("long",)]
    env.advance(100.0)
    env.settle()
    assert env.rows("SELECT task_id FROM results") == []
    # Nothing left to expire: sweeps write nothing.
    commits = env.store.commits
    env.advance(10.0)
    env.settle()
    assert env.store.commits == commits


def test_expiry_is_known_after_a_restart(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"", 10.0))
    env2 = env.restart()
    env2.advance(11.0)
    env2.settle()
    assert env2.rows("SELECT task_id FROM results") == []


# --- ResultWait ------------------------------------------------------------------------


def test_wait_is_answered_when_another_client_sets_a_final_state(env: TaskEnv) -> None:
    waiter, worker = env.client(), env.client()
    req = waiter.request(lambda r: bp.ResultWait(r, "t", 60.0))
    env.settle()
    assert waiter.frames == []
    worker.ok(lambda r: bp.ResultSet(r, "t", "STARTED"))
    worker.ok(lambda r: bp.ResultSet(r, "t", "RETRY"))
    assert waiter.frames == []
    worker.ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"ok"))
    assert waiter.frames == [bp.Ok(req, ["SUCCESS", b"ok"])]
    assert env.ext.results.waiting == 0


def test_wait_for_a_known_result_answers_at_once(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "t", "FAILURE", b"x"))
    req = c.request(lambda r: bp.ResultWait(r, "t", 5.0))
    assert c.reply(req) == bp.Ok(req, ["FAILURE", b"x"])


def test_wait_finds_a_final_result_on_disk(env: TaskEnv) -> None:
    env.client().ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"old"))
    env2 = env.restart()
    c = env2.client()
    assert c.ok(lambda r: bp.ResultWait(r, "t", 5.0)) == ["SUCCESS", b"old"]
    assert env2.ext.results.waiting == 0


def test_wait_registered_while_the_set_is_being_committed(env: TaskEnv) -> None:
    """The set reaches the store first; the wait's lookup sees it; one reply."""
    waiter, worker = env.client(), env.client()
    worker.request(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"v"))
    env.broker.flush()  # submitted, not yet completed
    req = waiter.request(lambda r: bp.ResultWait(r, "t", 60.0))
    env.settle()
    assert waiter.frames == [bp.Ok(req, ["SUCCESS", b"v"])]


def test_wait_lookup_in_flight_when_the_set_arrives(env: TaskEnv) -> None:
    """The lookup finds nothing; the set commits after it and wakes the waiter."""
    waiter, worker = env.client(), env.client()
    req = waiter.request(lambda r: bp.ResultWait(r, "t", 60.0))
    worker.request(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"v"))
    env.settle()
    assert waiter.frames == [bp.Ok(req, ["SUCCESS", b"v"])]


def test_a_set_in_the_same_tick_before_a_wait_answers_it_once(env: TaskEnv) -> None:
    """Set (not yet flushed) then wait: the lookup flushes first, one reply."""
    waiter, worker = env.client(), env.client()
    worker.request(lambda r: bp.ResultSet(r, "t", "REVOKED"))
    req = waiter.request(lambda r: bp.ResultWait(r, "t", 60.0))
    env.settle()
    assert waiter.frames == [bp.Ok(req, ["REVOKED", b""])]


def test_every_waiter_on_one_task_is_answered(env: TaskEnv) -> None:
    clients = [env.client() for _ in range(5)]
    reqs = [c.request(lambda r: bp.ResultWait(r, "t", 60.0)) for c in clients]
    reqs.append(clients[0].request(lambda r: bp.ResultWait(r, "t", 60.0)))
    env.settle()
    env.client().ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"v"))
    for c, req in zip(clients, reqs, strict=False):
        assert c.reply(req) == bp.Ok(req, ["SUCCESS", b"v"])
    assert clients[0].reply(reqs[-1]) == bp.Ok(reqs[-1], ["SUCCESS", b"v"])
    assert all(c.frames == [] for c in clients)


def test_wait_times_out_with_none(env: TaskEnv) -> None:
    c = env.client()
    req = c.request(lambda r: bp.ResultWait(r, "t", 2.0))
    env.settle()
    env.advance(1.9)
    assert c.frames == []
    env.advance(0.2)
    assert c.frames == [bp.Ok(req, None)]
    c.frames.clear()
    # A late result does not answer twice.
    c.ok(lambda r: bp.ResultSet(r, "t", "SUCCESS"))
    assert c.frames == []
    assert env.ext.results.waiting == 0


def test_one_waiter_times_out_the_other_is_still_woken(env: TaskEnv) -> None:
    c = env.client()
    short = c.request(lambda r: bp.ResultWait(r, "t", 1.0))
    long = c.request(lambda r: bp.ResultWait(r, "t", 10.0))
    env.settle()
    env.advance(2.0)
    assert c.frames == [bp.Ok(short, None)]
    c.frames.clear()
    env.client().ok(lambda r: bp.ResultSet(r, "t", "SUCCESS"))
    assert c.frames == [bp.Ok(long, ["SUCCESS", b""])]
    assert env.ext.results.waiting == 0


def test_waiters_of_closed_connections_are_dropped(env: TaskEnv) -> None:
    gone, stays = env.client(), env.client()
    gone.request(lambda r: bp.ResultWait(r, "t", 600.0))
    req = stays.request(lambda r: bp.ResultWait(r, "t", 600.0))
    env.settle()
    gone.closed = True
    env.advance(10.0)  # a sweep
    assert env.ext.results.waiting == 1
    env.client().ok(lambda r: bp.ResultSet(r, "t", "SUCCESS"))
    assert gone.frames == []
    assert stays.frames == [bp.Ok(req, ["SUCCESS", b""])]


def test_waits_per_connection_are_capped(env: TaskEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results_mod, "MAX_WAITS_PER_CLIENT", 2)
    c = env.client()
    c.request(lambda r: bp.ResultWait(r, "a", 60.0))
    c.request(lambda r: bp.ResultWait(r, "b", 60.0))
    assert c.error(lambda r: bp.ResultWait(r, "c", 60.0)) == ErrorCode.INVALID_ARGUMENT
    env.client().ok(lambda r: bp.ResultSet(r, "a", "SUCCESS"))
    c.frames.clear()
    c.request(lambda r: bp.ResultWait(r, "c", 60.0))
    env.settle()
    assert c.frames == []


def test_a_failed_lookup_answers_waiters_with_internal(env: TaskEnv) -> None:
    c = env.client()
    env.store.fail_queries = 1
    assert c.error(lambda r: bp.ResultWait(r, "t", 60.0)) == ErrorCode.INTERNAL
    assert env.ext.results.waiting == 0


def test_cache_is_bounded(env: TaskEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results_mod, "CACHE_ENTRIES", 3)
    monkeypatch.setattr(results_mod, "CACHE_MAX_PAYLOAD", 10)
    c = env.client()
    for i in range(5):
        c.ok(lambda r, i=i: bp.ResultSet(r, f"t{i}", "SUCCESS"))
    c.ok(lambda r: bp.ResultSet(r, "big", "SUCCESS", b"x" * 11))
    assert env.ext.results.cached == 3
    got = c.ok(lambda r: bp.ResultGet(r, [f"t{i}" for i in range(5)] + ["big"]))
    assert len(got) == 6
    assert got["big"] == ["SUCCESS", b"x" * 11]


# --- revocations -------------------------------------------------------------------------


def test_revoked_message_is_dropped_instead_of_delivered(env: TaskEnv) -> None:
    env.broker.declare_queue("q", True, {})
    conn, peer = env.connect()
    env.publish(conn, "q", b"r", message_id="revoked")
    env.publish(conn, "q", b"k", message_id="kept")
    env.publish(conn, "q", b"n")
    env.settle()
    c = env.client()
    assert c.ok(lambda r: bp.Revoke(r, ["revoked"])) is None
    env.broker.consume(conn, "q", 10, None)
    assert peer.bodies() == [b"k", b"n"]
    assert env.broker.counters.dropped == {"revoked": 1}
    env.settle()
    assert env.store.count_rows() == 2
    assert c.ok(lambda r: bp.ResultGet(r, ["revoked"])) == {"revoked": ["REVOKED", b""]}
    assert peer.publish_errors == []


def test_revocation_covers_delayed_messages_and_ends_with_its_ttl(env: TaskEnv) -> None:
    env.broker.declare_queue("q", True, {})
    conn, peer = env.connect()
    env.broker.consume(conn, "q", 10, None)
    c = env.client()
    c.ok(lambda r: bp.Revoke(r, ["eta", "later"], False, 100.0))
    env.publish(conn, "q", b"eta", message_id="eta", delay=50.0)
    env.advance(51.0)
    assert peer.got == []
    env.advance(50.0)  # the revocation has ended
    env.publish(conn, "q", b"later", message_id="later")
    env.broker.flush()
    env.store.drain()
    assert peer.bodies() == [b"later"]
    env.settle()
    assert env.ext.revocations.revoked == {}
    assert env.rows("SELECT * FROM revoked") == []
    assert peer.publish_errors == []


def test_filter_has_a_fast_path(env: TaskEnv) -> None:
    assert env.broker.delivery_filter is not None
    assert env.ext.revocations.revoked == {}
    env.broker.declare_queue("q", False, {})
    conn, peer = env.connect()
    env.broker.consume(conn, "q", 10, None)
    env.publish(conn, "q", b"x", message_id="t")
    assert len(peer.got) == 1


def test_revoke_does_not_overwrite_a_finished_result(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ResultSet(r, "done", "SUCCESS", b"v"))
    c.ok(lambda r: bp.ResultSet(r, "running", "STARTED"))
    c.ok(lambda r: bp.Revoke(r, ["done", "running", "queued"]))
    want = {
        "done": ["SUCCESS", b"v"],
        "running": ["REVOKED", b""],
        "queued": ["REVOKED", b""],
    }
    assert c.ok(lambda r: bp.ResultGet(r, ["done", "running", "queued"])) == want
    env2 = env.restart()
    c2 = env2.client()
    c2.ok(lambda r: bp.Revoke(r, ["done"]))  # not cached now: the disk decides
    assert c2.ok(lambda r: bp.ResultGet(r, ["done", "running", "queued"])) == want


def test_revoke_wakes_waiters(env: TaskEnv) -> None:
    waiter = env.client()
    req = waiter.request(lambda r: bp.ResultWait(r, "t", 60.0))
    env.settle()
    env.client().ok(lambda r: bp.Revoke(r, ["t"]))
    assert waiter.frames == [bp.Ok(req, ["REVOKED", b""])]


def test_revoke_wakes_waiters_with_the_result_it_could_not_replace(env: TaskEnv) -> None:
    env.client().ok(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"v"))
    env2 = env.restart()  # cache empty
    waiter, admin = env2.client(), env2.client()
    req = waiter.request(lambda r: bp.ResultWait(r, "t", 60.0))
    admin.request(lambda r: bp.Revoke(r, ["t"]))
    env2.settle()
    assert waiter.frames == [bp.Ok(req, ["SUCCESS", b"v"])]


def test_revoke_events_go_to_subscribers_only(env: TaskEnv) -> None:
    worker, other, admin = env.client(), env.client(), env.client()
    assert worker.ok(lambda r: bp.Subscribe(r, ["revoke"])) == {"revoked": []}
    # Without terminate the event still goes out: a worker may hold the task
    # in its prefetch window and must skip it.
    admin.ok(lambda r: bp.Revoke(r, ["a"]))
    assert worker.frames == [bp.Event("revoke", {"task_id": "a", "terminate": False})]
    worker.frames.clear()
    admin.ok(lambda r: bp.Revoke(r, ["b", "c"], True))
    assert worker.frames == [
        bp.Event("revoke", {"task_id": "b", "terminate": True}),
        bp.Event("revoke", {"task_id": "c", "terminate": True}),
    ]
    assert other.frames == []
    assert admin.frames == []


def test_events_skip_closed_subscribers(env: TaskEnv) -> None:
    gone, admin = env.client(), env.client()
    gone.ok(lambda r: bp.Subscribe(r, ["revoke"]))
    gone.closed = True
    admin.ok(lambda r: bp.Revoke(r, ["t"], True))
    assert gone.frames == []
    assert env.ext.topics.subscribers["revoke"] == set()


def test_subscribe_lists_current_revocations(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.Revoke(r, ["old"], False, 10.0))
    c.ok(lambda r: bp.Revoke(r, ["new"], False, 100.0))
    assert sorted(c.ok(lambda r: bp.Subscribe(r, ["revoke"]))["revoked"]) == ["new", "old"]
    env.clock.advance(11.0)
    assert c.ok(lambda r: bp.Subscribe(r, ["revoke"])) == {"revoked": ["new"]}
    assert c.error(lambda r: bp.Subscribe(r, [])) == ErrorCode.INVALID_ARGUMENT
    assert c.error(lambda r: bp.Subscribe(r, ["revoke", "x"])) == ErrorCode.INVALID_ARGUMENT


def test_subscribe_reply_fits_in_a_frame(env: TaskEnv) -> None:
    env.ext.revocations.max_frame = 1000
    c = env.client()
    c.ok(lambda r: bp.Revoke(r, [f"task-{i:04d}" for i in range(200)]))
    value = c.ok(lambda r: bp.Subscribe(r, ["revoke"]))
    assert value["truncated"] is True
    assert 0 < len(value["revoked"]) < 200
    assert value["revoked"][0] == "task-0199"  # newest first


def test_revocations_survive_a_restart(env: TaskEnv) -> None:
    env.client().ok(lambda r: bp.Revoke(r, ["t"], False, 100.0))
    env2 = env.restart()
    assert env2.ext.revocations.is_revoked("t")
    env2.broker.declare_queue("q", False, {})
    conn, peer = env2.connect()
    env2.broker.consume(conn, "q", 10, None)
    env2.publish(conn, "q", b"x", message_id="t")
    assert peer.got == []


def test_a_revocation_is_only_lengthened(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.Revoke(r, ["t"], False, 100.0))
    c.ok(lambda r: bp.Revoke(r, ["t"], False, 10.0))
    env.advance(50.0)
    assert env.ext.revocations.is_revoked("t")
    assert env.restart().ext.revocations.is_revoked("t")


def test_invalid_revokes_are_refused(env: TaskEnv) -> None:
    c = env.client()
    assert c.error(lambda r: bp.Revoke(r, ["t"], False, 0.0)) == ErrorCode.INVALID_ARGUMENT
    assert c.error(lambda r: bp.Revoke(r, [""])) == ErrorCode.INVALID_ARGUMENT
    assert c.ok(lambda r: bp.Revoke(r, [])) is None


# --- schedules -----------------------------------------------------------------------------


def beat(env: TaskEnv) -> list[Any]:
    """Messages in queue "beat", oldest first."""
    q = env.broker.queues["beat"]
    return [m for dq in q.ready for m in dq]


def run(env: TaskEnv, seconds: float, step: float = 1 / 64) -> None:
    """Tick like the server does; steps are exact binary fractions so the fake
    clock lands exactly on due times."""
    for _ in range(round(seconds / step)):
        env.advance(step)
        env.settle()


def test_every_fires_once_per_period_without_drift(env: TaskEnv) -> None:
    env.broker.declare_queue("beat", True, {})
    c = env.client()
    t0 = env.clock.now()
    value = c.ok(lambda r: bp.ScheduleSet(r, "tick", "every 1", "", "beat", b"b"))
    assert value == {"next_run": t0 + 1, "updated": True}
    run(env, 1 - 1 / 32)
    assert beat(env) == []
    run(env, 9 + 1 / 32)
    msgs = beat(env)
    assert [m.headers["x-scheduled-at"] for m in msgs] == [t0 + i for i in range(1, 11)]
    assert len({m.message_id for m in msgs}) == 10
    assert msgs[0].message_id == f"tick@{t0 + 1:.3f}"
    assert msgs[0].headers["x-schedule"] == "tick"
    assert msgs[0].body == b"b"


def test_firing_commits_next_run_with_the_message(env: TaskEnv) -> None:
    env.broker.declare_queue("beat", True, {})
    c = env.client()
    t0 = env.clock.now()
    c.ok(lambda r: bp.ScheduleSet(r, "tick", "every 10", "", "beat", b""))
    rows = env.store.count_rows()
    env.advance(10.0)
    # Fired but not committed: neither the message nor next_run is stored.
    assert env.store.count_rows() == rows
    assert env.rows("SELECT last_run, next_run FROM schedules") == [(None, t0 + 10)]
    env.broker.flush()
    assert env.store.count_rows() == rows + 1
    assert env.rows("SELECT last_run, next_run FROM schedules") == [(t0 + 10, t0 + 20)]


def test_a_crash_before_the_commit_fires_again_after_restart(env: TaskEnv) -> None:
    env.broker.declare_queue("beat", True, {})
    c = env.client()
    c.ok(lambda r: bp.ScheduleSet(r, "tick", "every 10", "", "beat", b""))
    env.advance(10.0)
    # Fired, waiting for its commit: the process dies now.
    assert len(env.broker.queues["beat"].arriving) == 1
    env2 = env.restart()
    env2.broker.declare_queue("beat", True, {})
    env2.advance(0.0)
    env2.settle()
    assert env2.store.count_rows() == 1  # fired exactly once in total
    env3 = env2.restart()
    env3.advance(0.0)
    env3.settle()
    assert env3.store.count_rows() == 1


def test_after_downtime_an_entry_fires_once_then_continues(env: TaskEnv) -> None:
    env.broker.declare_queue("beat", True, {})
    c = env.client()
    t0 = env.clock.now()
    c.ok(lambda r: bp.ScheduleSet(r, "tick", "every 10", "", "beat", b""))
    env2 = env.restart()
    env2.broker.declare_queue("beat", True, {})
    env2.clock.advance(1000.5)
    env2.advance(0.0)
    env2.settle()
    assert len(beat(env2)) == 1
    entry = env2.ext.schedules.entries["tick"]
    assert entry.last_run == t0 + 10
    assert entry.next_run == t0 + 1010  # back on the grid, after now
    run(env2, 9.6, step=0.125)
    assert len(beat(env2)) == 2


def test_redeclaring_the_same_schedule_changes_nothing(env: TaskEnv) -> None:
    env.broker.declare_queue("beat", True, {})
    a, b = env.client(), env.client()
    t0 = env.clock.now()
    props = {"headers": {"task": "cleanup"}, "priority": 3}
    first = a.ok(lambda r: bp.ScheduleSet(r, "s", "every 5", "", "beat", b"x", props))
    env.advance(3.0)
    same = dict(props)
    again = b.ok(lambda r: bp.ScheduleSet(r, "s", " every  5.0 ", "", "beat", b"x", same))
    assert again == {"next_run": first["next_run"], "updated": False}
    run(env, 2.0, step=0.125)
    assert len(beat(env)) == 1
    m = beat(env)[0]
    assert m.priority == 3
    assert m.headers["task"] == "cleanup"
    # A change takes effect from now.
    changed = b.ok(lambda r: bp.ScheduleSet(r, "s", "every 5", "", "beat", b"y", props))
    assert changed == {"next_run": env.clock.now() + 5, "updated": True}
    assert env.ext.schedules.entries["s"].last_run == t0 + 5


def test_cron_schedule_fires_on_its_minute(env: TaskEnv) -> None:
    env.broker.declare_queue("beat", True, {})
    env.clock.t = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    c = env.client()
    value = c.ok(lambda r: bp.ScheduleSet(r, "c", "cron */15 * * * *", "", "beat", b""))
    assert value["next_run"] == 1_700_000_100.0  # 22:15:00
    env.advance(99.0)
    env.settle()
    assert beat(env) == []
    env.advance(1.0)
    env.settle()
    assert len(beat(env)) == 1
    assert env.ext.schedules.entries["c"].next_run == 1_700_000_100.0 + 900


def test_schedules_list_by_name_and_a_deleted_one_stays_deleted(env: TaskEnv) -> None:
    c = env.client()
    c.ok(lambda r: bp.ScheduleSet(r, "b", "cron 0 0 * * *", "ex", "k", b""))
    c.ok(lambda r: bp.ScheduleSet(r, "a", "every 60", "", "q", b""))
    listed = c.ok(bp.ScheduleList)
    assert [e["name"] for e in listed] == ["a", "b"]
    assert listed[0] == {
        "name": "a",
        "spec": "every 60",
        "exchange": "",
        "routing_key": "q",
        "next_run": env.clock.now() + 60,
        "last_run": None,
    }
    assert c.ok(lambda r: bp.ScheduleDelete(r, "a")) is None
    assert c.error(lambda r: bp.ScheduleDelete(r, "a")) == ErrorCode.NOT_FOUND
    env2 = env.restart()
    assert [e["name"] for e in env2.client().ok(bp.ScheduleList)] == ["b"]


def test_invalid_schedules_are_refused(env: TaskEnv) -> None:
    c = env.client()
    bad: list[Callable[[int], bp.Frame]] = [
        lambda r: bp.ScheduleSet(r, "s", "cron 60 * * * *", "", "q", b""),
        lambda r: bp.ScheduleSet(r, "s", "every 0.01", "", "q", b""),
        lambda r: bp.ScheduleSet(r, "s", "daily", "", "q", b""),
        lambda r: bp.ScheduleSet(r, "", "every 1", "", "q", b""),
        lambda r: bp.ScheduleSet(r, "s" * 256, "every 1", "", "q", b""),
        lambda r: bp.ScheduleSet(r, "s", "every 1", "", "q" * 256, b""),
        lambda r: bp.ScheduleSet(r, "s", "every 1", "", "q", b"", {"bogus": 1}),
        lambda r: bp.ScheduleSet(r, "s", "every 1", "", "q", b"", {"priority": 99}),
    ]
    for make in bad:
        assert c.error(make) == ErrorCode.INVALID_ARGUMENT
    assert c.ok(bp.ScheduleList) == []


def test_a_schedule_that_cannot_publish_keeps_its_rhythm(env: TaskEnv) -> None:
    c = env.client()
    t0 = env.clock.now()
    c.ok(lambda r: bp.ScheduleSet(r, "s", "every 1", "no-such-exchange", "k", b""))
    run(env, 3.0, step=0.125)
    entry = env.ext.schedules.entries["s"]
    assert env.ext.schedules.failed == 3
    assert entry.next_run == t0 + 4
    assert env.rows("SELECT next_run FROM schedules") == [(t0 + 4,)]


def test_a_failed_commit_makes_the_run_happen_again(env: TaskEnv) -> None:
    env.broker.declare_queue("beat", True, {})
    c = env.client()
    t0 = env.clock.now()
    c.ok(lambda r: bp.ScheduleSet(r, "s", "every 10", "", "beat", b""))
    env.store.fail_commits = 1
    env.advance(10.0)
    env.settle()
    assert env.ext.schedules.entries["s"].next_run == t0 + 10
    env.advance(0.02)
    env.settle()
    assert env.rows("SELECT last_run, next_run FROM schedules") == [(t0 + 10, t0 + 20)]


def test_schedule_set_commit_failure_is_internal(env: TaskEnv) -> None:
    c = env.client()
    env.store.fail_commits = 1
    code = c.error(lambda r: bp.ScheduleSet(r, "s", "every 1", "", "q", b""))
    assert code == ErrorCode.INTERNAL


# --- the session's error rule around task handlers ------------------------------------------


def test_unexpected_handler_failure_is_an_internal_error(
    env: TaskEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(client: Any, frame: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(env.ext.schedules, "list", boom)
    c = env.client()
    assert c.error(bp.ScheduleList) == ErrorCode.INTERNAL


def _fired_local_days(env: TaskEnv, zone: str) -> list[str]:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return [
        datetime.fromtimestamp(m.headers["x-scheduled-at"], tz=ZoneInfo(zone)).isoformat(sep=" ")
        for m in beat(env)
    ]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # 2026-03-28 12:00 UTC; Berlin springs forward on the 29th: 02:30 does not exist.
        (1_774_699_200.0, ["2026-03-29 03:00:00+02:00", "2026-03-30 02:30:00+02:00"]),
        # 2026-10-24 12:00 UTC; Berlin falls back on the 25th: 02:30 happens twice.
        (1_792_843_200.0, ["2026-10-25 02:30:00+02:00", "2026-10-26 02:30:00+01:00"]),
    ],
)
def test_a_zoned_daily_schedule_fires_once_a_day_across_a_transition_and_a_restart(
    env: TaskEnv, start: float, expected: list[str]
) -> None:
    env.clock.t = start
    env.broker.declare_queue("beat", True, {})
    spec = "cron 30 2 * * * Europe/Berlin"
    env.client().ok(lambda r: bp.ScheduleSet(r, "nightly", spec, "", "beat", b""))
    run(env, 86_400.0, step=600.0)
    # A restart in between: the stored schedule keeps its zone and its next run.
    env = env.restart()
    env.broker.declare_queue("beat", True, {})
    listed = env.client().ok(bp.ScheduleList)
    assert [(e["name"], e["spec"]) for e in listed] == [("nightly", spec)]
    env.advance(0.0)
    env.settle()
    run(env, 86_400.0, step=600.0)
    assert env.store.count_rows() == 2  # one run per local day, in total
    assert _fired_local_days(env, "Europe/Berlin") == expected


def test_a_zoned_hourly_schedule_fires_25_times_on_fall_back_day(env: TaskEnv) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    env.clock.t = datetime(2026, 11, 1, tzinfo=ny).timestamp() - 1.0
    env.broker.declare_queue("beat", True, {})
    c = env.client()
    c.ok(lambda r: bp.ScheduleSet(r, "h", "cron 30 * * * * America/New_York", "", "beat", b""))
    end = datetime(2026, 11, 2, tzinfo=ny).timestamp()
    run(env, end - env.clock.now() - 1.0, step=300.0)
    due = [m.headers["x-scheduled-at"] for m in beat(env)]
    assert len(due) == 25
    assert {b - a for a, b in itertools.pairwise(due)} == {3600.0}
