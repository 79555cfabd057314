"""The supervisor's views in a real browser: charts drawn from the rates API, filters and paging
of violations, a parcel's timeline, CSV export, the checkpoint card, language, and site scope."""

from __future__ import annotations

import base64
import csv
import io
import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from screening.api.ledger import LEDGER_SIGNER
from screening.domain.checkpoint import Checkpoint, NoteSigner, sign_note
from screening.services import ledger as ledger_service
from tests.web.conftest import OpenConsole
from tests.web.demo import Demo


async def api(page: Any, path: str) -> tuple[int, Any]:
    resp = await page.request.get(page.url.split("/console/")[0] + path)
    return resp.status, await resp.json()


async def test_overview_draws_trend_flow_and_ranking_from_the_rates(
    demo: Demo, open_console: OpenConsole
) -> None:
    gw = demo.gateway
    page = await open_console(gw.url, demo.supervisor_both)
    site = gw.keys.site
    await page.goto(f"{gw.url}/console/#/overview?site={site}")
    await page.wait_for_selector("main[data-ready=overview] #ranking")
    status, rates = await api(page, f"/v1/sites/{site}/rates?group_by=day")
    assert status == 200
    days_with_parcels = [r for r in rates["rows"] if r["dispatched"]]
    assert len(days_with_parcels) >= 10
    # One point per day with dispatched parcels, on each of the four series.
    trend = page.locator("svg.chart-trend")
    assert await trend.locator("g.series").count() == 4
    assert await trend.locator("polyline").count() >= 4
    assert await trend.locator("circle.point").count() == 4 * len(days_with_parcels)
    values = (
        await trend.locator("g.series")
        .nth(3)
        .locator("circle.point")
        .evaluate_all("els => els.map(e => Number(e.dataset.value))")
    )
    expected = [r["three_100_rate"] for r in rates["rows"] if r["dispatched"]]
    assert values == expected
    kpi = await page.text_content("#kpis .kpi.main b")
    assert kpi == f"{rates['total']['three_100_rate'] * 100:.1f}%"
    # By flow: a bar per flow that had parcels.
    _, flows = await api(page, f"/v1/sites/{site}/rates?group_by=flow")
    assert await page.locator("svg.chart-flow rect.bar").count() == len(
        [r for r in flows["rows"] if r["dispatched"]]
    )
    # Ranking: both sites of this key, best first.
    bars = page.locator("svg.chart-ranking rect.bar")
    assert await bars.count() == 2
    ranked = await bars.evaluate_all("els => els.map(e => Number(e.dataset.value))")
    assert ranked == sorted(ranked, reverse=True)
    # No checkpoint signed yet.
    assert await page.text_content("#checkpoint #no-checkpoint") == "尚无检查点。"
    # Weekly trend: at most three weeks in a two-week window of data.
    await page.select_option("#gran", "week")
    await page.wait_for_selector("main[data-ready=overview] #ranking")
    weekly = await page.locator("svg.chart-trend g.series").nth(0).locator("circle").count()
    assert 2 <= weekly <= 3


async def test_default_period_ends_on_the_sites_own_day(
    demo: Demo, open_console: OpenConsole
) -> None:
    """A supervisor's browser eight hours behind UTC (a Shanghai site is a day ahead of it for 16
    hours of every day): the default period still ends on the site's today, so today's parcels
    are in the views."""
    gw = demo.gateway
    site = gw.keys.site
    page = await open_console(gw.url, demo.supervisor_both, timezone_id="America/Los_Angeles")
    _, sites = await api(page, "/console/sites")
    tz = next(s["timezone"] for s in sites["sites"] if s["site_id"] == site)
    site_today = datetime.now(ZoneInfo(tz)).date()
    await page.goto(f"{gw.url}/console/#/overview?site={site}")
    await page.wait_for_selector("main[data-ready=overview] #ranking")
    assert await page.input_value("#to") == site_today.isoformat()
    assert await page.input_value("#from") == (site_today - timedelta(days=29)).isoformat()
    await page.goto(f"{gw.url}/console/#/violations?site={site}")
    await page.wait_for_selector("main[data-ready=violations]")
    assert await page.input_value("#to") == site_today.isoformat()


async def test_violation_filters_paging_and_drill_down(
    demo: Demo, open_console: OpenConsole
) -> None:
    gw = demo.gateway
    site = gw.keys.other_site
    page = await open_console(gw.url, demo.supervisor_both)
    await page.goto(f"{gw.url}/console/#/violations?site={site}&limit=10")
    await page.wait_for_selector("main[data-ready=violations]")
    assert await page.locator("#violations tbody tr").count() == 10
    await page.click("#more")
    await page.wait_for_function("document.querySelectorAll('#violations tbody tr').length > 10")
    # A filter: every row has the chosen reason, and the count is the API's.
    await page.select_option("#reason", "sealed_before_inspection")
    await page.click("#apply")
    await page.wait_for_function("location.hash.includes('reason=sealed_before_inspection')")
    await page.wait_for_selector("main[data-ready=violations]")
    _, listed = await api(
        page, f"/v1/sites/{site}/violations?reason=sealed_before_inspection&limit=1000"
    )
    rows = page.locator("#violations tbody tr")
    assert await rows.count() == len(listed["items"]) > 0
    reasons = await rows.evaluate_all("els => els.map(e => e.dataset.reason)")
    assert set(reasons) == {"sealed_before_inspection"}
    # Drill down: the parcel's timeline lists its events in order.
    waybill = listed["items"][0]["waybill_no"]
    await page.click(f"text={waybill}")
    await page.wait_for_selector("main[data-ready=parcel] #timeline")
    _, parcel = await api(page, f"/v1/parcels/{waybill}?site_id={site}")
    types = await page.locator("#timeline li").evaluate_all("els => els.map(e => e.dataset.type)")
    assert types == [e["type"] for e in parcel["events"]]
    assert await page.text_content("#parcel-status") == "违规"
    seal_rule = page.locator("ul.rules li[data-rule=inspection]")
    assert "先封后验" in (await seal_rule.text_content() or "")


async def test_csv_export_holds_every_filtered_violation(
    demo: Demo, open_console: OpenConsole
) -> None:
    gw = demo.gateway
    site = gw.keys.site
    page = await open_console(gw.url, demo.supervisor_both)
    await page.goto(f"{gw.url}/console/#/violations?site={site}&rule=inspection")
    await page.wait_for_selector("main[data-ready=violations]")
    href = await page.get_attribute("#export-csv", "href")
    assert href is not None
    assert "rule=inspection" in href
    resp = await page.request.get(gw.url + href)
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    text = (await resp.body()).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    _, listed = await api(page, f"/v1/sites/{site}/violations?rule=inspection&limit=1000")
    assert [(r["waybill_no"], r["reason"]) for r in rows] == [
        (v["waybill_no"], v["reason"]) for v in listed["items"]
    ]
    assert rows
    assert {r["rule"] for r in rows} == {"inspection"}
    assert {r["site_id"] for r in rows} == {site}


async def test_a_supervisor_sees_only_the_own_site(demo: Demo, open_console: OpenConsole) -> None:
    gw = demo.gateway
    page = await open_console(gw.url, gw.keys.by_role["supervisor"])
    other = gw.keys.other_site
    await page.goto(f"{gw.url}/console/#/overview?site={other}")
    await page.wait_for_selector("main[data-ready=overview] #ranking")
    options = await page.locator("#site option").evaluate_all("els => els.map(e => e.value)")
    assert options == [gw.keys.site]  # the other site is not offered, nor shown
    assert other not in (await page.text_content("main h1") or "")
    assert await page.locator("svg.chart-ranking rect.bar").count() == 1
    _status, sites = await api(page, "/console/sites")
    assert [s["site_id"] for s in sites["sites"]] == [gw.keys.site]
    for path in (
        f"/v1/sites/{other}/rates",
        f"/v1/sites/{other}/violations",
        f"/console/export/{other}/violations.csv",
        f"/console/reports/{other}/2026-11",
    ):
        resp = await page.request.get(gw.url + path)
        assert resp.status == 403, path
        assert (await resp.json())["code"] == "forbidden_site"
    other_waybill = demo.waybills[other][0]
    resp = await page.request.get(f"{gw.url}/v1/parcels/{other_waybill}")
    assert resp.status == 404


async def test_the_language_toggle_switches_every_string(
    demo: Demo, open_console: OpenConsole
) -> None:
    gw = demo.gateway
    page = await open_console(gw.url, gw.keys.by_role["supervisor"])
    assert await page.text_content("header nav a[data-view=overview]") == "合规率"
    await page.click("#lang")
    await page.wait_for_function(
        "document.querySelector('header nav a[data-view=overview]')?.textContent === 'Rates'"
    )
    await page.wait_for_selector("main[data-ready=overview] #ranking")
    assert await page.get_attribute("html", "lang") == "en"
    assert (await page.text_content("main h1") or "").startswith("Compliance rates")
    assert await page.text_content("#checkpoint #no-checkpoint") == "No checkpoint yet."
    # The choice sticks across a reload.
    await page.reload()
    await page.wait_for_selector("main[data-ready=overview]")
    assert await page.text_content("header nav a[data-view=overview]") == "Rates"


async def test_the_latest_signed_checkpoint_is_shown_verified(
    fresh: Demo, open_console: OpenConsole
) -> None:
    gw = fresh.gateway
    site = gw.keys.site
    await ledger_service.make_checkpoint(gw.pool, site, gw.app[LEDGER_SIGNER])
    _, cp = await api_json(gw, f"/v1/sites/{site}/ledger/checkpoint")
    page = await open_console(gw.url, gw.keys.by_role["supervisor"])
    await page.wait_for_selector("main[data-ready=overview] #checkpoint[data-verified]")
    # Ed25519 over the note, checked in the browser against the published verifier key.
    assert await page.get_attribute("#checkpoint", "data-verified") == "verified"
    assert await page.text_content("#checkpoint-verdict") == "✓ 签名验证通过"
    assert await page.text_content("#checkpoint [data-tree-size]") == str(cp["tree_size"])
    assert cp["tree_size"] > 0
    # A note whose body does not match the advertised root fails the check.
    forged = {**cp, "root_hash": cp["root_hash"][::-1]}
    verdict = await page.evaluate(
        """async (cp) => {
            const mod = await import('/console/static/console.js');
            return mod.verifyNote(cp.note, cp.vkey, cp);
        }""",
        forged,
    )
    assert verdict == "bad"
    # Keys whose base64 holds "+" (the vkey's field separator) verify too; a wrong key does not.
    signers = (NoteSigner.generate("screening.example/ledger") for _ in range(200))
    plus = next(s for s in signers if "+" in s.vkey().split("+", 2)[2])
    checkpoint = Checkpoint("screening.example/sites/T", 5, bytes(range(32)))
    note = sign_note(checkpoint.body(), [plus])
    claimed = {"tree_size": 5, "root_hash": base64.b64encode(bytes(range(32))).decode()}
    for vkey, expected in ((plus.vkey(), "verified"), (cp["vkey"], "bad")):
        verdict = await page.evaluate(
            """async ([note, vkey, cp]) => {
                const mod = await import('/console/static/console.js');
                return mod.verifyNote(note, vkey, cp);
            }""",
            [note, vkey, claimed],
        )
        assert verdict == expected, vkey


async def api_json(gw: Any, path: str) -> tuple[int, Any]:
    async with gw.http.get(f"{gw.url}{path}", headers=gw.auth("supervisor")) as resp:
        return resp.status, await resp.json()


async def test_a_stations_image_ref_is_drawn_only_when_it_names_a_scan(
    fresh: Demo, open_console: OpenConsole
) -> None:
    """image_ref is the station's text: only "scans/<uuid>" becomes an image address, so a
    crafted "scans/../review/next" cannot make a reader's browser call another endpoint."""
    gw = fresh.gateway
    site, waybill = gw.keys.site, "SCREF0000001"
    scan_id = str(uuid.uuid4())
    events = [
        {"type": "parcel.received", "event_id": str(uuid.uuid4()), "site_id": site,
         "waybill_no": waybill, "occurred_at": "2026-11-20T10:00:00+08:00", "carrier": "SF",
         "flow": "same_city"},
        {"type": "xray.scanned", "event_id": str(uuid.uuid4()), "site_id": site,
         "waybill_no": waybill, "occurred_at": "2026-11-20T10:01:00+08:00", "scanner_id": "X1",
         "verdict": "clear", "image_ref": "scans/../review/next?x="},
        {"type": "xray.scanned", "event_id": str(uuid.uuid4()), "site_id": site,
         "waybill_no": waybill, "occurred_at": "2026-11-20T10:02:00+08:00", "scanner_id": "X1",
         "verdict": "clear", "image_ref": f"scans/{scan_id}"},
    ]  # fmt: skip
    async with gw.http.post(f"{gw.url}/v1/events", json=events, headers=gw.auth()) as resp:
        assert resp.status == 200
        assert [r["result"] for r in (await resp.json())["results"]] == ["accepted"] * 3
    page = await open_console(gw.url, gw.keys.by_role["supervisor"])
    await page.goto(f"{gw.url}/console/#/parcel/{waybill}?site={site}")
    await page.wait_for_selector("main[data-ready=parcel] #timeline")
    sources = await page.locator("#timeline img").evaluate_all(
        "els => els.map(e => e.getAttribute('src'))"
    )
    assert sources == [f"/v1/scans/{scan_id}/image?overlay=boxes&site_id={site}"]


async def test_an_export_with_an_open_period_is_named_by_the_period_it_holds(demo: Demo) -> None:
    """Found by review: without from and to the export holds the site's last 30 days, but
    its file was named as if it held everything from the start."""
    gw = demo.gateway
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()  # the demo sites' time zone
    url = f"{gw.url}/console/export/{gw.keys.site}/violations.csv"
    async with gw.http.get(url, headers=gw.auth("supervisor")) as resp:
        assert resp.status == 200
        disposition = resp.headers["Content-Disposition"]
    first = today - timedelta(days=29)
    assert disposition == f'attachment; filename="violations-{gw.keys.site}-{first}-{today}.csv"'
