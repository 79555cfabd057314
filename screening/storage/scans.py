"""SQL for X-ray image uploads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID

from screening.storage import Conn

INSERT_UPLOAD = """
INSERT INTO scan_uploads (site_id, scan_id, event_id, waybill_no, scanner_id, occurred_at,
    received_at, content_digest, image_sha256, image_type, high_sha256, low_sha256, width, height,
    verdict, findings, max_scores, model_version, inference_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (site_id, scan_id) DO NOTHING
RETURNING scan_id
"""
SELECT_UPLOAD = """
SELECT site_id, scan_id, event_id, waybill_no, scanner_id, occurred_at, received_at,
       content_digest, image_sha256, image_type, high_sha256, low_sha256, width, height, verdict,
       findings, max_scores, model_version, inference_ms
FROM scan_uploads WHERE scan_id = $1 AND ($2::text[] IS NULL OR site_id = ANY($2::text[]))
LIMIT 2
"""
# Scans whose waybill was never read: kept, and reported with the site's rates (a scanner that
# cannot bind its images to parcels proves nothing about those parcels).
SELECT_UNBOUND_PER_DAY = """
SELECT (occurred_at AT TIME ZONE $4)::date AS day, count(*) AS n
FROM scan_uploads
WHERE site_id = $1 AND waybill_no IS NULL
  AND occurred_at >= ($2::date::timestamp AT TIME ZONE $4)
  AND occurred_at < (($3::date + 1)::timestamp AT TIME ZONE $4)
GROUP BY 1
"""
SELECT_THRESHOLDS = "SELECT xray_thresholds FROM sites WHERE site_id = $1"


@dataclass(frozen=True, slots=True)
class ScanUpload:
    site_id: str
    scan_id: UUID
    event_id: UUID | None
    waybill_no: str | None
    scanner_id: str
    occurred_at: datetime
    received_at: datetime
    content_digest: bytes
    image_sha256: str
    image_type: str
    high_sha256: str | None
    low_sha256: str | None
    width: int
    height: int
    verdict: str
    findings: list[dict[str, Any]]
    max_scores: dict[str, float]
    model_version: str
    inference_ms: float


async def insert_upload(conn: Conn, u: ScanUpload) -> bool:
    """Store the upload; False if this (site, scan_id) already exists."""
    got = await conn.fetchval(
        INSERT_UPLOAD,
        u.site_id,
        u.scan_id,
        u.event_id,
        u.waybill_no,
        u.scanner_id,
        u.occurred_at,
        u.received_at,
        u.content_digest,
        u.image_sha256,
        u.image_type,
        u.high_sha256,
        u.low_sha256,
        u.width,
        u.height,
        u.verdict,
        json.dumps(u.findings),
        json.dumps(u.max_scores),
        u.model_version,
        u.inference_ms,
    )
    return got is not None


def scan_image_url(base: str, scan_id: UUID, site_id: str) -> str:
    """Where the API serves a stored scan's image with its boxes. A scan id is unique within
    its site only, so the address names the site too."""
    return f"{base.rstrip('/')}/v1/scans/{scan_id}/image?overlay=boxes&site_id={quote(site_id)}"


async def find_uploads(conn: Conn, scan_id: UUID, site_ids: list[str] | None) -> list[ScanUpload]:
    rows = await conn.fetch(SELECT_UPLOAD, scan_id, site_ids)
    out = []
    for r in rows:
        d = dict(r)
        d["content_digest"] = bytes(d["content_digest"])
        d["findings"] = json.loads(d["findings"])
        d["max_scores"] = json.loads(d["max_scores"])
        out.append(ScanUpload(**d))
    return out


async def site_thresholds(conn: Conn, site_id: str) -> dict[str, float]:
    raw = await conn.fetchval(SELECT_THRESHOLDS, site_id)
    return {str(k): float(v) for k, v in json.loads(raw).items()} if raw else {}


async def unbound_per_day(
    conn: Conn, site_id: str, first: date, last: date, timezone: str
) -> dict[date, int]:
    rows = await conn.fetch(SELECT_UNBOUND_PER_DAY, site_id, first, last, timezone)
    return {r["day"]: int(r["n"]) for r in rows}
