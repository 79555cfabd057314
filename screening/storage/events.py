"""SQL for the event log and its per-type detail tables (real-name, inspections, seals, ...)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any
from uuid import UUID

from screening.domain.events import EventType, ParcelEvent
from screening.domain.records import PreparedEvent, event_from_payload, realname_valid
from screening.storage import Conn

ParcelKey = tuple[str, str]
EventKey = tuple[str, UUID]

INSERT_EVENTS = """
INSERT INTO events (site_id, event_id, event_type, waybill_no, occurred_at, received_at,
                    payload, payload_digest)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::timestamptz[], $7::jsonb[], $8::bytea[])
ON CONFLICT (site_id, event_id) DO NOTHING
RETURNING site_id, event_id
"""

SELECT_DIGESTS = """
SELECT e.site_id, e.event_id, e.payload_digest
FROM events e
JOIN unnest($1::text[], $2::uuid[]) AS k(site_id, event_id)
  ON e.site_id = k.site_id AND e.event_id = k.event_id
"""

SELECT_PARCEL_EVENTS = """
SELECT e.site_id, e.waybill_no, e.event_id, e.event_type, e.occurred_at, e.received_at, e.payload
FROM events e
JOIN unnest($1::text[], $2::text[]) AS k(site_id, waybill_no)
  ON e.site_id = k.site_id AND e.waybill_no = k.waybill_no
"""

INSERT_REALNAME = """
INSERT INTO realname_records (site_id, event_id, waybill_no, occurred_at, contract_customer_ref,
    document_type, document_masked, document_hmac, pii_key_id, document_sealed, name_masked,
    name_sealed, phone_masked, phone_sealed, document_expires_on, verification, document_valid)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
"""
INSERT_INSPECTIONS = """
INSERT INTO inspections (site_id, event_id, waybill_no, occurred_at, clerk_id, result, note)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[],
                     $6::text[], $7::text[])
"""
INSERT_SEALS = """
INSERT INTO seals (site_id, event_id, waybill_no, occurred_at, clerk_id)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[])
"""
INSERT_SCANS = """
INSERT INTO scans (site_id, event_id, waybill_no, occurred_at, scanner_id, image_ref, verdict,
                   detections, model_version)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[],
                     $6::text[], $7::text[], $8::jsonb[], $9::text[])
"""
INSERT_DISPATCHES = """
INSERT INTO dispatches (site_id, event_id, waybill_no, occurred_at, carrier)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[])
"""


async def insert_events(conn: Conn, prepared: Sequence[PreparedEvent]) -> set[EventKey]:
    """Append events to the log; returns the keys that were new (the rest already existed)."""
    if not prepared:
        return set()
    rows = await conn.fetch(
        INSERT_EVENTS,
        [p.site_id for p in prepared],
        [p.event_id for p in prepared],
        [p.event_type.value for p in prepared],
        [p.waybill_no for p in prepared],
        [p.occurred_at for p in prepared],
        [p.received_at for p in prepared],
        [json.dumps(p.payload, ensure_ascii=False, separators=(",", ":")) for p in prepared],
        [p.digest for p in prepared],
    )
    return {(r["site_id"], r["event_id"]) for r in rows}


async def fetch_digests(conn: Conn, keys: Iterable[EventKey]) -> dict[EventKey, bytes]:
    keys = list(keys)
    if not keys:
        return {}
    rows = await conn.fetch(SELECT_DIGESTS, [k[0] for k in keys], [k[1] for k in keys])
    return {(r["site_id"], r["event_id"]): bytes(r["payload_digest"]) for r in rows}


async def insert_details(conn: Conn, prepared: Sequence[PreparedEvent]) -> None:
    """Write each new event's row in its per-type table (same transaction as the log)."""
    by_type: dict[EventType, list[PreparedEvent]] = defaultdict(list)
    for p in prepared:
        by_type[p.event_type].append(p)

    def base(items: list[PreparedEvent]) -> list[list[Any]]:
        return [
            [p.site_id for p in items],
            [p.event_id for p in items],
            [p.waybill_no for p in items],
            [p.occurred_at for p in items],
        ]

    if items := by_type.get(EventType.INSPECTION_COMPLETED):
        await conn.execute(
            INSERT_INSPECTIONS,
            *base(items),
            [p.payload["clerk_id"] for p in items],
            [p.payload["result"] for p in items],
            [p.payload.get("note", "") for p in items],
        )
    if items := by_type.get(EventType.PARCEL_SEALED):
        await conn.execute(INSERT_SEALS, *base(items), [p.payload["clerk_id"] for p in items])
    if items := by_type.get(EventType.XRAY_SCANNED):
        await conn.execute(
            INSERT_SCANS,
            *base(items),
            [p.payload["scanner_id"] for p in items],
            [p.payload.get("image_ref") for p in items],
            [p.payload["verdict"] for p in items],
            [json.dumps(p.payload.get("detections", [])) for p in items],
            [p.payload.get("model_version") for p in items],
        )
    if items := by_type.get(EventType.PARCEL_DISPATCHED):
        await conn.execute(
            INSERT_DISPATCHES, *base(items), [p.payload.get("carrier") for p in items]
        )
    if items := by_type.get(EventType.REALNAME_REGISTERED):
        await conn.executemany(INSERT_REALNAME, [_realname_row(p) for p in items])


def _realname_row(p: PreparedEvent) -> tuple[Any, ...]:
    valid, _ = realname_valid(p.payload, p.occurred_at)
    pd = p.personal_data
    expires = p.payload.get("document_expires_on")
    return (
        p.site_id,
        p.event_id,
        p.waybill_no,
        p.occurred_at,
        p.payload.get("contract_customer_ref"),
        pd.document_type if pd else None,
        pd.document_masked if pd else None,
        pd.document_hmac if pd else None,
        pd.key_id if pd else None,
        pd.document_sealed if pd else None,
        pd.name_masked if pd else None,
        pd.name_sealed if pd else None,
        pd.phone_masked if pd else None,
        pd.phone_sealed if pd else None,
        date.fromisoformat(expires) if expires else None,
        p.payload.get("verification", "passed"),
        valid,
    )


async def load_parcel_events(
    conn: Conn, keys: Iterable[ParcelKey]
) -> dict[ParcelKey, list[ParcelEvent]]:
    """All logged events of the given parcels, as domain events."""
    keys = list(keys)
    out: dict[ParcelKey, list[ParcelEvent]] = {k: [] for k in keys}
    if not keys:
        return out
    rows = await conn.fetch(SELECT_PARCEL_EVENTS, [k[0] for k in keys], [k[1] for k in keys])
    for r in rows:
        out[(r["site_id"], r["waybill_no"])].append(
            event_from_payload(
                r["event_type"],
                r["event_id"],
                r["site_id"],
                r["waybill_no"],
                r["occurred_at"],
                json.loads(r["payload"]),
            )
        )
    return out


SELECT_TIMELINE = """
SELECT event_id, event_type, occurred_at, received_at, payload
FROM events WHERE site_id = $1 AND waybill_no = $2
ORDER BY occurred_at, event_id
"""


async def parcel_timeline(conn: Conn, site_id: str, waybill_no: str) -> list[dict[str, Any]]:
    """The parcel's events in occurred_at order, redacted payloads only."""
    rows = await conn.fetch(SELECT_TIMELINE, site_id, waybill_no)
    return [
        {
            "event_id": str(r["event_id"]),
            "type": r["event_type"],
            "occurred_at": r["occurred_at"].isoformat(),
            "received_at": r["received_at"].isoformat(),
            "payload": json.loads(r["payload"]),
        }
        for r in rows
    ]
