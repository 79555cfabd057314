"""The reviewers' queue: leases that expire, confirm / clear / escalate with their consequences,
audit samples, and projected threats (TIP) that never reach police or compliance."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg

from screening.alerts.tip import TipImage, render_synthetic
from screening.domain.access import Role
from screening.protection import PersonalDataVault
from screening.services import access
from screening.storage import alerts as alert_store
from tests.alerts.conftest import (
    BRIGHT,
    DARK,
    AlertGateway,
    Receiver,
    soon,
    sse_events,
    start_alert_gateway,
    wait_for,
)
from tests.gateway.events import event
from tests.gateway.test_scans import png


def waybill() -> str:
    return f"RV{uuid.uuid4().hex[:12].upper()}"


async def next_item(g: AlertGateway, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else g.gw.auth("reviewer")
    async with g.gw.http.get(f"{g.gw.url}/v1/review/next", headers=headers) as resp:
        return resp.status, (await resp.json() if resp.status == 200 else None)


async def decide(
    g: AlertGateway, item_id: str, decision: str, token: str | None = None, **extra: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else g.gw.auth("reviewer")
    async with g.gw.http.post(
        f"{g.gw.url}/v1/review/items/{item_id}/decision",
        json={"decision": decision, **extra},
        headers=headers,
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def drain(g: AlertGateway) -> None:
    """Clear whatever earlier tests left in this site's queue (each test has its own site)."""
    while (await next_item(g))[0] == 200:  # pragma: no cover - sites are fresh per test
        pass


async def open_hold(g: AlertGateway, wb: str) -> dict[str, Any] | None:
    _, body = await g.call("GET", "/v1/holds", role="police")
    return next((h for h in body["holds"] if h["waybill_no"] == wb), None)


async def test_a_flagged_scan_is_held_and_queued_and_a_lease_expires(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> None:
    g = await start_alert_gateway(tmp_path, pool, vault, review_lease_s=0.5)
    try:
        await g.set_policy(police=None)
        _, second = await access.create_key(pool, Role.REVIEWER, [g.site])
        wb = waybill()
        await g.upload(DARK, wb)
        hold = await open_hold(g, wb)
        assert hold is not None
        assert hold["status"] == "open"
        status, item = await next_item(g)
        assert status == 200
        assert item["findings"][0]["class_name"] == "knife"
        assert "kind" not in item  # a reviewer never learns whether an item is projected
        assert (await next_item(g, second))[0] == 204  # leased: nobody else gets it
        await asyncio.sleep(0.6)
        status, again = await next_item(g, second)
        assert status == 200
        assert again["item_id"] == item["item_id"]  # the lease expired and moved on
        status, body = await decide(g, item["item_id"], "clear")
        assert status == 409
        assert body["code"] == "lease_lost"
        status, _ = await decide(g, item["item_id"], "clear", token=second)
        assert status == 200
    finally:
        await g.close()


async def test_confirm_alerts_police_and_keeps_the_hold_while_clear_releases_it(
    agw: AlertGateway,
) -> None:
    await agw.set_policy(police=None)  # nothing goes to police without a human
    bad, good = waybill(), waybill()
    await agw.upload(DARK, bad)
    await agw.upload(DARK, good)
    assert await agw.alerts_of_site() == []
    decided: dict[str, Any] = {}
    for _ in range(2):
        status, item = await next_item(agw)
        assert status == 200
        image_status, png = await agw.call(
            "GET", f"/v1/review/items/{item['item_id']}/image", role="reviewer"
        )
        assert image_status == 200
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        decided[item["item_id"]] = item
    items = list(decided)
    status, d1 = await decide(agw, items[0], "confirm", category="controlled_knives")
    assert status == 200
    assert d1["reviewer"]
    status, _ = await decide(agw, items[1], "clear", note="a pair of scissors")
    assert status == 200
    alerts = await agw.alerts_of_site()
    assert len(alerts) == 1
    assert alerts[0]["cause"] == "review_confirmed"
    assert alerts[0]["category"] == "controlled_knives"
    held = {h["waybill_no"]: h["status"] for h in (await agw.call("GET", "/v1/holds"))[1]["holds"]}
    assert sorted(held.values()) == ["open", "released"]
    confirmed_wb = alerts[0]["waybill_no"]
    assert held[confirmed_wb] == "open"


async def test_a_cleared_flag_lets_the_parcel_leave_compliantly(agw: AlertGateway) -> None:
    await agw.set_policy(police=None)
    wb = waybill()
    site = agw.site
    now = soon()
    await access.add_contract(
        agw.gw.pool,
        site,
        "C-1",
        name="武汉光谷电子商务有限公司",
        uscc="91420100MA4K00001U",
        agreement_no="SA-1",
        valid_from=date(2026, 1, 1),
    )
    await agw.events(
        [
            event("parcel.received", site, wb, now, carrier="SF", flow="same_city"),
            event("realname.registered", site, wb, now, contract_customer_ref="C-1"),
            event("inspection.completed", site, wb, now, clerk_id="c1", result="pass"),
            event("parcel.sealed", site, wb, soon(0.001), clerk_id="c1"),
        ]
    )
    await agw.upload(DARK, wb, occurred_at=soon(0.002))
    _, item = await next_item(agw)
    status, _ = await decide(agw, item["item_id"], "clear")
    assert status == 200
    await agw.events([event("parcel.dispatched", site, wb, soon(60), carrier="SF")])
    _, parcel = await agw.call("GET", f"/v1/parcels/{wb}", role="station")
    assert parcel["violations"] == []
    reviewed = [e for e in parcel["events"] if e["type"] == "xray.scanned"]
    assert len(reviewed) == 2  # the scan, and the appended review outcome
    # The scanners' own scans (what the monthly report counts per machine): the one scan.
    scans = await agw.gw.pool.fetch(
        "SELECT verdict FROM scans WHERE site_id = $1 AND waybill_no = $2", site, wb
    )
    assert [r["verdict"] for r in scans] == ["flagged"]


async def test_a_reviewer_clear_leaves_a_parcel_police_were_alerted_to_with_them(
    agw: AlertGateway,
) -> None:
    await agw.set_policy(police=0.5)  # the flag reaches police at once
    wb = waybill()
    await agw.upload(DARK, wb)
    (alert,) = await agw.alerts_of_site()
    _, item = await next_item(agw)
    status, _ = await decide(agw, item["item_id"], "clear")
    assert status == 200
    _, holds = await agw.call("GET", "/v1/holds", role="station")
    assert [h["status"] for h in holds["holds"] if h["waybill_no"] == wb] == ["open"]
    _, parcel = await agw.call("GET", f"/v1/parcels/{wb}", role="station")
    assert "dispatched_while_flagged" in parcel["missing_before_dispatch"]
    # Police close it as released: now the hold lifts and the parcel may leave.
    status, _ = await agw.call(
        "POST", f"/v1/alerts/{alert['alert_id']}/close", json={"disposition": "released"}
    )
    assert status == 200
    _, holds = await agw.call("GET", "/v1/holds", role="station")
    assert [h["status"] for h in holds["holds"] if h["waybill_no"] == wb] == ["released"]
    _, parcel = await agw.call("GET", f"/v1/parcels/{wb}", role="station")
    assert "dispatched_while_flagged" not in parcel["missing_before_dispatch"]


async def test_a_confirmation_after_police_closed_the_alert_does_not_hold_the_parcel_again(
    agw: AlertGateway, receiver: Receiver
) -> None:
    await agw.register(receiver)
    await agw.set_policy(police=0.5)  # the flag reaches police at once
    wb = waybill()
    await agw.upload(DARK, wb)
    (alert,) = await agw.alerts_of_site()
    _, item = await next_item(agw)  # a reviewer has the image open ...
    # ... while police check the parcel itself and find nothing.
    status, _ = await agw.call(
        "POST", f"/v1/alerts/{alert['alert_id']}/close", json={"disposition": "false_alarm"}
    )
    assert status == 200
    status, _ = await decide(agw, item["item_id"], "confirm", category="firearms")
    assert status == 200
    # Police's disposition stands: no new hold, the parcel may still leave.
    _, holds = await agw.call("GET", "/v1/holds", role="station")
    assert [h["status"] for h in holds["holds"] if h["waybill_no"] == wb] == ["released"]
    _, parcel = await agw.call("GET", f"/v1/parcels/{wb}", role="station")
    assert "dispatched_while_flagged" not in parcel["missing_before_dispatch"]
    # The confirmation is on the alert, and police hear of it with the alert's state.
    (after,) = await agw.alerts_of_site()
    assert (after["status"], after["disposition"]) == ("closed", "false_alarm")
    assert after["confirmation"]["category"] == "firearms"
    await wait_for(lambda: len(receiver.received) == 2)
    update = receiver.received[1][1]
    assert update["data"]["change"] == "review_confirmed"
    assert (update["data"]["status"], update["data"]["disposition"]) == ("closed", "false_alarm")
    assert update["data"]["closed_at"] is not None


async def test_a_confirmed_flag_still_makes_dispatch_a_violation(agw: AlertGateway) -> None:
    await agw.set_policy(police=None)
    wb = waybill()
    await agw.upload(DARK, wb)
    _, item = await next_item(agw)
    await decide(agw, item["item_id"], "confirm", category="controlled_knives")
    await agw.events([event("parcel.dispatched", agw.site, wb, soon(60), carrier="SF")])
    _, parcel = await agw.call("GET", f"/v1/parcels/{wb}", role="station")
    assert "dispatched_while_flagged" in parcel["violations"]
    # ... and police hear that a held parcel left.
    causes = sorted(a["cause"] for a in await agw.alerts_of_site())
    assert causes == ["dispatched_while_held", "review_confirmed"]


async def test_escalation_goes_to_a_level_two_reviewer_and_every_decision_is_recorded(
    agw: AlertGateway, pool: asyncpg.Pool[Any]
) -> None:
    await agw.set_policy(police=None)
    senior_id, senior = await access.create_key(pool, Role.REVIEWER, [agw.site])
    status, _ = await agw.call(
        "PUT", f"/v1/review/reviewers/{senior_id}/level", role="admin", json={"level": 2}
    )
    assert status == 200
    await agw.upload(DARK, waybill())
    _, item = await next_item(agw)
    status, escalated = await decide(agw, item["item_id"], "escalate")
    assert status == 200
    # Its answer lost, the reviewer sends it again: told it was recorded, nothing more done.
    assert await decide(agw, item["item_id"], "escalate") == (200, escalated)
    assert (await next_item(agw))[0] == 204  # level 1 no longer sees it
    status, again = await next_item(agw, senior)
    assert status == 200
    assert again["level"] == 2
    status, body = await decide(agw, again["item_id"], "escalate", token=senior)
    assert status == 409
    assert body["code"] == "cannot_escalate"
    status, _ = await decide(agw, again["item_id"], "clear", token=senior)
    assert status == 200
    rows = await pool.fetch(
        "SELECT reviewer, decision, level, decided_at FROM review_decisions"
        " WHERE site_id = $1 ORDER BY decided_at",
        agw.site,
    )
    assert [(r["decision"], r["level"]) for r in rows] == [("escalate", 1), ("clear", 2)]
    assert rows[1]["reviewer"] == senior_id
    assert all(r["decided_at"] is not None for r in rows)


async def test_clear_scans_are_sampled_for_audit(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> None:
    g = await start_alert_gateway(
        tmp_path, pool, vault, clear_audit_share=1.0, cleared_audit_share=1.0
    )
    try:
        await g.set_policy(police=None)
        await g.upload(BRIGHT, waybill())  # the model clears it; sampled anyway
        status, item = await next_item(g)
        assert status == 200
        assert await pool.fetchval("SELECT count(*) FROM holds WHERE site_id = $1", g.site) == 0
        await g.upload(DARK, waybill())
        _, flagged = await next_item(g)
        await decide(g, item["item_id"], "clear")
        await decide(g, flagged["item_id"], "clear")
        count = await pool.fetchval(
            "SELECT count(*) FROM review_items WHERE site_id = $1 AND kind = 'audit'", g.site
        )
        assert count == 2  # the model-clear sample, and the reviewer-cleared re-check
    finally:
        await g.close()


def fake_tip(_seed: int) -> TipImage:
    return TipImage(
        DARK, [{"class_name": "knife", "category": "controlled_knives", "box": [0, 0, 9, 9]}]
    )


async def test_projected_threats_score_the_reviewer_and_never_reach_police(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> None:
    g = await start_alert_gateway(
        tmp_path, pool, vault, tip_rate=1.0, tip_pool_size=2, tip_renderer=fake_tip
    )
    try:
        await g.set_policy(police=0.5)
        g.alerts.tips.ensure_started()
        await wait_for(lambda: g.alerts.tips.ready)  # rendered in the background
        first = (await next_item(g))[1]
        await wait_for(lambda: g.alerts.tips.ready)
        second = (await next_item(g))[1]
        assert first["findings"]  # the model's boxes, as on any real item
        assert (await decide(g, first["item_id"], "confirm", category="controlled_knives"))[
            0
        ] == 200
        assert (await decide(g, second["item_id"], "clear"))[0] == 200
        assert await g.alerts_of_site() == []
        assert await pool.fetchval("SELECT count(*) FROM holds WHERE site_id = $1", g.site) == 0
        assert await pool.fetchval("SELECT count(*) FROM events WHERE site_id = $1", g.site) == 0
        status, stats = await g.call("GET", "/v1/review/stats", role="supervisor")
        assert status == 200
        (mine,) = stats["reviewers"]
        assert mine["tip_projected"] == 2
        assert mine["tip_hits"] == 1
        assert mine["tip_misses"] == 1
        assert mine["hit_rate"] == 0.5
    finally:
        await g.close()


async def test_each_projected_threat_is_a_fresh_image(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> None:
    """Found by review: a fixed pool of 8 images was shown again and again, and reviewers
    learn them within the hour; then spotting a projection says nothing of their eye."""
    rendered: list[int] = []

    def numbered_tip(seed: int) -> TipImage:
        rendered.append(seed)
        return TipImage(png(20 + len(rendered)), fake_tip(seed).truth)

    g = await start_alert_gateway(tmp_path, pool, vault, tip_rate=1.0, tip_pool_size=2,
                                  tip_renderer=numbered_tip)  # fmt: skip
    try:
        await g.set_policy(police=None)
        seen = set()
        for _ in range(6):
            g.alerts.tips.ensure_started()
            await wait_for(lambda: g.alerts.tips.ready)
            item = (await next_item(g))[1]
            status, image = await g.call(
                "GET", f"/v1/review/items/{item['item_id']}/image?overlay=none", role="reviewer"
            )
            assert status == 200
            seen.add(image)
            assert (await decide(g, item["item_id"], "clear"))[0] == 200
        assert len(seen) == 6
    finally:
        await g.close()


async def test_review_stats_name_each_reviewer_and_filter_by_period_and_site(
    tmp_path: Path, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> None:
    shift = [timedelta(0)]  # the gateway's clock, moved back to make an old decision
    g = await start_alert_gateway(
        tmp_path,
        pool,
        vault,
        tip_rate=1.0,
        tip_pool_size=1,
        tip_renderer=fake_tip,
        clock=lambda: datetime.now(UTC) + shift[0],
    )
    try:
        await g.set_policy(police=None)
        key_id, key = await access.create_key(pool, Role.REVIEWER, [g.site], "李明")
        _, other_key = await access.create_key(pool, Role.REVIEWER, [g.gw.keys.other_site])
        status, _ = await g.call(
            "PUT", f"/v1/review/reviewers/{key_id}/level", role="admin", json={"level": 2}
        )
        assert status == 200
        g.alerts.tips.ensure_started()
        await wait_for(lambda: g.alerts.tips.ready)
        # Forty days ago: a projected threat missed. Today: one hit, and at the other site a miss.
        shift[0] = timedelta(days=-40)
        tip = (await next_item(g, key))[1]
        assert (await decide(g, tip["item_id"], "clear", key))[0] == 200
        shift[0] = timedelta(0)
        await wait_for(lambda: g.alerts.tips.ready)  # each projection a fresh image
        tip = (await next_item(g, key))[1]
        assert (await decide(g, tip["item_id"], "confirm", key, category="firearms"))[0] == 200
        await wait_for(lambda: g.alerts.tips.ready)
        tip = (await next_item(g, other_key))[1]
        assert tip["site_id"] == g.gw.keys.other_site
        assert (await decide(g, tip["item_id"], "clear", other_key))[0] == 200
        # Real items: one confirmed, one cleared, one escalated (not a decision of its own).
        g.alerts.review.tip_rate = 0.0
        for decision in ("confirm", "clear", "escalate"):
            await g.upload(DARK, waybill())
            item = (await next_item(g, key))[1]
            assert item["site_id"] == g.site
            assert (await decide(g, item["item_id"], decision, key))[0] == 200

        status, stats = await g.call("GET", "/v1/review/stats", role="supervisor")
        assert status == 200
        assert (stats["site_id"], stats["from"], stats["to"]) == (None, None, None)
        (mine,) = stats["reviewers"]  # the other site's reviewer is out of this key's scope
        assert mine == {
            "reviewer": key_id,
            "label": "李明",
            "level": 2,
            "decisions": 2,
            "confirms": 1,
            "clears": 1,
            "escalations": 1,
            "tip_projected": 2,
            "tip_hits": 1,
            "tip_misses": 1,
            "hit_rate": 0.5,
            "miss_rate": 0.5,
            "false_alarms": 0,
            "false_alarm_rate": 0.0,
        }
        # Days are the site's own (Asia/Shanghai), as for the rates.
        today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
        week_ago, old = today - timedelta(days=7), today - timedelta(days=40)
        _, recent = await g.call("GET", f"/v1/review/stats?from={week_ago}", role="supervisor")
        (mine,) = recent["reviewers"]
        assert (mine["tip_projected"], mine["hit_rate"], mine["decisions"]) == (1, 1.0, 2)
        assert recent["from"] == week_ago.isoformat()
        _, then = await g.call("GET", f"/v1/review/stats?from={old}&to={old}", role="supervisor")
        (mine,) = then["reviewers"]
        assert (mine["tip_projected"], mine["tip_misses"], mine["hit_rate"]) == (1, 1, 0.0)
        assert mine["decisions"] == 0
        _, none = await g.call(
            "GET", f"/v1/review/stats?to={old - timedelta(days=1)}", role="supervisor"
        )
        assert none["reviewers"] == []
        # One site: only within the key's scope.
        other = g.gw.keys.other_site
        status, body = await g.call("GET", f"/v1/review/stats?site_id={other}", role="supervisor")
        assert (status, body["code"]) == (403, "forbidden_site")
        for query in ("from=x", f"from={today}&to={old}"):  # scope first, then the period
            path = f"/v1/review/stats?site_id={other}&{query}"
            status, body = await g.call("GET", path, role="supervisor")
            assert (status, body["code"]) == (403, "forbidden_site"), query
        status, body = await g.call("GET", f"/v1/review/stats?site_id={other}", role="admin")
        assert status == 200
        (theirs,) = body["reviewers"]
        assert (theirs["label"], theirs["level"], theirs["tip_misses"]) == ("", 1, 1)
        status, body = await g.call("GET", "/v1/review/stats", role="admin")
        assert {r["reviewer"] for r in body["reviewers"]} >= {key_id, theirs["reviewer"]}
        # Malformed or reversed periods are refused.
        status, body = await g.call("GET", "/v1/review/stats?from=yesterday", role="supervisor")
        assert (status, body["code"]) == (400, "invalid_query")
        status, body = await g.call(
            "GET", f"/v1/review/stats?from={today}&to={week_ago}", role="supervisor"
        )
        assert (status, body["code"]) == (400, "invalid_period")
    finally:
        await g.close()


def test_the_synthetic_generator_yields_a_threat_image_and_its_truth() -> None:
    for seed in range(3_000_000, 3_000_010):
        tip = render_synthetic(seed)
        if tip is not None:
            break
    assert tip is not None
    assert tip.png[:8] == b"\x89PNG\r\n\x1a\n"
    assert tip.truth
    assert all(len(t["box"]) == 4 and t["category"] for t in tip.truth)


async def skip(g: AlertGateway, item_id: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else g.gw.auth("reviewer")
    async with g.gw.http.post(
        f"{g.gw.url}/v1/review/items/{item_id}/skip", headers=headers
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_skipped_item_is_released_at_once_and_comes_back_to_its_skipper_last(
    agw: AlertGateway, pool: asyncpg.Pool[Any]
) -> None:
    await agw.set_policy(police=None)
    _, other = await access.create_key(pool, Role.REVIEWER, [agw.site])
    _, third = await access.create_key(pool, Role.REVIEWER, [agw.site])
    for _ in range(3):
        await agw.upload(DARK, waybill())
    _, first = await next_item(agw)
    assert first["lease_until"] is not None  # leased for two minutes (the default)
    status, body = await skip(agw, first["item_id"])
    assert (status, body["skipped"]) == (200, True)
    # The skipper is handed the next waiting item, not the older one it just gave back ...
    _, second = await next_item(agw)
    assert second["item_id"] != first["item_id"]
    # ... which another reviewer takes at once, long before its lease would have expired.
    status, taken = await next_item(agw, other)
    assert (status, taken["item_id"]) == (200, first["item_id"])
    assert (await skip(agw, second["item_id"]))[0] == 200
    _, last = await next_item(agw)
    assert last["item_id"] not in (first["item_id"], second["item_id"])
    assert (await skip(agw, last["item_id"]))[0] == 200
    # Nothing else waits: its own skipped items come back, least recently skipped first.
    _, again = await next_item(agw)
    assert again["item_id"] == second["item_id"]
    # A retried skip changes nothing; a skip without the lease is refused.
    assert (await skip(agw, last["item_id"]))[0] == 200
    status, body = await skip(agw, first["item_id"], token=third)
    assert (status, body["code"]) == (409, "lease_lost")
    # Only the lease holder can decide, and a skip is not a decision.
    assert (await decide(agw, first["item_id"], "clear", token=other))[0] == 200
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM review_decisions WHERE site_id = $1 AND decision = 'clear'",
            agw.site,
        )
        == 1
    )
    skips = await pool.fetch(
        "SELECT item_id, skips FROM review_skips WHERE site_id = $1 ORDER BY skipped_at",
        agw.site,
    )
    assert [(str(r["item_id"]), r["skips"]) for r in skips] == [
        (first["item_id"], 1),
        (second["item_id"], 1),
        (last["item_id"], 1),
    ]


async def read_feed(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """``n`` SSE events off a live feed: (id, event name, data)."""
    return [
        (m.get("id", ""), m.get("event", "message"), json.loads(m["data"]))
        for m in await sse_events(resp, n)
    ]


async def test_confirming_a_scan_police_already_have_updates_that_alert_instead_of_a_second(
    agw: AlertGateway, receiver: Receiver
) -> None:
    await agw.register(receiver)
    await agw.set_policy(police=0.5)  # DARK scores ~0.92: police are alerted at upload
    feed_url = f"{agw.gw.url}/v1/alerts/stream"
    async with agw.gw.http.get(feed_url, headers=agw.gw.auth("police")) as feed:
        await agw.upload(DARK, waybill())
        ((first_cursor, kind, first),) = await read_feed(feed, 1)
        assert (kind, first["cause"], first["revision"]) == ("alert", "scan_score", 1)
        assert first["confirmation"] is None
        await wait_for(lambda: len(receiver.received) == 1)
        _, item = await next_item(agw)  # the same scan, queued for a human as well
        status, decided = await decide(agw, item["item_id"], "confirm", category="firearms")
        assert status == 200
        ((cursor, kind, updated),) = await read_feed(feed, 1)
    # The live feed: the same alert again, at revision 2, carrying the confirmation (the same
    # event name, so a consumer that missed revision 1 still hears of the alert).
    assert kind == "alert"
    assert cursor != first_cursor  # a resumed feed cannot miss it
    assert (updated["alert_id"], updated["revision"]) == (first["alert_id"], 2)
    assert updated["confirmation"]["reviewer"] == decided["reviewer"]
    assert updated["confirmation"]["category"] == "firearms"
    assert updated["confirmation"]["review_item_id"] == item["item_id"]
    assert updated["category"] == first["category"]  # the alert's own facts are kept
    # One alert for the incident.
    (alert,) = await agw.alerts_of_site()
    assert alert["alert_id"] == first["alert_id"]
    assert alert["confirmation"]["confirmed_at"] == decided["decided_at"]
    # The webhook: an update with its own stable id, after the alert itself.
    await wait_for(lambda: len(receiver.received) == 2)
    (created_id, created), (update_id, update) = receiver.received
    assert created["type"] == "alert.created"
    assert update["type"] == "alert.updated"
    assert update_id == f"{created_id}_confirmed"
    assert update["data"]["alert_id"] == first["alert_id"]
    assert update["data"]["change"] == "review_confirmed"
    assert update["data"]["revision"] == 2
    assert update["data"]["confirmation"]["reviewer"] == decided["reviewer"]
    assert receiver.bad_signatures == 0
    # Police see who confirmed it, and when, among the alert's actions.
    _, details = await agw.call("GET", f"/v1/alerts/{first['alert_id']}")
    ((action),) = details["actions"]
    assert (action["action"], action["actor"]) == ("review_confirmed", decided["reviewer"])
    assert action["detail"] == {"item_id": item["item_id"], "category": "firearms", "level": 1}
    # A retried decision (its answer lost) is answered as recorded, and sends nothing more; a
    # different decision on the finished item is refused.
    status, again = await decide(agw, item["item_id"], "confirm", category="firearms")
    assert (status, again) == (200, decided)
    assert (await decide(agw, item["item_id"], "clear"))[0] == 409
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 2
    # Police closing it as a false alarm counts against the reviewer who confirmed it.
    status, _ = await agw.call(
        "POST", f"/v1/alerts/{first['alert_id']}/close", json={"disposition": "false_alarm"}
    )
    assert status == 200
    _, stats = await agw.call("GET", "/v1/review/stats", role="supervisor")
    (mine,) = stats["reviewers"]
    assert (mine["decisions"], mine["false_alarms"]) == (1, 1)


async def test_concurrent_confirmations_of_one_scan_annotate_its_alert_once(
    agw: AlertGateway, receiver: Receiver, pool: asyncpg.Pool[Any]
) -> None:
    await agw.register(receiver)
    now = datetime.now(UTC)
    scan_id = uuid.uuid4()
    alert = alert_store.NewAlert(
        site_id=agw.site,
        alert_id=uuid.uuid4(),
        dedupe_key=f"scan:{scan_id}",
        cause="scan_score",
        category="firearms",
        score=0.9,
        waybill_no=waybill(),
        scan_id=scan_id,
        source_event_id=None,
        policy_version=1,
        occurred_at=now,
    )
    async with pool.acquire() as conn, conn.transaction():
        assert await alert_store.insert_alert(conn, alert, now)
    first_done, release = asyncio.Event(), asyncio.Event()

    async def confirm(reviewer: str, hold: bool) -> alert_store.Confirmed:
        confirmation = alert_store.Confirmation(reviewer, now, uuid.uuid4(), "firearms", 1)
        async with pool.acquire() as conn, conn.transaction():
            got = await alert_store.confirm_alert(conn, alert, confirmation, now)
            if hold:
                first_done.set()
                await release.wait()  # commit only once the second one waits on the row
            return got

    first = asyncio.create_task(confirm("reviewer-a", hold=True))
    await first_done.wait()
    second = asyncio.create_task(confirm("reviewer-b", hold=False))

    async def second_waits() -> bool:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%INSERT INTO alerts%'"
        )
        return bool(waiting)

    await wait_for(second_waits)
    release.set()
    done = await asyncio.gather(first, second)
    assert [c.outcome for c in done] == ["confirmed", "unchanged"]
    row = await pool.fetchrow(
        "SELECT revision, confirmed_by FROM alerts WHERE site_id = $1 AND dedupe_key = $2",
        agw.site,
        alert.dedupe_key,
    )
    assert (row["revision"], row["confirmed_by"]) == (2, "reviewer-a")
    messages = await pool.fetch(
        "SELECT message FROM alert_deliveries WHERE site_id = $1 ORDER BY message", agw.site
    )
    assert [m["message"] for m in messages] == ["confirmed", "created"]
    await wait_for(lambda: len(receiver.received) == 2)
