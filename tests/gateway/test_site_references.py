"""Every event and parcel names a site that exists, and stays that way (migration 0021: checked
once per statement by triggers instead of once per row by foreign keys)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from screening.api.schemas import EVENT_ADAPTER
from screening.protection import PersonalDataVault
from screening.services import access
from screening.services.ingest import commit_events, prepare
from tests.gateway.events import parcel_flow

INSERT_EVENT_ROWS = """
INSERT INTO events (site_id, event_id, event_type, waybill_no, occurred_at, received_at,
                    payload, payload_digest)
SELECT s, gen_random_uuid(), 'parcel.received', 'WB' || s, now(), now(), '{}', '\\x00'
FROM unnest($1::text[]) AS s
"""
INSERT_PARCEL_ROWS = """
INSERT INTO parcels (site_id, waybill_no, first_seen_at, updated_at, xray_required, realname_ok,
                     inspection_ok, xray_ok, compliant, problems)
SELECT s, 'WB' || s, now(), now(), true, false, false, false, false, '{}'
FROM unnest($1::text[]) AS s
ON CONFLICT (site_id, waybill_no) DO UPDATE SET updated_at = excluded.updated_at
"""


async def _site(pool: asyncpg.Pool[Any]) -> str:
    site = f"SR-{uuid.uuid4().hex[:8]}"
    await access.add_site(pool, site, "site references")
    return site


async def _count(pool: asyncpg.Pool[Any], table: str, sites: list[str]) -> int:
    value = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE site_id = ANY($1)", sites)
    assert isinstance(value, int)
    return value


@pytest.mark.parametrize(
    ("table", "statement"), [("events", INSERT_EVENT_ROWS), ("parcels", INSERT_PARCEL_ROWS)]
)
async def test_a_statement_naming_an_unknown_site_writes_none_of_its_rows(
    pool: asyncpg.Pool[Any], table: str, statement: str
) -> None:
    known, unknown = await _site(pool), f"NO-{uuid.uuid4().hex[:8]}"
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await pool.execute(statement, [known, unknown])
    assert refused.value.table_name == table
    assert unknown in (refused.value.detail or "")
    assert await _count(pool, table, [known, unknown]) == 0
    await pool.execute(statement, [known])  # the known site alone goes in
    assert await _count(pool, table, [known]) == 1


async def test_a_group_commit_with_an_event_of_an_unknown_site_commits_nothing(
    pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> None:
    """The gateway refuses an unknown site before it gets here (a station key names its sites);
    the database refuses it too, for the whole group."""
    known, unknown = await _site(pool), f"NO-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    group = [
        prepare(EVENT_ADAPTER.validate_python(e), vault, now)
        for e in parcel_flow(known, "WB0000000001") + parcel_flow(unknown, "WB0000000002")
    ]
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with conn.transaction():
                await commit_events(conn, group, now)
    for table in ("events", "parcels", "realname_records", "scans", "ledger_leaves"):
        assert await _count(pool, table, [known, unknown]) == 0, table


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM sites WHERE site_id = $1",
        "UPDATE sites SET site_id = $2 WHERE site_id = $1",
        "UPDATE events SET site_id = $2 WHERE site_id = $1",
        "UPDATE parcels SET site_id = $2 WHERE site_id = $1",
    ],
    ids=["delete a site", "rename a site", "move an event", "move a parcel"],
)
async def test_sites_and_the_site_of_an_event_or_parcel_are_permanent(
    pool: asyncpg.Pool[Any], statement: str
) -> None:
    site, other = await _site(pool), await _site(pool)
    await pool.execute(INSERT_EVENT_ROWS, [site])
    await pool.execute(INSERT_PARCEL_ROWS, [site])
    args = [site, other] if "$2" in statement else [site]
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute(statement, *args)
    for table in ("events", "parcels", "sites"):
        assert await _count(pool, table, [site]) == 1, table


async def test_a_site_without_events_is_not_deleted_either_and_sites_are_not_truncated(
    pool: asyncpg.Pool[Any],
) -> None:
    site = await _site(pool)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute("DELETE FROM sites WHERE site_id = $1", site)
    async with pool.acquire() as conn:
        rollback = conn.transaction()  # the test database is shared: never let it go through
        await rollback.start()
        try:
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await conn.execute("TRUNCATE sites CASCADE")
        finally:
            await rollback.rollback()
    assert await _count(pool, "sites", [site]) == 1


async def test_other_columns_of_sites_events_and_parcels_still_change(
    pool: asyncpg.Pool[Any],
) -> None:
    """Only a change of site is refused: a site is renamed and its policy changed, an event's
    payload redacted (PII retirement), a parcel's row recomputed, and a no-op key update is
    not a change."""
    site = await _site(pool)
    await pool.execute(INSERT_EVENT_ROWS, [site])
    await pool.execute(INSERT_PARCEL_ROWS, [site])
    await pool.execute(
        "UPDATE sites SET name = 'renamed', site_id = site_id WHERE site_id = $1", site
    )
    await pool.execute("UPDATE events SET payload = '{\"x\": 1}' WHERE site_id = $1", site)
    await pool.execute(INSERT_PARCEL_ROWS, [site])  # the upsert's update branch
    await pool.execute(
        "UPDATE parcels SET compliant = true, site_id = site_id WHERE site_id = $1", site
    )
    assert await pool.fetchval("SELECT name FROM sites WHERE site_id = $1", site) == "renamed"
    assert await pool.fetchval("SELECT payload->>'x' FROM events WHERE site_id = $1", site) == "1"
    assert await pool.fetchval("SELECT compliant FROM parcels WHERE site_id = $1", site) is True
