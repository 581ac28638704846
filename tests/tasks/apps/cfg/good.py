"""A Celery-style config module: lower-case settings plus imported helpers."""

from datetime import timedelta

from brokerd_client.tasks import Queue, crontab

task_serializer = "msgpack"
accept_content = ["json", "msgpack"]
task_queues = [Queue("default", routing_key="task.#"), Queue("web_tasks", routing_key="web.#")]
task_default_queue = "default"
task_default_exchange = "tasks"
task_default_exchange_type = "topic"
task_routes = {"proj.web.*": {"routing_key": "web.sms"}}
result_expires = timedelta(hours=2)
beat_schedule = {
    "add": {"task": "proj.tasks.add", "schedule": timedelta(seconds=10), "args": (16, 16)},
    "nightly": {"task": "proj.tasks.report", "schedule": crontab(minute=0, hour=3)},
}
