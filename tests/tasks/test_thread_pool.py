"""The thread pool runs plain tasks and encodes their results off the loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from brokerd_client.tasks import App, states
from brokerd_client.tasks.message import TaskHeaders
from brokerd_client.tasks.outcome import Outcome
from brokerd_client.tasks.request import Request
from brokerd_client.tasks.serialization import decode_result
from brokerd_client.tasks.worker.job import Job
from brokerd_client.tasks.worker.threads import ThreadRunner

app = App("threadpool")
encoded_on: list[str] = []


class Traced(list[int]):
    """A result whose json encoding notes the thread it happens on."""

    def __iter__(self) -> Any:
        encoded_on.append(threading.current_thread().name)
        return super().__iter__()


@app.task(name="tp.big")
def big() -> list[int]:
    return Traced(range(3))


@app.task(name="tp.bad")
def bad() -> object:
    return object()


async def run(name: str) -> Outcome:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Outcome] = loop.create_future()
    runner = ThreadRunner(loop, 1, lambda job, outcome: done.set_result(outcome), "json")
    job = Job(None, None, app.tasks[name], TaskHeaders(name, "id-1"), "json")  # type: ignore[arg-type]
    job.request = Request(id="id-1", task=name, called_directly=False)
    job.args, job.kwargs = [], {}
    runner.submit(job)
    try:
        return await asyncio.wait_for(done, 10)
    finally:
        runner.shutdown()


async def test_a_result_is_encoded_on_the_pool_thread_not_the_loop() -> None:
    outcome = await run("tp.big")
    assert outcome.state == states.SUCCESS and outcome.payload is not None
    assert decode_result(outcome.payload) == {"result": [0, 1, 2]}
    assert encoded_on and all(name.startswith("brokerd-task-") for name in encoded_on)


async def test_a_result_that_cannot_be_encoded_is_a_failure() -> None:
    outcome = await run("tp.bad")
    assert outcome.state == states.FAILURE and outcome.exc is not None
    assert outcome.exc.exc_type == "EncodeError"
