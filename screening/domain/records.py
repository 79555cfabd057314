"""Stored event records: the redacted payload kept in the event log, and the domain event it means.

An accepted event is kept as its wire payload with personal data replaced by masked forms; the
document number, name and phone live encrypted in the real-name record. This module turns such a
payload back into a domain event, so compliance can be recomputed from the log at any time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from screening.domain.events import (
    EventHeader,
    EventType,
    Flow,
    InspectionCompleted,
    InspectionResult,
    ParcelDispatched,
    ParcelEvent,
    ParcelReceived,
    ParcelSealed,
    RealnameRegistered,
    ReviewOutcome,
    ScanVerdict,
    XrayScanned,
)


@dataclass(frozen=True, slots=True)
class SealedPersonalData:
    """Encrypted sender identity for a real-name record (AES-GCM, see screening.protection)."""

    key_id: str
    document_type: str
    document_masked: str
    document_hmac: bytes
    document_sealed: bytes
    name_masked: str
    name_sealed: bytes
    phone_masked: str | None
    phone_sealed: bytes | None


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """A validated event ready to be written: redacted payload, digest, and its domain meaning."""

    event_type: EventType
    site_id: str
    event_id: UUID
    waybill_no: str
    occurred_at: datetime
    received_at: datetime
    payload: Mapping[str, Any]  # redacted wire payload (JSON-compatible)
    digest: bytes  # keyed HMAC of the full canonical payload
    event: ParcelEvent
    personal_data: SealedPersonalData | None = None
    # ``payload`` as JSON text when the preparer already has it (saves encoding it twice).
    payload_json: str | None = None

    @property
    def key(self) -> tuple[str, UUID]:
        return (self.site_id, self.event_id)

    @property
    def parcel_key(self) -> tuple[str, str]:
        return (self.site_id, self.waybill_no)


@dataclass(frozen=True, slots=True)
class ContractAgreement:
    """A contract customer's security agreement on file (storage.contracts)."""

    agreement_no: str
    valid_from: date
    valid_until: date | None

    def covers(self, at: datetime) -> bool:
        day = document_day(at)
        return self.valid_from <= day and (self.valid_until is None or day <= self.valid_until)


@dataclass(frozen=True, slots=True)
class ContractCustomer:
    """A site's contract customer (协议客户): who it is, and its agreement (USCC checked)."""

    site_id: str
    customer_ref: str
    name: str
    uscc: str
    agreement: ContractAgreement


# What ingest writes into a contract customer's realname.registered payload: the agreement it
# found on file for the event's day, or None when there was none.
CONTRACT_AGREEMENT = "contract_agreement"


def realname_valid(payload: Mapping[str, Any], occurred_at: datetime) -> tuple[bool, str | None]:
    """Whether a real-name record proves identity: a contract customer's when its security
    agreement was on file for the day; a document only when it was checked against its holder
    and had not expired on the day of the event."""
    if payload.get("contract_customer_ref"):
        # Events logged before agreements were checked carry no such key: accepted as they were.
        if CONTRACT_AGREEMENT in payload and not payload[CONTRACT_AGREEMENT]:
            return False, "no_contract_agreement"
        return True, None
    if payload.get("verification", "passed") != "passed":
        return False, "verification_failed"
    expires = payload.get("document_expires_on")
    if expires is not None and date.fromisoformat(str(expires)) < document_day(occurred_at):
        return False, "document_expired"
    return True, None


# A Chinese identity document's validity dates are Beijing-time calendar days: the day of the
# check is cut there, whatever offset the station sent or the site's own time zone, so the same
# event is judged alike at ingest and when its parcel is recomputed from the log (stored in UTC).
DOCUMENT_TIMEZONE = ZoneInfo("Asia/Shanghai")


def document_day(at: datetime) -> date:
    return at.astimezone(DOCUMENT_TIMEZONE).date()


# Members by value: a dict lookup, where calling the enum costs about five times as much, on a
# path that runs for every event ingested and every event of a recomputed parcel.
EVENT_TYPES = {m.value: m for m in EventType}
_FLOWS = {m.value: m for m in Flow}
_INSPECTION_RESULTS = {m.value: m for m in InspectionResult}
_VERDICTS = {m.value: m for m in ScanVerdict}


def event_from_payload(
    event_type: str,
    event_id: UUID,
    site_id: str,
    waybill_no: str,
    occurred_at: datetime,
    payload: Mapping[str, Any],
) -> ParcelEvent:
    """The domain event a stored (redacted) payload stands for."""
    header = EventHeader(event_id, site_id, waybill_no, occurred_at)
    kind = EVENT_TYPES.get(event_type) or EventType(event_type)  # the call raises ValueError
    if kind is EventType.PARCEL_RECEIVED:
        flow = payload["flow"]
        return ParcelReceived(
            header, carrier=str(payload["carrier"]), flow=_FLOWS.get(flow) or Flow(flow)
        )
    if kind is EventType.REALNAME_REGISTERED:
        valid, reason = realname_valid(payload, occurred_at)
        return RealnameRegistered(
            header,
            contract_customer=bool(payload.get("contract_customer_ref")) and valid,
            document_valid=valid,
            invalid_reason=reason,
        )
    if kind is EventType.INSPECTION_COMPLETED:
        result = payload["result"]
        return InspectionCompleted(
            header, result=_INSPECTION_RESULTS.get(result) or InspectionResult(result)
        )
    if kind is EventType.PARCEL_SEALED:
        return ParcelSealed(header)
    if kind is EventType.XRAY_SCANNED:
        review = payload.get("review")
        reviewed = payload.get("reviewed_event_id")
        return XrayScanned(
            header,
            verdict=_VERDICTS.get(payload["verdict"]) or ScanVerdict(payload["verdict"]),
            review=ReviewOutcome(review) if review else None,
            reviewed_event_id=UUID(str(reviewed)) if reviewed else None,
        )
    return ParcelDispatched(header)
