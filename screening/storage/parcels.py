"""SQL for parcels, their violations and the per-site daily rate rollup."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from screening.domain.compliance import RULE_OF, ParcelStatus, Rule
from screening.domain.rates import RateCounts, RateKey, contribution
from screening.storage import Conn
from screening.storage.sites import Site, site_of_row

ParcelKey = tuple[str, str]

# Transaction-scoped locks per parcel, taken in one sorted order so that two gateway processes
# updating overlapping parcels cannot deadlock; they serialise recomputation of one parcel.
# The same round trip reads the sites' rows (their X-ray policies): the one-row aggregate is the
# preserved side of the join, so every lock is taken even when no site matches; sites are not
# guarded by these locks, so reading them in this statement's snapshot is right.
LOCK_PARCELS_READ_SITES = """
SELECT s.site_id, s.name, s.timezone, s.xray_flows
FROM (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 7))) FROM unnest($1::text[]) AS k)
     AS locked
LEFT JOIN sites s ON s.site_id = ANY($2::text[])
"""

# A site's rollup rows come in stripes: each connection adds to the stripe of its server process
# id, so concurrent commits of one site's day seldom queue on the same rows (each holds the rows
# it updated until its COMMIT; connections that share a stripe still wait for each other). The
# rate queries sum the stripes. Migration 0020.
ROLLUP_STRIPES = 16

# One statement saves a group's parcels: their rows, the violations of those that need them
# written, and the rollup deltas (added in key order, so that two commits that share a stripe
# cannot deadlock on them).
SAVE_PARCELS = """
WITH saved AS (
    INSERT INTO parcels AS p (site_id, waybill_no, flow, carrier, first_seen_at, updated_at,
        dispatched_at, dispatch_day, rate_flow, xray_required, realname_ok, inspection_ok,
        xray_ok, compliant, problems)
    SELECT k.site_id, k.waybill_no, k.flow, k.carrier, $5::timestamptz, $5::timestamptz,
           k.dispatched_at, k.dispatch_day, k.rate_flow, k.xray_required, k.realname_ok,
           k.inspection_ok, k.xray_ok, k.compliant, string_to_array(k.problems, ',')
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                $6::timestamptz[], $7::date[], $8::text[], $9::bool[], $10::bool[], $11::bool[],
                $12::bool[], $13::bool[], $14::text[])
         AS k(site_id, waybill_no, flow, carrier, dispatched_at, dispatch_day, rate_flow,
              xray_required, realname_ok, inspection_ok, xray_ok, compliant, problems)
    ON CONFLICT (site_id, waybill_no) DO UPDATE SET
        flow = EXCLUDED.flow, carrier = COALESCE(EXCLUDED.carrier, p.carrier),
        updated_at = EXCLUDED.updated_at, dispatched_at = EXCLUDED.dispatched_at,
        dispatch_day = EXCLUDED.dispatch_day, rate_flow = EXCLUDED.rate_flow,
        xray_required = EXCLUDED.xray_required, realname_ok = EXCLUDED.realname_ok,
        inspection_ok = EXCLUDED.inspection_ok, xray_ok = EXCLUDED.xray_ok,
        compliant = EXCLUDED.compliant, problems = EXCLUDED.problems
), violations_new AS (
    INSERT INTO violations (site_id, waybill_no, reason, rule, dispatch_day, flow, dispatched_at,
                            detected_at)
    SELECT * FROM unnest($15::text[], $16::text[], $17::text[], $18::text[], $19::date[],
                         $20::text[], $21::timestamptz[], $22::timestamptz[])
    ON CONFLICT (site_id, waybill_no, reason) DO NOTHING
)
INSERT INTO site_daily_rates AS r (site_id, day, flow, dispatched, realname_ok, inspection_ok,
                                   xray_ok, all_ok, xray_required, stripe)
SELECT *, pg_backend_pid() % $32
FROM unnest($23::text[], $24::date[], $25::text[], $26::bigint[], $27::bigint[], $28::bigint[],
            $29::bigint[], $30::bigint[], $31::bigint[])
ON CONFLICT (site_id, day, flow, stripe) DO UPDATE SET
    dispatched = r.dispatched + EXCLUDED.dispatched,
    realname_ok = r.realname_ok + EXCLUDED.realname_ok,
    inspection_ok = r.inspection_ok + EXCLUDED.inspection_ok,
    xray_ok = r.xray_ok + EXCLUDED.xray_ok,
    all_ok = r.all_ok + EXCLUDED.all_ok,
    xray_required = r.xray_required + EXCLUDED.xray_required
"""

# Violations of parcels whose status moved are removed before they are written anew; the old
# rows come back so that a violation keeps the time it was first detected.
DELETE_VIOLATIONS = """
DELETE FROM violations v
USING unnest($1::text[], $2::text[]) AS k(site_id, waybill_no)
WHERE v.site_id = k.site_id AND v.waybill_no = k.waybill_no
RETURNING v.site_id, v.waybill_no, v.reason, v.detected_at
"""


@dataclass(frozen=True, slots=True)
class StoredParcel:
    """What the parcels row says the parcel currently contributes to the rollup."""

    contribution: tuple[RateKey, RateCounts] | None
    problems: tuple[str, ...]
    dispatched_at: datetime | None = None  # violation rows carry it (their order and pages)

    @property
    def violations(self) -> tuple[str, ...]:
        return self.problems if self.contribution is not None else ()


async def lock_parcels_read_sites(conn: Conn, keys: Iterable[ParcelKey]) -> dict[str, Site]:
    """Lock the parcels for the rest of the transaction; return their sites (those that exist)."""
    keys = set(keys)
    if not keys:
        return {}
    names = sorted(f"{site}\x1f{waybill}" for site, waybill in keys)
    rows = await conn.fetch(LOCK_PARCELS_READ_SITES, names, sorted({k[0] for k in keys}))
    return {r["site_id"]: site_of_row(r) for r in rows if r["site_id"] is not None}


SELECT_STORED = """
SELECT p.site_id, p.waybill_no, p.dispatch_day, p.rate_flow, p.xray_required, p.realname_ok,
       p.inspection_ok, p.xray_ok, p.compliant, p.problems, p.dispatched_at
FROM parcels p
JOIN unnest($1::text[], $2::text[]) AS k(site_id, waybill_no)
  ON p.site_id = k.site_id AND p.waybill_no = k.waybill_no
"""
SELECT_KEYS_AFTER = """
SELECT waybill_no FROM parcels WHERE site_id = $1 AND waybill_no > $2
ORDER BY waybill_no LIMIT $3
"""


async def read_stored(conn: Conn, keys: Iterable[ParcelKey]) -> dict[ParcelKey, StoredParcel]:
    """The rows of the given parcels (those that have one) as what each contributes."""
    keys = list(keys)
    rows = await conn.fetch(SELECT_STORED, [k[0] for k in keys], [k[1] for k in keys])
    # The columns after the key are stored_parcel's arguments, in its order.
    return {(r["site_id"], r["waybill_no"]): stored_parcel(*tuple(r)[2:]) for r in rows}


async def parcel_keys_after(conn: Conn, site_id: str, after: str, limit: int) -> list[ParcelKey]:
    """The next ``limit`` parcels of a site in waybill order, after waybill ``after``."""
    rows = await conn.fetch(SELECT_KEYS_AFTER, site_id, after, limit)
    return [(site_id, r["waybill_no"]) for r in rows]


def stored_parcel(
    dispatch_day: date | None,
    rate_flow: str | None,
    xray_required: bool,
    realname_ok: bool,
    inspection_ok: bool,
    xray_ok: bool,
    compliant: bool,
    problems: Iterable[str],
    dispatched_at: datetime | None = None,
) -> StoredParcel:
    """A parcels row's columns as what the parcel contributes to the rollup."""
    contribution = None
    if dispatch_day is not None and rate_flow is not None:
        contribution = (
            RateKey(dispatch_day, rate_flow),
            RateCounts(
                dispatched=1,
                realname_ok=int(realname_ok),
                inspection_ok=int(inspection_ok),
                xray_ok=int(xray_ok),
                all_ok=int(compliant),
                xray_required=int(xray_required),
            ),
        )
    return StoredParcel(contribution, tuple(problems), dispatched_at)


def _violations_moved(old: StoredParcel, new: ParcelStatus) -> bool:
    return (
        old.contribution != contribution(new)
        or old.violations != tuple(r.value for r in new.violations)
        or (new.dispatched_at is not None and old.dispatched_at != new.dispatched_at)
    )


async def save_parcels(
    conn: Conn,
    statuses: Mapping[ParcelKey, ParcelStatus],
    now: datetime,
    previous: Mapping[ParcelKey, StoredParcel],
    deltas: Mapping[tuple[str, RateKey], RateCounts],
) -> None:
    """Upsert parcel rows, rewrite the violations of parcels whose violations changed, and add
    the counter deltas to the rollup: one round trip, two when violations move."""
    if not statuses and not deltas:
        return
    keys = sorted(statuses)
    st = [statuses[k] for k in keys]
    # Violations rows carry the dispatch day and flow, so rewrite them whenever the parcel's
    # contribution changed; untouched parcels (the common case) cost nothing here.
    rewrite = [k for k in keys if k in previous and _violations_moved(previous[k], statuses[k])]
    detected: dict[tuple[str, str, str], datetime] = {}
    if rewrite:
        # Keep when a violation was first detected across rewrites.
        detected = {
            (r["site_id"], r["waybill_no"], r["reason"]): r["detected_at"]
            for r in await conn.fetch(
                DELETE_VIOLATIONS, [k[0] for k in rewrite], [k[1] for k in rewrite]
            )
        }
    targets = set(rewrite) | {k for k in keys if k not in previous}
    rows = [
        (k, s, reason)
        for k, s in zip(keys, st, strict=True)
        if k in targets and s.dispatched_at is not None and s.dispatch_day is not None
        for reason in s.violations
    ]
    rollup = sorted(deltas, key=lambda k: (k[0], k[1].day, k[1].flow))
    counts = [deltas[k] for k in rollup]
    await conn.execute(
        SAVE_PARCELS,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [s.flow.value if s.flow else None for s in st],
        [s.carrier for s in st],
        now,  # one value, not one per parcel: asyncpg encodes a timestamptz in 0.75 µs
        [s.dispatched_at for s in st],
        [s.dispatch_day for s in st],
        [s.rate_bucket if s.dispatched else None for s in st],
        [s.xray_required for s in st],
        [s.rules_ok[Rule.REALNAME] for s in st],
        [s.rules_ok[Rule.INSPECTION] for s in st],
        [s.rules_ok[Rule.XRAY] for s in st],
        [s.compliant for s in st],
        [",".join(s.problems) for s in st],
        # violations
        [k[0] for k, _, _ in rows],
        [k[1] for k, _, _ in rows],
        [reason.value for _, _, reason in rows],
        [RULE_OF[reason].value for _, _, reason in rows],
        [s.dispatch_day for _, s, _ in rows],
        [s.rate_bucket for _, s, _ in rows],
        [s.dispatched_at for _, s, _ in rows],
        [detected.get((k[0], k[1], reason.value), now) for k, _, reason in rows],
        # rollup deltas
        [k[0] for k in rollup],
        [k[1].day for k in rollup],
        [k[1].flow for k in rollup],
        [c.dispatched for c in counts],
        [c.realname_ok for c in counts],
        [c.inspection_ok for c in counts],
        [c.xray_ok for c in counts],
        [c.all_ok for c in counts],
        [c.xray_required for c in counts],
        ROLLUP_STRIPES,
    )


# --- read side ----------------------------------------------------------------------------------

SELECT_PARCEL_BY_WAYBILL = """
SELECT site_id, waybill_no, flow, carrier, dispatched_at, xray_required, realname_ok,
       inspection_ok, xray_ok, compliant, problems
FROM parcels WHERE waybill_no = $1 AND ($2::text[] IS NULL OR site_id = ANY($2::text[]))
ORDER BY updated_at DESC
LIMIT 2
"""

SELECT_RATES_BY_DAY = """
SELECT day, NULL::text AS flow, sum(dispatched)::bigint AS dispatched,
       sum(realname_ok)::bigint AS realname_ok, sum(inspection_ok)::bigint AS inspection_ok,
       sum(xray_ok)::bigint AS xray_ok, sum(all_ok)::bigint AS all_ok,
       sum(xray_required)::bigint AS xray_required
FROM site_daily_rates WHERE site_id = $1 AND day BETWEEN $2 AND $3
GROUP BY day ORDER BY day
"""

SELECT_RATES_BY_FLOW = """
SELECT NULL::date AS day, flow, sum(dispatched)::bigint AS dispatched,
       sum(realname_ok)::bigint AS realname_ok, sum(inspection_ok)::bigint AS inspection_ok,
       sum(xray_ok)::bigint AS xray_ok, sum(all_ok)::bigint AS all_ok,
       sum(xray_required)::bigint AS xray_required
FROM site_daily_rates WHERE site_id = $1 AND day BETWEEN $2 AND $3
GROUP BY flow ORDER BY flow
"""

SELECT_VIOLATIONS_PAGE = """
SELECT waybill_no, reason, rule, flow, dispatch_day, dispatched_at, detected_at
FROM violations
WHERE site_id = $1
  AND dispatch_day BETWEEN $2 AND $3
  AND ($4::text IS NULL OR reason = $4)
  AND ($5::text IS NULL OR rule = $5)
  AND ($6::text IS NULL OR flow = $6)
  AND (dispatched_at, waybill_no, reason) > ($7, $8, $9)
  AND dispatched_at < $11
ORDER BY dispatched_at, waybill_no, reason
LIMIT $10
"""


@dataclass(frozen=True, slots=True)
class ParcelRow:
    site_id: str
    waybill_no: str
    flow: str | None
    carrier: str | None
    dispatched_at: datetime | None
    xray_required: bool
    realname_ok: bool
    inspection_ok: bool
    xray_ok: bool
    compliant: bool
    problems: tuple[str, ...]


async def find_parcels(
    conn: Conn, waybill_no: str, site_ids: Sequence[str] | None
) -> list[ParcelRow]:
    """Up to two parcels with this waybill number within the given sites (None: all sites)."""
    rows = await conn.fetch(
        SELECT_PARCEL_BY_WAYBILL, waybill_no, list(site_ids) if site_ids is not None else None
    )
    return [
        ParcelRow(
            site_id=r["site_id"],
            waybill_no=r["waybill_no"],
            flow=r["flow"],
            carrier=r["carrier"],
            dispatched_at=r["dispatched_at"],
            xray_required=r["xray_required"],
            realname_ok=r["realname_ok"],
            inspection_ok=r["inspection_ok"],
            xray_ok=r["xray_ok"],
            compliant=r["compliant"],
            problems=tuple(r["problems"]),
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class RateRow:
    day: date | None
    flow: str | None
    counts: RateCounts


async def site_rates(
    conn: Conn, site_id: str, first: date, last: date, group_by: str
) -> list[RateRow]:
    query = SELECT_RATES_BY_DAY if group_by == "day" else SELECT_RATES_BY_FLOW
    rows = await conn.fetch(query, site_id, first, last)
    return [
        RateRow(
            day=r["day"],
            flow=r["flow"],
            counts=RateCounts(
                dispatched=r["dispatched"],
                realname_ok=r["realname_ok"],
                inspection_ok=r["inspection_ok"],
                xray_ok=r["xray_ok"],
                all_ok=r["all_ok"],
                xray_required=r["xray_required"],
            ),
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class ViolationRow:
    waybill_no: str
    reason: str
    rule: str
    flow: str
    dispatch_day: date
    dispatched_at: datetime
    detected_at: datetime


async def list_violations(
    conn: Conn,
    site_id: str,
    first: date,
    last: date,
    *,
    reason: str | None,
    rule: str | None,
    flow: str | None,
    after: tuple[datetime, str, str] | None,
    limit: int,
    between: tuple[datetime, datetime],
) -> list[ViolationRow]:
    """A page of violations in (dispatched_at, waybill_no, reason) order; keyset pagination.

    ``between``: instants that hold every dispatch of the days [first, last] (wider is fine).
    With them the page is a walk of the index on that order from the cursor (or the first
    instant), not a sort of the whole period's violations for each page."""
    lower = after or (between[0], "", "")  # no waybill is empty: nothing at the start is lost
    rows = await conn.fetch(
        SELECT_VIOLATIONS_PAGE,
        site_id,
        first,
        last,
        reason,
        rule,
        flow,
        *lower,
        limit,
        between[1],
    )
    return [ViolationRow(**dict(r)) for r in rows]
