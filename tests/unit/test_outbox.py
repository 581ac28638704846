"""The outbox writes each connection that queued frames once per tick, and
everything queued so far when the broker asks earlier (``brokerd/outbox.py``)."""

from __future__ import annotations

from collections.abc import Callable

from brokerd.outbox import Outbox


class Conn:
    def __init__(self, name: str, log: list[tuple[str, list[str]]], outbox: Outbox) -> None:
        self.name, self.log, self.outbox = name, log, outbox
        self.queued: list[str] = []
        self.in_outbox = False

    def send(self, frame: str) -> None:
        self.queued.append(frame)
        if not self.in_outbox:
            self.in_outbox = True
            self.outbox.add(self)

    def write_out(self) -> None:
        self.in_outbox = False
        if self.queued:
            self.log.append((self.name, self.queued))
            self.queued = []


def _outbox() -> tuple[Outbox, list[Callable[[], None]]]:
    soon: list[Callable[[], None]] = []
    return Outbox(soon.append), soon


def test_one_write_per_connection_and_one_callback_per_tick() -> None:
    outbox, soon = _outbox()
    log: list[tuple[str, list[str]]] = []
    a, b = Conn("a", log, outbox), Conn("b", log, outbox)
    a.send("1")
    b.send("x")
    a.send("2")
    assert len(soon) == 1 and log == []
    soon.pop()()
    assert log == [("a", ["1", "2"]), ("b", ["x"])]


def test_an_early_drain_writes_what_was_queued_and_the_tick_end_the_rest() -> None:
    outbox, soon = _outbox()
    log: list[tuple[str, list[str]]] = []
    a = Conn("a", log, outbox)
    a.send("deliver")
    outbox.drain()
    assert log == [("a", ["deliver"])]
    a.send("confirm")
    assert len(soon) == 1  # still the tick's one callback
    soon.pop()()
    assert log == [("a", ["deliver"]), ("a", ["confirm"])]


def test_a_new_tick_schedules_again() -> None:
    outbox, soon = _outbox()
    log: list[tuple[str, list[str]]] = []
    a = Conn("a", log, outbox)
    a.send("1")
    soon.pop()()
    a.send("2")
    assert len(soon) == 1
    soon.pop()()
    assert log == [("a", ["1"]), ("a", ["2"])]
