"""`screening demo` leaves no working keys or live police endpoints behind it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from screening.demo import DEMO_RECEIVER_PATH, retire_demo_runs
from screening.domain.access import Role
from screening.services import access
from screening.storage import alerts as alert_store


async def test_a_demo_run_retires_the_keys_and_receivers_of_earlier_runs(
    pool: asyncpg.Pool[Any],
) -> None:
    """Found by review: each run registered a webhook endpoint on a port gone with it (the relay
    retried its deliveries for 72 h) and left its printed keys valid."""
    site = f"DM-{uuid.uuid4().hex[:6]}"
    await access.add_site(pool, site, "demo cleanup")
    demo_id, _ = await access.create_key(pool, Role.STATION, [site], "demo station")
    kept_id, _ = await access.create_key(pool, Role.STATION, [site], "station at the gate")
    gone, kept = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        await alert_store.insert_endpoint(conn, gone, f"http://127.0.0.1:9{DEMO_RECEIVER_PATH}",
                                          "whsec_x", [site], datetime.now(UTC))  # fmt: skip
        await alert_store.insert_endpoint(conn, kept, "https://police.example.cn/hook",
                                          "whsec_y", [site], datetime.now(UTC))  # fmt: skip
    try:
        await retire_demo_runs(pool)
        revoked = {k.key_id: k.revoked_at is not None for k in await access.list_keys(pool)}
        assert revoked[demo_id] is True
        assert revoked[kept_id] is False
        async with pool.acquire() as conn:
            endpoints = await alert_store.list_endpoints(conn, datetime.now(UTC))
        enabled = {e["endpoint_id"]: e["enabled"] for e in endpoints}
        assert (enabled[gone], enabled[kept]) == (False, True)
    finally:
        async with pool.acquire() as conn:  # leave no live endpoint for other tests' relays
            await alert_store.set_endpoint_enabled(conn, kept, False, "test over")
