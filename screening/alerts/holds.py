"""Hold orders down to the stations: each process pushes the open, unacknowledged holds of a site to
its own station WebSockets (and so to the bridge, which stops the belt), until one acknowledges;
and, once a hold is closed (released by a reviewer's clear or by police, or seized), its release,
under its own ``release_id``, until one acknowledges that.

A hold is written in the transaction that flags the parcel (a release in the one that closes it)
and announced by NOTIFY at commit; the pusher also re-sends on a timer, so a station that was
offline or connected to another gateway process gets it late rather than never.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web

from screening.background import cancel_and_wait
from screening.storage import alerts as store

log = logging.getLogger(__name__)

Streams = Mapping[str, set[web.WebSocketResponse]]  # site_id -> open station sockets


def hold_message(hold: store.Hold) -> str:
    if hold.status != "open" and hold.release_id is not None:
        return json.dumps(
            {
                "type": "hold.release",
                "release_id": str(hold.release_id),  # acked as {"type": "hold.release.ack", ...}
                "hold_id": str(hold.hold_id),
                "site_id": hold.site_id,
                "waybill_no": hold.waybill_no,
                "resolution": hold.status,  # released or seized
            }
        )
    return json.dumps(
        {
            "type": "hold",
            "hold_id": str(hold.hold_id),
            "site_id": hold.site_id,
            "waybill_no": hold.waybill_no,
            "reason": hold.reason,
        }
    )


class HoldPusher:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        streams: Streams,
        *,
        repush_s: float = 5.0,  # an unacknowledged hold is sent again this often
        tick_s: float = 1.0,  # how soon a newly connected station gets open holds
    ) -> None:
        self._pool = pool
        self._streams = streams
        self._repush_s = repush_s
        self._tick_s = tick_s
        self._wake = asyncio.Event()
        self._sent: dict[UUID, dict[int, float]] = {}  # order -> id(socket) -> monotonic time
        self._task: asyncio.Task[None] | None = None
        self.pushed = 0

    def wake(self, _payload: str = "") -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hold-pusher")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._tick_s)
            self._wake.clear()
            try:
                await self.push_once()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("hold pusher: database error %r", exc)

    async def push_once(self) -> int:
        sites = sorted(site for site, sockets in self._streams.items() if sockets)
        if not sites:
            return 0
        async with self._pool.acquire() as conn:
            holds = await store.unacked_holds(conn, sites)
        now = time.monotonic()
        live = {h.order_id for h in holds}
        for gone in set(self._sent) - live:
            del self._sent[gone]
        count = 0
        # Every open hold written to a socket in this round: recorded at its first push (an
        # earlier round's record may have failed; the update skips holds already marked).
        pushed: list[tuple[str, UUID]] = []
        for hold in holds:
            sent = self._sent.setdefault(hold.order_id, {})
            message = hold_message(hold)
            for ws in list(self._streams.get(hold.site_id, ())):
                last = sent.get(id(ws))
                if ws.closed or (last is not None and now - last < self._repush_s):
                    continue
                try:
                    await ws.send_str(message)
                except (ConnectionError, RuntimeError) as exc:
                    log.info("hold %s: station socket gone (%r)", hold.hold_id, exc)
                    continue
                sent[id(ws)] = now
                count += 1
                if hold.status == "open":
                    pushed.append((hold.site_id, hold.hold_id))
        if pushed:
            async with self._pool.acquire() as conn:
                await store.mark_pushed(conn, sorted(set(pushed)), datetime.now(UTC))
        self.pushed += count
        return count
