"""What the management plane reads of task result payloads: the list's
decoding (both serializers) and a failure's stored task message, whose one
writer is the SDK's ``pack_task_message`` and one reader ``retry.stored_message``."""

from __future__ import annotations

import msgpack
import pytest

from brokerd.management.retry import NotRetriable, stored_message
from brokerd.management.taskviews import decode_payload
from brokerd_client.tasks.serialization import (
    decode_result,
    encode_error,
    encode_result,
    pack_task_message,
)

ERROR = ("ValueError", "builtins", "bad input", "Traceback ...\nValueError: bad input")


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_the_task_list_decodes_results_of_either_serializer(serializer: str) -> None:
    shown = decode_payload(encode_error(*ERROR, serializer))
    assert shown["exc_type"] == "ValueError" and shown["exc_message"] == "bad input"
    assert shown["retriable"] is False
    assert decode_payload(encode_result([1, 2], serializer)) == {"result": "[1, 2]"}


def test_a_msgpack_payload_that_is_not_valid_is_shown_as_its_size() -> None:
    assert decode_payload(b"m\xc1\xc1") == {"payload_bytes": 3}


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_a_failure_stored_with_its_message_gives_that_message_back(serializer: str) -> None:
    headers = {"task": "app.add", "id": "t-1", "retries": 0, "raw": b"\x00\xff", "n": None}
    packed = pack_task_message("tasks", "app.add", headers, b'{"args":[1]}', 3)
    payload = encode_error(*ERROR, serializer, packed)
    shown = decode_payload(payload)
    # The list names the task and its queue from the message (a failure the
    # workers' events never showed would otherwise be listed without them).
    assert (shown["retriable"], shown["name"], shown["routing_key"]) == (True, "app.add", "app.add")
    message = stored_message(payload)
    assert (message.exchange, message.routing_key) == ("tasks", "app.add")
    assert message.headers == headers
    assert (message.body, message.priority) == (b'{"args":[1]}', 3)
    # Old readers read it as before: the added key is ignored.
    data = decode_result(payload)
    assert {k: data[k] for k in ("exc_type", "exc_message")} == {
        "exc_type": "ValueError",
        "exc_message": "bad input",
    }


def test_the_message_sent_again_leaves_the_dead_letter_history_behind() -> None:
    headers = {"task": "a", "x-death-queue": "q", "x-death-count": 2, "x-other": 1}
    payload = encode_error(*ERROR, "json", pack_task_message("", "q", headers, b"{}", 0))
    props = stored_message(payload).props("t-9")
    assert props == {
        "headers": {"task": "a", "x-other": 1},
        "priority": 0,
        "message_id": "t-9",
        "mandatory": True,
    }


@pytest.mark.parametrize(
    "payload",
    [
        encode_error(*ERROR, "json"),
        encode_error(*ERROR, "msgpack"),
        b"j" + b'{"exc_type": "E", "task_message": "not base64!"}',
        b"m" + msgpack.packb({"exc_type": "E", "task_message": b"\xc1"}),
        b"m" + msgpack.packb({"exc_type": "E", "task_message": msgpack.packb([1, 2])}),
        b"m" + msgpack.packb({"exc_type": "E", "task_message": msgpack.packb({"exchange": 1})}),
        b"",
        b"x-unknown",
    ],
)
def test_a_failure_without_a_readable_message_is_not_retriable(payload: bytes) -> None:
    with pytest.raises(NotRetriable):
        stored_message(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"j" + b'{"exc_type": "E", "task_message": "not base64!"}',
        b"m" + msgpack.packb({"exc_type": "E", "task_message": msgpack.packb({"exchange": 1})}),
    ],
)
def test_the_list_calls_a_failure_with_an_unreadable_message_not_retriable(payload: bytes) -> None:
    shown = decode_payload(payload)
    assert shown["retriable"] is False and "name" not in shown
