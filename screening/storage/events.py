"""SQL for the event log and its per-type detail tables (real-name records, scans).

Inspections, seals and dispatches are views over the log (migration 0015), not tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import asyncpg

from screening.domain.events import EventType, ParcelEvent
from screening.domain.records import PreparedEvent, event_from_payload, realname_valid
from screening.storage import Conn
from screening.storage.parcels import StoredParcel, stored_parcel

ParcelKey = tuple[str, str]
EventKey = tuple[str, UUID]

# One statement writes a group's events and reads what the recomputation of their parcels needs:
# the log rows; for the rows that were new, their per-type detail rows (a duplicate event gets
# none: its details are already there); the parcels' stored rows; and the events those parcels
# had before this statement. The events come as one JSON document, an array of
# {"p": payload, "r": received_at, "d": hex payload_digest}: the log's columns are the payload's
# own fields (the wire models require them), and the detail rows are read out of each new row's
# payload too. One text parameter costs the driver a fraction of what eight 500-element arrays
# do (asyncpg checks every element of an array against collections.abc classes, a Python-level
# isinstance each); PostgreSQL parses the document once, as it parsed each payload before. Only
# the real-name records, whose sealed columns are not in the payload, come as arrays that name
# their events by (site_id, event_id). It runs after the parcels are locked, so its snapshot
# holds every committed event of them; the rows it inserts itself are not in that snapshot (the
# caller adds them). What was new comes back as positions in the document, each with its
# record_digest: SHA-256 of the jsonb as stored, exactly as storage.ledger derives it when
# verifying.
INSERT_EVENTS = """
WITH input AS (
    SELECT r.ord, r.e->'p' AS payload, r.e->'p'->>'site_id' AS site_id,
           (r.e->'p'->>'event_id')::uuid AS event_id, (r.e->>'r')::timestamptz AS received_at,
           decode(r.e->>'d', 'hex') AS payload_digest
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS r(e, ord)
), ev AS (
    INSERT INTO events (site_id, event_id, event_type, waybill_no, occurred_at, received_at,
                        payload, payload_digest)
    SELECT site_id, event_id, payload->>'type', payload->>'waybill_no',
           (payload->>'occurred_at')::timestamptz, received_at, payload, payload_digest
    FROM input ORDER BY ord
    ON CONFLICT (site_id, event_id) DO NOTHING
    RETURNING site_id, event_id, event_type, waybill_no, occurred_at, payload,
              sha256(convert_to(payload::text, 'UTF8')) AS record_digest
), scans_new AS (
    INSERT INTO scans (site_id, event_id, waybill_no, occurred_at, scanner_id, image_ref, verdict,
                       detections, model_version)
    SELECT site_id, event_id, waybill_no, occurred_at, payload->>'scanner_id',
           payload->>'image_ref', payload->>'verdict',
           coalesce(payload->'detections', '[]'::jsonb), payload->>'model_version'
    FROM ev WHERE event_type = 'xray.scanned' AND payload->>'reviewed_event_id' IS NULL
), realname_new AS (
    INSERT INTO realname_records (site_id, event_id, waybill_no, occurred_at,
        contract_customer_ref, document_type, document_masked, document_hmac, pii_key_id,
        document_sealed, name_masked, name_sealed, phone_masked, phone_sealed,
        document_expires_on, verification, document_valid)
    SELECT ev.site_id, ev.event_id, ev.waybill_no, ev.occurred_at, d.contract_customer_ref,
           d.document_type, d.document_masked, d.document_hmac, d.pii_key_id, d.document_sealed,
           d.name_masked, d.name_sealed, d.phone_masked, d.phone_sealed, d.document_expires_on,
           d.verification, d.document_valid
    FROM unnest($2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::bytea[],
                $8::text[], $9::bytea[], $10::text[], $11::bytea[], $12::text[], $13::bytea[],
                $14::date[], $15::text[], $16::bool[])
         AS d(site_id, event_id, contract_customer_ref, document_type, document_masked,
              document_hmac, pii_key_id, document_sealed, name_masked, name_sealed,
              phone_masked, phone_sealed, document_expires_on, verification, document_valid)
    JOIN ev ON ev.site_id = d.site_id AND ev.event_id = d.event_id
), parcel_keys AS (
    SELECT DISTINCT site_id, payload->>'waybill_no' AS waybill_no FROM input
)
-- The reads probe the indexes once per parcel of the group: OFFSET 0 keeps each lateral
-- subquery from being flattened into a join that the planner, which cannot see how few rows
-- the document holds, might run as a scan of the whole table.
SELECT i.positions, i.record_digests,
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
FROM (SELECT array_agg(input.ord - 1 ORDER BY input.ord) AS positions,
             array_agg(ev.record_digest ORDER BY input.ord) AS record_digests
      FROM ev JOIN input ON input.site_id = ev.site_id AND input.event_id = ev.event_id) AS i
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

    # The events that were new (the rest already existed): each one's position in the events
    # given, and its record_digest as stored (``storage.ledger``), in the order given.
    inserted: list[tuple[int, bytes]]
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
        return InsertedGroup([], {}, {})
    realname = [_realname_row(p) for p in prepared if p.event_type is EventType.REALNAME_REGISTERED]
    realname_columns = (
        [list(column) for column in zip(*realname, strict=True)]
        if realname
        else [[] for _ in range(_REALNAME_COLUMNS)]
    )
    row = await conn.fetchrow(INSERT_EVENTS, _input_document(prepared), *realname_columns)
    assert row is not None  # an aggregate query returns one row
    inserted = list(zip(row["positions"] or (), row["record_digests"] or (), strict=True))
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


def _input_document(prepared: Sequence[PreparedEvent]) -> str:
    """INSERT_EVENTS' JSON document of ``prepared``, in order."""
    received: dict[datetime, str] = {}  # a group's events share a few request times
    parts = []
    for p in prepared:
        at = received.get(p.received_at)
        if at is None:
            at = received[p.received_at] = p.received_at.isoformat()
        payload = p.payload_json or _json(p.payload)
        parts.append(f'{{"r":"{at}","d":"{p.digest.hex()}","p":{payload}}}')
    return "[" + ",".join(parts) + "]"


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
    """The real-name detail columns of one event ($2..$16 of INSERT_EVENTS, in order)."""
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


# --- sealed personal data of real-name records (services.pii) ---------------------------------

_SEALED_COLUMNS = """
SELECT site_id, event_id, pii_key_id, document_sealed AS document_number_sealed, name_sealed,
       phone_sealed
FROM realname_records
"""
# Pages in key order: a range scan of the primary key from where the last page ended.
LOCK_SEALED_FIRST = _SEALED_COLUMNS + """
WHERE pii_key_id IS NOT NULL
ORDER BY site_id, event_id LIMIT $1 FOR UPDATE
"""
LOCK_SEALED_AFTER = _SEALED_COLUMNS + """
WHERE (site_id, event_id) > ($1, $2) AND pii_key_id IS NOT NULL
ORDER BY site_id, event_id LIMIT $3 FOR UPDATE
"""
UPDATE_SEALED = """
UPDATE realname_records r
SET pii_key_id = $1, document_sealed = u.document_sealed, name_sealed = u.name_sealed,
    phone_sealed = u.phone_sealed
FROM unnest($2::text[], $3::uuid[], $4::bytea[], $5::bytea[], $6::bytea[])
     AS u(site_id, event_id, document_sealed, name_sealed, phone_sealed)
WHERE r.site_id = u.site_id AND r.event_id = u.event_id
"""
COUNT_SEALED_UNDER = "SELECT count(*) FROM realname_records WHERE pii_key_id = $1"
SEALED_BY_KEY = """
SELECT r.pii_key_id, count(*) AS records, max(e.received_at) AS last_received
FROM realname_records r
LEFT JOIN events e ON e.site_id = r.site_id AND e.event_id = r.event_id
WHERE r.pii_key_id IS NOT NULL
GROUP BY r.pii_key_id
"""


async def lock_sealed_records(
    conn: Conn, after: tuple[str, UUID] | None, limit: int
) -> list[asyncpg.Record]:
    """The next ``limit`` real-name records with sealed fields after ``after`` (site_id,
    event_id), locked for the caller's transaction; columns ``{field}_sealed`` by the field
    names their associated data binds (protection.field_associated_data)."""
    if after is None:
        return list(await conn.fetch(LOCK_SEALED_FIRST, limit))
    return list(await conn.fetch(LOCK_SEALED_AFTER, *after, limit))


async def update_sealed_records(
    conn: Conn, key_id: str, rows: Sequence[tuple[str, UUID, Mapping[str, bytes | None]]]
) -> None:
    """Store records' fields sealed anew under ``key_id``: (site_id, event_id, blobs by field
    name: document_number, name, phone)."""
    if not rows:
        return
    await conn.execute(
        UPDATE_SEALED,
        key_id,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2]["document_number"] for r in rows],
        [r[2]["name"] for r in rows],
        [r[2]["phone"] for r in rows],
    )


async def count_sealed_under(conn: Conn, key_id: str) -> int:
    count: int = await conn.fetchval(COUNT_SEALED_UNDER, key_id)
    return count


async def sealed_by_key(conn: Conn) -> dict[str, tuple[int, datetime | None]]:
    """Each key id that sealed stored records: how many, and when the latest was received."""
    rows = await conn.fetch(SEALED_BY_KEY)
    return {r["pii_key_id"]: (r["records"], r["last_received"]) for r in rows}
