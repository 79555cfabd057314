"""Site rates from the rollup, late events correcting past days, and the violations list."""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from screening.domain.access import Role
from screening.domain.events import Flow
from screening.errors import BadRequestError, NotFoundError
from screening.services import access
from tests.conftest import RunningGateway
from tests.gateway.events import BASE, event, parcel_flow


async def post(gw: RunningGateway, events: list[dict[str, Any]]) -> dict[str, Any]:
    async with gw.http.post(f"{gw.url}/v1/events", json=events, headers=gw.auth()) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def get(gw: RunningGateway, path: str, role: str = "supervisor") -> dict[str, Any]:
    async with gw.http.get(f"{gw.url}{path}", headers=gw.auth(role)) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def test_rates_per_day_and_per_flow(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    day2 = BASE + timedelta(days=1)
    events = [
        *parcel_flow(site, "RT0000000001"),
        *parcel_flow(site, "RT0000000002", skip=frozenset({"xray"})),
        *parcel_flow(site, "RT0000000003", flow="same_city", seal_first=True),
        *parcel_flow(site, "RT0000000004", start=day2, skip=frozenset({"realname"})),
        *parcel_flow(site, "RT0000000005", skip=frozenset({"dispatch"})),  # not counted
    ]
    assert (await post(gateway, events))["accepted"] == len(events)

    by_day = await get(gateway, f"/v1/sites/{site}/rates?from=2026-11-01&to=2026-11-30")
    assert by_day["total"]["dispatched"] == 4
    assert by_day["total"]["three_100_rate"] == 0.25
    rows = {r["day"]: r for r in by_day["rows"]}
    assert rows["2026-11-20"]["dispatched"] == 3
    assert rows["2026-11-20"]["xray_rate"] == 2 / 3
    assert rows["2026-11-20"]["inspection_rate"] == 2 / 3
    assert rows["2026-11-21"]["realname_rate"] == 0.0

    by_flow = await get(
        gateway, f"/v1/sites/{site}/rates?from=2026-11-01&to=2026-11-30&group_by=flow"
    )
    flows = {r["flow"]: r for r in by_flow["rows"]}
    assert flows["same_city"]["dispatched"] == 1
    assert flows["same_city"]["three_100_rate"] == 0.0
    assert flows["inter_province"]["dispatched"] == 3


async def test_a_late_event_corrects_a_past_days_rate(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    flow = parcel_flow(site, "LT0000000001", skip=frozenset({"xray"}))
    await post(gateway, flow)
    path = f"/v1/sites/{site}/rates?from=2026-11-20&to=2026-11-20"
    assert (await get(gateway, path))["total"]["xray_rate"] == 0.0
    # The scan happened before dispatch but the scanner was offline: it arrives days later.
    late_scan = event(
        "xray.scanned",
        site,
        "LT0000000001",
        BASE + timedelta(minutes=4),
        scanner_id="x1",
        verdict="clear",
    )
    await post(gateway, [late_scan])
    corrected = await get(gateway, path)
    assert corrected["total"]["xray_rate"] == 1.0
    assert corrected["total"]["three_100_rate"] == 1.0
    violations = await get(gateway, f"/v1/sites/{site}/violations?from=2026-11-20&to=2026-11-20")
    assert violations["items"] == []


async def test_a_late_earlier_dispatch_moves_the_parcel_to_its_real_day(
    gateway: RunningGateway,
) -> None:
    site = gateway.keys.site
    flow = parcel_flow(site, "MV0000000001", start=BASE + timedelta(days=2))
    await post(gateway, flow)
    early = event("parcel.dispatched", site, "MV0000000001", BASE)  # two days earlier
    await post(gateway, [early])
    rows = {
        r["day"]: r["dispatched"]
        for r in (await get(gateway, f"/v1/sites/{site}/rates?from=2026-11-19&to=2026-11-23"))[
            "rows"
        ]
    }
    assert rows.get("2026-11-22", 0) == 0
    assert rows["2026-11-20"] == 1


async def test_events_in_reverse_order_give_the_same_status(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    for e in reversed(parcel_flow(site, "RV0000000001", seal_first=True)):
        await post(gateway, [e])
    parcel = await get(gateway, "/v1/parcels/RV0000000001")
    assert parcel["violations"] == ["sealed_before_inspection"]
    assert parcel["rules"]["inspection"] == {"ok": False, "reasons": ["sealed_before_inspection"]}


async def test_undispatched_parcel_shows_what_is_missing(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    flow = parcel_flow(site, "MS0000000001", skip=frozenset({"xray", "dispatch", "seal"}))
    await post(gateway, flow)
    parcel = await get(gateway, "/v1/parcels/MS0000000001", role="station")
    assert parcel["dispatched"] is False
    assert parcel["compliant"] is None
    assert set(parcel["missing_before_dispatch"]) == {"not_sealed", "no_xray"}


async def test_violations_are_filtered_and_paged(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    events: list[dict[str, Any]] = []
    for i in range(7):
        events += parcel_flow(
            site,
            f"VP00000000{i:02d}",
            start=BASE + timedelta(minutes=10 * i),
            skip=frozenset({"xray"}) if i % 2 == 0 else frozenset({"realname"}),
        )
    await post(gateway, events)
    base = f"/v1/sites/{site}/violations?from=2026-11-20&to=2026-11-20"
    seen: list[str] = []
    cursor = None
    while True:
        page = await get(gateway, base + "&limit=3" + (f"&cursor={cursor}" if cursor else ""))
        seen += [v["waybill_no"] for v in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7
    assert len(set(seen)) == 7
    xray_only = await get(gateway, base + "&rule=xray")
    assert {v["reason"] for v in xray_only["items"]} == {"no_xray"}
    assert len(xray_only["items"]) == 4
    by_reason = await get(gateway, base + "&reason=no_realname")
    assert len(by_reason["items"]) == 3


async def test_an_open_period_ends_on_the_sites_own_today(gateway: RunningGateway) -> None:
    """Without `to`, the rates run to today where the site is, not in Beijing."""
    site = f"TZ-{uuid.uuid4().hex[:6]}"
    zone = "Pacific/Kiritimati"  # UTC+14: its today is Beijing's tomorrow for 6 hours a day
    await access.add_site(gateway.pool, site, "far east", timezone=zone)
    before = datetime.now(ZoneInfo(zone)).date().isoformat()
    rates = await get(gateway, f"/v1/sites/{site}/rates", role="admin")
    after = datetime.now(ZoneInfo(zone)).date().isoformat()
    assert rates["to"] in (before, after)


async def test_a_late_earlier_dispatch_the_same_day_moves_its_violations_time(
    gateway: RunningGateway,
) -> None:
    """Same day and flow, so the rollup does not move; the violation rows' dispatch time
    (what the list is ordered and paged by) still follows the parcel's."""
    site, wb = gateway.keys.site, "MV0000000002"
    await post(gateway, parcel_flow(site, wb, skip=frozenset({"xray"})))
    path = f"/v1/sites/{site}/violations?from=2026-11-20&to=2026-11-20"
    items = (await get(gateway, path))["items"]
    before = {v["dispatched_at"] for v in items if v["waybill_no"] == wb}
    earlier = BASE + timedelta(minutes=4, seconds=30)  # after the seal, before the dispatch
    await post(gateway, [event("parcel.dispatched", site, wb, earlier, carrier="SF")])
    after = [v for v in (await get(gateway, path))["items"] if v["waybill_no"] == wb]
    assert [v["reason"] for v in after] == ["no_xray"]
    assert len(before) == 1
    assert before != {after[0]["dispatched_at"]}
    assert datetime.fromisoformat(after[0]["dispatched_at"]) == earlier


def _cursor(at: str, waybill: str = "RT0000000001", reason: str = "no_xray") -> str:
    raw = json.dumps([at, waybill, reason]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_read_parameters_the_database_cannot_take_are_4xx(gateway: RunningGateway) -> None:
    """U+0000 (PostgreSQL text cannot hold it), dates at the calendar's ends and forged cursors:
    each a problem document naming the fault, never a 500."""
    site = gateway.keys.site
    violations = f"/v1/sites/{site}/violations"
    nul_cursor = _cursor("2026-11-20T00:00:00+08:00", "A\x00")
    cases = [
        ("supervisor", f"{violations}?flow=%00", 400, "invalid_character"),
        ("supervisor", "/v1/parcels/AB%00CDEF", 400, "invalid_character"),
        ("admin", "/v1/parcels/RT0000000001?site_id=%00", 400, "invalid_character"),
        ("admin", "/v1/sites/%00/rates", 400, "invalid_character"),
        ("supervisor", f"/v1/sites/{site}/rates?to=0001-01-05", 400, "invalid_period"),
        ("supervisor", f"{violations}?to=0001-01-05", 400, "invalid_period"),
        ("supervisor", f"/v1/sites/{site}/rates?from=9999-12-31", 400, "invalid_period"),
        ("supervisor", f"{violations}?cursor={_cursor('0001-01-01T00:00:00+14:00')}", 400,
         "invalid_cursor"),
        ("supervisor", f"{violations}?cursor={_cursor('9999-12-31T23:59:59-14:00')}", 400,
         "invalid_cursor"),
        ("supervisor", f"{violations}?cursor={_cursor('2026-11-20T00:00:00')}", 400,
         "invalid_cursor"),
        ("supervisor", f"{violations}?cursor={nul_cursor}", 400, "invalid_cursor"),
    ]  # fmt: skip
    for role, path, status, code in cases:
        async with gateway.http.get(f"{gateway.url}{path}", headers=gateway.auth(role)) as resp:
            body = await resp.json()
            assert (resp.status, body.get("code")) == (status, code), path
            assert resp.content_type == "application/problem+json"
    # A cursor as the API writes it still pages.
    ok = f"{violations}?cursor={_cursor('2026-11-20T00:00:00+08:00')}"
    assert "items" in await get(gateway, ok)


async def test_the_x_ray_rate_of_the_parcels_the_policy_x_rays(gateway: RunningGateway) -> None:
    """``xray_rate`` counts a parcel the site's policy exempts as meeting the rule (design.md);
    ``xray_required`` and ``xray_screened_rate`` give the share of those it does X-ray."""
    site = f"XR-{uuid.uuid4().hex[:8]}"
    await access.add_site(gateway.pool, site, "air only", xray_flows=["air"])
    _, station = await access.create_key(gateway.pool, Role.STATION, [site])
    _, supervisor = await access.create_key(gateway.pool, Role.SUPERVISOR, [site])
    events = [
        *parcel_flow(site, "XR0000000001", flow="air"),
        *parcel_flow(site, "XR0000000002", flow="air", skip=frozenset({"xray"})),
        *parcel_flow(site, "XR0000000003", flow="same_city", skip=frozenset({"xray"})),
    ]
    headers = {"Authorization": f"Bearer {station}"}
    async with gateway.http.post(f"{gateway.url}/v1/events", json=events, headers=headers) as resp:
        assert (await resp.json())["accepted"] == len(events)
    path = f"/v1/sites/{site}/rates?from=2026-11-01&to=2026-11-30"
    headers = {"Authorization": f"Bearer {supervisor}"}
    async with gateway.http.get(f"{gateway.url}{path}", headers=headers) as resp:
        total = (await resp.json())["total"]
    assert total["dispatched"] == 3
    assert total["xray_rate"] == 2 / 3
    assert total["xray_required"] == 2
    assert total["xray_screened_rate"] == 0.5
    async with gateway.http.get(f"{gateway.url}{path}&group_by=flow", headers=headers) as resp:
        flows = {r["flow"]: r for r in (await resp.json())["rows"]}
    assert (flows["same_city"]["xray_required"], flows["same_city"]["xray_screened_rate"]) == (
        0,
        None,
    )
    assert flows["same_city"]["xray_rate"] == 1.0


BAD_QUERIES = [  # endpoint, query, code, what the detail names
    ("rates", "from=2026-11-30&to=2026-11-01", "invalid_period", "from is after to"),
    ("rates", "from=2025-01-01&to=2026-11-30", "invalid_period", "at most 400 days"),
    ("rates", "from=yesterday", "invalid_query", "from must be a date"),
    ("rates", "to=2026-02-30", "invalid_query", "to must be a date"),
    ("rates", "group_by=week", "invalid_query", "group_by"),
    ("violations", "from=2026-11-30&to=2026-11-01", "invalid_period", "from is after to"),
    ("violations", "from=2025-01-01&to=2026-11-30", "invalid_period", "at most 400 days"),
    ("violations", "to=tomorrow", "invalid_query", "to must be a date"),
    ("violations", "limit=0", "invalid_query", "limit"),
    ("violations", "limit=1001", "invalid_query", "limit"),
    ("violations", "limit=ten", "invalid_query", "limit"),
    ("violations", "reason=late", "invalid_query", "reason"),
    ("violations", "rule=speed", "invalid_query", "rule"),
    ("violations", "flow=AIR", "invalid_query", "flow"),  # flows are lower case, as stored
    ("violations", "flow=bogus", "invalid_query", "flow"),
]


@pytest.mark.parametrize(("endpoint", "query", "code", "named"), BAD_QUERIES)
async def test_each_bad_query_parameter_is_a_400_naming_it(
    gateway: RunningGateway, endpoint: str, query: str, code: str, named: str
) -> None:
    path = f"/v1/sites/{gateway.keys.site}/{endpoint}?{query}"
    async with gateway.http.get(f"{gateway.url}{path}", headers=gateway.auth("supervisor")) as resp:
        body = await resp.json()
        assert (resp.status, body.get("code")) == (400, code), body
        assert named in body["detail"], body
        assert resp.content_type == "application/problem+json"


@pytest.mark.parametrize(
    ("endpoint", "blank"),
    [
        ("rates", "from=&to=&group_by="),
        ("violations", "from=&to=&reason=&rule=&flow=&cursor=&limit="),
    ],
)
async def test_a_blank_query_parameter_is_the_same_as_none(
    gateway: RunningGateway, endpoint: str, blank: str
) -> None:
    """What a form sends for a filter left blank: answered as if it were not there."""
    base = f"{gateway.url}/v1/sites/{gateway.keys.site}/{endpoint}"
    answers = []
    for query in ("", f"?{blank}"):
        async with gateway.http.get(base + query, headers=gateway.auth("supervisor")) as resp:
            assert resp.status == 200, await resp.text()
            answers.append(await resp.json())
    assert answers[0] == answers[1]


@pytest.mark.parametrize(("endpoint", "query", "code", "named"), BAD_QUERIES)
async def test_another_sites_endpoint_is_forbidden_whatever_the_query(
    gateway: RunningGateway, endpoint: str, query: str, code: str, named: str
) -> None:
    """The site's scope is judged first: a key learns nothing about another site's endpoints
    from which of its queries are well formed."""
    path = f"/v1/sites/{gateway.keys.other_site}/{endpoint}?{query}"
    for role in ("station", "supervisor", "police"):
        async with gateway.http.get(f"{gateway.url}{path}", headers=gateway.auth(role)) as resp:
            body = await resp.json()
            assert (resp.status, body.get("code")) == (403, "forbidden_site"), (role, body)


async def test_the_console_export_and_report_judge_scope_before_parameters(
    gateway: RunningGateway,
) -> None:
    other = gateway.keys.other_site
    for path in (
        f"/console/export/{other}/violations.csv?from=yesterday",
        f"/console/export/{other}/violations.csv?flow=bogus",
        f"/console/reports/{other}/2026-13",
        f"/console/reports/{other}/2026-11?format=docx",
    ):
        async with gateway.http.get(
            f"{gateway.url}{path}", headers=gateway.auth("supervisor")
        ) as r:
            body = await r.json()
            assert (r.status, body.get("code")) == (403, "forbidden_site"), (path, body)


async def test_violations_filter_by_flow(gateway: RunningGateway) -> None:
    site = gateway.keys.site
    events = [
        *parcel_flow(site, "FF0000000001", flow="air", skip=frozenset({"xray"})),
        *parcel_flow(site, "FF0000000002", flow="rail", skip=frozenset({"xray"})),
    ]
    assert (await post(gateway, events))["accepted"] == len(events)
    period = "from=2026-11-01&to=2026-11-30"
    air = await get(gateway, f"/v1/sites/{site}/violations?{period}&flow=air")
    assert {(i["waybill_no"], i["flow"]) for i in air["items"]} >= {("FF0000000001", "air")}
    assert all(i["flow"] == "air" for i in air["items"])


async def test_a_changed_site_policy_re_derives_its_parcels_rates_and_violations(
    gateway: RunningGateway,
) -> None:
    # Its own site: the policy change must not reach other tests' parcels.
    site = f"PC-{uuid.uuid4().hex[:8]}"
    await access.add_site(gateway.pool, site, "policy change")
    _, station = await access.create_key(gateway.pool, Role.STATION, [site])
    events = [
        *parcel_flow(site, "PC0000000001", flow="same_city", skip=frozenset({"xray"})),
        *parcel_flow(site, "PC0000000002", flow="air", skip=frozenset({"xray"})),
    ]
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=events, headers={"Authorization": f"Bearer {station}"}
    ) as resp:
        assert resp.status == 200
    day = "from=2026-11-20&to=2026-11-20"

    async def views() -> tuple[bool, float, list[tuple[str, str]]]:
        parcel = await get(gateway, "/v1/parcels/PC0000000001", role="admin")
        rates = await get(gateway, f"/v1/sites/{site}/rates?{day}", role="admin")
        listed = await get(gateway, f"/v1/sites/{site}/violations?{day}", role="admin")
        return (
            parcel["compliant"],
            rates["total"]["three_100_rate"],
            sorted((v["waybill_no"], v["reason"]) for v in listed["items"]),
        )

    assert await views() == (False, 0.0, [("PC0000000001", "no_xray"), ("PC0000000002", "no_xray")])
    # X-ray now required for air parcels only: the same-city parcel becomes compliant in the
    # parcel view, the rates and the violations list alike.
    assert await access.add_site(gateway.pool, site, "policy change", xray_flows=["air"]) == 2
    assert await views() == (True, 0.5, [("PC0000000002", "no_xray")])
    # A time zone eighteen hours behind moves the dispatch day (10:05 in Shanghai is 16:05 the
    # day before in Honolulu): the rollup follows.
    await access.add_site(
        gateway.pool, site, "policy change", timezone="Pacific/Honolulu", xray_flows=["air"]
    )
    after = await get(gateway, f"/v1/sites/{site}/rates?{day}", role="admin")
    assert after["total"]["dispatched"] == 0
    before = await get(
        gateway, f"/v1/sites/{site}/rates?from=2026-11-19&to=2026-11-19", role="admin"
    )
    assert before["total"]["dispatched"] == 2
    moved = await get(
        gateway, f"/v1/sites/{site}/violations?from=2026-11-19&to=2026-11-19", role="admin"
    )
    assert [(v["waybill_no"], v["reason"]) for v in moved["items"]] == [("PC0000000002", "no_xray")]
    # Saving the same policy again derives nothing.
    assert (
        await access.add_site(
            gateway.pool, site, "renamed", timezone="Pacific/Honolulu", xray_flows=["air"]
        )
        is None
    )
    # Renaming it names no policy: the site keeps its own (it was reset to the defaults, every
    # flow in Shanghai, re-deriving the site's history under them).
    assert await access.add_site(gateway.pool, site, "renamed again") is None
    (saved,) = [s for s in await access.list_sites(gateway.pool) if s.site_id == site]
    assert (saved.name, saved.policy.timezone, saved.policy.xray_flows) == (
        "renamed again",
        "Pacific/Honolulu",
        frozenset({Flow.AIR}),
    )


def _moved(kind: str, minutes: int) -> Callable[[list[dict[str, Any]]], None]:
    """Move the parcel's event of ``kind`` to ``minutes`` after its dispatch."""

    def change(events: list[dict[str, Any]]) -> None:
        dispatched = next(e for e in events if e["type"] == "parcel.dispatched")
        at = datetime.fromisoformat(dispatched["occurred_at"]) + timedelta(minutes=minutes)
        next(e for e in events if e["type"] == kind)["occurred_at"] = at.isoformat()

    return change


def _realname(**fields: Any) -> Callable[[list[dict[str, Any]]], None]:
    def change(events: list[dict[str, Any]]) -> None:
        next(e for e in events if e["type"] == "realname.registered").update(fields)

    return change


# Each violation code through the API and the database: a parcel's life with one rule broken,
# and the code the violations list then holds for it (and no other).
VIOLATION_CASES: dict[str, tuple[dict[str, Any], Callable[[list[dict[str, Any]]], None] | None]] = {
    "no_realname": ({"skip": frozenset({"realname"})}, None),
    "invalid_id_document": ({}, _realname(verification="failed")),
    "realname_after_dispatch": ({}, _moved("realname.registered", 1)),
    "no_inspection": ({"skip": frozenset({"inspection"})}, None),
    "inspection_not_passed": ({"inspection_result": "refused"}, None),
    "sealed_before_inspection": ({"seal_first": True}, None),
    "not_sealed": ({"skip": frozenset({"seal"})}, None),
    "no_xray": ({"skip": frozenset({"xray"})}, None),
    "xray_after_dispatch": ({}, _moved("xray.scanned", 1)),
    "dispatched_while_flagged": ({"verdict": "flagged"}, None),
}


@pytest.mark.parametrize("reason", list(VIOLATION_CASES))
async def test_each_violation_code_is_stored_and_listed(
    gateway: RunningGateway, reason: str
) -> None:
    site = gateway.keys.site
    waybill = f"VC{uuid.uuid4().hex[:10].upper()}"
    options, change = VIOLATION_CASES[reason]
    events = parcel_flow(site, waybill, **options)
    if change is not None:
        change(events)
    assert (await post(gateway, events))["accepted"] == len(events)
    listed = await get(
        gateway, f"/v1/sites/{site}/violations?from=2026-11-20&to=2026-11-20&limit=1000"
    )
    assert sorted(v["reason"] for v in listed["items"] if v["waybill_no"] == waybill) == [reason]
    parcel = await get(gateway, f"/v1/parcels/{waybill}")
    assert parcel["compliant"] is False
    assert parcel["violations"] == [reason]


async def test_any_arrival_order_stores_the_same_rows_violations_and_rates(
    gateway: RunningGateway,
) -> None:
    """What is stored (not only what GET /v1/parcels derives afresh from the log) does not
    depend on the order events arrive in, nor on resends: two sites get the same parcels, one
    in order in one batch, the other shuffled, one event per request, some sent twice."""
    shapes: list[dict[str, Any]] = [
        {},
        {"skip": frozenset({"xray"})},
        {"seal_first": True},
        {"inspection_result": "refused"},
        {"skip": frozenset({"realname", "seal"})},
        {"flow": "same_city", "skip": frozenset({"dispatch"})},
    ]
    stored: list[Any] = []
    for shuffled in (False, True):
        site = f"AO-{uuid.uuid4().hex[:8]}"
        await access.add_site(gateway.pool, site, "arrival order")
        _, key = await access.create_key(gateway.pool, Role.STATION, [site])
        events = [
            e
            for n, shape in enumerate(shapes)
            for e in parcel_flow(site, f"AO{n:010d}", start=BASE + timedelta(hours=n), **shape)
        ]
        requests = [events]
        if shuffled:
            rng = random.Random(7)
            resent = rng.sample(events, 8)
            requests = [[e] for e in rng.sample(events + resent, len(events) + 8)]
        for body in requests:
            async with gateway.http.post(
                f"{gateway.url}/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                assert resp.status == 200
        rates = await get(
            gateway, f"/v1/sites/{site}/rates?from=2026-11-20&to=2026-11-21", role="admin"
        )
        parcels = await gateway.pool.fetch(
            "SELECT waybill_no, dispatch_day, rate_flow, xray_required, realname_ok,"
            " inspection_ok, xray_ok, compliant, problems FROM parcels WHERE site_id = $1"
            " ORDER BY waybill_no",
            site,
        )
        violations = await gateway.pool.fetch(
            "SELECT waybill_no, reason, rule, dispatch_day, flow FROM violations"
            " WHERE site_id = $1 ORDER BY waybill_no, reason",
            site,
        )
        stored.append(
            (rates["rows"], rates["total"], [tuple(r) for r in parcels],
             [tuple(v) for v in violations])
        )  # fmt: skip
    assert stored[0] == stored[1]
    assert stored[0][1]["dispatched"] == 5
    assert len(stored[0][3]) >= 4


@pytest.mark.parametrize("finish", ["sites add", "sites rederive"])
async def test_an_interrupted_re_derivation_is_finished_by_the_next_sites_add_or_rederive(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch, finish: str
) -> None:
    """A policy change whose re-derivation was cut off leaves the site marked: the next
    `sites add` (the policy now unchanged) or `sites rederive` of it derives its parcels under
    the new policy and clears the mark, after which `sites add` has nothing left to do."""
    site = f"PI-{uuid.uuid4().hex[:8]}"
    await access.add_site(gateway.pool, site, "interrupted")
    _, station = await access.create_key(gateway.pool, Role.STATION, [site])
    events = parcel_flow(site, "PI0000000001", flow="same_city", skip=frozenset({"xray"}))
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=events, headers={"Authorization": f"Bearer {station}"}
    ) as resp:
        assert resp.status == 200

    async def stopped(*_: Any, **__: Any) -> int:
        raise ConnectionResetError("the operator's connection dropped")

    monkeypatch.setattr(access, "reevaluate_site", stopped)
    with pytest.raises(ConnectionResetError):
        await access.add_site(gateway.pool, site, "interrupted", xray_flows=["air"])
    monkeypatch.undo()
    marked = "SELECT rederive_pending FROM sites WHERE site_id = $1"
    assert await gateway.pool.fetchval(marked, site) is True
    violations = f"/v1/sites/{site}/violations?from=2026-11-20&to=2026-11-20"
    listed = await get(gateway, violations, role="admin")
    assert [v["reason"] for v in listed["items"]] == ["no_xray"]  # still the old policy's
    if finish == "sites add":
        assert await access.add_site(gateway.pool, site, "interrupted", xray_flows=["air"]) == 1
    else:
        assert await access.rederive_sites(gateway.pool, [site]) == {site: 1}
    assert await gateway.pool.fetchval(marked, site) is False
    listed = await get(gateway, violations, role="admin")
    assert listed["items"] == []  # same-city needs no X-ray at an air-only site
    assert await access.add_site(gateway.pool, site, "interrupted", xray_flows=["air"]) is None


async def test_rederive_brings_parcels_stored_under_older_rules_up_to_date(
    gateway: RunningGateway,
) -> None:
    """`screening sites rederive` after an upgrade that changed the rules: a parcel stored as
    an older version judged it (here: no X-ray, its rollup row counting it so) is derived
    again from its events, and its row, violations and the day's rates follow."""
    site = f"RD-{uuid.uuid4().hex[:8]}"
    await access.add_site(gateway.pool, site, "rederive")
    _, station = await access.create_key(gateway.pool, Role.STATION, [site])
    events = parcel_flow(site, "RD0000000001")
    headers = {"Authorization": f"Bearer {station}"}
    async with gateway.http.post(f"{gateway.url}/v1/events", json=events, headers=headers) as resp:
        assert (await resp.json())["accepted"] == len(events)
    async with gateway.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE parcels SET xray_ok = false, compliant = false, problems = '{no_xray}'"
            " WHERE site_id = $1",
            site,
        )
        await conn.execute(
            "UPDATE site_daily_rates SET xray_ok = xray_ok - 1, all_ok = all_ok - 1"
            " WHERE site_id = $1",
            site,
        )
        await conn.execute(
            "INSERT INTO violations (site_id, waybill_no, reason, rule, dispatch_day, flow,"
            " dispatched_at, detected_at) SELECT site_id, waybill_no, 'no_xray', 'xray',"
            " dispatch_day, rate_flow, dispatched_at, now() FROM parcels WHERE site_id = $1",
            site,
        )
    assert await access.rederive_sites(gateway.pool, [site]) == {site: 1}
    period = "from=2026-11-01&to=2026-11-30"
    rates = await get(gateway, f"/v1/sites/{site}/rates?{period}", role="admin")
    assert rates["total"]["three_100_rate"] == 1.0
    violations = await get(gateway, f"/v1/sites/{site}/violations?{period}", role="admin")
    assert violations["items"] == []
    row = await gateway.pool.fetchrow(
        "SELECT compliant, problems FROM parcels WHERE site_id = $1", site
    )
    assert (row["compliant"], row["problems"]) == (True, [])
    with pytest.raises(NotFoundError):
        await access.rederive_sites(gateway.pool, [f"NO-{uuid.uuid4().hex[:8]}"])


@pytest.mark.parametrize("zone", ["Mars/Olympus", "localtime", "posix/Asia/Shanghai", "right/UTC"])
async def test_a_site_takes_only_a_time_zone_the_gateway_and_the_database_both_know(
    gateway: RunningGateway, zone: str
) -> None:
    """The host's own zone, or a zone file only the host has, would load here and then fail
    (or cut days differently) in PostgreSQL's AT TIME ZONE."""
    site = f"TZ-{uuid.uuid4().hex[:8]}"
    with pytest.raises(BadRequestError) as refused:
        await access.add_site(gateway.pool, site, "zone", timezone=zone)
    assert refused.value.code == "invalid_timezone"
    assert await access.add_site(gateway.pool, site, "zone", timezone="Asia/Urumqi") is None
    [stored] = [s for s in await access.list_sites(gateway.pool) if s.site_id == site]
    assert stored.policy.timezone == "Asia/Urumqi"


async def test_a_flow_list_stored_in_another_order_is_the_same_policy(
    gateway: RunningGateway,
) -> None:
    """A site row written by hand lists its flows unsorted: the same set given again is no
    change, and a real change's mark is cleared once its parcels are derived."""
    site = f"FO-{uuid.uuid4().hex[:8]}"
    await gateway.pool.execute(
        "INSERT INTO sites (site_id, name, xray_flows) VALUES ($1, 'by hand', $2)",
        site, ["same_city", "air", "rail"],
    )  # fmt: skip
    marked = "SELECT rederive_pending FROM sites WHERE site_id = $1"
    flows = ["air", "rail", "same_city"]
    assert await access.add_site(gateway.pool, site, "by hand", xray_flows=flows) is None
    assert await gateway.pool.fetchval(marked, site) is False
    assert await access.add_site(gateway.pool, site, "by hand", timezone="Asia/Urumqi") == 0
    assert await gateway.pool.fetchval(marked, site) is False
    assert await access.add_site(gateway.pool, site, "by hand", timezone="Asia/Urumqi") is None
