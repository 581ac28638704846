"""Eager mode and direct calls: tasks run in-process with the worker's rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from brokerd_client.tasks import App, EagerResult, MaxRetriesExceededError, states
from brokerd_client.tasks.testing import eager


def make_app() -> App:
    app = App("eager", task_always_eager=True)
    calls: list[int] = []

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="flaky", bind=True, max_retries=2, autoretry_for=(ConnectionError,))
    def flaky(self: Any) -> int:
        calls.append(self.request.retries)
        if self.request.retries < 2:
            raise ConnectionError("down")
        return self.request.retries

    @app.task(name="always_down", max_retries=1, autoretry_for=(ConnectionError,))
    def always_down() -> None:
        raise ConnectionError("still down")

    @app.task(name="boom")
    def boom() -> None:
        raise KeyError("nope")

    @app.task(name="aadd")
    async def aadd(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    @app.task(name="gives_up", bind=True, max_retries=0)
    def gives_up(self: Any) -> None:
        raise self.retry()

    app.calls = calls  # type: ignore[attr-defined]
    return app


def test_delay_runs_in_process_and_returns_an_eager_result() -> None:
    app = make_app()
    result = app.tasks["add"].delay(2, 3)
    assert isinstance(result, EagerResult)
    assert (result.get(), result.state, result.ready(), result.successful()) == (
        5,
        "SUCCESS",
        True,
        True,
    )
    assert app.send_task("add", (1, 1)).get() == 2


def test_retries_run_at_once_then_succeed() -> None:
    app = make_app()
    assert app.tasks["flaky"].delay().get() == 2
    assert app.calls == [0, 1, 2]  # type: ignore[attr-defined]


def test_failures_are_stored_and_reraised_by_get() -> None:
    app = make_app()
    result = app.tasks["boom"].delay()
    assert result.state == states.FAILURE and result.failed()
    assert isinstance(result.result, KeyError)
    assert "raise KeyError" in (result.traceback or "")
    with pytest.raises(KeyError):
        result.get()
    assert isinstance(result.get(propagate=False), KeyError)
    after_retries = app.tasks["always_down"].delay()
    assert isinstance(after_retries.result, ConnectionError)
    assert isinstance(app.tasks["gives_up"].delay().result, MaxRetriesExceededError)


def test_eager_mode_propagates_exceptions_when_asked() -> None:
    app = make_app()
    app.conf.task_eager_propagates = True
    with pytest.raises(KeyError):
        app.tasks["boom"].delay()


def test_arguments_go_through_the_serializer() -> None:
    app = make_app()
    with pytest.raises(TypeError):
        app.tasks["add"].delay(object(), 1)


def test_async_tasks_run_in_eager_mode() -> None:
    app = make_app()
    assert app.tasks["aadd"].delay(1, 2).get() == 3

    async def from_a_loop() -> int:
        result = await app.tasks["aadd"].adelay(2, 2)
        value: int = await result.wait()
        return value

    assert asyncio.run(from_a_loop()) == 4


def test_calling_the_task_runs_the_function() -> None:
    app = App("direct")

    @app.task(bind=True)
    def whoami(self: Any, x: int) -> tuple[str, int, bool]:
        return (self.name, x, self.request.called_directly)

    assert whoami(7) == ("test_eager.whoami", 7, True)  # type: ignore[call-arg]
    assert whoami.name == "test_eager.whoami"


def test_eager_helper_restores_settings() -> None:
    app = App("helper")

    @app.task
    def double(x: int) -> int:
        return 2 * x

    with eager(app):
        assert double.delay(4).get() == 8
    assert app.conf.task_always_eager is False


def test_unknown_task_options_are_errors() -> None:
    app = App("opts")
    with pytest.raises(TypeError, match="unknown options"):
        app.task(rate_limits="10/s")(lambda: None)
    with pytest.raises(ValueError, match="soft_time_limit must be below"):
        app.task(time_limit=1, soft_time_limit=2)(lambda: None)
    with pytest.raises(TypeError, match="unknown options"):
        App("x").send_task("t", bogus=1)
