"""The police live feed: wakes this process's SSE streams when any process commits an alert.

Streams read the alerts table themselves (resuming from ``Last-Event-ID``), so the hub only says
"look again"; it holds no alert data and cannot lose any.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from screening.storage.errors import StorageError


def parse_cursor(value: str) -> tuple[int, int]:
    """``"<txid>-<seq>"`` (an SSE event id) -> cursor; raises StorageError when malformed."""
    txid, sep, seq = value.strip().partition("-")
    if not sep or not txid.isdigit() or not seq.lstrip("-").isdigit():
        raise StorageError("malformed Last-Event-ID")
    return int(txid), int(seq)


class FeedHub:
    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()
        self.closing = False

    def wake(self, _payload: str = "") -> None:
        for event in self._waiters:
            event.set()

    def close(self) -> None:
        """The gateway is stopping: wake every stream so that it ends (its consumer resumes
        elsewhere with Last-Event-ID) instead of holding the shutdown until it is cancelled."""
        self.closing = True
        self.wake()

    @contextmanager
    def subscription(self) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        event.set()  # read once at start
        self._waiters.add(event)
        try:
            yield event
        finally:
            self._waiters.discard(event)

    @property
    def subscribers(self) -> int:
        return len(self._waiters)
