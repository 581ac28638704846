"""A Celery project written as Celery's tutorials write one, run on brokerd.

Nothing in it is brokerd-specific except the two URLs in ``celeryconfig``:
the ``celery`` CLI (worker, beat) finds the ``brokerd://`` scheme by itself.
The test process, which sends tasks without the CLI, imports
``brokerd_client.celery`` once (the documented line, in tests/celery/conftest.py).
"""

from .celery import app

__all__ = ["app"]
