"""The web tasks of the tutorial project: routed to the ``web`` queue by name."""

from __future__ import annotations

from celery import shared_task

from ..runs import record


@shared_task(name="web.render")
def render(tag: str) -> str:
    record("web", tag)
    return f"<p>{tag}</p>"


@shared_task(name="web.ping")
def ping(tag: str, page: str = "") -> str:
    record("ping", tag, page)
    return page
