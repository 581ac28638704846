"""The Celery meta <-> native record mapping, without a broker."""

from __future__ import annotations

import pytest

from brokerd_client.celery import payload
from brokerd_client.tasks.outcome import ExcInfo
from brokerd_client.tasks.serialization import decode_result, encode_error


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_a_success_is_the_native_result_map_plus_celerys_meta(serializer: str) -> None:
    meta = {"status": "SUCCESS", "result": [1, 2], "traceback": None, "children": []}
    state, data = payload.encode(meta, serializer)
    assert state == "SUCCESS"
    assert decode_result(data) == {"result": [1, 2], "children": []}
    assert payload.decode(state, data) == {"result": [1, 2], "children": [], "status": "SUCCESS"}


def test_a_custom_state_is_stored_as_started_with_the_real_state() -> None:
    state, data = payload.encode({"status": "PROGRESS", "result": {"n": 1}}, "json")
    assert state == "STARTED"
    assert decode_result(data)["state"] == "PROGRESS"
    assert payload.decode(state, data)["status"] == "PROGRESS"


def test_an_exception_is_the_native_error_map_that_the_native_sdk_reads() -> None:
    exc = {"exc_type": "ValueError", "exc_module": "builtins", "exc_message": ["bad"]}
    meta = {"status": "FAILURE", "result": exc, "traceback": "tb"}
    state, data = payload.encode(meta, "json")
    assert state == "FAILURE"
    assert ExcInfo.from_dict(decode_result(data)) == ExcInfo("ValueError", "builtins", "bad", "tb")


def test_a_native_error_payload_decodes_for_celery() -> None:
    data = encode_error("KeyError", "builtins", "k", "tb", "msgpack")
    decoded = payload.decode("FAILURE", data)
    assert decoded["exc_type"] == "KeyError" and decoded["status"] == "FAILURE"


def test_an_empty_payload_is_an_empty_map_and_an_unknown_tag_is_refused() -> None:
    assert payload.decode("REVOKED", b"") == {"status": "REVOKED"}
    with pytest.raises(payload.PayloadError, match="tag"):
        payload.decode("SUCCESS", b"p\x80\x04")
