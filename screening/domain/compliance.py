"""Three-100% compliance of one parcel, derived from its events in any arrival order.

Pure: no I/O. The rules follow design.md §2: a parcel is judged at its (earliest) dispatch.
Before dispatch the same rules tell the station what is still missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

from screening.domain.events import (
    ALL_FLOWS,
    UNKNOWN_FLOW,
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


class Rule(StrEnum):
    REALNAME = "realname"
    INSPECTION = "inspection"
    XRAY = "xray"


class Reason(StrEnum):
    """Stable violation reason codes (they appear in the API, the database and reports)."""

    NO_REALNAME = "no_realname"
    INVALID_ID_DOCUMENT = "invalid_id_document"
    NO_CONTRACT_AGREEMENT = "no_contract_agreement"  # a contract customer with none on file
    REALNAME_AFTER_DISPATCH = "realname_after_dispatch"
    NO_INSPECTION = "no_inspection"
    INSPECTION_NOT_PASSED = "inspection_not_passed"
    SEALED_BEFORE_INSPECTION = "sealed_before_inspection"
    NOT_SEALED = "not_sealed"
    NO_XRAY = "no_xray"
    XRAY_AFTER_DISPATCH = "xray_after_dispatch"
    DISPATCHED_WHILE_FLAGGED = "dispatched_while_flagged"


RULE_OF: dict[Reason, Rule] = {
    Reason.NO_REALNAME: Rule.REALNAME,
    Reason.INVALID_ID_DOCUMENT: Rule.REALNAME,
    Reason.NO_CONTRACT_AGREEMENT: Rule.REALNAME,
    Reason.REALNAME_AFTER_DISPATCH: Rule.REALNAME,
    Reason.NO_INSPECTION: Rule.INSPECTION,
    Reason.INSPECTION_NOT_PASSED: Rule.INSPECTION,
    Reason.SEALED_BEFORE_INSPECTION: Rule.INSPECTION,
    Reason.NOT_SEALED: Rule.INSPECTION,
    Reason.NO_XRAY: Rule.XRAY,
    Reason.XRAY_AFTER_DISPATCH: Rule.XRAY,
    Reason.DISPATCHED_WHILE_FLAGGED: Rule.XRAY,
}

DEFAULT_TIMEZONE = "Asia/Shanghai"


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """Which flows a site must X-ray (default: every flow) and the time zone its days are cut in."""

    xray_flows: frozenset[Flow] = ALL_FLOWS
    timezone: str = DEFAULT_TIMEZONE

    def xray_required(self, flow: Flow | None) -> bool:
        # A parcel whose flow is unknown (no parcel.received yet) is held to the strictest rule
        # of this site: X-rayed if the site X-rays any flow at all.
        return flow in self.xray_flows if flow is not None else bool(self.xray_flows)


@dataclass(frozen=True, slots=True)
class ParcelStatus:
    """What holds for one parcel.

    ``problems`` lists reason codes: violations once the parcel is dispatched, otherwise what
    would be a violation if it were dispatched now (i.e. what is still missing).
    """

    waybill_no: str
    flow: Flow | None
    xray_required: bool
    dispatched_at: datetime | None
    dispatch_day: date | None
    problems: tuple[Reason, ...]
    rules_ok: dict[Rule, bool] = field(default_factory=dict)
    carrier: str | None = None  # of the receipt the flow is taken from

    @property
    def dispatched(self) -> bool:
        return self.dispatched_at is not None

    @property
    def compliant(self) -> bool:
        return not self.problems

    @property
    def violations(self) -> tuple[Reason, ...]:
        return self.problems if self.dispatched else ()

    @property
    def rate_bucket(self) -> str:
        return self.flow.value if self.flow is not None else UNKNOWN_FLOW


def _canonical(events: Iterable[ParcelEvent]) -> list[ParcelEvent]:
    """Deduplicate by event id and order by (occurred_at, event_id): arrival order never matters."""
    unique = {e.header.event_id: e for e in events}
    return sorted(unique.values(), key=lambda e: (e.header.occurred_at, e.header.event_id))


_Timed = TypeVar("_Timed", InspectionCompleted, RealnameRegistered)


def _at_latest(events: list[_Timed]) -> list[_Timed]:
    """The events (in time order, at least one) logged at the latest of their instants."""
    latest = events[-1].header.occurred_at
    return [e for e in events if e.header.occurred_at == latest]


def _proves(record: RealnameRegistered) -> bool:
    return record.contract_customer or record.document_valid


def _realname_problems(records: list[RealnameRegistered], cutoff: datetime | None) -> list[Reason]:
    in_time = [e for e in records if cutoff is None or e.header.occurred_at <= cutoff]
    if in_time:
        # The latest identity check at or before dispatch decides, as the last look inside does
        # for the inspection: a check that failed after one that passed (the document did not
        # match its holder after all) leaves the parcel without a valid record, unless a later
        # check passed again. Checks at that same instant (a station's retry) are one check:
        # it passed if any of them did, so the outcome never turns on their event ids.
        deciding = _at_latest(in_time)
        if any(_proves(e) for e in deciding):
            return []
        return [_invalid(deciding)]
    if any(_proves(e) for e in records):
        return [Reason.REALNAME_AFTER_DISPATCH]
    if records:
        return [_invalid(records)]
    return [Reason.NO_REALNAME]


def _invalid(records: list[RealnameRegistered]) -> Reason:
    if all(e.invalid_reason == Reason.NO_CONTRACT_AGREEMENT for e in records):
        return Reason.NO_CONTRACT_AGREEMENT
    return Reason.INVALID_ID_DOCUMENT


def _last_look_passed(looks: list[InspectionCompleted]) -> bool:
    """Whether the last look inside passed. Looks logged at that same instant are one look,
    which passed only if each of them did: a refusal is a finding about the contents that a
    pass in the same instant does not undo, and the outcome never turns on event ids."""
    return all(e.result is InspectionResult.PASS for e in _at_latest(looks))


def _inspection_problems(
    sealed: list[ParcelSealed], inspections: list[InspectionCompleted], cutoff: datetime | None
) -> list[Reason]:
    seals = [e for e in sealed if cutoff is None or e.header.occurred_at <= cutoff]
    problems: list[Reason] = []
    if seals:
        seal_at = seals[0].header.occurred_at  # the first seal closes the box
        judged = [e for e in inspections if e.header.occurred_at <= seal_at]
        # A look inside after the seal (the box reopened) that did not pass stands, unless a
        # later one before dispatch passed: the parcel would leave with what it found.
        reopened = [
            e
            for e in inspections
            if e.header.occurred_at > seal_at and (cutoff is None or e.header.occurred_at <= cutoff)
        ]
        if not judged:
            problems.append(
                Reason.SEALED_BEFORE_INSPECTION if inspections else Reason.NO_INSPECTION
            )
        elif not _last_look_passed(judged):
            # The last look inside before sealing is what counts.
            problems.append(Reason.INSPECTION_NOT_PASSED)
        elif reopened and not _last_look_passed(reopened):
            problems.append(Reason.INSPECTION_NOT_PASSED)
    else:
        problems.append(Reason.NOT_SEALED)
        judged = [e for e in inspections if cutoff is None or e.header.occurred_at <= cutoff]
        if not judged:
            problems.append(Reason.NO_INSPECTION)
        elif not _last_look_passed(judged):
            problems.append(Reason.INSPECTION_NOT_PASSED)
    return problems


def _xray_problems(every: list[XrayScanned], cutoff: datetime | None) -> list[Reason]:
    scans = [e for e in every if e.reviewed_event_id is None]  # the station's own scans
    in_time = [e for e in scans if cutoff is None or e.header.occurred_at <= cutoff]
    if not in_time:
        return [Reason.XRAY_AFTER_DISPATCH] if scans else [Reason.NO_XRAY]
    # Every flag raised before dispatch must have been cleared by a reviewer before dispatch. A
    # later clear scan does not lift it: a flagged parcel is opened and decided on by a person,
    # and a station's own "clear" rescan would otherwise undo any flag.
    if any(_flag_stands(every, scan, cutoff) for scan in in_time):
        return [Reason.DISPATCHED_WHILE_FLAGGED]
    return []


def uncleared_flags(events: Iterable[ParcelEvent]) -> list[UUID]:
    """The event ids of the parcel's flagged scans that no decision has cleared (yet), oldest
    first: the flags that hold it back, by the same rule its compliance is judged by."""
    every = [e for e in _canonical(events) if isinstance(e, XrayScanned)]
    return [
        scan.header.event_id
        for scan in every
        if scan.reviewed_event_id is None and _flag_stands(every, scan, None)
    ]


def _flag_stands(every: list[XrayScanned], scan: XrayScanned, cutoff: datetime | None) -> bool:
    return scan.verdict is ScanVerdict.FLAGGED and (
        _decision(every, scan, cutoff) is not ReviewOutcome.CLEARED
    )


def _decision(
    every: list[XrayScanned], scan: XrayScanned, cutoff: datetime | None
) -> ReviewOutcome | None:
    """The reviewers' decision on ``scan``: only one on this very scan, made before dispatch,
    counts, and the latest one wins; else any decision the scan event itself carries."""
    decisions = [
        e.review
        for e in every
        if e.reviewed_event_id == scan.header.event_id
        and (cutoff is None or e.header.occurred_at <= cutoff)
    ]
    return decisions[-1] if decisions else scan.review


def evaluate_parcel(
    waybill_no: str, events: Iterable[ParcelEvent], policy: SitePolicy
) -> ParcelStatus:
    """Derive the parcel's status from all its known events."""
    received: list[ParcelReceived] = []
    records: list[RealnameRegistered] = []
    inspections: list[InspectionCompleted] = []
    seals: list[ParcelSealed] = []
    scans: list[XrayScanned] = []
    dispatches: list[ParcelDispatched] = []
    for e in _canonical(events):  # one pass sorts them by kind, each list in canonical order
        if isinstance(e, ParcelReceived):
            received.append(e)
        elif isinstance(e, RealnameRegistered):
            records.append(e)
        elif isinstance(e, InspectionCompleted):
            inspections.append(e)
        elif isinstance(e, ParcelSealed):
            seals.append(e)
        elif isinstance(e, XrayScanned):
            scans.append(e)
        elif isinstance(e, ParcelDispatched):
            dispatches.append(e)
    dispatched_at = dispatches[0].header.occurred_at if dispatches else None
    # The receipt the parcel left under: the latest at or before the dispatch (one logged after
    # it, such as the parcel coming back, does not change what was judged then), else the
    # first there is. Its flow and carrier are the parcel's.
    before = [e for e in received if dispatched_at is None or e.header.occurred_at <= dispatched_at]
    receipt = before[-1] if before else (received[0] if received else None)
    flow = receipt.flow if receipt is not None else None
    dispatch_day = (
        dispatched_at.astimezone(ZoneInfo(policy.timezone)).date() if dispatched_at else None
    )
    xray_required = policy.xray_required(flow)

    realname = _realname_problems(records, dispatched_at)
    inspection = _inspection_problems(seals, inspections, dispatched_at)
    xray = _xray_problems(scans, dispatched_at) if xray_required else []
    return ParcelStatus(
        waybill_no=waybill_no,
        flow=flow,
        xray_required=xray_required,
        dispatched_at=dispatched_at,
        dispatch_day=dispatch_day,
        problems=(*realname, *inspection, *xray),  # in the order of Rule
        rules_ok={
            Rule.REALNAME: not realname,
            Rule.INSPECTION: not inspection,
            Rule.XRAY: not xray,
        },
        carrier=receipt.carrier if receipt is not None else None,
    )
