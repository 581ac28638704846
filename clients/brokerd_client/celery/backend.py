"""Celery's result backend on brokerd: ``result_backend = "brokerd://[token@]host:5673"``.

Results live in the broker (ResultSet / ResultGet / ResultWait / ResultDelete,
SPEC §14) in the native SDK's record format (``payload.py``), so Celery and
``brokerd-worker`` read each other's results. The backend speaks to brokerd
with the native blocking client (one connection per process, opened lazily,
reopened after a fork), never through kombu.

* ``AsyncResult.get()`` does not poll: it waits with ResultWait, which the
  broker answers the moment the task reaches a final state. Celery reaches
  the backend through ``wait_for_pending`` -> ``wait_for`` (and ``get_many``
  for ``join_native``), both overridden here. Waits are cut in pieces of at
  most an hour (the broker's bound); when Celery asks to be called back
  between waits (``on_interval``, to notice a failed parent) the pieces are
  ``PARENT_CHECK`` seconds, so a parent's failure is still seen.
* ``get(timeout=...)`` raises Celery's ``TimeoutError``.
* ``forget()`` deletes the result (ResultDelete).
* Chords count their header in the broker (GroupJoin) and publish their body
  through it (GroupFire): see ``chords.py``.
* Results expire after ``result_expires`` (Celery's default, one day; at
  least one second; no expiry is ten years, the broker's longest).

Only json and msgpack result serializers are accepted: anything else (pickle
above all) is refused when the backend is created.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from celery import states
from celery.backends.base import BaseBackend
from celery.exceptions import ImproperlyConfigured, TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import result_from_tuple

from ..sync import Client
from ..tls import from_celery
from ..url import BrokerURL, parse_url
from . import chords, payload

__all__ = ["BrokerdBackend"]

log = logging.getLogger("brokerd_client.celery.backend")

#: The broker's longest ResultWait and longest ttl (SPEC §14.4, §14.2).
MAX_WAIT = 3600.0
MAX_TTL = 315_360_000.0
MIN_TTL = 1.0
#: Longest single wait while Celery wants ``on_interval`` called between waits.
PARENT_CHECK = 1.0


class BrokerdBackend(BaseBackend):  # type: ignore[misc]  # Celery is untyped
    """Stores Celery results in brokerd (see the module docstring)."""

    supports_native_join = True
    supports_autoexpire = True
    persistent = True

    def __init__(self, app: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app, url=url, **kwargs)
        if self.serializer not in payload.SERIALIZERS:
            raise ImproperlyConfigured(
                f"the brokerd result backend stores json or msgpack results, not "
                f"{self.serializer!r}: set result_serializer = 'json' (or 'msgpack')"
            )
        self.broker_url: BrokerURL = parse_url(url or "brokerd://localhost:5673")
        self.ssl_context = from_celery(self.broker_url, _use_ssl(app.conf))
        self.ttl = _ttl(self.expires)
        self._client: Client | None = None
        self._client_lock = threading.Lock()

    # --- the connection -------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The native blocking client (lazy; it reconnects, and survives a fork)."""
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    client = self._client = Client(
                        self.broker_url,
                        client_name="celery-backend",
                        timeout=60.0,
                        ssl_context=self.ssl_context,
                    )
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def as_uri(self, include_password: bool = False) -> str:
        secret = self.broker_url.token or self.broker_url.password
        if include_password and secret is not None:
            return self.url or str(self.broker_url)
        return str(self.broker_url)

    # --- storing ----------------------------------------------------------------------

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        self.put_meta(task_id, meta)
        return result

    def put_meta(self, task_id: str, meta: dict[str, Any], ttl: float | None = None) -> None:
        """Store a Celery meta dict as the native record of ``task_id``."""
        broker_state, data = payload.encode(meta, self.serializer)
        self.client.result_set(task_id, broker_state, data, self.ttl if ttl is None else ttl)

    def _forget(self, task_id: str) -> None:
        self.client.result_delete([task_id])

    # --- reading ----------------------------------------------------------------------

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        record = self.client.result_get([task_id]).get(task_id)
        return self.meta_from_record(task_id, record)

    def meta_from_record(self, task_id: str, record: tuple[str, bytes] | None) -> dict[str, Any]:
        """Celery's meta dict for a native record (None: no result: PENDING)."""
        if record is None:
            return {"status": states.PENDING, "result": None, "task_id": task_id}
        state, raw = record
        data = payload.decode(state, raw)
        status = data.pop("status")
        data.pop("state", None)
        exc = {k: data.pop(k) for k in payload.EXCEPTION_KEYS if k in data}
        traceback = exc.pop("traceback", None) or data.pop("traceback", None) or None
        if "exc_type" in exc:
            result: Any = self.exception_to_python(exc)
        elif status == states.REVOKED and "result" not in data:
            result = TaskRevokedError("revoked")  # recorded by the broker (Revoke)
        else:
            result = data.pop("result", None)
        meta = {
            "status": status,
            "result": result,
            "traceback": traceback,
            "children": data.pop("children", []),
            "date_done": data.pop("date_done", None),
            "task_id": task_id,
        }
        meta.update(data)
        return meta

    # --- waiting (ResultWait: pushed, never polled) ------------------------------------

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_interval: Any = None,
    ) -> dict[str, Any]:
        self._ensure_not_eager()
        meta: dict[str, Any] = self.get_task_meta(task_id)
        if meta["status"] in states.READY_STATES:
            return meta
        deadline = None if timeout is None else time.monotonic() + timeout
        longest = PARENT_CHECK if on_interval is not None else MAX_WAIT
        while True:
            left = MAX_WAIT if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise CeleryTimeoutError("The operation timed out.")
            record = self.client.result_wait(task_id, max(0.001, min(left, longest)))
            if record is not None:
                meta = self.meta_from_record(task_id, record)
                if meta["status"] == states.SUCCESS:
                    self._cache[task_id] = meta
                return meta
            if on_interval is not None:
                on_interval()

    def get_many(
        self,
        task_ids: Iterable[str],
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_message: Any = None,
        on_interval: Any = None,
        max_iterations: Any = None,
        READY_STATES: frozenset[str] = states.READY_STATES,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(task_id, meta)`` as each task is ready: those ready now
        first (one ResultGet per thousand ids), then one pushed wait each."""
        ids = list(dict.fromkeys(str(t) for t in task_ids))
        pending: list[str] = []
        for task_id in ids:
            cached = self._cache.get(task_id)
            if cached is not None and cached["status"] in READY_STATES:
                yield task_id, cached
            else:
                pending.append(task_id)
        found = self.client.result_get(pending) if pending else {}
        waiting: list[str] = []
        for task_id in pending:
            meta = self.meta_from_record(task_id, found.get(task_id))
            if meta["status"] in READY_STATES:
                self._ready(task_id, meta, on_message)
                yield task_id, meta
            else:
                waiting.append(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        for task_id in waiting:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            meta = self.wait_for(task_id, timeout=left, on_interval=on_interval)
            self._ready(task_id, meta, on_message)
            yield task_id, meta

    def _ready(self, task_id: str, meta: dict[str, Any], on_message: Any) -> None:
        if meta["status"] == states.SUCCESS:
            self._cache[task_id] = meta
        if on_message is not None:
            on_message(meta)

    # --- groups (GroupResult.save / restore / delete) ----------------------------------

    def _save_group(self, group_id: str, result: Any) -> Any:
        meta = {"status": states.SUCCESS, "result": result.as_tuple()}
        self.put_meta(group_id, meta, ttl=self.chord_ttl())
        return result

    def _restore_group(self, group_id: str) -> dict[str, Any] | None:
        record = self.client.result_get([group_id]).get(group_id)
        if record is None:
            return None
        meta = self.meta_from_record(group_id, record)
        meta["result"] = result_from_tuple(meta["result"], self.app)
        return meta

    def _delete_group(self, group_id: str) -> None:
        self.client.result_delete([group_id])

    def chord_ttl(self) -> float:
        """Seconds chord bookkeeping is kept: ``result_chord_expires``, else
        ``result_expires``; never shorter than results are kept."""
        value = self.app.conf.get("result_chord_expires")
        chord = self.ttl if value is None else _ttl(self.prepare_expires(value))
        return max(chord, self.ttl)

    # --- chords (counted and fired in the broker) --------------------------------------

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        self.ensure_chords_allowed()
        chords.apply_chord(self, header_result_args)

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        chords.set_chord_size(self, group_id, chord_size)

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        chords.on_chord_part_return(self, request, state, result)


def _use_ssl(conf: Any) -> Any:
    """The backend's TLS setting: ``brokerd_backend_use_ssl`` (the form of
    ``broker_use_ssl``), else ``broker_use_ssl`` when the broker is brokerd
    too (one CA for both, as most deployments have), else none (TLS then
    only for ``brokerds://``, verified against the system's CAs)."""
    own = conf.get("brokerd_backend_use_ssl")
    if own is not None:
        return own
    broker = str(conf.get("broker_url") or "")
    if broker.startswith(("brokerd://", "brokerds://")):
        return conf.get("broker_use_ssl")
    return None


def _ttl(expires: Any) -> float:
    """Seconds a result is kept: ``result_expires`` (None or 0: as long as the
    broker allows), at least one second."""
    if isinstance(expires, timedelta):
        expires = expires.total_seconds()
    if not expires:
        return MAX_TTL
    return min(max(float(expires), MIN_TTL), MAX_TTL)
