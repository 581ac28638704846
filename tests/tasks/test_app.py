"""App-level behaviour: autodiscovery, finding the app for -A, naming."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from brokerd_client.tasks import App, ConfigurationError
from brokerd_client.tasks.loader import find_app, load_app

APPS = Path(__file__).parent / "apps"
sys.path.insert(0, str(APPS))


def test_autodiscover_imports_each_packages_tasks_module() -> None:
    app = find_app("discover_pkg.app")
    assert "discover_pkg.orders.tasks.place" not in app.tasks
    app.import_modules()  # what the worker does at start-up
    assert "discover_pkg.orders.tasks.place" in app.tasks


def test_find_app_takes_a_module_or_a_module_and_attribute() -> None:
    import e2eapp

    assert find_app("e2eapp") is e2eapp.app
    assert find_app("e2eapp:app") is e2eapp.app
    with pytest.raises(ConfigurationError, match="has no"):
        find_app("e2eapp:nope")
    with pytest.raises(ConfigurationError, match="not an App"):
        find_app("e2eapp:mark")
    with pytest.raises(ModuleNotFoundError):
        find_app("no_such_module_here")


def test_load_app_sets_the_broker_imports_the_tasks_then_applies_command_line_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "loadapp_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from brokerd_client.tasks import App\n"
        "app = App('loadapp', include=['loadapp_pkg.tasks'])\n"
    )
    (pkg / "tasks.py").write_text(
        "from loadapp_pkg import app\n"
        "app.conf.update(task_max_decompressed_size=2048)\n"
        "@app.task(name='loadapp.t')\n"
        "def t() -> None: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = load_app("loadapp_pkg", None, task_max_decompressed_size=None)
    assert "loadapp.t" in app.tasks
    assert app.conf.task_max_decompressed_size == 2048  # not given: the app's own
    assert load_app("loadapp_pkg", "brokerd://127.0.0.1:9", task_max_decompressed_size=4096) is app
    assert app.broker_url == "brokerd://127.0.0.1:9"
    assert app.conf.task_max_decompressed_size == 4096  # given: over the task module's


def test_two_functions_cannot_share_a_name() -> None:
    app = App("dup")
    app.task(name="same")(lambda: 1)

    def other() -> int:
        return 2

    with pytest.raises(ConfigurationError, match="two different functions"):
        app.task(name="same")(other)


def test_worker_module_entry_points_exist() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "brokerd_client.worker", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in ("-A", "--loglevel", "--concurrency", "--queues", "--pool", "processes"):
        assert flag in out.stdout
    script = Path(sys.executable).parent / "brokerd-worker"
    if script.exists():
        assert (
            "--pool"
            in subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout
        )
