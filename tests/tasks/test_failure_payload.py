"""What a native worker stores with a FAILURE: the task's message, so the
management API can retry it, unless it would not fit the broker's frame
limit or the task belongs to a canvas."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from brokerd.management.retry import stored_message
from brokerd_client.tasks.canvasio import CANVAS_HEADER
from brokerd_client.tasks.outcome import ExcInfo
from brokerd_client.tasks.serialization import decode_result
from brokerd_client.tasks.worker.recorder import Recorder

INFO = ExcInfo("ValueError", "builtins", "bad", "Traceback ...")
MAX_FRAME = 64 * 1024


def recorder(serializer: str = "json") -> Recorder:
    conf: Any = SimpleNamespace(
        result_expires=60.0,
        result_serializer=serializer,
        task_store_errors_even_if_ignored=False,
        task_acks_on_failure_or_timeout=True,
        task_reject_on_worker_lost=False,
    )
    return Recorder(conf, Any, Any, spawn=lambda c: None, settled=lambda j: None)


def job(body: bytes, headers: dict[str, Any] | None = None) -> Any:
    delivery = SimpleNamespace(
        exchange="",
        routing_key="default",
        headers={"task": "app.t", "id": "t-1", **(headers or {})},
        body=body,
        priority=4,
    )
    return SimpleNamespace(
        task_id="t-1", delivery=delivery, client=SimpleNamespace(max_frame=MAX_FRAME)
    )


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_a_failure_carries_the_message_as_delivered(serializer: str) -> None:
    payload = recorder(serializer).failure_payload(job(b"\x00body"), INFO)
    message = stored_message(payload)
    assert (message.exchange, message.routing_key, message.priority) == ("", "default", 4)
    assert message.body == b"\x00body"
    assert message.headers == {"task": "app.t", "id": "t-1"}
    assert decode_result(payload)["exc_message"] == "bad"


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_a_message_that_would_not_fit_the_frame_limit_is_left_out(serializer: str) -> None:
    rec = recorder(serializer)
    sizes = [MAX_FRAME, MAX_FRAME - 100]
    if serializer == "json":
        sizes.append(MAX_FRAME // 4 * 3)  # json stores the body as base64: a third larger
    for size in sizes:
        payload = rec.failure_payload(job(b"x" * size), INFO)
        assert "task_message" not in decode_result(payload)
        assert payload == rec.error_payload(INFO)
        assert len(payload) < MAX_FRAME
    fits = rec.failure_payload(job(b"x" * (MAX_FRAME // 2)), INFO)
    assert "task_message" in decode_result(fits) and len(fits) <= MAX_FRAME - 64 - 4 * 3


def test_a_canvas_task_is_stored_without_its_message() -> None:
    rec = recorder()
    payload = rec.failure_payload(job(b"{}", {CANVAS_HEADER: b"\x90"}), INFO)
    assert payload == rec.error_payload(INFO)
