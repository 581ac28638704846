"""The ported config of docs/tasks.md, verbatim (kept loadable by a test)."""

from datetime import timedelta

from brokerd_client.tasks import Exchange, Queue, crontab

broker_url = "brokerd://localhost:5673"
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
task_acks_late = True
worker_prefetch = 4
task_default_queue = "default"
task_default_exchange = "tasks"
task_default_exchange_type = "topic"
task_default_routing_key = "task.default"
task_queues = [
    Queue("default", Exchange("tasks", type="topic"), routing_key="task.#"),
    Queue("web_tasks", Exchange("tasks", type="topic"), routing_key="web.#"),
]
task_routes = {"proj.web.tasks.*": {"queue": "web_tasks", "routing_key": "web.sms"}}
result_expires = timedelta(days=1)
beat_schedule = {
    "add-every-10s": {
        "task": "proj.orders.tasks.add",
        "schedule": timedelta(seconds=10),
        "args": (16, 16),
    },
    "nightly-report": {"task": "proj.orders.tasks.report", "schedule": crontab(minute=0, hour=3)},
}
