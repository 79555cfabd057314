"""Parcel events as the domain sees them: immutable values, personal data already removed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID


class EventType(StrEnum):
    PARCEL_RECEIVED = "parcel.received"
    REALNAME_REGISTERED = "realname.registered"
    INSPECTION_COMPLETED = "inspection.completed"
    PARCEL_SEALED = "parcel.sealed"
    XRAY_SCANNED = "xray.scanned"
    PARCEL_DISPATCHED = "parcel.dispatched"


class Flow(StrEnum):
    """Route class of a parcel; the site's X-ray policy says which flows must be screened."""

    AIR = "air"
    RAIL = "rail"
    INTERNATIONAL = "international"
    INTER_PROVINCE = "inter_province"
    INTRA_PROVINCE = "intra_province"
    SAME_CITY = "same_city"


ALL_FLOWS: frozenset[Flow] = frozenset(Flow)
UNKNOWN_FLOW = "unknown"  # rate bucket for parcels dispatched without a parcel.received event


class InspectionResult(StrEnum):
    PASS = "pass"
    REFUSED = "refused"
    PROHIBITED_FOUND = "prohibited_found"


class ScanVerdict(StrEnum):
    CLEAR = "clear"
    FLAGGED = "flagged"


class ReviewOutcome(StrEnum):
    CLEARED = "cleared"
    CONFIRMED = "confirmed"


@dataclass(frozen=True, slots=True)
class EventHeader:
    event_id: UUID
    site_id: str
    waybill_no: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class ParcelReceived:
    header: EventHeader
    carrier: str
    flow: Flow


@dataclass(frozen=True, slots=True)
class RealnameRegistered:
    """A sender identity check; ``document_valid`` is False for an expired or failed check."""

    header: EventHeader
    contract_customer: bool
    document_valid: bool
    invalid_reason: str | None = None


@dataclass(frozen=True, slots=True)
class InspectionCompleted:
    header: EventHeader
    result: InspectionResult


@dataclass(frozen=True, slots=True)
class ParcelSealed:
    header: EventHeader


@dataclass(frozen=True, slots=True)
class XrayScanned:
    """A scan's verdict, or a reviewer's decision on one (``reviewed_event_id`` names the
    station's scan event it decides; ``review`` says how)."""

    header: EventHeader
    verdict: ScanVerdict
    review: ReviewOutcome | None = None
    reviewed_event_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class ParcelDispatched:
    header: EventHeader


ParcelEvent = (
    ParcelReceived
    | RealnameRegistered
    | InspectionCompleted
    | ParcelSealed
    | XrayScanned
    | ParcelDispatched
)
