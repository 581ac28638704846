"""Raising inside a running coroutine (the soft time limit for async tasks)."""

from __future__ import annotations

import asyncio

import pytest

from brokerd_client.tasks import SoftTimeLimitExceeded
from brokerd_client.tasks.interrupt import Interruptible


async def test_throw_raises_at_the_current_await_and_the_task_can_clean_up() -> None:
    it = Interruptible()
    seen: list[str] = []

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except SoftTimeLimitExceeded:
            seen.append("caught")
            await asyncio.sleep(0.01)  # cleanup may still await
            return "cleaned"
        return "slept"

    task = asyncio.create_task(_drive(it, work()))
    await asyncio.sleep(0.01)
    assert it.throw(SoftTimeLimitExceeded("soft"))
    assert await task == "cleaned"
    assert seen == ["caught"]
    assert not task.cancelled()


async def _drive(it: Interruptible, coro: object) -> object:
    return await it.run(coro)  # type: ignore[arg-type]


async def test_plain_cancellation_passes_through() -> None:
    it = Interruptible()
    task = asyncio.create_task(_drive(it, asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_uncaught_interrupt_fails_the_task_and_values_pass_through() -> None:
    it = Interruptible()
    task = asyncio.create_task(_drive(it, asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    it.throw(SoftTimeLimitExceeded("soft"))
    with pytest.raises(SoftTimeLimitExceeded):
        await task
    assert not it.throw(SoftTimeLimitExceeded("late"))

    async def value() -> int:
        await asyncio.sleep(0)
        return 42

    assert await Interruptible().run(value()) == 42
