"""Routing: call options > task options > task_routes (first glob) > defaults,
and queue bindings turned into publishable addresses."""

from __future__ import annotations

import pytest

from brokerd_client.tasks import App, ConfigurationError, Exchange, Queue
from brokerd_client.tasks.routing import Route


def topic_app(**extra: object) -> App:
    return App(
        "t",
        task_default_queue="default",
        task_default_exchange="tasks",
        task_default_exchange_type="topic",
        task_queues=[
            Queue("default", routing_key="task.#"),
            Queue("web_tasks", routing_key="web.#"),
            Queue("direct_q", exchange=Exchange("jobs", "direct"), routing_key="jobs.run"),
        ],
        task_routes={
            "proj.web.*": {"routing_key": "web.sms"},
            "proj.reports.*": "direct_q",
            "proj.*": {"queue": "default", "priority": 3},
        },
        **extra,
    )


def test_globs_are_tried_in_order() -> None:
    router = topic_app().router
    assert router.route("proj.web.send") == Route("tasks", "web.sms", None)
    assert router.route("proj.reports.daily") == Route("jobs", "jobs.run", "direct_q")
    # default is bound with a pattern: publish straight to the queue by name.
    assert router.route("proj.other") == Route("", "default", "default", 3)


def test_unrouted_tasks_go_to_the_default_queue() -> None:
    assert topic_app().router.route("elsewhere.task") == Route("", "default", "default")
    assert App("t").router.route("x") == Route("", "celery", "celery")


def test_call_options_beat_task_options_which_beat_routes() -> None:
    router = topic_app().router
    by_task = router.route("proj.web.send", task_options={"queue": "direct_q"})
    assert by_task == Route("jobs", "jobs.run", "direct_q")
    by_call = router.route("proj.web.send", queue="web_tasks", task_options={"queue": "direct_q"})
    assert by_call == Route("", "web_tasks", "web_tasks")
    by_key = router.route("proj.other", routing_key="web.push")
    assert by_key == Route("tasks", "web.push", None)


def test_queue_with_explicit_routing_key_uses_its_exchange() -> None:
    router = topic_app().router
    assert router.route("x", queue="web_tasks", routing_key="web.a") == Route(
        "tasks", "web.a", "web_tasks"
    )


def test_the_topology_binds_each_queue_to_its_exchange() -> None:
    topo = topic_app().router.topology
    default = topo.queue("default")
    binding = topo.binding_of(default)
    assert binding is not None and (binding.exchange, binding.routing_key) == ("tasks", "task.#")
    assert topo.exchange_of(default) == Exchange("tasks", "topic")
    assert topo.exchange_of(topo.queue("direct_q")) == Exchange("jobs", "direct")
    assert topo.lease_of(default) == 30.0


def test_default_exchange_queues_need_no_binding() -> None:
    topo = App("t", task_queues=[Queue("a", lease=2.5)]).router.topology
    q = topo.queue("a")
    assert topo.binding_of(q) is None
    assert topo.address(q) == ("", "a")
    assert topo.lease_of(q) == 2.5


def test_missing_queues_are_created_unless_disabled() -> None:
    assert App("t").router.route("x", queue="adhoc") == Route("", "adhoc", "adhoc")
    app = App("t", task_create_missing_queues=False)
    with pytest.raises(ConfigurationError, match="'adhoc' is not in task_queues"):
        app.router.route("x", queue="adhoc")


def test_router_follows_configuration_changes() -> None:
    app = App("t")
    assert app.router.route("a.b").queue == "celery"
    app.conf.update(task_routes={"a.*": "other"})
    assert app.router.route("a.b").queue == "other"
