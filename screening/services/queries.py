"""Read side: a parcel's status and timeline, site rates, and the violations list."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from screening.domain.access import Principal
from screening.domain.compliance import RULE_OF, Reason, Rule, evaluate_parcel
from screening.domain.events import UNKNOWN_FLOW, Flow
from screening.domain.rates import RateCounts
from screening.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from screening.storage import Conn
from screening.storage import events as event_store
from screening.storage import parcels as parcel_store
from screening.storage import scans as scan_store
from screening.storage import sites as site_store
from screening.storage.parcels import RateRow, ViolationRow
from screening.storage.sites import Site

MAX_RATE_DAYS = 400  # a rates query spans at most about 13 months
# What a violation's flow can be: a flow, or the bucket of parcels dispatched unreceived.
RATE_BUCKETS = frozenset({f.value for f in Flow} | {UNKNOWN_FLOW})


@dataclass(frozen=True, slots=True)
class ParcelView:
    site_id: str
    waybill_no: str
    flow: str | None
    carrier: str | None
    xray_required: bool
    dispatched_at: datetime | None
    problems: tuple[str, ...]
    rules: dict[str, tuple[bool, list[str]]]
    timeline: list[dict[str, Any]]


async def parcel_status(
    pool: asyncpg.Pool[Any], principal: Principal, waybill_no: str, site_id: str | None
) -> ParcelView:
    if site_id is not None and not principal.covers(site_id):
        raise ForbiddenError("this key does not cover that site", code="forbidden_site")
    scope: list[str] | None
    if site_id is not None:
        scope = [site_id]
    else:
        scope = None if principal.sites is None else sorted(principal.sites)
    # One snapshot: the events and the timeline read the same log (an event committed between
    # them would be in one and not the other).
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        found = await parcel_store.find_parcels(conn, waybill_no, scope)
        if not found:
            raise NotFoundError(f"no parcel {waybill_no!r} in your sites", code="unknown_parcel")
        if len(found) > 1:
            raise ConflictError(
                "this waybill number is known at several of your sites; pass site_id",
                code="ambiguous_waybill",
            )
        row = found[0]
        sites = await site_store.get_sites(conn, [row.site_id])
        history = await event_store.load_parcel_events(conn, [(row.site_id, row.waybill_no)])
        timeline = await event_store.parcel_timeline(conn, row.site_id, row.waybill_no)
    # Recompute from the log (cheap for one parcel) so the answer is exactly the pure rules'.
    status = evaluate_parcel(
        row.waybill_no, history[(row.site_id, row.waybill_no)], sites[row.site_id].policy
    )
    rules = {
        rule.value: (
            status.rules_ok[rule],
            [r.value for r in status.problems if RULE_OF[r] is rule],
        )
        for rule in Rule
    }
    return ParcelView(
        site_id=row.site_id,
        waybill_no=row.waybill_no,
        flow=status.flow.value if status.flow else None,
        carrier=row.carrier,
        xray_required=status.xray_required,
        dispatched_at=status.dispatched_at,
        problems=tuple(r.value for r in status.problems),
        rules=rules,
        timeline=timeline,
    )


def _site_today(site: Site, now: datetime) -> date:
    return now.astimezone(ZoneInfo(site.policy.timezone)).date()


# Days a period may name: wide of any record (events start in 2000), narrow enough that the
# arithmetic on them cannot leave the calendar.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9999, 1, 1)


def _period(first: date | None, last: date | None, today: date) -> tuple[date, date]:
    for day in (first, last):
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:
            raise BadRequestError(
                f"dates are from {FIRST_DAY} to {LAST_DAY}", code="invalid_period"
            )
    last = last or today
    first = first or (last - timedelta(days=29))
    if first > last:
        raise BadRequestError("from is after to", code="invalid_period")
    if (last - first).days >= MAX_RATE_DAYS:
        raise BadRequestError(f"a period spans at most {MAX_RATE_DAYS} days", code="invalid_period")
    return first, last


def require_cover(principal: Principal, site_id: str) -> None:
    """403 unless the key covers the site: checked before a request's other parameters, so a
    key learns nothing about another site's endpoints from how its queries are judged."""
    if not principal.covers(site_id):
        raise ForbiddenError("this key does not cover that site", code="forbidden_site")


async def _readable_site(conn: Conn, principal: Principal, site_id: str) -> Site:
    require_cover(principal, site_id)
    sites = await site_store.get_sites(conn, [site_id])
    if site_id not in sites:
        raise NotFoundError(f"unknown site {site_id!r}", code="unknown_site")
    return sites[site_id]


@dataclass(frozen=True, slots=True)
class RatesView:
    site: Site
    first: date
    last: date
    group_by: str
    total: RateCounts
    rows: list[RateRow]
    unbound_scans: dict[date, int]


async def site_rates(
    pool: asyncpg.Pool[Any],
    principal: Principal,
    site_id: str,
    first: date | None,
    last: date | None,
    group_by: str,
    now: datetime,
) -> RatesView:
    """The site's rates over [first, last]; an open end is the site's own today (its zone)."""
    require_cover(principal, site_id)
    if group_by not in ("day", "flow"):
        raise BadRequestError("group_by is day or flow", code="invalid_query")
    async with pool.acquire() as conn:
        site = await _readable_site(conn, principal, site_id)
        first, last = _period(first, last, _site_today(site, now))
        rows = await parcel_store.site_rates(conn, site_id, first, last, group_by)
        unbound = await scan_store.unbound_per_day(conn, site_id, first, last, site.policy.timezone)
    total = RateCounts()
    for row in rows:
        total = total + row.counts
    if group_by == "day":  # a day with scans but nothing dispatched is a row too
        days = {r.day for r in rows}
        rows += [RateRow(day, None, RateCounts()) for day in unbound if day not in days]
        rows.sort(key=lambda r: r.day or first)
    return RatesView(site, first, last, group_by, total, rows, unbound)


def encode_cursor(row: ViolationRow) -> str:
    raw = json.dumps([row.dispatched_at.isoformat(), row.waybill_no, row.reason])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    """The position an ``encode_cursor`` names; anything else (edited, forged) is a 400."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, waybill, reason = json.loads(base64.urlsafe_b64decode(padded))
        moment = datetime.fromisoformat(at)
        day = moment.astimezone(UTC).date() if moment.tzinfo is not None else None
        waybill, reason = str(waybill), str(reason)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise BadRequestError("invalid cursor", code="invalid_cursor") from exc
    if day is None or not FIRST_DAY <= day <= LAST_DAY or "\x00" in waybill + reason:
        raise BadRequestError("invalid cursor", code="invalid_cursor")
    return moment, waybill, reason


# More than any two UTC offsets differ by (-12:00 to +14:00): a parcel derived under a site's
# earlier time zone (before a change is re-derived) still falls inside.
_ZONE_MARGIN = timedelta(hours=27)


def _instants_of(first: date, last: date, timezone: str) -> tuple[datetime, datetime]:
    """Instants that hold every moment of the days [first, last] in ``timezone``."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(first, time.min, zone)
    end = datetime.combine(last + timedelta(days=1), time.min, zone)  # last <= LAST_DAY
    return start - _ZONE_MARGIN, end + _ZONE_MARGIN


@dataclass(frozen=True, slots=True)
class ViolationsPage:
    rows: list[ViolationRow]
    cursor: str | None  # of the next page; None on the last
    first: date  # the period, its open ends resolved (the site's today, 30 days)
    last: date


async def site_violations(
    pool: asyncpg.Pool[Any],
    principal: Principal,
    site_id: str,
    *,
    first: date | None,
    last: date | None,
    reason: str | None,
    rule: str | None,
    flow: str | None,
    cursor: str | None,
    limit: int,
    now: datetime,
) -> ViolationsPage:
    require_cover(principal, site_id)
    if reason is not None and reason not in {r.value for r in Reason}:
        raise BadRequestError(f"unknown reason {reason!r}", code="invalid_query")
    if rule is not None and rule not in {r.value for r in Rule}:
        raise BadRequestError(f"unknown rule {rule!r}", code="invalid_query")
    if flow is not None and flow not in RATE_BUCKETS:
        raise BadRequestError(f"unknown flow {flow!r}", code="invalid_query")
    if not 1 <= limit <= 1000:
        raise BadRequestError("limit is between 1 and 1000", code="invalid_query")
    after = decode_cursor(cursor) if cursor else None
    async with pool.acquire() as conn:
        site = await _readable_site(conn, principal, site_id)
        first, last = _period(first, last, _site_today(site, now))
        rows = await parcel_store.list_violations(
            conn,
            site_id,
            first,
            last,
            reason=reason,
            rule=rule,
            flow=flow,
            after=after,
            limit=limit + 1,
            between=_instants_of(first, last, site.policy.timezone),
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return ViolationsPage(rows, encode_cursor(rows[-1]) if more and rows else None, first, last)
