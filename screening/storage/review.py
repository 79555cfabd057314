"""SQL for the image reviewers' queue: items, leases, decisions, reviewer levels and TIP stats."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg

from screening.storage import Conn

INSERT_ITEM = """
INSERT INTO review_items (site_id, item_id, kind, level, scan_id, event_id, waybill_no, findings,
    score, category, image_sha256, image_type, tip_truth, occurred_at, created_at, lease_owner,
    lease_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13::jsonb, $14, $15, $16, $17)
ON CONFLICT (site_id, scan_id, kind) WHERE kind <> 'tip' DO NOTHING
RETURNING item_id
"""
# The next item for a reviewer: items they have not skipped first, then the highest level they
# may judge, then oldest; their skipped items come last, least recently skipped first (so
# skipping cycles through them). An expired lease makes an item available again. SKIP LOCKED:
# two reviewers never get the same item.
NEXT_ITEM = """
WITH next AS (
    SELECT r.site_id, r.item_id FROM review_items r
    LEFT JOIN review_skips s
      ON s.site_id = r.site_id AND s.item_id = r.item_id AND s.reviewer = $4
    WHERE r.status = 'pending' AND ($1::text[] IS NULL OR r.site_id = ANY($1::text[]))
      AND r.level <= $2
      AND (r.lease_until IS NULL OR r.lease_until <= $3)
    ORDER BY s.skipped_at NULLS FIRST, r.level DESC, r.created_at, r.item_id
    LIMIT 1
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE review_items r SET lease_owner = $4, lease_until = $5
FROM next WHERE r.site_id = next.site_id AND r.item_id = next.item_id
RETURNING r.site_id, r.item_id, r.kind, r.level, r.status, r.scan_id, r.event_id, r.waybill_no,
          r.findings, r.score, r.category, r.image_sha256, r.image_type, r.tip_truth,
          r.occurred_at, r.created_at, r.lease_owner, r.lease_until, r.decision, r.decided_by,
          r.decided_at
"""
SELECT_ITEM = """
SELECT site_id, item_id, kind, level, status, scan_id, event_id, waybill_no, findings, score,
       category, image_sha256, image_type, tip_truth, occurred_at, created_at, lease_owner,
       lease_until, decision, decided_by, decided_at
FROM review_items
WHERE item_id = $1 AND ($2::text[] IS NULL OR site_id = ANY($2::text[]))
"""
SELECT_ITEM_FOR_UPDATE = SELECT_ITEM + " FOR UPDATE"
FINISH_ITEM = """
UPDATE review_items
SET status = 'done', decision = $3, decided_by = $4, decided_at = $5, decided_category = $6,
    lease_owner = NULL, lease_until = NULL
WHERE site_id = $1 AND item_id = $2
"""
# A skip gives the lease back at once (the item is pending for anyone) and is remembered.
RELEASE_LEASE = """
UPDATE review_items SET lease_owner = NULL, lease_until = NULL
WHERE site_id = $1 AND item_id = $2
"""
UPSERT_SKIP = """
INSERT INTO review_skips (site_id, item_id, reviewer, skipped_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (site_id, item_id, reviewer)
DO UPDATE SET skipped_at = EXCLUDED.skipped_at, skips = review_skips.skips + 1
"""
SELECT_SKIPPED = """
SELECT skipped_at FROM review_skips WHERE site_id = $1 AND item_id = $2 AND reviewer = $3
"""
ESCALATE_ITEM = """
UPDATE review_items SET level = 2, lease_owner = NULL, lease_until = NULL
WHERE site_id = $1 AND item_id = $2
"""
INSERT_DECISION = """
INSERT INTO review_decisions (site_id, decision_id, item_id, kind, level, reviewer, decided_at,
                              decision, category, note)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
SELECT_LEVEL = "SELECT level FROM reviewer_levels WHERE key_id = $1"
# Only for a live key that may review (reviewer or admin): nothing is written for any other id.
UPSERT_LEVEL = """
INSERT INTO reviewer_levels (key_id, level)
SELECT key_id, $2 FROM api_keys
WHERE key_id = $1 AND role IN ('reviewer', 'admin') AND revoked_at IS NULL
ON CONFLICT (key_id) DO UPDATE SET level = EXCLUDED.level
RETURNING key_id
"""
# Per reviewer: TIP hits (a projected threat confirmed), misses (cleared), and false alarms
# (a real item confirmed that police later closed as a false alarm). $1: the sites in scope (NULL:
# all); $2, $3: first and last day (NULL: unbounded), each decision's day in its site's time zone,
# as for the rates. The label and level are the reviewer key's own (reference tables).
REVIEWER_STATS = """
SELECT d.reviewer,
       coalesce(k.label, '') AS label,
       coalesce(l.level, 1) AS level,
       count(*) FILTER (WHERE d.kind <> 'tip' AND d.decision <> 'escalate') AS decisions,
       count(*) FILTER (WHERE d.kind = 'tip' AND d.decision = 'confirm') AS tip_hits,
       count(*) FILTER (WHERE d.kind = 'tip' AND d.decision = 'clear') AS tip_misses,
       count(*) FILTER (WHERE d.kind <> 'tip' AND d.decision = 'confirm') AS confirms,
       count(*) FILTER (WHERE d.kind <> 'tip' AND d.decision = 'clear') AS clears,
       count(*) FILTER (WHERE d.kind <> 'tip' AND d.decision = 'escalate') AS escalations,
       count(*) FILTER (WHERE d.kind <> 'tip' AND d.decision = 'confirm'
                        AND a.disposition = 'false_alarm') AS false_alarms
FROM review_decisions d
LEFT JOIN sites s ON s.site_id = d.site_id  -- a site without a row: the default zone
LEFT JOIN alerts a ON a.site_id = d.site_id AND a.confirmed_item_id = d.item_id
LEFT JOIN api_keys k ON k.key_id = d.reviewer
LEFT JOIN reviewer_levels l ON l.key_id = d.reviewer
WHERE ($1::text[] IS NULL OR d.site_id = ANY($1::text[]))
  AND ($2::date IS NULL
       OR (d.decided_at AT TIME ZONE coalesce(s.timezone, 'Asia/Shanghai'))::date >= $2::date)
  AND ($3::date IS NULL
       OR (d.decided_at AT TIME ZONE coalesce(s.timezone, 'Asia/Shanghai'))::date <= $3::date)
GROUP BY d.reviewer, k.label, l.level
ORDER BY d.reviewer
"""
QUEUE_DEPTH = """
SELECT count(*) FROM review_items
WHERE status = 'pending' AND ($1::text[] IS NULL OR site_id = ANY($1::text[]))
"""


@dataclass(frozen=True, slots=True)
class ReviewItem:
    site_id: str
    item_id: UUID
    kind: str  # flagged, audit, tip
    level: int
    status: str
    scan_id: UUID | None
    event_id: UUID | None
    waybill_no: str | None
    findings: list[dict[str, Any]]
    score: float | None
    category: str | None
    image_sha256: str
    image_type: str
    tip_truth: list[dict[str, Any]] | None
    occurred_at: datetime
    created_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    # Once done: how, by whom, when.
    decision: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None


_FIELDS = tuple(ReviewItem.__dataclass_fields__)


def _item(r: asyncpg.Record) -> ReviewItem:
    d = {k: r[k] for k in _FIELDS}
    d["findings"] = json.loads(d["findings"])
    d["tip_truth"] = json.loads(d["tip_truth"]) if d["tip_truth"] is not None else None
    return ReviewItem(**d)


async def insert_item(
    conn: Conn,
    item: ReviewItem,
) -> bool:
    got = await conn.fetchval(
        INSERT_ITEM,
        item.site_id,
        item.item_id,
        item.kind,
        item.level,
        item.scan_id,
        item.event_id,
        item.waybill_no,
        json.dumps(item.findings),
        item.score,
        item.category,
        item.image_sha256,
        item.image_type,
        None if item.tip_truth is None else json.dumps(item.tip_truth),
        item.occurred_at,
        item.created_at,
        item.lease_owner,
        item.lease_until,
    )
    return got is not None


async def lease_next(
    conn: Conn, sites: list[str] | None, max_level: int, now: datetime, owner: str, until: datetime
) -> ReviewItem | None:
    row = await conn.fetchrow(NEXT_ITEM, sites, max_level, now, owner, until)
    return None if row is None else _item(row)


async def get_item(
    conn: Conn, item_id: UUID, sites: list[str] | None, *, for_update: bool = False
) -> ReviewItem | None:
    row = await conn.fetchrow(SELECT_ITEM_FOR_UPDATE if for_update else SELECT_ITEM, item_id, sites)
    return None if row is None else _item(row)


async def finish_item(
    conn: Conn,
    item: ReviewItem,
    decision: str,
    reviewer: str,
    now: datetime,
    category: str | None,
) -> None:
    await conn.execute(FINISH_ITEM, item.site_id, item.item_id, decision, reviewer, now, category)


async def release_lease(conn: Conn, item: ReviewItem) -> None:
    await conn.execute(RELEASE_LEASE, item.site_id, item.item_id)


async def record_skip(conn: Conn, item: ReviewItem, reviewer: str, now: datetime) -> None:
    await conn.execute(UPSERT_SKIP, item.site_id, item.item_id, reviewer, now)


SELECT_OWN_DECISION = """
SELECT decided_at, level FROM review_decisions
WHERE site_id = $1 AND item_id = $2 AND reviewer = $3 AND decision = $4
ORDER BY decided_at DESC LIMIT 1
"""


async def own_decision(
    conn: Conn, item: ReviewItem, reviewer: str, decision: str
) -> tuple[datetime, int] | None:
    """When ``reviewer`` last made ``decision`` on ``item``, and at which level (None: never)."""
    row = await conn.fetchrow(SELECT_OWN_DECISION, item.site_id, item.item_id, reviewer, decision)
    return None if row is None else (row["decided_at"], row["level"])


async def skipped_at(conn: Conn, item: ReviewItem, reviewer: str) -> datetime | None:
    """When ``reviewer`` last skipped ``item`` (None: never)."""
    got: datetime | None = await conn.fetchval(SELECT_SKIPPED, item.site_id, item.item_id, reviewer)
    return got


async def escalate_item(conn: Conn, item: ReviewItem) -> None:
    await conn.execute(ESCALATE_ITEM, item.site_id, item.item_id)


async def insert_decision(
    conn: Conn,
    item: ReviewItem,
    decision_id: UUID,
    reviewer: str,
    now: datetime,
    decision: str,
    category: str | None,
    note: str,
) -> None:
    await conn.execute(
        INSERT_DECISION,
        item.site_id,
        decision_id,
        item.item_id,
        item.kind,
        item.level,
        reviewer,
        now,
        decision,
        category,
        note,
    )


async def reviewer_level(conn: Conn, key_id: str) -> int:
    level = await conn.fetchval(SELECT_LEVEL, key_id)
    return 1 if level is None else int(level)


async def set_reviewer_level(conn: Conn, key_id: str, level: int) -> bool:
    """Set a reviewing key's level; False (nothing written) when no live key of a role that
    reviews has that id."""
    return await conn.fetchval(UPSERT_LEVEL, key_id, level) is not None


async def reviewer_stats(
    conn: Conn, sites: list[str] | None, first: date | None = None, last: date | None = None
) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(REVIEWER_STATS, sites, first, last)]


async def queue_depth(conn: Conn, sites: list[str] | None) -> int:
    return int(await conn.fetchval(QUEUE_DEPTH, sites))


SELECT_SCAN_EVENT = """
SELECT waybill_no, occurred_at, payload FROM events
WHERE site_id = $1 AND event_id = $2 AND event_type = 'xray.scanned'
"""
SELECT_UPLOAD_EVENT = "SELECT event_id FROM scan_uploads WHERE site_id = $1 AND scan_id = $2"
# A parcel's own flagged scans (not the review outcomes recorded against them).
SELECT_FLAGGED_SCAN_EVENTS = """
SELECT event_id FROM events
WHERE site_id = $1 AND waybill_no = $2 AND event_type = 'xray.scanned'
  AND payload->>'verdict' = 'flagged' AND payload->>'reviewed_event_id' IS NULL
ORDER BY occurred_at, event_id
"""


async def scan_event(conn: Conn, site_id: str, event_id: UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(SELECT_SCAN_EVENT, site_id, event_id)
    return row


async def upload_event_id(conn: Conn, site_id: str, scan_id: UUID) -> UUID | None:
    got: UUID | None = await conn.fetchval(SELECT_UPLOAD_EVENT, site_id, scan_id)
    return got


# The scan events of a parcel's flagged review items that nobody has decided yet: no reviewer,
# and no police officer closing the scan's own alert as released or a false alarm.
SELECT_FLAGS_AWAITING_REVIEW = """
SELECT r.event_id FROM review_items r
WHERE r.site_id = $1 AND r.waybill_no = $2 AND r.status = 'pending' AND r.kind = 'flagged'
  AND r.event_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM alerts a
                  WHERE a.site_id = r.site_id AND a.scan_id = r.scan_id AND a.status = 'closed'
                    AND a.disposition IN ('released', 'false_alarm'))
"""


async def flags_awaiting_review(conn: Conn, site_id: str, waybill_no: str) -> set[UUID]:
    """The parcel's flagged scan events still owed a decision: their review items are
    pending, and police have not dismissed their own alerts."""
    rows = await conn.fetch(SELECT_FLAGS_AWAITING_REVIEW, site_id, waybill_no)
    return {r["event_id"] for r in rows}


# Flagged scans of a parcel, other than one item's, that still wait for a reviewer.
SELECT_OTHER_PENDING_FLAGS = """
SELECT EXISTS (
    SELECT 1 FROM review_items
    WHERE site_id = $1 AND waybill_no = $2 AND status = 'pending' AND kind = 'flagged'
      AND item_id <> $3
)
"""


async def other_flags_pending(conn: Conn, site_id: str, waybill_no: str, item_id: UUID) -> bool:
    """Whether another flagged scan of the parcel still waits for review."""
    return bool(await conn.fetchval(SELECT_OTHER_PENDING_FLAGS, site_id, waybill_no, item_id))


async def flagged_scan_events(conn: Conn, site_id: str, waybill_no: str) -> list[UUID]:
    """The event ids of the parcel's flagged scans, oldest first."""
    rows = await conn.fetch(SELECT_FLAGGED_SCAN_EVENTS, site_id, waybill_no)
    return [r["event_id"] for r in rows]
