"""Stored payloads read back as domain events: document expiry and review decisions."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone

from screening.domain.events import RealnameRegistered, ReviewOutcome, ScanVerdict, XrayScanned
from screening.domain.records import ContractAgreement, event_from_payload, realname_valid

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


def test_a_contract_customer_counts_when_ingest_found_its_agreement() -> None:
    at = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    on_file = {"contract_customer_ref": "C1", "contract_agreement": "SA-1"}
    missing = {"contract_customer_ref": "C1", "contract_agreement": None}
    legacy = {"contract_customer_ref": "C1"}  # logged before agreements were checked
    assert realname_valid(on_file, at) == (True, None)
    assert realname_valid(missing, at) == (False, "no_contract_agreement")
    assert realname_valid(legacy, at) == (True, None)
    event = event_from_payload("realname.registered", uuid.uuid4(), "S1", "SF1", at, missing)
    assert isinstance(event, RealnameRegistered)
    assert (event.contract_customer, event.document_valid) == (False, False)


def test_an_agreement_covers_the_beijing_days_of_its_period() -> None:
    agreement = ContractAgreement("SA-1", date(2026, 1, 1), date(2026, 6, 30))
    assert agreement.covers(datetime(2026, 6, 30, 23, 0, tzinfo=BEIJING))
    assert not agreement.covers(datetime(2026, 6, 30, 16, 30, tzinfo=UTC))  # 1 July in Beijing
    assert not agreement.covers(datetime(2025, 12, 31, 12, 0, tzinfo=BEIJING))
    assert ContractAgreement("SA-2", date(2026, 1, 1), None).covers(datetime.now(UTC))
