"""SQL for sites and their X-ray policy."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from screening.domain.compliance import SitePolicy
from screening.domain.events import Flow
from screening.storage import Conn

# A changed policy marks the site for re-derivation in the same statement (migration 0016). A
# NULL time zone or flow list keeps the site's own ($5, $6: a new site's defaults).
INSERT_SITE = """
INSERT INTO sites AS s (site_id, name, timezone, xray_flows)
VALUES ($1, $2, coalesce($3, $5), coalesce($4::text[], $6::text[]))
ON CONFLICT (site_id) DO UPDATE SET name = EXCLUDED.name,
    timezone = coalesce($3, s.timezone),
    xray_flows = coalesce($4::text[], s.xray_flows),
    rederive_pending = s.rederive_pending
        OR s.timezone IS DISTINCT FROM coalesce($3, s.timezone)
        OR NOT (s.xray_flows @> coalesce($4::text[], s.xray_flows)
                AND s.xray_flows <@ coalesce($4::text[], s.xray_flows))
RETURNING rederive_pending, site_id, name, timezone, xray_flows
"""
# Cleared only while the policy is still the one the parcels were derived under. Flow lists
# compare as sets: a row written by hand (or by migration 0001's default) need not be sorted.
CLEAR_REDERIVE = """
UPDATE sites SET rederive_pending = false
WHERE site_id = $1 AND timezone = $2 AND xray_flows @> $3::text[] AND xray_flows <@ $3::text[]
"""
SELECT_SITES = "SELECT site_id, name, timezone, xray_flows FROM sites ORDER BY site_id"
SELECT_SOME_SITES = """
SELECT site_id, name, timezone, xray_flows FROM sites WHERE site_id = ANY($1::text[])
"""


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    name: str
    policy: SitePolicy


def site_of_row(r: asyncpg.Record) -> Site:
    return Site(
        site_id=r["site_id"],
        name=r["name"],
        policy=SitePolicy(
            xray_flows=frozenset(Flow(f) for f in r["xray_flows"]), timezone=r["timezone"]
        ),
    )


def _flows(policy: SitePolicy) -> list[str]:
    return sorted(f.value for f in policy.xray_flows)


async def upsert_site(
    conn: Conn,
    site_id: str,
    name: str,
    timezone: str | None,
    xray_flows: frozenset[Flow] | None,
) -> tuple[Site, bool]:
    """Add or update a site, keeping its time zone or flows where given None (a new site gets
    ``SitePolicy``'s defaults): the site as saved, and whether its stored parcels await
    derivation under its policy (changed now, or earlier by a re-derivation that did not
    finish)."""
    default = SitePolicy()
    row = await conn.fetchrow(
        INSERT_SITE,
        site_id,
        name,
        timezone,
        None if xray_flows is None else _flows(SitePolicy(xray_flows)),
        default.timezone,
        _flows(default),
    )
    assert row is not None  # an upsert returns its row
    return site_of_row(row), bool(row["rederive_pending"])


async def clear_rederive(conn: Conn, site_id: str, policy: SitePolicy) -> None:
    await conn.execute(CLEAR_REDERIVE, site_id, policy.timezone, _flows(policy))


async def list_sites(conn: Conn) -> list[Site]:
    return [site_of_row(r) for r in await conn.fetch(SELECT_SITES)]


async def get_sites(conn: Conn, site_ids: Iterable[str]) -> dict[str, Site]:
    ids = sorted(set(site_ids))
    if not ids:
        return {}
    return {r["site_id"]: site_of_row(r) for r in await conn.fetch(SELECT_SOME_SITES, ids)}


# Transactions of this database still open that began before $1 (other than the caller's): an
# ingest among them may have read a site's policy as it was before a change committed.
COUNT_OLDER_TRANSACTIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start < $1
  AND backend_type = 'client backend'
"""


async def timezone_known(conn: Conn, name: str) -> bool:
    """Whether PostgreSQL has this time zone (rates cut days with AT TIME ZONE)."""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT FROM pg_timezone_names WHERE name = $1)", name)
    )


async def database_clock(conn: Conn) -> datetime:
    """The database server's clock now (what ``older_transactions`` compares with)."""
    moment: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return moment


async def older_transactions(conn: Conn, moment: datetime) -> int:
    return int(await conn.fetchval(COUNT_OLDER_TRANSACTIONS, moment))
