"""screening.background: how a part's background task is stopped."""

from __future__ import annotations

import asyncio

import pytest

from screening.background import cancel_and_wait


async def test_a_caller_being_cancelled_still_finishes_its_cleanup() -> None:
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
