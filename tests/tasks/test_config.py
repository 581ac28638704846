"""Settings are validated when set: unknown or invalid names are errors that
name the setting, never silent defaults."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

from brokerd_client.tasks import App, ConfigurationError, Queue, crontab

sys.path.insert(0, str(Path(__file__).parent / "apps"))


def test_defaults_follow_celery_and_the_issue() -> None:
    conf = App("t").conf
    assert conf.task_acks_late is True
    assert conf.result_expires == 86400.0
    assert conf.task_serializer == "json"
    assert conf.accept_content == frozenset({"json"})
    assert conf.task_track_started is False
    assert conf.worker_prefetch is None
    assert conf.prefetch == conf.concurrency  # no hoarding behind long tasks
    assert conf.task_max_decompressed_size == 16 * 1024 * 1024  # the default frame limit


def test_config_from_dotted_module_skips_imported_names() -> None:
    app = App("t")
    app.config_from_object("cfg.good")
    conf = app.conf
    assert conf.task_serializer == "msgpack"
    assert conf.accept_content == frozenset({"json", "msgpack"})
    assert conf.result_expires == 7200.0
    assert [q.name for q in conf.task_queues] == ["default", "web_tasks"]
    assert conf.task_routes == (("proj.web.*", {"routing_key": "web.sms"}),)
    assert conf.beat_schedule["add"].spec == "every 10"
    assert conf.beat_schedule["add"].args == (16, 16)
    assert conf.beat_schedule["nightly"].spec == "cron 0 3 * * *"


def test_unknown_setting_names_it_and_suggests() -> None:
    with pytest.raises(
        ConfigurationError, match=r"unknown setting 'task_acks_lates'.*task_acks_late"
    ):
        App("t").config_from_object("cfg.typo")
    with pytest.raises(ConfigurationError, match="'task_rutes'"):
        App("t", task_rutes={})


@pytest.mark.parametrize(
    "settings",
    [
        {"task_serializer": "pickle"},
        {"result_serializer": "pickle"},
        {"accept_content": ["json", "pickle"]},
        {"accept_content": ["application/x-python-serialize"]},
    ],
)
def test_pickle_is_refused_everywhere(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="pickle is refused"):
        App("t", **settings)


def test_pickle_in_a_config_module_is_refused_at_load() -> None:
    with pytest.raises(ConfigurationError, match="accept_content: pickle is refused"):
        App("t").config_from_object("cfg.pickled")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"task_acks_late": "yes"}, "task_acks_late must be True or False"),
        ({"result_expires": -1}, "result_expires must be a finite number of seconds"),
        ({"result_expires": "1d"}, "result_expires must be a number of seconds"),
        ({"task_serializer": "yaml"}, "task_serializer must be 'json' or 'msgpack'"),
        ({"task_compression": "bz2"}, "task_compression must be None or 'zlib'"),
        ({"task_max_decompressed_size": 100}, "task_max_decompressed_size must be an int"),
        ({"task_max_decompressed_size": 2**31}, r"within 1024\.\.1073741824"),
        ({"task_max_decompressed_size": 1e6}, "task_max_decompressed_size must be an int"),
        ({"task_default_exchange_type": "fanout"}, "task_default_exchange_type must be one of"),
        ({"worker_concurrency": 0}, "worker_concurrency must be a positive int"),
        ({"worker_pool": "gevent"}, "worker_pool must be one of"),
        ({"task_queues": ["default"]}, "task_queues items must be"),
        ({"task_routes": {"a.*": {"queues": "x"}}}, r"unknown keys \['queues'\]"),
        ({"beat_schedule": {"x": {"task": "t"}}}, "'schedule' is required"),
        ({"beat_schedule": {"x": {"task": "t", "schedule": 10, "relative": True}}}, "unknown keys"),
        ({"timezone": "Mars/Olympus_Mons"}, "not a known time zone"),
        ({"timezone": 8}, "must be a time zone name"),
        ({"enable_utc": False}, "message times are always UTC"),
        ({"broker_url": "amqp://guest@localhost//"}, "broker_url"),
        ({"task_serializer": "msgpack"}, "not in accept_content"),
        ({"task_time_limit": 5, "task_soft_time_limit": 10}, "must be below task_time_limit"),
    ],
)
def test_invalid_values_are_errors_naming_the_setting(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        App("t", **settings)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("result_backend", "stores results itself"),
        ("broker_transport_options", "visibility_timeout"),
        ("worker_prefetch_multiplier", "use worker_prefetch"),
    ],
)
def test_celery_only_settings_explain_what_to_do(name: str, hint: str) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        App("t").config_from_object({name: "x"})


def test_old_style_upper_case_settings_are_mapped_not_ignored() -> None:
    app = App("t", accept_content=["json", "msgpack"])
    app.config_from_object({"CELERY_TASK_SERIALIZER": "msgpack"})
    assert app.conf.task_serializer == "msgpack"
    app = App("t")
    app.config_from_object("cfg.oldstyle")
    assert app.conf.task_serializer == "json"


class _Tutorial:
    """The old names the issue's tutorial lost, as a Celery 3 config wrote them."""

    BROKER_URL = "brokerd://broker.example:5673"
    CELERYD_CONCURRENCY = 3
    CELERYD_TASK_TIME_LIMIT = 30
    CELERYD_TASK_SOFT_TIME_LIMIT = 20
    CELERYBEAT_SCHEDULE = {"tick": {"task": "proj.tick", "schedule": 10}}
    CELERY_TASK_SERIALIZER = "json"
    CELERY_ALWAYS_EAGER = False
    CELERY_TASK_RESULT_EXPIRES = 600
    DEBUG = True  # the host framework's: left alone


@pytest.mark.parametrize("namespace", [None, "CELERY"])
def test_celery_3_names_are_mapped_as_celery_5_maps_them(namespace: str | None) -> None:
    app = App("t")
    app.config_from_object(_Tutorial, namespace=namespace)
    conf = app.conf
    assert conf.broker_url == "brokerd://broker.example:5673"
    assert conf.worker_concurrency == 3
    assert conf.task_time_limit == 30.0
    assert conf.task_soft_time_limit == 20.0
    assert conf.beat_schedule["tick"].spec == "every 10"
    assert conf.task_always_eager is False
    assert conf.result_expires == 600.0


def test_every_old_name_maps_to_a_setting_brokerd_has_or_refuses_with_a_reason() -> None:
    from brokerd_client.tasks.config import _CELERY_ONLY, Settings
    from brokerd_client.tasks.oldnames import OLD_NAMES

    known = set(Settings.names()) | set(_CELERY_ONLY)
    assert {new for new in OLD_NAMES.values() if new not in known} == set()


@pytest.mark.parametrize("namespace", [None, "CELERY"])
@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("CELERY_REDIS_HOST", "old Celery setting 'CELERY_REDIS_HOST' has no equivalent"),
        ("CELERYD_AUTOSCALER", "old Celery setting 'CELERYD_AUTOSCALER' has no equivalent"),
        ("BROKER_POOL_LIMIT", "old Celery setting 'BROKER_POOL_LIMIT' has no equivalent"),
        ("CELERY_RESULT_BACKEND", "CELERY_RESULT_BACKEND.*stores results itself"),
        ("CELERYD_PREFETCH_MULTIPLIER", "CELERYD_PREFETCH_MULTIPLIER.*use worker_prefetch"),
    ],
)
def test_old_names_without_an_equivalent_are_refused_not_dropped(
    namespace: str | None, key: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        App("t").config_from_object({key: "x"}, namespace=namespace)


def test_every_problem_of_a_config_is_reported_in_one_error() -> None:
    config = {
        "CELERY_RESULT_BACKEND": "redis://",
        "CELERY_REDIS_HOST": "localhost",
        "CELERYD_PREFETCH_MULTIPLIER": 1,
        "task_acks_lates": True,
        "result_expires": "soon",
        "task_serializer": "pickle",
        "worker_concurrency": 4,  # valid, yet not applied: the load is all or nothing
    }
    app = App("t")
    with pytest.raises(ConfigurationError) as info:
        app.config_from_object(config)
    text = str(info.value)
    assert text.startswith("6 settings are refused:")
    for part in (
        "CELERY_RESULT_BACKEND",
        "CELERY_REDIS_HOST",
        "CELERYD_PREFETCH_MULTIPLIER",
        "did you mean 'task_acks_late'",
        "result_expires must be",
        "pickle is refused",
    ):
        assert part in text
    assert app.conf.worker_concurrency is None
    with pytest.raises(ConfigurationError, match="2 settings are refused"):
        App("t", task_acks_lates=True, worker_pool="gevent")


def test_one_setting_under_two_names_must_agree() -> None:
    app = App("t")
    app.config_from_object({"BROKER_URL": "brokerd://a:1", "broker_url": "brokerd://a:1"})
    assert app.conf.broker_url == "brokerd://a:1"
    with pytest.raises(ConfigurationError, match="'broker_url' is set twice"):
        App("t").config_from_object({"BROKER_URL": "brokerd://a:1", "broker_url": "brokerd://b:1"})


def test_an_upper_case_new_name_without_a_namespace_names_the_spelling() -> None:
    with pytest.raises(ConfigurationError, match="write 'task_acks_late'"):
        App("t").config_from_object({"TASK_ACKS_LATE": False})


def test_a_failed_consistency_check_changes_nothing() -> None:
    app = App("t", task_time_limit=10)
    with pytest.raises(ConfigurationError, match="must be below"):
        app.conf.update(task_soft_time_limit=20, worker_concurrency=2)
    assert app.conf.task_soft_time_limit is None
    assert app.conf.worker_concurrency is None


def test_namespace_reads_prefixed_upper_case_names() -> None:
    class DjangoSettings:
        CELERY_TASK_ACKS_LATE = False
        CELERY_RESULT_EXPIRES = 60
        DEBUG = True  # not ours: ignored

    app = App("t")
    app.config_from_object(DjangoSettings, namespace="CELERY")
    assert app.conf.task_acks_late is False
    assert app.conf.result_expires == 60.0


def test_namespace_ignores_a_typo_nowhere() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'task_acks_late'"):
        App("t").config_from_object({"CELERY_TASK_ACKS_LATES": True}, namespace="CELERY")


def test_update_is_all_or_nothing_and_assignment_validates() -> None:
    app = App("t")
    with pytest.raises(ConfigurationError):
        app.conf.update(task_acks_late=False, task_serializer="pickle")
    assert app.conf.task_acks_late is True
    with pytest.raises(ConfigurationError):
        app.conf.result_expires = "soon"
    app.conf.result_expires = timedelta(minutes=5)
    assert app.conf.result_expires == 300.0


def test_queue_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="lease"):
        Queue("q", lease=0)
    with pytest.raises(ValueError, match="max_deliveries"):
        Queue("q", max_deliveries=0)
    for bad in (0, 256, True, 2.0):
        with pytest.raises(ValueError, match="max_priority must be an int from 1 to 255"):
            Queue("q", max_priority=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="listed twice"):
        App("t", task_queues=[Queue("a"), Queue("a")])


def test_a_crontab_in_beat_schedule_becomes_a_cron_spec() -> None:
    app = App("t", beat_schedule={"c": {"task": "t", "schedule": crontab(minute="*/15")}})
    assert app.conf.beat_schedule["c"].spec == "cron */15 * * * *"


def test_the_ported_config_of_the_docs_loads_and_routes() -> None:
    from brokerd_client.tasks.routing import Route

    app = App("proj")
    app.config_from_object("cfg.ported")
    assert app.conf.prefetch == 4
    assert app.router.route("proj.web.tasks.send") == Route("tasks", "web.sms", "web_tasks")
    assert app.router.route("proj.orders.tasks.add") == Route("", "default", "default")
    assert app.conf.beat_schedule["nightly-report"].spec == "cron 0 3 * * *"


@pytest.mark.parametrize("route", [{"queue": ""}, ""])
def test_a_route_to_an_empty_queue_name_is_refused(route: object) -> None:
    with pytest.raises(ConfigurationError, match="queue must not be empty"):
        App("t", task_routes={"a.*": route})


def test_celerys_prefork_pool_name_is_the_processes_pool() -> None:
    assert App("t", worker_pool="prefork").conf.worker_pool == "processes"
    app = App("t")
    app.config_from_object({"CELERYD_POOL": "prefork"})
    assert app.conf.worker_pool == "processes"
