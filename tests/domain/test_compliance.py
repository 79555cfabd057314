"""The three-100% rules on one parcel, from its events in any order."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from screening.domain.compliance import (
    Reason,
    Rule,
    SitePolicy,
    evaluate_parcel,
    uncleared_flags,
)
from screening.domain.events import (
    EventHeader,
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
from screening.domain.rates import RateCounts, RateKey, contribution, rollup_delta

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
WAYBILL = "SF0000000001"


def h(minute: float) -> EventHeader:
    return EventHeader(uuid.uuid4(), "S1", WAYBILL, T0 + timedelta(minutes=minute))


def received(m: int = 0, flow: Flow = Flow.INTER_PROVINCE) -> ParcelReceived:
    return ParcelReceived(h(m), carrier="SF", flow=flow)


def realname(m: int = 1, *, valid: bool = True, contract: bool = False) -> RealnameRegistered:
    return RealnameRegistered(h(m), contract_customer=contract, document_valid=valid)


def inspection(m: int = 2, result: InspectionResult = InspectionResult.PASS) -> InspectionCompleted:
    return InspectionCompleted(h(m), result=result)


def seal(m: int = 3) -> ParcelSealed:
    return ParcelSealed(h(m))


def scan(
    m: int = 4, verdict: ScanVerdict = ScanVerdict.CLEAR, review: ReviewOutcome | None = None
) -> XrayScanned:
    return XrayScanned(h(m), verdict=verdict, review=review)


def dispatch(m: int = 5) -> ParcelDispatched:
    return ParcelDispatched(h(m))


def complete() -> list[ParcelEvent]:
    return [received(), realname(), inspection(), seal(), scan(), dispatch()]


def judge(events: list[ParcelEvent], policy: SitePolicy | None = None) -> tuple[Reason, ...]:
    return evaluate_parcel(WAYBILL, events, policy or SitePolicy()).violations


def replace(events: list[ParcelEvent], kind: type, *new: ParcelEvent) -> list[ParcelEvent]:
    return [e for e in events if not isinstance(e, kind)] + list(new)


def test_a_complete_parcel_is_compliant() -> None:
    status = evaluate_parcel(WAYBILL, complete(), SitePolicy())
    assert status.dispatched
    assert status.compliant
    assert status.rules_ok == {Rule.REALNAME: True, Rule.INSPECTION: True, Rule.XRAY: True}


def test_missing_realname_is_no_realname() -> None:
    assert judge(replace(complete(), RealnameRegistered)) == (Reason.NO_REALNAME,)


def test_contract_customer_satisfies_realname() -> None:
    assert judge(replace(complete(), RealnameRegistered, realname(contract=True))) == ()


def test_only_invalid_documents_is_invalid_id_document() -> None:
    events = replace(complete(), RealnameRegistered, realname(valid=False))
    assert judge(events) == (Reason.INVALID_ID_DOCUMENT,)


def test_a_contract_reference_without_an_agreement_is_its_own_violation() -> None:
    unproven = RealnameRegistered(
        h(1), contract_customer=False, document_valid=False,
        invalid_reason="no_contract_agreement",
    )  # fmt: skip
    assert judge(replace(complete(), RealnameRegistered, unproven)) == (
        Reason.NO_CONTRACT_AGREEMENT,
    )
    failed_id = realname(1, valid=False)
    assert judge(replace(complete(), RealnameRegistered, unproven, failed_id)) == (
        Reason.INVALID_ID_DOCUMENT,
    )


def test_the_latest_identity_check_before_dispatch_decides() -> None:
    # A check that failed after one that passed: the document did not match its holder.
    passed_then_failed = replace(
        complete(), RealnameRegistered, realname(1), realname(2, valid=False)
    )
    assert judge(passed_then_failed) == (Reason.INVALID_ID_DOCUMENT,)
    failed_then_passed = replace(
        complete(), RealnameRegistered, realname(1, valid=False), realname(2)
    )
    assert judge(failed_then_passed) == ()
    # The reason is the deciding check's: here a contract customer with no agreement on file,
    # not the expired document of an earlier check.
    unproven = RealnameRegistered(
        h(3), contract_customer=False, document_valid=False,
        invalid_reason="no_contract_agreement",
    )  # fmt: skip
    events = replace(
        complete(), RealnameRegistered, realname(1, valid=False), realname(2), unproven
    )
    assert judge(events) == (Reason.NO_CONTRACT_AGREEMENT,)
    # Checks at the same instant are one: it passed if any did, whatever their event ids.
    for _ in range(8):
        tied = replace(complete(), RealnameRegistered, realname(1), realname(1, valid=False))
        assert judge(tied) == ()
    # A failed check logged after the dispatch does not reach back to the judged parcel.
    failed_after = replace(complete(), RealnameRegistered, realname(1), realname(9, valid=False))
    assert judge(failed_after) == ()
    # Before dispatch the station is told that the parcel lacks a valid record.
    status = evaluate_parcel(
        WAYBILL, [received(), realname(1), realname(2, valid=False)], SitePolicy()
    )
    assert Reason.INVALID_ID_DOCUMENT in status.problems


def test_realname_recorded_after_dispatch_is_a_violation() -> None:
    events = replace(complete(), RealnameRegistered, realname(m=9))
    assert judge(events) == (Reason.REALNAME_AFTER_DISPATCH,)


def test_missing_inspection_is_no_inspection() -> None:
    assert judge(replace(complete(), InspectionCompleted)) == (Reason.NO_INSPECTION,)


def test_seal_before_inspection_is_a_violation() -> None:
    events = replace(complete(), InspectionCompleted, inspection(m=3, result=InspectionResult.PASS))
    events = replace(events, ParcelSealed, seal(m=2))
    assert judge(events) == (Reason.SEALED_BEFORE_INSPECTION,)


def test_inspection_at_the_same_instant_as_the_seal_counts() -> None:
    events = replace(complete(), ParcelSealed, seal(m=2))
    assert judge(events) == ()


def test_refused_or_prohibited_inspection_is_inspection_not_passed() -> None:
    for result in (InspectionResult.REFUSED, InspectionResult.PROHIBITED_FOUND):
        events = replace(complete(), InspectionCompleted, inspection(result=result))
        assert judge(events) == (Reason.INSPECTION_NOT_PASSED,)


def test_looks_inside_at_the_same_instant_are_one_that_passed_only_if_each_did() -> None:
    """Stations often log whole seconds: a pass and a refusal in one instant must not be judged
    by which has the lower event id. The refusal is a finding the pass does not undo."""
    for _ in range(8):  # fresh event ids each time: both orders of the two ids come up
        tied = replace(
            complete(), InspectionCompleted,
            inspection(2), inspection(2, result=InspectionResult.REFUSED),
        )  # fmt: skip
        assert judge(tied) == (Reason.INSPECTION_NOT_PASSED,)
        reopened = [*complete(), inspection(5), inspection(5, result=InspectionResult.REFUSED)]
        assert judge(reopened) == (Reason.INSPECTION_NOT_PASSED,)
    both_passed = replace(complete(), InspectionCompleted, inspection(2), inspection(2))
    assert judge(both_passed) == ()
    for _ in range(8):  # never sealed: the same rule for the look inside
        unsealed = replace(
            replace(complete(), ParcelSealed), InspectionCompleted,
            inspection(2), inspection(2, result=InspectionResult.REFUSED),
        )  # fmt: skip
        assert set(judge(unsealed)) == {Reason.NOT_SEALED, Reason.INSPECTION_NOT_PASSED}


def test_the_last_inspection_before_the_seal_decides() -> None:
    events = replace(
        complete(),
        InspectionCompleted,
        inspection(m=1, result=InspectionResult.REFUSED),
        inspection(m=2, result=InspectionResult.PASS),
    )
    assert judge(events) == ()


def test_a_failed_inspection_after_the_seal_stands_unless_a_later_one_passed() -> None:
    """The box reopened after sealing and prohibited items found: it must not leave as is."""
    for result in (InspectionResult.REFUSED, InspectionResult.PROHIBITED_FOUND):
        found = InspectionCompleted(h(3.5), result=result)
        assert judge([*complete(), found]) == (Reason.INSPECTION_NOT_PASSED,)
        passed_again = InspectionCompleted(h(3.8), result=InspectionResult.PASS)
        assert judge([*complete(), found, passed_again]) == ()
        # After dispatch it did not change what left.
        assert judge([*complete(), InspectionCompleted(h(6), result=result)]) == ()


def test_a_box_sealed_uninspected_stays_a_violation_when_it_is_reopened_and_resealed() -> None:
    # 先验后封 is a step of the procedure: the first seal closed a box nobody had looked into.
    # Reopening, inspecting and sealing it again does not undo that the step was skipped, and
    # a rule that let a later seal count would let any box be sealed first and "fixed" after.
    events = replace(replace(complete(), InspectionCompleted), ParcelSealed)
    events += [seal(1), inspection(2), seal(3)]
    assert judge(events) == (Reason.SEALED_BEFORE_INSPECTION,)


def test_dispatch_without_seal_is_not_sealed() -> None:
    assert judge(replace(complete(), ParcelSealed)) == (Reason.NOT_SEALED,)


def test_missing_scan_is_no_xray() -> None:
    assert judge(replace(complete(), XrayScanned)) == (Reason.NO_XRAY,)


def test_scan_after_dispatch_is_xray_after_dispatch() -> None:
    assert judge(replace(complete(), XrayScanned, scan(m=8))) == (Reason.XRAY_AFTER_DISPATCH,)


def test_flagged_scan_not_cleared_is_dispatched_while_flagged() -> None:
    events = replace(complete(), XrayScanned, scan(verdict=ScanVerdict.FLAGGED))
    assert judge(events) == (Reason.DISPATCHED_WHILE_FLAGGED,)


def test_flagged_scan_cleared_by_a_reviewer_is_compliant() -> None:
    cleared = scan(verdict=ScanVerdict.FLAGGED, review=ReviewOutcome.CLEARED)
    assert judge(replace(complete(), XrayScanned, cleared)) == ()


def review_of(target: XrayScanned, m: float, outcome: ReviewOutcome) -> XrayScanned:
    """A reviewer's decision on ``target``, as ingest stores it: a flagged scan event naming it."""
    header = EventHeader(uuid.uuid4(), "S1", WAYBILL, T0 + timedelta(minutes=m))
    return XrayScanned(header, ScanVerdict.FLAGGED, outcome, target.header.event_id)


def test_a_decision_on_an_earlier_scan_does_not_clear_a_flagged_rescan() -> None:
    first = scan(4, ScanVerdict.FLAGGED)
    rescan = XrayScanned(h(4.5), ScanVerdict.FLAGGED)
    base = [e for e in complete() if not isinstance(e, XrayScanned)]
    cleared_first = review_of(first, 4.8, ReviewOutcome.CLEARED)
    assert judge([*base, first, rescan, cleared_first]) == (Reason.DISPATCHED_WHILE_FLAGGED,)
    cleared_rescan = review_of(rescan, 4.9, ReviewOutcome.CLEARED)
    assert judge([*base, first, rescan, cleared_first, cleared_rescan]) == ()
    # The latest decision on the scan wins; one made after dispatch comes too late.
    confirmed = review_of(rescan, 4.95, ReviewOutcome.CONFIRMED)
    assert judge([*base, first, rescan, cleared_rescan, confirmed]) == (
        Reason.DISPATCHED_WHILE_FLAGGED,
    )
    late = review_of(rescan, 6, ReviewOutcome.CLEARED)
    assert judge([*base, first, rescan, late]) == (Reason.DISPATCHED_WHILE_FLAGGED,)


def test_a_clear_rescan_does_not_lift_a_flag_a_reviewer_has_not_cleared() -> None:
    """Otherwise any station could undo a flag by posting a "clear" scan of its own."""
    first = scan(4, ScanVerdict.FLAGGED)
    clear_rescan = XrayScanned(h(4.5), ScanVerdict.CLEAR)
    base = [e for e in complete() if not isinstance(e, XrayScanned)]
    assert judge([*base, first, clear_rescan]) == (Reason.DISPATCHED_WHILE_FLAGGED,)
    confirmed = review_of(first, 4.8, ReviewOutcome.CONFIRMED)
    assert judge([*base, first, clear_rescan, confirmed]) == (Reason.DISPATCHED_WHILE_FLAGGED,)
    cleared = review_of(first, 4.9, ReviewOutcome.CLEARED)
    assert judge([*base, first, clear_rescan, confirmed, cleared]) == ()
    # A flag raised after dispatch was not one the parcel left under.
    assert judge([*base, clear_rescan, scan(6, ScanVerdict.FLAGGED)]) == ()


def test_flows_outside_the_xray_policy_need_no_scan() -> None:
    policy = SitePolicy(xray_flows=frozenset({Flow.AIR}))
    assert judge(replace(complete(), XrayScanned), policy) == ()
    air = replace(complete(), ParcelReceived, received(flow=Flow.AIR))
    assert judge(replace(air, XrayScanned), policy) == (Reason.NO_XRAY,)


def test_unknown_flow_is_held_to_the_xray_rule() -> None:
    policy = SitePolicy(xray_flows=frozenset({Flow.AIR}))
    events = replace(replace(complete(), ParcelReceived), XrayScanned)
    assert judge(events, policy) == (Reason.NO_XRAY,)


def test_an_unknown_flow_needs_no_scan_at_a_site_that_x_rays_no_flow() -> None:
    policy = SitePolicy(xray_flows=frozenset())
    events = replace(replace(complete(), ParcelReceived), XrayScanned)
    assert judge(events, policy) == ()
    assert not evaluate_parcel(WAYBILL, events, policy).xray_required


def test_a_receipt_logged_after_dispatch_does_not_change_the_judged_flow() -> None:
    # The parcel comes back by air after leaving same-city: what was judged at its dispatch
    # (same-city, which this site does not X-ray) stands, in the same day's bucket.
    policy = SitePolicy(xray_flows=frozenset({Flow.AIR}))
    first = replace(complete(), ParcelReceived, received(flow=Flow.SAME_CITY))
    first = replace(first, XrayScanned)
    back = ParcelReceived(h(600), carrier="EMS", flow=Flow.AIR)
    status = evaluate_parcel(WAYBILL, [*first, back], policy)
    assert (status.flow, status.carrier) == (Flow.SAME_CITY, "SF")
    assert status.violations == ()
    assert not status.xray_required
    # A receipt at the parcel's counter before its dispatch is the one that counts: the
    # latest of those, whichever arrived first.
    relabelled = [*first, received(1, flow=Flow.AIR)]
    assert evaluate_parcel(WAYBILL, relabelled, policy).violations == (Reason.NO_XRAY,)
    # Only receipts after the dispatch: the first of them.
    late_only = [*replace(first, ParcelReceived), received(600, flow=Flow.AIR),
                 received(700, flow=Flow.RAIL)]  # fmt: skip
    assert evaluate_parcel(WAYBILL, late_only, policy).flow is Flow.AIR


def test_undispatched_parcel_lists_what_is_missing_but_has_no_violations() -> None:
    status = evaluate_parcel(WAYBILL, [received(), realname()], SitePolicy())
    assert not status.dispatched
    assert status.violations == ()
    assert set(status.problems) == {Reason.NOT_SEALED, Reason.NO_INSPECTION, Reason.NO_XRAY}


def test_a_late_earlier_dispatch_moves_the_cutoff() -> None:
    events = [*complete(), ParcelDispatched(h(3))]  # dispatched before the scan, reported late
    assert Reason.XRAY_AFTER_DISPATCH in judge(events)


def test_dispatch_day_is_cut_in_the_site_time_zone() -> None:
    late_evening = [
        *replace(complete(), ParcelDispatched),
        ParcelDispatched(
            EventHeader(uuid.uuid4(), "S1", WAYBILL, datetime(2026, 11, 20, 16, 30, tzinfo=UTC))
        ),
    ]
    shanghai = evaluate_parcel(WAYBILL, late_evening, SitePolicy())
    utc = evaluate_parcel(WAYBILL, late_evening, SitePolicy(timezone="UTC"))
    assert shanghai.dispatch_day == date(2026, 11, 21)
    assert utc.dispatch_day == date(2026, 11, 20)


@st.composite
def parcel_histories(draw: st.DrawFn) -> list[ParcelEvent]:
    makers = [
        lambda m: ParcelReceived(
            h(m),
            carrier=draw(st.sampled_from(["SF", "EMS"])),
            flow=draw(st.sampled_from(list(Flow))),
        ),
        lambda m: realname(m, valid=draw(st.booleans()), contract=draw(st.booleans())),
        lambda m: inspection(m, draw(st.sampled_from(list(InspectionResult)))),
        seal,
        lambda m: scan(m, draw(st.sampled_from(list(ScanVerdict)))),
        dispatch,
    ]
    n = draw(st.integers(min_value=0, max_value=10))
    history = [draw(st.sampled_from(makers))(draw(st.integers(0, 12))) for _ in range(n)]
    # Reviewers' decisions on the scans (clear or confirm, sometimes more than one, at any
    # time): the latest decision on each flagged scan must win in any arrival order.
    for target in [e for e in history if isinstance(e, XrayScanned)]:
        for _ in range(draw(st.integers(0, 2))):
            outcome = draw(st.sampled_from(list(ReviewOutcome)))
            history.append(review_of(target, draw(st.integers(0, 12)), outcome))
    return history


@settings(max_examples=300, deadline=None)
@given(history=parcel_histories(), data=st.data())
def test_any_permutation_or_duplication_yields_the_same_status(
    history: list[ParcelEvent], data: st.DataObject
) -> None:
    flows = data.draw(st.sampled_from([frozenset({Flow.AIR, Flow.INTER_PROVINCE}), frozenset()]))
    policy = SitePolicy(xray_flows=flows)
    reference = evaluate_parcel(WAYBILL, history, policy)
    duplicated = (
        history + data.draw(st.lists(st.sampled_from(history), max_size=5)) if history else []
    )
    shuffled = data.draw(st.permutations(duplicated))
    assert evaluate_parcel(WAYBILL, shuffled, policy) == reference
    assert uncleared_flags(shuffled) == uncleared_flags(history)


def test_rollup_delta_moves_a_parcel_between_days() -> None:
    before = evaluate_parcel(WAYBILL, [*replace(complete(), XrayScanned)], SitePolicy())
    after = evaluate_parcel(WAYBILL, complete(), SitePolicy())
    delta = rollup_delta([(contribution(before), contribution(after))])
    key = RateKey(day=date(2026, 11, 20), flow="inter_province")
    assert delta == {key: RateCounts(xray_ok=1, all_ok=1)}
    assert rollup_delta([(None, contribution(after)), (contribution(after), None)]) == {}


def test_the_flags_holding_a_parcel_back_are_those_no_decision_cleared() -> None:
    """What a hold waits on, by the rule compliance judges: each flagged scan's latest
    decision, whenever made (dispatch or not)."""
    first = scan(4, ScanVerdict.FLAGGED)
    second = XrayScanned(h(4.5), ScanVerdict.FLAGGED)
    clear = XrayScanned(h(4.6), ScanVerdict.CLEAR)
    cleared_first = review_of(first, 4.8, ReviewOutcome.CLEARED)
    assert uncleared_flags([first, second, clear]) == [
        first.header.event_id,
        second.header.event_id,
    ]
    assert uncleared_flags([cleared_first, second, first, clear]) == [second.header.event_id]
    confirmed_again = review_of(first, 4.9, ReviewOutcome.CONFIRMED)
    assert uncleared_flags([first, cleared_first, confirmed_again]) == [first.header.event_id]
    assert uncleared_flags([first, review_of(first, 7, ReviewOutcome.CLEARED)]) == []
