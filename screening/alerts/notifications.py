"""Cross-process wake-ups: one LISTEN connection per gateway process, fanned out to local callbacks.

NOTIFY is only a hint ("something changed on this channel"); every consumer re-reads the tables,
and polls on a timer as well, so a notification lost while the connection was down costs latency,
never data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

Callback = Callable[[str], None]  # payload -> None; must not block


class Notifications:
    """Keeps a pooled connection LISTENing on the subscribed channels; reconnects on loss."""

    def __init__(self, pool: asyncpg.Pool[Any], retry_s: float = 1.0) -> None:
        self._pool = pool
        self._retry_s = retry_s
        self._callbacks: dict[str, list[Callback]] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._interrupt = asyncio.Event()  # connection lost, or close() called
        self._closing = asyncio.Event()  # close() called
        self._stopping = False

    def subscribe(self, channel: str, callback: Callback) -> None:
        self._callbacks.setdefault(channel, []).append(callback)

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        for callback in self._callbacks.get(channel, []):
            callback(str(payload))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alerts-listen")

    async def close(self) -> None:
        """Stop listening; the connection goes back to the pool with its listeners removed."""
        self._stopping = True
        self._closing.set()
        self._interrupt.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._listen()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("alert notifications: connection lost (%r); retrying", exc)
            if not self._stopping:
                # Not the interrupt: a lost connection leaves it set until the next one is
                # made, and while the database is down that wait would return at once.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self._retry_s)

    async def _listen(self) -> None:
        async with self._pool.acquire() as conn:
            self._interrupt.clear()
            on_lost = _setter(self._interrupt)
            conn.add_termination_listener(on_lost)
            for channel in self._callbacks:
                await conn.add_listener(channel, self._dispatch)
            self.connected.set()
            # Wake everyone once: anything notified while we were away is re-read.
            for channel in self._callbacks:
                self._dispatch(conn, 0, channel, "")
            try:
                while not self._stopping and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._interrupt.wait(), 5.0)
                    if not self._stopping and not conn.is_closed():
                        await conn.execute("SELECT 1")  # notice a dead socket
            finally:
                self.connected.clear()
                conn.remove_termination_listener(on_lost)
                if not conn.is_closed():
                    for channel in self._callbacks:
                        await conn.remove_listener(channel, self._dispatch)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    def set_(_conn: Any) -> None:
        event.set()

    return set_
