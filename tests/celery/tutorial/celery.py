"""The Celery app: configured from an object, tasks found by autodiscovery."""

from __future__ import annotations

from celery import Celery

app = Celery("tutorial")
app.config_from_object("tutorial.celeryconfig")
app.autodiscover_tasks(["tutorial.orders", "tutorial.web"])
