"""screening.background: how a part's background task is stopped."""

from __future__ import annotations

import asyncio

import pytest

from screening.background import cancel_and_wait


async def test_a_cancellation_aimed_at_the_caller_while_it_waits_goes_on_up() -> None:
    """A stop bounded by wait_for cancels the stopping coroutine: swallowed, the bound would not
    hold and the stop would carry on as if nothing had happened."""
    unwinding = asyncio.Event()

    async def slow_to_unwind() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            unwinding.set()
            await asyncio.sleep(10)  # a connection reset that takes its time, say
            raise

    task = asyncio.create_task(slow_to_unwind())
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_and_wait(task))
    await unwinding.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 2)
    assert task.cancelled()


async def test_a_caller_already_being_cancelled_still_finishes_its_cleanup() -> None:
    helper = asyncio.create_task(asyncio.sleep(10))
    cleaned = asyncio.Event()

    async def part() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await cancel_and_wait(helper)  # the part is being cancelled: this must not end it
            cleaned.set()

    task = asyncio.create_task(part())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()
    assert helper.cancelled()


async def test_nothing_to_stop() -> None:
    await cancel_and_wait(None)
