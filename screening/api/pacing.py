"""A few CPU-heavy request steps per event-loop iteration, so the database's answers wait little.

asyncio runs every callback that is ready at the start of an iteration before it polls its
sockets again. When hundreds of stations' requests arrive together (a group commit answers
them all at once, and they all come back), the loop parses and validates all of them in one
iteration: for single-event POSTs that is tens of milliseconds in which the group commits'
database answers sit unread, each of a commit's round trips waiting out one such iteration, and
the next group's commit starting only after it. The pacer admits the heavy step of a few
requests per iteration (at least one, however large) and queues the rest in arrival order, so
the loop polls between small slices of parsing.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Pacer:
    """Admits up to ``units_per_turn`` units of heavy work per loop iteration, FIFO.

    A tick runs once per iteration while there is work, early in it (it is queued before the
    callbacks that the iteration's socket events bring). Waiters it wakes run in the next
    iteration, so they are counted against that one; requests that come in during an
    iteration run at once while its count has room, and queue otherwise.
    """

    def __init__(self, units_per_turn: int) -> None:
        self.units_per_turn = max(1, units_per_turn)
        self._this_turn = 0  # units running in the current iteration
        self._next_turn = 0  # units woken for the next iteration
        self._waiters: deque[tuple[asyncio.Future[None], int]] = deque()
        self._ticking = False

    async def turn(self, units: int = 1) -> None:
        """Wait until an iteration has room for ``units`` of work (or nothing else runs in it)."""
        if not self._waiters and self._fits(self._this_turn, units):
            self._this_turn += units
            self._tick_soon()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((future, units))
        self._tick_soon()
        await future

    def _fits(self, taken: int, units: int) -> bool:
        return taken == 0 or taken + units <= self.units_per_turn

    def _tick_soon(self) -> None:
        if not self._ticking:
            self._ticking = True
            asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self._ticking = False
        self._this_turn, self._next_turn = self._next_turn, 0
        while self._waiters:
            future, units = self._waiters[0]
            if future.done():  # its request was cancelled while it waited
                self._waiters.popleft()
                continue
            if not self._fits(self._next_turn, units):
                break
            self._waiters.popleft()
            future.set_result(None)
            self._next_turn += units
        if self._waiters or self._this_turn or self._next_turn:
            self._tick_soon()
