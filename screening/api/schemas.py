"""Wire schemas (pydantic v2) for the HTTP and WebSocket edge; unknown fields are refused."""

from __future__ import annotations

import functools
import json
import unicodedata
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from screening.domain.events import Flow, InspectionResult, ScanVerdict
from screening.domain.identity import (
    DocumentType,
    IdentityDocumentError,
    validate_document,
    validate_phone,
)

SiteId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", examples=["WH-001"])]
# Carriers print waybill numbers in capitals; a clerk's keyboard may not. One parcel is one
# number however it was typed, so it is stored (and looked up) in capitals.
WaybillNo = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{5,39}$", examples=["SF1234567890"]),
    AfterValidator(str.upper),
]
ShortText = Annotated[str, Field(min_length=1, max_length=64)]


class Wire(BaseModel):
    # No NaN/Infinity (not JSON, and PostgreSQL's jsonb refuses them).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold U+0000; refuse it here, with its field path.
        if isinstance(value, str) and "\x00" in value:
            raise PydanticCustomError("nul_character", "text must not contain U+0000")
        return value


# Earlier than any courier record this system can hold; also keeps every time inside what
# PostgreSQL's timestamptz and the rollups take (year 1 with a +14:00 offset is year 0 in UTC).
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)


# The widest UTC offsets any time zone uses (Kiribati's +14:00, Baker Island's -12:00), with an
# hour to spare; ISO 8601 allows up to +-23:59, which PostgreSQL refuses past +-15:59.
MAX_UTC_OFFSET = timedelta(hours=15)


def validation_context(now: datetime, max_future_skew_s: float) -> dict[str, Any]:
    """The context ``not_in_future`` judges times in: the gateway's clock, the tolerated skew,
    and the latest time the two allow (worked out once per request, not once per event)."""
    now = now.astimezone(UTC)  # exact arithmetic: no wall-clock jump of a zone in between
    return {
        "now": now,
        "max_future_skew_s": max_future_skew_s,
        "latest": now + timedelta(seconds=max_future_skew_s),
    }


def not_in_future(value: datetime, info: ValidationInfo) -> datetime:
    """Refuse times further ahead of the gateway's clock than the tolerated station skew,
    times before ``EARLIEST_OCCURRED_AT`` (a clock that lost its setting), and offsets no
    time zone has. The clock comes from the validation context (``validation_context``)."""
    offset = value.utcoffset()
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        raise PydanticCustomError(
            "timestamp_offset", "the UTC offset is outside -15:00 to +15:00 (no time zone has it)"
        )
    if value < EARLIEST_OCCURRED_AT:
        raise PydanticCustomError(
            "timestamp_too_old", f"occurred_at is before {EARLIEST_OCCURRED_AT.date()}"
        )
    context = info.context or {}
    now: datetime | None = context.get("now")
    if now is None:
        return value
    skew: float = context.get("max_future_skew_s", 300.0)
    latest: datetime = context.get("latest") or now + timedelta(seconds=skew)
    if value > latest:
        ahead = (value - now).total_seconds()
        raise PydanticCustomError(
            "future_timestamp",
            f"occurred_at is {ahead:.0f} s in the future (tolerance {skew:.0f} s)",
        )
    return value


class EventBase(Wire):
    event_id: UUID = Field(description="The station's own UUID for this event (idempotency key)")
    site_id: SiteId
    waybill_no: WaybillNo
    occurred_at: AwareDatetime = Field(description="Station clock, with time zone")

    @field_validator("occurred_at")
    @classmethod
    def _not_in_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        return not_in_future(value, info)


class ParcelReceivedIn(EventBase):
    type: Literal["parcel.received"]
    carrier: ShortText
    flow: Flow
    declared_contents: str = Field(default="", max_length=500)
    weight_g: int | None = Field(default=None, gt=0, le=1_000_000)


class Sender(Wire):
    document_type: DocumentType
    document_number: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    phone: str | None = Field(default=None, max_length=32)

    @field_validator("document_number")
    @classmethod
    def _check_document(cls, value: str, info: ValidationInfo) -> str:
        doc_type = info.data.get("document_type")
        if doc_type is None:  # the type itself was invalid; that error is reported already
            return value
        now: datetime | None = (info.context or {}).get("now")
        # A day of slack: the station's calendar day may already be tomorrow in UTC+14.
        today = (now + timedelta(days=1)).date() if now is not None else None
        try:
            return validate_document(doc_type, value, today=today)
        except IdentityDocumentError as exc:
            raise PydanticCustomError(exc.code, exc.message) from None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        # Kept as sent (a resend must digest the same), but a "name" without one letter
        # (spaces, zero-width characters, punctuation) names nobody: no real-name record.
        if not any(unicodedata.category(c).startswith("L") for c in value):
            raise PydanticCustomError("invalid_name", "the sender's name has no letter in it")
        return value

    @field_validator("phone")
    @classmethod
    def _check_phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_phone(value)
        except IdentityDocumentError as exc:
            raise PydanticCustomError(exc.code, exc.message) from None


class RealnameRegisteredIn(EventBase):
    type: Literal["realname.registered"]
    sender: Sender | None = None
    contract_customer_ref: str | None = Field(default=None, min_length=1, max_length=64)
    document_expires_on: date | None = None
    verification: Literal["passed", "failed"] = Field(
        default="passed", description="Result of checking the document against its holder"
    )

    @model_validator(mode="after")
    def _one_identity(self) -> RealnameRegisteredIn:
        if (self.sender is None) == (self.contract_customer_ref is None):
            raise PydanticCustomError(
                "sender_or_contract_required",
                "give exactly one of sender or contract_customer_ref",
                {"field": "sender"},
            )
        return self


class InspectionCompletedIn(EventBase):
    type: Literal["inspection.completed"]
    clerk_id: ShortText
    result: InspectionResult
    note: str = Field(default="", max_length=500)


class ParcelSealedIn(EventBase):
    type: Literal["parcel.sealed"]
    clerk_id: ShortText


class DetectionIn(Wire):
    class_name: ShortText
    category: str | None = Field(default=None, max_length=64)
    score: float = Field(ge=0.0, le=1.0)
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in image pixels")


class XrayScannedIn(EventBase):
    type: Literal["xray.scanned"]
    scanner_id: ShortText
    verdict: ScanVerdict
    image_ref: str | None = Field(default=None, max_length=256)
    # fail_fast: the first bad detection is reported, not each of up to 300 (errors cost far
    # more to build and send than to find).
    detections: list[DetectionIn] = Field(default_factory=list, max_length=300, fail_fast=True)
    model_version: str | None = Field(default=None, max_length=64)


class ParcelDispatchedIn(EventBase):
    type: Literal["parcel.dispatched"]
    carrier: str | None = Field(default=None, max_length=64)


EventIn = Annotated[
    ParcelReceivedIn
    | RealnameRegisteredIn
    | InspectionCompletedIn
    | ParcelSealedIn
    | XrayScannedIn
    | ParcelDispatchedIn,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[EventIn] = TypeAdapter(EventIn)
# One encoder for every event: json.dumps with any option builds a new JSONEncoder per call.
_RAW = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def event_batch(max_events: int) -> Any:
    """The type of a batch: an array of 1 to ``max_events`` events."""
    # fail_fast: the whole-body pass only asks whether every event is valid (a body that is not
    # is judged again event by event, for each one's errors).
    return Annotated[list[EventIn], Field(min_length=1, max_length=max_events, fail_fast=True)]


def events_body(max_events: int) -> Any:
    """What ``POST /v1/events`` takes: one event, or a batch (the OpenAPI document's body)."""
    return EventIn | event_batch(max_events)


@functools.cache
def batch_adapter(max_events: int) -> TypeAdapter[list[EventIn]]:
    """A batch of 1 to ``max_events`` events validated straight from its JSON text (strict, as
    ``validate_event``): for a batch whose every event is valid, one pass that builds no
    Python objects for the items first."""
    adapter: TypeAdapter[list[EventIn]] = TypeAdapter(event_batch(max_events))
    return adapter


def validate_whole_body(
    text: bytes | str, context: dict[str, Any], max_events: int
) -> tuple[bool, list[EventIn]] | None:
    """A request body (whether it was one event, and its events) when the whole of it is
    valid: the common case, validated in one pass straight from its JSON text. None when
    anything in it is not: the caller then parses it and judges each event on its own
    (``validate_event``), for per-event results and the body-level errors (malformed JSON, an
    empty or too long batch)."""
    start = text.lstrip()[:1]
    try:
        if start in (b"{", "{"):
            return True, [EVENT_ADAPTER.validate_json(text, strict=True, context=context)]
        if start in (b"[", "["):
            events = batch_adapter(max_events).validate_json(text, strict=True, context=context)
            return False, events
    except ValidationError:
        pass
    return None


def validate_event(item: Any, context: dict[str, Any] | None = None) -> EventIn:
    """One event of a request body (already parsed from JSON), validated by JSON's types.

    Strict JSON-mode validation: a number is refused where text is due and text where a
    number is due, ``true`` is not 1, and a time must be text with its offset (pydantic's
    Python mode would take ``"500"`` or ``true`` as a weight and a bare epoch number as a UTC
    time). Text holding a lone surrogate escape fails here (``json_invalid``), before any of it
    is digested or stored.
    """
    try:
        text = _RAW.encode(item)
    except RecursionError:  # parsed a frame shallower than this (the station stream's reader)
        raise _json_invalid((), "recursion limit exceeded") from None
    try:
        return EVENT_ADAPTER.validate_json(text, strict=True, context=context)
    except ValidationError as exc:
        errors = exc.errors()
        if len(errors) == 1 and errors[0]["type"] == "json_invalid":
            at = _surrogate_at(item, ())
            if at is not None:  # the text as a whole failed: name the field that made it fail
                raise _json_invalid(at, "a lone surrogate is not Unicode text") from None
        raise


def _json_invalid(loc: tuple[str | int, ...], error: str) -> ValidationError:
    return ValidationError.from_exception_data(
        "event", [{"type": "json_invalid", "loc": loc, "input": None, "ctx": {"error": error}}]
    )


def _surrogate_at(item: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """Where in a parsed JSON value a string (or a key) holds a lone surrogate, if anywhere."""
    if isinstance(item, str):
        return None if item.isascii() or _is_unicode(item) else loc
    if isinstance(item, dict):
        for key, value in item.items():
            if not _is_unicode(key):
                return (*loc, key)
            if (found := _surrogate_at(value, (*loc, key))) is not None:
                return found
    elif isinstance(item, list):
        for i, value in enumerate(item):
            if (found := _surrogate_at(value, (*loc, i))) is not None:
                return found
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# --- responses ---------------------------------------------------------------------------------

EventOutcome = Literal["accepted", "duplicate", "conflict", "rejected"]


class FieldErrorOut(Wire):
    code: str
    path: str
    message: str


class EventResultOut(Wire):
    index: int
    event_id: str | None = Field(
        description="The event's id in canonical form (lower case, hyphenated), as sent when"
        " it is no UUID; null when the event has none"
    )
    result: EventOutcome
    code: str | None = None
    errors: list[FieldErrorOut] = Field(default_factory=list)


class IngestResponse(Wire):
    results: list[EventResultOut]
    accepted: int
    duplicate: int
    conflict: int
    rejected: int


class Problem(Wire):
    """RFC 9457 problem details, with a stable ``code``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str = "about:blank"
    title: str
    status: int
    code: str
    detail: str
    errors: list[FieldErrorOut] | None = None


class RuleStateOut(Wire):
    ok: bool
    reasons: list[str]


class ParcelOut(Wire):
    site_id: str
    waybill_no: str
    flow: str | None
    carrier: str | None
    xray_required: bool
    dispatched: bool
    dispatched_at: datetime | None
    compliant: bool | None = Field(description="Null until dispatched")
    rules: dict[str, RuleStateOut]
    violations: list[str]
    missing_before_dispatch: list[str]
    events: list[dict[str, Any]]


class RateOut(Wire):
    day: date | None = None
    flow: str | None = None
    dispatched: int
    realname_rate: float | None
    inspection_rate: float | None
    xray_rate: float | None = Field(
        description="Of every dispatched parcel, including those the site's policy does not X-ray"
    )
    three_100_rate: float | None
    xray_required: int = Field(
        default=0, description="Dispatched parcels whose flow the site's policy X-rays"
    )
    xray_screened_rate: float | None = Field(
        default=None,
        description="Of the parcels the policy X-rays, the share that met the X-ray rule",
    )
    unbound_scans: int = Field(
        default=0, description="X-ray images with no waybill read (kept, bound to no parcel)"
    )


class RatesOut(Wire):
    site_id: str
    timezone: str
    from_day: date = Field(alias="from")
    to_day: date = Field(alias="to")
    group_by: Literal["day", "flow"]
    total: RateOut
    rows: list[RateOut]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ViolationOut(Wire):
    waybill_no: str
    reason: str
    rule: str
    flow: str
    dispatch_day: date
    dispatched_at: datetime
    detected_at: datetime


class ViolationsOut(Wire):
    site_id: str
    items: list[ViolationOut]
    next_cursor: str | None


class HealthOut(Wire):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


# --- X-ray scans -------------------------------------------------------------------------------


class ScanMetadataIn(Wire):
    """The `metadata` part of POST /v1/scans."""

    scan_id: UUID = Field(description="Client id of this image; a resend is a duplicate")
    site_id: SiteId
    scanner_id: ShortText
    waybill_no: WaybillNo | None = Field(default=None, description="Null: no barcode was read")
    occurred_at: AwareDatetime
    line_count: int | None = Field(default=None, ge=1, le=1_000_000)
    pixels_per_line: int | None = Field(default=None, ge=1, le=100_000)

    @field_validator("occurred_at")
    @classmethod
    def _not_in_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        return not_in_future(value, info)


class FindingOut(Wire):
    class_name: str
    category: str
    alert: str
    score: float
    box: list[float]
    threshold: float


class VerdictOut(Wire):
    result: Literal["clear", "flagged"]
    findings: list[FindingOut]
    model_version: str
    max_scores: dict[str, float]


class ScanOut(Wire):
    scan_id: str
    site_id: str
    result: Literal["accepted", "duplicate"]
    waybill_no: str | None
    bound: bool = Field(description="False when no waybill was read: kept, reported unbound")
    event_id: str | None
    occurred_at: datetime
    width: int
    height: int
    verdict: VerdictOut
    image_url: str
