"""The LISTEN connection behind live feeds and hold pushes, when the database goes away."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest

from screening.alerts.notifications import Notifications


async def test_a_database_that_stays_down_is_retried_at_the_interval_not_in_a_spin(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    down = False
    backends: list[int] = []

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection[Any]:
        if down:
            raise ConnectionRefusedError("the database is down")
        conn = await asyncpg.connect(database_url)
        backends.append(conn.get_server_pid())
        return conn

    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=2, connect=connect)
    notifications = Notifications(pool, retry_s=0.2)
    woken: list[str] = []
    notifications.subscribe("test_channel", woken.append)
    await notifications.start()
    try:
        await asyncio.wait_for(notifications.connected.wait(), 10)
        # The database goes down: its connections are cut and no new one can be made.
        down = True
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid",
                                backends)  # fmt: skip
        finally:
            await admin.close()
        with caplog.at_level(logging.WARNING, logger="screening.alerts.notifications"):
            await asyncio.sleep(1.0)
        retries = [r for r in caplog.records if "connection lost" in r.getMessage()]
        # One attempt per retry interval (0.2 s) over a second: about five, not thousands.
        assert 1 <= len(retries) <= 8
        assert not notifications.connected.is_set()
        # Back up: the listener reconnects and wakes its subscribers to re-read.
        down = False
        woken.clear()
        await asyncio.wait_for(notifications.connected.wait(), 10)
        assert woken == [""]
    finally:
        await notifications.close()
        await pool.close()
