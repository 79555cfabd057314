"""The monthly site report's figures: rates, violations by reason, X-ray machine usage, alerts and
their dispositions, and the latest ledger checkpoint; one read-only transaction per report."""

from __future__ import annotations

import base64
import calendar
import contextlib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from screening.domain.access import Permission, Principal
from screening.domain.checkpoint import CheckpointError
from screening.domain.ledger import LedgerInconsistentError
from screening.domain.rates import RateCounts
from screening.errors import BadRequestError, ForbiddenError, NotFoundError
from screening.services import ledger as ledger_service
from screening.services.ledger import LedgerSigner
from screening.storage import Conn
from screening.storage import ledger as ledger_store
from screening.storage import parcels as parcel_store
from screening.storage import sites as site_store
from screening.storage.ledger import StoredCheckpoint
from screening.storage.parcels import RateRow
from screening.storage.sites import Site

VIOLATIONS_BY_REASON = """
SELECT reason, rule, count(*) AS parcels
FROM violations WHERE site_id = $1 AND dispatch_day BETWEEN $2 AND $3
GROUP BY reason, rule ORDER BY parcels DESC, reason
"""
# Bound scans are xray.scanned events (the scans table); an upload without a waybill read has no
# event, so it is counted from scan_uploads. Days are in the site's time zone ($4).
SCANS_PER_SCANNER_DAY = """
SELECT scanner_id, day, count(*) AS scans, count(*) FILTER (WHERE verdict = 'flagged') AS flagged
FROM (
    SELECT scanner_id, verdict, (occurred_at AT TIME ZONE $4)::date AS day
    FROM scans WHERE site_id = $1 AND occurred_at >= $2 AND occurred_at < $3
    UNION ALL
    SELECT scanner_id, verdict, (occurred_at AT TIME ZONE $4)::date
    FROM scan_uploads
    WHERE site_id = $1 AND event_id IS NULL AND occurred_at >= $2 AND occurred_at < $3
) s
GROUP BY scanner_id, day ORDER BY scanner_id, day
"""
ALERTS_TABLE_EXISTS = "SELECT to_regclass('alerts') IS NOT NULL"
ALERTS_BY_CATEGORY = """
SELECT category, status, disposition, count(*) AS alerts
FROM alerts WHERE site_id = $1 AND created_at >= $2 AND created_at < $3
GROUP BY category, status, disposition ORDER BY category
"""


@dataclass(frozen=True, slots=True)
class ScannerUsage:
    scanner_id: str
    per_day: dict[date, tuple[int, int]]  # day -> (scans, flagged)

    @property
    def scans(self) -> int:
        return sum(s for s, _ in self.per_day.values())

    @property
    def flagged(self) -> int:
        return sum(f for _, f in self.per_day.values())


@dataclass(frozen=True, slots=True)
class AlertSummary:
    category: str
    total: int = 0
    open: int = 0  # open, acknowledged or assigned: not yet closed
    dispositions: dict[str, int] = field(default_factory=dict)  # seized, released, false_alarm


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The site's latest checkpoint as its signed note says it. ``verified``: signed with the
    gateway's key and matching the stored row; a report never vouches for one that is not."""

    tree_size: int
    root_hash: str  # base64, as the checkpoint note and GET .../ledger/checkpoint give it
    created_at: datetime
    note: str  # the whole signed note, for checking the printed report offline
    vkey: str  # the key to check it with
    verified: bool


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    site: Site
    month: date  # first day
    days: list[date]
    total: RateCounts
    daily: list[RateRow]
    by_flow: list[RateRow]
    violations: list[tuple[str, str, int]]  # reason, rule, parcels
    scanners: list[ScannerUsage]
    alerts: list[AlertSummary] | None  # None: this role may not read alerts, or no alerts tables
    checkpoint: Checkpoint | None
    generated_at: datetime


def parse_month(raw: str) -> date:
    year, _, month = raw.partition("-")
    digits = year + month
    if len(year) != 4 or len(month) != 2 or not (digits.isascii() and digits.isdigit()):
        raise BadRequestError("the month is YYYY-MM", code="invalid_month")
    # Year 9999 has no day after its last one to end a range on.
    if not 1 <= int(year) < date.max.year:
        raise BadRequestError("the month is YYYY-MM", code="invalid_month")
    try:
        return date(int(year), int(month), 1)
    except ValueError as exc:
        raise BadRequestError("the month is YYYY-MM", code="invalid_month") from exc


async def _site(conn: Conn, principal: Principal, site_id: str) -> Site:
    if not principal.covers(site_id):
        raise ForbiddenError("this key does not cover that site", code="forbidden_site")
    found = await site_store.get_sites(conn, [site_id])
    if site_id not in found:
        raise NotFoundError(f"unknown site {site_id!r}", code="unknown_site")
    return found[site_id]


async def _alerts(conn: Conn, site_id: str, start: datetime, end: datetime) -> list[AlertSummary]:
    by_category: dict[str, dict[str, Any]] = {}
    for r in await conn.fetch(ALERTS_BY_CATEGORY, site_id, start, end):
        entry = by_category.setdefault(r["category"], {"total": 0, "open": 0, "dispositions": {}})
        entry["total"] += r["alerts"]
        if r["status"] == "closed":
            key = r["disposition"] or "closed"
            entry["dispositions"][key] = entry["dispositions"].get(key, 0) + r["alerts"]
        else:
            entry["open"] += r["alerts"]
    return [AlertSummary(category=c, **v) for c, v in sorted(by_category.items())]


async def monthly_report(
    pool: asyncpg.Pool[Any],
    principal: Principal,
    site_id: str,
    month: date,
    now: datetime,
    signer: LedgerSigner,
) -> MonthlyReport:
    last = month.replace(day=calendar.monthrange(month.year, month.month)[1])
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        site = await _site(conn, principal, site_id)
        tz = ZoneInfo(site.policy.timezone)
        start = datetime.combine(month, time(), tz)
        end = datetime.combine(last + timedelta(days=1), time(), tz)
        daily = await parcel_store.site_rates(conn, site_id, month, last, "day")
        by_flow = await parcel_store.site_rates(conn, site_id, month, last, "flow")
        violations = [
            (r["reason"], r["rule"], int(r["parcels"]))
            for r in await conn.fetch(VIOLATIONS_BY_REASON, site_id, month, last)
        ]
        usage: dict[str, dict[date, tuple[int, int]]] = {}
        for r in await conn.fetch(SCANS_PER_SCANNER_DAY, site_id, start, end, tz.key):
            usage.setdefault(r["scanner_id"], {})[r["day"]] = (int(r["scans"]), int(r["flagged"]))
        alerts = None
        if principal.may(Permission.READ_ALERTS) and await conn.fetchval(ALERTS_TABLE_EXISTS):
            alerts = await _alerts(conn, site_id, start, end)
        stored = await ledger_store.latest_checkpoint(conn, site_id)
    total = RateCounts()
    for row in daily:
        total = total + row.counts
    return MonthlyReport(
        site=site,
        month=month,
        days=[month + timedelta(days=i) for i in range(last.day)],
        total=total,
        daily=daily,
        by_flow=by_flow,
        violations=violations,
        scanners=[ScannerUsage(k, v) for k, v in sorted(usage.items())],
        alerts=alerts,
        checkpoint=None if stored is None else _checkpoint(stored, signer),
        generated_at=now,
    )


def _checkpoint(stored: StoredCheckpoint, signer: LedgerSigner) -> Checkpoint:
    """What the stored note says, and whether it holds (the API answers 503 where it does not;
    a printed report says so instead)."""
    size, root = stored.tree_size, stored.root_hash  # shown only as failing verification
    try:
        signed = ledger_service.checkpoint_of(stored, signer)
        size, root, verified = signed.tree_size, signed.root_hash, True
    except (CheckpointError, LedgerInconsistentError):
        verified = False
        with contextlib.suppress(LedgerInconsistentError):  # a note that cannot be read
            head = ledger_service.note_head(stored.note)
            size, root = head.tree_size, head.root_hash
    return Checkpoint(
        size,
        base64.b64encode(root).decode(),
        stored.created_at,
        stored.note,
        signer.vkey(),
        verified,
    )
