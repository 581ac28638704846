"""Settings of the test project (``app.config_from_object``)."""

from __future__ import annotations

import os

from kombu import Exchange, Queue

jobs = Exchange("jobs", type="topic", durable=True)

task_serializer = "msgpack"
result_serializer = "msgpack"
accept_content = ["msgpack"]
task_compression = "zlib"
task_ignore_result = True
task_acks_late = True
task_time_limit = 60
task_soft_time_limit = 50
worker_prefetch_multiplier = 1
worker_hijack_root_logger = False
broker_connection_retry_on_startup = True

task_default_exchange = "jobs"
task_default_exchange_type = "topic"
task_default_queue = "tasks"
task_default_routing_key = "task.default"
task_queues = (
    Queue("tasks", jobs, routing_key="task.#"),
    Queue("web", jobs, routing_key="web.#"),
)
task_routes = {"web.*": {"exchange": "jobs", "routing_key": "web.render"}}

broker_transport_options: dict[str, object] = {}
if os.environ.get("BROKERD_TEST_LEASE"):
    broker_transport_options["lease"] = float(os.environ["BROKERD_TEST_LEASE"])
