"""The Celery app: configured from an object, tasks found by autodiscovery."""

from __future__ import annotations

import os

from celery import Celery

import brokerd_client.celery  # noqa: F401  (registers brokerd:// with kombu)


def make_app(broker_url: str | None = None) -> Celery:
    app = Celery("proj")
    app.config_from_object("proj.celeryconfig")
    app.conf.broker_url = broker_url or os.environ.get("BROKERD_TEST_URL", "brokerd://127.0.0.1")
    app.autodiscover_tasks(["proj.jobs"])
    return app


app = make_app()
