"""Review outcomes in the event log, where compliance reads them.

A reviewer's (or police officer's) judgement on a flagged scan is appended as a *new*
``xray.scanned`` event that repeats the scan and carries ``review: cleared|confirmed`` — the field
``screening.domain.records.event_from_payload`` already reads. Nothing already stored is edited, so
the event log (and any ledger over it) stays append-only, and the parcel's status and the site's
rates are recomputed by the ordinary ingest path (``commit_events``).

Its ``occurred_at`` is the decision time (never earlier than the scan): a flag cleared only after
the parcel left still counts as ``dispatched_while_flagged``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from screening.domain.events import EventType
from screening.domain.records import PreparedEvent, event_from_payload
from screening.protection import PersonalDataVault
from screening.services.ingest import canonical_text, commit_events
from screening.storage import Conn
from screening.storage import parcels as parcel_store
from screening.storage import review as review_store

REVIEW_EVENT_NAMESPACE = uuid.UUID("2b0d7c53-8d8e-4f0e-a9c4-5e7f1d3b9a61")


async def lock_parcel(conn: Conn, site_id: str, waybill_no: str) -> None:
    """Take the parcel's ingest lock first in a review or police transaction that changes its
    holds and then appends an outcome event: ingest takes the parcel lock before it writes
    holds, so the same order here cannot deadlock with it (the lock is re-entrant)."""
    await parcel_store.lock_parcels_read_sites(conn, {(site_id, waybill_no)})


async def append_review_event(
    conn: Conn,
    vault: PersonalDataVault,
    site_id: str,
    scan_event_id: uuid.UUID,
    outcome: str,  # ReviewOutcome value: cleared or confirmed
    actor: str,
    decision_key: str,  # what decided (review item, alert): makes the event id deterministic
    now: datetime,
) -> bool:
    """Append the review outcome in the caller's transaction; False when the scan is unknown."""
    row = await review_store.scan_event(conn, site_id, scan_event_id)
    if row is None:
        return False
    occurred: datetime = max(now, row["occurred_at"] + timedelta(microseconds=1))
    event_id = uuid.uuid5(REVIEW_EVENT_NAMESPACE, f"{site_id}/{decision_key}/{outcome}")
    payload: dict[str, Any] = json.loads(row["payload"])
    payload.update(
        event_id=str(event_id),
        occurred_at=occurred.isoformat(),
        verdict="flagged",
        review=outcome,
        reviewed_event_id=str(scan_event_id),
        reviewed_by=actor,
    )
    waybill_no = str(row["waybill_no"])
    prepared = PreparedEvent(
        event_type=EventType.XRAY_SCANNED,
        site_id=site_id,
        event_id=event_id,
        waybill_no=waybill_no,
        occurred_at=occurred,
        received_at=now,
        payload=payload,
        digest=vault.digest("event", canonical_text(payload)),
        event=event_from_payload(
            EventType.XRAY_SCANNED.value, event_id, site_id, waybill_no, occurred, payload
        ),
    )
    await commit_events(conn, [prepared], now)
    return True
