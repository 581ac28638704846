"""Finding the app named by ``-A module[:attr]``, as ``celery -A`` does, and
making it ready to run: what every command line (worker, its child
processes, beat) does before anything else."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from .app import App
from .exceptions import ConfigurationError

__all__ = ["find_app", "load_app"]


def _apps_in(module: ModuleType) -> list[App]:
    found: list[App] = []
    for value in vars(module).values():
        if isinstance(value, App) and value not in found:
            found.append(value)
    return found


def find_app(spec: str) -> App:
    """The :class:`App` for ``spec``: ``"proj.tasks:app"``, or ``"proj.tasks"``
    (its ``app`` or ``celery`` attribute, or its only App), or ``"proj"``
    (then also ``proj.celery`` and ``proj.tasks`` are tried). The current
    directory is put on ``sys.path`` first, as Celery does."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ConfigurationError(f"-A {spec!r}: give a module, e.g. -A proj.tasks")
    module = importlib.import_module(module_name)
    if attr:
        obj: object = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ConfigurationError(f"-A {spec!r}: {module_name} has no {attr!r}") from None
        if not isinstance(obj, App):
            raise ConfigurationError(f"-A {spec!r} is a {type(obj).__name__}, not an App")
        return obj
    candidates = [module]
    for sub in ("celery", "tasks"):
        if hasattr(module, "__path__"):
            try:
                candidates.append(importlib.import_module(f"{module_name}.{sub}"))
            except ModuleNotFoundError as exc:
                if exc.name != f"{module_name}.{sub}":
                    raise
    for mod in candidates:
        for name in ("app", "celery"):
            value = getattr(mod, name, None)
            if isinstance(value, App):
                return value
        apps = _apps_in(mod)
        if len(apps) == 1:
            return apps[0]
        if len(apps) > 1:
            raise ConfigurationError(
                f"-A {spec!r}: {mod.__name__} defines several apps; name one with -A "
                f"{mod.__name__}:<attribute>"
            )
    raise ConfigurationError(f"-A {spec!r}: no brokerd_client.tasks.App found in {module_name}")


def load_app(spec: str, broker: str | None = None, **options: Any) -> App:
    """The app ``spec`` names (:func:`find_app`), ready to run.

    ``broker`` (a ``-b`` option) replaces its ``broker_url`` before anything
    else; then its task modules are imported, so every task is registered;
    then the settings given as command-line ``options`` (``None``: not given)
    are applied over whatever those modules set, so a worker and its child
    processes end with the same values.
    """
    app = find_app(spec)
    if broker:
        app.conf.update(broker_url=broker)
    app.import_modules()
    given = {name: value for name, value in options.items() if value is not None}
    if given:
        app.conf.update(given)
    return app
