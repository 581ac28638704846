"""Celery result meta <-> brokerd's native result record: the one place that maps them.

A result is stored with ResultSet under the task id, in the native SDK's
payload format (``tasks/serialization.py``): one tag byte (``j`` json, ``m``
msgpack) and a serialized map. So a Celery worker's results are readable by
``brokerd_client.tasks.AsyncResult`` and a native worker's by Celery:

* broker state: Celery's state when it is one the broker knows (PENDING,
  STARTED, RETRY, SUCCESS, FAILURE, REVOKED); any other (a custom state such
  as PROGRESS from ``update_state``) is stored as STARTED, the real state in
  the map's ``"state"`` key. So only the six real ones are ever final.
* the map: ``{"result": value}``, or for an exception the native error keys
  ``exc_type``, ``exc_module``, ``exc_message``, ``traceback`` (Celery's own
  exception-to-dict shape; a single string argument is stored as that string,
  which both sides rebuild the same way), plus Celery's other meta keys
  (``children``, ``date_done``, ``group_id``, ``parent_id`` and, with
  ``result_extended``, ``name``, ``args``, ``kwargs``, ``worker``,
  ``retries``, ``queue``). Native readers ignore the keys they do not know.
* encoding: kombu's json or msgpack (the app's ``result_serializer``), so
  values kombu's json tags (datetimes, UUIDs, decimals) come back as they
  went in; a native reader sees kombu's tagged map for them. Reading goes by
  the tag byte, not by the app's serializer, so a fleet mixing json and
  msgpack writers reads both. No other serializer exists here: no pickle.

This module imports kombu, never Celery; rebuilding exceptions is the
backend's (Celery's ``exception_to_python``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from kombu import serialization

#: kombu's serializer registry, typed (kombu's own functions are not).
_dumps: Callable[..., tuple[str, str, bytes | str]] = serialization.dumps
_loads: Callable[..., Any] = serialization.loads

__all__ = [
    "BROKER_STATES",
    "EXCEPTION_KEYS",
    "SERIALIZERS",
    "PayloadError",
    "decode",
    "encode",
]

#: The states the broker stores as they are (SPEC §14.1).
BROKER_STATES: Final = frozenset({"PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"})
#: Serializer name -> the payload's tag byte and kombu's content type.
SERIALIZERS: Final = {
    "json": (b"j", "application/json"),
    "msgpack": (b"m", "application/x-msgpack"),
}
_BY_TAG: Final = {tag[0]: content_type for tag, content_type in SERIALIZERS.values()}
#: The keys of an exception in a payload.
EXCEPTION_KEYS: Final = ("exc_type", "exc_module", "exc_message", "traceback")
#: Meta keys that are not copied into the map as they are.
_OWN_KEYS: Final = frozenset({"status", "result", "traceback", "task_id"})


class PayloadError(ValueError):
    """A stored payload that is not a native result map."""


def encode(meta: Mapping[str, Any], serializer: str) -> tuple[str, bytes]:
    """``(broker state, payload)`` for Celery's result ``meta``.

    ``meta["result"]`` is already prepared by Celery (an exception as its
    dict, a result object as its tuple).
    """
    status = str(meta["status"])
    result = meta.get("result")
    data: dict[str, Any] = {k: v for k, v in meta.items() if k not in _OWN_KEYS}
    if isinstance(result, Mapping) and _is_exception_dict(result):
        message = result.get("exc_message", "")
        if isinstance(message, list | tuple) and len(message) == 1 and isinstance(message[0], str):
            message = message[0]
        data["exc_type"] = result["exc_type"]
        data["exc_module"] = result.get("exc_module")
        data["exc_message"] = message
        data["traceback"] = meta.get("traceback") or ""
    else:
        data["result"] = result
        if meta.get("traceback"):
            data["traceback"] = meta["traceback"]
    state = status
    if status not in BROKER_STATES:
        data["state"] = status
        state = "STARTED"
    tag, content_type = SERIALIZERS[serializer]
    _, _, body = _dumps(data, serializer=serializer)
    del content_type
    return state, tag + (body if isinstance(body, bytes) else body.encode())


def decode(state: str, payload: bytes) -> dict[str, Any]:
    """The map inside ``payload`` (``{}`` for an empty one, which the broker
    writes itself for REVOKED), and the Celery status it stands for under
    ``"status"``."""
    if payload:
        content_type = _BY_TAG.get(payload[0])
        if content_type is None:
            raise PayloadError(f"unknown result payload tag {payload[:1]!r}")
        try:
            data = _loads(
                payload[1:],
                content_type=content_type,
                content_encoding="utf-8" if payload[0] == ord("j") else "binary",
                accept={content_type},
            )
        except RecursionError:
            raise PayloadError("result payload nested too deep") from None
        except Exception as exc:  # kombu wraps decoder errors in several types
            raise PayloadError(f"result payload cannot be decoded: {exc}") from exc
        if not isinstance(data, dict):
            raise PayloadError("result payload must be a map")
    else:
        data = {}
    status = data.get("state") if state == "STARTED" else None
    data["status"] = status if isinstance(status, str) and status else state
    return data


def _is_exception_dict(value: object) -> bool:
    return isinstance(value, Mapping) and "exc_type" in value and "exc_message" in value
