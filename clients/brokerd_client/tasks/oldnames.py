"""Celery's pre-4.0 upper-case setting names and the lower-case names they became.

Why a table and not a rule: the renaming is irregular (``CELERYD_TASK_TIME_LIMIT``
became ``task_time_limit``, ``CELERY_ALWAYS_EAGER`` ``task_always_eager``,
``CELERY_TASK_RESULT_EXPIRES`` ``result_expires``), so guessing by prefix would map
some names to settings that do not exist, and the whole point is that no
setting is dropped or misread without a word. The names are those of Celery 5's
documented old-to-new table; where Celery 3 spelt a setting differently from
that table (``CELERYD_TASK_TIME_LIMIT`` there, ``CELERYD_TIME_LIMIT`` in the
table) both spellings are listed.

Only names whose new setting brokerd knows (or refuses with a reason, see
``config._CELERY_ONLY``) are listed; any other name with an old prefix is
refused as an old Celery setting brokerd does not support.
"""

from __future__ import annotations

from typing import Final

__all__ = ["OLD_NAMES", "OLD_PREFIXES", "looks_old"]

#: Prefixes of Celery's old setting names.
OLD_PREFIXES: Final = ("CELERY_", "CELERYD_", "CELERYBEAT_", "BROKER_")

#: old upper-case name -> new lower-case name.
OLD_NAMES: Final[dict[str, str]] = {
    # broker
    "BROKER_URL": "broker_url",
    "BROKER_USE_SSL": "broker_use_ssl",
    "BROKER_CONNECTION_TIMEOUT": "broker_connection_timeout",
    "BROKER_CONNECTION_RETRY_ON_STARTUP": "broker_connection_retry_on_startup",
    "BROKER_HEARTBEAT": "broker_heartbeat",
    "BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    # general
    "CELERY_IMPORTS": "imports",
    "CELERY_INCLUDE": "include",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    # routing
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_DEFAULT_EXCHANGE": "task_default_exchange",
    "CELERY_DEFAULT_EXCHANGE_TYPE": "task_default_exchange_type",
    "CELERY_DEFAULT_ROUTING_KEY": "task_default_routing_key",
    "CELERY_DEFAULT_PRIORITY": "task_default_priority",
    "CELERY_QUEUES": "task_queues",
    "CELERY_ROUTES": "task_routes",
    "CELERY_CREATE_MISSING_QUEUES": "task_create_missing_queues",
    # messages and results
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_MESSAGE_COMPRESSION": "task_compression",
    "CELERY_COMPRESSION": "task_compression",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_RESULT_EXPIRES": "result_expires",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERY_STORE_ERRORS_EVEN_IF_IGNORED": "task_store_errors_even_if_ignored",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERY_TASK_TRACK_STARTED": "task_track_started",
    "CELERY_RESULT_BACKEND": "result_backend",
    # execution
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_ACKS_ON_FAILURE_OR_TIMEOUT": "task_acks_on_failure_or_timeout",
    "CELERY_TASK_REJECT_ON_WORKER_LOST": "task_reject_on_worker_lost",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_TASK_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_EAGER_PROPAGATES": "task_eager_propagates",
    "CELERY_ANNOTATIONS": "task_annotations",
    "CELERY_DEFAULT_RATE_LIMIT": "task_default_rate_limit",
    "CELERY_SEND_TASK_SENT_EVENT": "task_send_sent_event",
    "CELERY_SEND_SENT_EVENT": "task_send_sent_event",
    # worker
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
    "CELERYD_POOL": "worker_pool",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERY_DISABLE_RATE_LIMITS": "worker_disable_rate_limits",
    "CELERY_SEND_EVENTS": "worker_send_task_events",
    "CELERY_EVENT_SERIALIZER": "event_serializer",
    # beat
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERYBEAT_SCHEDULER": "beat_scheduler",
    "CELERYBEAT_MAX_LOOP_INTERVAL": "beat_max_loop_interval",
}


def looks_old(name: str) -> bool:
    """True for a name with one of Celery's old prefixes (listed or not)."""
    return name.startswith(OLD_PREFIXES)
