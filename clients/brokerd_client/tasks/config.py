"""App settings: Celery's lower-case names, validated when they are set.

Every setting has a checker that turns what the user wrote into one normal
form (durations into float seconds, content types into serializer names,
queues into :class:`~brokerd_client.tasks.queues.Queue` objects) or raises
:class:`~brokerd_client.tasks.exceptions.ConfigurationError` naming the
setting. Unknown names are errors too, with the closest known name
suggested, because a misspelt ``task_acks_late`` silently falling back to a
default is exactly the kind of surprise this project exists to remove.

Celery settings that have no meaning here (``result_backend``,
``broker_transport_options``' visibility timeout, ``worker_prefetch_multiplier``)
are refused with the reason and what to write instead.

Every problem of one update is reported in one error (a ported config with
five old names is fixed in one run, not five), and nothing is applied unless
everything is valid. Celery's old upper-case names (``BROKER_URL``,
``CELERYD_CONCURRENCY``, see ``oldnames.py``) are mapped when a config object
is loaded; an old name brokerd has no setting for is refused, never skipped.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import os
import ssl
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any, Final

from brokerd_protocol import MAX_PRIORITY

from ..checks import seconds
from ..tls import from_celery
from ..url import BrokerURL, parse_url
from .exceptions import ConfigurationError
from .oldnames import OLD_NAMES, looks_old
from .queues import EXCHANGE_TYPES, Queue
from .ratelimit import parse_rate
from .schedules import ScheduleEntry, parse_beat_schedule
from .serialization import DEFAULT_MAX_DECOMPRESSED, SERIALIZERS

__all__ = [
    "BROKER_URL_ENV",
    "POOLS",
    "POOL_ALIASES",
    "Settings",
    "broker_url_from_env",
    "load_object",
]

POOLS: Final = ("asyncio", "threads", "processes")
#: Celery's pool names that mean a pool here (``prefork``: one child process per slot).
POOL_ALIASES: Final = {"prefork": "processes"}

_PICKLE_REFUSED = (
    "pickle is refused: unpickling a message lets anyone who can publish to the broker "
    "run code in your workers. Use 'json' or 'msgpack'"
)

#: Celery settings with no equivalent here, and what to do instead.
_CELERY_ONLY: Final[dict[str, str]] = {
    "result_backend": "brokerd stores results itself (no second service); remove it",
    "broker_transport_options": (
        "not needed: there is no visibility_timeout; workers extend each task's lease "
        "while it runs. Set a queue's lease with Queue(..., lease=seconds)"
    ),
    "worker_prefetch_multiplier": (
        "use worker_prefetch, a number of messages (default: worker_concurrency)"
    ),
    "task_protocol": "brokerd has one task message format; remove it",
    "result_extended": "not supported; remove it",
    "task_annotations": "not supported; set options in @app.task(...) instead",
    "beat_scheduler": (
        "schedules are kept and fired by brokerd itself; no scheduler class is used"
    ),
    "beat_max_loop_interval": "schedules are fired by brokerd; remove it",
    "event_serializer": "events are always JSON; remove it",
    "task_send_sent_event": (
        "producers send no task-sent event; workers send task-received (-E); remove it"
    ),
}


# --- checkers -------------------------------------------------------------------


def _bool(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {value!r}")
    return str(value)


def _name(name: str, value: Any) -> str:
    text = _str(name, value)
    if not text:
        raise ConfigurationError(f"{name} must not be empty")
    return text


def _opt_str(name: str, value: Any) -> str | None:
    return None if value is None else _str(name, value)


#: A duration in seconds (a number or a timedelta), above 0.
_duration = functools.partial(seconds, allow_timedelta=True, error=ConfigurationError)


def _opt_duration(name: str, value: Any) -> float | None:
    return None if value is None else _duration(name, value)


def _lease(name: str, value: Any) -> float:
    seconds = _duration(name, value)
    if not 0.001 <= seconds <= 86400:
        raise ConfigurationError(f"{name} must be within 0.001..86400 seconds, got {seconds}")
    return seconds


def _rate_limit(name: str, value: Any) -> str | float | None:
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None
    return value  # type: ignore[no-any-return]


def _opt_pos_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ConfigurationError(f"{name} must be a positive int or None, got {value!r}")
    return value


def _priority(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_PRIORITY:
        raise ConfigurationError(
            f"{name} must be an int within 0..{MAX_PRIORITY} or None, got {value!r}"
        )
    return value


def _serializer(name: str, value: Any) -> str:
    if isinstance(value, str):
        value = _SERIALIZER_ALIASES.get(value, value)
    if value == "pickle":
        raise ConfigurationError(f"{name}: {_PICKLE_REFUSED}")
    if value not in SERIALIZERS:
        raise ConfigurationError(f"{name} must be 'json' or 'msgpack', got {value!r}")
    return str(value)


_SERIALIZER_ALIASES: Final = {
    "application/json": "json",
    "application/x-msgpack": "msgpack",
    "application/msgpack": "msgpack",
    "application/x-python-serialize": "pickle",
}


def _accept(name: str, value: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a list like ['json'], got {value!r}")
    items = list(value)
    if not items:
        raise ConfigurationError(f"{name} must name at least one serializer")
    return frozenset(_serializer(name, item) for item in items)


def _compression(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if value != "zlib":
        raise ConfigurationError(f"{name} must be None or 'zlib', got {value!r}")
    return "zlib"


#: Bounds of ``task_max_decompressed_size``: 1 KiB .. 1 GiB.
DECOMPRESSED_SIZE_RANGE: Final = (1024, 1 << 30)


def _decompressed_size(name: str, value: Any) -> int:
    low, high = DECOMPRESSED_SIZE_RANGE
    if type(value) is not int or not low <= value <= high:
        raise ConfigurationError(
            f"{name} must be an int of bytes within {low}..{high}, got {value!r}"
        )
    return value


def _exchange_type(name: str, value: Any) -> str:
    if value not in EXCHANGE_TYPES:
        raise ConfigurationError(f"{name} must be one of {sorted(EXCHANGE_TYPES)}, got {value!r}")
    return str(value)


def _queues(name: str, value: Any) -> tuple[Queue, ...]:
    if value is None:
        return ()
    if isinstance(value, Queue):
        value = [value]
    if isinstance(value, Mapping):
        # The old dict form: {"name": {"exchange": ..., "routing_key": ...}}.
        try:
            value = [Queue(qname, **dict(opts)) for qname, opts in value.items()]
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{name}: {exc}") from None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a list of Queue(...), got {value!r}")
    queues: list[Queue] = []
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, Queue):
            raise ConfigurationError(
                f"{name} items must be brokerd_client.tasks.Queue(...), got {item!r}"
            )
        if item.name in seen:
            raise ConfigurationError(f"{name}: queue {item.name!r} is listed twice")
        seen.add(item.name)
        queues.append(item)
    return tuple(queues)


_ROUTE_KEYS = frozenset({"queue", "routing_key", "exchange", "priority"})


def _routes(name: str, value: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    """Normal form: ordered ``(glob, {"queue"|"routing_key"|"exchange"|"priority": ...})``."""
    if value is None:
        return ()
    maps: list[Mapping[Any, Any]]
    if isinstance(value, Mapping):
        maps = [value]
    elif isinstance(value, list | tuple):
        maps = list(value)
    else:
        raise ConfigurationError(
            f"{name} must be a dict (or list of dicts) of task name/glob -> route, "
            f"got {type(value).__name__}"
        )
    routes: list[tuple[str, dict[str, Any]]] = []
    for mapping in maps:
        if not isinstance(mapping, Mapping):
            raise ConfigurationError(
                f"{name}: routers must be dicts (functions and router classes are not "
                f"supported), got {mapping!r}"
            )
        for pattern, given in mapping.items():
            route = {"queue": given} if isinstance(given, str) else given
            if not isinstance(pattern, str) or not pattern:
                raise ConfigurationError(
                    f"{name}: keys must be task names or globs, got {pattern!r}"
                )
            if not isinstance(route, Mapping):
                raise ConfigurationError(f"{name}[{pattern!r}] must be a dict or queue name")
            bad = set(route) - _ROUTE_KEYS
            if bad:
                raise ConfigurationError(
                    f"{name}[{pattern!r}]: unknown keys {sorted(bad)} "
                    f"(allowed: {sorted(_ROUTE_KEYS)})"
                )
            clean: dict[str, Any] = {}
            for key, item in route.items():
                if key == "priority":
                    clean[key] = _priority(f"{name}[{pattern!r}].priority", item)
                elif isinstance(item, Queue) and key == "queue":
                    clean[key] = item.name
                elif key == "queue":
                    clean[key] = _name(f"{name}[{pattern!r}].queue", item)
                else:
                    clean[key] = _str(f"{name}[{pattern!r}].{key}", item)
            routes.append((pattern, clean))
    return tuple(routes)


def _beat(name: str, value: Any) -> dict[str, ScheduleEntry]:
    if value is None:
        return {}
    try:
        return parse_beat_schedule(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


def _modules(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a list of module names, got {value!r}")
    return tuple(_name(name, item) for item in value)


def _url(name: str, value: Any) -> str | None:
    if value is None:
        return None
    url = _str(name, value)
    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None
    return url


#: Where a broker URL is read from when no ``broker_url`` is set, in order.
BROKER_URL_ENV: Final = ("BROKERD_URL", "CELERY_BROKER_URL")


def broker_url_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(variable, url)`` from the first of ``BROKER_URL_ENV`` that is set and
    not empty, or None. An invalid URL is an error naming the variable (the
    message hides a token, as every URL error does)."""
    env = os.environ if environ is None else environ
    for variable in BROKER_URL_ENV:
        url = env.get(variable, "")
        if url:
            try:
                parse_url(url)
            except ValueError as exc:
                raise ConfigurationError(f"${variable}: {exc}") from None
            return variable, url
    return None


def _use_ssl(name: str, value: Any) -> bool | ssl.SSLContext | dict[str, Any] | None:
    """Celery's ``broker_use_ssl``: None/False, True, an SSLContext, or a dict of
    ``ssl_ca_certs``/``ssl_certfile``/``ssl_keyfile``/``ssl_cert_reqs``
    (checked now, files included: see ``brokerd_client.tls.from_celery``)."""
    if value is None or value is False:
        return None
    if value is True or isinstance(value, ssl.SSLContext):
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{name} must be True, an ssl.SSLContext or a dict, got {type(value).__name__}"
        )
    try:
        from_celery(BrokerURL("localhost", tls=True), value)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{name}: {exc}") from None
    return dict(value)


def _pool(name: str, value: Any) -> str:
    if isinstance(value, str):
        value = POOL_ALIASES.get(value, value)
    if value not in POOLS:
        raise ConfigurationError(
            f"{name} must be one of {list(POOLS)} (or 'prefork' = 'processes'), got {value!r}"
        )
    return str(value)


def _timezone(name: str, value: Any) -> str:
    """An IANA zone name (or a ``ZoneInfo``), checked against this machine's zone
    database; the broker, which fires the schedules, checks it again."""
    if isinstance(value, zoneinfo.ZoneInfo):
        value = value.key
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be a time zone name like 'Europe/Berlin'")
    if value in ("UTC", "Etc/UTC", "utc"):
        return "UTC"
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigurationError(
            f"{name}={value!r} is not a known time zone (an IANA name such as "
            "'Europe/Berlin' or 'America/New_York')"
        ) from None
    return value


def _enable_utc(name: str, value: Any) -> bool:
    if value is not True:
        raise ConfigurationError(
            f"{name} must be True: message times are always UTC (epoch seconds); "
            "crontab schedules follow the timezone setting"
        )
    return True


_Checker = Callable[[str, Any], Any]

#: name -> (default, checker, one-line meaning). Defaults are already normal.
_SETTINGS: Final[dict[str, tuple[Any, _Checker, str]]] = {
    "broker_url": (None, _url, "brokerd://[token@]host:port, brokerds:// for TLS"),
    "broker_use_ssl": (
        None,
        _use_ssl,
        "TLS: True, an ssl.SSLContext, or {'ssl_ca_certs', 'ssl_certfile', 'ssl_keyfile', "
        "'ssl_cert_reqs'}",
    ),
    "broker_connection_timeout": (10.0, _duration, "seconds to connect"),
    "broker_connection_retry_on_startup": (True, _bool, "worker retries until the broker is up"),
    "broker_heartbeat": (
        30.0,
        lambda n, v: 0.0 if v == 0 else _duration(n, v),
        "heartbeat seconds",
    ),
    "imports": ((), _modules, "modules the worker imports at start"),
    "include": ((), _modules, "modules the worker imports at start"),
    "task_default_queue": ("celery", _name, "queue of tasks without a route"),
    "task_default_exchange": (
        "",
        _str,
        "exchange tasks are published to ('' routes by queue name)",
    ),
    "task_default_exchange_type": ("direct", _exchange_type, "direct or topic"),
    "task_default_routing_key": (None, _opt_str, "routing key (default: the queue name)"),
    "task_default_priority": (None, _priority, f"0..{MAX_PRIORITY}"),
    "task_default_lease": (30.0, _lease, "lease of declared queues, seconds"),
    "task_queues": ((), _queues, "list of Queue(...)"),
    "task_routes": ((), _routes, "task name/glob -> {'queue'|'routing_key'|...}"),
    "task_create_missing_queues": (True, _bool, "declare queues named by routes"),
    "task_serializer": ("json", _serializer, "json or msgpack"),
    "result_serializer": ("json", _serializer, "json or msgpack"),
    "accept_content": (frozenset({"json"}), _accept, "serializers a worker accepts"),
    "task_compression": (None, _compression, "None or 'zlib'"),
    "task_max_decompressed_size": (
        DEFAULT_MAX_DECOMPRESSED,
        _decompressed_size,
        "largest a zlib task body may inflate to in a worker, bytes",
    ),
    "result_expires": (86400.0, _duration, "seconds results are kept"),
    "task_ignore_result": (False, _bool, "do not store results"),
    "task_store_errors_even_if_ignored": (False, _bool, "store failures of ignore_result tasks"),
    "task_track_started": (False, _bool, "record STARTED"),
    "task_time_limit": (None, _opt_duration, "hard limit, seconds"),
    "task_soft_time_limit": (None, _opt_duration, "soft limit, seconds"),
    "task_acks_late": (True, _bool, "ack after the task ran (at-least-once)"),
    "task_acks_on_failure_or_timeout": (True, _bool, "ack failed tasks"),
    "task_reject_on_worker_lost": (False, _bool, "requeue tasks whose process died"),
    "task_always_eager": (False, _bool, "run .delay() in-process"),
    "task_eager_propagates": (False, _bool, "eager .delay() raises the task's error"),
    "task_default_retry_delay": (180.0, _duration, "retry countdown, seconds"),
    "task_default_rate_limit": (
        None,
        _rate_limit,
        "rate limit of tasks without their own ('10/s', '100/m'), kept by the broker",
    ),
    "worker_disable_rate_limits": (False, _bool, "this worker ignores rate limits"),
    "worker_send_task_events": (False, _bool, "publish task and worker events (-E)"),
    "worker_concurrency": (None, _opt_pos_int, "tasks run at once (default: CPU count)"),
    "worker_prefetch": (None, _opt_pos_int, "messages held per queue (default: concurrency)"),
    "worker_max_tasks_per_child": (None, _opt_pos_int, "recycle a child process after N tasks"),
    "worker_pool": ("asyncio", _pool, "asyncio, threads or processes"),
    "worker_shutdown_timeout": (60.0, _duration, "warm shutdown grace period, seconds"),
    "worker_summary_interval": (10.0, _duration, "seconds between INFO summary lines"),
    "beat_schedule": ({}, _beat, "periodic entries, fired by the broker"),
    "timezone": ("UTC", _timezone, "IANA time zone crontab schedules run in"),
    "enable_utc": (True, _enable_utc, "must be True (message times are UTC)"),
}


def _explain_unknown(name: str) -> str:
    if name in _CELERY_ONLY:
        return f"setting {name!r} is not supported by brokerd: {_CELERY_ONLY[name]}"
    if name in OLD_NAMES:
        return (
            f"old-style setting {name!r}: write {OLD_NAMES[name]!r} (old names are "
            "mapped only by config_from_object)"
        )
    close = difflib.get_close_matches(name, _SETTINGS, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown setting {name!r}{hint}"


def _one_error(problems: list[str]) -> ConfigurationError:
    if len(problems) == 1:
        return ConfigurationError(problems[0])
    listed = "\n".join(f"  - {p}" for p in problems)
    return ConfigurationError(f"{len(problems)} settings are refused:\n{listed}")


class Settings:
    """An app's settings; read them as attributes (``app.conf.task_acks_late``).

    Assigning an attribute or calling :meth:`update` validates at once. The
    attributes below are the normal forms the rest of the package relies on.
    """

    broker_url: str | None
    broker_use_ssl: bool | ssl.SSLContext | dict[str, Any] | None
    broker_connection_timeout: float
    broker_connection_retry_on_startup: bool
    broker_heartbeat: float
    imports: tuple[str, ...]
    include: tuple[str, ...]
    task_default_queue: str
    task_default_exchange: str
    task_default_exchange_type: str
    task_default_routing_key: str | None
    task_default_priority: int | None
    task_default_lease: float
    task_queues: tuple[Queue, ...]
    task_routes: tuple[tuple[str, dict[str, Any]], ...]
    task_create_missing_queues: bool
    task_serializer: str
    result_serializer: str
    accept_content: frozenset[str]
    task_compression: str | None
    task_max_decompressed_size: int
    result_expires: float
    task_ignore_result: bool
    task_store_errors_even_if_ignored: bool
    task_track_started: bool
    task_time_limit: float | None
    task_soft_time_limit: float | None
    task_acks_late: bool
    task_acks_on_failure_or_timeout: bool
    task_reject_on_worker_lost: bool
    task_always_eager: bool
    task_eager_propagates: bool
    task_default_retry_delay: float
    task_default_rate_limit: str | float | None
    worker_disable_rate_limits: bool
    worker_send_task_events: bool
    worker_concurrency: int | None
    worker_prefetch: int | None
    worker_max_tasks_per_child: int | None
    worker_pool: str
    worker_shutdown_timeout: float
    worker_summary_interval: float
    beat_schedule: dict[str, ScheduleEntry]
    timezone: str
    enable_utc: bool

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        for name, (default, _check, _doc) in _SETTINGS.items():
            object.__setattr__(self, name, default)
        object.__setattr__(self, "_on_change", on_change)

    def __setattr__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def __repr__(self) -> str:
        changed = {k: getattr(self, k) for k in _SETTINGS if getattr(self, k) != _SETTINGS[k][0]}
        return f"<Settings {changed}>"

    def update(self, mapping: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Set several settings; all are validated before any is applied."""
        self._apply({**(mapping or {}), **kwargs}, {}, [])

    def _apply(self, items: Mapping[str, Any], labels: Mapping[str, str], found: list[str]) -> None:
        """Check every item (``labels``: how the user spelt a name, for errors),
        then apply all of them, or raise one error listing ``found`` and every
        problem."""
        problems = list(found)
        checked: dict[str, Any] = {}
        for name, value in items.items():
            entry = _SETTINGS.get(name)
            label = labels.get(name, name)
            if entry is None:
                why = _explain_unknown(name)
                problems.append(why if label == name else f"{label}: {why}")
                continue
            try:
                checked[name] = entry[1](label, value)
            except ConfigurationError as exc:
                problems.append(str(exc))
        if problems:
            raise _one_error(problems)
        previous = {name: getattr(self, name) for name in checked}
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        try:
            self._check_consistency()
        except ConfigurationError:
            for name, value in previous.items():
                object.__setattr__(self, name, value)
            raise
        on_change: Callable[[], None] | None = self.__dict__.get("_on_change")
        if on_change is not None:
            on_change()

    def _check_consistency(self) -> None:
        soft, hard = self.task_soft_time_limit, self.task_time_limit
        if soft is not None and hard is not None and soft >= hard:
            raise ConfigurationError(
                f"task_soft_time_limit ({soft:g}s) must be below task_time_limit ({hard:g}s)"
            )
        for ser in (self.task_serializer,):
            if ser not in self.accept_content:
                raise ConfigurationError(
                    f"task_serializer {ser!r} is not in accept_content "
                    f"{sorted(self.accept_content)}: workers would refuse every task"
                )

    # --- derived values -----------------------------------------------------

    @property
    def concurrency(self) -> int:
        return self.worker_concurrency or os.cpu_count() or 1

    @property
    def prefetch(self) -> int:
        return self.worker_prefetch or self.concurrency

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SETTINGS}

    @staticmethod
    def names() -> list[str]:
        return list(_SETTINGS)

    @staticmethod
    def describe(name: str) -> str:
        return _SETTINGS[name][2]

    # --- loading ------------------------------------------------------------

    def from_object(self, obj: object, namespace: str | None = None) -> None:
        """Load settings from a module, class, instance, dict or dotted path.

        Lower-case names are settings; imported modules, classes and functions
        are skipped. Celery's old upper-case names (``BROKER_URL``,
        ``CELERYD_CONCURRENCY``, ``CELERYBEAT_SCHEDULE``, ...: ``oldnames.py``)
        are mapped to their new names; an old name brokerd has no setting for,
        or an upper-case spelling of a new name (``TASK_ACKS_LATE``), is an
        error. With ``namespace="CELERY"`` (Django) the names read are
        ``CELERY_<NEW NAME>`` (``CELERY_TASK_ACKS_LATE`` -> ``task_acks_late``)
        and the old names; other upper-case names (``DEBUG``, ``DATABASES``)
        belong to the host framework and are left alone. Two names for one
        setting with different values are an error. Every problem is reported
        in one error, and nothing is applied unless all is valid.
        """
        if isinstance(obj, str):
            obj = load_object(obj)
        values, labels, problems = _collect(obj, namespace)
        self._apply(values, labels, problems)


def _collect(
    obj: object, namespace: str | None
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(setting -> value, setting -> the name the object used, problems)."""
    if isinstance(obj, Mapping):
        items = [(str(k), v) for k, v in obj.items()]
    else:
        items = [(k, getattr(obj, k)) for k in dir(obj) if not k.startswith("_")]
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    problems: list[str] = []
    prefix = f"{namespace}_" if namespace else None
    for key, value in items:
        if key.startswith("_"):
            continue
        if not isinstance(obj, Mapping) and _is_code(value):
            continue
        name = _setting_name(key, prefix)
        if name is None:
            continue
        label = name if name == key else f"{key} ({name})"
        refused = _refusal(key, name, prefix)
        if refused is not None:
            problems.append(refused)
            continue
        if name in values:
            if not _same(values[name], value):
                problems.append(
                    f"{name!r} is set twice with different values, as {labels[name]!r} and "
                    f"{key!r}; keep one"
                )
            continue
        values[name] = value
        labels[name] = label
    return values, labels, problems


def _setting_name(key: str, prefix: str | None) -> str | None:
    """The setting ``key`` names, or None for a name that is not ours."""
    if key in OLD_NAMES:
        return OLD_NAMES[key]
    if prefix is not None and key.startswith(prefix):
        return key[len(prefix) :].lower()
    if key.islower() or not any(c.isalpha() for c in key):
        return None if prefix is not None else key
    if looks_old(key) or (prefix is None and key.lower() in _SETTINGS):
        # An old name without a new one here, or TASK_ACKS_LATE: refused by the caller.
        return key.lower()
    return None


def _refusal(key: str, name: str, prefix: str | None) -> str | None:
    """Why ``key`` (read as setting ``name``) is refused, or None. A lower-case
    name unknown here is left to ``_apply``, which explains it the same way
    whichever way it was set."""
    if name == key:
        return None
    if prefix is None and key not in OLD_NAMES and not looks_old(key):
        return (
            f"upper-case setting {key!r}: write {name!r}, or load with "
            "config_from_object(obj, namespace=...)"
        )
    if name in _SETTINGS or name in _CELERY_ONLY:
        return None
    close = difflib.get_close_matches(name, _SETTINGS, n=1, cutoff=0.75)
    if close:
        return f"unknown setting {key!r} (read as {name!r}); did you mean {close[0]!r}?"
    if looks_old(key):
        return f"old Celery setting {key!r} has no equivalent in brokerd; remove it"
    return f"unknown setting {key!r} (read as {name!r})"


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _is_code(value: object) -> bool:
    """Names a config module imports rather than defines as settings."""
    return isinstance(value, ModuleType) or inspect.isclass(value) or inspect.isroutine(value)


def load_object(path: str) -> Any:
    """Import ``"pkg.module"`` or ``"pkg.module:attr"`` (also ``"pkg.module.attr"``)."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if attr or "." not in module_name or exc.name != module_name:
            raise
        # "pkg.module.attr" form: import the parent and take the attribute.
        parent, _, attr = module_name.rpartition(".")
        module = importlib.import_module(parent)
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigurationError(f"{module.__name__!r} has no attribute {attr!r}") from None
