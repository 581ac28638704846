"""The task-layer frames (40-48) against a real brokerd, spoken raw.

A tiny blocking client built on ``socket`` and the ``brokerd_protocol`` codec
keeps these tests independent of the SDK: they pin the server to the wire
contract in protocol/SPEC.md §14. Waits are bounded only to fail instead of
hanging; the one test that counts scheduled runs allows a whole run of slack.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import brokerd_protocol as bp
from brokerd_protocol import ErrorCode

BOUND = 20.0


class RawClient:
    """Frames in, frames out; replies matched by ``req``; nothing hidden."""

    def __init__(self, port: int, name: str = "raw") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
        self.decoder = bp.Decoder()
        self.inbox: list[bp.Frame] = []
        self.req = 0
        self.seq = 0
        self.send(bp.Hello([1], None, name, 30.0))
        welcome = self.next(lambda f: isinstance(f, bp.Welcome | bp.Error))
        assert isinstance(welcome, bp.Welcome), welcome

    def close(self) -> None:
        self.sock.close()

    def send(self, frame: bp.Frame) -> None:
        self.sock.sendall(bp.encode(frame))

    def _read(self, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            raise ConnectionError("broker closed the connection")
        self.decoder.feed(data)
        self.inbox.extend(self.decoder)
        return True

    def next(self, match: Callable[[bp.Frame], bool], timeout: float = BOUND) -> bp.Frame:
        """The first frame (received or arriving within ``timeout``) that matches."""
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.inbox):
                if match(frame):
                    return self.inbox.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching frame within {timeout} s; inbox: {self.inbox}")
            self._read(left)

    def nothing(self, match: Callable[[bp.Frame], bool], within: float) -> bool:
        """True if no matching frame arrives within ``within`` seconds."""
        try:
            self.next(match, within)
        except TimeoutError:
            return True
        return False

    def request(self, make: Callable[[int], bp.Frame]) -> bp.Ok | bp.Error:
        self.req += 1
        req = self.req
        self.send(make(req))
        reply = self.next(lambda f: isinstance(f, bp.Ok | bp.Error) and f.req == req)
        assert isinstance(reply, bp.Ok | bp.Error)
        return reply

    def ok(self, make: Callable[[int], bp.Frame]) -> Any:
        reply = self.request(make)
        assert isinstance(reply, bp.Ok), reply
        return reply.value

    def error(self, make: Callable[[int], bp.Frame]) -> ErrorCode:
        reply = self.request(make)
        assert isinstance(reply, bp.Error), reply
        return ErrorCode(reply.code)

    def publish(self, key: str, body: bytes, **props: Any) -> None:
        self.seq += 1
        seq = self.seq
        self.send(bp.Publish(seq, "", key, body, props))
        confirm = self.next(
            lambda f: isinstance(f, bp.Confirm) and any(a <= seq <= b for a, b in f.ranges)
        )
        assert isinstance(confirm, bp.Confirm)

    def stats(self, queue: str) -> dict[str, int]:
        value = self.ok(lambda r: bp.QueueStats(r, queue))
        assert isinstance(value, dict)
        return value


@pytest.fixture
def connect(broker: Any) -> Iterator[Callable[..., RawClient]]:
    opened: list[RawClient] = []

    def make(name: str = "raw") -> RawClient:
        c = RawClient(broker.port, name)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


def wait_for(predicate: Callable[[], bool], timeout: float = BOUND) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


# --- results -----------------------------------------------------------------------


def test_a_result_set_is_read_back_by_result_get(connect: Callable[..., RawClient]) -> None:
    c = connect()
    assert c.ok(lambda r: bp.ResultSet(r, "t-1", "STARTED")) is None
    assert c.ok(lambda r: bp.ResultGet(r, ["t-1"])) == {"t-1": ["STARTED", b""]}
    c.ok(lambda r: bp.ResultSet(r, "t-1", "SUCCESS", b"\x92\x01\x02"))
    got = c.ok(lambda r: bp.ResultGet(r, ["t-1", "unknown"]))
    assert got == {"t-1": ["SUCCESS", b"\x92\x01\x02"]}


def test_result_set_rejects_bad_values(connect: Callable[..., RawClient]) -> None:
    c = connect()
    assert c.error(lambda r: bp.ResultSet(r, "t", "DONE")) == ErrorCode.INVALID_ARGUMENT
    assert c.error(lambda r: bp.ResultSet(r, "t", "SUCCESS", b"", 0.0)) == (
        ErrorCode.INVALID_ARGUMENT
    )
    assert c.error(lambda r: bp.ResultSet(r, "", "SUCCESS")) == ErrorCode.INVALID_ARGUMENT
    assert c.error(lambda r: bp.ResultWait(r, "t", 0.0)) == ErrorCode.INVALID_ARGUMENT
    # The connection is still usable after request errors.
    c.ok(lambda r: bp.ResultSet(r, "t", "PENDING"))


@pytest.mark.parametrize(
    ("make", "cap"),
    [
        (bp.ResultGet, 1_000),
        (bp.Revoke, 10_000),
    ],
    ids=["ResultGet", "Revoke"],
)
def test_more_task_ids_than_a_frame_may_carry_close_the_connection(
    connect: Callable[..., RawClient], make: Callable[[int, list[str]], bp.Frame], cap: int
) -> None:
    """SPEC §13: the caps are protocol limits, checked by the codec before any
    handler runs; a list at the cap is an ordinary request."""
    c = connect()
    c.ok(lambda r: make(r, [f"t{i}" for i in range(cap)]))
    c.send(make(c.req + 1, [f"t{i}" for i in range(cap + 1)]))
    err = c.next(lambda f: isinstance(f, bp.Error))
    assert isinstance(err, bp.Error)
    assert (err.req, err.code) == (0, ErrorCode.PROTOCOL_ERROR)
    assert str(cap) in err.message


def test_result_wait_is_pushed_when_another_connection_finishes(
    connect: Callable[..., RawClient],
) -> None:
    waiter = connect("waiter")
    worker = connect("worker")
    waiter.req += 1
    req = waiter.req
    waiter.send(bp.ResultWait(req, "t-wait", 60.0))
    is_reply = lambda f: isinstance(f, bp.Ok | bp.Error) and f.req == req  # noqa: E731
    worker.ok(lambda r: bp.ResultSet(r, "t-wait", "STARTED"))
    assert waiter.nothing(is_reply, 0.3), "answered before a final state"
    worker.ok(lambda r: bp.ResultSet(r, "t-wait", "SUCCESS", b"done"))
    reply = waiter.next(is_reply)
    assert reply == bp.Ok(req, ["SUCCESS", b"done"])
    # Already final: answered at once.
    assert waiter.ok(lambda r: bp.ResultWait(r, "t-wait", 60.0)) == ["SUCCESS", b"done"]


def test_result_wait_times_out_with_none(connect: Callable[..., RawClient]) -> None:
    c = connect()
    assert c.ok(lambda r: bp.ResultWait(r, "never", 0.2)) is None


def test_results_survive_a_hard_restart(broker: Any, connect: Callable[..., RawClient]) -> None:
    c = connect()
    c.ok(lambda r: bp.ResultSet(r, "t-durable", "FAILURE", b"boom"))
    broker.restart()  # SIGKILL, then start on the same data directory
    c2 = connect()
    assert c2.ok(lambda r: bp.ResultGet(r, ["t-durable"])) == {"t-durable": ["FAILURE", b"boom"]}
    assert c2.ok(lambda r: bp.ResultWait(r, "t-durable", 5.0)) == ["FAILURE", b"boom"]


# --- revocation ----------------------------------------------------------------------


def test_revoked_task_is_never_delivered(connect: Callable[..., RawClient]) -> None:
    c = connect()
    c.ok(lambda r: bp.DeclareQueue(r, "work"))
    c.publish("work", b"revoked", message_id="task-revoked")
    c.publish("work", b"kept", message_id="task-kept")
    assert c.ok(lambda r: bp.Revoke(r, ["task-revoked"])) is None
    c.ok(lambda r: bp.Consume(r, "work", 10))
    first = c.next(lambda f: isinstance(f, bp.Deliver))
    assert isinstance(first, bp.Deliver)
    assert first.body == b"kept"
    assert first.props["message_id"] == "task-kept"
    assert c.stats("work") == {"ready": 0, "leased": 1, "delayed": 0, "consumers": 1}
    assert c.ok(lambda r: bp.ResultGet(r, ["task-revoked"])) == {"task-revoked": ["REVOKED", b""]}
    assert c.ok(lambda r: bp.ResultWait(r, "task-revoked", 5.0)) == ["REVOKED", b""]


def test_revoke_wakes_waiters(connect: Callable[..., RawClient]) -> None:
    waiter = connect("waiter")
    admin = connect("admin")
    waiter.req += 1
    req = waiter.req
    waiter.send(bp.ResultWait(req, "t-to-revoke", 60.0))
    admin.ok(lambda r: bp.Revoke(r, ["t-to-revoke"]))
    reply = waiter.next(lambda f: isinstance(f, bp.Ok | bp.Error) and f.req == req)
    assert reply == bp.Ok(req, ["REVOKED", b""])


def test_subscribers_get_terminate_events(connect: Callable[..., RawClient]) -> None:
    worker = connect("worker")
    admin = connect("admin")
    assert worker.ok(lambda r: bp.Subscribe(r, ["revoke"])) == {"revoked": []}
    admin.ok(lambda r: bp.Revoke(r, ["t-running"], True))
    event = worker.next(lambda f: isinstance(f, bp.Event))
    assert event == bp.Event("revoke", {"task_id": "t-running", "terminate": True})
    # A worker that subscribes later learns what is revoked.
    late = connect("late")
    assert late.ok(lambda r: bp.Subscribe(r, ["revoke"])) == {"revoked": ["t-running"]}
    assert late.error(lambda r: bp.Subscribe(r, ["gossip"])) == ErrorCode.INVALID_ARGUMENT


def test_revocations_survive_a_hard_restart(broker: Any, connect: Callable[..., RawClient]) -> None:
    c = connect()
    c.ok(lambda r: bp.DeclareQueue(r, "work"))
    c.ok(lambda r: bp.Revoke(r, ["task-x"]))
    broker.restart()
    c2 = connect()
    c2.publish("work", b"x", message_id="task-x")
    c2.publish("work", b"y", message_id="task-y")
    c2.ok(lambda r: bp.Consume(r, "work", 10))
    delivery = c2.next(lambda f: isinstance(f, bp.Deliver))
    assert isinstance(delivery, bp.Deliver)
    assert delivery.body == b"y"
    assert c2.ok(lambda r: bp.Subscribe(r, ["revoke"])) == {"revoked": ["task-x"]}


# --- schedules -----------------------------------------------------------------------


def test_every_second_fires_once_per_second_without_duplicates(
    connect: Callable[..., RawClient],
) -> None:
    a = connect("worker-a")
    b = connect("worker-b")
    a.ok(lambda r: bp.DeclareQueue(r, "beat"))
    started = time.monotonic()
    first = a.ok(lambda r: bp.ScheduleSet(r, "tick", "every 1", "", "beat", b"tick"))
    assert first["updated"] is True
    time.sleep(0.4)
    # Another worker declares the same beat schedule at its start: nothing changes.
    again = b.ok(lambda r: bp.ScheduleSet(r, "tick", "every 1", "", "beat", b"tick"))
    assert again == {"next_run": first["next_run"], "updated": False}
    time.sleep(max(0.0, started + 3.5 - time.monotonic()))
    ready = a.stats("beat")["ready"]
    assert 3 <= ready <= 4, ready
    a.ok(lambda r: bp.ScheduleDelete(r, "tick"))
    a.ok(lambda r: bp.Consume(r, "beat", 100))
    ids = set()
    for _ in range(ready):
        d = a.next(lambda f: isinstance(f, bp.Deliver))
        assert isinstance(d, bp.Deliver)
        assert d.body == b"tick"
        assert d.props["headers"]["x-schedule"] == "tick"
        ids.add(d.props["message_id"])
    assert len(ids) == ready  # every run is a distinct message


def test_schedule_survives_a_hard_restart(broker: Any, connect: Callable[..., RawClient]) -> None:
    c = connect()
    c.ok(lambda r: bp.DeclareQueue(r, "beat"))
    c.ok(lambda r: bp.ScheduleSet(r, "nightly", "cron 0 3 * * *", "", "beat", b"n"))
    c.ok(lambda r: bp.ScheduleSet(r, "often", "every 0.5", "", "beat", b"o"))
    tokyo = "cron 0 3 * * * Asia/Tokyo"  # UTC+9, no daylight saving: 18:00 UTC
    c.ok(lambda r: bp.ScheduleSet(r, "tokyo", tokyo, "", "beat", b"t"))
    listed = c.ok(bp.ScheduleList)
    assert [e["name"] for e in listed] == ["nightly", "often", "tokyo"]
    nightly = listed[0]
    assert nightly["spec"] == "cron 0 3 * * *"
    assert nightly["next_run"] % 86_400 == 3 * 3600
    assert nightly["last_run"] is None
    assert listed[2]["spec"] == tokyo
    assert listed[2]["next_run"] % 86_400 == 18 * 3600
    broker.restart()
    c2 = connect()
    after = c2.ok(bp.ScheduleList)
    assert [e["name"] for e in after] == ["nightly", "often", "tokyo"]
    assert after[0]["next_run"] == nightly["next_run"]
    assert (after[2]["spec"], after[2]["next_run"]) == (tokyo, listed[2]["next_run"])
    # The broker keeps firing it after the restart.
    wait_for(lambda: c2.stats("beat")["ready"] >= 2)
    assert c2.ok(bp.ScheduleList)[1]["last_run"] is not None


def test_invalid_schedules_and_deleting_a_missing_one_are_refused(
    connect: Callable[..., RawClient],
) -> None:
    c = connect()
    for spec in (
        "cron 61 * * * *",
        "cron * * *",
        "cron 0 0 30 feb *",
        "cron 0 3 * * * Nowhere/Atlantis",
        "every 0",
        "hourly",
    ):
        code = c.error(lambda r, s=spec: bp.ScheduleSet(r, "bad", s, "", "q", b""))
        assert code == ErrorCode.INVALID_ARGUMENT, spec
    code = c.error(lambda r: bp.ScheduleSet(r, "bad", "every 1", "", "q", b"", {"colour": 1}))
    assert code == ErrorCode.INVALID_ARGUMENT
    assert c.error(lambda r: bp.ScheduleDelete(r, "missing")) == ErrorCode.NOT_FOUND
    assert c.ok(bp.ScheduleList) == []


# --- ResultDelete, GroupJoin, GroupFire (49-51) ------------------------------------


def test_result_delete_forgets_results_on_disk_and_counts_them(
    broker: Any, connect: Callable[..., RawClient]
) -> None:
    c = connect()
    c.ok(lambda r: bp.ResultSet(r, "a", "SUCCESS", b"1"))
    c.ok(lambda r: bp.ResultSet(r, "b", "STARTED", b""))
    waiter = connect("waiter")
    waiter.send(bp.ResultWait(1, "b", 30.0))
    assert c.ok(lambda r: bp.ResultDelete(r, ["a", "b", "missing"])) == 2
    assert c.ok(lambda r: bp.ResultGet(r, ["a", "b"])) == {}
    assert waiter.nothing(lambda f: isinstance(f, bp.Ok), within=0.3)  # still waiting
    c.ok(lambda r: bp.ResultSet(r, "b", "SUCCESS", b"2"))
    assert waiter.next(lambda f: isinstance(f, bp.Ok)) == bp.Ok(1, ["SUCCESS", b"2"])
    broker.restart()
    assert connect().ok(lambda r: bp.ResultGet(r, ["a", "b"])) == {"b": ["SUCCESS", b"2"]}


def test_result_delete_of_more_than_1000_ids_is_a_protocol_error(
    connect: Callable[..., RawClient],
) -> None:
    c = connect()
    c.send(bp.ResultDelete(1, [str(i) for i in range(1001)]))
    err = c.next(lambda f: isinstance(f, bp.Error))
    assert isinstance(err, bp.Error) and err.req == 0
    assert err.code == ErrorCode.PROTOCOL_ERROR and "1000" in err.message


def test_group_state_and_the_fired_mark_survive_a_hard_restart(
    broker: Any, connect: Callable[..., RawClient]
) -> None:
    c = connect()
    c.ok(lambda r: bp.DeclareQueue(r, "body"))
    assert c.ok(lambda r: bp.GroupJoin(r, "g", "a", 3, 600.0)) == [1, False]
    assert c.ok(lambda r: bp.GroupJoin(r, "g", "b", 3, 600.0)) == [2, False]
    broker.restart()
    c = connect()
    assert c.ok(lambda r: bp.GroupJoin(r, "g", "b", 3, 600.0)) == [2, False]
    assert c.ok(lambda r: bp.GroupJoin(r, "g", "c", 3, 600.0)) == [3, True]
    broker.restart()
    c = connect()
    assert c.ok(lambda r: bp.GroupJoin(r, "g", "c", 3, 600.0)) == [3, True]  # may still fire
    props = {"message_id": "callback"}
    assert c.ok(lambda r: bp.GroupFire(r, "g", "", "body", b"go", props)) is True
    broker.restart()
    c = connect()
    assert c.ok(lambda r: bp.GroupFire(r, "g", "", "body", b"again", props)) is False
    assert c.ok(lambda r: bp.GroupJoin(r, "g", "c", 3, 600.0)) == [3, False]
    c.ok(lambda r: bp.Consume(r, "body", 10))
    d = c.next(lambda f: isinstance(f, bp.Deliver))
    assert isinstance(d, bp.Deliver) and d.body == b"go" and d.props["message_id"] == "callback"
    assert c.nothing(lambda f: isinstance(f, bp.Deliver), within=0.3)


def test_concurrent_joins_from_many_connections_have_one_completer(
    connect: Callable[..., RawClient],
) -> None:
    clients = [connect(f"w{i}") for i in range(10)]
    for i, cl in enumerate(clients):
        for j in range(10):
            cl.send(bp.GroupJoin(j + 1, "g", f"m{i * 10 + j}", 100, 600.0))
    completes = 0
    for cl in clients:
        for j in range(10):
            ok = cl.next(lambda f, req=j + 1: isinstance(f, bp.Ok) and f.req == req)
            assert isinstance(ok, bp.Ok)
            completes += ok.value[1]
    assert completes == 1


def test_a_refused_group_fire_leaves_the_group_unfired(connect: Callable[..., RawClient]) -> None:
    c = connect()
    c.ok(lambda r: bp.GroupJoin(r, "g", "a", 1, 600.0))
    code = c.error(lambda r: bp.GroupFire(r, "g", "", "nowhere", b"x", {"mandatory": True}))
    assert code == ErrorCode.UNROUTABLE
    assert c.error(lambda r: bp.GroupFire(r, "nope", "", "q", b"x", {})) == ErrorCode.NOT_FOUND
    c.ok(lambda r: bp.DeclareQueue(r, "nowhere"))
    assert c.ok(lambda r: bp.GroupFire(r, "g", "", "nowhere", b"x", {"mandatory": True})) is True
    assert c.stats("nowhere")["ready"] == 1
