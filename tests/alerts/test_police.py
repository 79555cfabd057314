"""The police side: causes beyond the X-ray model (prohibited_found, watchlist), the workflow on an
alert, the audited identity read, and the live feed resumed with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from stdnum.iso7064 import mod_11_2

from screening.api import alerts as alerts_api
from screening.domain.access import Role
from screening.protection import PersonalDataVault, associated_data
from screening.services import access
from tests.alerts.conftest import DARK, AlertGateway, soon, sse_events, sse_message
from tests.gateway.events import event


def waybill() -> str:
    return f"PO{uuid.uuid4().hex[:12].upper()}"


def unique_resident_id() -> str:
    body = "11010519900101" + str(uuid.uuid4().int)[:3]  # a valid birth date, random serial
    return body + mod_11_2.calc_check_digit(body)


def registration(site: str, wb: str, number: str) -> dict[str, Any]:
    return event(
        "realname.registered",
        site,
        wb,
        soon(),
        sender={
            "document_type": "resident_id",
            "document_number": number,
            "name": "张三丰",
            "phone": "13812345678",
        },
    )


async def test_a_clerk_finding_a_prohibited_item_alerts_police_and_holds_the_parcel(
    agw: AlertGateway,
) -> None:
    wb = waybill()
    await agw.events(
        [
            event(
                "inspection.completed",
                agw.site,
                wb,
                soon(),
                clerk_id="c1",
                result="prohibited_found",
            )
        ]
    )
    (alert,) = await agw.alerts_of_site()
    assert alert["cause"] == "inspection_prohibited"
    assert alert["waybill_no"] == wb
    _, holds = await agw.call("GET", "/v1/holds", role="station")
    assert [h["waybill_no"] for h in holds["holds"]] == [wb]


async def test_a_watchlisted_sender_alerts_and_only_police_read_the_identity_with_a_purpose(
    agw: AlertGateway, vault: PersonalDataVault, pool: asyncpg.Pool[Any]
) -> None:
    number = unique_resident_id()
    digest = vault.digest("document", number).hex()
    status, _ = await agw.call(
        "POST", "/v1/watchlist", json={"entries": [{"digest": digest, "label": "case 42"}]}
    )
    assert status == 200
    try:
        wb = waybill()
        await agw.events([registration(agw.site, wb, unique_resident_id())])  # not listed
        await agw.events([registration(agw.site, wb, number)])
        (alert,) = await agw.alerts_of_site()
        assert alert["cause"] == "watchlist"
        path = f"/v1/alerts/{alert['alert_id']}"
        # Supervisors see the alert, masked; they cannot open the identity.
        status, masked = await agw.call("GET", path, role="supervisor")
        assert status == 200
        assert masked["sender"]["document_masked"].startswith(number[:4])
        assert number not in json.dumps(masked)
        status, body = await agw.call(
            "POST", f"{path}/identity", role="supervisor", json={"purpose": "curious about it"}
        )
        assert status == 403
        assert body["code"] == "forbidden_role"
        # Not even an admin key opens it: the read is for the police role only.
        status, body = await agw.call(
            "POST", f"{path}/identity", role="admin", json={"purpose": "admin looking around"}
        )
        assert status == 403
        # Police must state a purpose.
        status, _body = await agw.call("POST", f"{path}/identity", json={})
        assert status == 422
        status, who = await agw.call(
            "POST", f"{path}/identity", json={"purpose": "case 42: identify the sender"}
        )
        assert status == 200
        assert who["document_number"] == number
        assert who["name"] == "张三丰"
        status, reads = await agw.call("GET", f"{path}/identity-reads")
        (read,) = reads["reads"]
        assert read["purpose"] == "case 42: identify the sender"
        assert read["reader"]
        assert read["read_at"]
        assert read["record_event_id"] == who["record_event_id"]
        # The watchlist holds no plaintext.
        stored = await pool.fetch("SELECT document_hmac, label FROM watchlist")
        assert all(number.encode() not in bytes(r["document_hmac"]) for r in stored)
    finally:
        await agw.call("POST", "/v1/watchlist/remove", json={"digests": [digest]})


async def test_sealed_identity_fields_open_only_in_their_own_columns(
    agw: AlertGateway, vault: PersonalDataVault, pool: asyncpg.Pool[Any]
) -> None:
    number = unique_resident_id()
    digest = vault.digest("document", number).hex()
    await agw.call(
        "POST", "/v1/watchlist", json={"entries": [{"digest": digest, "label": "case 43"}]}
    )
    try:
        wb = waybill()
        await agw.events([registration(agw.site, wb, number)])
        (alert,) = await agw.alerts_of_site()
        path = f"/v1/alerts/{alert['alert_id']}/identity"
        purpose = {"purpose": "case 43: identify the sender"}
        where = "WHERE site_id = $1 AND waybill_no = $2"
        row = await pool.fetchrow(f"SELECT * FROM realname_records {where}", agw.site, wb)
        # Someone with write access to the table swaps the name and the ID number.
        await pool.execute(
            "UPDATE realname_records SET document_sealed = name_sealed,"
            f" name_sealed = document_sealed {where}",
            agw.site,
            wb,
        )
        status, body = await agw.call("POST", path, json=purpose)
        assert status == 404
        assert body["code"] == "record_unreadable"
        # A record sealed before fields were bound (one associated data for its row) opens.
        legacy = associated_data(agw.site, str(row["event_id"]))
        await pool.execute(
            f"UPDATE realname_records SET document_sealed = $3, name_sealed = $4,"
            f" phone_sealed = $5 {where}",
            agw.site,
            wb,
            *(vault.seal(v, aad=legacy).blob for v in (number, "张三丰", "13812345678")),
        )
        status, who = await agw.call("POST", path, json=purpose)
        assert status == 200, who
        assert (who["document_number"], who["name"], who["phone"]) == (
            number, "张三丰", "13812345678"
        )
    finally:
        await agw.call("POST", "/v1/watchlist/remove", json={"digests": [digest]})


async def test_watchlist_additions_and_removals_are_recorded_with_who_and_when(
    agw: AlertGateway, pool: asyncpg.Pool[Any]
) -> None:
    digest = uuid.uuid4().hex * 2  # 64 hex characters, like an HMAC-SHA256
    status, _ = await agw.call(
        "POST", "/v1/watchlist", json={"entries": [{"digest": digest, "label": "case 77"}]}
    )
    assert status == 200
    adder = await pool.fetchval(
        "SELECT added_by FROM watchlist WHERE document_hmac = $1", bytes.fromhex(digest)
    )
    status, _ = await agw.call("POST", "/v1/watchlist/remove", json={"digests": [digest]})
    assert status == 200
    rows = await pool.fetch(
        "SELECT change, label, actor, at FROM watchlist_changes WHERE document_hmac = $1"
        " ORDER BY at, change",
        bytes.fromhex(digest),
    )
    assert [(r["change"], r["label"], r["actor"]) for r in rows] == [
        ("added", "case 77", adder),
        ("removed", "case 77", adder),  # the same police key took it off again
    ]
    assert rows[0]["at"] <= rows[1]["at"]


async def test_a_site_scoped_key_may_remove_only_the_watchlist_entries_it_added(
    agw: AlertGateway, pool: asyncpg.Pool[Any]
) -> None:
    """The watchlist alerts at every site: one station's police key must not be able to take a
    province's entry off it."""
    mine, theirs = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    for digest, headers in ((mine, {}), (theirs, agw.gw.auth("admin"))):
        status, _ = await agw.call("POST", "/v1/watchlist", headers=headers,
                                   json={"entries": [{"digest": digest, "label": "case"}]})
        assert status == 200

    async def listed(digest: str) -> bool:
        return bool(await pool.fetchval(
            "SELECT count(*) FROM watchlist WHERE document_hmac = $1", bytes.fromhex(digest)))

    try:
        # The site's police key (scoped), asking for both: refused, and nothing removed.
        status, problem = await agw.call("POST", "/v1/watchlist/remove",
                                         json={"digests": [mine, theirs]})
        assert (status, problem["code"]) == (403, "watchlist_entry_of_another_key")
        assert theirs in problem["detail"]
        assert await listed(mine)
        assert await listed(theirs)
        # Its own entry it may remove; the unscoped admin may remove anyone's.
        assert (await agw.call("POST", "/v1/watchlist/remove", json={"digests": [mine]}))[0] == 200
        assert not await listed(mine)
        status, _ = await agw.call("POST", "/v1/watchlist/remove", role="admin",
                                   json={"digests": [theirs]})
        assert status == 200
        assert not await listed(theirs)
        # An entry the scoped key added, then listed again by the admin, is the admin's now; and
        # the scoped key re-adding it changes neither its label nor its owner.
        for headers, label in (({}, "mine"), (agw.gw.auth("admin"), "province"), ({}, "mine")):
            status, _ = await agw.call("POST", "/v1/watchlist", headers=headers,
                                       json={"entries": [{"digest": mine, "label": label}]})
            assert status == 200
        row = await pool.fetchrow("SELECT label, added_by FROM watchlist WHERE document_hmac = $1",
                                  bytes.fromhex(mine))
        assert row["label"] == "province"
        status, problem = await agw.call("POST", "/v1/watchlist/remove",
                                         json={"digests": [mine]})
        assert (status, problem["code"]) == (403, "watchlist_entry_of_another_key")
        assert await listed(mine)
    finally:
        await agw.call("POST", "/v1/watchlist/remove", role="admin",
                       json={"digests": [mine, theirs]})


async def test_acknowledge_assign_and_close_are_recorded_and_seizure_closes_the_hold(
    agw: AlertGateway,
) -> None:
    await agw.set_policy(police=0.5)
    wb = waybill()
    await agw.upload(DARK, wb)
    (alert,) = await agw.alerts_of_site()
    path = f"/v1/alerts/{alert['alert_id']}"
    assert (await agw.call("POST", f"{path}/acknowledge"))[0] == 200
    status, body = await agw.call("POST", f"{path}/assign", json={"assignee": "officer-7"})
    assert body["status"] == "assigned"
    status, body = await agw.call("POST", f"{path}/close", json={"disposition": "maybe"})
    assert status == 422
    status, body = await agw.call(
        "POST", f"{path}/close", json={"disposition": "seized", "note": "knife in the box"}
    )
    assert status == 200
    assert body["status"] == "closed"
    assert body["disposition"] == "seized"
    status, body = await agw.call("POST", f"{path}/acknowledge")
    assert status == 409
    _, details = await agw.call("GET", path)
    assert [a["action"] for a in details["actions"]] == ["acknowledge", "assign", "close"]
    assert all(a["actor"] and a["at"] for a in details["actions"])
    _, holds = await agw.call("GET", "/v1/holds")
    assert [(h["waybill_no"], h["status"]) for h in holds["holds"]] == [(wb, "seized")]
    # Stations and reviewers cannot act on alerts.
    assert (await agw.call("POST", f"{path}/acknowledge", role="station"))[0] == 403
    assert (await agw.call("GET", "/v1/alerts", role="reviewer"))[0] == 403


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` SSE events (id, data) off a streaming response."""
    return [(m.get("id", ""), json.loads(m["data"])) for m in await sse_events(resp, n)]


async def test_a_feed_lost_before_its_first_alert_resumes_where_it_began(
    agw: AlertGateway,
) -> None:
    await agw.set_policy(police=0.5)
    url = f"{agw.gw.url}/v1/alerts/stream"
    async with agw.gw.http.get(url, headers=agw.gw.auth("police")) as resp:
        start = await sse_message(resp)  # the position it began at, before any alert
    assert start.keys() == {"retry", "id"}
    await agw.upload(DARK, "FEED-GAP-1")  # committed while the console reconnects
    headers = {**agw.gw.auth("police"), "Last-Event-ID": start["id"]}
    async with agw.gw.http.get(url, headers=headers) as resp:
        ((_, missed),) = await read_events(resp, 1)
    assert missed["waybill_no"] == "FEED-GAP-1"


async def test_a_revoked_key_loses_its_open_feed(
    agw: AlertGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts_api, "FEED_REAUTH_S", 0.1)
    key_id, key = await access.create_key(agw.gw.pool, Role.POLICE, [agw.site])
    url = f"{agw.gw.url}/v1/alerts/stream"
    async with agw.gw.http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
        assert "id" in await sse_message(resp)
        await access.revoke_key(agw.gw.pool, key_id)
        assert (await sse_message(resp)).get("event") == "revoked"
        assert await sse_message(resp) == {}  # and the stream ends
    async with agw.gw.http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 401


async def test_the_live_feed_resumes_after_the_last_event_id(agw: AlertGateway) -> None:
    await agw.set_policy(police=0.5)
    url = f"{agw.gw.url}/v1/alerts/stream"
    async with agw.gw.http.get(url, headers=agw.gw.auth("police")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await agw.upload(DARK, "FEED-1")
        ((first_id, first),) = await read_events(resp, 1)
    assert first["waybill_no"] == "FEED-1"
    # The console is gone while two more alerts arrive.
    await agw.upload(DARK, "FEED-2")
    await agw.upload(DARK, "FEED-3")
    headers = {**agw.gw.auth("police"), "Last-Event-ID": first_id}
    async with agw.gw.http.get(url, headers=headers) as resp:
        missed = await read_events(resp, 2)
    assert [d["waybill_no"] for _, d in missed] == ["FEED-2", "FEED-3"]
    # Another site's police see none of it.
    other = {**agw.gw.auth("police", other=True), "Last-Event-ID": first_id}
    async with agw.gw.http.get(url, headers=other) as resp:
        await agw.upload(DARK, "FEED-4")
        with_timeout: list[Any] = []
        try:
            async with asyncio.timeout(1.5):
                with_timeout = await read_events(resp, 1)
        except TimeoutError:
            pass
    assert with_timeout == []
    status, _body = await agw.call(
        "GET", url.replace(agw.gw.url, ""), headers={"Last-Event-ID": "x"}
    )
    assert status == 400


@pytest.mark.parametrize("first", ["watchlist", "scan_score"])
async def test_a_parcel_is_released_only_when_its_last_alert_closes_and_then_leaves_cleared(
    agw: AlertGateway, vault: PersonalDataVault, first: str
) -> None:
    """A flagged scan (one alert, a hold) and a watchlisted sender (another) on one parcel:
    police dismissing one must not let the parcel go while the other is open; once the last
    closes, every flagged scan is cleared for compliance (whichever alert it was) and the
    parcel's dispatch is compliant."""
    await agw.set_policy(police=0.5)
    number = unique_resident_id()
    digest = vault.digest("document", number).hex()
    await agw.call("POST", "/v1/watchlist", json={"entries": [{"digest": digest, "label": "x"}]})
    try:
        wb = waybill()
        await agw.events([event("parcel.received", agw.site, wb, soon(), carrier="SF",
                                flow="same_city"),
                          registration(agw.site, wb, number),
                          event("inspection.completed", agw.site, wb, soon(), clerk_id="c1",
                                result="pass"),
                          event("parcel.sealed", agw.site, wb, soon(), clerk_id="c1")])  # fmt: skip
        await agw.upload(DARK, wb)
        by_cause = {a["cause"]: a for a in await agw.alerts_of_site() if a["waybill_no"] == wb}
        assert set(by_cause) == {"watchlist", "scan_score"}, by_cause

        async def hold_status() -> list[str]:
            _, holds = await agw.call("GET", "/v1/holds")
            return [h["status"] for h in holds["holds"] if h["waybill_no"] == wb]

        last = "scan_score" if first == "watchlist" else "watchlist"
        for cause, disposition in ((first, "false_alarm"), (last, "released")):
            path = f"/v1/alerts/{by_cause[cause]['alert_id']}/close"
            assert (await agw.call("POST", path, json={"disposition": disposition}))[0] == 200
            # held while the other alert is open; released with the last
            assert await hold_status() == ["open" if cause == first else "released"]
        await agw.events([event("parcel.dispatched", agw.site, wb, soon(1))])
        _, parcel = await agw.call("GET", f"/v1/parcels/{wb}", role="station")
        assert parcel["compliant"] is True, parcel
    finally:
        await agw.call("POST", "/v1/watchlist/remove", json={"digests": [digest]})


async def test_the_live_feed_shows_each_police_action_as_the_alerts_new_state(
    agw: AlertGateway,
) -> None:
    await agw.set_policy(police=0.5)
    feed_url = f"{agw.gw.url}/v1/alerts/stream"
    async with agw.gw.http.get(feed_url, headers=agw.gw.auth("police")) as feed:
        await sse_message(feed)  # the starting position
        await agw.upload(DARK, f"PF{uuid.uuid4().hex[:12].upper()}")
        ((_, alert),) = await read_events(feed, 1)
        path = f"/v1/alerts/{alert['alert_id']}"
        assert (await agw.call("POST", f"{path}/acknowledge"))[0] == 200
        assert (await agw.call("POST", f"{path}/assign", json={"assignee": "officer-7"}))[0] == 200
        assert (await agw.call("POST", f"{path}/close", json={"disposition": "seized"}))[0] == 200
        updates = [data for _, data in await read_events(feed, 3)]
    assert [(u["alert_id"], u["status"]) for u in updates] == [
        (alert["alert_id"], "acknowledged"),
        (alert["alert_id"], "assigned"),
        (alert["alert_id"], "closed"),
    ]
    assert [u["revision"] for u in updates] == [2, 3, 4]  # a consumer keeps the highest
    assert updates[-1]["disposition"] == "seized"


def hd_waybill() -> str:
    return f"HD{uuid.uuid4().hex[:12].upper()}"


async def _holds(agw: AlertGateway, waybill: str) -> list[str]:
    _, body = await agw.call("GET", "/v1/holds", role="station")
    return [h["status"] for h in body["holds"] if h["waybill_no"] == waybill]


async def _violations_after_dispatch(agw: AlertGateway, waybill: str) -> list[str]:
    await agw.events([event("parcel.dispatched", agw.site, waybill, soon(60), carrier="SF")])
    _, parcel = await agw.call("GET", f"/v1/parcels/{waybill}", role="station")
    return list(parcel["violations"])


async def test_a_seized_parcel_is_not_cleared_by_closing_its_other_alert(
    agw: AlertGateway,
) -> None:
    """Found by review: closing the parcel's other alert as a false alarm cleared every flagged
    scan, the seized one too, and the seized parcel could leave counted compliant."""
    await agw.set_policy(police=0.5)  # the dark scan (~0.92) alerts police on its score
    wb = hd_waybill()
    await agw.events([event("inspection.completed", agw.site, wb, soon(), clerk_id="C1",
                            result="prohibited_found")])  # fmt: skip
    await agw.upload(DARK, wb)
    alerts = {a["cause"]: a for a in await agw.alerts_of_site() if a["waybill_no"] == wb}
    seized = alerts["scan_score"]["alert_id"]
    assert (await agw.call("POST", f"/v1/alerts/{seized}/close",
                           json={"disposition": "seized"}))[0] == 200  # fmt: skip
    assert await _holds(agw, wb) == ["seized"]
    other = alerts["inspection_prohibited"]["alert_id"]
    assert (await agw.call("POST", f"/v1/alerts/{other}/close",
                           json={"disposition": "false_alarm"}))[0] == 200  # fmt: skip
    assert "dispatched_while_flagged" in await _violations_after_dispatch(agw, wb)


async def test_a_false_alarm_does_not_release_a_parcel_whose_scan_awaits_review(
    agw: AlertGateway,
) -> None:
    await agw.set_policy(police=None)  # the scan itself alerts nobody: a reviewer decides it
    wb = hd_waybill()
    await agw.events([event("inspection.completed", agw.site, wb, soon(), clerk_id="C1",
                            result="prohibited_found")])  # fmt: skip
    await agw.upload(DARK, wb)  # flagged: a review item waits
    (alert,) = [a for a in await agw.alerts_of_site() if a["waybill_no"] == wb]
    assert (await agw.call("POST", f"/v1/alerts/{alert['alert_id']}/close",
                           json={"disposition": "false_alarm"}))[0] == 200  # fmt: skip
    assert await _holds(agw, wb) == ["open"]  # the reviewer's decision is still owed
    _, item = await agw.call("GET", "/v1/review/next", role="reviewer")
    status, _ = await agw.call("POST", f"/v1/review/items/{item['item_id']}/decision",
                               role="reviewer", json={"decision": "clear"})  # fmt: skip
    assert status == 200
    assert await _holds(agw, wb) == ["released"]
    assert "dispatched_while_flagged" not in await _violations_after_dispatch(agw, wb)


async def test_a_reviewers_clear_does_not_release_a_hold_a_stations_own_flag_raised(
    agw: AlertGateway,
) -> None:
    """The station's flag has no image and no review item: police release it, nobody else."""
    await agw.set_policy(police=None)
    wb = hd_waybill()
    station_flag = event("xray.scanned", agw.site, wb, soon(), scanner_id="XR-9",
                         verdict="flagged")  # fmt: skip
    await agw.events([station_flag])
    await agw.upload(DARK, wb)
    _, item = await agw.call("GET", "/v1/review/next", role="reviewer")
    status, _ = await agw.call("POST", f"/v1/review/items/{item['item_id']}/decision",
                               role="reviewer", json={"decision": "clear"})  # fmt: skip
    assert status == 200
    assert await _holds(agw, wb) == ["open"]
    _, holds = await agw.call("GET", "/v1/holds", role="police")
    (hold,) = [h for h in holds["holds"] if h["waybill_no"] == wb]
    assert (await agw.call("POST", f"/v1/holds/{hold['hold_id']}/release"))[0] == 200
    assert "dispatched_while_flagged" not in await _violations_after_dispatch(agw, wb)


async def test_counts_and_cursors_the_database_could_not_take_are_400(agw: AlertGateway) -> None:
    """"²" is a digit to str.isdigit, not to int(); a cursor past bigint used to start a
    stream (200) that then failed inside it, and the console resumed with it forever."""
    for path in ("/v1/alerts?limit=%C2%B2", "/v1/holds?limit=%C2%B2"):
        status, body = await agw.call("GET", path)
        assert (status, body["code"]) == (400, "invalid_query"), path
    for cursor in ("%C2%B2-1", "99999999999999999999-1", "1-99999999999999999999"):
        status, body = await agw.call("GET", f"/v1/alerts/stream?last_event_id={cursor}")
        assert (status, body["code"]) == (400, "invalid_last_event_id"), cursor


async def test_a_reviewers_clear_deferred_to_police_is_not_lost_while_another_scan_waits(
    agw: AlertGateway,
) -> None:
    """Found by review of the change above: police dismissing the parcel's alert while a
    second scan still waited for review kept the hold but cleared nothing, not even the first
    scan, whose reviewer's clear had been deferred to police; once the second was cleared the
    first still stood, and the hold could never be released by a decision."""
    await agw.set_policy(police=None)
    wb = hd_waybill()
    await agw.events([event("inspection.completed", agw.site, wb, soon(), clerk_id="C1",
                            result="prohibited_found")])  # fmt: skip
    await agw.upload(DARK, wb)  # two flagged scans, each a review item
    await agw.upload(DARK, wb)

    async def clear_next() -> None:
        _, item = await agw.call("GET", "/v1/review/next", role="reviewer")
        status, _ = await agw.call("POST", f"/v1/review/items/{item['item_id']}/decision",
                                   role="reviewer", json={"decision": "clear"})  # fmt: skip
        assert status == 200

    await clear_next()  # deferred to police: their alert is open
    (alert,) = [a for a in await agw.alerts_of_site() if a["waybill_no"] == wb]
    assert (await agw.call("POST", f"/v1/alerts/{alert['alert_id']}/close",
                           json={"disposition": "false_alarm"}))[0] == 200  # fmt: skip
    assert await _holds(agw, wb) == ["open"]  # the second scan still waits
    await clear_next()
    assert await _holds(agw, wb) == ["released"]
    assert "dispatched_while_flagged" not in await _violations_after_dispatch(agw, wb)
