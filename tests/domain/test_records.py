"""Stored payloads read back as domain events: document expiry and review decisions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from screening.domain.events import ReviewOutcome, ScanVerdict, XrayScanned
from screening.domain.records import event_from_payload, realname_valid

BEIJING = timezone(timedelta(hours=8))


def test_document_expiry_is_judged_on_the_beijing_day_whatever_offset_was_sent() -> None:
    payload = {"document_type": "resident_id", "document_expires_on": "2024-06-30"}
    next_morning = datetime(2024, 7, 1, 6, 0, tzinfo=BEIJING)
    last_evening = datetime(2024, 6, 30, 23, 0, tzinfo=BEIJING)
    for at in (next_morning, next_morning.astimezone(UTC)):  # as sent, and as stored
        assert realname_valid(payload, at) == (False, "document_expired")
    for at in (last_evening, last_evening.astimezone(UTC)):
        assert realname_valid(payload, at) == (True, None)
    # A station sending UTC: 20:00Z on 30 June is already 1 July in Beijing.
    assert realname_valid(payload, datetime(2024, 6, 30, 20, 0, tzinfo=UTC))[0] is False


def test_a_review_event_names_the_scan_it_decides() -> None:
    scan_id, review_id = uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    event = event_from_payload(
        "xray.scanned",
        review_id,
        "S1",
        "SF1",
        at,
        {"verdict": "flagged", "review": "cleared", "reviewed_event_id": str(scan_id)},
    )
    assert event == XrayScanned(
        event.header, ScanVerdict.FLAGGED, ReviewOutcome.CLEARED, reviewed_event_id=scan_id
    )
    station = event_from_payload("xray.scanned", scan_id, "S1", "SF1", at, {"verdict": "clear"})
    assert isinstance(station, XrayScanned)
    assert station.reviewed_event_id is None
