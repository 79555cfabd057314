"""The police live feed: wakes this process's SSE streams when any process commits an alert.

Streams read the alerts table themselves (resuming from ``Last-Event-ID``), so the hub only says
"look again"; it holds no alert data and cannot lose any.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from screening.storage.errors import StorageError

_BIGINT = 2**63 - 1  # PostgreSQL's bigint: what txid and seq are compared with


def parse_cursor(value: str) -> tuple[int, int]:
    """``"<txid>-<seq>"`` (an SSE event id) -> cursor; raises StorageError when malformed,
    before any stream starts (ASCII digits only: "²" is a digit to str.isdigit, not to int;
    and values past bigint, which the query could not take)."""
    txid, sep, seq = value.strip().partition("-")
    digits = seq.removeprefix("-")
    if not sep or not (txid + digits).isascii() or not txid.isdigit() or not digits.isdigit():
        raise StorageError("malformed Last-Event-ID")
    cursor = int(txid), int(seq)
    if cursor[0] > _BIGINT or abs(cursor[1]) > _BIGINT:
        raise StorageError("malformed Last-Event-ID")
    return cursor


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
