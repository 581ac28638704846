"""Settings of the tutorial project (``app.config_from_object``).

The URLs come from the environment, as a deployed project's would; the tests
point them at their own brokerd.
"""

from __future__ import annotations

import os

from kombu import Exchange, Queue

broker_url = os.environ.get("TUTORIAL_BROKER_URL", "brokerd://127.0.0.1:5673")
result_backend = os.environ.get("TUTORIAL_RESULT_BACKEND", broker_url)

task_serializer = "msgpack"
result_serializer = "msgpack"
accept_content = ["msgpack", "json"]
task_compression = "zlib"
result_extended = True

task_acks_late = True
worker_prefetch_multiplier = 1
task_time_limit = 30
task_soft_time_limit = 20

jobs = Exchange("jobs", type="topic", durable=True)
task_default_exchange = "jobs"
task_default_exchange_type = "topic"
task_default_queue = "tasks"
task_default_routing_key = "task.default"
task_queues = (
    Queue("tasks", jobs, routing_key="task.#"),
    Queue("web", jobs, routing_key="web.#"),
)
task_routes = {"web.*": {"queue": "web", "routing_key": "web.render"}}

beat_schedule = {
    "heartbeat-every-second": {
        "task": "orders.heartbeat",
        "schedule": 1.0,
        "args": ("beat-1s", 7),
    },
    "web-ping-every-two-seconds": {
        "task": "web.ping",
        "schedule": 2.0,
        "args": ("beat-2s",),
        "kwargs": {"page": "home"},
    },
}
