"""A small Celery project run by real ``celery worker`` processes in the tests."""

from .celery import app

__all__ = ["app"]
