"""SQL for the event log and its per-type detail tables (real-name records, scans).

Inspections, seals and dispatches are views over the log (migration 0015), not tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from screening.domain.events import EventType, ParcelEvent
from screening.domain.ledger import LedgerEvent
from screening.domain.records import PreparedEvent, event_from_payload, realname_valid
from screening.storage import Conn
from screening.storage.parcels import StoredParcel, stored_parcel

ParcelKey = tuple[str, str]
EventKey = tuple[str, UUID]

# One statement writes a group's events and reads what the recomputation of their parcels needs:
# the log rows; for the rows that were new, their per-type detail rows (a duplicate event gets
# none: its details are already there); the parcels' stored rows; and the events those parcels
# had before this statement. The detail rows are read out of each new log row's payload in SQL
# (the fields the types' wire models require), so the driver encodes each event's values once;
# only the real-name records, whose sealed columns are not in the payload, come as arrays that
# name their events by (site_id, event_id). It runs after the parcels are locked, so its
# snapshot holds every committed event of them; the rows it inserts itself are not in that
# snapshot (the caller adds them). Each new row comes back with its record_digest: SHA-256 of
# the jsonb as stored, exactly as storage.ledger derives it when verifying.
INSERT_EVENTS = """
WITH ev AS (
    INSERT INTO events (site_id, event_id, event_type, waybill_no, occurred_at, received_at,
                        payload, payload_digest)
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::timestamptz[], $7::jsonb[], $8::bytea[])
    ON CONFLICT (site_id, event_id) DO NOTHING
    RETURNING site_id, event_id, event_type, waybill_no, occurred_at, payload,
              sha256(convert_to(payload::text, 'UTF8')) AS record_digest
), scans_new AS (
    INSERT INTO scans (site_id, event_id, waybill_no, occurred_at, scanner_id, image_ref, verdict,
                       detections, model_version)
    SELECT site_id, event_id, waybill_no, occurred_at, payload->>'scanner_id',
           payload->>'image_ref', payload->>'verdict',
           coalesce(payload->'detections', '[]'::jsonb), payload->>'model_version'
    FROM ev WHERE event_type = 'xray.scanned'
), realname_new AS (
    INSERT INTO realname_records (site_id, event_id, waybill_no, occurred_at,
        contract_customer_ref, document_type, document_masked, document_hmac, pii_key_id,
        document_sealed, name_masked, name_sealed, phone_masked, phone_sealed,
        document_expires_on, verification, document_valid)
    SELECT ev.site_id, ev.event_id, ev.waybill_no, ev.occurred_at, d.contract_customer_ref,
           d.document_type, d.document_masked, d.document_hmac, d.pii_key_id, d.document_sealed,
           d.name_masked, d.name_sealed, d.phone_masked, d.phone_sealed, d.document_expires_on,
           d.verification, d.document_valid
    FROM unnest($9::text[], $10::uuid[], $11::text[], $12::text[], $13::text[], $14::bytea[],
                $15::text[], $16::bytea[], $17::text[], $18::bytea[], $19::text[], $20::bytea[],
                $21::date[], $22::text[], $23::bool[])
         AS d(site_id, event_id, contract_customer_ref, document_type, document_masked,
              document_hmac, pii_key_id, document_sealed, name_masked, name_sealed,
              phone_masked, phone_sealed, document_expires_on, verification, document_valid)
    JOIN ev ON ev.site_id = d.site_id AND ev.event_id = d.event_id
), parcel_keys AS (
    SELECT DISTINCT site_id, waybill_no
    FROM unnest($1::text[], $4::text[]) AS k(site_id, waybill_no)
)
-- The reads probe the indexes once per parcel of the group: OFFSET 0 keeps each lateral
-- subquery from being flattened into a join that the planner, which cannot see how few rows
-- the arrays hold, might run as a scan of the whole table.
SELECT i.site_ids, i.event_ids, i.record_digests,
    (SELECT json_agg(json_build_array(p.site_id, p.waybill_no, p.dispatch_day, p.rate_flow,
                                      p.xray_required, p.realname_ok, p.inspection_ok,
                                      p.xray_ok, p.compliant, p.problems, p.dispatched_at))
     FROM parcel_keys k,
          LATERAL (SELECT * FROM parcels p
                   WHERE p.site_id = k.site_id AND p.waybill_no = k.waybill_no OFFSET 0) p
    ) AS parcels,
    (SELECT json_agg(json_build_array(e.site_id, e.waybill_no, e.event_id, e.event_type,
                                      e.occurred_at, e.payload))
     FROM parcel_keys k,
          LATERAL (SELECT * FROM events e
                   WHERE e.site_id = k.site_id AND e.waybill_no = k.waybill_no OFFSET 0) e
    ) AS history
FROM (SELECT array_agg(site_id) AS site_ids, array_agg(event_id) AS event_ids,
             array_agg(record_digest) AS record_digests
      FROM ev) AS i
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


@dataclass(frozen=True, slots=True)
class InsertedGroup:
    """What ``insert_events`` wrote and read for one group."""

    # The events that were new (the rest already existed), each with its ledger columns as
    # stored, ready for ``storage.ledger.append_stored``.
    inserted: dict[EventKey, LedgerEvent]
    # The group's parcels that had a row before this statement.
    parcels: dict[ParcelKey, StoredParcel]
    # The events the group's parcels had before this statement (not the ones it inserted).
    history: dict[ParcelKey, list[ParcelEvent]]


async def insert_events(conn: Conn, prepared: Sequence[PreparedEvent]) -> InsertedGroup:
    """Append events to the log with their per-type detail rows and read their parcels' stored
    rows and earlier events, in one round trip. Rows are written in the order of ``prepared``.

    Call it with the parcels locked (``storage.parcels.lock_parcels_read_sites``) in an earlier
    statement of the transaction, so the read sees every committed event of those parcels.
    """
    if not prepared:
        return InsertedGroup({}, {}, {})
    realname = [
        _realname_row(p) for p in prepared if p.event_type is EventType.REALNAME_REGISTERED
    ]
    realname_columns = (
        [list(column) for column in zip(*realname, strict=True)]
        if realname
        else [[] for _ in range(_REALNAME_COLUMNS)]
    )
    row = await conn.fetchrow(
        INSERT_EVENTS,
        [p.site_id for p in prepared],
        [p.event_id for p in prepared],
        [p.event_type for p in prepared],  # a StrEnum: a str, encoded as text
        [p.waybill_no for p in prepared],
        [p.occurred_at for p in prepared],
        [p.received_at for p in prepared],
        [p.payload_json or _json(p.payload) for p in prepared],
        [p.digest for p in prepared],
        *realname_columns,  # real-name records
    )
    assert row is not None  # an aggregate query returns one row
    by_key = {p.key: p for p in prepared}
    inserted: dict[EventKey, LedgerEvent] = {}
    for site_id, event_id, record_digest in zip(
        row["site_ids"] or (), row["event_ids"] or (), row["record_digests"] or (), strict=True
    ):
        # The other ledger columns are the values just written (text, bytea and microsecond
        # timestamps come back from PostgreSQL unchanged), so they are not read back.
        p = by_key[(site_id, event_id)]
        inserted[p.key] = LedgerEvent(
            site_id=p.site_id,
            event_id=p.event_id,
            event_type=p.event_type,  # a StrEnum member is its str value
            waybill_no=p.waybill_no,
            occurred_at=p.occurred_at,
            payload_digest=p.digest,
            record_digest=record_digest,
        )
    parcels = {
        (site_id, waybill_no): stored_parcel(
            date.fromisoformat(day) if day is not None else None,
            rate_flow,
            xray_required,
            realname_ok,
            inspection_ok,
            xray_ok,
            compliant,
            problems,
            datetime.fromisoformat(dispatched_at) if dispatched_at is not None else None,
        )
        for (
            site_id,
            waybill_no,
            day,
            rate_flow,
            xray_required,
            realname_ok,
            inspection_ok,
            xray_ok,
            compliant,
            problems,
            dispatched_at,
        ) in json.loads(row["parcels"] or "[]")
    }
    history: dict[ParcelKey, list[ParcelEvent]] = {}
    for site_id, waybill_no, event_id, event_type, occurred_at, payload in json.loads(
        row["history"] or "[]"
    ):
        history.setdefault((site_id, waybill_no), []).append(
            event_from_payload(
                event_type,
                UUID(event_id),
                site_id,
                waybill_no,
                datetime.fromisoformat(occurred_at).astimezone(UTC),
                payload,
            )
        )
    return InsertedGroup(inserted, parcels, history)


def _json(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


async def fetch_digests(conn: Conn, keys: Iterable[EventKey]) -> dict[EventKey, bytes]:
    keys = list(keys)
    if not keys:
        return {}
    rows = await conn.fetch(SELECT_DIGESTS, [k[0] for k in keys], [k[1] for k in keys])
    return {(r["site_id"], r["event_id"]): bytes(r["payload_digest"]) for r in rows}


_REALNAME_COLUMNS = 15


def _realname_row(p: PreparedEvent) -> tuple[Any, ...]:
    """The real-name detail columns of one event ($27..$41 of INSERT_EVENTS, in order)."""
    valid, _ = realname_valid(p.payload, p.occurred_at)
    pd = p.personal_data
    expires = p.payload.get("document_expires_on")
    return (
        p.site_id,
        p.event_id,
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
