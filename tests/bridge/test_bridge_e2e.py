"""Virtual scanner <-> bridge over real TCP (and a pty), with a real fake gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import cv2
import numpy as np

from firmware_bridge.app import Bridge
from firmware_bridge.colour import from_u16

from .conftest import PIXELS, bridge_config, fast_scanner, wait_until
from .fake_gateway import KEY, FakeGateway


async def test_parcels_flow_from_scanner_lines_to_gateway_scans(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    scanner = fast_scanner(parcels=4)
    server = await scanner.serve_tcp()
    port = server.sockets[0].getsockname()[1]
    bridge = Bridge(
        bridge_config(f"tcp://127.0.0.1:{port}", gateway.url, tmp_path / "spool.db", status_port=0)
    )
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.scans) == 4 and len(scanner.state.parcels_done) >= 4)
        sent = {p.waybill_no for p in scanner.state.parcels_done[:4]}
        got = {m["waybill_no"] for m in gateway.scans.values()}
        assert got == sent
        meta = next(iter(gateway.scans.values()))
        assert meta["pixels_per_line"] == PIXELS
        assert meta["scanner_id"] == "SIM-0001"
        assert meta["occurred_at"].endswith("+00:00")
        images = next(iter(gateway.images.values()))
        rgb = cv2.imdecode(np.frombuffer(images["image"], np.uint8), cv2.IMREAD_UNCHANGED)
        high = cv2.imdecode(np.frombuffer(images["high"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert rgb.shape == (meta["line_count"], PIXELS, 3)
        assert high.dtype == np.uint16
        assert from_u16(high).max() > 0.5  # the box walls attenuate
        assert bridge.status_url is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(bridge.status_url) as resp,
        ):
            status = await resp.json()
        assert status["link"] == "up"
        assert status["scans"] == 4
        assert status["last_upload_at"] is not None
        assert status["spool"]["pending"] == 0
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()


async def test_outage_and_bridge_restart_deliver_each_parcel_exactly_once(
    tmp_path: Path,
) -> None:
    n = 6
    gateway = FakeGateway()
    await gateway.start()
    gw_port = gateway.port
    await gateway.stop()  # the gateway is down while the parcels pass
    # 300 lines/s: a parcel takes 100-200 ms, so the restart below lands inside parcel 2 even on
    # a loaded machine (at 1500 lines/s the parcel could end before the bridge had stopped).
    scanner = fast_scanner(parcels=n, rate=300.0)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    spool = tmp_path / "spool.db"
    config = bridge_config(url, f"http://127.0.0.1:{gw_port}", spool, holds=False)
    bridge = Bridge(config)
    await bridge.start()
    try:
        await wait_until(lambda: scanner.inside_parcel == 2)
        # restart mid-parcel: the scanner replays that parcel with its original line indices
        await bridge.stop()
        await asyncio.sleep(0.05)
        bridge = Bridge(config)
        await bridge.start()
        await wait_until(lambda: len(scanner.state.parcels_done) == n)
        await wait_until(lambda: bridge.spool.depth().pending == n)
        assert bridge.forwarder is not None
        assert bridge.forwarder.stats.retries > 0
        await gateway.start(gw_port)
        await wait_until(lambda: bridge.spool.depth().pending == 0)
        assert len(gateway.scans) == n
        assert gateway.conflicts == 0
        assert {m["waybill_no"] for m in gateway.scans.values()} == {
            p.waybill_no for p in scanner.state.parcels_done
        }
        assert scanner.state.sessions == 2
        assert scanner.state.replays == 1
    finally:
        await bridge.stop()
        await gateway.stop()
        server.close()
        await server.wait_closed()


async def test_hold_order_stops_the_belt_and_is_acknowledged(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    scanner = fast_scanner(parcels=50, rate=500.0)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    bridge = Bridge(bridge_config(url, gateway.url, tmp_path / "spool.db"))
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.sockets) == 1 and scanner.state.belt_running)
        await gateway.push_hold("hold-7", "SF001000000003")
        await wait_until(lambda: bool(scanner.state.holds) and gateway.acks == ["hold-7"])
        assert scanner.state.holds[0].waybill_no == "SF001000000003"
        assert not scanner.state.belt_running
        sent = scanner.state.lines_sent
        await asyncio.sleep(0.1)
        assert scanner.state.lines_sent == sent  # the belt really stopped
        assert "stopped" in (await bridge.status())["belt"]
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()


async def test_a_restarted_bridge_still_knows_the_hold_that_stopped_its_belt(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    """The gateway does not send an acknowledged hold again, so the bridge keeps its hold book
    in the spool: after a restart the operator still sees the open hold, and its release."""
    scanner = fast_scanner(parcels=50, rate=500.0)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    config = bridge_config(url, gateway.url, tmp_path / "spool.db")
    bridge = Bridge(config)
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.sockets) == 1 and scanner.state.belt_running)
        await gateway.push_hold("hold-8", "SF001000000004")
        await wait_until(lambda: gateway.acks == ["hold-8"])
        await bridge.stop()
        await wait_until(lambda: not gateway.sockets)
        bridge = Bridge(config)
        await bridge.start()
        status = await bridge.status()
        assert status["open_holds"] == [{"hold_id": "hold-8", "waybill_no": "SF001000000004"}]
        assert not status["restart_allowed"]
        await wait_until(lambda: len(gateway.sockets) == 1)
        await gateway.push_release("rel-8", "hold-8", "SF001000000004")
        await wait_until(lambda: gateway.acks == ["hold-8", "rel-8"])
        status = await bridge.status()
        assert status["open_holds"] == []
        assert status["restart_allowed"]
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()


async def test_gateway_overload_and_rejection(gateway: FakeGateway, tmp_path: Path) -> None:
    gateway.overload_next = 2
    scanner = fast_scanner(parcels=2)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    bridge = Bridge(bridge_config(url, gateway.url, tmp_path / "a.db", holds=False))
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.scans) == 2)
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()
    # a site the key is not bound to: 403 problem+json -> dead, kept, never retried
    scanner = fast_scanner(parcels=2, seed=2)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    bridge = Bridge(
        bridge_config(url, gateway.url, tmp_path / "b.db", site_id="other", holds=False)
    )
    await bridge.start()
    try:
        await wait_until(lambda: bridge.spool.depth().dead == 2)
        assert all("403" in error for _, error in bridge.spool.dead())
        posts = gateway.posts
        await asyncio.sleep(0.3)
        assert gateway.posts == posts
        assert bridge.spool.depth().pending == 0
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()


async def test_serial_link_over_a_pty(gateway: FakeGateway, tmp_path: Path) -> None:
    scanner = fast_scanner(parcels=2)
    path, task = await scanner.serve_pty()
    bridge = Bridge(bridge_config(f"serial://{path}", gateway.url, tmp_path / "s.db", holds=False))
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.scans) == 2)
    finally:
        await bridge.stop()
        task.cancel()


async def test_demo_station_runs_scanner_and_bridge_in_process(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    from firmware_bridge.station import start_station

    station = await start_station(
        "site-1",
        gateway.url,
        KEY,
        workdir=tmp_path,
        pixels=64,
        line_rate=3000,
        source="procedural",
        parcels=2,
        status_interval=0,
    )
    try:
        await wait_until(lambda: len(gateway.scans) >= 1)
        assert station.scanner_url.startswith("tcp://127.0.0.1:")
    finally:
        await station.stop()


async def test_commands_issued_while_the_scanner_is_away_are_sent_on_reconnect() -> None:
    import socket

    from firmware_bridge.connection import LinkState, ScannerLink
    from firmware_bridge.frames import Hold

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events: list[object] = []
    link = ScannerLink(f"tcp://127.0.0.1:{port}", events.append, backoff_max=0.1)
    task = asyncio.get_running_loop().create_task(link.run())
    scanner = fast_scanner(parcels=1)
    server = None
    try:
        await wait_until(lambda: link.state is LinkState.DOWN)
        link.send(Hold("SF001000000000", "h-away"))
        server = await scanner.serve_tcp("127.0.0.1", port)
        await wait_until(lambda: bool(scanner.state.holds))
        assert scanner.state.holds[0].hold_id == "h-away"
        assert not scanner.state.belt_running
    finally:
        await link.close()
        await asyncio.wait_for(task, 5)
        if server is not None:
            server.close()
            await server.wait_closed()


async def test_a_new_bridge_takes_over_from_a_stale_connection(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    scanner = fast_scanner(parcels=2)
    server = await scanner.serve_tcp()
    port = server.sockets[0].getsockname()[1]
    _stale_reader, stale = await asyncio.open_connection("127.0.0.1", port)  # never reads
    await wait_until(lambda: scanner.state.sessions == 1)
    bridge = Bridge(bridge_config(f"tcp://127.0.0.1:{port}", gateway.url, tmp_path / "s.db"))
    await bridge.start()
    try:
        await wait_until(lambda: len(gateway.scans) == 2)
        assert scanner.state.sessions == 2
    finally:
        await bridge.stop()
        stale.close()
        server.close()
        await server.wait_closed()


async def test_scanner_keeps_its_line_rate(gateway: FakeGateway, tmp_path: Path) -> None:
    scanner = fast_scanner(parcels=1000, rate=500.0)
    server = await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    bridge = Bridge(bridge_config(url, gateway.url, tmp_path / "s.db", holds=False))
    await bridge.start()
    try:
        await wait_until(lambda: bridge.stats.lines > 0)
        start = bridge.stats.lines
        await asyncio.sleep(1.0)
        assert 400 <= bridge.stats.lines - start <= 600
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()
