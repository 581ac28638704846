"""How ``update_state`` stores custom states, and that native results and the
Celery transport read each other's (no broker needed)."""

from __future__ import annotations

from typing import Any

import pytest

from brokerd_client.tasks import App, AsyncResult, states
from brokerd_client.tasks.progress import encode_state
from brokerd_client.tasks.result import _value_of


class _NoBroker:
    clients: Any = None
    control: Any = None


def _read(record: tuple[str, bytes]) -> tuple[str, Any, AsyncResult]:
    r = AsyncResult("t", app=_NoBroker())
    state, data = r._decode(record)
    return state, _value_of(state, data), r


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_a_custom_state_is_stored_as_started_and_read_back_as_itself(serializer: str) -> None:
    wire_state, payload = encode_state("PROGRESS", {"done": 3, "of": 10}, serializer)
    assert wire_state == states.STARTED  # the broker never sees a state it does not know
    state, info, r = _read((wire_state, payload))
    assert (state, info) == ("PROGRESS", {"done": 3, "of": 10})
    assert r._final is None  # not final: get() keeps waiting


def test_known_states_are_stored_as_they_are() -> None:
    assert encode_state("STARTED", {"pid": 1}, "json")[0] == states.STARTED
    state, info, r = _read(encode_state("SUCCESS", 42, "json"))
    assert (state, info) == (states.SUCCESS, 42) and r._final is not None
    state, info, _ = _read(encode_state("FAILURE", KeyError("k"), "json"))
    assert state == states.FAILURE and isinstance(info, KeyError)
    with pytest.raises(ValueError):
        encode_state("", None, "json")


def test_celery_progress_and_native_progress_read_the_same() -> None:
    payload_mod = pytest.importorskip("brokerd_client.celery.payload")
    celery_state, celery_payload = payload_mod.encode(
        {"status": "PROGRESS", "result": {"n": 1}}, "json"
    )
    assert _read((celery_state, celery_payload))[:2] == ("PROGRESS", {"n": 1})
    native = encode_state("PROGRESS", {"n": 1}, "json")
    assert payload_mod.decode(*native)["status"] == "PROGRESS"
    assert payload_mod.decode(*native)["result"] == {"n": 1}


def test_update_state_does_nothing_in_eager_mode_and_needs_an_id_outside_a_task() -> None:
    app = App("eager_progress", task_always_eager=True)

    @app.task(bind=True)
    def report(self: Any) -> str:
        self.update_state(state="PROGRESS", meta={"done": 1})  # no broker touched
        return "ok"

    assert report.delay().get() == "ok"
    with pytest.raises(RuntimeError, match="needs task_id"):
        report.update_state(state="PROGRESS")
