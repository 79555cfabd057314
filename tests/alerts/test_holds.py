"""Hold orders: a flagged parcel's hold goes down the station WebSocket at once, is re-sent until
acknowledged, and through the firmware bridge stops the scanner's belt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from firmware_bridge.app import Bridge
from screening.api.context import GATEWAY
from tests.alerts.conftest import DARK, AlertGateway, soon, wait_for
from tests.bridge.conftest import bridge_config, fast_scanner, wait_until
from tests.gateway.events import event


@contextlib.asynccontextmanager
async def station_stream(agw: AlertGateway) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A station's WebSocket, open once the gateway has registered it for the site."""
    async with agw.gw.http.ws_connect(
        f"{agw.gw.url}/v1/stations/stream", headers=agw.gw.auth("station")
    ) as ws:
        await wait_for(lambda: bool(agw.gw.app[GATEWAY].station_streams.get(agw.site)))
        yield ws


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> Any:
    async with asyncio.timeout(5):
        return json.loads((await ws.receive()).data)


def waybill() -> str:
    return f"HD{uuid.uuid4().hex[:12].upper()}"


async def flagged_at_the_tunnel(agw: AlertGateway, bridge: Bridge, scanner: Any) -> str:
    """Once the bridge's hold stream and the belt run, upload a flagged scan; its waybill, once
    the hold has reached the scanner and stopped the belt."""
    await wait_until(lambda: bool(bridge.holds and bridge.holds.connected))
    await wait_until(lambda: scanner.state.belt_running)
    wb = waybill()
    await agw.upload(DARK, wb)
    await wait_until(lambda: any(h.waybill_no == wb for h in scanner.state.holds))
    assert not scanner.state.belt_running
    return wb


async def test_a_hold_is_pushed_to_the_station_socket_until_acknowledged(
    agw: AlertGateway, pool: asyncpg.Pool[Any]
) -> None:
    await agw.set_policy(police=None)
    async with station_stream(agw) as ws:
        wb = waybill()
        await agw.upload(DARK, wb)
        first = await next_message(ws)
        assert first["type"] == "hold"
        assert first["waybill_no"] == wb
        assert first["site_id"] == agw.site
        again = await next_message(ws)  # not acknowledged: it comes again
        assert again["hold_id"] == first["hold_id"]
        await ws.send_str(json.dumps({"type": "hold.ack", "hold_id": first["hold_id"]}))

        async def acked() -> bool:
            got = await pool.fetchval(
                "SELECT acked_at FROM holds WHERE site_id = $1 AND hold_id = $2",
                agw.site,
                uuid.UUID(first["hold_id"]),
            )
            return got is not None

        await wait_for(acked)
        pushed = agw.alerts.holds.pushed
        await asyncio.sleep(1.3)  # past the re-push interval
        assert agw.alerts.holds.pushed == pushed  # acknowledged holds are not sent again


async def test_a_flagged_parcel_stops_the_virtual_scanners_belt_through_the_bridge(
    agw: AlertGateway, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    await agw.set_policy(police=None)
    scanner = fast_scanner(parcels=50, rate=500.0)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    config = bridge_config(
        url, agw.gw.url, tmp_path / "spool.db", key=agw.gw.keys.by_role["station"], site_id=agw.site
    )
    bridge = Bridge(config)
    await bridge.start()
    try:
        wb = await flagged_at_the_tunnel(agw, bridge, scanner)
        hold = next(h for h in scanner.state.holds if h.waybill_no == wb)

        async def acked() -> bool:
            got = await pool.fetchval(
                "SELECT acked_at FROM holds WHERE site_id = $1 AND hold_id = $2",
                agw.site,
                uuid.UUID(hold.hold_id),
            )
            return got is not None

        await wait_for(acked)
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()


async def test_a_station_reported_flag_holds_the_parcel_and_its_dispatch_alerts_police(
    agw: AlertGateway,
) -> None:
    await agw.set_policy(police=None)
    wb = waybill()
    await agw.events(
        [
            event(
                "xray.scanned", agw.site, wb, soon(), scanner_id="own-1", verdict="flagged",
                detections=[{"class_name": "knife", "score": 0.8, "box": [0, 0, 5, 5]}],
            )
        ]
    )  # fmt: skip
    _, holds = await agw.call("GET", "/v1/holds", role="station")
    assert [(h["waybill_no"], h["status"]) for h in holds["holds"]] == [(wb, "open")]
    assert await agw.alerts_of_site() == []
    await agw.events([event("parcel.dispatched", agw.site, wb, soon(1), carrier="SF")])
    (alert,) = await agw.alerts_of_site()
    assert alert["cause"] == "dispatched_while_held"


async def acked_at(pool: asyncpg.Pool[Any], site: str, column: str, order_id: str) -> Any:
    query = {
        "hold": "SELECT acked_at FROM holds WHERE site_id = $1 AND hold_id = $2",
        "release": "SELECT release_acked_at FROM holds WHERE site_id = $1 AND release_id = $2",
    }[column]
    return await pool.fetchval(query, site, uuid.UUID(order_id))


async def test_a_closed_hold_is_pushed_as_a_release_until_acknowledged(
    agw: AlertGateway, pool: asyncpg.Pool[Any]
) -> None:
    await agw.set_policy(police=None)
    async with station_stream(agw) as ws:
        wb = waybill()
        await agw.upload(DARK, wb)
        hold = await next_message(ws)
        await ws.send_str(json.dumps({"type": "hold.ack", "hold_id": hold["hold_id"]}))
        await wait_for(lambda: acked_at(pool, agw.site, "hold", hold["hold_id"]))
        status, _ = await agw.call("POST", f"/v1/holds/{hold['hold_id']}/release")
        assert status == 200
        release = await next_message(ws)
        assert release["type"] == "hold.release"
        assert (release["hold_id"], release["waybill_no"]) == (hold["hold_id"], wb)
        assert release["resolution"] == "released"
        assert release["release_id"] != hold["hold_id"]
        again = await next_message(ws)  # not acknowledged: it comes again, same id
        assert again == release
        await ws.send_str(
            json.dumps({"type": "hold.release.ack", "release_id": release["release_id"]})
        )
        await wait_for(lambda: acked_at(pool, agw.site, "release", release["release_id"]))
        pushed = agw.alerts.holds.pushed
        await asyncio.sleep(1.3)  # past the re-push interval
        assert agw.alerts.holds.pushed == pushed


async def test_a_cleared_parcels_release_reaches_the_bridge_which_leaves_the_restart_to_people(
    agw: AlertGateway, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    await agw.set_policy(police=None)
    scanner = fast_scanner(parcels=50, rate=500.0)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    config = bridge_config(
        url,
        agw.gw.url,
        tmp_path / "spool.db",
        key=agw.gw.keys.by_role["station"],
        site_id=agw.site,
        status_port=0,
    )
    bridge = Bridge(config)
    await bridge.start()
    try:
        wb = await flagged_at_the_tunnel(agw, bridge, scanner)
        # A reviewer clears the scan: the hold is released and the release pushed down.
        status, item = await agw.call("GET", "/v1/review/next", role="reviewer")
        assert status == 200
        status, _ = await agw.call(
            "POST",
            f"/v1/review/items/{item['item_id']}/decision",
            role="reviewer",
            json={"decision": "clear"},
        )
        assert status == 200
        await wait_until(lambda: bridge.hold_book.restart_allowed)
        assert bridge.status_url is not None
        async with agw.gw.http.get(bridge.status_url) as resp:
            shown = await resp.json()
        assert shown["restart_allowed"] is True
        assert shown["open_holds"] == []
        ((released),) = shown["released_holds"]
        assert (released["waybill_no"], released["resolution"]) == (wb, "released")
        release_id = await pool.fetchval(
            "SELECT release_id FROM holds WHERE site_id = $1 AND waybill_no = $2", agw.site, wb
        )
        await wait_for(lambda: acked_at(pool, agw.site, "release", str(release_id)))
        # The bridge does not restart the belt on a release: an operator does.
        await asyncio.sleep(0.5)
        assert not scanner.state.belt_running
        bridge.resume_belt("operator at the tunnel")
        await wait_until(lambda: scanner.state.belt_running)
        assert not bridge.hold_book.restart_allowed
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()


async def test_releasing_a_hold_clears_the_flag_that_raised_it(agw: AlertGateway) -> None:
    """Police release a held parcel on the holds endpoint: it may leave, and leaving is not
    counted as dispatched while flagged; a seized one stays flagged."""
    await agw.set_policy(police=None)
    outcomes = {}
    for resolution in ("release", "seize"):
        wb = waybill()
        await agw.upload(DARK, wb)
        _, holds = await agw.call("GET", "/v1/holds", role="station")
        (hold,) = [h for h in holds["holds"] if h["waybill_no"] == wb]
        status, _ = await agw.call("POST", f"/v1/holds/{hold['hold_id']}/{resolution}")
        assert status == 200
        await agw.events([event("parcel.dispatched", agw.site, wb, soon(60), carrier="SF")])
        _, parcel = await agw.call("GET", f"/v1/parcels/{wb}", role="station")
        outcomes[resolution] = "dispatched_while_flagged" in parcel["violations"]
    assert outcomes == {"release": False, "seize": True}


async def test_a_release_is_not_pushed_for_a_hold_no_station_acted_on(
    agw: AlertGateway, pool: asyncpg.Pool[Any]
) -> None:
    await agw.set_policy(police=None)
    wb = waybill()
    await agw.upload(DARK, wb)  # held while no station listens: nobody stops a belt for it
    _, holds = await agw.call("GET", "/v1/holds", role="station")
    (hold,) = [h for h in holds["holds"] if h["waybill_no"] == wb]
    status, _ = await agw.call("POST", f"/v1/holds/{hold['hold_id']}/release")
    assert status == 200
    async with station_stream(agw) as ws:
        with pytest.raises(TimeoutError):  # nothing, past the re-push interval
            await asyncio.wait_for(ws.receive(), 2.5)


async def test_a_hold_whose_ack_was_lost_still_gets_its_release(
    agw: AlertGateway, pool: asyncpg.Pool[Any]
) -> None:
    """The station got the hold (and stopped its belt) but its link dropped before the ack: the
    release must still reach it when it comes back."""
    await agw.set_policy(police=None)
    wb = waybill()
    async with station_stream(agw) as ws:
        await agw.upload(DARK, wb)
        hold = await next_message(ws)  # received; the link drops before any ack
    status, _ = await agw.call("POST", f"/v1/holds/{hold['hold_id']}/release")
    assert status == 200
    async with station_stream(agw) as ws:
        release = await next_message(ws)
        assert (release["type"], release["hold_id"]) == ("hold.release", hold["hold_id"])


async def test_releasing_a_station_flag_hold_clears_the_flag(agw: AlertGateway) -> None:
    """A station's own flagged verdict (no image, so no review item) holds the parcel; the
    police release is the only way out, and it must clear the flag for compliance too."""
    await agw.set_policy(police=None)
    wb = waybill()
    flagged = event("xray.scanned", agw.site, wb, soon(), scanner_id="XR-9", verdict="flagged")
    assert (await agw.events([flagged]))["accepted"] == 1
    _, holds = await agw.call("GET", "/v1/holds", role="station")
    (hold,) = [h for h in holds["holds"] if h["waybill_no"] == wb]
    assert hold["status"] == "open"
    status, _ = await agw.call("POST", f"/v1/holds/{hold['hold_id']}/release")
    assert status == 200
    await agw.events([event("parcel.dispatched", agw.site, wb, soon(60), carrier="SF")])
    _, parcel = await agw.call("GET", f"/v1/parcels/{wb}", role="station")
    assert "dispatched_while_flagged" not in parcel["violations"]


async def test_clearing_one_flagged_scan_keeps_the_hold_while_another_waits_for_review(
    agw: AlertGateway,
) -> None:
    await agw.set_policy(police=None)
    wb = waybill()
    await agw.upload(DARK, wb)
    await agw.upload(DARK, wb)  # scanned again, flagged again: one hold, two items

    async def clear_next() -> list[str]:
        """The next item cleared by a reviewer; the parcel's holds after it."""
        _, item = await agw.call("GET", "/v1/review/next", role="reviewer")
        status, _ = await agw.call(
            "POST", f"/v1/review/items/{item['item_id']}/decision", role="reviewer",
            json={"decision": "clear"},
        )  # fmt: skip
        assert status == 200
        _, holds = await agw.call("GET", "/v1/holds", role="station")
        return [h["status"] for h in holds["holds"] if h["waybill_no"] == wb]

    assert await clear_next() == ["open"]  # the second scan still waits for review
    assert await clear_next() == ["released"]


async def test_an_acknowledged_hold_gets_its_release_even_if_its_push_went_unrecorded(
    agw: AlertGateway, pool: asyncpg.Pool[Any]
) -> None:
    """The pusher wrote the hold to the station's socket but failed to record it (a database
    error): the station's ack is proof enough that a belt may be stopped for it."""
    await agw.set_policy(police=None)
    wb = waybill()

    async def recorded(column: str) -> bool:
        return bool(await pool.fetchval(
            f"SELECT {column} IS NOT NULL FROM holds WHERE site_id = $1 AND hold_id = $2",
            agw.site, uuid.UUID(hold["hold_id"]),
        ))  # fmt: skip

    async with station_stream(agw) as ws:
        await agw.upload(DARK, wb)
        hold = await next_message(ws)
        await wait_for(lambda: recorded("pushed_at"))
        await pool.execute(  # as if that record had failed
            "UPDATE holds SET pushed_at = NULL WHERE site_id = $1 AND hold_id = $2",
            agw.site, uuid.UUID(hold["hold_id"]),
        )  # fmt: skip
        await ws.send_json({"type": "hold.ack", "hold_id": hold["hold_id"]})
        await wait_for(lambda: recorded("acked_at"))
        status, _ = await agw.call("POST", f"/v1/holds/{hold['hold_id']}/release")
        assert status == 200
        release = await next_message(ws)
        assert (release["type"], release["hold_id"]) == ("hold.release", hold["hold_id"])
