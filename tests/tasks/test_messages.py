"""The task message contract (what workers, revocation and schedules rely on)
and how a stored error becomes an exception again."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from brokerd_client.tasks import App, RemoteTaskError, TimeLimitExceeded
from brokerd_client.tasks.outcome import ExcInfo
from brokerd_client.tasks.producer import build_message
from brokerd_client.tasks.result import rebuild_exception


def make_app(**settings: object) -> App:
    app = App("msg", task_routes={"msg.web.*": "web"}, **settings)

    @app.task(name="msg.add", ignore_result=True, time_limit=30)
    def add(x: int, y: int) -> int:
        return x + y

    return app


def test_a_message_carries_the_task_headers_and_properties() -> None:
    app = make_app()
    tm = build_message(
        app,
        app.router,
        "msg.add",
        (1, 2),
        {"z": 3},
        {"task_id": "abc", "countdown": 2},
        app.tasks["msg.add"],
    )
    m = tm.message
    assert tm.task_id == "abc" and m.message_id == "abc" and m.mandatory
    assert (m.exchange, m.routing_key) == ("", "celery")
    assert m.body == b'{"args":[1,2],"kwargs":{"z":3}}'
    assert m.delay == 2.0 and m.not_before is None
    assert m.headers == {
        "task": "msg.add",
        "id": "abc",
        "retries": 0,
        "content-type": "application/json",
        "ignore_result": True,
    }
    assert m.props()["delay"] == 2.0


def test_eta_expires_compression_and_routes_land_in_the_message() -> None:
    app = make_app(task_compression="zlib", task_serializer="msgpack", accept_content=["msgpack"])
    eta = datetime.now(UTC) + timedelta(minutes=5)
    before = time.time()
    tm = build_message(
        app, app.router, "msg.web.send", [], {}, {"eta": eta, "expires": 60, "priority": 7}, None
    )
    m = tm.message
    assert (m.exchange, m.routing_key, tm.route.queue) == ("", "web", "web")
    assert m.not_before == eta.timestamp()
    assert m.priority == 7
    headers = dict(m.headers or {})
    assert headers["content-type"] == "application/x-msgpack"
    assert headers["compression"] == "zlib"
    assert before + 60 <= float(headers["expires"]) <= time.time() + 60  # type: ignore[arg-type]


def test_bad_send_options_are_refused() -> None:
    app = make_app()
    with pytest.raises(ValueError, match="either countdown or eta"):
        build_message(app, app.router, "x", [], {}, {"countdown": 1, "eta": time.time()}, None)
    with pytest.raises(ValueError, match="timezone-aware"):
        build_message(app, app.router, "x", [], {}, {"eta": datetime.now()}, None)


@pytest.mark.parametrize("eta", [float("inf"), float("-inf"), float("nan")])
def test_an_eta_that_is_no_finite_time_is_refused_when_the_message_is_built(eta: float) -> None:
    # Refused in delay() itself, where the caller sees it: a task sending it
    # from a worker would otherwise fail only when the worker publishes it.
    app = make_app()
    with pytest.raises(ValueError, match="eta must be finite"):
        build_message(app, app.router, "x", [], {}, {"eta": eta}, None)


def test_builtin_errors_come_back_as_themselves_with_the_remote_traceback() -> None:
    exc = rebuild_exception(ExcInfo("ValueError", "builtins", "bad value", "Traceback: here"))
    assert type(exc) is ValueError and str(exc) == "bad value"
    assert exc.remote_traceback == "Traceback: here"  # type: ignore[attr-defined]
    assert any("Traceback: here" in note for note in exc.__notes__)
    ours = rebuild_exception(
        ExcInfo("TimeLimitExceeded", "brokerd_client.tasks.exceptions", "hard limit", "")
    )
    assert isinstance(ours, TimeLimitExceeded)


def test_unknown_error_types_are_never_imported() -> None:
    exc = rebuild_exception(ExcInfo("Boom", "os.system", "x", "tb"))
    assert isinstance(exc, RemoteTaskError)
    assert type(exc).__name__ == "Boom"
    assert (exc.exc_type, exc.exc_module) == ("Boom", "os.system")
    odd = rebuild_exception(ExcInfo("not an identifier", "builtins", "x", ""))
    assert isinstance(odd, RemoteTaskError)


def test_a_key_error_comes_back_with_its_key_not_quoted_twice() -> None:
    try:
        {}["mobile"]
    except KeyError as exc:
        original = exc
    rebuilt = rebuild_exception(ExcInfo.from_exception(original))
    assert type(rebuilt) is KeyError
    assert rebuilt.args == ("mobile",) and str(rebuilt) == str(original) == "'mobile'"
