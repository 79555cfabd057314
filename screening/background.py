"""Background tasks of the gateway's parts: how each one is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has finished unwinding (None: nothing to stop)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class SingleFlight(Generic[K, V]):
    """Concurrent calls for one key share one running task (a cache's misses that arrive
    together make one lookup, not one each).

    The task is shielded: a caller that gives up does not cancel what the others wait for. Its
    failure reaches every caller waiting then, and it is forgotten once done, so the next call
    starts afresh.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._running: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, key: K, start: Callable[[], Coroutine[Any, Any, V]]) -> V:
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(start(), name=self._name)
            self._running[key] = task

            def settle(done: asyncio.Task[V]) -> None:
                if self._running.get(key) is done:
                    del self._running[key]
                if not done.cancelled():
                    done.exception()  # retrieved: every caller that asked may have gone

            task.add_done_callback(settle)
        return await asyncio.shield(task)
